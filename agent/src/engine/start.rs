//! StartContainer: let the waiting init process exec its entrypoint.

use std::sync::atomic::Ordering;

use super::error::{EngineError, Result};
use super::launch::release;
use super::Engine;

impl Engine {
    pub(crate) async fn start(&self, id: &str) -> Result<()> {
        let c = self.registry().get(id).await?;
        let sync = c
            .start_sync
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
            .ok_or_else(|| {
                EngineError::FailedPrecondition(format!("container {id:?} was already started"))
            })?;
        if c.init.exited().is_some() {
            return Err(EngineError::FailedPrecondition(format!(
                "container {id:?} has already exited"
            )));
        }
        tokio::task::spawn_blocking(move || release(sync))
            .await
            .map_err(|e| EngineError::Internal(format!("start task: {e}")))?
            .map_err(|e| e.context(format!("start container {id:?}")))?;
        c.started.store(true, Ordering::SeqCst);
        tracing::info!(container = %id, "started");
        Ok(())
    }
}
