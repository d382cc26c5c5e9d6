//! Builds the container's root file system inside its new mount namespace: propagation, the
//! spec's mounts, /dev, pivot_root, /dev/console, read-only root, read-only and masked paths.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::mount::MsFlags;
use nix::sys::stat::{makedev, Mode, SFlag};

use super::syscall::{Mount, Syscall};
use crate::engine::paths::secure_join;
use crate::engine::plan::{DevicePlan, MountPlan, RootfsPlan};

/// A setup step that failed.
#[derive(Debug, thiserror::Error)]
#[error("{step}: {source}")]
pub(crate) struct RootfsError {
    step: String,
    #[source]
    source: std::io::Error,
}

fn err(step: impl Into<String>) -> impl FnOnce(Errno) -> RootfsError {
    let step = step.into();
    move |e| RootfsError {
        step,
        source: std::io::Error::from(e),
    }
}

fn io_err(step: impl Into<String>) -> impl FnOnce(std::io::Error) -> RootfsError {
    let step = step.into();
    move |source| RootfsError { step, source }
}

/// Everything before pivot_root; `sys` performs the mounts.
pub(crate) fn prepare(sys: &dyn Syscall, plan: &RootfsPlan) -> Result<(), RootfsError> {
    let prop = MsFlags::from_bits_truncate(plan.propagation);
    sys.mount(&Mount::change(Path::new("/"), prop))
        .map_err(err("set propagation of /"))?;
    // pivot_root needs the new root to be a mount point.
    sys.mount(&Mount::bind(&plan.root, &plan.root, MsFlags::MS_REC))
        .map_err(err(format!("bind rootfs {:?}", plan.root)))?;
    for m in &plan.mounts {
        mount_one(sys, &plan.root, m)?;
    }
    if plan
        .mounts
        .iter()
        .any(|m| m.destination == Path::new("/dev"))
    {
        for d in &plan.devices {
            make_device(sys, &plan.root, d)?;
        }
        dev_links(&plan.root);
    }
    Ok(())
}

fn mount_one(sys: &dyn Syscall, root: &Path, m: &MountPlan) -> Result<(), RootfsError> {
    let target = secure_join(root, &m.destination).map_err(io_err(format!(
        "resolve mount destination {:?}",
        m.destination
    )))?;
    let flags = MsFlags::from_bits_truncate(m.flags);
    let data = (!m.data.is_empty()).then_some(m.data.as_str());
    let step = format!("mount {} on {:?}", m.fstype, m.destination);
    if m.fstype == "bind" {
        let source = m.source.clone().unwrap_or_default();
        if source.is_dir() {
            fs::create_dir_all(&target).map_err(io_err(&step))?;
        } else {
            if let Some(parent) = target.parent() {
                fs::create_dir_all(parent).map_err(io_err(&step))?;
            }
            if fs::symlink_metadata(&target).is_err() {
                fs::write(&target, b"").map_err(io_err(&step))?;
            }
        }
        sys.mount(&Mount {
            data,
            ..Mount::bind(&source, &target, flags & MsFlags::MS_REC)
        })
        .map_err(err(&step))?;
        // Bind mounts ignore other flags on the first call: remount to apply ro, nosuid...
        let rest = flags & !(MsFlags::MS_BIND | MsFlags::MS_REC | MsFlags::MS_REMOUNT);
        if !rest.is_empty() {
            sys.mount(&Mount::change(
                &target,
                rest | MsFlags::MS_BIND | MsFlags::MS_REMOUNT,
            ))
            .map_err(err(format!("{step} (remount)")))?;
        }
    } else {
        fs::create_dir_all(&target).map_err(io_err(&step))?;
        let source = m.source.clone().unwrap_or_else(|| PathBuf::from(&m.fstype));
        let fresh = Mount {
            source: Some(&source),
            target: &target,
            fstype: Some(&m.fstype),
            flags,
            data,
        };
        match sys.mount(&fresh) {
            Ok(()) => {}
            // Without its own network namespace a container may not mount a fresh sysfs;
            // runc binds the agent's instead.
            Err(Errno::EPERM) if m.fstype == "sysfs" => {
                sys.mount(&Mount::bind(Path::new("/sys"), &target, MsFlags::MS_REC))
                    .map_err(err(&step))?;
                sys.mount(&Mount::change(
                    &target,
                    flags | MsFlags::MS_BIND | MsFlags::MS_REMOUNT,
                ))
                .map_err(err(&step))?;
            }
            Err(e) => return Err(err(step)(e)),
        }
    }
    if m.propagation != 0 {
        sys.mount(&Mount::change(
            &target,
            MsFlags::from_bits_truncate(m.propagation),
        ))
        .map_err(err(format!("set propagation of {:?}", m.destination)))?;
    }
    Ok(())
}

fn make_device(sys: &dyn Syscall, root: &Path, d: &DevicePlan) -> Result<(), RootfsError> {
    let target =
        secure_join(root, &d.path).map_err(io_err(format!("resolve device {:?}", d.path)))?;
    if let Some(parent) = target.parent() {
        fs::create_dir_all(parent).map_err(io_err(format!("device {:?}", d.path)))?;
    }
    let _ = fs::remove_file(&target);
    let kind = match d.kind {
        'b' => SFlag::S_IFBLK,
        'p' => SFlag::S_IFIFO,
        _ => SFlag::S_IFCHR,
    };
    sys.mknod(
        &target,
        kind,
        Mode::from_bits_truncate(d.mode),
        makedev(d.major, d.minor),
    )
    .map_err(err(format!("mknod {:?}", d.path)))?;
    // mknod applies the umask; devices get exactly the mode asked for.
    nix::sys::stat::fchmodat(
        nix::fcntl::AT_FDCWD,
        &target,
        Mode::from_bits_truncate(d.mode),
        nix::sys::stat::FchmodatFlags::FollowSymlink,
    )
    .map_err(err(format!("chmod {:?}", d.path)))?;
    nix::unistd::chown(
        &target,
        Some(nix::unistd::Uid::from_raw(d.uid)),
        Some(nix::unistd::Gid::from_raw(d.gid)),
    )
    .map_err(err(format!("chown {:?}", d.path)))?;
    Ok(())
}

fn dev_links(root: &Path) {
    for (link, target) in [
        ("dev/fd", "/proc/self/fd"),
        ("dev/stdin", "/proc/self/fd/0"),
        ("dev/stdout", "/proc/self/fd/1"),
        ("dev/stderr", "/proc/self/fd/2"),
        ("dev/ptmx", "pts/ptmx"),
        ("dev/core", "/proc/kcore"),
    ] {
        let _ = symlink(target, root.join(link));
    }
}

/// Makes the prepared root the process's `/`.
pub(crate) fn pivot(sys: &dyn Syscall, plan: &RootfsPlan) -> Result<(), RootfsError> {
    sys.pivot_root(&plan.root).map_err(err("pivot_root"))
}

/// Binds the terminal's slave (a path in the container's /dev/pts) on /dev/console, as runc
/// does; after [`pivot`], before [`finalize`] may make / read-only.
pub(crate) fn bind_console(sys: &dyn Syscall, slave: &Path) -> Result<(), RootfsError> {
    let target = Path::new("/dev/console");
    if fs::symlink_metadata(target).is_err() {
        fs::write(target, b"").map_err(io_err("create /dev/console"))?;
    }
    sys.mount(&Mount::bind(slave, target, MsFlags::empty()))
        .map_err(err("bind the terminal on /dev/console"))
}

/// The last step of the rootfs proper (runc's finalizeRootfs): a read-only `/`.
pub(crate) fn finalize(sys: &dyn Syscall, plan: &RootfsPlan) -> Result<(), RootfsError> {
    if plan.readonly {
        sys.mount(&Mount::change(
            Path::new("/"),
            MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
        ))
        .map_err(err("remount / read-only"))?;
    }
    Ok(())
}

/// The spec's read-only paths, then its masked paths (runc's order), after the sysctls: CRI makes
/// /proc/sys read-only, and the sysctls are written through it.
pub(crate) fn protect_paths(sys: &dyn Syscall, plan: &RootfsPlan) -> Result<(), RootfsError> {
    for p in &plan.readonly_paths {
        make_readonly(sys, p)?;
    }
    for p in &plan.masked_paths {
        mask(sys, p)?;
    }
    Ok(())
}

fn mask(sys: &dyn Syscall, p: &Path) -> Result<(), RootfsError> {
    let step = format!("mask {p:?}");
    match fs::metadata(p) {
        Err(_) => Ok(()),
        Ok(m) if m.is_dir() => sys
            .mount(&Mount {
                source: Some(Path::new("tmpfs")),
                fstype: Some("tmpfs"),
                ..Mount::change(p, MsFlags::MS_RDONLY)
            })
            .map_err(err(step)),
        Ok(_) => sys
            .mount(&Mount::bind(Path::new("/dev/null"), p, MsFlags::empty()))
            .map_err(err(step)),
    }
}

fn make_readonly(sys: &dyn Syscall, p: &Path) -> Result<(), RootfsError> {
    if fs::symlink_metadata(p).is_err() {
        return Ok(());
    }
    let step = format!("make {p:?} read-only");
    sys.mount(&Mount::bind(p, p, MsFlags::MS_REC))
        .map_err(err(&step))?;
    sys.mount(&Mount::change(
        p,
        MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | MsFlags::MS_REC,
    ))
    .map_err(err(step))
}

#[cfg(test)]
mod tests {
    use super::super::syscall::Recorder;
    use super::*;

    #[test]
    fn binds_root_then_mounts_in_order_and_remounts_ro_binds() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        fs::create_dir_all(&root).unwrap();
        let plan = RootfsPlan {
            root: root.clone(),
            readonly: false,
            propagation: (MsFlags::MS_SLAVE | MsFlags::MS_REC).bits(),
            mounts: vec![
                MountPlan {
                    destination: "/proc".into(),
                    fstype: "proc".into(),
                    source: None,
                    flags: 0,
                    propagation: 0,
                    data: String::new(),
                },
                MountPlan {
                    destination: "/data".into(),
                    fstype: "bind".into(),
                    source: Some(dir.path().to_path_buf()),
                    flags: (MsFlags::MS_BIND | MsFlags::MS_RDONLY).bits(),
                    propagation: 0,
                    data: String::new(),
                },
            ],
            devices: vec![],
            masked_paths: vec![],
            readonly_paths: vec![],
        };
        let rec = Recorder::default();
        prepare(&rec, &plan).unwrap();
        let log = rec.0.borrow();
        assert!(log[0].contains("MS_SLAVE"), "{log:?}");
        assert!(log[1].contains("MS_BIND") && log[1].contains(&root.display().to_string()));
        assert!(log[2].contains("proc"));
        assert!(log[3].contains("data") && log[3].contains("MS_BIND"));
        assert!(
            log[4].contains("MS_REMOUNT") && log[4].contains("MS_RDONLY"),
            "{log:?}"
        );
        assert!(root.join("proc").is_dir() && root.join("data").is_dir());
    }
}
