//! Commands from app-nodes to frames: emits fanned out to local recipients
//! (encoded once, deduplicated, with except-lists), acks both ways, joins
//! and leaves with the subscription changes they need, socket data,
//! disconnects, and the `done` that releases a socket's next queue item or
//! decides its admission. Also the per-socket sequence itself
//! ([`Sockets::dispatch_next`]).

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use iocluster_protocol::envelope::{self, Command, EventKind, Reply};
use iocluster_protocol::keys::partition_of;
use iocluster_protocol::recovery::{self, Offset};
use iocluster_protocol::socketio::{self, PacketKind};

use super::socket::{Inflight, Phase, Queued, Socket, SocketState};
use super::{
    BATCH_BYTES, LedgerOp, Sockets, attachments, connect_frame, packet_frame, read, text_frame,
    write,
};
use crate::engine::CloseReason;

impl Sockets {
    /// Applies one command from an app-node.
    pub(crate) fn apply(&self, command: Command) {
        self.hot.command(&command).increment(1);
        match command {
            Command::Emit(emit) => self.emit(emit),
            Command::Ack(ack) => {
                let Some(socket) = self.socket(&ack.sid, &ack.nsp) else {
                    return;
                };
                let frame = packet_frame(
                    self.settings.parser,
                    PacketKind::Ack,
                    &ack.nsp,
                    Some(ack.id),
                    &ack.data,
                    attachments(ack.bin).as_ref(),
                );
                let mut state = socket.lock();
                socket.deliver(&mut state, frame, self.settings.outbox_capacity);
            }
            Command::Join(join) => {
                if let Some(socket) = self.socket(&join.sid, &join.nsp) {
                    self.join(&socket, join.rooms);
                }
                if let Some(reply) = join.reply {
                    // Sent after every subscription asked for so far is active.
                    self.cluster.reply_when_subscribed(
                        self.keys.app_channel(&reply.app),
                        Reply::Joined(envelope::Joined { id: reply.id }).encode(),
                    );
                }
            }
            Command::Leave(leave) => {
                if let Some(socket) = self.socket(&leave.sid, &leave.nsp) {
                    self.leave(&socket, &leave.rooms);
                }
            }
            Command::SetData(set) => {
                if let Some(socket) = self.socket(&set.sid, &set.nsp) {
                    socket.lock().data = Some(set.data);
                    self.cluster.ledger_stale(socket.id.clone());
                }
            }
            Command::Disconnect(disconnect) => {
                let Some(socket) = self.socket(&disconnect.sid, &disconnect.nsp) else {
                    return;
                };
                if disconnect.close {
                    self.close_connection(&socket);
                    return;
                }
                self.server_disconnect(&socket);
            }
            Command::Done(done) => self.done(done),
            Command::Release(release) => {
                if let Some(socket) = self.socket(&release.sid, &release.nsp) {
                    tracing::debug!(socket = %socket.id, "released: its client came back on another connection");
                    socket.session.close(CloseReason::TransportClose);
                }
            }
            // Folded into the emit after it by `Command::decode_all`.
            Command::Offset(_) => {}
        }
    }

    /// Closes a socket's whole connection from the server side: each of its
    /// admitted namespaces gets DISCONNECT first, so a stock client sees "io
    /// server disconnect" and does not reconnect on its own, then the
    /// transport closes (its sockets' disconnect events say `forced server
    /// close`).
    fn close_connection(&self, socket: &Arc<Socket>) {
        let session = socket.session.clone();
        let sockets: Vec<Arc<Socket>> = session.client().sockets.iter().cloned().collect();
        for socket in sockets {
            self.send_disconnect(&socket);
        }
        session.close_after_queued(CloseReason::ForcedClose);
    }

    /// Disconnects a socket from the server side (the client gets DISCONNECT
    /// and does not reconnect on its own).
    fn server_disconnect(&self, socket: &Arc<Socket>) {
        self.send_disconnect(socket);
        socket.session.client().sockets.remove(&socket.nsp);
        self.close_socket(socket, "server namespace disconnect");
    }

    /// A Socket.IO DISCONNECT for an admitted socket's namespace.
    fn send_disconnect(&self, socket: &Socket) {
        let mut state = socket.lock();
        if matches!(state.phase, Phase::Connected) {
            let frame = text_frame(
                self.settings.parser,
                PacketKind::Disconnect,
                &socket.nsp,
                None,
                "",
            );
            socket.deliver(&mut state, frame, self.settings.outbox_capacity);
        }
    }

    fn done(&self, done: envelope::Done) {
        let Some(socket) = self.socket(&done.sid, &done.nsp) else {
            return;
        };
        let mut state = socket.lock();
        if state.inflight.as_ref().map(|inflight| inflight.seq) != Some(done.seq) {
            tracing::debug!(socket = %socket.id, seq = done.seq, "done for an event not in flight");
            return;
        }
        if let Some(inflight) = state.inflight.take() {
            // From the item's (last) push to its done: Redis, the queue's
            // wait for an app-node, the handlers, and the way back.
            self.hot
                .round_trip
                .record(self.elapsed_since(inflight.since_us).as_secs_f64());
        }
        if let Some(app) = done.app.as_deref()
            && !state.seen_by.iter().any(|known| **known == *app)
        {
            if state.seen_by.len() >= envelope::SEEN_BY_MOST {
                state.seen_by.remove(0);
            }
            let name = self.app_name(app);
            state.seen_by.push(name);
        }
        if done.seq == 0 {
            if matches!(state.phase, Phase::Connected) {
                // Admitted by this node already; the app-node refusing it
                // now disconnects it.
                if let Some(reject) = done.reject {
                    drop(state);
                    tracing::debug!(socket = %socket.id, message = %reject.message, "app-node refused a socket admitted by credentials");
                    self.server_disconnect(&socket);
                    return;
                }
            } else {
                self.admit(&socket, &mut state, done.reject);
            }
        }
        self.dispatch_next(&socket, &mut state);
    }

    /// The shared name of an app-node (see `Sockets::apps`).
    fn app_name(&self, app: &str) -> Arc<str> {
        /// More than a cluster has; past it (app-nodes restarted many
        /// times) the list starts over.
        const MOST: usize = 256;
        let mut apps = self
            .apps
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(known) = apps.iter().find(|known| ***known == *app) {
            return known.clone();
        }
        if apps.len() >= MOST {
            apps.clear();
        }
        let name: Arc<str> = app.into();
        apps.push(name.clone());
        name
    }

    /// Applies an app-node's decision on a connection.
    fn admit(
        &self,
        socket: &Arc<Socket>,
        state: &mut SocketState,
        reject: Option<envelope::Reject>,
    ) {
        let Phase::Pending { buffered, closed } =
            std::mem::replace(&mut state.phase, Phase::Closed)
        else {
            return;
        };
        socket.decided.notify_one();
        match (reject, closed) {
            (Some(reject), _) => {
                if !closed {
                    let payload =
                        socketio::connect_error_payload(&reject.message, reject.data.as_deref());
                    socket.session.send(text_frame(
                        self.settings.parser,
                        PacketKind::ConnectError,
                        &socket.nsp,
                        None,
                        &payload,
                    ));
                    socket.session.client().sockets.remove(&socket.nsp);
                }
                // The application refused it: no disconnect event will follow.
                state.queue.clear();
                state.settled = true;
                self.cluster.ledger(LedgerOp::Forget(socket.id.clone()));
                self.forget(&socket.id);
                self.leave_all(socket, state);
            }
            (None, true) => {
                // Admitted after the client left: the queued disconnect follows.
            }
            (None, false) => {
                state.phase = Phase::Connected;
                socket
                    .session
                    .send(connect_frame(self.settings.parser, socket));
                for frame in buffered {
                    socket.session.send(frame);
                }
                self.add_to_namespace(socket);
            }
        }
    }

    fn join(&self, socket: &Arc<Socket>, rooms: Vec<String>) {
        let mut state = socket.lock();
        if matches!(
            state.phase,
            Phase::Closed | Phase::Pending { closed: true, .. }
        ) {
            return;
        }
        self.join_locked(socket, &mut state, rooms);
        drop(state);
        self.cluster.ledger_stale(socket.id.clone());
    }

    /// Adds the socket to rooms (its state is locked by the caller) and
    /// subscribes to the rooms new to this node.
    pub(super) fn join_locked(
        &self,
        socket: &Arc<Socket>,
        state: &mut SocketState,
        rooms: Vec<String>,
    ) {
        let mut subscribe = Vec::new();
        {
            let mut registry = write(&self.registry);
            for room in rooms {
                let channel = self.keys.room_channel(&socket.nsp, &room);
                let members = registry.rooms.entry(channel.clone()).or_default();
                if members.is_empty() {
                    subscribe.push(channel);
                }
                members.insert(socket.id.clone(), socket.clone());
                state.rooms.insert(room);
            }
        }
        for channel in subscribe {
            self.cluster.subscribe(channel);
        }
    }

    fn leave(&self, socket: &Arc<Socket>, rooms: &[String]) {
        let mut state = socket.lock();
        let mut unsubscribe = Vec::new();
        {
            let mut registry = write(&self.registry);
            for room in rooms {
                if !state.rooms.remove(room) {
                    continue;
                }
                let channel = self.keys.room_channel(&socket.nsp, room);
                unsubscribe.extend(registry.remove_member(channel, &socket.id));
            }
        }
        drop(state);
        self.cluster.ledger_stale(socket.id.clone());
        for channel in unsubscribe {
            self.cluster.unsubscribe(channel);
        }
    }

    fn emit(&self, emit: envelope::Emit) {
        if let Some(id) = emit.id
            && !self
                .dedupe
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .first_time(id)
        {
            return;
        }
        let recipients = self.recipients(&emit);
        if recipients.is_empty() {
            return;
        }
        let limit = self.settings.outbox_capacity;
        match emit.ack {
            None => {
                // Encoded once, shared by every recipient. A retained emit
                // carries its log offset as its last argument.
                let offset = emit.offset.as_deref().and_then(Offset::parse);
                let data = match &emit.offset {
                    Some(text) if offset.is_some() => {
                        std::borrow::Cow::Owned(recovery::with_offset(&emit.data, text))
                    }
                    _ => std::borrow::Cow::Borrowed(emit.data.as_str()),
                };
                let frame = packet_frame(
                    self.settings.parser,
                    PacketKind::Event,
                    &emit.nsp,
                    None,
                    &data,
                    attachments(emit.bin).as_ref(),
                );
                self.hot.deliveries.increment(recipients.len() as u64);
                self.deliveries
                    .fetch_add(recipients.len() as u64, Ordering::Relaxed);
                for socket in recipients {
                    let mut state = socket.lock();
                    socket.deliver_logged(&mut state, frame.clone(), offset, limit);
                }
            }
            Some(reply_to) => {
                let bin = attachments(emit.bin);
                self.hot.deliveries.increment(recipients.len() as u64);
                for socket in recipients {
                    let mut state = socket.lock();
                    let id = state.next_ack;
                    state.next_ack += 1;
                    state.acks.insert(id, reply_to.clone());
                    let frame = packet_frame(
                        self.settings.parser,
                        PacketKind::Event,
                        &emit.nsp,
                        Some(id),
                        &emit.data,
                        bin.as_ref(),
                    );
                    socket.deliver(&mut state, frame, limit);
                }
            }
        }
    }

    /// The local sockets an emit is for.
    fn recipients(&self, emit: &envelope::Emit) -> Vec<Arc<Socket>> {
        let registry = read(&self.registry);
        let mut candidates: Vec<Arc<Socket>> = Vec::new();
        if emit.rooms.is_empty() && emit.sids.is_empty() {
            if let Some(members) = registry.namespaces.get(emit.nsp.as_str()) {
                candidates.extend(members.values().cloned());
            }
        } else {
            let several = emit.rooms.len() + emit.sids.len() > 1;
            let mut seen: HashSet<*const Socket> = HashSet::new();
            let mut add = |socket: &Arc<Socket>, candidates: &mut Vec<Arc<Socket>>| {
                if !several || seen.insert(Arc::as_ptr(socket)) {
                    candidates.push(socket.clone());
                }
            };
            for room in &emit.rooms {
                let channel = self.keys.room_channel(&emit.nsp, room);
                if let Some(members) = registry.rooms.get(&channel) {
                    for socket in members.values() {
                        add(socket, &mut candidates);
                    }
                }
                // A socket's own id names a room holding just that socket.
                if let Some(socket) = registry.sockets.get(room.as_str())
                    && *socket.nsp == *emit.nsp
                {
                    add(socket, &mut candidates);
                }
            }
            for sid in &emit.sids {
                if let Some(socket) = registry.sockets.get(sid.as_str())
                    && *socket.nsp == *emit.nsp
                {
                    add(socket, &mut candidates);
                }
            }
        }
        drop(registry);
        if emit.except_rooms.is_empty() && emit.except_sids.is_empty() {
            return candidates;
        }
        candidates.retain(|socket| {
            if emit.except_sids.iter().any(|sid| **sid == *socket.id) {
                return false;
            }
            if emit.except_rooms.is_empty() {
                return true;
            }
            let state = socket.lock();
            !emit
                .except_rooms
                .iter()
                .any(|room| socket.in_room(&state, room))
        });
        candidates
    }

    /// Starts the socket's next queue item if none is with an app-node.
    pub(super) fn dispatch_next(&self, socket: &Arc<Socket>, state: &mut SocketState) {
        if state.inflight.is_some() {
            return;
        }
        // A socket whose admission is undecided sends nothing past its connect
        // event; one that was closed meanwhile waits for the decision.
        if matches!(state.phase, Phase::Pending { .. }) && state.next_seq > 0 {
            return;
        }
        let Some(queued) = state.queue.pop_front() else {
            return;
        };
        let kind = queued.kind;
        let mut seq = state.next_seq;
        let mut envelope = socket.encode_event(self.node_id(), state, seq, queued);
        // Messages that piled up behind go in the same item, all with this
        // snapshot: the app-node carries each handler's joins and data into
        // the next handler itself.
        let mut events = 1u32;
        while kind == EventKind::Message
            && (events as usize) < self.settings.event_batch
            && envelope.len() < BATCH_BYTES
            && state
                .queue
                .front()
                .is_some_and(|next| next.kind == EventKind::Message)
        {
            let Some(queued) = state.queue.pop_front() else {
                break;
            };
            seq += 1;
            socket.encode_event_into(&mut envelope, self.node_id(), state, seq, queued);
            events += 1;
        }
        state.next_seq = seq + 1;
        if state.queue.is_empty() {
            // An idle socket keeps no queue buffer.
            state.queue.shrink_to_fit();
        }
        if state.queue.len() <= self.settings.max_pending_events / 2 {
            // A client paused for its pending events may send again.
            socket.session.resume();
        }
        self.hot.events_out(kind).increment(u64::from(events));
        if events > 1 {
            self.hot.batched_events.increment(u64::from(events));
        }
        self.events_out
            .fetch_add(u64::from(events), Ordering::Relaxed);
        if kind == EventKind::Disconnect {
            // The disconnect event is the last: nothing will come back for it.
            // It goes through the ledger, so it is announced once even if
            // this node is being declared dead right now. A socket that can
            // recover parks its session instead: the event is announced
            // when the session's time is over, unless the client is back.
            state.settled = true;
            state.queue.clear();
            let op = match &socket.recovery {
                Some(recovery) if state.park => {
                    LedgerOp::Park(socket.id.clone(), envelope, recovery.window_ms)
                }
                _ => LedgerOp::Announce(socket.id.clone(), envelope),
            };
            self.cluster.ledger(op);
            self.forget(&socket.id);
            return;
        }
        let envelope = Bytes::from(envelope);
        // A socket's messages spread over the queue's partitions by its id;
        // its connect goes to the first, where its ledger entry is written.
        // Order holds either way: this is its only item in flight.
        let partition = match kind {
            EventKind::Message => partition_of(&socket.id, self.settings.queue_partitions),
            _ => 0,
        };
        let number = self.cluster.push_event(envelope.clone(), partition);
        state.inflight = Some(Inflight {
            seq,
            events,
            envelope,
            since_us: self.clock.now_us(),
            number: number.unwrap_or(0),
            partition,
        });
        if number.is_none() {
            tracing::warn!(socket = %socket.id, "event buffer full: closing the client");
            socket.session.close(CloseReason::Overloaded);
        }
    }

    /// The socket is gone for the client: leave every room, and queue its
    /// disconnect event.
    pub(super) fn close_socket(&self, socket: &Arc<Socket>, reason: &str) {
        let mut state = socket.lock();
        match &mut state.phase {
            Phase::Closed | Phase::Pending { closed: true, .. } => return,
            Phase::Pending { closed, buffered } => {
                *closed = true;
                buffered.clear();
                socket.decided.notify_one();
            }
            Phase::Connected => {
                state.phase = Phase::Closed;
                state.park = socket.recovery.is_some() && recoverable(reason);
            }
        }
        state.acks.clear();
        state.held = None;
        state.queue.push_back(Queued::disconnect(reason));
        self.leave_all(socket, &state);
        self.dispatch_next(socket, &mut state);
    }

    /// Removes the socket from its namespace and from the index of every room
    /// (its own list of rooms stays, for the disconnect event's snapshot).
    pub(super) fn leave_all(&self, socket: &Arc<Socket>, state: &SocketState) {
        let mut unsubscribe = Vec::new();
        {
            let mut registry = write(&self.registry);
            if let Some(members) = registry.namespaces.get_mut(&socket.nsp) {
                members.remove(&socket.id);
                if members.is_empty() {
                    registry.namespaces.remove(&socket.nsp);
                }
            }
            for room in &state.rooms {
                let channel = self.keys.room_channel(&socket.nsp, room);
                unsubscribe.extend(registry.remove_member(channel, &socket.id));
            }
            for channel in self.home_channels(socket) {
                unsubscribe.extend(registry.remove_member(channel, &socket.id));
            }
        }
        for channel in unsubscribe {
            self.cluster.unsubscribe(channel);
        }
    }
}

/// Whether a socket closed for `reason` may come back with connection
/// state recovery: its connection was lost or cut by the server for a
/// cause of the moment, not ended by the client, the application or a
/// protocol error (as Socket.IO decides).
pub(super) fn recoverable(reason: &str) -> bool {
    [
        CloseReason::TransportClose,
        CloseReason::TransportError,
        CloseReason::PingTimeout,
        CloseReason::ServerShutdown,
        CloseReason::SlowClient,
        CloseReason::Overloaded,
        CloseReason::TooManyPendingEvents,
    ]
    .iter()
    .any(|known| known.as_str() == reason)
}
