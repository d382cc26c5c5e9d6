//! The agent's side of starting a container process: stdio, the init helper, the sync
//! protocol (see [`super::init`]), the terminal master the process sends back, and pid
//! registration with the reaper.

use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Command, Stdio};

use nix::sys::signal::Signal;
use nix::unistd::Pid;
use tokio::sync::oneshot;

use super::error::{EngineError, Result};
use super::init::INIT_ARG;
use super::plan::{InitPlan, InitReply};
use super::process::ProcessIo;
use super::stdio::{pipe, InputStream, OutputStream};
use super::sync_socket::SyncSocket;
use crate::reaper::{ExitInfo, ReaperHandle};

/// Descriptors the child gets as 0, 1, 2, and the agent's ends.
#[derive(Debug)]
pub(crate) struct StdioSetup {
    pub(crate) child: [OwnedFd; 3],
    pub(crate) io: AgentIo,
}

/// The agent's ends of a process's stdio, before launch.
#[derive(Debug)]
pub(crate) enum AgentIo {
    Pipes(ProcessIo),
    /// The container process makes the terminal and sends its master during launch
    /// ([`Launched::terminal`]; see [`super::init::console`] for why).
    Terminal,
}

impl StdioSetup {
    pub(crate) fn new(terminal: bool, stdin: bool) -> Result<Self> {
        let err = |what: &str| {
            let what = what.to_owned();
            move |e: std::io::Error| EngineError::io(what, e)
        };
        let null = |write: bool| {
            std::fs::OpenOptions::new()
                .read(!write)
                .write(write)
                .open("/dev/null")
                .map(OwnedFd::from)
                .map_err(err("open /dev/null"))
        };
        if terminal {
            // The helper's stdio until the container process replaces it with the slave.
            return Ok(StdioSetup {
                child: [null(false)?, null(true)?, null(true)?],
                io: AgentIo::Terminal,
            });
        }
        let (stdin_child, stdin_parent) = if stdin {
            let (r, w) = pipe().map_err(err("stdin pipe"))?;
            (r, Some(InputStream::new(w).map_err(err("stdin"))?))
        } else {
            (null(false)?, None)
        };
        let (out_r, out_w) = pipe().map_err(err("stdout pipe"))?;
        let (err_r, err_w) = pipe().map_err(err("stderr pipe"))?;
        Ok(StdioSetup {
            child: [stdin_child, out_w, err_w],
            io: AgentIo::Pipes(ProcessIo {
                stdin: stdin_parent,
                stdout: OutputStream::new(out_r, false).map_err(err("stdout"))?,
                stderr: OutputStream::new(err_r, false).map_err(err("stderr"))?,
                tty: None,
            }),
        })
    }
}

impl AgentIo {
    /// The agent's ends once the process is launched: the pipes, or streams on the terminal
    /// master the process sent. Call inside the tokio runtime.
    pub(crate) fn finish(self, master: Option<OwnedFd>) -> Result<ProcessIo> {
        let err = |what: &'static str| move |e: std::io::Error| EngineError::io(what, e);
        match (self, master) {
            (AgentIo::Pipes(io), None) => Ok(io),
            (AgentIo::Terminal, Some(master)) => {
                let dup = |fd: &OwnedFd| fd.try_clone().map_err(err("dup terminal"));
                let (reader, writer) = (dup(&master)?, dup(&master)?);
                Ok(ProcessIo {
                    // A terminal always takes input: it is how ^C and ^D reach the process.
                    stdin: Some(InputStream::new(writer).map_err(err("terminal input"))?),
                    stdout: OutputStream::new(reader, true).map_err(err("terminal output"))?,
                    stderr: OutputStream::closed(),
                    tty: Some(master),
                })
            }
            (_, master) => Err(EngineError::Internal(format!(
                "the terminal master ({}) does not match the stdio asked for",
                if master.is_some() { "sent" } else { "missing" }
            ))),
        }
    }
}

/// A launched process, stopped at the step its plan says (Ready for Create).
#[derive(Debug)]
pub(crate) struct Launched {
    pub(crate) pid: Pid,
    pub(crate) exit_rx: oneshot::Receiver<ExitInfo>,
    /// For Create: the socket the `start` word goes to.
    pub(crate) sync: Option<SyncSocket>,
    /// The terminal master the process sent, if the plan asked for a terminal.
    pub(crate) terminal: Option<OwnedFd>,
}

fn setup_failed(msg: String) -> EngineError {
    EngineError::FailedPrecondition(format!("container process setup failed: {msg}"))
}

/// How long a helper that reported a failure gets to exit (it exits right after writing it).
const HELPER_EXIT_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// Waits (blocking) until the reaper reports the exit on `rx`, or `grace` passes.
fn await_exit(mut rx: oneshot::Receiver<ExitInfo>, grace: std::time::Duration) {
    let deadline = std::time::Instant::now() + grace;
    while std::time::Instant::now() < deadline {
        match rx.try_recv() {
            Err(oneshot::error::TryRecvError::Empty) => {
                std::thread::sleep(std::time::Duration::from_millis(2));
            }
            _ => return,
        }
    }
    tracing::warn!("init helper still running {grace:?} after it reported a failure");
}

/// Runs the helper and the protocol up to Ready (Create) or the exec (Exec). Blocking: call
/// it from `spawn_blocking`.
pub(crate) fn launch(
    init_exe: &Path,
    plan: &InitPlan,
    child_fds: [OwnedFd; 3],
    reaper: &ReaperHandle,
) -> Result<Launched> {
    // Each step's time in the debug log (the helper's exec and start-up, its namespaces and
    // fork, the container's rootfs and credentials): what a container start spends.
    let t0 = std::time::Instant::now();
    let (ours, theirs) = UnixStream::pair().map_err(|e| EngineError::io("socketpair", e))?;
    let [fd0, fd1, fd2] = child_fds;
    let mut cmd = Command::new(init_exe);
    cmd.arg(INIT_ARG)
        .env_clear()
        .stdin(Stdio::from(fd0))
        .stdout(Stdio::from(fd1))
        .stderr(Stdio::from(fd2));
    crate::sys::pass_fd_as_3(&mut cmd, theirs.as_raw_fd());
    // The helper's outcome arrives on the socket; its exit is registered too (it blocks on the
    // plan until we send it, so it cannot exit before), because a helper that failed before
    // giving a pid must be gone before the error is: until then it is still a process of the
    // container's cgroup (seen: a ListPids right after a fork refused by pids.max found it).
    let helper = cmd
        .spawn()
        .map_err(|e| EngineError::io(format!("spawn init helper {init_exe:?}"), e))?;
    let spawned = t0.elapsed();
    let helper_exit = i32::try_from(helper.id())
        .ok()
        .map(|p| reaper.register(Pid::from_raw(p)));
    drop(helper);
    drop(cmd);
    drop(theirs);
    let mut sync = SyncSocket::new(ours);
    let mut line = serde_json::to_vec(plan).map_err(|e| EngineError::Internal(e.to_string()))?;
    line.push(b'\n');
    sync.send(&line, "send plan to init helper")?;
    let pid = match sync.read_reply()? {
        Some(InitReply::Pid(pid)) => Pid::from_raw(pid),
        Some(InitReply::Error(msg)) => {
            if let Some(rx) = helper_exit {
                await_exit(rx, HELPER_EXIT_GRACE);
            }
            return Err(setup_failed(msg));
        }
        other => {
            return Err(EngineError::Internal(format!(
                "init helper ended without a pid: {other:?}"
            )))
        }
    };
    let forked = t0.elapsed();
    let exit_rx = reaper.register(pid);
    let fail = |e: EngineError| {
        let _ = nix::sys::signal::kill(pid, Signal::SIGKILL);
        e
    };
    sync.send(b"go\n", "release container process")
        .map_err(fail)?;
    let terminal = if plan.terminal {
        match sync.read_reply().map_err(fail)? {
            Some(InitReply::Terminal) => Some(sync.take_fd().ok_or_else(|| {
                fail(EngineError::Internal(
                    "the terminal reply came without a descriptor".into(),
                ))
            })?),
            Some(InitReply::Error(msg)) => return Err(fail(setup_failed(msg))),
            other => {
                return Err(fail(setup_failed(format!(
                    "process ended before its terminal was made ({other:?})"
                ))))
            }
        }
    } else {
        None
    };
    match plan.kind {
        super::plan::InitKind::Create => match sync.read_reply().map_err(fail)? {
            Some(InitReply::Ready) => {
                tracing::debug!(
                    ?spawned,
                    ?forked,
                    ready = ?t0.elapsed(),
                    "container process ready (helper spawned, its child forked, set up)"
                );
                Ok(Launched {
                    pid,
                    exit_rx,
                    sync: Some(sync),
                    terminal,
                })
            }
            Some(InitReply::Error(msg)) => Err(fail(setup_failed(msg))),
            other => Err(fail(setup_failed(format!(
                "process ended during setup ({other:?})"
            )))),
        },
        super::plan::InitKind::Exec => match sync.read_reply().map_err(fail)? {
            None => Ok(Launched {
                pid,
                exit_rx,
                sync: None,
                terminal,
            }),
            Some(InitReply::Error(msg)) => Err(fail(setup_failed(msg))),
            Some(other) => Err(fail(setup_failed(format!("unexpected {other:?}")))),
        },
    }
}

/// Lets a created container exec its entrypoint; returns when the exec happened or failed.
pub(crate) fn release(mut sync: SyncSocket) -> Result<()> {
    sync.send(b"start\n", "send start")?;
    match sync.read_reply()? {
        None => Ok(()),
        Some(InitReply::Error(msg)) => Err(setup_failed(msg)),
        Some(other) => Err(setup_failed(format!("unexpected {other:?}"))),
    }
}
