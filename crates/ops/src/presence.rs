//! The Redis reads behind presence (docs/PROTOCOL.md, "Presence"), shared by
//! the admin API and the SDK; what to read and how to page it is planned by
//! `iocluster_protocol::presence`, which does no I/O.

use iocluster_protocol::keys::Keys;
use iocluster_protocol::presence::{self, ScanStep};

/// The io-nodes whose ledgers to read: listed in `P:ledgers` and leased.
pub async fn live_nodes(redis: &mut crate::Redis, keys: &Keys) -> redis::RedisResult<Vec<String>> {
    let (ledgers, leased): (Vec<String>, Vec<String>) = redis::pipe()
        .cmd("SMEMBERS")
        .arg(keys.ledgers())
        .cmd("ZRANGE")
        .arg(keys.nodes())
        .arg(crate::unix_ms())
        .arg("+inf")
        .arg("BYSCORE")
        .query_async(redis)
        .await?;
    Ok(presence::live_ledger_nodes(ledgers, &leased))
}

/// One `HSCAN` of a ledger; fields that are not UTF-8 are left out (no
/// io-node writes them).
pub async fn hscan(
    redis: &mut crate::Redis,
    keys: &Keys,
    step: &ScanStep<'_>,
) -> redis::RedisResult<(u64, Vec<presence::Entry>)> {
    type Raw = (u64, Vec<(Vec<u8>, Vec<u8>)>);
    let (next, entries): Raw = redis::cmd("HSCAN")
        .arg(keys.ledger(step.node))
        .arg(step.cursor)
        .arg("COUNT")
        .arg(step.count)
        .query_async(redis)
        .await?;
    let entries = entries
        .into_iter()
        .filter_map(|(field, value)| Some((String::from_utf8(field).ok()?, value)))
        .collect();
    Ok((next, entries))
}
