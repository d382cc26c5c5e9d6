//! Where a pod's agent runs. The shim drives every pod through [`PodBackend`]: the VM backend
//! (`vm.rs`: hull-vmm + a sandboxed virtiofsd per pod, DESIGN §1) on a node, or the test-only
//! host agent, compiled in with the `host-agent-backend` cargo feature and chosen by
//! `[host_agent]` in hull.toml.

use crate::annotations::HullAnnotations;
use std::fmt::Debug;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use hull_proto::common::Storage;

use crate::config::HullConfig;
use crate::net::NetError;
use crate::share::ShareError;
use crate::sizing::SizingError;
use crate::spec::SpecError;

mod boot_failure;
pub(crate) mod cgroup;
pub(crate) mod cleanup;
mod grow;
pub(crate) use grow::GrowError;
#[cfg(feature = "host-agent-backend")]
mod host_agent;
mod jail;
mod log_relay;
mod record;
mod virtiofsd;
mod vm;

pub(crate) use cgroup::CgroupError;
pub(crate) use jail::JailError;

/// Why a pod could not be launched, a container not be prepared, or a pod not be removed.
/// Each cause keeps its type: `errors.rs` maps them to ttrpc codes (a spec that asks for too
/// much is INVALID_ARGUMENT, a VM that did not boot UNAVAILABLE, a host failure INTERNAL).
#[derive(Debug, thiserror::Error)]
pub(crate) enum BackendError {
    #[cfg(not(feature = "host-agent-backend"))]
    #[error("hull.toml sets [host_agent], but this shim was built without the `host-agent-backend` feature")]
    HostAgentNotBuilt,
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
    #[error("agent did not come up: {0}")]
    AgentStart(String),
    /// hull-vmm, the guest kernel or the initrd named by hull.toml cannot be opened.
    #[error("hull.toml [vm] {key} = {path}: {source}")]
    GuestImage {
        key: &'static str,
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("pod sizing: {0}")]
    Sizing(#[from] SizingError),
    #[error("pod share: {0}")]
    Share(#[from] ShareError),
    #[error("pod cgroup: {0}")]
    Cgroup(#[from] CgroupError),
    #[error("virtiofsd: {what}: {source}")]
    Virtiofsd {
        what: String,
        source: std::io::Error,
    },
    #[error("OCI spec: {0}")]
    Spec(#[from] SpecError),
    #[error("pod network: {0}")]
    Network(#[from] NetError),
    #[error("hull-vmm's jail: {0}")]
    Jail(#[from] JailError),
    #[error("pod I/O limits: {0}")]
    Limits(#[from] crate::limits::LimitError),
    #[error("growing the pod's VM: {0}")]
    Grow(#[from] grow::GrowError),
    /// Work moved off the runtime thread ended without an answer (it panicked).
    #[error("{0}: the blocking task failed")]
    Blocking(&'static str),
}

fn io_err(context: String) -> impl FnOnce(std::io::Error) -> BackendError {
    move |source| BackendError::Io { context, source }
}

/// A container made visible to the agent: the spec it gets and the storages to mount first.
#[derive(Debug, Clone)]
pub(crate) struct Prepared {
    pub(crate) spec_json: Vec<u8>,
    pub(crate) storages: Vec<Storage>,
}

/// The shim's move out of the pod's cgroups (`Pod::leave_pod_cgroup`), which a backend's
/// shutdown awaits before it kills and removes them.
pub(crate) type ShimLeft = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

/// A running pod: the agent's ttrpc client and how to stop everything the pod owns.
#[async_trait]
pub(crate) trait PodBackend: Send + Sync + Debug {
    /// The connection to the pod's agent; clones share it.
    fn agent(&self) -> ttrpc::asynchronous::Client;
    /// The pid containerd shows for a task whose process has `guest_pid` in the agent: the
    /// VMM's host pid for a VM (as Kata), so that `/proc/<pid>` names something on the host.
    fn task_pid(&self, guest_pid: u32) -> u32;
    /// Makes container `cid` (bundle and mounted host rootfs) reachable by the agent.
    /// `sandbox_pid` is the pod sandbox container's pid in the agent, once it exists: the
    /// namespaces a CRI container shares with the sandbox are that process's.
    async fn prepare_container(
        &self,
        cid: &str,
        bundle: &Path,
        rootfs: &Path,
        sandbox_pid: Option<u32>,
    ) -> Result<Prepared, BackendError>;
    /// Undoes [`PodBackend::prepare_container`]; idempotent.
    async fn release_container(&self, cid: &str);
    /// Grows the pod's VM to at least `want` before a container that needs it is created or
    /// updated (`grow`). The host agent has no VM: nothing to do.
    async fn grow(&self, _want: crate::sizing::VmSize) -> Result<(), BackendError> {
        Ok(())
    }
    /// Whether the VM (or host agent) still runs.
    fn alive(&self) -> bool;
    /// Resolves when the pod's VM (or host agent) has ended, asked to or not.
    async fn died(&self);
    /// Stops the agent (and VM) and removes every host resource the pod created. The pod's
    /// cgroups are killed and removed only once `shim_left` resolved (the shim out of them),
    /// which runs beside the stop.
    async fn shutdown(&self, shim_left: ShimLeft) -> Result<(), BackendError>;
    /// The processes and cgroups the pod owns, for `pod.json` (crash cleanup).
    fn record(&self) -> record::PodRecord;
}

/// Where pod `sid` keeps its state.
fn pod_dir(sid: &str) -> PathBuf {
    hull_contract::pods::pod_dir(sid)
}

/// Starts pod `sid`, whose sandbox (first) container has `bundle`, with the backend `cfg`
/// selects.
/// `annotations` are the pod's allowed `io.hull.*` ones.
pub(crate) async fn launch(
    cfg: &HullConfig,
    sid: &str,
    bundle: &Path,
    annotations: &HullAnnotations,
) -> Result<Box<dyn PodBackend>, BackendError> {
    let b: Box<dyn PodBackend> = match &cfg.host_agent {
        #[cfg(feature = "host-agent-backend")]
        Some(h) => Box::new(host_agent::HostAgent::launch(&h.agent, sid, &pod_dir(sid)).await?),
        #[cfg(not(feature = "host-agent-backend"))]
        Some(_) => return Err(BackendError::HostAgentNotBuilt),
        None => Box::new(vm::VmPod::launch(cfg, sid, bundle, annotations).await?),
    };
    // Without the record a shim crash would leak the VM: a pod that cannot write it stops.
    if let Err(e) = record::write(&pod_dir(sid), &b.record()) {
        if let Err(e2) = b.shutdown(Box::pin(async {})).await {
            tracing::error!("stop the pod after failing to record it: {e2}");
        }
        return Err(e);
    }
    Ok(b)
}
