//! The Socket.IO layer: sockets, the rooms index, admission, per-socket
//! ordering, fan-out of commands to local recipients, dedupe, acks and
//! limits. Pure state and rules: no I/O, no tasks, no timers. What it
//! cannot do itself it asks of the cluster side through the [`Cluster`]
//! port (push an event, publish a reply, change a subscription, write the
//! ledger), which only queues the work; what it needs decided by Redis
//! (is the namespace served, is this credential registered) it returns to
//! the caller as a [`ConnectRequest`] and takes back as an [`Admission`].
//! Frames go into the sessions' outboxes (the engine's), so every rule can
//! be tested in memory by feeding packets and commands and reading the
//! outboxes and the port (see `tests`).
//!
//! - `socket`: one socket per namespace a client joined: rooms, data,
//!   handshake, its one-at-a-time event sequence.
//! - `packets`: client packets to events (binary reassembly, connect).
//! - `commands`: commands from app-nodes to frames (emit, ack, join, leave,
//!   data, disconnect, done and admission).
//! - `recovery`: the ledger entries, redelivery, and what the node
//!   publishes about itself.
//!
//! Lock order, never reversed: a socket's state, its session's client
//! state, then the registry. No lock is held across an `.await`: nothing
//! here awaits but [`Sockets::until_settled`], which waits for this
//! layer's own state at shutdown.

mod commands;
mod packets;
mod recovery;
mod resume;
pub(crate) mod socket;
#[cfg(test)]
mod tests;

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use bytes::Bytes;
use iocluster_protocol::keys::Keys;
use iocluster_protocol::socketio::PacketKind;
use serde_bytes::ByteBuf;

pub(crate) use packets::{Admission, ConnectRequest};
pub(crate) use socket::Socket;

use crate::clock::Clock;
use crate::engine::{self, Frame};
use crate::stats::HotMetrics;

/// A client's session, as this layer sees it.
pub(crate) type Session = engine::Session<Client>;

/// What a session holds of Socket.IO.
#[derive(Default)]
pub(crate) struct Client {
    /// Sockets by namespace.
    sockets: SocketList,
    /// Boxed: most sessions never send a packet with attachments.
    partial: Option<Box<PartialPacket>>,
}

/// A Socket.IO packet with binary attachments still arriving.
#[derive(Debug)]
struct PartialPacket {
    kind: PacketKind,
    nsp: String,
    id: Option<u64>,
    data: String,
    expected: usize,
    bin: Vec<ByteBuf>,
}

/// A session's sockets by namespace: a list sized to fit, since most clients
/// use one namespace (a map reserves room for several).
#[derive(Default)]
struct SocketList(Vec<(Arc<str>, Arc<Socket>)>);

impl SocketList {
    fn get(&self, nsp: &str) -> Option<&Arc<Socket>> {
        self.0
            .iter()
            .find(|(known, _)| **known == *nsp)
            .map(|(_, socket)| socket)
    }

    fn contains(&self, nsp: &str) -> bool {
        self.get(nsp).is_some()
    }

    /// Adds or replaces the socket of `nsp`.
    fn insert(&mut self, nsp: Arc<str>, socket: Arc<Socket>) {
        match self.0.iter_mut().find(|(known, _)| *known == nsp) {
            Some((_, slot)) => *slot = socket,
            None => {
                self.0.reserve_exact(1);
                self.0.push((nsp, socket));
            }
        }
    }

    fn remove(&mut self, nsp: &str) -> Option<Arc<Socket>> {
        let at = self.0.iter().position(|(known, _)| **known == *nsp)?;
        let (_, socket) = self.0.swap_remove(at);
        if self.0.is_empty() {
            self.0 = Vec::new();
        }
        Some(socket)
    }

    fn iter(&self) -> impl Iterator<Item = &Arc<Socket>> {
        self.0.iter().map(|(_, socket)| socket)
    }

    /// Takes every socket out.
    fn drain(&mut self) -> impl Iterator<Item = Arc<Socket>> {
        std::mem::take(&mut self.0)
            .into_iter()
            .map(|(_, socket)| socket)
    }
}

/// Connection state recovery in a namespace, as the cluster side found it.
#[derive(Debug, Clone)]
pub(crate) struct NamespaceRecovery {
    /// How long (ms) a disconnected socket's session is kept.
    pub window_ms: u64,
    /// The cluster's key for private ids.
    pub key: Arc<str>,
}

impl NamespaceRecovery {
    pub(crate) fn for_socket(&self, sid: &str) -> socket::SocketRecovery {
        socket::SocketRecovery {
            pid: iocluster_protocol::recovery::pid(&self.key, sid).into(),
            window_ms: self.window_ms,
        }
    }
}

/// Ledger work (see `cluster::ledger`), applied in order after the events
/// queued before it. Never dropped: one create and one announce or forget
/// per socket bound it.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum LedgerOp {
    /// A new socket's entry.
    Create(Arc<str>, Vec<u8>),
    /// The socket needs no announcement (its connection was refused).
    Forget(Arc<str>),
    /// The socket's own disconnect event.
    Announce(Arc<str>, Vec<u8>),
    /// The socket's session, parked for connection state recovery for this
    /// many ms, with its disconnect event for when that time is over.
    Park(Arc<str>, Vec<u8>, u64),
    /// A recovered socket lives on this node though its id names another:
    /// where to find it (`P:where`).
    Locate(Arc<str>),
    /// This node has a ledger (again).
    Register,
}

/// What the Socket.IO rules ask of the cluster side. Every call only queues
/// work (the cluster's tasks carry it out, in order), so it may be made
/// with locks held.
pub(crate) trait Cluster: Send + Sync {
    /// Queues an event (one or more envelopes back to back) for the event
    /// queue; returns its number in the order events were queued, or `None`
    /// when the buffer is full.
    fn push_event(&self, envelope: Bytes, partition: u16) -> Option<u64>;
    /// Queues a publish; `false` when the buffer is full.
    fn publish(&self, channel: String, payload: Vec<u8>) -> bool;
    fn ledger(&self, op: LedgerOp);
    /// The socket's ledger entry changed: rewrite it (once, however often
    /// it changes meanwhile; the cluster asks for it with
    /// [`Sockets::ledger_entries`]).
    fn ledger_stale(&self, sid: Arc<str>);
    fn subscribe(&self, channel: String);
    fn unsubscribe(&self, channel: String);
    /// Publishes once every subscription asked for so far is active.
    fn reply_when_subscribed(&self, channel: String, payload: Vec<u8>);
    /// Runs `then` once every subscription asked for so far is active.
    fn when_subscribed(&self, then: Box<dyn FnOnce() + Send>);
    /// Once every subscription asked for so far is active, reads the
    /// recovery log of `nsp` after `after` and hands it to
    /// [`Sockets::replayed`] for socket `sid`.
    fn replay(&self, sid: Arc<str>, nsp: Arc<str>, after: Option<String>);
}

pub(crate) use crate::config::Parser;

/// The settings the rules use.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub node_id: String,
    pub keys: Keys,
    /// Client events one socket may have waiting before the node stops
    /// reading from its client (it reads again at half).
    pub max_pending_events: usize,
    /// Most `message` events in one queue item.
    pub event_batch: usize,
    /// Partitions of the event queue a socket's messages spread over.
    pub queue_partitions: u16,
    /// How many partitions app-nodes take from (the most of this node's
    /// and `P:partitions`, kept by the cluster side): on a Redis Cluster
    /// each has its own node channels, which a socket recovered here from
    /// another io-node is reached through.
    pub partitions: Arc<std::sync::atomic::AtomicU16>,
    /// Frames a socket waiting for admission may hold.
    pub outbox_capacity: usize,
    /// Most binary attachments one packet may carry.
    pub max_attachments: usize,
    pub parser: Parser,
}

impl From<&crate::config::Config> for Settings {
    fn from(config: &crate::config::Config) -> Settings {
        Settings {
            node_id: config.node_id.clone(),
            keys: config.keys.clone(),
            max_pending_events: config.max_pending_events,
            event_batch: config.event_batch,
            queue_partitions: config.queue_partitions,
            partitions: Arc::new(std::sync::atomic::AtomicU16::new(config.queue_partitions)),
            outbox_capacity: config.outbox_capacity,
            max_attachments: config.max_attachments,
            parser: config.parser,
        }
    }
}

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
#[derive(Default)]
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

/// A queue item takes no more events once it holds this many bytes (it
/// always takes one, whatever its size).
const BATCH_BYTES: usize = 64 * 1024;

/// The io-node's Socket.IO state and rules.
pub(crate) struct Sockets {
    settings: Settings,
    keys: Keys,
    clock: Clock,
    cluster: Arc<dyn Cluster>,
    registry: RwLock<Registry>,
    dedupe: Mutex<Dedupe>,
    /// A ledger rewrite is on its way to Redis (see [`Sockets::resync`]).
    resync_pending: AtomicBool,
    /// Totals for the registry's stats (rates are computed by readers).
    events_out: AtomicU64,
    deliveries: AtomicU64,
    /// Metrics recorded per packet, event or command.
    hot: HotMetrics,
    /// Woken when the last socket is forgotten (see
    /// [`Sockets::until_settled`]).
    settled: tokio::sync::Notify,
    /// The app-nodes named by `done`s, each kept once and shared by the
    /// sockets they handled (a few per cluster; forgotten past a bound).
    apps: Mutex<Vec<Arc<str>>>,
}

impl Sockets {
    pub(crate) fn new(settings: Settings, cluster: Arc<dyn Cluster>) -> Sockets {
        Sockets {
            keys: settings.keys.clone(),
            settings,
            clock: Clock::new(),
            cluster,
            registry: RwLock::default(),
            dedupe: Mutex::default(),
            resync_pending: AtomicBool::new(false),
            events_out: AtomicU64::new(0),
            deliveries: AtomicU64::new(0),
            apps: Mutex::default(),
            hot: HotMetrics::new(),
            settled: tokio::sync::Notify::new(),
        }
    }

    fn node_id(&self) -> &str {
        &self.settings.node_id
    }

    fn socket(&self, sid: &str, nsp: &str) -> Option<Arc<Socket>> {
        let socket = read(&self.registry).sockets.get(sid).cloned()?;
        (*socket.nsp == *nsp).then_some(socket)
    }

    /// Sockets whose last event has not gone out yet: open ones, and
    /// closed ones whose events still wait behind an item in flight.
    pub(crate) fn count(&self) -> usize {
        read(&self.registry).sockets.len()
    }

    /// A socket's last event went out (or it needs none): it leaves the
    /// registry for good.
    fn forget(&self, sid: &str) {
        let mut registry = write(&self.registry);
        registry.sockets.remove(sid);
        if registry.sockets.is_empty() {
            self.settled.notify_waiters();
        }
    }

    /// Completes once every socket is forgotten: at shutdown, after every
    /// session closed, when the events their clients sent before the close
    /// (waiting behind an item in flight, for its `done`) and their
    /// disconnect events have all gone to the cluster side.
    pub(crate) async fn until_settled(&self) {
        loop {
            let mut notified = std::pin::pin!(self.settled.notified());
            // Enabled before the check, so a socket forgotten in between
            // wakes us.
            notified.as_mut().enable();
            if self.count() == 0 {
                return;
            }
            notified.await;
        }
    }

    fn all_sockets(&self) -> Vec<Arc<Socket>> {
        read(&self.registry).sockets.values().cloned().collect()
    }

    /// Whether this node has members in the room of `channel`.
    pub(crate) fn has_room_channel(&self, channel: &str) -> bool {
        read(&self.registry).rooms.contains_key(channel)
    }

    /// The room channels this node has members in (to resubscribe after a
    /// Redis reconnect).
    pub(crate) fn room_channels(&self) -> Vec<String> {
        read(&self.registry).rooms.keys().cloned().collect()
    }

    /// How long a round trip took, from a push stamped `since_us`.
    fn elapsed_since(&self, since_us: u64) -> Duration {
        Duration::from_micros(self.clock.now_us().saturating_sub(since_us))
    }
}

/// The CONNECT that admits a socket, in a write of its own: a client that
/// reads one message and only then listens for the next still gets the
/// first emit of its connection handler.
/// A v3 client (socket.io-client 2.x) gets a CONNECT without payload, as
/// Node's Socket.IO sends it: its parser takes only an array as a payload.
fn connect_frame(parser: Parser, socket: &Socket) -> Frame {
    let payload = match &socket.recovery {
        _ if socket.session.eio3 => String::new(),
        Some(recovery) => {
            iocluster_protocol::socketio::connect_payload_with_pid(&socket.id, &recovery.pid)
        }
        None => iocluster_protocol::socketio::connect_payload(&socket.id),
    };
    match parser {
        Parser::Default => Frame::alone(iocluster_protocol::socketio::engine_message(
            PacketKind::Connect,
            &socket.nsp,
            0,
            None,
            &payload,
        )),
        Parser::Msgpack => Frame::Binary(
            msgpack(PacketKind::Connect, &socket.nsp, None, &payload, &[]),
            true,
        ),
    }
}

/// One packet of the msgpack parser.
fn msgpack(kind: PacketKind, nsp: &str, id: Option<u64>, data: &str, bin: &[Bytes]) -> Bytes {
    Bytes::from(iocluster_protocol::msgpack_parser::encode(
        kind, nsp, id, data, bin,
    ))
}

/// A frame carrying one Socket.IO packet without binary data.
fn text_frame(parser: Parser, kind: PacketKind, nsp: &str, id: Option<u64>, data: &str) -> Frame {
    match parser {
        Parser::Default => Frame::text(iocluster_protocol::socketio::engine_message(
            kind, nsp, 0, id, data,
        )),
        Parser::Msgpack => Frame::Binary(msgpack(kind, nsp, id, data, &[]), false),
    }
}

/// A frame carrying one Socket.IO packet and its attachments, if any
/// (shared by every recipient of a broadcast).
fn packet_frame(
    parser: Parser,
    kind: PacketKind,
    nsp: &str,
    id: Option<u64>,
    data: &str,
    bin: Option<&Arc<[Bytes]>>,
) -> Frame {
    if parser == Parser::Msgpack {
        let bin: &[Bytes] = bin.map_or(&[], |bin| &bin[..]);
        return Frame::Binary(msgpack(kind, nsp, id, data, bin), false);
    }
    let count = bin.map_or(0, |bin| bin.len());
    let text = iocluster_protocol::socketio::engine_message(kind, nsp, count, id, data);
    match bin {
        Some(bin) => Frame::with_binary(text, bin.clone()),
        None => Frame::text(text),
    }
}

/// An emit's attachments as frames share them; `None` for none, so that
/// the usual emit (no attachment) allocates nothing for them.
fn attachments(bin: Vec<ByteBuf>) -> Option<Arc<[Bytes]>> {
    (!bin.is_empty()).then(|| bin.into_iter().map(|b| Bytes::from(b.into_vec())).collect())
}

fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
