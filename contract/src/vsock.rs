//! hull's vsock: the guest's CID, the guest ports hull-agent serves, and the hybrid-vsock
//! handshake hull-vmm speaks on its host Unix socket (DESIGN.md §1).
//!
//! A host process connects to the VMM's socket, writes [`connect_request`]`(port)`, and reads
//! one line that [`parse_ok`] accepts; from then on the stream is the guest connection. The VMM
//! parses the request with [`parse_connect`] and answers with [`ok_reply`]. Guest-initiated
//! connections to host port P arrive on [`guest_initiated_path`]`(uds, P)`.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// The guest's context id. Every hull VM has exactly one guest, so the value is fixed.
pub const GUEST_CID: u32 = 3;

/// The guest port hull-agent serves every ttrpc service on.
pub const AGENT_PORT: u32 = 1024;

/// The guest port hull-agent serves port-forward streams on (`hull_proto::portfwd`).
pub const PORTFWD_PORT: u32 = 1025;

/// The guest port hull-agent serves `hullctl debug` on, only when the pod's kernel command
/// line turns it on ([`crate::debug_shell`]).
pub const DEBUG_PORT: u32 = 1026;

/// Longest `CONNECT <port>\n` request the VMM reads (the longest valid one is 19 bytes).
pub const MAX_REQUEST_LINE: usize = 32;

/// Longest `OK <port>\n` reply a host process reads.
pub const MAX_REPLY_LINE: usize = 64;

/// The request a host process writes to reach guest `port`.
pub fn connect_request(port: u32) -> String {
    format!("CONNECT {port}\n")
}

/// The port of a request line without its newline, or `None` if it is not a request.
pub fn parse_connect(line: &[u8]) -> Option<u32> {
    std::str::from_utf8(line)
        .ok()?
        .strip_prefix("CONNECT ")?
        .trim()
        .parse()
        .ok()
}

/// The VMM's answer once the guest accepted the connection; `local_port` is the host end's
/// port as the guest sees it.
pub fn ok_reply(local_port: u32) -> String {
    format!("OK {local_port}\n")
}

/// The host port of a reply line without its newline, or `None` if it is not an `OK`.
pub fn parse_ok(line: &[u8]) -> Option<u32> {
    std::str::from_utf8(line)
        .ok()?
        .strip_prefix("OK ")?
        .parse()
        .ok()
}

/// Where the VMM listens for guest-initiated connections to host `port`: `<uds>_<port>`.
pub fn guest_initiated_path(uds: &Path, port: u32) -> PathBuf {
    let mut p = OsString::from(uds.as_os_str());
    p.push(format!("_{port}"));
    PathBuf::from(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_round_trips() {
        for port in [0, AGENT_PORT, PORTFWD_PORT, u32::MAX] {
            let line = connect_request(port);
            assert!(line.len() <= MAX_REQUEST_LINE, "{line:?}");
            let body = line.strip_suffix('\n').expect("newline");
            assert_eq!(parse_connect(body.as_bytes()), Some(port));
        }
    }

    #[test]
    fn reply_round_trips() {
        for port in [1 << 30, u32::MAX] {
            let line = ok_reply(port);
            assert!(line.len() <= MAX_REPLY_LINE, "{line:?}");
            let body = line.strip_suffix('\n').expect("newline");
            assert_eq!(parse_ok(body.as_bytes()), Some(port));
        }
    }

    #[test]
    fn malformed_lines_are_refused() {
        for bad in [
            &b""[..],
            b"CONNECT",
            b"CONNECT ",
            b"CONNECT -1",
            b"CONNECT 4294967296",
            b"connect 1024",
            b"CONNECT 10x",
            b"\xff\xfe",
        ] {
            assert_eq!(parse_connect(bad), None, "{bad:?}");
        }
        for bad in [&b""[..], b"OK", b"OK x", b"ERR 5", b"OK 1 2"] {
            assert_eq!(parse_ok(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn guest_initiated_path_appends_the_port() {
        assert_eq!(
            guest_initiated_path(Path::new("/run/hull/pods/x/vsock.sock"), 52),
            PathBuf::from("/run/hull/pods/x/vsock.sock_52")
        );
    }
}
