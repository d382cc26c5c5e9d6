//! Detecting a guest that halted for good.
//!
//! A guest kernel without ACPI answers `poweroff` with `machine_halt`: every CPU runs HLT with
//! interrupts disabled. With the in-kernel irqchip that HLT never leaves `KVM_RUN`, so no exit
//! tells the VMM. Nothing can wake such a VM: no CPU is left to send an IPI, and device
//! interrupts are masked by `RFLAGS.IF = 0` (only an NMI could, and no device of ours sends
//! one). So the VM is over and the VMM ends it as `GuestPoweroff`.
//!
//! Finding out costs almost nothing on a live VM: the event loop ticks every
//! [`TICK_MS`] and reads each vCPU thread's CPU clock (one `clock_gettime`, no kick). Only when
//! no vCPU thread has run at all for a whole tick (a halted-forever vCPU sleeps in the kernel
//! and its clock stands still) does the loop *probe*: it kicks every vCPU out of `KVM_RUN`
//! and each vCPU thread answers with `KVM_GET_MP_STATE` and `RFLAGS.IF`. Two probes in a row
//! must find every vCPU halted with interrupts off (an AP the guest never started counts as
//! halted, but at least one vCPU must really be halted); one is not enough, because a vCPU
//! could wake another between two answers of the same probe.

use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};

/// The watch's tick; a powered-off guest ends about 3-4 ticks after its last HLT.
pub const TICK_MS: u64 = 200;

/// What a vCPU thread found when probed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum HaltAnswer {
    /// Not answered (yet).
    Unanswered = 0,
    /// Running, or halted with interrupts on (idle): it may go on.
    Live = 1,
    /// `KVM_MP_STATE_HALTED` with `RFLAGS.IF = 0`.
    Halted = 2,
    /// An application processor the guest never started (waiting for INIT/SIPI).
    NotStarted = 3,
}

/// Shared between a vCPU thread and the VMM's side of it.
#[derive(Debug, Default)]
pub struct HaltProbe {
    asked: AtomicBool,
    answer: AtomicU8,
}

impl HaltProbe {
    /// VMM side: clears the last answer and asks for a new one (then kick the thread).
    pub fn ask(&self) {
        self.answer
            .store(HaltAnswer::Unanswered as u8, Ordering::SeqCst);
        self.asked.store(true, Ordering::SeqCst);
    }

    /// vCPU side: whether an answer is wanted (clears the request).
    pub fn take_request(&self) -> bool {
        self.asked.swap(false, Ordering::SeqCst)
    }

    /// vCPU side.
    pub fn answer(&self, a: HaltAnswer) {
        self.answer.store(a as u8, Ordering::SeqCst);
    }

    /// VMM side: the answer to the last `ask`.
    pub fn last_answer(&self) -> HaltAnswer {
        match self.answer.load(Ordering::SeqCst) {
            1 => HaltAnswer::Live,
            2 => HaltAnswer::Halted,
            3 => HaltAnswer::NotStarted,
            _ => HaltAnswer::Unanswered,
        }
    }
}

/// What the event loop should do after a tick.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HaltStep {
    Nothing,
    /// Ask every vCPU (`HaltProbe::ask`) and kick it.
    Probe,
    /// The guest halted for good: end the VM as `GuestPoweroff`.
    Poweroff,
}

/// Probes in a row that must find every vCPU halted.
const CONFIRMATIONS: u8 = 2;

/// The watch's state between ticks (pure logic; the VMM feeds it samples and answers).
#[derive(Debug, Default)]
pub struct HaltWatch {
    /// Each vCPU thread's CPU time at the previous tick.
    last_cpu_ns: Option<Vec<u64>>,
    /// A probe was sent at the previous tick.
    probing: bool,
    confirmed: u8,
}

impl HaltWatch {
    /// One tick. `cpu_ns`: each vCPU thread's CPU time now, or None when the vCPUs are not
    /// all running (paused: a probe would not be answered, and a paused VM is not over).
    /// `answers`: the vCPUs' answers to the previous probe.
    pub fn tick(&mut self, cpu_ns: Option<Vec<u64>>, answers: &[HaltAnswer]) -> HaltStep {
        let Some(cpu_ns) = cpu_ns else {
            *self = HaltWatch::default();
            return HaltStep::Nothing;
        };
        if std::mem::take(&mut self.probing) {
            let all_halted = answers
                .iter()
                .all(|a| matches!(a, HaltAnswer::Halted | HaltAnswer::NotStarted))
                && answers.contains(&HaltAnswer::Halted);
            if all_halted {
                self.confirmed += 1;
                if self.confirmed >= CONFIRMATIONS {
                    return HaltStep::Poweroff;
                }
                // The probe itself made the threads run: ask again without the quiet check.
                self.probing = true;
                return HaltStep::Probe;
            }
            self.confirmed = 0;
            self.last_cpu_ns = Some(cpu_ns);
            return HaltStep::Nothing;
        }
        let quiet = self.last_cpu_ns.as_ref() == Some(&cpu_ns);
        self.last_cpu_ns = Some(cpu_ns);
        if quiet {
            self.probing = true;
            HaltStep::Probe
        } else {
            HaltStep::Nothing
        }
    }
}

#[cfg(test)]
mod tests {
    use super::HaltAnswer::*;
    use super::*;

    #[test]
    fn busy_vcpus_are_never_probed() {
        let mut w = HaltWatch::default();
        for t in 0..10u64 {
            assert_eq!(
                w.tick(Some(vec![t * 100, 5]), &[Unanswered, Unanswered]),
                HaltStep::Nothing
            );
        }
    }

    #[test]
    fn quiet_and_halted_twice_is_poweroff() {
        let mut w = HaltWatch::default();
        assert_eq!(
            w.tick(Some(vec![7, 9]), &[Unanswered, Unanswered]),
            HaltStep::Nothing
        );
        assert_eq!(
            w.tick(Some(vec![7, 9]), &[Unanswered, Unanswered]),
            HaltStep::Probe
        );
        assert_eq!(
            w.tick(Some(vec![8, 10]), &[Halted, Halted]),
            HaltStep::Probe
        );
        assert_eq!(
            w.tick(Some(vec![9, 11]), &[Halted, Halted]),
            HaltStep::Poweroff
        );
    }

    #[test]
    fn an_ap_never_started_counts_but_not_alone() {
        let mut w = HaltWatch::default();
        w.tick(Some(vec![1, 0]), &[]);
        assert_eq!(w.tick(Some(vec![1, 0]), &[]), HaltStep::Probe);
        assert_eq!(
            w.tick(Some(vec![2, 0]), &[Halted, NotStarted]),
            HaltStep::Probe
        );
        assert_eq!(
            w.tick(Some(vec![3, 0]), &[Halted, NotStarted]),
            HaltStep::Poweroff
        );

        let mut w = HaltWatch::default();
        w.tick(Some(vec![0]), &[]);
        assert_eq!(w.tick(Some(vec![0]), &[]), HaltStep::Probe);
        assert_eq!(w.tick(Some(vec![0]), &[NotStarted]), HaltStep::Nothing);
    }

    #[test]
    fn idle_live_or_silent_vcpus_reset_the_watch() {
        let mut w = HaltWatch::default();
        w.tick(Some(vec![1, 1]), &[]);
        assert_eq!(w.tick(Some(vec![1, 1]), &[]), HaltStep::Probe);
        // Halted with interrupts on (an idle guest): no poweroff, back to watching.
        assert_eq!(w.tick(Some(vec![2, 2]), &[Halted, Live]), HaltStep::Nothing);
        assert_eq!(w.tick(Some(vec![2, 2]), &[]), HaltStep::Probe);
        // One confirmation, then a vCPU does not answer: start over.
        assert_eq!(w.tick(Some(vec![3, 3]), &[Halted, Halted]), HaltStep::Probe);
        assert_eq!(
            w.tick(Some(vec![4, 4]), &[Halted, Unanswered]),
            HaltStep::Nothing
        );
        assert_eq!(w.tick(Some(vec![4, 4]), &[]), HaltStep::Probe);
        assert_eq!(w.tick(Some(vec![5, 5]), &[Halted, Halted]), HaltStep::Probe);
        assert_eq!(
            w.tick(Some(vec![6, 6]), &[Halted, Halted]),
            HaltStep::Poweroff
        );
    }

    #[test]
    fn pausing_resets_the_watch() {
        let mut w = HaltWatch::default();
        w.tick(Some(vec![1]), &[]);
        assert_eq!(w.tick(Some(vec![1]), &[]), HaltStep::Probe);
        assert_eq!(w.tick(None, &[Halted]), HaltStep::Nothing);
        assert_eq!(w.tick(Some(vec![2]), &[Halted]), HaltStep::Nothing);
        assert_eq!(w.tick(Some(vec![2]), &[Halted]), HaltStep::Probe);
    }
}
