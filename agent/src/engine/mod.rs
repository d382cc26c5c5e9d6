//! The container engine: containers and their processes inside the guest.
//!
//! Written for hull rather than built on youki's `libcontainer` 0.7, which was evaluated:
//! it forks from the calling process and waits on its intermediate children itself (which
//! races the agent's single `waitpid(-1)` reaper), needs libseccomp (a C library, awkward in a
//! static guest binary), keeps runc-style state directories meant for a CLI runtime, and adds
//! a large dependency tree to a 2-core build. What hull needs is smaller: a re-exec'd init
//! helper ([`init`], Kata's rustjail model) told what to do by a validated [`plan`], cgroup v2
//! by files ([`cgroup`]) and seccomp via seccompiler ([`seccomp`]).
//!
//! State: the table of containers and processes is owned by one task ([`registry`]); every
//! operation (one file each: [`create`], [`start`], [`exec`], [`signal`], [`remove`],
//! [`update`], [`pause`], [`io`], [`pids`]) looks up `Arc` handles there and works outside it.

pub(crate) mod cgroup;
pub(crate) mod create;
pub(crate) mod debug;
pub(crate) mod devices;
pub mod error;
pub(crate) mod exec;
pub mod init;
pub(crate) mod io;
pub(crate) mod launch;
pub(crate) mod mountopt;
pub(crate) mod oom;
pub(crate) mod paths;
pub(crate) mod pause;
pub(crate) mod pids;
pub(crate) mod plan;
pub(crate) mod process;
pub(crate) mod registry;
pub(crate) mod remove;
pub(crate) mod seccomp;
pub(crate) mod signal;
pub(crate) mod spec;
pub(crate) mod start;
pub(crate) mod stdio;
pub(crate) mod sync_socket;
pub(crate) mod update;

use std::path::PathBuf;
use std::sync::Arc;

pub(crate) use error::{EngineError, ErrorCode, Result};

use self::cgroup::CgroupParent;
use self::registry::Registry;
use crate::reaper::ReaperHandle;

/// Where the engine keeps things.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// The binary re-executed as init helper (the agent itself).
    pub init_exe: PathBuf,
    /// cgroup v2 directory under which each container gets its own cgroup.
    pub cgroup_parent: PathBuf,
    /// The agent runs on a real host (`--listen unix:`, tests), not as the guest's PID 1: its
    /// own namespaces are the host's, so no container may change them (`net.*` sysctls of a
    /// container without a network namespace of its own).
    pub host_mode: bool,
}

/// Handle to the engine; cheap to clone.
#[derive(Debug, Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    config: EngineConfig,
    cgroups: CgroupParent,
    reaper: ReaperHandle,
    registry: Registry,
    oom: oom::OomEvents,
}

/// Container ids become cgroup directory names: keep them to a safe alphabet.
pub(crate) fn validate_id(id: &str, what: &str) -> Result<()> {
    let ok = !id.is_empty()
        && id.len() <= 128
        && id != "."
        && id != ".."
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if ok {
        Ok(())
    } else {
        Err(EngineError::InvalidArgument(format!(
            "{what} {id:?} must be 1-128 characters of [A-Za-z0-9_.-]"
        )))
    }
}

impl Engine {
    /// Prepares the cgroup parent and starts the registry task. Call inside the runtime.
    pub fn new(config: EngineConfig, reaper: ReaperHandle) -> Result<Self> {
        let cgroups = CgroupParent::prepare(&config.cgroup_parent)?;
        Ok(Engine {
            inner: Arc::new(Inner {
                config,
                cgroups,
                reaper,
                registry: Registry::spawn(),
                oom: oom::OomEvents::new(),
            }),
        })
    }

    pub(crate) fn config(&self) -> &EngineConfig {
        &self.inner.config
    }

    pub(crate) fn registry(&self) -> &Registry {
        &self.inner.registry
    }

    pub(crate) fn reaper(&self) -> &ReaperHandle {
        &self.inner.reaper
    }

    pub(crate) fn cgroups(&self) -> &CgroupParent {
        &self.inner.cgroups
    }

    pub(crate) fn oom_events(&self) -> &oom::OomEvents {
        &self.inner.oom
    }

    /// Ids of every container.
    pub(crate) async fn container_ids(&self) -> Vec<String> {
        self.registry()
            .list()
            .await
            .into_iter()
            .map(|c| c.id.clone())
            .collect()
    }
}
