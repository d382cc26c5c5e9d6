//! The pod's virtiofsd (DESIGN §1): the vhost-user back end that serves the pod's share to
//! hull-vmm's virtio-fs device. The shim binds the listening socket and hands it over as fd 3
//! (`--fd=3`), so the socket exists before hull-vmm connects: no path race, no polling.
//! virtiofsd runs sandboxed (its own pid/mount/net namespaces, pivot_root into the share),
//! in the pod's cgroup, and exits by itself when hull-vmm disconnects.
//!
//! What stays privileged, and why (issue 17 §1): virtiofsd serves the containers' rootfs
//! with the guest's file ownership, so it runs as root; unprivileged, in a user namespace,
//! it could not create files owned by the container's users nor read root-only files of the
//! image. Its waiting parent keeps no capability; the serving process keeps only what file
//! serving needs: CHOWN, DAC_OVERRIDE, FOWNER, FSETID, SETGID, SETUID (it switches fsuid/fsgid
//! per request). `--modcaps` drops the two other defaults: MKNOD (a guest must not create
//! device nodes on the host; FIFOs and sockets need no capability) and SETFCAP (a guest reads
//! an image's file capabilities through `--xattr`, as runc's containers do, but cannot write
//! `security.capability` onto host files; `trusted.*` and other `security.*` names need
//! CAP_SYS_ADMIN, which virtiofsd never has, so a guest can set only `user.*` names and its
//! own files' ACLs). DAC_READ_SEARCH is not kept (`--inode-file-handles=never`). Its seccomp
//! filter kills on anything else.

use std::os::fd::AsRawFd;
use std::path::Path;
use std::process::Stdio;

use tokio::process::Command;

use super::BackendError;
use crate::child::{spawn, ChildSetup, Supervised};
use crate::config::VirtiofsSection;

/// The capabilities dropped from virtiofsd's defaults (see the module comment).
pub(crate) const MODCAPS: &str = "--modcaps=-mknod:-setfcap";

/// Starts virtiofsd serving `shared_dir` on a socket bound at `socket`; its log goes to
/// `stderr` (a relay's pipe, `log_relay`).
pub(crate) fn start(
    cfg: &VirtiofsSection,
    shared_dir: &Path,
    socket: &Path,
    stderr: std::os::fd::OwnedFd,
    cgroup_procs: Option<std::os::fd::RawFd>,
) -> Result<Supervised, BackendError> {
    let err = |what: String, source| BackendError::Virtiofsd { what, source };
    let _ = std::fs::remove_file(socket);
    let listener = std::os::unix::net::UnixListener::bind(socket)
        .map_err(|e| err(format!("bind {}", socket.display()), e))?;
    let mut cmd = Command::new(&cfg.virtiofsd);
    cmd.arg("--fd=3")
        .arg(format!("--shared-dir={}", shared_dir.display()))
        .arg(format!("--sandbox={}", cfg.sandbox))
        .arg("--seccomp=kill")
        .arg(format!("--cache={}", cfg.cache))
        .arg(format!("--thread-pool-size={}", cfg.thread_pool_size))
        // Each container rootfs is its own mount in the share; the guest sees them as
        // submounts with their own inode spaces instead of colliding inode numbers.
        .arg("--announce-submounts")
        // File handles need CAP_DAC_READ_SEARCH and a filesystem that supports them; fds
        // work everywhere.
        .arg("--inode-file-handles=never")
        // File capabilities of image layers (security.capability), e.g. ping's cap_net_raw.
        .arg("--xattr")
        .arg(MODCAPS)
        .arg("--log-level=warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr)
        .kill_on_drop(true);
    let child = spawn(
        &mut cmd,
        ChildSetup {
            cgroup_procs,
            fds: [Some(listener.as_raw_fd()), None, None],
            die_with_parent: true,
        },
    )
    .map_err(|e| err(format!("spawn {}", cfg.virtiofsd.display()), e))?;
    // The child has its copy as fd 3; the shim's is closed here.
    drop(listener);
    Ok(Supervised::new("virtiofsd", child))
}
