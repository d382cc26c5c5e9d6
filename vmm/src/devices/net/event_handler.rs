//! virtio-net on the event loop: activation, the two queue notifications, and the tap, which
//! is registered only while there is a reason to watch it. Level-triggered input on a tap the
//! guest has no buffers for would wake the loop forever; instead the tap leaves epoll when RX
//! runs dry and comes back when the guest notifies the RX queue.

use std::os::fd::AsRawFd;

use event_manager::{EventOps, Events, MutEventSubscriber};
use vmm_sys_util::epoll::EventSet;

use super::device::Net;
use super::{RXQ, TXQ};

impl Net {
    /// Brings the tap's epoll registration in line with what the device wants.
    fn sync_tap(&mut self, ops: &mut EventOps) {
        let want = self.watch.wanted();
        let have = self.watch.registered;
        if want == have {
            return;
        }
        let res = if have.is_empty() {
            ops.add(Events::new(&self.tap, want))
        } else if want.is_empty() {
            ops.remove(Events::new(&self.tap, have))
        } else {
            ops.modify(Events::new(&self.tap, want))
        };
        match res {
            Ok(()) => {
                self.watch.registered = want;
                self.metrics.watching_rx.set(self.watching_rx());
            }
            Err(e) => self.fail(&format!("cannot watch the tap: {e}")),
        }
    }

    /// RX's limiter allows input again: take what the tap holds, and want more.
    pub(super) fn rx_unthrottled(&mut self) {
        self.watch.rx_throttled = false;
        self.process_rx();
    }

    /// Whether the event loop currently watches the tap for input.
    pub fn watching_rx(&self) -> bool {
        self.watch.registered.contains(EventSet::IN)
    }
}

impl MutEventSubscriber for Net {
    fn init(&mut self, ops: &mut EventOps) {
        let fds = [
            self.activate_evt.as_raw_fd(),
            self.state.queue_evts[RXQ].as_raw_fd(),
            self.state.queue_evts[TXQ].as_raw_fd(),
            self.rx_limit.timer().as_raw_fd(),
            self.tx_limit.timer().as_raw_fd(),
        ];
        for fd in fds {
            if let Err(e) = ops.add(Events::new_raw(fd, EventSet::IN)) {
                eprintln!("hull-vmm: virtio-net: cannot watch fd {fd}: {e}");
            }
        }
    }

    fn process(&mut self, events: Events, ops: &mut EventOps) {
        let fd = events.fd();
        if fd == self.activate_evt.as_raw_fd() {
            let _ = self.activate_evt.read();
            self.start();
            self.process_tx();
        } else if fd == self.state.queue_evts[RXQ].as_raw_fd() {
            let _ = self.state.queue_evts[RXQ].read();
            // New buffers: want input again; the tap, if readable, wakes the loop next round.
            if self.started {
                self.watch.rx_wanted = true;
            }
        } else if fd == self.state.queue_evts[TXQ].as_raw_fd() {
            let _ = self.state.queue_evts[TXQ].read();
            self.process_tx();
        } else if fd == self.rx_limit.timer().as_raw_fd() {
            self.rx_limit.expired();
            self.rx_unthrottled();
        } else if fd == self.tx_limit.timer().as_raw_fd() {
            self.tx_limit.expired();
            self.process_tx();
        } else if fd == self.tap.as_raw_fd() {
            let set = events.event_set();
            if set.intersects(EventSet::ERROR | EventSet::HANG_UP) {
                // A tap reports an error only once its interface is gone (tun_chr_poll); epoll
                // reports it whatever is watched, level-triggered: stop serving it now.
                self.fail("the tap reports an error (its interface is gone)");
            } else {
                if set.contains(EventSet::OUT) {
                    self.watch.tx_blocked = false;
                    self.process_tx();
                }
                if set.contains(EventSet::IN) {
                    self.process_rx();
                }
            }
        }
        self.sync_tap(ops);
    }
}
