//! virtio-blk's queue processing on a fuzzer-written ring: request headers, data and status
//! buffers anywhere, in any direction, against a small disk (read-only or not).
#![no_main]

use arbitrary::Arbitrary;
use hull_fuzz::guest::{self, Ring};
use hull_vmm::devices::virtio::VirtioDevice;
use hull_vmm::fuzzing::Block;
use libfuzzer_sys::fuzz_target;
use virtio_queue::QueueT;

#[derive(Arbitrary, Debug)]
struct Input {
    read_only: bool,
    /// Disk size in sectors (a partial last sector too).
    disk_bytes: u16,
    rounds: Vec<Ring>,
}

fuzz_target!(|input: Input| {
    let disk = tempfile::NamedTempFile::new().expect("disk image");
    disk.as_file()
        .set_len(u64::from(input.disk_bytes))
        .expect("size the disk");
    let mut dev = Block::new(disk.path(), input.read_only).expect("virtio-blk");
    let mem = guest::memory();
    let vqs = guest::mock_queues(&mem, 1);
    guest::activate(&mut dev, &mem, &vqs);
    let (mut idx, mut bad) = (0u16, false);
    for ring in input.rounds.iter().take(4) {
        idx = ring.post(&mem, &vqs[0], idx);
        bad |= ring.bad_heads();
        let before = dev.queues()[0].next_avail();
        dev.process_queue();
        guest::check_drained(&dev.queues()[0], &vqs[0], before, &mut bad);
    }
});
