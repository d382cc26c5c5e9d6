//! virtio-mem: the guest's memory grows and shrinks at run time in blocks of a region hull-vmm
//! reserved at boot (DESIGN §2 vmm/: hot-plug). The host sets the size it wants; the guest's
//! driver plugs or unplugs blocks until its plugged size meets it.

mod device;
mod event_handler;
mod metrics;

#[cfg(fuzzing)]
pub(crate) use device::BLOCK_SIZE;
pub use device::{MemStatus, VirtioMem};
pub use metrics::MemMetrics;
