//! `DescChain::parse` on whatever a driver can put in a split ring (loops, indirect tables,
//! junk flags, buffers outside RAM), then the copies and slices a device makes through a
//! parsed chain at arbitrary offsets. A parsed chain must keep every promise `parse` makes.
#![no_main]

use arbitrary::Arbitrary;
use hull_fuzz::guest::{self, Ring, QUEUE_SIZE};
use hull_vmm::devices::virtio::chain::{ChainError, ChainLimits, DescChain};
use libfuzzer_sys::fuzz_target;
use virtio_queue::mock::MockSplitQueue;
use virtio_queue::{Queue, QueueOwnedT};
use vm_memory::GuestMemoryBackend;

#[derive(Arbitrary, Debug)]
struct Input {
    ring: Ring,
    max_descriptors: u8,
    max_bytes: u32,
    /// (offset, length) of reads and writes through each parsed chain.
    copies: Vec<(u32, u16)>,
}

fuzz_target!(|input: Input| {
    let mem = guest::memory();
    let vq = MockSplitQueue::create(&mem, guest::queue_base(0), QUEUE_SIZE);
    input.ring.post(&mem, &vq, 0);
    let Ok(mut q) = vq.create_queue::<Queue>() else {
        return;
    };
    let limits = ChainLimits {
        max_descriptors: usize::from(input.max_descriptors),
        max_bytes: u64::from(input.max_bytes),
    };
    let Ok(iter) = q.iter(&mem) else {
        return;
    };
    for chain in iter.take(usize::from(QUEUE_SIZE)) {
        let Ok(c) = DescChain::parse(chain, &mem, limits) else {
            continue;
        };
        check(&mem, &c, limits);
        for &(off, len) in &input.copies {
            let off = u64::from(off);
            let mut buf = vec![0u8; usize::from(len)];
            let need = off + u64::from(len);
            match c.read_at(&mem, off, &mut buf) {
                Ok(()) => assert!(need <= c.readable_len()),
                Err(ChainError::TooShort { .. }) => assert!(need > c.readable_len()),
                Err(e) => panic!("read_at inside a parsed chain failed: {e}"),
            }
            match c.write_at(&mem, off, &buf) {
                Ok(()) => assert!(need <= c.writable_len()),
                Err(ChainError::TooShort { .. }) => assert!(need > c.writable_len()),
                Err(e) => panic!("write_at inside a parsed chain failed: {e}"),
            }
            for writable in [false, true] {
                let total = if writable {
                    c.writable_len()
                } else {
                    c.readable_len()
                };
                let slices = c
                    .slices(&mem, writable, off)
                    .expect("slices of a parsed chain");
                let got: u64 = slices.iter().map(|s| s.len() as u64).sum();
                assert_eq!(
                    got,
                    total.saturating_sub(off),
                    "slices cover the rest of the chain"
                );
            }
        }
    }
});

/// What a parsed chain promises a device.
fn check(mem: &hull_vmm::vstate::memory::GuestMemoryMmap, c: &DescChain, limits: ChainLimits) {
    let n = c.readable.len() + c.writable.len();
    assert!(n >= 1 && n <= limits.max_descriptors, "{n} descriptors");
    assert!(c.readable_len() + c.writable_len() <= limits.max_bytes);
    for &(addr, len) in c.readable.iter().chain(&c.writable) {
        assert!(len > 0, "zero-length buffer");
        let len = usize::try_from(len).expect("u32 fits");
        assert!(
            GuestMemoryBackend::check_range(mem, addr, len),
            "buffer outside RAM"
        );
    }
}
