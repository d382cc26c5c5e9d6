//! virtio-fs through vhost-user (DESIGN.md §1, rootfs and volumes): an external virtiofsd serves
//! the guest's shared filesystem; hull-vmm presents the device, hands the back end guest memory,
//! the queues' KVM ioeventfds and the device's irqfd, and ends the VM when the back end goes away.
//! The VMM never touches the queues, so no file server runs inside its seccomp jail.

mod device;
mod event_handler;
mod frontend;
mod metrics;
#[cfg(test)]
mod test_backend;
#[cfg(test)]
mod tests;

pub use device::{VhostUserFs, TAG_LEN};
pub use frontend::FsError;
pub use metrics::FsMetrics;
