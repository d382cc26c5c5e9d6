//! cgroup v2 for containers: one directory per container under the agent's cgroup parent,
//! resources written as files, stats read back, freeze and kill through the core files.
//!
//! Written here rather than with `libcgroups`: what is needed is a few dozen lines of file
//! I/O, and libcgroups pulls systemd/dbus and v1 support that a guest never uses.

use std::fs;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use oci_spec::runtime::LinuxResources;

use super::devices;
use super::error::{EngineError, Result};

const CONTROLLERS: &[&str] = &["cpu", "cpuset", "io", "memory", "pids", "hugetlb"];

/// The agent's parent cgroup: prepared once, then containers are created under it.
#[derive(Debug, Clone)]
pub(crate) struct CgroupParent {
    path: PathBuf,
}

impl CgroupParent {
    /// Creates `path` and enables every available controller for its children (and on the
    /// way down from the cgroup2 root).
    pub(crate) fn prepare(path: &Path) -> Result<Self> {
        fs::create_dir_all(path)
            .map_err(|e| EngineError::io(format!("create cgroup parent {path:?}"), e))?;
        if let Some(up) = path.parent() {
            enable_controllers(up);
        }
        enable_controllers(path);
        Ok(CgroupParent {
            path: path.to_owned(),
        })
    }

    /// Creates the cgroup of container `id` (already validated as a file name).
    pub(crate) fn create(&self, id: &str) -> Result<Cgroup> {
        let path = self.path.join(id);
        match fs::create_dir(&path) {
            Ok(()) => Ok(Cgroup {
                path,
                device_prog: Arc::default(),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Err(
                EngineError::AlreadyExists(format!("cgroup {path:?} already exists")),
            ),
            Err(e) => Err(EngineError::io(format!("create cgroup {path:?}"), e)),
        }
    }
}

fn enable_controllers(dir: &Path) {
    let available = fs::read_to_string(dir.join("cgroup.controllers")).unwrap_or_default();
    for c in available
        .split_whitespace()
        .filter(|c| CONTROLLERS.contains(c))
    {
        let _ = fs::write(dir.join("cgroup.subtree_control"), format!("+{c}"));
    }
}

/// One container's cgroup.
#[derive(Debug, Clone)]
pub(crate) struct Cgroup {
    path: PathBuf,
    /// The device program attached by the last apply with device rules, detached when an
    /// update replaces it.
    device_prog: Arc<Mutex<Option<OwnedFd>>>,
}

fn read_u64(path: &Path) -> u64 {
    fs::read_to_string(path)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

/// `key value` lines of a flat-keyed file.
pub(crate) fn read_keyed(path: &Path) -> Vec<(String, u64)> {
    fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            Some((it.next()?.to_owned(), it.next()?.parse().ok()?))
        })
        .collect()
}

fn keyed(list: &[(String, u64)], key: &str) -> u64 {
    list.iter().find(|(k, _)| k == key).map_or(0, |(_, v)| *v)
}

fn limit(v: i64) -> String {
    if v < 0 {
        "max".to_owned()
    } else {
        v.to_string()
    }
}

impl Cgroup {
    pub(crate) fn procs_file(&self) -> PathBuf {
        self.path.join("cgroup.procs")
    }

    fn write(&self, file: &str, value: &str) -> Result<()> {
        let path = self.path.join(file);
        fs::write(&path, value).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound | std::io::ErrorKind::PermissionDenied => {
                EngineError::FailedPrecondition(format!(
                    "cgroup file {file} is not available at {:?} (controller not enabled?): {e}",
                    self.path
                ))
            }
            _ => EngineError::InvalidArgument(format!("write {value:?} to {path:?}: {e}")),
        })
    }

    /// Applies the resources that are set; absent ones are left as they are.
    pub(crate) fn apply(&self, r: &LinuxResources) -> Result<()> {
        if let Some(cpu) = r.cpu() {
            if let Some(shares) = cpu.shares() {
                // The OCI -> cgroup v2 conversion runc and crun use.
                let weight = if shares == 0 {
                    100
                } else {
                    1 + (shares.clamp(2, 262_144) - 2) * 9999 / 262_142
                };
                self.write("cpu.weight", &weight.to_string())?;
            }
            if cpu.quota().is_some() || cpu.period().is_some() {
                let period = cpu.period().unwrap_or(100_000);
                let quota = cpu.quota().map_or("max".to_owned(), |q| {
                    if q <= 0 {
                        "max".to_owned()
                    } else {
                        q.to_string()
                    }
                });
                self.write("cpu.max", &format!("{quota} {period}"))?;
            }
            if let Some(cpus) = cpu.cpus().as_ref().filter(|c| !c.is_empty()) {
                self.write("cpuset.cpus", cpus)?;
            }
            if let Some(mems) = cpu.mems().as_ref().filter(|c| !c.is_empty()) {
                self.write("cpuset.mems", mems)?;
            }
        }
        if let Some(mem) = r.memory() {
            if let Some(l) = mem.limit() {
                self.write("memory.max", &limit(l))?;
            }
            if let Some(res) = mem.reservation() {
                self.write("memory.low", &limit(res))?;
            }
            if let Some(swap) = mem.swap() {
                // OCI swap is memory+swap; cgroup v2 counts swap alone.
                let v = match (swap, mem.limit()) {
                    (s, _) if s < 0 => "max".to_owned(),
                    (s, Some(l)) if l > 0 => (s - l).max(0).to_string(),
                    (s, _) => s.to_string(),
                };
                self.write("memory.swap.max", &v)?;
            }
        }
        if let Some(pids) = r.pids() {
            self.write(
                "pids.max",
                &limit(if pids.limit() <= 0 { -1 } else { pids.limit() }),
            )?;
        }
        if let Some(bio) = r.block_io() {
            if let Some(w) = bio.weight() {
                let w = 1 + (u32::from(w).clamp(10, 1000) - 10) * 9999 / 990;
                self.write("io.weight", &format!("default {w}"))?;
            }
        }
        if let Some(rules) = r.devices().as_ref().filter(|d| !d.is_empty()) {
            self.apply_devices(rules)?;
        }
        for (key, value) in r.unified().iter().flatten() {
            if key.contains('/') || key.starts_with('.') || key.starts_with("cgroup.") {
                return Err(EngineError::InvalidArgument(format!(
                    "unified cgroup key {key:?} is not a controller file"
                )));
            }
            self.write(key, value)?;
        }
        Ok(())
    }

    /// Attaches the program for `rules`, then detaches the one it replaces, so the cgroup is
    /// never without a filter in between.
    fn apply_devices(&self, rules: &[oci_spec::runtime::LinuxDeviceCgroup]) -> Result<()> {
        let prog = devices::attach(&self.path, &devices::program(rules)?)?;
        let mut slot = self.device_prog.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(old) = slot.replace(prog) {
            devices::detach(&self.path, &old)?;
        }
        Ok(())
    }

    /// Pids of every process in the cgroup, ascending.
    pub(crate) fn pids(&self) -> Vec<u32> {
        let mut pids: Vec<u32> = fs::read_to_string(self.procs_file())
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect();
        pids.sort_unstable();
        pids
    }

    /// Freezes or thaws, and waits until the kernel reports the new state.
    pub(crate) fn freeze(&self, frozen: bool) -> Result<()> {
        self.write("cgroup.freeze", if frozen { "1" } else { "0" })?;
        let want = if frozen { 1 } else { 0 };
        let start = Instant::now();
        while keyed(&read_keyed(&self.path.join("cgroup.events")), "frozen") != want {
            if start.elapsed() > Duration::from_secs(10) {
                return Err(EngineError::DeadlineExceeded(format!(
                    "cgroup {:?} did not reach frozen={want}",
                    self.path
                )));
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        Ok(())
    }

    pub(crate) fn is_frozen(&self) -> bool {
        keyed(&read_keyed(&self.path.join("cgroup.events")), "frozen") == 1
    }

    /// SIGKILLs every process (cgroup.kill, or one by one on kernels without it).
    pub(crate) fn kill_all(&self) {
        if fs::write(self.path.join("cgroup.kill"), "1").is_err() {
            for pid in self.pids() {
                if let Ok(pid) = i32::try_from(pid) {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
            }
        }
    }

    /// Removes the directory once it is empty; waits up to `timeout` for the last exits.
    pub(crate) fn remove(&self, timeout: Duration) -> Result<()> {
        let start = Instant::now();
        loop {
            match fs::remove_dir(&self.path) {
                Ok(()) => return Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
                Err(e) if start.elapsed() > timeout => {
                    return Err(EngineError::DeadlineExceeded(format!(
                        "remove cgroup {:?}: {e}; pids left: {:?}",
                        self.path,
                        self.pids()
                    )))
                }
                Err(_) => std::thread::sleep(Duration::from_millis(5)),
            }
        }
    }

    pub(crate) fn memory_events(&self) -> PathBuf {
        self.path.join("memory.events")
    }

    /// Counters for StatsContainer.
    pub(crate) fn stats(&self) -> hull_proto::stats::ContainerStats {
        use hull_proto::stats::{ContainerStats, CpuStats, IoDeviceStats, MemoryStats, PidsStats};
        let p = &self.path;
        let cpu = read_keyed(&p.join("cpu.stat"));
        let mstat = read_keyed(&p.join("memory.stat"));
        let mev = read_keyed(&p.join("memory.events"));
        let usage = read_u64(&p.join("memory.current"));
        let inactive_file = keyed(&mstat, "inactive_file");
        let io = fs::read_to_string(p.join("io.stat"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| {
                let mut it = l.split_whitespace();
                let (maj, min) = it.next()?.split_once(':')?;
                let mut d = IoDeviceStats {
                    major: maj.parse().ok()?,
                    minor: min.parse().ok()?,
                    ..Default::default()
                };
                for kv in it {
                    let (k, v) = kv.split_once('=')?;
                    let v: u64 = v.parse().unwrap_or(0);
                    match k {
                        "rbytes" => d.rbytes = v,
                        "wbytes" => d.wbytes = v,
                        "rios" => d.rios = v,
                        "wios" => d.wios = v,
                        _ => {}
                    }
                }
                Some(d)
            })
            .collect();
        ContainerStats {
            timestamp_ns: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
                .unwrap_or(0),
            cpu: Some(CpuStats {
                usage_usec: keyed(&cpu, "usage_usec"),
                user_usec: keyed(&cpu, "user_usec"),
                system_usec: keyed(&cpu, "system_usec"),
                nr_periods: keyed(&cpu, "nr_periods"),
                nr_throttled: keyed(&cpu, "nr_throttled"),
                throttled_usec: keyed(&cpu, "throttled_usec"),
                ..Default::default()
            })
            .into(),
            memory: Some(MemoryStats {
                usage_bytes: usage,
                limit_bytes: read_u64(&p.join("memory.max")),
                working_set_bytes: usage.saturating_sub(inactive_file),
                anon_bytes: keyed(&mstat, "anon"),
                file_bytes: keyed(&mstat, "file"),
                swap_usage_bytes: read_u64(&p.join("memory.swap.current")),
                swap_limit_bytes: read_u64(&p.join("memory.swap.max")),
                oom_events: keyed(&mev, "oom"),
                oom_kill_events: keyed(&mev, "oom_kill"),
                pgfault: keyed(&mstat, "pgfault"),
                pgmajfault: keyed(&mstat, "pgmajfault"),
                inactive_file_bytes: inactive_file,
                ..Default::default()
            })
            .into(),
            pids: Some(PidsStats {
                current: read_u64(&p.join("pids.current")),
                limit: read_u64(&p.join("pids.max")),
                ..Default::default()
            })
            .into(),
            io,
            ..Default::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A directory with the files of a cgroup v2 memory controller, as the kernel writes them.
    fn fake_cgroup(dir: &Path) -> Cgroup {
        let files = [
            ("memory.current", "52428800\n"),
            ("memory.max", "max\n"),
            (
                "memory.stat",
                "anon 31457280\nfile 20971520\nkernel 1048576\nactive_file 4194304\n\
                 inactive_file 16777216\npgscan 0\npgfault 123456\npgmajfault 78\n\
                 pgrefill 0\n",
            ),
            (
                "memory.events",
                "low 0\nhigh 0\nmax 9\noom 2\noom_kill 1\noom_group_kill 0\n",
            ),
        ];
        for (name, text) in files {
            fs::write(dir.join(name), text).unwrap();
        }
        Cgroup {
            path: dir.to_owned(),
            device_prog: Arc::default(),
        }
    }

    #[test]
    fn memory_stats_come_from_memory_stat_and_events() {
        let dir = tempfile::tempdir().unwrap();
        let m = fake_cgroup(dir.path()).stats().memory.unwrap();
        assert_eq!(m.usage_bytes, 50 << 20);
        assert_eq!(m.limit_bytes, 0, "max is unlimited");
        assert_eq!((m.anon_bytes, m.file_bytes), (30 << 20, 20 << 20));
        assert_eq!((m.pgfault, m.pgmajfault), (123_456, 78));
        assert_eq!(m.inactive_file_bytes, 16 << 20);
        assert_eq!(m.working_set_bytes, m.usage_bytes - m.inactive_file_bytes);
        assert_eq!((m.oom_events, m.oom_kill_events), (2, 1));
    }
}
