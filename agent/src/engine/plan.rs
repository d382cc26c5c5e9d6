//! What the agent tells the init helper to do: a validated, self-contained plan derived from
//! the OCI spec. Everything that can be checked is checked in the agent (so bad input gets
//! INVALID_ARGUMENT before any process exists); the helper only executes.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Whether the helper builds a new container or joins a running one.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub enum InitKind {
    /// A container's init: new namespaces, rootfs, then wait for Start.
    Create,
    /// An extra process in an existing container's namespaces.
    Exec,
}

/// The whole plan sent to the helper on its sync socket.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InitPlan {
    pub kind: InitKind,
    /// `cgroup.procs` of the container's cgroup, joined before forking.
    pub cgroup_procs: Option<PathBuf>,
    /// Namespaces to join: (name as in /proc/PID/ns, path).
    pub join_ns: Vec<(String, PathBuf)>,
    /// CLONE_NEW* flags to unshare.
    pub new_ns_flags: i32,
    pub rootfs: Option<RootfsPlan>,
    /// Hostname to set (only with a new UTS namespace).
    pub hostname: Option<String>,
    /// Sysctls to write under /proc/sys after the rootfs is ready.
    pub sysctls: Vec<(String, String)>,
    pub process: ProcessPlan,
    /// Stdio is a terminal: the container process makes one from the container's devpts,
    /// takes it as controlling terminal and sends the master back (see [`super::init::console`]).
    pub terminal: bool,
}

/// How to build the container's root file system.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RootfsPlan {
    pub root: PathBuf,
    pub readonly: bool,
    /// Propagation flags (MS_*) for "/" before anything is mounted.
    pub propagation: u64,
    pub mounts: Vec<MountPlan>,
    pub devices: Vec<DevicePlan>,
    pub masked_paths: Vec<PathBuf>,
    pub readonly_paths: Vec<PathBuf>,
}

/// One mount inside the container.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct MountPlan {
    /// Absolute path inside the container, already normalised (no `..`).
    pub destination: PathBuf,
    pub fstype: String,
    pub source: Option<PathBuf>,
    /// MS_* flags for the mount itself.
    pub flags: u64,
    /// MS_* propagation flags applied afterwards (0 = none).
    pub propagation: u64,
    /// File-system specific options (`-o` leftovers).
    pub data: String,
}

/// A device node to create inside the container's /dev.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct DevicePlan {
    pub path: PathBuf,
    /// 'c', 'b' or 'p'.
    pub kind: char,
    pub major: u64,
    pub minor: u64,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
}

/// Capability sets by name ("CAP_CHOWN"); None = leave that set as it is.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct CapsPlan {
    pub bounding: Vec<String>,
    pub effective: Vec<String>,
    pub inheritable: Vec<String>,
    pub permitted: Vec<String>,
    pub ambient: Vec<String>,
}

/// The process to exec and its credentials and limits.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct ProcessPlan {
    pub args: Vec<String>,
    pub env: Vec<String>,
    pub cwd: PathBuf,
    pub uid: u32,
    pub gid: u32,
    pub additional_gids: Vec<u32>,
    pub umask: Option<u32>,
    /// (RLIMIT_* number, soft, hard).
    pub rlimits: Vec<(i32, u64, u64)>,
    pub caps: Option<CapsPlan>,
    pub no_new_privileges: bool,
    pub oom_score_adj: Option<i32>,
    /// Compiled seccomp filters (code, jt, jf, k), installed in order.
    pub seccomp: Vec<Vec<(u16, u8, u8, u32)>>,
}

/// Messages from the helper (and then the container process) to the agent.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub enum InitReply {
    /// The helper forked the process: its pid in the agent's pid namespace.
    Pid(i32),
    /// The terminal is made; its master descriptor comes with this line (SCM_RIGHTS).
    Terminal,
    /// Setup is done; waiting for Start (Create only).
    Ready,
    /// Setup or exec failed.
    Error(String),
}
