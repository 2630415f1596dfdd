//! The reply listener: this app-node's channel `P:a:<app>`, where io-nodes
//! confirm joins and pass on clients' acknowledgements. It subscribes before
//! the first event is taken (`ready`), resubscribes after a lost
//! connection, and hands each reply to whoever waits for it (`Ctx::on_reply`);
//! the waiting itself, with its timeout, is the handles' (`socket`).

use std::sync::Arc;

use futures_util::StreamExt;
use iocluster_protocol::envelope::Reply;
use tokio_util::sync::CancellationToken;

use crate::socket::Ctx;

/// Listens on this app-node's channel for join confirmations and acks.
pub(super) async fn replies(
    client: iocluster_ops::RedisClient,
    ctx: Arc<Ctx>,
    stop: CancellationToken,
    ready: CancellationToken,
) {
    let channel = ctx.keys.app_channel(&ctx.app_id);
    let mut backoff = iocluster_ops::Backoff::new(iocluster_ops::EVENT_PATH_RETRY);
    let mut outage = iocluster_ops::Outage::new("replies");
    loop {
        let subscribed = async {
            let mut pubsub = client.pubsub(ctx.keys.prefix()).await?;
            pubsub.subscribe(&channel).await?;
            Ok::<_, redis::RedisError>(pubsub)
        };
        let mut pubsub = tokio::select! {
            _ = stop.cancelled() => return,
            result = subscribed => match result {
                Ok(pubsub) => pubsub,
                Err(error) => {
                    metrics::counter!("iocluster_redis_errors_total", "task" => "replies").increment(1);
                    outage.failed("cannot subscribe to the reply channel", &error);
                    tokio::select! {
                        () = stop.cancelled() => return,
                        () = backoff.wait() => continue,
                    }
                }
            }
        };
        backoff.reset();
        outage.recovered();
        ready.cancel();
        let mut messages = pubsub.on_message();
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                message = messages.next() => {
                    let Some(message) = message else { break };
                    match Reply::decode(message.get_payload_bytes()) {
                        Ok(reply) => ctx.on_reply(reply),
                        Err(error) => tracing::warn!(%error, "invalid reply"),
                    }
                }
            }
        }
        tracing::warn!("reply channel lost; reconnecting");
    }
}
