//! The event tail: sampled copies of the client events this node queues,
//! published on `P:tail` while an operator watches them on the dashboard.
//!
//! Client events travel on a list (`P:events`) that app-nodes empty at once,
//! so nobody else can watch them go by. While the key `P:tail:on` exists
//! (the frontend sets it with a short TTL, and keeps it only while a page
//! asks), this node publishes a copy of at most [`PER_SECOND`] queue items a
//! second, exactly the bytes it queues (docs/PROTOCOL.md, "The event
//! tail"). The Socket.IO layer never sees any of it: the [`Tail`] handle
//! sits in the cluster port, and [`Tail::offer`] costs one relaxed atomic
//! load while nobody watches.
//!
//! What it leaves to others: the frontend decodes, filters and hides
//! payloads; this task only copies and publishes, on a bounded queue that
//! drops (a copy for the tail is never worth holding a client back).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use iocluster_protocol::keys::Keys;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Most queue items copied to the tail per second, per io-node.
pub(crate) const PER_SECOND: u64 = 20;
/// How often the node looks for `P:tail:on`: a page sees events this long
/// after it starts watching, and the node stops copying this long (plus the
/// key's TTL) after the last page went away.
const CHECK_EVERY: Duration = Duration::from_secs(1);
/// Copies waiting for the publisher; more are dropped.
const QUEUE: usize = 64;

/// The cheap handle the cluster port offers events to.
#[derive(Clone)]
pub(crate) struct Tail {
    inner: Arc<Inner>,
}

struct Inner {
    /// Whether `P:tail:on` existed at the last look.
    on: AtomicBool,
    /// The current one-second window: its number (seconds since `start`)
    /// in the high 32 bits, items copied in it in the low 32.
    window: AtomicU64,
    start: Instant,
    copies: mpsc::Sender<Bytes>,
}

impl Tail {
    pub(crate) fn new() -> (Tail, mpsc::Receiver<Bytes>) {
        let (copies, receiver) = mpsc::channel(QUEUE);
        let inner = Inner {
            on: AtomicBool::new(false),
            window: AtomicU64::new(0),
            start: Instant::now(),
            copies,
        };
        (
            Tail {
                inner: Arc::new(inner),
            },
            receiver,
        )
    }

    /// A queue item (one or more event envelopes) this node is writing:
    /// copied for the tail if someone watches and this second's budget is
    /// not spent.
    pub(crate) fn offer(&self, item: &[u8]) {
        if !self.inner.on.load(Ordering::Relaxed) || !self.take_token() {
            return;
        }
        let _ = self.inner.copies.try_send(Bytes::copy_from_slice(item));
    }

    /// One of this second's [`PER_SECOND`] copies, if any is left.
    fn take_token(&self) -> bool {
        let second = self.inner.start.elapsed().as_secs() & 0xffff_ffff;
        let mut current = self.inner.window.load(Ordering::Relaxed);
        loop {
            let next = if current >> 32 != second {
                (second << 32) | 1
            } else if current & 0xffff_ffff < PER_SECOND {
                current + 1
            } else {
                return false;
            };
            match self.inner.window.compare_exchange_weak(
                current,
                next,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return true,
                Err(actual) => current = actual,
            }
        }
    }

    fn set_on(&self, on: bool) {
        self.inner.on.store(on, Ordering::Relaxed);
    }
}

/// Looks for `P:tail:on` every [`CHECK_EVERY`] and publishes the copies on
/// `P:tail`, until `stop`.
pub(super) async fn run(
    tail: Tail,
    mut copies: mpsc::Receiver<Bytes>,
    mut redis: iocluster_ops::Redis,
    keys: Keys,
    stop: CancellationToken,
) {
    let (switch, channel) = (keys.tail_on(), keys.tail());
    let mut check = tokio::time::interval(CHECK_EVERY);
    check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            _ = check.tick() => {
                let on: redis::RedisResult<bool> =
                    redis::cmd("EXISTS").arg(&switch).query_async(&mut redis).await;
                // Redis errors are the registry's to report; no Redis, no tail.
                tail.set_on(on.unwrap_or(false));
            }
            Some(copy) = copies.recv() => {
                let mut pipe = redis::pipe();
                pipe.cmd("PUBLISH").arg(&channel).arg(copy.as_ref()).ignore();
                while let Ok(copy) = copies.try_recv() {
                    pipe.cmd("PUBLISH").arg(&channel).arg(copy.as_ref()).ignore();
                }
                if let Err(error) = pipe.query_async::<()>(&mut redis).await {
                    tracing::debug!(%error, "cannot publish to the event tail");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_is_copied_while_nobody_watches() {
        let (tail, mut copies) = Tail::new();
        tail.offer(b"one");
        assert!(copies.try_recv().is_err());
        tail.set_on(true);
        tail.offer(b"two");
        assert_eq!(copies.try_recv().unwrap(), Bytes::from_static(b"two"));
        tail.set_on(false);
        tail.offer(b"three");
        assert!(copies.try_recv().is_err());
    }

    #[test]
    fn at_most_the_budget_per_second() {
        let (tail, mut copies) = Tail::new();
        tail.set_on(true);
        // Within one second (a test slower than that takes a fresh window,
        // and copies at most twice the budget).
        for _ in 0..PER_SECOND * 3 {
            tail.offer(b"item");
        }
        let mut copied = 0;
        while copies.try_recv().is_ok() {
            copied += 1;
        }
        assert!((PER_SECOND..=2 * PER_SECOND).contains(&copied), "{copied}");
    }
}
