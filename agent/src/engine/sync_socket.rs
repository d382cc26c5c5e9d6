//! The agent's end of the init helper's sync socket (protocol in [`super::init`]): JSON lines
//! both ways, plus the descriptor the container process sends with its terminal line
//! (SCM_RIGHTS). A `BufReader` cannot be used: read(2) on a Unix socket makes the kernel
//! close descriptors that arrive with the bytes, so every read here is a `recvmsg`.

use std::io::Write;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;

use super::error::{EngineError, Result};
use super::plan::InitReply;
use crate::sys;

/// Replies are short; a plan is sent, never received, so this bounds only what the helper says.
const MAX_LINE: usize = 1 << 20;

#[derive(Debug)]
pub(crate) struct SyncSocket {
    sock: UnixStream,
    /// Bytes received past the last complete line.
    buf: Vec<u8>,
    /// Descriptors received and not yet claimed by a reply, in arrival order.
    fds: Vec<OwnedFd>,
}

impl SyncSocket {
    pub(crate) fn new(sock: UnixStream) -> Self {
        SyncSocket {
            sock,
            buf: Vec::new(),
            fds: Vec::new(),
        }
    }

    /// Sends one line (`line` ends with a newline).
    pub(crate) fn send(&mut self, line: &[u8], what: &str) -> Result<()> {
        self.sock
            .write_all(line)
            .map_err(|e| EngineError::io(what.to_owned(), e))
    }

    /// The next reply, or None at end of stream (the process exec'd, or died).
    pub(crate) fn read_reply(&mut self) -> Result<Option<InitReply>> {
        loop {
            if let Some(end) = self.buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=end).collect();
                return serde_json::from_slice(&line).map(Some).map_err(|e| {
                    EngineError::Internal(format!(
                        "bad reply from init helper {:?}: {e}",
                        String::from_utf8_lossy(&line)
                    ))
                });
            }
            if self.buf.len() > MAX_LINE {
                return Err(EngineError::Internal(
                    "reply from init helper too long".into(),
                ));
            }
            let mut chunk = [0u8; 4096];
            let n = sys::recv_with_fds(self.sock.as_fd(), &mut chunk, &mut self.fds)
                .map_err(|e| EngineError::io("read from init helper", e))?;
            if n == 0 {
                if self.buf.is_empty() {
                    return Ok(None);
                }
                return Err(EngineError::Internal(format!(
                    "init helper ended in the middle of a reply {:?}",
                    String::from_utf8_lossy(&self.buf)
                )));
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// The oldest descriptor received and not yet taken.
    pub(crate) fn take_fd(&mut self) -> Option<OwnedFd> {
        (!self.fds.is_empty()).then(|| self.fds.remove(0))
    }
}

#[cfg(test)]
mod tests {
    use std::io::IoSlice;
    use std::os::fd::AsRawFd;

    use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};

    use super::*;

    #[test]
    fn lines_and_a_descriptor_sent_with_one_of_them() {
        let (ours, mut theirs) = UnixStream::pair().unwrap();
        let mut sync = SyncSocket::new(ours);
        let (r, w) = nix::unistd::pipe().unwrap();
        theirs.write_all(b"{\"Pid\":7}\n").unwrap();
        let line = b"\"Terminal\"\n\"Re";
        let fds = [r.as_raw_fd()];
        sendmsg::<()>(
            theirs.as_raw_fd(),
            &[IoSlice::new(line)],
            &[ControlMessage::ScmRights(&fds)],
            MsgFlags::empty(),
            None,
        )
        .unwrap();
        drop(r);
        theirs.write_all(b"ady\"\n").unwrap();
        drop(theirs);
        assert_eq!(sync.read_reply().unwrap(), Some(InitReply::Pid(7)));
        assert_eq!(sync.read_reply().unwrap(), Some(InitReply::Terminal));
        let got = sync.take_fd().expect("the descriptor");
        assert!(sync.take_fd().is_none());
        // It is the pipe's read end: what goes in at the write end comes out there.
        nix::unistd::write(&w, b"x").unwrap();
        let mut b = [0u8; 1];
        assert_eq!(nix::unistd::read(got.as_fd(), &mut b).unwrap(), 1);
        assert_eq!(sync.read_reply().unwrap(), Some(InitReply::Ready));
        assert_eq!(sync.read_reply().unwrap(), None);
    }

    #[test]
    fn a_cut_off_reply_is_an_error() {
        let (ours, mut theirs) = UnixStream::pair().unwrap();
        let mut sync = SyncSocket::new(ours);
        theirs.write_all(b"\"Rea").unwrap();
        drop(theirs);
        assert!(sync.read_reply().is_err());
    }
}
