//! virtio-rng counters.

use crate::metrics::Counter;

#[derive(Debug, Default)]
pub struct RngMetrics {
    pub requests: Counter,
    pub bytes: Counter,
    pub invalid_chains: Counter,
}

impl RngMetrics {
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "requests": self.requests.get(),
            "bytes": self.bytes.get(),
            "invalid_chains": self.invalid_chains.get(),
        })
    }
}
