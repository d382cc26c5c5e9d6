//! virtio-balloon counters.

use serde::Serialize;

use crate::metrics::Counter;

#[derive(Debug, Default, Serialize)]
pub struct BalloonMetrics {
    /// Free page reports (chains) the guest sent while hull-vmm could release them.
    pub reports: Counter,
    /// Bytes of whole pages reported free and punched out of guest RAM.
    pub reported_bytes: Counter,
    /// Of those, bytes that held host memory and were given back (untouched guest RAM holds
    /// none: the guest reports its never-used memory too).
    pub released_bytes: Counter,
    /// Reported ranges the host could not release (the guest keeps them; nothing else).
    pub release_errors: Counter,
    /// Inflate and deflate requests (the host never asks for them), and reports made while
    /// releasing is off (the driver did not take reporting, or poisons free pages): returned
    /// untouched.
    pub ignored_requests: Counter,
    /// Malformed chains: outside guest memory, empty buffers, ranges over 4 MiB.
    pub invalid_chains: Counter,
}
