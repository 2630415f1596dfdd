//! The queue takers: one per partition of the event queue, each moving
//! events from its partition into this app-node's in-flight list there (the
//! take script while it finds events; `BLMOVE` and the script in one round
//! trip when the partition was empty) and starting a handler task for each,
//! as many at once as the concurrency allows (one semaphore for all, which
//! serves them in turn). [`take_all`] starts them, and more when the queue
//! gets more partitions.
//!
//! Running the events is the dispatcher's job; finishing them (their `done`
//! and their removal from the in-flight list) the publisher's; handing back
//! what was taken and not finished, the runtime's at shutdown.

use std::sync::Arc;
use std::time::Duration;

use iocluster_protocol::keys::Keys;
use iocluster_protocol::scripts;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::dispatch::{Dispatcher, Running};
use super::is_noscript;

/// Most events taken from the queue in one round trip.
const FETCH_BATCH: usize = 64;

/// How long one blocking pop waits for an event.
pub(super) const BLOCKING_POP: Duration = Duration::from_secs(1);

/// Takes events from the queue and starts their handlers, until `serving`
/// is cancelled. A task of its own, so that it runs on the runtime's worker
/// threads: `App::run` is usually awaited from `main`, outside them, where
/// every wake-up of this loop (an event taken, a permit freed) would be one
/// thread waking another.
pub(super) struct Taker {
    pub(super) dispatcher: Arc<Dispatcher>,
    pub(super) running: Running,
    /// One permit per handler that may run; its size is the concurrency.
    pub(super) semaphore: Arc<Semaphore>,
    pub(super) redis: iocluster_ops::Redis,
    /// A connection of its own for blocking pops, whose response timeout is
    /// longer than the pop.
    pub(super) blocking: iocluster_ops::Redis,
    /// The partition it takes from.
    pub(super) partition: u16,
    pub(super) events_key: String,
    pub(super) inflight_key: String,
    /// Cancelled when shutdown begins: no take starts after it, and what a
    /// take under way brings is not started (it is handed back).
    pub(super) serving: CancellationToken,
}

/// What every taker shares, to start them.
pub(super) struct Takers {
    pub(super) dispatcher: Arc<Dispatcher>,
    pub(super) running: Running,
    pub(super) semaphore: Arc<Semaphore>,
    pub(super) redis: iocluster_ops::Redis,
    /// To connect the blocking pops of partitions after the first.
    pub(super) client: iocluster_ops::RedisClient,
    pub(super) keys: Keys,
    pub(super) app_id: String,
    pub(super) serving: CancellationToken,
}

/// Runs a taker for each partition of the queue, the first on `blocking`,
/// and one more for each partition the queue gains, until `serving` is
/// cancelled and every taker has ended.
pub(super) async fn take_all(
    takers: Takers,
    blocking: iocluster_ops::Redis,
    mut partitions: watch::Receiver<u16>,
) {
    let mut set = JoinSet::new();
    let mut blocking = Some(blocking);
    let mut started = 0u16;
    let mut watching = true;
    loop {
        let wanted = *partitions.borrow_and_update();
        while started < wanted && !takers.serving.is_cancelled() {
            let k = started;
            let blocking = match blocking.take() {
                Some(blocking) => blocking,
                None => match connect_blocking(&takers.client, &takers.serving).await {
                    Some(blocking) => blocking,
                    None => break,
                },
            };
            let partition = takers.keys.partition(k);
            set.spawn(
                Taker {
                    dispatcher: takers.dispatcher.clone(),
                    running: takers.running.clone(),
                    semaphore: takers.semaphore.clone(),
                    redis: takers.redis.clone(),
                    blocking,
                    partition: k,
                    events_key: partition.events(),
                    inflight_key: partition.inflight(&takers.app_id),
                    serving: takers.serving.clone(),
                }
                .run(),
            );
            if k > 0 {
                tracing::debug!(partition = k, "taking from another partition of the queue");
            }
            started += 1;
        }
        tokio::select! {
            changed = partitions.changed(), if watching => watching = changed.is_ok(),
            () = takers.serving.cancelled() => break,
            Some(ended) = set.join_next() => {
                // A taker ends only with shutdown, or by panicking: then its
                // partition would no longer be served while this node's
                // lease keeps anyone else from handing back what it holds.
                // The node stops instead (as with one taker), handing back
                // its in-flight events; the other takers are aborted with
                // the set (what one took is in the in-flight list, handed
                // back too).
                if takers.serving.is_cancelled() {
                    continue;
                }
                match ended {
                    Err(error) if error.is_panic() => std::panic::resume_unwind(error.into_panic()),
                    Err(error) => panic!("a taker failed: {error}"),
                    Ok(()) => panic!("a taker ended while serving"),
                }
            }
        }
    }
    // Their `Running`s go with them; this one too.
    drop(takers.running);
    while let Some(ended) = set.join_next().await {
        if let Err(error) = ended {
            tracing::error!(%error, "a taker failed");
        }
    }
}

/// A connection for blocking pops, retried until it connects or `serving`
/// is cancelled.
async fn connect_blocking(
    client: &iocluster_ops::RedisClient,
    serving: &CancellationToken,
) -> Option<iocluster_ops::Redis> {
    let mut backoff = iocluster_ops::Backoff::new(iocluster_ops::EVENT_PATH_RETRY);
    loop {
        match client
            .connection(Some(BLOCKING_POP + Duration::from_secs(5)))
            .await
        {
            Ok(connection) => return Some(connection),
            Err(error) => {
                tracing::warn!(%error, "cannot connect a taker to Redis");
                tokio::select! {
                    () = backoff.wait() => {}
                    () = serving.cancelled() => return None,
                }
            }
        }
    }
}

impl Taker {
    pub(super) async fn run(mut self) {
        let fetch = redis::Script::new(scripts::FETCH);
        let mut backoff = iocluster_ops::Backoff::new(iocluster_ops::EVENT_PATH_RETRY);
        let mut outage = iocluster_ops::Outage::new("taker");
        // Whether the last take found the queue empty: then the next one
        // blocks at once (with the take script right behind the blocking
        // pop, in one round trip), instead of first asking for what is
        // probably not there. At a low event rate that is one request to
        // Redis per event instead of two.
        let mut drained = false;
        loop {
            let first = tokio::select! {
                permit = self.semaphore.clone().acquire_owned() => match permit {
                    Ok(permit) => permit,
                    Err(_) => break,
                },
                () = self.serving.cancelled() => break,
            };
            let room = (self.semaphore.available_permits() + 1).min(FETCH_BATCH);
            // A take under way when shutdown begins is finished, not
            // dropped: a `BLMOVE` already sent would still move an event
            // into the in-flight list, possibly after the hand-back, where
            // no one would ever find it. It waits `BLOCKING_POP` at most.
            let taken = if drained {
                tracing::trace!(room, "blocking pop, then fetching");
                block_then_fetch(
                    &mut self.blocking,
                    &fetch,
                    &self.events_key,
                    &self.inflight_key,
                    room,
                )
                .await
            } else {
                tracing::trace!(room, "fetching");
                fetch
                    .key(&self.events_key)
                    .key(&self.inflight_key)
                    .arg(room)
                    .invoke_async(&mut self.redis)
                    .await
            };
            let batch: Vec<Vec<u8>> = match taken {
                Ok(batch) => batch,
                Err(error) => {
                    metrics::counter!("iocluster_redis_errors_total", "task" => "taker")
                        .increment(1);
                    outage.failed("cannot take events from the queue", &error);
                    tokio::select! {
                        () = backoff.wait() => continue,
                        () = self.serving.cancelled() => break,
                    }
                }
            };
            backoff.reset();
            outage.recovered();
            if self.serving.is_cancelled() {
                if !batch.is_empty() {
                    tracing::info!(
                        events = batch.len(),
                        "taken as shutdown began: left for the hand-back"
                    );
                }
                break;
            }
            drained = batch.len() < room;
            let mut first = Some(first);
            for raw in batch {
                let permit = match first.take() {
                    Some(permit) => permit,
                    None => match self.semaphore.clone().try_acquire_owned() {
                        Ok(permit) => permit,
                        // Cannot happen: only this loop takes permits and
                        // it fetched no more than were free.
                        Err(_) => self
                            .semaphore
                            .clone()
                            .acquire_owned()
                            .await
                            .expect("semaphore is never closed"),
                    },
                };
                let dispatcher = self.dispatcher.clone();
                let partition = self.partition;
                self.running.spawn(async move {
                    dispatcher.handle(raw, partition).await;
                    drop(permit);
                });
            }
        }
    }
}

/// Waits for an event with `BLMOVE` and takes up to `room - 1` more with
/// the take script, both in one pipeline: when the pop is served, Redis
/// runs the script at once, so a burst comes back whole with its first
/// event. The events come oldest first, as [`scripts::FETCH`] gives them.
/// Both replies are read whatever the other one was, so an event either
/// command moved into the in-flight list is always handled; a script Redis
/// no longer knows (it restarted) had run nothing, and is sent again (and
/// loaded) alone.
async fn block_then_fetch(
    blocking: &mut iocluster_ops::Redis,
    fetch: &redis::Script,
    events_key: &str,
    inflight_key: &str,
    room: usize,
) -> redis::RedisResult<Vec<Vec<u8>>> {
    let mut pipe = redis::pipe();
    pipe.ignore_errors();
    pipe.cmd("BLMOVE")
        .arg(events_key)
        .arg(inflight_key)
        .arg("RIGHT")
        .arg("LEFT")
        .arg(BLOCKING_POP.as_secs_f64());
    let more = room - 1;
    if more > 0 {
        pipe.cmd("EVALSHA")
            .arg(fetch.get_hash())
            .arg(2)
            .arg(events_key)
            .arg(inflight_key)
            .arg(more);
    }
    // One reply per command, an error reply as an `Err` of its own.
    fn reply<T: redis::FromRedisValue>(value: redis::Value) -> redis::RedisResult<T> {
        redis::from_redis_value::<redis::RedisResult<T>>(value)?
    }
    let replies: Vec<redis::Value> = pipe.query_async(blocking).await?;
    let mut replies = replies.into_iter();
    let popped: redis::RedisResult<Option<Vec<u8>>> = replies.next().map_or(Ok(None), reply);
    let fetched: Option<redis::RedisResult<Vec<Vec<u8>>>> = replies.next().map(reply);
    // A script Redis no longer knows (it restarted) ran nothing: send it
    // again alone (it is loaded on the way).
    let fetched = match fetched {
        Some(Err(error)) if is_noscript(&error) => Some(
            fetch
                .key(events_key)
                .key(inflight_key)
                .arg(more)
                .invoke_async(blocking)
                .await,
        ),
        fetched => fetched,
    };
    // Whatever either command moved into the in-flight list is ours now
    // and must be handled: an error of one does not drop the other's.
    let mut batch = Vec::new();
    match popped {
        Ok(popped) => batch.extend(popped),
        Err(error) if fetched.is_none() => return Err(error),
        Err(error) => tracing::warn!(%error, "blocking pop failed"),
    }
    match fetched {
        None => {}
        Some(Ok(fetched)) => batch.extend(fetched),
        Some(Err(error)) if batch.is_empty() => return Err(error),
        Some(Err(error)) => tracing::warn!(%error, "cannot take more events after a blocking pop"),
    }
    Ok(batch)
}
