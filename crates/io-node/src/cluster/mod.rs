//! The io-node's side of Redis: everything that crosses it goes through here.
//!
//! - the *writer* task batches outgoing work: events are `LPUSH`ed onto the
//!   queue several per command, replies to app-nodes are `PUBLISH`ed, all in one
//!   pipeline per batch; a failed batch is retried until Redis takes it, so an
//!   accepted event is never dropped (the buffer in front is bounded, and a full
//!   buffer refuses new client events instead);
//! - the *subscriber* task holds the pub/sub connection: this node's channel,
//!   the broadcast channel and one channel per room with local members, and
//!   applies every command it receives; after a lost connection it reconnects
//!   and subscribes again to everything the node needs;
//! - the *registry* task keeps this node's lease in the live-node set and
//!   refreshes the list of served namespaces.
//!
//! [`Bridge`] is the cheap handle the rest of the node uses to queue work.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;

use futures_util::StreamExt;
use iocluster_protocol::envelope::Command;
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;

use crate::ledger;
use crate::node::Node;

/// Work for the writer task.
pub(crate) enum Outgoing {
    /// An event and its place in the order events were queued.
    Event(Bytes, u64),
    Publish(String, Vec<u8>),
}

/// Ledger work for the writer task (see [`crate::ledger`]), applied in order
/// after the events of the same batch. Never dropped: one create and one
/// announce or forget per socket bound it.
pub(crate) enum LedgerOp {
    /// A new socket's entry.
    Create(Arc<str>, Vec<u8>),
    /// The socket needs no announcement (its connection was refused).
    Forget(Arc<str>),
    /// The socket's own disconnect event.
    Announce(Arc<str>, Vec<u8>),
    /// This node has a ledger (again).
    Register,
}

/// Work for the subscriber task, applied in order.
pub(crate) enum SubscriptionChange {
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
}

/// The receiving ends, handed to the tasks.
pub(crate) struct BridgeReceivers {
    outgoing: mpsc::Receiver<Outgoing>,
    ledger: mpsc::UnboundedReceiver<LedgerOp>,
    changes: mpsc::UnboundedReceiver<SubscriptionChange>,
}

pub(crate) fn bridge(capacity: usize) -> (Bridge, BridgeReceivers) {
    let (outgoing, outgoing_rx) = mpsc::channel(capacity);
    let (ledger, ledger_rx) = mpsc::unbounded_channel();
    let (changes, changes_rx) = mpsc::unbounded_channel();
    (
        Bridge {
            outgoing,
            ledger,
            stale: Arc::default(),
            wake: Arc::default(),
            queued: Arc::default(),
            written: Arc::default(),
            changes,
        },
        BridgeReceivers {
            outgoing: outgoing_rx,
            ledger: ledger_rx,
            changes: changes_rx,
        },
    )
}

impl Bridge {
    /// Queues an event for the queue; returns its number (see
    /// [`Bridge::written`]), or `None` when the buffer is full.
    pub(crate) fn push_event(&self, envelope: Bytes) -> Option<u64> {
        let number = self.queued.fetch_add(1, Ordering::Relaxed) + 1;
        self.outgoing
            .try_send(Outgoing::Event(envelope, number))
            .ok()
            .map(|()| number)
    }

    /// The highest number of an event written to Redis so far.
    pub(crate) fn written(&self) -> u64 {
        self.written.load(Ordering::Acquire)
    }

    /// Queues a publish; `false` when the buffer is full.
    pub(crate) fn publish(&self, channel: String, payload: Vec<u8>) -> bool {
        self.outgoing
            .try_send(Outgoing::Publish(channel, payload))
            .is_ok()
    }

    pub(crate) fn ledger(&self, op: LedgerOp) {
        let _ = self.ledger.send(op);
    }

    /// Marks a socket's ledger entry stale.
    pub(crate) fn ledger_stale(&self, sid: Arc<str>) {
        let fresh = self
            .stale
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(sid);
        if fresh {
            self.wake.notify_one();
        }
    }

    fn take_stale(&self) -> Vec<Arc<str>> {
        let mut stale = self.stale.lock().unwrap_or_else(|p| p.into_inner());
        if stale.is_empty() {
            return Vec::new();
        }
        stale.drain().collect()
    }

    pub(crate) fn subscribe(&self, channel: String) {
        let _ = self.changes.send(SubscriptionChange::Subscribe(channel));
    }

    pub(crate) fn unsubscribe(&self, channel: String) {
        let _ = self.changes.send(SubscriptionChange::Unsubscribe(channel));
    }

    pub(crate) fn reply_when_subscribed(&self, channel: String, payload: Vec<u8>) {
        let _ = self
            .changes
            .send(SubscriptionChange::Reply(channel, payload));
    }

    /// Runs `then` on the subscriber task once every subscription asked for
    /// so far is active.
    pub(crate) fn when_subscribed(&self, then: impl FnOnce() + Send + 'static) {
        let _ = self.changes.send(SubscriptionChange::Then(Box::new(then)));
    }
}

/// Milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

const MAX_BATCH: usize = 512;

/// Spawns the writer, subscriber and registry tasks. The writer runs until
/// `drain` is cancelled and everything queued so far is written; the others
/// stop with `stop`.
pub(crate) fn spawn(
    node: Arc<Node>,
    client: redis::Client,
    redis: redis::aio::ConnectionManager,
    receivers: BridgeReceivers,
    stop: CancellationToken,
    drain: CancellationToken,
) -> Vec<tokio::task::JoinHandle<()>> {
    vec![
        tokio::spawn(writer(
            node.clone(),
            redis.clone(),
            receivers.outgoing,
            receivers.ledger,
            drain,
        )),
        tokio::spawn(subscriber(
            node.clone(),
            client,
            receivers.changes,
            stop.clone(),
        )),
        tokio::spawn(registry(node, redis, stop)),
    ]
}

async fn writer(
    node: Arc<Node>,
    mut redis: redis::aio::ConnectionManager,
    mut outgoing: mpsc::Receiver<Outgoing>,
    mut ledger: mpsc::UnboundedReceiver<LedgerOp>,
    drain: CancellationToken,
) {
    let keys = node.keys().clone();
    let bridge = node.bridge().clone();
    let events_key = keys.events();
    let ledger_key = keys.ledger(node.id());
    let ledgers_key = keys.ledgers();
    let reaped_key = keys.reaped(node.id());
    let mut items = Vec::with_capacity(MAX_BATCH);
    let mut ops = Vec::new();
    let mut draining = false;
    loop {
        if !draining {
            tokio::select! {
                _ = drain.cancelled() => {
                    draining = true;
                    outgoing.close();
                    ledger.close();
                }
                _ = bridge.wake.notified() => {}
                item = outgoing.recv() => items.extend(item),
                op = ledger.recv() => ops.extend(op),
            }
        }
        while items.len() < MAX_BATCH {
            match outgoing.try_recv() {
                Ok(item) => items.push(item),
                Err(_) => break,
            }
        }
        while ops.len() < MAX_BATCH {
            match ledger.try_recv() {
                Ok(op) => ops.push(op),
                Err(_) => break,
            }
        }
        let stale = node.ledger_entries(bridge.take_stale());
        if items.is_empty() && ops.is_empty() && stale.is_empty() {
            if draining {
                return;
            }
            continue;
        }
        // One MULTI/EXEC: a batch is written whole or not at all, so a
        // socket's events and its ledger entry never disagree. It starts by
        // checking that this Redis still knows the node: if not, it lost its
        // data (a restart), and with it the events written before this batch.
        let mut pipe = redis::pipe();
        pipe.atomic();
        pipe.cmd("SISMEMBER").arg(&ledgers_key).arg(node.id());
        pipe.cmd("EXISTS").arg(&reaped_key);
        let mut highest = 0;
        let events: Vec<&[u8]> = items
            .iter()
            .filter_map(|item| match item {
                Outgoing::Event(bytes, number) => {
                    highest = highest.max(*number);
                    Some(bytes.as_ref())
                }
                Outgoing::Publish(..) => None,
            })
            .collect();
        if !events.is_empty() {
            pipe.cmd("LPUSH").arg(&events_key).arg(events).ignore();
        }
        for item in &items {
            if let Outgoing::Publish(channel, payload) = item {
                pipe.cmd("PUBLISH").arg(channel).arg(payload).ignore();
            }
        }
        for op in &ops {
            match op {
                LedgerOp::Create(sid, envelope) => {
                    pipe.cmd("HSET")
                        .arg(&ledger_key)
                        .arg(sid.as_ref())
                        .arg(envelope)
                        .ignore();
                }
                LedgerOp::Forget(sid) => {
                    pipe.cmd("HDEL").arg(&ledger_key).arg(sid.as_ref()).ignore();
                }
                LedgerOp::Announce(sid, envelope) => {
                    pipe.cmd("EVAL")
                        .arg(ledger::ANNOUNCE)
                        .arg(4)
                        .arg(&ledger_key)
                        .arg(&events_key)
                        .arg(&ledgers_key)
                        .arg(&reaped_key)
                        .arg(sid.as_ref())
                        .arg(node.id())
                        .arg(envelope)
                        .ignore();
                }
                LedgerOp::Register => {
                    // Lease first: a ledger without a lease looks dead.
                    let lease = node.config().lease.as_millis() as u64;
                    pipe.cmd("ZADD")
                        .arg(keys.nodes())
                        .arg(now_ms() + lease)
                        .arg(node.id())
                        .ignore();
                    pipe.cmd("SADD").arg(&ledgers_key).arg(node.id()).ignore();
                    pipe.cmd("DEL").arg(&reaped_key).ignore();
                }
            }
        }
        for (sid, envelope) in &stale {
            pipe.cmd("EVAL")
                .arg(ledger::UPDATE)
                .arg(1)
                .arg(&ledger_key)
                .arg(sid.as_ref())
                .arg(envelope)
                .ignore();
        }
        let mut backoff = iocluster_ops::Backoff::new(Duration::from_secs(2));
        let (known, reaped) = loop {
            match pipe.query_async::<(bool, bool)>(&mut redis).await {
                Ok(checks) => break checks,
                Err(error) => {
                    metrics::counter!("iocluster_redis_errors_total", "task" => "writer")
                        .increment(1);
                    tracing::warn!(%error, items = items.len() + ops.len(), "cannot write to Redis; retrying");
                    backoff.wait().await;
                }
            }
        };
        let registers = ops.iter().any(|op| matches!(op, LedgerOp::Register));
        if !known && !reaped && !registers {
            node.resync(bridge.written());
        }
        bridge.written.fetch_max(highest, Ordering::AcqRel);
        if registers {
            node.resync_done();
        }
        items.clear();
        ops.clear();
    }
}

async fn subscriber(
    node: Arc<Node>,
    client: redis::Client,
    mut changes: mpsc::UnboundedReceiver<SubscriptionChange>,
    stop: CancellationToken,
) {
    let keys = node.keys().clone();
    let mut backoff = iocluster_ops::Backoff::new(Duration::from_millis(500));
    let mut resubscribed = false;
    loop {
        let pubsub = tokio::select! {
            _ = stop.cancelled() => return,
            pubsub = client.get_async_pubsub() => pubsub,
        };
        let (mut sink, mut stream) = match pubsub {
            Ok(pubsub) => pubsub.split(),
            Err(error) => {
                tracing::warn!(%error, "cannot open the Redis subscription; retrying");
                backoff.wait().await;
                continue;
            }
        };
        let mut channels = vec![keys.node_channel(node.id()), keys.all_channel()];
        channels.extend(node.room_channels());
        if let Err(error) = sink.subscribe(&channels).await {
            tracing::warn!(%error, "cannot subscribe; retrying");
            backoff.wait().await;
            continue;
        }
        backoff.reset();
        tracing::debug!(channels = channels.len(), "subscribed");
        if resubscribed {
            // Commands published while this node was not subscribed are
            // lost, `done`s among them: push those events again rather than
            // leave their sockets waiting.
            node.redeliver_inflight();
        }
        resubscribed = true;
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                message = stream.next() => {
                    let Some(message) = message else {
                        metrics::counter!("iocluster_redis_reconnects_total", "task" => "subscriber").increment(1);
                        tracing::warn!("Redis subscription lost; reconnecting");
                        break;
                    };
                    // One message carries one or more commands, in order.
                    let payload = message.get_payload_bytes();
                    node.hot().pubsub_messages.increment(1);
                    node.hot().pubsub_bytes.increment(payload.len() as u64);
                    for command in Command::decode_all(payload) {
                        match command {
                            Ok(command) => node.apply(command),
                            Err(error) => tracing::warn!(%error, channel = message.get_channel_name(), "invalid command"),
                        }
                    }
                }
                change = changes.recv() => {
                    let result = match change {
                        None => return,
                        Some(SubscriptionChange::Subscribe(channel)) => sink.subscribe(&channel).await,
                        Some(SubscriptionChange::Unsubscribe(channel)) => sink.unsubscribe(&channel).await,
                        Some(SubscriptionChange::Reply(channel, payload)) => {
                            node.publish(channel, payload);
                            Ok(())
                        }
                        Some(SubscriptionChange::Then(then)) => {
                            then();
                            Ok(())
                        }
                    };
                    if let Err(error) = result {
                        tracing::warn!(%error, "subscription change failed; reconnecting");
                        break;
                    }
                }
            }
        }
    }
}

/// Writes this node's lease and details. Returns whether the node was
/// missing from the live set (its lease had lapsed, or Redis lost it) and
/// whether it has a ledger in Redis and a drained-ledger mark.
async fn renew(
    node: &Node,
    redis: &mut redis::aio::ConnectionManager,
    started: u64,
) -> redis::RedisResult<(bool, bool, bool)> {
    let keys = node.keys();
    let lease = node.config().lease.as_millis() as u64;
    let now = now_ms();
    let (has_ledger, reaped, added): (bool, bool, u64) = redis::pipe()
        .cmd("SISMEMBER")
        .arg(keys.ledgers())
        .arg(node.id())
        .cmd("EXISTS")
        .arg(keys.reaped(node.id()))
        .cmd("ZADD")
        .arg(keys.nodes())
        .arg(now + lease)
        .arg(node.id())
        .cmd("HSET")
        .arg(keys.node_info(node.id()))
        .arg("url")
        .arg(&node.config().public_url)
        .arg("connections")
        .arg(node.connection_count())
        .arg("started")
        .arg(started)
        .arg("updated")
        .arg(now)
        .arg(node.stats())
        .ignore()
        .cmd("PEXPIRE")
        .arg(keys.node_info(node.id()))
        .arg(lease * 2)
        .ignore()
        .query_async(redis)
        .await?;
    Ok((added == 1, has_ledger, reaped))
}

/// Registers the node before it serves anyone: announces what a previous
/// life under the same id left in its ledger, then takes the lease and
/// opens the ledger.
pub(crate) async fn register(
    node: &Node,
    redis: &mut redis::aio::ConnectionManager,
) -> redis::RedisResult<u64> {
    let keys = node.keys();
    let announced = ledger::drain(redis, keys, node.id(), true).await?;
    if announced > 0 {
        tracing::warn!(
            sockets = announced,
            "announced the disconnect of the sockets a previous run of this node held"
        );
    }
    renew(node, redis, now_ms()).await?;
    redis::pipe()
        .atomic()
        .cmd("SADD")
        .arg(keys.ledgers())
        .arg(node.id())
        .ignore()
        .cmd("DEL")
        .arg(keys.reaped(node.id()))
        .ignore()
        .query_async::<()>(redis)
        .await?;
    Ok(announced)
}

/// Leaves the live set (shutdown): the frontend stops listing this node.
pub(crate) async fn deregister(
    node: &Node,
    redis: &mut redis::aio::ConnectionManager,
) -> redis::RedisResult<()> {
    let keys = node.keys();
    redis::pipe()
        .cmd("ZREM")
        .arg(keys.nodes())
        .arg(node.id())
        .ignore()
        .cmd("DEL")
        .arg(keys.node_info(node.id()))
        .ignore()
        .query_async(redis)
        .await
}

async fn registry(
    node: Arc<Node>,
    mut redis: redis::aio::ConnectionManager,
    stop: CancellationToken,
) {
    let keys = node.keys().clone();
    let lease = node.config().lease;
    let beat = (lease / 3).max(Duration::from_millis(50));
    let mut ticker = tokio::time::interval(beat.min(Duration::from_secs(1)));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let started = now_ms();
    let mut last_beat: Option<tokio::time::Instant> = None;
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = ticker.tick() => {}
        }
        if node.is_draining() {
            continue;
        }
        if last_beat.is_none_or(|at| at.elapsed() >= beat) {
            // A Redis that does not answer within half a lease counts as down.
            let renewed = tokio::time::timeout(lease / 2, renew(&node, &mut redis, started))
                .await
                .unwrap_or_else(|_| {
                    Err(redis::RedisError::from((
                        redis::ErrorKind::Io,
                        "no answer within half a lease",
                    )))
                });
            match renewed {
                Ok((missing, has_ledger, reaped)) => {
                    last_beat = Some(tokio::time::Instant::now());
                    node.set_redis_ok(true);
                    if reaped {
                        // Another node found this node's lease lapsed and
                        // announced its clients gone. Make it true.
                        node.fence();
                    } else if !has_ledger {
                        // Redis lost everything (a restart without
                        // persistence): the queue lost the events in flight
                        // and the ledger is gone.
                        node.resync(node.bridge().written());
                    } else if missing {
                        tracing::warn!("the node's lease had lapsed; renewed");
                    }
                }
                Err(error) => {
                    node.set_redis_ok(false);
                    metrics::counter!("iocluster_redis_errors_total", "task" => "registry")
                        .increment(1);
                    tracing::warn!(%error, "cannot renew the node lease");
                }
            }
            iocluster_ops::sample_queue_depth(&mut redis, &keys.events()).await;
            if let Err(error) = ledger::reap(&mut redis, &keys, node.id()).await {
                tracing::warn!(%error, "cannot check for lost io-nodes");
            }
            node.redeliver_overdue();
        }
        if let Err(error) = node.refresh_namespaces().await {
            tracing::warn!(%error, "cannot read the served namespaces");
        }
    }
    if let Err(error) = deregister(&node, &mut redis).await {
        tracing::warn!(%error, "cannot deregister the node");
    }
}
