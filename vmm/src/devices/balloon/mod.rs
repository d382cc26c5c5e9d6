//! virtio-balloon, for free page reporting only: the guest reports free memory, hull-vmm
//! gives its backing back to the host. The balloon itself never inflates.

mod device;
mod event_handler;
mod metrics;

pub use device::Balloon;
pub use metrics::BalloonMetrics;
