//! The namespaces app-nodes serve (`P:nsps`, scored by the end of the last
//! lease of an app-node serving each), cached: the registry task refreshes
//! the list every beat, and a miss refreshes it at most every 250 ms, so a
//! namespace whose first app-node just started is found at once. A
//! namespace stays served for `namespace_memory` after its last lease
//! ended: while every app-node restarts, its clients wait and retry rather
//! than be refused for good (running app-nodes refuse a namespace they do
//! not serve themselves).

use std::collections::HashSet;
use std::sync::RwLock;
use std::time::{Duration, Instant};

use iocluster_protocol::keys::Keys;

/// How stale the list may be before a miss refreshes it.
const REFRESH_AFTER_MISS: Duration = Duration::from_millis(250);

pub(crate) struct Namespaces {
    redis: redis::aio::ConnectionManager,
    key: String,
    /// How long a namespace stays served after its last lease ended.
    memory: std::time::Duration,
    cache: RwLock<Cache>,
    /// Serializes refreshes asked for by misses.
    refresh_lock: tokio::sync::Mutex<()>,
}

#[derive(Default)]
struct Cache {
    served: HashSet<String>,
    refreshed: Option<Instant>,
}

impl Namespaces {
    pub(crate) fn new(
        redis: redis::aio::ConnectionManager,
        keys: &Keys,
        memory: std::time::Duration,
    ) -> Namespaces {
        Namespaces {
            redis,
            key: keys.namespaces(),
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
        let served: Vec<String> = redis::cmd("ZRANGE")
            .arg(&self.key)
            .arg(since)
            .arg("+inf")
            .arg("BYSCORE")
            .query_async(&mut redis)
            .await?;
        let mut cache = self
            .cache
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        cache.served = served.into_iter().collect();
        cache.refreshed = Some(Instant::now());
        Ok(())
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Cache> {
        self.cache
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}
