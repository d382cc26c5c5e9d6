//! `pod.json`: what a pod owns on the host (its shim, the processes the shim started, the
//! cgroups, log directory, jail uid and network wiring it made). It is written (atomically)
//! before each of those is created and again as each child starts, so a shim killed at any
//! point of the launch leaves a record of everything it made. When a shim dies, containerd
//! runs `containerd-shim-hull-v2 delete` for each of its tasks; that process has nothing but
//! this file to find the pod's hull-vmm, virtiofsd, cgroups and logs with (`cleanup.rs`),
//! and it works from a partial record.
//!
//! Processes are named by pid *and* start time (field 22 of `/proc/<pid>/stat`), so a pid
//! reused after a reboot or a long time never gets killed by mistake.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{io_err, BackendError};

const FILE: &str = "pod.json";

/// One process, identified so that pid reuse cannot fool a later kill.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ProcId {
    pub(crate) pid: u32,
    /// Clock ticks after boot at which the process started.
    pub(crate) start_time: u64,
}

impl ProcId {
    /// The process `pid` as it is now, if it exists and has not exited: a zombie (a killed
    /// shim its new parent has not reaped yet) counts as gone.
    pub(crate) fn of(pid: u32) -> Option<ProcId> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // `pid (comm) state ...`: comm may hold spaces and parentheses, so fields are counted
        // from the last ')'; state is field 3, starttime field 22 (the 20th after ')').
        let mut fields = stat[stat.rfind(')')? + 1..].split_whitespace();
        if matches!(fields.next()?, "Z" | "X" | "x") {
            return None;
        }
        let start_time = fields.nth(18)?.parse().ok()?;
        Some(ProcId { pid, start_time })
    }

    /// This process, for the record.
    pub(crate) fn current() -> Option<ProcId> {
        ProcId::of(std::process::id())
    }

    pub(crate) fn alive(&self) -> bool {
        ProcId::of(self.pid) == Some(*self)
    }

    /// SIGKILL, only if the pid still names this very process.
    pub(crate) fn kill(&self) {
        if !self.alive() {
            return;
        }
        if let Ok(pid) = i32::try_from(self.pid) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

/// Everything `shim delete` needs to clean a pod whose shim is gone.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct PodRecord {
    /// The pod's shim; `None` if its start time could not be read.
    pub(crate) shim: Option<ProcId>,
    /// hull-vmm and virtiofsd (or the test-only host agent).
    pub(crate) children: Vec<ProcId>,
    /// cgroup directories hull made for the pod, each removed with everything below it.
    pub(crate) cgroups: Vec<PathBuf>,
    /// The pod's network namespace and its CNI links that carry hull's tc redirects (their
    /// taps die with hull-vmm; the links' ingress qdiscs stay until unwired or deleted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) netns: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) links: Vec<String>,
    /// hull-vmm's uid (and gid) from `[jail] uid_range`; its in-use marker names the
    /// sandbox, so cleanup frees it by sandbox id even before this is written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) uid: Option<u32>,
    /// `<[log] pod_dir>/<sandbox id>`: console.log, vmm.log, virtiofsd.log.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) log_dir: Option<PathBuf>,
}

/// Writes `dir/pod.json` atomically (temporary file, then rename).
pub(crate) fn write(dir: &Path, record: &PodRecord) -> Result<(), BackendError> {
    let json = serde_json::to_vec_pretty(record).map_err(|e| BackendError::Io {
        context: "encode pod.json".into(),
        source: std::io::Error::other(e),
    })?;
    let tmp = dir.join(format!(".{FILE}.tmp"));
    std::fs::write(&tmp, json).map_err(io_err(format!("write {}", tmp.display())))?;
    let path = dir.join(FILE);
    std::fs::rename(&tmp, &path).map_err(io_err(format!("rename to {}", path.display())))
}

/// Reads `dir/pod.json`; `None` if it is missing or unreadable (nothing to go by).
pub(crate) fn read(dir: &Path) -> Option<PodRecord> {
    let bytes = std::fs::read(dir.join(FILE)).ok()?;
    match serde_json::from_slice(&bytes) {
        Ok(r) => Some(r),
        Err(e) => {
            tracing::warn!(dir = %dir.display(), "unreadable pod.json: {e}");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_process_is_found_and_a_changed_start_time_is_not_alive() {
        let me = ProcId::current().expect("own stat");
        assert!(me.alive());
        assert!(me.start_time > 0);
        let other = ProcId {
            start_time: me.start_time + 1,
            ..me
        };
        assert!(
            !other.alive(),
            "same pid, different start: not the same process"
        );
        // Killing a record whose start time does not match must not signal this process.
        other.kill();
        assert!(me.alive());
        assert_eq!(ProcId::of(u32::MAX), None);
    }

    #[test]
    fn a_zombie_is_not_alive() {
        let mut child = std::process::Command::new("true").spawn().expect("spawn");
        let pid = child.id();
        // Not reaped yet: a zombie once it has exited.
        let start = std::time::Instant::now();
        while ProcId::of(pid).is_some() {
            assert!(
                start.elapsed() < std::time::Duration::from_secs(10),
                "still alive"
            );
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert!(
            std::path::Path::new(&format!("/proc/{pid}")).exists(),
            "zombie"
        );
        child.wait().expect("reap");
    }

    #[test]
    fn record_round_trips_atomically() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(read(dir.path()), None);
        let r = PodRecord {
            shim: ProcId::current(),
            children: vec![ProcId {
                pid: 42,
                start_time: 7,
            }],
            cgroups: vec!["/sys/fs/cgroup/t/pod".into()],
            netns: Some("/var/run/netns/cni-1".into()),
            links: vec!["eth0".into()],
            uid: Some(0x7000_0001),
            log_dir: Some("/var/log/hull/pods/p".into()),
        };
        write(dir.path(), &r).expect("write");
        assert_eq!(read(dir.path()), Some(r));
        assert!(!dir.path().join(".pod.json.tmp").exists());
        // A record written before anything was made (the shim alone) reads back as such.
        let early = PodRecord {
            shim: ProcId::current(),
            ..Default::default()
        };
        write(dir.path(), &early).expect("write");
        assert_eq!(read(dir.path()), Some(early));
        std::fs::write(dir.path().join(FILE), "{not json").expect("corrupt");
        assert_eq!(read(dir.path()), None);
    }
}
