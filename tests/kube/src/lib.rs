//! The Kubernetes binaries of the kubelet lab suite: `scripts/ensure-kubernetes` builds kubelet,
//! kube-apiserver and kubectl 1.20 from Debian 12's source package and unpacks Debian's etcd,
//! once, into `${HULL_CACHE:-~/.cache/hull}/kubernetes`. The suite calls it on the host, where
//! the network is (the lab has no uplink), so the lab script finds the cache warm.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Errors of [`ensure_kubernetes`].
#[derive(Debug, thiserror::Error)]
pub enum KubeError {
    #[error("run {script}: {source}")]
    Spawn {
        script: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{script} failed ({status}): {stderr}")]
    Failed {
        script: String,
        status: String,
        stderr: String,
    },
    #[error("scripts/ensure-kubernetes printed no {0}= line")]
    MissingKey(&'static str),
}

/// What `scripts/ensure-kubernetes` printed: the cached binaries and their versions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubeBinaries {
    pub kubelet: PathBuf,
    pub kube_apiserver: PathBuf,
    pub kubectl: PathBuf,
    pub etcd: PathBuf,
    /// Kubernetes' own version, e.g. `v1.20.2`.
    pub version: String,
    /// The Debian source package version the binaries were built from.
    pub debian_version: String,
}

/// Runs `<repo>/scripts/ensure-kubernetes` (a cold cache fetches the source and builds for
/// several minutes; its progress goes to our stderr) and returns what it printed.
pub fn ensure_kubernetes(repo: &Path) -> Result<KubeBinaries, KubeError> {
    let script = repo.join("scripts/ensure-kubernetes");
    let out = Command::new(&script)
        .stderr(std::process::Stdio::inherit())
        .output()
        .map_err(|source| KubeError::Spawn {
            script: script.display().to_string(),
            source,
        })?;
    if !out.status.success() {
        return Err(KubeError::Failed {
            script: script.display().to_string(),
            status: out.status.to_string(),
            // Its own diagnostics went to our stderr above.
            stderr: String::from_utf8_lossy(&out.stdout).into_owned(),
        });
    }
    parse(&String::from_utf8_lossy(&out.stdout))
}

/// Reads the `key=value` lines of ensure-kubernetes's output.
fn parse(stdout: &str) -> Result<KubeBinaries, KubeError> {
    let get = |key: &'static str| {
        stdout
            .lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
            .map(str::to_owned)
            .ok_or(KubeError::MissingKey(key))
    };
    Ok(KubeBinaries {
        kubelet: get("kubelet")?.into(),
        kube_apiserver: get("kube_apiserver")?.into(),
        kubectl: get("kubectl")?.into(),
        etcd: get("etcd")?.into(),
        version: get("version")?,
        debian_version: get("debian_version")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_each_key_and_not_its_prefixes() {
        let out =
            "kubelet=/c/k/kubelet\nkube_apiserver=/c/k/kube-apiserver\nkubectl=/c/k/kubectl\n\
                   etcd=/c/etcd-3.4/etcd\nversion=v1.20.2\ndebian_version=1.20.5+really1.20.2-1\n\
                   go=go1.19.8\netcd_version=3.4.23-4+b4\n";
        let k = parse(out).expect("parse");
        assert_eq!(k.kubelet, PathBuf::from("/c/k/kubelet"));
        assert_eq!(k.kube_apiserver, PathBuf::from("/c/k/kube-apiserver"));
        assert_eq!(k.kubectl, PathBuf::from("/c/k/kubectl"));
        // `etcd_version=` must not be taken for `etcd=`, nor `debian_version=` for `version=`.
        assert_eq!(k.etcd, PathBuf::from("/c/etcd-3.4/etcd"));
        assert_eq!(k.version, "v1.20.2");
        assert_eq!(k.debian_version, "1.20.5+really1.20.2-1");
    }

    #[test]
    fn a_missing_key_is_named() {
        let err = parse("kubelet=/k\n").expect_err("incomplete output");
        assert!(
            matches!(err, KubeError::MissingKey("kube_apiserver")),
            "{err}"
        );
    }
}
