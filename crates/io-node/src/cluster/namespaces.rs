//! The namespaces app-nodes serve (`P:nsps`, scored by the end of the last
//! lease of an app-node serving each), cached: the registry task refreshes
//! the list every beat, and a miss refreshes it at most every 250 ms, so a
//! namespace whose first app-node just started is found at once. A
//! namespace stays served for `namespace_memory` after its last lease
//! ended: while every app-node restarts, its clients wait and retry rather
//! than be refused for good (running app-nodes refuse a namespace they do
//! not serve themselves).
//!
//! The node also remembers what it read: a namespace it saw served stays
//! served here for `namespace_memory` even if it vanishes from Redis, with
//! its recovery setting, and the cluster's key for private ids is written
//! back as this node knows it. A Redis that restarted empty (or a promoted
//! replica that lacks the last writes) has lost `P:nsps`, `P:recovery` and
//! `P:recovery-key` until the app-nodes renew their leases: without this, a
//! client reconnecting in that second is refused for good ("Invalid
//! namespace", which socket.io-client does not retry), or loses its
//! session because its private id no longer checks.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use iocluster_protocol::keys::Keys;

/// How stale the list may be before a miss refreshes it.
const REFRESH_AFTER_MISS: Duration = Duration::from_millis(250);

pub(crate) struct Namespaces {
    redis: iocluster_ops::Redis,
    key: String,
    recovery_key: String,
    recovery: String,
    /// How long a namespace stays served after its last lease ended.
    memory: std::time::Duration,
    cache: RwLock<Cache>,
    /// Serializes refreshes asked for by misses.
    refresh_lock: tokio::sync::Mutex<()>,
}

#[derive(Default)]
struct Cache {
    served: HashSet<String>,
    /// When each namespace was last read as served.
    seen: HashMap<String, Instant>,
    /// Namespaces with connection state recovery, and its window (ms).
    recovery: HashMap<String, u64>,
    /// The cluster's key for private ids.
    key: Option<Arc<str>>,
    refreshed: Option<Instant>,
}

impl Namespaces {
    pub(crate) fn new(
        redis: iocluster_ops::Redis,
        keys: &Keys,
        memory: std::time::Duration,
    ) -> Namespaces {
        Namespaces {
            redis,
            key: keys.namespaces(),
            recovery_key: keys.recovery_key(),
            recovery: keys.recovery(),
            memory,
            cache: RwLock::default(),
            refresh_lock: tokio::sync::Mutex::new(()),
        }
    }

    /// Whether an app-node serves `nsp`.
    pub(crate) async fn serves(&self, nsp: &str) -> bool {
        {
            let cache = self.read();
            if cache.served.contains(nsp) {
                return true;
            }
            if cache
                .refreshed
                .is_some_and(|at| at.elapsed() < REFRESH_AFTER_MISS)
            {
                return false;
            }
        }
        let _guard = self.refresh_lock.lock().await;
        let stale = self
            .read()
            .refreshed
            .is_none_or(|at| at.elapsed() >= REFRESH_AFTER_MISS);
        if stale && let Err(error) = self.refresh().await {
            tracing::warn!(%error, "cannot read the served namespaces");
        }
        self.read().served.contains(nsp)
    }

    /// Reads the list of namespaces whose last lease ended less than
    /// `memory` ago (or has not ended).
    pub(crate) async fn refresh(&self) -> redis::RedisResult<()> {
        let mut redis = self.redis.clone();
        let since = crate::clock::unix_ms().saturating_sub(crate::clock::millis(self.memory));
        // The recovery key is made once, by whichever node asks first; a
        // node that knows it writes it back if Redis lost it.
        let known_key = self.read().key.as_deref().map(str::to_owned);
        let (served, recovery, key): (Vec<String>, HashMap<String, String>, Option<String>) =
            redis::pipe()
                .cmd("ZRANGE")
                .arg(&self.key)
                .arg(since)
                .arg("+inf")
                .arg("BYSCORE")
                .cmd("HGETALL")
                .arg(&self.recovery)
                .cmd("SET")
                .arg(&self.recovery_key)
                .arg(known_key.unwrap_or_else(|| crate::engine::random_token(32)))
                .arg("NX")
                .ignore()
                .cmd("GET")
                .arg(&self.recovery_key)
                .query_async(&mut redis)
                .await?;
        let mut cache = self
            .cache
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let now = Instant::now();
        let memory = self.memory;
        cache
            .seen
            .retain(|_, at| now.saturating_duration_since(*at) < memory);
        let mut now_served: HashSet<String> = cache.seen.keys().cloned().collect();
        for nsp in served {
            if !memory.is_zero() {
                cache.seen.insert(nsp.clone(), now);
            }
            now_served.insert(nsp);
        }
        cache.served = now_served;
        let recovery: HashMap<String, u64> = recovery
            .into_iter()
            .filter_map(|(nsp, value)| {
                let (window, _) = iocluster_protocol::recovery::parse_setting(&value)?;
                Some((nsp, window))
            })
            .collect();
        // A served namespace missing from the hash keeps its last setting
        // (the hash was lost); one no longer served forgets it.
        let mut merged = std::mem::take(&mut cache.recovery);
        merged.retain(|nsp, _| cache.served.contains(nsp));
        merged.extend(recovery);
        cache.recovery = merged;
        if cache.key.as_deref() != key.as_deref() {
            cache.key = key.map(Into::into);
        }
        cache.refreshed = Some(Instant::now());
        Ok(())
    }

    /// Connection state recovery in `nsp`, if its app-nodes turned it on.
    pub(crate) fn recovery(&self, nsp: &str) -> Option<crate::sockets::NamespaceRecovery> {
        let cache = self.read();
        let window_ms = *cache.recovery.get(nsp).filter(|window| **window > 0)?;
        Some(crate::sockets::NamespaceRecovery {
            window_ms,
            key: cache.key.clone()?,
        })
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Cache> {
        self.cache
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}
