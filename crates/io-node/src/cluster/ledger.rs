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

use std::time::Duration;

use iocluster_protocol::keys::Keys;

/// How long the mark of a drained ledger lives: longer than any stall after
/// which a node could still renew its lease.
pub(crate) const REAPED_MARK: Duration = Duration::from_secs(24 * 3600);

/// Entries drained per script run: bounds how long one run blocks Redis.
pub(crate) const DRAIN_BATCH: usize = 1000;

/// Rewrites an entry only if it is still there (a closed socket's entry never
/// comes back). KEYS: ledger. ARGV: sid, envelope.
pub(crate) const UPDATE: &str = r"
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
end
return 0";

/// A socket's own disconnect event, pushed if its entry was still there, or
/// if Redis lost the node's whole ledger (and nobody drained it).
/// KEYS: ledger, events, ledgers, reaped mark. ARGV: sid, node, envelope.
pub(crate) const ANNOUNCE: &str = r"
if redis.call('HDEL', KEYS[1], ARGV[1]) == 1
  or (redis.call('SISMEMBER', KEYS[3], ARGV[2]) == 0 and redis.call('EXISTS', KEYS[4]) == 0) then
  redis.call('LPUSH', KEYS[2], ARGV[3])
  return 1
end
return 0";

/// Moves up to a batch of a dead node's entries onto the event queue.
/// KEYS: nodes, ledger, events, ledgers, reaped mark, node info.
/// ARGV: node, now (ms), batch, force (1: the node's own previous life),
/// mark TTL (ms).
/// Returns {moved, left}; left is -1 when the node is alive.
pub(crate) const DRAIN: &str = r"
local node = ARGV[1]
if ARGV[4] ~= '1' then
  local lease = redis.call('ZSCORE', KEYS[1], node)
  if lease and tonumber(lease) > tonumber(ARGV[2]) then
    return {0, -1}
  end
  if lease then
    redis.call('ZREM', KEYS[1], node)
    redis.call('DEL', KEYS[6])
  end
  -- Tells the node, should it be alive after all, that its sockets are
  -- being announced: it must close them (and announce none twice).
  redis.call('SET', KEYS[5], '1', 'PX', ARGV[5])
end
local batch = tonumber(ARGV[3])
local moved = 0
local cursor = '0'
repeat
  local page = redis.call('HSCAN', KEYS[2], cursor, 'COUNT', batch)
  cursor = page[1]
  local items = page[2]
  for i = 1, #items, 2 do
    redis.call('LPUSH', KEYS[3], items[i + 1])
    redis.call('HDEL', KEYS[2], items[i])
    moved = moved + 1
  end
until cursor == '0' or moved >= batch
local left = redis.call('HLEN', KEYS[2])
if left == 0 then
  redis.call('SREM', KEYS[4], node)
end
return {moved, left}";

/// Drains `node`'s ledger completely unless the node is alive (or, with
/// `force`, whatever its lease says). Returns the number of disconnect
/// events announced.
pub(crate) async fn drain(
    redis: &mut redis::aio::ConnectionManager,
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
            .arg(node)
            .arg(crate::clock::unix_ms())
            .arg(DRAIN_BATCH)
            .arg(if force { "1" } else { "0" })
            .arg(REAPED_MARK.as_millis() as u64)
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
    redis: &mut redis::aio::ConnectionManager,
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
