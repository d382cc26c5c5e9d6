//! What the driver accepted, as the device uses it: which virtio-net header fields it may
//! send and must be sent, how RX buffers are laid out, and which offloads the tap may pass.
//!
//! A feature whose prerequisite was not accepted is treated as not accepted (spec 5.1.3.1:
//! HOST_TSO needs CSUM, GUEST_TSO needs GUEST_CSUM); a driver that acks it anyway gets the
//! conservative behaviour, never a header the other side did not agree to.

use libc::c_uint;
use virtio_bindings::virtio_net::{
    VIRTIO_NET_F_CSUM, VIRTIO_NET_F_GUEST_CSUM, VIRTIO_NET_F_GUEST_TSO4, VIRTIO_NET_F_GUEST_TSO6,
    VIRTIO_NET_F_HOST_TSO4, VIRTIO_NET_F_HOST_TSO6, VIRTIO_NET_F_MAC, VIRTIO_NET_F_MRG_RXBUF,
    VIRTIO_NET_F_MTU,
};
use virtio_bindings::virtio_ring::VIRTIO_RING_F_EVENT_IDX;

/// Everything the device offers: checksum and TCP segmentation offload both ways, mergeable
/// RX buffers (64 KiB frames without 64 KiB buffers), and event-index notification
/// suppression (each notification and interrupt is a VM exit). No UFO: Linux dropped it.
pub const OFFERED: u64 = (1 << VIRTIO_NET_F_MAC)
    | (1 << VIRTIO_NET_F_MTU)
    | (1 << VIRTIO_NET_F_CSUM)
    | (1 << VIRTIO_NET_F_GUEST_CSUM)
    | (1 << VIRTIO_NET_F_HOST_TSO4)
    | (1 << VIRTIO_NET_F_HOST_TSO6)
    | (1 << VIRTIO_NET_F_GUEST_TSO4)
    | (1 << VIRTIO_NET_F_GUEST_TSO6)
    | (1 << VIRTIO_NET_F_MRG_RXBUF)
    | (1 << VIRTIO_RING_F_EVENT_IDX);

/// `virtio_net_hdr.gso_type` values and the ECN bit.
pub const GSO_NONE: u8 = 0;
pub const GSO_TCPV4: u8 = 1;
pub const GSO_TCPV6: u8 = 4;
pub const GSO_ECN: u8 = 0x80;

/// The accepted features that change what the device does.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Negotiated {
    /// TX frames may carry a partial checksum.
    pub csum: bool,
    /// TX frames may be TCP/IPv4 (IPv6) segments up to 64 KiB.
    pub tso4: bool,
    pub tso6: bool,
    /// RX frames may carry a partial checksum, or be marked as checked.
    pub guest_csum: bool,
    /// RX frames may be TCP/IPv4 (IPv6) segments up to 64 KiB.
    pub guest_tso4: bool,
    pub guest_tso6: bool,
    /// An RX frame may span several buffers (`num_buffers`).
    pub mrg_rxbuf: bool,
    /// Notifications and interrupts follow the rings' event indices.
    pub event_idx: bool,
}

impl Negotiated {
    pub fn from_acked(acked: u64) -> Self {
        let has = |bit: u32| acked & (1 << bit) != 0;
        let csum = has(VIRTIO_NET_F_CSUM);
        let guest_csum = has(VIRTIO_NET_F_GUEST_CSUM);
        Negotiated {
            csum,
            tso4: csum && has(VIRTIO_NET_F_HOST_TSO4),
            tso6: csum && has(VIRTIO_NET_F_HOST_TSO6),
            guest_csum,
            guest_tso4: guest_csum && has(VIRTIO_NET_F_GUEST_TSO4),
            guest_tso6: guest_csum && has(VIRTIO_NET_F_GUEST_TSO6),
            mrg_rxbuf: has(VIRTIO_NET_F_MRG_RXBUF),
            event_idx: has(VIRTIO_RING_F_EVENT_IDX),
        }
    }

    /// The tap's `TUNSETOFFLOAD` flags: what the tap may hand us for the guest. Anything else
    /// the kernel finishes (checksums, segmentation) before the frame reaches us.
    pub fn tap_offload(&self) -> c_uint {
        let mut f = 0;
        if self.guest_csum {
            f |= libc::TUN_F_CSUM;
        }
        if self.guest_tso4 {
            f |= libc::TUN_F_TSO4;
        }
        if self.guest_tso6 {
            f |= libc::TUN_F_TSO6;
        }
        f
    }

    /// Whether RX frames may be 64 KiB segments.
    pub fn guest_gso(&self) -> bool {
        self.guest_tso4 || self.guest_tso6
    }

    /// Makes a TX header from the guest safe to hand to the tap: fields of offloads the
    /// driver did not accept are cleared (the frame goes out as a plain one), `num_buffers` is
    /// zeroed. Returns false for a segmentation request the driver did not negotiate: that
    /// frame cannot be sent as it is (it would exceed the MTU) and is dropped.
    pub fn sanitize_tx(&self, hdr: &mut [u8; 12]) -> bool {
        hdr[10..12].fill(0);
        if !self.csum {
            hdr[..10].fill(0);
            return true;
        }
        let gso = hdr[1] & !GSO_ECN;
        match gso {
            GSO_NONE => {
                // No segmentation: gso_size and hdr_len mean nothing; keep csum fields.
                hdr[1] = GSO_NONE;
                hdr[4..6].fill(0);
                true
            }
            GSO_TCPV4 => self.tso4,
            GSO_TCPV6 => self.tso6,
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prerequisites_and_tap_flags() {
        let all = Negotiated::from_acked(OFFERED);
        assert!(all.csum && all.tso4 && all.tso6 && all.guest_tso4 && all.mrg_rxbuf);
        assert_eq!(
            all.tap_offload(),
            libc::TUN_F_CSUM | libc::TUN_F_TSO4 | libc::TUN_F_TSO6
        );
        // TSO without its checksum feature counts as not accepted.
        let tso_only =
            Negotiated::from_acked((1 << VIRTIO_NET_F_HOST_TSO4) | (1 << VIRTIO_NET_F_GUEST_TSO4));
        assert!(!tso_only.tso4 && !tso_only.guest_tso4);
        assert_eq!(tso_only.tap_offload(), 0);
        assert_eq!(Negotiated::from_acked(0), Negotiated::default());
    }

    #[test]
    fn tx_headers_are_cut_to_what_was_agreed() {
        let gso_hdr = |gso: u8| -> [u8; 12] { [1, gso, 54, 0, 0xa8, 0x05, 34, 0, 16, 0, 9, 9] };
        // Nothing agreed: a plain frame, whatever the guest wrote.
        let none = Negotiated::default();
        let mut h = gso_hdr(GSO_TCPV4);
        assert!(none.sanitize_tx(&mut h));
        assert_eq!(h, [0; 12]);
        // Checksum only: the checksum request stays, a TSO request drops the frame.
        let csum = Negotiated::from_acked(1 << VIRTIO_NET_F_CSUM);
        let mut h = gso_hdr(GSO_NONE);
        assert!(csum.sanitize_tx(&mut h));
        assert_eq!(h, [1, 0, 54, 0, 0, 0, 34, 0, 16, 0, 0, 0]);
        assert!(!csum.sanitize_tx(&mut gso_hdr(GSO_TCPV4)));
        // Everything: TSO passes (ECN bit too), num_buffers is cleared; UDP GSO never does.
        let all = Negotiated::from_acked(OFFERED);
        let mut h = gso_hdr(GSO_TCPV6 | GSO_ECN);
        assert!(all.sanitize_tx(&mut h));
        assert_eq!(&h[10..], &[0, 0]);
        assert!(!all.sanitize_tx(&mut gso_hdr(3)));
        assert!(!all.sanitize_tx(&mut gso_hdr(5)));
    }
}
