//! virtio-net counters, with the NIC's identity so a report names it.

use serde::Serialize;

use crate::metrics::{Counter, Flag};

#[derive(Debug, Default, Serialize)]
pub struct NetMetrics {
    /// The tap's interface name.
    pub tap: String,
    /// The guest's MAC, `xx:xx:xx:xx:xx:xx`.
    pub mac: String,
    pub mtu: u16,
    /// Whether the event loop watches the tap for input.
    pub watching_rx: Flag,
    pub rx_packets: Counter,
    pub rx_bytes: Counter,
    pub tx_packets: Counter,
    pub tx_bytes: Counter,
    /// Times RX stopped watching the tap because the guest had no buffers posted.
    pub rx_no_buffer: Counter,
    /// Frames from the tap larger than the guest's buffer (a tap MTU above the configured one).
    pub rx_dropped: Counter,
    /// Frames the tap refused (EINVAL, EIO, ...).
    pub tx_dropped: Counter,
    /// Times the tap said EAGAIN on a write (TX then waits for it to be writable).
    pub tx_blocked: Counter,
    /// Times RX stopped because its rate limit ran out (the tap waits; nothing is dropped).
    pub rx_throttled: Counter,
    /// Times TX stopped because its rate limit ran out (chains wait in the ring).
    pub tx_throttled: Counter,
    /// Tap failures that stopped the device.
    pub tap_errors: Counter,
    pub invalid_chains: Counter,
    pub config_writes_ignored: Counter,
}
