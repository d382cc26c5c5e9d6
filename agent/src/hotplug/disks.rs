//! `Guest.AttachDisk` and `Guest.DetachDisk`: binding a virtio-mmio slot the host filled with
//! a virtio-blk device, and unbinding it before the host takes the device out.
//!
//! Placeholder slots are declared on the kernel command line with device ID 0: the driver's
//! probe fails (ENODEV) at boot and leaves them unbound. Writing a slot's platform device
//! name to the driver's `bind` file probes it again; virtio-blk then registers the disk below
//! the slot, `/sys/bus/platform/devices/virtio-mmio.N/virtioM/block/vdX`, and devtmpfs makes
//! its `/dev` node. Writing the name to `unbind` removes the disk again; the agent refuses
//! while a file system of the disk is mounted in any mount namespace of the guest.

use std::collections::HashSet;
use std::ffi::OsStr;
use std::fs;
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::stat::{makedev, mknod, Mode, SFlag};

use super::iomem::{self, Slot};
use super::{errno, excerpt, read_capped, AttrWriter, Roots};
use crate::mountinfo;

/// The platform driver of virtio-mmio slots.
const DRIVER: &str = "virtio-mmio";
/// Below the sysfs root.
const DRIVER_DIR: &str = "bus/platform/drivers/virtio-mmio";
const DEVICES_DIR: &str = "bus/platform/devices";
/// A real /proc/iomem is a few KiB.
const IOMEM_CAP: usize = 1 << 20;
/// A sysfs attribute (`dev`, `device`) is a line.
const ATTR_CAP: usize = 4096;
/// One process's mount table; a larger one is refused rather than half read.
const MOUNTINFO_CAP: usize = 8 << 20;
/// Entries looked at in one sysfs directory (a slot's, a disk's): they have a few dozen.
const MAX_ENTRIES: usize = 256;
/// How long AttachDisk waits for the disk to appear after the bind.
pub(crate) const ATTACH_WAIT: Duration = Duration::from_secs(5);
const POLL: Duration = Duration::from_millis(10);
/// devtmpfs makes a disk's node just after its sysfs directory: how long to wait for it at
/// least, even when the disk took the whole [`ATTACH_WAIT`] to appear.
const NODE_GRACE: Duration = Duration::from_millis(500);
/// virtio device ID of a block device (virtio spec 5.2).
const VIRTIO_ID_BLOCK: u32 = 2;

/// Why AttachDisk or DetachDisk failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum DiskError {
    #[error("no device at MMIO base {base:#x}: no range of /proc/iomem starts there")]
    NoDevice { base: u64 },
    #[error("MMIO base {base:#x} is {name:?}, not a virtio-mmio device")]
    NotVirtioMmio { base: u64, name: String },
    #[error("{name} is in /proc/iomem but not in {}", dir.display())]
    NotInSysfs { name: String, dir: PathBuf },
    #[error("{name} is bound to driver {driver:?}, not {DRIVER}")]
    OtherDriver { name: String, driver: String },
    #[error("{name} holds a virtio {} device (ID {id}), not a block device", virtio_kind(*id))]
    NotABlockDevice { name: String, id: u32 },
    #[error("bind {name} to {DRIVER}: {errno}{}", if *empty { " (no device in the slot yet?)" } else { "" })]
    Bind {
        name: String,
        errno: String,
        /// ENODEV: the probe still read device ID 0.
        empty: bool,
    },
    #[error("{name} is bound, but {} within {waited:?}", if *virtio { "its virtio device registered no disk" } else { "no virtio device appeared" })]
    NoDisk {
        name: String,
        waited: Duration,
        virtio: bool,
    },
    #[error("/dev/{disk} ({}:{}) is mounted at {mount_point} (in the mount namespace of pid {pid}); unmount it first", dev.0, dev.1)]
    Mounted {
        disk: String,
        dev: (u32, u32),
        mount_point: String,
        pid: u32,
    },
    #[error("unbind {name} from {DRIVER}: {errno}")]
    Unbind { name: String, errno: String },
    #[error("read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{}: {what}", path.display())]
    Malformed { path: PathBuf, what: String },
    #[error("make device node {}: {errno}", path.display())]
    Node { path: PathBuf, errno: String },
}

fn virtio_kind(id: u32) -> &'static str {
    match id {
        1 => "network",
        2 => "block",
        3 => "console",
        4 => "entropy",
        5 => "balloon",
        19 => "vsock",
        24 => "memory",
        26 => "file system",
        _ => "other",
    }
}

/// A disk AttachDisk found, with its node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AttachedDisk {
    /// `/dev/vdX` (below [`Roots::dev`]).
    pub(crate) node: PathBuf,
    pub(crate) major: u32,
    pub(crate) minor: u32,
}

/// What DetachDisk did to the slot (its platform device name).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Detached {
    Unbound(String),
    /// It was not bound: nothing to do.
    NotBound(String),
}

/// Attach and detach of the guest's slots one at a time: an unbind must not run between
/// another call's bind and its wait.
fn one_at_a_time() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Binds the virtio-mmio slot whose MMIO window starts at `base` (unless it is bound), waits
/// up to `wait` for its disk and makes sure the disk's node exists. Calling it again for a
/// bound slot returns the same disk.
pub(crate) fn attach_disk(
    roots: &Roots,
    w: &dyn AttrWriter,
    base: u64,
    wait: Duration,
) -> Result<AttachedDisk, DiskError> {
    let _one = one_at_a_time();
    let start = Instant::now();
    let (name, dir) = slot(roots, base)?;
    match driver_of(&name, &dir)? {
        Driver::VirtioMmio => {}
        Driver::None => bind(roots, w, &name, &dir)?,
        Driver::Other(driver) => return Err(DiskError::OtherDriver { name, driver }),
    }
    let disk = loop {
        let virtio = match probe(&dir)? {
            Probe::Disk(d) => break d,
            Probe::NotBlock(id) => return Err(DiskError::NotABlockDevice { name, id }),
            Probe::Pending { virtio } => virtio,
        };
        if start.elapsed() >= wait {
            return Err(DiskError::NoDisk {
                name,
                waited: wait,
                virtio,
            });
        }
        std::thread::sleep(POLL);
    };
    let node = ensure_node(
        roots,
        &disk,
        (start + wait).max(Instant::now() + NODE_GRACE),
    )?;
    Ok(AttachedDisk {
        node,
        major: disk.dev.0,
        minor: disk.dev.1,
    })
}

/// Unbinds the virtio-mmio slot at `base` unless a file system of its disk (or of a
/// partition of it) is mounted in any mount namespace the agent can see. A slot that is not
/// bound is left as it is.
pub(crate) fn detach_disk(
    roots: &Roots,
    w: &dyn AttrWriter,
    base: u64,
) -> Result<Detached, DiskError> {
    let _one = one_at_a_time();
    let (name, dir) = slot(roots, base)?;
    match driver_of(&name, &dir)? {
        Driver::VirtioMmio => {}
        Driver::None => return Ok(Detached::NotBound(name)),
        Driver::Other(driver) => return Err(DiskError::OtherDriver { name, driver }),
    }
    match probe(&dir)? {
        // Never the vsock the agent itself talks over, nor the NIC.
        Probe::NotBlock(id) => return Err(DiskError::NotABlockDevice { name, id }),
        Probe::Disk(disk) => check_unmounted(roots, &disk)?,
        // Bound without a disk (yet): nothing of it can be mounted.
        Probe::Pending { .. } => {}
    }
    let unbind = roots.sys.join(DRIVER_DIR).join("unbind");
    tracing::info!(slot = %name, "hot-plug: unbinding disk slot");
    match w.write(&unbind, &name) {
        Ok(()) => Ok(Detached::Unbound(name)),
        // Unbound meanwhile (ENODEV from the driver core): what was asked for.
        Err(_) if matches!(driver_of(&name, &dir)?, Driver::None) => Ok(Detached::Unbound(name)),
        Err(e) => Err(DiskError::Unbind {
            name,
            errno: errno(&e),
        }),
    }
}

/// The slot's platform device name and its sysfs directory, from /proc/iomem.
fn slot(roots: &Roots, base: u64) -> Result<(String, PathBuf), DiskError> {
    let path = roots.proc.join("iomem");
    let text = read_capped(&path, IOMEM_CAP).map_err(|source| DiskError::Read { path, source })?;
    let name = match iomem::slot_at(&text, base) {
        Slot::VirtioMmio(name) => name.to_owned(),
        Slot::Other(name) => {
            return Err(DiskError::NotVirtioMmio {
                base,
                name: excerpt(name, 64),
            })
        }
        Slot::Missing => return Err(DiskError::NoDevice { base }),
    };
    let dir = roots.sys.join(DEVICES_DIR).join(&name);
    Ok((name, dir))
}

/// The driver a platform device is bound to.
#[derive(Debug, PartialEq, Eq)]
enum Driver {
    None,
    VirtioMmio,
    Other(String),
}

fn driver_of(name: &str, dir: &Path) -> Result<Driver, DiskError> {
    let link = dir.join("driver");
    match fs::read_link(&link) {
        Ok(target) if target.file_name() == Some(OsStr::new(DRIVER)) => Ok(Driver::VirtioMmio),
        Ok(target) => Ok(Driver::Other(excerpt(
            &target.file_name().unwrap_or_default().to_string_lossy(),
            64,
        ))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            if dir.is_dir() {
                Ok(Driver::None)
            } else {
                Err(DiskError::NotInSysfs {
                    name: name.to_owned(),
                    dir: dir.to_owned(),
                })
            }
        }
        Err(source) => Err(DiskError::Read { path: link, source }),
    }
}

/// Probes the slot again. Whatever the write says, a slot that is bound to virtio-mmio
/// afterwards is what was wanted (EBUSY: bound meanwhile).
fn bind(roots: &Roots, w: &dyn AttrWriter, name: &str, dir: &Path) -> Result<(), DiskError> {
    let path = roots.sys.join(DRIVER_DIR).join("bind");
    tracing::info!(slot = %name, "hot-plug: binding disk slot");
    match w.write(&path, name) {
        Ok(()) => Ok(()),
        Err(_) if driver_of(name, dir)? == Driver::VirtioMmio => Ok(()),
        Err(e) => Err(DiskError::Bind {
            name: name.to_owned(),
            errno: errno(&e),
            empty: e.raw_os_error() == Some(libc::ENODEV),
        }),
    }
}

/// A disk below a slot.
#[derive(Debug)]
struct Disk {
    /// `vdX`.
    name: String,
    dev: (u32, u32),
    /// Its sysfs directory.
    dir: PathBuf,
}

/// What a bound slot holds so far.
#[derive(Debug)]
enum Probe {
    Disk(Disk),
    /// A virtio device of another kind.
    NotBlock(u32),
    /// No disk (yet); `virtio`: the slot's virtio device is there.
    Pending {
        virtio: bool,
    },
}

fn probe(slot_dir: &Path) -> Result<Probe, DiskError> {
    let pending = |virtio| Ok(Probe::Pending { virtio });
    let Some(virtio) = first_entry(slot_dir, is_virtio_device_name)? else {
        return pending(false);
    };
    let virtio = slot_dir.join(virtio);
    let id_path = virtio.join("device");
    let Some(id) = read_attr(&id_path)? else {
        return pending(true);
    };
    let id = virtio_id(&id).ok_or_else(|| DiskError::Malformed {
        what: format!("not a virtio device ID: {:?}", excerpt(id.trim(), 32)),
        path: id_path,
    })?;
    if id != VIRTIO_ID_BLOCK {
        return Ok(Probe::NotBlock(id));
    }
    let block = virtio.join("block");
    let Some(name) = first_entry(&block, is_disk_name)? else {
        return pending(true);
    };
    let dir = block.join(&name);
    let Some(dev) = read_dev(&dir)? else {
        return pending(true);
    };
    Ok(Probe::Disk(Disk { name, dev, dir }))
}

/// The first of a directory's first [`MAX_ENTRIES`] entries whose name passes `want`;
/// `None` also for a directory that is not there (yet).
fn first_entry(dir: &Path, want: fn(&str) -> bool) -> Result<Option<String>, DiskError> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(DiskError::Read {
                path: dir.to_owned(),
                source,
            })
        }
    };
    Ok(entries
        .take(MAX_ENTRIES)
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().into_string().ok())
        .find(|n| want(n)))
}

/// An attribute's text; `None` if it is not there (yet).
fn read_attr(path: &Path) -> Result<Option<String>, DiskError> {
    match read_capped(path, ATTR_CAP) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(DiskError::Read {
            path: path.to_owned(),
            source,
        }),
    }
}

/// A block device's number from its sysfs directory's `dev`; `None` if it is not there.
fn read_dev(dir: &Path) -> Result<Option<(u32, u32)>, DiskError> {
    let path = dir.join("dev");
    let Some(text) = read_attr(&path)? else {
        return Ok(None);
    };
    mountinfo::parse_dev(&text)
        .map(Some)
        .ok_or_else(|| DiskError::Malformed {
            what: format!("not MAJ:MIN: {:?}", excerpt(text.trim(), 32)),
            path,
        })
}

/// `virtioN`: the virtio bus device below a bound slot.
fn is_virtio_device_name(n: &str) -> bool {
    n.strip_prefix("virtio")
        .is_some_and(|d| (1..=10).contains(&d.len()) && d.bytes().all(|b| b.is_ascii_digit()))
}

/// `vda` … `vdzzz`: how virtio-blk names its disks; the only names made into a `/dev` path.
fn is_disk_name(n: &str) -> bool {
    n.strip_prefix("vd")
        .is_some_and(|l| (1..=4).contains(&l.len()) && l.bytes().all(|b| b.is_ascii_lowercase()))
}

/// A virtio `device` attribute: `0x0002`.
fn virtio_id(text: &str) -> Option<u32> {
    let hex = text.trim().strip_prefix("0x")?;
    if hex.is_empty() || hex.len() > 8 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u32::from_str_radix(hex, 16).ok()
}

/// Fails if a file system of `disk` or of one of its partitions is mounted in the mount
/// namespace of any process. Each mount namespace is read once, through its lowest pid.
fn check_unmounted(roots: &Roots, disk: &Disk) -> Result<(), DiskError> {
    let mut devs = vec![disk.dev];
    devs.extend(partitions(disk)?);
    let entries = fs::read_dir(&roots.proc).map_err(|source| DiskError::Read {
        path: roots.proc.clone(),
        source,
    })?;
    let mut pids: Vec<u32> = entries
        .filter_map(Result::ok)
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            name.bytes()
                .all(|b| b.is_ascii_digit())
                .then(|| name.parse().ok())
                .flatten()
        })
        .collect();
    pids.sort_unstable();
    let mut seen = HashSet::new();
    for pid in pids {
        let dir = roots.proc.join(pid.to_string());
        let ns = fs::read_link(dir.join("ns/mnt")).ok();
        if ns.as_ref().is_some_and(|ns| seen.contains(ns)) {
            continue;
        }
        let path = dir.join("mountinfo");
        let text = match read_capped(&path, MOUNTINFO_CAP) {
            Ok(text) => text,
            // Exited since the listing, or a zombie (no mount namespace left to read).
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::ENOENT | libc::ESRCH | libc::EINVAL)
                ) || !dir.exists() =>
            {
                continue
            }
            Err(source) => return Err(DiskError::Read { path, source }),
        };
        if let Some(m) = text
            .lines()
            .filter_map(mountinfo::parse_line)
            .find(|m| devs.contains(&m.dev))
        {
            return Err(DiskError::Mounted {
                disk: disk.name.clone(),
                dev: m.dev,
                mount_point: excerpt(m.mount_point, 256),
                pid,
            });
        }
        // Only a namespace actually read counts as seen.
        seen.extend(ns);
    }
    Ok(())
}

/// The device numbers of a disk's partitions (`vdb1` … in its sysfs directory).
fn partitions(disk: &Disk) -> Result<Vec<(u32, u32)>, DiskError> {
    let entries = match fs::read_dir(&disk.dir) {
        Ok(entries) => entries,
        Err(source) => {
            return Err(DiskError::Read {
                path: disk.dir.clone(),
                source,
            })
        }
    };
    let mut devs = Vec::new();
    for entry in entries.take(MAX_ENTRIES).filter_map(Result::ok) {
        let Ok(n) = entry.file_name().into_string() else {
            continue;
        };
        let is_partition = n.strip_prefix(disk.name.as_str()).is_some_and(|p| {
            !p.is_empty() && p.len() <= 3 && p.bytes().all(|b| b.is_ascii_digit())
        });
        if is_partition {
            devs.extend(read_dev(&entry.path())?);
        }
    }
    Ok(devs)
}

/// What is at a disk's node path.
#[derive(Debug, PartialEq, Eq)]
enum NodeState {
    Right,
    Wrong,
    Missing,
}

fn node_state(node: &Path, rdev: u64) -> Result<NodeState, DiskError> {
    match fs::symlink_metadata(node) {
        Ok(m) if m.file_type().is_block_device() && m.rdev() == rdev => Ok(NodeState::Right),
        Ok(_) => Ok(NodeState::Wrong),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(NodeState::Missing),
        Err(source) => Err(DiskError::Read {
            path: node.to_owned(),
            source,
        }),
    }
}

/// The disk's `/dev` node: devtmpfs's, waited for until `until`, or made here when `/dev` is
/// not a devtmpfs or devtmpfs did not make it (a node of another device under the name is
/// replaced).
fn ensure_node(roots: &Roots, disk: &Disk, until: Instant) -> Result<PathBuf, DiskError> {
    let node = roots.dev.join(&disk.name);
    let rdev = makedev(u64::from(disk.dev.0), u64::from(disk.dev.1));
    if dev_is_devtmpfs(roots) {
        loop {
            if node_state(&node, rdev)? == NodeState::Right {
                return Ok(node);
            }
            if Instant::now() >= until {
                tracing::warn!(node = %node.display(), "hot-plug: devtmpfs made no node; making it");
                break;
            }
            std::thread::sleep(POLL);
        }
    }
    // Twice at most: devtmpfs may make the node between the look and the mknod.
    for _ in 0..2 {
        match node_state(&node, rdev)? {
            NodeState::Right => return Ok(node),
            NodeState::Wrong => match fs::remove_file(&node) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(DiskError::Node {
                        errno: errno(&e),
                        path: node,
                    })
                }
            },
            NodeState::Missing => {}
        }
        match mknod(&node, SFlag::S_IFBLK, Mode::from_bits_truncate(0o660), rdev) {
            Ok(()) => return Ok(node),
            Err(Errno::EEXIST) => {}
            Err(e) => {
                return Err(DiskError::Node {
                    errno: e.to_string(),
                    path: node,
                })
            }
        }
    }
    match node_state(&node, rdev)? {
        NodeState::Right => Ok(node),
        _ => Err(DiskError::Node {
            errno: "something else keeps taking the name".into(),
            path: node,
        }),
    }
}

/// Whether the agent's `/dev` (the last mount there) is a devtmpfs, which makes disk nodes
/// itself. Unknown counts as no: then the agent makes the node.
fn dev_is_devtmpfs(roots: &Roots) -> bool {
    let Some(dev) = roots.dev.to_str() else {
        return false;
    };
    read_capped(&roots.proc.join("self/mountinfo"), MOUNTINFO_CAP).is_ok_and(|text| {
        text.lines()
            .rev()
            .filter_map(mountinfo::parse_line)
            .find(|m| m.mount_point == dev)
            .is_some_and(|m| m.fstype == "devtmpfs")
    })
}

#[cfg(test)]
#[path = "disks_tests.rs"]
mod tests;
