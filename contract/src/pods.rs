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

/// The pod's identity file, relative to its directory ([`PodIdentity`]).
pub const IDENTITY: &str = "identity";

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
