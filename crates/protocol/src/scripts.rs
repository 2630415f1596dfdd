//! The Lua scripts of the Redis protocol, as text: the app-node's three
//! ([`FETCH`], [`FLUSH`], [`REAP`]) and the io-node's ledger scripts
//! ([`UPDATE`], [`ANNOUNCE`], [`DRAIN`]).
//!
//! They are part of the contract as much as the envelopes are: a second
//! app-node SDK runs the same three scripts (or commands with the same
//! effect, atomically), which is why they live here rather than in the Rust
//! SDK. This module only holds the text and says what each script's `KEYS`
//! and `ARGV` are; loading and calling them (`EVALSHA`, reloading after a
//! `NOSCRIPT`) is the I/O of the nodes that run them. docs/PROTOCOL.md shows
//! the scripts an implementation must run, and a test here keeps it showing
//! exactly these.

/// Moves up to ARGV[1] events from the queue to the in-flight list, oldest
/// first (the queue's right end), in three commands however many there are.
/// KEYS: events, in-flight list of the app-node. ARGV: most events to take.
/// Returns the events taken, oldest first.
pub const FETCH: &str = r"
local items = redis.call('LRANGE', KEYS[1], '-' .. ARGV[1], '-1')
if #items == 0 then return items end
redis.call('LTRIM', KEYS[1], 0, -#items - 1)
local out = {}
for i = #items, 1, -1 do out[#out + 1] = items[i] end
redis.call('LPUSH', KEYS[2], unpack(out))
return out";

/// Publishes one flush of an app-node's publish queue. KEYS: in-flight list
/// of the app-node. ARGV is a list of messages: `channel, n`, then `n` pairs
/// `event, envelope`. A pair with an event is a `done`: the event leaves the
/// in-flight list and the envelope goes out only if it was still there (not
/// handed to another app-node meanwhile). Each message's kept envelopes are
/// published back to back in one `PUBLISH`; an empty channel publishes
/// nothing. `LREM` searches from the tail (count -1): items enter the
/// in-flight list at its head, so the ones finishing, usually the oldest,
/// are near the tail (half the `LREM` time at echo with 100 clients).
/// Constant arguments are Lua strings: Redis 7.0 formats a Lua number
/// argument with `printf("%.17g")` on every call.
///
/// A pair whose event starts with `#` is an emit retained for connection
/// state recovery: the event is `#<maxlen>#<ttl ms>#<log stream>`; the
/// envelope is added to the stream (`XADD … MAXLEN ~ maxlen`, the stream's
/// TTL renewed) and published behind an `offset` envelope carrying the
/// entry id. The same envelope in several messages of one call (an emit
/// routed on several channels) is added once and carries the same id.
pub const FLUSH: &str = r"
local logged = {}
local i = 1
while i <= #ARGV do
  local channel, n = ARGV[i], tonumber(ARGV[i + 1])
  i = i + 2
  local parts = {}
  for _ = 1, n do
    local event, envelope = ARGV[i], ARGV[i + 1]
    i = i + 2
    if event == '' then
      parts[#parts + 1] = envelope
    elseif string.byte(event) == 35 then
      local id = logged[envelope]
      if not id then
        local maxlen, ttl, stream = string.match(event, '^#(%d+)#(%d+)#(.+)$')
        id = redis.call('XADD', stream, 'MAXLEN', '~', maxlen, '*', 'e', envelope)
        redis.call('PEXPIRE', stream, ttl)
        logged[envelope] = id
      end
      parts[#parts + 1] = '\147\1\166offset\129\162id\217' .. string.char(#id) .. id .. envelope
    elseif redis.call('LREM', KEYS[1], '-1', event) > 0 then
      parts[#parts + 1] = envelope
    end
  end
  if channel ~= '' and #parts > 0 then
    redis.call('PUBLISH', channel, table.concat(parts))
  end
end
return 0";

/// Adds emits to their namespaces' recovery logs and returns their entry
/// ids, in order: what [`FLUSH`] does for a retained emit, without
/// publishing it. On a Redis Cluster room channels are sharded and a
/// script can publish only in its own slot, so a publisher logs its
/// retained emits with this script and then publishes each with its
/// `offset` envelope itself. KEYS: any key of the prefix (so a cluster
/// client routes the call to the prefix's slot, where the logs are).
/// ARGV: pairs `mark, envelope`, the mark as in [`FLUSH`]
/// (`#<maxlen>#<ttl ms>#<log stream>`).
pub const LOG: &str = r"
local ids = {}
for i = 1, #ARGV, 2 do
  local maxlen, ttl, stream = string.match(ARGV[i], '^#(%d+)#(%d+)#(.+)$')
  ids[#ids + 1] = redis.call('XADD', stream, 'MAXLEN', '~', maxlen, '*', 'e', ARGV[i + 1])
  redis.call('PEXPIRE', stream, ttl)
end
return ids";

/// Hands the in-flight events of an app-node whose lease lapsed back to the
/// queue, and forgets the app-node. Atomic, so racing app-nodes move each
/// event once. KEYS: apps, in-flight list of the lapsed app-node, events.
/// ARGV: the lapsed app-node, now (ms; `+inf` on an app-node's own clean
/// shutdown). Returns the events moved, or -1 when the lease has not lapsed.
pub const REAP: &str = r"
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if (not score) or tonumber(score) > tonumber(ARGV[2]) then return -1 end
local moved = 0
while redis.call('LMOVE', KEYS[2], KEYS[3], 'LEFT', 'RIGHT') do moved = moved + 1 end
redis.call('ZREM', KEYS[1], ARGV[1])
return moved";

/// [`FLUSH`] publishing with `SPUBLISH`: for a partition `k ≥ 1` of the
/// event queue on a Redis Cluster, whose messages (its node channels, in
/// its slot) are sharded.
pub fn flush_sharded() -> String {
    FLUSH.replacen("redis.call('PUBLISH'", "redis.call('SPUBLISH'", 1)
}

/// [`REAP`] for a partition `k ≥ 1` of the event queue: moves back, oldest
/// first, the events a lapsed app-node took from the partition, unless its
/// lease key in the partition's slot still lives. KEYS: the app-node's
/// lease key, its in-flight list and the events of the partition. ARGV:
/// `1` to move whatever the lease says (an app-node's own shutdown or
/// start), else `0`. Returns the events moved, or -1 when the lease lives.
pub const REAP_PARTITION: &str = r"
if ARGV[1] ~= '1' and redis.call('EXISTS', KEYS[1]) == 1 then return -1 end
local moved = 0
while redis.call('LMOVE', KEYS[2], KEYS[3], 'LEFT', 'RIGHT') do moved = moved + 1 end
redis.call('DEL', KEYS[1])
return moved";

/// Rewrites an entry only if it is still there (a closed socket's entry never
/// comes back). KEYS: ledger. ARGV: sid, envelope.
pub const UPDATE: &str = r"
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
end
return 0";

/// A socket's own disconnect event, pushed if its entry was still there, or
/// if Redis lost the node's whole ledger (and nobody drained it).
/// KEYS: ledger, events, ledgers, reaped mark. ARGV: sid, node, envelope.
pub const ANNOUNCE: &str = r"
if redis.call('HDEL', KEYS[1], ARGV[1]) == 1
  or (redis.call('SISMEMBER', KEYS[3], ARGV[2]) == 0 and redis.call('EXISTS', KEYS[4]) == 0) then
  redis.call('LPUSH', KEYS[2], ARGV[3])
  return 1
end
return 0";

/// A socket of a namespace with connection state recovery disconnected
/// (transport closed, ping timeout, node shutting down): instead of its
/// disconnect event, its session is parked for the client to come back,
/// if its entry was still there (or Redis lost the node's whole ledger).
/// KEYS: ledger, ledgers, reaped mark, session, parked.
/// ARGV: sid, node, envelope (the disconnect event, announced if the
/// session expires), deadline (ms), session TTL (ms).
pub const PARK: &str = r"
if redis.call('HDEL', KEYS[1], ARGV[1]) == 1
  or (redis.call('SISMEMBER', KEYS[2], ARGV[2]) == 0 and redis.call('EXISTS', KEYS[3]) == 0) then
  redis.call('SET', KEYS[4], ARGV[3], 'PX', ARGV[5])
  redis.call('ZADD', KEYS[5], ARGV[4], ARGV[1])
  return 1
end
return 0";

/// A client came back: takes its parked session. KEYS: session, parked,
/// ledger of the io-node named by the sid, events, located (`P:where`),
/// ledgers, reaped mark of the io-node named by the sid.
/// ARGV: sid, now (ms), the prefix of ledger keys (`P:sockets:`), the
/// io-node named by the sid.
/// Returns `{1, envelope}` when taken, `{2}` when an io-node still holds
/// the socket (it has not seen the client go: ask it to release the
/// socket, then try again) or may (the node the sid names has no ledger
/// and was not drained: Redis lost its data, and the node has not written
/// it again yet), `{0}` when there is nothing to recover. A session found
/// past its deadline is announced (its disconnect event queued) rather
/// than taken.
pub const CLAIM: &str = r"
local deadline = redis.call('ZSCORE', KEYS[2], ARGV[1])
if deadline then
  redis.call('ZREM', KEYS[2], ARGV[1])
  local session = redis.call('GET', KEYS[1])
  redis.call('DEL', KEYS[1])
  if session and tonumber(deadline) >= tonumber(ARGV[2]) then
    redis.call('HDEL', KEYS[5], ARGV[1])
    return {1, session}
  end
  if session then redis.call('LPUSH', KEYS[4], session) end
  return {0}
end
if redis.call('HEXISTS', KEYS[3], ARGV[1]) == 1 then return {2} end
if redis.call('SISMEMBER', KEYS[6], ARGV[4]) == 0 and redis.call('EXISTS', KEYS[7]) == 0 then
  return {2}
end
local holder = redis.call('HGET', KEYS[5], ARGV[1])
if holder and redis.call('HEXISTS', ARGV[3] .. holder, ARGV[1]) == 1 then return {2} end
return {0}";

/// Announces the sessions whose time to recover is over: each parked
/// session past its deadline leaves the parked set (and `P:where`, where a
/// recovered socket's holder was noted) and its disconnect event goes to
/// the queue, once. KEYS: parked, events, located (`P:where`). ARGV: now
/// (ms), batch, the prefix of session keys (`P:session:`).
/// Returns the number announced.
pub const SWEEP: &str = r"
local due = redis.call('ZRANGE', KEYS[1], '-inf', ARGV[1], 'BYSCORE', 'LIMIT', 0, ARGV[2])
local announced = 0
for _, sid in ipairs(due) do
  redis.call('ZREM', KEYS[1], sid)
  redis.call('HDEL', KEYS[3], sid)
  local session = redis.call('GET', ARGV[3] .. sid)
  if session then
    redis.call('DEL', ARGV[3] .. sid)
    redis.call('LPUSH', KEYS[2], session)
    announced = announced + 1
  end
end
return announced";

/// Moves up to a batch of a dead node's entries onto the event queue, or,
/// for sockets of a namespace with connection state recovery, parks their
/// sessions (as [`PARK`] does) so their clients can still come back.
/// KEYS: nodes, ledger, events, ledgers, reaped mark, node info, recovery
/// namespaces, parked, located (`P:where`: an announced socket's entry goes).
/// ARGV: node, now (ms), batch, force (1: the node's own previous life),
/// mark TTL (ms), the prefix of session keys (`P:session:`).
/// Returns {moved, left}; left is -1 when the node is alive.
pub const DRAIN: &str = r"
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
    local window = nil
    local ok, event = pcall(cmsgpack.unpack, items[i + 1])
    if ok and type(event) == 'table' and type(event[3]) == 'table' and type(event[3]['nsp']) == 'string' then
      local setting = redis.call('HGET', KEYS[7], event[3]['nsp'])
      if setting then window = tonumber(string.match(setting, '^(%d+)')) end
    end
    if window and window > 0 then
      redis.call('SET', ARGV[6] .. items[i], items[i + 1], 'PX', window + 3600000)
      redis.call('ZADD', KEYS[8], tonumber(ARGV[2]) + window, items[i])
    else
      redis.call('LPUSH', KEYS[3], items[i + 1])
      redis.call('HDEL', KEYS[9], items[i])
    end
    redis.call('HDEL', KEYS[2], items[i])
    moved = moved + 1
  end
until cursor == '0' or moved >= batch
local left = redis.call('HLEN', KEYS[2])
if left == 0 then
  redis.call('SREM', KEYS[4], node)
end
return {moved, left}";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sharded_flush_differs_only_by_its_publish() {
        assert_eq!(FLUSH.matches("redis.call('PUBLISH'").count(), 1);
        let sharded = flush_sharded();
        assert_eq!(sharded.matches("'SPUBLISH'").count(), 1);
        assert_eq!(sharded.replace("SPUBLISH", "PUBLISH"), FLUSH);
    }

    /// Non-empty lines, trimmed: the document indents its code blocks.
    fn lines(text: &str) -> String {
        text.lines()
            .map(str::trim)
            .filter(|line| !line.is_empty())
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// docs/PROTOCOL.md tells other implementations to run these scripts:
    /// it must show them as the nodes have them (indentation aside).
    /// [`UPDATE`] and [`DRAIN`] are described in its prose, not shown.
    #[test]
    fn the_protocol_document_shows_the_scripts_the_nodes_run() {
        let doc = lines(include_str!("../../../docs/PROTOCOL.md"));
        for script in [FETCH, FLUSH, LOG, REAP, REAP_PARTITION, ANNOUNCE, PARK] {
            let script = lines(script);
            assert!(doc.contains(&script), "docs/PROTOCOL.md lacks:\n{script}");
        }
    }
}
