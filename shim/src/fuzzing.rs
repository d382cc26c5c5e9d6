//! What the fuzz targets (`fuzz/`, built with `--cfg fuzzing`) feed the shim: agent replies
//! as bytes, decoded as the ttrpc client decodes them and turned into what containerd gets
//! or what the log gets, through the same functions the task handlers and the OOM poller
//! call (`bounds.rs`, `stats.rs`, `typeurl.rs`, `errors.rs`). Everything else stays
//! crate-private.

use std::time::{Duration, Instant, SystemTime};

use containerd_shim::protos::events::task::{TaskExit, TaskOOM};
use hull_proto::containers::StatsContainerResponse;
use hull_proto::events::GetOomEventResponse;
use hull_proto::processes::WaitProcessResponse;
use protobuf::Message;

use crate::bounds::{self, Bucket, Clip, LogLimit, Verdict};
use crate::errors::ShimError;
use crate::pod::UNKNOWN_EXIT_STATUS;
use crate::{stats, timestamp, typeurl};

/// A StatsContainer reply → the `io.containerd.cgroups.v2.Metrics` Any of Task.Stats
/// (task.rs), which containerd decodes again. `None`: the bytes are no reply.
pub fn stats_reply(bytes: &[u8]) -> Option<()> {
    let reply = StatsContainerResponse::parse_from_bytes(bytes).ok()?;
    let metrics = stats::to_metrics(&reply.stats.into_option().unwrap_or_default());
    round_trip(
        typeurl::CGROUPS_V2,
        &metrics,
        "io.containerd.cgroups.v2.Metrics",
    );
    Some(())
}

/// An error status the agent answered an RPC with → the status containerd gets
/// (errors.rs): the agent's NOT_FOUND, ALREADY_EXISTS, INVALID_ARGUMENT and
/// FAILED_PRECONDITION pass through, its message is kept.
pub fn error_reply(bytes: &[u8]) -> Option<()> {
    let status = ttrpc::proto::Status::parse_from_bytes(bytes).ok()?;
    let (code, message) = (status.code(), status.message.clone());
    let err = ShimError::agent("fuzz")(ttrpc::Error::RpcStatus(status));
    let mapped = err.code();
    let out = ttrpc::Error::from(err);
    let ttrpc::Error::RpcStatus(out) = out else {
        panic!("the shim answers containerd with a status");
    };
    assert_eq!(out.code(), mapped);
    assert_eq!(mapped, code, "the agent's code passes through");
    assert!(
        out.message.ends_with(&message),
        "the agent's message is kept"
    );
    Some(())
}

/// An error status as containerd finally gets it: through a handler's `out` (task.rs),
/// which clips the message ([`bounds::clip_status`]), and as a log line ([`bounds::clip_err`],
/// what the wait, output and OOM loops log). The code survives, the message keeps its start
/// and is at most 4 KiB (with a note of the whole length), the log line at most 512 bytes.
pub fn error_reply_clipped(bytes: &[u8]) -> Option<()> {
    let status = ttrpc::proto::Status::parse_from_bytes(bytes).ok()?;
    let code = status.code();
    let err = ShimError::agent("fuzz")(ttrpc::Error::RpcStatus(status));
    let line = bounds::clip_err(&err);
    assert!(
        line.len() <= bounds::MAX_LOGGED + NOTE,
        "{} bytes logged",
        line.len()
    );
    let ttrpc::Error::RpcStatus(full) = ttrpc::Error::from(err) else {
        panic!("the shim answers containerd with a status");
    };
    let ttrpc::Error::RpcStatus(out) = bounds::clip_status(ttrpc::Error::RpcStatus(full.clone()))
    else {
        panic!("a clipped status is a status");
    };
    assert_eq!(out.code(), code, "the agent's code passes through");
    assert!(
        out.message.len() <= MAX_STATUS_MESSAGE + NOTE,
        "{} bytes",
        out.message.len()
    );
    let kept = out.message.split('…').next().unwrap_or_default();
    assert!(
        full.message.starts_with(kept),
        "the message keeps its start"
    );
    Some(())
}

/// Bytes of the note a clipped string ends with (`… (N bytes)`).
const NOTE: usize = 32;
/// bounds.rs's cap on a status message (private there).
const MAX_STATUS_MESSAGE: usize = 4096;

/// A WaitProcess reply → the exit status of `/tasks/exit`, Wait and Delete (pod/mod.rs
/// `watch_exit`): the agent's `status`, or 255 when it is missing or no process's status
/// ([`bounds::exit_status`]); the event carries the shim's own reap time, never the guest's.
pub fn wait_reply(bytes: &[u8]) -> Option<()> {
    let r = WaitProcessResponse::parse_from_bytes(bytes).ok()?;
    let reported = r.exit.as_ref().map_or(UNKNOWN_EXIT_STATUS, |e| e.status);
    let status = crate::pod::reported_status(&r).unwrap_or(UNKNOWN_EXIT_STATUS);
    if reported <= 255 {
        assert_eq!(status, reported, "a possible status passes through");
    } else {
        assert_eq!(
            status, UNKNOWN_EXIT_STATUS,
            "{reported} is no process's status"
        );
    }
    let ev = TaskExit {
        container_id: "c".into(),
        id: "c".into(),
        pid: 1,
        exit_status: status,
        exited_at: Some(timestamp::of(SystemTime::now())).into(),
        ..Default::default()
    };
    round_trip(typeurl::EVENTS, &ev, "containerd.events.TaskExit");
    Some(())
}

/// A GetOomEvent reply → what the OOM poller (pod/oom.rs) logs about it and, for an id it
/// accepts ([`crate::pod::oom::accepted`]: at most `MAX_ID_LEN` bytes and one of the pod's,
/// here `c1` and `c2`), the `/tasks/oom` event: the logged id is at most 512 bytes and starts
/// like the real one; the event names the container unchanged. See `oom_rates` for its pacing.
pub fn oom_reply(bytes: &[u8]) -> Option<()> {
    let r = GetOomEventResponse::parse_from_bytes(bytes).ok()?;
    let id = r.container_id;
    let members = |c: &str| c == "c1" || c == "c2";
    assert_eq!(
        crate::pod::oom::accepted(&id, &members),
        id == "c1" || id == "c2",
        "only the pod's own containers"
    );
    let logged = Clip(&id).to_string();
    assert!(
        logged.len() <= bounds::MAX_LOGGED + NOTE,
        "{} bytes logged",
        logged.len()
    );
    assert!(id.starts_with(logged.split('…').next().unwrap_or_default()));
    if id.len() <= bounds::MAX_ID_LEN {
        let ev = TaskOOM {
            container_id: id,
            ..Default::default()
        };
        round_trip(typeurl::EVENTS, &ev, "containerd.events.TaskOOM");
    }
    Some(())
}

/// The OOM poller's pacing of what the agent can repeat at will, with the arrival times
/// the fuzzer picks (`bytes`: pairs of a gap in milliseconds and whether the event is
/// forwarded or refused): forwarded events take at most `burst` tokens plus one per
/// `every` since the start ([`Bucket`]), a token is there when `wait` says so, and log lines
/// ([`LogLimit`]) number at most two bursts in any window, with every occurrence either
/// logged or counted in a later line's `suppressed` or still pending.
pub fn oom_rates(bytes: &[u8]) {
    const BURST: u32 = 4;
    const EVERY: Duration = Duration::from_millis(100);
    const WINDOW: Duration = Duration::from_secs(1);
    let t0 = Instant::now();
    let mut bucket = Bucket::new(BURST, EVERY, t0);
    let mut log = LogLimit::new(BURST, WINDOW, t0);
    let (mut now, mut taken, mut checks, mut reported) = (t0, 0u64, 0u64, 0u64);
    let mut log_times: Vec<Instant> = Vec::new();
    for pair in bytes.chunks_exact(2) {
        now += Duration::from_millis(u64::from(pair[0]) * u64::from(pair[0]));
        if pair[1] & 1 == 0 {
            let ready = bucket.wait(now).is_zero();
            let got = bucket.take(now);
            assert_eq!(ready, got, "wait() said {ready}, take() gave {got}");
            taken += u64::from(got);
            let earned = (now - t0).as_nanos() / EVERY.as_nanos();
            let allowed = u128::from(BURST) + earned;
            assert!(
                u128::from(taken) <= allowed,
                "{taken} events forwarded, {allowed} allowed"
            );
        } else {
            checks += 1;
            if let Verdict::Log { suppressed } = log.check(now) {
                reported += 1 + suppressed;
                log_times.push(now);
                let recent = log_times.iter().filter(|t| now - **t < WINDOW).count();
                assert!(recent <= 2 * BURST as usize, "{recent} lines in a window");
            }
            assert!(reported <= checks, "{reported} reported of {checks}");
        }
    }
}

/// A ListPids reply → the pids of Task.Pids ([`crate::pod::control::bounded_pids`]): a list a
/// pod VM could hold passes unchanged, a longer one is an error, never copied on.
pub fn pids_reply(bytes: &[u8]) -> Option<()> {
    let r = hull_proto::containers::ListPidsResponse::parse_from_bytes(bytes).ok()?;
    let n = r.pids.len();
    match crate::pod::control::bounded_pids("c", r.pids.clone()) {
        Ok(p) => assert_eq!(p, r.pids, "a list within the bound passes unchanged"),
        Err(e) => assert!(
            matches!(e, ShimError::FailedPrecondition(_)) && n > bounds::MAX_PIDS,
            "{n} pids refused: {e}"
        ),
    }
    Some(())
}

/// What the shim sends containerd for `msg`: packed as an Any of `package` with the type URL
/// containerd expects (`type_url`), and decoded by containerd into the same message.
fn round_trip<M: Message + PartialEq + std::fmt::Debug>(package: &str, msg: &M, type_url: &str) {
    let any = typeurl::pack(package, msg).expect("a message always encodes");
    assert_eq!(any.type_url, type_url);
    let back = M::parse_from_bytes(&any.value).expect("containerd decodes the message");
    assert_eq!(&back, msg, "the message survives the trip");
}
