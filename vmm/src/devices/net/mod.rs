//! virtio-net with a tap back end (DESIGN.md §1, networking): one RX and one TX queue served on the
//! VMM event loop. Frames move between the tap and guest memory with vectored I/O, no bounce
//! buffer; checksum and TCP segmentation offloads both ways, mergeable RX buffers and event-index
//! notification suppression when the driver accepts them ([`offload`]). The tap is watched for
//! input only while the guest has RX buffers posted.

#[cfg(any(test, feature = "bench"))]
pub mod bench;
mod device;
mod event_handler;
mod metrics;
mod offload;
mod rx;
mod tap;
#[cfg(test)]
mod tests;
mod tx;

pub use device::Net;
pub use metrics::NetMetrics;
#[cfg(fuzzing)]
pub(crate) use tap::Tap;
pub use tap::{TapError, MAX_NAME_LEN, VNET_HDR_LEN};

/// Queue indices (spec 5.1.2: receiveq1, transmitq1).
pub const RXQ: usize = 0;
pub const TXQ: usize = 1;
/// Ethernet header, and the VLAN tag a frame may carry on top of the MTU.
pub const ETH_HLEN: usize = 14;
pub const VLAN_HLEN: usize = 4;
/// Largest frame with its virtio-net header either way (a 64 KiB TSO segment, as in
/// Firecracker).
pub const MAX_FRAME: usize = 65562;
/// Largest MTU: a full frame of it plus headers and a VLAN tag still fits in `MAX_FRAME`.
pub const MAX_MTU: u16 = 65532;
const _: () = assert!(MAX_MTU as usize + VNET_HDR_LEN + ETH_HLEN + VLAN_HLEN == MAX_FRAME);
/// Smallest MTU (IPv4's minimum).
pub const MIN_MTU: u16 = 68;
/// The MTU when the configuration names none.
pub const DEFAULT_MTU: u16 = 1500;

/// Building a NIC failed. The cause is in the message and not a `source`, so chain printers
/// (`hull-vmm: boot failed: ...`) do not repeat it.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("virtio-net: {0}")]
    Tap(TapError),
    #[error("virtio-net: invalid configuration: {0}")]
    Config(String),
    #[error("virtio-net: {0}")]
    Io(std::io::Error),
}

impl From<TapError> for NetError {
    fn from(e: TapError) -> Self {
        NetError::Tap(e)
    }
}

impl From<std::io::Error> for NetError {
    fn from(e: std::io::Error) -> Self {
        NetError::Io(e)
    }
}
