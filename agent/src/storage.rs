//! Storages the shim names (proto `Storage`): mounted by the agent in its own mount namespace
//! before a sandbox or container uses them, unmounted when their owner goes.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use hull_proto::common::storage::Driver;
use hull_proto::common::Storage;
use nix::mount::{MntFlags, MsFlags};

use crate::engine::paths::{clean_absolute, secure_join};
use crate::engine::{mountopt, EngineError, Result};
use crate::mountinfo::parse_line;

/// virtio-fs tag of the pod share the VMM exposes.
pub(crate) use hull_contract::SHARE_FS_TAG as SHARE_TAG;

/// Where storages come from.
#[derive(Debug, Clone)]
pub struct StorageConfig {
    /// Root of the pod's virtio-fs share (mounted on first use unless `share_premounted`).
    pub share_dir: PathBuf,
    pub share_premounted: bool,
}

fn invalid(msg: String) -> EngineError {
    EngineError::InvalidArgument(msg)
}

/// Mounts the pod share once. Mounting tag `hull` again does not fail with EBUSY: virtiofs
/// reuses a superblock of the same connection (with `--announce-submounts`, possibly a
/// submount's, e.g. the sandbox's /dev/shm tmpfs) and stacks it on the share, hiding every
/// container's rootfs below. So the mount table decides, under a lock against two Creates.
fn ensure_share(cfg: &StorageConfig) -> Result<()> {
    static SHARE: std::sync::Mutex<()> = std::sync::Mutex::new(());
    if cfg.share_premounted {
        return Ok(());
    }
    let _guard = SHARE.lock().unwrap_or_else(|p| p.into_inner());
    let mountinfo = fs::read_to_string("/proc/self/mountinfo")
        .map_err(|e| EngineError::io("read /proc/self/mountinfo", e))?;
    if share_mounted(&mountinfo, &cfg.share_dir) {
        return Ok(());
    }
    fs::create_dir_all(&cfg.share_dir).map_err(|e| EngineError::io("create share dir", e))?;
    // Neither nosuid nor nodev: the share carries the container rootfs and bind sources, and
    // its flags reach every bind of it and every submount virtio-fs announces in it. With
    // nosuid a setuid-root binary or a file capability of an image would run unprivileged,
    // unlike on runc, where the rootfs has neither flag; a container's mounts get the flags
    // its spec asks for, and no_new_privs still blocks setuid where the spec sets it.
    nix::mount::mount(
        Some(SHARE_TAG),
        &cfg.share_dir,
        Some("virtiofs"),
        MsFlags::empty(),
        None::<&str>,
    )
    .map_err(|e| {
        EngineError::FailedPrecondition(format!(
            "mount virtio-fs share {SHARE_TAG:?} on {:?}: {e}",
            cfg.share_dir
        ))
    })
}

/// Whether `mountinfo` has virtio-fs tag `hull` mounted at `dir`.
fn share_mounted(mountinfo: &str, dir: &Path) -> bool {
    mountinfo
        .lines()
        .filter_map(parse_line)
        .any(|m| Path::new(m.mount_point) == dir && m.fstype == "virtiofs" && m.source == SHARE_TAG)
}

fn block_device_by_serial(serial: &str) -> Result<PathBuf> {
    // An empty serial would match every disk that has none (loop devices, for a start).
    if serial.is_empty() {
        return Err(invalid(
            "block storage needs the disk's serial as source".into(),
        ));
    }
    for entry in fs::read_dir("/sys/block").map_err(|e| EngineError::io("list /sys/block", e))? {
        let Ok(entry) = entry else { continue };
        let Ok(s) = fs::read_to_string(entry.path().join("serial")) else {
            continue;
        };
        if s.trim() == serial {
            return Ok(Path::new("/dev").join(entry.file_name()));
        }
    }
    Err(EngineError::NotFound(format!(
        "no block device with serial {serial:?}"
    )))
}

/// Storages mounted, by mount point: the storage and how many owners use it. Containers of a
/// pod can name the same storage (a memory-backed volume both mount, the sandbox's /dev/shm):
/// the first mounts it, the last to go unmounts it, and everyone sees the same files.
static MOUNTED: std::sync::Mutex<BTreeMap<PathBuf, (Storage, usize)>> =
    std::sync::Mutex::new(BTreeMap::new());

fn mounted() -> std::sync::MutexGuard<'static, BTreeMap<PathBuf, (Storage, usize)>> {
    MOUNTED.lock().unwrap_or_else(|p| p.into_inner())
}

/// Mounts one storage, or takes one more reference to the same storage already mounted at
/// its mount point; returns the mount point. A different storage at a mount point in use is
/// an error: stacking it would hide the first owner's files.
pub(crate) fn mount(cfg: &StorageConfig, s: &Storage) -> Result<PathBuf> {
    let target = clean_absolute(Path::new(&s.mount_point), "storage mount_point")?;
    // Held across the mount: two Creates naming one storage must not both mount it.
    let mut table = mounted();
    if let Some((first, users)) = table.get_mut(&target) {
        if first != s {
            return Err(invalid(format!(
                "storage mount point {target:?} is in use by another storage"
            )));
        }
        *users += 1;
        return Ok(target);
    }
    mount_new(cfg, s, &target)?;
    table.insert(target.clone(), (s.clone(), 1));
    Ok(target)
}

fn mount_new(cfg: &StorageConfig, s: &Storage, target: &Path) -> Result<()> {
    let target = target.to_path_buf();
    let mut fs_group = None;
    for (k, v) in &s.driver_options {
        match k.as_str() {
            "fs_group" => {
                fs_group = Some(
                    v.parse::<u32>()
                        .map_err(|_| invalid(format!("fs_group {v:?} is not a gid")))?,
                )
            }
            _ => return Err(invalid(format!("unknown storage driver option {k:?}"))),
        }
    }
    let opts = mountopt::parse(&s.options);
    let mut flags = opts.flags;
    if s.read_only {
        flags |= MsFlags::MS_RDONLY;
    }
    let data = opts.data.join(",");
    let data = (!data.is_empty()).then_some(data.as_str());
    let driver = s
        .driver
        .enum_value()
        .map_err(|v| invalid(format!("unknown storage driver {v}")))?;
    let (source, fstype, bind): (PathBuf, String, bool) = match driver {
        Driver::UNSPECIFIED => return Err(invalid("storage driver not set".into())),
        Driver::VIRTIOFS => {
            ensure_share(cfg)?;
            let src = secure_join(&cfg.share_dir, Path::new(&s.source))
                .map_err(|e| EngineError::io("resolve share path", e))?;
            if !src.exists() {
                return Err(EngineError::NotFound(format!(
                    "share path {:?} does not exist",
                    s.source
                )));
            }
            (src, String::new(), true)
        }
        Driver::TMPFS | Driver::EPHEMERAL => ("tmpfs".into(), "tmpfs".into(), false),
        Driver::BLOCK => {
            let fstype = if s.fstype.is_empty() {
                "ext4".to_owned()
            } else {
                s.fstype.clone()
            };
            (block_device_by_serial(&s.source)?, fstype, false)
        }
        Driver::BIND => {
            let src = clean_absolute(Path::new(&s.source), "bind storage source")?;
            if !src.exists() {
                return Err(EngineError::NotFound(format!(
                    "bind source {src:?} does not exist"
                )));
            }
            (src, String::new(), true)
        }
    };
    if bind && !source.is_dir() {
        if let Some(p) = target.parent() {
            fs::create_dir_all(p).map_err(|e| EngineError::io("create mount point", e))?;
        }
        if !target.exists() {
            fs::write(&target, b"").map_err(|e| EngineError::io("create mount point", e))?;
        }
    } else {
        fs::create_dir_all(&target).map_err(|e| EngineError::io("create mount point", e))?;
    }
    let fail = |e: nix::errno::Errno| {
        EngineError::FailedPrecondition(format!("mount storage {:?} on {target:?}: {e}", s.source))
    };
    if bind {
        nix::mount::mount(
            Some(&source),
            &target,
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None::<&str>,
        )
        .map_err(fail)?;
        let rest = flags & !(MsFlags::MS_BIND | MsFlags::MS_REC);
        if !rest.is_empty() {
            nix::mount::mount(
                None::<&str>,
                &target,
                None::<&str>,
                rest | MsFlags::MS_BIND | MsFlags::MS_REMOUNT,
                None::<&str>,
            )
            .map_err(|e| {
                detach(&target);
                fail(e)
            })?;
        }
    } else {
        nix::mount::mount(Some(&source), &target, Some(fstype.as_str()), flags, data)
            .map_err(fail)?;
    }
    if let Some(gid) = fs_group {
        let _ = nix::unistd::chown(&target, None, Some(nix::unistd::Gid::from_raw(gid)));
    }
    Ok(())
}

/// Mounts every storage in order; on failure unmounts those already done.
pub(crate) fn mount_all(cfg: &StorageConfig, storages: &[Storage]) -> Result<Vec<PathBuf>> {
    let mut done = Vec::new();
    for s in storages {
        match mount(cfg, s) {
            Ok(p) => done.push(p),
            Err(e) => {
                for p in done.iter().rev() {
                    unmount(p);
                }
                return Err(e);
            }
        }
    }
    Ok(done)
}

/// Drops one reference to the storage at `path`; the last one detaches the mount. Errors are
/// logged, not returned (cleanup must go on).
pub(crate) fn unmount(path: &Path) {
    let mut table = mounted();
    if let Some((_, users)) = table.get_mut(path) {
        if *users > 1 {
            *users -= 1;
            return;
        }
        table.remove(path);
    }
    drop(table);
    detach(path);
}

fn detach(path: &Path) {
    if let Err(e) = nix::mount::umount2(path, MntFlags::MNT_DETACH) {
        tracing::warn!("unmount {path:?}: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_share_counts_as_mounted_only_as_virtiofs_hull_at_its_dir() {
        let info = "\
22 1 0:20 / /proc rw,nosuid shared:5 - proc proc rw
40 30 0:31 / /run/hull/shared rw,nosuid,nodev - virtiofs hull rw
41 40 0:32 / /run/hull/shared/containers/c1/rootfs rw - virtiofs hull rw
";
        assert!(share_mounted(info, Path::new("/run/hull/shared")));
        assert!(!share_mounted(info, Path::new("/run/hull")));
        let other = "40 30 0:31 / /run/hull/shared rw - tmpfs tmpfs rw\n";
        assert!(!share_mounted(other, Path::new("/run/hull/shared")));
        assert!(!share_mounted("garbage\n", Path::new("/run/hull/shared")));
    }

    /// Needs root (CI runs as root): mounts a tmpfs in a temporary directory.
    #[test]
    fn a_storage_named_twice_is_mounted_once_and_goes_with_its_last_owner() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cfg = StorageConfig {
            share_dir: "/nonexistent".into(),
            share_premounted: true,
        };
        let point = dir.path().join("shm");
        let s = Storage {
            driver: Driver::TMPFS.into(),
            source: "tmpfs".into(),
            options: vec!["size=1m".into()],
            mount_point: point.display().to_string(),
            ..Default::default()
        };
        assert_eq!(mount(&cfg, &s).expect("first"), point);
        fs::write(point.join("f"), b"x").expect("write");
        assert_eq!(mount(&cfg, &s).expect("second"), point);
        // The second owner sees the first one's file: one tmpfs, not two stacked.
        assert!(point.join("f").exists());
        let other = Storage {
            options: vec!["size=2m".into()],
            ..s.clone()
        };
        let e = mount(&cfg, &other).unwrap_err();
        assert_eq!(e.code(), crate::engine::ErrorCode::InvalidArgument, "{e}");
        unmount(&point);
        assert!(point.join("f").exists(), "unmounted with an owner left");
        unmount(&point);
        assert!(
            !point.join("f").exists(),
            "still mounted after the last owner"
        );
    }

    #[test]
    fn block_storage_without_serial_is_invalid() {
        let cfg = StorageConfig {
            share_dir: "/nonexistent".into(),
            share_premounted: true,
        };
        let s = Storage {
            driver: Driver::BLOCK.into(),
            mount_point: "/nonexistent/rootfs".into(),
            ..Default::default()
        };
        let e = mount(&cfg, &s).unwrap_err();
        assert_eq!(e.code(), crate::engine::ErrorCode::InvalidArgument, "{e}");
    }
}
