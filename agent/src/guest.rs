//! Guest facts for GuestDetails, per-interface counters for stats, memory and pressure for
//! GuestStats.

use std::fs;

use hull_proto::stats::NetworkInterfaceStats;

use crate::AGENT_VERSION;

/// Features this agent reports.
pub(crate) const FEATURES: &[&str] = &[
    "cgroup-v2",
    "virtiofs",
    "block",
    "seccomp",
    "tty",
    "oom-events",
    "cpu-hotplug",
    "disk-hotplug",
];

/// Memory hotplug block size, kernel release, agent version, features.
pub(crate) fn details() -> (u64, String, String, Vec<String>) {
    let block = fs::read_to_string("/sys/devices/system/memory/block_size_bytes")
        .ok()
        .and_then(|s| u64::from_str_radix(s.trim(), 16).ok())
        .unwrap_or(0);
    let release = nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default();
    (
        block,
        release,
        AGENT_VERSION.to_owned(),
        FEATURES.iter().map(|s| (*s).to_owned()).collect(),
    )
}

/// Counters of every interface but loopback, from /sys/class/net.
pub(crate) fn network_stats() -> Vec<NetworkInterfaceStats> {
    let Ok(dir) = fs::read_dir("/sys/class/net") else {
        return Vec::new();
    };
    let mut out: Vec<NetworkInterfaceStats> = dir
        .filter_map(Result::ok)
        .filter(|e| e.file_name() != "lo")
        .map(|e| {
            let s = e.path().join("statistics");
            let r = |f: &str| {
                fs::read_to_string(s.join(f))
                    .ok()
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(0)
            };
            NetworkInterfaceStats {
                name: e.file_name().to_string_lossy().into_owned(),
                rx_bytes: r("rx_bytes"),
                rx_packets: r("rx_packets"),
                rx_errors: r("rx_errors"),
                rx_dropped: r("rx_dropped"),
                tx_bytes: r("tx_bytes"),
                tx_packets: r("tx_packets"),
                tx_errors: r("tx_errors"),
                tx_dropped: r("tx_dropped"),
                ..Default::default()
            }
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// MemTotal, MemFree and MemAvailable of a /proc/meminfo text, bytes (0 for one missing).
pub(crate) fn meminfo(text: &str) -> (u64, u64, u64) {
    let kib = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
            .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
            .map_or(0, |k| k.saturating_mul(1024))
    };
    (kib("MemTotal"), kib("MemFree"), kib("MemAvailable"))
}

/// The `total=` of the `some` and `full` lines of a /proc/pressure file, microseconds.
pub(crate) fn pressure_totals(text: &str) -> (u64, u64) {
    let total = |kind: &str| {
        text.lines()
            .find(|l| l.starts_with(kind))
            .and_then(|l| l.split_whitespace().find_map(|f| f.strip_prefix("total=")))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (total("some "), total("full "))
}

/// The guest's memory and pressure now.
#[derive(Debug)]
pub(crate) struct Load {
    /// MemTotal, MemFree, MemAvailable, bytes.
    pub(crate) mem: (u64, u64, u64),
    /// `(resource, some_total_us, full_total_us)` for each of cpu, memory and io the kernel
    /// reports.
    pub(crate) pressure: Vec<(&'static str, u64, u64)>,
}

pub(crate) fn load() -> Load {
    let mem = fs::read_to_string("/proc/meminfo").map_or((0, 0, 0), |t| meminfo(&t));
    let pressure = ["cpu", "memory", "io"]
        .into_iter()
        .filter_map(|r| {
            let t = fs::read_to_string(format!("/proc/pressure/{r}")).ok()?;
            let (some, full) = pressure_totals(&t);
            Some((r, some, full))
        })
        .collect();
    Load { mem, pressure }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_and_pressure_read_as_the_kernel_writes_them() {
        let mi = "MemTotal:         233588 kB\nMemFree:          180000 kB\n\
                  MemAvailable:     200000 kB\nBuffers:               0 kB\n";
        assert_eq!(
            meminfo(mi),
            (233_588 * 1024, 180_000 * 1024, 200_000 * 1024)
        );
        assert_eq!(meminfo("garbage"), (0, 0, 0));
        let psi = "some avg10=0.00 avg60=0.00 avg300=0.00 total=1234\n\
                   full avg10=0.00 avg60=0.00 avg300=0.00 total=56\n";
        assert_eq!(pressure_totals(psi), (1234, 56));
        assert_eq!(
            pressure_totals("some avg10=0.00 avg60=0.00 avg300=0.00 total=9\n"),
            (9, 0)
        );
    }
}
