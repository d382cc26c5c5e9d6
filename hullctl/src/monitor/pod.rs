//! One pod's part of a scrape: its hull-vmm's metrics, what the host sees of its processes,
//! and what its guest's agent reports. The host's figures are the host's; the guest's
//! (`hull_guest_*`, `hull_agent_*`) are the guest's own word about itself, checked in shape
//! (`crate::guest::checked`) but not in value.

use hull_contract::pods::{PodProcesses, API_SOCKET, PROCESSES};
use hull_proto::guest::GuestStatsResponse;

use super::{escape, Exposition, Histogram};
use crate::pods::{self, process_stats, shmem_resident, stats_of, vcpu_seconds, Pod};

/// What one pod answered.
#[derive(Debug, Default)]
pub(crate) struct PodScrape {
    /// hull-vmm's exposition and its host pid, if it answered.
    vmm: Option<(String, Option<i32>)>,
    processes: PodProcesses,
    guest: Option<GuestStatsResponse>,
}

/// Microseconds to seconds for a counter.
#[allow(clippy::cast_precision_loss)] // PSI totals stay far below 2^53 µs (285 years)
fn secs(us: u64) -> f64 {
    us as f64 / 1e6
}

#[allow(clippy::cast_precision_loss)] // byte counts of one pod fit f64's 53 bits
fn f(v: u64) -> f64 {
    v as f64
}

impl PodScrape {
    /// Asks `pod`'s hull-vmm and its guest's agent, each bounded in time.
    pub(crate) async fn take(pod: &Pod) -> Self {
        let sock = pod.dir.join(API_SOCKET);
        let vmm = match pods::request(&sock, "GET", "/metrics/prometheus", "").await {
            Ok(r) if r.status == 200 => Some((r.body, r.peer_pid)),
            _ => None,
        };
        let processes = std::fs::read_to_string(pod.dir.join(PROCESSES))
            .map(|t| PodProcesses::parse(&t))
            .unwrap_or_default();
        // A guest whose VMM is gone cannot answer: no need to wait for its timeout.
        let guest = match vmm {
            Some(_) => crate::guest::stats(pod).await.ok(),
            None => None,
        };
        PodScrape {
            vmm,
            processes,
            guest,
        }
    }

    /// Adds this pod's samples to `e`, each labelled with `labels` (the pod's).
    pub(crate) fn add_to(&self, e: &mut Exposition, labels: &str) {
        let up = |v: bool| if v { 1.0 } else { 0.0 };
        e.sample(
            "hull_pod_up",
            "gauge",
            "Whether the pod's hull-vmm answered this scrape.",
            labels,
            up(self.vmm.is_some()),
        );
        e.sample(
            "hull_pod_agent_up",
            "gauge",
            "Whether the pod's guest agent answered this scrape with well-formed statistics.",
            labels,
            up(self.guest.is_some()),
        );
        if let Some((text, pid)) = &self.vmm {
            e.add_vmm(text, labels);
            self.add_vmm_process(e, labels, *pid);
        }
        self.add_processes(e, labels);
        if let Some(g) = &self.guest {
            add_guest(e, labels, g);
        }
    }

    fn add_vmm_process(&self, e: &mut Exposition, labels: &str, pid: Option<i32>) {
        let Some(pid) = pid else { return };
        if let Some((rss, cpu, _)) = process_stats(pid) {
            e.sample(
                "hull_pod_vmm_resident_memory_bytes",
                "gauge",
                "Resident memory of the pod's hull-vmm process, guest RAM included.",
                labels,
                f(rss),
            );
            e.sample(
                "hull_pod_vmm_cpu_seconds_total",
                "counter",
                "CPU time of the pod's hull-vmm process, its vCPU threads included.",
                labels,
                cpu,
            );
        }
        for (index, secs) in vcpu_seconds(pid) {
            e.sample(
                "hull_pod_vcpu_seconds_total",
                "counter",
                "CPU time of each of the pod's vCPU threads in hull-vmm.",
                &format!("{labels},vcpu=\"{index}\""),
                secs,
            );
        }
        if let Some(shmem) = shmem_resident(pid) {
            e.sample(
                "hull_pod_guest_memory_resident_bytes",
                "gauge",
                "Guest RAM the host backs now: the resident pages of hull-vmm's guest memory \
                 file (RssShmem). Free pages the guest reported are not in it.",
                labels,
                f(shmem),
            );
        }
    }

    fn add_processes(&self, e: &mut Exposition, labels: &str) {
        let parts = [
            (
                "shim",
                self.processes.shim,
                "the pod's containerd-shim-hull-v2",
            ),
            (
                "virtiofsd",
                self.processes.virtiofsd,
                "the pod's virtiofsd (its resident memory counts the guest RAM it touched \
                 through its shared mapping, which hull-vmm's counts too)",
            ),
        ];
        for (name, id, who) in parts {
            let Some((rss, cpu)) = id.and_then(stats_of) else {
                continue;
            };
            e.sample(
                &format!("hull_pod_{name}_resident_memory_bytes"),
                "gauge",
                &format!("Resident memory of {who}."),
                labels,
                f(rss),
            );
            e.sample(
                &format!("hull_pod_{name}_cpu_seconds_total"),
                "counter",
                &format!("CPU time of {who}."),
                labels,
                cpu,
            );
        }
    }
}

fn add_guest(e: &mut Exposition, labels: &str, g: &GuestStatsResponse) {
    for (name, v, help) in [
        (
            "hull_guest_memory_total_bytes",
            g.mem_total_bytes,
            "The guest kernel's MemTotal, as the guest reports it.",
        ),
        (
            "hull_guest_memory_available_bytes",
            g.mem_available_bytes,
            "The guest kernel's MemAvailable, as the guest reports it.",
        ),
        (
            "hull_guest_memory_free_bytes",
            g.mem_free_bytes,
            "The guest kernel's MemFree, as the guest reports it.",
        ),
    ] {
        e.sample(name, "gauge", help, labels, f(v));
    }
    for p in &g.pressure {
        let l = format!("{labels},resource=\"{}\"", escape(&p.resource));
        e.sample(
            "hull_guest_pressure_waiting_seconds_total",
            "counter",
            "Time in which some guest task stalled on the resource (PSI some), as the guest \
             reports it.",
            &l,
            secs(p.some_total_us),
        );
        e.sample(
            "hull_guest_pressure_stalled_seconds_total",
            "counter",
            "Time in which every non-idle guest task stalled on the resource (PSI full), as \
             the guest reports it.",
            &l,
            secs(p.full_total_us),
        );
    }
    for m in &g.rpc {
        let l = format!("{labels},method=\"{}\"", escape(&m.method));
        e.histogram(
            "hull_agent_rpc_duration_seconds",
            "Time the guest agent took to serve each RPC, by method (long-polling methods \
             such as WaitProcess count their wait), as the guest reports it.",
            &l,
            &Histogram {
                bounds: &g.rpc_bucket_bounds_seconds,
                buckets: &m.bucket_counts,
                sum: m.sum_seconds,
                count: m.count,
            },
        );
        e.sample(
            "hull_agent_rpc_errors_total",
            "counter",
            "RPCs the guest agent answered with an error, by method, as the guest reports it.",
            &l,
            f(m.errors),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hull_proto::guest::{Pressure, RpcLatency};

    #[test]
    fn a_guests_stats_become_gauges_counters_and_a_histogram() {
        let g = GuestStatsResponse {
            mem_total_bytes: 256 << 20,
            mem_free_bytes: 100 << 20,
            mem_available_bytes: 200 << 20,
            pressure: vec![Pressure {
                resource: "memory".into(),
                some_total_us: 1_500_000,
                full_total_us: 250_000,
                ..Default::default()
            }],
            rpc_bucket_bounds_seconds: vec![0.001, 0.01],
            rpc: vec![RpcLatency {
                method: "Containers/CreateContainer".into(),
                count: 3,
                errors: 1,
                sum_seconds: 0.02,
                bucket_counts: vec![1, 2],
                ..Default::default()
            }],
            ..Default::default()
        };
        let s = PodScrape {
            vmm: None,
            processes: PodProcesses::default(),
            guest: Some(g),
        };
        let mut e = Exposition::default();
        s.add_to(&mut e, "sandbox_id=\"a\"");
        let text = e.render();
        for line in [
            "hull_pod_up{sandbox_id=\"a\"} 0",
            "hull_pod_agent_up{sandbox_id=\"a\"} 1",
            "hull_guest_memory_total_bytes{sandbox_id=\"a\"} 268435456",
            "hull_guest_pressure_waiting_seconds_total{sandbox_id=\"a\",resource=\"memory\"} 1.5",
            "hull_guest_pressure_stalled_seconds_total{sandbox_id=\"a\",resource=\"memory\"} 0.25",
            "# TYPE hull_agent_rpc_duration_seconds histogram",
            "hull_agent_rpc_duration_seconds_bucket{sandbox_id=\"a\",method=\"Containers/CreateContainer\",le=\"0.001\"} 1",
            "hull_agent_rpc_duration_seconds_bucket{sandbox_id=\"a\",method=\"Containers/CreateContainer\",le=\"0.01\"} 2",
            "hull_agent_rpc_duration_seconds_bucket{sandbox_id=\"a\",method=\"Containers/CreateContainer\",le=\"+Inf\"} 3",
            "hull_agent_rpc_duration_seconds_sum{sandbox_id=\"a\",method=\"Containers/CreateContainer\"} 0.02",
            "hull_agent_rpc_duration_seconds_count{sandbox_id=\"a\",method=\"Containers/CreateContainer\"} 3",
            "hull_agent_rpc_errors_total{sandbox_id=\"a\",method=\"Containers/CreateContainer\"} 1",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line:?} in\n{text}");
        }
    }

    #[test]
    fn a_recorded_process_counts_only_while_it_is_the_same_process() {
        let me = hull_contract::pods::ProcessId {
            pid: std::process::id(),
            start_time: 0,
        };
        let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
        let start: u64 = stat[stat.rfind(')').unwrap() + 1..]
            .split_whitespace()
            .nth(19)
            .unwrap()
            .parse()
            .unwrap();
        let s = PodScrape {
            vmm: None,
            processes: PodProcesses {
                shim: Some(hull_contract::pods::ProcessId {
                    start_time: start,
                    ..me
                }),
                // Same pid, another start: a later process that reused it.
                virtiofsd: Some(hull_contract::pods::ProcessId {
                    start_time: start + 1,
                    ..me
                }),
            },
            guest: None,
        };
        let mut e = Exposition::default();
        s.add_to(&mut e, "sandbox_id=\"a\"");
        let text = e.render();
        assert!(
            text.contains("\nhull_pod_shim_resident_memory_bytes{sandbox_id=\"a\"} "),
            "{text}"
        );
        assert!(!text.contains("hull_pod_virtiofsd_"), "{text}");
        assert!(!text.contains("hull_guest_"), "{text}");
    }
}
