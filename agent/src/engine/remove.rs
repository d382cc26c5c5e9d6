//! RemoveContainer: kill what is left, wait for it, remove the cgroup, unmount storages.

use std::time::Duration;

use super::error::{EngineError, Result};
use super::Engine;

const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

impl Engine {
    pub(crate) async fn remove(&self, id: &str, timeout_ms: u32) -> Result<()> {
        let c = self.registry().get(id).await?;
        let timeout = if timeout_ms == 0 {
            DEFAULT_TIMEOUT
        } else {
            Duration::from_millis(u64::from(timeout_ms))
        };
        // A frozen cgroup would keep SIGKILLed processes from dying. Thawing waits for the
        // kernel, so it runs off the runtime's one thread.
        if c.cgroup.is_frozen() {
            let cgroup = c.cgroup.clone();
            let _ = tokio::task::spawn_blocking(move || cgroup.freeze(false)).await;
        }
        c.cgroup.kill_all();
        // Dropping the start socket lets a never-started init see EOF and exit.
        c.start_sync
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        tokio::time::timeout(timeout, c.init.wait())
            .await
            .map_err(|_| {
                EngineError::DeadlineExceeded(format!(
                    "container {id:?}: init {} still alive {timeout:?} after SIGKILL",
                    c.init.pid
                ))
            })??;
        let cgroup = c.cgroup.clone();
        tokio::task::spawn_blocking(move || cgroup.remove(timeout))
            .await
            .map_err(|e| EngineError::Internal(format!("remove task: {e}")))??;
        if let Some(stop) = c.oom_stop.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = stop.send(());
        }
        for path in c.storages.iter().rev() {
            crate::storage::unmount(path);
        }
        self.registry().remove(id).await?;
        tracing::info!(container = %id, "removed");
        Ok(())
    }
}
