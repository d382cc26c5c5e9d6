//! Where a pod's agent runs. The shim drives every pod through [`PodBackend`]; the VM backend
//! (hull-vmm + virtiofsd, plan §2/§5) comes with virtio-fs. Until then the only backend is the
//! test-only host agent, compiled in with the `host-agent-backend` cargo feature and chosen by
//! `[host_agent]` in hull.toml.

use std::fmt::Debug;
use std::path::PathBuf;

use async_trait::async_trait;

use crate::config::HullConfig;

#[cfg(feature = "host-agent-backend")]
pub mod host_agent;

/// State directories of pods, one per sandbox id.
pub const POD_STATE_ROOT: &str = "/run/hull/pods";

#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("hull-vmm pods are not implemented yet (virtio-fs, issue 5 M4/M5); this shim can only run the test-only host-agent backend")]
    VmNotImplemented,
    #[error("hull.toml sets [host_agent], but this shim was built without the `host-agent-backend` feature")]
    HostAgentNotBuilt,
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
    #[error("agent did not come up: {0}")]
    AgentStart(String),
}

/// A running pod: the agent's ttrpc client and how to stop everything the pod owns.
#[async_trait]
pub trait PodBackend: Send + Sync + Debug {
    /// The connection to the pod's agent; clones share it.
    fn agent(&self) -> ttrpc::asynchronous::Client;
    /// Stops the agent (and VM) and removes every host resource the pod created.
    async fn shutdown(&self) -> Result<(), BackendError>;
}

/// Where pod `sid` keeps its state.
pub fn pod_dir(sid: &str) -> PathBuf {
    PathBuf::from(POD_STATE_ROOT).join(sid)
}

/// Starts pod `sid` with the backend `cfg` selects.
pub async fn launch(cfg: &HullConfig, sid: &str) -> Result<Box<dyn PodBackend>, BackendError> {
    match &cfg.host_agent {
        #[cfg(feature = "host-agent-backend")]
        Some(h) => Ok(Box::new(
            host_agent::HostAgent::launch(&h.agent, sid, &pod_dir(sid)).await?,
        )),
        #[cfg(not(feature = "host-agent-backend"))]
        Some(_) => Err(BackendError::HostAgentNotBuilt),
        None => {
            let _ = sid;
            Err(BackendError::VmNotImplemented)
        }
    }
}
