//! virtio-blk counters.

use crate::metrics::Counter;

#[derive(Debug, Default)]
pub struct BlockMetrics {
    pub reads: Counter,
    pub writes: Counter,
    pub flushes: Counter,
    pub read_bytes: Counter,
    pub write_bytes: Counter,
    pub io_errors: Counter,
    pub invalid_chains: Counter,
}

impl BlockMetrics {
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "reads": self.reads.get(),
            "writes": self.writes.get(),
            "flushes": self.flushes.get(),
            "read_bytes": self.read_bytes.get(),
            "write_bytes": self.write_bytes.get(),
            "io_errors": self.io_errors.get(),
            "invalid_chains": self.invalid_chains.get(),
        })
    }
}
