//! The Socket.IO rules in memory: no Redis, no network, no tasks. A
//! [`Fixture`] holds the layer with a recording [`Cluster`] port and makes
//! sessions; tests feed client packets and app-node commands, then read the
//! frames from the sessions' outboxes and the effects from the port.
//!
//! One file per group of rules: `admission`, `order` (per-socket order,
//! batching, pending limits), `fanout` (rooms, recipients, except-lists,
//! the outbox limit), `acks`, `binary`, `disconnects`, `recovery` (ledger
//! entries, resync, redelivery, stats).

mod acks;
mod admission;
mod binary;
mod disconnects;
mod fanout;
mod msgpack;
mod order;
mod recovery;
mod resume;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use iocluster_protocol::envelope::{
    self, Command, EncodedHandshake, Event, EventKind, Handshake, Reply, ReplyTo,
};

use super::*;
pub(super) use super::{Admission, Cluster, LedgerOp, Session, Settings, Sockets};
use crate::engine::{CloseReason, Message, Timings, Watch};

/// What the rules asked of the cluster side.
#[derive(Debug)]
pub(super) enum Effect {
    Event(Vec<Event>),
    Publish(String, Vec<u8>),
    Ledger(LedgerOp),
    Stale(Arc<str>),
    Subscribe(String),
    Unsubscribe(String),
    Reply(String, Vec<u8>),
}

/// A log a recovered socket asked for: socket, namespace, after which offset.
pub(super) type Replay = (Arc<str>, Arc<str>, Option<String>);

#[derive(Default)]
pub(super) struct Recorder {
    effects: Mutex<Vec<Effect>>,
    /// The partition of each event pushed, in order.
    pub(super) partitions: Mutex<Vec<u16>>,
    numbers: AtomicU64,
    /// Refuse events and publishes, as a full buffer does.
    pub(super) full: AtomicBool,
    /// `when_subscribed` work, run when the test says the subscriptions
    /// are active.
    deferred: Mutex<Vec<Box<dyn FnOnce() + Send>>>,
    /// Logs asked for by recovered sockets, once subscribed.
    pub(super) replays: Arc<Mutex<Vec<Replay>>>,
}

impl Recorder {
    pub(super) fn record(&self, effect: Effect) {
        self.effects.lock().unwrap().push(effect);
    }
}

impl Cluster for Recorder {
    fn push_event(&self, envelope: Bytes, partition: u16) -> Option<u64> {
        if self.full.load(Ordering::Relaxed) {
            return None;
        }
        self.partitions.lock().unwrap().push(partition);
        let events = Event::decode_all(&envelope).expect("the io-node's own envelopes decode");
        self.record(Effect::Event(events));
        Some(self.numbers.fetch_add(1, Ordering::Relaxed) + 1)
    }
    fn publish(&self, channel: String, payload: Vec<u8>) -> bool {
        if self.full.load(Ordering::Relaxed) {
            return false;
        }
        self.record(Effect::Publish(channel, payload));
        true
    }
    fn ledger(&self, op: LedgerOp) {
        self.record(Effect::Ledger(op));
    }
    fn ledger_stale(&self, sid: Arc<str>) {
        self.record(Effect::Stale(sid));
    }
    fn subscribe(&self, channel: String) {
        self.record(Effect::Subscribe(channel));
    }
    fn unsubscribe(&self, channel: String) {
        self.record(Effect::Unsubscribe(channel));
    }
    fn reply_when_subscribed(&self, channel: String, payload: Vec<u8>) {
        self.record(Effect::Reply(channel, payload));
    }
    fn when_subscribed(&self, then: Box<dyn FnOnce() + Send>) {
        self.deferred.lock().unwrap().push(then);
    }
    fn replay(&self, sid: Arc<str>, nsp: Arc<str>, after: Option<String>) {
        let replays = self.replays.clone();
        self.when_subscribed(Box::new(move || {
            replays.lock().unwrap().push((sid, nsp, after));
        }));
    }
}

pub(super) struct Fixture {
    pub(super) sockets: Sockets,
    pub(super) cluster: Arc<Recorder>,
    watch: Watch,
    _closed: crate::engine::Closed,
    outbox_capacity: usize,
    sessions: AtomicU64,
}

pub(super) fn settings() -> Settings {
    Settings {
        node_id: "n1".into(),
        keys: iocluster_protocol::keys::Keys::new("p"),
        max_pending_events: 256,
        event_batch: 32,
        queue_partitions: 1,
        partitions: std::sync::Arc::new(std::sync::atomic::AtomicU16::new(1)),
        outbox_capacity: 1024,
        max_attachments: 10,
        parser: crate::sockets::Parser::Default,
    }
}

impl Fixture {
    pub(super) fn new() -> Fixture {
        Fixture::with(settings())
    }

    pub(super) fn with(settings: Settings) -> Fixture {
        let cluster = Arc::new(Recorder::default());
        let (watch, closed) = Watch::new(Timings {
            ping_interval: Duration::from_secs(25),
            ping_timeout: Duration::from_secs(20),
            connect_timeout: Duration::from_secs(45),
        });
        Fixture {
            outbox_capacity: settings.outbox_capacity,
            sockets: Sockets::new(settings, cluster.clone()),
            cluster,
            watch,
            _closed: closed,
            sessions: AtomicU64::new(0),
        }
    }

    pub(super) fn session(&self) -> Arc<Session> {
        self.session_of(false)
    }

    /// A session of a socket.io-client 2.x (Engine.IO v3).
    pub(super) fn eio3_session(&self) -> Arc<Session> {
        self.session_of(true)
    }

    fn session_of(&self, eio3: bool) -> Arc<Session> {
        let n = self.sessions.fetch_add(1, Ordering::Relaxed);
        Session::new(
            format!("n1~session{n}").into(),
            EncodedHandshake::new(&Handshake::default()),
            self.outbox_capacity,
            true,
            &self.watch,
            None,
            eio3,
        )
    }

    /// A client text message (a Socket.IO packet).
    pub(super) fn send(&self, session: &Arc<Session>, packet: &str) -> Result<(), CloseReason> {
        let request = self.sockets.on_message(session, Message::Text(packet))?;
        assert!(request.is_none(), "{packet} asked for admission");
        Ok(())
    }

    pub(super) fn send_binary(
        &self,
        session: &Arc<Session>,
        bytes: &[u8],
    ) -> Result<(), CloseReason> {
        let request = self
            .sockets
            .on_message(session, Message::Binary(bytes.to_vec()))?;
        assert!(request.is_none());
        Ok(())
    }

    /// A namespace CONNECT resolved as `admission`; the socket's id.
    pub(super) fn connect(
        &self,
        session: &Arc<Session>,
        nsp: &str,
        admission: Admission,
    ) -> Option<String> {
        let packet = if nsp == "/" {
            "0".to_owned()
        } else {
            format!("0{nsp},")
        };
        let request = self
            .sockets
            .on_message(session, Message::Text(&packet))
            .expect("a CONNECT is valid")
            .expect("a CONNECT asks for admission");
        assert_eq!(request.nsp, nsp);
        self.sockets.connect(session, request, admission, None);
        self.events()
            .into_iter()
            .flatten()
            .find(|event| event.kind == EventKind::Connect)
            .map(|event| event.sid)
    }

    /// A socket admitted by an app-node, its connect event done; the
    /// outbox and effects are empty after.
    pub(super) fn admitted(&self, session: &Arc<Session>, nsp: &str) -> String {
        let sid = self
            .connect(session, nsp, Admission::ByApp)
            .expect("queued");
        self.done(&sid, nsp, 0);
        let frames = frames(session);
        assert_eq!(frames.len(), 1, "{frames:?}");
        assert!(frames[0].starts_with("40"), "{frames:?}");
        self.effects();
        sid
    }

    pub(super) fn apply(&self, command: Command) {
        self.sockets.apply(command);
    }

    pub(super) fn done(&self, sid: &str, nsp: &str, seq: u64) {
        self.apply(Command::Done(envelope::Done {
            nsp: nsp.into(),
            sid: sid.into(),
            seq,
            reject: None,
            app: None,
        }));
    }

    pub(super) fn effects(&self) -> Vec<Effect> {
        std::mem::take(&mut *self.cluster.effects.lock().unwrap())
    }

    /// The queue items pushed since the last look, each as its events.
    pub(super) fn events(&self) -> Vec<Vec<Event>> {
        self.effects()
            .into_iter()
            .filter_map(|effect| match effect {
                Effect::Event(events) => Some(events),
                _ => None,
            })
            .collect()
    }

    pub(super) fn subscriptions_active(&self) {
        let deferred = std::mem::take(&mut *self.cluster.deferred.lock().unwrap());
        for then in deferred {
            then();
        }
    }
}

/// The frames waiting in a session's outbox, as text (attachments left out).
pub(super) fn frames(session: &Session) -> Vec<String> {
    std::iter::from_fn(|| session.outbox.try_pop())
        .map(|frame| frame.as_text().to_owned())
        .collect()
}

pub(super) fn emit(nsp: &str, data: &str) -> envelope::Emit {
    envelope::Emit {
        nsp: nsp.into(),
        data: data.into(),
        ..envelope::Emit::default()
    }
}

pub(super) fn join(sid: &str, rooms: &[&str]) -> Command {
    Command::Join(envelope::Join {
        nsp: "/".into(),
        sid: sid.into(),
        rooms: rooms.iter().map(|room| room.to_string()).collect(),
        reply: None,
    })
}

pub(super) fn leave(sid: &str, rooms: &[&str]) -> Command {
    Command::Leave(envelope::Leave {
        nsp: "/".into(),
        sid: sid.into(),
        rooms: rooms.iter().map(|room| room.to_string()).collect(),
    })
}
