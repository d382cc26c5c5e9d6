//! Boot timer: the guest agent writes [`INIT_STARTED`] to `hull_contract::boot_timer::PORT`
//! when it starts as /init and [`AGENT_READY`] when it serves; the VMM keeps the time since its
//! own start of the first write of each as a metric, and logs the ready one. A guest can write
//! either at any time: the worst it does is spoil its own boot figures.

use std::io::Write;

use hull_contract::boot_timer::{AGENT_READY, INIT_STARTED};

use crate::device_manager::bus::BusDevice;
use crate::metrics::{since_exec_us, METRICS};

/// The boot-timer pseudo-device.
#[derive(Debug)]
pub struct BootTimer {
    /// Log the first ready write on stderr (`--boot-timer`).
    log: bool,
}

impl BootTimer {
    pub fn new(log: bool) -> Self {
        BootTimer { log }
    }
}

impl BusDevice for BootTimer {
    fn read(&mut self, _offset: u64, data: &mut [u8]) {
        data.fill(0);
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if offset != 0 {
            return;
        }
        if data == [INIT_STARTED] {
            METRICS.boot.guest_init_us.mark();
            return;
        }
        if data == [AGENT_READY] && METRICS.boot.guest_boot_timer_us.mark() && self.log {
            let us = since_exec_us();
            // Once (the stamp is set once); not eprintln!, which panics without a stderr.
            let _ = writeln!(
                std::io::stderr(),
                "hull-vmm: guest agent ready {}.{:03} ms after start",
                us / 1000,
                us % 1000
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // One test for both marks: METRICS is process-wide and each stamp is set once.
    #[test]
    fn only_the_magic_bytes_count_each_in_its_stamp() {
        let mut t = BootTimer::new(false);
        t.write(0, &[2]);
        t.write(0, &[AGENT_READY, 0]);
        t.write(1, &[INIT_STARTED]);
        assert_eq!(METRICS.boot.guest_boot_timer_us.get(), 0);
        assert_eq!(METRICS.boot.guest_init_us.get(), 0);
        t.write(0, &[INIT_STARTED]);
        assert_ne!(METRICS.boot.guest_init_us.get(), 0);
        assert_eq!(METRICS.boot.guest_boot_timer_us.get(), 0);
        t.write(0, &[AGENT_READY]);
        assert_ne!(METRICS.boot.guest_boot_timer_us.get(), 0);
    }
}
