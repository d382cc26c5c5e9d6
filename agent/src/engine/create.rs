//! CreateContainer: validate the spec, reserve the id, make the cgroup, launch the init
//! process up to Ready. Any failure undoes what was done.

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

use super::error::{EngineError, Result};
use super::launch::{launch, StdioSetup};
use super::oom::OomBaseline;
use super::process::Process;
use super::registry::Container;
use super::{spec, validate_id, Engine};

/// What CreateContainer asks for, free of wire types.
#[derive(Debug, Clone, Default)]
pub(crate) struct CreateRequest {
    pub(crate) id: String,
    pub(crate) exec_id: String,
    pub(crate) spec_json: Vec<u8>,
    pub(crate) terminal: bool,
    pub(crate) stdin: bool,
    /// Storages already mounted for this container (unmounted again on failure or remove).
    pub(crate) storages: Vec<PathBuf>,
}

impl Engine {
    /// Creates a container; returns its init pid.
    pub(crate) async fn create(&self, req: CreateRequest) -> Result<u32> {
        validate_id(&req.id, "container id")?;
        let exec_id = if req.exec_id.is_empty() {
            req.id.clone()
        } else {
            req.exec_id.clone()
        };
        let spec = spec::parse_spec(&req.spec_json)?;
        let ns = spec::namespaces(&spec)?;
        // Validate fully before reserving: a bad spec must not leave anything behind.
        spec::create_plan(&spec, &ns, req.terminal, self.config().host_mode)?;
        self.registry().reserve(&req.id).await?;
        match self.create_reserved(&req, &exec_id, spec, ns).await {
            Ok(pid) => Ok(pid),
            Err(e) => {
                self.registry().release(&req.id);
                Err(e)
            }
        }
    }

    async fn create_reserved(
        &self,
        req: &CreateRequest,
        exec_id: &str,
        spec: oci_spec::runtime::Spec,
        ns: spec::Namespaces,
    ) -> Result<u32> {
        let t0 = std::time::Instant::now();
        let cgroup = self.cgroups().create(&req.id)?;
        let undo_cgroup = |e: EngineError| {
            let _ = cgroup.remove(std::time::Duration::from_secs(1));
            e
        };
        if let Some(res) = spec.linux().as_ref().and_then(|l| l.resources().as_ref()) {
            cgroup.apply(res).map_err(undo_cgroup)?;
        }
        let stdio = StdioSetup::new(req.terminal, req.stdin).map_err(undo_cgroup)?;
        let mut plan = spec::create_plan(&spec, &ns, req.terminal, self.config().host_mode)
            .map_err(undo_cgroup)?;
        plan.cgroup_procs = Some(cgroup.procs_file());
        tracing::debug!(container = %req.id, elapsed = ?t0.elapsed(), "cgroup and stdio ready");
        let seccomp = plan.process.seccomp.clone();
        let StdioSetup { child, io } = stdio;
        let exe = self.config().init_exe.clone();
        let reaper = self.reaper().clone();
        let oom = OomBaseline::take(cgroup.memory_events());
        let abort = |e: EngineError| {
            cgroup.kill_all();
            undo_cgroup(e.context(format!("create container {:?}", req.id)))
        };
        let launched = tokio::task::spawn_blocking(move || launch(&exe, &plan, child, &reaper))
            .await
            .map_err(|e| EngineError::Internal(format!("launch task: {e}")))
            .and_then(|r| r)
            .map_err(abort)?;
        let io = io.finish(launched.terminal).map_err(abort)?;
        let pid = launched.pid;
        let init = Arc::new(Process::new(
            &req.id,
            exec_id,
            pid,
            launched.exit_rx,
            oom,
            io,
        ));
        let container = Arc::new(Container {
            id: req.id.clone(),
            cgroup,
            init,
            namespaces: ns,
            seccomp,
            start_sync: Mutex::new(launched.sync),
            started: AtomicBool::new(false),
            storages: req.storages.clone(),
            oom_stop: Mutex::new(None),
        });
        let stop = self
            .oom_events()
            .watch(req.id.clone(), container.cgroup.memory_events());
        *container.oom_stop.lock().unwrap_or_else(|p| p.into_inner()) = Some(stop);
        self.registry().commit(container);
        tracing::info!(container = %req.id, pid = pid.as_raw(), elapsed = ?t0.elapsed(), "created");
        u32::try_from(pid.as_raw()).map_err(|_| EngineError::Internal("negative pid".into()))
    }
}
