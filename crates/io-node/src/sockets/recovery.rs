//! What keeps the cluster's view of this node's sockets true: each socket's
//! ledger entry (its disconnect event as announced if the node died), the
//! rewrite of the ledger and the events pushed again when Redis lost its
//! data, the fence when another node declared this one dead, redelivery of
//! events whose `done` never came, and the stats the node publishes.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use iocluster_protocol::ids;

use super::socket::Socket;
use super::{LedgerOp, Sockets, read};
use crate::engine::CloseReason;

/// The largest rooms a node lists in its registry entry.
const STATS_ROOMS: usize = 100;

impl Sockets {
    /// What the registry publishes about this node besides its lease, as
    /// `(field, value)` pairs: sockets per namespace, the largest rooms
    /// (reserved `$` rooms left out), distinct users, and running totals of
    /// events queued and frames delivered (readers derive rates).
    pub(crate) fn stats(&self) -> Vec<(&'static str, String)> {
        let (namespaces, mut rooms, users) = {
            let registry = read(&self.registry);
            let namespaces: serde_json::Map<String, serde_json::Value> = registry
                .namespaces
                .iter()
                .map(|(nsp, members)| (nsp.to_string(), members.len().into()))
                .collect();
            let mut users = 0usize;
            let mut rooms: Vec<(String, usize)> = Vec::new();
            for (channel, members) in &registry.rooms {
                let Some((nsp, room)) = self.keys.parse_room_channel(channel) else {
                    continue;
                };
                if room.starts_with(ids::RESERVED_ROOM_PREFIX) {
                    users += usize::from(ids::user_of_room(room).is_some());
                    continue;
                }
                rooms.push((format!("{nsp},{room}"), members.len()));
            }
            (namespaces, rooms, users)
        };
        let total_rooms = rooms.len();
        let largest_first =
            |a: &(String, usize), b: &(String, usize)| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0));
        // Only the largest matter: partition in linear time, sort just them.
        if rooms.len() > STATS_ROOMS {
            rooms.select_nth_unstable_by(STATS_ROOMS, largest_first);
            rooms.truncate(STATS_ROOMS);
        }
        rooms.sort_unstable_by(largest_first);
        let rooms: serde_json::Map<String, serde_json::Value> = rooms
            .into_iter()
            .map(|(name, size)| (name, size.into()))
            .collect();
        vec![
            (
                "namespaces",
                serde_json::Value::Object(namespaces).to_string(),
            ),
            ("rooms", serde_json::Value::Object(rooms).to_string()),
            ("room_count", total_rooms.to_string()),
            ("users", users.to_string()),
            (
                "events",
                self.events_out.load(Ordering::Relaxed).to_string(),
            ),
            (
                "deliveries",
                self.deliveries.load(Ordering::Relaxed).to_string(),
            ),
        ]
    }

    /// The current ledger entries of the given sockets, skipping those
    /// already settled.
    pub(crate) fn ledger_entries(&self, sids: Vec<Arc<str>>) -> Vec<(Arc<str>, Vec<u8>)> {
        if sids.is_empty() {
            return Vec::new();
        }
        let sockets: Vec<Arc<Socket>> = {
            let registry = read(&self.registry);
            sids.iter()
                .filter_map(|sid| registry.sockets.get(sid).cloned())
                .collect()
        };
        sockets
            .into_iter()
            .filter_map(|socket| {
                let state = socket.lock();
                (!state.settled).then(|| {
                    (
                        socket.id.clone(),
                        socket.ledger_entry(self.node_id(), &state),
                    )
                })
            })
            .collect()
    }

    /// Redis lost its data (restarted without persistence): rewrite the
    /// ledger and push again the events in flight that were written before
    /// the loss (numbered `lost_upto` or less): they were in the lost queue,
    /// or their `done` will never come. At-least-once: an event that had in
    /// fact been handled is handled again.
    pub(crate) fn resync(&self, lost_upto: u64) {
        if self.resync_pending.swap(true, Ordering::AcqRel) {
            return;
        }
        let mut pushed = 0usize;
        for socket in self.all_sockets() {
            let mut state = socket.lock();
            if state.settled {
                continue;
            }
            self.cluster.ledger(LedgerOp::Create(
                socket.id.clone(),
                socket.ledger_entry(self.node_id(), &state),
            ));
            if let Some(inflight) = state.inflight.as_mut()
                && inflight.number <= lost_upto
            {
                match self
                    .cluster
                    .push_event(inflight.envelope.clone(), inflight.partition)
                {
                    Some(number) => inflight.number = number,
                    None => socket.session.close(CloseReason::Overloaded),
                }
                pushed += 1;
            }
        }
        self.cluster.ledger(LedgerOp::Register);
        tracing::warn!(
            events = pushed,
            "Redis lost its data: ledger rewritten, in-flight events pushed again"
        );
    }

    /// The ledger rewrite reached Redis.
    pub(crate) fn resync_done(&self) {
        self.resync_pending.store(false, Ordering::Release);
    }

    /// Another io-node found this node's lease lapsed and announced its
    /// sockets gone: once per lapse (`true`), the caller closes every client
    /// (they reconnect elsewhere, announced once already) and a fresh
    /// ledger is opened.
    pub(crate) fn fence(&self) -> bool {
        if self.resync_pending.swap(true, Ordering::AcqRel) {
            return false;
        }
        tracing::error!(
            "this node's lease lapsed and its clients were declared gone: closing them"
        );
        self.cluster.ledger(LedgerOp::Register);
        true
    }

    /// Pushes again the events with an app-node for `after` or longer
    /// (per event of the item: each may take the handler timeout): their
    /// `done` was lost with a Redis failover or published while this node's
    /// subscription was down. `Duration::ZERO`: all of them.
    pub(crate) fn redeliver(&self, after: Duration) {
        let mut again = 0usize;
        let mut inflight_now = 0usize;
        let now = self.clock.now_us();
        for socket in self.all_sockets() {
            let mut state = socket.lock();
            let Some(inflight) = state.inflight.as_mut() else {
                continue;
            };
            inflight_now += 1;
            // Each event of an item may take the app-nodes' handler timeout.
            let due = (after * inflight.events).as_micros();
            if u128::from(now.saturating_sub(inflight.since_us)) < due {
                continue;
            }
            inflight.since_us = now;
            if let Some(number) = self
                .cluster
                .push_event(inflight.envelope.clone(), inflight.partition)
            {
                inflight.number = number;
                again += 1;
            }
        }
        metrics::counter!("iocluster_redeliveries_total").increment(again as u64);
        metrics::gauge!("iocluster_inflight_events").set(inflight_now as f64);
        if again > 0 {
            tracing::warn!(events = again, "no done in time: events pushed again");
        }
    }
}
