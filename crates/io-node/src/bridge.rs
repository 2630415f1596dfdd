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

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::StreamExt;
use iocluster_protocol::envelope::Command;
use iocluster_protocol::keys::Keys;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::node::Node;

/// Work for the writer task.
pub(crate) enum Outgoing {
    Event(Vec<u8>),
    Publish(String, Vec<u8>),
}

/// Work for the subscriber task, applied in order.
pub(crate) enum SubscriptionChange {
    Subscribe(String),
    Unsubscribe(String),
    /// Publish once every subscription asked for before it is active.
    Reply(String, Vec<u8>),
}

/// Handle to the Redis tasks.
#[derive(Clone)]
pub(crate) struct Bridge {
    /// Bounded by `event_buffer`: a full buffer refuses work.
    outgoing: mpsc::Sender<Outgoing>,
    /// Unbounded, but fed only by room changes, which the registry bounds.
    changes: mpsc::UnboundedSender<SubscriptionChange>,
}

/// The receiving ends, handed to the tasks.
pub(crate) struct BridgeReceivers {
    outgoing: mpsc::Receiver<Outgoing>,
    changes: mpsc::UnboundedReceiver<SubscriptionChange>,
}

pub(crate) fn bridge(capacity: usize) -> (Bridge, BridgeReceivers) {
    let (outgoing, outgoing_rx) = mpsc::channel(capacity);
    let (changes, changes_rx) = mpsc::unbounded_channel();
    (
        Bridge { outgoing, changes },
        BridgeReceivers {
            outgoing: outgoing_rx,
            changes: changes_rx,
        },
    )
}

impl Bridge {
    /// Queues an event for the queue; `false` when the buffer is full.
    pub(crate) fn push_event(&self, envelope: Vec<u8>) -> bool {
        self.outgoing.try_send(Outgoing::Event(envelope)).is_ok()
    }

    /// Queues a publish; `false` when the buffer is full.
    pub(crate) fn publish(&self, channel: String, payload: Vec<u8>) -> bool {
        self.outgoing
            .try_send(Outgoing::Publish(channel, payload))
            .is_ok()
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
    let keys = node.keys().clone();
    vec![
        tokio::spawn(writer(redis.clone(), keys, receivers.outgoing, drain)),
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
    mut redis: redis::aio::ConnectionManager,
    keys: Keys,
    mut outgoing: mpsc::Receiver<Outgoing>,
    drain: CancellationToken,
) {
    let events_key = keys.events();
    let mut batch = Vec::with_capacity(MAX_BATCH);
    loop {
        let first = tokio::select! {
            item = outgoing.recv() => item,
            _ = drain.cancelled() => {
                outgoing.close();
                outgoing.recv().await
            }
        };
        let Some(first) = first else { return };
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match outgoing.try_recv() {
                Ok(item) => batch.push(item),
                Err(_) => break,
            }
        }
        let mut pipe = redis::pipe();
        let events: Vec<&[u8]> = batch
            .iter()
            .filter_map(|item| match item {
                Outgoing::Event(bytes) => Some(bytes.as_slice()),
                Outgoing::Publish(..) => None,
            })
            .collect();
        if !events.is_empty() {
            pipe.cmd("LPUSH").arg(&events_key).arg(events).ignore();
        }
        for item in &batch {
            if let Outgoing::Publish(channel, payload) = item {
                pipe.cmd("PUBLISH").arg(channel).arg(payload).ignore();
            }
        }
        let mut backoff = Duration::from_millis(50);
        while let Err(error) = pipe.query_async::<()>(&mut redis).await {
            tracing::warn!(%error, items = batch.len(), "cannot write to Redis; retrying");
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(2));
        }
        batch.clear();
    }
}

async fn subscriber(
    node: Arc<Node>,
    client: redis::Client,
    mut changes: mpsc::UnboundedReceiver<SubscriptionChange>,
    stop: CancellationToken,
) {
    let keys = node.keys().clone();
    let mut backoff = Duration::from_millis(50);
    loop {
        let pubsub = tokio::select! {
            _ = stop.cancelled() => return,
            pubsub = client.get_async_pubsub() => pubsub,
        };
        let (mut sink, mut stream) = match pubsub {
            Ok(pubsub) => pubsub.split(),
            Err(error) => {
                tracing::warn!(%error, "cannot open the Redis subscription; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
                continue;
            }
        };
        let mut channels = vec![keys.node_channel(node.id()), keys.all_channel()];
        channels.extend(node.room_channels());
        if let Err(error) = sink.subscribe(&channels).await {
            tracing::warn!(%error, "cannot subscribe; retrying");
            tokio::time::sleep(backoff).await;
            continue;
        }
        backoff = Duration::from_millis(50);
        tracing::debug!(channels = channels.len(), "subscribed");
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                message = stream.next() => {
                    let Some(message) = message else {
                        tracing::warn!("Redis subscription lost; reconnecting");
                        break;
                    };
                    match Command::decode(message.get_payload_bytes()) {
                        Ok(command) => node.apply(command),
                        Err(error) => tracing::warn!(%error, channel = message.get_channel_name(), "invalid command"),
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
        if last_beat.is_none_or(|at| at.elapsed() >= beat) {
            let now = now_ms();
            let result = redis::pipe()
                .cmd("ZADD")
                .arg(keys.nodes())
                .arg(now + lease.as_millis() as u64)
                .arg(node.id())
                .ignore()
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
                .ignore()
                .cmd("PEXPIRE")
                .arg(keys.node_info(node.id()))
                .arg(lease.as_millis() as u64 * 2)
                .ignore()
                .query_async::<()>(&mut redis)
                .await;
            match result {
                Ok(()) => last_beat = Some(tokio::time::Instant::now()),
                Err(error) => tracing::warn!(%error, "cannot renew the node lease"),
            }
        }
        if let Err(error) = node.refresh_namespaces().await {
            tracing::warn!(%error, "cannot read the served namespaces");
        }
    }
    let result = redis::pipe()
        .cmd("ZREM")
        .arg(keys.nodes())
        .arg(node.id())
        .ignore()
        .cmd("DEL")
        .arg(keys.node_info(node.id()))
        .ignore()
        .query_async::<()>(&mut redis)
        .await;
    if let Err(error) = result {
        tracing::warn!(%error, "cannot deregister the node");
    }
}
