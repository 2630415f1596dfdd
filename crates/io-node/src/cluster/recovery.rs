//! Connection state recovery, the Redis side: claiming a parked session for
//! a client that came back ([`Recovery::claim`]), reading a namespace's log
//! of retained emits for its replay ([`read_log`]), and announcing the
//! sessions whose time to come back is over ([`sweep`]).
//!
//! A socket's session is parked by the node that held it (its own
//! disconnect, `LedgerOp::Park`) or by whoever drains the ledger of that
//! node when it died. A client can come back before either happened: its
//! old node has not noticed it left (a network drop: no close seen yet), or
//! died and its lease has not lapsed. The claim then asks the holder to let
//! the socket go (a `release` command on the channel of the node the id
//! names, which a node holding a socket that moved to it also listens to)
//! and tries again until about a lease has passed, by which time a dead
//! holder's ledger is drained and the session parked.

use std::time::Duration;

use iocluster_protocol::envelope::{Command, Emit, Event, Release};
use iocluster_protocol::keys::Keys;
use iocluster_protocol::recovery::{self, Offset, Resume};

use super::ledger;
use crate::sockets::NamespaceRecovery;

/// Entries read per `XRANGE` of a replay.
const LOG_PAGE: usize = 1000;
/// Sessions announced per sweep script run.
const SWEEP_BATCH: usize = 500;
/// Between two claims of a session still held elsewhere: from the first
/// (a live holder releases it within milliseconds) doubling up to the last
/// (a dead holder's sessions are parked only when its lease lapses, and a
/// node that died leaves many clients claiming at once).
const CLAIM_RETRY_FIRST: Duration = Duration::from_millis(50);
const CLAIM_RETRY_LAST: Duration = Duration::from_secs(1);

pub(crate) struct Recovery {
    redis: iocluster_ops::Redis,
    keys: Keys,
    /// How long a claim waits for a session still held elsewhere: about a
    /// lease, after which a dead holder's ledger has been drained.
    wait: Duration,
}

/// A session taken back: its parked disconnect event (id, rooms, data),
/// and the log offset after which the client missed emits.
pub(crate) struct Claimed {
    pub previous: Event,
    pub after: String,
}

impl Recovery {
    pub(crate) fn new(redis: iocluster_ops::Redis, keys: Keys, lease: Duration) -> Self {
        Recovery {
            redis,
            keys,
            wait: lease + Duration::from_secs(3),
        }
    }

    /// Takes the session `resume` names, if there is one to recover in
    /// `nsp` and the log still holds everything the client missed. `None`
    /// leaves the client to a new session (a session it took but cannot
    /// use is announced gone, as its time would have ended).
    pub(crate) async fn claim(
        &self,
        recovery: &NamespaceRecovery,
        resume: &Resume,
        nsp: &str,
    ) -> Option<Claimed> {
        let sid = recovery::sid_of_pid(&recovery.key, &resume.pid)?.to_owned();
        let home = iocluster_protocol::ids::node_of(&sid)?.to_owned();
        let script = redis::Script::new(ledger::CLAIM);
        let started = tokio::time::Instant::now();
        let mut redis = self.redis.clone();
        let mut released = false;
        let mut retry = CLAIM_RETRY_FIRST;
        loop {
            let reply: redis::RedisResult<Vec<redis::Value>> = script
                .key(self.keys.session(&sid))
                .key(self.keys.parked())
                .key(self.keys.ledger(&home))
                .key(self.keys.events())
                .key(self.keys.located())
                .key(self.keys.ledgers())
                .key(self.keys.reaped(&home))
                .arg(&sid)
                .arg(crate::clock::unix_ms())
                .arg(self.keys.ledger(""))
                .arg(&home)
                .invoke_async(&mut redis)
                .await;
            // `{code}` or `{1, envelope}`.
            let reply = reply.map(|values| {
                let mut values = values.into_iter();
                let code = values
                    .next()
                    .and_then(|code| redis::from_redis_value::<u8>(code).ok());
                let envelope = values
                    .next()
                    .and_then(|envelope| redis::from_redis_value::<Vec<u8>>(envelope).ok());
                (code.unwrap_or(0), envelope)
            });
            tracing::debug!(socket = %sid, reply = ?reply.as_ref().map(|(code, _)| *code), "claim");
            match reply {
                Ok((1, Some(envelope))) => return self.take(envelope, &sid, nsp, resume).await,
                Ok((2, _)) if started.elapsed() < self.wait => {
                    if !released {
                        released = true;
                        let release = Command::Release(Release {
                            nsp: nsp.to_owned(),
                            sid: sid.clone(),
                        });
                        let channel = self.keys.node_channel(&home);
                        let _: redis::RedisResult<()> =
                            redis::cmd(self.keys.publish_command(&channel))
                                .arg(&channel)
                                .arg(release.encode())
                                .query_async(&mut redis)
                                .await;
                    }
                    tokio::time::sleep(retry).await;
                    retry = (retry * 2).min(CLAIM_RETRY_LAST);
                }
                Ok(_) => return None,
                Err(error) => {
                    tracing::warn!(%error, socket = %sid, "cannot claim a session to recover");
                    return None;
                }
            }
        }
    }

    /// A session claimed: usable if it is of this namespace and the log
    /// lost nothing after the client's offset; otherwise announced.
    async fn take(
        &self,
        envelope: Vec<u8>,
        sid: &str,
        nsp: &str,
        resume: &Resume,
    ) -> Option<Claimed> {
        let mut redis = self.redis.clone();
        let previous = match Event::decode(&envelope) {
            Ok(previous) if previous.sid == sid && previous.nsp == nsp => previous,
            other => {
                tracing::debug!(socket = %sid, ?other, "a claimed session that does not fit");
                self.announce(envelope).await;
                return None;
            }
        };
        // Without an offset the client saw no retained emit since it
        // connected: it missed everything since then.
        let after = match resume.offset.as_deref().and_then(Offset::parse) {
            Some(offset) => offset,
            None => Offset {
                ms: previous.handshake.time,
                seq: 0,
            },
        };
        let trimmed: redis::RedisResult<redis::Value> = redis::cmd("XINFO")
            .arg("STREAM")
            .arg(self.keys.log(nsp))
            .query_async(&mut redis)
            .await;
        let lost = match trimmed {
            // No log: nothing was retained for as long as a session lives.
            Err(error) if error.code() == Some("ERR") => None,
            Err(error) => {
                tracing::warn!(%error, "cannot read the recovery log");
                self.announce(envelope).await;
                return None;
            }
            Ok(info) => max_deleted(&info),
        };
        if lost.is_some_and(|lost| lost > after) {
            tracing::debug!(socket = %sid, "the recovery log no longer holds what the client missed");
            self.announce(envelope).await;
            return None;
        }
        Some(Claimed {
            previous,
            after: after.to_string(),
        })
    }

    /// Queues the disconnect event of a session that will not come back.
    async fn announce(&self, envelope: Vec<u8>) {
        let mut redis = self.redis.clone();
        let pushed: redis::RedisResult<()> = redis::cmd("LPUSH")
            .arg(self.keys.events())
            .arg(envelope)
            .query_async(&mut redis)
            .await;
        if let Err(error) = pushed {
            tracing::warn!(%error, "cannot announce a session that did not recover");
        }
    }
}

/// The `max-deleted-entry-id` of an `XINFO STREAM` reply: the last entry
/// trimmed from the log.
fn max_deleted(info: &redis::Value) -> Option<Offset> {
    let fields: Vec<(String, redis::Value)> = match info {
        redis::Value::Map(pairs) => pairs
            .iter()
            .filter_map(|(k, v)| {
                Some((
                    redis::from_redis_value::<String>(k.clone()).ok()?,
                    v.clone(),
                ))
            })
            .collect(),
        redis::Value::Array(items) => items
            .chunks(2)
            .filter_map(|pair| {
                Some((
                    redis::from_redis_value::<String>(pair.first()?.clone()).ok()?,
                    pair.get(1)?.clone(),
                ))
            })
            .collect(),
        _ => return None,
    };
    let (_, value) = fields
        .into_iter()
        .find(|(name, _)| name == "max-deleted-entry-id")?;
    let text: String = redis::from_redis_value(value).ok()?;
    Offset::parse(&text).filter(|offset| *offset > Offset { ms: 0, seq: 0 })
}

/// The retained emits of `nsp` after `after`, each with its offset, in log
/// order; `None` if the log cannot be read.
pub(crate) async fn read_log(
    redis: &mut iocluster_ops::Redis,
    keys: &Keys,
    nsp: &str,
    after: &str,
) -> Option<Vec<Emit>> {
    let key = keys.log(nsp);
    let mut from = after.to_owned();
    let mut emits = Vec::new();
    loop {
        let page: redis::RedisResult<Vec<(String, Vec<Vec<u8>>)>> = redis::cmd("XRANGE")
            .arg(&key)
            .arg(format!("({from}"))
            .arg("+")
            .arg("COUNT")
            .arg(LOG_PAGE)
            .query_async(redis)
            .await;
        let page = match page {
            Ok(page) => page,
            Err(error) => {
                tracing::warn!(%error, "cannot read the recovery log");
                return None;
            }
        };
        let full = page.len() == LOG_PAGE;
        for (id, fields) in page {
            let envelope = fields
                .chunks(2)
                .find(|pair| pair.first().is_some_and(|name| name == b"e"))
                .and_then(|pair| pair.get(1));
            if let Some(Ok(Command::Emit(mut emit))) = envelope.map(|bytes| Command::decode(bytes))
            {
                emit.offset = Some(id.clone());
                emits.push(emit);
            }
            from = id;
        }
        if !full {
            return Some(emits);
        }
    }
}

/// Announces every parked session whose time to recover is over. Returns
/// how many.
pub(crate) async fn sweep(
    redis: &mut iocluster_ops::Redis,
    keys: &Keys,
) -> redis::RedisResult<u64> {
    let script = redis::Script::new(ledger::SWEEP);
    let mut total = 0;
    loop {
        let announced: u64 = script
            .key(keys.parked())
            .key(keys.events())
            .key(keys.located())
            .arg(crate::clock::unix_ms())
            .arg(SWEEP_BATCH)
            .arg(keys.session(""))
            .invoke_async(redis)
            .await?;
        total += announced;
        if announced < SWEEP_BATCH as u64 {
            return Ok(total);
        }
    }
}
