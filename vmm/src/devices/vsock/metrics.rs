//! virtio-vsock counters.

use crate::metrics::Counter;

#[derive(Debug, Default)]
pub struct VsockMetrics {
    pub tx_packets: Counter,
    pub rx_packets: Counter,
    pub invalid_chains: Counter,
}

impl VsockMetrics {
    pub fn to_json(&self, mux: &super::muxer::MuxerStats, conns: usize) -> serde_json::Value {
        serde_json::json!({
            "tx_packets": self.tx_packets.get(),
            "rx_packets": self.rx_packets.get(),
            "invalid_chains": self.invalid_chains.get(),
            "conns_open": conns,
            "conns_opened": mux.conns_opened,
            "conns_refused": mux.conns_refused,
            "rst_sent": mux.rst_sent,
            "tx_bytes": mux.tx_bytes,
            "rx_bytes": mux.rx_bytes,
        })
    }
}
