//! OOM, from the `oom_kill` counter of a container cgroup's `memory.events`, in two forms:
//! events, where a watcher per container queues the container id when the counter grows and
//! `GetOomEvent` long-polls the queue (polling every 100 ms rather than inotify keeps one
//! mechanism for every kernel); and the verdict of one process's exit ([`OomBaseline`]), which
//! WaitProcess reports as `oom_killed`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::signal::Signal;
use nix::sys::wait::WaitStatus;
use tokio::sync::{mpsc, oneshot, Mutex};

use super::cgroup::read_keyed;

const POLL: Duration = Duration::from_millis(100);

/// The queue of OOM events.
#[derive(Debug)]
pub(crate) struct OomEvents {
    tx: mpsc::UnboundedSender<String>,
    rx: Mutex<mpsc::UnboundedReceiver<String>>,
}

/// The `oom_kill` counter of a `memory.events` file; None without one (no memory controller,
/// or the cgroup is gone).
fn oom_kills(path: &Path) -> Option<u64> {
    read_keyed(path)
        .into_iter()
        .find(|(k, _)| k == "oom_kill")
        .map(|(_, v)| v)
}

impl OomEvents {
    pub(crate) fn new() -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        OomEvents {
            tx,
            rx: Mutex::new(rx),
        }
    }

    /// Watches `memory_events` for container `id` until `stop` fires or is dropped.
    pub(crate) fn watch(&self, id: String, memory_events: PathBuf) -> oneshot::Sender<()> {
        let (stop_tx, mut stop_rx) = oneshot::channel();
        let tx = self.tx.clone();
        tokio::spawn(async move {
            let count = || oom_kills(&memory_events).unwrap_or(0);
            let mut seen = count();
            loop {
                tokio::select! {
                    _ = &mut stop_rx => break,
                    _ = tokio::time::sleep(POLL) => {}
                }
                let now = count();
                if now > seen {
                    tracing::info!(container = %id, "OOM kill");
                    let _ = tx.send(id.clone());
                }
                seen = now;
            }
            // A last look: the kill may have landed just before the container was removed.
            if count() > seen {
                let _ = tx.send(id.clone());
            }
        });
        stop_tx
    }

    /// Waits for the next OOM event.
    pub(crate) async fn next(&self) -> Option<String> {
        self.rx.lock().await.recv().await
    }
}

impl Default for OomEvents {
    fn default() -> Self {
        Self::new()
    }
}

/// The `oom_kill` counter of a container's cgroup just before one of its processes was
/// started, to tell at the process's reap whether the OOM killer is what killed it.
#[derive(Debug, Clone)]
pub(crate) struct OomBaseline {
    memory_events: PathBuf,
    at_start: Option<u64>,
}

impl OomBaseline {
    /// Reads the counter now. Taken before the process exists, so an OOM kill of the process
    /// however early is counted after this read.
    pub(crate) fn take(memory_events: PathBuf) -> Self {
        let at_start = oom_kills(&memory_events);
        OomBaseline {
            memory_events,
            at_start,
        }
    }

    /// Whether the process that ended with `status` was OOM-killed: it died of SIGKILL and the
    /// counter grew since [`Self::take`]. Call it once the exit was reaped: the kernel counts an
    /// OOM kill before it sends the SIGKILL (`__oom_kill_process`: "Raise event before sending
    /// signal: task reaper must see this"), so the growth is visible by then. The counter is
    /// per cgroup, not per process: a process SIGKILLed by someone else while another process
    /// of the same container is OOM-killed also counts as OOM-killed.
    pub(crate) fn killed_by_oom(&self, status: WaitStatus) -> bool {
        if !matches!(status, WaitStatus::Signaled(_, Signal::SIGKILL, _)) {
            return false;
        }
        match (self.at_start, oom_kills(&self.memory_events)) {
            (Some(start), Some(now)) => now > start,
            // No counter at start means no memory controller: the kernel keeps no count.
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use nix::unistd::Pid;

    use super::*;

    fn events(oom_kill: u64) -> String {
        format!("low 0\nhigh 0\nmax 7\noom 2\noom_kill {oom_kill}\noom_group_kill 0\n")
    }

    fn killed(sig: Signal) -> WaitStatus {
        WaitStatus::Signaled(Pid::from_raw(42), sig, false)
    }

    #[test]
    fn sigkill_with_a_grown_counter_is_an_oom_kill() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("memory.events");
        std::fs::write(&file, events(3)).unwrap();
        let base = OomBaseline::take(file.clone());
        assert!(
            !base.killed_by_oom(killed(Signal::SIGKILL)),
            "no growth yet"
        );
        std::fs::write(&file, events(4)).unwrap();
        assert!(base.killed_by_oom(killed(Signal::SIGKILL)));
        // Only a SIGKILL death is the OOM killer's.
        assert!(!base.killed_by_oom(killed(Signal::SIGTERM)));
        assert!(!base.killed_by_oom(WaitStatus::Exited(Pid::from_raw(42), 137)));
    }

    #[test]
    fn no_counter_is_no_oom_kill() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("memory.events");
        let base = OomBaseline::take(file.clone());
        // A counter appearing later (or a cgroup gone at reap) is no evidence either way.
        std::fs::write(&file, events(1)).unwrap();
        assert!(!base.killed_by_oom(killed(Signal::SIGKILL)));
        let base = OomBaseline::take(file.clone());
        std::fs::remove_file(&file).unwrap();
        assert!(!base.killed_by_oom(killed(Signal::SIGKILL)));
    }
}
