//! What a `KVM_RUN` exit that is not device I/O means for the VM, and the one-line register
//! report logged when a vCPU stops because something went wrong. Pure functions, so the
//! mapping is tested without KVM; `vcpu.rs` reads the registers and applies the verdict.

use std::fmt;

use kvm_bindings::{
    kvm_regs, kvm_sregs, KVM_INTERNAL_ERROR_DELIVERY_EV, KVM_INTERNAL_ERROR_EMULATION,
    KVM_INTERNAL_ERROR_SIMUL_EX, KVM_INTERNAL_ERROR_UNEXPECTED_EXIT_REASON, KVM_SYSTEM_EVENT_RESET,
    KVM_SYSTEM_EVENT_SHUTDOWN,
};
use kvm_ioctls::VcpuExit;

use crate::exit::ExitReason;

/// What the run loop does after an exit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Enter the guest again.
    Continue,
    /// The guest asked for the VM to end (reset, power-off): an orderly end, nothing to report.
    End(ExitReason),
    /// The vCPU cannot go on: log its registers, then end the VM with `fault.reason(id)`.
    Fault(VcpuFault),
}

/// Why a vCPU stopped without the guest asking for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VcpuFault {
    /// `KVM_EXIT_SHUTDOWN`: the CPU entered the shutdown state, on x86 a triple fault (an
    /// exception while delivering a double fault). A crash of the guest, not a request.
    Shutdown,
    /// `KVM_EXIT_INTERNAL_ERROR`; KVM's suberror is in `kvm_run`, read by the caller.
    InternalError,
    /// `KVM_EXIT_FAIL_ENTRY`: the hardware refused to enter the guest (invalid guest state).
    FailEntry { hw_reason: u64, cpu: u32 },
    /// `KVM_RUN` itself failed with this errno.
    RunFailed(i32),
    /// Any exit the VMM has no handler for (kvm-ioctls' name for it).
    Unexpected(String),
}

impl fmt::Display for VcpuFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VcpuFault::Shutdown => write!(f, "triple fault (KVM_EXIT_SHUTDOWN)"),
            VcpuFault::InternalError => write!(f, "KVM internal error (KVM_EXIT_INTERNAL_ERROR)"),
            VcpuFault::FailEntry { hw_reason, cpu } => write!(
                f,
                "failed to enter the guest (KVM_EXIT_FAIL_ENTRY): hardware reason {hw_reason:#x} on host cpu {cpu}"
            ),
            VcpuFault::RunFailed(errno) => write!(
                f,
                "KVM_RUN failed: {}",
                std::io::Error::from_raw_os_error(*errno)
            ),
            VcpuFault::Unexpected(what) => write!(f, "unexpected exit {what}"),
        }
    }
}

impl VcpuFault {
    /// The reason the VM ends with when vCPU `id` stopped this way.
    pub fn reason(&self, id: u8) -> ExitReason {
        match self {
            VcpuFault::Shutdown => ExitReason::TripleFault { vcpu: id },
            other => ExitReason::Error(format!("vCPU {id}: {other}")),
        }
    }
}

/// The run loop's decision for every exit but port and MMIO accesses (which go to the buses).
pub fn classify(exit: &VcpuExit<'_>) -> Verdict {
    match exit {
        VcpuExit::IrqWindowOpen | VcpuExit::Intr => Verdict::Continue,
        // Only without an in-kernel irqchip (which keeps HLT inside KVM): nothing can wake it.
        VcpuExit::Hlt => Verdict::End(ExitReason::GuestPoweroff),
        VcpuExit::SystemEvent(KVM_SYSTEM_EVENT_SHUTDOWN, _) => {
            Verdict::End(ExitReason::GuestPoweroff)
        }
        VcpuExit::SystemEvent(KVM_SYSTEM_EVENT_RESET, _) => Verdict::End(ExitReason::GuestReset),
        VcpuExit::Shutdown => Verdict::Fault(VcpuFault::Shutdown),
        VcpuExit::InternalError => Verdict::Fault(VcpuFault::InternalError),
        VcpuExit::FailEntry(hw_reason, cpu) => Verdict::Fault(VcpuFault::FailEntry {
            hw_reason: *hw_reason,
            cpu: *cpu,
        }),
        other => Verdict::Fault(VcpuFault::Unexpected(format!("{other:?}"))),
    }
}

/// KVM's `internal.suberror` in words.
pub fn internal_suberror_name(suberror: u32) -> &'static str {
    match suberror {
        KVM_INTERNAL_ERROR_EMULATION => "emulation failure",
        KVM_INTERNAL_ERROR_SIMUL_EX => "exception while delivering an exception",
        KVM_INTERNAL_ERROR_DELIVERY_EV => "event delivery failed",
        KVM_INTERNAL_ERROR_UNEXPECTED_EXIT_REASON => "unexpected hardware exit reason",
        _ => "unknown suberror",
    }
}

/// `internal` of `kvm_run` after `KVM_EXIT_INTERNAL_ERROR`, for the report.
pub fn internal_detail(suberror: u32, data: &[u64]) -> String {
    let words: Vec<String> = data.iter().map(|w| format!("{w:#x}")).collect();
    format!(
        "suberror {suberror} ({}), data [{}]",
        internal_suberror_name(suberror),
        words.join(" ")
    )
}

/// RIP and CS:IP of an x86 CPU right after RESET/INIT.
const RESET_RIP: u64 = 0xfff0;
const RESET_CS_BASE: u64 = 0xffff_0000;

/// The registers that locate a crash: where (RIP, CS, RSP), in which mode (CR0, CR4, EFER),
/// with which page tables (CR3), the last page-fault address (CR2) and the IDT a fault would
/// have gone through. A failed read is named instead of its values.
pub fn regs_summary<E: fmt::Display>(
    regs: Result<kvm_regs, E>,
    sregs: Result<kvm_sregs, E>,
) -> String {
    let mut out = match &regs {
        Ok(r) => format!("rip={:#x} rsp={:#x} rflags={:#x}", r.rip, r.rsp, r.rflags),
        Err(e) => format!("registers unreadable (KVM_GET_REGS: {e})"),
    };
    match &sregs {
        Ok(s) => out.push_str(&format!(
            " cr0={:#x} cr2={:#x} cr3={:#x} cr4={:#x} efer={:#x} cs={:#x} cs.base={:#x} idt={:#x}/{:#x}",
            s.cr0, s.cr2, s.cr3, s.cr4, s.efer, s.cs.selector, s.cs.base, s.idt.base, s.idt.limit
        )),
        Err(e) => out.push_str(&format!(
            " special registers unreadable (KVM_GET_SREGS: {e})"
        )),
    }
    if let (Ok(r), Ok(s)) = (&regs, &sregs) {
        if r.rip == RESET_RIP && s.cs.base == RESET_CS_BASE {
            // SVM's shutdown intercept re-initialises the vCPU before KVM returns, so on AMD
            // hosts (the lab) these are not the registers of the crash.
            out.push_str(" (the vCPU's reset state: the host re-initialised it on shutdown, the crash registers are lost)");
        }
    }
    out
}

/// The error line for a vCPU that stopped: which vCPU, why, its registers, and whether the VM
/// had already been told to end (a guest that resets through the i8042 goes on running until
/// the vCPU is stopped and may triple-fault meanwhile: that is not the crash to look for).
pub fn fault_line(
    id: u8,
    fault: &VcpuFault,
    detail: Option<&str>,
    regs: &str,
    already: Option<&ExitReason>,
) -> String {
    let mut line = format!("hull-vmm: vCPU {id}: {fault}");
    if let Some(d) = detail {
        line.push_str(&format!(": {d}"));
    }
    line.push_str(&format!("; {regs}"));
    if let Some(r) = already {
        line.push_str(&format!(
            " (after the VM was already ending with {r:?}, which stands)"
        ));
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guest_requests_end_in_order_and_crashes_are_faults() {
        let cases: Vec<(VcpuExit<'_>, Verdict, Option<i32>)> = vec![
            (VcpuExit::Intr, Verdict::Continue, None),
            (VcpuExit::IrqWindowOpen, Verdict::Continue, None),
            (
                VcpuExit::Hlt,
                Verdict::End(ExitReason::GuestPoweroff),
                Some(0),
            ),
            (
                VcpuExit::SystemEvent(KVM_SYSTEM_EVENT_SHUTDOWN, &[]),
                Verdict::End(ExitReason::GuestPoweroff),
                Some(0),
            ),
            (
                VcpuExit::SystemEvent(KVM_SYSTEM_EVENT_RESET, &[]),
                Verdict::End(ExitReason::GuestReset),
                Some(0),
            ),
            (
                VcpuExit::Shutdown,
                Verdict::Fault(VcpuFault::Shutdown),
                Some(3),
            ),
            (
                VcpuExit::InternalError,
                Verdict::Fault(VcpuFault::InternalError),
                Some(1),
            ),
            (
                VcpuExit::FailEntry(0x21, 1),
                Verdict::Fault(VcpuFault::FailEntry {
                    hw_reason: 0x21,
                    cpu: 1,
                }),
                Some(1),
            ),
            (
                VcpuExit::Unknown,
                Verdict::Fault(VcpuFault::Unexpected("Unknown".into())),
                Some(1),
            ),
            (
                // A guest crash report: not a request to honour, and not silently 0 either.
                VcpuExit::SystemEvent(kvm_bindings::KVM_SYSTEM_EVENT_CRASH, &[]),
                Verdict::Fault(VcpuFault::Unexpected("SystemEvent(3, [])".into())),
                Some(1),
            ),
        ];
        for (exit, verdict, status) in cases {
            let name = format!("{exit:?}");
            let got = classify(&exit);
            assert_eq!(got, verdict, "{name}");
            let reason = match got {
                Verdict::Continue => None,
                Verdict::End(r) => Some(r),
                Verdict::Fault(f) => Some(f.reason(2)),
            };
            assert_eq!(reason.map(|r| r.status()), status, "{name}");
        }
    }

    #[test]
    fn fault_reasons_name_the_vcpu() {
        assert_eq!(
            VcpuFault::Shutdown.reason(1),
            ExitReason::TripleFault { vcpu: 1 }
        );
        let ExitReason::Error(msg) = VcpuFault::InternalError.reason(3) else {
            panic!("internal error is an error");
        };
        assert!(msg.starts_with("vCPU 3: KVM internal error"), "{msg}");
        let ExitReason::Error(msg) = VcpuFault::RunFailed(libc::EFAULT).reason(0) else {
            panic!("run failure is an error");
        };
        assert!(
            msg.contains("KVM_RUN failed") && msg.contains("address"),
            "{msg}"
        );
    }

    fn sample() -> (kvm_regs, kvm_sregs) {
        let r = kvm_regs {
            rip: 0x1011,
            rsp: 0x8ff0,
            rflags: 0x46,
            ..Default::default()
        };
        let mut s = kvm_sregs {
            cr0: 0x11,
            cr3: 0x9000,
            cr4: 0x20,
            efer: 0x500,
            ..Default::default()
        };
        s.cs.selector = 0x8;
        s.cs.base = 0;
        (r, s)
    }

    #[test]
    fn register_summary_names_every_key_register() {
        let (r, s) = sample();
        let line = regs_summary::<String>(Ok(r), Ok(s));
        for want in [
            "rip=0x1011",
            "rsp=0x8ff0",
            "rflags=0x46",
            "cr0=0x11",
            "cr3=0x9000",
            "cr4=0x20",
            "efer=0x500",
            "cs=0x8",
            "cs.base=0x0",
            "idt=0x0/0x0",
        ] {
            assert!(line.contains(want), "{want} missing: {line}");
        }
        assert!(!line.contains("reset state"), "{line}");
    }

    #[test]
    fn failed_register_reads_are_named_not_fatal() {
        let (r, s) = sample();
        let line = regs_summary(Err("Operation not permitted"), Ok(s));
        assert!(line.contains("registers unreadable (KVM_GET_REGS: Operation not permitted)"));
        assert!(line.contains("cr3=0x9000"), "{line}");
        let line = regs_summary(Ok(r), Err("Bad file descriptor"));
        assert!(line.contains("rip=0x1011"), "{line}");
        assert!(line.contains("special registers unreadable (KVM_GET_SREGS: Bad file descriptor)"));
        let line = regs_summary::<&str>(Err("a"), Err("b"));
        assert!(line.contains("KVM_GET_REGS: a") && line.contains("KVM_GET_SREGS: b"));
    }

    #[test]
    fn reset_state_registers_are_flagged() {
        let (mut r, mut s) = sample();
        r.rip = RESET_RIP;
        s.cs.base = RESET_CS_BASE;
        assert!(regs_summary::<String>(Ok(r), Ok(s)).contains("reset state"));
    }

    #[test]
    fn fault_line_is_one_line_with_vcpu_reason_detail_and_registers() {
        let (r, s) = sample();
        let regs = regs_summary::<String>(Ok(r), Ok(s));
        let line = fault_line(0, &VcpuFault::Shutdown, None, &regs, None);
        assert!(
            line.starts_with("hull-vmm: vCPU 0: triple fault (KVM_EXIT_SHUTDOWN); rip=0x1011"),
            "{line}"
        );
        assert!(!line.contains('\n'));
        let detail = internal_detail(KVM_INTERNAL_ERROR_EMULATION, &[0x2, 0xf00d]);
        let line = fault_line(
            1,
            &VcpuFault::InternalError,
            Some(&detail),
            &regs,
            Some(&ExitReason::GuestReset),
        );
        assert!(
            line.contains("vCPU 1: KVM internal error (KVM_EXIT_INTERNAL_ERROR): suberror 1 (emulation failure), data [0x2 0xf00d]; rip=0x1011"),
            "{line}"
        );
        assert!(
            line.ends_with("already ending with GuestReset, which stands)"),
            "{line}"
        );
    }
}
