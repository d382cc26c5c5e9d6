//! virtio-rng counters.

use serde::Serialize;

use crate::metrics::Counter;

#[derive(Debug, Default, Serialize)]
pub struct RngMetrics {
    pub requests: Counter,
    pub bytes: Counter,
    pub invalid_chains: Counter,
}
