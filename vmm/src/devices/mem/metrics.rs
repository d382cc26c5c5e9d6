//! virtio-mem counters.

use serde::Serialize;

use crate::metrics::Counter;

#[derive(Debug, Default, Serialize)]
pub struct MemMetrics {
    /// Plug requests the device granted.
    pub plugs: Counter,
    /// Unplug requests (one range, or all) the device granted.
    pub unplugs: Counter,
    /// Plug requests refused because the guest already holds what the host asked for.
    pub nacks: Counter,
    /// Requests refused as invalid: outside the usable region, unaligned, a block in the
    /// wrong state, an unknown type.
    pub errors: Counter,
    /// Bytes of host memory unplugged blocks held and gave back.
    pub released_bytes: Counter,
    /// Malformed chains: too short for a request or its response, or outside guest memory.
    pub invalid_chains: Counter,
}
