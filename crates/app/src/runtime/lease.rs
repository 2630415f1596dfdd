//! Leases: this app-node's (and its namespaces') in `P:apps` / `P:nsps`,
//! and its lease key in each other partition of the event queue, renewed
//! every quarter lease; the number of partitions, read with it; and the
//! hand-back of the in-flight events of app-nodes whose lease lapsed,
//! partition by partition, this one's own at a clean shutdown
//! ([`hand_back_own`]) and those a previous run under its id left at start
//! ([`take_lease`]).
//!
//! The lease is what lets another app-node hand back this one's events should
//! it die; it is renewed until the runtime has finished everything it could,
//! then given up in the same atomic step that hands back the rest. Readiness
//! (`/ready`) follows whether the last renewal worked, while serving.

use std::sync::LazyLock;
use std::time::Duration;

use iocluster_ops::unix_ms;

use iocluster_protocol::keys::Keys;
use iocluster_protocol::scripts;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// [`scripts::REAP`] with its hash, computed once.
static REAP: LazyLock<redis::Script> = LazyLock::new(|| redis::Script::new(scripts::REAP));
/// [`scripts::REAP_PARTITION`] with its hash, computed once.
static REAP_PARTITION: LazyLock<redis::Script> =
    LazyLock::new(|| redis::Script::new(scripts::REAP_PARTITION));

/// Renews this app-node's lease and the leases of its namespaces, and its
/// lease key in each partition `1..partitions` of the queue (one command
/// each: on a Redis Cluster they are in slots of their own).
pub(super) async fn heartbeat(
    redis: &mut iocluster_ops::Redis,
    keys: &Keys,
    app_id: &str,
    lease: Duration,
    nsps: &[(String, String)],
    partitions: u16,
) -> redis::RedisResult<()> {
    let marks = (1..partitions).map(|k| {
        let mut redis = redis.clone();
        let command = redis::cmd("SET")
            .arg(keys.partition(k).lease(app_id))
            .arg(1)
            .arg("PX")
            .arg(lease.as_millis() as u64)
            .to_owned();
        async move { command.query_async::<()>(&mut redis).await }
    });
    futures_util::future::try_join_all(marks).await?;
    let until = unix_ms() + lease.as_millis() as u64;
    let mut pipe = redis::pipe();
    pipe.cmd("ZADD")
        .arg(keys.apps())
        .arg(until)
        .arg(app_id)
        .ignore();
    for (nsp, recovery) in nsps {
        pipe.cmd("ZADD")
            .arg(keys.namespaces())
            .arg("GT")
            .arg(until)
            .arg(nsp)
            .ignore();
        // Connection state recovery, as this application configures it:
        // `<window ms>:<packets kept>`, empty when off.
        if !recovery.is_empty() {
            pipe.cmd("HSET")
                .arg(keys.recovery())
                .arg(nsp)
                .arg(recovery)
                .ignore();
        } else {
            pipe.cmd("HDEL").arg(keys.recovery()).arg(nsp).ignore();
        }
    }
    pipe.query_async(redis).await
}

/// Keeps the lease and hands back the events of app-nodes whose lease
/// lapsed, until `stop`.
pub(super) struct LeaseKeeper {
    pub(super) redis: iocluster_ops::Redis,
    pub(super) keys: Keys,
    pub(super) app_id: String,
    pub(super) lease: Duration,
    pub(super) nsps: Vec<(String, String)>,
    /// The partitions of the queue: read at each renewal, never lowered
    /// (the takers follow it).
    pub(super) partitions: watch::Sender<u16>,
    pub(super) readiness: iocluster_ops::Readiness,
    /// Cancelled when shutdown begins: from then on a renewal no longer
    /// makes the node ready again.
    pub(super) serving: CancellationToken,
    /// Cancelled once the node has finished what it could: the lease is no
    /// longer renewed (the hand-back gives it up).
    pub(super) stop: CancellationToken,
}

impl LeaseKeeper {
    pub(super) async fn run(mut self) {
        let mut outage = iocluster_ops::Outage::new("lease");
        let mut ticker = tokio::time::interval((self.lease / 4).max(Duration::from_millis(20)));
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut renewed_at: Option<tokio::time::Instant> = None;
        let mut failed = false;
        let mut failovers = iocluster_ops::failovers();
        // Until then, hand back nobody's events (see below).
        let mut grace_until = tokio::time::Instant::now();
        loop {
            tokio::select! {
                () = self.stop.cancelled() => return,
                _ = ticker.tick() => {}
            }
            match iocluster_ops::queue_partitions(&mut self.redis, &self.keys).await {
                Ok(count) if count > *self.partitions.borrow() => {
                    tracing::info!(
                        partitions = count,
                        "the event queue has more partitions: taking from them too"
                    );
                    self.partitions.send_replace(count);
                }
                Ok(_) => {}
                Err(error) => tracing::debug!(%error, "cannot read the queue's partitions"),
            }
            let partitions = *self.partitions.borrow();
            if let Err(error) = heartbeat(
                &mut self.redis,
                &self.keys,
                &self.app_id,
                self.lease,
                &self.nsps,
                partitions,
            )
            .await
            {
                self.readiness.set(false);
                metrics::counter!("iocluster_redis_errors_total", "task" => "lease").increment(1);
                outage.failed("cannot renew the lease", &error);
                failed = true;
                continue;
            }
            outage.recovered();
            // Renewals that failed or came late (Redis down, failing over,
            // or refusing while a Cluster master fails over), or a
            // failover: the other app-nodes could not renew either. Until
            // they had a lease to, a lapsed lease proves nothing, and
            // handing their events back would run them twice.
            let now = tokio::time::Instant::now();
            let failover = iocluster_ops::failovers();
            if failed
                || failover != failovers
                || renewed_at.is_some_and(|at| now - at >= self.lease / 2)
            {
                grace_until = now + self.lease + self.lease / 3;
            }
            (failed, failovers, renewed_at) = (false, failover, Some(now));
            if !self.serving.is_cancelled() {
                self.readiness.set(true);
            }
            iocluster_ops::sample_queue_depth(
                &mut self.redis,
                &iocluster_ops::queue_keys(&self.keys, partitions),
            )
            .await;
            if now >= grace_until {
                self.hand_back_lapsed().await;
            }
        }
    }

    /// Hands back the events of up to 16 app-nodes whose lease lapsed.
    async fn hand_back_lapsed(&mut self) {
        let now = unix_ms();
        let expired: redis::RedisResult<Vec<String>> = redis::cmd("ZRANGE")
            .arg(self.keys.apps())
            .arg("-inf")
            .arg(now)
            .arg("BYSCORE")
            .arg("LIMIT")
            .arg(0)
            .arg(16)
            .query_async(&mut self.redis)
            .await;
        for app in expired.unwrap_or_default() {
            if app == self.app_id {
                continue;
            }
            let partitions = *self.partitions.borrow();
            match hand_back(&mut self.redis, &self.keys, &app, now, partitions).await {
                Ok(moved) if moved >= 0 => {
                    metrics::counter!("iocluster_redeliveries_total").increment(moved as u64);
                    tracing::warn!(app = %app, moved, "app-node lease lapsed: its events went back to the queue")
                }
                Ok(_) => {}
                Err(error) => tracing::warn!(%error, "cannot hand back a lapsed app-node's events"),
            }
        }
    }
}

/// Moves the in-flight events of `app` back to the queue and forgets `app`,
/// if its lease ended before `now` (ms; `u64::MAX`: whatever the lease
/// says). Partition by partition, each atomically with a check of the
/// app-node's lease in its slot, the first (`P:apps`) last: an app-node is
/// forgotten only once every other partition was handed back. Returns the
/// events moved, or -1 when the lease had not lapsed.
async fn hand_back(
    redis: &mut iocluster_ops::Redis,
    keys: &Keys,
    app: &str,
    now: u64,
    partitions: u16,
) -> redis::RedisResult<i64> {
    let force = if now == u64::MAX { "1" } else { "0" };
    let mut moved = 0;
    for k in 1..partitions {
        let partition = keys.partition(k);
        let n: i64 = REAP_PARTITION
            .key(partition.lease(app))
            .key(partition.inflight(app))
            .key(partition.events())
            .arg(force)
            .invoke_async(redis)
            .await?;
        if n < 0 {
            return Ok(-1);
        }
        moved += n;
    }
    let n: i64 = REAP
        .key(keys.apps())
        .key(keys.inflight(app))
        .key(keys.events())
        .arg(app)
        .arg(now)
        .invoke_async(redis)
        .await?;
    Ok(if n < 0 && moved == 0 {
        -1
    } else {
        moved + n.max(0)
    })
}

/// At start: takes the lease, then hands back whatever a previous run
/// under this id left in its in-flight lists (killed, then restarted before
/// its lease lapsed, as a supervisor with a fixed id does). Left there,
/// nobody would hand it back: this run renews the very lease whose lapse
/// would have. Then the lease is taken again (the hand-back gives it up).
/// Two app-nodes must never share an id: the second to start would hand
/// back the events the first is running, which would run twice.
pub(super) async fn take_lease(
    redis: &mut iocluster_ops::Redis,
    keys: &Keys,
    app_id: &str,
    lease: Duration,
    nsps: &[(String, String)],
    partitions: u16,
) -> redis::RedisResult<()> {
    // The hand-back of partition 0 runs only for an app-node with a lease.
    heartbeat(redis, keys, app_id, lease, nsps, partitions).await?;
    let moved = hand_back(redis, keys, app_id, u64::MAX, partitions).await?;
    if moved > 0 {
        metrics::counter!("iocluster_redeliveries_total").increment(moved as u64);
        tracing::warn!(
            moved,
            "a previous run under this app id left events in flight: handed back to the queue"
        );
    }
    heartbeat(redis, keys, app_id, lease, nsps, partitions).await
}

/// The end of a clean shutdown, once the lease keeper has stopped: whatever
/// is still in this app-node's in-flight list (events taken and not started,
/// handlers dropped when the grace period ran out, `done`s the last flush
/// could not write) goes back to the queue, and the app-node leaves `P:apps`.
pub(super) async fn hand_back_own(
    redis: &mut iocluster_ops::Redis,
    keys: &Keys,
    app_id: &str,
    partitions: u16,
) {
    match hand_back(redis, keys, app_id, u64::MAX, partitions).await {
        Ok(moved) if moved > 0 => {
            tracing::info!(moved, "handed unfinished events back to the queue")
        }
        Ok(_) => {}
        Err(error) => {
            tracing::warn!(%error, "cannot hand events back; the lease will expire instead")
        }
    }
}
