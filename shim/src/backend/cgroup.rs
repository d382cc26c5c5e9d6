//! The pod's host cgroup (DESIGN §2 shim/: the VMM lives in the pod's cgroup, so the node
//! accounts hull-vmm's and virtiofsd's memory to the pod). The sandbox spec's
//! `linux.cgroupsPath` names it, as it would name runc's pause container: cgroupfs style
//! (`/kubepods/burstable/pod<uid>/<id>`) or systemd style
//! (`kubepods-burstable-pod<uid>.slice:cri-containerd:<id>`, which systemd would turn into
//! `…/kubepods-burstable-pod<uid>.slice/cri-containerd-<id>.scope`). hull creates that leaf
//! directly in the cgroup v2 tree and removes it at pod teardown; the kubelet owns the parents.
//!
//! cgroup v2 only. On a v1 or hybrid host the VMM stays in the shim's cgroup and a warning
//! says so: v1 is outside what hull supports for accounting.

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

/// Why the pod's cgroup cannot be made.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CgroupError {
    /// The spec's `linux.cgroupsPath` names no cgroup hull may create.
    #[error("cgroupsPath {path:?}: {why}")]
    BadPath { path: String, why: &'static str },
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The unified hierarchy: `/sys/fs/cgroup` on a v2 host, `/sys/fs/cgroup/unified` on a
/// hybrid one (where it has no controllers, but still groups processes).
pub(crate) fn cgroup2_root() -> Option<PathBuf> {
    ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.join("cgroup.subtree_control").exists())
}

/// The memory limits of the pod whose sandbox cgroup is `leaf` (`sizing::pod_memory_limits`);
/// none without a sandbox cgroup or a cgroup v2 hierarchy. Read at boot to size the VM and
/// at each growth to bound it (the kubelet may have raised them since).
pub(crate) fn pod_memory(leaf: Option<&Path>) -> crate::sizing::PodMemory {
    leaf.and_then(|leaf| Some(crate::sizing::pod_memory_limits(leaf, &cgroup2_root()?)))
        .unwrap_or_default()
}

/// `cgroupsPath` → path relative to the cgroup v2 root.
fn relative_path(cgroups_path: &str) -> Result<PathBuf, CgroupError> {
    let bad = |why: &'static str| CgroupError::BadPath {
        path: cgroups_path.to_owned(),
        why,
    };
    let rel = if let Some((slice, rest)) = cgroups_path.split_once(':') {
        let (prefix, name) = rest
            .split_once(':')
            .ok_or_else(|| bad("systemd style needs slice:prefix:name"))?;
        let mut p = PathBuf::new();
        // "a-b-c.slice" lives in a.slice/a-b.slice/a-b-c.slice.
        if !slice.is_empty() && slice != "-.slice" {
            let stem = slice
                .strip_suffix(".slice")
                .ok_or_else(|| bad("the slice must end in .slice"))?;
            let mut acc = String::new();
            for part in stem.split('-') {
                if part.is_empty() {
                    return Err(bad("empty slice component"));
                }
                if !acc.is_empty() {
                    acc.push('-');
                }
                acc.push_str(part);
                p.push(format!("{acc}.slice"));
            }
        }
        let unit = if prefix.is_empty() {
            format!("{name}.scope")
        } else {
            format!("{prefix}-{name}.scope")
        };
        p.join(unit)
    } else {
        PathBuf::from(cgroups_path.trim_start_matches('/'))
    };
    if rel.as_os_str().is_empty()
        || rel
            .components()
            .any(|c| !matches!(c, std::path::Component::Normal(_)))
    {
        return Err(bad("must name a cgroup below the root, without . or .."));
    }
    Ok(rel)
}

/// The pod's cgroup, created by hull.
#[derive(Debug)]
pub(crate) struct PodCgroup {
    dir: PathBuf,
    procs: File,
}

impl PodCgroup {
    /// The directory of the cgroup `cgroups_path` names, without creating it (it goes into
    /// `pod.json` first); `None` on a host without a usable cgroup v2 hierarchy or when the
    /// spec names none.
    pub(crate) fn dir_for(cgroups_path: &str) -> Result<Option<PathBuf>, CgroupError> {
        if cgroups_path.is_empty() {
            return Ok(None);
        }
        let Some(root) = cgroup2_root() else {
            tracing::warn!("no cgroup v2 hierarchy: hull-vmm stays in the shim's cgroup");
            return Ok(None);
        };
        if root != Path::new("/sys/fs/cgroup") {
            tracing::warn!(
                "hybrid cgroup host: hull-vmm is grouped but not limited by the pod's cgroup"
            );
        }
        Ok(Some(root.join(relative_path(cgroups_path)?)))
    }

    /// Creates (or reuses) the cgroup at `dir` (from [`PodCgroup::dir_for`]).
    pub(crate) fn create(dir: PathBuf) -> Result<Self, CgroupError> {
        std::fs::create_dir_all(&dir).map_err(|source| CgroupError::Io {
            what: "create",
            path: dir.clone(),
            source,
        })?;
        let procs_path = dir.join("cgroup.procs");
        let procs = OpenOptions::new()
            .write(true)
            .open(&procs_path)
            .map_err(|source| CgroupError::Io {
                what: "open",
                path: procs_path,
                source,
            })?;
        Ok(PodCgroup { dir, procs })
    }

    pub(crate) fn procs_fd(&self) -> std::os::fd::RawFd {
        self.procs.as_raw_fd()
    }

    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cgroupfs_and_systemd_paths() {
        assert_eq!(
            relative_path("/kubepods/burstable/pod1/abc").unwrap(),
            Path::new("kubepods/burstable/pod1/abc")
        );
        assert_eq!(
            relative_path("kubepods-burstable-pod1.slice:cri-containerd:abc").unwrap(),
            Path::new("kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1.slice/cri-containerd-abc.scope")
        );
        assert_eq!(relative_path(":hull:x").unwrap(), Path::new("hull-x.scope"));
        for bad in ["/", "/a/../b", "x:y", "a--b.slice:p:n", "bad:p:n"] {
            assert!(relative_path(bad).is_err(), "{bad}");
        }
    }
}
