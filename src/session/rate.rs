//! Token-bucket rate limiting on passed-in time.

use std::time::Instant;

/// `burst` tokens, refilled at `per_sec`.
#[derive(Debug)]
pub(super) struct TokenBucket {
    tokens: f64,
    burst: f64,
    per_sec: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket.
    pub(super) fn new(burst: u32, per_sec: u32, now: Instant) -> Self {
        Self { tokens: f64::from(burst), burst: f64::from(burst), per_sec: f64::from(per_sec), last: now }
    }

    /// Takes a token, or says in how many ms one will be there.
    pub(super) fn take(&mut self, now: Instant) -> Result<(), u32> {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now.max(self.last);
        self.tokens = (self.tokens + elapsed * self.per_sec).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(((1.0 - self.tokens) / self.per_sec * 1000.0).ceil() as u32)
        }
    }

    /// Takes a token that is not there yet (the bucket goes into debt) and says in how many
    /// ms it will have been earned: reservations queue up one token interval apart.
    pub(super) fn reserve(&mut self, now: Instant) -> u32 {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now.max(self.last);
        self.tokens = (self.tokens + elapsed * self.per_sec).min(self.burst) - 1.0;
        (self.tokens.min(0.0).abs() / self.per_sec * 1000.0).ceil() as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

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
}
