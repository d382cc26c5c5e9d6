//! What the fuzz targets (`fuzz/`, built by `cargo fuzz` with `--cfg fuzzing`) drive: the
//! crate-private device models and the MMIO transport, re-exported only in that build so
//! they stay `pub(crate)` everywhere else (DESIGN §2: modules are crate-private unless
//! another crate uses them).

use std::os::fd::OwnedFd;
use std::path::Path;
use std::time::Duration;

pub use crate::device_manager::bus::BusDevice;
pub use crate::devices::blk::Block;
pub use crate::devices::mem::VirtioMem;
pub use crate::devices::net::{Net, NetError, NetMetrics, ETH_HLEN, MAX_FRAME, VNET_HDR_LEN};
pub use crate::devices::rng::Rng;
pub use crate::devices::virtio::mmio::{
    MmioTransport, STATUS_DRIVER, STATUS_DRIVER_OK, STATUS_FEATURES_OK,
};
pub use crate::devices::vsock::muxer::{MuxerError, CONN_BUF_ALLOC};
pub use crate::devices::vsock::packet;
pub use crate::devices::vsock::{Muxer, Vsock, VsockMetrics};

use crate::devices::net::Tap;

/// virtio-mem's block size.
pub const MEM_BLOCK: u64 = crate::devices::mem::BLOCK_SIZE;

/// The host asks `dev`'s guest for `bytes` plugged (`PUT /hotplug/memory`).
pub fn mem_request(dev: &mut VirtioMem, bytes: u64) -> Result<(), String> {
    dev.set_requested(bytes)
}

/// Bytes `dev` has plugged.
pub fn mem_plugged(dev: &VirtioMem) -> u64 {
    dev.status().plugged_bytes
}
use crate::devices::vsock::muxer::Limits;

/// The muxer's open connections (host- and guest-initiated), as `GET /metrics` shows them:
/// gauges have no getter outside the crate's metrics module.
pub fn conns_open(m: &VsockMetrics) -> u64 {
    serde_json::to_value(&m.conns_open)
        .ok()
        .and_then(|v| v.as_u64())
        .expect("a gauge serializes as a number")
}

/// A muxer with caps a fuzz run reaches: at most `host_conns` host clients (handshakes
/// included), `guest_conns` guest-initiated connections, `rx_orphans` queued RSTs, and
/// `timeout` for an unanswered REQUEST, an unreset SHUTDOWN or a missing `CONNECT` line.
pub fn muxer_with_limits(
    guest_cid: u64,
    uds: &Path,
    timeout: Duration,
    host_conns: usize,
    guest_conns: usize,
    rx_orphans: usize,
) -> Result<Muxer, MuxerError> {
    let limits = Limits {
        timeout,
        host_conns,
        guest_conns,
        rx_orphans,
    };
    Muxer::with_limits(guest_cid, uds, limits)
}

/// What a muxer holds at one moment (`Muxer::occupancy`): the counts its bounds are about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Occupancy {
    /// Host-initiated connections and handshakes, as the host cap counts them.
    pub host_conns: usize,
    /// The muxer's count of guest-initiated connections (the guest cap's).
    pub guest_conns: usize,
    /// Connections, and how many of them the guest opened (counted again, one by one).
    pub conns: usize,
    pub conns_from_guest: usize,
    /// Host clients that have not finished their `CONNECT` line.
    pub handshakes: usize,
    /// Connections the muxer can find by fd.
    pub fds: usize,
    /// RSTs for no connection waiting for the guest.
    pub rx_orphans: usize,
    /// The queue of connections with something for the guest, and its set.
    pub rx_ready: usize,
    pub rx_ready_set: usize,
    /// The longest control queue of any connection.
    pub max_ctrl: usize,
    /// The most bytes a handshake holds, guest data a connection buffers for its host
    /// stream, and host data that came with a `CONNECT` line.
    pub max_handshake_buf: usize,
    pub max_tx_buf: usize,
    pub max_early: usize,
}

/// What `m` holds now.
pub fn occupancy(m: &Muxer) -> Occupancy {
    m.occupancy()
}

/// A virtio-net device whose tap is `sock`, one end of a datagram socket pair: each datagram
/// is one frame with its virtio-net header, as a tap reads and writes them; the tap ioctls
/// are skipped (offloads the guest accepts are taken as set).
pub fn net_on_socket(sock: OwnedFd, mac: [u8; 6], mtu: u16) -> Result<Net, NetError> {
    Net::new(Tap::fake(sock), mac, mtu)
}
