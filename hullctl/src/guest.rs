//! What `hullctl` asks a pod's guest agent, through the pod's hybrid vsock socket
//! (`hull_contract::pods::AGENT_SOCKET`): its kernel's log and its own (`hullctl console`),
//! and its memory, pressure and RPC latencies (the metrics endpoint).
//!
//! Everything a guest answers is the guest's word and may be hostile: a reply is bounded in
//! time, checked in shape before it is used, and a guest's text is escaped before it reaches
//! an operator's terminal (no control sequences).

use std::fmt::Write as _;
use std::time::Duration;

use anyhow::{bail, Context};
use hull_contract::pods::AGENT_SOCKET;
use hull_contract::vsock::AGENT_PORT;
use hull_proto::guest::{
    GetKernelLogRequest, GetLogsRequest, GuestStatsRequest, GuestStatsResponse,
};
use hull_proto::guest_ttrpc::GuestClient;

use crate::pods::Pod;

/// Connecting and each call: a guest that does not answer in this time is reported down,
/// and must not hold up a scrape of the other pods.
const AGENT_TIMEOUT: Duration = Duration::from_secs(3);

fn ctx() -> ttrpc::context::Context {
    ttrpc::context::with_timeout(i64::try_from(AGENT_TIMEOUT.as_nanos()).unwrap_or(i64::MAX))
}

/// A Guest-service client of `pod`'s agent.
pub(crate) async fn connect(pod: &Pod) -> anyhow::Result<GuestClient> {
    let sock = pod.dir.join(AGENT_SOCKET);
    let client = hull_proto::connect_agent(&sock, AGENT_PORT, AGENT_TIMEOUT)
        .await
        .with_context(|| format!("connect to the guest's agent through {}", sock.display()))?;
    Ok(GuestClient::new(client))
}

/// Resources a guest may report pressure for.
const PRESSURE_RESOURCES: [&str; 3] = ["cpu", "memory", "io"];
/// Most methods a reply may list: the agent has about 35.
const MAX_METHODS: usize = 64;
/// Most latency buckets a reply may have.
const MAX_BUCKETS: usize = 32;

/// A method name as the agent makes them (`Service/Method`), safe as a label value.
fn is_method_name(m: &str) -> bool {
    (3..=64).contains(&m.len())
        && m.split_once('/').is_some_and(|(s, n)| {
            [s, n]
                .iter()
                .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'))
        })
}

/// `r` with what is malformed left out: pressure of unknown resources, methods with bad
/// names or bucket counts that do not fit the bounds; an error if the bounds themselves are
/// unusable (then no histogram can be drawn).
pub(crate) fn checked(mut r: GuestStatsResponse) -> anyhow::Result<GuestStatsResponse> {
    let bounds = &r.rpc_bucket_bounds_seconds;
    if bounds.len() > MAX_BUCKETS
        || !bounds.iter().all(|b| b.is_finite() && *b > 0.0)
        || !bounds.windows(2).all(|w| w[0] < w[1])
    {
        bail!(
            "the agent's latency buckets are malformed ({} bounds)",
            bounds.len()
        );
    }
    let n = bounds.len();
    r.pressure
        .retain(|p| PRESSURE_RESOURCES.contains(&p.resource.as_str()));
    r.pressure.dedup_by(|a, b| a.resource == b.resource);
    r.rpc.retain(|m| {
        is_method_name(&m.method)
            && m.bucket_counts.len() == n
            && m.sum_seconds.is_finite()
            && m.sum_seconds >= 0.0
            && m.bucket_counts.windows(2).all(|w| w[0] <= w[1])
            && m.bucket_counts.last().is_none_or(|&last| last <= m.count)
            && m.errors <= m.count
    });
    r.rpc.truncate(MAX_METHODS);
    Ok(r)
}

/// The guest's memory, pressure and RPC latencies, checked ([`checked`]).
pub(crate) async fn stats(pod: &Pod) -> anyhow::Result<GuestStatsResponse> {
    let client = connect(pod).await?;
    let r = tokio::time::timeout(
        AGENT_TIMEOUT,
        client.guest_stats(ctx(), &GuestStatsRequest::new()),
    )
    .await
    .context("Guest.GuestStats: no answer")?
    .context("Guest.GuestStats")?;
    checked(r)
}

/// `s` with every control character (and DEL) written as `\xNN`: a guest's text must not
/// move an operator's cursor, retitle the terminal or hide a line.
pub(crate) fn printable(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c.is_control() {
            let _ = write!(out, "\\x{:02x}", u32::from(c));
        } else {
            out.push(c);
        }
    }
    out
}

/// Which log `hullctl console` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LogSource {
    /// The guest kernel's log buffer, what a serial console would have shown.
    Kernel,
    /// hull-agent's bounded log.
    Agent,
}

/// How often `--follow` asks for more.
const FOLLOW_EVERY: Duration = Duration::from_millis(500);

/// Most lines one `hullctl console` call asks the agent for at once.
const PAGE: u32 = 500;

/// `hullctl console POD`: prints the log from its oldest held line, then, with `follow`,
/// what comes next until interrupted (or the guest goes away).
pub(crate) async fn console(pod: &Pod, source: LogSource, follow: bool) -> anyhow::Result<i32> {
    let client = connect(pod).await.context(
        "the guest's agent does not answer (a guest that crashed left the end of its kernel \
         log in the pod's hull-vmm log, vmm.log)",
    )?;
    let mut cursor = 0;
    loop {
        let (lines, next, dropped) = page(&client, source, cursor).await?;
        if dropped > 0 {
            println!("[hullctl: {dropped} lines were lost before this one]");
        }
        let full = lines.len() >= usize::try_from(PAGE).unwrap_or(usize::MAX);
        for l in lines {
            println!("{l}");
        }
        // A guest that repeats a cursor must not keep this loop on one full page forever.
        if full && next <= cursor {
            bail!("the agent's log cursor went back ({cursor} to {next})");
        }
        cursor = next;
        if !full {
            if !follow {
                return Ok(0);
            }
            tokio::time::sleep(FOLLOW_EVERY).await;
        }
    }
}

/// One page of the log from `cursor`: its lines as printed, the next cursor, lines lost.
async fn page(
    client: &GuestClient,
    source: LogSource,
    cursor: u64,
) -> anyhow::Result<(Vec<String>, u64, u64)> {
    match source {
        LogSource::Kernel => {
            let req = GetKernelLogRequest {
                cursor,
                max_records: PAGE,
                ..Default::default()
            };
            let r = client
                .get_kernel_log(ctx(), &req)
                .await
                .context("Guest.GetKernelLog")?;
            let lines = r
                .records
                .iter()
                .map(|k| {
                    format!(
                        "[{:5}.{:06}] {}",
                        k.timestamp_us / 1_000_000,
                        k.timestamp_us % 1_000_000,
                        printable(&k.message)
                    )
                })
                .collect();
            Ok((lines, r.next_cursor, r.dropped))
        }
        LogSource::Agent => {
            let req = GetLogsRequest {
                cursor,
                max_lines: PAGE,
                ..Default::default()
            };
            let r = client
                .get_logs(ctx(), &req)
                .await
                .context("Guest.GetLogs")?;
            let lines = r
                .lines
                .iter()
                .map(|l| {
                    let level = l.level.enum_value().map_or("?", |v| match v {
                        hull_proto::guest::log_line::Level::ERROR => "ERROR",
                        hull_proto::guest::log_line::Level::WARN => "WARN",
                        hull_proto::guest::log_line::Level::INFO => "INFO",
                        hull_proto::guest::log_line::Level::DEBUG => "DEBUG",
                        hull_proto::guest::log_line::Level::TRACE => "TRACE",
                        hull_proto::guest::log_line::Level::UNSPECIFIED => "-",
                    });
                    format!(
                        "{} {level:>5} {}: {}",
                        timestamp(l.timestamp_ns),
                        printable(&l.target),
                        printable(&l.message)
                    )
                })
                .collect();
            Ok((lines, r.next_cursor, r.dropped))
        }
    }
}

/// Unix nanoseconds as `SECONDS.MILLIS` (the guest's clock; no time zone to get wrong).
fn timestamp(ns: i64) -> String {
    format!(
        "{}.{:03}",
        ns.div_euclid(1_000_000_000),
        ns.rem_euclid(1_000_000_000) / 1_000_000
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use hull_proto::guest::{Pressure, RpcLatency};

    fn rpc(method: &str, buckets: Vec<u64>, count: u64) -> RpcLatency {
        RpcLatency {
            method: method.into(),
            count,
            errors: 0,
            sum_seconds: 0.5,
            bucket_counts: buckets,
            ..Default::default()
        }
    }

    #[test]
    fn a_guests_stats_are_checked_before_use() {
        let r = GuestStatsResponse {
            pressure: vec![
                Pressure {
                    resource: "memory".into(),
                    ..Default::default()
                },
                Pressure {
                    resource: "evil\"} 1\nx".into(),
                    ..Default::default()
                },
            ],
            rpc_bucket_bounds_seconds: vec![0.001, 0.01],
            rpc: vec![
                rpc("Containers/CreateContainer", vec![1, 2], 3),
                rpc("bad\"name/x", vec![1, 2], 3),
                rpc("Guest/GetLogs", vec![1], 1),
                rpc("Guest/GuestStats", vec![2, 1], 2),
                rpc("Guest/GetKernelLog", vec![1, 5], 2),
            ],
            ..Default::default()
        };
        let c = checked(r).expect("usable");
        assert_eq!(c.pressure.len(), 1);
        let names: Vec<&str> = c.rpc.iter().map(|m| m.method.as_str()).collect();
        assert_eq!(names, ["Containers/CreateContainer"]);

        for bounds in [vec![0.1, 0.01], vec![f64::NAN], vec![0.0], vec![1.0; 40]] {
            let r = GuestStatsResponse {
                rpc_bucket_bounds_seconds: bounds.clone(),
                ..Default::default()
            };
            assert!(checked(r).is_err(), "{bounds:?}");
        }
    }

    #[test]
    fn a_guests_text_cannot_drive_the_terminal() {
        assert_eq!(
            printable("ok \u{1b}]0;owned\u{7}\r\nnext\u{9b}2J"),
            "ok \\x1b]0;owned\\x07\\x0d\\x0anext\\x9b2J"
        );
        assert_eq!(printable("virtio_net: ünïcode"), "virtio_net: ünïcode");
        assert_eq!(timestamp(1_700_000_000_123_456_789), "1700000000.123");
    }
}
