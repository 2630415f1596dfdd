//! The Engine.IO layer: sessions, the long-polling and WebSocket transports,
//! the upgrade between them, and heartbeats. It knows nothing of Socket.IO
//! sockets or of Redis: it hands each client message to the layer above
//! through [`Handler`] and tells it when a session closed.
//!
//! - [`session`]: one session per client: outbox, heartbeat, asynchronous close.
//! - [`watch`]: the one task that pings, enforces deadlines and cleans up.
//! - `http`: the routes, the polling handshake.
//! - `budget`: the cap on sessions that have not joined a namespace yet,
//!   in all and per client address.
//! - `cors`: which web pages may use the node (CORS, the WebSocket origin
//!   check).
//! - `responses`: the protocol's error replies, the `open` packet, the
//!   handshake's capture of the request.
//! - `polling`, `websocket`: the transports.
//! - `limits`: the per-connection packet-rate token bucket.
//! - [`relay`]: serving a session another io-node holds (and serving ours
//!   for others), through the cluster's `Peers` port.

mod budget;
mod cors;
mod http;
pub(crate) mod limits;
mod polling;
pub(crate) mod relay;
mod responses;
pub(crate) mod session;
pub(crate) mod watch;
mod websocket;

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use iocluster_protocol::{engine, ids};

pub(crate) use http::handle;
pub(crate) use session::{CloseReason, Frame, Session};
pub(crate) use watch::{Closed, Timings, Watch};

use crate::config::Config;

/// A client message for the layer above: the payload of an Engine.IO
/// `message` packet, text or binary.
#[derive(Debug)]
pub(crate) enum Message<'a> {
    Text(&'a str),
    Binary(Vec<u8>),
}

/// The layer above the engine: what it keeps per client, and what it does
/// with the client's messages and with a closed session.
pub(crate) trait Handler: Send + Sync + 'static {
    /// Kept in each session, behind a lock of its own.
    type Client: Default + Send + 'static;

    fn engine(&self) -> &Engine<Self::Client>;

    /// One message from the client. An error closes the session with that
    /// reason.
    fn on_message<'a>(
        &'a self,
        session: &'a Arc<Session<Self::Client>>,
        message: Message<'a>,
    ) -> impl Future<Output = Result<(), CloseReason>> + Send + 'a;

    /// The session closed and left the engine: called once, from the watch
    /// task.
    fn on_closed(&self, session: &Arc<Session<Self::Client>>);
}

/// Handles one Engine.IO packet from a client: heartbeats and closes here,
/// messages to the layer above.
pub(crate) async fn on_packet<H: Handler>(
    handler: &H,
    session: &Arc<Session<H::Client>>,
    packet: engine::Packet<'_>,
) -> Result<(), CloseReason> {
    match packet {
        engine::Packet::Pong(_) => session.on_pong(handler.engine().watch()),
        engine::Packet::Ping(data) => {
            session.on_client_ping(handler.engine().watch());
            session.send(Frame::text(engine::pong(data)));
        }
        engine::Packet::Message(text) => handler.on_message(session, Message::Text(text)).await?,
        engine::Packet::Binary(bytes) => {
            handler
                .on_message(session, Message::Binary(bytes.into_owned()))
                .await?
        }
        engine::Packet::Close => return Err(CloseReason::TransportClose),
        engine::Packet::Noop => {}
        engine::Packet::Open(_) | engine::Packet::Upgrade => return Err(CloseReason::ParseError),
    }
    Ok(())
}

/// A v3 client (socket.io-client 2.x) is in namespace `/` without asking:
/// the node acts as if it had sent CONNECT to `/` right after the
/// handshake (admission as for any CONNECT).
pub(crate) async fn connect_main_namespace<H: Handler>(
    handler: &H,
    session: &Arc<Session<H::Client>>,
) {
    if let Err(reason) = handler.on_message(session, Message::Text("0")).await {
        session.close(reason);
    }
}

/// The live sessions of a node, and what every transport needs to know.
pub(crate) struct Engine<C> {
    config: Config,
    /// Which web pages may use the node.
    origins: cors::OriginPolicy,
    /// Sessions not yet in a namespace, in all and per address.
    unjoined: Arc<budget::Unjoined>,
    sessions: RwLock<HashMap<Arc<str>, Arc<Session<C>>>>,
    /// Heartbeats, deadlines and cleanup of every session (one task).
    watch: Watch,
    /// Shutting down: no new sessions.
    draining: AtomicBool,
    /// Woken when the last session leaves (see [`Engine::until_empty`]).
    empty: tokio::sync::Notify,
    /// Requests and WebSockets relayed to and from other io-nodes.
    relays: relay::Relays<C>,
}

impl<C: Default + Send + 'static> Engine<C> {
    /// The engine and the receiving end its watch task needs.
    pub(crate) fn new(config: Config) -> (Engine<C>, Closed) {
        let (watch, closed) = Watch::new(Timings {
            ping_interval: config.ping_interval,
            ping_timeout: config.ping_timeout,
            connect_timeout: config.connect_timeout,
        });
        let origins = cors::OriginPolicy::new(
            &config.cors_origins,
            &config.cors_headers,
            config.websocket_origin_check,
            config.tls.is_some(),
        );
        let unjoined = Arc::new(budget::Unjoined::new(
            config.max_unjoined_per_address,
            config.max_unjoined,
            config.trusted_proxies.clone(),
        ));
        let engine = Engine {
            origins,
            unjoined,
            config,
            sessions: RwLock::default(),
            watch,
            draining: AtomicBool::new(false),
            empty: tokio::sync::Notify::new(),
            relays: relay::Relays::default(),
        };
        (engine, closed)
    }

    pub(crate) fn config(&self) -> &Config {
        &self.config
    }

    pub(crate) fn relays(&self) -> &relay::Relays<C> {
        &self.relays
    }

    pub(crate) fn watch(&self) -> &Watch {
        &self.watch
    }

    /// Stops taking new sessions (handshakes get 503).
    pub(crate) fn begin_shutdown(&self) {
        self.draining.store(true, Ordering::Release);
    }

    pub(crate) fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    /// Whether a new client may connect: not shutting down, under the
    /// connection limit.
    pub(crate) fn admits_new_session(&self) -> bool {
        !self.is_draining() && self.connection_count() < self.config.max_connections
    }

    /// Live sessions.
    pub(crate) fn connection_count(&self) -> usize {
        read(&self.sessions).len()
    }

    pub(crate) fn session(&self, sid: &str) -> Option<Arc<Session<C>>> {
        read(&self.sessions).get(sid).cloned()
    }

    /// The session `sid` names, unless it is closed: a closed session is
    /// gone for the client even before the watch task has cleaned it up.
    pub(crate) fn live_session(&self, sid: &str) -> Option<Arc<Session<C>>> {
        self.session(sid).filter(|session| !session.is_closed())
    }

    /// A place for a new session from this request's client in the budget
    /// of sessions not yet joined, if there is one.
    pub(crate) fn reserve_unjoined(
        &self,
        peer: std::net::IpAddr,
        headers: &::http::HeaderMap,
    ) -> Option<budget::Ticket> {
        let address = self.unjoined.client_address(peer, headers);
        let ticket = self.unjoined.reserve(address);
        if ticket.is_none() {
            metrics::counter!("iocluster_handshakes_refused_total").increment(1);
            tracing::debug!(%address, "too many sessions not yet joined: handshake refused");
        }
        ticket
    }

    /// Opens a session; the watch task looks after it from now on.
    pub(crate) fn open_session(
        &self,
        handshake: iocluster_protocol::envelope::EncodedHandshake,
        websocket: bool,
        unjoined: budget::Ticket,
        eio3: bool,
    ) -> Arc<Session<C>> {
        let sid: Arc<str> = ids::make(&self.config.node_id, &random_token(20)).into();
        let session = Session::new(
            sid,
            handshake,
            self.config.outbox_capacity,
            websocket,
            &self.watch,
            Some(unjoined),
            eio3,
        );
        let mut sessions = write(&self.sessions);
        sessions.insert(session.sid.clone(), session.clone());
        metrics::gauge!("iocluster_connections").set(sessions.len() as f64);
        metrics::counter!("iocluster_connections_opened_total").increment(1);
        drop(sessions);
        tracing::debug!(sid = %session.sid, websocket, "session opened");
        session
    }

    /// Takes a closed session out (the watch task's cleanup).
    fn remove(&self, sid: &str) -> Option<Arc<Session<C>>> {
        let mut sessions = write(&self.sessions);
        let session = sessions.remove(sid)?;
        metrics::gauge!("iocluster_connections").set(sessions.len() as f64);
        if sessions.is_empty() {
            self.empty.notify_waiters();
        }
        drop(sessions);
        let reason = session.close_reason();
        metrics::counter!("iocluster_connections_closed_total", "reason" => reason.as_str())
            .increment(1);
        Some(session)
    }

    /// The sessions `due` picks, collected under the read lock (the check
    /// must be cheap: new sessions wait for it).
    fn due_sessions(&self, due: impl Fn(&Session<C>) -> bool) -> Vec<Arc<Session<C>>> {
        read(&self.sessions)
            .values()
            .filter(|session| due(session))
            .cloned()
            .collect()
    }

    /// Closes every session.
    pub(crate) fn close_all(&self, reason: CloseReason) {
        let sessions: Vec<_> = read(&self.sessions).values().cloned().collect();
        for session in sessions {
            session.close(reason);
        }
    }

    /// Completes once no session is left (each closed one cleaned up by the
    /// watch task).
    pub(crate) async fn until_empty(&self) {
        loop {
            let mut notified = std::pin::pin!(self.empty.notified());
            // Enabled before the check, so a removal in between wakes us.
            notified.as_mut().enable();
            if self.connection_count() == 0 {
                return;
            }
            notified.await;
        }
    }
}

/// A random URL-safe token from the thread's CSPRNG.
pub(crate) fn random_token(len: usize) -> String {
    use rand::Rng;
    let mut rng = rand::rng();
    (0..len)
        .map(|_| {
            char::from(crate::config::ALPHABET[rng.random_range(0..crate::config::ALPHABET.len())])
        })
        .collect()
}

fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
