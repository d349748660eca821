//! The bounds nmr keeps on what others can make it do, as plain state
//! machines with the clock passed in (so unit tests drive time by hand):
//!
//! - [`Breaker`]: a circuit breaker in front of GitHub. After a failure
//!   (5xx, refused, timed out) nmr stops asking for 1 s, doubling up to
//!   [`Breaker::MAX_BACKOFF`] while failures go on; once the pause is over
//!   exactly one request probes, and the first success closes the circuit.
//!   GitHub is thus asked about once per second at most while it is down,
//!   whatever the request rate.
//! - [`Bucket`]: a token bucket; [`Budgets`] keeps one per client address,
//!   budgeting the GitHub lookups of tokens GitHub has not accepted before
//!   (`auth.github.max_lookups_per_minute`), web-login starts, and S3
//!   lookups of unknown packages (`db.s3.lookups_per_minute`).
//! - [`LogLimiter`]: at most one log line per kind and interval, counting
//!   what it held back, so a flood of bad requests cannot flood the log.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A circuit breaker: closed (calls go through), or open until an instant,
/// then half-open (one probe at a time).
#[derive(Debug, Default)]
pub struct Breaker {
    /// Consecutive failures.
    failures: u32,
    /// While `Some`, calls are refused until this instant.
    open_until: Option<Instant>,
    /// A probe is under way (half-open): others are refused.
    probing: bool,
}

impl Breaker {
    /// The longest pause between probes.
    pub const MAX_BACKOFF: Duration = Duration::from_secs(4);

    /// Whether a call may go out at `now`; `Err(wait)` says how long until
    /// one may. A call let through while open is the probe: report its
    /// outcome with [`Breaker::success`] or [`Breaker::failure`].
    pub fn allow(&mut self, now: Instant) -> Result<(), Duration> {
        match self.open_until {
            None => Ok(()),
            Some(until) if now < until => Err(until - now),
            Some(_) if self.probing => Err(Duration::from_secs(1)),
            Some(_) => {
                self.probing = true;
                Ok(())
            }
        }
    }

    /// A call let through by [`Breaker::allow`] did not go out after all:
    /// the next one may probe instead.
    pub fn cancel_probe(&mut self) {
        self.probing = false;
    }

    /// A call succeeded (GitHub answered, even with a denial): close.
    pub fn success(&mut self) {
        *self = Breaker::default();
    }

    /// A call failed at `now`: open for 1 s, 2 s, 4 s, ... up to
    /// [`Breaker::MAX_BACKOFF`].
    pub fn failure(&mut self, now: Instant) {
        self.failures = self.failures.saturating_add(1);
        let backoff = Duration::from_secs(1 << (self.failures - 1).min(8));
        self.open_until = Some(now + backoff.min(Self::MAX_BACKOFF));
        self.probing = false;
    }
}

/// A token bucket holding at most `per_minute` tokens, refilled at
/// `per_minute` per 60 s.
#[derive(Debug, Clone, Copy)]
pub struct Bucket {
    tokens: f64,
    updated: Instant,
}

impl Bucket {
    /// A full bucket at `now`.
    pub fn full(per_minute: u32, now: Instant) -> Bucket {
        Bucket {
            tokens: per_minute as f64,
            updated: now,
        }
    }

    /// Takes one token at `now`; `Err(wait)` when empty, with the time until
    /// the next token.
    pub fn take(&mut self, per_minute: u32, now: Instant) -> Result<(), Duration> {
        let rate = per_minute as f64 / 60.0;
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        self.tokens = (self.tokens + elapsed * rate).min(per_minute as f64);
        self.updated = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - self.tokens) / rate))
        }
    }
}

/// One [`Bucket`] of `per_minute` per client address, for at most
/// `capacity` addresses (the least recently used are forgotten, and come
/// back with a full bucket).
pub struct Budgets {
    per_minute: u32,
    buckets: quick_cache::sync::Cache<IpAddr, Arc<Mutex<Bucket>>>,
}

impl Budgets {
    /// Budgets of `per_minute` for up to `capacity` addresses.
    pub fn new(per_minute: u32, capacity: usize) -> Budgets {
        Budgets {
            per_minute,
            buckets: quick_cache::sync::Cache::new(capacity),
        }
    }

    /// Takes one token from `client`'s bucket at `now`; `Err(wait)` when it
    /// is empty ([`Bucket::take`]).
    pub fn take(&self, client: IpAddr, now: Instant) -> Result<(), Duration> {
        // One bucket per address even when its first requests race.
        let Ok(bucket) = self.buckets.get_or_insert_with(&client, || {
            Ok::<_, std::convert::Infallible>(Arc::new(Mutex::new(Bucket::full(
                self.per_minute,
                now,
            ))))
        });
        let mut bucket = bucket.lock().unwrap_or_else(|p| p.into_inner());
        bucket.take(self.per_minute, now)
    }
}

/// Lets one log line per kind through per interval.
pub struct LogLimiter {
    interval: Duration,
    /// kind → (when the last line went out, lines held back since).
    kinds: Mutex<BTreeMap<&'static str, (Instant, u64)>>,
}

impl LogLimiter {
    /// A limiter letting one line per kind through every `interval`.
    pub const fn new(interval: Duration) -> LogLimiter {
        LogLimiter {
            interval,
            kinds: Mutex::new(BTreeMap::new()),
        }
    }

    /// Whether a line of `kind` may be logged at `now`: `Some(n)` with the
    /// number of lines held back since the last one, `None` to hold it back.
    pub fn admit(&self, kind: &'static str, now: Instant) -> Option<u64> {
        let mut kinds = self.kinds.lock().unwrap_or_else(|p| p.into_inner());
        match kinds.get_mut(kind) {
            Some((last, held)) if now.saturating_duration_since(*last) < self.interval => {
                *held += 1;
                None
            }
            Some((last, held)) => {
                let n = *held;
                *last = now;
                *held = 0;
                Some(n)
            }
            None => {
                kinds.insert(kind, (now, 0));
                Some(0)
            }
        }
    }
}

/// The process-wide limiter for warnings and errors about requests.
pub static REQUEST_LOG: LogLimiter = LogLimiter::new(Duration::from_secs(10));

/// Logs `message` at `level` unless a line of `kind` went out in the last
/// 10 s; the next admitted line says how many were held back.
pub fn log_limited(level: log::Level, kind: &'static str, message: impl std::fmt::Display) {
    if let Some(held) = REQUEST_LOG.admit(kind, Instant::now()) {
        if held > 0 {
            log::log!(level, "{message} ({held} similar lines held back)");
        } else {
            log::log!(level, "{message}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_breaker_probes_once_per_pause_and_backs_off() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut b = Breaker::default();
        assert!(b.allow(t0).is_ok());
        b.failure(t0);
        assert_eq!(b.allow(t0), Err(s(1)));
        // After the pause: one probe, the rest wait.
        assert!(b.allow(t0 + s(1)).is_ok());
        assert!(b.allow(t0 + s(1)).is_err());
        b.failure(t0 + s(1));
        assert_eq!(b.allow(t0 + s(1)), Err(s(2)));
        assert!(b.allow(t0 + s(3)).is_ok());
        b.failure(t0 + s(3));
        b.failure(t0 + s(3));
        b.failure(t0 + s(3));
        assert_eq!(b.allow(t0 + s(3)), Err(Breaker::MAX_BACKOFF));
        assert!(b.allow(t0 + s(7)).is_ok());
        b.success();
        assert!(b.allow(t0 + s(7)).is_ok());
        assert!(b.allow(t0 + s(7)).is_ok());
    }

    #[test]
    fn buckets_refill_at_their_rate() {
        let t0 = Instant::now();
        let mut b = Bucket::full(120, t0);
        for _ in 0..120 {
            assert!(b.take(120, t0).is_ok());
        }
        let wait = b.take(120, t0).unwrap_err();
        assert_eq!(wait, Duration::from_millis(500));
        assert!(b.take(120, t0 + Duration::from_millis(500)).is_ok());
        assert!(b.take(120, t0 + Duration::from_millis(600)).is_err());
        // Never more than a minute's worth.
        assert!(b.take(120, t0 + Duration::from_secs(3600)).is_ok());
        assert_eq!(b.tokens.floor(), 119.0);
    }

    #[test]
    fn budgets_keep_one_bucket_per_address() {
        let budgets = Budgets::new(2, 10);
        let t0 = Instant::now();
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        assert!(budgets.take(a, t0).is_ok());
        assert!(budgets.take(a, t0).is_ok());
        assert!(
            budgets.take(a, t0).is_err(),
            "two takes empty a bucket of two"
        );
        assert!(budgets.take(b, t0).is_ok(), "another address has its own");
    }

    #[test]
    fn the_log_limiter_admits_one_line_per_interval() {
        let limiter = LogLimiter::new(Duration::from_secs(10));
        let t0 = Instant::now();
        assert_eq!(limiter.admit("503", t0), Some(0));
        assert_eq!(limiter.admit("503", t0 + Duration::from_secs(1)), None);
        assert_eq!(limiter.admit("503", t0 + Duration::from_secs(2)), None);
        assert_eq!(limiter.admit("500", t0), Some(0));
        assert_eq!(limiter.admit("503", t0 + Duration::from_secs(11)), Some(2));
    }
}
