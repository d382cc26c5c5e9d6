//! virtio-blk on the event loop: a queue notification serves the queue.

use std::os::fd::AsRawFd;

use event_manager::{EventOps, Events, MutEventSubscriber};
use vmm_sys_util::epoll::EventSet;

use super::Block;

impl MutEventSubscriber for Block {
    fn init(&mut self, ops: &mut EventOps) {
        if let Err(e) = ops.add(Events::new(&self.state.queue_evts[0], EventSet::IN)) {
            eprintln!("hull-vmm: blk: cannot watch the queue: {e}");
        }
    }

    fn process(&mut self, events: Events, _ops: &mut EventOps) {
        if events.fd() == self.state.queue_evts[0].as_raw_fd() {
            let _ = self.state.queue_evts[0].read();
            self.process_queue();
        }
    }
}
