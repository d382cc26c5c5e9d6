//! vCPUs: one named thread each (`hull_vcpu<N>`), driven by events through an explicit state
//! machine: Created → Running ⇄ Paused → Exited. A vCPU in `KVM_RUN` is kicked out with a
//! real-time signal so pause/finish take effect promptly. The signal handler also sets
//! `kvm_run.immediate_exit`, so a kick that lands between two `KVM_RUN`s is not lost: the next
//! `KVM_RUN` returns `EINTR` at once and the thread reads its events.

use std::cell::Cell;
use std::io::Write;
use std::os::unix::thread::JoinHandleExt;
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError, Sender, TryRecvError};
use std::sync::{Arc, Once};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use kvm_bindings::{
    kvm_run, CpuId, Msrs, KVM_MP_STATE_HALTED, KVM_MP_STATE_INIT_RECEIVED,
    KVM_MP_STATE_UNINITIALIZED,
};
use kvm_ioctls::{VcpuExit, VcpuFd};
use vmm_sys_util::signal::{register_signal_handler, Killable, SIGRTMIN};

use super::halt::{HaltAnswer, HaltProbe};
use super::memory::GuestMemoryMmap;
use super::vcpu_exit::{self, VcpuFault, Verdict};
use super::vm::{Vm, VmError};
use crate::arch::regs::{self, EntryMode};
use crate::device_manager::bus::Bus;
use crate::exit::{ExitReason, VmExit};
use crate::metrics::METRICS;

/// vCPU threads run shallow code (exit dispatch); a stack below 2 MiB also cannot be backed by
/// a transparent huge page, which on THP-`always` hosts cost 2 MiB of RSS per vCPU.
const VCPU_STACK_SIZE: usize = 512 * 1024;
/// RFLAGS.IF: interrupts enabled.
const RFLAGS_IF: u64 = 1 << 9;

#[derive(Debug, thiserror::Error)]
pub enum VcpuError {
    #[error(transparent)]
    Create(#[from] VmError),
    #[error("cannot configure vCPU {id}: {what}: {source}")]
    Configure {
        id: u8,
        what: &'static str,
        source: kvm_ioctls::Error,
    },
    #[error("cannot set up the boot registers: {0}")]
    Memory(vm_memory::GuestMemoryError),
    #[error("cannot build the MSR list")]
    Msrs,
    #[error("cannot spawn the vCPU thread: {0}")]
    Spawn(std::io::Error),
    #[error("cannot install the vCPU kick signal handler: {0}")]
    Signal(vmm_sys_util::errno::Error),
    #[error("vCPU {0} did not answer")]
    NoResponse(u8),
}

/// The vCPU state machine (`GET /vm` lists each vCPU's by name).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum VcpuState {
    Created,
    Running,
    Paused,
    Exited,
}

/// What the VMM asks of a vCPU thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum VcpuEvent {
    Resume,
    Pause,
    Finish,
}

/// Result of one `KVM_RUN`.
#[derive(Debug, PartialEq, Eq)]
enum RunOutcome {
    Continue,
    Interrupted,
    Exit(ExitReason),
}

/// A configured vCPU, not yet running.
#[derive(Debug)]
pub(crate) struct Vcpu {
    fd: VcpuFd,
    id: u8,
    io_bus: Arc<Bus>,
    mmio_bus: Arc<Bus>,
    exit: Arc<VmExit>,
    probe: Arc<HaltProbe>,
}

fn cfg_err(id: u8, what: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> VcpuError {
    move |source| VcpuError::Configure { id, what, source }
}

impl Vcpu {
    pub fn new(
        vm: &Vm,
        id: u8,
        io_bus: Arc<Bus>,
        mmio_bus: Arc<Bus>,
        exit: Arc<VmExit>,
    ) -> Result<Self, VcpuError> {
        Ok(Vcpu {
            fd: vm.create_vcpu(id)?,
            id,
            io_bus,
            mmio_bus,
            exit,
            probe: Arc::new(HaltProbe::default()),
        })
    }

    /// Loads CPUID, MSRs, FPU and LAPIC; the boot vCPU (`entry` given) also gets its registers.
    /// Application processors wait for INIT/SIPI from the guest.
    pub fn configure(
        &mut self,
        supported: &CpuId,
        n: u8,
        mem: &GuestMemoryMmap,
        entry: Option<EntryMode>,
    ) -> Result<(), VcpuError> {
        let id = self.id;
        let mut cpuid = supported.clone();
        super::cpuid::filter(&mut cpuid, id, n);
        self.fd.set_cpuid2(&cpuid).map_err(cfg_err(id, "cpuid"))?;
        let msrs = Msrs::from_entries(&regs::boot_msrs()).map_err(|_| VcpuError::Msrs)?;
        self.fd.set_msrs(&msrs).map_err(cfg_err(id, "msrs"))?;
        self.fd.set_fpu(&regs::fpu()).map_err(cfg_err(id, "fpu"))?;
        let mut lapic = self.fd.get_lapic().map_err(cfg_err(id, "get lapic"))?;
        regs::set_lint(&mut lapic.regs);
        self.fd
            .set_lapic(&lapic)
            .map_err(cfg_err(id, "set lapic"))?;
        if let Some(mode) = entry {
            let sregs = self.fd.get_sregs().map_err(cfg_err(id, "get sregs"))?;
            let sregs = regs::setup_sregs(mem, mode, sregs).map_err(VcpuError::Memory)?;
            self.fd.set_sregs(&sregs).map_err(cfg_err(id, "sregs"))?;
            self.fd
                .set_regs(&regs::regs(mode))
                .map_err(cfg_err(id, "regs"))?;
        }
        Ok(())
    }

    /// Starts the thread in state `Created`; it runs guest code after the first `Resume`.
    pub fn start(self) -> Result<VcpuHandle, VcpuError> {
        install_kick_handler()?;
        let (ev_tx, ev_rx) = channel();
        let (st_tx, st_rx) = channel();
        let id = self.id;
        let probe = self.probe.clone();
        let thread = std::thread::Builder::new()
            .name(format!("hull_vcpu{id}"))
            .stack_size(VCPU_STACK_SIZE)
            .spawn(move || self.run_loop(ev_rx, st_tx))
            .map_err(VcpuError::Spawn)?;
        let cpu_clock = thread_cpu_clock(&thread);
        Ok(VcpuHandle {
            id,
            events: ev_tx,
            states: st_rx,
            thread: Some(thread),
            state: VcpuState::Created,
            probe,
            cpu_clock,
        })
    }

    fn run_loop(mut self, events: Receiver<VcpuEvent>, states: Sender<VcpuState>) {
        crate::seccomp::apply_for_thread(crate::seccomp::ThreadKind::Vcpu);
        // The mapping behind this pointer lives as long as `self.fd`, which outlives the
        // registration: it is cleared below before `self` is dropped.
        KVM_RUN.with(|c| c.set(std::ptr::from_mut(self.fd.get_kvm_run())));
        let mut state = VcpuState::Created;
        loop {
            let ev = match state {
                VcpuState::Running => match events.try_recv() {
                    Ok(ev) => Some(ev),
                    Err(TryRecvError::Empty) => None,
                    Err(TryRecvError::Disconnected) => Some(VcpuEvent::Finish),
                },
                _ => Some(events.recv().unwrap_or(VcpuEvent::Finish)),
            };
            match (state, ev) {
                (_, Some(VcpuEvent::Finish)) => break,
                (VcpuState::Exited, Some(_)) => {}
                (_, Some(VcpuEvent::Resume)) => state = VcpuState::Running,
                (_, Some(VcpuEvent::Pause)) => state = VcpuState::Paused,
                (VcpuState::Running, None) => match self.run_once() {
                    RunOutcome::Continue => continue,
                    RunOutcome::Interrupted => {
                        if self.probe.take_request() {
                            self.probe.answer(self.halt_state());
                        }
                        continue;
                    }
                    RunOutcome::Exit(reason) => {
                        self.exit.signal(reason);
                        state = VcpuState::Exited;
                    }
                },
                (_, None) => continue,
            }
            let _ = states.send(state);
        }
        KVM_RUN.with(|c| c.set(std::ptr::null_mut()));
        let _ = states.send(VcpuState::Exited);
    }

    /// Whether this vCPU is halted for good (see `halt.rs`). Called between two `KVM_RUN`s,
    /// so KVM reports the state the guest left it in.
    fn halt_state(&self) -> HaltAnswer {
        let Ok(mp) = self.fd.get_mp_state() else {
            return HaltAnswer::Live;
        };
        match mp.mp_state {
            KVM_MP_STATE_HALTED => match self.fd.get_regs() {
                Ok(r) if r.rflags & RFLAGS_IF == 0 => HaltAnswer::Halted,
                _ => HaltAnswer::Live,
            },
            KVM_MP_STATE_UNINITIALIZED | KVM_MP_STATE_INIT_RECEIVED => HaltAnswer::NotStarted,
            _ => HaltAnswer::Live,
        }
    }

    fn run_once(&mut self) -> RunOutcome {
        if self.id == 0 {
            METRICS.boot.first_kvm_run_us.mark();
        }
        match self.fd.run() {
            Ok(exit) => match exit {
                VcpuExit::IoIn(port, data) => {
                    METRICS.vcpu.exits_io.inc();
                    if !self.io_bus.read(u64::from(port), data) {
                        METRICS.vcpu.unhandled_io.inc();
                        data.fill(0xff);
                    }
                    RunOutcome::Continue
                }
                VcpuExit::IoOut(port, data) => {
                    METRICS.vcpu.exits_io.inc();
                    if !self.io_bus.write(u64::from(port), data) {
                        METRICS.vcpu.unhandled_io.inc();
                    }
                    RunOutcome::Continue
                }
                VcpuExit::MmioRead(addr, data) => {
                    METRICS.vcpu.exits_mmio.inc();
                    if !self.mmio_bus.read(addr, data) {
                        METRICS.vcpu.unhandled_mmio.inc();
                        data.fill(0);
                    }
                    RunOutcome::Continue
                }
                VcpuExit::MmioWrite(addr, data) => {
                    METRICS.vcpu.exits_mmio.inc();
                    if !self.mmio_bus.write(addr, data) {
                        METRICS.vcpu.unhandled_mmio.inc();
                    }
                    RunOutcome::Continue
                }
                other => match vcpu_exit::classify(&other) {
                    Verdict::Continue => RunOutcome::Continue,
                    Verdict::End(reason) => RunOutcome::Exit(reason),
                    Verdict::Fault(fault) => self.fault(fault),
                },
            },
            Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => {
                // A kick: clear the flag so the next KVM_RUN enters the guest again.
                self.fd.set_kvm_immediate_exit(0);
                RunOutcome::Interrupted
            }
            Err(e) => self.fault(VcpuFault::RunFailed(e.errno())),
        }
    }

    /// Logs why this vCPU stopped, with its registers, and ends the VM. The line is written
    /// here, at once, rather than by the event loop: the registers can only be read on this
    /// thread, and it is out even if the process dies before the VM is torn down.
    fn fault(&mut self, fault: VcpuFault) -> RunOutcome {
        let detail = (fault == VcpuFault::InternalError).then(|| self.internal_error_detail());
        // Both reads are plain ioctls returning a Result (allowed by the vCPU seccomp
        // filter); a failure is reported in the line, never unwrapped.
        let regs = vcpu_exit::regs_summary(self.fd.get_regs(), self.fd.get_sregs());
        let already = self.exit.reason();
        let line =
            vcpu_exit::fault_line(self.id, &fault, detail.as_deref(), &regs, already.as_ref());
        // Not eprintln!, which panics when stderr is gone (a closed pipe): the VM must still end.
        let _ = writeln!(std::io::stderr(), "{line}");
        RunOutcome::Exit(fault.reason(self.id))
    }

    /// KVM's suberror and data words after `KVM_EXIT_INTERNAL_ERROR`.
    fn internal_error_detail(&mut self) -> String {
        let run = self.fd.get_kvm_run();
        // SAFETY: called only right after KVM_RUN returned KVM_EXIT_INTERNAL_ERROR, for which
        // the kernel fills the `internal` member of the exit union; every member is plain
        // integers, so any bit pattern is a valid value.
        let internal = unsafe { run.__bindgen_anon_1.internal };
        let n = usize::try_from(internal.ndata)
            .unwrap_or(usize::MAX)
            .min(internal.data.len());
        vcpu_exit::internal_detail(internal.suberror, &internal.data[..n])
    }
}

thread_local! {
    /// This thread's `kvm_run` mapping while it runs a vCPU, for the kick handler.
    static KVM_RUN: Cell<*mut kvm_run> = const { Cell::new(std::ptr::null_mut()) };
}

extern "C" fn kick_handler(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {
    // Interrupts a KVM_RUN in progress (EINTR) and makes the next one return at once.
    let p = KVM_RUN.with(Cell::get);
    if !p.is_null() {
        let flag = p
            .cast::<u8>()
            .wrapping_add(std::mem::offset_of!(kvm_run, immediate_exit));
        // SAFETY: `flag` is the `immediate_exit` byte inside this thread's live `kvm_run`
        // mapping (registered in `run_loop`, cleared before the VcpuFd is dropped); the handler
        // runs on that same thread, and a volatile byte store is async-signal-safe.
        unsafe { flag.write_volatile(1) };
    }
}

fn install_kick_handler() -> Result<(), VcpuError> {
    static ONCE: Once = Once::new();
    let mut res = Ok(());
    ONCE.call_once(|| {
        res = register_signal_handler(SIGRTMIN(), kick_handler).map_err(VcpuError::Signal);
    });
    res
}

/// The VMM's side of a running vCPU thread.
#[derive(Debug)]
pub(crate) struct VcpuHandle {
    id: u8,
    events: Sender<VcpuEvent>,
    states: Receiver<VcpuState>,
    thread: Option<JoinHandle<()>>,
    state: VcpuState,
    probe: Arc<HaltProbe>,
    /// The thread's CPU-time clock (None if the libc call failed: the halt watch then never
    /// sees the VM as quiet).
    cpu_clock: Option<nix::time::ClockId>,
}

/// The CPU-time clock of a live thread.
fn thread_cpu_clock(t: &JoinHandle<()>) -> Option<nix::time::ClockId> {
    let mut id: libc::clockid_t = 0;
    // SAFETY: `t` has not been joined, so its pthread_t is valid; `id` is a valid out pointer.
    let rc = unsafe { libc::pthread_getcpuclockid(t.as_pthread_t(), &mut id) };
    (rc == 0).then(|| nix::time::ClockId::from_raw(id))
}

impl VcpuHandle {
    pub fn state(&self) -> VcpuState {
        self.state
    }

    /// CPU time the vCPU thread has used so far, in ns.
    pub fn cpu_time_ns(&self) -> Option<u64> {
        let ts = nix::time::clock_gettime(self.cpu_clock?).ok()?;
        let ns = i128::from(ts.tv_sec()) * 1_000_000_000 + i128::from(ts.tv_nsec());
        u64::try_from(ns).ok()
    }

    /// Asks the thread whether its vCPU is halted for good; the answer comes later through
    /// `halt_answer`.
    pub fn probe_halt(&self) {
        self.probe.ask();
        self.kick();
    }

    pub fn halt_answer(&self) -> HaltAnswer {
        self.probe.last_answer()
    }

    fn kick(&self) {
        if let Some(t) = &self.thread {
            let _ = t.kill(SIGRTMIN());
        }
    }

    /// Sends `ev` and waits until the thread reports a new state, kicking it out of `KVM_RUN`
    /// every few milliseconds (a kick that lands just before `KVM_RUN` would be lost).
    pub fn send(&mut self, ev: VcpuEvent) -> Result<VcpuState, VcpuError> {
        if !self.post(ev) {
            return Ok(self.state);
        }
        self.await_state(ev)
    }

    /// Sends `ev` and kicks the thread (unless `ev` is Resume); false if the thread is gone.
    fn post(&mut self, ev: VcpuEvent) -> bool {
        if self.events.send(ev).is_err() {
            self.state = VcpuState::Exited;
            return false;
        }
        if ev != VcpuEvent::Resume {
            self.kick();
        }
        true
    }

    /// Waits for the thread's answer to a posted `ev`, kicking again every few milliseconds.
    fn await_state(&mut self, ev: VcpuEvent) -> Result<VcpuState, VcpuError> {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            match self.states.recv_timeout(Duration::from_millis(5)) {
                Ok(s) => {
                    self.state = s;
                    return Ok(s);
                }
                Err(RecvTimeoutError::Disconnected) => {
                    self.state = VcpuState::Exited;
                    return Ok(self.state);
                }
                Err(RecvTimeoutError::Timeout) if Instant::now() < deadline => {
                    if ev != VcpuEvent::Resume {
                        self.kick();
                    }
                }
                Err(RecvTimeoutError::Timeout) => return Err(VcpuError::NoResponse(self.id)),
            }
        }
    }

    /// Stops the thread and joins it. A thread that does not answer within `send`'s deadline
    /// is left unjoined rather than hanging the VMM's exit; the process exit then ends it.
    pub fn finish(&mut self) {
        finish_all(std::slice::from_mut(self));
    }

    /// Joins the thread once it answered Finish (`answered`); otherwise leaves it to the
    /// process exit.
    fn join(&mut self, answered: bool) {
        if let Some(t) = self.thread.take() {
            if answered {
                let _ = t.join();
            } else {
                eprintln!(
                    "hull-vmm: vCPU {} did not stop; not waiting for it",
                    self.id
                );
            }
        }
        self.state = VcpuState::Exited;
    }
}

/// Stops every vCPU thread and joins them. All are told and kicked before any answer is
/// awaited, so their exits overlap instead of adding up (a pod has four vCPU threads by
/// default, most of them never granted; one after another, hull-vmm took 78 ms to stop in
/// the lab).
pub(crate) fn finish_all(handles: &mut [VcpuHandle]) {
    let posted: Vec<bool> = handles
        .iter_mut()
        .map(|h| h.thread.is_some() && h.post(VcpuEvent::Finish))
        .collect();
    for (h, posted) in handles.iter_mut().zip(posted) {
        let answered = !posted || h.await_state(VcpuEvent::Finish).is_ok();
        h.join(answered);
    }
}

impl Drop for VcpuHandle {
    fn drop(&mut self) {
        if self.thread.is_some() {
            self.finish();
        }
    }
}
