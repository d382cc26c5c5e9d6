//! Guest-visible devices: legacy PC devices and virtio devices, one folder each.

pub mod blk;
pub mod legacy;
pub mod net;
pub mod rng;
pub mod vhost_user_fs;
pub mod virtio;
pub mod vsock;
