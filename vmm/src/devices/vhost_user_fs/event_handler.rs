//! virtio-fs on the event loop: the activation hand-over (so the back end's socket is used from
//! the VMM thread only) and the back end's socket, whose closing ends the VM: without
//! virtiofsd every guest file operation on the share would hang.

use std::os::fd::AsRawFd;

use event_manager::{EventOps, Events, MutEventSubscriber};
use vmm_sys_util::epoll::EventSet;

use super::VhostUserFs;
use crate::exit::ExitReason;

impl MutEventSubscriber for VhostUserFs {
    fn init(&mut self, ops: &mut EventOps) {
        if let Err(e) = ops.add(Events::new(&self.activate_evt, EventSet::IN)) {
            eprintln!("hull-vmm: virtio-fs: cannot watch activation: {e}");
        }
        let fd = self.backend.socket_fd();
        if let Err(e) = ops.add(Events::new_raw(fd, EventSet::IN)) {
            eprintln!("hull-vmm: virtio-fs: cannot watch the back end's socket: {e}");
        }
    }

    fn process(&mut self, events: Events, ops: &mut EventOps) {
        if events.fd() == self.activate_evt.as_raw_fd() {
            let _ = self.activate_evt.read();
            self.start_backend();
        } else if events.fd() == self.backend.socket_fd() && !self.dead {
            let hup = events
                .event_set()
                .intersects(EventSet::HANG_UP | EventSet::READ_HANG_UP | EventSet::ERROR);
            let why = self
                .backend
                .broken()
                .or_else(|| hup.then(|| "hung up".to_owned()));
            if let Some(why) = why {
                self.dead = true;
                self.metrics.backend_errors.inc();
                // Level-triggered: a dead socket stays readable; stop watching it.
                let _ = ops.remove(events);
                self.exit.signal(ExitReason::Error(format!(
                    "virtio-fs back end at {} {why}; the guest's shared filesystem cannot work \
                     without it",
                    self.backend.path()
                )));
            }
        }
    }
}
