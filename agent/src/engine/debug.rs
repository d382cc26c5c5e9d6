//! A process in the guest itself, outside every container (`hullctl debug`, served by
//! `crate::debug_shell` only when the node turned it on): the agent's own namespaces and
//! cgroup, root with the agent's capabilities, no seccomp. It goes through the same init
//! helper as an exec, so its exit reaches the reaper registered, and a terminal is made
//! from the guest's own devpts.

use std::path::PathBuf;
use std::sync::Arc;

use super::error::Result;
use super::oom::OomBaseline;
use super::plan::{InitKind, InitPlan, ProcessPlan};
use super::process::Process;
use super::Engine;

/// The container id a debug process is known by in logs; it is never in the registry.
pub(crate) const DEBUG_CONTAINER: &str = "hull-debug";

impl Engine {
    /// Starts `args` (found on the `PATH` in `env`) in the guest, with a stdin stream, on a
    /// terminal if `terminal`.
    pub(crate) async fn launch_in_guest(
        &self,
        session: &str,
        args: Vec<String>,
        env: Vec<String>,
        terminal: bool,
    ) -> Result<Arc<Process>> {
        let plan = InitPlan {
            kind: InitKind::Exec,
            cgroup_procs: None,
            join_ns: Vec::new(),
            new_ns_flags: 0,
            rootfs: None,
            hostname: None,
            sysctls: Vec::new(),
            process: ProcessPlan {
                args,
                env,
                cwd: PathBuf::from("/"),
                uid: 0,
                gid: 0,
                additional_gids: Vec::new(),
                umask: None,
                rlimits: Vec::new(),
                caps: None,
                no_new_privileges: false,
                oom_score_adj: None,
                seccomp: Vec::new(),
            },
            terminal,
        };
        // Outside every container there is no OOM counter to read: never reported OOM-killed.
        let oom = OomBaseline::take(PathBuf::new());
        self.spawn_process(plan, true, (DEBUG_CONTAINER, session), oom)
            .await
    }
}
