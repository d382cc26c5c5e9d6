//! A pod's containers and what the task RPCs do to them (`do_*`), with the wire types of the
//! shim API kept in `task.rs`. The backend (a VM, or the test-only host agent) is launched by
//! the first Create and stopped by Shutdown once no container is left. Process records are
//! in `process.rs`; execs and terminals in `exec.rs`; pause, resume, update, stats and pids in
//! `control.rs`; OOM events in `oom.rs`.
//!
//! The agent is not trusted (`bounds.rs`): its exit statuses, ids and messages are bounded
//! before they reach containerd or the log, and the shim joins its pod's cgroup
//! (`shim_cgroup.rs`) so what the agent can make it allocate is the pod's to pay.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use containerd_shim::asynchronous::ExitSignal;
use containerd_shim::protos::events::task::{TaskDelete, TaskExit, TaskStart};
use hull_proto::containers::{
    CreateContainerRequest, RemoveContainerRequest, StartContainerRequest,
};
use hull_proto::containers_ttrpc::ContainersClient;
use hull_proto::processes::{SignalProcessRequest, WaitProcessRequest};
use hull_proto::processes_ttrpc::ProcessesClient;
use tokio::sync::{watch, OnceCell};

use crate::annotations::HullAnnotations;
use crate::backend::{self, PodBackend};
use crate::bounds::{self, clip_err};
use crate::config::HullConfig;
use crate::errors::ShimError;
use crate::events::Events;
use crate::shim_cgroup::Placement;
use crate::sizing::{self, Demand};
use crate::stdio::{ProcRef, Stdio, StdioPaths};
use crate::{mount, timestamp};

pub(crate) mod control;
mod exec;
pub(crate) mod oom;
mod process;

use process::{Container, Process};
pub(crate) use process::{Exit, ProcInfo, ProcStatus};

/// Exit status of a process whose fate is unknown (agent or VM gone), as Kata.
pub(crate) const UNKNOWN_EXIT_STATUS: u32 = 255;

/// The exit status a WaitProcess reply gives: the agent's, or [`UNKNOWN_EXIT_STATUS`] when it
/// names none; `Err` with what it reported when that is no process's status.
pub(crate) fn reported_status(r: &hull_proto::processes::WaitProcessResponse) -> Result<u32, u32> {
    let reported = r.exit.as_ref().map_or(UNKNOWN_EXIT_STATUS, |e| e.status);
    bounds::exit_status(reported).ok_or(reported)
}

/// Bound on the pod teardown at Shutdown (VMM stop 10 s + virtiofsd 5 s + unmounts).
const SHUTDOWN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);
/// How long a failed wait gives the VMM to exit, so its reason reaches the log.
const VM_EXIT_GRACE: std::time::Duration = std::time::Duration::from_secs(2);
/// Agent RPC deadline for everything but waits and stream reads.
const RPC_TIMEOUT_NS: i64 = 30_000_000_000;

fn ctx() -> ttrpc::context::Context {
    ttrpc::context::with_timeout(RPC_TIMEOUT_NS)
}

/// What Create needs, free of wire types.
#[derive(Debug, Clone)]
pub(crate) struct CreateSpec {
    pub(crate) id: String,
    pub(crate) bundle: PathBuf,
    pub(crate) stdio: StdioPaths,
}

/// The pod this shim serves.
pub(crate) struct Pod {
    sandbox_id: String,
    cfg: HullConfig,
    events: Events,
    exit_signal: Arc<ExitSignal>,
    backend: OnceCell<Box<dyn PodBackend>>,
    /// The sandbox container's pid in the agent, once it is created.
    sandbox_pid: std::sync::OnceLock<u32>,
    oom_watch: Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// The pod's allowed `io.hull.*` annotations, from the sandbox's spec: what may
    /// configure its VM.
    annotations: std::sync::OnceLock<HullAnnotations>,
    /// The shim's move into the pod's cgroup, then out of it (`join_pod_cgroup`,
    /// `leave_pod_cgroup`). Both run beside the pod's work, not before it: each cgroup
    /// migration waits for an RCU grace period (17–53 ms of a `ctr run` in the lab).
    placement: Mutex<CgroupMove>,
    /// Set by the first Shutdown of an empty pod.
    tearing_down: std::sync::atomic::AtomicBool,
    // Short critical sections only (no await while held); the agent owns process state.
    // Shared with the OOM poller, which forwards events for these containers only.
    containers: Arc<Mutex<HashMap<String, Container>>>,
    /// What each container's limits ask of the VM (`sizing::Demand`), recorded before the
    /// VM grows for it, so containers created at once each count the others.
    demands: Mutex<HashMap<String, Demand>>,
}

impl std::fmt::Debug for Pod {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pod")
            .field("sandbox_id", &self.sandbox_id)
            .field("backend", &self.backend)
            .field("containers", &self.containers)
            .finish_non_exhaustive()
    }
}

fn now() -> SystemTime {
    SystemTime::now()
}

fn not_found(id: &str, exec_id: &str) -> ShimError {
    if exec_id.is_empty() {
        ShimError::NotFound(format!("container {id}"))
    } else {
        ShimError::NotFound(format!("exec {exec_id} of container {id}"))
    }
}

impl Pod {
    pub(crate) fn new(
        sandbox_id: String,
        cfg: HullConfig,
        events: Events,
        exit: Arc<ExitSignal>,
    ) -> Self {
        Pod {
            sandbox_id,
            cfg,
            events,
            exit_signal: exit,
            backend: OnceCell::new(),
            sandbox_pid: std::sync::OnceLock::new(),
            oom_watch: Mutex::new(None),
            annotations: std::sync::OnceLock::new(),
            placement: Mutex::new(CgroupMove::Outside),
            tearing_down: std::sync::atomic::AtomicBool::new(false),
            demands: Mutex::new(HashMap::new()),
            containers: Arc::default(),
        }
    }

    pub(crate) fn events(&self) -> &Events {
        &self.events
    }

    /// Records what container `id` asks of the VM and grows the VM to what all containers
    /// ask. Growth is one way: a smaller demand only lowers what later growths count.
    pub(super) async fn grow_for(
        &self,
        b: &dyn PodBackend,
        id: &str,
        demand: Demand,
    ) -> Result<(), ShimError> {
        let want = {
            let mut m = self.demands.lock().unwrap_or_else(|p| p.into_inner());
            m.insert(id.to_owned(), demand);
            let all: Vec<Demand> = m.values().copied().collect();
            sizing::demanded_size(&all, &self.cfg.vm)
        };
        Ok(b.grow(want).await?)
    }

    fn forget_demand(&self, id: &str) {
        self.demands
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Container>> {
        // A panic while holding the map cannot leave it half-updated (single inserts/removes).
        self.containers.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The pod's backend; the first Create (the sandbox's, `bundle`) launches it and starts
    /// watching for OOM kills.
    async fn launch(&self, bundle: &Path) -> Result<&dyn PodBackend, ShimError> {
        let b = self
            .backend
            .get_or_try_init(|| async {
                let annotations = self.annotations().cloned().unwrap_or_default();
                let b = backend::launch(&self.cfg, &self.sandbox_id, bundle, &annotations).await?;
                let containers = Arc::clone(&self.containers);
                let members: oom::Members = Arc::new(move |id: &str| {
                    containers
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .contains_key(id)
                });
                let watch = oom::spawn(b.agent(), self.events.clone(), members, oom::LIMITS);
                *self.oom_watch.lock().unwrap_or_else(|p| p.into_inner()) = Some(watch);
                self.join_pod_cgroup(b.as_ref());
                Ok::<_, ShimError>(b)
            })
            .await?;
        Ok(b.as_ref())
    }

    /// Moves the shim into the cgroup of the pod's VMM (`shim_cgroup.rs`), in the background:
    /// the pod's first container does not wait for it. A failure leaves the shim where
    /// containerd put it, as before, and says so.
    fn join_pod_cgroup(&self, b: &dyn PodBackend) {
        let record = b.record();
        let children: Vec<u32> = record.children.iter().map(|c| c.pid).collect();
        let cgroups = record.cgroups;
        let join = tokio::task::spawn_blocking(move || {
            match Placement::join(std::process::id(), &children, &cgroups) {
                Ok(Some(p)) => {
                    tracing::info!(cgroup = %p.cgroup().display(), "shim joined the pod cgroup");
                    Some(p)
                }
                Ok(None) => None,
                Err(e) => {
                    tracing::warn!("the shim stays outside the pod cgroup: {e}");
                    None
                }
            }
        });
        *self.placement.lock().unwrap_or_else(|p| p.into_inner()) = CgroupMove::Joining(join);
    }

    /// Starts moving the shim out of the pod's cgroup, which teardown kills and removes: once
    /// the last container is deleted (containerd's Shutdown comes next) or at teardown.
    /// Teardown waits for it ([`CgroupMove::settle`]). A container created after that leaves
    /// the shim outside its pod's cgroup: only its accounting changes.
    fn leave_pod_cgroup(&self) {
        let mut m = self.placement.lock().unwrap_or_else(|p| p.into_inner());
        *m = match std::mem::replace(&mut *m, CgroupMove::Outside) {
            CgroupMove::Joining(join) => CgroupMove::Leaving(tokio::spawn(leave_after(join))),
            other => other,
        };
    }

    /// Refuses a spec whose `io.hull.*` annotations hull.toml does not allow; the sandbox's
    /// (the first Create's) become the pod's.
    fn check_annotations(&self, id: &str, bundle: &Path) -> Result<(), ShimError> {
        let spec = crate::spec::read(bundle)?;
        let a = HullAnnotations::check(&spec, &self.cfg.annotations)
            .map_err(|e| ShimError::InvalidArgument(e.to_string()))?;
        if id == self.sandbox_id {
            let keys: Vec<&str> = a.keys().collect();
            if !keys.is_empty() {
                tracing::info!(?keys, "io.hull annotations in effect");
            }
            let _ = self.annotations.set(a);
        }
        Ok(())
    }

    /// The pod's allowed `io.hull.*` annotations (set by the sandbox's Create): the only
    /// source of per-pod VM settings.
    pub(crate) fn annotations(&self) -> Option<&HullAnnotations> {
        self.annotations.get()
    }

    fn backend(&self) -> Result<&dyn PodBackend, ShimError> {
        self.backend
            .get()
            .map(AsRef::as_ref)
            .ok_or_else(|| ShimError::FailedPrecondition("the pod has no VM yet".into()))
    }

    fn clients(&self) -> Result<(ContainersClient, ProcessesClient), ShimError> {
        let c = self.backend()?.agent();
        Ok((ContainersClient::new(c.clone()), ProcessesClient::new(c)))
    }

    pub(crate) fn info(&self, id: &str, exec_id: &str) -> Result<ProcInfo, ShimError> {
        self.lock()
            .get(id)
            .and_then(|c| c.info(id, exec_id))
            .ok_or_else(|| not_found(id, exec_id))
    }

    /// The pid containerd shows for the pod (Connect's task pid when no id matches).
    pub(crate) fn any_pid(&self) -> u32 {
        self.lock().values().map(|c| c.init.pid).next().unwrap_or(0)
    }

    /// Mounts the rootfs, creates the container in the agent, wires its stdio.
    pub(crate) async fn do_create(
        &self,
        spec: CreateSpec,
        rootfs: &[containerd_shim::protos::api::Mount],
    ) -> Result<u32, ShimError> {
        if self.lock().contains_key(&spec.id) {
            return Err(ShimError::AlreadyExists(format!("container {}", spec.id)));
        }
        // Before anything is mounted or booted for it.
        self.check_annotations(&spec.id, &spec.bundle)?;
        let root = spec.bundle.join("rootfs");
        for m in rootfs {
            containerd_shim::asynchronous::util::mount_rootfs(m, &root)
                .await
                .map_err(|source| ShimError::Shim {
                    context: format!("mount rootfs {}", root.display()),
                    source,
                })?;
        }
        let result = self.create_in_agent(&spec, &root).await;
        if result.is_err() && !rootfs.is_empty() {
            mount::detach(&root);
        }
        let (pid, io) = result?;
        let init = Process::new(pid, spec.stdio, Some(Arc::new(io)), Vec::new());
        self.lock().insert(
            spec.id,
            Container {
                bundle: spec.bundle,
                paused: false,
                init,
                execs: HashMap::new(),
            },
        );
        Ok(pid)
    }

    async fn create_in_agent(
        &self,
        spec: &CreateSpec,
        root: &Path,
    ) -> Result<(u32, Stdio), ShimError> {
        let b = self.launch(&spec.bundle).await?;
        let sandbox_pid = self.sandbox_pid.get().copied();
        // Each step's time in the debug log: what a pod start spends after the boot.
        let t = std::time::Instant::now();
        let prepared = b
            .prepare_container(&spec.id, &spec.bundle, root, sandbox_pid)
            .await?;
        tracing::debug!(id = %spec.id, elapsed = ?t.elapsed(), "container prepared");
        // The VM first grows to what the containers' limits need (DESIGN §2 shim/: sizing).
        // The sandbox's own limits sized the VM at boot (a CRI sandbox's are the pod's, a
        // lone `ctr run` container's its own): counting them again would count them twice.
        if spec.id != self.sandbox_id {
            let demand = serde_json::from_slice::<serde_json::Value>(&prepared.spec_json)
                .map(|v| Demand::of_spec(&v))
                .unwrap_or_default();
            if let Err(e) = self.grow_for(b, &spec.id, demand).await {
                self.forget_demand(&spec.id);
                b.release_container(&spec.id).await;
                return Err(e);
            }
        }
        let t = std::time::Instant::now();
        let (containers, processes) = self.clients()?;
        let req = CreateContainerRequest {
            container_id: spec.id.clone(),
            exec_id: String::new(),
            oci_spec_json: prepared.spec_json,
            storages: prepared.storages,
            terminal: spec.stdio.terminal,
            stdin: !spec.stdio.stdin.is_empty(),
            ..Default::default()
        };
        let pid = match containers.create_container(ctx(), &req).await {
            Ok(r) => {
                tracing::debug!(id = %spec.id, elapsed = ?t.elapsed(), "created in the agent");
                if spec.id == self.sandbox_id {
                    let _ = self.sandbox_pid.set(r.pid);
                }
                b.task_pid(r.pid)
            }
            Err(e) => {
                self.forget_demand(&spec.id);
                b.release_container(&spec.id).await;
                return Err(ShimError::agent(format!("create container {}", spec.id))(e));
            }
        };
        let p = ProcRef {
            container_id: spec.id.clone(),
            exec_id: String::new(),
        };
        let t = std::time::Instant::now();
        match Stdio::open(&processes, &p, &spec.stdio, self.events.namespace()).await {
            Ok(io) => {
                tracing::debug!(id = %spec.id, elapsed = ?t.elapsed(), "stdio open");
                Ok((pid, io))
            }
            Err(e) => {
                let _ = remove_in_agent(&containers, &spec.id).await;
                self.forget_demand(&spec.id);
                b.release_container(&spec.id).await;
                Err(e)
            }
        }
    }

    /// Takes the exit sender of a process about to start: a second Start is refused.
    fn take_exit_tx(
        &self,
        id: &str,
        exec_id: &str,
    ) -> Result<watch::Sender<Option<Exit>>, ShimError> {
        let mut map = self.lock();
        let c = map.get_mut(id).ok_or_else(|| not_found(id, exec_id))?;
        if !exec_id.is_empty() && c.init.status(false) != ProcStatus::Running {
            return Err(ShimError::FailedPrecondition(format!(
                "container {id} is not running"
            )));
        }
        let p = c
            .process_mut(exec_id)
            .ok_or_else(|| not_found(id, exec_id))?;
        if p.started {
            return Err(ShimError::FailedPrecondition(format!(
                "{} was started already",
                ProcRef::new(id, exec_id).id()
            )));
        }
        p.exit_tx.take().ok_or_else(|| {
            ShimError::FailedPrecondition(format!("{id} {exec_id} is being started"))
        })
    }

    /// Gives the exit sender back after a failed start, so Delete finds a consistent record.
    fn restore_exit_tx(&self, id: &str, exec_id: &str, tx: watch::Sender<Option<Exit>>) {
        if let Some(p) = self.lock().get_mut(id).and_then(|c| c.process_mut(exec_id)) {
            p.exit_tx = Some(tx);
        }
    }

    /// Starts a process (the init process, or an exec) and the task that reports its exit.
    pub(crate) async fn do_start(
        self: &Arc<Self>,
        id: &str,
        exec_id: &str,
    ) -> Result<u32, ShimError> {
        let exit_tx = self.take_exit_tx(id, exec_id)?;
        let started = if exec_id.is_empty() {
            self.start_init(id).await
        } else {
            self.start_exec(id, exec_id).await
        };
        let (pid, io) = match started {
            Ok(r) => r,
            Err(e) => {
                self.restore_exit_tx(id, exec_id, exit_tx);
                return Err(e);
            }
        };
        let (_, processes) = self.clients()?;
        let pod = Arc::clone(self);
        let p = ProcRef::new(id, exec_id);
        tokio::spawn(async move {
            pod.watch_exit(processes, p, pid, io, exit_tx).await;
        });
        Ok(pid)
    }

    async fn start_init(&self, id: &str) -> Result<(u32, Arc<Stdio>), ShimError> {
        let (containers, _) = self.clients()?;
        let req = StartContainerRequest {
            container_id: id.to_owned(),
            ..Default::default()
        };
        containers
            .start_container(ctx(), &req)
            .await
            .map_err(ShimError::agent(format!("start container {id}")))?;
        let (pid, io) = {
            let mut map = self.lock();
            let c = map.get_mut(id).ok_or_else(|| not_found(id, ""))?;
            c.init.started = true;
            (c.init.pid, c.init.io.clone())
        };
        self.events.send(TaskStart {
            container_id: id.to_owned(),
            pid,
            ..Default::default()
        });
        let io = io.ok_or_else(|| ShimError::FailedPrecondition(format!("{id} has no stdio")))?;
        Ok((pid, io))
    }

    /// Exit ordering (DESIGN §1 Stdio): wait, drain the output (bounded), set the exit, then
    /// publish `/tasks/exit`, so the last bytes are delivered before the event.
    async fn watch_exit(
        &self,
        processes: ProcessesClient,
        p: ProcRef,
        pid: u32,
        io: Arc<Stdio>,
        exit_tx: watch::Sender<Option<Exit>>,
    ) {
        let req = WaitProcessRequest {
            container_id: p.container_id.clone(),
            exec_id: p.exec_id.clone(),
            ..Default::default()
        };
        let wait = processes.wait_process(ttrpc::context::Context::default(), &req);
        let died = async {
            match self.backend.get() {
                Some(b) => b.died().await,
                None => std::future::pending().await,
            }
        };
        tokio::pin!(died);
        let id = p.id();
        let status = tokio::select! {
            r = wait => match r {
                Ok(r) => reported_status(&r).unwrap_or_else(|reported| {
                    tracing::warn!(%id, reported, "the agent reported an impossible exit status");
                    UNKNOWN_EXIT_STATUS
                }),
                Err(e) => {
                    tracing::error!(%id, "wait: {}", clip_err(&e));
                    // A broken agent connection is most often the VM going away, and its
                    // socket closes before the VMM has exited. Give the exit a moment so
                    // the backend logs why the VM ended (a guest crash, say).
                    let _ = tokio::time::timeout(VM_EXIT_GRACE, &mut died).await;
                    UNKNOWN_EXIT_STATUS
                }
            },
            // A dead VM answers no wait: every process of the pod ends with 255 (as Kata).
            () = &mut died => {
                tracing::error!(%id, "the pod VM ended; reporting exit status {UNKNOWN_EXIT_STATUS}");
                UNKNOWN_EXIT_STATUS
            }
        };
        io.drain().await;
        let exit = Exit { status, at: now() };
        let _ = exit_tx.send(Some(exit));
        self.events.send(TaskExit {
            container_id: p.container_id.clone(),
            id: id.to_owned(),
            pid,
            exit_status: status,
            exited_at: Some(timestamp::of(exit.at)).into(),
            ..Default::default()
        });
    }

    /// Waits until the process has exited and its output is delivered.
    pub(crate) async fn do_wait(&self, id: &str, exec_id: &str) -> Result<Exit, ShimError> {
        let mut rx = self
            .lock()
            .get(id)
            .and_then(|c| c.process(exec_id))
            .map(|p| p.exit.clone())
            .ok_or_else(|| not_found(id, exec_id))?;
        let exit = rx.wait_for(Option::is_some).await.map_err(|_| {
            ShimError::FailedPrecondition(format!("{} was deleted", ProcRef::new(id, exec_id).id()))
        })?;
        Ok(exit.unwrap_or(Exit {
            status: UNKNOWN_EXIT_STATUS,
            at: now(),
        }))
    }

    pub(crate) async fn do_kill(
        &self,
        id: &str,
        exec_id: &str,
        signal: u32,
        all: bool,
    ) -> Result<(), ShimError> {
        let info = self.info(id, exec_id)?;
        if info.exit.is_some() {
            return Err(ShimError::NotFound(format!("process {} (exited)", info.id)));
        }
        let (_, processes) = self.clients()?;
        let req = SignalProcessRequest {
            container_id: id.to_owned(),
            exec_id: exec_id.to_owned(),
            signal,
            all,
            ..Default::default()
        };
        processes
            .signal_process(ctx(), &req)
            .await
            .map_err(ShimError::agent(format!("signal {signal} to {}", info.id)))?;
        Ok(())
    }

    /// Lets go of the shim's hold on stdin, so the process sees EOF once containerd's writer
    /// is gone too (`ctr run` without a terminal sends this when its stdin ends).
    pub(crate) fn do_close_io(&self, id: &str, exec_id: &str) -> Result<(), ShimError> {
        let io = self
            .lock()
            .get(id)
            .and_then(|c| c.process(exec_id))
            .map(|p| p.io.clone())
            .ok_or_else(|| not_found(id, exec_id))?;
        if let Some(io) = io {
            io.close_input();
        }
        Ok(())
    }

    /// Removes a stopped (or never started) process; for the init process, the container
    /// and its rootfs mount as well.
    pub(crate) async fn do_delete(&self, id: &str, exec_id: &str) -> Result<ProcInfo, ShimError> {
        let info = self.info(id, exec_id)?;
        if matches!(info.status, ProcStatus::Running | ProcStatus::Paused) {
            return Err(ShimError::FailedPrecondition(format!(
                "{} is running; kill it first",
                info.id
            )));
        }
        let exit = info.exit.unwrap_or(Exit {
            status: UNKNOWN_EXIT_STATUS,
            at: now(),
        });
        if !exec_id.is_empty() {
            let p = self
                .lock()
                .get_mut(id)
                .and_then(|c| c.execs.remove(exec_id));
            if let Some(io) = p.and_then(|p| p.io) {
                io.close().await;
            }
            return Ok(ProcInfo {
                exit: Some(exit),
                ..info
            });
        }
        let b = self.backend()?;
        if b.alive() {
            let (containers, _) = self.clients()?;
            remove_in_agent(&containers, id).await?;
        }
        let (c, empty) = {
            let mut m = self.lock();
            let c = m.remove(id);
            (c, m.is_empty())
        };
        self.forget_demand(id);
        if empty {
            self.leave_pod_cgroup();
        }
        if let Some(c) = c {
            let ios = std::iter::once(&c.init)
                .chain(c.execs.values())
                .filter_map(|p| p.io.clone());
            for io in ios {
                io.close().await;
            }
        }
        b.release_container(id).await;
        mount::detach(&info.bundle.join("rootfs"));
        self.events.send(TaskDelete {
            container_id: id.to_owned(),
            id: id.to_owned(),
            pid: info.pid,
            exit_status: exit.status,
            exited_at: Some(timestamp::of(exit.at)).into(),
            ..Default::default()
        });
        Ok(ProcInfo {
            exit: Some(exit),
            ..info
        })
    }

    /// Stops the pod when nothing is left in it; containerd calls Shutdown after each Delete.
    ///
    /// The reply does not wait for the teardown, which runs in its own task (as runc's shim
    /// only signals its exit): containerd gives Shutdown a few seconds, then drops the
    /// connection, and the ttrpc server drops the request's future with it. A VM stop torn
    /// down inside that future left a shim serving nothing, forever.
    pub(crate) fn do_shutdown(self: &Arc<Self>) {
        if !self.lock().is_empty() {
            return;
        }
        if self
            .tearing_down
            .swap(true, std::sync::atomic::Ordering::SeqCst)
        {
            return;
        }
        let pod = Arc::clone(self);
        tokio::spawn(async move { pod.teardown().await });
    }

    /// Stops the backend (bounded), logs what failed, then lets the shim exit whatever
    /// happened.
    async fn teardown(&self) {
        if let Some(w) = self
            .oom_watch
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            w.abort();
        }
        // Teardown kills and removes the pod cgroup: the backend waits for the shim to be out
        // of it (beside the VM's stop) before it does.
        self.leave_pod_cgroup();
        let moving = std::mem::replace(
            &mut *self.placement.lock().unwrap_or_else(|p| p.into_inner()),
            CgroupMove::Outside,
        );
        let shim_left: crate::backend::ShimLeft = Box::pin(moving.settle());
        // The shim exits even if teardown fails or hangs: a shim left serving an empty pod
        // is a leak nobody will clean (containerd gave up on it after its 3 s deadline).
        if let Some(b) = self.backend.get() {
            match tokio::time::timeout(SHUTDOWN_TIMEOUT, b.shutdown(shim_left)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::error!("shutdown: {}", clip_err(&e)),
                Err(_) => tracing::error!(
                    "shutdown: pod teardown did not finish within {SHUTDOWN_TIMEOUT:?}"
                ),
            }
        }
        self.exit_signal.signal();
    }
}

/// Where the shim's move into and out of the pod's cgroup stands.
#[derive(Debug)]
enum CgroupMove {
    /// Not in the pod's cgroup, or no longer: nothing to wait for.
    Outside,
    /// Joining; the placement to leave, if the join worked.
    Joining(tokio::task::JoinHandle<Option<Placement>>),
    Leaving(tokio::task::JoinHandle<()>),
}

impl CgroupMove {
    /// Waits until the shim is out of the pod's cgroup.
    async fn settle(self) {
        match self {
            CgroupMove::Outside => {}
            // Teardown starts the leave first, so this is not reached through it; still,
            // never stay inside a cgroup that is about to be killed.
            CgroupMove::Joining(j) => leave_after(j).await,
            CgroupMove::Leaving(l) => {
                let _ = l.await;
            }
        }
    }
}

/// Moves the shim back out of the pod's cgroup once `join` has finished, if it joined.
async fn leave_after(join: tokio::task::JoinHandle<Option<Placement>>) {
    let Ok(Some(p)) = join.await else {
        return;
    };
    match tokio::task::spawn_blocking(move || p.leave()).await {
        Ok(Ok(to)) => tracing::debug!(cgroup = %to.display(), "shim left the pod cgroup"),
        Ok(Err(e)) => tracing::error!("the shim could not leave the pod cgroup: {e}"),
        Err(e) => tracing::error!("the shim could not leave the pod cgroup: {e}"),
    }
}

async fn remove_in_agent(containers: &ContainersClient, id: &str) -> Result<(), ShimError> {
    let req = RemoveContainerRequest {
        container_id: id.to_owned(),
        timeout_ms: 10_000,
        ..Default::default()
    };
    match containers.remove_container(ctx(), &req).await {
        Ok(_) => Ok(()),
        // Already gone in the agent: the shim's record is what remains to clean.
        Err(ttrpc::Error::RpcStatus(s)) if s.code() == ttrpc::Code::NOT_FOUND => Ok(()),
        Err(e) => Err(ShimError::agent(format!("remove container {id}"))(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fake_peers;

    fn config(allowed: &str) -> HullConfig {
        let text = format!(
            "[vm]\nvmm = \"/x/hull-vmm\"\nkernel = \"/x/k\"\ninitrd = \"/x/i\"\n\
             [annotations]\nallowed = [{allowed}]\n"
        );
        HullConfig::parse(&text, Path::new("hull.toml")).unwrap()
    }

    fn bundle(dir: &Path, annotations: serde_json::Value) -> PathBuf {
        let b = dir.join("bundle");
        std::fs::create_dir_all(&b).unwrap();
        let spec = serde_json::json!({"annotations": annotations});
        std::fs::write(b.join("config.json"), spec.to_string()).unwrap();
        b
    }

    /// RunPodSandbox with an io.hull annotation hull.toml does not allow: INVALID_ARGUMENT
    /// naming it, before any VM or mount exists; an allowed one becomes the pod's.
    #[tokio::test(flavor = "current_thread")]
    async fn unlisted_hull_annotations_refuse_the_create() {
        let dir = tempfile::tempdir().unwrap();
        let (cd, _sink, events) = fake_peers::containerd(dir.path()).await;
        let pod = Pod::new(
            "s1".into(),
            config("\"io.hull.net.\""),
            events,
            Arc::default(),
        );
        let b = bundle(dir.path(), serde_json::json!({"io.hull.fs.cache": "never"}));
        let spec = CreateSpec {
            id: "s1".into(),
            bundle: b,
            stdio: StdioPaths::default(),
        };
        let e = pod.do_create(spec, &[]).await.unwrap_err();
        assert_eq!(e.code(), ttrpc::Code::INVALID_ARGUMENT);
        assert!(e.to_string().contains("\"io.hull.fs.cache\""), "{e}");
        assert!(e.to_string().contains("[annotations] allowed"), "{e}");
        assert!(pod.backend.get().is_none(), "nothing launched");
        assert!(pod.annotations().is_none());

        let b = bundle(dir.path(), serde_json::json!({"io.hull.net.rx_rate": "1M"}));
        pod.check_annotations("s1", &b).unwrap();
        let a = pod.annotations().expect("the sandbox's");
        assert_eq!(a.get("io.hull.net.rx_rate"), Some("1M"));
        fake_peers::stop(cd).await;
    }
}
