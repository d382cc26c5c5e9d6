//! COM1: vm-superio's 8250 emulation, output to the console sink, interrupts via an irqfd.
//! The output also passes a [`PanicWatch`]: with `panic=1` a panicking guest kernel resets the
//! machine, which KVM reports exactly like a reboot; its panic line on the console is what
//! tells them apart.

use std::io::Write;
use std::sync::Arc;

use vm_superio::{Serial, Trigger};
use vmm_sys_util::eventfd::EventFd;

use crate::device_manager::bus::BusDevice;
use crate::exit::VmExit;

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
    /// COM1 writing to `out`; a panic line in the output is reported to `exit`.
    pub fn new(irq: EventFd, out: ConsoleSink, exit: Arc<VmExit>) -> Self {
        let out: ConsoleSink = Box::new(PanicWatch::new(out, exit));
        SerialConsole {
            serial: Serial::new(EventFdTrigger(irq), out),
        }
    }
}

/// The line every Linux panic prints (`panic()` in kernel/panic.c), at KERN_EMERG, so even a
/// `quiet` console shows it. Its first byte occurs nowhere else in it, so a mismatch can
/// restart the match at that byte without backtracking.
const PANIC_LINE: &[u8] = b"Kernel panic - not syncing";

/// Passes console bytes through and tells [`VmExit`] when [`PANIC_LINE`] went by, wherever the
/// guest's writes split it. Scanning costs a compare per byte on a path that already costs a
/// VM exit per byte.
struct PanicWatch {
    out: ConsoleSink,
    exit: Arc<VmExit>,
    matched: usize,
}

impl PanicWatch {
    fn new(out: ConsoleSink, exit: Arc<VmExit>) -> Self {
        PanicWatch {
            out,
            exit,
            matched: 0,
        }
    }

    fn scan(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.matched = if PANIC_LINE.get(self.matched) == Some(&b) {
                self.matched + 1
            } else {
                usize::from(b == PANIC_LINE[0])
            };
            if self.matched == PANIC_LINE.len() {
                self.exit.note_guest_panic();
                self.matched = 0;
            }
        }
    }
}

impl Write for PanicWatch {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        // Whatever the sink does with them, the guest wrote these bytes.
        self.scan(buf);
        self.out.write_all(buf).map(|()| buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
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
    use std::sync::Mutex;

    use super::*;
    use crate::exit::ExitReason;

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
        let exit = Arc::new(VmExit::new().unwrap());
        let mut s = SerialConsole::new(EventFd::new(0).unwrap(), Box::new(buf.clone()), exit);
        for b in b"hi" {
            s.write(0, &[*b]);
        }
        s.write(0, &[1, 2]); // wrong width: ignored
        assert_eq!(&*buf.0.lock().unwrap(), b"hi");
    }

    fn reset_reason_after(console: &[u8]) -> ExitReason {
        let exit = Arc::new(VmExit::new().unwrap());
        let mut s = SerialConsole::new(
            EventFd::new(0).unwrap(),
            Box::new(Buf::default()),
            exit.clone(),
        );
        for b in console {
            s.write(0, &[*b]);
        }
        exit.signal(ExitReason::GuestReset);
        exit.reason().unwrap()
    }

    #[test]
    fn a_panic_line_turns_the_following_reset_into_a_panic() {
        let panic = b"[    1.5] KKernel panic - not syncing: VFS: Unable to mount root fs\r\n";
        assert_eq!(reset_reason_after(panic), ExitReason::GuestPanic);
        assert_eq!(
            reset_reason_after(b"reboot: Restarting system\r\n"),
            ExitReason::GuestReset
        );
        // Almost the line, broken by another byte, is not it.
        assert_eq!(
            reset_reason_after(b"Kernel panic - not sync\ning"),
            ExitReason::GuestReset
        );
    }
}
