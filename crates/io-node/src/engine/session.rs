//! Engine.IO sessions: one per client connection, whatever its transport.
//!
//! A [`Session`] owns the client's outgoing queue (the *outbox*, bounded: a
//! client that cannot keep up is closed rather than allowed to grow memory),
//! the heartbeat, and whatever the layer above keeps per client (`C`: for
//! the io-node, the Socket.IO sockets the client opened). Transports
//! (long-polling requests, a WebSocket) only move frames between the outbox
//! and the network; the layer above decides what the frames say.
//!
//! Closing is asynchronous: [`Session::close`] records the reason, wakes the
//! session's transports and tells the engine's watch task
//! (`super::watch`), which does the cleanup, so code holding locks may close
//! a session safely. The same task sends every session's pings and enforces
//! the pong and connect deadlines: one task per node, not one per session,
//! so an idle client costs no task.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::Poll;

use bytes::Bytes;
use futures_util::task::AtomicWaker;
use iocluster_protocol::engine;
use iocluster_protocol::envelope::EncodedHandshake;
use tokio_tungstenite::tungstenite::Utf8Bytes;

use super::limits::RateLimiter;
use super::watch::Watch;
use crate::clock::millis;

/// One unit of the outbox: an Engine.IO text packet, with the binary
/// attachments that must follow it without anything in between.
#[derive(Debug, Clone)]
pub(crate) enum Frame {
    Text(Utf8Bytes),
    WithBinary(Utf8Bytes, Arc<[Bytes]>),
    /// A text packet that ends the write it goes in: what follows it goes
    /// in the next write (or polling response), so that a client reading
    /// one message at a time has it alone (a namespace's CONNECT).
    Alone(Utf8Bytes),
    /// A binary packet (a Socket.IO packet of the msgpack parser); with
    /// `alone`, it ends the write it goes in, as [`Frame::Alone`].
    Binary(Bytes, bool),
    /// Not a packet: the session closes once everything queued before it
    /// is written (see [`Session::close_after_queued`]).
    CloseAfter(CloseReason),
}

impl Frame {
    pub(crate) fn ping() -> Frame {
        Frame::Text(Utf8Bytes::from_static(engine::PING))
    }

    pub(crate) fn noop() -> Frame {
        Frame::Text(Utf8Bytes::from_static(engine::NOOP))
    }

    /// A text packet as `protocol` wrote it.
    pub(crate) fn text(text: String) -> Frame {
        Frame::Text(Utf8Bytes::from(text))
    }

    /// A text packet that ends the write it goes in.
    pub(crate) fn alone(text: String) -> Frame {
        Frame::Alone(Utf8Bytes::from(text))
    }

    /// Whether nothing may follow this frame in the same write.
    pub(crate) fn ends_write(&self) -> bool {
        matches!(
            self,
            Frame::Alone(_) | Frame::Binary(_, true) | Frame::CloseAfter(_)
        )
    }

    /// A text packet as `protocol` wrote it, with the attachments that
    /// follow it (none: a plain text frame).
    pub(crate) fn with_binary(text: String, attachments: Arc<[Bytes]>) -> Frame {
        if attachments.is_empty() {
            return Frame::text(text);
        }
        Frame::WithBinary(Utf8Bytes::from(text), attachments)
    }

    /// The text of the packet (its attachments follow it).
    #[cfg(test)]
    pub(crate) fn as_text(&self) -> &str {
        match self {
            Frame::Text(text) | Frame::WithBinary(text, _) | Frame::Alone(text) => text.as_str(),
            Frame::Binary(..) | Frame::CloseAfter(_) => "",
        }
    }

    /// The bytes of a binary packet.
    #[cfg(test)]
    pub(crate) fn as_binary(&self) -> Option<&[u8]> {
        match self {
            Frame::Binary(bytes, _) => Some(bytes),
            _ => None,
        }
    }
}

/// Why a session or socket ended, as Socket.IO names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CloseReason {
    TransportClose,
    TransportError,
    PingTimeout,
    ParseError,
    ConnectTimeout,
    AdmissionTimeout,
    SlowClient,
    TooManyPendingEvents,
    Overloaded,
    ServerShutdown,
    ForcedClose,
    LeaseLost,
}

impl CloseReason {
    /// Every reason, for metrics that list them all from the start.
    pub(crate) const ALL: [CloseReason; 12] = [
        CloseReason::TransportClose,
        CloseReason::TransportError,
        CloseReason::PingTimeout,
        CloseReason::ParseError,
        CloseReason::ConnectTimeout,
        CloseReason::AdmissionTimeout,
        CloseReason::SlowClient,
        CloseReason::TooManyPendingEvents,
        CloseReason::Overloaded,
        CloseReason::ServerShutdown,
        CloseReason::ForcedClose,
        CloseReason::LeaseLost,
    ];

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            CloseReason::TransportClose => "transport close",
            CloseReason::TransportError => "transport error",
            CloseReason::PingTimeout => "ping timeout",
            CloseReason::ParseError => "parse error",
            CloseReason::ConnectTimeout => "connect timeout",
            CloseReason::AdmissionTimeout => "admission timeout",
            CloseReason::SlowClient => "slow client",
            CloseReason::TooManyPendingEvents => "too many pending events",
            CloseReason::Overloaded => "server overloaded",
            CloseReason::ServerShutdown => "server shutting down",
            CloseReason::ForcedClose => "forced server close",
            CloseReason::LeaseLost => "io-node lease lost",
        }
    }
}

/// The transport's state, behind one short-held lock.
#[derive(Default)]
pub(crate) struct SessionState {
    /// Packet rate of the polling transport (the WebSocket keeps its own).
    pub limiter: Option<RateLimiter>,
    /// The WebSocket transport took over (directly or by upgrade).
    pub websocket: bool,
    /// A WebSocket probe succeeded and the client may send `upgrade`.
    pub upgrading: bool,
}

pub(crate) struct Session<C> {
    pub sid: Arc<str>,
    /// An Engine.IO v3 client (socket.io-client 2.x): it sends the pings,
    /// and its polling payloads and binary packets are framed the v3 way.
    pub eio3: bool,
    /// Frames waiting for the client, at most `outbox_capacity`.
    pub outbox: Outbox,
    /// Held by whichever transport is writing to the client. A second
    /// concurrent long-poll finds it locked.
    pub outbox_reader: tokio::sync::Mutex<()>,
    pub state: Mutex<SessionState>,
    /// What the layer above keeps for this client, behind its own lock
    /// (taken before `state` when both are).
    client: Mutex<C>,
    pub handshake: EncodedHandshake,
    /// The heartbeat in one word (see [`AWAITING_PONG`]): the time the next
    /// ping is due or, while a ping awaits its pong, the pong's deadline.
    heartbeat: AtomicU64,
    /// When the client must have joined a namespace; 0 once checked.
    connect_deadline: AtomicU64,
    /// The layer above took the client on (a namespace joined): the
    /// connect deadline no longer applies.
    attached: AtomicBool,
    /// Its place in the budget of sessions not yet joined, given back when
    /// it joins (or closes: dropped with the session).
    unjoined: Mutex<Option<super::budget::Ticket>>,
    /// Tells the watch task that this session closed.
    closed: tokio::sync::mpsc::UnboundedSender<Arc<str>>,
    /// Set while a long-polling POST is being read; a concurrent one is refused.
    pub posting: AtomicBool,
    /// Set when the WebSocket's read side may have something: its waker
    /// fired, or its last poll gave a message (see [`Session::read_waker`]).
    read_woken: AtomicBool,
    /// Set while the layer above cannot take more from this client (its
    /// events pile up faster than the app-nodes answer): the transports
    /// read nothing from it until [`Session::resume`] (backpressure, not a
    /// cut-off).
    paused: AtomicBool,
    /// Reading from the client was held back (paused, or throttled for its
    /// packet rate) since the last ping: its pong may be waiting unread.
    held_back: AtomicBool,
    /// Wakes the session's waiters when it closes or resumes (see
    /// [`Session::closed`], [`Session::until_resumed`]). Inline rather than
    /// a `CancellationToken`, which is an allocation of its own for every
    /// connection.
    closing: tokio::sync::Notify,
    /// Set once, when the session closes: the first reason given.
    reason: OnceLock<CloseReason>,
}

impl<C: Default> Session<C> {
    pub(crate) fn new(
        sid: Arc<str>,
        handshake: EncodedHandshake,
        capacity: usize,
        websocket: bool,
        watch: &Watch,
        unjoined: Option<super::budget::Ticket>,
        eio3: bool,
    ) -> Arc<Session<C>> {
        let now = watch.now_ms();
        // A v4 client's first ping is due in an interval; a v3 client's
        // first ping must arrive within an interval and a timeout.
        let heartbeat = if eio3 {
            AWAITING_PONG | (now + millis(watch.ping_interval() + watch.ping_timeout()))
        } else {
            now + millis(watch.ping_interval())
        };
        Arc::new(Session {
            sid,
            eio3,
            outbox: Outbox::new(capacity),
            outbox_reader: tokio::sync::Mutex::new(()),
            state: Mutex::new(SessionState {
                websocket,
                ..SessionState::default()
            }),
            client: Mutex::new(C::default()),
            handshake,
            heartbeat: AtomicU64::new(heartbeat),
            connect_deadline: AtomicU64::new((now + millis(watch.connect_timeout())).max(1)),
            attached: AtomicBool::new(false),
            unjoined: Mutex::new(unjoined),
            closed: watch.closed_sender(),
            posting: AtomicBool::new(false),
            read_woken: AtomicBool::new(true),
            paused: AtomicBool::new(false),
            held_back: AtomicBool::new(false),
            closing: tokio::sync::Notify::new(),
            reason: OnceLock::new(),
        })
    }
}

impl<C> Session<C> {
    /// What the layer above keeps for this client.
    pub(crate) fn client(&self) -> std::sync::MutexGuard<'_, C> {
        self.client
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The layer above took the client on (it joined a namespace): the
    /// connect timeout is met.
    pub(crate) fn attach(&self) {
        if !self.attached.swap(true, Ordering::AcqRel) {
            let ticket = self
                .unjoined
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .take();
            drop(ticket);
        }
    }

    /// Queues a frame for the client. A full outbox means the client does not
    /// read fast enough: the session is closed and `false` returned.
    pub(crate) fn send(&self, frame: Frame) -> bool {
        if self.outbox.push(frame) {
            true
        } else {
            self.close(CloseReason::SlowClient);
            false
        }
    }

    /// Closes the session once the frames queued so far are written: they
    /// reach the client (a DISCONNECT for each of its namespaces, say), then
    /// the transport closes. A full outbox closes it at once, as too slow.
    pub(crate) fn close_after_queued(&self, reason: CloseReason) {
        self.send(Frame::CloseAfter(reason));
    }

    /// Asks for the session to close; the first reason given wins.
    pub(crate) fn close(&self, reason: CloseReason) {
        let first = self.reason.set(reason).is_ok();
        self.closing.notify_waiters();
        self.outbox.ready.wake();
        if first {
            // Fails only when the node has stopped watching (shut down).
            let _ = self.closed.send(self.sid.clone());
        }
    }

    pub(crate) fn close_reason(&self) -> CloseReason {
        self.reason
            .get()
            .copied()
            .unwrap_or(CloseReason::TransportClose)
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.reason.get().is_some()
    }

    /// The next frame for the client, or `None` once the session is closed
    /// (frames still queued then are not sent). For the transport holding
    /// [`Session::outbox_reader`]. The waker is registered before the
    /// checks, so a push or a close in between still wakes the reader.
    pub(crate) async fn next_frame(&self) -> Option<Frame> {
        std::future::poll_fn(|cx| {
            self.register_reader(cx.waker());
            self.frame_ready()
        })
        .await
    }

    /// Makes `waker` the one a push, a close or the read side's waker
    /// ([`Session::read_waker`]) wakes. Register before checking anything.
    /// One waker, no wait list: two atomic operations and no lock, which
    /// matters on the path of every delivery.
    pub(crate) fn register_reader(&self, waker: &std::task::Waker) {
        self.outbox.ready.register(waker);
    }

    /// Takes `first` and the frames queued behind it that go in the same
    /// write to the client (or, for a relayed WebSocket, the same `down`
    /// envelope), handing each to `write`, which returns the bytes written
    /// so far. The write ends after a frame that must end it, at
    /// `most_frames` frames or `most_bytes` bytes, when the outbox is empty,
    /// or at a [`Frame::CloseAfter`], whose reason is returned: the session
    /// closes once what was taken is written. One rule for every transport.
    pub(crate) fn take_write(
        &self,
        first: Frame,
        most_frames: usize,
        most_bytes: usize,
        mut write: impl FnMut(&Frame) -> usize,
    ) -> Option<CloseReason> {
        let mut frame = first;
        let mut taken = 0;
        loop {
            if let Frame::CloseAfter(reason) = frame {
                return Some(reason);
            }
            taken += 1;
            let written = write(&frame);
            if frame.ends_write() || taken >= most_frames || written >= most_bytes {
                return None;
            }
            frame = self.outbox.try_pop()?;
        }
    }

    /// The next frame if one is waiting, `None` if the session is closed;
    /// registers no waker.
    pub(crate) fn frame_ready(&self) -> Poll<Option<Frame>> {
        if self.is_closed() {
            return Poll::Ready(None);
        }
        match self.outbox.try_pop() {
            Some(frame) => Poll::Ready(Some(frame)),
            None => Poll::Pending,
        }
    }

    /// Whether the WebSocket's read side is worth polling, clearing the flag:
    /// it is set again by the read side's waker ([`Session::read_waker`]) or by the
    /// caller after a poll that gave a message (more may be buffered).
    pub(crate) fn take_read_wake(&self) -> bool {
        self.read_woken.swap(false, Ordering::AcqRel)
    }

    /// The waker for the WebSocket's read side (see `impl ArcWake for
    /// Session`), borrowed: making it costs no reference count.
    pub(crate) fn read_waker(self: &Arc<Self>) -> futures_util::task::WakerRef<'_>
    where
        C: Send + 'static,
    {
        futures_util::task::waker_ref(self)
    }

    pub(crate) fn set_read_wake(&self) {
        self.read_woken.store(true, Ordering::Release);
    }

    /// Notes that reading from the client is held back (throttled): a pong
    /// that comes late meanwhile gets another chance (see `on_due`).
    pub(crate) fn hold_back(&self) {
        self.held_back.store(true, Ordering::Release);
    }

    /// Stops reading from the client until [`Session::resume`].
    pub(crate) fn pause(&self) {
        self.hold_back();
        if !self.paused.swap(true, Ordering::AcqRel) {
            metrics::counter!("iocluster_client_pauses_total").increment(1);
        }
    }

    /// Reads from the client again (cheap when it was not paused).
    pub(crate) fn resume(&self) {
        if self.paused.load(Ordering::Acquire) && self.paused.swap(false, Ordering::AcqRel) {
            self.closing.notify_waiters();
            // The WebSocket task waits on the outbox's waker.
            self.outbox.ready.wake();
        }
    }

    pub(crate) fn is_paused(&self) -> bool {
        self.paused.load(Ordering::Acquire)
    }

    /// Completes once the session is not paused, or is closed.
    pub(crate) async fn until_resumed(&self) {
        loop {
            let mut notified = std::pin::pin!(self.closing.notified());
            notified.as_mut().enable();
            if !self.is_paused() || self.is_closed() {
                return;
            }
            notified.await;
        }
    }

    /// Completes once the session is closed (at once if it already is).
    pub(crate) async fn closed(&self) {
        loop {
            let mut notified = std::pin::pin!(self.closing.notified());
            // Registered before the check, so a close in between still wakes
            // us: `notify_waiters` only wakes futures already enabled.
            notified.as_mut().enable();
            if self.is_closed() {
                return;
            }
            notified.await;
        }
    }

    /// A pong arrived: the next ping is due one interval from now (as
    /// Engine.IO servers do, so a client sees a ping within pingInterval +
    /// pingTimeout). A pong nobody asked for changes nothing.
    pub(crate) fn on_pong(&self, watch: &Watch) {
        if self.eio3 {
            // A v3 client is the one that pings.
            return;
        }
        let beat = self.heartbeat.load(Ordering::Acquire);
        if beat & AWAITING_PONG != 0 {
            let next = watch.now_ms() + millis(watch.ping_interval());
            // Lost only to another pong read at the same moment (a poll and
            // the upgrading WebSocket); either one schedules the next ping.
            let _ =
                self.heartbeat
                    .compare_exchange(beat, next, Ordering::AcqRel, Ordering::Acquire);
        }
    }

    /// A v3 client's ping (answered by the caller): the next one is due
    /// within an interval and a timeout, as Engine.IO v3 servers wait.
    pub(crate) fn on_client_ping(&self, watch: &Watch) {
        if self.eio3 {
            let deadline = watch.now_ms() + millis(watch.ping_interval() + watch.ping_timeout());
            self.heartbeat
                .store(AWAITING_PONG | deadline, Ordering::Release);
        }
    }

    /// Whether the first namespace connect is due to be checked at `now`.
    fn connect_due(&self, now: u64) -> bool {
        let connect = self.connect_deadline.load(Ordering::Relaxed);
        connect != 0 && connect <= now
    }

    /// What the heartbeat needs at `now`. A ping counts as due up to `lead`
    /// early (one watch period), so that pings are never late for the
    /// watch's granularity: a client closes a connection whose pings stop
    /// for pingInterval + pingTimeout. A pong deadline is only ever enforced
    /// late, never early.
    fn beat_due(&self, now: u64, lead: u64) -> Option<Beat> {
        let beat = self.heartbeat.load(Ordering::Acquire);
        if beat & AWAITING_PONG != 0 {
            (beat & !AWAITING_PONG <= now).then_some(Beat::PongLate)
        } else {
            (beat <= now + lead).then_some(Beat::Ping)
        }
    }

    /// Whether the watch has something to do for this session at `now`.
    pub(super) fn due(&self, now: u64, lead: u64) -> bool {
        self.connect_due(now) || self.beat_due(now, lead).is_some()
    }

    /// Sends the ping that is due, or closes the session whose pong or
    /// first namespace connect is late.
    pub(super) fn on_due(&self, now: u64, lead: u64, watch: &Watch) {
        if self.connect_due(now) {
            self.connect_deadline.store(0, Ordering::Relaxed);
            if !self.attached.load(Ordering::Acquire) {
                self.close(CloseReason::ConnectTimeout);
                return;
            }
        }
        match self.beat_due(now, lead) {
            // Paused or throttled since the ping, the node may not have
            // read the client's pong yet, stuck behind its events: the pong
            // deadline moves on instead, and another ping goes out, so that
            // a connection that died meanwhile fails its writes.
            Some(Beat::PongLate)
                if self.is_paused() || self.held_back.swap(false, Ordering::AcqRel) =>
            {
                let deadline = AWAITING_PONG | (now + millis(watch.ping_timeout()));
                self.heartbeat.store(deadline, Ordering::Release);
                // A v3 client pings by itself; its ping may be unread.
                if !self.eio3 {
                    self.send(Frame::ping());
                }
            }
            Some(Beat::PongLate) => self.close(CloseReason::PingTimeout),
            Some(Beat::Ping) => {
                self.held_back.store(false, Ordering::Release);
                // Only the watch writes a heartbeat that awaits no pong.
                let deadline = AWAITING_PONG | (now + millis(watch.ping_timeout()));
                self.heartbeat.store(deadline, Ordering::Release);
                self.send(Frame::ping());
            }
            None => {}
        }
    }

    pub(crate) fn lock(&self) -> std::sync::MutexGuard<'_, SessionState> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The bounded queue of frames for one client. An idle client's outbox holds
/// no allocation (a channel would reserve a block of slots per client).
pub(crate) struct Outbox {
    queue: Mutex<VecDeque<Frame>>,
    capacity: usize,
    /// The reader's waker (see [`Session::register_reader`]): woken by a push
    /// and by the session's close. There is one reader at a time, the
    /// holder of [`Session::outbox_reader`].
    ready: AtomicWaker,
}

impl Outbox {
    fn new(capacity: usize) -> Outbox {
        Outbox {
            queue: Mutex::new(VecDeque::new()),
            capacity,
            ready: AtomicWaker::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Frame>> {
        self.queue
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Queues a frame; `false` when the queue is full.
    fn push(&self, frame: Frame) -> bool {
        {
            let mut queue = self.lock();
            if queue.len() >= self.capacity {
                return false;
            }
            queue.push_back(frame);
        }
        self.ready.wake();
        true
    }

    /// The next frame, if one is waiting.
    pub(crate) fn try_pop(&self) -> Option<Frame> {
        let mut queue = self.lock();
        let frame = queue.pop_front();
        if queue.is_empty() {
            // An idle client keeps no buffer.
            queue.shrink_to_fit();
        }
        frame
    }
}

/// A session is the waker its WebSocket task gives the read side
/// ([`Session::read_waker`]): waking it notes that the read side has
/// something and wakes the task through the outbox's waker, which the task
/// registers on every poll. The task polls the read side only when the note
/// is there, so the frames it is woken to write (most wake-ups under
/// broadcast load) do not each cost a pass through tungstenite and the
/// socket's readiness. A reference to the session: no allocation.
impl<C: Send + 'static> futures_util::task::ArcWake for Session<C> {
    fn wake_by_ref(session: &Arc<Self>) {
        session.set_read_wake();
        session.outbox.ready.wake();
    }
}

/// What a session's heartbeat needs from the watch.
enum Beat {
    /// A ping is due.
    Ping,
    /// The pong did not come in time.
    PongLate,
}

/// Set in [`Session::heartbeat`] while a ping awaits its pong.
const AWAITING_PONG: u64 = 1 << 63;

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::engine::Timings;

    #[test]
    fn every_close_reason_is_listed_once() {
        // Adding a variant breaks this match: add it to ALL too.
        let index = |reason: CloseReason| match reason {
            CloseReason::TransportClose => 0,
            CloseReason::TransportError => 1,
            CloseReason::PingTimeout => 2,
            CloseReason::ParseError => 3,
            CloseReason::ConnectTimeout => 4,
            CloseReason::AdmissionTimeout => 5,
            CloseReason::SlowClient => 6,
            CloseReason::TooManyPendingEvents => 7,
            CloseReason::Overloaded => 8,
            CloseReason::ServerShutdown => 9,
            CloseReason::ForcedClose => 10,
            CloseReason::LeaseLost => 11,
        };
        for (at, reason) in CloseReason::ALL.iter().enumerate() {
            assert_eq!(index(*reason), at);
        }
    }

    fn session(watch: &Watch) -> Arc<Session<()>> {
        let session = Session::new(
            "n1~s".into(),
            EncodedHandshake::new(&Default::default()),
            16,
            true,
            watch,
            None,
            false,
        );
        session.attach();
        session
    }

    fn watch() -> (Watch, super::super::Closed) {
        Watch::new(Timings {
            ping_interval: Duration::from_millis(100),
            ping_timeout: Duration::from_millis(100),
            connect_timeout: Duration::from_secs(10),
        })
    }

    #[test]
    fn a_late_pong_closes_the_session_unless_reading_was_held_back() {
        let (watch, _closed) = watch();
        let session = session(&watch);
        let start = watch.now_ms();
        // The ping is due: it goes out, the pong is awaited.
        session.on_due(start + 100, 0, &watch);
        assert_eq!(session.outbox.try_pop().unwrap().as_text(), "2");
        // Reading was throttled meanwhile: the pong may be unread, so the
        // deadline moves on and another ping goes out.
        session.hold_back();
        session.on_due(start + 201, 0, &watch);
        assert!(!session.is_closed());
        assert_eq!(session.outbox.try_pop().unwrap().as_text(), "2");
        // Not held back this time: closed.
        session.on_due(start + 302, 0, &watch);
        assert_eq!(session.close_reason(), CloseReason::PingTimeout);
    }

    #[test]
    fn a_write_takes_frames_up_to_its_limits_and_stops_at_a_close() {
        let (watch, _closed) = watch();
        let session = session(&watch);
        for n in 0..5 {
            session.send(Frame::text(format!("4{n}")));
        }
        let mut taken = Vec::new();
        let mut take = |most_frames, most_bytes| {
            let first = session.outbox.try_pop().unwrap();
            taken.clear();
            let close = session.take_write(first, most_frames, most_bytes, |frame| {
                taken.push(frame.as_text().to_owned());
                taken.len() * 2
            });
            (taken.clone(), close)
        };
        assert_eq!(take(2, 100), (vec!["40".into(), "41".into()], None));
        assert_eq!(take(10, 2), (vec!["42".into()], None));
        session.send(Frame::alone("45".into()));
        session.close_after_queued(CloseReason::ForcedClose);
        assert_eq!(
            take(10, 100),
            (vec!["43".into(), "44".into(), "45".into()], None)
        );
        assert_eq!(
            take(10, 100),
            (vec![], Some(CloseReason::ForcedClose)),
            "a close alone: nothing to write, then close"
        );
    }

    #[test]
    fn a_v3_client_pings_and_the_node_only_waits_for_its_pings() {
        let (watch, _closed) = watch();
        let session = Session::<()>::new(
            "n1~v3".into(),
            EncodedHandshake::new(&Default::default()),
            16,
            true,
            &watch,
            None,
            true,
        );
        session.attach();
        let start = watch.now_ms();
        // No ping from the node, ever; the client's first ping is awaited
        // for an interval and a timeout.
        session.on_due(start + 150, 0, &watch);
        assert!(session.outbox.try_pop().is_none());
        assert!(!session.is_closed());
        // A pong changes nothing for a v3 client; its ping moves the deadline.
        session.on_pong(&watch);
        session.on_client_ping(&watch);
        let pinged = watch.now_ms();
        session.on_due(pinged + 199, 0, &watch);
        assert!(!session.is_closed());
        assert!(session.outbox.try_pop().is_none());
        session.on_due(pinged + 201, 0, &watch);
        assert_eq!(session.close_reason(), CloseReason::PingTimeout);
    }

    #[test]
    fn a_paused_session_is_never_closed_for_a_late_pong() {
        let (watch, _closed) = watch();
        let session = session(&watch);
        let start = watch.now_ms();
        session.on_due(start + 100, 0, &watch);
        session.pause();
        for late in 1..5 {
            session.on_due(start + 100 + late * 101, 0, &watch);
            assert!(!session.is_closed(), "round {late}");
        }
        // Resumed, its pong is read: the heartbeat goes on.
        session.resume();
        session.on_pong(&watch);
        assert!(!session.is_closed());
    }
}
