//! The agent's ends of a process's stdio: pipes (or a pseudo-terminal master) read and written
//! without blocking through tokio's reactor.

use std::io;
use std::os::fd::{AsFd, OwnedFd};

use nix::fcntl::{fcntl, FcntlArg, OFlag};
use tokio::io::unix::AsyncFd;
use tokio::sync::mpsc;

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
///
/// A pump task drains the pipe (or terminal) as fast as the process writes, into a bounded
/// queue of chunks, and `ReadStdout` takes whatever is queued. The process therefore keeps
/// writing while a reply is on its way to the shim, instead of stalling on a full pipe for a
/// whole round trip; the bound ([`QUEUE_CHUNKS`] x [`PUMP_CHUNK`]) is what applies
/// back-pressure when nobody reads.
#[derive(Debug)]
pub struct OutputStream {
    rx: Option<mpsc::Receiver<io::Result<Vec<u8>>>>,
    /// The unread tail of a chunk larger than the last read asked for.
    pending: Vec<u8>,
}

/// Largest read of the pump; also what a reply is made of when the process writes fast.
const PUMP_CHUNK: usize = 256 << 10;
/// Chunks queued per stream before the pump stops reading (then the pipe fills, then the
/// process blocks): at most 2 MiB held by the agent per stream.
const QUEUE_CHUNKS: usize = 8;

impl OutputStream {
    /// Starts the pump; call inside the tokio runtime.
    pub fn new(fd: OwnedFd, tty: bool) -> io::Result<Self> {
        set_nonblocking(&fd)?;
        let fd = new_async_fd(fd)?;
        let (tx, rx) = mpsc::channel(QUEUE_CHUNKS);
        tokio::spawn(pump(fd, tty, tx));
        Ok(OutputStream {
            rx: Some(rx),
            pending: Vec::new(),
        })
    }

    /// A stream that is at end of file from the start (stderr of a terminal process).
    pub fn closed() -> Self {
        OutputStream {
            rx: None,
            pending: Vec::new(),
        }
    }

    /// Waits for data; returns up to `max` bytes, or (empty, true) at end of file.
    pub async fn read_chunk(&mut self, max: usize) -> io::Result<(Vec<u8>, bool)> {
        let max = max.clamp(1, MAX_CHUNK);
        let mut out = std::mem::take(&mut self.pending);
        if out.is_empty() {
            let Some(rx) = self.rx.as_mut() else {
                return Ok((Vec::new(), true));
            };
            match rx.recv().await {
                Some(Ok(chunk)) => out = chunk,
                Some(Err(e)) => return Err(e),
                None => {
                    self.rx = None;
                    return Ok((Vec::new(), true));
                }
            }
        }
        // Add what else is already queued, without waiting.
        while out.len() < max {
            let Some(rx) = self.rx.as_mut() else { break };
            match rx.try_recv() {
                Ok(Ok(chunk)) => out.extend_from_slice(&chunk),
                // Report the data now and the error on the next call.
                Ok(Err(e)) => {
                    self.rx = None;
                    tracing::warn!("output stream: {e}");
                    break;
                }
                Err(mpsc::error::TryRecvError::Empty) => break,
                Err(mpsc::error::TryRecvError::Disconnected) => {
                    self.rx = None;
                    break;
                }
            }
        }
        if out.len() > max {
            self.pending = out.split_off(max);
        }
        Ok((out, false))
    }
}

/// Reads `fd` until end of file into `tx`. Ends early when the stream's reader is gone.
async fn pump(fd: AsyncFd<OwnedFd>, tty: bool, tx: mpsc::Sender<io::Result<Vec<u8>>>) {
    let mut buf = vec![0u8; PUMP_CHUNK];
    loop {
        let mut filled = 0;
        let mut eof = false;
        let res = loop {
            // Stop (and close the descriptor) when the stream is dropped, even if a
            // leftover writer keeps the pipe open.
            let ready = tokio::select! {
                r = fd.readable() => r,
                () = tx.closed() => return,
            };
            let mut guard = match ready {
                Ok(g) => g,
                Err(e) => break Err(e),
            };
            let r = guard.try_io(|inner| loop {
                match nix::unistd::read(inner.get_ref().as_fd(), &mut buf[filled..]) {
                    Ok(0) => return Ok(true),
                    Ok(n) => {
                        filled += n;
                        if filled == buf.len() {
                            return Ok(false);
                        }
                    }
                    Err(nix::errno::Errno::EAGAIN) if filled > 0 => return Ok(false),
                    // A terminal master reports EIO once the last slave closes: its EOF.
                    Err(nix::errno::Errno::EIO) if tty => return Ok(true),
                    Err(nix::errno::Errno::EINTR) => {}
                    Err(e) => return Err(io::Error::from(e)),
                }
            });
            match r {
                Ok(Ok(at_eof)) => {
                    eof = at_eof;
                    break Ok(());
                }
                Ok(Err(e)) => break Err(e),
                Err(_would_block) => continue,
            }
        };
        if let Err(e) = res {
            let _ = tx.send(Err(e)).await;
            return;
        }
        if filled > 0 {
            // A small read gets an exact copy so a queued chunk never pins a large buffer.
            let chunk = if filled < PUMP_CHUNK / 4 {
                buf[..filled].to_vec()
            } else {
                let mut full = std::mem::replace(&mut buf, vec![0u8; PUMP_CHUNK]);
                full.truncate(filled);
                full
            };
            if tx.send(Ok(chunk)).await.is_err() {
                return;
            }
        }
        if eof {
            return;
        }
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
}
