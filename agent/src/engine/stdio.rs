//! The agent's ends of a process's stdio: pipes (or a pseudo-terminal master) read and written
//! without blocking through tokio's reactor.

use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};

use nix::fcntl::{fcntl, FcntlArg, OFlag};
use tokio::io::unix::AsyncFd;

/// Largest chunk one ReadStdout returns: well under ttrpc's 4 MiB message limit.
pub const MAX_CHUNK: usize = 1 << 20;
/// Pipe capacity asked for, so a fast writer does not stall between two reads.
const PIPE_SIZE: i32 = 1 << 20;

/// Registers an owned descriptor with the reactor. `AsyncFd::new` is deprecated because it
/// accepts any `AsRawFd`, whose descriptor may be closed behind its back; an `OwnedFd` moved
/// into the `AsyncFd` cannot be, so the concern does not apply here.
#[allow(deprecated)]
fn new_async_fd(fd: OwnedFd) -> io::Result<AsyncFd<OwnedFd>> {
    AsyncFd::new(fd)
}

fn set_nonblocking(fd: &OwnedFd) -> io::Result<()> {
    let flags = OFlag::from_bits_truncate(fcntl(fd, FcntlArg::F_GETFL)?);
    fcntl(fd, FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK))?;
    Ok(())
}

/// A pipe pair with close-on-exec set and a large buffer: (read end, write end).
pub fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let (r, w) = nix::unistd::pipe2(OFlag::O_CLOEXEC)?;
    let _ = fcntl(&w, FcntlArg::F_SETPIPE_SZ(PIPE_SIZE));
    Ok((r, w))
}

/// Output stream of a process, read in chunks until end of file.
#[derive(Debug)]
pub struct OutputStream {
    fd: Option<AsyncFd<OwnedFd>>,
    /// A terminal master reports EIO once the last slave closes: that is its end of file.
    tty: bool,
}

impl OutputStream {
    pub fn new(fd: OwnedFd, tty: bool) -> io::Result<Self> {
        set_nonblocking(&fd)?;
        Ok(OutputStream {
            fd: Some(new_async_fd(fd)?),
            tty,
        })
    }

    /// A stream that is at end of file from the start (stderr of a terminal process).
    pub fn closed() -> Self {
        OutputStream {
            fd: None,
            tty: false,
        }
    }

    /// Waits for data; returns up to `max` bytes, or (empty, true) at end of file.
    pub async fn read_chunk(&mut self, max: usize) -> io::Result<(Vec<u8>, bool)> {
        let max = max.clamp(1, MAX_CHUNK);
        let Some(fd) = &self.fd else {
            return Ok((Vec::new(), true));
        };
        let mut buf = vec![0u8; max];
        let mut filled = 0;
        let eof;
        loop {
            let mut guard = fd.readable().await?;
            let res = guard.try_io(|inner| loop {
                match nix::unistd::read(inner.get_ref().as_fd(), &mut buf[filled..]) {
                    Ok(0) => return Ok(true),
                    Ok(n) => {
                        filled += n;
                        if filled == max {
                            return Ok(false);
                        }
                    }
                    Err(nix::errno::Errno::EAGAIN) if filled > 0 => return Ok(false),
                    Err(nix::errno::Errno::EIO) if self.tty => return Ok(true),
                    Err(nix::errno::Errno::EINTR) => {}
                    Err(e) => return Err(io::Error::from(e)),
                }
            });
            match res {
                Ok(Ok(at_eof)) => {
                    eof = at_eof;
                    break;
                }
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => continue,
            }
        }
        buf.truncate(filled);
        if eof && filled == 0 {
            self.fd = None;
            return Ok((Vec::new(), true));
        }
        if eof {
            // Report the data now and the end of file on the next call.
            self.fd = None;
        }
        Ok((buf, false))
    }
}

/// Input stream of a process.
#[derive(Debug)]
pub struct InputStream {
    fd: AsyncFd<OwnedFd>,
}

impl InputStream {
    pub fn new(fd: OwnedFd) -> io::Result<Self> {
        set_nonblocking(&fd)?;
        Ok(InputStream {
            fd: new_async_fd(fd)?,
        })
    }

    /// Writes as much of `data` as fits now (at least one byte, waiting if needed).
    pub async fn write_some(&mut self, data: &[u8]) -> io::Result<usize> {
        if data.is_empty() {
            return Ok(0);
        }
        loop {
            let mut guard = self.fd.writable().await?;
            match guard
                .try_io(|inner| nix::unistd::write(inner.get_ref(), data).map_err(io::Error::from))
            {
                Ok(r) => return r,
                Err(_would_block) => continue,
            }
        }
    }

    pub fn raw_fd(&self) -> i32 {
        self.fd.get_ref().as_raw_fd()
    }
}
