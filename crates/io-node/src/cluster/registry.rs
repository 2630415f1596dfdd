//! The registry task: this node's lease in the live-node set (`P:nodes`)
//! with its details and stats (`P:node:<id>`), renewed every third of a
//! lease; what a renewal finds (this node declared dead, or a Redis that
//! lost everything); the reaping of io-nodes whose lease lapsed; redelivery
//! of events whose `done` is overdue; and the namespace list's refresh.
//! Also the node's first registration and its leaving, at shutdown.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::{Context, ledger};
use crate::clock::{millis, unix_ms};

/// Writes this node's lease and details. Returns whether the node was
/// missing from the live set (its lease had lapsed, or Redis lost it) and
/// whether it has a ledger in Redis and a drained-ledger mark.
async fn renew(
    context: &Context,
    redis: &mut iocluster_ops::Redis,
    started: u64,
) -> redis::RedisResult<(bool, bool, bool)> {
    let keys = &context.keys;
    let node = context.node_id();
    let lease = millis(context.config.lease);
    let now = unix_ms();
    let (has_ledger, reaped, added): (bool, bool, u64) = redis::pipe()
        .cmd("SISMEMBER")
        .arg(keys.ledgers())
        .arg(node)
        .cmd("EXISTS")
        .arg(keys.reaped(node))
        .cmd("ZADD")
        .arg(keys.nodes())
        .arg(now + lease)
        .arg(node)
        .cmd("HSET")
        .arg(keys.node_info(node))
        .arg("url")
        .arg(&context.config.public_url)
        .arg("connections")
        .arg(context.engine.connection_count())
        .arg("started")
        .arg(started)
        .arg("updated")
        .arg(now)
        .arg(context.sockets.stats())
        .ignore()
        .cmd("PEXPIRE")
        .arg(keys.node_info(node))
        .arg(lease * 2)
        .ignore()
        // App-nodes take from as many partitions of the queue as any
        // io-node pushes to (raised, never lowered).
        .cmd("ZADD")
        .arg(keys.partitions())
        .arg("GT")
        .arg(context.config.queue_partitions)
        .arg("count")
        .ignore()
        .query_async(redis)
        .await?;
    Ok((added == 1, has_ledger, reaped))
}

/// Registers the node before it serves anyone: announces what a previous
/// life under the same id left in its ledger, then takes the lease and
/// opens the ledger.
pub(crate) async fn register(
    context: &Context,
    redis: &mut iocluster_ops::Redis,
) -> redis::RedisResult<u64> {
    let keys = &context.keys;
    let node = context.node_id();
    let announced = ledger::drain(redis, keys, node, true).await?;
    if announced > 0 {
        tracing::warn!(
            sockets = announced,
            "announced the disconnect of the sockets a previous run of this node held"
        );
    }
    renew(context, redis, unix_ms()).await?;
    redis::pipe()
        .atomic()
        .cmd("SADD")
        .arg(keys.ledgers())
        .arg(node)
        .ignore()
        .cmd("DEL")
        .arg(keys.reaped(node))
        .ignore()
        .query_async::<()>(redis)
        .await?;
    Ok(announced)
}

/// Leaves the live set (shutdown): the frontend stops listing this node.
pub(crate) async fn deregister(
    context: &Context,
    redis: &mut iocluster_ops::Redis,
) -> redis::RedisResult<()> {
    let keys = &context.keys;
    let node = context.node_id();
    redis::pipe()
        .cmd("ZREM")
        .arg(keys.nodes())
        .arg(node)
        .ignore()
        .cmd("DEL")
        .arg(keys.node_info(node))
        .ignore()
        .query_async(redis)
        .await
}

/// The registry task: the lease, renewed every beat by a loop of its own
/// (so that no slower call can hold it up past the lease), and after each
/// renewal the upkeep: the live set, the queue depth, reaping dead io-nodes,
/// sweeping expired sessions, redelivering overdue events, the served
/// namespaces.
pub(super) async fn run(
    context: Context,
    mut redis: iocluster_ops::Redis,
    stop: CancellationToken,
) {
    let renewed = tokio::sync::Notify::new();
    tokio::join!(
        keep_lease(&context, redis.clone(), &renewed, &stop),
        upkeep(&context, redis.clone(), &renewed, &stop),
    );
    if let Err(error) = deregister(&context, &mut redis).await {
        tracing::warn!(%error, "cannot deregister the node");
    }
}

async fn keep_lease(
    context: &Context,
    mut redis: iocluster_ops::Redis,
    renewed: &tokio::sync::Notify,
    stop: &CancellationToken,
) {
    let lease = context.config.lease;
    // A renewal every tick: three a lease (skipping a tick that came a
    // hair early, as the loop once did, left two a lease, and a lease
    // lapsed when one of them was held up).
    let beat = (lease / 3).max(Duration::from_millis(50));
    let mut ticker = tokio::time::interval(beat);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let started = unix_ms();
    let mut failovers = iocluster_ops::failovers();
    let mut renewal_failed = false;
    let mut outage = iocluster_ops::Outage::new("registry");
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = ticker.tick() => {}
        }
        if context.engine.is_draining() {
            continue;
        }
        // A Redis that does not answer within half a lease counts as down.
        let asked = tokio::time::Instant::now();
        let renewal = iocluster_ops::within(
            lease / 2,
            "half a lease",
            renew(context, &mut redis, started),
        )
        .await;
        let took = asked.elapsed();
        match renewal {
            Ok((missing, has_ledger, reaped)) => {
                // After renewals failed or were held up (Redis down,
                // failing over, or refusing while a Cluster master fails
                // over; a renewal takes a few ms) or a failover, the other
                // nodes may not have renewed either: until they had a lease
                // to, reap none.
                let failover = iocluster_ops::failovers();
                if renewal_failed || took >= lease / 6 || failover != failovers {
                    tracing::debug!(
                        took_ms = took.as_millis() as u64,
                        renewal_failed,
                        "Redis held the lease renewals up: no reaping for a lease"
                    );
                    failovers = failover;
                    context.peers.grace(lease);
                }
                renewal_failed = false;
                outage.recovered();
                context.set_redis_ok(true);
                if reaped {
                    // Another node found this node's lease lapsed and
                    // announced its clients gone. Make it true.
                    context.fence();
                } else if !has_ledger {
                    // Redis lost everything (a restart without
                    // persistence): the queue lost the events in flight
                    // and the ledger is gone. So is every node's lease:
                    // until they renew, a node missing from the live set
                    // is not a dead one.
                    context.resync();
                } else if missing {
                    tracing::warn!("the node's lease had lapsed; renewed");
                }
                renewed.notify_one();
            }
            Err(error) => {
                renewal_failed = true;
                context.set_redis_ok(false);
                metrics::counter!("iocluster_redis_errors_total", "task" => "registry")
                    .increment(1);
                outage.failed("cannot renew the node lease", &error);
            }
        }
    }
}

/// What the registry does after each renewal of the lease.
async fn upkeep(
    context: &Context,
    mut redis: iocluster_ops::Redis,
    renewed: &tokio::sync::Notify,
    stop: &CancellationToken,
) {
    let keys = &context.keys;
    let queue = iocluster_ops::queue_keys(keys, context.config.queue_partitions);
    let mut outage = iocluster_ops::Outage::new("registry upkeep");
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            () = renewed.notified() => {}
        }
        match context.peers.refresh(&mut redis).await {
            Ok(lost) => {
                for node in lost {
                    context.engine.relays().owner_lost(&node);
                }
            }
            Err(error) => tracing::warn!(%error, "cannot read the live io-nodes"),
        }
        match iocluster_ops::queue_partitions(&mut redis, keys).await {
            Ok(count) => context.raise_partitions(count),
            Err(error) => tracing::debug!(%error, "cannot read the queue's partitions"),
        }
        iocluster_ops::sample_queue_depth(&mut redis, &queue).await;
        if !context.peers.in_grace()
            && let Err(error) = ledger::reap(&mut redis, keys, context.node_id()).await
        {
            tracing::warn!(%error, "cannot check for lost io-nodes");
        }
        match super::recovery::sweep(&mut redis, keys).await {
            Ok(0) => {}
            Ok(announced) => {
                tracing::debug!(announced, "sessions not recovered in time announced gone");
            }
            Err(error) => tracing::warn!(%error, "cannot announce expired sessions"),
        }
        context.sockets.redeliver(context.config.redeliver_after);
        match context.namespaces.refresh().await {
            Ok(_) => outage.recovered(),
            Err(error) => outage.failed("cannot read the served namespaces", &error),
        }
    }
}
