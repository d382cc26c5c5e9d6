//! Whole-container operations that need no process record: pause and resume (the guest's
//! cgroup freezer), resource updates, stats and pids.

use containerd_shim::protos::events::task::{TaskPaused, TaskResumed};
use hull_proto::containers::{
    ListPidsRequest, PauseContainerRequest, ResumeContainerRequest, StatsContainerRequest,
    UpdateContainerRequest,
};
use hull_proto::stats::ContainerStats;

use super::{ctx, not_found, Pod, ProcStatus};
use crate::bounds::MAX_PIDS;
use crate::errors::ShimError;
use crate::sizing::Demand;

impl Pod {
    /// The container must exist and its init process run (paused or not).
    fn running(&self, id: &str) -> Result<(), ShimError> {
        match self.info(id, "")?.status {
            ProcStatus::Running | ProcStatus::Paused => Ok(()),
            s => Err(ShimError::FailedPrecondition(format!(
                "container {id} is {s:?}, not running"
            ))),
        }
    }

    fn set_paused(&self, id: &str, paused: bool) -> Result<(), ShimError> {
        let mut map = self.lock();
        let c = map.get_mut(id).ok_or_else(|| not_found(id, ""))?;
        c.paused = paused;
        Ok(())
    }

    pub(crate) async fn do_pause(&self, id: &str) -> Result<(), ShimError> {
        self.running(id)?;
        let (containers, _) = self.clients()?;
        let req = PauseContainerRequest {
            container_id: id.to_owned(),
            ..Default::default()
        };
        containers
            .pause_container(ctx(), &req)
            .await
            .map_err(ShimError::agent(format!("pause {id}")))?;
        self.set_paused(id, true)?;
        self.events.send(TaskPaused {
            container_id: id.to_owned(),
            ..Default::default()
        });
        Ok(())
    }

    pub(crate) async fn do_resume(&self, id: &str) -> Result<(), ShimError> {
        self.running(id)?;
        let (containers, _) = self.clients()?;
        let req = ResumeContainerRequest {
            container_id: id.to_owned(),
            ..Default::default()
        };
        containers
            .resume_container(ctx(), &req)
            .await
            .map_err(ShimError::agent(format!("resume {id}")))?;
        self.set_paused(id, false)?;
        self.events.send(TaskResumed {
            container_id: id.to_owned(),
            ..Default::default()
        });
        Ok(())
    }

    /// Applies new `linux.resources` (OCI LinuxResources as JSON) to the container's cgroup
    /// in the guest, after growing the VM if the new limits need more than it has (an
    /// in-place resize: the kubelet raised the pod's host cgroup first).
    pub(crate) async fn do_update(
        &self,
        id: &str,
        resources_json: Vec<u8>,
    ) -> Result<(), ShimError> {
        self.running(id)?;
        if let Ok(r) = serde_json::from_slice::<serde_json::Value>(&resources_json) {
            let b = self.backend()?;
            self.grow_for(b, id, Demand::of_resources(&r)).await?;
        }
        let (containers, _) = self.clients()?;
        let req = UpdateContainerRequest {
            container_id: id.to_owned(),
            resources_json,
            ..Default::default()
        };
        containers
            .update_container(ctx(), &req)
            .await
            .map_err(ShimError::agent(format!("update {id}")))?;
        Ok(())
    }

    pub(crate) async fn do_stats(&self, id: &str) -> Result<ContainerStats, ShimError> {
        self.running(id)?;
        let (containers, _) = self.clients()?;
        let req = StatsContainerRequest {
            container_id: id.to_owned(),
            ..Default::default()
        };
        let r = containers
            .stats_container(ctx(), &req)
            .await
            .map_err(ShimError::agent(format!("stats of {id}")))?;
        Ok(r.stats.into_option().unwrap_or_default())
    }

    /// Pids of the container's processes, as the guest numbers them.
    pub(crate) async fn do_pids(&self, id: &str) -> Result<Vec<u32>, ShimError> {
        self.info(id, "")?;
        let (containers, _) = self.clients()?;
        let req = ListPidsRequest {
            container_id: id.to_owned(),
            ..Default::default()
        };
        let pids = containers
            .list_pids(ctx(), &req)
            .await
            .map_err(ShimError::agent(format!("list pids of {id}")))?
            .pids;
        bounded_pids(id, pids)
    }
}

/// More pids than a pod VM can number is not an answer: containerd gets an error, not a
/// list it would copy again into its reply.
pub(crate) fn bounded_pids(id: &str, pids: Vec<u32>) -> Result<Vec<u32>, ShimError> {
    if pids.len() > MAX_PIDS {
        return Err(ShimError::FailedPrecondition(format!(
            "the agent listed {} pids for {id}, more than {MAX_PIDS}",
            pids.len()
        )));
    }
    Ok(pids)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pid_list_longer_than_a_vm_can_have_is_refused() {
        assert_eq!(bounded_pids("c", vec![1, 2]).unwrap(), [1, 2]);
        let e = bounded_pids("c", vec![1; MAX_PIDS + 1]).unwrap_err();
        assert!(e.to_string().contains("more than"), "{e}");
    }
}
