//! Process-wide metrics: boot-phase timestamps (µs since the VMM process was exec'd) and counters,
//! served as JSON over the API socket and logged at exit ([`MetricsReport`]). Each value is an
//! atomic the code that counts it owns; a report serializes what they read at that moment.

pub mod prometheus;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde::{Serialize, Serializer};

use crate::devices::virtio::DeviceMetrics;

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
pub(crate) fn since_exec_us() -> u64 {
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

// Each metric type serializes as a newtype struct named after it: JSON shows the bare value,
// and `prometheus::render` learns the metric's kind from the name.
impl Serialize for Stamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_newtype_struct(prometheus::STAMP, &self.get())
    }
}

/// A counter.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    pub(crate) const fn new() -> Self {
        Counter(AtomicU64::new(0))
    }
    pub(crate) fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    pub(crate) fn inc(&self) {
        self.add(1);
    }
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

impl Serialize for Counter {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_newtype_struct(prometheus::COUNTER, &self.get())
    }
}

/// A level that goes up and down (open connections).
#[derive(Debug, Default)]
pub struct Gauge(AtomicU64);

impl Gauge {
    pub(crate) fn set(&self, n: u64) {
        self.0.store(n, Ordering::Relaxed);
    }
}

impl Serialize for Gauge {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_newtype_struct(prometheus::GAUGE, &self.0.load(Ordering::Relaxed))
    }
}

/// A yes/no state (whether a device watches its back end).
#[derive(Debug, Default)]
pub struct Flag(AtomicBool);

impl Flag {
    pub(crate) fn set(&self, on: bool) {
        self.0.store(on, Ordering::Relaxed);
    }
}

impl Serialize for Flag {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_newtype_struct(prometheus::FLAG, &self.0.load(Ordering::Relaxed))
    }
}

/// Boot phases (DESIGN §2 boot-time instrumentation).
#[derive(Debug, Serialize)]
pub struct BootMetrics {
    /// exec → `main` (loader and start-up code), see `mark_exec`.
    pub main_us: Stamp,
    pub api_ready_us: Stamp,
    pub vm_created_us: Stamp,
    pub kernel_loaded_us: Stamp,
    pub first_kvm_run_us: Stamp,
    /// The guest's /init started (hull_contract::boot_timer::INIT_STARTED).
    pub guest_init_us: Stamp,
    /// The guest agent serves (hull_contract::boot_timer::AGENT_READY).
    pub guest_boot_timer_us: Stamp,
}

/// vCPU exit counters.
#[derive(Debug, Serialize)]
pub struct VcpuMetrics {
    pub exits_io: Counter,
    pub exits_mmio: Counter,
    pub unhandled_io: Counter,
    pub unhandled_mmio: Counter,
}

/// What a guest did that hull-vmm refused or dropped: counted here rather than logged each
/// time, because a guest can repeat it without end (a log line per event would be a guest-driven
/// write to the host's disk).
#[derive(Debug, Serialize)]
pub struct GuestMetrics {
    /// A driver set DRIVER_OK and the device failed to activate (logged once per device).
    pub activate_failures: Counter,
    /// Console bytes dropped once the console file reached its cap (`--console FILE|fd=N`).
    pub console_dropped_bytes: Counter,
    /// Log lines the guest caused that were not written: repeats of a line a site already
    /// wrote, and any past the process's cap (`guest_log.rs`).
    pub log_lines_suppressed: Counter,
}

#[derive(Debug)]
pub struct Metrics {
    pub boot: BootMetrics,
    pub vcpu: VcpuMetrics,
    pub guest: GuestMetrics,
}

pub static METRICS: Metrics = Metrics {
    boot: BootMetrics {
        main_us: Stamp::new(),
        api_ready_us: Stamp::new(),
        vm_created_us: Stamp::new(),
        kernel_loaded_us: Stamp::new(),
        first_kvm_run_us: Stamp::new(),
        guest_init_us: Stamp::new(),
        guest_boot_timer_us: Stamp::new(),
    },
    vcpu: VcpuMetrics {
        exits_io: Counter::new(),
        exits_mmio: Counter::new(),
        unhandled_io: Counter::new(),
        unhandled_mmio: Counter::new(),
    },
    guest: GuestMetrics {
        activate_failures: Counter::new(),
        console_dropped_bytes: Counter::new(),
        log_lines_suppressed: Counter::new(),
    },
};

/// One virtio device in a [`MetricsReport`].
#[derive(Debug, Serialize)]
pub struct DeviceReport {
    /// The virtio device type (1 net, 2 blk, 4 rng, 5 balloon, 19 vsock, 26 fs).
    #[serde(rename = "type")]
    pub device_type: u32,
    pub activated: bool,
    pub metrics: DeviceMetrics,
}

/// What `GET /metrics` answers and `--metrics-on-exit` prints: the process metrics plus one
/// entry per virtio device (none before boot).
#[derive(Debug, Serialize)]
pub struct MetricsReport {
    pub boot: &'static BootMetrics,
    pub vcpu: &'static VcpuMetrics,
    pub guest: &'static GuestMetrics,
    pub devices: Vec<DeviceReport>,
}

impl MetricsReport {
    pub fn new(devices: Vec<DeviceReport>) -> Self {
        MetricsReport {
            boot: &METRICS.boot,
            vcpu: &METRICS.vcpu,
            guest: &METRICS.guest,
            devices,
        }
    }
}

impl std::fmt::Display for MetricsReport {
    /// One line of JSON.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let json = serde_json::to_string(self).map_err(|_| std::fmt::Error)?;
        f.write_str(&json)
    }
}
