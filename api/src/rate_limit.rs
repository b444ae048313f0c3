//! Request rate limits per caller: per API token for authenticated requests and
//! websocket operations, per client address for everything else (`/graphql`
//! without a valid token, websocket upgrades). Over the limit a request gets
//! `429 Too Many Requests` with `Retry-After` (`http.rs`), a websocket operation
//! an `error` message with the same code (`websocket.rs`). `docs/security.md`
//! documents the rule.
//!
//! The counting is `governor`'s GCRA (a token bucket without a timer task): a
//! well-kept crate rather than our own arithmetic over clocks.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use uuid::Uuid;

/// How many requests a caller may make: `requests` per `per` on average, `burst`
/// at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    pub requests: NonZeroU32,
    pub per: Per,
    pub burst: NonZeroU32,
}

/// The unit of a rate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Per {
    Second,
    Minute,
    Hour,
}

impl Per {
    fn duration(self) -> Duration {
        Duration::from_secs(match self {
            Per::Second => 1,
            Per::Minute => 60,
            Per::Hour => 3600,
        })
    }

    fn suffix(self) -> &'static str {
        match self {
            Per::Second => "s",
            Per::Minute => "m",
            Per::Hour => "h",
        }
    }
}

impl Default for RateLimit {
    /// Generous for a person or a script (a console page makes a few requests a
    /// second), a stop for a loop gone wrong.
    fn default() -> Self {
        let (requests, burst) = (NonZeroU32::new(100).unwrap(), NonZeroU32::new(1000).unwrap());
        RateLimit { requests, per: Per::Second, burst }
    }
}

/// Reads `N/s`, `N/m` or `N/h` (requests per second, minute or hour), with a
/// burst of N; the command line sets the burst apart.
impl FromStr for RateLimit {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let refused = || {
            format!(
                "`{s}` is not a rate: write requests per second, minute or hour as `N/s`, `N/m` or `N/h`, N at least 1"
            )
        };
        let (count, unit) = s.trim().split_once('/').ok_or_else(refused)?;
        let per = match unit.trim() {
            "s" => Per::Second,
            "m" => Per::Minute,
            "h" => Per::Hour,
            _ => return Err(refused()),
        };
        let requests = count.trim().parse::<NonZeroU32>().map_err(|_| refused())?;
        Ok(RateLimit { requests, per, burst: requests })
    }
}

/// Writes the rate as it is read (`N/s`).
impl std::fmt::Display for RateLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.requests, self.per.suffix())
    }
}

/// Who a request is counted against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Caller {
    Token(Uuid),
    Address(IpAddr),
}

/// The callers' counters, shared by every request of the process. `None`: no limit.
#[derive(Clone)]
pub struct Limiter {
    limit: Option<(RateLimit, Arc<DefaultKeyedRateLimiter<Caller>>)>,
}

/// Past this many callers counted, those whose bucket is full again are forgotten.
const REMEMBERED: usize = 10_000;

/// A request over the limit: when the caller may try again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limited {
    pub limit: RateLimit,
    /// Whole seconds, at least 1 (what `Retry-After` carries).
    pub retry_after: u64,
}

impl Limited {
    /// The GraphQL error it is, over HTTP (in `errors`) and in a websocket's
    /// `error` message alike: code `RATE_LIMITED`, `retryAfter` in seconds.
    pub fn error(&self) -> serde_json::Value {
        serde_json::json!({ "message": self.message(),
            "extensions": { "code": "RATE_LIMITED", "retryAfter": self.retry_after } })
    }

    fn message(&self) -> String {
        format!(
            "too many requests: at most {} (bursts of {}) for this caller; retry in {} s",
            self.limit, self.limit.burst, self.retry_after
        )
    }
}

impl Limiter {
    pub fn new(limit: Option<RateLimit>) -> Limiter {
        let limit = limit.map(|limit| {
            // One request replenished every `per / requests`.
            let period = limit.per.duration() / limit.requests.get();
            let quota = Quota::with_period(period).expect("a rate's period is never zero").allow_burst(limit.burst);
            (limit, Arc::new(RateLimiter::keyed(quota)))
        });
        Limiter { limit }
    }

    /// Counts one request of `caller`; refused when it is over the limit.
    pub fn check(&self, caller: Caller) -> Result<(), Limited> {
        let Some((limit, limiter)) = &self.limit else { return Ok(()) };
        if limiter.len() > REMEMBERED {
            limiter.retain_recent();
        }
        limiter.check_key(&caller).map_err(|not_until| {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            Limited { limit: *limit, retry_after: seconds(wait) }
        })
    }
}

/// Whole seconds to wait, rounded up and at least 1.
fn seconds(wait: Duration) -> u64 {
    (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(n: u32) -> NonZeroU32 {
        NonZeroU32::new(n).unwrap()
    }

    #[test]
    fn rates_are_requests_per_second_minute_or_hour() {
        assert_eq!("5/s".parse::<RateLimit>(), Ok(RateLimit { requests: n(5), per: Per::Second, burst: n(5) }));
        assert_eq!("2/h".parse::<RateLimit>(), Ok(RateLimit { requests: n(2), per: Per::Hour, burst: n(2) }));
        assert_eq!(RateLimit::default().to_string(), "100/s");
        let refused = |s: &str| {
            format!(
                "`{s}` is not a rate: write requests per second, minute or hour as `N/s`, `N/m` or `N/h`, N at least 1"
            )
        };
        assert_eq!("5/d".parse::<RateLimit>(), Err(refused("5/d")));
        assert_eq!("0/s".parse::<RateLimit>(), Err(refused("0/s")));
        assert_eq!("5".parse::<RateLimit>(), Err(refused("5")));
    }

    #[test]
    fn a_caller_over_its_burst_waits_and_others_do_not() {
        let limit = RateLimit { requests: n(1), per: Per::Hour, burst: n(2) };
        let limiter = Limiter::new(Some(limit));
        let (alice, bob) = (Caller::Token(Uuid::new_v4()), Caller::Token(Uuid::new_v4()));
        assert_eq!(limiter.check(alice), Ok(()));
        assert_eq!(limiter.check(alice), Ok(()));
        let refused = limiter.check(alice).unwrap_err();
        assert!((3590..=3600).contains(&refused.retry_after), "{refused:?}");
        assert_eq!(limiter.check(bob), Ok(()));
        assert_eq!(Limiter::new(None).check(alice), Ok(()));
        assert_eq!(seconds(Duration::from_millis(1500)), 2);
        assert_eq!(seconds(Duration::ZERO), 1);
    }
}
