//! Per-connection flood control: a token bucket on incoming packets. A client
//! over its rate is slowed down, not dropped: its next packet waits for a
//! token, and meanwhile the node reads nothing more from it, so TCP pushes
//! back on the sender and its memory here stays bounded.

use std::time::{Duration, Instant};

pub(crate) struct RateLimiter {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl RateLimiter {
    /// `per_second` packets per second, with bursts of as many.
    pub(crate) fn new(per_second: u32) -> RateLimiter {
        let rate = f64::from(per_second.max(1));
        RateLimiter {
            rate,
            burst: rate,
            tokens: rate,
            last: Instant::now(),
        }
    }

    /// Takes a token; returns how long to wait first when there is none.
    pub(crate) fn take(&mut self) -> Option<Duration> {
        let now = Instant::now();
        let elapsed = now.duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        self.tokens -= 1.0;
        if self.tokens >= 0.0 {
            return None;
        }
        Some(Duration::from_secs_f64(-self.tokens / self.rate))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bursts_then_paces() {
        let mut limiter = RateLimiter::new(10);
        for _ in 0..10 {
            assert_eq!(limiter.take(), None);
        }
        let wait = limiter.take().expect("the burst is spent");
        assert!(wait > Duration::ZERO && wait <= Duration::from_millis(100));
        // The debt grows with every packet taken early.
        let later = limiter.take().expect("still over the rate");
        assert!(later > wait);
    }
}
