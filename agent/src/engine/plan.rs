//! What the agent tells the init helper to do: a validated, self-contained plan derived from
//! the OCI spec. Everything that can be checked is checked in the agent (so bad input gets
//! INVALID_ARGUMENT before any process exists); the helper only executes.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Whether the helper builds a new container or joins a running one.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) enum InitKind {
    /// A container's init: new namespaces, rootfs, then wait for Start.
    Create,
    /// An extra process in an existing container's namespaces.
    Exec,
}

/// The whole plan sent to the helper on its sync socket.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct InitPlan {
    pub(crate) kind: InitKind,
    /// `cgroup.procs` of the container's cgroup, joined before forking.
    pub(crate) cgroup_procs: Option<PathBuf>,
    /// Namespaces to join: (name as in /proc/PID/ns, path).
    pub(crate) join_ns: Vec<(String, PathBuf)>,
    /// CLONE_NEW* flags to unshare.
    pub(crate) new_ns_flags: i32,
    pub(crate) rootfs: Option<RootfsPlan>,
    /// Hostname to set (only with a new UTS namespace).
    pub(crate) hostname: Option<String>,
    /// Sysctls to write under /proc/sys after the rootfs is ready.
    pub(crate) sysctls: Vec<(String, String)>,
    pub(crate) process: ProcessPlan,
    /// Stdio is a terminal: the container process makes one from the container's devpts,
    /// takes it as controlling terminal and sends the master back (see [`super::init::console`]).
    pub(crate) terminal: bool,
}

/// How to build the container's root file system.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct RootfsPlan {
    pub(crate) root: PathBuf,
    pub(crate) readonly: bool,
    /// Propagation flags (MS_*) for "/" before anything is mounted.
    pub(crate) propagation: u64,
    pub(crate) mounts: Vec<MountPlan>,
    pub(crate) devices: Vec<DevicePlan>,
    pub(crate) masked_paths: Vec<PathBuf>,
    pub(crate) readonly_paths: Vec<PathBuf>,
}

/// One mount inside the container.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct MountPlan {
    /// Absolute path inside the container, already normalised (no `..`).
    pub(crate) destination: PathBuf,
    pub(crate) fstype: String,
    pub(crate) source: Option<PathBuf>,
    /// MS_* flags for the mount itself.
    pub(crate) flags: u64,
    /// MS_* propagation flags applied afterwards (0 = none).
    pub(crate) propagation: u64,
    /// File-system specific options (`-o` leftovers).
    pub(crate) data: String,
}

/// A device node to create inside the container's /dev.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct DevicePlan {
    pub(crate) path: PathBuf,
    /// 'c', 'b' or 'p'.
    pub(crate) kind: char,
    pub(crate) major: u64,
    pub(crate) minor: u64,
    pub(crate) mode: u32,
    pub(crate) uid: u32,
    pub(crate) gid: u32,
}

/// Capability sets by name ("CAP_CHOWN"); None = leave that set as it is.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct CapsPlan {
    pub(crate) bounding: Vec<String>,
    pub(crate) effective: Vec<String>,
    pub(crate) inheritable: Vec<String>,
    pub(crate) permitted: Vec<String>,
    pub(crate) ambient: Vec<String>,
}

/// The process to exec and its credentials and limits.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub(crate) struct ProcessPlan {
    pub(crate) args: Vec<String>,
    pub(crate) env: Vec<String>,
    pub(crate) cwd: PathBuf,
    pub(crate) uid: u32,
    pub(crate) gid: u32,
    pub(crate) additional_gids: Vec<u32>,
    pub(crate) umask: Option<u32>,
    /// (RLIMIT_* number, soft, hard).
    pub(crate) rlimits: Vec<(i32, u64, u64)>,
    pub(crate) caps: Option<CapsPlan>,
    pub(crate) no_new_privileges: bool,
    pub(crate) oom_score_adj: Option<i32>,
    /// Compiled seccomp filters (code, jt, jf, k), installed in order.
    pub(crate) seccomp: Vec<Vec<(u16, u8, u8, u32)>>,
}

/// Messages from the helper (and then the container process) to the agent.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) enum InitReply {
    /// The helper forked the process: its pid in the agent's pid namespace.
    Pid(i32),
    /// The terminal is made; its master descriptor comes with this line (SCM_RIGHTS).
    Terminal,
    /// Setup is done; waiting for Start (Create only).
    Ready,
    /// Setup or exec failed.
    Error(String),
}
