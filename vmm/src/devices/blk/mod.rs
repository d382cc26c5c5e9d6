//! virtio-blk: a raw disk image file, optionally read-only, with flush and a device id.

mod device;
mod event_handler;
mod metrics;

pub use device::Block;
pub(crate) use device::BlockKit;
pub use metrics::BlockMetrics;
