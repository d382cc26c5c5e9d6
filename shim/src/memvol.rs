//! Memory-backed pod volumes: a Kubernetes emptyDir with `medium: Memory` and the CRI
//! sandbox's `/dev/shm` are tmpfs mounts on the host that kubelet or containerd made for the
//! pod. Served over virtio-fs they would stay in host memory, outside the VM and its
//! accounting, and shared memory between two containers would go through FUSE. So such a
//! bind becomes a tmpfs in the guest instead (Kata calls it ephemeral storage): one per
//! volume, the same size and mode as the host's, mounted once by the agent and shared by
//! every container of the pod that names it. Its files live in guest RAM only, which is
//! what `medium: Memory` asks for.

use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};

use nix::sys::statfs::{statfs, TMPFS_MAGIC};
use nix::sys::statvfs::statvfs;

/// Parent of the guest mount points of memory-backed volumes.
pub(crate) const GUEST_VOLUMES_DIR: &str = "/run/hull/volumes";

/// A pod volume that lives in a guest tmpfs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MemoryVolume {
    /// Where the agent mounts the tmpfs; the container's bind source.
    pub(crate) guest_path: PathBuf,
    /// The host tmpfs's size.
    pub(crate) size_bytes: u64,
    /// The host directory's permission bits (emptyDir: 0777, containerd's shm: 01777).
    pub(crate) mode: u32,
}

impl MemoryVolume {
    /// Options of the guest tmpfs, as for mount(8) `-o`.
    pub(crate) fn tmpfs_options(&self) -> Vec<String> {
        vec![
            "nosuid".into(),
            "nodev".into(),
            format!("size={}", self.size_bytes),
            format!("mode={:o}", self.mode),
        ]
    }
}

/// The memory-backed volume behind a bind mount of host `source` at `destination`, if it is
/// one: a kubelet emptyDir or containerd's sandbox shm by its path, and on the host a tmpfs
/// mounted exactly there (a disk-backed emptyDir is a plain directory and stays on the share).
pub(crate) fn detect(source: &Path, destination: &str) -> Option<MemoryVolume> {
    if !(is_empty_dir(source) || is_sandbox_shm(source, destination)) {
        return None;
    }
    let fs = statfs(source).ok()?;
    if fs.filesystem_type() != TMPFS_MAGIC || !is_mount_point(source) {
        return None;
    }
    let vfs = statvfs(source).ok()?;
    let mode = std::fs::metadata(source).ok()?.mode() & 0o7777;
    Some(MemoryVolume {
        guest_path: Path::new(GUEST_VOLUMES_DIR).join(format!("{:016x}", fnv1a(source))),
        size_bytes: vfs.blocks().saturating_mul(vfs.fragment_size()),
        mode,
    })
}

/// `.../volumes/kubernetes.io~empty-dir/<name>` under kubelet's pod directory.
fn is_empty_dir(source: &Path) -> bool {
    let parent = source.parent().and_then(Path::file_name);
    parent.is_some_and(|p| p == "kubernetes.io~empty-dir")
        && !source
            .components()
            .any(|c| matches!(c, Component::ParentDir))
}

/// containerd's CRI sandbox shm, `<state>/io.containerd.grpc.v1.cri/sandboxes/<id>/shm`,
/// bound at `/dev/shm` for every container that shares the pod's IPC namespace.
fn is_sandbox_shm(source: &Path, destination: &str) -> bool {
    let sandboxes = source
        .parent()
        .and_then(Path::parent)
        .and_then(Path::file_name);
    destination.trim_end_matches('/') == "/dev/shm"
        && source.file_name().is_some_and(|n| n == "shm")
        && sandboxes.is_some_and(|n| n == "sandboxes")
}

/// A mount point is on another device than its parent directory.
fn is_mount_point(path: &Path) -> bool {
    let (Ok(me), Some(Ok(parent))) = (
        std::fs::metadata(path),
        path.parent().map(std::fs::metadata),
    ) else {
        return false;
    };
    me.dev() != parent.dev()
}

/// FNV-1a, 64 bits: a stable short name for a host path (the same in every shim build, unlike
/// std's hasher), so every container of the pod names the same guest tmpfs.
fn fnv1a(path: &Path) -> u64 {
    use std::os::unix::ffi::OsStrExt;
    path.as_os_str()
        .as_bytes()
        .iter()
        .fold(0xcbf2_9ce4_8422_2325, |h, b| {
            (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
        })
}

/// A kubelet-style emptyDir with medium Memory for tests: a tmpfs mounted (needs root) at
/// `<dir>/volumes/kubernetes.io~empty-dir/<name>` with mount options `opts`.
#[cfg(test)]
pub(crate) fn test_empty_dir(dir: &Path, name: &str, opts: &str) -> PathBuf {
    use nix::mount::{mount, MsFlags};
    let v = dir.join("volumes/kubernetes.io~empty-dir").join(name);
    std::fs::create_dir_all(&v).expect("mkdir");
    mount(
        Some("tmpfs"),
        &v,
        Some("tmpfs"),
        MsFlags::empty(),
        Some(opts),
    )
    .expect("mount tmpfs");
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_dir_and_sandbox_shm_are_recognised_by_path() {
        assert!(is_empty_dir(Path::new(
            "/var/lib/kubelet/pods/u1/volumes/kubernetes.io~empty-dir/cache"
        )));
        assert!(!is_empty_dir(Path::new(
            "/var/lib/kubelet/pods/u1/volumes/kubernetes.io~configmap/cfg"
        )));
        assert!(!is_empty_dir(Path::new("/kubernetes.io~empty-dir/../etc")));
        let shm = Path::new("/run/containerd/io.containerd.grpc.v1.cri/sandboxes/abc/shm");
        assert!(is_sandbox_shm(shm, "/dev/shm"));
        assert!(!is_sandbox_shm(shm, "/data"));
        assert!(!is_sandbox_shm(Path::new("/dev/shm"), "/dev/shm"));
    }

    #[test]
    fn names_are_stable_and_distinct() {
        let a = Path::new("/var/lib/kubelet/pods/u1/volumes/kubernetes.io~empty-dir/a");
        let b = Path::new("/var/lib/kubelet/pods/u1/volumes/kubernetes.io~empty-dir/b");
        assert_eq!(fnv1a(a), fnv1a(a));
        assert_ne!(fnv1a(a), fnv1a(b));
        // The published FNV-1a test vector: "a".
        assert_eq!(fnv1a(Path::new("a")), 0xaf63_dc4c_8601_ec8c);
    }

    #[test]
    fn a_plain_directory_is_not_a_memory_volume() {
        let dir = tempfile::tempdir().expect("tempdir");
        let v = dir.path().join("volumes/kubernetes.io~empty-dir/data");
        std::fs::create_dir_all(&v).expect("mkdir");
        // On whatever filesystem /tmp is, a directory made here is no mount point.
        assert_eq!(detect(&v, "/data"), None);
    }

    /// Needs root (CI runs as root): a tmpfs mounted at an emptyDir path is one.
    #[test]
    fn a_tmpfs_empty_dir_becomes_a_sized_guest_tmpfs() {
        use nix::mount::{umount2, MntFlags};
        let dir = tempfile::tempdir().expect("tempdir");
        let v = test_empty_dir(dir.path(), "data", "size=4m,mode=777");
        let got = detect(&v, "/data");
        umount2(&v, MntFlags::MNT_DETACH).expect("umount");
        let got = got.expect("a memory volume");
        assert_eq!(got.size_bytes, 4 << 20);
        assert_eq!(got.mode, 0o777);
        assert!(got.guest_path.starts_with(GUEST_VOLUMES_DIR));
        assert_eq!(
            got.tmpfs_options(),
            ["nosuid", "nodev", "size=4194304", "mode=777"]
        );
    }
}
