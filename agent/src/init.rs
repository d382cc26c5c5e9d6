//! PID 1 duties that must happen before anything else: the pseudo file systems every
//! container and the agent itself rely on.
//!
//! A failed mount is reported, not fatal: an agent that is up without, say, `/dev/shm` can
//! still answer health checks and say what is wrong, while an init that exits panics the guest.

use std::fs;
use std::path::Path;

use nix::errno::Errno;
use nix::mount::{mount, MsFlags};

/// One pseudo file system mounted at boot.
#[derive(Debug, Clone, Copy)]
struct InitMount {
    fstype: &'static str,
    target: &'static str,
    flags: MsFlags,
    data: Option<&'static str>,
}

const NOSUID_NODEV_NOEXEC: MsFlags = MsFlags::MS_NOSUID
    .union(MsFlags::MS_NODEV)
    .union(MsFlags::MS_NOEXEC);

/// Order matters: /dev before /dev/pts, /sys before /sys/fs/cgroup.
const INIT_MOUNTS: &[InitMount] = &[
    InitMount {
        fstype: "proc",
        target: "/proc",
        flags: NOSUID_NODEV_NOEXEC,
        data: None,
    },
    InitMount {
        fstype: "sysfs",
        target: "/sys",
        flags: NOSUID_NODEV_NOEXEC,
        data: None,
    },
    InitMount {
        fstype: "devtmpfs",
        target: "/dev",
        flags: MsFlags::MS_NOSUID,
        data: Some("mode=0755"),
    },
    InitMount {
        fstype: "devpts",
        target: "/dev/pts",
        flags: MsFlags::MS_NOSUID.union(MsFlags::MS_NOEXEC),
        data: Some("newinstance,ptmxmode=0666,mode=0620,gid=5"),
    },
    InitMount {
        fstype: "tmpfs",
        target: "/dev/shm",
        flags: NOSUID_NODEV_NOEXEC,
        data: Some("mode=1777"),
    },
    InitMount {
        fstype: "cgroup2",
        target: "/sys/fs/cgroup",
        flags: NOSUID_NODEV_NOEXEC,
        data: Some("nsdelegate"),
    },
    InitMount {
        fstype: "tmpfs",
        target: "/run",
        flags: MsFlags::MS_NOSUID.union(MsFlags::MS_NODEV),
        data: Some("mode=0755"),
    },
    InitMount {
        fstype: "tmpfs",
        target: "/tmp",
        flags: MsFlags::MS_NOSUID.union(MsFlags::MS_NODEV),
        data: Some("mode=1777"),
    },
];

/// A pseudo file system that could not be mounted.
#[derive(Debug, thiserror::Error)]
#[error("mount {fstype} on {target}: {source}")]
pub struct InitMountError {
    fstype: &'static str,
    target: &'static str,
    #[source]
    source: Errno,
}

/// Mounts every pseudo file system of [`INIT_MOUNTS`], skipping those already mounted, and
/// returns the ones that failed.
pub fn mount_pseudo_filesystems() -> Vec<InitMountError> {
    INIT_MOUNTS
        .iter()
        .filter_map(|m| do_mount(m).err())
        .collect()
}

fn do_mount(m: &InitMount) -> Result<(), InitMountError> {
    let err = |source| InitMountError {
        fstype: m.fstype,
        target: m.target,
        source,
    };
    fs::create_dir_all(m.target)
        .map_err(|e| err(e.raw_os_error().map_or(Errno::EIO, Errno::from_raw)))?;
    match mount(
        Some(m.fstype),
        Path::new(m.target),
        Some(m.fstype),
        m.flags,
        m.data,
    ) {
        // EBUSY: the kernel or a previous stage mounted it already.
        Ok(()) | Err(Errno::EBUSY) => {}
        Err(e) => return Err(err(e)),
    }
    if m.target == "/dev" {
        dev_symlinks();
    }
    Ok(())
}

/// The /dev links a devtmpfs lacks but programs expect. Existing entries are kept: devtmpfs
/// may already provide a `ptmx` node, which serves as well as the link.
fn dev_symlinks() {
    for (link, target) in [
        ("/dev/fd", "/proc/self/fd"),
        ("/dev/stdin", "/proc/self/fd/0"),
        ("/dev/stdout", "/proc/self/fd/1"),
        ("/dev/stderr", "/proc/self/fd/2"),
        ("/dev/ptmx", "pts/ptmx"),
    ] {
        let _ = std::os::unix::fs::symlink(target, link);
    }
}
