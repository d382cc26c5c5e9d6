//! virtio-mem's request queue on a fuzzer-written ring: plug, unplug, unplug-all and state
//! requests with any address, block count and type, while the host changes the size it
//! asks for. The plugged size never exceeds what was asked at the time of a plug, nor the
//! region.
#![no_main]

use arbitrary::Arbitrary;
use hull_fuzz::guest::{self, Ring};
use hull_vmm::devices::virtio::VirtioDevice;
use hull_vmm::fuzzing::{mem_plugged, mem_request, VirtioMem, MEM_BLOCK};
use libfuzzer_sys::fuzz_target;
use virtio_queue::QueueT;

#[derive(Arbitrary, Debug)]
struct Round {
    /// The host's new requested size, in blocks (taken modulo the region).
    request: Option<u8>,
    ring: Ring,
}

fuzz_target!(|rounds: Vec<Round>| {
    let mem = guest::memory();
    let vqs = guest::mock_queues(&mem, 1);
    // The region covers the whole mock guest: unplugging punches nothing (no backing file),
    // which the device reports and counts.
    let region = guest::MEM_SIZE;
    let mut dev = VirtioMem::new(0, region).expect("virtio-mem");
    guest::activate(&mut dev, &mem, &vqs);
    let (mut idx, mut bad) = (0u16, false);
    let mut asked = 0;
    for r in rounds.iter().take(4) {
        if let Some(b) = r.request {
            asked = u64::from(b) % (region / MEM_BLOCK + 1) * MEM_BLOCK;
            mem_request(&mut dev, asked).expect("a block multiple within the region");
        }
        let before_plugged = mem_plugged(&dev);
        idx = r.ring.post(&mem, &vqs[0], idx);
        bad |= r.ring.bad_heads();
        let before = dev.queues()[0].next_avail();
        dev.process_queue();
        guest::check_drained(&dev.queues()[0], &vqs[0], before, &mut bad);
        let plugged = mem_plugged(&dev);
        assert!(plugged <= region);
        assert!(
            plugged <= asked.max(before_plugged),
            "plugged {plugged} beyond the request {asked}"
        );
    }
});
