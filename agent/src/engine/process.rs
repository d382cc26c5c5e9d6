//! A running (or exited) container process as the agent sees it: its pid, its exit status as
//! delivered by the reaper (and whether the OOM killer caused it), and its stdio streams. Each
//! stream has its own async mutex: one reader or writer at a time per stream, independent of
//! the others.

use std::os::fd::{AsFd, OwnedFd};

use nix::sys::signal::Signal;
use nix::unistd::Pid;
use tokio::sync::{oneshot, watch, Mutex};

use super::error::{EngineError, Result};
use super::oom::OomBaseline;
use super::stdio::{InputStream, OutputStream};
use crate::reaper::ExitInfo;

/// The agent's ends of a process's stdio.
#[derive(Debug)]
pub(crate) struct ProcessIo {
    pub(crate) stdin: Option<InputStream>,
    pub(crate) stdout: OutputStream,
    pub(crate) stderr: OutputStream,
    /// The terminal master, kept for resizes.
    pub(crate) tty: Option<OwnedFd>,
}

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Exit {
    pub(crate) info: ExitInfo,
    /// The OOM killer killed it (see [`OomBaseline::killed_by_oom`]).
    pub(crate) oom_killed: bool,
}

/// One process of a container.
#[derive(Debug)]
pub(crate) struct Process {
    pub(crate) container_id: String,
    pub(crate) exec_id: String,
    pub(crate) pid: Pid,
    exit: watch::Receiver<Option<Exit>>,
    stdin: Mutex<Option<InputStream>>,
    stdout: Mutex<OutputStream>,
    stderr: Mutex<OutputStream>,
    tty: Option<OwnedFd>,
}

impl Process {
    /// Wraps a registered pid; a task turns the reaper's oneshot into a watch all waiters share.
    /// `oom` was taken before the process was launched.
    pub(crate) fn new(
        container_id: &str,
        exec_id: &str,
        pid: Pid,
        exit_rx: oneshot::Receiver<ExitInfo>,
        oom: OomBaseline,
        io: ProcessIo,
    ) -> Self {
        let (tx, rx) = watch::channel(None);
        tokio::spawn(async move {
            if let Ok(info) = exit_rx.await {
                // Judged at once, not when someone waits: RemoveContainer deletes the cgroup,
                // and its counter with it, as soon as the init's exit is published.
                let oom_killed = oom.killed_by_oom(info.status);
                let _ = tx.send(Some(Exit { info, oom_killed }));
            }
        });
        Process {
            container_id: container_id.to_owned(),
            exec_id: exec_id.to_owned(),
            pid,
            exit: rx,
            stdin: Mutex::new(io.stdin),
            stdout: Mutex::new(io.stdout),
            stderr: Mutex::new(io.stderr),
            tty: io.tty,
        }
    }

    pub(crate) fn exited(&self) -> Option<Exit> {
        *self.exit.borrow()
    }

    pub(crate) async fn wait(&self) -> Result<Exit> {
        let mut rx = self.exit.clone();
        let r = rx.wait_for(Option::is_some).await.map_err(|_| {
            EngineError::Internal(format!("process {}: the reaper stopped", self.pid))
        })?;
        r.ok_or_else(|| EngineError::Internal("exit status vanished".into()))
    }

    pub(crate) fn signal(&self, sig: Signal) -> Result<()> {
        if self.exited().is_some() {
            return Err(EngineError::NotFound(format!(
                "process {}/{} has already exited",
                self.container_id, self.exec_id
            )));
        }
        nix::sys::signal::kill(self.pid, sig)
            .map_err(|e| EngineError::Internal(format!("kill {} {sig}: {e}", self.pid)))
    }

    pub(crate) async fn write_stdin(&self, data: &[u8]) -> Result<usize> {
        let mut guard = self.stdin.lock().await;
        let stdin = guard.as_mut().ok_or_else(|| {
            EngineError::FailedPrecondition(format!(
                "process {}/{} has no open stdin",
                self.container_id, self.exec_id
            ))
        })?;
        stdin
            .write_some(data)
            .await
            .map_err(|e| EngineError::io("write stdin", e))
    }

    pub(crate) async fn close_stdin(&self) -> Result<()> {
        let mut guard = self.stdin.lock().await;
        if self.tty.is_some() {
            // A terminal has no half-close: send the EOF character, as a typed ^D would.
            if let Some(stdin) = guard.as_mut() {
                let _ = stdin.write_some(&[4]).await;
            }
        }
        guard.take();
        Ok(())
    }

    pub(crate) async fn read(&self, stderr: bool, max: usize) -> Result<(Vec<u8>, bool)> {
        let stream = if stderr { &self.stderr } else { &self.stdout };
        stream
            .lock()
            .await
            .read_chunk(max)
            .await
            .map_err(|e| EngineError::io("read output", e))
    }

    pub(crate) fn resize(&self, rows: u32, cols: u32) -> Result<()> {
        let tty = self.tty.as_ref().ok_or_else(|| {
            EngineError::FailedPrecondition(format!(
                "process {}/{} has no terminal",
                self.container_id, self.exec_id
            ))
        })?;
        let rows = u16::try_from(rows)
            .map_err(|_| EngineError::InvalidArgument("rows too large".into()))?;
        let cols = u16::try_from(cols)
            .map_err(|_| EngineError::InvalidArgument("cols too large".into()))?;
        crate::sys::set_winsize(tty.as_fd(), rows, cols)
            .map_err(|e| EngineError::io("resize terminal", e))
    }
}
