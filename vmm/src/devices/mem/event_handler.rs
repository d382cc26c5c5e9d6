//! virtio-mem on the event loop: a notified request queue is served.

use event_manager::{EventOps, Events, MutEventSubscriber};
use vmm_sys_util::epoll::EventSet;

use super::VirtioMem;

impl MutEventSubscriber for VirtioMem {
    fn init(&mut self, ops: &mut EventOps) {
        for evt in &self.state.queue_evts {
            if let Err(e) = ops.add(Events::new(evt, EventSet::IN)) {
                eprintln!("hull-vmm: virtio-mem: cannot watch its queue: {e}");
            }
        }
    }

    fn process(&mut self, _events: Events, _ops: &mut EventOps) {
        if let Some(evt) = self.state.queue_evts.first() {
            let _ = evt.read();
        }
        self.process_queue();
    }
}
