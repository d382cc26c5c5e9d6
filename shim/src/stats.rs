//! The agent's container stats as containerd's cgroup v2 metrics
//! (`io.containerd.cgroups.v2.Metrics`), the type `ctr task metrics` and the CRI plugin
//! decode for a Linux task on a cgroup v2 node.
//!
//! The agent's lists are bounded on the way ([`MAX_STAT_ENTRIES`] devices and interfaces,
//! interface names of at most [`MAX_IFNAME`] bytes): a VM has a few of each, and containerd
//! and the kubelet copy what they get.

use containerd_shim::protos::cgroups_v2::metrics::{
    CPUStat, IOEntry, IOStat, MemoryEvents, MemoryStat, Metrics, NetworkStat, PidsStat,
};
use hull_proto::stats::ContainerStats;

use crate::bounds::{MAX_IFNAME, MAX_STAT_ENTRIES};

/// cgroup v2 reports "max" for no limit; the agent sends 0, containerd's consumers expect a
/// huge number (CRI treats anything above 2^62 as unlimited).
fn limit(v: u64) -> u64 {
    if v == 0 {
        u64::MAX
    } else {
        v
    }
}

pub(crate) fn to_metrics(s: &ContainerStats) -> Metrics {
    let mut m = Metrics::new();
    if let Some(c) = s.cpu.as_ref() {
        m.cpu = Some(CPUStat {
            usage_usec: c.usage_usec,
            user_usec: c.user_usec,
            system_usec: c.system_usec,
            nr_periods: c.nr_periods,
            nr_throttled: c.nr_throttled,
            throttled_usec: c.throttled_usec,
            ..Default::default()
        })
        .into();
    }
    if let Some(mem) = s.memory.as_ref() {
        m.memory = Some(MemoryStat {
            usage: mem.usage_bytes,
            usage_limit: limit(mem.limit_bytes),
            anon: mem.anon_bytes,
            file: mem.file_bytes,
            // CRI computes the working set as usage - inactive_file.
            inactive_file: mem.inactive_file_bytes,
            pgfault: mem.pgfault,
            pgmajfault: mem.pgmajfault,
            swap_usage: mem.swap_usage_bytes,
            swap_limit: limit(mem.swap_limit_bytes),
            ..Default::default()
        })
        .into();
        m.memory_events = Some(MemoryEvents {
            oom: mem.oom_events,
            oom_kill: mem.oom_kill_events,
            ..Default::default()
        })
        .into();
    }
    if let Some(p) = s.pids.as_ref() {
        m.pids = Some(PidsStat {
            current: p.current,
            limit: limit(p.limit),
            ..Default::default()
        })
        .into();
    }
    if !s.io.is_empty() {
        m.io = Some(IOStat {
            usage: s
                .io
                .iter()
                .take(MAX_STAT_ENTRIES)
                .map(|d| IOEntry {
                    major: u64::from(d.major),
                    minor: u64::from(d.minor),
                    rbytes: d.rbytes,
                    wbytes: d.wbytes,
                    rios: d.rios,
                    wios: d.wios,
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        })
        .into();
    }
    m.network = s
        .network
        .iter()
        .filter(|n| n.name.len() <= MAX_IFNAME)
        .take(MAX_STAT_ENTRIES)
        .map(|n| NetworkStat {
            name: n.name.clone(),
            rx_bytes: n.rx_bytes,
            rx_packets: n.rx_packets,
            rx_errors: n.rx_errors,
            rx_dropped: n.rx_dropped,
            tx_bytes: n.tx_bytes,
            tx_packets: n.tx_packets,
            tx_errors: n.tx_errors,
            tx_dropped: n.tx_dropped,
            ..Default::default()
        })
        .collect();
    m
}

#[cfg(test)]
mod tests {
    use hull_proto::stats::{CpuStats, IoDeviceStats, MemoryStats, PidsStats};

    use super::*;

    #[test]
    fn every_counter_lands_in_its_cgroup_v2_field() {
        let s = ContainerStats {
            cpu: Some(CpuStats {
                usage_usec: 10,
                user_usec: 6,
                system_usec: 4,
                nr_throttled: 2,
                ..Default::default()
            })
            .into(),
            memory: Some(MemoryStats {
                usage_bytes: 100,
                limit_bytes: 0,
                working_set_bytes: 70,
                inactive_file_bytes: 30,
                anon_bytes: 50,
                pgfault: 9,
                pgmajfault: 1,
                oom_kill_events: 1,
                ..Default::default()
            })
            .into(),
            pids: Some(PidsStats {
                current: 3,
                limit: 64,
                ..Default::default()
            })
            .into(),
            io: vec![IoDeviceStats {
                major: 254,
                minor: 1,
                rbytes: 4096,
                ..Default::default()
            }],
            ..Default::default()
        };
        let m = to_metrics(&s);
        assert_eq!(m.cpu.usage_usec, 10);
        assert_eq!(m.cpu.nr_throttled, 2);
        assert_eq!(m.memory.usage, 100);
        assert_eq!(m.memory.usage_limit, u64::MAX, "no limit");
        assert_eq!(m.memory.inactive_file, 30);
        assert_eq!((m.memory.pgfault, m.memory.pgmajfault), (9, 1));
        assert_eq!(m.memory_events.oom_kill, 1);
        assert_eq!((m.pids.current, m.pids.limit), (3, 64));
        assert_eq!(m.io.usage[0].major, 254);
        assert_eq!(m.io.usage[0].rbytes, 4096);
        assert!(m.network.is_empty());
    }

    /// A hostile agent's endless lists and megabyte names do not reach containerd.
    #[test]
    fn lists_and_names_are_bounded() {
        use hull_proto::stats::NetworkInterfaceStats as NetworkStats;
        let mut s = ContainerStats {
            io: vec![IoDeviceStats::default(); 100_000],
            ..Default::default()
        };
        s.network = vec![
            NetworkStats {
                name: "x".repeat(1 << 20),
                ..Default::default()
            },
            NetworkStats {
                name: "eth0".into(),
                rx_bytes: 5,
                ..Default::default()
            },
        ];
        s.network
            .extend(std::iter::repeat_n(NetworkStats::default(), 100_000));
        let m = to_metrics(&s);
        assert_eq!(m.io.usage.len(), MAX_STAT_ENTRIES);
        assert_eq!(m.network.len(), MAX_STAT_ENTRIES);
        assert_eq!(
            (m.network[0].name.as_str(), m.network[0].rx_bytes),
            ("eth0", 5)
        );
    }

    #[test]
    fn missing_sections_stay_unset() {
        let m = to_metrics(&ContainerStats::default());
        assert!(m.cpu.is_none() && m.memory.is_none() && m.pids.is_none() && m.io.is_none());
    }
}
