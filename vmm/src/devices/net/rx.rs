//! RX: frames read from the tap go into the guest's RX chains (device-writable) with vectored
//! I/O straight into guest memory.
//!
//! The device takes every chain the guest posts into `rx_pending` (so the ring's avail event,
//! with event indices, always points past the last one) and reads a frame once the pending
//! chains hold room for the largest frame the tap may deliver. With mergeable buffers a frame
//! spreads over as many chains as it fills; all of them become used at once, with one update
//! of the used index (spec 5.1.6.4: the driver must find a packet's buffers together), and
//! `num_buffers` in the first says how many.

use std::io::ErrorKind;
use std::sync::atomic::{fence, Ordering};

use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestAddress};

use super::device::Net;
use super::tx::{tap_is_gone, BATCH};
use super::{MAX_FRAME, RXQ, VNET_HDR_LEN};
use crate::devices::rate_limiter;
use crate::devices::virtio::chain::ChainLimits;
use crate::devices::virtio::{DescChain, INT_VRING};
use crate::vstate::memory::GuestMemoryMmap;

/// RX buffers may be larger than a frame (Linux posts page-sized ones for big MTUs).
const RX_LIMITS: ChainLimits = ChainLimits {
    max_descriptors: 64,
    max_bytes: 1 << 20,
};
/// With mergeable buffers each chain is one small buffer (Linux: one descriptor); fewer
/// descriptors keep a frame's iovecs (at most [`MAX_MERGED`] chains) under the kernel's 1024
/// even when every buffer crosses a memory region boundary.
const MRG_LIMITS: ChainLimits = ChainLimits {
    max_descriptors: 7,
    max_bytes: 1 << 20,
};
/// Most chains one frame may be spread over with mergeable buffers: a 64 KiB segment in
/// Linux's smallest mergeable buffers (1.5 KiB) needs 44.
const MAX_MERGED: usize = 64;
/// Offset of `num_buffers` in the header.
const NUM_BUFFERS: u64 = 10;
/// Passes over the ring per wakeup beyond one per frame: a guest posting buffers one at a
/// time while the device looks cannot keep it in the loop.
const MAX_LOOKS: usize = 4;

/// An RX chain taken from the ring and waiting for a frame.
#[derive(Debug)]
pub(super) struct RxChain {
    head: u16,
    chain: DescChain,
    room: u64,
}

/// What became of one RX attempt.
enum Rx {
    /// A frame of this many bytes (header included) was delivered, or dropped (counted);
    /// either way it is gone from the tap.
    Done(u64),
    /// The tap has nothing now.
    Empty,
    /// The tap failed for good; the device stopped.
    Failed,
}

impl Net {
    /// Delivers frames from the tap into the guest's RX buffers. When the guest has too
    /// little room left for a frame, stops wanting tap input (`watch.rx_wanted`) until it
    /// posts more and notifies the queue.
    pub fn process_rx(&mut self) {
        if !self.started || self.watch.broken || self.watch.rx_throttled {
            return;
        }
        let Some(active) = &self.state.active else {
            return;
        };
        let mem = active.mem.clone();
        let irq = active.irq.clone();
        let old_used = self.state.queues[RXQ].next_used();
        let mut frames = 0;
        let mut looks = 0;
        while frames < BATCH {
            let taken = self.take_rx_chains(&mem);
            let Some(k) = self.chains_for_a_frame() else {
                // Too little room. Every available chain is taken, so the ring's avail event
                // (event indices) now asks for a kick at the guest's next buffer. If buffers
                // came in meanwhile the guest may have read the old event and not kicked:
                // look again (a bounded number of times: a ring whose avail index is broken
                // says "more" forever, and then nothing new is taken).
                let more = self.state.queues[RXQ].enable_notification(&mem);
                if matches!(more, Ok(true)) && (taken > 0 || looks == 0) && looks < MAX_LOOKS {
                    looks += 1;
                    continue;
                }
                self.watch.rx_wanted = false;
                self.metrics.rx_no_buffer.inc();
                break;
            };
            // The limit is asked before the frame is read: a frame once read must be
            // delivered, and its size is known only then (rate_limiter.rs: debt).
            if !self.rx_limit.admit(rate_limiter::now()) {
                self.watch.rx_throttled = true;
                self.metrics.rx_throttled.inc();
                break;
            }
            match self.receive(&mem, k) {
                Rx::Done(n) => {
                    self.rx_limit.charge(n);
                    frames += 1;
                }
                Rx::Empty | Rx::Failed => break,
            }
        }
        if self.needs_rx_interrupt(&mem, old_used) {
            irq.trigger(INT_VRING);
        }
    }

    /// Whether the guest wants an interrupt for the used entries added since `old`: with
    /// event indices when its used event lies in `[old, new)` (the kernel's
    /// `vring_need_event`), otherwise whenever there are any.
    fn needs_rx_interrupt(&self, mem: &GuestMemoryMmap, old: u16) -> bool {
        let q = &self.state.queues[RXQ];
        let new = q.next_used();
        if new == old {
            return false;
        }
        if !self.neg.event_idx {
            return true;
        }
        // The used index must be visible before the guest's used event is read.
        fence(Ordering::SeqCst);
        let at = q.avail_ring() + 4 + 2 * u64::from(q.size());
        let Ok(event) = mem.read_obj::<u16>(GuestAddress(at)).map(u16::from_le) else {
            return true;
        };
        new.wrapping_sub(event).wrapping_sub(1) < new.wrapping_sub(old)
    }

    /// Takes the chains the guest has made available into `rx_pending`, in order, up to a
    /// queue's worth. A chain that is malformed or too small is completed at once with length
    /// 0 (the driver finds buffers by id, so completing it ahead of pending ones is fine).
    /// Returns how many chains were taken from the ring.
    fn take_rx_chains(&mut self, mem: &GuestMemoryMmap) -> usize {
        let (min, limits) = if self.neg.mrg_rxbuf {
            // A header, and enough that MAX_MERGED of them hold any frame.
            let min = self
                .rx_frame_room()
                .div_ceil(MAX_MERGED as u64)
                .max(VNET_HDR_LEN as u64);
            (min, MRG_LIMITS)
        } else {
            (self.rx_frame_room(), RX_LIMITS)
        };
        let cap = usize::from(self.state.queues[RXQ].size());
        let mut taken = 0;
        while self.rx_pending.len() < cap {
            let Some(chain) = self.state.queues[RXQ].pop_descriptor_chain(mem) else {
                break;
            };
            taken += 1;
            let head = chain.head_index();
            match DescChain::parse(chain, mem, limits) {
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
                    if publish_used(&mut self.state.queues[RXQ], mem, &[(head, 0)]).is_err() {
                        break;
                    }
                }
            }
        }
        taken
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
            Err(e) if tap_is_gone(&e) => {
                self.fail(&format!("read: {e}"));
                return Rx::Failed;
            }
            // The tap refused this one frame (and dropped it): a NIC drops a bad frame.
            Err(_) => {
                self.metrics.rx_dropped.inc();
                return Rx::Done(0);
            }
        };
        if n < VNET_HDR_LEN as u64 || n > room {
            // Larger than the MTU promised (a tap whose MTU is above the configured one):
            // the frame is lost, the buffers serve the next one.
            self.metrics.rx_dropped.inc();
            return Rx::Done(n);
        }
        // The chains the frame filled, in order, and their lengths.
        let mut left = n;
        let mut used = Vec::new();
        for c in &chains {
            if left == 0 {
                break;
            }
            let l = left.min(c.room);
            used.push((c.head, u32::try_from(l).unwrap_or(u32::MAX)));
            left -= l;
        }
        let filled = u16::try_from(used.len()).unwrap_or(u16::MAX);
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
        self.rx_pending.drain(..used.len());
        if publish_used(&mut self.state.queues[RXQ], mem, &used).is_err() {
            self.fail("cannot write the RX used ring");
            return Rx::Failed;
        }
        self.metrics.rx_packets.inc();
        self.metrics.rx_bytes.add(n - VNET_HDR_LEN as u64);
        Rx::Done(n)
    }

    /// Room one received frame may need: header, Ethernet header, a VLAN tag and the MTU
    /// (1530 bytes at MTU 1500, the size of Linux's small buffers), or a whole 64 KiB segment
    /// when the guest takes TSO.
    pub(super) fn rx_frame_room(&self) -> u64 {
        if self.neg.guest_gso() {
            MAX_FRAME as u64
        } else {
            (VNET_HDR_LEN + super::ETH_HLEN + super::VLAN_HLEN + usize::from(self.mtu)) as u64
        }
    }
}

/// Makes `entries` (head, length) used at once: the ring elements first, then the used index
/// in one release store, so the guest never sees part of a frame's buffers. (virtio-queue's
/// `add_used` publishes the index per element.)
fn publish_used(q: &mut Queue, mem: &GuestMemoryMmap, entries: &[(u16, u32)]) -> Result<(), ()> {
    let size = q.size();
    if size == 0 {
        return Err(());
    }
    let ring = q.used_ring();
    let mut idx = q.next_used();
    for &(head, len) in entries {
        if head >= size {
            return Err(());
        }
        let at = ring + 4 + 8 * u64::from(idx % size);
        let mut elem = [0u8; 8];
        elem[..4].copy_from_slice(&u32::from(head).to_le_bytes());
        elem[4..].copy_from_slice(&len.to_le_bytes());
        mem.write_slice(&elem, GuestAddress(at)).map_err(|_| ())?;
        idx = idx.wrapping_add(1);
    }
    mem.store(idx.to_le(), GuestAddress(ring + 2), Ordering::Release)
        .map_err(|_| ())?;
    q.set_next_used(idx);
    Ok(())
}
