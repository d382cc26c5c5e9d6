//! virtio-balloon device logic (virtio 1.2 §5.5), free page reporting only.
//!
//! The guest's page allocator hands blocks it has free (128 KiB and up with the order hull-vmm
//! puts on the command line) to the reporting queue; hull-vmm punches them out of the guest RAM memfd,
//! which frees their host pages in every process that maps it (hull-vmm, virtiofsd). A page
//! the guest touches again faults in zeroed, as the spec allows for reported pages. The config
//! asks for no pages (`num_pages` 0), so a conforming driver never inflates; an inflate or
//! deflate request is returned untouched and counted.
//!
//! A hostile guest can only report its own RAM: losing the contents of pages it still uses
//! hurts only itself. Every range is checked against guest memory, capped at Linux's largest
//! block and trimmed to whole pages before anything is released. What it can do is repeat:
//! touch a block, report it, touch it again. Each round costs the host a hole punch here and
//! a zeroed page at the next fault, paid by that VM's own threads; nothing bounds the rate yet.

use std::sync::Arc;

use virtio_queue::QueueT;

use super::metrics::BalloonMetrics;
use crate::devices::virtio::chain::ChainLimits;
use crate::devices::virtio::{
    read_config_bytes, DescChain, DeviceMetrics, DeviceState, VirtioDevice, INT_VRING,
    TYPE_BALLOON, VIRTIO_F_VERSION_1,
};
use crate::guest_log;
use crate::vstate::memory::{self, GuestMemoryMmap};

/// VIRTIO_BALLOON_F_PAGE_POISON: the driver tells which value its free pages hold. Linux
/// turns reporting off without it when the guest zeroes or poisons freed pages
/// (`init_on_free=1`, `page_poison=1`), so it is offered; hull-vmm releases only while that
/// value is 0, which the zeroed refault keeps.
const F_PAGE_POISON: u64 = 1 << 4;
/// VIRTIO_BALLOON_F_FREE_PAGE_REPORTING.
const F_REPORTING: u64 = 1 << 5;
/// inflateq, deflateq, reporting_vq. The spec numbers reporting_vq 4, but a driver numbers
/// only the queues it sets up, one after another (Linux's virtio-mmio `vm_find_vqs`); no
/// feature with a queue of its own (stats, free page hints) is offered, so it is the third.
const NUM_QUEUES: usize = 3;
const REPORTING_QUEUE: usize = 2;
/// Linux reports at most 32 ranges at a time (`PAGE_REPORTING_CAPACITY`) and needs a queue
/// at least that large.
const QUEUE_SIZE: u16 = 32;
/// Linux's largest free block: order 10 (`MAX_PAGE_ORDER`) of 4 KiB pages.
const MAX_RANGE: u32 = 4 << 20;
const LIMITS: ChainLimits = ChainLimits {
    max_descriptors: 32,
    // 32 ranges of MAX_RANGE.
    max_bytes: 128 << 20,
};
/// Config space: `num_pages`, `actual`, `free_page_hint_cmd_id`, `poison_val` (le32 each).
const CONFIG_LEN: usize = 16;
/// Bytes of the config space the driver writes: `actual` and `poison_val`.
const DRIVER_WRITES: [std::ops::Range<usize>; 2] = [4..8, 12..16];
const POISON_VAL: std::ops::Range<usize> = 12..16;

/// The virtio-balloon device.
#[derive(Debug)]
pub struct Balloon {
    pub(super) state: DeviceState,
    /// `num_pages` (0) and `free_page_hint_cmd_id` (0) the device's, the rest the driver's.
    config: [u8; CONFIG_LEN],
    /// A failed release was logged (once; then only counted).
    said_release_error: bool,
    pub(super) metrics: Arc<BalloonMetrics>,
}

impl Balloon {
    pub fn new() -> std::io::Result<Self> {
        let features = VIRTIO_F_VERSION_1 | F_PAGE_POISON | F_REPORTING;
        Ok(Balloon {
            state: DeviceState::new(NUM_QUEUES, QUEUE_SIZE, features)?,
            config: [0; CONFIG_LEN],
            said_release_error: false,
            metrics: Arc::default(),
        })
    }

    /// Whether a report may be released: the driver took reporting, and its free pages are
    /// expected to hold zeros (no poison value, or poison 0).
    fn may_release(&self) -> bool {
        let acked = self.state.acked_features;
        let poison = self
            .config
            .get(POISON_VAL)
            .is_some_and(|p| p.iter().any(|b| *b != 0));
        acked & F_REPORTING != 0 && !(acked & F_PAGE_POISON != 0 && poison)
    }

    /// Serves every available chain of queue `q`; returns whether any was used.
    pub fn process_queue(&mut self, q: usize) -> bool {
        let Some(active) = &self.state.active else {
            return false;
        };
        let mem = active.mem.clone();
        let irq = active.irq.clone();
        let release = q == REPORTING_QUEUE && self.may_release();
        let mut used = false;
        while let Some(chain) = self.state.queues[q].pop_descriptor_chain(&mem) {
            let head = chain.head_index();
            match DescChain::parse(chain, &mem, LIMITS) {
                Ok(c)
                    if c.readable
                        .iter()
                        .chain(&c.writable)
                        .any(|(_, l)| *l > MAX_RANGE) =>
                {
                    self.metrics.invalid_chains.inc();
                }
                Ok(c) if release => self.release_reported(&mem, &c),
                Ok(_) => self.metrics.ignored_requests.inc(),
                Err(_) => self.metrics.invalid_chains.inc(),
            }
            // The device writes nothing into a report (nor into ignored requests).
            if self.state.queues[q].add_used(&mem, head, 0).is_err() {
                break;
            }
            used = true;
        }
        if used {
            irq.trigger(INT_VRING);
        }
        used
    }

    fn release_reported(&mut self, mem: &GuestMemoryMmap, c: &DescChain) {
        self.metrics.reports.inc();
        // Linux posts the ranges device-writable; the direction carries no meaning here.
        for (addr, len) in c.readable.iter().chain(&c.writable) {
            match memory::discard(mem, *addr, u64::from(*len)) {
                Ok(r) => {
                    self.metrics.reported_bytes.add(r.punched);
                    self.metrics.released_bytes.add(r.freed);
                }
                Err(e) => {
                    self.metrics.release_errors.inc();
                    guest_log::once(
                        &mut self.said_release_error,
                        format_args!("balloon: reported range kept: {e}"),
                    );
                }
            }
        }
    }
}

impl VirtioDevice for Balloon {
    fn state(&self) -> &DeviceState {
        &self.state
    }
    fn state_mut(&mut self) -> &mut DeviceState {
        &mut self.state
    }
    fn device_type(&self) -> u32 {
        TYPE_BALLOON
    }
    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_config_bytes(&self.config, offset, data);
    }
    /// Only `actual` and `poison_val` are the driver's to write.
    fn write_config(&mut self, offset: u64, data: &[u8]) {
        for (i, b) in data.iter().enumerate() {
            let at = u64::try_from(i)
                .ok()
                .and_then(|i| offset.checked_add(i))
                .and_then(|at| usize::try_from(at).ok());
            if let Some(at) = at.filter(|at| DRIVER_WRITES.iter().any(|r| r.contains(at))) {
                self.config[at] = *b;
            }
        }
    }
    fn metrics(&self) -> DeviceMetrics {
        DeviceMetrics::Balloon(self.metrics.clone())
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt;
    use std::sync::Arc;

    use virtio_queue::mock::MockSplitQueue;
    use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryRegion};
    use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

    use super::*;
    use crate::devices::virtio::chain::test_util::*;
    use crate::devices::virtio::IrqTrigger;
    use crate::vstate::memory;

    const MIB: u64 = 1 << 20;

    /// A balloon whose driver took `features`, with queue `q` set up by the mock driver.
    fn setup(
        mem: &GuestMemoryMmap,
        q: usize,
        features: u64,
    ) -> (Balloon, MockSplitQueue<'_, GuestMemoryMmap>) {
        let vq = MockSplitQueue::new(mem, QUEUE_SIZE);
        let mut b = Balloon::new().unwrap();
        b.set_acked_features(features);
        b.state.queues[q] = vq.create_queue().unwrap();
        let irq = Arc::new(IrqTrigger::new(EventFd::new(EFD_NONBLOCK).unwrap()));
        b.activate(mem.clone(), irq).unwrap();
        (b, vq)
    }

    fn reporting(mem: &GuestMemoryMmap) -> (Balloon, MockSplitQueue<'_, GuestMemoryMmap>) {
        setup(mem, REPORTING_QUEUE, VIRTIO_F_VERSION_1 | F_REPORTING)
    }

    /// Bytes of the guest RAM memfd that hold memory (st_blocks counts 512-byte units).
    fn backed_bytes(mem: &GuestMemoryMmap) -> u64 {
        let region = mem.find_region(GuestAddress(0)).unwrap();
        region
            .file_offset()
            .unwrap()
            .file()
            .metadata()
            .unwrap()
            .blocks()
            * 512
    }

    fn touch(mem: &GuestMemoryMmap, addr: u64, len: u64) {
        let buf = vec![0xa5u8; usize::try_from(len).unwrap()];
        mem.write_slice(&buf, GuestAddress(addr)).unwrap();
    }

    fn byte_at(mem: &GuestMemoryMmap, addr: u64) -> u8 {
        mem.read_obj(GuestAddress(addr)).unwrap()
    }

    #[test]
    fn offers_reporting_and_asks_for_no_pages() {
        let b = Balloon::new().unwrap();
        assert_eq!(
            b.avail_features(),
            VIRTIO_F_VERSION_1 | F_PAGE_POISON | F_REPORTING
        );
        assert_eq!(b.queue_events().len(), 3);
        let mut c = [0xffu8; 16];
        b.read_config(0, &mut c);
        assert_eq!(c, [0; 16]);
    }

    #[test]
    fn the_driver_writes_actual_and_poison_val_only() {
        let mut b = Balloon::new().unwrap();
        b.write_config(0, &[1; 16]);
        let mut c = [0u8; 16];
        b.read_config(0, &mut c);
        assert_eq!(c, [0, 0, 0, 0, 1, 1, 1, 1, 0, 0, 0, 0, 1, 1, 1, 1]);
        b.write_config(6, &[9, 9, 9, 9]);
        b.write_config(u64::MAX, &[7, 7]);
        b.read_config(4, &mut c[..4]);
        assert_eq!(c[..4], [1, 1, 9, 9]);
    }

    #[test]
    fn reported_ranges_lose_their_host_backing_and_read_as_zero() {
        let mem = memory::create(16 * MIB).unwrap();
        touch(&mem, 0x40_0000, 3 * MIB);
        let (mut b, vq) = reporting(&mem);
        // Two ranges of 2 MiB in one report, as Linux sends them (device-writable); the
        // second was only half touched.
        vq.add_desc_chains(
            &[
                desc(0x40_0000, 2 << 20, WRITE | NEXT, 1),
                desc(0x60_0000, 2 << 20, WRITE, 0),
            ],
            0,
        )
        .unwrap();
        let before = backed_bytes(&mem);
        assert!(before >= 3 * MIB, "{before}");
        assert!(b.process_queue(REPORTING_QUEUE));
        assert_eq!(vq.used().ring().ref_at(0).unwrap().load().len(), 0);
        assert_eq!(b.metrics.reports.get(), 1);
        assert_eq!(b.metrics.reported_bytes.get(), 4 * MIB);
        // 3 MiB, or 4 when the host backs the memfd with huge pages.
        let released = b.metrics.released_bytes.get();
        assert!((3 * MIB..=4 * MIB).contains(&released), "{released}");
        assert_eq!(backed_bytes(&mem), before - released);
        assert_eq!(byte_at(&mem, 0x5f_ffff), 0);
    }

    #[test]
    fn partial_pages_are_kept() {
        let mem = memory::create(16 * MIB).unwrap();
        touch(&mem, 0x10_0000, 0x3000);
        let (mut b, vq) = reporting(&mem);
        // 0x10_0800..0x10_2800 holds one whole page, 0x10_1000..0x10_2000.
        vq.add_desc_chains(&[desc(0x10_0800, 0x2000, WRITE, 0)], 0)
            .unwrap();
        assert!(b.process_queue(REPORTING_QUEUE));
        assert_eq!(b.metrics.reported_bytes.get(), 0x1000);
        // Less when a huge page backs it: punching part of one zeroes it, frees nothing.
        assert!(b.metrics.released_bytes.get() <= 0x1000);
        for (addr, want) in [
            (0x10_0fff, 0xa5),
            (0x10_1000, 0),
            (0x10_1fff, 0),
            (0x10_2000, 0xa5),
        ] {
            assert_eq!(byte_at(&mem, addr), want, "{addr:#x}");
        }
    }

    #[test]
    fn bad_reports_fail_alone() {
        let mem = memory::create(16 * MIB).unwrap();
        touch(&mem, 0x10_0000, 8 * MIB);
        let (mut b, vq) = reporting(&mem);
        // Outside guest memory, past its end, zero length, larger than Linux's largest block.
        vq.add_desc_chains(&[desc(0xffff_0000_0000, 0x1000, WRITE, 0)], 0)
            .unwrap();
        vq.add_desc_chains(&[desc(16 * MIB - 0x1000, 0x2000, WRITE, 0)], 1)
            .unwrap();
        vq.add_desc_chains(&[desc(0x10_0000, 0, WRITE, 0)], 2)
            .unwrap();
        vq.add_desc_chains(&[desc(0x10_0000, (4 << 20) + 0x1000, WRITE, 0)], 3)
            .unwrap();
        assert!(b.process_queue(REPORTING_QUEUE));
        assert_eq!(b.metrics.invalid_chains.get(), 4);
        assert_eq!(b.metrics.reported_bytes.get(), 0);
        assert_eq!(byte_at(&mem, 0x10_0000), 0xa5);
    }

    #[test]
    fn nothing_is_released_unless_the_driver_took_reporting_without_poison() {
        let mem = memory::create(16 * MIB).unwrap();
        touch(&mem, 0x10_0000, 0x1000);
        let one_page = [desc(0x10_0000, 0x1000, WRITE, 0)];
        // Inflating (a page frame number on queue 0) releases nothing.
        let (mut b, vq) = setup(&mem, 0, VIRTIO_F_VERSION_1 | F_REPORTING);
        mem.write_obj(0x100u32, GuestAddress(0x20_0000)).unwrap();
        vq.add_desc_chains(&[desc(0x20_0000, 4, 0, 0)], 0).unwrap();
        assert!(b.process_queue(0));
        // A report on a queue the driver never negotiated.
        let (mut b2, vq2) = setup(&mem, REPORTING_QUEUE, VIRTIO_F_VERSION_1);
        vq2.add_desc_chains(&one_page, 0).unwrap();
        assert!(b2.process_queue(REPORTING_QUEUE));
        // The guest poisons free pages with a value a zeroed page would not have.
        let poison = VIRTIO_F_VERSION_1 | F_REPORTING | F_PAGE_POISON;
        let (mut b3, vq3) = setup(&mem, REPORTING_QUEUE, poison);
        b3.write_config(12, &0xaaaa_aaaau32.to_le_bytes());
        vq3.add_desc_chains(&one_page, 0).unwrap();
        assert!(b3.process_queue(REPORTING_QUEUE));
        for d in [&b, &b2, &b3] {
            assert_eq!(d.metrics.ignored_requests.get(), 1);
            assert_eq!(d.metrics.reported_bytes.get(), 0);
        }
        assert_eq!(byte_at(&mem, 0x10_0000), 0xa5);
        // Poison 0 (init_on_free): zeroed pages are what the guest expects.
        let (mut b4, vq4) = setup(&mem, REPORTING_QUEUE, poison);
        vq4.add_desc_chains(&one_page, 0).unwrap();
        assert!(b4.process_queue(REPORTING_QUEUE));
        assert_eq!(b4.metrics.reported_bytes.get(), 0x1000);
        assert_eq!(byte_at(&mem, 0x10_0000), 0);
    }

    #[test]
    fn inactive_device_does_nothing() {
        let mut b = Balloon::new().unwrap();
        assert!(!b.process_queue(REPORTING_QUEUE));
    }
}
