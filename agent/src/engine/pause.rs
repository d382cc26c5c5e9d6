//! PauseContainer / ResumeContainer through the cgroup v2 freezer.

use super::error::{EngineError, Result};
use super::Engine;

impl Engine {
    pub(crate) async fn pause(&self, id: &str, frozen: bool) -> Result<()> {
        let c = self.registry().get(id).await?;
        if c.init.exited().is_some() {
            return Err(EngineError::FailedPrecondition(format!(
                "container {id:?} is not running"
            )));
        }
        let cgroup = c.cgroup.clone();
        tokio::task::spawn_blocking(move || cgroup.freeze(frozen))
            .await
            .map_err(|e| EngineError::Internal(format!("freeze task: {e}")))?
    }
}
