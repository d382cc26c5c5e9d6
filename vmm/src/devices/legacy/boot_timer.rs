//! Boot timer: the guest agent writes [`AGENT_READY`] once to `hull_contract::boot_timer::PORT`
//! when it serves; the VMM logs the time since its own start and keeps it as a metric.

use std::io::Write;

use hull_contract::boot_timer::AGENT_READY;

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
        if offset == 0
            && data == [AGENT_READY]
            && METRICS.boot.guest_boot_timer_us.mark()
            && self.log
        {
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

    #[test]
    fn only_the_magic_byte_counts() {
        let mut t = BootTimer::new(false);
        t.write(0, &[1]);
        t.write(0, &[AGENT_READY, 0]);
        assert_eq!(METRICS.boot.guest_boot_timer_us.get(), 0);
        t.write(0, &[AGENT_READY]);
        assert_ne!(METRICS.boot.guest_boot_timer_us.get(), 0);
    }
}
