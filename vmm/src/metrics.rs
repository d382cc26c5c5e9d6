//! Process-wide metrics: boot-phase timestamps (µs since the VMM process was exec'd) and counters,
//! served as JSON over the API socket and logged at exit.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

static START: OnceLock<Instant> = OnceLock::new();

/// Records the process start; call first thing in `main` (later calls are no-ops).
///
/// The reference is the exec, not `main`: the dynamic loader and libc/std start-up run
/// before `main` (a few hundred µs). The process's CPU time when `main` starts is the time
/// it ran since it was forked (the forking parent's exec path, the loader, start-up code),
/// so `now - that` is the exec, as long as start-up was not preempted or waiting on page
/// faults (then the start is estimated late, never early). `/proc/self/stat`'s start time
/// would be exact but counts in 10 ms clock ticks, too coarse for a 2 ms start.
pub fn mark_exec() {
    let _ = START.get_or_init(|| {
        let now = Instant::now();
        let before_main = nix::time::clock_gettime(nix::time::ClockId::CLOCK_PROCESS_CPUTIME_ID)
            .map(Duration::from)
            .unwrap_or_default();
        METRICS
            .boot
            .main_us
            .0
            .store(duration_us(before_main).max(1), Ordering::SeqCst);
        now.checked_sub(before_main).unwrap_or(now)
    });
}

fn duration_us(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// Microseconds since the exec (see `mark_exec`; without it, since the first call here).
pub fn since_exec_us() -> u64 {
    duration_us(START.get_or_init(Instant::now).elapsed())
}

/// A boot-phase timestamp; 0 means "not reached".
#[derive(Debug, Default)]
pub struct Stamp(AtomicU64);

impl Stamp {
    pub const fn new() -> Self {
        Stamp(AtomicU64::new(0))
    }
    /// Records now, once; returns true when this call set it.
    pub fn mark(&self) -> bool {
        let now = since_exec_us().max(1);
        self.0
            .compare_exchange(0, now, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
    }
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// A counter.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    pub const fn new() -> Self {
        Counter(AtomicU64::new(0))
    }
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    pub fn inc(&self) {
        self.add(1);
    }
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Boot phases (DESIGN §2 boot-time instrumentation).
#[derive(Debug)]
pub struct BootMetrics {
    /// exec → `main` (loader and start-up code), see `mark_exec`.
    pub main_us: Stamp,
    pub api_ready_us: Stamp,
    pub vm_created_us: Stamp,
    pub kernel_loaded_us: Stamp,
    pub first_kvm_run_us: Stamp,
    pub guest_boot_timer_us: Stamp,
}

/// vCPU exit counters.
#[derive(Debug)]
pub struct VcpuMetrics {
    pub exits_io: Counter,
    pub exits_mmio: Counter,
    pub unhandled_io: Counter,
    pub unhandled_mmio: Counter,
}

#[derive(Debug)]
pub struct Metrics {
    pub boot: BootMetrics,
    pub vcpu: VcpuMetrics,
}

pub static METRICS: Metrics = Metrics {
    boot: BootMetrics {
        main_us: Stamp::new(),
        api_ready_us: Stamp::new(),
        vm_created_us: Stamp::new(),
        kernel_loaded_us: Stamp::new(),
        first_kvm_run_us: Stamp::new(),
        guest_boot_timer_us: Stamp::new(),
    },
    vcpu: VcpuMetrics {
        exits_io: Counter::new(),
        exits_mmio: Counter::new(),
        unhandled_io: Counter::new(),
        unhandled_mmio: Counter::new(),
    },
};

/// The process metrics plus per-device ones (`devices`, from each device's `metrics.rs`).
pub fn to_json(devices: serde_json::Value) -> serde_json::Value {
    let b = &METRICS.boot;
    let v = &METRICS.vcpu;
    serde_json::json!({
        "boot": {
            "main_us": b.main_us.get(),
            "api_ready_us": b.api_ready_us.get(),
            "vm_created_us": b.vm_created_us.get(),
            "kernel_loaded_us": b.kernel_loaded_us.get(),
            "first_kvm_run_us": b.first_kvm_run_us.get(),
            "guest_boot_timer_us": b.guest_boot_timer_us.get(),
        },
        "vcpu": {
            "exits_io": v.exits_io.get(),
            "exits_mmio": v.exits_mmio.get(),
            "unhandled_io": v.unhandled_io.get(),
            "unhandled_mmio": v.unhandled_mmio.get(),
        },
        "devices": devices,
    })
}
