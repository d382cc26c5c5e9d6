//! `hullctl task-stats`: the shim's own Task.Stats reply, decoded.
//!
//! containerd 1.6 cannot show all of it: its cgroup v2 `Metrics` type predates the `network`
//! field, so `ctr task metrics` and CRI drop the guest's interface counters. Asking the shim
//! directly, on the socket containerd itself uses (the task's `address` file in containerd's
//! state directory), shows exactly what hull reports.

use std::time::Duration;

use anyhow::{bail, Context};
use containerd_shim_protos::api::StatsRequest;
use containerd_shim_protos::cgroups_v2::metrics::Metrics;
use containerd_shim_protos::protobuf::Message;
use containerd_shim_protos::shim_async::TaskClient;
use serde_json::{json, Value};

/// The type URL containerd uses for cgroup v2 metrics.
const METRICS_V2: &str = "io.containerd.cgroups.v2.Metrics";

/// Calls Task.Stats for `id` on the shim at `address` (`unix:///...` as in containerd's
/// `address` file, or a plain socket path) and returns the metrics as JSON.
pub async fn stats(address: &str, id: &str, timeout: Duration) -> anyhow::Result<Value> {
    let addr = address.trim();
    let addr = if addr.starts_with("unix://") {
        addr.to_owned()
    } else {
        format!("unix://{addr}")
    };
    let client = ttrpc::asynchronous::Client::connect(&addr)
        .await
        .with_context(|| format!("connect to the shim at {addr}"))?;
    let ns = i64::try_from(timeout.as_nanos()).unwrap_or(i64::MAX);
    let req = StatsRequest {
        id: id.to_owned(),
        ..Default::default()
    };
    let reply = TaskClient::new(client)
        .stats(ttrpc::context::with_timeout(ns), &req)
        .await
        .context("Task.Stats")?;
    let any = reply.stats.into_option().context("Task.Stats: no stats")?;
    let kind = any.type_url.rsplit('/').next().unwrap_or_default();
    if kind != METRICS_V2 {
        bail!(
            "Task.Stats: stats of type {:?}, not {METRICS_V2}",
            any.type_url
        );
    }
    let m = Metrics::parse_from_bytes(&any.value).context("decode the metrics")?;
    Ok(to_json(&m))
}

/// The fields a check needs: pids, CPU and memory usage, and every interface's counters.
fn to_json(m: &Metrics) -> Value {
    json!({
        "pids": m.pids.as_ref().map(|p| p.current),
        "cpu_usage_usec": m.cpu.as_ref().map(|c| c.usage_usec),
        "memory_usage": m.memory.as_ref().map(|c| c.usage),
        "network": m.network.iter().map(|n| json!({
            "name": n.name,
            "rx_bytes": n.rx_bytes,
            "rx_packets": n.rx_packets,
            "rx_errors": n.rx_errors,
            "rx_dropped": n.rx_dropped,
            "tx_bytes": n.tx_bytes,
            "tx_packets": n.tx_packets,
            "tx_errors": n.tx_errors,
            "tx_dropped": n.tx_dropped,
        })).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use containerd_shim_protos::cgroups_v2::metrics::{NetworkStat, PidsStat};

    use super::*;

    #[test]
    fn every_interface_and_the_summary_fields_are_shown() {
        let mut m = Metrics::new();
        m.pids = Some(PidsStat {
            current: 3,
            ..Default::default()
        })
        .into();
        m.network = vec![NetworkStat {
            name: "eth0".into(),
            rx_bytes: 1 << 20,
            rx_packets: 800,
            tx_bytes: 4096,
            tx_packets: 9,
            ..Default::default()
        }];
        let j = to_json(&m);
        assert_eq!(j["pids"], 3);
        assert_eq!(j["memory_usage"], Value::Null);
        assert_eq!(j["network"][0]["name"], "eth0");
        assert_eq!(j["network"][0]["rx_bytes"], 1 << 20);
        assert_eq!(j["network"][0]["tx_packets"], 9);
    }
}
