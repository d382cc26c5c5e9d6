//! Test-only backend: the real `hull-agent --listen unix:PATH` runs on the host in place of a
//! VM, so the task API is exercised against a real containerd in seconds (DESIGN §2 shim/).
//! Containers then share the host kernel: never enable this on a node.
//!
//! The agent gets a private cgroup v2 parent (`<cgroup2>/hull-host-<sid>`) and state under
//! the pod directory; [`HostAgent::shutdown`] removes both.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tokio::process::Command;

use super::{io_err, BackendError, PodBackend, Prepared};
use crate::child::Supervised;

/// How long the agent may take to listen; it is a local process, so this is generous.
const START_TIMEOUT: Duration = Duration::from_secs(20);
/// How long the agent may take to stop on SIGTERM before SIGKILL.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);

pub(super) struct HostAgent {
    dir: PathBuf,
    cgroup_parent: PathBuf,
    child: Supervised,
    client: ttrpc::asynchronous::Client,
}

impl std::fmt::Debug for HostAgent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostAgent")
            .field("dir", &self.dir)
            .field("cgroup_parent", &self.cgroup_parent)
            .finish_non_exhaustive()
    }
}

fn cgroup2_root() -> Result<PathBuf, BackendError> {
    super::cgroup::cgroup2_root()
        .ok_or_else(|| BackendError::AgentStart("no cgroup v2 hierarchy on this host".into()))
}

impl HostAgent {
    pub(super) async fn launch(agent: &Path, sid: &str, dir: &Path) -> Result<Self, BackendError> {
        let cgroup_parent = cgroup2_root()?.join(format!("hull-host-{sid}"));
        tokio::fs::create_dir_all(dir)
            .await
            .map_err(io_err(format!("create {}", dir.display())))?;
        let sock = dir.join("agent.sock");
        let log_path = dir.join("agent.log");
        let log = std::fs::File::create(&log_path)
            .map_err(io_err(format!("create {}", log_path.display())))?;
        let log2 = log
            .try_clone()
            .map_err(io_err(format!("dup {}", log_path.display())))?;
        let mut cmd = Command::new(agent);
        cmd.arg("--listen")
            .arg(format!("unix:{}", sock.display()))
            .arg("--root")
            .arg(dir.join("root"))
            .arg("--cgroup-parent")
            .arg(&cgroup_parent)
            .arg("--share-dir")
            .arg(dir.join("share"))
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .kill_on_drop(true);
        let setup = crate::child::ChildSetup {
            die_with_parent: true,
            ..Default::default()
        };
        let child = crate::child::spawn(&mut cmd, setup)
            .map_err(io_err(format!("spawn {}", agent.display())))?;
        let child = Supervised::new("hull-agent", child);
        let start = Instant::now();
        let client = loop {
            if let Some(status) = child.try_status() {
                let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                return Err(BackendError::AgentStart(format!(
                    "exited with {status}: {log}"
                )));
            }
            if sock.exists() {
                let addr = format!("unix://{}", sock.display());
                if let Ok(c) = ttrpc::asynchronous::Client::connect(&addr).await {
                    break c;
                }
            }
            if start.elapsed() > START_TIMEOUT {
                child.stop(Duration::ZERO).await;
                return Err(BackendError::AgentStart(format!(
                    "{} not listening after {START_TIMEOUT:?}",
                    sock.display()
                )));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        tracing::info!(pid = child.pid(), dir = %dir.display(), "host agent started");
        Ok(HostAgent {
            dir: dir.to_path_buf(),
            cgroup_parent,
            child,
            client,
        })
    }
}

#[async_trait]
impl PodBackend for HostAgent {
    fn agent(&self) -> ttrpc::asynchronous::Client {
        self.client.clone()
    }

    fn task_pid(&self, guest_pid: u32) -> u32 {
        // The agent's processes are host processes here.
        guest_pid
    }

    async fn prepare_container(
        &self,
        _cid: &str,
        bundle: &Path,
        rootfs: &Path,
        // The host agent sees the host's /proc: CRI's namespace paths work as they are.
        _sandbox_pid: Option<u32>,
    ) -> Result<Prepared, BackendError> {
        Ok(Prepared {
            spec_json: crate::spec::for_host_agent(bundle, rootfs)?,
            storages: vec![],
        })
    }

    async fn release_container(&self, _cid: &str) {}

    fn record(&self) -> super::record::PodRecord {
        super::record::PodRecord {
            shim: super::record::ProcId::current(),
            children: super::record::ProcId::of(self.child.pid())
                .into_iter()
                .collect(),
            cgroups: vec![self.cgroup_parent.clone()],
            ..Default::default()
        }
    }

    fn alive(&self) -> bool {
        self.child.try_status().is_none()
    }

    async fn died(&self) {
        // An agent killed under a test is the VM death of this backend.
        self.child.exited().await;
    }

    async fn shutdown(&self, shim_left: super::ShimLeft) -> Result<(), BackendError> {
        let (status, ()) = tokio::join!(self.child.stop(STOP_TIMEOUT), shim_left);
        tracing::debug!(%status, "host agent stopped");
        // Container cgroups left by a failed removal too.
        super::cleanup::remove_cgroup(&self.cgroup_parent).await;
        tokio::fs::remove_dir_all(&self.dir)
            .await
            .map_err(io_err(format!("remove {}", self.dir.display())))
    }
}
