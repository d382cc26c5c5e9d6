//! virtio-fs counters. The requests themselves are the back end's, so these only tell whether
//! the hand-over worked.

use super::frontend::Backend;
use crate::metrics::Counter;

#[derive(Debug, Default)]
pub struct FsMetrics {
    /// Vrings handed to the back end at activation.
    pub vrings_started: Counter,
    /// Back-end refusals or a lost connection (each ends the VM).
    pub backend_errors: Counter,
}

impl FsMetrics {
    pub fn to_json(&self, backend: &Backend) -> serde_json::Value {
        serde_json::json!({
            "socket": backend.path(),
            "backend_features": format!("{:#x}", backend.features()),
            "protocol_features": format!("{:#x}", backend.protocol().map_or(0, |p| p.bits())),
            "vrings_started": self.vrings_started.get(),
            "backend_errors": self.backend_errors.get(),
        })
    }
}
