//! The subscriber task: the node's pub/sub connection. It subscribes to
//! this node's channel, the broadcast channel and every room channel with
//! local members (on a Redis Cluster, room channels through [`Shards`]), applies each command it receives to the sockets, and
//! carries out subscription changes in order (a join's reply goes once the
//! subscriptions asked for before it are active). After a lost connection
//! it reconnects, subscribes again to everything, and pushes again the
//! events whose `done` it may have missed meanwhile.

use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::shards::Shards;
use super::{Context, SubscriptionChange};
use crate::sockets::Cluster as _;

pub(super) async fn run(
    context: Context,
    client: iocluster_ops::RedisClient,
    mut changes: mpsc::UnboundedReceiver<SubscriptionChange>,
    stop: CancellationToken,
) {
    let keys = &context.keys;
    let messages = metrics::counter!("iocluster_pubsub_messages_total");
    let bytes = metrics::counter!("iocluster_pubsub_bytes_total");
    let mut backoff = iocluster_ops::Backoff::new(iocluster_ops::EVENT_PATH_RETRY);
    let mut resubscribed = false;
    let mut outage = iocluster_ops::Outage::new("subscriber");
    // On a Redis Cluster, room channels are sharded: subscribed through
    // a connection of their own (`shards`), every other channel here.
    let mut shards = if keys.sharded_rooms() {
        match Shards::start(&context, &client, &stop).await {
            Some(shards) => Some(shards),
            None => return,
        }
    } else {
        None
    };
    loop {
        let pubsub = tokio::select! {
            _ = stop.cancelled() => return,
            pubsub = client.pubsub(keys.prefix()) => pubsub,
        };
        let (mut sink, mut stream) = match pubsub {
            Ok(pubsub) => pubsub.split(),
            Err(error) => {
                outage.failed("cannot open the Redis subscription", &error);
                backoff.wait().await;
                continue;
            }
        };
        let relay_channel = keys.relay_channel(context.node_id());
        let mut channels = vec![relay_channel.clone()];
        match &mut shards {
            Some(shards) => {
                // This node's channels and the broadcast channel, before
                // anything else: `done`s come on them.
                for channel in context.sharded_channels() {
                    shards.subscribe(&channel).await;
                }
                shards.resubscribe();
            }
            None => channels.extend([keys.node_channel(context.node_id()), keys.all_channel()]),
        }
        if shards.is_none() {
            channels.extend(context.sockets.room_channels());
        }
        if let Err(error) = sink.subscribe(&channels).await {
            outage.failed("cannot subscribe", &error);
            backoff.wait().await;
            continue;
        }
        backoff.reset();
        outage.recovered();
        tracing::debug!(channels = channels.len(), "subscribed");
        if resubscribed {
            // Commands published while this node was not subscribed are
            // lost, `done`s among them: push those events again rather than
            // leave their sockets waiting.
            context.sockets.redeliver(Duration::ZERO);
            // Relay envelopes may be lost too: what was relayed fails, and
            // clients reconnect rather than miss a frame.
            context.engine.relays().reset();
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
                    messages.increment(1);
                    bytes.increment(payload.len() as u64);
                    if message.get_channel_name() == relay_channel {
                        let _ = context.relay_in.send(payload.to_vec());
                        continue;
                    }
                    context.apply_message(message.get_channel_name().as_bytes(), payload);
                }
                change = changes.recv() => {
                    let result = match change {
                        None => return,
                        Some(SubscriptionChange::Subscribe(channel)) => match &mut shards {
                            Some(shards) if keys.is_sharded(&channel) => {
                                shards.subscribe(&channel).await;
                                Ok(())
                            }
                            _ => sink.subscribe(&channel).await,
                        },
                        Some(SubscriptionChange::Unsubscribe(channel)) => match &mut shards {
                            Some(shards) if keys.is_sharded(&channel) => {
                                shards.unsubscribe(&channel).await;
                                Ok(())
                            }
                            _ => sink.unsubscribe(&channel).await,
                        },
                        Some(SubscriptionChange::Reply(channel, payload)) => {
                            if !context.bridge.publish(channel, payload) {
                                tracing::warn!("outgoing buffer full: a reply to an app-node was dropped");
                            }
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
