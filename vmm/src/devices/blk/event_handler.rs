//! virtio-blk on the event loop: a queue notification serves the queue, and so does the
//! rate limiter's timer once a throttled disk may go on.

use std::os::fd::AsRawFd;

use event_manager::{EventOps, Events, MutEventSubscriber};
use vmm_sys_util::epoll::EventSet;

use super::Block;

impl MutEventSubscriber for Block {
    fn init(&mut self, ops: &mut EventOps) {
        for fd in [
            self.state.queue_evts[0].as_raw_fd(),
            self.limit.timer().as_raw_fd(),
        ] {
            if let Err(e) = ops.add(Events::new_raw(fd, EventSet::IN)) {
                eprintln!("hull-vmm: blk: cannot watch fd {fd}: {e}");
            }
        }
    }

    fn process(&mut self, events: Events, _ops: &mut EventOps) {
        if events.fd() == self.state.queue_evts[0].as_raw_fd() {
            let _ = self.state.queue_evts[0].read();
            self.process_queue();
        } else if events.fd() == self.limit.timer().as_raw_fd() {
            self.limit.expired();
            self.process_queue();
        }
    }
}
