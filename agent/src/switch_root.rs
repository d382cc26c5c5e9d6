//! Leaving the initramfs: the first thing PID 1 does.
//!
//! The kernel unpacks the initrd into its initial root mount (`rootfs`), which has no parent
//! mount, and `pivot_root(2)` refuses to move a mount namespace off such a root (EINVAL).
//! Every container's mount namespace starts as a copy of the agent's, so as long as the agent
//! runs from the initramfs no container could pivot into its rootfs. Like `switch_root(8)`,
//! the agent therefore copies itself onto a fresh tmpfs, moves that tmpfs over `/`, chroots
//! into it and re-executes itself there. The new root is an ordinary mount with a parent, so
//! containers pivot_root as on any host; the old initramfs is emptied of the agent binary and
//! unreachable.

use std::ffi::OsString;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::Path;

use nix::mount::{mount, MsFlags};
use nix::sys::statfs::{statfs, FsType, TMPFS_MAGIC};

/// `RAMFS_MAGIC` of linux/magic.h (the initramfs when the kernel has no tmpfs); the libc
/// crate does not export it for this target.
const RAMFS_MAGIC: FsType = FsType(0x8584_58f6);
/// Set in the environment of the re-executed agent so it does not switch again.
pub(crate) const SWITCHED_ENV: &str = "HULL_ROOT_SWITCHED";
const NEW_ROOT: &str = "/hull-root";
/// Directories the agent and containers expect at the new root (as in guest/build's cpio).
const SKELETON: &[(&str, u32)] = &[
    ("dev", 0o755),
    ("proc", 0o555),
    ("sys", 0o555),
    ("run", 0o755),
    ("tmp", 0o1777),
    ("mnt", 0o755),
    ("root", 0o700),
    ("etc", 0o755),
];

/// A step of the switch that failed.
#[derive(Debug, thiserror::Error)]
pub enum SwitchRootError {
    #[error("{step}: {source}")]
    Io {
        step: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{step}: {source}")]
    Sys {
        step: &'static str,
        #[source]
        source: nix::errno::Errno,
    },
}

fn io(step: impl Into<String>) -> impl FnOnce(std::io::Error) -> SwitchRootError {
    let step = step.into();
    move |source| SwitchRootError::Io { step, source }
}

fn sys(step: &'static str) -> impl FnOnce(nix::errno::Errno) -> SwitchRootError {
    move |source| SwitchRootError::Sys { step, source }
}

/// Whether PID 1 still runs from the initramfs and has not switched yet.
pub fn needed() -> bool {
    if std::env::var_os(SWITCHED_ENV).is_some() {
        return false;
    }
    statfs("/").is_ok_and(|s| {
        let t = s.filesystem_type();
        t == RAMFS_MAGIC || t == TMPFS_MAGIC
    })
}

/// Copies the running binary (`exe`, the initramfs's `/init`) onto a new tmpfs root, moves it
/// over `/` and re-executes it with `args`. Returns only on failure; call it while the
/// process is still single-threaded.
pub fn switch_and_reexec(exe: &Path, args: &[OsString]) -> SwitchRootError {
    match switch(exe) {
        Ok(()) => {}
        Err(e) => return e,
    }
    let err = std::process::Command::new("/init")
        .arg0(exe)
        .args(args)
        .env(SWITCHED_ENV, "1")
        .exec();
    io("re-execute /init on the new root")(err)
}

fn switch(exe: &Path) -> Result<(), SwitchRootError> {
    fs::create_dir_all(NEW_ROOT).map_err(io(format!("create {NEW_ROOT}")))?;
    mount(
        Some("tmpfs"),
        NEW_ROOT,
        Some("tmpfs"),
        MsFlags::MS_NOSUID,
        Some("mode=0755"),
    )
    .map_err(sys("mount tmpfs for the new root"))?;
    let root = Path::new(NEW_ROOT);
    for (dir, mode) in SKELETON {
        let p = root.join(dir);
        fs::create_dir(&p).map_err(io(format!("create {p:?}")))?;
        fs::set_permissions(&p, fs::Permissions::from_mode(*mode))
            .map_err(io(format!("chmod {p:?}")))?;
    }
    let target = root.join("init");
    fs::copy(exe, &target).map_err(io(format!("copy {exe:?} to the new root")))?;
    fs::set_permissions(&target, fs::Permissions::from_mode(0o755))
        .map_err(io("chmod the new /init"))?;
    // The initramfs stays mounted underneath (it cannot be unmounted); free its copy of the
    // binary, the only large file in it.
    let _ = fs::remove_file(exe);
    nix::unistd::chdir(root).map_err(sys("chdir to the new root"))?;
    mount(Some("."), "/", None::<&str>, MsFlags::MS_MOVE, None::<&str>)
        .map_err(sys("move the new root over /"))?;
    nix::unistd::chroot(".").map_err(sys("chroot into the new root"))?;
    nix::unistd::chdir("/").map_err(sys("chdir /"))?;
    Ok(())
}
