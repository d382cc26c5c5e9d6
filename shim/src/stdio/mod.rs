//! A process's stdio between what containerd asked for (`uri.rs`: FIFOs, a log file or a
//! `binary://` logger) and the agent's streams (`pump.rs`). FIFOs stay owned by the crate's
//! `IoTasks`, which holds them open across a containerd restart; the pumps feed it through
//! in-memory pipes ([`pipe`]).
//!
//! Exit ordering (DESIGN §1 Stdio): when a process has exited, [`Stdio::drain`] lets its
//! output reach the FIFO or file before `/tasks/exit` is published; [`Stdio::close`] at
//! Delete ends everything, the logger included, as containerd's shims do.

use std::sync::Mutex;
use std::time::Duration;

use containerd_shim::asynchronous::io::IoTasks;
use hull_proto::processes_ttrpc::ProcessesClient;
use tokio::io::{AsyncWrite, DuplexStream};
use tokio::task::JoinHandle;

use crate::errors::ShimError;

pub(crate) mod binary;
mod pump;
pub(crate) mod uri;

use uri::Target;

/// Bytes asked of the agent per read, and the in-memory pipes' size.
const CHUNK: u32 = 64 * 1024;
/// How long output may keep flowing after its process exited (a child that inherited the
/// pipe can hold it open forever).
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// Which process of which container.
#[derive(Debug, Clone)]
pub(crate) struct ProcRef {
    pub(crate) container_id: String,
    pub(crate) exec_id: String,
}

impl ProcRef {
    pub(crate) fn new(container_id: &str, exec_id: &str) -> Self {
        ProcRef {
            container_id: container_id.to_owned(),
            exec_id: exec_id.to_owned(),
        }
    }

    /// The id containerd uses for the process: the container's for its init process.
    pub(crate) fn id(&self) -> &str {
        if self.exec_id.is_empty() {
            &self.container_id
        } else {
            &self.exec_id
        }
    }
}

/// Stdio as containerd asked for it.
#[derive(Debug, Clone, Default)]
pub(crate) struct StdioPaths {
    pub(crate) stdin: String,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
    pub(crate) terminal: bool,
}

type Sink = Box<dyn AsyncWrite + Send + Unpin>;

/// An in-memory pipe between a pump and `IoTasks`: (reader, writer). A duplex, not a simplex,
/// because its reader sees EOF when the writer is dropped: `IoTasks` drops its writer at the
/// end of a copy without shutting it down, and a simplex's two halves share one stream that
/// ends only at an explicit shutdown, so stdin would never reach EOF (CloseIO). Likewise a
/// writer whose reader is gone fails at once instead of blocking on a full buffer. The
/// unused direction stays empty and allocates nothing.
fn pipe() -> (DuplexStream, DuplexStream) {
    tokio::io::duplex(CHUNK as usize)
}

/// The running copies of one process's stdio.
pub(crate) struct Stdio {
    fifos: IoTasks,
    outputs: Mutex<Vec<JoinHandle<()>>>,
    input: Mutex<Option<JoinHandle<()>>>,
    logger: Option<binary::Logger>,
}

impl std::fmt::Debug for Stdio {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stdio")
            .field("logger", &self.logger)
            .finish_non_exhaustive()
    }
}

fn shim_err(context: String) -> impl FnOnce(containerd_shim::Error) -> ShimError {
    move |source| ShimError::Shim { context, source }
}

fn take<T>(m: &Mutex<T>) -> T
where
    T: Default,
{
    // The guarded values are plain handles; a poisoned lock holds nothing half-written.
    std::mem::take(&mut *m.lock().unwrap_or_else(|p| p.into_inner()))
}

/// Where one output stream goes. A file named by both streams is opened once, so both
/// append through one description.
async fn sink(
    target: &Target,
    fifos: &IoTasks,
    file: &mut Option<(std::path::PathBuf, std::fs::File)>,
) -> Result<Sink, ShimError> {
    match target {
        Target::None => Ok(Box::new(tokio::io::sink())),
        Target::Fifo(path) => {
            let (rx, tx) = pipe();
            fifos
                .copy_to_fifo(rx, &path.to_string_lossy())
                .map_err(shim_err(format!("stdio {}", path.display())))?;
            Ok(Box::new(tx))
        }
        Target::File(path) => {
            let io = |source| ShimError::Io {
                context: format!("log file {}", path.display()),
                source,
            };
            if file.as_ref().is_none_or(|(p, _)| p != path) {
                if let Some(dir) = path.parent() {
                    tokio::fs::create_dir_all(dir).await.map_err(io)?;
                }
                let f = std::fs::OpenOptions::new()
                    .append(true)
                    .create(true)
                    .open(path)
                    .map_err(io)?;
                *file = Some((path.clone(), f));
            }
            let f = file.as_ref().map(|(_, f)| f.try_clone());
            let f = f.transpose().map_err(io)?;
            Ok(Box::new(tokio::fs::File::from_std(f.ok_or_else(|| {
                ShimError::FailedPrecondition(format!("log file {} not open", path.display()))
            })?)))
        }
        Target::Binary { .. } => Err(ShimError::InvalidArgument(
            "a binary:// logger must be named by stdout".into(),
        )),
    }
}

impl Stdio {
    /// Opens what `paths` name and starts copying between them and process `p` in the agent.
    pub(crate) async fn open(
        agent: &ProcessesClient,
        p: &ProcRef,
        paths: &StdioPaths,
        namespace: &str,
    ) -> Result<Stdio, ShimError> {
        let out = uri::parse(&paths.stdout)?;
        // With a terminal there is one output stream; the agent has no stderr to read.
        let err = if paths.terminal {
            None
        } else {
            Some(uri::parse(&paths.stderr)?)
        };
        let stdin = uri::parse(&paths.stdin)?;
        let fifos = IoTasks::default();
        let mut logger = None;
        let (so, se): (Sink, Option<Sink>) = match &out {
            // containerd names the logger in both; it gets both streams on its fds 3 and 4.
            Target::Binary { path, args } => {
                let (l, s) = binary::Logger::start(path, args, p.id(), namespace).await?;
                logger = Some(l);
                (
                    Box::new(s.stdout),
                    err.is_some().then(|| Box::new(s.stderr) as Sink),
                )
            }
            _ => {
                let mut file = None;
                let so = sink(&out, &fifos, &mut file).await?;
                let se = match &err {
                    Some(t) => Some(sink(t, &fifos, &mut file).await?),
                    None => None,
                };
                (so, se)
            }
        };
        let mut outputs = vec![tokio::spawn(pump::output(
            agent.clone(),
            p.clone(),
            false,
            so,
        ))];
        if let Some(se) = se {
            outputs.push(tokio::spawn(pump::output(
                agent.clone(),
                p.clone(),
                true,
                se,
            )));
        }
        let stdio = Stdio {
            fifos,
            outputs: Mutex::new(outputs),
            input: Mutex::new(None),
            logger,
        };
        match stdin {
            Target::None => {}
            Target::Fifo(path) => {
                let (rx, tx) = pipe();
                if let Err(e) = stdio
                    .fifos
                    .copy_from_fifo(&path.to_string_lossy(), tx)
                    .map_err(shim_err(format!("stdin {}", path.display())))
                {
                    stdio.close().await;
                    return Err(e);
                }
                *stdio.input.lock().unwrap_or_else(|p| p.into_inner()) =
                    Some(tokio::spawn(pump::input(agent.clone(), p.clone(), rx)));
            }
            other => {
                stdio.close().await;
                return Err(ShimError::InvalidArgument(format!(
                    "stdin must be a FIFO, not {other:?}"
                )));
            }
        }
        Ok(stdio)
    }

    /// Lets go of the shim's hold on stdin (CloseIO): the process reads EOF once
    /// containerd's writer is gone too.
    pub(crate) fn close_input(&self) {
        self.fifos.close_input();
    }

    /// After the process exited: lets the output reach its destination, bounded.
    pub(crate) async fn drain(&self) {
        let mut outputs = take(&self.outputs);
        let all = async {
            for h in &mut outputs {
                let _ = h.await;
            }
        };
        if tokio::time::timeout(DRAIN_TIMEOUT, all).await.is_err() {
            tracing::warn!("output still flowing {DRAIN_TIMEOUT:?} after exit; cutting it off");
            for h in &outputs {
                h.abort();
            }
        }
        self.fifos.shutdown().await;
    }

    /// Ends every copy and the logger (Delete, a failed start).
    pub(crate) async fn close(&self) {
        for h in take(&self.outputs).iter().chain(take(&self.input).iter()) {
            h.abort();
        }
        self.fifos.abort().await;
        if let Some(l) = &self.logger {
            l.stop().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use tokio::io::AsyncReadExt;

    use super::*;

    /// CloseIO's path into the pump: `IoTasks` copies the stdin FIFO into a pipe and drops
    /// the writer when containerd's writer is gone after CloseIO; the pump must then read EOF
    /// (and send CloseStdin), having got every byte first.
    #[tokio::test]
    async fn stdin_reaches_eof_after_close_io() {
        let dir = tempfile::tempdir().expect("tempdir");
        let fifo = dir.path().join("stdin");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).expect("mkfifo");
        let tasks = IoTasks::default();
        let (mut rx, tx) = pipe();
        tasks
            .copy_from_fifo(&fifo.to_string_lossy(), tx)
            .expect("copy from fifo");
        let mut writer = std::fs::OpenOptions::new()
            .write(true)
            .open(&fifo)
            .expect("open fifo");
        writer.write_all(b"hello\n").expect("write");
        drop(writer);
        tasks.close_input();
        let mut got = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), rx.read_to_end(&mut got))
            .await
            .expect("the pump's reader reaches EOF")
            .expect("read");
        assert_eq!(got, b"hello\n");
    }

    /// The output side: a pump whose copy to the FIFO is gone gets an error, not a write
    /// that blocks once the buffer is full (it then discards, and the process is not stuck).
    #[tokio::test]
    async fn a_pipe_without_its_reader_refuses_writes() {
        use tokio::io::AsyncWriteExt;
        let (rx, mut tx) = pipe();
        drop(rx);
        let big = vec![0u8; 2 * CHUNK as usize];
        let r = tokio::time::timeout(Duration::from_secs(5), tx.write_all(&big))
            .await
            .expect("the write does not block");
        assert_eq!(
            r.expect_err("no reader").kind(),
            std::io::ErrorKind::BrokenPipe
        );
    }
}
