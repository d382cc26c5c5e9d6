//! OOM events: a watcher per container compares the `oom_kill` counter of its cgroup's
//! `memory.events` and queues the container id when it grows; `GetOomEvent` long-polls the
//! queue. Polling (every 100 ms) rather than inotify keeps one mechanism for every kernel.

use std::path::PathBuf;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, Mutex};

use super::cgroup::read_keyed;

const POLL: Duration = Duration::from_millis(100);

/// The queue of OOM events.
#[derive(Debug)]
pub struct OomEvents {
    tx: mpsc::UnboundedSender<String>,
    rx: Mutex<mpsc::UnboundedReceiver<String>>,
}

fn oom_kills(path: &std::path::Path) -> u64 {
    read_keyed(path)
        .into_iter()
        .find(|(k, _)| k == "oom_kill")
        .map_or(0, |(_, v)| v)
}

impl OomEvents {
    pub fn new() -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        OomEvents {
            tx,
            rx: Mutex::new(rx),
        }
    }

    /// Watches `memory_events` for container `id` until `stop` fires or is dropped.
    pub fn watch(&self, id: String, memory_events: PathBuf) -> oneshot::Sender<()> {
        let (stop_tx, mut stop_rx) = oneshot::channel();
        let tx = self.tx.clone();
        tokio::spawn(async move {
            let mut seen = oom_kills(&memory_events);
            loop {
                tokio::select! {
                    _ = &mut stop_rx => break,
                    _ = tokio::time::sleep(POLL) => {}
                }
                let now = oom_kills(&memory_events);
                if now > seen {
                    tracing::info!(container = %id, "OOM kill");
                    let _ = tx.send(id.clone());
                }
                seen = now;
            }
            // A last look: the kill may have landed just before the container was removed.
            if oom_kills(&memory_events) > seen {
                let _ = tx.send(id.clone());
            }
        });
        stop_tx
    }

    /// Waits for the next OOM event.
    pub async fn next(&self) -> Option<String> {
        self.rx.lock().await.recv().await
    }
}

impl Default for OomEvents {
    fn default() -> Self {
        Self::new()
    }
}
