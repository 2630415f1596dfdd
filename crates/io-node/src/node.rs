//! The io-node's shared state and its rules: which sockets exist, who is in
//! which room, how a client packet becomes an event, and how a command from an
//! app-node reaches clients.
//!
//! Lock order, never reversed: a socket's state, then its session's state, then
//! the registry. No lock is held across an `.await`.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use iocluster_protocol::envelope::{self, AckReply, Command, EventKind, Reply};
use iocluster_protocol::keys::Keys;
use iocluster_protocol::socketio::{self, PacketKind};
use iocluster_protocol::{engine, ids};
use serde_bytes::ByteBuf;
use tokio_tungstenite::tungstenite::Utf8Bytes;

use crate::bridge::{Bridge, LedgerOp};
use crate::config::Config;
use crate::session::{CloseReason, Frame, PartialPacket, Session, Watch};
use crate::socket::{Inflight, Phase, Queued, Socket, SocketState};

/// Sockets by id, by namespace and by room. Room members are indexed by the
/// room's channel name, the unit this node subscribes to.
#[derive(Default)]
struct Registry {
    sockets: HashMap<Arc<str>, Arc<Socket>>,
    /// Admitted sockets of each namespace.
    namespaces: HashMap<Arc<str>, HashMap<Arc<str>, Arc<Socket>>>,
    rooms: HashMap<String, HashMap<Arc<str>, Arc<Socket>>>,
}

impl Registry {
    /// Removes a socket from a room's members; returns the channel when the
    /// room has no local member left (time to unsubscribe).
    fn remove_member(&mut self, channel: String, sid: &str) -> Option<String> {
        let members = self.rooms.get_mut(&channel)?;
        members.remove(sid);
        if !members.is_empty() {
            return None;
        }
        self.rooms.remove(&channel);
        Some(channel)
    }
}

/// Remembers recent emit ids, so an emit that reached this node on several
/// channels is delivered once.
struct Dedupe {
    seen: HashSet<u64>,
    order: VecDeque<u64>,
}

const DEDUPE_WINDOW: usize = 4096;

impl Dedupe {
    fn first_time(&mut self, id: u64) -> bool {
        if !self.seen.insert(id) {
            return false;
        }
        self.order.push_back(id);
        if self.order.len() > DEDUPE_WINDOW
            && let Some(old) = self.order.pop_front()
        {
            self.seen.remove(&old);
        }
        true
    }
}

struct NamespaceCache {
    served: HashSet<String>,
    refreshed: Option<Instant>,
}

/// The largest rooms a node lists in its registry entry.
const STATS_ROOMS: usize = 100;

/// How stale the served-namespace list may be before a miss refreshes it.
const NAMESPACE_REFRESH: Duration = Duration::from_millis(250);

/// A queue item takes no more events once it holds this many bytes (it
/// always takes one, whatever its size).
const BATCH_BYTES: usize = 64 * 1024;

pub struct Node {
    /// This node, for the tasks it spawns.
    me: std::sync::Weak<Node>,
    config: Config,
    keys: Keys,
    bridge: Bridge,
    sessions: RwLock<HashMap<Arc<str>, Arc<Session>>>,
    /// Heartbeats, deadlines and cleanup of every session (one task).
    watch: Watch,
    registry: RwLock<Registry>,
    dedupe: Mutex<Dedupe>,
    namespaces: RwLock<NamespaceCache>,
    redis: redis::aio::ConnectionManager,
    /// Serializes on-demand namespace refreshes.
    refresh_lock: tokio::sync::Mutex<()>,
    /// A ledger rewrite is on its way to Redis (see [`Node::resync`]).
    resync_pending: AtomicBool,
    /// Shutting down: no new clients.
    draining: AtomicBool,
    /// Totals for the registry's stats (rates are computed by readers).
    events_out: AtomicU64,
    deliveries: AtomicU64,
    readiness: iocluster_ops::Readiness,
    /// Metrics recorded per packet, event or command.
    hot: crate::stats::HotMetrics,
}

impl Node {
    pub(crate) fn new(
        config: Config,
        bridge: Bridge,
        redis: redis::aio::ConnectionManager,
        watch: Watch,
    ) -> Arc<Node> {
        Arc::new_cyclic(|me| Node {
            me: me.clone(),
            keys: Keys::new(config.prefix.clone()),
            config,
            bridge,
            sessions: RwLock::default(),
            watch,
            registry: RwLock::default(),
            dedupe: Mutex::new(Dedupe {
                seen: HashSet::new(),
                order: VecDeque::new(),
            }),
            namespaces: RwLock::new(NamespaceCache {
                served: HashSet::new(),
                refreshed: None,
            }),
            redis,
            refresh_lock: tokio::sync::Mutex::new(()),
            resync_pending: AtomicBool::new(false),
            draining: AtomicBool::new(false),
            events_out: AtomicU64::new(0),
            deliveries: AtomicU64::new(0),
            readiness: iocluster_ops::Readiness::default(),
            hot: crate::stats::HotMetrics::new(),
        })
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn id(&self) -> &str {
        &self.config.node_id
    }

    pub(crate) fn hot(&self) -> &crate::stats::HotMetrics {
        &self.hot
    }

    pub(crate) fn keys(&self) -> &Keys {
        &self.keys
    }

    pub(crate) fn bridge(&self) -> &Bridge {
        &self.bridge
    }

    pub(crate) fn redis(&self) -> redis::aio::ConnectionManager {
        self.redis.clone()
    }

    /// Ready: Redis answers and the node is not shutting down.
    pub(crate) fn readiness(&self) -> &iocluster_ops::Readiness {
        &self.readiness
    }

    pub(crate) fn set_redis_ok(&self, ok: bool) {
        self.readiness.set(ok && !self.is_draining());
    }

    /// Stops taking new clients (handshakes get 503) and reports not ready.
    pub(crate) fn begin_shutdown(&self) {
        self.draining.store(true, Ordering::Release);
        self.readiness.set(false);
    }

    pub(crate) fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    /// Whether a new client may connect: not shutting down, under the
    /// connection limit.
    pub(crate) fn admits_new_session(&self) -> bool {
        !self.is_draining() && self.connection_count() < self.config.max_connections
    }

    /// Live Engine.IO sessions.
    pub fn connection_count(&self) -> usize {
        read(&self.sessions).len()
    }

    /// What the registry publishes about this node besides its lease, as
    /// `(field, value)` pairs: sockets per namespace, the largest rooms
    /// (reserved `$` rooms left out), distinct users, and running totals of
    /// events queued and frames delivered (readers derive rates).
    pub(crate) fn stats(&self) -> Vec<(&'static str, String)> {
        let room_prefix = self.keys.room_channel("", "");
        let room_prefix = room_prefix.trim_end_matches(',');
        let (namespaces, mut rooms, users) = {
            let registry = read(&self.registry);
            let namespaces: serde_json::Map<String, serde_json::Value> = registry
                .namespaces
                .iter()
                .map(|(nsp, members)| (nsp.to_string(), members.len().into()))
                .collect();
            let mut users = 0usize;
            let mut rooms: Vec<(String, usize)> = Vec::new();
            for (channel, members) in &registry.rooms {
                let Some(name) = channel.strip_prefix(room_prefix) else {
                    continue;
                };
                let room = name.split_once(',').map_or("", |(_, room)| room);
                if room.starts_with(ids::RESERVED_ROOM_PREFIX) {
                    users += usize::from(room.starts_with("$user:"));
                    continue;
                }
                rooms.push((name.to_owned(), members.len()));
            }
            (namespaces, rooms, users)
        };
        let total_rooms = rooms.len();
        let largest_first =
            |a: &(String, usize), b: &(String, usize)| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0));
        // Only the largest matter: partition in linear time, sort just them.
        if rooms.len() > STATS_ROOMS {
            rooms.select_nth_unstable_by(STATS_ROOMS, largest_first);
            rooms.truncate(STATS_ROOMS);
        }
        rooms.sort_unstable_by(largest_first);
        let rooms: serde_json::Map<String, serde_json::Value> = rooms
            .into_iter()
            .map(|(name, size)| (name, size.into()))
            .collect();
        vec![
            (
                "namespaces",
                serde_json::Value::Object(namespaces).to_string(),
            ),
            ("rooms", serde_json::Value::Object(rooms).to_string()),
            ("room_count", total_rooms.to_string()),
            ("users", users.to_string()),
            (
                "events",
                self.events_out.load(Ordering::Relaxed).to_string(),
            ),
            (
                "deliveries",
                self.deliveries.load(Ordering::Relaxed).to_string(),
            ),
        ]
    }

    /// The room channels this node has members in (to resubscribe after a
    /// Redis reconnect).
    pub(crate) fn room_channels(&self) -> Vec<String> {
        read(&self.registry).rooms.keys().cloned().collect()
    }

    /// Publishes through the writer task.
    pub(crate) fn publish(&self, channel: String, payload: Vec<u8>) {
        if !self.bridge.publish(channel, payload) {
            tracing::warn!("outgoing buffer full: a reply to an app-node was dropped");
        }
    }

    // ---- sessions -------------------------------------------------------

    pub(crate) fn new_sid(&self) -> Arc<str> {
        ids::make(self.id(), &random_token(20)).into()
    }

    pub(crate) fn insert_session(&self, session: Arc<Session>) {
        let mut sessions = write(&self.sessions);
        sessions.insert(session.sid.clone(), session);
        metrics::gauge!("iocluster_connections").set(sessions.len() as f64);
        metrics::counter!("iocluster_connections_opened_total").increment(1);
    }

    pub(crate) fn session(&self, sid: &str) -> Option<Arc<Session>> {
        read(&self.sessions).get(sid).cloned()
    }

    pub(crate) fn watch(&self) -> &Watch {
        &self.watch
    }

    /// The sessions `due` picks, collected under the read lock (the check
    /// must be cheap: new sessions wait for it).
    pub(crate) fn due_sessions(&self, due: impl Fn(&Session) -> bool) -> Vec<Arc<Session>> {
        read(&self.sessions)
            .values()
            .filter(|session| due(session))
            .cloned()
            .collect()
    }

    /// Closes every session (shutdown).
    pub(crate) fn close_all(&self, reason: CloseReason) {
        let sessions: Vec<_> = read(&self.sessions).values().cloned().collect();
        for session in sessions {
            session.close(reason);
        }
    }

    /// Cleanup after a session closed: its sockets disconnect.
    pub(crate) fn on_session_closed(&self, sid: &str) {
        let session = {
            let mut sessions = write(&self.sessions);
            let Some(session) = sessions.remove(sid) else {
                return;
            };
            metrics::gauge!("iocluster_connections").set(sessions.len() as f64);
            session
        };
        let reason = session.close_reason();
        metrics::counter!("iocluster_connections_closed_total", "reason" => reason.as_str())
            .increment(1);
        let sockets: Vec<_> = {
            let mut state = session.lock();
            state.partial = None;
            state.sockets.drain().map(|(_, socket)| socket).collect()
        };
        for socket in sockets {
            self.close_socket(&socket, reason.as_str());
        }
        tracing::debug!(sid = %session.sid, reason = reason.as_str(), "session closed");
    }

    // ---- client packets -------------------------------------------------

    /// Handles one Engine.IO packet from a client. An error closes the
    /// session with that reason.
    pub(crate) async fn on_engine_packet(
        &self,
        session: &Arc<Session>,
        packet: engine::Packet<'_>,
    ) -> Result<(), CloseReason> {
        match packet {
            engine::Packet::Pong(_) => session.on_pong(&self.watch),
            engine::Packet::Ping(data) => {
                let mut pong = String::with_capacity(1 + data.len());
                pong.push('3');
                pong.push_str(data);
                session.send(Frame::Text(pong.into()));
            }
            engine::Packet::Message(text) => self.on_socketio_text(session, text).await?,
            engine::Packet::Binary(bytes) => {
                self.on_attachment(session, bytes.into_owned()).await?
            }
            engine::Packet::Close => return Err(CloseReason::TransportClose),
            engine::Packet::Noop => {}
            engine::Packet::Open(_) | engine::Packet::Upgrade => {
                return Err(CloseReason::ParseError);
            }
        }
        Ok(())
    }

    async fn on_socketio_text(
        &self,
        session: &Arc<Session>,
        text: &str,
    ) -> Result<(), CloseReason> {
        let packet = socketio::decode(text, self.config.max_attachments).map_err(|error| {
            tracing::debug!(sid = %session.sid, %error, "invalid Socket.IO packet");
            CloseReason::ParseError
        })?;
        if session.lock().partial.is_some() {
            // A new packet before the previous one's attachments all arrived.
            return Err(CloseReason::ParseError);
        }
        if packet.attachments > 0 {
            session.lock().partial = Some(Box::new(PartialPacket {
                kind: packet.kind,
                nsp: packet.nsp.to_owned(),
                id: packet.id,
                data: packet.data.to_owned(),
                expected: packet.attachments,
                bin: Vec::with_capacity(packet.attachments),
            }));
            return Ok(());
        }
        self.on_socketio_packet(
            session,
            packet.kind,
            packet.nsp,
            packet.id,
            packet.data,
            Vec::new(),
        )
        .await
    }

    async fn on_attachment(
        &self,
        session: &Arc<Session>,
        bytes: Vec<u8>,
    ) -> Result<(), CloseReason> {
        let complete = {
            let mut state = session.lock();
            let partial = state.partial.as_mut().ok_or(CloseReason::ParseError)?;
            partial.bin.push(ByteBuf::from(bytes));
            if partial.bin.len() == partial.expected {
                state.partial.take()
            } else {
                None
            }
        };
        if let Some(packet) = complete {
            self.on_socketio_packet(
                session,
                packet.kind,
                &packet.nsp,
                packet.id,
                &packet.data,
                packet.bin,
            )
            .await?;
        }
        Ok(())
    }

    async fn on_socketio_packet(
        &self,
        session: &Arc<Session>,
        kind: PacketKind,
        nsp: &str,
        id: Option<u64>,
        data: &str,
        bin: Vec<ByteBuf>,
    ) -> Result<(), CloseReason> {
        self.hot.client_packet(kind).increment(1);
        match kind {
            PacketKind::Connect => self.on_connect(session, nsp, data).await,
            PacketKind::Disconnect => {
                let socket = session.lock().sockets.remove(nsp);
                if let Some(socket) = socket {
                    self.close_socket(&socket, "client namespace disconnect");
                }
            }
            PacketKind::Event | PacketKind::BinaryEvent => {
                let socket = session.lock().sockets.get(nsp).cloned();
                let Some(socket) = socket else {
                    tracing::debug!(sid = %session.sid, nsp, "event for a namespace the client did not join");
                    return Ok(());
                };
                let queued = Queued {
                    kind: EventKind::Message,
                    data: Some(data.to_owned()),
                    bin,
                    ack: id,
                    reason: None,
                };
                let mut state = socket.lock();
                if state.queue.len() >= self.config.max_pending_events {
                    drop(state);
                    return Err(CloseReason::TooManyPendingEvents);
                }
                state.queue.push_back(queued);
                self.dispatch_next(&socket, &mut state);
            }
            PacketKind::Ack | PacketKind::BinaryAck => {
                let socket = session.lock().sockets.get(nsp).cloned();
                let (Some(socket), Some(id)) = (socket, id) else {
                    return Ok(());
                };
                let route = socket.lock().acks.remove(&id);
                let Some(route) = route else {
                    tracing::debug!(sid = %socket.id, id, "ack for an unknown id");
                    return Ok(());
                };
                let reply = Reply::Ack(AckReply {
                    id: route.id,
                    nsp: nsp.to_owned(),
                    sid: socket.id.to_string(),
                    data: data.to_owned(),
                    bin,
                });
                if !self
                    .bridge
                    .publish(self.keys.app_channel(&route.app), reply.encode())
                {
                    return Err(CloseReason::Overloaded);
                }
            }
            PacketKind::ConnectError => return Err(CloseReason::ParseError),
        }
        Ok(())
    }

    async fn on_connect(&self, session: &Arc<Session>, nsp: &str, auth: &str) {
        if session.lock().sockets.contains_key(nsp) {
            tracing::debug!(sid = %session.sid, nsp, "second CONNECT to the same namespace ignored");
            return;
        }
        if !self.serves(nsp).await {
            let payload = socketio::connect_error_payload("Invalid namespace", None);
            session.send(text_frame(PacketKind::ConnectError, nsp, None, &payload));
            return;
        }
        let user = match crate::auth::check(self, auth).await {
            crate::auth::Verdict::Anonymous => None,
            crate::auth::Verdict::User(user) => Some(user),
            crate::auth::Verdict::Refused => {
                metrics::counter!("iocluster_auth_refused_total").increment(1);
                let payload = socketio::connect_error_payload("Unauthorized", None);
                session.send(text_frame(PacketKind::ConnectError, nsp, None, &payload));
                return;
            }
        };
        let auth = (!auth.is_empty()).then(|| auth.to_owned());
        // Without `auth` the socket shares the session's handshake.
        let handshake = match &auth {
            Some(auth) => match session.handshake.with_auth(auth.clone()) {
                Ok(handshake) => handshake,
                Err(error) => {
                    // Our own encoding: cannot happen, but never admit a
                    // socket whose app-nodes would not see its `auth`.
                    tracing::error!(%error, "cannot add auth to the handshake");
                    session.close(CloseReason::ParseError);
                    return;
                }
            },
            None => session.handshake.clone(),
        };
        // Sockets of a namespace share its name.
        let nsp: Arc<str> = read(&self.registry)
            .namespaces
            .get_key_value(nsp)
            .map_or_else(|| nsp.into(), |(known, _)| known.clone());
        let socket = Arc::new(Socket::new(
            ids::make(self.id(), &random_token(20)).into(),
            nsp.clone(),
            session.clone(),
            handshake,
        ));
        {
            let mut state = session.lock();
            if session.is_closed() || state.sockets.contains_key(&nsp) {
                return;
            }
            state.sockets.insert(nsp.clone(), socket.clone());
            state.ever_connected = true;
        }
        write(&self.registry)
            .sockets
            .insert(socket.id.clone(), socket.clone());
        {
            let mut state = socket.lock();
            if let Some(user) = user {
                // Admitted here: CONNECT in the user's room; the connect
                // event still tells the app-nodes. The CONNECT goes out once
                // the user's room channel is subscribed, so that a publish to
                // the user made after the client saw it reaches it.
                self.join_locked(&socket, &mut state, vec![ids::user_room(&user)]);
                state.phase = Phase::Connected;
                let payload = format!(r#"{{"sid":"{}"}}"#, socket.id);
                let connect = text_frame(PacketKind::Connect, &socket.nsp, None, &payload);
                let session = socket.session.clone();
                self.bridge.when_subscribed(move || {
                    session.send(connect);
                });
                write(&self.registry)
                    .namespaces
                    .entry(socket.nsp.clone())
                    .or_default()
                    .insert(socket.id.clone(), socket.clone());
            }
            self.bridge.ledger(LedgerOp::Create(
                socket.id.clone(),
                socket.ledger_entry(self.id(), &state),
            ));
            state.queue.push_back(Queued {
                kind: EventKind::Connect,
                data: auth,
                bin: Vec::new(),
                ack: None,
                reason: None,
            });
            self.dispatch_next(&socket, &mut state);
        }
        tracing::debug!(sid = %session.sid, socket = %socket.id, nsp = %nsp, "connect event queued");
        if !matches!(socket.lock().phase, Phase::Connected) {
            self.spawn_admission_timeout(socket);
        }
    }

    fn spawn_admission_timeout(&self, socket: Arc<Socket>) {
        let timeout = self.config.admission_timeout;
        let node = self.me.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = tokio::time::sleep(timeout) => {}
                _ = socket.decided.notified() => return,
                _ = socket.session.closed() => return,
            }
            let Some(node) = node.upgrade() else { return };
            let mut state = socket.lock();
            if !matches!(state.phase, Phase::Pending { closed: false, .. }) {
                return;
            }
            tracing::info!(socket = %socket.id, "no app-node answered the connection in time");
            let payload = socketio::connect_error_payload("Connection timeout", None);
            socket.session.send(text_frame(
                PacketKind::ConnectError,
                &socket.nsp,
                None,
                &payload,
            ));
            state.phase = Phase::Pending {
                buffered: Vec::new(),
                closed: true,
            };
            // The client never saw this socket: what it sent meanwhile goes.
            state.queue.clear();
            state
                .queue
                .push_back(Queued::disconnect("admission timeout"));
            node.leave_all(&socket, &state);
            drop(state);
            socket.session.lock().sockets.remove(&socket.nsp);
        });
    }

    /// Starts the socket's next queue item if none is with an app-node.
    fn dispatch_next(&self, socket: &Arc<Socket>, state: &mut SocketState) {
        if state.inflight.is_some() {
            return;
        }
        // A socket whose admission is undecided sends nothing past its connect
        // event; one that was closed meanwhile waits for the decision.
        if matches!(state.phase, Phase::Pending { .. }) && state.next_seq > 0 {
            return;
        }
        let Some(queued) = state.queue.pop_front() else {
            return;
        };
        let kind = queued.kind;
        let mut seq = state.next_seq;
        let mut envelope = socket.encode_event(self.id(), state, seq, queued);
        // Messages that piled up behind go in the same item, all with this
        // snapshot: the app-node carries each handler's joins and data into
        // the next handler itself.
        let mut events = 1u32;
        while kind == EventKind::Message
            && (events as usize) < self.config.event_batch
            && envelope.len() < BATCH_BYTES
            && state
                .queue
                .front()
                .is_some_and(|next| next.kind == EventKind::Message)
        {
            let Some(queued) = state.queue.pop_front() else {
                break;
            };
            seq += 1;
            socket.encode_event_into(&mut envelope, self.id(), state, seq, queued);
            events += 1;
        }
        state.next_seq = seq + 1;
        if state.queue.is_empty() {
            // An idle socket keeps no queue buffer.
            state.queue.shrink_to_fit();
        }
        self.hot.events_out(kind).increment(u64::from(events));
        if events > 1 {
            self.hot.batched_events.increment(u64::from(events));
        }
        self.events_out
            .fetch_add(u64::from(events), Ordering::Relaxed);
        if kind == EventKind::Disconnect {
            // The disconnect event is the last: nothing will come back for it.
            // It goes through the ledger, so it is announced once even if
            // this node is being declared dead right now.
            state.settled = true;
            state.queue.clear();
            self.bridge
                .ledger(LedgerOp::Announce(socket.id.clone(), envelope));
            write(&self.registry).sockets.remove(&socket.id);
            return;
        }
        let envelope = Bytes::from(envelope);
        let number = self.bridge.push_event(envelope.clone());
        state.inflight = Some(Inflight {
            seq,
            events,
            envelope,
            since_us: self.watch.now_us(),
            number: number.unwrap_or(0),
        });
        if number.is_none() {
            tracing::warn!(socket = %socket.id, "event buffer full: closing the client");
            socket.session.close(CloseReason::Overloaded);
        }
    }

    /// The socket is gone for the client: leave every room, and queue its
    /// disconnect event.
    pub(crate) fn close_socket(&self, socket: &Arc<Socket>, reason: &str) {
        let mut state = socket.lock();
        match &mut state.phase {
            Phase::Closed | Phase::Pending { closed: true, .. } => return,
            Phase::Pending { closed, buffered } => {
                *closed = true;
                buffered.clear();
                socket.decided.notify_one();
            }
            Phase::Connected => state.phase = Phase::Closed,
        }
        state.acks.clear();
        state.queue.push_back(Queued::disconnect(reason));
        self.leave_all(socket, &state);
        self.dispatch_next(socket, &mut state);
    }

    /// Removes the socket from its namespace and from the index of every room
    /// (its own list of rooms stays, for the disconnect event's snapshot).
    fn leave_all(&self, socket: &Arc<Socket>, state: &SocketState) {
        let mut unsubscribe = Vec::new();
        {
            let mut registry = write(&self.registry);
            if let Some(members) = registry.namespaces.get_mut(&socket.nsp) {
                members.remove(&socket.id);
                if members.is_empty() {
                    registry.namespaces.remove(&socket.nsp);
                }
            }
            for room in &state.rooms {
                let channel = self.keys.room_channel(&socket.nsp, room);
                unsubscribe.extend(registry.remove_member(channel, &socket.id));
            }
        }
        for channel in unsubscribe {
            self.bridge.unsubscribe(channel);
        }
    }

    // ---- commands -------------------------------------------------------

    /// Applies one command from an app-node.
    pub(crate) fn apply(&self, command: Command) {
        self.hot.command(&command).increment(1);
        match command {
            Command::Emit(emit) => self.emit(emit),
            Command::Ack(ack) => {
                let Some(socket) = self.socket(&ack.sid, &ack.nsp) else {
                    return;
                };
                let frame =
                    packet_frame(PacketKind::Ack, &ack.nsp, Some(ack.id), &ack.data, ack.bin);
                let mut state = socket.lock();
                socket.deliver(&mut state, frame, self.config.outbox_capacity);
            }
            Command::Join(join) => {
                if let Some(socket) = self.socket(&join.sid, &join.nsp) {
                    self.join(&socket, join.rooms);
                }
                if let Some(reply) = join.reply {
                    // Sent after every subscription asked for so far is active.
                    self.bridge.reply_when_subscribed(
                        self.keys.app_channel(&reply.app),
                        Reply::Joined(envelope::Joined { id: reply.id }).encode(),
                    );
                }
            }
            Command::Leave(leave) => {
                if let Some(socket) = self.socket(&leave.sid, &leave.nsp) {
                    self.leave(&socket, &leave.rooms);
                }
            }
            Command::SetData(set) => {
                if let Some(socket) = self.socket(&set.sid, &set.nsp) {
                    socket.lock().data = Some(set.data);
                    self.bridge.ledger_stale(socket.id.clone());
                }
            }
            Command::Disconnect(disconnect) => {
                let Some(socket) = self.socket(&disconnect.sid, &disconnect.nsp) else {
                    return;
                };
                if disconnect.close {
                    socket.session.close(CloseReason::ForcedClose);
                    return;
                }
                self.server_disconnect(&socket);
            }
            Command::Done(done) => self.done(done),
        }
    }

    /// Disconnects a socket from the server side (the client gets DISCONNECT
    /// and does not reconnect on its own).
    fn server_disconnect(&self, socket: &Arc<Socket>) {
        {
            let mut state = socket.lock();
            if matches!(state.phase, Phase::Connected) {
                let frame = text_frame(PacketKind::Disconnect, &socket.nsp, None, "");
                socket.deliver(&mut state, frame, self.config.outbox_capacity);
            }
        }
        socket.session.lock().sockets.remove(&socket.nsp);
        self.close_socket(socket, "server namespace disconnect");
    }

    fn socket(&self, sid: &str, nsp: &str) -> Option<Arc<Socket>> {
        let socket = read(&self.registry).sockets.get(sid).cloned()?;
        (*socket.nsp == *nsp).then_some(socket)
    }

    fn done(&self, done: envelope::Done) {
        let Some(socket) = self.socket(&done.sid, &done.nsp) else {
            return;
        };
        let mut state = socket.lock();
        if state.inflight.as_ref().map(|inflight| inflight.seq) != Some(done.seq) {
            tracing::debug!(socket = %socket.id, seq = done.seq, "done for an event not in flight");
            return;
        }
        if let Some(inflight) = state.inflight.take() {
            // From the item's (last) push to its done: Redis, the queue's
            // wait for an app-node, the handlers, and the way back.
            let micros = self.watch.now_us().saturating_sub(inflight.since_us);
            self.hot
                .round_trip
                .record(Duration::from_micros(micros).as_secs_f64());
        }
        if done.seq == 0 {
            if matches!(state.phase, Phase::Connected) {
                // Admitted by this node already; the app-node refusing it
                // now disconnects it.
                if let Some(reject) = done.reject {
                    drop(state);
                    tracing::debug!(socket = %socket.id, message = %reject.message, "app-node refused a socket admitted by credentials");
                    self.server_disconnect(&socket);
                    return;
                }
            } else {
                self.admit(&socket, &mut state, done.reject);
            }
        }
        self.dispatch_next(&socket, &mut state);
    }

    /// Applies an app-node's decision on a connection.
    fn admit(
        &self,
        socket: &Arc<Socket>,
        state: &mut SocketState,
        reject: Option<envelope::Reject>,
    ) {
        let Phase::Pending { buffered, closed } =
            std::mem::replace(&mut state.phase, Phase::Closed)
        else {
            return;
        };
        socket.decided.notify_one();
        match (reject, closed) {
            (Some(reject), _) => {
                if !closed {
                    let payload =
                        socketio::connect_error_payload(&reject.message, reject.data.as_deref());
                    socket.session.send(text_frame(
                        PacketKind::ConnectError,
                        &socket.nsp,
                        None,
                        &payload,
                    ));
                    socket.session.lock().sockets.remove(&socket.nsp);
                }
                // The application refused it: no disconnect event will follow.
                state.queue.clear();
                state.settled = true;
                self.bridge.ledger(LedgerOp::Forget(socket.id.clone()));
                write(&self.registry).sockets.remove(&socket.id);
                self.leave_all(socket, state);
            }
            (None, true) => {
                // Admitted after the client left: the queued disconnect follows.
            }
            (None, false) => {
                state.phase = Phase::Connected;
                let payload = format!(r#"{{"sid":"{}"}}"#, socket.id);
                socket
                    .session
                    .send(text_frame(PacketKind::Connect, &socket.nsp, None, &payload));
                for frame in buffered {
                    socket.session.send(frame);
                }
                write(&self.registry)
                    .namespaces
                    .entry(socket.nsp.clone())
                    .or_default()
                    .insert(socket.id.clone(), socket.clone());
            }
        }
    }

    fn join(&self, socket: &Arc<Socket>, rooms: Vec<String>) {
        let mut state = socket.lock();
        if matches!(
            state.phase,
            Phase::Closed | Phase::Pending { closed: true, .. }
        ) {
            return;
        }
        self.join_locked(socket, &mut state, rooms);
        drop(state);
        self.bridge.ledger_stale(socket.id.clone());
    }

    /// Adds the socket to rooms (its state is locked by the caller) and
    /// subscribes to the rooms new to this node.
    fn join_locked(&self, socket: &Arc<Socket>, state: &mut SocketState, rooms: Vec<String>) {
        let mut subscribe = Vec::new();
        {
            let mut registry = write(&self.registry);
            for room in rooms {
                let channel = self.keys.room_channel(&socket.nsp, &room);
                let members = registry.rooms.entry(channel.clone()).or_default();
                if members.is_empty() {
                    subscribe.push(channel);
                }
                members.insert(socket.id.clone(), socket.clone());
                state.rooms.insert(room);
            }
        }
        for channel in subscribe {
            self.bridge.subscribe(channel);
        }
    }

    fn leave(&self, socket: &Arc<Socket>, rooms: &[String]) {
        let mut state = socket.lock();
        let mut unsubscribe = Vec::new();
        {
            let mut registry = write(&self.registry);
            for room in rooms {
                if !state.rooms.remove(room) {
                    continue;
                }
                let channel = self.keys.room_channel(&socket.nsp, room);
                unsubscribe.extend(registry.remove_member(channel, &socket.id));
            }
        }
        drop(state);
        self.bridge.ledger_stale(socket.id.clone());
        for channel in unsubscribe {
            self.bridge.unsubscribe(channel);
        }
    }

    fn emit(&self, emit: envelope::Emit) {
        if let Some(id) = emit.id
            && !self
                .dedupe
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .first_time(id)
        {
            return;
        }
        let recipients = self.recipients(&emit);
        if recipients.is_empty() {
            return;
        }
        let limit = self.config.outbox_capacity;
        match emit.ack {
            None => {
                // Encoded once, shared by every recipient.
                let frame = packet_frame(PacketKind::Event, &emit.nsp, None, &emit.data, emit.bin);
                self.hot.deliveries.increment(recipients.len() as u64);
                self.deliveries
                    .fetch_add(recipients.len() as u64, Ordering::Relaxed);
                for socket in recipients {
                    let mut state = socket.lock();
                    socket.deliver(&mut state, frame.clone(), limit);
                }
            }
            Some(reply_to) => {
                let bin: Arc<[Bytes]> = emit
                    .bin
                    .into_iter()
                    .map(|b| Bytes::from(b.into_vec()))
                    .collect();
                self.hot.deliveries.increment(recipients.len() as u64);
                for socket in recipients {
                    let mut state = socket.lock();
                    let id = state.next_ack;
                    state.next_ack += 1;
                    state.acks.insert(id, reply_to.clone());
                    let frame = shared_packet_frame(
                        PacketKind::Event,
                        &emit.nsp,
                        Some(id),
                        &emit.data,
                        bin.clone(),
                    );
                    socket.deliver(&mut state, frame, limit);
                }
            }
        }
    }

    /// The local sockets an emit is for.
    fn recipients(&self, emit: &envelope::Emit) -> Vec<Arc<Socket>> {
        let registry = read(&self.registry);
        let mut candidates: Vec<Arc<Socket>> = Vec::new();
        if emit.rooms.is_empty() && emit.sids.is_empty() {
            if let Some(members) = registry.namespaces.get(emit.nsp.as_str()) {
                candidates.extend(members.values().cloned());
            }
        } else {
            let several = emit.rooms.len() + emit.sids.len() > 1;
            let mut seen: HashSet<*const Socket> = HashSet::new();
            let mut add = |socket: &Arc<Socket>, candidates: &mut Vec<Arc<Socket>>| {
                if !several || seen.insert(Arc::as_ptr(socket)) {
                    candidates.push(socket.clone());
                }
            };
            for room in &emit.rooms {
                let channel = self.keys.room_channel(&emit.nsp, room);
                if let Some(members) = registry.rooms.get(&channel) {
                    for socket in members.values() {
                        add(socket, &mut candidates);
                    }
                }
                // A socket's own id names a room holding just that socket.
                if let Some(socket) = registry.sockets.get(room.as_str())
                    && *socket.nsp == *emit.nsp
                {
                    add(socket, &mut candidates);
                }
            }
            for sid in &emit.sids {
                if let Some(socket) = registry.sockets.get(sid.as_str())
                    && *socket.nsp == *emit.nsp
                {
                    add(socket, &mut candidates);
                }
            }
        }
        drop(registry);
        if emit.except_rooms.is_empty() && emit.except_sids.is_empty() {
            return candidates;
        }
        candidates.retain(|socket| {
            if emit.except_sids.iter().any(|sid| **sid == *socket.id) {
                return false;
            }
            if emit.except_rooms.is_empty() {
                return true;
            }
            let state = socket.lock();
            !emit
                .except_rooms
                .iter()
                .any(|room| socket.in_room(&state, room))
        });
        candidates
    }

    // ---- ledger and redelivery ------------------------------------------

    /// The current ledger entries of the given sockets, skipping those
    /// already settled.
    pub(crate) fn ledger_entries(&self, sids: Vec<Arc<str>>) -> Vec<(Arc<str>, Vec<u8>)> {
        if sids.is_empty() {
            return Vec::new();
        }
        let sockets: Vec<Arc<Socket>> = {
            let registry = read(&self.registry);
            sids.iter()
                .filter_map(|sid| registry.sockets.get(sid).cloned())
                .collect()
        };
        sockets
            .into_iter()
            .filter_map(|socket| {
                let state = socket.lock();
                (!state.settled)
                    .then(|| (socket.id.clone(), socket.ledger_entry(self.id(), &state)))
            })
            .collect()
    }

    fn all_sockets(&self) -> Vec<Arc<Socket>> {
        read(&self.registry).sockets.values().cloned().collect()
    }

    /// Redis lost its data (restarted without persistence): rewrite the
    /// ledger and push again the events in flight that were written before
    /// the loss (numbered `lost_upto` or less): they were in the lost queue,
    /// or their `done` will never come. At-least-once: an event that had in
    /// fact been handled is handled again.
    pub(crate) fn resync(&self, lost_upto: u64) {
        if self.resync_pending.swap(true, Ordering::AcqRel) {
            return;
        }
        let mut pushed = 0usize;
        for socket in self.all_sockets() {
            let mut state = socket.lock();
            if state.settled {
                continue;
            }
            self.bridge.ledger(LedgerOp::Create(
                socket.id.clone(),
                socket.ledger_entry(self.id(), &state),
            ));
            if let Some(inflight) = state.inflight.as_mut()
                && inflight.number <= lost_upto
            {
                match self.bridge.push_event(inflight.envelope.clone()) {
                    Some(number) => inflight.number = number,
                    None => socket.session.close(CloseReason::Overloaded),
                }
                pushed += 1;
            }
        }
        self.bridge.ledger(LedgerOp::Register);
        tracing::warn!(
            events = pushed,
            "Redis lost its data: ledger rewritten, in-flight events pushed again"
        );
    }

    /// The ledger rewrite reached Redis.
    pub(crate) fn resync_done(&self) {
        self.resync_pending.store(false, Ordering::Release);
    }

    /// Another io-node found this node's lease lapsed and announced its
    /// sockets gone: close every client (they reconnect elsewhere) without
    /// announcing them twice, and open a fresh ledger.
    pub(crate) fn fence(&self) {
        if self.resync_pending.swap(true, Ordering::AcqRel) {
            return;
        }
        tracing::error!(
            "this node's lease lapsed and its clients were declared gone: closing them"
        );
        self.close_all(CloseReason::LeaseLost);
        self.bridge.ledger(LedgerOp::Register);
    }

    /// Pushes again every event with an app-node (its `done` may have been
    /// published while this node could not hear it).
    pub(crate) fn redeliver_inflight(&self) {
        self.redeliver(Duration::ZERO);
    }

    /// Pushes again the events whose `done` is overdue: lost with a Redis
    /// failover, or published while this node's subscription was down.
    pub(crate) fn redeliver_overdue(&self) {
        self.redeliver(self.config.redeliver_after);
    }

    fn redeliver(&self, after: Duration) {
        let mut again = 0usize;
        let mut inflight_now = 0usize;
        let now = self.watch.now_us();
        for socket in self.all_sockets() {
            let mut state = socket.lock();
            let Some(inflight) = state.inflight.as_mut() else {
                continue;
            };
            inflight_now += 1;
            // Each event of an item may take the app-nodes' handler timeout.
            let due = (after * inflight.events).as_micros();
            if u128::from(now.saturating_sub(inflight.since_us)) < due {
                continue;
            }
            inflight.since_us = now;
            if let Some(number) = self.bridge.push_event(inflight.envelope.clone()) {
                inflight.number = number;
                again += 1;
            }
        }
        metrics::counter!("iocluster_redeliveries_total").increment(again as u64);
        metrics::gauge!("iocluster_inflight_events").set(inflight_now as f64);
        if again > 0 {
            tracing::warn!(events = again, "no done in time: events pushed again");
        }
    }

    // ---- namespaces -----------------------------------------------------

    /// Whether an app-node serves `nsp`. The list is refreshed in the
    /// background; a miss refreshes it at most every 250 ms.
    pub(crate) async fn serves(&self, nsp: &str) -> bool {
        {
            let cache = read(&self.namespaces);
            if cache.served.contains(nsp) {
                return true;
            }
            if cache
                .refreshed
                .is_some_and(|at| at.elapsed() < NAMESPACE_REFRESH)
            {
                return false;
            }
        }
        let _guard = self.refresh_lock.lock().await;
        let stale = read(&self.namespaces)
            .refreshed
            .is_none_or(|at| at.elapsed() >= NAMESPACE_REFRESH);
        if stale && let Err(error) = self.refresh_namespaces().await {
            tracing::warn!(%error, "cannot read the served namespaces");
        }
        read(&self.namespaces).served.contains(nsp)
    }

    pub(crate) async fn refresh_namespaces(&self) -> redis::RedisResult<()> {
        let now = crate::bridge::now_ms();
        let mut redis = self.redis.clone();
        let served: Vec<String> = redis::cmd("ZRANGE")
            .arg(self.keys.namespaces())
            .arg(now)
            .arg("+inf")
            .arg("BYSCORE")
            .query_async(&mut redis)
            .await?;
        let mut cache = write(&self.namespaces);
        cache.served = served.into_iter().collect();
        cache.refreshed = Some(Instant::now());
        Ok(())
    }
}

/// A text frame `4<packet>`.
pub(crate) fn text_frame(kind: PacketKind, nsp: &str, id: Option<u64>, data: &str) -> Frame {
    let mut text = String::with_capacity(data.len() + nsp.len() + 8);
    text.push('4');
    socketio::write_header(&mut text, kind, nsp, 0, id);
    text.push_str(data);
    Frame::Text(Utf8Bytes::from(text))
}

fn packet_frame(
    kind: PacketKind,
    nsp: &str,
    id: Option<u64>,
    data: &str,
    bin: Vec<ByteBuf>,
) -> Frame {
    if bin.is_empty() {
        return text_frame(kind, nsp, id, data);
    }
    let bin: Arc<[Bytes]> = bin.into_iter().map(|b| Bytes::from(b.into_vec())).collect();
    shared_packet_frame(kind, nsp, id, data, bin)
}

fn shared_packet_frame(
    kind: PacketKind,
    nsp: &str,
    id: Option<u64>,
    data: &str,
    bin: Arc<[Bytes]>,
) -> Frame {
    if bin.is_empty() {
        return text_frame(kind, nsp, id, data);
    }
    let kind = match kind {
        PacketKind::Event => PacketKind::BinaryEvent,
        PacketKind::Ack => PacketKind::BinaryAck,
        kind => kind,
    };
    let mut text = String::with_capacity(data.len() + nsp.len() + 12);
    text.push('4');
    socketio::write_header(&mut text, kind, nsp, bin.len(), id);
    text.push_str(data);
    Frame::WithBinary(Utf8Bytes::from(text), bin)
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
