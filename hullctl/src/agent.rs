//! Container commands against a hull agent: create a sandbox, run a container, exec into it,
//! remove it. Small by design: enough to drive the agent by hand or from a lab script, not a
//! second shim. The OCI spec is a minimal one built here (busybox-style rootfs, pid/ipc/uts/
//! mount namespaces, proc, /dev tmpfs, devpts, /tmp).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use hull_proto::common::{storage::Driver, Storage};
use hull_proto::containers::{
    CreateContainerRequest, RemoveContainerRequest, StartContainerRequest,
};
use hull_proto::containers_ttrpc::ContainersClient;
use hull_proto::processes::{ExecProcessRequest, ReadStreamRequest, WaitProcessRequest};
use hull_proto::processes_ttrpc::ProcessesClient;
use hull_proto::sandbox::{CreateSandboxRequest, DestroySandboxRequest};
use hull_proto::sandbox_ttrpc::SandboxClient;
use serde_json::{json, Value};
use tokio::io::{AsyncWrite, AsyncWriteExt};

/// How to reach the agent: through a VMM's hybrid vsock socket, or straight to a host-mode
/// agent's Unix socket.
#[derive(Debug, Clone)]
pub enum Target {
    Hybrid { uds: PathBuf, port: u32 },
    Unix(PathBuf),
}

/// One ttrpc connection with a client per service.
#[derive(Clone)]
pub struct Agent {
    pub sandbox: SandboxClient,
    pub containers: ContainersClient,
    pub processes: ProcessesClient,
}

impl std::fmt::Debug for Agent {
    // The generated clients do not implement Debug.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Agent")
    }
}

/// No RPC here should take long except WaitProcess, which has no deadline.
fn ctx() -> ttrpc::context::Context {
    ttrpc::context::with_timeout(120_000_000_000)
}

impl Agent {
    pub async fn connect(target: &Target) -> anyhow::Result<Self> {
        let stream = match target {
            Target::Hybrid { uds, port } => {
                hull_proto::connect_stream(uds, *port, Duration::from_secs(10)).await?
            }
            Target::Unix(path) => tokio::net::UnixStream::connect(path)
                .await
                .with_context(|| format!("connect {}", path.display()))?,
        };
        let client = ttrpc::r#async::Client::new(ttrpc::r#async::transport::Socket::from(stream));
        Ok(Agent {
            sandbox: SandboxClient::new(client.clone()),
            containers: ContainersClient::new(client.clone()),
            processes: ProcessesClient::new(client),
        })
    }

    pub async fn create_sandbox(&self, id: &str, hostname: &str) -> anyhow::Result<()> {
        let req = CreateSandboxRequest {
            sandbox_id: id.into(),
            hostname: hostname.into(),
            ..Default::default()
        };
        self.sandbox
            .create_sandbox(ctx(), &req)
            .await
            .context("CreateSandbox")?;
        Ok(())
    }

    pub async fn destroy_sandbox(&self, id: &str) -> anyhow::Result<()> {
        let req = DestroySandboxRequest {
            sandbox_id: id.into(),
            ..Default::default()
        };
        self.sandbox
            .destroy_sandbox(ctx(), &req)
            .await
            .context("DestroySandbox")?;
        Ok(())
    }

    /// CreateContainer + StartContainer.
    pub async fn run(&self, id: &str, spec: &Value, storages: Vec<Storage>) -> anyhow::Result<()> {
        let req = CreateContainerRequest {
            container_id: id.into(),
            exec_id: id.into(),
            oci_spec_json: serde_json::to_vec(spec)?,
            storages,
            ..Default::default()
        };
        self.containers
            .create_container(ctx(), &req)
            .await
            .context("CreateContainer")?;
        let start = StartContainerRequest {
            container_id: id.into(),
            ..Default::default()
        };
        self.containers
            .start_container(ctx(), &start)
            .await
            .context("StartContainer")?;
        Ok(())
    }

    pub async fn exec(&self, id: &str, exec_id: &str, args: &[String]) -> anyhow::Result<()> {
        let process = json!({"args": args, "cwd": "/", "user": {"uid": 0, "gid": 0},
                             "env": ["PATH=/bin:/sbin:/usr/bin:/usr/sbin", "HOME=/"]});
        let req = ExecProcessRequest {
            container_id: id.into(),
            exec_id: exec_id.into(),
            process_json: serde_json::to_vec(&process)?,
            ..Default::default()
        };
        self.processes
            .exec_process(ctx(), &req)
            .await
            .context("ExecProcess")?;
        Ok(())
    }

    /// Copies one output stream of a process to `out` until end of file; returns the bytes.
    pub async fn copy_output(
        &self,
        id: &str,
        exec_id: &str,
        stderr: bool,
        out: &mut (impl AsyncWrite + Unpin),
    ) -> anyhow::Result<u64> {
        let req = ReadStreamRequest {
            container_id: id.into(),
            exec_id: exec_id.into(),
            max_len: 1 << 20,
            ..Default::default()
        };
        let mut total = 0u64;
        loop {
            let r = if stderr {
                self.processes.read_stderr(ctx(), &req).await
            } else {
                self.processes.read_stdout(ctx(), &req).await
            }
            .context("read output")?;
            out.write_all(&r.data).await?;
            total += r.data.len() as u64;
            if r.eof {
                out.flush().await?;
                return Ok(total);
            }
        }
    }

    /// Streams stdout and stderr of a process to ours, then returns its shell status.
    pub async fn attach_and_wait(&self, id: &str, exec_id: &str) -> anyhow::Result<u32> {
        let mut stdout = tokio::io::stdout();
        let mut stderr = tokio::io::stderr();
        let (o, e) = tokio::join!(
            self.copy_output(id, exec_id, false, &mut stdout),
            self.copy_output(id, exec_id, true, &mut stderr)
        );
        o?;
        e?;
        self.wait(id, exec_id).await
    }

    pub async fn wait(&self, id: &str, exec_id: &str) -> anyhow::Result<u32> {
        let req = WaitProcessRequest {
            container_id: id.into(),
            exec_id: exec_id.into(),
            ..Default::default()
        };
        let r = self
            .processes
            .wait_process(ttrpc::context::Context::default(), &req)
            .await
            .context("WaitProcess")?;
        Ok(r.exit.status)
    }

    pub async fn remove(&self, id: &str) -> anyhow::Result<()> {
        let req = RemoveContainerRequest {
            container_id: id.into(),
            ..Default::default()
        };
        self.containers
            .remove_container(ctx(), &req)
            .await
            .context("RemoveContainer")?;
        Ok(())
    }
}

/// A block-device storage: the disk with `serial` mounted (ext4 unless `fstype`) on `at`.
pub fn block_storage(serial: &str, fstype: &str, at: &Path) -> anyhow::Result<Storage> {
    let Some(at) = at.to_str() else {
        bail!("mount point {} is not UTF-8", at.display());
    };
    Ok(Storage {
        driver: Driver::BLOCK.into(),
        source: serial.into(),
        fstype: fstype.into(),
        mount_point: at.into(),
        ..Default::default()
    })
}

/// The minimal spec `hullctl run` uses.
pub fn spec(root: &Path, args: &[String], hostname: &str) -> Value {
    json!({
        "ociVersion": "1.0.2",
        "root": {"path": root},
        "process": {"args": args, "cwd": "/", "user": {"uid": 0, "gid": 0},
                    "env": ["PATH=/bin:/sbin:/usr/bin:/usr/sbin", "HOME=/"]},
        "hostname": hostname,
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "mode=755"]},
            {"destination": "/dev/pts", "type": "devpts", "source": "devpts", "options": ["newinstance", "ptmxmode=0666"]},
            {"destination": "/tmp", "type": "tmpfs", "source": "tmpfs"}
        ],
        "linux": {"namespaces": [{"type": "pid"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"}]}
    })
}
