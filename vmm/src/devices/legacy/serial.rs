//! COM1: vm-superio's 8250 emulation, output to the console sink, interrupts via an irqfd.

use std::io::Write;

use vm_superio::{Serial, Trigger};
use vmm_sys_util::eventfd::EventFd;

use crate::device_manager::bus::BusDevice;

/// Raises an interrupt by writing an irqfd.
#[derive(Debug)]
pub struct EventFdTrigger(pub EventFd);

impl Trigger for EventFdTrigger {
    type E = std::io::Error;
    fn trigger(&self) -> std::io::Result<()> {
        self.0.write(1)
    }
}

/// Where the guest console goes.
pub type ConsoleSink = Box<dyn Write + Send>;

/// COM1 on the port bus.
pub struct SerialConsole {
    serial: Serial<EventFdTrigger, vm_superio::serial::NoEvents, ConsoleSink>,
}

impl std::fmt::Debug for SerialConsole {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SerialConsole")
    }
}

impl SerialConsole {
    pub fn new(irq: EventFd, out: ConsoleSink) -> Self {
        SerialConsole {
            serial: Serial::new(EventFdTrigger(irq), out),
        }
    }
}

impl BusDevice for SerialConsole {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        match (u8::try_from(offset), data.len()) {
            (Ok(off), 1) => data[0] = self.serial.read(off),
            _ => data.fill(0xff),
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if let (Ok(off), [b]) = (u8::try_from(offset), data) {
            // A failed console write (closed pipe, full disk) must not stop the guest.
            let _ = self.serial.write(off, *b);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);
    impl Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn bytes_reach_the_sink() {
        let buf = Buf::default();
        let mut s = SerialConsole::new(EventFd::new(0).unwrap(), Box::new(buf.clone()));
        for b in b"hi" {
            s.write(0, &[*b]);
        }
        s.write(0, &[1, 2]); // wrong width: ignored
        assert_eq!(&*buf.0.lock().unwrap(), b"hi");
    }
}
