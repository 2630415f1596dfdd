//! Connection state recovery: a client that lost its connection comes back
//! (on this node or any other) with its private id and the last offset it
//! saw, and gets its socket back, with the same id, rooms and data, then
//! every retained emit it missed, then live traffic, none twice.
//!
//! The cluster side finds the parked session (`cluster::recovery`) and
//! hands it to [`Sockets::recover`], which opens the socket admitted, in its
//! rooms, holding every frame for it; once its room subscriptions are
//! active the cluster side reads the namespace's log after the client's
//! offset and hands it to [`Sockets::replayed`], which sends CONNECT, the
//! missed emits that were for this socket, then the held frames the replay
//! did not already carry. From then on a retained emit at or before the
//! replay's last offset is dropped (a copy that was on its way while the
//! log was read).

use std::collections::HashSet;
use std::sync::Arc;

use iocluster_protocol::envelope::{Emit, Event, EventKind};
use iocluster_protocol::recovery::{self, Offset};
use iocluster_protocol::socketio::PacketKind;

use super::packets::ConnectRequest;
use super::socket::{Phase, Queued, Socket};
use super::{
    LedgerOp, NamespaceRecovery, Session, Sockets, attachments, connect_frame, packet_frame, read,
    write,
};
use crate::engine::CloseReason;

impl Sockets {
    /// The channels of the io-node a socket's id names, when that is
    /// another node: a recovered socket that moved here is reached through
    /// them (the app-nodes route commands by the id's node). On a Redis
    /// Cluster that node has one per partition of the queue.
    pub(super) fn home_channels(&self, socket: &Socket) -> Vec<String> {
        let Some(home) = iocluster_protocol::ids::node_of(&socket.id) else {
            return Vec::new();
        };
        if home == self.node_id() {
            return Vec::new();
        }
        let partitions = if self.keys.sharded_rooms() {
            self.settings
                .partitions
                .load(std::sync::atomic::Ordering::Relaxed)
        } else {
            1
        };
        (0..partitions)
            .map(|k| self.keys.partition(k).node_channel(home))
            .collect()
    }

    /// Opens the socket of a recovered session: `previous` is its parked
    /// disconnect event (id, rooms, data). Returns `false`, having done
    /// nothing, when the session cannot be opened here (the client left
    /// meanwhile, or the socket is still open on this node).
    pub(crate) fn recover(
        &self,
        session: &Arc<Session>,
        request: ConnectRequest,
        previous: Event,
        recovery: &NamespaceRecovery,
        after: Option<String>,
    ) -> bool {
        let ConnectRequest { nsp, auth } = request;
        if previous.nsp != nsp
            || read(&self.registry)
                .sockets
                .contains_key(previous.sid.as_str())
        {
            return false;
        }
        let auth = (!auth.is_empty()).then_some(auth);
        let sid: Arc<str> = previous.sid.as_str().into();
        let recovery = Some(recovery.for_socket(&sid));
        let Some(socket) = self.open_socket(session, &nsp, auth.as_deref(), sid.clone(), recovery)
        else {
            return false;
        };
        let nsp = socket.nsp.clone();
        let mut state = socket.lock();
        state.phase = Phase::Connected;
        state.held = Some(Vec::new());
        state.data = previous.sdata;
        self.join_locked(&socket, &mut state, previous.rooms);
        let home = self.home_channels(&socket);
        if !home.is_empty() {
            let fresh: Vec<String> = {
                let mut registry = write(&self.registry);
                home.into_iter()
                    .filter(|channel| {
                        let members = registry.rooms.entry(channel.clone()).or_default();
                        let fresh = members.is_empty();
                        members.insert(sid.clone(), socket.clone());
                        fresh
                    })
                    .collect()
            };
            for channel in fresh {
                self.cluster.subscribe(channel);
            }
            self.cluster.ledger(LedgerOp::Locate(sid.clone()));
        }
        self.add_to_namespace(&socket);
        self.cluster.ledger(LedgerOp::Create(
            sid.clone(),
            socket.ledger_entry(self.node_id(), &state),
        ));
        state.queue.push_back(Queued {
            kind: EventKind::Connect,
            data: auth,
            bin: Vec::new(),
            ack: None,
            reason: None,
            recovered: true,
        });
        self.dispatch_next(&socket, &mut state);
        drop(state);
        metrics::counter!("iocluster_recoveries_total").increment(1);
        tracing::debug!(socket = %sid, nsp = %nsp, "session recovered; replaying");
        self.cluster.replay(sid, nsp, after);
        true
    }

    /// Queues the disconnect event of a session taken back that cannot be
    /// used after all.
    pub(crate) fn announce_lost(&self, envelope: Vec<u8>) {
        let _ = self.cluster.push_event(bytes::Bytes::from(envelope), 0);
    }

    /// The log of a recovered socket's namespace after its client's offset
    /// (`None`: it could not be read): CONNECT, the missed emits, then what
    /// was held. Without a log the client's connection is closed instead,
    /// which parks the session again for its next try.
    pub(crate) fn replayed(&self, sid: &str, log: Option<Vec<Emit>>) {
        let Some(socket) = read(&self.registry).sockets.get(sid).cloned() else {
            return;
        };
        let mut state = socket.lock();
        if !matches!(state.phase, Phase::Connected) {
            return;
        }
        let Some(held) = state.held.take() else {
            return;
        };
        let Some(log) = log else {
            drop(state);
            tracing::warn!(socket = %sid, "cannot read the recovery log: closing the connection for the client to retry");
            socket.session.close(CloseReason::TransportError);
            return;
        };
        socket
            .session
            .send(connect_frame(self.settings.parser, &socket));
        let mut last: Option<Offset> = None;
        let mut seen = HashSet::new();
        let mut replayed = 0u64;
        for emit in log {
            let Some(offset) = emit.offset.as_deref().and_then(Offset::parse) else {
                continue;
            };
            last = last.max(Some(offset));
            if emit.ack.is_some()
                || emit.nsp != *socket.nsp
                || emit.id.is_some_and(|id| !seen.insert(id))
                || !recovery::is_recipient(&emit, &socket.id, |room| state.rooms.contains(room))
            {
                continue;
            }
            let data = recovery::with_offset(&emit.data, &offset.to_string());
            socket.session.send(packet_frame(
                self.settings.parser,
                PacketKind::Event,
                &socket.nsp,
                None,
                &data,
                attachments(emit.bin).as_ref(),
            ));
            replayed += 1;
        }
        for (offset, frame) in held {
            if offset.is_some() && offset <= last {
                continue;
            }
            socket.session.send(frame);
        }
        state.floor = last;
        metrics::counter!("iocluster_recovery_replayed_total").increment(replayed);
        tracing::debug!(socket = %sid, replayed, "replay sent");
    }
}
