//! Where the shim's own memory is accounted: in its pod's cgroup, next to hull-vmm and
//! virtiofsd, while the pod runs.
//!
//! containerd starts a shim in containerd's own cgroup (1.6–2.x; runc's shim moves only when
//! its `ShimCgroup` option names a cgroup, which CRI never sets), so a shim that a hostile
//! guest agent makes grow is charged to containerd, outside every pod limit, and an OOM
//! there can take containerd down. Kata (`sandbox_cgroup_only = true`) puts its shim, VMM and
//! virtiofsd in the pod's sandbox cgroup instead, and the RuntimeClass `overhead` pays for
//! them. hull does the same: once the backend runs, the shim joins the cgroup the backend
//! placed its first child (hull-vmm) in, if that is a cgroup hull made for the pod (the
//! sandbox's `cgroupsPath`, below the kubelet's pod cgroup). Then the kubelet's pod limit
//! (containers + RuntimeClass overhead, which counts the shim's few MiB) and its eviction
//! bound the shim as they bound the VMM, and a runaway shim is killed within its pod.
//! Memory charged before the move stays with containerd's cgroup (cgroup v2 does not move
//! charges): the start-up, not what the agent can cause.
//!
//! Teardown removes the pod cgroup with `cgroup.kill`, so the shim leaves it first, back to
//! the cgroup it came from (or, if that is gone, the root), then tears the pod down.

use std::path::{Path, PathBuf};

/// Why the shim could not be moved.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ShimCgroupError {
    #[error("no cgroup v2 hierarchy is mounted")]
    NoCgroup2,
    #[error("process {pid} is in no cgroup v2 cgroup")]
    NotInCgroup2 { pid: u32 },
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
}

fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> ShimCgroupError {
    let path = path.to_path_buf();
    move |source| ShimCgroupError::Io { what, path, source }
}

/// The cgroup v2 hierarchy, where the backend finds it too (`/sys/fs/cgroup`, or
/// `/sys/fs/cgroup/unified` on a hybrid host).
fn cgroup2_mount() -> Result<PathBuf, ShimCgroupError> {
    crate::backend::cgroup::cgroup2_root().ok_or(ShimCgroupError::NoCgroup2)
}

/// The cgroup v2 directory process `pid` is in.
fn cgroup_of(pid: u32, mount: &Path) -> Result<PathBuf, ShimCgroupError> {
    let path = PathBuf::from(format!("/proc/{pid}/cgroup"));
    let text = std::fs::read_to_string(&path).map_err(io("read", &path))?;
    let rel = text
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .ok_or(ShimCgroupError::NotInCgroup2 { pid })?;
    Ok(mount.join(rel.trim_start_matches('/')))
}

fn move_to(pid: u32, dir: &Path) -> Result<(), ShimCgroupError> {
    let procs = dir.join("cgroup.procs");
    std::fs::write(&procs, pid.to_string()).map_err(io("write", &procs))
}

/// The shim in its pod's cgroup, and where it came from.
#[derive(Debug)]
pub(crate) struct Placement {
    pid: u32,
    from: PathBuf,
    to: PathBuf,
    mount: PathBuf,
}

impl Placement {
    /// Moves process `pid` (the shim) into the cgroup of the first of `children` (hull-vmm,
    /// virtiofsd) that is in one of `pod_cgroups` or below one; `None` when there is nothing
    /// to join (no pod cgroup, as for a `ctr run` without cgroupsPath or the test-only host
    /// agent, whose agent stays in the shim's cgroup; or the shim is there already).
    pub(crate) fn join(
        pid: u32,
        children: &[u32],
        pod_cgroups: &[PathBuf],
    ) -> Result<Option<Self>, ShimCgroupError> {
        if pod_cgroups.is_empty() {
            return Ok(None);
        }
        let mount = cgroup2_mount()?;
        let in_pod = |c: &PathBuf| pod_cgroups.iter().any(|p| c.starts_with(p));
        // A child that exited meanwhile has no /proc entry: the next one answers.
        let to = children
            .iter()
            .filter_map(|c| cgroup_of(*c, &mount).ok())
            .find(in_pod);
        let Some(to) = to else {
            return Ok(None);
        };
        let from = cgroup_of(pid, &mount)?;
        if from == to {
            return Ok(None);
        }
        move_to(pid, &to)?;
        Ok(Some(Placement {
            pid,
            from,
            to,
            mount,
        }))
    }

    /// The pod's cgroup.
    pub(crate) fn cgroup(&self) -> &Path {
        &self.to
    }

    /// Moves the shim back where it came from before the pod's cgroup is killed and removed;
    /// to the root if that cgroup is gone (containerd restarted in another one, say).
    pub(crate) fn leave(self) -> Result<PathBuf, ShimCgroupError> {
        match move_to(self.pid, &self.from) {
            Ok(()) => Ok(self.from),
            Err(e) => {
                tracing::warn!("{e}; moving the shim to the cgroup root instead");
                move_to(self.pid, &self.mount).map(|()| self.mount)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::process::{Child, Command};

    use super::*;

    struct Sleeper(Child);

    impl Sleeper {
        fn new() -> Self {
            Sleeper(
                Command::new("sleep")
                    .arg("60")
                    .spawn()
                    .expect("spawn sleep"),
            )
        }
        fn pid(&self) -> u32 {
            self.0.id()
        }
    }

    impl Drop for Sleeper {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    /// A scratch cgroup under the test's own, removed on drop (after its processes).
    struct Scratch(PathBuf);

    impl Drop for Scratch {
        fn drop(&mut self) {
            for _ in 0..100 {
                if std::fs::remove_dir(&self.0).is_ok() {
                    return;
                }
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
        }
    }

    fn scratch(name: &str) -> Scratch {
        let mount = cgroup2_mount().expect("cgroup v2 mounted (the test needs it)");
        let mine = cgroup_of(std::process::id(), &mount).expect("own cgroup");
        let dir = mine.join(format!("hull-shim-test-{}-{name}", std::process::id()));
        std::fs::create_dir(&dir)
            .unwrap_or_else(|e| panic!("create {} (needs root): {e}", dir.display()));
        Scratch(dir)
    }

    /// The shim (a stand-in process) follows its VMM (another) into the pod cgroup, and
    /// leaves it for where it came from; a child outside the pod's cgroups moves nothing.
    #[test]
    fn the_shim_joins_its_vmm_pod_cgroup_and_leaves_it_before_teardown() {
        let pod = scratch("pod");
        let (shim, vmm) = (Sleeper::new(), Sleeper::new());
        move_to(vmm.pid(), &pod.0).expect("place the vmm");
        let mount = cgroup2_mount().unwrap();
        let start = cgroup_of(shim.pid(), &mount).unwrap();

        let other = scratch("other");
        assert!(
            Placement::join(shim.pid(), &[vmm.pid()], std::slice::from_ref(&other.0))
                .unwrap()
                .is_none(),
            "the vmm's cgroup is not one hull made for the pod"
        );
        assert!(Placement::join(shim.pid(), &[vmm.pid()], &[])
            .unwrap()
            .is_none());
        assert_eq!(cgroup_of(shim.pid(), &mount).unwrap(), start);

        // The first child (outside the pod cgroup, like the host agent) is passed over.
        let p = Placement::join(
            shim.pid(),
            &[shim.pid(), vmm.pid()],
            std::slice::from_ref(&pod.0),
        )
        .unwrap()
        .expect("moved");
        assert_eq!(p.cgroup(), pod.0);
        assert_eq!(cgroup_of(shim.pid(), &mount).unwrap(), pod.0);
        let procs = std::fs::read_to_string(pod.0.join("cgroup.procs")).unwrap();
        assert!(
            procs.lines().any(|l| l == shim.pid().to_string()),
            "{procs}"
        );

        assert_eq!(p.leave().unwrap(), start);
        assert_eq!(cgroup_of(shim.pid(), &mount).unwrap(), start);
        // Gone from the pod cgroup: its removal (cgroup.kill) cannot take the shim along.
        let procs = std::fs::read_to_string(pod.0.join("cgroup.procs")).unwrap();
        assert!(
            !procs.lines().any(|l| l == shim.pid().to_string()),
            "{procs}"
        );
    }

    /// containerd's cgroup gone by teardown time: the shim still leaves, to the root.
    #[test]
    fn leaving_a_vanished_cgroup_goes_to_the_root() {
        let pod = scratch("pod2");
        let shim = Sleeper::new();
        let mount = cgroup2_mount().unwrap();
        let p = Placement {
            pid: shim.pid(),
            from: pod.0.join("gone"),
            to: pod.0.clone(),
            mount: mount.clone(),
        };
        move_to(shim.pid(), &pod.0).unwrap();
        assert_eq!(p.leave().unwrap(), mount);
        assert_eq!(cgroup_of(shim.pid(), &mount).unwrap(), mount);
    }
}
