//! The other io-nodes, for the engine's relay (`engine::relay`): relay
//! envelopes go out on the owner's relay channel through the writer, and
//! whether a node lives is read from the live-node set (`P:nodes`), kept
//! here as of the last registry beat and looked up in Redis for a node not
//! seen then (one that just started). After Redis lost its data (a restart
//! without persistence) the live set is empty until every node renews its
//! lease: for a lease and a beat, a node missing from it is not taken for
//! dead (its relayed requests and links are not failed, its sessions are
//! still relayed to it).

use std::collections::HashSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use iocluster_protocol::envelope::relay::Relay;
use iocluster_protocol::keys::Keys;

use super::Bridge;
use crate::clock::unix_ms;
use crate::engine::relay::Peers;
use crate::sockets::Cluster as _;

pub(crate) struct ClusterPeers {
    node: String,
    keys: Keys,
    bridge: Bridge,
    redis: iocluster_ops::Redis,
    /// The io-nodes whose lease ran at the last beat.
    live: RwLock<HashSet<String>>,
    /// Until then (Unix ms), a node missing from the live set may simply
    /// not have renewed its lease yet: in a Redis that lost its data, or
    /// after an outage or failover that kept every node from renewing.
    grace_until: AtomicU64,
}

impl ClusterPeers {
    pub(crate) fn new(
        node: String,
        keys: Keys,
        bridge: Bridge,
        redis: iocluster_ops::Redis,
    ) -> ClusterPeers {
        ClusterPeers {
            node,
            keys,
            bridge,
            redis,
            live: RwLock::default(),
            grace_until: AtomicU64::new(0),
        }
    }

    /// Redis lost its data, or could not take lease renewals for a while
    /// (an outage, a failover; seen by this node): every live node renews
    /// within a lease once Redis answers, so until then a lapsed or
    /// missing lease proves nothing, and no node is reaped.
    pub(crate) fn grace(&self, lease: Duration) {
        let until = unix_ms() + crate::clock::millis(lease + lease / 3);
        self.grace_until.fetch_max(until, Ordering::AcqRel);
    }

    pub(crate) fn in_grace(&self) -> bool {
        unix_ms() < self.grace_until.load(Ordering::Acquire)
    }

    /// Reads the live set again; returns the nodes that left it since the
    /// last read (their relayed requests and links fail).
    pub(crate) async fn refresh(
        &self,
        redis: &mut iocluster_ops::Redis,
    ) -> redis::RedisResult<Vec<String>> {
        let live: HashSet<String> = redis::cmd("ZRANGEBYSCORE")
            .arg(self.keys.nodes())
            .arg(unix_ms())
            .arg("+inf")
            .query_async(redis)
            .await?;
        let mut known = self
            .live
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if self.in_grace() {
            // Nodes renew one by one: keep those known, add the renewed.
            known.extend(live);
            return Ok(Vec::new());
        }
        let lost = known.difference(&live).cloned().collect();
        *known = live;
        Ok(lost)
    }

    fn known_live(&self, node: &str) -> bool {
        self.live
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .contains(node)
    }
}

impl Peers for ClusterPeers {
    fn node_id(&self) -> &str {
        &self.node
    }

    fn send(&self, node: &str, relay: &Relay) -> bool {
        self.bridge
            .publish(self.keys.relay_channel(node), relay.encode())
    }

    fn is_live<'a>(&'a self, node: &'a str) -> Pin<Box<dyn Future<Output = bool> + Send + 'a>> {
        Box::pin(async move {
            if self.known_live(node) {
                return true;
            }
            let mut redis = self.redis.clone();
            let lease: Option<f64> = redis::cmd("ZSCORE")
                .arg(self.keys.nodes())
                .arg(node)
                .query_async(&mut redis)
                .await
                .unwrap_or(None);
            match lease {
                Some(until) => until > unix_ms() as f64,
                None => self.in_grace(),
            }
        })
    }
}

/// Shared by the registry (which refreshes it) and the engine.
pub(crate) type SharedPeers = Arc<ClusterPeers>;
