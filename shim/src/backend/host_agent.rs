//! Test-only backend: the real `hull-agent --listen unix:PATH` runs on the host in place of a
//! VM, so the task API is exercised against a real containerd in seconds (plan §5 M2).
//! Containers then share the host kernel: never enable this on a node.
//!
//! The agent gets a private cgroup v2 parent (`<cgroup2>/hull-host-<sid>`) and state under
//! the pod directory; [`HostAgent::shutdown`] removes both.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tokio::process::{Child, Command};
use tokio::sync::Mutex;

use super::{BackendError, PodBackend};

/// How long the agent may take to listen; it is a local process, so this is generous.
const START_TIMEOUT: Duration = Duration::from_secs(20);
/// How long the agent may take to stop on SIGTERM before SIGKILL.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);

pub struct HostAgent {
    dir: PathBuf,
    cgroup_parent: PathBuf,
    child: Mutex<Option<Child>>,
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

fn io(context: String) -> impl FnOnce(std::io::Error) -> BackendError {
    move |source| BackendError::Io { context, source }
}

/// The cgroup v2 mount: `/sys/fs/cgroup` on a unified host, `/sys/fs/cgroup/unified` on a
/// hybrid one such as this lab host.
fn cgroup2_root() -> Result<PathBuf, BackendError> {
    ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.join("cgroup.subtree_control").exists())
        .ok_or_else(|| BackendError::AgentStart("no cgroup v2 hierarchy on this host".into()))
}

impl HostAgent {
    pub async fn launch(agent: &Path, sid: &str, dir: &Path) -> Result<Self, BackendError> {
        let cgroup_parent = cgroup2_root()?.join(format!("hull-host-{sid}"));
        tokio::fs::create_dir_all(dir)
            .await
            .map_err(io(format!("create {}", dir.display())))?;
        let sock = dir.join("agent.sock");
        let log_path = dir.join("agent.log");
        let log = std::fs::File::create(&log_path)
            .map_err(io(format!("create {}", log_path.display())))?;
        let log2 = log
            .try_clone()
            .map_err(io(format!("dup {}", log_path.display())))?;
        let mut child = Command::new(agent)
            .arg("--listen")
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
            .kill_on_drop(true)
            .spawn()
            .map_err(io(format!("spawn {}", agent.display())))?;
        let start = Instant::now();
        let client = loop {
            if let Some(status) = child.try_wait().map_err(io("wait agent".into()))? {
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
                let _ = child.kill().await;
                return Err(BackendError::AgentStart(format!(
                    "{} not listening after {START_TIMEOUT:?}",
                    sock.display()
                )));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        tracing::info!(pid = child.id(), dir = %dir.display(), "host agent started");
        Ok(HostAgent {
            dir: dir.to_path_buf(),
            cgroup_parent,
            child: Mutex::new(Some(child)),
            client,
        })
    }
}

#[async_trait]
impl PodBackend for HostAgent {
    fn agent(&self) -> ttrpc::asynchronous::Client {
        self.client.clone()
    }

    async fn shutdown(&self) -> Result<(), BackendError> {
        if let Some(mut child) = self.child.lock().await.take() {
            if let Some(pid) = child.id().and_then(|p| i32::try_from(p).ok()) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGTERM,
                );
            }
            if tokio::time::timeout(STOP_TIMEOUT, child.wait())
                .await
                .is_err()
            {
                tracing::warn!("host agent ignored SIGTERM, killing it");
                let _ = child.kill().await;
            }
        }
        // Container cgroups left by a failed removal first, then the parent.
        if let Ok(mut rd) = tokio::fs::read_dir(&self.cgroup_parent).await {
            while let Ok(Some(e)) = rd.next_entry().await {
                if e.path().is_dir() {
                    let _ = tokio::fs::write(e.path().join("cgroup.kill"), "1").await;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    let _ = tokio::fs::remove_dir(e.path()).await;
                }
            }
        }
        match tokio::fs::remove_dir(&self.cgroup_parent).await {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(BackendError::Io {
                    context: format!("remove {}", self.cgroup_parent.display()),
                    source: e,
                })
            }
            _ => {}
        }
        tokio::fs::remove_dir_all(&self.dir)
            .await
            .map_err(io(format!("remove {}", self.dir.display())))
    }
}
