//! The ledger: what the cluster announces when an io-node dies.
//!
//! Every socket an io-node holds has an entry in the node's ledger hash
//! (`P:sockets:<node>`): its `disconnect` event envelope with the reason
//! `io-node lost` and the socket's current snapshot (rooms, data, handshake),
//! rewritten when joins, leaves or data change it. The entry is how the
//! disconnect event gets announced exactly once, whoever announces it:
//!
//! - the node itself, when the socket closes, runs [`ANNOUNCE`]: the event is
//!   pushed only if the entry was still there (it removes it);
//! - any other io-node that finds this node's lease lapsed runs [`DRAIN`]:
//!   entries move to the event queue in batches, each atomically.
//!
//! Redis runs each script atomically, so an entry is announced by exactly one
//! of them, even with several io-nodes racing to drain the same dead node.
//! A node whose ledger was drained while it was in fact alive (a stall longer
//! than its lease) finds the `P:reaped:<node>` mark the drain set at its next
//! lease renewal, closes its clients without announcing them again (they
//! reconnect elsewhere) and opens a fresh ledger (lease, `P:ledgers`, mark
//! removed, in one transaction).
//!
//! If Redis itself lost everything (restarted without persistence), the node
//! finds itself missing from `P:ledgers` without a `P:reaped:<node>` mark: it
//! announces its own disconnects unconditionally until it has rewritten its
//! ledger (see `Sockets::resync`).
//!
//! The scripts themselves are part of the Redis protocol, in
//! `iocluster_protocol::scripts` (docs/PROTOCOL.md, "The ledger").

use std::time::Duration;

use iocluster_protocol::keys::Keys;
pub(crate) use iocluster_protocol::scripts::{ANNOUNCE, CLAIM, DRAIN, PARK, SWEEP, UPDATE};

/// How long the mark of a drained ledger lives: longer than any stall after
/// which a node could still renew its lease.
pub(crate) const REAPED_MARK: Duration = Duration::from_secs(24 * 3600);

/// How much longer than its recovery window a parked session's key lives:
/// the sweep announces it at its deadline, and the key's own expiry only
/// cleans up after a cluster that had no io-node to sweep.
pub(crate) const SESSION_MARGIN_MS: u64 = 3_600_000;

/// Entries drained per script run: bounds how long one run blocks Redis.
pub(crate) const DRAIN_BATCH: usize = 1000;

/// Drains `node`'s ledger completely unless the node is alive (or, with
/// `force`, whatever its lease says). Returns the number of disconnect
/// events announced.
pub(crate) async fn drain(
    redis: &mut iocluster_ops::Redis,
    keys: &Keys,
    node: &str,
    force: bool,
) -> redis::RedisResult<u64> {
    let script = redis::Script::new(DRAIN);
    let mut total = 0;
    loop {
        let (moved, left): (u64, i64) = script
            .key(keys.nodes())
            .key(keys.ledger(node))
            .key(keys.events())
            .key(keys.ledgers())
            .key(keys.reaped(node))
            .key(keys.node_info(node))
            .key(keys.recovery())
            .key(keys.parked())
            .key(keys.located())
            .arg(node)
            .arg(crate::clock::unix_ms())
            .arg(DRAIN_BATCH)
            .arg(if force { "1" } else { "0" })
            .arg(REAPED_MARK.as_millis() as u64)
            .arg(keys.session(""))
            .invoke_async(redis)
            .await?;
        total += moved;
        if left <= 0 {
            return Ok(total);
        }
    }
}

/// Drains the ledger of every io-node whose lease lapsed. Returns the events
/// announced.
pub(crate) async fn reap(
    redis: &mut iocluster_ops::Redis,
    keys: &Keys,
    me: &str,
) -> redis::RedisResult<u64> {
    let nodes: Vec<String> = redis::cmd("SMEMBERS")
        .arg(keys.ledgers())
        .query_async(redis)
        .await?;
    let mut total = 0;
    for node in nodes.iter().filter(|node| *node != me) {
        let announced = drain(redis, keys, node, false).await?;
        if announced > 0 {
            tracing::warn!(
                node = %node,
                sockets = announced,
                "io-node lost: announced the disconnect of its sockets"
            );
        }
        total += announced;
    }
    Ok(total)
}
