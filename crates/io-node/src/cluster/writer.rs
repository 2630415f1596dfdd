//! The writer task: everything the node writes to Redis but its lease, in
//! batches. Each batch is one `MULTI`/`EXEC` ([`plan`], pure) in the
//! prefix's slot: written whole or not at all, so a socket's connect and
//! disconnect events and its ledger entry never disagree. It starts by
//! checking that this Redis still knows the node: if not, Redis lost its
//! data (a restart), and with it the events written before this batch,
//! which the node then pushes again. `message` events for the other
//! partitions of the queue (their own slots on a Redis Cluster) follow, one
//! `LPUSH` per partition, each retried on its own until it is written.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use iocluster_protocol::keys::Keys;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{Context, Outgoing, ledger};
use crate::sockets::LedgerOp;

/// Most items, and most ledger operations, in one batch.
const MAX_BATCH: usize = 512;

/// The names a batch writes to, made once.
pub(super) struct Names {
    keys: Keys,
    node: String,
    /// The events key of each partition, the first `P:events`.
    events: Vec<String>,
    ledger: String,
    ledgers: String,
    reaped: String,
    nodes: String,
    parked: String,
    located: String,
    /// `P:session:`, the prefix of parked sessions' keys.
    sessions: String,
    /// The lease, in ms (a ledger registered again takes the lease first).
    lease_ms: u64,
}

impl Names {
    pub(super) fn new(keys: &Keys, node: &str, lease: Duration, partitions: u16) -> Names {
        Names {
            keys: keys.clone(),
            node: node.to_owned(),
            events: iocluster_ops::queue_keys(keys, partitions),
            ledger: keys.ledger(node),
            ledgers: keys.ledgers(),
            reaped: keys.reaped(node),
            nodes: keys.nodes(),
            parked: keys.parked(),
            located: keys.located(),
            sessions: keys.session(""),
            lease_ms: crate::clock::millis(lease),
        }
    }
}

/// A batch: the transaction in the prefix's slot, whose reply is `(known,
/// reaped)` (whether this Redis still lists the node's ledger, and whether
/// another node drained it); one `LPUSH` for each other partition with
/// events; the highest event number in the batch.
pub(super) struct Plan {
    /// `None` when the batch has nothing for the prefix's slot (only
    /// events of other partitions): its checks would say nothing of the
    /// masters those go to, whose loss of data a failover (or, past that,
    /// the redelivery of events without a `done`) covers.
    pub(super) transaction: Option<redis::Pipeline>,
    pub(super) partitions: Vec<redis::Cmd>,
    pub(super) highest: u64,
}

/// Plans one batch ([`Plan`]). Each partition's events are pushed in the
/// order they were queued.
pub(super) fn plan(
    names: &Names,
    items: &[Outgoing],
    ops: &[LedgerOp],
    stale: &[(Arc<str>, Vec<u8>)],
    now_ms: u64,
) -> Plan {
    let mut pipe = redis::pipe();
    pipe.atomic();
    pipe.cmd("SISMEMBER").arg(&names.ledgers).arg(&names.node);
    pipe.cmd("EXISTS").arg(&names.reaped);
    let mut highest = 0;
    let mut events: Vec<Vec<&[u8]>> = vec![Vec::new(); names.events.len()];
    for item in items {
        if let Outgoing::Event(bytes, number, partition) = item {
            highest = highest.max(*number);
            // A partition past this node's count (cannot happen) goes to
            // the first: never lost.
            let k = usize::from(*partition);
            let k = if k < events.len() { k } else { 0 };
            events[k].push(bytes.as_ref());
        }
    }
    if !events[0].is_empty() {
        pipe.cmd("LPUSH")
            .arg(&names.events[0])
            .arg(&events[0])
            .ignore();
    }
    for item in items {
        if let Outgoing::Publish(channel, payload) = item {
            // On a Redis Cluster another io-node's channel is sharded, in
            // the prefix's slot like this transaction.
            pipe.cmd(names.keys.publish_command(channel))
                .arg(channel)
                .arg(payload)
                .ignore();
        }
    }
    for op in ops {
        match op {
            LedgerOp::Create(sid, envelope) => {
                pipe.cmd("HSET")
                    .arg(&names.ledger)
                    .arg(sid.as_ref())
                    .arg(envelope)
                    .ignore();
            }
            LedgerOp::Forget(sid) => {
                pipe.cmd("HDEL")
                    .arg(&names.ledger)
                    .arg(sid.as_ref())
                    .ignore();
            }
            LedgerOp::Announce(sid, envelope) => {
                pipe.cmd("EVAL")
                    .arg(ledger::ANNOUNCE)
                    .arg(4)
                    .arg(&names.ledger)
                    .arg(&names.events[0])
                    .arg(&names.ledgers)
                    .arg(&names.reaped)
                    .arg(sid.as_ref())
                    .arg(&names.node)
                    .arg(envelope)
                    .ignore();
                if iocluster_protocol::ids::node_of(sid).is_some_and(|home| home != names.node) {
                    pipe.cmd("HDEL")
                        .arg(&names.located)
                        .arg(sid.as_ref())
                        .ignore();
                }
            }
            LedgerOp::Park(sid, envelope, window_ms) => {
                pipe.cmd("EVAL")
                    .arg(ledger::PARK)
                    .arg(5)
                    .arg(&names.ledger)
                    .arg(&names.ledgers)
                    .arg(&names.reaped)
                    .arg(format!("{}{sid}", names.sessions))
                    .arg(&names.parked)
                    .arg(sid.as_ref())
                    .arg(&names.node)
                    .arg(envelope)
                    .arg(now_ms + window_ms)
                    .arg(window_ms + ledger::SESSION_MARGIN_MS)
                    .ignore();
            }
            LedgerOp::Locate(sid) => {
                pipe.cmd("HSET")
                    .arg(&names.located)
                    .arg(sid.as_ref())
                    .arg(&names.node)
                    .ignore();
            }
            LedgerOp::Register => {
                // Lease first: a ledger without a lease looks dead.
                pipe.cmd("ZADD")
                    .arg(&names.nodes)
                    .arg(now_ms + names.lease_ms)
                    .arg(&names.node)
                    .ignore();

                pipe.cmd("SADD")
                    .arg(&names.ledgers)
                    .arg(&names.node)
                    .ignore();
                pipe.cmd("DEL").arg(&names.reaped).ignore();
            }
        }
    }
    for (sid, envelope) in stale {
        pipe.cmd("EVAL")
            .arg(ledger::UPDATE)
            .arg(1)
            .arg(&names.ledger)
            .arg(sid.as_ref())
            .arg(envelope)
            .ignore();
    }
    let needed = !events[0].is_empty()
        || items
            .iter()
            .any(|item| matches!(item, Outgoing::Publish(..)))
        || !ops.is_empty()
        || !stale.is_empty();
    let partitions = events
        .iter()
        .enumerate()
        .skip(1)
        .filter(|(_, events)| !events.is_empty())
        .map(|(k, events)| {
            redis::cmd("LPUSH")
                .arg(&names.events[k])
                .arg(events)
                .to_owned()
        })
        .collect();
    Plan {
        transaction: needed.then_some(pipe),
        partitions,
        highest,
    }
}

/// Sends a write with `attempt` until Redis accepts it, waiting more after
/// each failure; `outage` reports the failures (as `what`) and the
/// recovery.
async fn until_written<T, F, Fut>(
    what: &str,
    outage: &mut iocluster_ops::Outage,
    mut attempt: F,
) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = redis::RedisResult<T>>,
{
    let mut backoff = iocluster_ops::Backoff::new(iocluster_ops::EVENT_PATH_RETRY);
    loop {
        match attempt().await {
            Ok(reply) => {
                outage.recovered();
                return reply;
            }
            Err(error) => {
                metrics::counter!("iocluster_redis_errors_total", "task" => "writer").increment(1);
                outage.failed(what, &error);
                backoff.wait().await;
            }
        }
    }
}

/// Pushes one partition's events until Redis accepts them.
async fn write_partition(redis: &iocluster_ops::Redis, command: &redis::Cmd) {
    let mut outage = iocluster_ops::Outage::new("writer");
    until_written(
        "cannot write a partition of the event queue",
        &mut outage,
        || {
            let mut redis = redis.clone();
            async move { command.query_async::<()>(&mut redis).await }
        },
    )
    .await;
}

/// Writes batches until `drain` is cancelled and everything queued before
/// is written.
pub(super) async fn run(
    context: Context,
    redis: iocluster_ops::Redis,
    mut outgoing: mpsc::Receiver<Outgoing>,
    mut ledger: mpsc::UnboundedReceiver<LedgerOp>,
    drain: CancellationToken,
) {
    let bridge = context.bridge.clone();
    let names = Names::new(
        &context.keys,
        context.node_id(),
        context.config.lease,
        context.config.queue_partitions,
    );
    let mut items = Vec::with_capacity(MAX_BATCH);
    let mut ops = Vec::new();
    let mut draining = false;
    let mut outage = iocluster_ops::Outage::new("writer");
    let mut failovers = iocluster_ops::failovers();
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
        let stale = context.sockets.ledger_entries(bridge.take_stale());
        if items.is_empty() && ops.is_empty() && stale.is_empty() {
            if draining {
                return;
            }
            continue;
        }
        let plan = plan(&names, &items, &ops, &stale, crate::clock::unix_ms());
        let transaction = async {
            let Some(transaction) = &plan.transaction else {
                return (true, false);
            };
            until_written("cannot write to Redis", &mut outage, || {
                let mut redis = redis.clone();
                async move { transaction.query_async::<(bool, bool)>(&mut redis).await }
            })
            .await
        };
        // The other partitions at the same time, each on its own: a retry
        // never pushes one twice. The batch counts as written once they all
        // are.
        let (known, reaped) = futures_util::future::join(
            transaction,
            futures_util::future::join_all(
                plan.partitions
                    .iter()
                    .map(|command| write_partition(&redis, command)),
            ),
        )
        .await
        .0;
        let highest = plan.highest;
        let registers = ops.iter().any(|op| matches!(op, LedgerOp::Register));
        if !known && !reaped && !registers {
            context.resync();
        } else if iocluster_ops::failovers() != failovers {
            // A promoted replica may lack the old master's last writes
            // (replication is asynchronous): write the ledger again and push
            // again the events in flight, as after a Redis that lost its
            // data (at-least-once; a handler may run twice).
            tracing::info!("Redis failed over: writing the ledger and the events in flight again");
            context.resync();
        }
        failovers = iocluster_ops::failovers();
        bridge.written.fetch_max(highest, Ordering::AcqRel);
        if registers {
            context.sockets.resync_done();
        }
        items.clear();
        ops.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    /// Each command of a pipeline as its arguments, text where they are.
    fn commands(pipe: &redis::Pipeline) -> Vec<Vec<String>> {
        iocluster_ops::pipeline_text(pipe)
    }

    fn names() -> Names {
        Names::new(&Keys::new("p"), "n1", Duration::from_secs(5), 1)
    }

    #[test]
    fn a_batch_checks_the_node_then_pushes_every_event_in_one_command() {
        let items = vec![
            Outgoing::Event(Bytes::from_static(b"e1"), 7, 0),
            Outgoing::Publish("p:a:app".into(), b"r".to_vec()),
            Outgoing::Event(Bytes::from_static(b"e2"), 9, 0),
        ];
        let plan = plan(&names(), &items, &[], &[], 1000);
        assert_eq!(plan.highest, 9);
        assert!(plan.partitions.is_empty());
        assert_eq!(
            commands(plan.transaction.as_ref().unwrap()),
            [
                vec!["SISMEMBER", "p:ledgers", "n1"],
                vec!["EXISTS", "p:reaped:n1"],
                vec!["LPUSH", "p:events", "e1", "e2"],
                vec!["PUBLISH", "p:a:app", "r"],
            ]
        );
    }

    #[test]
    fn ledger_work_follows_the_events_in_order_and_stale_entries_come_last() {
        let sid: Arc<str> = Arc::from("n1~s");
        let ops = vec![
            LedgerOp::Create(sid.clone(), b"c".to_vec()),
            LedgerOp::Register,
            LedgerOp::Announce(sid.clone(), b"d".to_vec()),
            LedgerOp::Forget(sid.clone()),
        ];
        let stale = vec![(sid.clone(), b"u".to_vec())];
        let items = vec![Outgoing::Event(Bytes::from_static(b"e"), 1, 0)];
        let plan = plan(&names(), &items, &ops, &stale, 1000);
        let commands = commands(plan.transaction.as_ref().unwrap());
        let verbs: Vec<&str> = commands.iter().map(|c| c[0].as_str()).collect();
        assert_eq!(
            verbs,
            [
                "SISMEMBER",
                "EXISTS",
                "LPUSH",
                "HSET",
                "ZADD",
                "SADD",
                "DEL",
                "EVAL",
                "HDEL",
                "EVAL"
            ]
        );
        assert_eq!(commands[3], ["HSET", "p:sockets:n1", "n1~s", "c"]);
        // The lease taken again runs from now.
        assert_eq!(commands[4], ["ZADD", "p:nodes", "6000", "n1"]);
        // The announce script gets its four keys, then sid, node, envelope.
        assert_eq!(commands[7][1], ledger::ANNOUNCE);
        assert_eq!(
            commands[7][2..],
            [
                "4",
                "p:sockets:n1",
                "p:events",
                "p:ledgers",
                "p:reaped:n1",
                "n1~s",
                "n1",
                "d"
            ]
        );
        assert_eq!(commands[9][1], ledger::UPDATE);
        assert_eq!(commands[9][2..], ["1", "p:sockets:n1", "n1~s", "u"]);
    }

    #[test]
    fn events_of_other_partitions_go_in_one_push_each_beside_the_transaction() {
        let names = Names::new(&Keys::sharded("{p}"), "n1", Duration::from_secs(5), 4);
        let event =
            |bytes: &'static [u8], number, k| Outgoing::Event(Bytes::from_static(bytes), number, k);
        let items = vec![
            event(b"c", 1, 0),
            event(b"a1", 2, 2),
            event(b"b1", 3, 3),
            event(b"a2", 4, 2),
            // Past the count: to the first partition, never dropped.
            event(b"x", 5, 9),
        ];
        let ops = [LedgerOp::Announce(Arc::from("n1~s"), b"d".to_vec())];
        let plan = plan(&names, &items, &ops, &[], 0);
        assert_eq!(plan.highest, 5);
        let transaction = commands(plan.transaction.as_ref().unwrap());
        assert_eq!(transaction[2], ["LPUSH", "{p}:events", "c", "x"]);
        // A disconnect goes to the first partition, beside the ledger.
        assert_eq!(
            transaction[3][2..8],
            [
                "4",
                "{p}:sockets:n1",
                "{p}:events",
                "{p}:ledgers",
                "{p}:reaped:n1",
                "n1~s"
            ]
        );
        let pushes: Vec<Vec<String>> = plan
            .partitions
            .iter()
            .map(iocluster_ops::command_text)
            .collect();
        assert_eq!(
            pushes,
            [
                vec!["LPUSH", "{p:2}:events", "a1", "a2"],
                vec!["LPUSH", "{p:3}:events", "b1"],
            ]
        );
    }

    #[test]
    fn a_batch_of_publishes_only_writes_no_event() {
        let items = vec![Outgoing::Publish("c".into(), b"x".to_vec())];
        let plan = plan(&names(), &items, &[], &[], 0);
        assert_eq!(plan.highest, 0);
        assert!(
            commands(plan.transaction.as_ref().unwrap())
                .iter()
                .all(|c| c[0] != "LPUSH")
        );
        // Nothing at all for the prefix's slot: no transaction.
        let names = Names::new(&Keys::new("p"), "n1", Duration::from_secs(5), 2);
        let items = vec![Outgoing::Event(Bytes::from_static(b"e"), 3, 1)];
        let plan = super::plan(&names, &items, &[], &[], 0);
        assert!(plan.transaction.is_none());
        assert_eq!(plan.partitions.len(), 1);
    }
}
