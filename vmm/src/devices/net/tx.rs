//! TX: chains (device-readable: header + frame) are written to the tap with vectored I/O
//! straight from guest memory ([`super::rx`] is the other way). Each chain is validated by
//! `DescChain::parse`; a bad one is completed with length 0 and counted, and only it fails.
//!
//! With event indices the guest is interrupted only when it asked to be, and TX drains the
//! ring with kicks off, turning them back on only once it is empty (spec 2.7.10).

use std::io::ErrorKind;

use virtio_queue::{Queue, QueueT};

use super::device::Net;
use super::{ETH_HLEN, MAX_FRAME, TXQ, VNET_HDR_LEN};
use crate::devices::rate_limiter;
use crate::devices::virtio::chain::ChainLimits;
use crate::devices::virtio::{DescChain, INT_VRING};
use crate::vstate::memory::GuestMemoryMmap;

/// Frames per wakeup and direction, so one busy NIC cannot starve the other devices on the
/// event loop; RX comes back through the level-triggered tap, TX through its own eventfd.
pub(super) const BATCH: usize = 64;
const TX_LIMITS: ChainLimits = ChainLimits {
    max_descriptors: 64,
    max_bytes: MAX_FRAME as u64,
};
/// Shortest TX chain: header and an Ethernet header (the tap refuses less).
const MIN_TX: u64 = (VNET_HDR_LEN + ETH_HLEN) as u64;
/// Puts the chain just popped back at the front of the available ring.
fn unpop(q: &mut Queue) {
    q.set_next_avail(q.next_avail().wrapping_sub(1));
}

/// Whether the guest has made a chain available that the device has not taken.
fn has_avail(q: &Queue, mem: &GuestMemoryMmap) -> bool {
    q.avail_idx(mem, std::sync::atomic::Ordering::Acquire)
        .is_ok_and(|i| i.0 != q.next_avail())
}

/// Errors that mean the tap itself is gone (its interface deleted, its netns destroyed), as
/// opposed to one frame the kernel refused.
pub(super) fn tap_is_gone(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EBADFD | libc::EBADF | libc::ENXIO)
    )
}

/// What became of one TX chain.
enum Sent {
    /// Handed to the tap, or dropped and counted: the bytes the chain held (header included).
    Done(u64),
    /// The tap is full: the chain goes back to the ring.
    Blocked,
    /// The tap is gone.
    Broken(std::io::Error),
}

impl Net {
    /// Sends what the guest queued; on EAGAIN the chain stays in the ring and the event loop
    /// watches the tap for room (`watch.tx_blocked`).
    pub fn process_tx(&mut self) {
        if !self.started || self.watch.broken || self.watch.tx_blocked || self.tx_limit.throttled()
        {
            return;
        }
        let Some(active) = &self.state.active else {
            return;
        };
        let mem = active.mem.clone();
        let irq = active.irq.clone();
        let mut used = false;
        let mut budget = BATCH;
        let mut looked_again = false;
        'drain: loop {
            // Kicks would only tell us what this loop is about to find.
            let _ = self.state.queues[TXQ].disable_notification(&mem);
            let mut popped = false;
            loop {
                if !has_avail(&self.state.queues[TXQ], &mem) {
                    break;
                }
                // Asked before the chain is taken: a throttled device leaves it in the ring
                // (kicks stay off; the limiter's timer brings the loop back).
                if !self.tx_limit.admit(rate_limiter::now()) {
                    self.metrics.tx_throttled.inc();
                    break 'drain;
                }
                let Some(chain) = self.state.queues[TXQ].pop_descriptor_chain(&mem) else {
                    break;
                };
                popped = true;
                let head = chain.head_index();
                match self.send(&mem, DescChain::parse(chain, &mem, TX_LIMITS)) {
                    Sent::Done(n) => self.tx_limit.charge(n),
                    Sent::Blocked => {
                        unpop(&mut self.state.queues[TXQ]);
                        self.metrics.tx_blocked.inc();
                        self.watch.tx_blocked = true;
                        break 'drain;
                    }
                    Sent::Broken(e) => {
                        unpop(&mut self.state.queues[TXQ]);
                        self.fail(&format!("write: {e}"));
                        break 'drain;
                    }
                }
                if self.state.queues[TXQ].add_used(&mem, head, 0).is_err() {
                    break 'drain;
                }
                used = true;
                budget -= 1;
                if budget == 0 {
                    // Come back on the next round for the rest (kicks are still off).
                    let _ = self.state.queue_evts[TXQ].write(1);
                    break 'drain;
                }
            }
            // Empty: kicks on again, unless more arrived meanwhile (then drain again: the guest
            // may have read the old avail event and not kicked). A ring that says "more" but
            // yields nothing twice (an avail index too far ahead) is the guest's error: wait
            // for its next kick rather than spin.
            match self.state.queues[TXQ].enable_notification(&mem) {
                Ok(true) if popped || !std::mem::replace(&mut looked_again, true) => continue,
                _ => break,
            }
        }
        if used
            && self.state.queues[TXQ]
                .needs_notification(&mem)
                .unwrap_or(true)
        {
            irq.trigger(INT_VRING);
        }
    }

    /// Sends one parsed TX chain: the header from our copy (sanitized), the frame straight
    /// from guest memory.
    fn send(
        &mut self,
        mem: &GuestMemoryMmap,
        parsed: Result<DescChain, crate::devices::virtio::ChainError>,
    ) -> Sent {
        let c = match parsed {
            Ok(c) if c.writable.is_empty() && c.readable_len() >= MIN_TX => c,
            _ => {
                self.metrics.invalid_chains.inc();
                return Sent::Done(0);
            }
        };
        let len = c.readable_len();
        let mut hdr = [0u8; VNET_HDR_LEN];
        let frame = match c
            .read_at(mem, 0, &mut hdr)
            .and_then(|()| c.slices(mem, false, VNET_HDR_LEN as u64))
        {
            Ok(f) => f,
            Err(_) => {
                self.metrics.invalid_chains.inc();
                return Sent::Done(len);
            }
        };
        if !self.neg.sanitize_tx(&mut hdr) {
            self.metrics.tx_dropped.inc();
            return Sent::Done(len);
        }
        match self.tap.write_frame_from(&hdr, &frame) {
            Ok(n) => {
                self.metrics.tx_packets.inc();
                self.metrics
                    .tx_bytes
                    .add(n.saturating_sub(VNET_HDR_LEN) as u64);
                Sent::Done(len)
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => Sent::Blocked,
            Err(e) if tap_is_gone(&e) => Sent::Broken(e),
            // The kernel refused this frame (a malformed header or frame: EINVAL, EIO): drop
            // it, as a NIC drops a bad frame.
            Err(_) => {
                self.metrics.tx_dropped.inc();
                Sent::Done(len)
            }
        }
    }
}
