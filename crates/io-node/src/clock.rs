//! The io-node's two clocks, for every layer: wall-clock milliseconds since
//! the Unix epoch (what goes to Redis: leases, handshake times, token
//! expiry), and a monotonic [`Clock`] counted from the node's start (what
//! decides local deadlines: heartbeats, redelivery), cheap to store as a
//! `u64` where an `Instant` would take 16 bytes.

use std::time::Duration;

/// Milliseconds since the Unix epoch: the wall clock every node shares.
pub(crate) use iocluster_ops::unix_ms;

/// A duration in whole milliseconds, saturating far below `u64::MAX` so that
/// sums of deadlines cannot overflow.
pub(crate) fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX >> 2)
}

/// A monotonic clock that starts at the node's start (tokio's, so paused
/// time in tests moves it).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Clock {
    epoch: tokio::time::Instant,
}

impl Clock {
    pub(crate) fn new() -> Clock {
        Clock {
            epoch: tokio::time::Instant::now(),
        }
    }

    /// Milliseconds since the start, never 0 (the clock starts at 1), so a
    /// deadline of 0 can mean "none".
    pub(crate) fn now_ms(&self) -> u64 {
        millis(self.epoch.elapsed()) + 1
    }

    /// Microseconds since the start.
    pub(crate) fn now_us(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_micros()).unwrap_or(u64::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_monotonic_clock_follows_tokio_time() {
        let clock = Clock::new();
        assert_eq!(clock.now_ms(), 1);
        tokio::time::advance(Duration::from_millis(250)).await;
        assert_eq!(clock.now_ms(), 251);
        assert_eq!(clock.now_us(), 250_000);
        assert!(unix_ms() > 1_600_000_000_000);
    }
}
