//! OOM kills in the guest become containerd's `/tasks/oom`: one long-poll of the agent's
//! `GetOomEvent` at a time, for the whole pod, as long as the pod lives.
//!
//! The agent is not trusted (`bounds.rs`): an event is forwarded only for a container of this
//! pod (by exact id, so an id longer than containerd allows is refused before any lookup), at
//! most [`FORWARD_BURST`] at once and then one per [`FORWARD_EVERY`] (a real event waits for
//! its turn; the agent keeps it meanwhile), and what is refused is counted and logged a few
//! lines per minute. Nothing is kept per event.

use std::sync::Arc;
use std::time::{Duration, Instant};

use containerd_shim::protos::events::task::TaskOOM;
use hull_proto::events::GetOomEventRequest;
use hull_proto::events_ttrpc::EventsClient;

use crate::bounds::{clip_err, Bucket, Clip, LogLimit, Verdict, MAX_ID_LEN};
use crate::events::Events;

/// Whether an OOM event the agent reported for `id` is one to forward: an id containerd could
/// have made, of a container of this pod (`members`). Anything else is the guest's invention.
pub(crate) fn accepted(id: &str, members: &dyn Fn(&str) -> bool) -> bool {
    id.len() <= MAX_ID_LEN && members(id)
}

/// Pause after a failed poll, so a broken agent connection is not spun on.
const RETRY: Duration = Duration::from_secs(1);
/// `/tasks/oom` events forwarded at once; then one per [`FORWARD_EVERY`]. A container that
/// is OOM-killed in a loop restarts far slower than this.
const FORWARD_BURST: u32 = 16;
const FORWARD_EVERY: Duration = Duration::from_millis(100);
/// Log lines per minute about refused events (and about accepted ones).
const LOG_BURST: u32 = 5;
const LOG_WINDOW: Duration = Duration::from_secs(60);

/// Whether a container id names one of the pod's containers now.
pub(super) type Members = Arc<dyn Fn(&str) -> bool + Send + Sync>;

/// Forwarding limits, apart so a test can run them faster than the node does.
#[derive(Debug, Clone, Copy)]
pub(super) struct Limits {
    pub(super) burst: u32,
    pub(super) every: Duration,
}

pub(super) const LIMITS: Limits = Limits {
    burst: FORWARD_BURST,
    every: FORWARD_EVERY,
};

/// Starts polling `agent`; the pod aborts the task at Shutdown.
pub(super) fn spawn(
    agent: ttrpc::asynchronous::Client,
    events: Events,
    members: Members,
    limits: Limits,
) -> tokio::task::JoinHandle<()> {
    let client = EventsClient::new(agent);
    tokio::spawn(async move {
        let now = Instant::now();
        let mut bucket = Bucket::new(limits.burst, limits.every, now);
        let mut accepted_log = LogLimit::new(LOG_BURST, LOG_WINDOW, now);
        let mut refused_log = LogLimit::new(LOG_BURST, LOG_WINDOW, now);
        let mut error_log = LogLimit::new(LOG_BURST, LOG_WINDOW, now);
        loop {
            let req = GetOomEventRequest::default();
            let r = client
                .get_oom_event(ttrpc::context::Context::default(), &req)
                .await;
            let id = match r {
                Ok(r) => r.container_id,
                Err(e) => {
                    if let Verdict::Log { suppressed } = error_log.check(Instant::now()) {
                        tracing::debug!(suppressed, "OOM event poll: {}", clip_err(&e));
                    }
                    tokio::time::sleep(RETRY).await;
                    continue;
                }
            };
            if !accepted(&id, &*members) {
                if let Verdict::Log { suppressed } = refused_log.check(Instant::now()) {
                    tracing::warn!(
                        id = %Clip(&id),
                        suppressed,
                        "OOM event for no container of this pod; dropped"
                    );
                }
                continue;
            }
            let wait = bucket.wait(Instant::now());
            if !wait.is_zero() {
                tokio::time::sleep(wait).await;
            }
            bucket.take(Instant::now());
            if let Verdict::Log { suppressed } = accepted_log.check(Instant::now()) {
                tracing::info!(%id, suppressed, "OOM kill");
            }
            events.send(TaskOOM {
                container_id: id,
                ..Default::default()
            });
        }
    })
}

#[cfg(test)]
mod tests {
    use containerd_shim::protos::protobuf::Message;

    use super::*;
    use crate::fake_peers::{self, Agent, Logs, Script};

    async fn wait_for(sink: &fake_peers::Sink, n: usize, within: Duration) {
        let start = Instant::now();
        while sink.got().len() < n {
            assert!(
                start.elapsed() < within,
                "{} of {n} events",
                sink.got().len()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    fn ids(sink: &fake_peers::Sink) -> Vec<String> {
        sink.got()
            .iter()
            .map(|e| {
                assert_eq!(e.topic, "/tasks/oom");
                TaskOOM::parse_from_bytes(&e.event.value)
                    .unwrap()
                    .container_id
            })
            .collect()
    }

    /// 10 000 OOM events for a container the pod does not have and one with a 1 MiB id:
    /// none reaches containerd, the log gets a handful of short lines, and the real events
    /// behind them still arrive.
    #[tokio::test(flavor = "current_thread")]
    async fn events_for_other_containers_are_dropped_with_bounded_logs() {
        let logs = Logs::default();
        let _guard = logs.capture();
        let dir = tempfile::tempdir().unwrap();
        let (cd, sink, events) = fake_peers::containerd(dir.path()).await;
        // The long one first, so that its (clipped) line is among the few logged.
        let replies = std::iter::once("c1".repeat(1 << 19))
            .chain(std::iter::repeat_n(
                "other-pods-container".to_owned(),
                10_000,
            ))
            .chain(["c1".into(), "c1".into()]);
        let agent = Agent {
            oom: Script::new(replies),
            ..Default::default()
        };
        let (ag, client) = fake_peers::agent(dir.path(), agent).await;
        let members: Members = Arc::new(|id: &str| id == "c1");
        let task = spawn(client, events.clone(), members, LIMITS);

        wait_for(&sink, 2, Duration::from_secs(60)).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(ids(&sink), ["c1", "c1"], "only the pod's container");
        assert_eq!(events.dropped(), 0);
        let text = logs.text();
        let refused = text
            .lines()
            .filter(|l| l.contains("for no container of this pod"))
            .count();
        assert_eq!(refused, LOG_BURST as usize, "{text}");
        assert!(text.len() < 16 * 1024, "{} bytes of log", text.len());
        assert!(
            text.contains("(1048576 bytes)"),
            "the long id is clipped: {text}"
        );
        task.abort();
        fake_peers::stop(ag).await;
        fake_peers::stop(cd).await;
    }

    /// A flood of real OOM events reaches containerd at the configured pace, none lost.
    #[tokio::test(flavor = "current_thread")]
    async fn real_events_are_paced_not_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let (cd, sink, events) = fake_peers::containerd(dir.path()).await;
        let agent = Agent {
            oom: Script::new(std::iter::repeat_n("c1".to_owned(), 40)),
            ..Default::default()
        };
        let (ag, client) = fake_peers::agent(dir.path(), agent).await;
        let limits = Limits {
            burst: 4,
            every: Duration::from_millis(50),
        };
        let start = Instant::now();
        let task = spawn(client, events, Arc::new(|id: &str| id == "c1"), limits);
        wait_for(&sink, 40, Duration::from_secs(20)).await;
        let took = start.elapsed();
        assert!(took >= Duration::from_millis(36 * 50 - 50), "{took:?}");
        assert_eq!(ids(&sink).len(), 40);
        task.abort();
        fake_peers::stop(ag).await;
        fake_peers::stop(cd).await;
    }
}
