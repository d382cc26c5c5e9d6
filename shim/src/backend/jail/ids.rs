//! One uid (and the gid of the same number) per pod for hull-vmm, from `[jail] uid_range`.
//!
//! A uid is in use while `/run/hull/jail-ids/<uid>` exists; the file (created with O_EXCL)
//! holds the sandbox id. It is removed at the pod's shutdown, at a failed launch and by
//! `shim delete`'s cleanup (all by sandbox id). A file whose pod directory is gone is
//! stale (a shim and its cleanup both died) and is taken over. Allocations and releases hold
//! an exclusive flock on the directory's `.lock`, so two shims never take over the same
//! stale file.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use super::JailError;

/// Where the in-use markers live (tmpfs: a reboot frees every uid, as it ends every pod).
const ID_DIR: &str = "/run/hull/jail-ids";

/// The id allocator of this node.
#[derive(Debug, Clone)]
pub(crate) struct Ids {
    dir: PathBuf,
    /// The pod state directories: a marker whose pod has none here is stale.
    pods: PathBuf,
}

impl Ids {
    pub(crate) fn node() -> Ids {
        Ids {
            dir: PathBuf::from(ID_DIR),
            pods: PathBuf::from(hull_contract::pods::POD_STATE_ROOT),
        }
    }

    #[cfg(test)]
    pub(crate) fn at(dir: &Path, pods: &Path) -> Ids {
        Ids {
            dir: dir.to_path_buf(),
            pods: pods.to_path_buf(),
        }
    }

    /// Holds the directory's flock until dropped.
    fn lock(&self) -> Result<File, JailError> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.dir)
            .map_err(JailError::io("create", &self.dir))?;
        let path = self.dir.join(".lock");
        let f = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&path)
            .map_err(JailError::io("open", &path))?;
        loop {
            // SAFETY: flock(2) on a descriptor `f` owns; released when `f` is closed.
            if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) } == 0 {
                return Ok(f);
            }
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::Interrupted {
                return Err(JailError::io("flock", &path)(e));
            }
        }
    }

    /// Takes a free id of `[first, last]` for sandbox `sid`, whose pod directory must exist
    /// already (or another shim would take the id over as stale).
    pub(crate) fn allocate(&self, range: [u32; 2], sid: &str) -> Result<u32, JailError> {
        let _lock = self.lock()?;
        let [first, last] = range;
        let count = u64::from(last - first) + 1;
        // Start where this sandbox id hashes to: a free id is usually found at once.
        let start = fnv1a(sid.as_bytes()) % count;
        for i in 0..count {
            let offset = u32::try_from((start + i) % count).unwrap_or(0);
            let id = first + offset;
            let path = self.dir.join(id.to_string());
            match OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
            {
                Ok(mut f) => {
                    f.write_all(sid.as_bytes())
                        .map_err(JailError::io("write", &path))?;
                    return Ok(id);
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    if self.stale(&path, sid) {
                        tracing::info!(id, "taking over a stale jail id");
                        std::fs::write(&path, sid).map_err(JailError::io("write", &path))?;
                        return Ok(id);
                    }
                }
                Err(e) => return Err(JailError::io("create", &path)(e)),
            }
        }
        Err(JailError::NoFreeId { first, last })
    }

    /// Whether the marker at `path` belongs to no live pod (or to `sid` itself, a sandbox
    /// launched again after its shim died).
    fn stale(&self, path: &Path, sid: &str) -> bool {
        let Ok(owner) = std::fs::read_to_string(path) else {
            return false;
        };
        let owner = owner.trim();
        // Empty: its creator died between create and write (both under the lock).
        owner.is_empty() || owner == sid || owner.contains('/') || !self.pods.join(owner).exists()
    }

    /// Frees every id sandbox `sid` holds; idempotent.
    pub(crate) fn release(&self, sid: &str) {
        let Ok(_lock) = self.lock() else {
            return;
        };
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        for e in entries.flatten() {
            let name = e.file_name();
            if !name.to_string_lossy().bytes().all(|b| b.is_ascii_digit()) {
                continue;
            }
            let path = e.path();
            if std::fs::read_to_string(&path).is_ok_and(|o| o.trim() == sid) {
                if let Err(e) = std::fs::remove_file(&path) {
                    tracing::warn!(path = %path.display(), "release jail id: {e}");
                }
            }
        }
    }
}

/// FNV-1a: a stable, dependency-free spread of sandbox ids over the range.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup() -> (tempfile::TempDir, Ids) {
        let t = tempfile::tempdir().expect("tempdir");
        let ids = Ids::at(&t.path().join("ids"), &t.path().join("pods"));
        (t, ids)
    }

    fn pod(t: &tempfile::TempDir, sid: &str) {
        std::fs::create_dir_all(t.path().join("pods").join(sid)).expect("pod dir");
    }

    #[test]
    fn ids_are_unique_until_released_and_a_full_range_says_so() {
        let (t, ids) = setup();
        let range = [5000, 5002];
        let mut got = vec![];
        for sid in ["a", "b", "c"] {
            pod(&t, sid);
            got.push(ids.allocate(range, sid).expect("allocate"));
        }
        got.sort_unstable();
        assert_eq!(got, [5000, 5001, 5002]);
        pod(&t, "d");
        let e = ids.allocate(range, "d").unwrap_err();
        assert!(e.to_string().contains("[5000, 5002]"), "{e}");
        let b = std::fs::read_dir(t.path().join("ids"))
            .expect("ids")
            .flatten()
            .find(|e| std::fs::read_to_string(e.path()).is_ok_and(|s| s == "b"))
            .expect("b's marker");
        ids.release("b");
        assert!(!b.path().exists(), "released");
        let d = ids.allocate(range, "d").expect("the freed id");
        assert_eq!(d.to_string(), b.file_name().to_string_lossy());
        ids.release("b");
        assert!(b.path().exists(), "releasing again must not free d's id");
    }

    #[test]
    fn a_marker_whose_pod_directory_is_gone_is_taken_over() {
        let (t, ids) = setup();
        let range = [7000, 7000];
        pod(&t, "old");
        assert_eq!(ids.allocate(range, "old").expect("allocate"), 7000);
        pod(&t, "new");
        assert!(
            ids.allocate(range, "new").is_err(),
            "old's pod still exists"
        );
        std::fs::remove_dir(t.path().join("pods/old")).expect("rm pod");
        assert_eq!(ids.allocate(range, "new").expect("stale taken over"), 7000);
        assert_eq!(
            std::fs::read_to_string(t.path().join("ids/7000")).expect("marker"),
            "new"
        );
        // The dead pod's cleanup, running late, must not free the new owner's id.
        ids.release("old");
        assert!(t.path().join("ids/7000").exists());
        // A sandbox launched again (its earlier shim died) gets its own id back.
        assert_eq!(ids.allocate(range, "new").expect("same sandbox"), 7000);
    }
}
