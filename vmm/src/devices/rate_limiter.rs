//! Token buckets that hold one I/O stream of a device (a NIC direction, a disk) to a rate, so
//! one VM's I/O cannot starve another's (Firecracker's rate limiters are the model).
//!
//! A request may start while every bucket holds a token; it is then charged in full, so a
//! bucket can go into debt by up to one request (a frame is only known once read from the tap,
//! and reading it into a bounce buffer to weigh it first would cost a copy). Debt is paid before
//! anything else goes, so over any interval the stream moves at most
//! `burst + one_time + rate × interval` plus one request. A throttled device stops taking
//! descriptors (nothing is dropped) and arms its timer fd for the moment the buckets will
//! allow the next request; the event loop wakes it then, with no busy-waiting.

use std::time::{Duration, Instant};

use hull_contract::vmm_args::{Bucket, IoLimit};
use serde::{Deserialize, Serialize};
use vmm_sys_util::timerfd::TimerFd;

const NANOS_PER_SEC: u128 = 1_000_000_000;

/// The devices' clock for their limiters. Tests move it by hand ([`test_clock`]), so a device
/// test runs seconds of throttled I/O at once and its figures are exact, not timed.
pub(crate) fn now() -> Instant {
    #[cfg(test)]
    return test_clock::now();
    #[cfg(not(test))]
    Instant::now()
}

/// A clock per test thread that moves only when told to.
#[cfg(test)]
pub(crate) mod test_clock {
    use std::cell::Cell;
    use std::time::{Duration, Instant};

    thread_local! {
        static START: Instant = Instant::now();
        static OFFSET: Cell<Duration> = const { Cell::new(Duration::ZERO) };
    }

    pub(crate) fn now() -> Instant {
        START.with(|s| *s + OFFSET.with(Cell::get))
    }

    pub(crate) fn advance(d: Duration) {
        OFFSET.with(|o| o.set(o.get() + d));
    }

    /// Time since the thread's clock started.
    pub(crate) fn elapsed() -> Duration {
        OFFSET.with(Cell::get)
    }
}

/// One bucket's configuration, as the API and `GET /vm` show it (the command line writes the
/// same as `RATE[:BURST[:ONE_TIME]]`, [`Bucket`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BucketConfig {
    /// Tokens (bytes or operations) per second, > 0.
    pub rate: u64,
    /// Size of the bucket; default a tenth of a second's worth, at least 1.
    #[serde(default)]
    pub burst: Option<u64>,
    /// Tokens on top of `burst` at start, never refilled.
    #[serde(default)]
    pub one_time_burst: u64,
}

impl From<Bucket> for BucketConfig {
    fn from(b: Bucket) -> Self {
        BucketConfig {
            rate: b.rate,
            burst: b.burst,
            one_time_burst: b.one_time,
        }
    }
}

impl BucketConfig {
    fn bucket(&self) -> Bucket {
        Bucket {
            rate: self.rate,
            burst: self.burst,
            one_time: self.one_time_burst,
        }
    }

    pub(crate) fn validate(&self, what: &str) -> Result<(), String> {
        if self.rate == 0 || self.burst == Some(0) {
            return Err(format!("{what}: rate and burst must be > 0"));
        }
        Ok(())
    }
}

/// The limits on one I/O stream: bytes and operations; `None` is unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitConfig {
    #[serde(default)]
    pub bytes: Option<BucketConfig>,
    #[serde(default)]
    pub ops: Option<BucketConfig>,
}

impl From<IoLimit> for LimitConfig {
    fn from(l: IoLimit) -> Self {
        LimitConfig {
            bytes: l.bytes.map(Into::into),
            ops: l.ops.map(Into::into),
        }
    }
}

impl LimitConfig {
    pub(crate) fn validate(&self, what: &str) -> Result<(), String> {
        for (name, b) in [("bytes", &self.bytes), ("ops", &self.ops)] {
            if let Some(b) = b {
                b.validate(&format!("{what} {name}"))?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
impl LimitConfig {
    /// Only bytes limited (the device tests' shorthand).
    pub(crate) fn bytes_only(rate: u64, burst: u64, one_time_burst: u64) -> Self {
        LimitConfig {
            bytes: Some(BucketConfig {
                rate,
                burst: Some(burst),
                one_time_burst,
            }),
            ops: None,
        }
    }

    /// Only operations limited.
    pub(crate) fn ops_only(rate: u64, burst: u64, one_time_burst: u64) -> Self {
        LimitConfig {
            bytes: None,
            ops: LimitConfig::bytes_only(rate, burst, one_time_burst).bytes,
        }
    }
}

/// A token bucket whose balance may go negative (debt) by one request.
#[derive(Debug, Clone)]
struct TokenBucket {
    rate: u64,
    size: i64,
    balance: i64,
    /// Refill in units of token-nanoseconds not yet worth a whole token, so slow rates do not
    /// lose time to rounding.
    carry: u128,
    last: Instant,
}

impl TokenBucket {
    fn new(b: Bucket, now: Instant) -> Self {
        let size = i64::try_from(b.burst()).unwrap_or(i64::MAX);
        let start = size.saturating_add(i64::try_from(b.one_time).unwrap_or(i64::MAX));
        TokenBucket {
            rate: b.rate,
            size,
            balance: start,
            carry: 0,
            last: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last).as_nanos();
        self.last = now;
        if self.balance >= self.size {
            // Full (or above, on the one-time burst): nothing to add, nothing to carry.
            self.carry = 0;
            return;
        }
        let total = elapsed
            .saturating_mul(u128::from(self.rate))
            .saturating_add(self.carry);
        let add = total / NANOS_PER_SEC;
        self.carry = total % NANOS_PER_SEC;
        let room = u128::try_from(self.size.saturating_sub(self.balance)).unwrap_or(0);
        if add >= room {
            self.balance = self.size;
            self.carry = 0;
        } else {
            // add < room <= i64::MAX - min balance: fits.
            self.balance += i64::try_from(add).unwrap_or(0);
        }
    }

    /// How long until the balance is positive again (zero if it is).
    fn wait(&self) -> Duration {
        if self.balance > 0 {
            return Duration::ZERO;
        }
        let need = u128::from(self.balance.unsigned_abs()) + 1;
        let nanos = (need * NANOS_PER_SEC)
            .saturating_sub(self.carry)
            .div_ceil(u128::from(self.rate));
        Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
    }

    fn charge(&mut self, n: u64) {
        self.balance = self
            .balance
            .saturating_sub(i64::try_from(n).unwrap_or(i64::MAX));
    }
}

/// The buckets of one I/O stream and the timer that wakes its device when they refill.
#[derive(Debug)]
pub struct RateLimiter {
    bytes: Option<TokenBucket>,
    ops: Option<TokenBucket>,
    timer: TimerFd,
    /// The timer is set: the device waits for it and takes nothing before.
    armed: bool,
    /// What the timer was last set to.
    armed_for: Duration,
}

impl RateLimiter {
    /// An unlimited stream (its timer exists so limits can be set at runtime, when the VMM
    /// may no longer create file descriptors).
    pub fn new(config: LimitConfig) -> std::io::Result<Self> {
        let mut l = RateLimiter {
            bytes: None,
            ops: None,
            timer: TimerFd::new().map_err(std::io::Error::from)?,
            armed: false,
            armed_for: Duration::ZERO,
        };
        l.set(config, now());
        Ok(l)
    }

    /// Replaces the limits; the new buckets start full. A device waiting on the old limits
    /// is woken at once ([`RateLimiter::timer`] fires) and asks again.
    pub fn set(&mut self, config: LimitConfig, now: Instant) {
        self.bytes = config.bytes.map(|b| TokenBucket::new(b.bucket(), now));
        self.ops = config.ops.map(|b| TokenBucket::new(b.bucket(), now));
        if self.armed {
            self.arm(Duration::from_nanos(1));
        }
    }

    /// The fd the event loop watches; readable when a throttled device may go on.
    pub fn timer(&self) -> &TimerFd {
        &self.timer
    }

    /// Whether a request may start now. If not, the timer is armed for when one may, and
    /// the device must take nothing until [`RateLimiter::expired`].
    pub fn admit(&mut self, now: Instant) -> bool {
        if self.armed {
            return false;
        }
        let mut wait = Duration::ZERO;
        for b in [&mut self.bytes, &mut self.ops].into_iter().flatten() {
            b.refill(now);
            wait = wait.max(b.wait());
        }
        if wait.is_zero() {
            return true;
        }
        self.arm(wait);
        false
    }

    /// Charges a request that was admitted: one operation of `bytes` bytes.
    pub fn charge(&mut self, bytes: u64) {
        if let Some(b) = &mut self.bytes {
            b.charge(bytes);
        }
        if let Some(b) = &mut self.ops {
            b.charge(1);
        }
    }

    /// What the event loop does when a throttled device's timer fires, in a test: the clock
    /// moves to that moment; returns how far it moved.
    #[cfg(test)]
    pub(crate) fn fire_now(&mut self) -> Duration {
        assert!(self.armed, "not throttled");
        test_clock::advance(self.armed_for);
        self.timer.clear().expect("clear the timer");
        self.armed = false;
        self.armed_for
    }

    /// The timer fired (call when its fd is readable): the device may try again.
    pub fn expired(&mut self) {
        // A blocking read of a timer fd that epoll found readable returns at once.
        let _ = self.timer.wait();
        self.armed = false;
    }

    /// Whether the device is waiting for the timer.
    pub fn throttled(&self) -> bool {
        self.armed
    }

    fn arm(&mut self, after: Duration) {
        // timerfd_settime fails only on bad arguments: a duration this small is not one.
        // Without the timer the device would wait forever, so fail open instead.
        let after = after.max(Duration::from_nanos(1));
        match self.timer.reset(after, None) {
            Ok(()) => {
                self.armed = true;
                self.armed_for = after;
            }
            Err(e) => {
                crate::guest_log::line(format_args!(
                    "rate limiter: cannot arm its timer ({e}); the stream goes unlimited"
                ));
                self.bytes = None;
                self.ops = None;
                self.armed = false;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bucket(rate: u64, burst: u64, one_time: u64) -> BucketConfig {
        BucketConfig {
            rate,
            burst: Some(burst),
            one_time_burst: one_time,
        }
    }

    fn limiter(cfg: LimitConfig, t0: Instant) -> RateLimiter {
        let mut l = RateLimiter::new(LimitConfig::default()).unwrap();
        l.set(cfg, t0);
        l
    }

    impl RateLimiter {
        /// The timer fired: what it was set to.
        fn fire(&mut self) -> Duration {
            assert!(self.armed, "not throttled");
            self.timer.clear().unwrap();
            self.armed = false;
            self.armed_for
        }
    }

    /// Runs a stream that always has `req` bytes to send for `secs` seconds of simulated
    /// time, each wait exactly as long as the timer was set; returns (bytes, requests).
    fn simulate(cfg: LimitConfig, req: u64, secs: u64) -> (u64, u64) {
        let t0 = Instant::now();
        let mut l = limiter(cfg, t0);
        let mut now = t0;
        let end = t0 + Duration::from_secs(secs);
        let (mut bytes, mut reqs) = (0, 0);
        while now < end {
            if l.admit(now) {
                l.charge(req);
                bytes += req;
                reqs += 1;
            } else {
                now += l.fire();
            }
        }
        (bytes, reqs)
    }

    #[test]
    fn bytes_flow_at_the_rate_plus_the_burst() {
        let cfg = LimitConfig {
            bytes: Some(bucket(10_000_000, 1_000_000, 0)),
            ops: None,
        };
        let (bytes, _) = simulate(cfg, 65_536, 3);
        let want = 1_000_000 + 30_000_000;
        assert!(
            bytes.abs_diff(want) <= 65_536,
            "{bytes} bytes in 3 s, want ~{want}"
        );
    }

    #[test]
    fn ops_flow_at_the_rate_and_the_one_time_burst_goes_first() {
        let cfg = LimitConfig {
            bytes: None,
            ops: Some(bucket(1000, 10, 500)),
        };
        let (_, reqs) = simulate(cfg, 4096, 2);
        // 10 + 500 at once, then 1000/s.
        assert!(reqs.abs_diff(2510) <= 1, "{reqs} requests in 2 s");
    }

    #[test]
    fn the_slower_bucket_decides() {
        let cfg = LimitConfig {
            bytes: Some(bucket(1_000_000, 1, 0)),
            ops: Some(bucket(1_000_000, 1, 0)),
        };
        // Bytes allow 100 requests of 10 kB a second, ops a million.
        let (_, reqs) = simulate(cfg, 10_000, 2);
        assert!(reqs.abs_diff(200) <= 1, "{reqs} requests");
    }

    #[test]
    fn debt_is_paid_before_the_next_request() {
        let t0 = Instant::now();
        let mut l = limiter(
            LimitConfig {
                bytes: Some(bucket(1000, 100, 0)),
                ops: None,
            },
            t0,
        );
        assert!(l.admit(t0));
        l.charge(1100); // 1000 into debt: 1001 tokens to a positive balance, at 1000/s
        assert!(!l.admit(t0));
        assert_eq!(l.fire(), Duration::from_millis(1001));
        assert!(!l.admit(t0 + Duration::from_millis(1000)));
        l.fire();
        assert!(l.admit(t0 + Duration::from_millis(1001)));
    }

    #[test]
    fn slow_rates_do_not_lose_time_to_rounding() {
        // 3 tokens a second, looked at every 100 ms: each look adds 0.3 token, which must be
        // carried, not rounded away. The bucket is large and starts empty, so it never fills
        // (a full bucket rightly wastes what would overflow it).
        let t0 = Instant::now();
        let mut l = limiter(
            LimitConfig {
                bytes: None,
                ops: Some(bucket(3, 100, 0)),
            },
            t0,
        );
        l.ops.as_mut().unwrap().charge(100);
        let mut reqs = 0;
        for i in 1..=100u64 {
            if l.throttled() {
                l.fire();
            }
            if l.admit(t0 + Duration::from_millis(100 * i)) {
                l.charge(0);
                reqs += 1;
            }
        }
        assert_eq!(reqs, 30, "3/s for 10 s");
    }

    #[test]
    fn unlimited_admits_everything_and_never_arms() {
        let mut l = RateLimiter::new(LimitConfig::default()).unwrap();
        let now = Instant::now();
        for _ in 0..10_000 {
            assert!(l.admit(now));
            l.charge(u64::MAX);
        }
        assert!(!l.throttled());
    }

    #[test]
    fn new_limits_wake_a_throttled_device() {
        let t0 = Instant::now();
        let mut l = limiter(
            LimitConfig {
                bytes: None,
                ops: Some(bucket(1, 1, 0)),
            },
            t0,
        );
        assert!(l.admit(t0));
        l.charge(1);
        assert!(!l.admit(t0));
        assert_eq!(l.armed_for, Duration::from_secs(1));
        l.set(LimitConfig::default(), t0);
        // The timer is re-armed to fire at once; after it everything goes.
        assert_eq!(l.armed_for, Duration::from_nanos(1));
        l.expired();
        assert!(l.admit(t0));
    }

    #[test]
    fn huge_values_saturate_instead_of_overflowing() {
        let t0 = Instant::now();
        let mut l = limiter(
            LimitConfig {
                bytes: Some(bucket(u64::MAX, u64::MAX, u64::MAX)),
                ops: Some(bucket(1, 1, 0)),
            },
            t0,
        );
        assert!(l.admit(t0));
        l.charge(u64::MAX);
        // The byte bucket is empty but refills in no time; the op bucket needs a second.
        assert!(!l.admit(t0));
        assert_eq!(l.fire(), Duration::from_secs(1));
        assert!(l.admit(t0 + Duration::from_secs(1 << 30)));
    }
}
