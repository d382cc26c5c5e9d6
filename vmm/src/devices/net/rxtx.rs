//! Moving frames: TX chains (device-readable: header + frame) are written to the tap, frames
//! read from the tap go into RX chains (device-writable). Each chain is validated by
//! `DescChain::parse`; a bad one is completed with length 0 and counted, and only it fails.

use std::io::ErrorKind;

use virtio_queue::{Queue, QueueT};

use super::device::Net;
use super::{ETH_HLEN, MAX_FRAME, RXQ, TXQ, VNET_HDR_LEN};
use crate::devices::virtio::chain::ChainLimits;
use crate::devices::virtio::{DescChain, INT_VRING};

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
/// Shortest TX chain: header and an Ethernet header (the tap refuses less).
const MIN_TX: u64 = (VNET_HDR_LEN + ETH_HLEN) as u64;

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
        let mut budget_left = true;
        for i in 0..=BATCH {
            if i == BATCH {
                budget_left = false;
                break;
            }
            let Some(chain) = self.state.queues[TXQ].pop_descriptor_chain(&mem) else {
                break;
            };
            let head = chain.head_index();
            let len = match DescChain::parse(chain, &mem, TX_LIMITS) {
                Ok(c) if c.writable.is_empty() && c.readable_len() >= MIN_TX => {
                    let len = usize::try_from(c.readable_len()).unwrap_or(MAX_FRAME);
                    c.read_at(&mem, 0, &mut self.buf[..len]).ok().map(|()| len)
                }
                _ => None,
            };
            if let Some(len) = len {
                // No offload was negotiated, so whatever checksum or GSO request the guest
                // put in the header must not reach the host kernel: send a plain frame.
                self.buf[..VNET_HDR_LEN].fill(0);
                match self.tap.write_frame(&self.buf[..len]) {
                    Ok(_) => {
                        self.metrics.tx_packets.inc();
                        self.metrics.tx_bytes.add((len - VNET_HDR_LEN) as u64);
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {
                        unpop(&mut self.state.queues[TXQ]);
                        self.metrics.tx_blocked.inc();
                        self.watch.tx_blocked = true;
                        break;
                    }
                    Err(e) if tap_is_gone(&e) => {
                        unpop(&mut self.state.queues[TXQ]);
                        self.fail(&format!("write: {e}"));
                        break;
                    }
                    // The kernel refused this frame (a malformed header or frame: EINVAL,
                    // EIO): drop it, as a NIC drops a bad frame.
                    Err(_) => self.metrics.tx_dropped.inc(),
                }
            } else {
                self.metrics.invalid_chains.inc();
            }
            if self.state.queues[TXQ].add_used(&mem, head, 0).is_err() {
                break;
            }
            used = true;
        }
        if !budget_left {
            // The notification was consumed; come back on the next round for the rest.
            let _ = self.state.queue_evts[TXQ].write(1);
        }
        if used {
            irq.trigger(INT_VRING);
        }
    }

    /// Delivers frames from the tap into the guest's RX buffers. When the guest has none left,
    /// stops wanting tap input (`watch.rx_wanted`) until it posts more and notifies the queue.
    pub fn process_rx(&mut self) {
        if !self.started || self.watch.broken {
            return;
        }
        let Some(active) = &self.state.active else {
            return;
        };
        let mem = active.mem.clone();
        let irq = active.irq.clone();
        let min = self.min_rx_buffer();
        let mut used = false;
        for _ in 0..BATCH {
            let Some(chain) = self.state.queues[RXQ].pop_descriptor_chain(&mem) else {
                self.watch.rx_wanted = false;
                self.metrics.rx_no_buffer.inc();
                break;
            };
            let head = chain.head_index();
            let c = match DescChain::parse(chain, &mem, RX_LIMITS) {
                Ok(c) if c.readable.is_empty() && c.writable_len() >= min => c,
                _ => {
                    self.metrics.invalid_chains.inc();
                    if self.state.queues[RXQ].add_used(&mem, head, 0).is_err() {
                        break;
                    }
                    used = true;
                    continue;
                }
            };
            let n = match self.tap.read_frame(&mut self.buf) {
                Ok(n) => n,
                Err(e) => {
                    unpop(&mut self.state.queues[RXQ]);
                    if e.kind() != ErrorKind::WouldBlock {
                        self.fail(&format!("read: {e}"));
                    }
                    break;
                }
            };
            if n < VNET_HDR_LEN || n as u64 > c.writable_len() {
                // Larger than the MTU promised (a tap whose MTU is above the configured
                // one): the frame is lost, the buffer serves the next one.
                unpop(&mut self.state.queues[RXQ]);
                self.metrics.rx_dropped.inc();
                continue;
            }
            // No offload was negotiated: the spec wants flags 0 and no GSO (the tap may set
            // DATA_VALID); `num_buffers` must be 1 without MRG_RXBUF, and the tap leaves
            // those two bytes alone.
            self.buf[..VNET_HDR_LEN - 2].fill(0);
            self.buf[VNET_HDR_LEN - 2..VNET_HDR_LEN].copy_from_slice(&1u16.to_le_bytes());
            let len = match c.write_at(&mem, 0, &self.buf[..n]) {
                Ok(()) => {
                    self.metrics.rx_packets.inc();
                    self.metrics.rx_bytes.add((n - VNET_HDR_LEN) as u64);
                    u32::try_from(n).unwrap_or(0)
                }
                Err(_) => {
                    self.metrics.invalid_chains.inc();
                    0
                }
            };
            if self.state.queues[RXQ].add_used(&mem, head, len).is_err() {
                break;
            }
            used = true;
        }
        if used {
            irq.trigger(INT_VRING);
        }
    }
}
