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
    /// Dropped after the guest left a REQUEST unanswered or a shutdown unreset for
    /// `muxer::TIMEOUT`, or a host client sent no `CONNECT` line in that time.
    pub conns_timed_out: Counter,
    pub rst_sent: Counter,
    /// RSTs for no connection not queued because the guest left too many unread.
    pub rst_dropped: Counter,
    /// Payload bytes guest → host and host → guest.
    pub tx_bytes: Counter,
    pub rx_bytes: Counter,
}
