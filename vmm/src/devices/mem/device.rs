//! virtio-mem device logic (virtio 1.2 §5.15) on virtio-mmio.
//!
//! The device owns a region of guest-physical addresses ([`crate::arch::HOTPLUG_START`], the
//! size the VM was booted with) that is mapped and known to KVM and the vhost-user back end
//! from boot, but holds no host memory until the guest uses a plugged block. The host states
//! the size it wants (`requested_size`, raised by the API with a config interrupt); the
//! guest's driver asks to plug or unplug ranges of blocks, and the device grants a plug only
//! up to that size.
//!
//! `VIRTIO_MEM_F_UNPLUGGED_INACCESSIBLE` is offered: the driver must not touch unplugged
//! blocks. hull-vmm punches an unplugged block's host memory out of the memfd. A hostile
//! guest that touches unplugged memory anyway gets zeroed pages charged to its pod's host
//! cgroup, as for any other RAM it touches: the grant limits what a well-behaved guest uses,
//! the host cgroup what any guest can take.

use std::sync::Arc;

use virtio_queue::QueueT;
use vm_memory::GuestAddress;

use super::metrics::MemMetrics;
use crate::devices::virtio::chain::ChainLimits;
use crate::devices::virtio::{
    read_config_bytes, DescChain, DeviceMetrics, DeviceState, VirtioDevice, INT_CONFIG, INT_VRING,
    TYPE_MEM, VIRTIO_F_VERSION_1,
};
use crate::guest_log;
use crate::vstate::memory::{self, GuestMemoryMmap};

/// The unit of plugging: 2 MiB, the smallest block Linux's driver accepts on x86_64 (it
/// plugs in units of its page block, 4 MiB, which are whole device blocks).
pub(crate) const BLOCK_SIZE: u64 = 2 << 20;
/// VIRTIO_MEM_F_UNPLUGGED_INACCESSIBLE.
const F_UNPLUGGED_INACCESSIBLE: u64 = 1 << 1;
const QUEUE_SIZE: u16 = 128;
/// A request is 24 bytes, its response 10; Linux sends one buffer of each.
const REQ_LEN: usize = 24;
const RESP_LEN: usize = 10;
const LIMITS: ChainLimits = ChainLimits {
    max_descriptors: 4,
    max_bytes: 4096,
};

const REQ_PLUG: u16 = 0;
const REQ_UNPLUG: u16 = 1;
const REQ_UNPLUG_ALL: u16 = 2;
const REQ_STATE: u16 = 3;
const RESP_ACK: u16 = 0;
const RESP_NACK: u16 = 1;
const RESP_ERROR: u16 = 3;
const STATE_PLUGGED: u16 = 0;
const STATE_UNPLUGGED: u16 = 1;
const STATE_MIXED: u16 = 2;

/// What `GET /vm` shows of the device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct MemStatus {
    pub region_bytes: u64,
    pub block_bytes: u64,
    pub requested_bytes: u64,
    pub plugged_bytes: u64,
    /// The guest's driver set the device up (before that, nothing can be plugged).
    pub driver_ready: bool,
}

/// A decoded request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Request {
    kind: u16,
    addr: u64,
    blocks: u64,
}

impl Request {
    fn parse(b: &[u8; REQ_LEN]) -> Self {
        let u16_at = |i: usize| u16::from_le_bytes([b[i], b[i + 1]]);
        let mut addr = [0u8; 8];
        addr.copy_from_slice(&b[8..16]);
        Request {
            kind: u16_at(0),
            addr: u64::from_le_bytes(addr),
            blocks: u64::from(u16_at(16)),
        }
    }
}

/// The virtio-mem device.
#[derive(Debug)]
pub struct VirtioMem {
    pub(super) state: DeviceState,
    /// Guest-physical start of the region.
    addr: u64,
    region_size: u64,
    requested: u64,
    /// One bit per block.
    plugged: Vec<u64>,
    plugged_blocks: u64,
    generation: u32,
    said_release_error: bool,
    pub(super) metrics: Arc<MemMetrics>,
}

impl VirtioMem {
    /// A device for `region_size` bytes at `addr`, nothing plugged or requested.
    pub fn new(addr: u64, region_size: u64) -> std::io::Result<Self> {
        if !addr.is_multiple_of(BLOCK_SIZE) || !region_size.is_multiple_of(BLOCK_SIZE) {
            return Err(std::io::Error::other("virtio-mem region not block aligned"));
        }
        let blocks = region_size / BLOCK_SIZE;
        let words = usize::try_from(blocks.div_ceil(64)).map_err(std::io::Error::other)?;
        Ok(VirtioMem {
            state: DeviceState::new(1, QUEUE_SIZE, VIRTIO_F_VERSION_1 | F_UNPLUGGED_INACCESSIBLE)?,
            addr,
            region_size,
            requested: 0,
            plugged: vec![0; words],
            plugged_blocks: 0,
            generation: 0,
            said_release_error: false,
            metrics: Arc::default(),
        })
    }

    pub(crate) fn status(&self) -> MemStatus {
        MemStatus {
            region_bytes: self.region_size,
            block_bytes: BLOCK_SIZE,
            requested_bytes: self.requested,
            plugged_bytes: self.plugged_blocks * BLOCK_SIZE,
            driver_ready: self.is_activated(),
        }
    }

    /// Asks the guest for `bytes` of plugged memory: a multiple of the block size within the
    /// region. The driver reads it at its next config interrupt (or when it starts).
    pub(crate) fn set_requested(&mut self, bytes: u64) -> Result<(), String> {
        if !bytes.is_multiple_of(BLOCK_SIZE) || bytes > self.region_size {
            return Err(format!(
                "requested size {bytes} must be a multiple of {BLOCK_SIZE} up to the region's {}",
                self.region_size
            ));
        }
        self.requested = bytes;
        self.config_changed();
        Ok(())
    }

    /// The host changed the config space: a new generation, and the driver is told.
    fn config_changed(&mut self) {
        self.bump_generation();
        if let Some(a) = &self.state.active {
            a.irq.trigger(INT_CONFIG);
        }
    }

    /// `plugged_size` or `requested_size` moved: a driver reading the config space across
    /// the change sees another generation and reads again. A change the driver caused
    /// (a plug or unplug it asked for) needs no interrupt.
    fn bump_generation(&mut self) {
        self.generation = self.generation.wrapping_add(1);
    }

    fn config(&self) -> [u8; 56] {
        let mut c = [0u8; 56];
        let mut put = |at: usize, v: u64| c[at..at + 8].copy_from_slice(&v.to_le_bytes());
        put(0, BLOCK_SIZE);
        // node_id 0 and padding at 8..16.
        put(16, self.addr);
        put(24, self.region_size);
        put(32, self.region_size);
        put(40, self.plugged_blocks * BLOCK_SIZE);
        put(48, self.requested);
        c
    }

    /// The first block and the count of `[addr, addr + blocks * BLOCK_SIZE)`, if that range is
    /// aligned, not empty and inside the region.
    fn range(&self, addr: u64, blocks: u64) -> Option<(u64, u64)> {
        let off = addr.checked_sub(self.addr)?;
        let len = blocks.checked_mul(BLOCK_SIZE)?;
        (blocks > 0 && off.is_multiple_of(BLOCK_SIZE) && off.checked_add(len)? <= self.region_size)
            .then_some((off / BLOCK_SIZE, blocks))
    }

    fn is_plugged(&self, block: u64) -> bool {
        let (w, b) = (block / 64, block % 64);
        usize::try_from(w)
            .ok()
            .and_then(|w| self.plugged.get(w))
            .is_some_and(|word| word & (1 << b) != 0)
    }

    fn set_plugged(&mut self, block: u64, on: bool) {
        let (w, b) = (block / 64, block % 64);
        if let Some(word) = usize::try_from(w)
            .ok()
            .and_then(|w| self.plugged.get_mut(w))
        {
            let was = *word & (1 << b) != 0;
            if on {
                *word |= 1 << b;
            } else {
                *word &= !(1 << b);
            }
            match (was, on) {
                (false, true) => self.plugged_blocks += 1,
                (true, false) => self.plugged_blocks -= 1,
                _ => {}
            }
        }
    }

    /// How many of `count` blocks from `first` are plugged.
    fn count_plugged(&self, first: u64, count: u64) -> u64 {
        (first..first + count)
            .filter(|b| self.is_plugged(*b))
            .count() as u64
    }

    /// Gives the host memory of `count` blocks from `first` back (their contents are gone).
    fn release(&mut self, mem: &GuestMemoryMmap, first: u64, count: u64) {
        let addr = GuestAddress(self.addr + first * BLOCK_SIZE);
        match memory::discard(mem, addr, count * BLOCK_SIZE) {
            Ok(d) => self.metrics.released_bytes.add(d.freed),
            Err(e) => guest_log::once(
                &mut self.said_release_error,
                format_args!("virtio-mem: unplugged blocks keep their host memory: {e}"),
            ),
        }
    }

    /// Runs one request; returns the response type and, for STATE, the state.
    fn handle(&mut self, mem: &GuestMemoryMmap, req: Request) -> (u16, u16) {
        let error = |m: &MemMetrics| {
            m.errors.inc();
            (RESP_ERROR, 0)
        };
        if req.kind == REQ_UNPLUG_ALL {
            let blocks = self.region_size / BLOCK_SIZE;
            if self.plugged_blocks > 0 {
                self.release(mem, 0, blocks);
            }
            self.plugged.fill(0);
            self.plugged_blocks = 0;
            self.metrics.unplugs.inc();
            self.bump_generation();
            return (RESP_ACK, 0);
        }
        let Some((first, count)) = self.range(req.addr, req.blocks) else {
            return error(&self.metrics);
        };
        let plugged = self.count_plugged(first, count);
        match req.kind {
            REQ_PLUG if plugged != 0 => error(&self.metrics),
            REQ_PLUG if (self.plugged_blocks + count) * BLOCK_SIZE > self.requested => {
                self.metrics.nacks.inc();
                (RESP_NACK, 0)
            }
            REQ_PLUG => {
                (first..first + count).for_each(|b| self.set_plugged(b, true));
                self.metrics.plugs.inc();
                self.bump_generation();
                (RESP_ACK, 0)
            }
            REQ_UNPLUG if plugged != count => error(&self.metrics),
            REQ_UNPLUG => {
                (first..first + count).for_each(|b| self.set_plugged(b, false));
                self.release(mem, first, count);
                self.metrics.unplugs.inc();
                self.bump_generation();
                (RESP_ACK, 0)
            }
            REQ_STATE => {
                let state = match plugged {
                    0 => STATE_UNPLUGGED,
                    p if p == count => STATE_PLUGGED,
                    _ => STATE_MIXED,
                };
                (RESP_ACK, state)
            }
            _ => error(&self.metrics),
        }
    }

    /// Serves every available request; returns whether any was used.
    pub fn process_queue(&mut self) -> bool {
        let Some(active) = &self.state.active else {
            return false;
        };
        let mem = active.mem.clone();
        let irq = active.irq.clone();
        let mut used = false;
        while let Some(chain) = self.state.queues[0].pop_descriptor_chain(&mem) {
            let head = chain.head_index();
            let mut written = 0;
            match DescChain::parse(chain, &mem, LIMITS) {
                Ok(c) => {
                    let mut raw = [0u8; REQ_LEN];
                    if c.read_at(&mem, 0, &mut raw).is_ok() && c.writable_len() >= RESP_LEN as u64 {
                        let (kind, st) = self.handle(&mem, Request::parse(&raw));
                        let mut resp = [0u8; RESP_LEN];
                        resp[0..2].copy_from_slice(&kind.to_le_bytes());
                        resp[8..10].copy_from_slice(&st.to_le_bytes());
                        if c.write_at(&mem, 0, &resp).is_ok() {
                            written = u32::try_from(RESP_LEN).unwrap_or(0);
                        }
                    } else {
                        self.metrics.invalid_chains.inc();
                    }
                }
                Err(_) => self.metrics.invalid_chains.inc(),
            }
            if self.state.queues[0].add_used(&mem, head, written).is_err() {
                break;
            }
            used = true;
        }
        if used {
            irq.trigger(INT_VRING);
        }
        used
    }
}

impl VirtioDevice for VirtioMem {
    fn state(&self) -> &DeviceState {
        &self.state
    }
    fn state_mut(&mut self) -> &mut DeviceState {
        &mut self.state
    }
    fn device_type(&self) -> u32 {
        TYPE_MEM
    }
    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_config_bytes(&self.config(), offset, data);
    }
    fn config_generation(&self) -> u32 {
        self.generation
    }
    fn metrics(&self) -> DeviceMetrics {
        DeviceMetrics::Mem(self.metrics.clone())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use virtio_queue::mock::MockSplitQueue;
    use vm_memory::{Bytes, GuestAddress};
    use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

    use super::*;
    use crate::arch::HOTPLUG_START;
    use crate::devices::virtio::chain::test_util::*;
    use crate::devices::virtio::IrqTrigger;
    use crate::vstate::memory;

    const REGION: u64 = 64 << 20;
    const REQ_LEN32: u32 = 24;
    const RESP_LEN32: u32 = 10;
    const REQ: u64 = 0x10_0000;
    const RESP: u64 = 0x20_0000;

    struct Rig {
        mem: GuestMemoryMmap,
        irq: Arc<IrqTrigger>,
    }

    fn rig() -> Rig {
        Rig {
            mem: memory::create_with_hotplug(16 << 20, REGION).unwrap(),
            irq: Arc::new(IrqTrigger::new(EventFd::new(EFD_NONBLOCK).unwrap())),
        }
    }

    fn device() -> VirtioMem {
        let mut d = VirtioMem::new(HOTPLUG_START, REGION).unwrap();
        d.set_acked_features(d.avail_features());
        d
    }

    /// Sends one request through a fresh queue; returns (response type, state).
    fn send(r: &Rig, d: &mut VirtioMem, kind: u16, addr: u64, blocks: u16) -> (u16, u16) {
        let vq = MockSplitQueue::new(&r.mem, QUEUE_SIZE);
        d.state.queues[0] = vq.create_queue().unwrap();
        if !d.is_activated() {
            d.activate(r.mem.clone(), r.irq.clone()).unwrap();
        } else if let Some(a) = d.state.active.as_mut() {
            a.mem = r.mem.clone();
        }
        let mut req = [0u8; REQ_LEN];
        req[0..2].copy_from_slice(&kind.to_le_bytes());
        req[8..16].copy_from_slice(&addr.to_le_bytes());
        req[16..18].copy_from_slice(&blocks.to_le_bytes());
        r.mem.write_slice(&req, GuestAddress(REQ)).unwrap();
        r.mem
            .write_slice(&[0xff; RESP_LEN], GuestAddress(RESP))
            .unwrap();
        vq.add_desc_chains(
            &[
                desc(REQ, REQ_LEN32, NEXT, 1),
                desc(RESP, RESP_LEN32, WRITE, 0),
            ],
            0,
        )
        .unwrap();
        assert!(d.process_queue());
        let mut resp = [0u8; RESP_LEN];
        r.mem.read_slice(&mut resp, GuestAddress(RESP)).unwrap();
        (
            u16::from_le_bytes([resp[0], resp[1]]),
            u16::from_le_bytes([resp[8], resp[9]]),
        )
    }

    fn config_u64(d: &VirtioMem, at: u64) -> u64 {
        let mut b = [0u8; 8];
        d.read_config(at, &mut b);
        u64::from_le_bytes(b)
    }

    #[test]
    fn plugs_up_to_the_requested_size_and_no_further() {
        let r = rig();
        let mut d = device();
        assert_eq!(config_u64(&d, 0), BLOCK_SIZE);
        assert_eq!(config_u64(&d, 16), HOTPLUG_START);
        assert_eq!(config_u64(&d, 24), REGION);
        // Nothing requested: a plug is refused (NACK), not an error.
        assert_eq!(send(&r, &mut d, REQ_PLUG, HOTPLUG_START, 1).0, RESP_NACK);
        let gen = d.config_generation();
        d.set_requested(8 << 20).unwrap();
        assert!(
            d.config_generation() != gen,
            "a change moves the generation"
        );
        assert_eq!(r.irq.status() & INT_CONFIG, INT_CONFIG, "config interrupt");
        assert_eq!(config_u64(&d, 48), 8 << 20);
        assert_eq!(send(&r, &mut d, REQ_PLUG, HOTPLUG_START, 4).0, RESP_ACK);
        assert_eq!(config_u64(&d, 40), 8 << 20, "plugged_size");
        assert_eq!(
            send(&r, &mut d, REQ_PLUG, HOTPLUG_START + (8 << 20), 1).0,
            RESP_NACK,
            "beyond the request"
        );
        assert_eq!(
            send(&r, &mut d, REQ_STATE, HOTPLUG_START, 8),
            (RESP_ACK, STATE_MIXED)
        );
        assert_eq!(
            send(&r, &mut d, REQ_STATE, HOTPLUG_START, 4),
            (RESP_ACK, STATE_PLUGGED)
        );
        assert_eq!(d.metrics.plugs.get(), 1);
        assert_eq!(d.metrics.nacks.get(), 2);
    }

    #[test]
    fn invalid_ranges_are_errors_and_change_nothing() {
        let r = rig();
        let mut d = device();
        d.set_requested(REGION).unwrap();
        let blocks = u16::try_from(REGION / BLOCK_SIZE).unwrap();
        for (addr, n) in [
            (HOTPLUG_START + 4096, 1),             // unaligned
            (HOTPLUG_START - BLOCK_SIZE, 1),       // below the region
            (HOTPLUG_START, blocks + 1),           // past its end
            (HOTPLUG_START, 0),                    // empty
            (u64::MAX - BLOCK_SIZE + 1, u16::MAX), // overflowing
        ] {
            assert_eq!(
                send(&r, &mut d, REQ_PLUG, addr, n).0,
                RESP_ERROR,
                "{addr:#x}"
            );
            assert_eq!(
                send(&r, &mut d, REQ_STATE, addr, n).0,
                RESP_ERROR,
                "{addr:#x}"
            );
        }
        assert_eq!(send(&r, &mut d, 77, HOTPLUG_START, 1).0, RESP_ERROR);
        // Unplugging what is not plugged, or plugging twice, is an error too.
        assert_eq!(send(&r, &mut d, REQ_UNPLUG, HOTPLUG_START, 1).0, RESP_ERROR);
        assert_eq!(send(&r, &mut d, REQ_PLUG, HOTPLUG_START, 2).0, RESP_ACK);
        assert_eq!(send(&r, &mut d, REQ_PLUG, HOTPLUG_START, 1).0, RESP_ERROR);
        assert_eq!(d.status().plugged_bytes, 2 * BLOCK_SIZE);
        assert!(d.set_requested(REGION + BLOCK_SIZE).is_err());
        assert!(d.set_requested(4096).is_err());
    }

    #[test]
    fn unplugging_gives_the_host_memory_back() {
        let r = rig();
        let mut d = device();
        d.set_requested(4 * BLOCK_SIZE).unwrap();
        assert_eq!(send(&r, &mut d, REQ_PLUG, HOTPLUG_START, 4).0, RESP_ACK);
        let at = GuestAddress(HOTPLUG_START + BLOCK_SIZE);
        r.mem.write_slice(&[0x5a; 8192], at).unwrap();
        assert_eq!(send(&r, &mut d, REQ_UNPLUG, at.0, 1).0, RESP_ACK);
        assert_eq!(r.mem.read_obj::<u8>(at).unwrap(), 0, "contents are gone");
        assert!(d.metrics.released_bytes.get() >= 8192);
        assert_eq!(d.status().plugged_bytes, 3 * BLOCK_SIZE);
        assert_eq!(send(&r, &mut d, REQ_UNPLUG_ALL, 0, 0).0, RESP_ACK);
        assert_eq!(d.status().plugged_bytes, 0);
        assert_eq!(
            send(&r, &mut d, REQ_STATE, HOTPLUG_START, 4),
            (RESP_ACK, STATE_UNPLUGGED)
        );
    }

    #[test]
    fn short_or_foreign_chains_are_counted_not_served() {
        let r = rig();
        let mut d = device();
        d.activate(r.mem.clone(), r.irq.clone()).unwrap();
        let vq = MockSplitQueue::new(&r.mem, QUEUE_SIZE);
        d.state.queues[0] = vq.create_queue().unwrap();
        // A request without room for the response, then one outside guest memory.
        vq.add_desc_chains(&[desc(REQ, REQ_LEN32, 0, 0)], 0)
            .unwrap();
        assert!(d.process_queue());
        vq.add_desc_chains(&[desc(1 << 40, REQ_LEN32, 0, 0)], 1)
            .unwrap();
        assert!(d.process_queue());
        assert_eq!(d.metrics.invalid_chains.get(), 2);
        assert_eq!(d.status().plugged_bytes, 0);
    }
}
