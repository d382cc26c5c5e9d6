//! A mock guest for the device targets: 2 MiB of RAM in two adjacent regions (so buffers can
//! straddle a region boundary), queues at fixed places in the first page frames, and rings
//! whose descriptors, avail entries and buffer contents the fuzzer picks, written with
//! `virtio-queue`'s mock driver as the device unit tests do.

use std::sync::{Arc, Mutex};

use arbitrary::Arbitrary;
use event_manager::{EventManager, MutEventSubscriber, SubscriberOps};
use hull_vmm::devices::virtio::{IrqTrigger, VirtioDevice};
use hull_vmm::vstate::memory::GuestMemoryMmap;
use virtio_queue::desc::split::Descriptor;
use virtio_queue::desc::RawDescriptor;
use virtio_queue::mock::MockSplitQueue;
use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestAddress};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

/// Guest RAM: `[0, MEM_SIZE)`, two regions of half that.
pub const MEM_SIZE: u64 = 2 << 20;
/// Entries per queue: small, so that the fuzzer fills and wraps rings.
pub const QUEUE_SIZE: u16 = 16;
/// Where buffers the fuzzer names by slot start (queue `i` lives at `i * 0x1000`).
const BUF_BASE: u64 = 0x1_0000;
/// Buffer slots are this far apart, and the last ones reach past the end of RAM.
const BUF_STRIDE: u64 = 0x100;

/// The guest's memory.
pub fn memory() -> GuestMemoryMmap {
    let half = MEM_SIZE / 2;
    let half_len = usize::try_from(half).expect("small");
    GuestMemoryMmap::from_ranges(&[(GuestAddress(0), half_len), (GuestAddress(half), half_len)])
        .expect("guest memory")
}

/// The guest-physical address of queue `i`'s rings.
pub fn queue_base(i: u16) -> GuestAddress {
    GuestAddress(u64::from(i) * 0x1000)
}

/// A buffer address as the fuzzer picks it: mostly buffer slots in or near RAM, sometimes
/// anything (wrapping the address space, far outside RAM).
#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum Addr {
    Slot(u16),
    Near(u32),
    Raw(u64),
}

impl Addr {
    pub fn resolve(self) -> u64 {
        match self {
            Addr::Slot(s) => BUF_BASE + u64::from(s) * BUF_STRIDE,
            Addr::Near(n) => u64::from(n) % (MEM_SIZE + 0x1000),
            Addr::Raw(a) => a,
        }
    }
}

/// A buffer length: mostly small, sometimes anything.
#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum Len {
    Small(u8),
    Medium(u16),
    Raw(u32),
}

impl Len {
    pub fn resolve(self) -> u32 {
        match self {
            Len::Small(n) => u32::from(n),
            Len::Medium(n) => u32::from(n),
            Len::Raw(n) => n,
        }
    }
}

/// One descriptor-table entry, flags as the fuzzer sets them (NEXT, WRITE, INDIRECT, junk).
#[derive(Arbitrary, Debug, Clone, Copy)]
pub struct Desc {
    pub addr: Addr,
    pub len: Len,
    pub flags: u16,
    pub next: u16,
}

impl Desc {
    pub fn raw(&self) -> RawDescriptor {
        RawDescriptor::from(Descriptor::new(
            self.addr.resolve(),
            self.len.resolve(),
            self.flags,
            self.next,
        ))
    }
}

/// What the driver put in one queue and in guest memory before notifying the device.
#[derive(Arbitrary, Debug, Clone, Default)]
pub struct Ring {
    /// Stored at table slots 0, 1, …; later ones wrap onto earlier slots.
    pub descs: Vec<Desc>,
    /// Published avail entries (head indices, in range or not).
    pub heads: Vec<u16>,
    /// An avail index that lies about how many entries were published.
    pub bogus_avail_idx: Option<u16>,
    /// Bytes written into guest memory (request headers, payloads, indirect tables).
    pub data: Vec<(Addr, Vec<u8>)>,
}

impl Ring {
    /// Writes the descriptors through `vq` and the data into `mem`; what does not fit is
    /// skipped, as a driver's out-of-range store would be.
    pub fn load(&self, mem: &GuestMemoryMmap, vq: &MockSplitQueue<'_, GuestMemoryMmap>) {
        for (i, d) in self.descs.iter().enumerate() {
            let slot = u16::try_from(i % usize::from(QUEUE_SIZE)).expect("small");
            let _ = vq.desc_table().store(slot, d.raw());
        }
        // Data goes above the rings: what the rings hold is `descs` and `heads`, and the
        // used ring is the device's to write (check_used reads it back).
        for (addr, bytes) in &self.data {
            let at = addr.resolve().max(BUF_BASE);
            let _ = mem.write_slice(bytes, GuestAddress(at));
        }
    }

    /// Publishes `heads` after the avail entries up to `idx`; returns the new avail index
    /// (the true one, whatever the driver claimed).
    pub fn publish(&self, vq: &MockSplitQueue<'_, GuestMemoryMmap>, idx: u16) -> u16 {
        let mut idx = idx;
        for h in self.heads.iter().take(usize::from(QUEUE_SIZE)) {
            if let Ok(r) = vq.avail().ring().ref_at(usize::from(idx % QUEUE_SIZE)) {
                r.store(*h);
            }
            idx = idx.wrapping_add(1);
        }
        vq.avail().idx().store(self.bogus_avail_idx.unwrap_or(idx));
        idx
    }

    /// Whether this ring publishes a head index outside the queue.
    pub fn bad_heads(&self) -> bool {
        self.heads
            .iter()
            .take(usize::from(QUEUE_SIZE))
            .any(|h| *h >= QUEUE_SIZE)
    }

    /// [`Ring::load`], then [`Ring::publish`] after `idx`.
    pub fn post(
        &self,
        mem: &GuestMemoryMmap,
        vq: &MockSplitQueue<'_, GuestMemoryMmap>,
        idx: u16,
    ) -> u16 {
        self.load(mem, vq);
        self.publish(vq, idx)
    }
}

/// Checks a queue after the device served it (`avail_before`: its next avail index before):
/// every chain it took from the ring was given back (used), unless a head index outside the
/// queue was published, which cannot be returned and stays taken. `bad` says whether that
/// ever happened: the driver published one (`Ring::bad_heads`), or one of the entries the
/// device took now holds one (a guest may hand the device buffers over its own rings, which
/// then hold whatever the device wrote there). The used ring's contents are not checked, for
/// the same reason.
pub fn check_drained(
    q: &Queue,
    vq: &MockSplitQueue<'_, GuestMemoryMmap>,
    avail_before: u16,
    bad: &mut bool,
) {
    let mut i = avail_before;
    while i != q.next_avail() {
        let slot = usize::from(i % QUEUE_SIZE);
        let head = vq.avail().ring().ref_at(slot).expect("avail slot").load();
        *bad |= head >= QUEUE_SIZE;
        i = i.wrapping_add(1);
    }
    if !*bad {
        assert_eq!(
            q.next_used(),
            q.next_avail(),
            "the device took chains it never returned"
        );
    }
}

/// Where a queue's used ring lives, from the queue's base: past the descriptor table and
/// the avail ring, inside the queue's page.
const USED_OFFSET: u64 = 0x800;

fn lo32(v: u64) -> u32 {
    u32::try_from(v & 0xffff_ffff).expect("masked")
}

/// Mock queues for queues `0..n` of a device, at [`queue_base`].
pub fn mock_queues(mem: &GuestMemoryMmap, n: u16) -> Vec<MockSplitQueue<'_, GuestMemoryMmap>> {
    (0..n)
        .map(|i| MockSplitQueue::create(mem, queue_base(i), QUEUE_SIZE))
        .collect()
}

/// Hands the device its queues (as the MMIO transport would after the driver set them up)
/// and activates it with `mem` and a fresh interrupt.
pub fn activate(
    dev: &mut dyn VirtioDevice,
    mem: &GuestMemoryMmap,
    vqs: &[MockSplitQueue<'_, GuestMemoryMmap>],
) -> Arc<IrqTrigger> {
    for (q, vq) in dev.queues_mut().iter_mut().zip(vqs) {
        *q = vq.create_queue().expect("mock queue");
        // virtio-queue 0.18's mock puts the used ring at the avail ring's start plus its
        // entry count (`SplitQueueRing::end` adds entries, not bytes), inside the avail
        // ring: the device's used entries would overwrite heads the driver published.
        let used = vq.desc_table_addr().0 + USED_OFFSET;
        q.set_used_ring_address(Some(lo32(used)), Some(lo32(used >> 32)));
    }
    let irq = Arc::new(IrqTrigger::new(
        EventFd::new(EFD_NONBLOCK).expect("eventfd"),
    ));
    dev.activate(mem.clone(), irq.clone()).expect("activate");
    irq
}

/// The event loop a device under test runs on, as in hull-vmm.
pub type EventLoop = EventManager<Arc<Mutex<dyn MutEventSubscriber + Send>>>;

/// Puts an activated device on an event loop of its own; returns the shared device and the
/// loop.
pub fn on_event_loop<D: MutEventSubscriber + Send + 'static>(dev: D) -> (Arc<Mutex<D>>, EventLoop) {
    let dev = Arc::new(Mutex::new(dev));
    let mut events = EventLoop::new().expect("event loop");
    events.add_subscriber(dev.clone());
    (dev, events)
}

/// The guest's notification of queue `q`: its eventfd written, as the MMIO transport does.
pub fn kick<D: VirtioDevice>(dev: &Mutex<D>, q: usize) {
    let d = dev.lock().expect("device lock");
    d.queue_events()[q].write(1).expect("queue kick");
}
