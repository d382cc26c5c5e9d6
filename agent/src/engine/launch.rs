//! The agent's side of starting a container process: stdio, the init helper, the sync
//! protocol (see [`super::init`]) and pid registration with the reaper.

use std::io::{BufRead, BufReader, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use nix::sys::signal::Signal;
use nix::unistd::Pid;
use tokio::sync::oneshot;

use super::error::{EngineError, Result};
use super::init::INIT_ARG;
use super::plan::{InitPlan, InitReply};
use super::process::ProcessIo;
use super::stdio::{pipe, InputStream, OutputStream};
use crate::reaper::{ExitInfo, ReaperHandle};

/// Descriptors the child gets as 0, 1, 2, and the agent's ends.
#[derive(Debug)]
pub struct StdioSetup {
    pub child: [OwnedFd; 3],
    pub io: ProcessIo,
    /// The terminal's slave path, for /dev/console.
    pub console: Option<PathBuf>,
}

impl StdioSetup {
    pub fn new(terminal: bool, stdin: bool) -> Result<Self> {
        let err = |what: &str| {
            let what = what.to_owned();
            move |e: std::io::Error| EngineError::io(what, e)
        };
        if terminal {
            let pty =
                nix::pty::openpty(None, None).map_err(|e| EngineError::io("openpty", e.into()))?;
            let console =
                std::fs::read_link(format!("/proc/self/fd/{}", pty.slave.as_raw_fd())).ok();
            let _ = nix::fcntl::fcntl(
                &pty.master,
                nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
            );
            let dup = |fd: &OwnedFd| fd.try_clone().map_err(err("dup terminal"));
            let child = [dup(&pty.slave)?, dup(&pty.slave)?, pty.slave];
            let reader = dup(&pty.master)?;
            let writer = dup(&pty.master)?;
            Ok(StdioSetup {
                child,
                io: ProcessIo {
                    stdin: Some(InputStream::new(writer).map_err(err("terminal input"))?),
                    stdout: OutputStream::new(reader, true).map_err(err("terminal output"))?,
                    stderr: OutputStream::closed(),
                    tty: Some(pty.master),
                },
                console,
            })
        } else {
            let (stdin_child, stdin_parent) = if stdin {
                let (r, w) = pipe().map_err(err("stdin pipe"))?;
                (r, Some(InputStream::new(w).map_err(err("stdin"))?))
            } else {
                let null = std::fs::File::open("/dev/null").map_err(err("open /dev/null"))?;
                (OwnedFd::from(null), None)
            };
            let (out_r, out_w) = pipe().map_err(err("stdout pipe"))?;
            let (err_r, err_w) = pipe().map_err(err("stderr pipe"))?;
            Ok(StdioSetup {
                child: [stdin_child, out_w, err_w],
                io: ProcessIo {
                    stdin: stdin_parent,
                    stdout: OutputStream::new(out_r, false).map_err(err("stdout"))?,
                    stderr: OutputStream::new(err_r, false).map_err(err("stderr"))?,
                    tty: None,
                },
                console: None,
            })
        }
    }
}

/// A launched process, stopped at the step its plan says (Ready for Create).
#[derive(Debug)]
pub struct Launched {
    pub pid: Pid,
    pub exit_rx: oneshot::Receiver<ExitInfo>,
    /// For Create: the socket the `start` word goes to.
    pub sync: Option<(UnixStream, BufReader<UnixStream>)>,
}

fn read_reply(reader: &mut BufReader<UnixStream>) -> Result<Option<InitReply>> {
    let mut line = String::new();
    match reader.read_line(&mut line) {
        Ok(0) => Ok(None),
        Ok(_) => serde_json::from_str(&line).map(Some).map_err(|e| {
            EngineError::Internal(format!("bad reply from init helper {line:?}: {e}"))
        }),
        Err(e) => Err(EngineError::io("read from init helper", e)),
    }
}

fn setup_failed(msg: String) -> EngineError {
    EngineError::FailedPrecondition(format!("container process setup failed: {msg}"))
}

/// Runs the helper and the protocol up to Ready (Create) or the exec (Exec). Blocking: call
/// it from `spawn_blocking`.
pub fn launch(
    init_exe: &Path,
    plan: &InitPlan,
    child_fds: [OwnedFd; 3],
    reaper: &ReaperHandle,
) -> Result<Launched> {
    let (mut ours, theirs) = UnixStream::pair().map_err(|e| EngineError::io("socketpair", e))?;
    let [fd0, fd1, fd2] = child_fds;
    let mut cmd = Command::new(init_exe);
    cmd.arg(INIT_ARG)
        .env_clear()
        .stdin(Stdio::from(fd0))
        .stdout(Stdio::from(fd1))
        .stderr(Stdio::from(fd2));
    crate::sys::pass_fd_as_3(&mut cmd, theirs.as_raw_fd());
    // The helper is reaped as an unregistered child; its outcome arrives on the socket.
    let helper = cmd
        .spawn()
        .map_err(|e| EngineError::io(format!("spawn init helper {init_exe:?}"), e))?;
    drop(helper);
    drop(cmd);
    drop(theirs);
    let mut reader = BufReader::new(
        ours.try_clone()
            .map_err(|e| EngineError::io("dup socket", e))?,
    );
    let mut line = serde_json::to_vec(plan).map_err(|e| EngineError::Internal(e.to_string()))?;
    line.push(b'\n');
    ours.write_all(&line)
        .map_err(|e| EngineError::io("send plan to init helper", e))?;
    let pid = match read_reply(&mut reader)? {
        Some(InitReply::Pid(pid)) => Pid::from_raw(pid),
        Some(InitReply::Error(msg)) => return Err(setup_failed(msg)),
        other => {
            return Err(EngineError::Internal(format!(
                "init helper ended without a pid: {other:?}"
            )))
        }
    };
    let exit_rx = reaper.register(pid);
    let fail = |e: EngineError| {
        let _ = nix::sys::signal::kill(pid, Signal::SIGKILL);
        e
    };
    ours.write_all(b"go\n")
        .map_err(|e| fail(EngineError::io("release container process", e)))?;
    match plan.kind {
        super::plan::InitKind::Create => match read_reply(&mut reader).map_err(fail)? {
            Some(InitReply::Ready) => Ok(Launched {
                pid,
                exit_rx,
                sync: Some((ours, reader)),
            }),
            Some(InitReply::Error(msg)) => Err(fail(setup_failed(msg))),
            other => Err(fail(setup_failed(format!(
                "process ended during setup ({other:?})"
            )))),
        },
        super::plan::InitKind::Exec => match read_reply(&mut reader).map_err(fail)? {
            None => Ok(Launched {
                pid,
                exit_rx,
                sync: None,
            }),
            Some(InitReply::Error(msg)) => Err(fail(setup_failed(msg))),
            Some(other) => Err(fail(setup_failed(format!("unexpected {other:?}")))),
        },
    }
}

/// Lets a created container exec its entrypoint; returns when the exec happened or failed.
pub fn release(sync: (UnixStream, BufReader<UnixStream>)) -> Result<()> {
    let (mut ours, mut reader) = sync;
    ours.write_all(b"start\n")
        .map_err(|e| EngineError::io("send start", e))?;
    match read_reply(&mut reader)? {
        None => Ok(()),
        Some(InitReply::Error(msg)) => Err(setup_failed(msg)),
        Some(other) => Err(setup_failed(format!("unexpected {other:?}"))),
    }
}
