//! virtio-vsock on the event loop: queue notifications and the muxer's epoll fd.

use std::os::fd::AsRawFd;

use event_manager::{EventOps, Events, MutEventSubscriber};
use vmm_sys_util::epoll::EventSet;

use super::device::{EVQ, RXQ, TXQ};
use super::Vsock;

impl MutEventSubscriber for Vsock {
    fn init(&mut self, ops: &mut EventOps) {
        let fds = [
            self.state.queue_evts[RXQ].as_raw_fd(),
            self.state.queue_evts[TXQ].as_raw_fd(),
            self.state.queue_evts[EVQ].as_raw_fd(),
            self.muxer.as_raw_fd(),
        ];
        for fd in fds {
            if let Err(e) = ops.add(Events::new_raw(fd, EventSet::IN)) {
                eprintln!("hull-vmm: vsock: cannot watch fd {fd}: {e}");
            }
        }
    }

    fn process(&mut self, events: Events, _ops: &mut EventOps) {
        let fd = events.fd();
        if fd == self.state.queue_evts[RXQ].as_raw_fd() {
            let _ = self.state.queue_evts[RXQ].read();
        } else if fd == self.state.queue_evts[TXQ].as_raw_fd() {
            let _ = self.state.queue_evts[TXQ].read();
            self.process_tx();
        } else if fd == self.state.queue_evts[EVQ].as_raw_fd() {
            let _ = self.state.queue_evts[EVQ].read();
        } else if fd == self.muxer.as_raw_fd() {
            self.muxer.process_events();
        }
        self.process_rx();
    }
}
