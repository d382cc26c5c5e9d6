//! SignalProcess: one process, or every process of the container's cgroup.

use nix::sys::signal::Signal;
use nix::unistd::Pid;

use super::error::{EngineError, Result};
use super::Engine;

impl Engine {
    pub(crate) async fn signal(
        &self,
        id: &str,
        exec_id: &str,
        signal: u32,
        all: bool,
    ) -> Result<()> {
        let sig = i32::try_from(signal)
            .ok()
            .and_then(|s| Signal::try_from(s).ok())
            .ok_or_else(|| EngineError::InvalidArgument(format!("unknown signal {signal}")))?;
        if all {
            let c = self.registry().get(id).await?;
            if sig == Signal::SIGKILL {
                c.cgroup.kill_all();
            } else {
                for pid in c.cgroup.pids() {
                    if let Ok(pid) = i32::try_from(pid) {
                        let _ = nix::sys::signal::kill(Pid::from_raw(pid), sig);
                    }
                }
            }
            return Ok(());
        }
        let p = self.registry().process(id, exec_id).await?;
        p.signal(sig)
    }
}
