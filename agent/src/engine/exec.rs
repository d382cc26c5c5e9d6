//! ExecProcess: a new process inside a running container's namespaces and cgroup, with the
//! container's seccomp profile.

use std::sync::Arc;

use super::error::{EngineError, Result};
use super::launch::{launch, StdioSetup};
use super::oom::OomBaseline;
use super::plan::{InitKind, InitPlan};
use super::process::Process;
use super::{spec, Engine};

/// What ExecProcess asks for, free of wire types.
#[derive(Debug, Clone, Default)]
pub(crate) struct ExecRequest {
    pub(crate) id: String,
    pub(crate) exec_id: String,
    pub(crate) process_json: Vec<u8>,
    pub(crate) terminal: bool,
    pub(crate) stdin: bool,
}

impl Engine {
    pub(crate) async fn exec(&self, req: ExecRequest) -> Result<u32> {
        if req.exec_id.is_empty() {
            return Err(EngineError::InvalidArgument(
                "exec_id must not be empty".into(),
            ));
        }
        let p = spec::parse_process(&req.process_json)?;
        let c = self.registry().get(&req.id).await?;
        if c.init.exited().is_some() {
            return Err(EngineError::FailedPrecondition(format!(
                "container {:?} is not running",
                req.id
            )));
        }
        let process = spec::process_plan(&p, c.seccomp.clone())?;
        self.registry().reserve_exec(&req.id, &req.exec_id).await?;
        let init_pid = c.init.pid.as_raw();
        let join_ns = c
            .namespaces
            .names
            .iter()
            .map(|n| (n.clone(), format!("/proc/{init_pid}/ns/{n}").into()))
            .collect();
        let plan = InitPlan {
            kind: InitKind::Exec,
            cgroup_procs: Some(c.cgroup.procs_file()),
            join_ns,
            new_ns_flags: 0,
            rootfs: None,
            hostname: None,
            sysctls: Vec::new(),
            process,
            terminal: req.terminal,
        };
        let oom = OomBaseline::take(c.cgroup.memory_events());
        let result = self
            .spawn_process(plan, req.stdin, (&req.id, &req.exec_id), oom)
            .await;
        match result {
            Ok(p) => {
                let pid = p.pid.as_raw();
                self.registry().commit_exec(&req.id, &req.exec_id, p);
                u32::try_from(pid).map_err(|_| EngineError::Internal("negative pid".into()))
            }
            Err(e) => {
                self.registry().release_exec(&req.id, &req.exec_id);
                Err(e.context(format!("exec {:?} in container {:?}", req.exec_id, req.id)))
            }
        }
    }
}

impl Engine {
    /// Launches `plan` (an Exec) with pipes or a terminal as it says and a stdin stream if
    /// `stdin`, and wraps it as process `ids` (container id, exec id).
    pub(super) async fn spawn_process(
        &self,
        plan: InitPlan,
        stdin: bool,
        ids: (&str, &str),
        oom: OomBaseline,
    ) -> Result<Arc<Process>> {
        let StdioSetup { child, io } = StdioSetup::new(plan.terminal, stdin)?;
        let exe = self.config().init_exe.clone();
        let reaper = self.reaper().clone();
        let launched = tokio::task::spawn_blocking(move || launch(&exe, &plan, child, &reaper))
            .await
            .map_err(|e| EngineError::Internal(format!("exec task: {e}")))??;
        let io = io.finish(launched.terminal).inspect_err(|_| {
            let _ = nix::sys::signal::kill(launched.pid, nix::sys::signal::Signal::SIGKILL);
        })?;
        Ok(Arc::new(Process::new(
            ids.0,
            ids.1,
            launched.pid,
            launched.exit_rx,
            oom,
            io,
        )))
    }
}
