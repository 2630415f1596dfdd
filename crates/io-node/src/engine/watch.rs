//! The engine's one task for all its sessions: every [`Watch::period`] it
//! sends the pings that are due and closes the sessions whose pong or first
//! namespace connect is late; whenever a session closes it removes it and
//! hands it to the layer above for cleanup ([`super::Handler::on_closed`]).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::Handler;
use crate::clock::{Clock, millis};

/// What sessions need of the watch task: its clock, its timings and the way
/// to tell it a session closed.
pub(crate) struct Watch {
    clock: Clock,
    ping_interval: Duration,
    ping_timeout: Duration,
    connect_timeout: Duration,
    closed: mpsc::UnboundedSender<Arc<str>>,
}

/// The receiving end of [`Watch`], for [`watch`].
pub(crate) struct Closed(mpsc::UnboundedReceiver<Arc<str>>);

/// The heartbeat and connect timings, as the `open` packet announces them.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timings {
    pub ping_interval: Duration,
    pub ping_timeout: Duration,
    pub connect_timeout: Duration,
}

impl Watch {
    pub(crate) fn new(timings: Timings) -> (Watch, Closed) {
        let (closed, receiver) = mpsc::unbounded_channel();
        let watch = Watch {
            clock: Clock::new(),
            ping_interval: timings.ping_interval,
            ping_timeout: timings.ping_timeout,
            connect_timeout: timings.connect_timeout,
            closed,
        };
        (watch, Closed(receiver))
    }

    /// Milliseconds on the watch's clock (never 0).
    pub(crate) fn now_ms(&self) -> u64 {
        self.clock.now_ms()
    }

    pub(crate) fn ping_interval(&self) -> Duration {
        self.ping_interval
    }

    pub(crate) fn ping_timeout(&self) -> Duration {
        self.ping_timeout
    }

    pub(crate) fn connect_timeout(&self) -> Duration {
        self.connect_timeout
    }

    pub(super) fn closed_sender(&self) -> mpsc::UnboundedSender<Arc<str>> {
        self.closed.clone()
    }

    /// How often the watch looks at every session: an eighth of the shortest
    /// timing, between 10 ms and 1 s. A ping goes out at most that early, a
    /// late pong or connect is noticed at most that late.
    pub(crate) fn period(&self) -> Duration {
        let shortest = self
            .ping_interval
            .min(self.ping_timeout)
            .min(self.connect_timeout);
        (shortest / 8).clamp(Duration::from_millis(10), Duration::from_secs(1))
    }
}

/// Runs the watch until `stop` is cancelled, then cleans up every session
/// already closed and returns.
pub(crate) async fn watch<H: Handler>(
    handler: Arc<H>,
    mut closed: Closed,
    stop: CancellationToken,
) {
    let engine = handler.engine();
    let mut tick = tokio::time::interval(engine.watch().period());
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            sid = closed.0.recv() => match sid {
                Some(sid) => close(&*handler, &sid),
                None => break,
            },
            _ = tick.tick() => {
                let watch = engine.watch();
                let (now, lead) = (watch.now_ms(), millis(watch.period()));
                for session in engine.due_sessions(|session| session.due(now, lead)) {
                    session.on_due(now, lead, watch);
                }
            }
            _ = stop.cancelled() => break,
        }
    }
    while let Ok(sid) = closed.0.try_recv() {
        close(&*handler, &sid);
    }
}

fn close<H: Handler>(handler: &H, sid: &str) {
    if let Some(session) = handler.engine().remove(sid) {
        handler.on_closed(&session);
    }
}
