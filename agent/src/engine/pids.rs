//! ListPids: every pid of a container's cgroup, each with the exec id of the process the
//! agent started with that pid (containerd's `ctr task ps` shows it).

use std::collections::HashMap;

use super::error::Result;
use super::Engine;

/// One process of a container's cgroup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ContainerPid {
    pub(crate) pid: u32,
    /// Exec id of the ExecProcess that started this pid; empty for the init process and for
    /// processes the agent did not start (their children).
    pub(crate) exec_id: String,
}

/// Labels `pids` (ascending, from cgroup.procs) with the exec ids of `execs` (pid, exec id),
/// keeping their order.
fn label(pids: Vec<u32>, execs: &[(u32, String)]) -> Vec<ContainerPid> {
    let by_pid: HashMap<u32, &str> = execs.iter().map(|(p, e)| (*p, e.as_str())).collect();
    pids.into_iter()
        .map(|pid| ContainerPid {
            pid,
            exec_id: by_pid.get(&pid).copied().unwrap_or_default().to_owned(),
        })
        .collect()
}

impl Engine {
    pub(crate) async fn pids(&self, id: &str) -> Result<Vec<ContainerPid>> {
        let c = self.registry().get(id).await?;
        // An exited exec's pid may since belong to another process: only live execs count.
        let execs: Vec<(u32, String)> = self
            .registry()
            .execs(id)
            .await?
            .iter()
            .filter(|p| p.exited().is_none())
            .filter_map(|p| Some((u32::try_from(p.pid.as_raw()).ok()?, p.exec_id.clone())))
            .collect();
        Ok(label(c.cgroup.pids(), &execs))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn execs_get_their_id_everything_else_none() {
        let execs = [(17, "sh".to_owned()), (99, "gone".to_owned())];
        let got = label(vec![1, 17, 18], &execs);
        let want = [(1, ""), (17, "sh"), (18, "")].map(|(pid, e)| ContainerPid {
            pid,
            exec_id: e.to_owned(),
        });
        assert_eq!(got, want);
    }
}
