//! What a hostile guest agent can make the shim hold, log or forward (DESIGN §2 shim/). Every
//! ttrpc reply from the guest is untrusted: the shim bounds the strings it keeps or logs, the
//! counts it converts, the rate at which it forwards events to containerd, and the values it
//! passes on as exit statuses.
//!
//! ttrpc 0.10's client already refuses a reply frame longer than 4 MiB
//! (`ttrpc::proto::MESSAGE_LENGTH_MAX`) from its header, before allocating, and discards its
//! body in 4 KiB reads; a reply within that size is decoded whole, so a repeated field can
//! still become tens of bytes of memory per wire byte until the shim drops it.

use std::fmt;
use std::time::{Duration, Instant};

/// containerd's identifiers (`identifiers.Validate`) are at most 76 bytes: a longer container
/// id from the agent cannot name one of the pod's containers.
pub(crate) const MAX_ID_LEN: usize = 76;
/// Bytes of an agent-supplied string (an id, an error message) that reach a log line.
pub(crate) const MAX_LOGGED: usize = 512;
/// Bytes of an error message that reach containerd (which logs it and, under CRI, hands it
/// to the kubelet): room for a cause chain, not for a guest's megabyte.
const MAX_STATUS_MESSAGE: usize = 4096;
/// The largest exit status a process can have (`code`, or 128 + signal ≤ 128 + 64 in Linux).
const MAX_EXIT_STATUS: u32 = 255;
/// Pids a container's ListPids may return: the guest's `pid_max` for a small VM is 32768.
pub(crate) const MAX_PIDS: usize = 32768;
/// Network interfaces and block devices a stats reply may list (a pod VM has ≤ 3 NICs and
/// lo, and a handful of virtio disks).
pub(crate) const MAX_STAT_ENTRIES: usize = 64;
/// Linux interface names are at most 15 bytes (IFNAMSIZ - 1).
pub(crate) const MAX_IFNAME: usize = 15;

/// `s` for a log line: at most [`MAX_LOGGED`] bytes, with how long the whole was when it was
/// cut.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Clip<'a>(pub(crate) &'a str);

impl fmt::Display for Clip<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&clip(self.0, MAX_LOGGED))
    }
}

fn clip(s: &str, max: usize) -> std::borrow::Cow<'_, str> {
    if s.len() <= max {
        return s.into();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} bytes)", &s[..end], s.len()).into()
}

/// An error on its way to containerd, its message clipped to [`MAX_STATUS_MESSAGE`] bytes:
/// the agent's part of it is the guest's to choose.
pub(crate) fn clip_status(e: ttrpc::Error) -> ttrpc::Error {
    match e {
        ttrpc::Error::RpcStatus(mut s) if s.message.len() > MAX_STATUS_MESSAGE => {
            s.message = clip(&s.message, MAX_STATUS_MESSAGE).into_owned();
            ttrpc::Error::RpcStatus(s)
        }
        other => other,
    }
}

/// An error (from the agent, whose message it may carry) clipped for a log line.
pub(crate) fn clip_err(e: &dyn fmt::Display) -> String {
    Clip(&e.to_string()).to_string()
}

/// The exit status the agent reports, as containerd gets it: anything above 255 cannot be a
/// process's status and is reported as the unknown status 255 (`UNKNOWN_EXIT_STATUS`).
pub(crate) fn exit_status(reported: u32) -> Option<u32> {
    (reported <= MAX_EXIT_STATUS).then_some(reported)
}

/// A token bucket: `burst` at once, then one per `every`.
#[derive(Debug)]
pub(crate) struct Bucket {
    burst: u32,
    every: Duration,
    tokens: u32,
    last: Instant,
}

impl Bucket {
    pub(crate) fn new(burst: u32, every: Duration, now: Instant) -> Self {
        Bucket {
            burst,
            every,
            tokens: burst,
            last: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last);
        let n = elapsed.as_nanos() / self.every.as_nanos().max(1);
        if n > 0 {
            let n = u32::try_from(n).unwrap_or(u32::MAX);
            self.tokens = self.tokens.saturating_add(n).min(self.burst);
            // Keep the remainder, so a steady stream gets exactly one per `every`.
            self.last += self.every * n.min(self.burst);
            if self.tokens == self.burst {
                self.last = now;
            }
        }
    }

    /// Takes a token if there is one.
    pub(crate) fn take(&mut self, now: Instant) -> bool {
        self.refill(now);
        if self.tokens == 0 {
            return false;
        }
        self.tokens -= 1;
        true
    }

    /// How long from `now` until a token is there.
    pub(crate) fn wait(&mut self, now: Instant) -> Duration {
        self.refill(now);
        if self.tokens > 0 {
            Duration::ZERO
        } else {
            (self.last + self.every).saturating_duration_since(now)
        }
    }
}

/// Log lines about something the agent can repeat at will: `burst` per `window`, then one
/// summary of how many were left out when the window ends.
#[derive(Debug)]
pub(crate) struct LogLimit {
    burst: u32,
    window: Duration,
    start: Instant,
    logged: u32,
    suppressed: u64,
}

/// What to do with one more occurrence.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Log it; `suppressed` occurrences before it were not logged.
    Log {
        suppressed: u64,
    },
    Suppress,
}

impl LogLimit {
    pub(crate) fn new(burst: u32, window: Duration, now: Instant) -> Self {
        LogLimit {
            burst,
            window,
            start: now,
            logged: 0,
            suppressed: 0,
        }
    }

    pub(crate) fn check(&mut self, now: Instant) -> Verdict {
        if now.saturating_duration_since(self.start) >= self.window {
            self.start = now;
            self.logged = 0;
        }
        if self.logged >= self.burst {
            self.suppressed += 1;
            return Verdict::Suppress;
        }
        self.logged += 1;
        Verdict::Log {
            suppressed: std::mem::take(&mut self.suppressed),
        }
    }

    /// Occurrences not logged since the last line.
    #[cfg(test)]
    pub(crate) fn suppressed(&self) -> u64 {
        self.suppressed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clip_cuts_long_strings_on_a_char_boundary_and_says_how_long() {
        assert_eq!(Clip("short").to_string(), "short");
        let long = "é".repeat(1 << 19);
        let c = Clip(&long).to_string();
        assert!(c.len() < MAX_LOGGED + 32, "{}", c.len());
        assert!(c.ends_with(&format!("… ({} bytes)", 1 << 20)), "{c}");
    }

    #[test]
    fn status_messages_to_containerd_are_clipped_and_keep_their_code() {
        let long = "x".repeat(1 << 20);
        let e = clip_status(ttrpc::Error::RpcStatus(ttrpc::get_status(
            ttrpc::Code::NOT_FOUND,
            long,
        )));
        let ttrpc::Error::RpcStatus(s) = e else {
            panic!("{e:?}")
        };
        assert_eq!(s.code(), ttrpc::Code::NOT_FOUND);
        assert!(
            s.message.len() < MAX_STATUS_MESSAGE + 32,
            "{}",
            s.message.len()
        );
    }

    #[test]
    fn exit_statuses_above_255_are_unknown() {
        assert_eq!(exit_status(0), Some(0));
        assert_eq!(exit_status(137), Some(137));
        assert_eq!(exit_status(255), Some(255));
        assert_eq!(exit_status(256), None);
        assert_eq!(exit_status(u32::MAX), None);
    }

    #[test]
    fn bucket_gives_a_burst_then_one_per_interval() {
        let t0 = Instant::now();
        let every = Duration::from_millis(100);
        let mut b = Bucket::new(3, every, t0);
        assert!((0..3).all(|_| b.take(t0)));
        assert!(!b.take(t0));
        assert_eq!(b.wait(t0), every);
        assert!(!b.take(t0 + Duration::from_millis(99)));
        assert!(b.take(t0 + every));
        assert!(!b.take(t0 + every));
        // A long pause refills to the burst, not beyond.
        let later = t0 + Duration::from_secs(60);
        assert_eq!((0..10).filter(|_| b.take(later)).count(), 3);
    }

    #[test]
    fn log_limit_logs_a_burst_per_window_and_reports_what_it_left_out() {
        let t0 = Instant::now();
        let w = Duration::from_secs(60);
        let mut l = LogLimit::new(2, w, t0);
        assert_eq!(l.check(t0), Verdict::Log { suppressed: 0 });
        assert_eq!(l.check(t0), Verdict::Log { suppressed: 0 });
        for _ in 0..10_000 {
            assert_eq!(l.check(t0), Verdict::Suppress);
        }
        assert_eq!(l.suppressed(), 10_000);
        assert_eq!(l.check(t0 + w), Verdict::Log { suppressed: 10_000 });
        assert_eq!(l.suppressed(), 0);
    }
}
