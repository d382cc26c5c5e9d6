//! COM1: vm-superio's 8250 emulation, output to the console sink, interrupts via an irqfd.
//! The output also passes a [`PanicWatch`]: with `panic=1` a panicking guest kernel resets the
//! machine, which KVM reports exactly like a reboot; its panic line on the console is what
//! tells them apart. A console file gets at most [`CONSOLE_FILE_MAX_BYTES`] ([`CappedSink`]).

use std::io::Write;
use std::sync::Arc;

use vm_superio::{Serial, Trigger};
use vmm_sys_util::eventfd::EventFd;

use crate::device_manager::bus::BusDevice;
use crate::exit::VmExit;
use crate::metrics::Counter;

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

/// [`crate::exit::KERNEL_PANIC_LINE`], as the console's bytes.
const PANIC_LINE: &[u8] = crate::exit::KERNEL_PANIC_LINE.as_bytes();
/// Enough of a line for printk's `[ seconds.micros] ` prefix and [`PANIC_LINE`].
const LINE_HEAD: usize = 64;

/// Passes console bytes through and tells [`VmExit`] when a line starts with [`PANIC_LINE`]
/// (after printk's optional timestamp), wherever the guest's writes split it. Only line
/// starts count: user-controlled text that the kernel or the agent echoes sits mid-line.
/// Costs a push per byte on a path that already costs a VM exit per byte.
struct PanicWatch {
    out: ConsoleSink,
    exit: Arc<VmExit>,
    /// The start of the current line, at most [`LINE_HEAD`] bytes.
    head: Vec<u8>,
}

impl PanicWatch {
    fn new(out: ConsoleSink, exit: Arc<VmExit>) -> Self {
        PanicWatch {
            out,
            exit,
            head: Vec::with_capacity(LINE_HEAD),
        }
    }

    fn scan(&mut self, bytes: &[u8]) {
        for &b in bytes {
            if b == b'\n' || b == b'\r' {
                self.head.clear();
            } else if self.head.len() < LINE_HEAD {
                self.head.push(b);
                if is_panic_line(&self.head) {
                    self.exit.note_guest_panic();
                }
            }
        }
    }
}

/// Whether `head`, a line start, is exactly [`PANIC_LINE`] after an optional `[...] ` prefix.
fn is_panic_line(head: &[u8]) -> bool {
    let text = match head.strip_prefix(b"[") {
        Some(rest) => match rest.iter().position(|&c| c == b']') {
            Some(end) => {
                let after = &rest[end + 1..];
                after.strip_prefix(b" ").unwrap_or(after)
            }
            None => return false,
        },
        None => head,
    };
    text == PANIC_LINE
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

/// The most guest output a console file receives (`--console FILE`); the rest is dropped and
/// counted (`guest.console_dropped_bytes`). The file sits on the pod's tmpfs (host memory) and
/// the shim only shows its tail, so a guest that prints without end must not grow it without
/// end; 1 MiB holds a verbose kernel boot many times over.
pub const CONSOLE_FILE_MAX_BYTES: u64 = 1 << 20;

/// Passes the first `max` bytes to its sink, then writes one line saying the output was
/// truncated and drops (and counts) everything after. Below the cap it changes nothing.
pub struct CappedSink {
    out: ConsoleSink,
    max: u64,
    written: u64,
    truncated: bool,
    dropped: &'static Counter,
}

impl CappedSink {
    pub fn new(out: ConsoleSink, max: u64, dropped: &'static Counter) -> Self {
        CappedSink {
            out,
            max,
            written: 0,
            truncated: false,
            dropped,
        }
    }
}

impl std::fmt::Debug for CappedSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CappedSink")
            .field("max", &self.max)
            .field("written", &self.written)
            .finish()
    }
}

impl Write for CappedSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let room = usize::try_from(self.max - self.written).unwrap_or(usize::MAX);
        let take = room.min(buf.len());
        if take > 0 {
            self.out.write_all(&buf[..take])?;
            self.written += take as u64;
        }
        let rest = buf.len() - take;
        if rest > 0 {
            if !std::mem::replace(&mut self.truncated, true) {
                // Once: the file says why it ends here.
                let _ = write!(
                    self.out,
                    "\n[hull-vmm: console output truncated at {} bytes; the rest is dropped]\n",
                    self.max
                );
                let _ = self.out.flush();
            }
            self.dropped.add(rest as u64);
        }
        Ok(buf.len())
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
    fn a_console_file_is_capped_with_one_truncation_line() {
        static DROPPED: Counter = Counter::new();
        let buf = Buf::default();
        let exit = Arc::new(VmExit::new().unwrap());
        let capped = CappedSink::new(Box::new(buf.clone()), 100, &DROPPED);
        let mut s = SerialConsole::new(EventFd::new(0).unwrap(), Box::new(capped), exit.clone());
        // Below the cap every byte passes unchanged.
        for b in [b'x'; 99] {
            s.write(0, &[b]);
        }
        assert_eq!(*buf.0.lock().unwrap(), vec![b'x'; 99]);
        assert_eq!(DROPPED.get(), 0);
        // A guest that prints without end: the file stops at the cap plus one line.
        for _ in 0..10_000 {
            s.write(0, b"y");
        }
        let text = buf.0.lock().unwrap().clone();
        let line = b"\n[hull-vmm: console output truncated at 100 bytes; the rest is dropped]\n";
        assert_eq!(&text[..100], &[[b'x'; 99].as_slice(), b"y"].concat()[..]);
        assert_eq!(&text[100..], line);
        assert_eq!(DROPPED.get(), 9_999);
        // The panic watch still sees what is dropped.
        for b in b"\nKernel panic - not syncing: x\n" {
            s.write(0, &[*b]);
        }
        assert_eq!(buf.0.lock().unwrap().len(), 100 + line.len());
        exit.signal(ExitReason::GuestReset);
        assert_eq!(exit.reason().unwrap(), ExitReason::GuestPanic);
    }

    #[test]
    fn a_capped_sink_splits_a_write_at_the_cap() {
        static DROPPED: Counter = Counter::new();
        let buf = Buf::default();
        let mut c = CappedSink::new(Box::new(buf.clone()), 4, &DROPPED);
        assert_eq!(c.write(b"abc").unwrap(), 3);
        assert_eq!(c.write(b"defg").unwrap(), 4, "the guest's bytes are taken");
        assert_eq!(c.write(b"hi").unwrap(), 2);
        let text = buf.0.lock().unwrap().clone();
        assert!(text.starts_with(b"abcd\n[hull-vmm: console output truncated at 4"));
        assert_eq!(text.iter().filter(|b| **b == b'\n').count(), 2, "one line");
        assert_eq!(DROPPED.get(), 5);
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
        let panic =
            b"boot\r\n[    1.523456] Kernel panic - not syncing: VFS: Unable to mount root fs\r\n";
        assert_eq!(reset_reason_after(panic), ExitReason::GuestPanic);
        let untimed = b"Kernel panic - not syncing: Attempted to kill init!\n";
        assert_eq!(reset_reason_after(untimed), ExitReason::GuestPanic);
        let restart = b"reboot: Restarting system\r\n";
        assert_eq!(reset_reason_after(restart), ExitReason::GuestReset);
        // Almost the line, broken by another byte, is not it.
        let broken = b"Kernel panic - not sync\ning";
        assert_eq!(reset_reason_after(broken), ExitReason::GuestReset);
        // Text a process controls, echoed mid-line by the kernel or the agent, is not it.
        let echoed = b"[    9.1] process 'Kernel panic - not syncing' launched '/x'\n";
        assert_eq!(reset_reason_after(echoed), ExitReason::GuestReset);
        let agent = b"2026-11-27T12:05:06Z ERROR container Kernel panic - not syncing\n";
        assert_eq!(reset_reason_after(agent), ExitReason::GuestReset);
    }
}
