//! Growing a running guest (`Guest.SetCpus`, `Guest.AttachDisk`, `Guest.DetachDisk`): CPUs
//! the host started ([`cpus`]) and disks the host put into placeholder virtio-mmio slots
//! ([`disks`], each slot found by its MMIO base in /proc/iomem, [`iomem`]).
//!
//! The kernel is driven through its files alone. Their roots are a parameter ([`Roots`]) and
//! every write goes through an [`AttrWriter`], so unit tests run against a fake tree in a
//! temporary directory and see each write in order. What /proc and /sys say is parsed
//! defensively and read with a cap: a malformed file is an error, never a panic or an
//! unbounded read. Everything here waits on the kernel (a CPU coming up, a driver's probe),
//! so callers run it on the blocking pool.

pub(crate) mod cpus;
pub(crate) mod disks;
pub(crate) mod iomem;

use std::fmt::Debug;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use nix::errno::Errno;

/// Where the kernel's file systems are: `/sys`, `/proc` and `/dev` in the guest, a fake tree
/// in tests.
#[derive(Debug, Clone)]
pub(crate) struct Roots {
    pub(crate) sys: PathBuf,
    pub(crate) proc: PathBuf,
    pub(crate) dev: PathBuf,
}

impl Roots {
    /// The guest's own (the agent mounts them at boot, `init`).
    pub(crate) fn guest() -> Self {
        Roots {
            sys: "/sys".into(),
            proc: "/proc".into(),
            dev: "/dev".into(),
        }
    }
}

/// Writes one kernel attribute (a sysfs file): the only way hot-plug changes the guest, apart
/// from making a missing `/dev` node.
pub(crate) trait AttrWriter: Debug + Send + Sync {
    fn write(&self, path: &Path, value: &str) -> io::Result<()>;
}

/// The real writer: one `write(2)` of the value to the existing file, as sysfs takes it.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Sysfs;

impl AttrWriter for Sysfs {
    fn write(&self, path: &Path, value: &str) -> io::Result<()> {
        // No O_CREAT: an attribute the kernel does not offer is an error, not a new file.
        let mut f = OpenOptions::new().write(true).truncate(true).open(path)?;
        f.write_all(value.as_bytes())
    }
}

/// The file's text, lossily decoded; `InvalidData` if it holds more than `cap` bytes, so a
/// file that is not what it should be cannot make the agent read without end.
pub(crate) fn read_capped(path: &Path, cap: usize) -> io::Result<String> {
    let mut buf = Vec::new();
    let limit = u64::try_from(cap).unwrap_or(u64::MAX).saturating_add(1);
    File::open(path)?.take(limit).read_to_end(&mut buf)?;
    if buf.len() > cap {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("larger than {cap} bytes"),
        ));
    }
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

/// An I/O error as the kernel's errno (`EIO: I/O error`), the way an operator looks it up;
/// the error's own text when it carries none.
pub(crate) fn errno(e: &io::Error) -> String {
    e.raw_os_error()
        .map_or_else(|| e.to_string(), |n| Errno::from_raw(n).to_string())
}

/// At most `max` characters of a text the kernel (or something posing as it) wrote, for an
/// error message.
pub(crate) fn excerpt(s: &str, max: usize) -> String {
    let mut out: String = s.chars().take(max).collect();
    if s.chars().nth(max).is_some() {
        out.push('…');
    }
    out
}

#[cfg(test)]
pub(crate) mod testing {
    //! A fake kernel for the unit tests: a tree in a temporary directory and a writer that
    //! records every write and can fail or act like the kernel on chosen ones.

    use std::collections::HashMap;
    use std::fs;
    use std::io;
    use std::path::{Path, PathBuf};
    use std::sync::Mutex;

    use super::{AttrWriter, Roots, Sysfs};

    /// What the fake kernel does when a path is written: anything it likes to the tree, then
    /// succeed or fail (the write itself then does not reach the file).
    pub(crate) type Hook = Box<dyn Fn(&Path, &str) -> io::Result<()> + Send + Sync>;

    /// A temporary tree with `sys`, `proc` and `dev` under it.
    #[derive(Debug)]
    pub(crate) struct FakeTree {
        _dir: tempfile::TempDir,
        pub(crate) roots: Roots,
    }

    impl FakeTree {
        pub(crate) fn new() -> Self {
            let dir = tempfile::tempdir().expect("tempdir");
            let roots = Roots {
                sys: dir.path().join("sys"),
                proc: dir.path().join("proc"),
                dev: dir.path().join("dev"),
            };
            for d in [&roots.sys, &roots.proc, &roots.dev] {
                fs::create_dir_all(d).expect("mkdir");
            }
            FakeTree { _dir: dir, roots }
        }

        /// Writes `text` to `path` (relative to the tree's parent of sys/proc/dev, e.g.
        /// "sys/devices/system/cpu/online"), making its directories.
        pub(crate) fn put(&self, rel: &str, text: &str) {
            let path = self.path(rel);
            fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
            fs::write(path, text).expect("write");
        }

        pub(crate) fn path(&self, rel: &str) -> PathBuf {
            self.roots.sys.parent().expect("tree root").join(rel)
        }

        pub(crate) fn read(&self, rel: &str) -> String {
            fs::read_to_string(self.path(rel)).expect("read")
        }
    }

    /// Records `(path, value)` of every write; a hook on a path runs instead of the plain
    /// write to the fake file.
    #[derive(Default)]
    pub(crate) struct Recorder {
        writes: Mutex<Vec<(PathBuf, String)>>,
        hooks: HashMap<PathBuf, Hook>,
    }

    impl std::fmt::Debug for Recorder {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("Recorder")
                .field("writes", &self.writes)
                .finish_non_exhaustive()
        }
    }

    impl Recorder {
        pub(crate) fn on(mut self, path: PathBuf, hook: Hook) -> Self {
            self.hooks.insert(path, hook);
            self
        }

        /// Fails writes to `path` with `errno`, as the kernel's store function would.
        pub(crate) fn failing(self, path: PathBuf, errno: i32) -> Self {
            self.on(
                path,
                Box::new(move |_, _| Err(io::Error::from_raw_os_error(errno))),
            )
        }

        pub(crate) fn writes(&self) -> Vec<(PathBuf, String)> {
            self.writes.lock().expect("lock").clone()
        }
    }

    impl AttrWriter for Recorder {
        fn write(&self, path: &Path, value: &str) -> io::Result<()> {
            self.writes
                .lock()
                .expect("lock")
                .push((path.to_owned(), value.to_owned()));
            match self.hooks.get(path) {
                Some(hook) => hook(path, value),
                None => Sysfs.write(path, value),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;

    #[test]
    fn reads_are_capped_and_errors_name_the_errno() {
        let tree = testing::FakeTree::new();
        tree.put("sys/f", "0123456789");
        let f = tree.path("sys/f");
        assert_eq!(read_capped(&f, 10).expect("fits"), "0123456789");
        let e = read_capped(&f, 9).expect_err("too large");
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        fs::write(tree.path("sys/bin"), b"a\xffb").expect("write");
        assert_eq!(
            read_capped(&tree.path("sys/bin"), 10).expect("read"),
            "a\u{fffd}b"
        );
        assert_eq!(errno(&io::Error::from_raw_os_error(5)), "EIO: I/O error");
        assert_eq!(errno(&io::Error::other("odd")), "odd");
        // The writer never creates a file the kernel does not offer.
        let missing = tree.path("sys/nope");
        assert_eq!(
            Sysfs.write(&missing, "1").expect_err("missing").kind(),
            io::ErrorKind::NotFound
        );
        assert!(!missing.exists());
        Sysfs.write(&f, "1").expect("write");
        assert_eq!(tree.read("sys/f"), "1");
        assert_eq!(excerpt("abcdef", 3), "abc…");
        assert_eq!(excerpt("abc", 3), "abc");
    }
}
