//! Reaping: as PID 1 (or a child subreaper in host mode) the agent inherits every orphan and
//! must collect each exit so no zombie is left behind.
//!
//! The reaper task is the only caller of `waitpid(-1)` (two reapers would steal each other's
//! statuses; this is also why container processes are never spawned with `tokio::process`).
//! The container engine registers the pids it owns through a [`ReaperHandle`] and receives
//! their statuses on a oneshot channel. Registration is a message to the reaper task; before
//! dispatching a sweep the task drains pending registrations, so a pid registered before it
//! could exit is never missed. The engine guarantees that order: a container process blocks
//! on its sync socket until the agent has registered its pid.

use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};

use nix::errno::Errno;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::{mpsc, oneshot};

/// Errors of the reaper loop.
#[derive(Debug, thiserror::Error)]
pub enum ReaperError {
    #[error("install SIGCHLD handler: {0}")]
    Signal(#[source] std::io::Error),
}

/// How a registered process ended, and when it was reaped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ExitInfo {
    pub(crate) status: WaitStatus,
    /// Unix time in nanoseconds of the reap.
    pub(crate) exited_at_ns: i64,
}

type Registration = (Pid, oneshot::Sender<ExitInfo>);

/// Registers pids whose exit the caller wants to learn. Cheap to clone.
#[derive(Debug, Clone)]
pub struct ReaperHandle {
    tx: mpsc::UnboundedSender<Registration>,
}

impl ReaperHandle {
    /// Delivers the exit of `pid` on the returned channel. The channel closes without a value
    /// only if the reaper stops.
    pub(crate) fn register(&self, pid: Pid) -> oneshot::Receiver<ExitInfo> {
        let (tx, rx) = oneshot::channel();
        // A send error means the reaper is gone; the receiver then sees a closed channel.
        let _ = self.tx.send((pid, tx));
        rx
    }
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

fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Creates the reaper: the handle to register pids and the future to run as a task.
pub fn new() -> (
    ReaperHandle,
    impl std::future::Future<Output = Result<(), ReaperError>>,
) {
    let (tx, rx) = mpsc::unbounded_channel();
    (ReaperHandle { tx }, run(rx))
}

/// Reaps children for as long as the agent runs.
///
/// The SIGCHLD stream is installed before the first sweep so an exit between the two is not
/// missed: signals coalesce, so each wake-up sweeps until nothing is left.
async fn run(mut rx: mpsc::UnboundedReceiver<Registration>) -> Result<(), ReaperError> {
    let mut sigchld = signal(SignalKind::child()).map_err(ReaperError::Signal)?;
    let mut waiting: HashMap<Pid, oneshot::Sender<ExitInfo>> = HashMap::new();
    loop {
        while let Ok((pid, tx)) = rx.try_recv() {
            waiting.insert(pid, tx);
        }
        for status in reap_exited() {
            let info = ExitInfo {
                status,
                exited_at_ns: now_ns(),
            };
            // A registration sent before this exit may have arrived after the drain above:
            // drain again before declaring the pid unknown.
            let mut tx = status.pid().and_then(|pid| waiting.remove(&pid));
            if tx.is_none() {
                while let Ok((pid, tx)) = rx.try_recv() {
                    waiting.insert(pid, tx);
                }
                tx = status.pid().and_then(|pid| waiting.remove(&pid));
            }
            match tx {
                Some(tx) => {
                    let _ = tx.send(info);
                }
                None => tracing::debug!(?status, "reaped unregistered process"),
            }
        }
        tokio::select! {
            sig = sigchld.recv() => {
                if sig.is_none() {
                    // The signal driver is gone: the runtime is shutting down.
                    return Ok(());
                }
            }
            reg = rx.recv() => match reg {
                Some((pid, tx)) => { waiting.insert(pid, tx); }
                None => return Ok(()),
            },
        }
    }
}
