//! virtio-rng on the event loop: a queue notification serves the queue.

use event_manager::{EventOps, Events, MutEventSubscriber};
use vmm_sys_util::epoll::EventSet;

use super::Rng;

impl MutEventSubscriber for Rng {
    fn init(&mut self, ops: &mut EventOps) {
        if let Err(e) = ops.add(Events::new(&self.state.queue_evts[0], EventSet::IN)) {
            eprintln!("hull-vmm: rng: cannot watch the queue: {e}");
        }
    }

    fn process(&mut self, events: Events, _ops: &mut EventOps) {
        if events.fd() == std::os::fd::AsRawFd::as_raw_fd(&self.state.queue_evts[0]) {
            let _ = self.state.queue_evts[0].read();
            self.process_queue();
        }
    }
}
