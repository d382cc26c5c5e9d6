//! A running VM: its KVM state, vCPU threads, device event loop, and the orderly way out.

use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use event_manager::{EventManager, EventOps, Events, MutEventSubscriber, SubscriberOps};
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::timerfd::TimerFd;

use crate::device_manager::bus::lock;
use crate::devices::virtio::VirtioDevice;
use crate::exit::{ExitReason, VmExit};
use crate::hotplug::Growth;
use crate::metrics::{DeviceReport, MetricsReport};
use crate::vstate::halt::{HaltStep, HaltWatch, TICK_MS};
use crate::vstate::memory::GuestMemoryMmap;
use crate::vstate::vcpu::{VcpuError, VcpuEvent, VcpuHandle, VcpuState};
use crate::vstate::vm::Vm;

/// What the event loop holds.
pub type Subscriber = Arc<Mutex<dyn MutEventSubscriber + Send>>;

/// Wakes the loop when anything signals the VM's exit.
#[derive(Debug)]
struct ExitWatcher(Arc<VmExit>);

impl MutEventSubscriber for ExitWatcher {
    fn init(&mut self, ops: &mut EventOps) {
        let _ = ops.add(Events::new(self.0.eventfd(), EventSet::IN));
    }
    fn process(&mut self, _events: Events, _ops: &mut EventOps) {
        let _ = self.0.eventfd().read();
    }
}

/// The halt watch's periodic tick (see `vstate/halt.rs`); the loop acts on it after the
/// round, where it can reach the vCPU handles.
#[derive(Debug)]
struct HaltTimer {
    fd: TimerFd,
    fired: Arc<AtomicBool>,
}

impl MutEventSubscriber for HaltTimer {
    fn init(&mut self, ops: &mut EventOps) {
        let _ = ops.add(Events::new(&self.fd, EventSet::IN));
    }
    fn process(&mut self, _events: Events, _ops: &mut EventOps) {
        let _ = self.fd.wait();
        self.fired.store(true, Ordering::Relaxed);
    }
}

/// SIGTERM/SIGINT (blocked in every thread, read here) stop the VM.
#[derive(Debug)]
pub(crate) struct SignalWatcher {
    fd: nix::sys::signalfd::SignalFd,
    exit: Arc<VmExit>,
}

impl MutEventSubscriber for SignalWatcher {
    fn init(&mut self, ops: &mut EventOps) {
        let _ = ops.add(Events::new_raw(self.fd.as_raw_fd(), EventSet::IN));
    }
    fn process(&mut self, _events: Events, _ops: &mut EventOps) {
        while let Ok(Some(_)) = self.fd.read_signal() {
            self.exit.signal(ExitReason::Stopped);
        }
    }
}

/// Blocks SIGTERM and SIGINT in the calling thread (and threads it spawns later) and returns a
/// signalfd for them. Call before any thread is spawned.
pub fn block_termination_signals() -> nix::Result<nix::sys::signalfd::SignalFd> {
    use nix::sys::signal::{SigSet, Signal};
    use nix::sys::signalfd::{SfdFlags, SignalFd};
    let mut set = SigSet::empty();
    set.add(Signal::SIGTERM);
    set.add(Signal::SIGINT);
    set.thread_block()?;
    SignalFd::with_flags(&set, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
}

extern "C" fn abort_handler(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {
    const MSG: &[u8] = b"hull-vmm: aborted (SIGABRT)\n";
    // SAFETY: write(2) is async-signal-safe; MSG is a valid buffer of that length.
    unsafe { libc::write(2, MSG.as_ptr().cast(), MSG.len()) };
    // SAFETY: _exit(2) is async-signal-safe and does not return.
    unsafe { libc::_exit(crate::exit::STATUS_ABORTED) }
}

/// Signal dispositions hull-vmm needs wherever it runs, set before any thread and any filter:
/// - SIGABRT ends the process with [`crate::exit::STATUS_ABORTED`]: a panic's abort then
///   ends hull-vmm as PID 1 of a pid namespace too (see there), with a line naming it.
/// - SIGXFSZ is ignored: the shim's jail limits file sizes (RLIMIT_FSIZE), and a write past
///   the limit to the console or the log then fails (the console stops, a log line is lost)
///   instead of killing the VM.
pub fn install_crash_handlers() -> Result<(), vmm_sys_util::errno::Error> {
    vmm_sys_util::signal::register_signal_handler(libc::SIGABRT, abort_handler)?;
    // SAFETY: SIG_IGN is a valid disposition for SIGXFSZ; no handler code is involved.
    if unsafe { libc::signal(libc::SIGXFSZ, libc::SIG_IGN) } == libc::SIG_ERR {
        return Err(vmm_sys_util::errno::Error::last());
    }
    Ok(())
}

/// One running VM.
pub struct Vmm {
    _vm: Vm,
    pub(crate) mem: GuestMemoryMmap,
    pub(crate) vcpus: Vec<VcpuHandle>,
    exit: Arc<VmExit>,
    pub(crate) events: EventManager<Subscriber>,
    pub(crate) devices: Vec<Arc<Mutex<dyn VirtioDevice>>>,
    halt: HaltWatch,
    halt_tick: Arc<AtomicBool>,
    pub(crate) growth: Growth,
}

impl std::fmt::Debug for Vmm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vmm").field("vcpus", &self.vcpus).finish()
    }
}

impl Vmm {
    pub(crate) fn new(
        vm: Vm,
        mem: GuestMemoryMmap,
        vcpus: Vec<VcpuHandle>,
        exit: Arc<VmExit>,
        mut events: EventManager<Subscriber>,
        devices: Vec<Arc<Mutex<dyn VirtioDevice>>>,
    ) -> Self {
        events.add_subscriber(Arc::new(Mutex::new(ExitWatcher(exit.clone()))));
        let halt_tick = Arc::new(AtomicBool::new(false));
        match TimerFd::new() {
            Ok(mut fd) => {
                let period = Duration::from_millis(TICK_MS);
                let _ = fd.reset(period, Some(period));
                events.add_subscriber(Arc::new(Mutex::new(HaltTimer {
                    fd,
                    fired: halt_tick.clone(),
                })));
            }
            // Without the timer a halted guest is not noticed, as before; everything else works.
            Err(e) => eprintln!("hull-vmm: no halt watch: cannot create a timerfd: {e}"),
        }
        Vmm {
            _vm: vm,
            mem,
            vcpus,
            exit,
            events,
            devices,
            halt: HaltWatch::default(),
            halt_tick,
            growth: Growth::default(),
        }
    }

    /// Only granted vCPUs count: the others never run.
    fn check_halted(&mut self) {
        let granted = self.granted();
        let running = granted.iter().all(|v| v.state() == VcpuState::Running);
        let cpu: Option<Vec<u64>> = running
            .then(|| granted.iter().map(VcpuHandle::cpu_time_ns).collect())
            .flatten();
        let answers: Vec<_> = granted.iter().map(VcpuHandle::halt_answer).collect();
        match self.halt.tick(cpu, &answers) {
            HaltStep::Nothing => {}
            HaltStep::Probe => self.granted().iter().for_each(VcpuHandle::probe_halt),
            HaltStep::Poweroff => self.exit.signal(ExitReason::GuestPoweroff),
        }
    }

    /// Lets SIGTERM/SIGINT stop this VM.
    pub fn watch_signals(&mut self, fd: nix::sys::signalfd::SignalFd) {
        let w = SignalWatcher {
            fd,
            exit: self.exit.clone(),
        };
        self.events.add_subscriber(Arc::new(Mutex::new(w)));
    }

    /// Adds another event source (the API socket).
    pub fn add_subscriber(&mut self, s: Subscriber) {
        self.events.add_subscriber(s);
    }

    pub(crate) fn exit_handle(&self) -> Arc<VmExit> {
        self.exit.clone()
    }

    /// Runs one round of the event loop (up to `timeout_ms`, -1 = block); returns the exit
    /// reason once the VM is over.
    pub fn run_once(&mut self, timeout_ms: i32) -> Option<ExitReason> {
        if let Err(e) = self.events.run_with_timeout(timeout_ms) {
            self.exit
                .signal(ExitReason::Error(format!("event loop failed: {e}")));
        }
        if self.halt_tick.swap(false, Ordering::Relaxed) {
            self.check_halted();
        }
        self.exit.reason()
    }

    pub(crate) fn vcpu_states(&self) -> Vec<VcpuState> {
        self.vcpus.iter().map(VcpuHandle::state).collect()
    }

    pub fn pause(&mut self) -> Result<(), VcpuError> {
        self.growth.paused = true;
        for v in &mut self.vcpus {
            v.send(VcpuEvent::Pause)?;
        }
        Ok(())
    }

    /// Resumes the granted vCPUs (the others stay where they are).
    pub fn resume(&mut self) -> Result<(), VcpuError> {
        self.growth.paused = false;
        let granted = self.growth.granted;
        for v in self.vcpus.iter_mut().take(granted) {
            v.send(VcpuEvent::Resume)?;
        }
        Ok(())
    }

    /// Asks the VM to stop (the loop returns `Stopped` next round).
    pub fn request_stop(&self) {
        self.exit.signal(ExitReason::Stopped);
    }

    /// The process's and every device's metrics.
    pub fn metrics(&self) -> MetricsReport {
        let devices = self
            .devices
            .iter()
            .map(|d| {
                let d = lock(d);
                DeviceReport {
                    device_type: d.device_type(),
                    activated: d.is_activated(),
                    metrics: d.metrics(),
                }
            })
            .collect();
        MetricsReport::new(devices)
    }

    /// Replaces the rate limits of the `index`th device of `device_type` (in the order the
    /// configuration lists them).
    pub fn set_rate_limits(
        &self,
        device_type: u32,
        index: usize,
        limits: &crate::devices::virtio::RateLimits,
    ) -> Result<(), String> {
        let dev = self
            .devices
            .iter()
            .filter(|d| lock(d).device_type() == device_type)
            .nth(index)
            .ok_or_else(|| format!("no such device ({index})"))?;
        lock(dev).set_rate_limits(limits)
    }

    /// Stops and joins every vCPU thread; devices (and their sockets) go with `self`.
    pub fn shutdown(mut self) {
        crate::vstate::vcpu::finish_all(&mut self.vcpus);
    }
}
