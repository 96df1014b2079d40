//! Per-connection message rate limiting: a token bucket, plus the rule that
//! turns sustained abuse into a disconnect.
//!
//! The bucket holds `msg_burst` tokens and refills at `msg_rate` per second;
//! every client frame but a heartbeat takes one. A frame that finds the
//! bucket empty is refused (`rate_limited`) and counted; a connection with
//! more than `msg_burst` refusals within [`ABUSE_WINDOW`] is not a bursty
//! client any more but a flood, and is disconnected. Pure bookkeeping: the
//! caller supplies the clock, so it is tested without sleeping.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Refusals are counted over windows this long.
pub(crate) const ABUSE_WINDOW: Duration = Duration::from_secs(10);

/// What to do with one client frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    Allow,
    /// Answer with an error reply `rate_limited`.
    Refuse,
    /// Still flooding after many refusals: close the connection.
    Disconnect,
}

/// One connection's bucket.
#[derive(Debug)]
pub(crate) struct RateLimit {
    /// Tokens added per second.
    rate: f64,
    /// Bucket size, and the refusals tolerated per window.
    burst: f64,
    tokens: f64,
    last: Instant,
    refused: u32,
    window_start: Instant,
}

impl RateLimit {
    /// `None` when `rate` is 0 (unlimited).
    pub fn new(rate: u32, burst: u32, now: Instant) -> Option<RateLimit> {
        if rate == 0 {
            return None;
        }
        let burst = f64::from(burst.max(1));
        Some(RateLimit {
            rate: f64::from(rate),
            burst,
            tokens: burst,
            last: now,
            refused: 0,
            window_start: now,
        })
    }

    /// Takes a token for one frame received at `now`.
    pub fn check(&mut self, now: Instant) -> Verdict {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            return Verdict::Allow;
        }
        if now.saturating_duration_since(self.window_start) > ABUSE_WINDOW {
            self.window_start = now;
            self.refused = 0;
        }
        self.refused += 1;
        if f64::from(self.refused) > self.burst {
            Verdict::Disconnect
        } else {
            Verdict::Refuse
        }
    }
}

/// Buckets per client address, for requests that have no connection to
/// hold one: `POST /api/rooms/{topic}/messages`.
#[derive(Debug, Default)]
pub(crate) struct AddressBuckets(Mutex<HashMap<IpAddr, RateLimit>>);

/// Addresses tracked before idle (full) buckets are dropped.
const TRACKED_ADDRESSES: usize = 4096;

impl AddressBuckets {
    /// Takes a token for one request from `ip` (`Allow` when `rate` is 0).
    pub fn check(&self, ip: IpAddr, rate: u32, burst: u32, now: Instant) -> Verdict {
        // Every update is a single bucket change: a poisoned lock holds no
        // half-done state.
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= TRACKED_ADDRESSES && !map.contains_key(&ip) {
            // A bucket that has refilled is the same as a new one.
            map.retain(|_, bucket| !bucket.is_full(now));
        }
        match map.get_mut(&ip) {
            Some(bucket) => bucket.check(now),
            None => match RateLimit::new(rate, burst, now) {
                Some(mut bucket) => {
                    let verdict = bucket.check(now);
                    map.insert(ip, bucket);
                    verdict
                }
                None => Verdict::Allow,
            },
        }
    }
}

impl RateLimit {
    /// True when the bucket would be full at `now` with no refusals pending.
    fn is_full(&self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens + elapsed * self.rate >= self.burst
            && now.saturating_duration_since(self.window_start) > ABUSE_WINDOW
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn address_buckets_are_separate_and_refill() {
        let buckets = AddressBuckets::default();
        let t0 = Instant::now();
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        assert_eq!(buckets.check(a, 10, 2, t0), Verdict::Allow);
        assert_eq!(buckets.check(a, 10, 2, t0), Verdict::Allow);
        assert_eq!(buckets.check(a, 10, 2, t0), Verdict::Refuse);
        assert_eq!(buckets.check(b, 10, 2, t0), Verdict::Allow);
        let later = t0 + Duration::from_millis(100);
        assert_eq!(buckets.check(a, 10, 2, later), Verdict::Allow);
        assert_eq!(
            buckets.check(a, 0, 2, later),
            Verdict::Refuse,
            "the bucket is kept"
        );
        let c: IpAddr = "192.0.2.3".parse().unwrap();
        assert_eq!(
            buckets.check(c, 0, 2, t0),
            Verdict::Allow,
            "rate 0 is unlimited"
        );
    }

    #[test]
    fn idle_addresses_are_forgotten_when_many_are_tracked() {
        let buckets = AddressBuckets::default();
        let t0 = Instant::now();
        for n in 0..TRACKED_ADDRESSES as u32 {
            let ip = IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + n));
            buckets.check(ip, 10, 2, t0);
        }
        let later = t0 + ABUSE_WINDOW + Duration::from_secs(1);
        buckets.check("192.0.2.9".parse().unwrap(), 10, 2, later);
        let tracked = buckets.0.lock().unwrap().len();
        assert_eq!(tracked, 1, "refilled buckets dropped, the new one kept");
    }

    #[test]
    fn unlimited_when_the_rate_is_zero() {
        assert!(RateLimit::new(0, 10, Instant::now()).is_none());
    }

    #[test]
    fn a_burst_passes_then_the_rate_applies() {
        let t0 = Instant::now();
        let mut bucket = RateLimit::new(10, 5, t0).unwrap();
        for _ in 0..5 {
            assert_eq!(bucket.check(t0), Verdict::Allow);
        }
        assert_eq!(bucket.check(t0), Verdict::Refuse);
        // 100 ms at 10/s refills one token.
        let t1 = t0 + Duration::from_millis(100);
        assert_eq!(bucket.check(t1), Verdict::Allow);
        assert_eq!(bucket.check(t1), Verdict::Refuse);
        // A long pause refills the bucket, never beyond its size.
        let t2 = t1 + Duration::from_secs(60);
        for _ in 0..5 {
            assert_eq!(bucket.check(t2), Verdict::Allow);
        }
        assert_eq!(bucket.check(t2), Verdict::Refuse);
    }

    #[test]
    fn sustained_flooding_disconnects() {
        let t0 = Instant::now();
        let mut bucket = RateLimit::new(1, 3, t0).unwrap();
        let verdicts: Vec<Verdict> = (0..7).map(|_| bucket.check(t0)).collect();
        assert_eq!(
            verdicts,
            [
                Verdict::Allow,
                Verdict::Allow,
                Verdict::Allow,
                Verdict::Refuse,
                Verdict::Refuse,
                Verdict::Refuse,
                Verdict::Disconnect
            ]
        );
    }

    #[test]
    fn occasional_refusals_are_forgiven_after_the_window() {
        let t0 = Instant::now();
        let mut bucket = RateLimit::new(1, 2, t0).unwrap();
        let mut now = t0;
        for _ in 0..10 {
            // Two allowed, one refused, every 11 s: never a disconnect.
            assert_eq!(bucket.check(now), Verdict::Allow);
            assert_eq!(bucket.check(now), Verdict::Allow);
            assert_eq!(bucket.check(now), Verdict::Refuse);
            now += ABUSE_WINDOW + Duration::from_secs(1);
        }
    }
}
