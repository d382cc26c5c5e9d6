//! hull-vmm's jail (issue 17 §1; DESIGN §2 shim/). Each pod's hull-vmm starts already
//! confined, from a jailer step in the shim (no extra process, [`clone`]):
//!
//! - its own mount, pid (it is PID 1 there), ipc, uts and network namespaces: it needs no
//!   network, taps come as fds and vsock is a Unix socket;
//! - `pivot_root` into `<pod dir>/jail` (owned by the pod's uid, 0700), which holds only
//!   `/hull-vmm`, `/kernel`, `/initrd` (bound read-only), `/dev/kvm`, `/dev/urandom`, the
//!   vhost-user socket `/fs.sock` (bound by the shim, chowned to the uid) and the hybrid vsock
//!   socket `/vsock.sock` hull-vmm creates, which the shim and hullctl reach from the host at
//!   `<pod dir>/jail/vsock.sock`;
//! - a uid/gid of its own per pod ([`ids`]), the group of /dev/kvm as its only supplementary
//!   group, no capabilities (bounding, ambient and inheritable sets empty), `no_new_privs`,
//!   RLIMIT_NOFILE / RLIMIT_FSIZE / RLIMIT_CORE, in the pod's cgroup from its first page.
//!
//! hull-vmm's own seccomp filters come on top. The jail's mounts live only in hull-vmm's
//! mount namespace and vanish with it; the jail directory goes with the pod directory.

mod clone;
mod elf;
mod ids;

use std::ffi::OsString;
use std::os::fd::RawFd;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};

pub(crate) use ids::Ids;

use crate::child::Supervised;

/// Paths inside the jail.
pub(crate) const VMM: &str = "/hull-vmm";
pub(crate) const KERNEL: &str = "/kernel";
pub(crate) const INITRD: &str = "/initrd";
pub(crate) const FS_SOCKET: &str = "/fs.sock";
/// `hull_contract::pods::AGENT_SOCKET` on the host (a test holds the two together).
pub(crate) const VSOCK_SOCKET: &str = "/vsock.sock";
/// hull-vmm's API socket (vmm/API.md): the pod's VM metrics and rate limits at runtime;
/// `hull_contract::pods::API_SOCKET` on the host (a test holds the two together).
pub(crate) const API_SOCKET: &str = "/api.sock";

/// RLIMIT_NOFILE of hull-vmm: the vsock muxer's caps (512 host + 64 guest-initiated
/// connections, one fd each), a vCPU fd per vCPU, and the rest with headroom: KVM, VM and
/// guest-memory fds, the epoll loop, timer/signal/event fds, each device's ioeventfds and
/// irqfds (≈ 40 with three NICs, virtio-fs, vsock, rng), the vhost-user socket and its
/// kick/call eventfds, the vsock and API listeners and a few API connections, stdio, the
/// console and up to three taps. 512 + 64 + 32 + 160 = 768; 1024 leaves a third spare.
pub(crate) const VMM_NOFILE: u64 = 1024;
const _: () = assert!(512 + 64 + hull_contract::MAX_VCPUS as u64 + 160 <= VMM_NOFILE);

#[derive(Debug, thiserror::Error)]
pub(crate) enum JailError {
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{path} cannot run in hull-vmm's jail: {why}. The jail holds no shared libraries; \
         build hull-vmm statically, as scripts/build-release does: \
         CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUSTFLAGS=\"-C target-feature=+crt-static\" \
         cargo build --release --target x86_64-unknown-linux-gnu -p hull-vmm"
    )]
    NotStatic { path: PathBuf, why: String },
    #[error("no free uid in [jail] uid_range [{first}, {last}]: every one is held by a pod")]
    NoFreeId { first: u32, last: u32 },
    #[error(
        "/dev/kvm (mode {mode:04o}, gid {gid}) is usable only by root; hull-vmm runs \
         unprivileged and reaches it through its group: give it one, as udev's default rule \
         does (`chgrp kvm /dev/kvm && chmod 0660 /dev/kvm`, persistently \
         KERNEL==\"kvm\", GROUP=\"kvm\", MODE=\"0660\"; scripts/install does both)"
    )]
    KvmRootOnly { mode: u32, gid: u32 },
    #[error("a path or argument for the jail holds a NUL byte: {0}")]
    Nul(PathBuf),
    #[error("{step}: {source}")]
    Clone {
        step: &'static str,
        source: std::io::Error,
    },
    #[error("jailing hull-vmm failed to {step}: {source}")]
    Child {
        step: &'static str,
        source: std::io::Error,
    },
}

impl JailError {
    fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> JailError {
        let path = path.to_path_buf();
        move |source| JailError::Io { what, path, source }
    }
}

/// `<pod dir>/jail`.
pub(crate) fn dir_of(pod_dir: &Path) -> PathBuf {
    pod_dir.join("jail")
}

/// The host path of the jail's `inside` path (`/vsock.sock` → `<jail>/vsock.sock`).
pub(crate) fn host_path(pod_dir: &Path, inside: &str) -> PathBuf {
    dir_of(pod_dir).join(inside.trim_start_matches('/'))
}

/// The supplementary group hull-vmm needs for /dev/kvm: none if everyone may use it, its
/// group if that group may; an error if only root may.
fn kvm_group(dev: &Path) -> Result<Vec<u32>, JailError> {
    let md = std::fs::metadata(dev).map_err(JailError::io("stat", dev))?;
    let mode = md.mode() & 0o7777;
    if mode & 0o006 == 0o006 {
        Ok(vec![])
    } else if mode & 0o060 == 0o060 && md.gid() != 0 {
        Ok(vec![md.gid()])
    } else {
        Err(JailError::KvmRootOnly {
            mode,
            gid: md.gid(),
        })
    }
}

/// What hull-vmm is started with, host side.
#[derive(Debug)]
pub(crate) struct VmmLaunch<'a> {
    pub(crate) vmm: &'a Path,
    pub(crate) kernel: &'a Path,
    pub(crate) initrd: &'a Path,
    /// hull-vmm's flags (naming jail paths), argv[0] excluded.
    pub(crate) args: Vec<OsString>,
    /// Passed as fds 3, 4, …
    pub(crate) fds: Vec<RawFd>,
    pub(crate) stderr: RawFd,
    pub(crate) cgroup_procs: Option<RawFd>,
    /// RLIMIT_FSIZE: see [`fsize_limit`].
    pub(crate) fsize: u64,
}

/// RLIMIT_FSIZE for a VM of `memory_mib`. It bounds what hull-vmm can write to its files
/// (the console, capped at 1 MiB by hull-vmm itself; its stderr is a pipe to the shim's log
/// relay, which bounds vmm.log, `log_relay`), but Linux
/// applies it to every file the process grows, and hull-vmm sizes its guest-RAM memfd with
/// ftruncate: the limit must be at least the guest's RAM, so that is the limit (a log cannot
/// outgrow the VM's memory; a tighter bound needs hull-vmm to lower the limit itself once
/// its memory exists). hull-vmm ignores SIGXFSZ, so a write past it fails with EFBIG. No
/// disk is passed by the shim today; a disk image written by hull-vmm would need its size
/// added here (or be opened by the shim and passed as an fd that is not grown).
pub(crate) fn fsize_limit(memory_mib: u32) -> u64 {
    u64::from(memory_mib) << 20
}

/// A pod's jail directory, prepared for `id`.
#[derive(Debug, Clone)]
pub(crate) struct Jail {
    dir: PathBuf,
    id: u32,
}

impl Jail {
    /// Creates `<pod dir>/jail` for uid/gid `id`: the root (owned by `id`, 0700, so hull-vmm
    /// can create its socket there and nobody else can look in) and the mount points.
    pub(crate) fn prepare(pod_dir: &Path, id: u32) -> Result<Jail, JailError> {
        let dir = dir_of(pod_dir);
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .map_err(JailError::io("create", &dir))?;
        std::os::unix::fs::chown(&dir, Some(id), Some(id)).map_err(JailError::io("chown", &dir))?;
        let dev = dir.join("dev");
        std::fs::DirBuilder::new()
            .mode(0o755)
            .create(&dev)
            .map_err(JailError::io("create", &dev))?;
        clone::make_mount_points(&dir, &binds(Path::new("/"), Path::new("/"), Path::new("/")))?;
        Ok(Jail { dir, id })
    }

    /// Gives a socket the shim bound in the jail to hull-vmm's uid.
    pub(crate) fn hand_over(&self, inside: &str) -> Result<(), JailError> {
        let p = self.dir.join(inside.trim_start_matches('/'));
        std::os::unix::fs::chown(&p, Some(self.id), Some(self.id))
            .map_err(JailError::io("chown", &p))
    }

    /// Starts hull-vmm in the jail; argv[0] is its host path, so `ps` and `pgrep` name it.
    pub(crate) fn spawn_vmm(&self, l: VmmLaunch<'_>) -> Result<Supervised, JailError> {
        elf::check_static(l.vmm)?;
        let groups = kvm_group(Path::new("/dev/kvm"))?;
        let argv = std::iter::once(l.vmm.as_os_str().to_owned())
            .chain(l.args)
            .collect();
        // Only what hull-vmm reads: its log filter and backtraces.
        let env = ["RUST_LOG", "RUST_BACKTRACE"]
            .iter()
            .filter_map(|k| {
                let v = std::env::var_os(k)?;
                let mut e = OsString::from(format!("{k}="));
                e.push(v);
                Some(e)
            })
            .collect();
        let spec = clone::Spec {
            root: self.dir.clone(),
            binds: binds(l.vmm, l.kernel, l.initrd),
            exe: VMM,
            argv,
            env,
            fds: l.fds,
            stdout: None,
            stderr: Some(l.stderr),
            cgroup_procs: l.cgroup_procs,
            uid: self.id,
            gid: self.id,
            groups,
            nofile: VMM_NOFILE,
            fsize: l.fsize,
        };
        let (pid, pidfd) = clone::spawn(&spec)?;
        Supervised::from_pidfd("hull-vmm", pid, pidfd)
            .map_err(JailError::io("watch the pidfd of", l.vmm))
    }
}

/// The files bound into the jail.
fn binds(vmm: &Path, kernel: &Path, initrd: &Path) -> Vec<clone::Bind> {
    let file = |source: &Path, target, exec| clone::Bind {
        source: source.to_path_buf(),
        target,
        read_only: true,
        exec,
        dev: false,
    };
    let device = |source: &str, target| clone::Bind {
        source: PathBuf::from(source),
        target,
        read_only: false,
        exec: false,
        dev: true,
    };
    vec![
        file(vmm, &VMM[1..], true),
        file(kernel, &KERNEL[1..], false),
        file(initrd, &INITRD[1..], false),
        device("/dev/kvm", "dev/kvm"),
        device("/dev/urandom", "dev/urandom"),
    ]
}

#[cfg(test)]
mod tests;
