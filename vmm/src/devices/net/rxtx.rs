//! Moving frames: TX chains (device-readable: header + frame) are written to the tap, frames
//! read from the tap go into RX chains (device-writable), both with vectored I/O straight
//! from and into guest memory. Each chain is validated by `DescChain::parse`; a bad one is
//! completed with length 0 and counted, and only it fails.
//!
//! With event indices the guest is interrupted only when it asked to be, and TX drains the
//! ring with kicks off, turning them back on only once it is empty (spec 2.7.10).

use std::io::ErrorKind;

use virtio_queue::{Queue, QueueT};

use super::device::Net;
use super::{ETH_HLEN, MAX_FRAME, RXQ, TXQ, VNET_HDR_LEN};
use crate::devices::virtio::chain::ChainLimits;
use crate::devices::virtio::{DescChain, INT_VRING};
use crate::vstate::memory::GuestMemoryMmap;

/// Frames per wakeup and direction, so one busy NIC cannot starve the other devices on the
/// event loop; RX comes back through the level-triggered tap, TX through its own eventfd.
const BATCH: usize = 64;
const TX_LIMITS: ChainLimits = ChainLimits {
    max_descriptors: 64,
    max_bytes: MAX_FRAME as u64,
};
/// RX buffers may be larger than a frame (Linux posts page-sized ones for big MTUs).
const RX_LIMITS: ChainLimits = ChainLimits {
    max_descriptors: 64,
    max_bytes: 1 << 20,
};
/// Most chains one frame may be spread over with mergeable buffers: a 64 KiB segment in
/// Linux's smallest mergeable buffers (1.5 KiB) needs 44. Bounds the iovecs of one read.
const MAX_MERGED: usize = 64;
/// Shortest TX chain: header and an Ethernet header (the tap refuses less).
const MIN_TX: u64 = (VNET_HDR_LEN + ETH_HLEN) as u64;
/// Offset of `num_buffers` in the header.
const NUM_BUFFERS: u64 = 10;

/// Puts the chain just popped back at the front of the available ring.
fn unpop(q: &mut Queue) {
    q.set_next_avail(q.next_avail().wrapping_sub(1));
}

/// Errors that mean the tap itself is gone (its interface deleted, its netns destroyed), as
/// opposed to one frame the kernel refused.
fn tap_is_gone(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EBADFD | libc::EBADF | libc::ENXIO)
    )
}

/// What became of one TX chain.
enum Sent {
    /// Handed to the tap (bytes of frame, header not counted), or dropped and counted.
    Done,
    /// The tap is full: the chain goes back to the ring.
    Blocked,
    /// The tap is gone.
    Broken(std::io::Error),
}

/// What became of one RX attempt.
enum Rx {
    /// A frame was delivered in this many chains (0: it was dropped, the chains stay pending).
    Delivered(usize),
    /// The tap has nothing now; the chains stay pending.
    Empty,
    /// The tap failed; the device stopped.
    Failed,
}

/// An RX chain taken from the ring and waiting for a frame.
#[derive(Debug)]
pub(super) struct RxChain {
    head: u16,
    chain: DescChain,
    room: u64,
}

impl Net {
    /// Sends what the guest queued; on EAGAIN the chain stays in the ring and the event loop
    /// watches the tap for room (`watch.tx_blocked`).
    pub fn process_tx(&mut self) {
        if !self.started || self.watch.broken || self.watch.tx_blocked {
            return;
        }
        let Some(active) = &self.state.active else {
            return;
        };
        let mem = active.mem.clone();
        let irq = active.irq.clone();
        let mut used = false;
        let mut budget = BATCH;
        'drain: loop {
            // Kicks would only tell us what this loop is about to find.
            let _ = self.state.queues[TXQ].disable_notification(&mem);
            let mut popped = false;
            while let Some(chain) = self.state.queues[TXQ].pop_descriptor_chain(&mem) {
                popped = true;
                let head = chain.head_index();
                match self.send(&mem, DescChain::parse(chain, &mem, TX_LIMITS)) {
                    Sent::Done => {}
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
            // Empty: kicks on again, unless more arrived meanwhile. A ring that says "more"
            // but yields nothing (an avail index too far ahead) is the guest's error: wait
            // for its next kick rather than spin.
            match self.state.queues[TXQ].enable_notification(&mem) {
                Ok(true) if popped => continue,
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
                return Sent::Done;
            }
        };
        let mut hdr = [0u8; VNET_HDR_LEN];
        let frame = match c
            .read_at(mem, 0, &mut hdr)
            .and_then(|()| c.slices(mem, false, VNET_HDR_LEN as u64))
        {
            Ok(f) => f,
            Err(_) => {
                self.metrics.invalid_chains.inc();
                return Sent::Done;
            }
        };
        if !self.neg.sanitize_tx(&mut hdr) {
            self.metrics.tx_dropped.inc();
            return Sent::Done;
        }
        match self.tap.write_frame_from(&hdr, &frame) {
            Ok(n) => {
                self.metrics.tx_packets.inc();
                self.metrics
                    .tx_bytes
                    .add(n.saturating_sub(VNET_HDR_LEN) as u64);
                Sent::Done
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => Sent::Blocked,
            Err(e) if tap_is_gone(&e) => Sent::Broken(e),
            // The kernel refused this frame (a malformed header or frame: EINVAL, EIO): drop
            // it, as a NIC drops a bad frame.
            Err(_) => {
                self.metrics.tx_dropped.inc();
                Sent::Done
            }
        }
    }

    /// Delivers frames from the tap into the guest's RX buffers. When the guest has too
    /// little room left for a frame, stops wanting tap input (`watch.rx_wanted`) until it
    /// posts more and notifies the queue.
    pub fn process_rx(&mut self) {
        if !self.started || self.watch.broken {
            return;
        }
        let Some(active) = &self.state.active else {
            return;
        };
        let mem = active.mem.clone();
        let irq = active.irq.clone();
        let mut used = false;
        let mut frames = 0;
        let mut looked_again = false;
        while frames < BATCH {
            self.take_rx_chains(&mem, &mut used);
            let Some(k) = self.chains_for_a_frame() else {
                // Too little room. Every available chain is taken, so the ring's avail event
                // (event indices) now asks for a kick at the guest's next buffer; if one
                // came in meanwhile, take it and look again, once (a ring whose avail index
                // is broken says "more" forever).
                if let Ok(true) = self.state.queues[RXQ].enable_notification(&mem) {
                    if !std::mem::replace(&mut looked_again, true) {
                        continue;
                    }
                }
                self.watch.rx_wanted = false;
                self.metrics.rx_no_buffer.inc();
                break;
            };
            match self.receive(&mem, k) {
                Rx::Delivered(n) => used |= n > 0,
                Rx::Empty | Rx::Failed => break,
            }
            frames += 1;
        }
        if used
            && self.state.queues[RXQ]
                .needs_notification(&mem)
                .unwrap_or(true)
        {
            irq.trigger(INT_VRING);
        }
    }

    /// Takes every chain the guest has made available into `rx_pending`, in order. A chain
    /// that is malformed or too small is completed at once with length 0 (the driver finds
    /// buffers by id, so completing it ahead of pending ones is fine).
    fn take_rx_chains(&mut self, mem: &GuestMemoryMmap, used: &mut bool) {
        let min = self.rx_chain_min();
        while let Some(chain) = self.state.queues[RXQ].pop_descriptor_chain(mem) {
            let head = chain.head_index();
            match DescChain::parse(chain, mem, RX_LIMITS) {
                Ok(c) if c.readable.is_empty() && c.writable_len() >= min => {
                    let room = c.writable_len();
                    self.rx_pending.push_back(RxChain {
                        head,
                        chain: c,
                        room,
                    });
                }
                _ => {
                    self.metrics.invalid_chains.inc();
                    if self.state.queues[RXQ].add_used(mem, head, 0).is_err() {
                        return;
                    }
                    *used = true;
                }
            }
        }
    }

    /// Smallest RX chain accepted: room for a whole frame, or with mergeable buffers a header
    /// and, when 64 KiB segments may come, 1/[`MAX_MERGED`] of one (Linux's are 1.5 KiB+).
    fn rx_chain_min(&self) -> u64 {
        if !self.neg.mrg_rxbuf {
            self.rx_frame_room()
        } else if self.neg.guest_gso() {
            (MAX_FRAME as u64).div_ceil(MAX_MERGED as u64)
        } else {
            VNET_HDR_LEN as u64
        }
    }

    /// How many of the first pending chains the next frame may need, if they can hold it.
    fn chains_for_a_frame(&self) -> Option<usize> {
        if !self.neg.mrg_rxbuf {
            return (!self.rx_pending.is_empty()).then_some(1);
        }
        let need = self.rx_frame_room();
        let mut room = 0;
        for (i, c) in self.rx_pending.iter().take(MAX_MERGED).enumerate() {
            room += c.room;
            if room >= need {
                return Some(i + 1);
            }
        }
        None
    }

    /// Reads one frame into the first `k` pending chains and completes the ones it filled;
    /// the rest stay pending.
    fn receive(&mut self, mem: &GuestMemoryMmap, k: usize) -> Rx {
        let chains: Vec<&RxChain> = self.rx_pending.iter().take(k).collect();
        let room: u64 = chains.iter().map(|c| c.room).sum();
        let mut bufs = Vec::new();
        for c in &chains {
            match c.chain.slices(mem, true, 0) {
                Ok(s) => bufs.extend(s),
                Err(_) => {
                    // Checked by parse; only a memory layout change could get here.
                    self.fail("RX buffers left guest memory");
                    return Rx::Failed;
                }
            }
        }
        // The tap reports the frame's whole length even when it had to cut it.
        let n = match self.tap.read_frame_into(&bufs) {
            Ok(n) => n as u64,
            Err(e) if e.kind() == ErrorKind::WouldBlock => return Rx::Empty,
            Err(e) => {
                self.fail(&format!("read: {e}"));
                return Rx::Failed;
            }
        };
        if n < VNET_HDR_LEN as u64 || n > room {
            // Larger than the MTU promised (a tap whose MTU is above the configured one):
            // the frame is lost, the buffers serve the next one.
            self.metrics.rx_dropped.inc();
            return Rx::Delivered(0);
        }
        // The chains the frame filled, in order, and their lengths.
        let mut left = n;
        let mut lens = Vec::new();
        for c in &chains {
            if left == 0 {
                break;
            }
            let l = left.min(c.room);
            lens.push(u32::try_from(l).unwrap_or(u32::MAX));
            left -= l;
        }
        let filled = u16::try_from(lens.len()).unwrap_or(u16::MAX);
        // The header's last two bytes are ours (the tap skips them): how many buffers the
        // frame took. Without GUEST_CSUM its flags must be 0 (the tap may say DATA_VALID).
        let first = &chains[0].chain;
        let mut fixed = first.write_at(mem, NUM_BUFFERS, &filled.to_le_bytes());
        if !self.neg.guest_csum {
            fixed = fixed.and_then(|()| first.write_at(mem, 0, &[0]));
        }
        if fixed.is_err() {
            self.metrics.invalid_chains.inc();
        }
        for len in &lens {
            let Some(c) = self.rx_pending.pop_front() else {
                return Rx::Failed;
            };
            if self.state.queues[RXQ].add_used(mem, c.head, *len).is_err() {
                return Rx::Failed;
            }
        }
        self.metrics.rx_packets.inc();
        self.metrics.rx_bytes.add(n - VNET_HDR_LEN as u64);
        Rx::Delivered(lens.len())
    }
}
