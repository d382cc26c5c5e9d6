//! Guest facts for GuestDetails and per-interface counters for stats.

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
