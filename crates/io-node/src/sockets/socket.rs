//! Socket.IO sockets: one per namespace a client joined.
//!
//! A [`Socket`] owns what the cluster knows of a client in a namespace: its
//! rooms, its data, its handshake, and its *event sequence*. A socket's events
//! go to the queue one item at a time: the next item is dispatched only when
//! an app-node reports the previous one done, after every command its
//! handlers issued. An item is one event, or the `message` events that piled
//! up meanwhile (up to `event_batch`), which the app-node handles in order,
//! carrying each handler's joins and data into the next. So handlers see a
//! socket's events in the client's order, and each snapshot already reflects
//! the joins and data set by earlier handlers.
//!
//! Frames emitted to a socket whose connection is still being admitted wait in
//! the socket until the client has its CONNECT, so a connection handler's
//! emits arrive after it.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use iocluster_protocol::envelope::{EncodedHandshake, EventKind, EventParts, ReplyTo};
use iocluster_protocol::recovery::Offset;
use serde_bytes::ByteBuf;

use super::Session;
use crate::engine::{CloseReason, Frame};

/// The reason in the disconnect events announced for a dead io-node (each
/// socket's ledger entry carries it).
pub(crate) const NODE_LOST: &str = "io-node lost";

/// Where a socket is in its life.
#[derive(Debug)]
pub(crate) enum Phase {
    /// The connect event is with an app-node. `closed` is set when the client
    /// left (or the admission timed out) meanwhile.
    Pending {
        buffered: Vec<Frame>,
        closed: bool,
    },
    Connected,
    /// Gone for the client; its last events may still be on their way.
    Closed,
}

/// A client event waiting for its turn.
#[derive(Debug)]
pub(crate) struct Queued {
    pub kind: EventKind,
    pub data: Option<String>,
    pub bin: Vec<ByteBuf>,
    pub ack: Option<u64>,
    pub reason: Option<String>,
    /// A recovered socket's connect event.
    pub recovered: bool,
}

impl Queued {
    /// The socket's last event.
    pub(crate) fn disconnect(reason: &str) -> Queued {
        Queued {
            kind: EventKind::Disconnect,
            data: None,
            bin: Vec::new(),
            ack: None,
            reason: Some(reason.to_owned()),
            recovered: false,
        }
    }
}

/// The queue item of a socket an app-node is handling: one or more events.
#[derive(Debug)]
pub(crate) struct Inflight {
    /// The seq of its last event: the one whose `done` finishes the item.
    pub seq: u64,
    /// How many events it holds (seqs `seq + 1 - events ..= seq`).
    pub events: u32,
    /// Kept to push it again if it was lost (Redis restarted) or its `done`
    /// never came (see `Sockets::redeliver`).
    pub envelope: bytes::Bytes,
    /// When it was (last) pushed, in µs on the node's clock
    /// (`Clock::now_us`): 8 bytes where an `Instant` takes 16, so the
    /// socket's state did not grow with `events`.
    pub since_us: u64,
    /// Its number in the order events were queued (see `Cluster::push_event`).
    pub number: u64,
    /// The partition of the event queue it went to (pushed again, it goes
    /// there again).
    pub partition: u16,
}

#[derive(Debug)]
pub(crate) struct SocketState {
    pub phase: Phase,
    pub rooms: HashSet<String>,
    pub data: Option<String>,
    /// The seq of the next event dispatched.
    pub next_seq: u64,
    /// The event an app-node is handling, if any.
    pub inflight: Option<Inflight>,
    /// The socket's disconnect was announced (or needs none): its ledger
    /// entry is gone for good.
    pub settled: bool,
    pub queue: VecDeque<Queued>,
    /// Acks this node asked the client for, by the client-side ack id.
    pub acks: HashMap<u64, ReplyTo>,
    pub next_ack: u64,
    /// A recovered socket whose missed packets are being read: frames for
    /// it wait here (with the log offset of each retained emit) until the
    /// replay went out (see `Sockets::replayed`).
    pub held: Option<Vec<(Option<Offset>, Frame)>>,
    /// The last log offset a recovered socket's replay carried: a retained
    /// emit at or before it is a copy the replay already sent.
    pub floor: Option<Offset>,
    /// Its disconnect parks its session for connection state recovery
    /// rather than announce it (set when it closes).
    pub park: bool,
    /// The app-nodes that finished a queue item of the socket (from their
    /// `done`s), oldest first, at most `SEEN_BY_MOST`: listed in its
    /// events, so an app-node not among them knows it has not seen the
    /// socket. Each name is shared with every socket it handled.
    pub seen_by: Vec<Arc<str>>,
}

/// Connection state recovery of one socket.
#[derive(Debug)]
pub(crate) struct SocketRecovery {
    /// Its private id, sent with CONNECT.
    pub pid: Box<str>,
    /// How long (ms) its session is kept after a disconnect.
    pub window_ms: u64,
}

pub(crate) struct Socket {
    pub id: Arc<str>,
    pub nsp: Arc<str>,
    pub session: Arc<Session>,
    pub handshake: EncodedHandshake,
    /// Set in namespaces with connection state recovery.
    pub recovery: Option<SocketRecovery>,
    /// Notified once the app-nodes decided on the connection (or the client
    /// left first), so the admission timeout does not outlive the decision.
    pub decided: tokio::sync::Notify,
    state: Mutex<SocketState>,
}

impl Socket {
    pub(crate) fn new(
        id: Arc<str>,
        nsp: Arc<str>,
        session: Arc<Session>,
        handshake: EncodedHandshake,
        recovery: Option<SocketRecovery>,
    ) -> Socket {
        Socket {
            id,
            nsp,
            session,
            handshake,
            recovery,
            decided: tokio::sync::Notify::new(),
            state: Mutex::new(SocketState {
                phase: Phase::Pending {
                    buffered: Vec::new(),
                    closed: false,
                },
                rooms: HashSet::new(),
                data: None,
                next_seq: 0,
                inflight: None,
                settled: false,
                queue: VecDeque::new(),
                acks: HashMap::new(),
                next_ack: 0,
                held: None,
                floor: None,
                park: false,
                seen_by: Vec::new(),
            }),
        }
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, SocketState> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Whether the socket is in `room` (its own id counts as a room).
    pub(crate) fn in_room(&self, state: &SocketState, room: &str) -> bool {
        *self.id == *room || state.rooms.contains(room)
    }

    /// Delivers a frame according to the socket's phase; `limit` bounds what
    /// waits for admission.
    pub(crate) fn deliver(&self, state: &mut SocketState, frame: Frame, limit: usize) {
        self.deliver_logged(state, frame, None, limit);
    }

    /// [`Socket::deliver`] for an emit retained in the recovery log at
    /// `offset`: a socket being recovered holds it until its replay went
    /// out, and then sends it only if the replay did not.
    pub(crate) fn deliver_logged(
        &self,
        state: &mut SocketState,
        frame: Frame,
        offset: Option<Offset>,
        limit: usize,
    ) {
        if offset.is_some() && offset <= state.floor {
            return;
        }
        if let Some(held) = &mut state.held {
            if held.len() < limit {
                held.push((offset, frame));
            } else {
                self.session.close(CloseReason::SlowClient);
            }
            return;
        }
        match &mut state.phase {
            Phase::Connected => {
                self.session.send(frame);
            }
            Phase::Pending {
                buffered,
                closed: false,
            } => {
                if buffered.len() < limit {
                    buffered.push(frame);
                } else {
                    self.session.close(CloseReason::SlowClient);
                }
            }
            Phase::Pending { closed: true, .. } | Phase::Closed => {}
        }
    }

    /// The socket's ledger entry: its disconnect event as announced if this
    /// node died, with the current snapshot.
    pub(crate) fn ledger_entry(&self, node_id: &str, state: &SocketState) -> Vec<u8> {
        self.encode_event(
            node_id,
            state,
            state.next_seq,
            Queued::disconnect(NODE_LOST),
        )
    }

    /// Encodes the event envelope for `queued`, with the socket's current
    /// snapshot.
    pub(crate) fn encode_event(
        &self,
        node_id: &str,
        state: &SocketState,
        seq: u64,
        queued: Queued,
    ) -> Vec<u8> {
        let mut envelope = Vec::new();
        self.encode_event_into(&mut envelope, node_id, state, seq, queued);
        envelope
    }

    /// Appends the event envelope for `queued` to `out`.
    pub(crate) fn encode_event_into(
        &self,
        out: &mut Vec<u8>,
        node_id: &str,
        state: &SocketState,
        seq: u64,
        queued: Queued,
    ) {
        EventParts {
            kind: queued.kind,
            node: node_id,
            sid: &self.id,
            nsp: &self.nsp,
            seq,
            data: queued.data.as_deref(),
            bin: &queued.bin,
            ack: queued.ack,
            reason: queued.reason.as_deref(),
            rooms: state.rooms.iter().map(String::as_str),
            sdata: state.data.as_deref(),
            handshake: &self.handshake,
            recovered: queued.recovered,
            seen: &state.seen_by,
        }
        .encode_into(out)
    }
}
