//! virtio-balloon on the event loop: a notified queue is served.

use event_manager::{EventOps, Events, MutEventSubscriber};
use vmm_sys_util::epoll::EventSet;

use super::Balloon;

impl MutEventSubscriber for Balloon {
    fn init(&mut self, ops: &mut EventOps) {
        for evt in &self.state.queue_evts {
            if let Err(e) = ops.add(Events::new(evt, EventSet::IN)) {
                eprintln!("hull-vmm: balloon: cannot watch a queue: {e}");
            }
        }
    }

    fn process(&mut self, events: Events, _ops: &mut EventOps) {
        let fd = events.fd();
        let Some(q) = self
            .state
            .queue_evts
            .iter()
            .position(|e| std::os::fd::AsRawFd::as_raw_fd(e) == fd)
        else {
            return;
        };
        let _ = self.state.queue_evts[q].read();
        self.process_queue(q);
    }
}
