//! virtio-blk device logic. Each request is `header (readable, 16 bytes) | data | status
//! (writable, 1 byte)`; the data direction must match the request type, sectors must lie inside
//! the disk, data lengths must be whole sectors.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::Path;
use std::sync::Arc;

use virtio_queue::QueueT;

use super::metrics::BlockMetrics;
use crate::config::LimitConfig;
use crate::devices::rate_limiter::{self, RateLimiter};
use crate::devices::virtio::chain::ChainLimits;
use crate::devices::virtio::{
    read_config_bytes, DescChain, DeviceMetrics, DeviceState, RateLimits, VirtioDevice, INT_VRING,
    TYPE_BLOCK,
};
use crate::vstate::memory::GuestMemoryMmap;

const QUEUE_SIZE: u16 = 256;
pub const SECTOR_SIZE: u64 = 512;
const HEADER_LEN: u64 = 16;
const HEADER_BYTES: usize = 16;
pub const ID_LEN: usize = 20;
/// Largest data transfer per request (the driver learns it from `size_max`/`seg_max`).
const MAX_DATA: u64 = 1 << 20;
const MAX_SEGMENTS: u32 = 128;
const LIMITS: ChainLimits = ChainLimits {
    max_descriptors: (MAX_SEGMENTS + 2) as usize,
    max_bytes: MAX_DATA + HEADER_LEN + 1,
};

const F_SIZE_MAX: u64 = 1 << 1;
const F_SEG_MAX: u64 = 1 << 2;
const F_RO: u64 = 1 << 5;
const F_FLUSH: u64 = 1 << 9;

const T_IN: u32 = 0;
const T_OUT: u32 = 1;
const T_FLUSH: u32 = 4;
const T_GET_ID: u32 = 8;

const S_OK: u8 = 0;
const S_IOERR: u8 = 1;
const S_UNSUPP: u8 = 2;

/// The virtio-blk device.
#[derive(Debug)]
pub struct Block {
    pub(super) state: DeviceState,
    file: File,
    read_only: bool,
    sectors: u64,
    id: [u8; ID_LEN],
    /// Requests and the bytes they move (unlimited unless configured).
    pub(super) limit: RateLimiter,
    pub(super) metrics: Arc<BlockMetrics>,
}

/// What a disk attached at run time needs that only the build may create (seccomp: no new
/// eventfd or timerfd once the VM runs): its queue's eventfd, registered with KVM for its slot
/// at boot, and its rate limiter's timer. A detached disk gives it back for the next one.
#[derive(Debug)]
pub(crate) struct BlockKit {
    state: DeviceState,
    limit: RateLimiter,
}

impl BlockKit {
    pub(crate) fn new() -> std::io::Result<Self> {
        Ok(BlockKit {
            state: DeviceState::new(1, QUEUE_SIZE, 0)?,
            limit: RateLimiter::new(LimitConfig::default())?,
        })
    }

    /// The queue's eventfd, to register with KVM at the slot's notify address.
    pub(crate) fn queue_event(&self) -> &vmm_sys_util::eventfd::EventFd {
        &self.state.queue_evts[0]
    }
}

impl Block {
    pub fn new(path: &Path, read_only: bool) -> std::io::Result<Self> {
        let file = OpenOptions::new().read(true).write(!read_only).open(path)?;
        Self::from_file(file, read_only, BlockKit::new()?)
    }

    /// A disk over an open image file, whose size is the disk's, using `kit`.
    pub(crate) fn from_file(file: File, read_only: bool, kit: BlockKit) -> std::io::Result<Self> {
        let meta = file.metadata()?;
        let mut id = [0u8; ID_LEN];
        let s = format!("{:x}{:x}", meta.dev(), meta.ino());
        for (d, b) in id.iter_mut().zip(s.bytes()) {
            *d = b;
        }
        let ro = if read_only { F_RO } else { 0 };
        let BlockKit { mut state, limit } = kit;
        state.avail_features = F_FLUSH | F_SIZE_MAX | F_SEG_MAX | ro;
        Ok(Block {
            state,
            file,
            read_only,
            sectors: meta.len() / SECTOR_SIZE,
            id,
            limit,
            metrics: Arc::default(),
        })
    }

    /// Ends the disk (its file closes) and gives back its kit, reset: fresh queues, nothing
    /// negotiated, no limits.
    pub(crate) fn into_kit(self) -> std::io::Result<BlockKit> {
        let Block {
            mut state,
            mut limit,
            ..
        } = self;
        state.acked_features = 0;
        state.active = None;
        for q in &mut state.queues {
            *q = virtio_queue::Queue::new(QUEUE_SIZE).map_err(std::io::Error::other)?;
        }
        limit.set(LimitConfig::default(), rate_limiter::now());
        Ok(BlockKit { state, limit })
    }

    /// Replaces the disk's limits (build time, or the API at runtime).
    pub fn set_limit(&mut self, limit: LimitConfig) {
        self.limit.set(limit, rate_limiter::now());
    }

    /// Byte offset of `len` bytes at `sector`, if inside the disk.
    fn range(&self, sector: u64, len: u64) -> Option<u64> {
        if !len.is_multiple_of(SECTOR_SIZE) {
            return None;
        }
        let end = sector.checked_add(len / SECTOR_SIZE)?;
        (end <= self.sectors).then_some(sector * SECTOR_SIZE)
    }

    /// Executes one validated request; returns (status, data bytes written to the guest).
    fn execute(
        &mut self,
        mem: &GuestMemoryMmap,
        c: &DescChain,
        kind: u32,
        sector: u64,
    ) -> (u8, u64) {
        let readable = c.readable_len();
        let writable = c.writable_len();
        match kind {
            T_IN => {
                // Data must be device-writable: nothing readable but the header.
                let len = writable - 1;
                let (true, Some(off)) = (readable == HEADER_LEN, self.range(sector, len)) else {
                    return (S_IOERR, 0);
                };
                let mut buf = vec![0u8; usize::try_from(len).unwrap_or(0)];
                if self.file.read_exact_at(&mut buf, off).is_err()
                    || c.write_at(mem, 0, &buf).is_err()
                {
                    return (S_IOERR, 0);
                }
                self.metrics.reads.inc();
                self.metrics.read_bytes.add(len);
                (S_OK, len)
            }
            T_OUT => {
                let len = readable - HEADER_LEN;
                let (false, true, Some(off)) =
                    (self.read_only, writable == 1, self.range(sector, len))
                else {
                    return (S_IOERR, 0);
                };
                let mut buf = vec![0u8; usize::try_from(len).unwrap_or(0)];
                if c.read_at(mem, HEADER_LEN, &mut buf).is_err()
                    || self.file.write_all_at(&buf, off).is_err()
                {
                    return (S_IOERR, 0);
                }
                self.metrics.writes.inc();
                self.metrics.write_bytes.add(len);
                (S_OK, 0)
            }
            T_FLUSH => {
                self.metrics.flushes.inc();
                if self.read_only || self.file.sync_data().is_ok() {
                    (S_OK, 0)
                } else {
                    (S_IOERR, 0)
                }
            }
            T_GET_ID => {
                let n = (writable - 1).min(ID_LEN as u64);
                let id = self.id;
                match c.write_at(mem, 0, &id[..usize::try_from(n).unwrap_or(0)]) {
                    Ok(()) => (S_OK, n),
                    Err(_) => (S_IOERR, 0),
                }
            }
            _ => (S_UNSUPP, 0),
        }
    }

    /// Handles one chain; returns the used length.
    fn handle(&mut self, mem: &GuestMemoryMmap, c: &DescChain) -> Option<u32> {
        if c.readable_len() < HEADER_LEN || c.writable_len() < 1 {
            return None;
        }
        let mut hdr = [0u8; HEADER_BYTES];
        c.read_at(mem, 0, &mut hdr).ok()?;
        let kind = u32::from_le_bytes([hdr[0], hdr[1], hdr[2], hdr[3]]);
        let sector = u64::from_le_bytes([
            hdr[8], hdr[9], hdr[10], hdr[11], hdr[12], hdr[13], hdr[14], hdr[15],
        ]);
        let (status, written) = self.execute(mem, c, kind, sector);
        if status == S_IOERR {
            self.metrics.io_errors.inc();
        }
        // The status byte is the chain's last writable byte.
        let status_off = c.writable_len() - 1;
        c.write_at(mem, status_off, &[status]).ok()?;
        u32::try_from(written + 1).ok()
    }

    /// Serves the available requests its rate limit allows (the rest wait in the ring for
    /// the limiter's timer); returns whether any was used.
    pub fn process_queue(&mut self) -> bool {
        let Some(active) = &self.state.active else {
            return false;
        };
        if self.limit.throttled() {
            return false;
        }
        let mem = active.mem.clone();
        let irq = active.irq.clone();
        let mut used = false;
        loop {
            let q = &self.state.queues[0];
            let waiting = q
                .avail_idx(&mem, std::sync::atomic::Ordering::Acquire)
                .is_ok_and(|i| i.0 != q.next_avail());
            if !waiting {
                break;
            }
            if !self.limit.admit(rate_limiter::now()) {
                self.metrics.throttled.inc();
                break;
            }
            let Some(chain) = self.state.queues[0].pop_descriptor_chain(&mem) else {
                break;
            };
            let head = chain.head_index();
            let len = match DescChain::parse(chain, &mem, LIMITS) {
                Ok(c) => {
                    // The data the request moves: what is neither header nor status.
                    let data = (c.readable_len() + c.writable_len()).saturating_sub(HEADER_LEN + 1);
                    self.limit.charge(data);
                    self.handle(&mem, &c)
                }
                Err(_) => {
                    self.limit.charge(0);
                    None
                }
            };
            let len = len.unwrap_or_else(|| {
                self.metrics.invalid_chains.inc();
                0
            });
            if self.state.queues[0].add_used(&mem, head, len).is_err() {
                break;
            }
            used = true;
        }
        if used {
            irq.trigger(INT_VRING);
        }
        used
    }

    fn config_space(&self) -> [u8; 16] {
        let mut c = [0u8; 16];
        c[0..8].copy_from_slice(&self.sectors.to_le_bytes());
        c[8..12].copy_from_slice(&u32::try_from(MAX_DATA).unwrap_or(0).to_le_bytes());
        c[12..16].copy_from_slice(&MAX_SEGMENTS.to_le_bytes());
        c
    }
}

impl VirtioDevice for Block {
    fn state(&self) -> &DeviceState {
        &self.state
    }
    fn state_mut(&mut self) -> &mut DeviceState {
        &mut self.state
    }
    fn device_type(&self) -> u32 {
        TYPE_BLOCK
    }
    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_config_bytes(&self.config_space(), offset, data);
    }
    fn metrics(&self) -> DeviceMetrics {
        DeviceMetrics::Block(self.metrics.clone())
    }
    fn set_rate_limits(&mut self, limits: &RateLimits) -> Result<(), String> {
        let RateLimits::Disk(limit) = *limits else {
            return Err("a disk's limits are bytes and ops".into());
        };
        limit.validate("disk")?;
        self.set_limit(limit);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

    use crate::devices::virtio::IrqTrigger;
    use std::io::Write;

    use virtio_queue::mock::MockSplitQueue;
    use vm_memory::{Bytes, GuestAddress};

    use super::*;
    use crate::devices::virtio::chain::test_util::*;
    use crate::vstate::memory;

    const HDR: u64 = 0x10_0000;
    const DATA: u64 = 0x20_0000;
    const STATUS: u64 = 0x30_0000;

    fn disk(ro: bool) -> (tempfile::NamedTempFile, Block) {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        let mut content = vec![0u8; 8 * 512];
        content[512..1024].fill(0xab);
        f.write_all(&content).unwrap();
        let b = Block::new(f.path(), ro).unwrap();
        (f, b)
    }

    fn setup<'a>(mem: &'a GuestMemoryMmap, b: &mut Block) -> MockSplitQueue<'a, GuestMemoryMmap> {
        let vq = MockSplitQueue::new(mem, 16);
        b.state.queues[0] = vq.create_queue().unwrap();
        let irq = Arc::new(IrqTrigger::new(EventFd::new(EFD_NONBLOCK).unwrap()));
        b.activate(mem.clone(), irq).unwrap();
        vq
    }

    fn header(mem: &GuestMemoryMmap, kind: u32, sector: u64) {
        mem.write_obj(kind, GuestAddress(HDR)).unwrap();
        mem.write_obj(sector, GuestAddress(HDR + 8)).unwrap();
        mem.write_obj(0xffu8, GuestAddress(STATUS)).unwrap();
    }

    fn status(mem: &GuestMemoryMmap) -> u8 {
        mem.read_obj(GuestAddress(STATUS)).unwrap()
    }

    fn run(
        b: &mut Block,
        vq: &MockSplitQueue<'_, GuestMemoryMmap>,
        descs: &[virtio_queue::desc::RawDescriptor],
        i: u16,
    ) -> u32 {
        vq.build_desc_chain(descs).unwrap();
        let _ = i;
        b.process_queue();
        let idx: u16 = vq.used().idx().load();
        vq.used()
            .ring()
            .ref_at(usize::from(idx - 1))
            .unwrap()
            .load()
            .len()
    }

    #[test]
    fn read_write_flush_id() {
        let mem = memory::create(16 << 20).unwrap();
        let (f, mut b) = disk(false);
        let vq = setup(&mem, &mut b);
        header(&mem, T_IN, 1);
        let len = run(
            &mut b,
            &vq,
            &[
                desc(HDR, 16, 0, 0),
                desc(DATA, 512, WRITE, 0),
                desc(STATUS, 1, WRITE, 0),
            ],
            0,
        );
        assert_eq!((status(&mem), len), (S_OK, 513));
        assert_eq!(mem.read_obj::<u8>(GuestAddress(DATA + 100)).unwrap(), 0xab);

        mem.write_slice(&[0x5a; 512], GuestAddress(DATA)).unwrap();
        header(&mem, T_OUT, 3);
        run(
            &mut b,
            &vq,
            &[
                desc(HDR, 16, 0, 0),
                desc(DATA, 512, 0, 0),
                desc(STATUS, 1, WRITE, 0),
            ],
            0,
        );
        assert_eq!(status(&mem), S_OK);
        let on_disk = std::fs::read(f.path()).unwrap();
        assert_eq!(on_disk[3 * 512], 0x5a);

        header(&mem, T_FLUSH, 0);
        run(
            &mut b,
            &vq,
            &[desc(HDR, 16, 0, 0), desc(STATUS, 1, WRITE, 0)],
            0,
        );
        assert_eq!(status(&mem), S_OK);
        assert_eq!(b.metrics.flushes.get(), 1);

        header(&mem, T_GET_ID, 0);
        let len = run(
            &mut b,
            &vq,
            &[
                desc(HDR, 16, 0, 0),
                desc(DATA, 20, WRITE, 0),
                desc(STATUS, 1, WRITE, 0),
            ],
            0,
        );
        assert_eq!((status(&mem), len), (S_OK, 21));
        let mut id = [0u8; 20];
        mem.read_slice(&mut id, GuestAddress(DATA)).unwrap();
        assert_eq!(id, b.id);

        header(&mem, 77, 0);
        run(
            &mut b,
            &vq,
            &[desc(HDR, 16, 0, 0), desc(STATUS, 1, WRITE, 0)],
            0,
        );
        assert_eq!(status(&mem), S_UNSUPP);
    }

    #[test]
    fn read_only_disk_refuses_writes() {
        let mem = memory::create(16 << 20).unwrap();
        let (_f, mut b) = disk(true);
        assert_ne!(b.avail_features() & F_RO, 0);
        let vq = setup(&mem, &mut b);
        header(&mem, T_OUT, 0);
        run(
            &mut b,
            &vq,
            &[
                desc(HDR, 16, 0, 0),
                desc(DATA, 512, 0, 0),
                desc(STATUS, 1, WRITE, 0),
            ],
            0,
        );
        assert_eq!(status(&mem), S_IOERR);
    }

    #[test]
    fn bad_requests_fail_alone() {
        let mem = memory::create(16 << 20).unwrap();
        let (_f, mut b) = disk(false);
        let vq = setup(&mem, &mut b);
        // Past the end of the disk; sector overflow; partial sector.
        for (sector, len) in [(8u64, 512u32), (u64::MAX, 512), (0, 100)] {
            header(&mem, T_IN, sector);
            run(
                &mut b,
                &vq,
                &[
                    desc(HDR, 16, 0, 0),
                    desc(DATA, len, WRITE, 0),
                    desc(STATUS, 1, WRITE, 0),
                ],
                0,
            );
            assert_eq!(status(&mem), S_IOERR, "sector {sector} len {len}");
        }
        // Wrong direction: read request whose data buffer is device-readable.
        header(&mem, T_IN, 0);
        run(
            &mut b,
            &vq,
            &[
                desc(HDR, 16, 0, 0),
                desc(DATA, 512, 0, 0),
                desc(STATUS, 1, WRITE, 0),
            ],
            0,
        );
        assert_eq!(status(&mem), S_IOERR);
        // Write request whose data is device-writable.
        header(&mem, T_OUT, 0);
        run(
            &mut b,
            &vq,
            &[
                desc(HDR, 16, 0, 0),
                desc(DATA, 512, WRITE, 0),
                desc(STATUS, 1, WRITE, 0),
            ],
            0,
        );
        assert_eq!(status(&mem), S_IOERR);
        // No status byte, short header, out-of-range data, zero length, huge length.
        let before = b.metrics.invalid_chains.get();
        header(&mem, T_IN, 0);
        assert_eq!(run(&mut b, &vq, &[desc(HDR, 16, 0, 0)], 0), 0);
        assert_eq!(
            run(
                &mut b,
                &vq,
                &[desc(HDR, 8, 0, 0), desc(STATUS, 1, WRITE, 0)],
                0
            ),
            0
        );
        assert_eq!(
            run(
                &mut b,
                &vq,
                &[
                    desc(HDR, 16, 0, 0),
                    desc(0xffff_0000_0000, 512, WRITE, 0),
                    desc(STATUS, 1, WRITE, 0)
                ],
                0
            ),
            0
        );
        assert_eq!(
            run(
                &mut b,
                &vq,
                &[
                    desc(HDR, 16, 0, 0),
                    desc(DATA, 0, WRITE, 0),
                    desc(STATUS, 1, WRITE, 0)
                ],
                0
            ),
            0
        );
        assert_eq!(
            run(
                &mut b,
                &vq,
                &[
                    desc(HDR, 16, 0, 0),
                    desc(DATA, 0x1000_0000, WRITE, 0),
                    desc(STATUS, 1, WRITE, 0)
                ],
                0
            ),
            0
        );
        assert_eq!(b.metrics.invalid_chains.get(), before + 5);
        // The device still works afterwards.
        header(&mem, T_IN, 1);
        run(
            &mut b,
            &vq,
            &[
                desc(HDR, 16, 0, 0),
                desc(DATA, 512, WRITE, 0),
                desc(STATUS, 1, WRITE, 0),
            ],
            0,
        );
        assert_eq!(status(&mem), S_OK);
    }
}

/// The rate limiter in the device: requests wait in the ring while the disk is throttled and
/// are served, all of them and in order, at the configured rate. The limiters' clock is the
/// test's ([`rate_limiter::test_clock`]): it moves exactly when the device's timer would fire.
#[cfg(test)]
mod limit_tests {
    use std::io::Write;
    use std::sync::Arc;
    use std::time::Duration;

    use virtio_queue::mock::MockSplitQueue;
    use vm_memory::{Bytes, GuestAddress};
    use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

    use super::*;
    use crate::devices::rate_limiter::test_clock;
    use crate::devices::virtio::chain::test_util::{desc, NEXT, WRITE};
    use crate::devices::virtio::IrqTrigger;
    use crate::vstate::memory;

    const REQ: u64 = 16 << 10;
    const N: u16 = 48;

    fn sector_byte(sector: u64) -> u8 {
        u8::try_from(sector % 251).unwrap()
    }

    /// A 1 MiB disk whose every byte names its sector, and `N` reads of `REQ` bytes queued,
    /// request `i` at sector `i * 32`.
    fn queued(
        mem: &GuestMemoryMmap,
        limit: LimitConfig,
    ) -> (
        tempfile::NamedTempFile,
        Block,
        MockSplitQueue<'_, GuestMemoryMmap>,
    ) {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        let content: Vec<u8> = (0..(1u64 << 20))
            .map(|i| sector_byte(i / SECTOR_SIZE))
            .collect();
        f.write_all(&content).unwrap();
        let mut b = Block::new(f.path(), true).unwrap();
        b.set_limit(limit);
        let vq = MockSplitQueue::create(mem, GuestAddress(0x1_0000), 256);
        b.state.queues[0] = vq.create_queue().unwrap();
        let irq = Arc::new(IrqTrigger::new(EventFd::new(EFD_NONBLOCK).unwrap()));
        b.activate(mem.clone(), irq).unwrap();
        for i in 0..N {
            let hdr = 0x10_0000 + u64::from(i) * 16;
            let data = 0x20_0000 + u64::from(i) * REQ;
            let status = 0x80_0000 + u64::from(i);
            mem.write_obj(T_IN, GuestAddress(hdr)).unwrap();
            mem.write_obj(u64::from(i) * 32, GuestAddress(hdr + 8))
                .unwrap();
            mem.write_obj(0xffu8, GuestAddress(status)).unwrap();
            let slot = i * 3;
            vq.add_desc_chains(
                &[
                    desc(hdr, 16, NEXT, slot + 1),
                    desc(data, u32::try_from(REQ).unwrap(), WRITE | NEXT, slot + 2),
                    desc(status, 1, WRITE, 0),
                ],
                slot,
            )
            .unwrap();
        }
        (f, b, vq)
    }

    fn used(vq: &MockSplitQueue<'_, GuestMemoryMmap>) -> u16 {
        vq.used().idx().load()
    }

    /// Serves the queue as the event loop would, the clock moving to each timer expiry;
    /// returns the clock's time at which each request became used.
    fn drain(b: &mut Block, vq: &MockSplitQueue<'_, GuestMemoryMmap>) -> Vec<Duration> {
        let t0 = test_clock::elapsed();
        let mut done = Vec::new();
        loop {
            b.process_queue();
            while done.len() < usize::from(used(vq)) {
                done.push(test_clock::elapsed() - t0);
            }
            if !b.limit.throttled() {
                break;
            }
            // Throttled: nothing more was taken from the ring than was served.
            assert_eq!(b.state.queues[0].next_avail(), used(vq));
            b.limit.fire_now();
        }
        done
    }

    fn every_read_arrived(mem: &GuestMemoryMmap, vq: &MockSplitQueue<'_, GuestMemoryMmap>) {
        assert_eq!(used(vq), N, "every request served");
        for i in 0..N {
            let e = vq.used().ring().ref_at(usize::from(i)).unwrap().load();
            assert_eq!(e.id(), u32::from(i) * 3, "in order");
            let status: u8 = mem
                .read_obj(GuestAddress(0x80_0000 + u64::from(i)))
                .unwrap();
            assert_eq!(status, S_OK);
            let last: u8 = mem
                .read_obj(GuestAddress(0x20_0000 + u64::from(i) * REQ + REQ - 1))
                .unwrap();
            assert_eq!(last, sector_byte(u64::from(i) * 32 + 31));
        }
    }

    #[test]
    fn bytes_limit_holds_the_disk_to_its_rate_and_loses_nothing() {
        let mem = memory::create(16 << 20).unwrap();
        let rate = 64 << 10;
        let (_f, mut b, vq) = queued(&mem, LimitConfig::bytes_only(rate, REQ, 0));
        let done = drain(&mut b, &vq);
        every_read_arrived(&mem, &vq);
        // The burst's worth at once, then REQ bytes every REQ / rate = 250 ms.
        assert_eq!(done[0], Duration::ZERO);
        let total = done[usize::from(N) - 1];
        let moved = u64::from(N - 1) * REQ;
        let measured = moved as f64 / total.as_secs_f64();
        let err = (measured - rate as f64).abs() / rate as f64;
        assert!(
            err < 0.05,
            "{measured:.0} B/s against {rate} B/s over {total:?}"
        );
        assert!(b.metrics.throttled.get() >= u64::from(N) - 2);
    }

    #[test]
    fn ops_limit_with_a_one_time_burst() {
        let mem = memory::create(16 << 20).unwrap();
        let (_f, mut b, vq) = queued(&mem, LimitConfig::ops_only(10, 2, 6));
        let done = drain(&mut b, &vq);
        every_read_arrived(&mem, &vq);
        // 2 + 6 at once, then one every 100 ms.
        assert!(done[..8].iter().all(|t| t.is_zero()), "{done:?}");
        assert!(!done[8].is_zero());
        let rest = done[usize::from(N) - 1] - done[8];
        let measured = f64::from(N - 9) / rest.as_secs_f64();
        assert!(
            (measured - 10.0).abs() < 0.5,
            "{measured} requests/s over {rest:?}"
        );
    }

    #[test]
    fn new_limits_at_runtime_apply_at_once() {
        let mem = memory::create(16 << 20).unwrap();
        let (_f, mut b, vq) = queued(&mem, LimitConfig::ops_only(1, 1, 0));
        b.process_queue();
        assert_eq!(used(&vq), 1);
        assert!(b.limit.throttled());
        // The API lifts the limit: the device, woken by its timer, serves the rest now.
        b.set_rate_limits(&RateLimits::Disk(LimitConfig::default()))
            .unwrap();
        assert!(b
            .set_rate_limits(&RateLimits::Net {
                rx: LimitConfig::default(),
                tx: LimitConfig::default()
            })
            .is_err());
        b.limit.expired();
        b.process_queue();
        every_read_arrived(&mem, &vq);
    }
}
