//! The agent's ends of a process's stdio: pipes (or a pseudo-terminal master) read and written
//! without blocking through tokio's reactor.

use std::io;
use std::os::fd::OwnedFd;

use nix::fcntl::{fcntl, FcntlArg, OFlag};
use tokio::io::unix::AsyncFd;
use tokio::net::unix::pipe;
use tokio::sync::mpsc;

/// Largest chunk one ReadStdout returns: well under ttrpc's 4 MiB message limit.
pub(crate) const MAX_CHUNK: usize = 1 << 20;
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
pub(crate) fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
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
pub(crate) struct OutputStream {
    rx: Option<mpsc::Receiver<io::Result<Vec<u8>>>>,
    /// The unread tail of a chunk larger than the last read asked for.
    pending: Vec<u8>,
}

/// Largest read of the pump. As large as a reply, so a fast writer's chunk becomes the reply
/// as it is, without being copied into a larger one.
const PUMP_CHUNK: usize = MAX_CHUNK;
/// Chunks queued per stream before the pump stops reading (then the pipe fills, then the
/// process blocks): at most 2 MiB held by the agent per stream, besides the pipe's 1 MiB.
const QUEUE_CHUNKS: usize = 2;

impl OutputStream {
    /// Starts the pump; call inside the tokio runtime.
    pub(crate) fn new(fd: OwnedFd, tty: bool) -> io::Result<Self> {
        set_nonblocking(&fd)?;
        // Not only pipes: a terminal master is read the same way, hence "unchecked".
        let reader = pipe::Receiver::from_owned_fd_unchecked(fd)?;
        let (tx, rx) = mpsc::channel(QUEUE_CHUNKS);
        tokio::spawn(pump(reader, tty, tx));
        Ok(OutputStream {
            rx: Some(rx),
            pending: Vec::new(),
        })
    }

    /// A stream that is at end of file from the start (stderr of a terminal process).
    pub(crate) fn closed() -> Self {
        OutputStream {
            rx: None,
            pending: Vec::new(),
        }
    }

    /// Waits for data; returns up to `max` bytes, or (empty, true) at end of file.
    pub(crate) async fn read_chunk(&mut self, max: usize) -> io::Result<(Vec<u8>, bool)> {
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
                    // Every earlier reply has reached the reader by now (it asks for the
                    // next only after the last): give back what the stream's buffers held.
                    hull_heap::release_free_memory();
                    return Ok((Vec::new(), true));
                }
            }
        }
        // Add what else is already queued, without waiting.
        while out.len() < max {
            let Some(rx) = self.rx.as_mut() else { break };
            match rx.try_recv() {
                Ok(Ok(chunk)) => {
                    // One reallocation for the whole reply rather than one per doubling.
                    if out.capacity() < max {
                        out.reserve_exact(max - out.len());
                    }
                    out.extend_from_slice(&chunk);
                }
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

/// Reads `rx` until end of file into `tx`. Ends early when the stream's reader is gone.
///
/// Each chunk is read into the spare capacity of a fresh `Vec` (tokio's `try_read_buf`), so
/// nothing is zeroed first: at full speed that memset cost as much as the kernel's copy.
async fn pump(rx: pipe::Receiver, tty: bool, tx: mpsc::Sender<io::Result<Vec<u8>>>) {
    let mut buf = Vec::with_capacity(PUMP_CHUNK);
    loop {
        let mut eof = false;
        let res = loop {
            // Stop (and close the descriptor) when the stream is dropped, even if a
            // leftover writer keeps the pipe open.
            let ready = tokio::select! {
                r = rx.readable() => r,
                () = tx.closed() => return,
            };
            if let Err(e) = ready {
                break Err(e);
            }
            match fill(&rx, tty, &mut buf) {
                Ok(Some(at_eof)) => {
                    eof = at_eof;
                    break Ok(());
                }
                Ok(None) => continue,
                Err(e) => break Err(e),
            }
        };
        if let Err(e) = res {
            let _ = tx.send(Err(e)).await;
            return;
        }
        if !buf.is_empty() {
            // A small read gets an exact copy so a queued chunk never pins a large buffer.
            let chunk = if buf.len() < PUMP_CHUNK / 4 {
                let c = buf.clone();
                buf.clear();
                c
            } else {
                std::mem::replace(&mut buf, Vec::with_capacity(PUMP_CHUNK))
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

/// Reads what `rx` has now into `buf`, up to its capacity: `Some(eof)` once something was read
/// or the stream ended, `None` when nothing was there (a spurious wake-up).
fn fill(rx: &pipe::Receiver, tty: bool, buf: &mut Vec<u8>) -> io::Result<Option<bool>> {
    while buf.len() < buf.capacity() {
        // `try_read_buf` reads into `buf`'s spare capacity and grows its length.
        match rx.try_read_buf(buf) {
            Ok(0) => return Ok(Some(true)),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                return Ok((!buf.is_empty()).then_some(false));
            }
            // A terminal master reports EIO once the last slave closes: its EOF.
            Err(e) if tty && e.raw_os_error() == Some(libc::EIO) => return Ok(Some(true)),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(Some(false))
}

/// Input stream of a process.
#[derive(Debug)]
pub(crate) struct InputStream {
    fd: AsyncFd<OwnedFd>,
}

impl InputStream {
    pub(crate) fn new(fd: OwnedFd) -> io::Result<Self> {
        set_nonblocking(&fd)?;
        Ok(InputStream {
            fd: new_async_fd(fd)?,
        })
    }

    /// Writes as much of `data` as fits now (at least one byte, waiting if needed).
    pub(crate) async fn write_some(&mut self, data: &[u8]) -> io::Result<usize> {
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
