//! The one client of hull-vmm's API socket (vmm/API.md: HTTP/1.1 over a Unix socket, one
//! request per connection), shared by the shim (growing a pod's VM) and hullctl.

use std::path::Path;
use std::time::Duration;

use std::os::fd::{AsRawFd, BorrowedFd, RawFd};

use tokio::io::AsyncReadExt;
use tokio::net::UnixStream;

/// The largest reply read: `GET /metrics` of a VM with every device is a few KiB; more is a
/// broken or hostile peer.
const MAX_REPLY: u64 = 4 << 20;

#[derive(Debug, thiserror::Error)]
pub enum VmmApiError {
    #[error("connect {path}: {source}")]
    Connect {
        path: String,
        source: std::io::Error,
    },
    #[error("{what} on {path}: {source}")]
    Io {
        what: String,
        path: String,
        source: std::io::Error,
    },
    #[error("{what} on {path}: no answer within {secs} s")]
    Timeout {
        what: String,
        path: String,
        secs: u64,
    },
    #[error("{what}: status {status}: {body}")]
    Status {
        what: String,
        status: u16,
        body: String,
    },
}

/// hull-vmm's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub status: u16,
    pub body: String,
    /// The VMM's pid on the host (the socket's peer).
    pub peer_pid: Option<i32>,
}

impl Reply {
    /// The reply of a request that must succeed (2xx), or the error naming `what`.
    pub fn ok(self, what: &str) -> Result<Reply, VmmApiError> {
        if (200..300).contains(&self.status) {
            Ok(self)
        } else {
            Err(VmmApiError::Status {
                what: what.to_owned(),
                status: self.status,
                body: self.body.trim().to_owned(),
            })
        }
    }
}

/// Sends one request to the API socket `sock`, answered within `timeout` (a stuck VMM must
/// not hang its caller).
pub async fn request(
    sock: &Path,
    method: &str,
    path: &str,
    body: &str,
    timeout: Duration,
) -> Result<Reply, VmmApiError> {
    request_with_fd(sock, method, path, body, None, timeout).await
}

/// Like [`request`], with `fd` passed along (`SCM_RIGHTS` on the request's bytes): a disk
/// image for `PUT /hotplug/disks/N`, which hull-vmm cannot open itself once its VM runs.
pub async fn request_with_fd(
    sock: &Path,
    method: &str,
    path: &str,
    body: &str,
    fd: Option<BorrowedFd<'_>>,
    timeout: Duration,
) -> Result<Reply, VmmApiError> {
    let what = format!("{method} {path}");
    tokio::time::timeout(timeout, request_unbounded(sock, method, path, body, fd))
        .await
        .map_err(|_| VmmApiError::Timeout {
            what,
            path: sock.display().to_string(),
            secs: timeout.as_secs(),
        })?
}

/// Writes all of `req`, the first bytes with `fd` attached.
async fn send(s: &UnixStream, req: &[u8], fd: Option<BorrowedFd<'_>>) -> std::io::Result<()> {
    use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
    let mut sent = 0;
    while sent < req.len() {
        s.writable().await?;
        let fds: Vec<RawFd> = fd
            .filter(|_| sent == 0)
            .map(|f| f.as_raw_fd())
            .into_iter()
            .collect();
        let cmsgs: Vec<ControlMessage<'_>> = if fds.is_empty() {
            vec![]
        } else {
            vec![ControlMessage::ScmRights(&fds)]
        };
        let iov = [std::io::IoSlice::new(&req[sent..])];
        match s.try_io(tokio::io::Interest::WRITABLE, || {
            sendmsg::<()>(s.as_raw_fd(), &iov, &cmsgs, MsgFlags::MSG_NOSIGNAL, None)
                .map_err(std::io::Error::from)
        }) {
            Ok(n) => sent += n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

async fn request_unbounded(
    sock: &Path,
    method: &str,
    path: &str,
    body: &str,
    fd: Option<BorrowedFd<'_>>,
) -> Result<Reply, VmmApiError> {
    let at = || sock.display().to_string();
    let s = UnixStream::connect(sock)
        .await
        .map_err(|source| VmmApiError::Connect { path: at(), source })?;
    let io = |source| VmmApiError::Io {
        what: format!("{method} {path}"),
        path: at(),
        source,
    };
    let peer_pid = s.peer_cred().ok().and_then(|c| c.pid());
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    send(&s, req.as_bytes(), fd).await.map_err(io)?;
    let mut raw = Vec::new();
    s.take(MAX_REPLY).read_to_end(&mut raw).await.map_err(io)?;
    let resp = String::from_utf8_lossy(&raw);
    let (head, body) = resp.split_once("\r\n\r\n").unwrap_or((&resp, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    Ok(Reply {
        status,
        body: body.to_owned(),
        peer_pid,
    })
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncWriteExt;

    use super::*;

    #[tokio::test]
    async fn a_request_gets_status_and_body() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("api.sock");
        let l = tokio::net::UnixListener::bind(&sock).unwrap();
        let server = tokio::spawn(async move {
            let (mut c, _) = l.accept().await.unwrap();
            let mut buf = vec![0u8; 4096];
            let n = c.read(&mut buf).await.unwrap();
            let req = String::from_utf8_lossy(&buf[..n]).into_owned();
            c.write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 4\r\n\r\nnope")
                .await
                .unwrap();
            req
        });
        let r = request(
            &sock,
            "PUT",
            "/hotplug/vcpus",
            r#"{"count":2}"#,
            Duration::from_secs(5),
        )
        .await
        .unwrap();
        assert_eq!((r.status, r.body.as_str()), (400, "nope"));
        assert!(r.peer_pid.is_some());
        let err = r.ok("grow").unwrap_err().to_string();
        assert!(err.contains("status 400: nope"), "{err}");
        let req = server.await.unwrap();
        assert!(req.starts_with("PUT /hotplug/vcpus HTTP/1.1\r\n"), "{req}");
        assert!(req.ends_with("\r\n\r\n{\"count\":2}"), "{req}");
    }

    #[tokio::test]
    async fn a_descriptor_goes_with_the_request() {
        use std::io::{Read, Seek, Write};
        use std::os::fd::{AsFd, FromRawFd};

        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("api.sock");
        let l = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        let server = std::thread::spawn(move || {
            use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
            let (mut c, _) = l.accept().unwrap();
            let mut buf = vec![0u8; 4096];
            let mut cmsg = nix::cmsg_space!([RawFd; 1]);
            let mut iov = [std::io::IoSliceMut::new(&mut buf)];
            let msg =
                recvmsg::<()>(c.as_raw_fd(), &mut iov, Some(&mut cmsg), MsgFlags::empty()).unwrap();
            let fd = msg
                .cmsgs()
                .unwrap()
                .find_map(|m| match m {
                    ControlMessageOwned::ScmRights(v) => v.first().copied(),
                    _ => None,
                })
                .unwrap();
            // SAFETY: the kernel installed `fd` for this message; owned here alone.
            let mut f = unsafe { std::fs::File::from_raw_fd(fd) };
            let mut text = String::new();
            f.rewind().unwrap();
            f.read_to_string(&mut text).unwrap();
            c.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
                .unwrap();
            text
        });
        let mut image = tempfile::tempfile().unwrap();
        image.write_all(b"disk image").unwrap();
        let r = request_with_fd(
            &sock,
            "PUT",
            "/hotplug/disks/0",
            "{}",
            Some(image.as_fd()),
            Duration::from_secs(5),
        )
        .await
        .unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(server.join().unwrap(), "disk image");
    }

    #[tokio::test]
    async fn a_silent_vmm_times_out() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("api.sock");
        let _l = tokio::net::UnixListener::bind(&sock).unwrap();
        let err = request(&sock, "GET", "/vm", "", Duration::from_millis(100))
            .await
            .unwrap_err();
        assert!(matches!(err, VmmApiError::Timeout { .. }), "{err}");
    }
}
