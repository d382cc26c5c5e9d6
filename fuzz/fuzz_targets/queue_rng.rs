//! virtio-rng's queue processing on a fuzzer-written ring, notified once or several times
//! with more chains published in between.
#![no_main]

use hull_fuzz::guest::{self, Ring};
use hull_vmm::devices::virtio::VirtioDevice;
use hull_vmm::fuzzing::Rng;
use libfuzzer_sys::fuzz_target;
use virtio_queue::QueueT;

fuzz_target!(|rounds: Vec<Ring>| {
    let mem = guest::memory();
    let vqs = guest::mock_queues(&mem, 1);
    let mut dev = Rng::new().expect("virtio-rng");
    guest::activate(&mut dev, &mem, &vqs);
    let (mut idx, mut bad) = (0u16, false);
    for ring in rounds.iter().take(4) {
        idx = ring.post(&mem, &vqs[0], idx);
        bad |= ring.bad_heads();
        let before = dev.queues()[0].next_avail();
        dev.process_queue();
        guest::check_drained(&dev.queues()[0], &vqs[0], before, &mut bad);
    }
});
