//! The cluster side: the only code of the io-node that talks to Redis.
//!
//! - `writer`: batches outgoing work: events are `LPUSH`ed onto the queue
//!   several per command, replies to app-nodes are `PUBLISH`ed, ledger
//!   entries written, all in one transaction per batch (planned by a pure,
//!   unit-tested function); a failed batch is retried until Redis takes it,
//!   so an accepted event is never dropped (the buffer in front is bounded,
//!   and a full buffer refuses new client events instead);
//! - `subscriber`: holds the pub/sub connection: this node's channel, the
//!   broadcast channel and one channel per room with local members, and
//!   applies every command it receives; after a lost connection it
//!   reconnects and subscribes again to everything the node needs;
//! - `registry`: this node's lease in the live-node set, its details and
//!   stats, the reaping of dead io-nodes, redelivery of overdue events;
//! - `namespaces`: the list of namespaces app-nodes serve, cached;
//! - `ledger`: the scripts behind exactly-once disconnect events;
//! - `auth`: admission by credentials (JWTs here, registered users in Redis);
//! - `peers`: the other io-nodes, for relaying the sessions they hold
//!   (relay channels, the live-node set);
//! - `tail`: sampled copies of queued events for the dashboard's event
//!   tail, only while an operator watches.
//!
//! [`Bridge`] is the cheap handle the Socket.IO layer queues work on (it
//! implements `sockets::Cluster`); [`Context`] is what the tasks work with.

pub(crate) mod auth;
pub(crate) mod ledger;
mod namespaces;
pub(crate) mod peers;
pub(crate) mod recovery;
pub(crate) mod registry;
mod shards;
mod subscriber;
mod tail;
mod writer;

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use iocluster_protocol::envelope::Command;
use iocluster_protocol::keys::Keys;
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;

pub(crate) use namespaces::Namespaces;

use crate::config::Config;
use crate::engine::{CloseReason, Engine};
use crate::sockets::Cluster as _;
use crate::sockets::{self, Client, LedgerOp, Sockets};

/// Work for the writer task.
enum Outgoing {
    /// An event, its place in the order events were queued, and the
    /// partition of the event queue it goes to.
    Event(Bytes, u64, u16),
    Publish(String, Vec<u8>),
}

/// Work for the subscriber task, applied in order.
enum SubscriptionChange {
    Subscribe(String),
    Unsubscribe(String),
    /// Publish once every subscription asked for before it is active.
    Reply(String, Vec<u8>),
    /// Run once every subscription asked for before it is active.
    Then(Box<dyn FnOnce() + Send>),
}

/// Handle to the Redis tasks.
#[derive(Clone)]
pub(crate) struct Bridge {
    /// Bounded by `event_buffer`: a full buffer refuses work.
    outgoing: mpsc::Sender<Outgoing>,
    ledger: mpsc::UnboundedSender<LedgerOp>,
    /// Sockets whose ledger entry is stale; the writer rewrites each once,
    /// however often it changed meanwhile.
    stale: Arc<Mutex<HashSet<Arc<str>>>>,
    wake: Arc<Notify>,
    /// Numbers events as they are queued, and the highest number written.
    queued: Arc<AtomicU64>,
    written: Arc<AtomicU64>,
    /// Unbounded, but fed only by room changes, which the registry bounds.
    changes: mpsc::UnboundedSender<SubscriptionChange>,
    /// Recovered sockets whose missed emits are to be read, once their
    /// subscriptions are active (one per recovery, which admission bounds).
    replays: mpsc::UnboundedSender<Replay>,
    /// Copies of queued events for the event tail (bounded, dropping).
    tail: tail::Tail,
}

/// A recovered socket's log to read: socket, namespace, after which offset.
type Replay = (Arc<str>, Arc<str>, Option<String>);

/// The receiving ends, handed to the tasks.
pub(crate) struct BridgeReceivers {
    outgoing: mpsc::Receiver<Outgoing>,
    ledger: mpsc::UnboundedReceiver<LedgerOp>,
    changes: mpsc::UnboundedReceiver<SubscriptionChange>,
    replays: mpsc::UnboundedReceiver<Replay>,
    tail: mpsc::Receiver<Bytes>,
}

pub(crate) fn bridge(capacity: usize) -> (Bridge, BridgeReceivers) {
    let (outgoing, outgoing_rx) = mpsc::channel(capacity);
    let (ledger, ledger_rx) = mpsc::unbounded_channel();
    let (changes, changes_rx) = mpsc::unbounded_channel();
    let (replays, replays_rx) = mpsc::unbounded_channel();
    let (tail, tail_rx) = tail::Tail::new();
    (
        Bridge {
            outgoing,
            ledger,
            stale: Arc::default(),
            wake: Arc::default(),
            queued: Arc::default(),
            written: Arc::default(),
            changes,
            replays,
            tail,
        },
        BridgeReceivers {
            outgoing: outgoing_rx,
            ledger: ledger_rx,
            changes: changes_rx,
            replays: replays_rx,
            tail: tail_rx,
        },
    )
}

impl sockets::Cluster for Bridge {
    fn push_event(&self, envelope: Bytes, partition: u16) -> Option<u64> {
        self.tail.offer(&envelope);
        let number = self.queued.fetch_add(1, Ordering::Relaxed) + 1;
        self.outgoing
            .try_send(Outgoing::Event(envelope, number, partition))
            .ok()
            .map(|()| number)
    }

    fn publish(&self, channel: String, payload: Vec<u8>) -> bool {
        self.outgoing
            .try_send(Outgoing::Publish(channel, payload))
            .is_ok()
    }

    fn ledger(&self, op: LedgerOp) {
        if let LedgerOp::Announce(_, envelope) = &op {
            self.tail.offer(envelope);
        }
        let _ = self.ledger.send(op);
    }

    fn ledger_stale(&self, sid: Arc<str>) {
        let fresh = self
            .stale
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .insert(sid);
        if fresh {
            self.wake.notify_one();
        }
    }

    fn subscribe(&self, channel: String) {
        let _ = self.changes.send(SubscriptionChange::Subscribe(channel));
    }

    fn unsubscribe(&self, channel: String) {
        let _ = self.changes.send(SubscriptionChange::Unsubscribe(channel));
    }

    fn reply_when_subscribed(&self, channel: String, payload: Vec<u8>) {
        let _ = self
            .changes
            .send(SubscriptionChange::Reply(channel, payload));
    }

    fn when_subscribed(&self, then: Box<dyn FnOnce() + Send>) {
        let _ = self.changes.send(SubscriptionChange::Then(then));
    }

    fn replay(&self, sid: Arc<str>, nsp: Arc<str>, after: Option<String>) {
        let replays = self.replays.clone();
        self.when_subscribed(Box::new(move || {
            let _ = replays.send((sid, nsp, after));
        }));
    }
}

impl Bridge {
    /// The highest number of an event written to Redis so far.
    pub(crate) fn written(&self) -> u64 {
        self.written.load(Ordering::Acquire)
    }

    fn take_stale(&self) -> Vec<Arc<str>> {
        let mut stale = self
            .stale
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if stale.is_empty() {
            return Vec::new();
        }
        stale.drain().collect()
    }
}

/// What the cluster tasks work with: this node's settings, its sockets and
/// sessions, and the handles they share.
#[derive(Clone)]
pub(crate) struct Context {
    pub config: Arc<Config>,
    pub keys: Keys,
    pub sockets: Arc<Sockets>,
    pub engine: Arc<Engine<Client>>,
    pub bridge: Bridge,
    pub namespaces: Arc<Namespaces>,
    pub readiness: iocluster_ops::Readiness,
    /// The other io-nodes, for the engine's relay.
    pub peers: peers::SharedPeers,
    /// Relay envelopes for this node, to the engine's relay task.
    pub relay_in: mpsc::UnboundedSender<Vec<u8>>,
    /// How many partitions of the event queue app-nodes take from (the
    /// most of this node's and `P:partitions`): on a Redis Cluster the node
    /// listens on the sharded node channel of each ([`Context::partition_channels`]).
    pub partitions: Arc<std::sync::atomic::AtomicU16>,
}

impl Context {
    fn node_id(&self) -> &str {
        &self.config.node_id
    }

    /// The partitions app-nodes take from: this node's own count until
    /// `P:partitions` says more (the count only rises).
    fn partitions(&self) -> u16 {
        self.partitions.load(Ordering::Relaxed)
    }

    /// Whether `channel` is one of [`Context::sharded_channels`], without
    /// building them (asked for every subscription Redis drops).
    fn is_own_sharded_channel(&self, channel: &str) -> bool {
        if !self.keys.sharded_rooms() {
            return false;
        }
        channel == self.keys.all_channel()
            || self.keys.parse_node_channel(channel) == Some(self.node_id())
            || self
                .keys
                .partition_node_channel(channel)
                .is_some_and(|(k, node)| node == self.node_id() && k < self.partitions())
    }

    /// On a Redis Cluster, the sharded channels this node always listens
    /// on: its node channel of each partition of the queue
    /// ([`Keys::partition`]; partition 0's is `P:n:<node>`), where
    /// app-nodes publish the commands and `done`s of that partition's
    /// items, and the broadcast channel. Empty on one Redis, where they
    /// are classic.
    fn sharded_channels(&self) -> Vec<String> {
        if !self.keys.sharded_rooms() {
            return Vec::new();
        }
        let mut channels: Vec<String> = (0..self.partitions())
            .map(|k| self.keys.partition(k).node_channel(self.node_id()))
            .collect();
        channels.push(self.keys.all_channel());
        channels
    }

    /// Listens on the node channels of partitions up to `count` too, once
    /// app-nodes take from that many (another io-node pushes to more).
    fn raise_partitions(&self, count: u16) {
        let before = self.partitions();
        if count <= before {
            return;
        }
        self.partitions.store(count, Ordering::Relaxed);
        tracing::info!(partitions = count, "the event queue has more partitions");
        if self.keys.sharded_rooms() {
            for k in before..count {
                self.bridge
                    .subscribe(self.keys.partition(k).node_channel(self.node_id()));
            }
        }
    }

    /// Ready: Redis answers and the node is not shutting down.
    fn set_redis_ok(&self, ok: bool) {
        self.readiness.set(ok && !self.engine.is_draining());
    }

    /// Redis lost its data: rewrite the ledger, push again what it lost,
    /// and until every node renewed its lease, take none missing from the
    /// live set for dead (whichever task noticed first: the writer finds
    /// its registration gone, the registry its ledger, or a failover).
    fn resync(&self) {
        self.peers.grace(self.config.lease);
        self.sockets.resync(self.bridge.written());
    }

    /// Applies the commands of one pub/sub message (one or more, in order)
    /// to the sockets; one that does not decode is logged and skipped.
    fn apply_message(&self, channel: &[u8], payload: &[u8]) {
        for command in Command::decode_all(payload) {
            match command {
                Ok(command) => self.sockets.apply(command),
                Err(error) => {
                    let channel = String::from_utf8_lossy(channel);
                    tracing::warn!(%error, %channel, "invalid command");
                }
            }
        }
    }

    /// Another node declared this one dead: close every client.
    fn fence(&self) {
        if self.sockets.fence() {
            self.engine.close_all(CloseReason::LeaseLost);
        }
    }
}

/// Spawns the writer, subscriber and registry tasks. The writer runs until
/// `drain` is cancelled and everything queued so far is written; the others
/// stop with `stop`.
pub(crate) fn spawn(
    context: Context,
    client: iocluster_ops::RedisClient,
    redis: iocluster_ops::Redis,
    receivers: BridgeReceivers,
    stop: CancellationToken,
    drain: CancellationToken,
) -> Vec<tokio::task::JoinHandle<()>> {
    vec![
        tokio::spawn(writer::run(
            context.clone(),
            redis.clone(),
            receivers.outgoing,
            receivers.ledger,
            drain,
        )),
        tokio::spawn(subscriber::run(
            context.clone(),
            client,
            receivers.changes,
            stop.clone(),
        )),
        tokio::spawn(replays(
            context.clone(),
            redis.clone(),
            receivers.replays,
            stop.clone(),
        )),
        tokio::spawn(tail::run(
            context.bridge.tail.clone(),
            receivers.tail,
            redis.clone(),
            context.keys.clone(),
            stop.clone(),
        )),
        tokio::spawn(registry::run(context, redis, stop)),
    ]
}

/// Reads the log of each recovered socket (each in a task of its own: a
/// node that died leaves many clients recovering at once) and hands it to
/// the socket.
async fn replays(
    context: Context,
    redis: iocluster_ops::Redis,
    mut requests: mpsc::UnboundedReceiver<Replay>,
    stop: CancellationToken,
) {
    loop {
        let (sid, nsp, after) = tokio::select! {
            _ = stop.cancelled() => return,
            request = requests.recv() => match request {
                Some(request) => request,
                None => return,
            },
        };
        let context = context.clone();
        let mut redis = redis.clone();
        tokio::spawn(async move {
            let after = after.unwrap_or_else(|| "0-0".to_owned());
            let log = recovery::read_log(&mut redis, &context.keys, &nsp, &after).await;
            context.sockets.replayed(&sid, log);
        });
    }
}
