//! Guest-visible devices: legacy PC devices and virtio devices, one folder each.

pub(crate) mod balloon;
pub(crate) mod blk;
pub(crate) mod legacy;
pub(crate) mod mem;
pub(crate) mod net;
pub(crate) mod rate_limiter;
pub(crate) mod rng;
pub(crate) mod vhost_user_fs;
pub mod virtio;
pub(crate) mod vsock;
