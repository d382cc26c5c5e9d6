//! virtio-vsock counters: the device's packets and the muxer's connections, which share one
//! set (the muxer counts into the device's).

use serde::Serialize;

use crate::metrics::{Counter, Gauge};

#[derive(Debug, Default, Serialize)]
pub struct VsockMetrics {
    pub tx_packets: Counter,
    pub rx_packets: Counter,
    pub invalid_chains: Counter,
    pub conns_open: Gauge,
    pub conns_opened: Counter,
    pub conns_refused: Counter,
    pub rst_sent: Counter,
    /// Payload bytes guest → host and host → guest.
    pub tx_bytes: Counter,
    pub rx_bytes: Counter,
}
