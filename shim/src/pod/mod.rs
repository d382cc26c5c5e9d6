//! A pod's containers and what the task RPCs do to them (`do_*`), with the wire types of the
//! shim API kept in `task.rs`. The backend (host agent today, VM later) is launched by the
//! first Create and stopped by Shutdown once no container is left.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use containerd_shim::asynchronous::io::IoTasks;
use containerd_shim::asynchronous::ExitSignal;
use containerd_shim::protos::protobuf::well_known_types::timestamp::Timestamp;
use hull_proto::containers::{
    CreateContainerRequest, ListPidsRequest, RemoveContainerRequest, StartContainerRequest,
};
use hull_proto::containers_ttrpc::ContainersClient;
use hull_proto::processes::{SignalProcessRequest, WaitProcessRequest};
use hull_proto::processes_ttrpc::ProcessesClient;
use tokio::sync::{watch, OnceCell};

use crate::backend::{self, PodBackend};
use crate::config::HullConfig;
use crate::errors::ShimError;
use crate::events::Events;
use crate::stdio::{self, ProcRef};

/// Exit status of a process whose fate is unknown (agent or VM gone), as Kata.
pub const UNKNOWN_EXIT_STATUS: u32 = 255;
/// Bound on the pod teardown at Shutdown (VMM stop 10 s + virtiofsd 5 s + unmounts).
const SHUTDOWN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);
/// Agent RPC deadline for everything but waits and stream reads.
const RPC_TIMEOUT_NS: i64 = 30_000_000_000;

fn ctx() -> ttrpc::context::Context {
    ttrpc::context::with_timeout(RPC_TIMEOUT_NS)
}

/// When and how a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exit {
    pub status: u32,
    pub at: SystemTime,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProcStatus {
    Created,
    Running,
    Stopped,
}

/// Stdio as containerd asked for it.
#[derive(Debug, Clone, Default)]
pub struct StdioPaths {
    pub stdin: String,
    pub stdout: String,
    pub stderr: String,
    pub terminal: bool,
}

/// What Create needs, free of wire types.
#[derive(Debug, Clone)]
pub struct CreateSpec {
    pub id: String,
    pub bundle: PathBuf,
    pub stdio: StdioPaths,
}

/// A snapshot of one container for State/Connect/Delete.
#[derive(Debug, Clone)]
pub struct ContainerInfo {
    pub id: String,
    pub bundle: PathBuf,
    pub pid: u32,
    pub status: ProcStatus,
    pub stdio: StdioPaths,
    pub exit: Option<Exit>,
}

struct Container {
    bundle: PathBuf,
    pid: u32,
    stdio: StdioPaths,
    io: IoTasks,
    started: bool,
    exit: watch::Receiver<Option<Exit>>,
    exit_tx: Option<watch::Sender<Option<Exit>>>,
}

impl std::fmt::Debug for Container {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Container")
            .field("bundle", &self.bundle)
            .field("pid", &self.pid)
            .field("started", &self.started)
            .finish_non_exhaustive()
    }
}

impl Container {
    fn info(&self, id: &str) -> ContainerInfo {
        let exit = *self.exit.borrow();
        ContainerInfo {
            id: id.to_owned(),
            bundle: self.bundle.clone(),
            pid: self.pid,
            status: match (exit, self.started) {
                (Some(_), _) => ProcStatus::Stopped,
                (None, true) => ProcStatus::Running,
                (None, false) => ProcStatus::Created,
            },
            stdio: self.stdio.clone(),
            exit,
        }
    }
}

/// The pod this shim serves.
pub struct Pod {
    sandbox_id: String,
    cfg: HullConfig,
    events: Events,
    exit_signal: Arc<ExitSignal>,
    backend: OnceCell<Box<dyn PodBackend>>,
    // Short critical sections only (no await while held); the agent owns process state.
    containers: Mutex<HashMap<String, Container>>,
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

/// `t` as the wire timestamp of containerd's events and replies.
pub fn timestamp(t: SystemTime) -> Timestamp {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    Timestamp {
        seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(d.subsec_nanos()).unwrap_or(0),
        ..Default::default()
    }
}

impl Pod {
    pub fn new(sandbox_id: String, cfg: HullConfig, events: Events, exit: Arc<ExitSignal>) -> Self {
        Pod {
            sandbox_id,
            cfg,
            events,
            exit_signal: exit,
            backend: OnceCell::new(),
            containers: Mutex::new(HashMap::new()),
        }
    }

    pub fn events(&self) -> &Events {
        &self.events
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Container>> {
        // A panic while holding the map cannot leave it half-updated (single inserts/removes).
        self.containers.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The pod's backend; the first Create (the sandbox's, `bundle`) launches it.
    async fn launch(&self, bundle: &Path) -> Result<&dyn PodBackend, ShimError> {
        let b = self
            .backend
            .get_or_try_init(|| backend::launch(&self.cfg, &self.sandbox_id, bundle))
            .await?;
        Ok(b.as_ref())
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

    pub fn info(&self, id: &str) -> Result<ContainerInfo, ShimError> {
        self.lock()
            .get(id)
            .map(|c| c.info(id))
            .ok_or_else(|| ShimError::NotFound(format!("container {id}")))
    }

    /// The pid containerd shows for the pod (Connect's task pid when no id matches).
    pub fn any_pid(&self) -> u32 {
        self.lock().values().map(|c| c.pid).next().unwrap_or(0)
    }

    /// Mounts the rootfs, creates the container in the agent, wires its stdio.
    pub async fn do_create(
        &self,
        spec: CreateSpec,
        rootfs: &[containerd_shim::protos::api::Mount],
    ) -> Result<u32, ShimError> {
        if self.lock().contains_key(&spec.id) {
            return Err(ShimError::AlreadyExists(format!("container {}", spec.id)));
        }
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
            unmount(&root);
        }
        let (pid, io, exit_tx, exit_rx) = result?;
        self.lock().insert(
            spec.id.clone(),
            Container {
                bundle: spec.bundle,
                pid,
                stdio: spec.stdio,
                io,
                started: false,
                exit: exit_rx,
                exit_tx: Some(exit_tx),
            },
        );
        Ok(pid)
    }

    #[allow(clippy::type_complexity)]
    async fn create_in_agent(
        &self,
        spec: &CreateSpec,
        root: &Path,
    ) -> Result<
        (
            u32,
            IoTasks,
            watch::Sender<Option<Exit>>,
            watch::Receiver<Option<Exit>>,
        ),
        ShimError,
    > {
        let b = self.launch(&spec.bundle).await?;
        let prepared = b.prepare_container(&spec.id, &spec.bundle, root).await?;
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
            Ok(r) => b.task_pid(r.pid),
            Err(e) => {
                b.release_container(&spec.id).await;
                return Err(ShimError::agent(format!("create container {}", spec.id))(e));
            }
        };
        let io = IoTasks::default();
        let p = ProcRef {
            container_id: spec.id.clone(),
            exec_id: String::new(),
        };
        let s = &spec.stdio;
        if let Err(e) = stdio::connect(&io, &processes, &p, &s.stdin, &s.stdout, &s.stderr) {
            io.abort().await;
            let _ = remove_in_agent(&containers, &spec.id).await;
            b.release_container(&spec.id).await;
            return Err(e);
        }
        let (tx, rx) = watch::channel(None);
        Ok((pid, io, tx, rx))
    }

    /// Starts the init process and the task that reports its exit.
    pub async fn do_start(self: &Arc<Self>, id: &str) -> Result<u32, ShimError> {
        let (pid, io, exit_tx) = {
            let mut map = self.lock();
            let c = map
                .get_mut(id)
                .ok_or_else(|| ShimError::NotFound(format!("container {id}")))?;
            if c.started {
                return Err(ShimError::FailedPrecondition(format!(
                    "container {id} was started already"
                )));
            }
            let tx = c.exit_tx.take().ok_or_else(|| {
                ShimError::FailedPrecondition(format!("container {id} cannot be started"))
            })?;
            (c.pid, c.io.clone(), tx)
        };
        let (containers, processes) = self.clients()?;
        let req = StartContainerRequest {
            container_id: id.to_owned(),
            ..Default::default()
        };
        if let Err(e) = containers.start_container(ctx(), &req).await {
            // Put the sender back so a Delete still finds a consistent record.
            if let Some(c) = self.lock().get_mut(id) {
                c.exit_tx = Some(exit_tx);
            }
            return Err(ShimError::agent(format!("start container {id}"))(e));
        }
        if let Some(c) = self.lock().get_mut(id) {
            c.started = true;
        }
        self.events
            .send(containerd_shim::protos::events::task::TaskStart {
                container_id: id.to_owned(),
                pid,
                ..Default::default()
            });
        let pod = Arc::clone(self);
        let id = id.to_owned();
        tokio::spawn(async move {
            pod.watch_exit(processes, id, pid, io, exit_tx).await;
        });
        Ok(pid)
    }

    /// Exit ordering (plan §3): wait, drain the output to the FIFOs (bounded), set the exit,
    /// then publish `/tasks/exit`, so the last bytes are in the FIFO before the event.
    async fn watch_exit(
        &self,
        processes: ProcessesClient,
        id: String,
        pid: u32,
        io: IoTasks,
        exit_tx: watch::Sender<Option<Exit>>,
    ) {
        let req = WaitProcessRequest {
            container_id: id.clone(),
            exec_id: String::new(),
            ..Default::default()
        };
        let wait = processes.wait_process(ttrpc::context::Context::default(), &req);
        let died = async {
            match self.backend.get() {
                Some(b) => b.died().await,
                None => std::future::pending().await,
            }
        };
        let status = tokio::select! {
            r = wait => match r {
                Ok(r) => r.exit.as_ref().map_or(UNKNOWN_EXIT_STATUS, |e| e.status),
                Err(e) => {
                    tracing::error!(%id, "wait: {e}");
                    UNKNOWN_EXIT_STATUS
                }
            },
            // A dead VM answers no wait: every process of the pod ends with 255 (as Kata).
            () = died => {
                tracing::error!(%id, "the pod VM ended; reporting exit status {UNKNOWN_EXIT_STATUS}");
                UNKNOWN_EXIT_STATUS
            }
        };
        io.shutdown().await;
        let exit = Exit { status, at: now() };
        let _ = exit_tx.send(Some(exit));
        self.events
            .send(containerd_shim::protos::events::task::TaskExit {
                container_id: id.clone(),
                id,
                pid,
                exit_status: status,
                exited_at: Some(timestamp(exit.at)).into(),
                ..Default::default()
            });
    }

    /// Waits until the init process of `id` has exited and its output is delivered.
    pub async fn do_wait(&self, id: &str) -> Result<Exit, ShimError> {
        let mut rx = self
            .lock()
            .get(id)
            .map(|c| c.exit.clone())
            .ok_or_else(|| ShimError::NotFound(format!("container {id}")))?;
        let exit = rx
            .wait_for(Option::is_some)
            .await
            .map_err(|_| ShimError::FailedPrecondition(format!("container {id} was deleted")))?;
        Ok(exit.unwrap_or(Exit {
            status: UNKNOWN_EXIT_STATUS,
            at: now(),
        }))
    }

    pub async fn do_kill(&self, id: &str, signal: u32, all: bool) -> Result<(), ShimError> {
        let info = self.info(id)?;
        if info.exit.is_some() {
            return Err(ShimError::NotFound(format!("process of {id} (exited)")));
        }
        let (_, processes) = self.clients()?;
        let req = SignalProcessRequest {
            container_id: id.to_owned(),
            exec_id: String::new(),
            signal,
            all,
            ..Default::default()
        };
        processes
            .signal_process(ctx(), &req)
            .await
            .map_err(ShimError::agent(format!("signal {signal} to {id}")))?;
        Ok(())
    }

    /// Lets go of the shim's hold on stdin, so the process sees EOF once containerd's writer
    /// is gone too (`ctr run` without a terminal sends this when its stdin ends).
    pub fn do_close_io(&self, id: &str) -> Result<(), ShimError> {
        self.lock()
            .get(id)
            .map(|c| c.io.close_input())
            .ok_or_else(|| ShimError::NotFound(format!("container {id}")))
    }

    pub async fn do_pids(&self, id: &str) -> Result<Vec<u32>, ShimError> {
        self.info(id)?;
        let (containers, _) = self.clients()?;
        let req = ListPidsRequest {
            container_id: id.to_owned(),
            ..Default::default()
        };
        Ok(containers
            .list_pids(ctx(), &req)
            .await
            .map_err(ShimError::agent(format!("list pids of {id}")))?
            .pids)
    }

    /// Removes a stopped (or never started) container and its rootfs mount.
    pub async fn do_delete(&self, id: &str) -> Result<ContainerInfo, ShimError> {
        let info = self.info(id)?;
        if info.status == ProcStatus::Running {
            return Err(ShimError::FailedPrecondition(format!(
                "container {id} is running; kill it first"
            )));
        }
        let b = self.backend()?;
        if b.alive() {
            let (containers, _) = self.clients()?;
            remove_in_agent(&containers, id).await?;
        }
        let c = self.lock().remove(id);
        if let Some(c) = c {
            c.io.abort().await;
        }
        b.release_container(id).await;
        unmount(&info.bundle.join("rootfs"));
        let exit = info.exit.unwrap_or(Exit {
            status: UNKNOWN_EXIT_STATUS,
            at: now(),
        });
        self.events
            .send(containerd_shim::protos::events::task::TaskDelete {
                container_id: id.to_owned(),
                id: id.to_owned(),
                pid: info.pid,
                exit_status: exit.status,
                exited_at: Some(timestamp(exit.at)).into(),
                ..Default::default()
            });
        Ok(ContainerInfo {
            exit: Some(exit),
            ..info
        })
    }

    /// Stops the pod when nothing is left in it; containerd calls Shutdown after each Delete.
    pub async fn do_shutdown(&self) -> Result<(), ShimError> {
        if !self.lock().is_empty() {
            return Ok(());
        }
        // The shim exits even if teardown fails or hangs: a shim left serving an empty pod
        // is a leak nobody will clean (containerd gave up on it after its 3 s deadline).
        let result = match self.backend.get() {
            Some(b) => match tokio::time::timeout(SHUTDOWN_TIMEOUT, b.shutdown()).await {
                Ok(r) => r.map_err(ShimError::from),
                Err(_) => Err(ShimError::FailedPrecondition(format!(
                    "pod teardown did not finish within {SHUTDOWN_TIMEOUT:?}"
                ))),
            },
            None => Ok(()),
        };
        if let Err(e) = &result {
            tracing::error!("shutdown: {e}");
        }
        self.exit_signal.signal();
        result
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

/// Lazy unmount: containerd unmounts `<bundle>/rootfs` too, and a busy mount must not fail
/// the delete.
pub fn unmount(path: &Path) {
    if let Err(e) = nix::mount::umount2(path, nix::mount::MntFlags::MNT_DETACH) {
        if e != nix::errno::Errno::EINVAL && e != nix::errno::Errno::ENOENT {
            tracing::warn!(path = %path.display(), "unmount: {e}");
        }
    }
}
