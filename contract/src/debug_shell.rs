//! The debug shell's stream (`hullctl debug` ↔ hull-agent on [`crate::vsock::DEBUG_PORT`]):
//! an operator's process in the guest itself, outside every container. hull-agent listens on
//! the port only when the kernel command line has [`crate::guest_env::DEBUG_SHELL`]`=1`,
//! which the shim adds only when the node's hull.toml turns the shell on; a pod booted
//! without it refuses the connection.
//!
//! The stream carries frames both ways: a 5-byte header (a [`Kind`] byte, then the payload's
//! length as a little-endian u32, at most [`MAX_PAYLOAD`]) and the payload. The host sends
//! [`Kind::Start`] (a [`Start`]), then optionally the program to run as [`Kind::Tool`] chunks
//! closed by [`Kind::ToolEnd`] (the guest image has no shell of its own; the operator brings
//! a statically linked one, at most [`MAX_TOOL_BYTES`]), then [`Kind::Stdin`],
//! [`Kind::StdinEof`] and [`Kind::Resize`] while the process runs. The agent sends
//! [`Kind::Stdout`] and [`Kind::Stderr`] (a terminal's output is all `Stdout`), and ends with
//! one [`Kind::Exit`] (the shell status as a little-endian u32: the exit code, or 128 + the
//! signal) or one [`Kind::Error`] (a UTF-8 line) before closing.
//!
//! ```
//! use hull_contract::debug_shell::{frame, parse_header, Kind, Start};
//!
//! let start = Start { args: vec!["busybox".into(), "sh".into()], env: vec!["TERM=xterm".into()],
//!                     tty: true, rows: 24, cols: 80, tool_name: Some("busybox".into()) };
//! let bytes = frame(Kind::Start, &start.encode());
//! let (kind, len) = parse_header(bytes[..5].try_into().unwrap()).unwrap();
//! assert_eq!((kind, len), (Kind::Start, bytes.len() - 5));
//! assert_eq!(Start::decode(&bytes[5..]).unwrap(), start);
//! ```

/// Largest payload of one frame.
pub const MAX_PAYLOAD: usize = 1 << 20;

/// Largest program a host may send: a static busybox is about 2 MiB; the program lives in
/// guest RAM while the shell runs.
pub const MAX_TOOL_BYTES: u64 = 64 << 20;

/// Bytes of a frame header.
pub const HEADER_LEN: usize = 5;

/// What a frame carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// host → guest, first: a [`Start`].
    Start = 1,
    /// host → guest: the next chunk of the program.
    Tool = 2,
    /// host → guest: the program is whole; run it.
    ToolEnd = 3,
    /// host → guest: bytes for the process's stdin (or terminal).
    Stdin = 4,
    /// host → guest: the process's stdin ends (nothing with a terminal: type `exit`).
    StdinEof = 5,
    /// host → guest: the terminal's new size, rows then columns, each a little-endian u16.
    Resize = 6,
    /// guest → host: the process's stdout (or terminal output).
    Stdout = 7,
    /// guest → host: the process's stderr.
    Stderr = 8,
    /// guest → host, last: how the process ended (a little-endian u32 shell status).
    Exit = 9,
    /// guest → host, last: why the process could not run (UTF-8).
    Error = 10,
}

impl Kind {
    fn from_byte(b: u8) -> Option<Kind> {
        Some(match b {
            1 => Kind::Start,
            2 => Kind::Tool,
            3 => Kind::ToolEnd,
            4 => Kind::Stdin,
            5 => Kind::StdinEof,
            6 => Kind::Resize,
            7 => Kind::Stdout,
            8 => Kind::Stderr,
            9 => Kind::Exit,
            10 => Kind::Error,
            _ => return None,
        })
    }
}

/// Why bytes are not a frame or a [`Start`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    UnknownKind(u8),
    TooLong(usize),
    Malformed(&'static str),
}

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DecodeError::UnknownKind(k) => write!(f, "unknown frame kind {k}"),
            DecodeError::TooLong(n) => write!(f, "frame of {n} bytes (at most {MAX_PAYLOAD})"),
            DecodeError::Malformed(what) => write!(f, "malformed {what}"),
        }
    }
}

impl std::error::Error for DecodeError {}

/// A frame: header and payload. `payload` must be at most [`MAX_PAYLOAD`] bytes (a
/// programming error otherwise: callers chunk their data).
pub fn frame(kind: Kind, payload: &[u8]) -> Vec<u8> {
    assert!(payload.len() <= MAX_PAYLOAD, "frame payload too long");
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
    out.push(kind as u8);
    // Fits: at most MAX_PAYLOAD.
    out.extend_from_slice(
        &u32::try_from(payload.len())
            .unwrap_or(u32::MAX)
            .to_le_bytes(),
    );
    out.extend_from_slice(payload);
    out
}

/// The kind and payload length of a frame header.
pub fn parse_header(h: [u8; HEADER_LEN]) -> Result<(Kind, usize), DecodeError> {
    let kind = Kind::from_byte(h[0]).ok_or(DecodeError::UnknownKind(h[0]))?;
    let len = u32::from_le_bytes([h[1], h[2], h[3], h[4]]) as usize;
    if len > MAX_PAYLOAD {
        return Err(DecodeError::TooLong(len));
    }
    Ok((kind, len))
}

/// What to run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Start {
    /// The program and its arguments; the program is found on the guest's PATH, which starts
    /// with the directory the tool is written to.
    pub args: Vec<String>,
    /// `NAME=value` entries added to the process's environment.
    pub env: Vec<String>,
    /// A terminal instead of pipes.
    pub tty: bool,
    pub rows: u16,
    pub cols: u16,
    /// The file name the tool is written under, when [`Kind::Tool`] frames follow.
    pub tool_name: Option<String>,
}

/// Appends `s` NUL-terminated.
fn put(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(s.as_bytes());
    out.push(0);
}

impl Start {
    /// `tty` (1 byte), `rows`, `cols` (u16 LE each), then the tool name, each argument and
    /// each environment entry NUL-terminated, with an empty string after the arguments (an
    /// empty tool name means none). Strings must not hold NUL bytes ([`Start::decode`]
    /// refuses them).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![u8::from(self.tty)];
        out.extend_from_slice(&self.rows.to_le_bytes());
        out.extend_from_slice(&self.cols.to_le_bytes());
        put(&mut out, self.tool_name.as_deref().unwrap_or(""));
        for a in &self.args {
            put(&mut out, a);
        }
        put(&mut out, "");
        for e in &self.env {
            put(&mut out, e);
        }
        out
    }

    pub fn decode(b: &[u8]) -> Result<Start, DecodeError> {
        let bad = DecodeError::Malformed;
        let [tty, r0, r1, c0, c1, rest @ ..] = b else {
            return Err(bad("start frame"));
        };
        let rest = rest.strip_suffix(&[0]).ok_or(bad("start frame"))?;
        let mut parts = rest.split(|&c| c == 0).map(|p| {
            std::str::from_utf8(p)
                .map(str::to_owned)
                .map_err(|_| bad("start frame (not UTF-8)"))
        });
        let tool = parts.next().ok_or(bad("start frame"))??;
        let mut args = Vec::new();
        for p in parts.by_ref() {
            let p = p?;
            if p.is_empty() {
                break;
            }
            args.push(p);
        }
        let env = parts.collect::<Result<Vec<_>, _>>()?;
        if args.is_empty() {
            return Err(bad("start frame (no program)"));
        }
        if tool.contains('/') || tool == "." || tool == ".." {
            return Err(bad("start frame (tool name)"));
        }
        Ok(Start {
            args,
            env,
            tty: *tty != 0,
            rows: u16::from_le_bytes([*r0, *r1]),
            cols: u16::from_le_bytes([*c0, *c1]),
            tool_name: (!tool.is_empty()).then_some(tool),
        })
    }
}

/// The shell status of a [`Kind::Exit`] payload.
pub fn parse_exit(b: &[u8]) -> Option<u32> {
    Some(u32::from_le_bytes(b.try_into().ok()?))
}

/// Rows and columns of a [`Kind::Resize`] payload.
pub fn parse_resize(b: &[u8]) -> Option<(u16, u16)> {
    match b {
        [r0, r1, c0, c1] => Some((
            u16::from_le_bytes([*r0, *r1]),
            u16::from_le_bytes([*c0, *c1]),
        )),
        _ => None,
    }
}

/// A [`Kind::Resize`] payload.
pub fn resize(rows: u16, cols: u16) -> [u8; 4] {
    let [r0, r1] = rows.to_le_bytes();
    let [c0, c1] = cols.to_le_bytes();
    [r0, r1, c0, c1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_round_trips_and_bad_ones_are_refused() {
        let s = Start {
            args: vec!["sh".into(), "-c".into(), "echo é".into()],
            env: vec!["TERM=vt100".into()],
            tty: false,
            rows: 0,
            cols: 0,
            tool_name: None,
        };
        assert_eq!(Start::decode(&s.encode()), Ok(s.clone()));
        let no_env = Start { env: vec![], ..s };
        assert_eq!(Start::decode(&no_env.encode()), Ok(no_env));
        for bad in [
            &b""[..],
            b"\x00\x00\x00\x00\x00",
            b"\x00\x00\x00\x00\x00\x00\x00\x00", // no program
            b"\x00\x00\x00\x00\x00../x\x00sh\x00\x00", // a tool name with a slash
            b"\x00\x00\x00\x00\x00\x00sh\x00\xff\x00", // not UTF-8
            b"\x00\x00\x00\x00\x00\x00sh",       // not NUL-terminated
        ] {
            assert!(Start::decode(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn headers_are_checked() {
        let f = frame(Kind::Exit, &7u32.to_le_bytes());
        let h: [u8; HEADER_LEN] = f[..HEADER_LEN].try_into().unwrap();
        assert_eq!(parse_header(h), Ok((Kind::Exit, 4)));
        assert_eq!(parse_exit(&f[HEADER_LEN..]), Some(7));
        assert_eq!(
            parse_header([0, 0, 0, 0, 0]),
            Err(DecodeError::UnknownKind(0))
        );
        let long = u32::try_from(MAX_PAYLOAD + 1).unwrap().to_le_bytes();
        assert_eq!(
            parse_header([4, long[0], long[1], long[2], long[3]]),
            Err(DecodeError::TooLong(MAX_PAYLOAD + 1))
        );
        assert_eq!(parse_resize(&resize(50, 132)), Some((50, 132)));
        assert_eq!(parse_resize(&[1, 2, 3]), None);
    }
}
