//! Where a pod's state lives on the node, and who the pod is: the shim writes both, `hullctl`
//! reads them (`hullctl pods`, `inspect`, `metrics`) to find a pod's hull-vmm API socket and
//! to name the pod as Kubernetes does.
//!
//! ```
//! use hull_contract::pods::{pod_dir, PodIdentity};
//!
//! assert_eq!(pod_dir("abc").join(hull_contract::pods::API_SOCKET).to_str(),
//!            Some("/run/hull/pods/abc/jail/api.sock"));
//! let who = PodIdentity { namespace: "default".into(), name: "web-0".into(), uid: "u1".into() };
//! assert_eq!(PodIdentity::parse(&who.to_text()), who);
//! assert_eq!(who.display_name(), "default/web-0");
//! ```

use std::path::PathBuf;

/// One directory per pod, named by its sandbox id (root only).
pub const POD_STATE_ROOT: &str = "/run/hull/pods";

/// hull-vmm's API socket (vmm/API.md), relative to the pod's directory.
pub const API_SOCKET: &str = "jail/api.sock";

/// The hull-vmm's hybrid vsock socket (`hull_contract::vsock`), relative to the pod's
/// directory: `hullctl` reaches the guest's agent through it (`console`, the metrics).
pub const AGENT_SOCKET: &str = "jail/vsock.sock";

/// The pod's identity file, relative to its directory ([`PodIdentity`]).
pub const IDENTITY: &str = "identity";

/// The pod's host processes besides hull-vmm, relative to its directory ([`PodProcesses`]).
/// hull-vmm's own pid is its API socket's peer.
pub const PROCESSES: &str = "processes";

/// The directory of pod `sandbox_id`.
pub fn pod_dir(sandbox_id: &str) -> PathBuf {
    PathBuf::from(POD_STATE_ROOT).join(sandbox_id)
}

/// Who a pod is, from its sandbox's CRI annotations (empty for a lone `ctr run` container).
/// Written as `key=value` lines; a value never holds a newline (Kubernetes names and UIDs
/// cannot), and one that did would be cut there.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodIdentity {
    pub namespace: String,
    pub name: String,
    pub uid: String,
}

impl PodIdentity {
    pub fn to_text(&self) -> String {
        let line = |k: &str, v: &str| format!("{k}={}\n", v.lines().next().unwrap_or(""));
        [
            line("namespace", &self.namespace),
            line("name", &self.name),
            line("uid", &self.uid),
        ]
        .concat()
    }

    /// Reads [`PodIdentity::to_text`]'s form; unknown keys are skipped.
    pub fn parse(text: &str) -> Self {
        let mut id = PodIdentity::default();
        for (k, v) in text.lines().filter_map(|l| l.split_once('=')) {
            match k {
                "namespace" => id.namespace = v.to_owned(),
                "name" => id.name = v.to_owned(),
                "uid" => id.uid = v.to_owned(),
                _ => {}
            }
        }
        id
    }

    /// `namespace/name`, or `-` for a pod Kubernetes did not make.
    pub fn display_name(&self) -> String {
        if self.name.is_empty() {
            "-".to_owned()
        } else {
            format!("{}/{}", self.namespace, self.name)
        }
    }
}

/// One process of a pod: its pid and when it started (clock ticks after boot, field 22 of
/// /proc/PID/stat), so that a reader can tell it from a later process given the same pid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcessId {
    pub pid: u32,
    pub start_time: u64,
}

/// The shim and the virtiofsd of a pod, written by the shim once virtiofsd runs. Written as
/// `name=pid start_time` lines; unknown or malformed lines are skipped.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodProcesses {
    pub shim: Option<ProcessId>,
    pub virtiofsd: Option<ProcessId>,
}

impl PodProcesses {
    pub fn to_text(&self) -> String {
        [("shim", self.shim), ("virtiofsd", self.virtiofsd)]
            .iter()
            .filter_map(|(k, p)| p.map(|p| format!("{k}={} {}\n", p.pid, p.start_time)))
            .collect()
    }

    pub fn parse(text: &str) -> Self {
        let mut out = PodProcesses::default();
        for (k, v) in text.lines().filter_map(|l| l.split_once('=')) {
            let id = v.split_once(' ').and_then(|(pid, start)| {
                Some(ProcessId {
                    pid: pid.parse().ok()?,
                    start_time: start.trim().parse().ok()?,
                })
            });
            match k {
                "shim" => out.shim = id,
                "virtiofsd" => out.virtiofsd = id,
                _ => {}
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn processes_round_trip_and_bad_lines_are_skipped() {
        let p = PodProcesses {
            shim: Some(ProcessId {
                pid: 42,
                start_time: 123_456,
            }),
            virtiofsd: Some(ProcessId {
                pid: 43,
                start_time: 123_460,
            }),
        };
        assert_eq!(p.to_text(), "shim=42 123456\nvirtiofsd=43 123460\n");
        assert_eq!(PodProcesses::parse(&p.to_text()), p);
        let partial = PodProcesses::parse("shim=x 1\nvirtiofsd=7 9\nother=1 2\n");
        assert_eq!(partial.shim, None);
        assert_eq!(
            partial.virtiofsd,
            Some(ProcessId {
                pid: 7,
                start_time: 9
            })
        );
    }
}
