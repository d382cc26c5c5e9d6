//! Leaving the initramfs: the first thing PID 1 does.
//!
//! The kernel unpacks the initrd into its initial root mount (`rootfs`), which has no parent
//! mount, and `pivot_root(2)` refuses to move a mount namespace off such a root (EINVAL).
//! Every container's mount namespace starts as a copy of the agent's, so as long as `/` is
//! the initramfs no container could pivot into its rootfs. The agent therefore mounts a fresh
//! tmpfs, moves it over `/` and chroots into it, as `switch_root(8)` does. The new root is an
//! ordinary mount with a parent, so containers pivot_root as on any host.
//!
//! Unlike `switch_root(8)` the agent neither copies itself onto the new root nor re-executes:
//! it goes on running from the initramfs's `/init`, now unreachable by path. Its pages are
//! the unpacked initrd's, already in guest RAM; a copy would have touched another 6 MB of it
//! (host memory the guest never gives back) on every boot. Container processes start from
//! `/proc/self/exe`, which needs no path.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use nix::mount::{mount, MsFlags};
use nix::sys::statfs::{statfs, FsType, TMPFS_MAGIC};

/// `RAMFS_MAGIC` of linux/magic.h (the initramfs when the kernel has no tmpfs); the libc
/// crate does not export it for this target.
const RAMFS_MAGIC: FsType = FsType(0x8584_58f6);
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

/// Whether `/` is still the initramfs (ramfs, or tmpfs when the kernel has it).
pub fn needed() -> bool {
    statfs("/").is_ok_and(|s| {
        let t = s.filesystem_type();
        t == RAMFS_MAGIC || t == TMPFS_MAGIC
    })
}

/// Mounts a new tmpfs root, moves it over `/` and chroots into it. Call it once, while the
/// process is still single-threaded (the chroot is the whole process's).
pub fn switch() -> Result<(), SwitchRootError> {
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
    nix::unistd::chdir(root).map_err(sys("chdir to the new root"))?;
    mount(Some("."), "/", None::<&str>, MsFlags::MS_MOVE, None::<&str>)
        .map_err(sys("move the new root over /"))?;
    nix::unistd::chroot(".").map_err(sys("chroot into the new root"))?;
    nix::unistd::chdir("/").map_err(sys("chdir /"))?;
    Ok(())
}
