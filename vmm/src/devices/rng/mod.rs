//! virtio-rng: entropy from the host's `/dev/urandom`.

mod device;
mod event_handler;
mod metrics;

pub use device::Rng;
pub use metrics::RngMetrics;
