//! Reaping: as PID 1 (or a child subreaper in host mode) the agent inherits every orphan and
//! must collect each exit so no zombie is left behind.
//!
//! Today every reaped status is only logged. The container engine will register the pids it
//! owns here to receive their statuses; the reaper stays the single caller of `waitpid(-1)`,
//! since two reapers would steal each other's statuses.

use nix::errno::Errno;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use tokio::signal::unix::{signal, SignalKind};

/// Errors of the reaper loop.
#[derive(Debug, thiserror::Error)]
pub enum ReaperError {
    #[error("install SIGCHLD handler: {0}")]
    Signal(#[source] std::io::Error),
}

/// Collects every child that has exited, without blocking. Returns their statuses.
pub fn reap_exited() -> Vec<WaitStatus> {
    let mut reaped = Vec::new();
    loop {
        match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => break,
            Ok(status) => reaped.push(status),
            Err(Errno::EINTR) => continue,
            Err(e) => {
                tracing::warn!("waitpid: {e}");
                break;
            }
        }
    }
    reaped
}

/// Reaps children for as long as the agent runs.
///
/// The SIGCHLD stream is installed before the first sweep so an exit between the two is not
/// missed: signals coalesce, so each wake-up sweeps until nothing is left.
pub async fn run() -> Result<(), ReaperError> {
    let mut sigchld = signal(SignalKind::child()).map_err(ReaperError::Signal)?;
    loop {
        for status in reap_exited() {
            tracing::debug!(?status, "reaped");
        }
        if sigchld.recv().await.is_none() {
            // The signal driver is gone: the runtime is shutting down.
            return Ok(());
        }
    }
}
