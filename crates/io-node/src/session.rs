//! Engine.IO sessions: one per client connection, whatever its transport.
//!
//! A [`Session`] owns the client's outgoing queue (the *outbox*, bounded: a client
//! that cannot keep up is closed rather than allowed to grow memory), the
//! heartbeat, and the Socket.IO sockets the client opened (one per namespace).
//! Transports (long-polling requests, a WebSocket) only move frames between the
//! outbox and the network; the node decides what the frames say.
//!
//! Closing is asynchronous: [`Session::close`] records the reason and cancels the
//! session token, and the session's own task ([`run`]) does the cleanup, so code
//! holding locks may close a session safely.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, OnceLock};

use bytes::Bytes;
use iocluster_protocol::envelope::Handshake;
use tokio_tungstenite::tungstenite::Utf8Bytes;
use tokio_util::sync::CancellationToken;

use crate::node::Node;
use crate::socket::Socket;

/// One unit of the outbox: an Engine.IO text packet, with the binary
/// attachments that must follow it without anything in between.
#[derive(Debug, Clone)]
pub(crate) enum Frame {
    Text(Utf8Bytes),
    WithBinary(Utf8Bytes, Arc<[Bytes]>),
}

impl Frame {
    pub(crate) fn ping() -> Frame {
        Frame::Text(Utf8Bytes::from_static("2"))
    }

    pub(crate) fn noop() -> Frame {
        Frame::Text(Utf8Bytes::from_static("6"))
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
    SlowClient,
    TooManyPendingEvents,
    Overloaded,
    ServerShutdown,
    ForcedClose,
    LeaseLost,
}

impl CloseReason {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            CloseReason::TransportClose => "transport close",
            CloseReason::TransportError => "transport error",
            CloseReason::PingTimeout => "ping timeout",
            CloseReason::ParseError => "parse error",
            CloseReason::ConnectTimeout => "connect timeout",
            CloseReason::SlowClient => "slow client",
            CloseReason::TooManyPendingEvents => "too many pending events",
            CloseReason::Overloaded => "server overloaded",
            CloseReason::ServerShutdown => "server shutting down",
            CloseReason::ForcedClose => "forced server close",
            CloseReason::LeaseLost => "io-node lease lost",
        }
    }
}

/// A Socket.IO packet with binary attachments still arriving.
#[derive(Debug)]
pub(crate) struct PartialPacket {
    pub kind: iocluster_protocol::socketio::PacketKind,
    pub nsp: String,
    pub id: Option<u64>,
    pub data: String,
    pub expected: usize,
    pub bin: Vec<serde_bytes::ByteBuf>,
}

/// Mutable session state, behind one short-held lock.
#[derive(Default)]
pub(crate) struct SessionState {
    /// Packet rate of the polling transport (the WebSocket keeps its own).
    pub limiter: Option<crate::limits::RateLimiter>,
    /// The WebSocket transport took over (directly or by upgrade).
    pub websocket: bool,
    /// A WebSocket probe succeeded and the client may send `upgrade`.
    pub upgrading: bool,
    /// Sockets by namespace.
    pub sockets: HashMap<Arc<str>, Arc<Socket>>,
    pub partial: Option<PartialPacket>,
    /// Whether any namespace was ever joined (for the connect timeout).
    pub ever_connected: bool,
}

pub(crate) struct Session {
    pub sid: Arc<str>,
    /// Frames waiting for the client, at most `outbox_capacity`.
    pub outbox: Outbox,
    /// Held by whichever transport is writing to the client. A second
    /// concurrent long-poll finds it locked.
    pub outbox_reader: tokio::sync::Mutex<()>,
    pub state: Mutex<SessionState>,
    pub handshake: Arc<Handshake>,
    /// Woken by a pong.
    pong: tokio::sync::Notify,
    /// Set while a long-polling POST is being read; a concurrent one is refused.
    pub posting: AtomicBool,
    /// Cancelled when the session closes; transports and the session task stop.
    pub cancel: CancellationToken,
    reason: OnceLock<CloseReason>,
}

impl Session {
    pub(crate) fn new(
        sid: Arc<str>,
        handshake: Arc<Handshake>,
        capacity: usize,
        websocket: bool,
    ) -> Arc<Session> {
        Arc::new(Session {
            sid,
            outbox: Outbox::new(capacity),
            outbox_reader: tokio::sync::Mutex::new(()),
            state: Mutex::new(SessionState {
                websocket,
                ..SessionState::default()
            }),
            handshake,
            pong: tokio::sync::Notify::new(),
            posting: AtomicBool::new(false),
            cancel: CancellationToken::new(),
            reason: OnceLock::new(),
        })
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

    /// Asks for the session to close; the first reason given wins.
    pub(crate) fn close(&self, reason: CloseReason) {
        let _ = self.reason.set(reason);
        self.cancel.cancel();
    }

    pub(crate) fn close_reason(&self) -> CloseReason {
        self.reason
            .get()
            .copied()
            .unwrap_or(CloseReason::TransportClose)
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.cancel.is_cancelled()
    }

    pub(crate) fn on_pong(&self) {
        self.pong.notify_one();
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
    ready: tokio::sync::Notify,
}

impl Outbox {
    fn new(capacity: usize) -> Outbox {
        Outbox {
            queue: Mutex::new(VecDeque::new()),
            capacity,
            ready: tokio::sync::Notify::new(),
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
        self.ready.notify_one();
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

    /// Waits for the next frame. One reader at a time (the holder of
    /// [`Session::outbox_reader`]): a push between an empty check and the
    /// wait leaves a permit in `ready`, so no wake-up is lost.
    pub(crate) async fn pop(&self) -> Frame {
        loop {
            if let Some(frame) = self.try_pop() {
                return frame;
            }
            self.ready.notified().await;
        }
    }
}

/// The session's own task: heartbeat, connect timeout, and cleanup once the
/// session is closed for any reason.
pub(crate) async fn run(node: Arc<Node>, session: Arc<Session>) {
    let config = node.config();
    let connect_deadline = tokio::time::Instant::now() + config.connect_timeout;
    let mut connect_checked = false;
    loop {
        let next_ping = tokio::time::Instant::now() + config.ping_interval;
        let wake = if connect_checked {
            next_ping
        } else {
            next_ping.min(connect_deadline)
        };
        tokio::select! {
            _ = session.cancel.cancelled() => break,
            _ = tokio::time::sleep_until(wake) => {}
        }
        if !connect_checked && tokio::time::Instant::now() >= connect_deadline {
            connect_checked = true;
            if !session.lock().ever_connected {
                session.close(CloseReason::ConnectTimeout);
                break;
            }
            if tokio::time::Instant::now() < next_ping {
                // Woken for the connect check only: wait the rest of the interval.
                tokio::select! {
                    _ = session.cancel.cancelled() => break,
                    _ = tokio::time::sleep_until(next_ping) => {}
                }
            }
        }
        if !session.send(Frame::ping()) {
            break;
        }
        // As Engine.IO servers do: the next ping is scheduled when the pong
        // arrives, so a client sees one within pingInterval + pingTimeout.
        tokio::select! {
            _ = session.cancel.cancelled() => break,
            _ = session.pong.notified() => {}
            _ = tokio::time::sleep(config.ping_timeout) => {
                session.close(CloseReason::PingTimeout);
                break;
            }
        }
    }
    node.on_session_closed(&session);
}
