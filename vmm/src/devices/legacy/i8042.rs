//! The i8042 keyboard controller. Its one job here: the CPU reset command (0xfe on port 0x64),
//! which is how a guest booted with `reboot=k` leaves; the VMM then exits with status 0.

use std::sync::Arc;

use vm_superio::{I8042Device, Trigger};

use crate::device_manager::bus::BusDevice;
use crate::exit::{ExitReason, VmExit};

/// Signals a guest reset to the VMM.
#[derive(Debug)]
pub struct ResetTrigger(pub Arc<VmExit>);

impl Trigger for ResetTrigger {
    type E = std::convert::Infallible;
    fn trigger(&self) -> Result<(), Self::E> {
        self.0.signal(ExitReason::GuestReset);
        Ok(())
    }
}

/// The i8042 on the port bus at 0x60..=0x64.
pub struct I8042 {
    dev: I8042Device<ResetTrigger>,
}

impl std::fmt::Debug for I8042 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("I8042")
    }
}

impl I8042 {
    pub fn new(exit: Arc<VmExit>) -> Self {
        I8042 {
            dev: I8042Device::new(ResetTrigger(exit)),
        }
    }
}

impl BusDevice for I8042 {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        match (u8::try_from(offset), data.len()) {
            (Ok(off), 1) => data[0] = self.dev.read(off),
            _ => data.fill(0xff),
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if let (Ok(off), [b]) = (u8::try_from(offset), data) {
            let _ = self.dev.write(off, *b);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reset_command_signals_guest_reset() {
        let exit = Arc::new(VmExit::new().unwrap());
        let mut d = I8042::new(exit.clone());
        d.write(4, &[0xfe]);
        assert_eq!(exit.reason(), Some(ExitReason::GuestReset));
        assert_eq!(exit.eventfd().read().unwrap(), 1);
    }
}
