//! The app-node runtime: what [`App::run`](crate::App::run) does with what
//! the application registered. It owns the Redis connections and the tasks,
//! and the order they start and stop in; the public API (`app`) and the
//! handles (`socket`) know nothing of it beyond the publish queue.
//!
//! - `taker`: moves events from the queue into the in-flight list and starts
//!   their handlers.
//! - `dispatch`: runs one queue item's handlers and queues its `done`;
//!   [`Running`](dispatch::Running) starts handler tasks, which
//!   [`Finished`](dispatch::Finished) waits for.
//! - `publisher`: writes the publish queue to Redis in order.
//! - `replies`: join confirmations and acks on this app-node's channel.
//! - `lease`: this app-node's lease, and the hand-back of the events of
//!   app-nodes whose lease lapsed (its own at shutdown).
//!
//! Reliability: an event moves atomically from the queue to this app-node's
//! in-flight list, and leaves it only when its handler is done, in the same
//! atomic step that publishes the `done` to its io-node. An app-node whose
//! lease lapses has its in-flight events moved back to the queue by any
//! other app-node. Together: every event is handled at least once; it is
//! handled twice only when an app-node dies (or stalls past its lease)
//! between running a handler and reporting it done.
//!
//! Shutdown is by structure ([`Node::stop`]): each task stops when what
//! feeds it has stopped, and is awaited, never aborted. The taker stops
//! first (after the take under way), then the handlers already started
//! finish (within the grace period), then the publisher writes everything
//! they queued and ends, then the reply listener and the lease keeper stop,
//! and last what is still in the in-flight list goes back to the queue.

mod dispatch;
mod lease;
mod publisher;
mod replies;
mod taker;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Semaphore, mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

pub(crate) use dispatch::Handlers;
use dispatch::{Dispatcher, Finished, Running};
use lease::LeaseKeeper;
pub(crate) use publisher::PUBLISH_QUEUE;
use publisher::{Publisher, RedisSink};
use taker::{BLOCKING_POP, Takers};

use crate::config::AppConfig;
use crate::error::AppError;
use crate::socket::{Ctx, Publish};

/// How long the ops listener may take to close its connections at the end.
const OPS_STOP: Duration = Duration::from_secs(1);

/// Serves `handlers` until `shutdown` resolves, then stops as
/// [`Node::stop`] says.
pub(crate) async fn run(
    config: AppConfig,
    handlers: Handlers,
    ctx: Arc<Ctx>,
    publish_rx: mpsc::Receiver<Publish>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), AppError> {
    let mut shutdown = std::pin::pin!(shutdown);
    // Starting waits for Redis (for ever by default): a shutdown meanwhile
    // ends it, with nothing to stop.
    let mut node = tokio::select! {
        node = Node::start(config, handlers, ctx, publish_rx) => node?,
        () = &mut shutdown => return Ok(()),
    };
    // Join confirmations and acks come on our channel: listen before
    // taking any event.
    let subscribed = tokio::select! {
        () = node.replies_ready.cancelled() => true,
        () = &mut shutdown => false,
    };
    if subscribed {
        node.serve();
        let taker = node.taker.as_mut().expect("serving");
        tokio::select! {
            () = &mut shutdown => {}
            ended = taker => {
                node.taker = None;
                if let Err(error) = ended {
                    tracing::error!(%error, "taking events failed: shutting down");
                }
            }
        }
    }
    node.stop().await;
    Ok(())
}

/// A running app-node: its connections, its tasks and what stops each;
/// [`Node::stop`] says in which order.
struct Node {
    config: AppConfig,
    ctx: Arc<Ctx>,
    redis: iocluster_ops::Redis,
    /// To connect the takers of the queue's other partitions.
    client: iocluster_ops::RedisClient,
    /// Kept until the taker starts, which takes it.
    blocking: Option<iocluster_ops::Redis>,
    /// The partitions of the event queue, as the lease keeper last read
    /// them; the takers follow.
    partitions: watch::Receiver<u16>,
    dispatcher: Arc<Dispatcher>,
    readiness: iocluster_ops::Readiness,
    /// Cancelled by the reply listener once it is subscribed.
    replies_ready: CancellationToken,
    /// Cancelled when shutdown begins: the taker stops taking, and the node
    /// stops reporting itself ready.
    serving: CancellationToken,
    /// Takes events until `serving` is cancelled; `None` before it starts
    /// and once it has ended.
    taker: Option<JoinHandle<()>>,
    /// Given to the taker when it starts (it starts handlers with it); held
    /// here until then. Dropped before waiting for `finished`.
    running: Option<Running>,
    /// Waits for the handlers started, up to the grace period.
    finished: Finished,
    /// Ends once the handlers have, after writing all they queued.
    publisher: Publisher,
    /// Cancelled once the publisher has ended: stops the reply listener
    /// and the lease keeper.
    background: CancellationToken,
    replies: JoinHandle<()>,
    lease: JoinHandle<()>,
    /// Cancelled last, after the hand-back: `/health` answers until then.
    ops_stop: CancellationToken,
    ops: Option<JoinHandle<()>>,
}

impl Node {
    /// Connects, takes the lease and starts every task but the taker.
    async fn start(
        config: AppConfig,
        handlers: Handlers,
        ctx: Arc<Ctx>,
        publish_rx: mpsc::Receiver<Publish>,
    ) -> Result<Node, AppError> {
        let keys = ctx.keys.clone();
        // The ops listener first: while the node waits for Redis, `/health`
        // answers (a liveness probe must not kill a node that waits) and
        // `/ready` says 503.
        let readiness = iocluster_ops::Readiness::default();
        let ops_stop = CancellationToken::new();
        let ops = match &config.ops_listen {
            Some(addr) => {
                let ops = iocluster_ops::serve(addr, readiness.clone(), ops_stop.clone()).await?;
                crate::stats::describe();
                Some(ops)
            }
            None => None,
        };
        let client = iocluster_ops::redis_client(config.redis.as_str())?;
        iocluster_ops::wait_for_redis(&client, config.redis_start_timeout).await?;
        let mut redis = client.connection(Some(Duration::from_secs(10))).await?;
        // Blocking pops need a connection of their own, without a response
        // timeout shorter than the pop's.
        let blocking = client
            .connection(Some(BLOCKING_POP + Duration::from_secs(5)))
            .await?;

        let nsps: Vec<(String, String)> = handlers
            .namespaces
            .keys()
            .map(|nsp| (nsp.clone(), ctx.recovery_setting(nsp)))
            .collect();
        let partitions = iocluster_ops::queue_partitions(&mut redis, &keys).await?;
        let (partitions_tx, partitions_rx) = watch::channel(partitions);
        lease::take_lease(
            &mut redis,
            &keys,
            &config.app_id,
            config.lease,
            &nsps,
            partitions,
        )
        .await?;

        let publisher = Publisher::spawn(
            RedisSink {
                redis: redis.clone(),
                app_id: config.app_id.clone(),
                keys: keys.clone(),
            },
            publish_rx,
        );
        let serving = CancellationToken::new();
        let background = CancellationToken::new();
        let replies_ready = CancellationToken::new();
        let replies = tokio::spawn(replies::replies(
            client.clone(),
            ctx.clone(),
            background.clone(),
            replies_ready.clone(),
        ));
        let lease = tokio::spawn(
            LeaseKeeper {
                redis: redis.clone(),
                keys,
                app_id: config.app_id.clone(),
                lease: config.lease,
                nsps,
                partitions: partitions_tx,
                readiness: readiness.clone(),
                serving: serving.clone(),
                stop: background.clone(),
            }
            .run(),
        );
        let dispatcher = Arc::new(Dispatcher::new(
            ctx.clone(),
            handlers,
            config.handler_timeout,
        ));
        let (running, finished) = dispatch::running();
        Ok(Node {
            config,
            ctx,
            redis,
            client,
            blocking: Some(blocking),
            partitions: partitions_rx,
            dispatcher,
            readiness,
            replies_ready,
            serving,
            taker: None,
            running: Some(running),
            finished,
            publisher,
            background,
            replies,
            lease,
            ops_stop,
            ops,
        })
    }

    /// Starts taking events.
    fn serve(&mut self) {
        let (Some(blocking), Some(running)) = (self.blocking.take(), self.running.take()) else {
            return;
        };
        self.taker = Some(tokio::spawn(taker::take_all(
            Takers {
                dispatcher: self.dispatcher.clone(),
                running,
                semaphore: Arc::new(Semaphore::new(self.config.concurrency)),
                redis: self.redis.clone(),
                client: self.client.clone(),
                keys: self.ctx.keys.clone(),
                app_id: self.config.app_id.clone(),
                serving: self.serving.clone(),
            },
            blocking,
            self.partitions.clone(),
        )));
        self.readiness.set(true);
        let nsps: Vec<&String> = self.dispatcher.namespaces().collect();
        tracing::info!(app = %self.config.app_id, prefix = %self.config.prefix, namespaces = ?nsps, "app-node serving");
    }

    /// Stops every task, each after what feeds it, and awaits it: the
    /// handlers already started finish (within the grace period, counted
    /// from here), everything they queued is written, and what is still in
    /// the in-flight list is handed back before the lease is given up.
    async fn stop(self) {
        let deadline = Instant::now() + self.config.shutdown_grace;
        tracing::info!("shutting down: finishing events in hand");
        self.readiness.set(false);
        self.serving.cancel();
        if let Some(taker) = self.taker
            && let Err(error) = taker.await
        {
            tracing::error!(%error, "taking events failed");
        }
        // The taker has ended, and with it its `Running`; this one, if the
        // taker never started, goes too.
        drop(self.running);
        drain(self.finished, self.publisher, deadline).await;
        self.background.cancel();
        for (task, name) in [
            (self.replies, "reply listener"),
            (self.lease, "lease keeper"),
        ] {
            if let Err(error) = task.await {
                tracing::error!(%error, task = name, "task failed");
            }
        }
        // Nothing answers any more: whoever still waits for a reply (an
        // `Io` user's `emit_with_ack`) hears `Closed`.
        self.ctx.fail_pending();
        let mut redis = self.redis;
        // Every partition the takers may have taken from.
        let partitions = *self.partitions.borrow();
        lease::hand_back_own(&mut redis, &self.ctx.keys, &self.config.app_id, partitions).await;
        self.ops_stop.cancel();
        if let Some(ops) = self.ops
            && tokio::time::timeout(OPS_STOP, ops).await.is_err()
        {
            tracing::warn!("the ops listener did not close in time");
        }
        tracing::info!("app-node stopped");
    }
}

/// The heart of shutdown: waits for the handlers already started (until
/// `deadline`, then drops the rest), and only then has the publisher write
/// what is queued and end. Every `done` a handler queued is therefore in the
/// last flush: none is cut off by the publisher stopping early. Returns
/// `false` if some handlers had to be dropped.
async fn drain(finished: Finished, publisher: Publisher, deadline: Instant) -> bool {
    let all = finished.wait(deadline).await;
    publisher.finish().await;
    all
}

/// Redis does not know the script called by hash: it restarted or flushed
/// its scripts, and ran nothing.
fn is_noscript(error: &redis::RedisError) -> bool {
    error.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript)
}

#[cfg(test)]
mod tests {
    use super::publisher::tests::{Recorder, command, done};
    use super::*;

    /// Every part written, in order, as the recorder describes them.
    fn parts(recorder: &Recorder) -> Vec<String> {
        recorder
            .written()
            .iter()
            .flat_map(|message| {
                let (_, parts) = message.split_once(": ").unwrap();
                parts.split(", ").map(str::to_owned).collect::<Vec<_>>()
            })
            .collect()
    }

    /// A handler: emits, works for `work`, then queues its `done`.
    fn handler(running: &Running, sender: &mpsc::Sender<Publish>, i: usize, work: Duration) {
        let sender = sender.clone();
        running.spawn(async move {
            let _ = sender.try_send(command("n1", format!("emit{i}").as_bytes()));
            tokio::time::sleep(work).await;
            let raw = format!("ev{i}");
            let _ = sender.send(done(raw.as_bytes(), "n1", b"done")).await;
        });
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_waits_for_running_handlers_and_writes_their_dones() {
        let recorder = Recorder::default();
        let (sender, queue) = mpsc::channel(16);
        let publisher = Publisher::spawn(recorder.clone(), queue);
        let (running, finished) = dispatch::running();
        handler(&running, &sender, 0, Duration::from_secs(3));
        handler(&running, &sender, 1, Duration::from_secs(1));
        drop(running);
        tokio::task::yield_now().await;

        let started = Instant::now();
        let all = drain(finished, publisher, started + Duration::from_secs(10)).await;
        assert!(all);
        let elapsed = started.elapsed();
        assert!(elapsed >= Duration::from_secs(3) && elapsed < Duration::from_secs(4));
        assert_eq!(parts(&recorder), ["emit0", "emit1", "ev1>done", "ev0>done"]);
        // `sender` is still alive, as an application's `Io` handle may be:
        // the queue is closed all the same.
        assert!(matches!(
            sender.try_send(command("n1", b"late")),
            Err(mpsc::error::TrySendError::Closed(_))
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn a_handler_past_the_grace_period_is_dropped_without_its_done() {
        let recorder = Recorder::default();
        let (sender, queue) = mpsc::channel(16);
        let publisher = Publisher::spawn(recorder.clone(), queue);
        let (running, finished) = dispatch::running();
        handler(&running, &sender, 0, Duration::from_secs(60));
        handler(&running, &sender, 1, Duration::from_secs(2));
        drop(running);
        tokio::task::yield_now().await;

        let started = Instant::now();
        let all = drain(finished, publisher, started + Duration::from_secs(5)).await;
        assert!(!all);
        let elapsed = started.elapsed();
        assert!(elapsed >= Duration::from_secs(5) && elapsed < Duration::from_secs(6));
        // Its emit went out (as in a crash); its event stays in the
        // in-flight list for the hand-back, since its done never came.
        assert_eq!(parts(&recorder), ["emit0", "emit1", "ev1>done"]);
    }
}
