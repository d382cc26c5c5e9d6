//! What the fuzz targets (`fuzz/`, built by `cargo fuzz` with `--cfg fuzzing`) drive: the
//! crate-private device models and the MMIO transport, re-exported only in that build so
//! they stay `pub(crate)` everywhere else (DESIGN §2: modules are crate-private unless
//! another crate uses them).

pub use crate::device_manager::bus::BusDevice;
pub use crate::devices::blk::Block;
pub use crate::devices::rng::Rng;
pub use crate::devices::virtio::mmio::{
    MmioTransport, STATUS_DRIVER, STATUS_DRIVER_OK, STATUS_FEATURES_OK,
};
pub use crate::devices::vsock::muxer::CONN_BUF_ALLOC;
pub use crate::devices::vsock::packet;
pub use crate::devices::vsock::{Muxer, Vsock, VsockMetrics};

/// The muxer's open connections (host- and guest-initiated), as `GET /metrics` shows them:
/// gauges have no getter outside the crate's metrics module.
pub fn conns_open(m: &VsockMetrics) -> u64 {
    serde_json::to_value(&m.conns_open)
        .ok()
        .and_then(|v| v.as_u64())
        .expect("a gauge serializes as a number")
}
