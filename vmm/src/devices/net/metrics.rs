//! virtio-net counters.

use super::device::Net;
use crate::metrics::Counter;

#[derive(Debug, Default)]
pub struct NetMetrics {
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
    /// Tap failures that stopped the device.
    pub tap_errors: Counter,
    pub invalid_chains: Counter,
    pub config_writes_ignored: Counter,
}

impl NetMetrics {
    pub fn to_json(&self, dev: &Net) -> serde_json::Value {
        let mac = dev.mac().map(|b| format!("{b:02x}")).join(":");
        serde_json::json!({
            "tap": dev.tap.name(),
            "mac": mac,
            "mtu": dev.mtu,
            "watching_rx": dev.watching_rx(),
            "rx_packets": self.rx_packets.get(),
            "rx_bytes": self.rx_bytes.get(),
            "tx_packets": self.tx_packets.get(),
            "tx_bytes": self.tx_bytes.get(),
            "rx_no_buffer": self.rx_no_buffer.get(),
            "rx_dropped": self.rx_dropped.get(),
            "tx_dropped": self.tx_dropped.get(),
            "tx_blocked": self.tx_blocked.get(),
            "tap_errors": self.tap_errors.get(),
            "invalid_chains": self.invalid_chains.get(),
            "config_writes_ignored": self.config_writes_ignored.get(),
        })
    }
}
