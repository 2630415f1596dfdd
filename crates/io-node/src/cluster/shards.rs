//! Sharded subscriptions, on a Redis Cluster: room channels are published
//! with `SPUBLISH` on the master owning each room's slot, and the node's
//! own channel of each partition `k ≥ 1` of the event queue on the master
//! of that partition's slot, so the node subscribes to each with
//! `SSUBSCRIBE` there, through one cluster connection (RESP3) that reaches
//! every master it needs.
//!
//! The subscriber task changes the subscriptions, in order with its other
//! changes ([`Shards::subscribe`]); the task started here reads what the
//! masters push, applies room commands to the sockets, and keeps the
//! subscriptions whole. A subscription can be lost without the node asking:
//! a master's connection drops, a master fails over, or a slot moves to
//! another master (the server then sends `sunsubscribe`). The redis crate
//! reconnects, but its own resubscription sends a node's channels in one
//! `SSUBSCRIBE`, which Redis refuses when they are in different slots; so
//! on any of these signs this task subscribes again to every room channel
//! with local members, one command per channel, until all succeed. Room
//! emits published in between are lost, as they are on a lost classic
//! subscription.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use redis::cluster_async::ClusterConnection;
use redis::{PushInfo, PushKind, Value};
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;

use super::Context;

/// How often the task checks for a failover, and retries a resubscription
/// that failed.
const CHECK: Duration = Duration::from_millis(500);
/// Subscription commands in flight at once while subscribing again.
const RESUBSCRIBE_CONCURRENCY: usize = 64;
/// The longest a subscription command may take (the cluster client
/// retries through a failover meanwhile); past it, it is given up and
/// tried again.
const SUBSCRIBE_LIMIT: Duration = Duration::from_secs(5);

/// The subscriber task's handle on the sharded subscriptions.
pub(super) struct Shards {
    connection: ClusterConnection,
    /// Tells the push task to subscribe to everything again.
    stale: Arc<Notify>,
}

impl Shards {
    /// Opens the connection (retrying until it opens or `stop`) and starts
    /// the task that reads it. `None` when stopped first.
    pub(super) async fn start(
        context: &Context,
        client: &iocluster_ops::RedisClient,
        stop: &CancellationToken,
    ) -> Option<Shards> {
        let mut backoff = iocluster_ops::Backoff::new(iocluster_ops::EVENT_PATH_RETRY);
        let mut outage = iocluster_ops::Outage::new("sharded subscriber");
        let (connection, pushes) = loop {
            let opened = tokio::select! {
                _ = stop.cancelled() => return None,
                opened = client.sharded_pubsub() => opened,
            };
            match opened {
                Ok(Some(opened)) => break opened,
                Ok(None) => return None,
                Err(error) => {
                    outage.failed("cannot open the sharded subscription", &error);
                    backoff.wait().await;
                }
            }
        };
        outage.recovered();
        let stale = Arc::new(Notify::new());
        tokio::spawn(read(
            context.clone(),
            connection.clone(),
            pushes,
            stale.clone(),
            stop.clone(),
        ));
        Some(Shards { connection, stale })
    }

    /// `SSUBSCRIBE channel`, done once the master confirmed it. A failure
    /// leaves the resubscription to the push task.
    pub(super) async fn subscribe(&mut self, channel: &str) {
        let subscribed =
            iocluster_ops::within(SUBSCRIBE_LIMIT, "5 s", self.connection.ssubscribe(channel))
                .await;
        if let Err(error) = subscribed {
            tracing::warn!(%error, channel, "cannot subscribe to a room; retrying");
            self.stale.notify_one();
        }
    }

    /// `SUNSUBSCRIBE channel`. A failure leaves a subscription the node
    /// ignores (it has no member there) until the connection drops.
    pub(super) async fn unsubscribe(&mut self, channel: &str) {
        let unsubscribed = iocluster_ops::within(
            SUBSCRIBE_LIMIT,
            "5 s",
            self.connection.sunsubscribe(channel),
        )
        .await;
        if let Err(error) = unsubscribed {
            tracing::debug!(%error, channel, "cannot unsubscribe from a room");
        }
    }

    /// Subscribes again to every room channel (after the node's classic
    /// subscription was lost: Redis may have restarted).
    pub(super) fn resubscribe(&self) {
        self.stale.notify_one();
    }
}

/// What a push means to the node.
#[derive(Debug, PartialEq)]
enum Push<'a> {
    /// A message on a room channel.
    Message(&'a [u8], &'a [u8]),
    /// The server dropped a subscription (its slot moved).
    Dropped(&'a [u8]),
    /// A master's connection dropped: its subscriptions with it.
    Disconnected,
    Other,
}

fn classify(push: &PushInfo) -> Push<'_> {
    match push.kind {
        PushKind::SMessage | PushKind::Message => {
            match (
                push.data.first().and_then(as_bytes),
                push.data.get(1).and_then(as_bytes),
            ) {
                (Some(channel), Some(payload)) => Push::Message(channel, payload),
                _ => Push::Other,
            }
        }
        PushKind::SUnsubscribe => push
            .data
            .first()
            .and_then(as_bytes)
            .map_or(Push::Other, Push::Dropped),
        PushKind::Disconnection => Push::Disconnected,
        _ => Push::Other,
    }
}

fn as_bytes(value: &Value) -> Option<&[u8]> {
    match value {
        Value::BulkString(bytes) => Some(bytes),
        Value::SimpleString(text) => Some(text.as_bytes()),
        _ => None,
    }
}

/// The push task: applies room commands, and subscribes again to every
/// room channel when subscriptions may have been lost (in a task of its
/// own, so room messages keep flowing meanwhile; one at a time, another
/// after it if a sign came meanwhile or it failed).
async fn read(
    context: Context,
    connection: ClusterConnection,
    mut pushes: mpsc::UnboundedReceiver<PushInfo>,
    stale: Arc<Notify>,
    stop: CancellationToken,
) {
    let messages = metrics::counter!("iocluster_pubsub_messages_total");
    let bytes = metrics::counter!("iocluster_pubsub_bytes_total");
    let mut failovers = iocluster_ops::failovers();
    let mut resubscribe = false;
    // A master's connection dropped: `done`s may have been lost with it.
    let mut lost = false;
    let mut resubscribing: Option<tokio::task::JoinHandle<bool>> = None;
    let mut check = tokio::time::interval(CHECK);
    check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => {
                if let Some(task) = resubscribing {
                    task.abort();
                }
                return;
            }
            done = async { resubscribing.as_mut().expect("guarded").await }, if resubscribing.is_some() => {
                resubscribing = None;
                if !done.unwrap_or(false) {
                    resubscribe = true;
                } else if std::mem::take(&mut lost) {
                    // Commands published while this node was not
                    // subscribed are lost, `done`s among them: push those
                    // events again rather than leave their sockets
                    // waiting (as the classic subscriber does).
                    context.sockets.redeliver(Duration::ZERO);
                }
            }
            push = pushes.recv() => {
                let Some(push) = push else { return };
                match classify(&push) {
                    Push::Message(channel, payload) => {
                        messages.increment(1);
                        bytes.increment(payload.len() as u64);
                        context.apply_message(channel, payload);
                    }
                    Push::Dropped(channel) => {
                        // Also the confirmation of the node's own
                        // `SUNSUBSCRIBE`: only a room still with members
                        // here was dropped by the server.
                        let ours = std::str::from_utf8(channel).is_ok_and(|channel| {
                            context.sockets.has_room_channel(channel)
                                || context.is_own_sharded_channel(channel)
                        });
                        if ours {
                            tracing::info!(channel = %String::from_utf8_lossy(channel), "Redis dropped a room subscription (slot moved); subscribing again");
                            resubscribe = true;
                        }
                    }
                    Push::Disconnected => {
                        metrics::counter!("iocluster_redis_reconnects_total", "task" => "sharded subscriber").increment(1);
                        tracing::warn!("a sharded subscription's connection was lost; subscribing again");
                        resubscribe = true;
                        lost = true;
                    }
                    Push::Other => {}
                }
            }
            () = stale.notified() => resubscribe = true,
            _ = check.tick() => {
                let now = iocluster_ops::failovers();
                if now != failovers {
                    failovers = now;
                    resubscribe = true;
                }
            }
        }
        if resubscribe && resubscribing.is_none() {
            resubscribe = false;
            resubscribing = Some(tokio::spawn(subscribe_all(
                context.clone(),
                connection.clone(),
            )));
        }
    }
}

/// Subscribes to every room channel with local members, and to this
/// node's channels of the queue's partitions and the broadcast channel,
/// one command each (each may be in a slot of its own); whether all
/// succeeded.
async fn subscribe_all(context: Context, connection: ClusterConnection) -> bool {
    let mut channels = context.sharded_channels();
    channels.extend(context.sockets.room_channels());
    let count = channels.len();
    let failed = futures_util::stream::iter(channels)
        .map(|channel| {
            let mut connection = connection.clone();
            async move {
                iocluster_ops::within(SUBSCRIBE_LIMIT, "5 s", connection.ssubscribe(channel)).await
            }
        })
        .buffer_unordered(RESUBSCRIBE_CONCURRENCY)
        .fold(
            None,
            |failed, result| async move { failed.or(result.err()) },
        )
        .await;
    match failed {
        None => {
            if count > 0 {
                tracing::info!(channels = count, "room subscriptions restored");
            }
            true
        }
        Some(error) => {
            tracing::warn!(%error, "cannot subscribe to the rooms again; retrying");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn push(kind: PushKind, data: &[&[u8]]) -> PushInfo {
        PushInfo {
            kind,
            data: data
                .iter()
                .map(|bytes| Value::BulkString(bytes.to_vec()))
                .collect(),
        }
    }

    #[test]
    fn pushes_are_told_apart() {
        let message = push(PushKind::SMessage, &[b"r", b"payload"]);
        assert_eq!(classify(&message), Push::Message(b"r", b"payload"));
        let dropped = push(PushKind::SUnsubscribe, &[b"r"]);
        assert_eq!(classify(&dropped), Push::Dropped(b"r"));
        let lost = push(PushKind::Disconnection, &[]);
        assert_eq!(classify(&lost), Push::Disconnected);
        let confirmed = push(PushKind::SSubscribe, &[b"r"]);
        assert_eq!(classify(&confirmed), Push::Other);
        let truncated = push(PushKind::SMessage, &[b"r"]);
        assert_eq!(classify(&truncated), Push::Other);
    }
}
