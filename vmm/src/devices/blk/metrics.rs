//! virtio-blk counters.

use serde::Serialize;

use crate::metrics::Counter;

#[derive(Debug, Default, Serialize)]
pub struct BlockMetrics {
    pub reads: Counter,
    pub writes: Counter,
    pub flushes: Counter,
    pub read_bytes: Counter,
    pub write_bytes: Counter,
    pub io_errors: Counter,
    /// Times the queue stopped because the disk's rate limit ran out (requests wait).
    pub throttled: Counter,
    pub invalid_chains: Counter,
}
