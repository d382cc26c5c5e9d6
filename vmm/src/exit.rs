//! Why the VM stopped, reported once by whoever saw it (a vCPU, the i8042, a signal, the API)
//! and read by the event loop, which then tears the VM down.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock};

use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use crate::vstate::memory::GuestMemoryMmap;

/// The line every Linux panic prints (`panic()` in kernel/panic.c), at KERN_EMERG, so even a
/// `quiet` console shows it; the serial console watches for it and a crash record names it.
pub(crate) const KERNEL_PANIC_LINE: &str = "Kernel panic - not syncing";

/// Process exit status after an orderly end: guest reset or power-off, shutdown, SIGTERM.
pub const STATUS_OK: i32 = 0;
/// Process exit status when the VMM could not go on (boot failure, KVM or device error).
pub const STATUS_ERROR: i32 = 1;
/// Process exit status when the guest crashed (a vCPU triple-faulted, or the kernel panicked
/// and reset the machine). Its own value so a caller can tell a guest crash from a VMM failure
/// by the status alone; 2 is taken by the command-line parser's usage errors.
pub const STATUS_GUEST_CRASH: i32 = 3;
/// Process exit status after an abort (a Rust panic that aborts, `abort()`): 128 + SIGABRT,
/// what a shell shows for a death by SIGABRT. hull-vmm exits with it from its SIGABRT handler
/// rather than dying of the signal, because as PID 1 of a pid namespace (the shim's jail) the
/// kernel discards a signal the init sends itself while its action is the default one, and
/// abort() would go on to calls the seccomp filters refuse. (A seccomp violation is a death by
/// SIGSYS, never an exit status; see `seccomp.rs`.)
pub const STATUS_ABORTED: i32 = 128 + libc::SIGABRT;

/// Why the VM stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExitReason {
    /// The guest asked for a reset: the i8042 CPU reset (`reboot=k`, hull's default) or a KVM
    /// reset system event.
    GuestReset,
    /// The guest powered off (KVM system event) or halted with no irqchip.
    GuestPoweroff,
    /// A vCPU entered the shutdown state (`KVM_EXIT_SHUTDOWN`): on x86 a triple fault, which is
    /// how a guest kernel that lost its IDT, stack or page tables dies without a panic
    /// message. A guest booted with `reboot=t` also reboots this way, indistinguishably.
    TripleFault { vcpu: u8 },
    /// The guest kernel panicked and then reset the machine (hull's `panic=1`; or
    /// triple-faulted, with `reboot=t`): a crash, not the reboot it looks like to KVM. Known
    /// from `Kernel panic - not syncing` on the serial console, or without one from the panic
    /// record the kernel left in guest RAM (`crate::pstore`).
    GuestPanic,
    /// SIGTERM/SIGINT or an API shutdown.
    Stopped,
    /// The VM could not go on.
    Error(String),
}

impl ExitReason {
    /// Process exit status: [`STATUS_OK`] for an orderly end, [`STATUS_GUEST_CRASH`] for a
    /// triple fault or a panic, [`STATUS_ERROR`] for an error.
    pub fn status(&self) -> i32 {
        match self {
            ExitReason::GuestReset | ExitReason::GuestPoweroff | ExitReason::Stopped => STATUS_OK,
            ExitReason::TripleFault { .. } | ExitReason::GuestPanic => STATUS_GUEST_CRASH,
            ExitReason::Error(_) => STATUS_ERROR,
        }
    }
}

/// The first exit reason wins; the eventfd wakes the event loop.
#[derive(Debug)]
pub(crate) struct VmExit {
    reason: Mutex<Option<ExitReason>>,
    /// The serial console saw the kernel's panic line: a reset that follows is the panic's.
    panicked: AtomicBool,
    /// Guest RAM, where a kernel with ramoops leaves its crash record (set for kernel boots).
    pstore: OnceLock<GuestMemoryMmap>,
    evt: EventFd,
}

impl VmExit {
    pub fn new() -> std::io::Result<Self> {
        Ok(VmExit {
            reason: Mutex::new(None),
            panicked: AtomicBool::new(false),
            pstore: OnceLock::new(),
            evt: EventFd::new(EFD_NONBLOCK)?,
        })
    }

    pub fn signal(&self, reason: ExitReason) {
        let mut r = crate::device_manager::bus::lock(&self.reason);
        if r.is_none() {
            *r = Some(match reason {
                ExitReason::GuestReset | ExitReason::TripleFault { .. } => self.reset(reason),
                r => r,
            });
        }
        drop(r);
        let _ = self.evt.write(1);
    }

    /// What a reset or triple fault is: after the panic line on the console, or with a panic
    /// record in guest RAM, it is how the panic ends the machine (`reboot=k` resets,
    /// `reboot=t` triple-faults). A crash record the kernel left goes to the log either way:
    /// without a console it is all the host learns of the guest's end.
    fn reset(&self, reason: ExitReason) -> ExitReason {
        let record = self.pstore.get().and_then(crate::pstore::read);
        if let Some(rec) = &record {
            // The panic line again at the end: a log's tail (what the shim quotes) is
            // otherwise the backtrace.
            let cause = rec
                .panic_line()
                .map(|l| format!(": {l}"))
                .unwrap_or_default();
            crate::guest_log::line(format_args!(
                "the guest kernel's log at its {} (ramoops, {} bytes):\n{}\n\
                 hull-vmm: end of the guest kernel's log{cause}",
                rec.reason.to_lowercase(),
                rec.text.len(),
                rec.text
            ));
        }
        if self.panicked.load(Ordering::Acquire) || record.is_some_and(|r| r.is_panic()) {
            ExitReason::GuestPanic
        } else {
            reason
        }
    }

    /// Lets a reset look for the guest kernel's crash record in `mem` (`crate::pstore`).
    pub(crate) fn read_crash_record_from(&self, mem: GuestMemoryMmap) {
        let _ = self.pstore.set(mem);
    }

    /// Records that the guest kernel panicked. The VM keeps running: the kernel still prints
    /// its backtrace, then resets (`panic=1`), and that reset ends the VM as [`ExitReason::GuestPanic`].
    /// A guest that fakes the line only changes how its own VM's end is reported.
    pub fn note_guest_panic(&self) {
        self.panicked.store(true, Ordering::Release);
    }

    pub fn reason(&self) -> Option<ExitReason> {
        crate::device_manager::bus::lock(&self.reason).clone()
    }

    pub fn eventfd(&self) -> &EventFd {
        &self.evt
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_orderly_ends_exit_zero_and_a_crash_is_not_an_error() {
        assert_eq!(ExitReason::GuestReset.status(), 0);
        assert_eq!(ExitReason::GuestPoweroff.status(), 0);
        assert_eq!(ExitReason::Stopped.status(), 0);
        assert_eq!(ExitReason::TripleFault { vcpu: 0 }.status(), 3);
        assert_eq!(ExitReason::GuestPanic.status(), 3);
        assert_eq!(ExitReason::Error("x".into()).status(), 1);
    }

    #[test]
    fn the_first_reason_wins() {
        let e = VmExit::new().unwrap();
        assert_eq!(e.reason(), None);
        e.signal(ExitReason::GuestReset);
        e.signal(ExitReason::TripleFault { vcpu: 0 });
        assert_eq!(e.reason(), Some(ExitReason::GuestReset));
        assert_eq!(e.eventfd().read().unwrap(), 2);
    }

    #[test]
    fn a_reset_with_a_panic_record_in_guest_ram_is_the_panic_and_logs_it() {
        use vm_memory::{Bytes, GuestAddress};
        let mem = crate::vstate::memory::create(4 << 20).expect("guest memory");
        let at = GuestAddress(crate::arch::PSTORE_START);
        let e = VmExit::new().unwrap();
        e.read_crash_record_from(mem.clone());
        let lines = crate::guest_log::capture::lines(|| e.signal(ExitReason::GuestReset));
        assert_eq!(
            e.reason(),
            Some(ExitReason::GuestReset),
            "no record: a reboot"
        );
        assert!(lines.is_empty(), "{lines:?}");

        let panic = "====1.000001-D\nPanic#1 Part1\n<0>[    1.2] Kernel panic - not syncing: x\n";
        mem.write_slice(&crate::pstore::zone_holding(panic), at)
            .unwrap();
        let e = VmExit::new().unwrap();
        e.read_crash_record_from(mem.clone());
        let lines = crate::guest_log::capture::lines(|| e.signal(ExitReason::GuestReset));
        assert_eq!(e.reason(), Some(ExitReason::GuestPanic));
        assert_eq!(lines.len(), 1);
        assert!(
            lines[0].starts_with("the guest kernel's log at its panic (ramoops, 42 bytes):\n<0>"),
            "{lines:?}"
        );
        assert!(lines[0].ends_with(
            "Kernel panic - not syncing: x\n\
             hull-vmm: end of the guest kernel's log: Kernel panic - not syncing: x"
        ));

        // An oops record is logged, but the reset stays a reset.
        mem.write_slice(
            &crate::pstore::zone_holding(&panic.replace("Panic", "Oops")),
            at,
        )
        .unwrap();
        let e = VmExit::new().unwrap();
        e.read_crash_record_from(mem);
        let lines =
            crate::guest_log::capture::lines(|| e.signal(ExitReason::TripleFault { vcpu: 0 }));
        assert_eq!(e.reason(), Some(ExitReason::TripleFault { vcpu: 0 }));
        assert!(lines[0].contains("at its oops"), "{lines:?}");
    }

    #[test]
    fn a_reset_after_a_panic_is_the_panic() {
        let e = VmExit::new().unwrap();
        e.note_guest_panic();
        e.signal(ExitReason::GuestReset);
        assert_eq!(e.reason(), Some(ExitReason::GuestPanic));
        let e = VmExit::new().unwrap();
        e.note_guest_panic();
        e.signal(ExitReason::TripleFault { vcpu: 1 });
        assert_eq!(e.reason(), Some(ExitReason::GuestPanic));
        let e = VmExit::new().unwrap();
        e.note_guest_panic();
        e.signal(ExitReason::Stopped);
        assert_eq!(e.reason(), Some(ExitReason::Stopped));
    }
}
