//! The pod's virtio-fs share on the host (DESIGN §1 Rootfs and volumes, after Kata's
//! `share_fs`): what virtiofsd serves to the guest, and how container rootfs and bind-mount
//! sources get into it.
//!
//! ```text
//! <pod dir>/share-rw    bind-mounted onto itself, made a shared peer group; the shim mounts
//!                       into it: containers/<cid>/rootfs, containers/<cid>/mounts/<n>
//! <pod dir>/shared      bind of share-rw, remounted read-only, made a slave: virtiofsd's
//!                       --shared-dir. Mounts added under share-rw later propagate in.
//! <pod dir>/staging     a private mount where binds are made before they move in
//! ```
//! The guest cannot write at the share root, and each submount keeps its own flags: a rootfs
//! is read-write; a bind the spec marks `ro` must already be read-only when it enters
//! share-rw, because a later read-only remount does not propagate to the copies in `shared`
//! and in virtiofsd's namespace. So it is bound and made read-only, submounts included, in
//! `staging` (private: a mount under a shared parent cannot be moved), then moved into
//! share-rw, which propagates read-only copies. Every bind goes through `staging`, where it
//! also leaves the host source's peer group ([`Share::bind_mount`]): its unmount would
//! propagate back to the host.
//! Propagation is set explicitly, never inherited from `/run`: in the lab `/run` is a private
//! tmpfs.

use std::ffi::CString;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::mount::{mount, MsFlags};

use crate::mount::detach;

/// Where the agent mounts the share in the guest (agent's `--root`/shared default).
pub(crate) const GUEST_SHARE_DIR: &str = "/run/hull/shared";
/// Parent of the container rootfs mount points in the guest.
pub(crate) const GUEST_CONTAINERS_DIR: &str = "/run/hull/containers";

#[derive(Debug, thiserror::Error)]
pub(crate) enum ShareError {
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{what} {path}: {source}")]
    Mount {
        what: &'static str,
        path: PathBuf,
        source: nix::errno::Errno,
    },
    #[error("bind source {0} does not exist on the host")]
    MissingSource(PathBuf),
}

fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> ShareError {
    let path = path.to_path_buf();
    move |source| ShareError::Io { what, path, source }
}

fn do_mount(
    what: &'static str,
    src: Option<&Path>,
    target: &Path,
    flags: MsFlags,
) -> Result<(), ShareError> {
    mount(src, target, None::<&str>, flags, None::<&str>).map_err(|source| ShareError::Mount {
        what,
        path: target.to_path_buf(),
        source,
    })
}

/// Makes the mount at `target` and every mount under it read-only: `mount_setattr(2)` with
/// `AT_RECURSIVE` (Linux 5.12+). A `MS_REMOUNT | MS_RDONLY` remount reaches only the top
/// mount and left the source's submounts writable in the guest. A kernel without the call is
/// an error, never a silently writable submount. Mounts that the host adds under a slave bind
/// later arrive with their own flags.
fn read_only_recursive(target: &Path) -> Result<(), ShareError> {
    let err = |source| ShareError::Mount {
        what: "make read-only with its submounts (mount_setattr, Linux 5.12+)",
        path: target.to_path_buf(),
        source,
    };
    let path = CString::new(target.as_os_str().as_bytes()).map_err(|_| err(Errno::EINVAL))?;
    let attr = libc::mount_attr {
        attr_set: libc::MOUNT_ATTR_RDONLY,
        attr_clr: 0,
        propagation: 0,
        userns_fd: 0,
    };
    // SAFETY: mount_setattr(2) reads a NUL-terminated path that `path` keeps alive and
    // `size_of::<mount_attr>()` bytes of `attr`, a plain struct on the stack; it writes nothing.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            libc::AT_FDCWD,
            path.as_ptr(),
            libc::AT_RECURSIVE | libc::AT_SYMLINK_NOFOLLOW,
            &raw const attr,
            std::mem::size_of::<libc::mount_attr>(),
        )
    };
    if ret == 0 {
        Ok(())
    } else {
        Err(err(Errno::last()))
    }
}

/// One pod's share directories.
#[derive(Debug, Clone)]
pub(crate) struct Share {
    rw: PathBuf,
    ro: PathBuf,
    staging: PathBuf,
}

impl Share {
    /// The share of the pod whose state lives in `pod_dir` (no filesystem access).
    pub(crate) fn at(pod_dir: &Path) -> Self {
        Share {
            rw: pod_dir.join("share-rw"),
            ro: pod_dir.join("shared"),
            staging: pod_dir.join("staging"),
        }
    }

    /// What virtiofsd serves.
    pub(crate) fn served_dir(&self) -> &Path {
        &self.ro
    }

    /// Creates both directories and their mounts; undone by [`Share::destroy`].
    pub(crate) fn create(&self) -> Result<(), ShareError> {
        for d in [&self.rw, &self.ro, &self.staging] {
            fs::create_dir_all(d).map_err(io("create", d))?;
        }
        let rw = &self.rw;
        let ro = &self.ro;
        let st = &self.staging;
        let steps = || -> Result<(), ShareError> {
            do_mount("bind", Some(st), st, MsFlags::MS_BIND)?;
            do_mount("make private", None, st, MsFlags::MS_PRIVATE)?;
            do_mount("bind", Some(rw), rw, MsFlags::MS_BIND)?;
            do_mount("make private", None, rw, MsFlags::MS_PRIVATE)?;
            do_mount("make shared", None, rw, MsFlags::MS_SHARED)?;
            do_mount("bind", Some(rw), ro, MsFlags::MS_BIND)?;
            do_mount(
                "remount read-only",
                None,
                ro,
                MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
            )?;
            do_mount("make slave", None, ro, MsFlags::MS_SLAVE)
        };
        steps().inspect_err(|_| self.destroy())
    }

    /// Unmounts everything in the share and removes its directories.
    pub(crate) fn destroy(&self) {
        detach(&self.ro);
        // The self-bind may carry submounts of containers that were never released.
        detach(&self.rw);
        detach(&self.staging);
        for d in [&self.ro, &self.rw, &self.staging] {
            // A detach that failed leaves a container's host rootfs or a volume mounted below:
            // a recursive delete would go into them. Leave the directory and say so.
            let mounted = crate::mount::mounts_under(d);
            if !mounted.is_empty() {
                tracing::error!(path = %d.display(), ?mounted, "share dir still has mounts; left in place");
                continue;
            }
            if let Err(e) = fs::remove_dir_all(d) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    tracing::warn!(path = %d.display(), "remove share dir: {e}");
                }
            }
        }
    }

    fn container_dir(&self, cid: &str) -> PathBuf {
        self.rw.join("containers").join(cid)
    }

    /// Binds the container's host rootfs into the share; returns its path relative to the
    /// share root (the VIRTIOFS storage source).
    pub(crate) fn bind_rootfs(&self, cid: &str, rootfs: &Path) -> Result<String, ShareError> {
        let target = self.container_dir(cid).join("rootfs");
        fs::create_dir_all(&target).map_err(io("create", &target))?;
        do_mount(
            "bind rootfs",
            Some(rootfs),
            &target,
            MsFlags::MS_BIND | MsFlags::MS_REC,
        )?;
        Ok(format!("containers/{cid}/rootfs"))
    }

    /// Binds the host path `source` (file or directory) as the container's `n`-th shared
    /// mount, read-only on the host when `read_only`; returns its path in the guest.
    ///
    /// The bind is made in `staging` and cut off from the host's peer group there, before it
    /// moves in: left a peer of a shared source (systemd makes `/` shared), its release would
    /// propagate back and unmount the host's own mounts under the source. As a slave
    /// (`follow_host`: `rslave`, HostToContainer, and runc's default) it still receives what
    /// the host mounts under the source later; private (`rprivate`, CRI's None) it does not.
    pub(crate) fn bind_mount(
        &self,
        cid: &str,
        n: usize,
        source: &Path,
        read_only: bool,
        follow_host: bool,
    ) -> Result<PathBuf, ShareError> {
        let meta = fs::metadata(source).map_err(|_| ShareError::MissingSource(source.into()))?;
        let dir = self.container_dir(cid).join("mounts");
        fs::create_dir_all(&dir).map_err(io("create", &dir))?;
        let target = dir.join(n.to_string());
        let stage = self.staging.join(format!("{cid}-{n}"));
        for t in [&target, &stage] {
            if meta.is_dir() {
                fs::create_dir_all(t).map_err(io("create", t))?;
            } else {
                fs::write(t, b"").map_err(io("create", t))?;
            }
        }
        do_mount(
            "bind",
            Some(source),
            &stage,
            MsFlags::MS_BIND | MsFlags::MS_REC,
        )?;
        let (what, propagation) = if follow_host {
            ("make slave", MsFlags::MS_SLAVE)
        } else {
            ("make private", MsFlags::MS_PRIVATE)
        };
        let mut moved = do_mount(what, None, &stage, propagation | MsFlags::MS_REC);
        if read_only {
            moved = moved.and_then(|()| read_only_recursive(&stage));
        }
        moved = moved.and_then(|()| do_mount("move", Some(&stage), &target, MsFlags::MS_MOVE));
        if moved.is_err() {
            detach(&stage);
        }
        let _ = fs::remove_file(&stage).or_else(|_| fs::remove_dir(&stage));
        moved?;
        Ok(Path::new(GUEST_SHARE_DIR)
            .join("containers")
            .join(cid)
            .join("mounts")
            .join(n.to_string()))
    }

    /// Undoes every bind of container `cid` and removes its directory.
    pub(crate) fn release(&self, cid: &str) {
        let dir = self.container_dir(cid);
        if let Ok(rd) = fs::read_dir(dir.join("mounts")) {
            for e in rd.flatten() {
                detach(&e.path());
            }
        }
        detach(&dir.join("rootfs"));
        if let Err(e) = fs::remove_dir_all(&dir) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(path = %dir.display(), "remove container share dir: {e}");
            }
        }
    }
}

/// The guest path where container `cid`'s rootfs storage is mounted.
pub(crate) fn guest_rootfs(cid: &str) -> PathBuf {
    Path::new(GUEST_CONTAINERS_DIR).join(cid).join("rootfs")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Host test of the propagation design: a mount made in share-rw after the share was
    /// created shows up in the served dir, the served root is read-only, the mount is
    /// writable there, and release/destroy leave nothing mounted.
    #[test]
    fn binds_propagate_into_the_served_dir() {
        need_root();
        let tmp = tempfile::tempdir().expect("tempdir");
        let src = tmp.path().join("rootfs");
        fs::create_dir_all(src.join("etc")).expect("mkdir");
        fs::write(src.join("etc/hello"), "hi").expect("write");
        let file = tmp.path().join("resolv.conf");
        fs::write(&file, "nameserver 10.0.0.1\n").expect("write");
        let pod = tmp.path().join("pod");
        let share = Share::at(&pod);
        share.create().expect("create share");
        let rel = share.bind_rootfs("c1", &src).expect("bind rootfs");
        assert_eq!(rel, "containers/c1/rootfs");
        let served = share.served_dir().join(&rel);
        assert_eq!(
            fs::read_to_string(served.join("etc/hello")).expect("read via served dir"),
            "hi"
        );
        fs::write(served.join("etc/new"), "x").expect("rootfs is writable via the served dir");
        assert!(src.join("etc/new").exists());
        let err = fs::write(share.served_dir().join("top"), "x").expect_err("served root is ro");
        assert_eq!(err.raw_os_error(), Some(libc::EROFS));
        let guest = share
            .bind_mount("c1", 0, &file, true, true)
            .expect("bind file");
        assert_eq!(guest, Path::new("/run/hull/shared/containers/c1/mounts/0"));
        let served_file = share.served_dir().join("containers/c1/mounts/0");
        assert_eq!(
            fs::read_to_string(&served_file).expect("read bound file"),
            "nameserver 10.0.0.1\n"
        );
        let err = fs::write(&served_file, "x").expect_err("ro bind");
        assert_eq!(err.raw_os_error(), Some(libc::EROFS));
        assert!(matches!(
            share.bind_mount("c1", 1, &tmp.path().join("missing"), false, true),
            Err(ShareError::MissingSource(_))
        ));
        share.release("c1");
        assert!(!share.served_dir().join("containers/c1").exists());
        share.destroy();
        let mounts = fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
        assert!(
            !mounts.contains(pod.to_str().expect("utf8")),
            "left mounted: {mounts}"
        );
        for d in ["share-rw", "shared", "staging"] {
            assert!(!pod.join(d).exists(), "{d} left behind");
        }
    }
    fn need_root() {
        assert!(
            nix::unistd::geteuid().is_root(),
            "this test mounts and needs root (make test runs as root)"
        );
    }

    /// Mount points in this mount namespace.
    fn mount_points() -> Vec<PathBuf> {
        let info = fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
        info.lines()
            .filter_map(|l| l.split(' ').nth(4).map(PathBuf::from))
            .collect()
    }

    fn tmpfs(at: &Path) {
        fs::create_dir_all(at).expect("mkdir");
        mount(
            Some("tmpfs"),
            at,
            Some("tmpfs"),
            MsFlags::empty(),
            Some("size=1m"),
        )
        .expect("mount tmpfs");
    }

    /// A read-only bind is read-only all the way down: the host's mounts under the source
    /// (here a tmpfs) are read-only in the served dir too, for a slave and a private bind,
    /// while the host's own mount stays writable.
    #[test]
    fn read_only_binds_are_recursive() {
        need_root();
        let tmp = tempfile::tempdir().expect("tempdir");
        let src = tmp.path().join("src");
        let sub = src.join("sub");
        tmpfs(&sub);
        let share = Share::at(&tmp.path().join("pod"));
        share.create().expect("create share");
        share
            .bind_mount("c1", 0, &src, true, true)
            .expect("rslave ro bind");
        share
            .bind_mount("c1", 1, &src, true, false)
            .expect("rprivate ro bind");
        let write = |p: PathBuf| fs::write(p, "x").err().and_then(|e| e.raw_os_error());
        let served = |n: usize, f: &str| {
            share
                .served_dir()
                .join(format!("containers/c1/mounts/{n}/{f}"))
        };
        let seen = [
            write(served(0, "top")),
            write(served(0, "sub/f")),
            write(served(1, "top")),
            write(served(1, "sub/f")),
            write(sub.join("f")),
        ];
        share.release("c1");
        share.destroy();
        detach(&sub);
        assert_eq!(
            seen,
            [
                Some(libc::EROFS),
                Some(libc::EROFS),
                Some(libc::EROFS),
                Some(libc::EROFS),
                None
            ],
            "writes in each bind's top and submount, then in the host's submount"
        );
    }

    /// A bind of a shared host source (systemd makes `/` shared): as a slave (rslave) it
    /// receives what the host mounts under the source after the container started, private
    /// (rprivate) it does not, and releasing either leaves the host's own mounts under the
    /// source alone (a bind left in the source's peer group unmounted them).
    #[test]
    fn binds_follow_the_host_one_way() {
        need_root();
        let tmp = tempfile::tempdir().expect("tempdir");
        let src = tmp.path().join("src");
        fs::create_dir_all(&src).expect("mkdir");
        do_mount("bind", Some(&src), &src, MsFlags::MS_BIND).expect("bind");
        do_mount("make shared", None, &src, MsFlags::MS_SHARED).expect("make shared");
        let (early, late) = (src.join("early"), src.join("late"));
        tmpfs(&early);
        fs::write(early.join("f"), "early").expect("write");
        let share = Share::at(&tmp.path().join("pod"));
        share.create().expect("create share");
        share
            .bind_mount("c1", 0, &src, false, true)
            .expect("rslave bind");
        share
            .bind_mount("c1", 1, &src, true, false)
            .expect("rprivate bind");
        tmpfs(&late);
        fs::write(late.join("f"), "late").expect("write");
        let served = |n: usize, f: &str| {
            let p = share
                .served_dir()
                .join(format!("containers/c1/mounts/{n}/{f}/f"));
            fs::read_to_string(p).ok()
        };
        let seen = [
            served(0, "early"),
            served(0, "late"),
            served(1, "early"),
            served(1, "late"),
        ];
        share.release("c1");
        share.destroy();
        let left = mount_points();
        detach(&src);
        assert_eq!(
            seen,
            [
                Some("early".into()),
                Some("late".into()),
                Some("early".into()),
                None
            ],
            "what each bind shows of the source's mounts"
        );
        assert!(
            left.contains(&early) && left.contains(&late),
            "releasing the binds unmounted the host's own mounts: {left:?}"
        );
    }
}
