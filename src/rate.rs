//! Token-bucket rate limiting on passed-in time: one bucket (a connection's sends), or one
//! per key in a bounded map (login attempts per address and per account).

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// `burst` tokens, refilled at `per_sec`.
#[derive(Debug)]
pub(crate) struct TokenBucket {
    tokens: f64,
    burst: f64,
    per_sec: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket.
    pub(crate) fn new(burst: u32, per_sec: u32, now: Instant) -> Self {
        Self::with_rate(burst, f64::from(per_sec), now)
    }

    /// A full bucket refilled at a fractional rate.
    pub(crate) fn with_rate(burst: u32, per_sec: f64, now: Instant) -> Self {
        Self { tokens: f64::from(burst), burst: f64::from(burst), per_sec, last: now }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now.max(self.last);
        self.tokens = (self.tokens + elapsed * self.per_sec).min(self.burst);
    }

    /// Whether a token is there (none taken), or in how many ms one will be.
    pub(crate) fn peek(&mut self, now: Instant) -> Result<(), u32> {
        self.refill(now);
        if self.tokens >= 1.0 { Ok(()) } else { Err(((1.0 - self.tokens) / self.per_sec * 1000.0).ceil() as u32) }
    }

    /// Whether the bucket has refilled completely (its key was idle).
    pub(crate) fn is_full(&mut self, now: Instant) -> bool {
        self.refill(now);
        self.tokens >= self.burst
    }

    /// Takes a token, or says in how many ms one will be there.
    pub(crate) fn take(&mut self, now: Instant) -> Result<(), u32> {
        self.refill(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(((1.0 - self.tokens) / self.per_sec * 1000.0).ceil() as u32)
        }
    }

    /// Takes a token that is not there yet (the bucket goes into debt) and says in how many
    /// ms it will have been earned: reservations queue up one token interval apart.
    pub(crate) fn reserve(&mut self, now: Instant) -> u32 {
        self.refill(now);
        self.tokens -= 1.0;
        (self.tokens.min(0.0).abs() / self.per_sec * 1000.0).ceil() as u32
    }
}

/// One token bucket per key, in a map that never holds more than `max_keys` (G6): when it is
/// full, keys whose bucket has refilled (idle) are forgotten first, then any.
#[derive(Debug)]
pub struct Throttle<K> {
    buckets: Mutex<HashMap<K, TokenBucket>>,
    burst: u32,
    per_sec: f64,
    max_keys: usize,
}

impl<K: Hash + Eq + Clone> Throttle<K> {
    /// `burst` attempts per key, then `per_minute`.
    pub fn new(burst: u32, per_minute: u32, max_keys: usize) -> Self {
        Self {
            buckets: Mutex::new(HashMap::new()),
            burst: burst.max(1),
            per_sec: f64::from(per_minute.max(1)) / 60.0,
            max_keys: max_keys.max(1),
        }
    }

    fn with<T>(&self, key: &K, now: Instant, f: impl FnOnce(&mut TokenBucket) -> T) -> T {
        let mut buckets = self.buckets.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if !buckets.contains_key(key) && buckets.len() >= self.max_keys {
            buckets.retain(|_, bucket| !bucket.is_full(now));
            if buckets.len() >= self.max_keys {
                let drop: Vec<K> = buckets.keys().take(self.max_keys / 10 + 1).cloned().collect();
                for k in drop {
                    buckets.remove(&k);
                }
            }
        }
        let bucket =
            buckets.entry(key.clone()).or_insert_with(|| TokenBucket::with_rate(self.burst, self.per_sec, now));
        f(bucket)
    }

    /// Takes a token for `key`, or says how long until one is there.
    pub fn take(&self, key: &K, now: Instant) -> Result<(), Duration> {
        self.with(key, now, |bucket| bucket.take(now).map_err(|ms| Duration::from_millis(u64::from(ms))))
    }

    /// Whether `key` has a token, without taking it.
    pub fn check(&self, key: &K, now: Instant) -> Result<(), Duration> {
        self.with(key, now, |bucket| bucket.peek(now).map_err(|ms| Duration::from_millis(u64::from(ms))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_refill() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(3, 2, t0);
        assert!((0..3).all(|_| b.take(t0).is_ok()));
        assert_eq!(b.take(t0), Err(500));
        assert!(b.take(t0 + Duration::from_millis(500)).is_ok());
        assert!(b.take(t0 + Duration::from_millis(500)).is_err());
        assert!((0..3).all(|_| b.take(t0 + Duration::from_secs(60)).is_ok()), "refill caps at burst");
        assert!(b.take(t0 + Duration::from_secs(60)).is_err());
    }

    #[test]
    fn reservations_queue_one_token_apart_and_are_paid_back() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(1, 20, t0);
        assert!(b.take(t0).is_ok());
        assert_eq!(b.reserve(t0), 50);
        assert_eq!(b.reserve(t0), 100);
        assert_eq!(b.reserve(t0), 150);
        assert_eq!(b.take(t0 + Duration::from_millis(150)), Err(50), "the reserved tokens are spoken for");
        assert!(b.take(t0 + Duration::from_millis(200)).is_ok());
    }

    #[test]
    fn a_throttle_keeps_one_bucket_per_key_and_stays_bounded() {
        let t0 = Instant::now();
        let t: Throttle<u32> = Throttle::new(2, 60, 3);
        assert!(t.take(&1, t0).is_ok() && t.take(&1, t0).is_ok());
        assert_eq!(t.take(&1, t0), Err(Duration::from_secs(1)));
        assert!(t.check(&2, t0).is_ok() && t.check(&2, t0).is_ok(), "check takes nothing");
        assert!(t.take(&2, t0).is_ok(), "another key");
        for key in 3..100 {
            assert!(t.take(&key, t0).is_ok());
        }
        assert!(t.buckets.lock().unwrap().len() <= 3, "bounded");
        assert!(t.take(&1, t0 + Duration::from_secs(1)).is_ok(), "refilled, or forgotten: either way allowed");
    }
}
