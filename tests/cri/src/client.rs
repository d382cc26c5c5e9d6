//! The CRI v1 RuntimeService client over containerd's Unix socket: one method per RPC the
//! suite uses, gRPC failures turned into [`CriError`], status replies flattened into JSON
//! objects a shell script can read.

use std::path::{Path, PathBuf};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use k8s_cri::v1 as cri;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use serde_json::{json, Map, Value};
use tokio::net::UnixStream;
use tonic::transport::{Channel, Endpoint, Uri};

/// Errors of the CRI client.
#[derive(Debug, thiserror::Error)]
pub enum CriError {
    #[error("connect to {}", path.display())]
    Connect {
        path: PathBuf,
        #[source]
        source: tonic::transport::Error,
    },
    #[error("{rpc} failed: {code:?}: {message}")]
    Rpc {
        rpc: &'static str,
        code: tonic::Code,
        message: String,
    },
    #[error("{rpc} answered without {what}")]
    Incomplete {
        rpc: &'static str,
        what: &'static str,
    },
}

/// Maps a failed RPC to a [`CriError`] naming it.
fn rpc(rpc: &'static str) -> impl FnOnce(tonic::Status) -> CriError {
    move |s| CriError::Rpc {
        rpc,
        code: s.code(),
        message: s.message().to_owned(),
    }
}

/// The output of ExecSync.
#[derive(Debug)]
pub struct ExecOutput {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub exit_code: i32,
}

/// A connected RuntimeService client.
#[derive(Debug)]
pub struct Cri {
    rt: RuntimeServiceClient<Channel>,
}

impl Cri {
    /// Dials containerd's CRI socket; every RPC then ends after `timeout` at the latest.
    pub async fn connect(sock: &Path, timeout: Duration) -> Result<Self, CriError> {
        let path = sock.to_path_buf();
        let dial = path.clone();
        // The URI is ignored: the connector always dials the socket.
        let channel = Endpoint::from_static("http://[::]:50051")
            .timeout(timeout)
            .connect_timeout(Duration::from_secs(10))
            .connect_with_connector(tower::service_fn(move |_: Uri| {
                let dial = dial.clone();
                async move { UnixStream::connect(dial).await.map(TokioIo::new) }
            }))
            .await
            .map_err(|source| CriError::Connect { path, source })?;
        Ok(Self {
            rt: RuntimeServiceClient::new(channel),
        })
    }

    /// Version: `(runtime_name, runtime_version, runtime_api_version)`.
    pub async fn version(&mut self) -> Result<(String, String, String), CriError> {
        let v = self
            .rt
            .version(cri::VersionRequest::default())
            .await
            .map_err(rpc("Version"))?
            .into_inner();
        Ok((v.runtime_name, v.runtime_version, v.runtime_api_version))
    }

    /// Status: the runtime's conditions as `{type: bool, type_reason: "reason: message"}`.
    pub async fn status(&mut self) -> Result<Value, CriError> {
        let s = self
            .rt
            .status(cri::StatusRequest { verbose: false })
            .await
            .map_err(rpc("Status"))?
            .into_inner();
        let mut out = Map::new();
        for c in s.status.map(|s| s.conditions).unwrap_or_default() {
            if !c.status {
                out.insert(
                    format!("{}_reason", c.r#type),
                    json!(format!("{}: {}", c.reason, c.message)),
                );
            }
            out.insert(c.r#type, json!(c.status));
        }
        Ok(Value::Object(out))
    }

    /// RunPodSandbox with `handler` (a runtime name of containerd's CRI config); the pod id.
    pub async fn run_pod(
        &mut self,
        config: cri::PodSandboxConfig,
        handler: &str,
    ) -> Result<String, CriError> {
        let r = self
            .rt
            .run_pod_sandbox(cri::RunPodSandboxRequest {
                config: Some(config),
                runtime_handler: handler.to_owned(),
            })
            .await
            .map_err(rpc("RunPodSandbox"))?
            .into_inner();
        Ok(r.pod_sandbox_id)
    }

    /// CreateContainer in pod `pod_id`; the container id.
    pub async fn create(
        &mut self,
        pod_id: &str,
        config: cri::ContainerConfig,
        sandbox_config: cri::PodSandboxConfig,
    ) -> Result<String, CriError> {
        let r = self
            .rt
            .create_container(cri::CreateContainerRequest {
                pod_sandbox_id: pod_id.to_owned(),
                config: Some(config),
                sandbox_config: Some(sandbox_config),
            })
            .await
            .map_err(rpc("CreateContainer"))?
            .into_inner();
        Ok(r.container_id)
    }

    pub async fn start(&mut self, id: &str) -> Result<(), CriError> {
        self.rt
            .start_container(cri::StartContainerRequest {
                container_id: id.to_owned(),
            })
            .await
            .map_err(rpc("StartContainer"))?;
        Ok(())
    }

    /// ExecSync of `cmd` in container `id`; `timeout_secs` 0 means none.
    pub async fn exec_sync(
        &mut self,
        id: &str,
        cmd: Vec<String>,
        timeout_secs: i64,
    ) -> Result<ExecOutput, CriError> {
        let r = self
            .rt
            .exec_sync(cri::ExecSyncRequest {
                container_id: id.to_owned(),
                cmd,
                timeout: timeout_secs,
            })
            .await
            .map_err(rpc("ExecSync"))?
            .into_inner();
        Ok(ExecOutput {
            stdout: r.stdout,
            stderr: r.stderr,
            exit_code: r.exit_code,
        })
    }

    /// StopContainer with a grace period of `timeout_secs`.
    pub async fn stop(&mut self, id: &str, timeout_secs: i64) -> Result<(), CriError> {
        self.rt
            .stop_container(cri::StopContainerRequest {
                container_id: id.to_owned(),
                timeout: timeout_secs,
            })
            .await
            .map_err(rpc("StopContainer"))?;
        Ok(())
    }

    pub async fn remove(&mut self, id: &str) -> Result<(), CriError> {
        self.rt
            .remove_container(cri::RemoveContainerRequest {
                container_id: id.to_owned(),
            })
            .await
            .map_err(rpc("RemoveContainer"))?;
        Ok(())
    }

    pub async fn stop_pod(&mut self, id: &str) -> Result<(), CriError> {
        self.rt
            .stop_pod_sandbox(cri::StopPodSandboxRequest {
                pod_sandbox_id: id.to_owned(),
            })
            .await
            .map_err(rpc("StopPodSandbox"))?;
        Ok(())
    }

    pub async fn remove_pod(&mut self, id: &str) -> Result<(), CriError> {
        self.rt
            .remove_pod_sandbox(cri::RemovePodSandboxRequest {
                pod_sandbox_id: id.to_owned(),
            })
            .await
            .map_err(rpc("RemovePodSandbox"))?;
        Ok(())
    }

    /// PortForward of `port` of pod `pod_id`: the URL of the runtime's streaming server to
    /// open for it (see [`crate::portforward`]).
    pub async fn port_forward(&mut self, pod_id: &str, port: u16) -> Result<String, CriError> {
        const RPC: &str = "PortForward";
        let r = self
            .rt
            .port_forward(cri::PortForwardRequest {
                pod_sandbox_id: pod_id.to_owned(),
                port: vec![i32::from(port)],
            })
            .await
            .map_err(rpc(RPC))?
            .into_inner();
        if r.url.is_empty() {
            return Err(CriError::Incomplete {
                rpc: RPC,
                what: "a URL",
            });
        }
        Ok(r.url)
    }

    /// ContainerStats, flattened: cpu_usage_core_ns, memory_working_set_bytes,
    /// memory_usage_bytes, memory_rss_bytes, memory_available_bytes, page_faults,
    /// major_page_faults, writable_layer_used_bytes; a value the runtime left out is null.
    pub async fn stats(&mut self, id: &str) -> Result<Value, CriError> {
        const RPC: &str = "ContainerStats";
        let s = self
            .rt
            .container_stats(cri::ContainerStatsRequest {
                container_id: id.to_owned(),
            })
            .await
            .map_err(rpc(RPC))?
            .into_inner()
            .stats
            .ok_or(CriError::Incomplete {
                rpc: RPC,
                what: "stats",
            })?;
        let v = |x: Option<cri::UInt64Value>| x.map_or(Value::Null, |x| json!(x.value));
        let cpu = s.cpu.unwrap_or_default();
        let mem = s.memory.unwrap_or_default();
        Ok(json!({
            "cpu_usage_core_ns": v(cpu.usage_core_nano_seconds),
            "memory_working_set_bytes": v(mem.working_set_bytes),
            "memory_usage_bytes": v(mem.usage_bytes),
            "memory_rss_bytes": v(mem.rss_bytes),
            "memory_available_bytes": v(mem.available_bytes),
            "page_faults": v(mem.page_faults),
            "major_page_faults": v(mem.major_page_faults),
            "writable_layer_used_bytes": v(s.writable_layer.and_then(|w| w.used_bytes)),
        }))
    }

    /// UpdateContainerResources of container `id` to `resources`.
    pub async fn update(
        &mut self,
        id: &str,
        resources: cri::LinuxContainerResources,
    ) -> Result<(), CriError> {
        self.rt
            .update_container_resources(cri::UpdateContainerResourcesRequest {
                container_id: id.to_owned(),
                linux: Some(resources),
                ..Default::default()
            })
            .await
            .map_err(rpc("UpdateContainerResources"))?;
        Ok(())
    }

    /// ContainerStatus (verbose), flattened: id, name, state, exit_code, reason, message,
    /// log_path, image, created_at/started_at/finished_at (ns), pid (containerd's task pid).
    pub async fn inspect(&mut self, id: &str) -> Result<Value, CriError> {
        const RPC: &str = "ContainerStatus";
        let r = self
            .rt
            .container_status(cri::ContainerStatusRequest {
                container_id: id.to_owned(),
                verbose: true,
            })
            .await
            .map_err(rpc(RPC))?
            .into_inner();
        let s = r.status.ok_or(CriError::Incomplete {
            rpc: RPC,
            what: "a status",
        })?;
        let state = cri::ContainerState::try_from(s.state)
            .map(|st| st.as_str_name().to_owned())
            .unwrap_or_else(|_| format!("UNKNOWN({})", s.state));
        let info = verbose_info(&r.info);
        Ok(json!({
            "id": s.id,
            "name": s.metadata.map(|m| m.name).unwrap_or_default(),
            "state": state,
            "exit_code": s.exit_code,
            "reason": s.reason,
            "message": s.message,
            "log_path": s.log_path,
            "image": s.image.map(|i| i.image).unwrap_or_default(),
            "created_at": s.created_at,
            "started_at": s.started_at,
            "finished_at": s.finished_at,
            "pid": info.get("pid").cloned().unwrap_or(Value::Null),
        }))
    }

    /// PodSandboxStatus (verbose), flattened: id, name, namespace, state, ip,
    /// runtime_handler, created_at (ns), pid (the sandbox task's pid), netns (path).
    pub async fn inspect_pod(&mut self, id: &str) -> Result<Value, CriError> {
        const RPC: &str = "PodSandboxStatus";
        let r = self
            .rt
            .pod_sandbox_status(cri::PodSandboxStatusRequest {
                pod_sandbox_id: id.to_owned(),
                verbose: true,
            })
            .await
            .map_err(rpc(RPC))?
            .into_inner();
        let s = r.status.ok_or(CriError::Incomplete {
            rpc: RPC,
            what: "a status",
        })?;
        let state = cri::PodSandboxState::try_from(s.state)
            .map(|st| st.as_str_name().to_owned())
            .unwrap_or_else(|_| format!("UNKNOWN({})", s.state));
        let info = verbose_info(&r.info);
        let (name, namespace) = s
            .metadata
            .map(|m| (m.name, m.namespace))
            .unwrap_or_default();
        // Every address of the pod, the primary first, space-separated (dual stack: one per
        // family), for scripts; `ip` is the primary alone.
        let ips = s
            .network
            .as_ref()
            .map(|n| {
                std::iter::once(n.ip.as_str())
                    .chain(n.additional_ips.iter().map(|a| a.ip.as_str()))
                    .filter(|ip| !ip.is_empty())
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .unwrap_or_default();
        Ok(json!({
            "id": s.id,
            "name": name,
            "namespace": namespace,
            "state": state,
            "ip": s.network.map(|n| n.ip).unwrap_or_default(),
            "ips": ips,
            "runtime_handler": s.runtime_handler,
            "created_at": s.created_at,
            "pid": info.get("pid").cloned().unwrap_or(Value::Null),
            "netns": netns_path(&info),
        }))
    }
}

/// The network namespace path in the sandbox's OCI spec (containerd's verbose info has no
/// field of its own for it).
fn netns_path(info: &Value) -> Value {
    info.pointer("/runtimeSpec/linux/namespaces")
        .and_then(Value::as_array)
        .and_then(|ns| {
            ns.iter()
                .find(|n| n.get("type").and_then(Value::as_str) == Some("network"))
        })
        .and_then(|n| n.get("path"))
        .cloned()
        .unwrap_or(Value::Null)
}

/// containerd's verbose status puts a JSON document under the key `info`.
fn verbose_info(info: &std::collections::HashMap<String, String>) -> Value {
    info.get("info")
        .and_then(|s| serde_json::from_str(s).ok())
        .unwrap_or(Value::Null)
}
