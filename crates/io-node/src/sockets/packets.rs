//! Client packets to events: Socket.IO decoding and binary reassembly, the
//! namespace CONNECT (admission), events and acks from the client, a
//! client's DISCONNECT, and the end of a session.

use std::sync::Arc;

use iocluster_protocol::envelope::{AckReply, EventKind, Reply};
use iocluster_protocol::ids;
use iocluster_protocol::msgpack_parser;
use iocluster_protocol::socketio::{self, PacketKind};
use serde_bytes::ByteBuf;

use super::socket::{Phase, Queued, Socket};
use super::{
    LedgerOp, NamespaceRecovery, Parser, PartialPacket, Session, Sockets, connect_frame, read,
    text_frame, write,
};
use crate::engine::{CloseReason, Message};

/// What a client of the default parser is told by a msgpack io-node.
pub(crate) const WRONG_PARSER_MSGPACK: &str =
    "this server uses socket.io-msgpack-parser: connect with the parser option set to it";
/// What a client of socket.io-msgpack-parser is told by a default io-node.
pub(crate) const WRONG_PARSER_DEFAULT: &str =
    "this server uses the default Socket.IO parser, not socket.io-msgpack-parser";

/// A namespace CONNECT that needs answers only Redis has (is the namespace
/// served, is the credential registered) before [`Sockets::connect`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ConnectRequest {
    pub nsp: String,
    /// The CONNECT's `auth` payload (JSON text; empty if none).
    pub auth: String,
}

/// What the node found out about a [`ConnectRequest`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Admission {
    /// No app-node serves the namespace.
    UnknownNamespace,
    /// Credentials that do not verify (or none where they are required).
    Unauthorized,
    /// The app-nodes decide (the connect event carries their answer back).
    ByApp,
    /// Admitted here as this user; the app-nodes are still told.
    User(String),
}

impl Sockets {
    /// Handles one client message. A namespace CONNECT comes back as a
    /// request to resolve (then [`Sockets::connect`]); an error closes the
    /// session with that reason.
    pub(crate) fn on_message(
        &self,
        session: &Arc<Session>,
        message: Message<'_>,
    ) -> Result<Option<ConnectRequest>, CloseReason> {
        match (message, self.settings.parser) {
            (Message::Text(text), Parser::Default) => self.on_text(session, text),
            (Message::Binary(bytes), Parser::Default) => self.on_attachment(session, bytes),
            (Message::Binary(bytes), Parser::Msgpack) => self.on_msgpack(session, &bytes),
            (Message::Text(text), Parser::Msgpack) => {
                // A client of the default parser: its CONNECT gets an error
                // it can read (final for socket.io-client: no retry loop).
                match socketio::decode(text, self.settings.max_attachments) {
                    Ok(packet) if packet.kind == PacketKind::Connect => {
                        refuse_other_parser(session, Parser::Default, packet.nsp);
                        Ok(None)
                    }
                    _ => Err(CloseReason::ParseError),
                }
            }
        }
    }

    /// A packet of socket.io-msgpack-parser.
    fn on_msgpack(
        &self,
        session: &Arc<Session>,
        bytes: &[u8],
    ) -> Result<Option<ConnectRequest>, CloseReason> {
        let packet =
            msgpack_parser::decode(bytes, self.settings.max_attachments).map_err(|error| {
                tracing::debug!(sid = %session.sid, %error, "invalid msgpack Socket.IO packet");
                CloseReason::ParseError
            })?;
        let bin = packet.bin.into_iter().map(ByteBuf::from).collect();
        self.on_packet(
            session,
            packet.kind,
            &packet.nsp,
            packet.id,
            &packet.data,
            bin,
        )
    }

    /// A binary message when no attachment is awaited: a client of the
    /// msgpack parser connecting gets an error it can read; anything else
    /// closes the session.
    fn unexpected_binary(&self, session: &Arc<Session>, bytes: &[u8]) -> CloseReason {
        if let Ok(packet) = msgpack_parser::decode(bytes, self.settings.max_attachments)
            && packet.kind == PacketKind::Connect
        {
            refuse_other_parser(session, Parser::Msgpack, &packet.nsp);
            return CloseReason::TransportClose;
        }
        CloseReason::ParseError
    }

    fn on_text(
        &self,
        session: &Arc<Session>,
        text: &str,
    ) -> Result<Option<ConnectRequest>, CloseReason> {
        let packet = socketio::decode(text, self.settings.max_attachments).map_err(|error| {
            tracing::debug!(sid = %session.sid, %error, "invalid Socket.IO packet");
            CloseReason::ParseError
        })?;
        let mut client = session.client();
        if client.partial.is_some() {
            // A new packet before the previous one's attachments all arrived.
            return Err(CloseReason::ParseError);
        }
        if packet.attachments > 0 {
            client.partial = Some(Box::new(PartialPacket {
                kind: packet.kind,
                nsp: packet.nsp.to_owned(),
                id: packet.id,
                data: packet.data.to_owned(),
                expected: packet.attachments,
                bin: Vec::with_capacity(packet.attachments),
            }));
            return Ok(None);
        }
        drop(client);
        self.on_packet(
            session,
            packet.kind,
            packet.nsp,
            packet.id,
            packet.data,
            Vec::new(),
        )
    }

    fn on_attachment(
        &self,
        session: &Arc<Session>,
        bytes: Vec<u8>,
    ) -> Result<Option<ConnectRequest>, CloseReason> {
        let complete = {
            let mut client = session.client();
            let Some(partial) = client.partial.as_mut() else {
                drop(client);
                return match self.unexpected_binary(session, &bytes) {
                    // Answered; the client closes its connection itself.
                    CloseReason::TransportClose => Ok(None),
                    reason => Err(reason),
                };
            };
            partial.bin.push(ByteBuf::from(bytes));
            if partial.bin.len() == partial.expected {
                client.partial.take()
            } else {
                None
            }
        };
        match complete {
            Some(packet) => self.on_packet(
                session,
                packet.kind,
                &packet.nsp,
                packet.id,
                &packet.data,
                packet.bin,
            ),
            None => Ok(None),
        }
    }

    fn on_packet(
        &self,
        session: &Arc<Session>,
        kind: PacketKind,
        nsp: &str,
        id: Option<u64>,
        data: &str,
        bin: Vec<ByteBuf>,
    ) -> Result<Option<ConnectRequest>, CloseReason> {
        self.hot.client_packet(kind).increment(1);
        match kind {
            PacketKind::Connect => {
                // socket.io-client 2.x puts the namespace's query after it
                // (`/chat?token=1`): not part of the name.
                let nsp = match session.eio3 {
                    true => nsp.split('?').next().unwrap_or(nsp),
                    false => nsp,
                };
                if session.client().sockets.contains(nsp) {
                    tracing::debug!(sid = %session.sid, nsp, "second CONNECT to the same namespace ignored");
                    return Ok(None);
                }
                return Ok(Some(ConnectRequest {
                    nsp: nsp.to_owned(),
                    auth: data.to_owned(),
                }));
            }
            PacketKind::Disconnect => {
                let socket = session.client().sockets.remove(nsp);
                if let Some(socket) = socket {
                    self.close_socket(&socket, "client namespace disconnect");
                }
            }
            PacketKind::Event | PacketKind::BinaryEvent => {
                let socket = session.client().sockets.get(nsp).cloned();
                let Some(socket) = socket else {
                    tracing::debug!(sid = %session.sid, nsp, "event for a namespace the client did not join");
                    return Ok(None);
                };
                let queued = Queued {
                    kind: EventKind::Message,
                    data: Some(data.to_owned()),
                    bin,
                    ack: id,
                    reason: None,
                    recovered: false,
                };
                let limit = self.settings.max_pending_events;
                let mut state = socket.lock();
                if state.queue.len() >= 2 * limit {
                    // Cannot happen with a paused client, which is not read
                    // from; a bound all the same.
                    return Err(CloseReason::TooManyPendingEvents);
                }
                state.queue.push_back(queued);
                self.dispatch_next(&socket, &mut state);
                if state.queue.len() >= limit {
                    // Backpressure: nothing more is read from this client
                    // until its queue is half empty (`dispatch_next`).
                    session.pause();
                }
            }
            PacketKind::Ack | PacketKind::BinaryAck => {
                let socket = session.client().sockets.get(nsp).cloned();
                let (Some(socket), Some(id)) = (socket, id) else {
                    return Ok(None);
                };
                let route = socket.lock().acks.remove(&id);
                let Some(route) = route else {
                    tracing::debug!(sid = %socket.id, id, "ack for an unknown id");
                    return Ok(None);
                };
                let reply = Reply::Ack(AckReply {
                    id: route.id,
                    nsp: nsp.to_owned(),
                    sid: socket.id.to_string(),
                    data: data.to_owned(),
                    bin,
                });
                if !self
                    .cluster
                    .publish(self.keys.app_channel(&route.app), reply.encode())
                {
                    return Err(CloseReason::Overloaded);
                }
            }
            PacketKind::ConnectError => return Err(CloseReason::ParseError),
        }
        Ok(None)
    }

    /// Opens the socket a [`ConnectRequest`] asked for, as `admission`
    /// says. Returns the socket when it waits for an app-node's decision:
    /// the caller gives it [`Sockets::admission_timed_out`] after the
    /// admission timeout unless `Socket::decided` fires first.
    pub(crate) fn connect(
        &self,
        session: &Arc<Session>,
        request: ConnectRequest,
        admission: Admission,
        recovery: Option<&NamespaceRecovery>,
    ) -> Option<Arc<Socket>> {
        let ConnectRequest { nsp, auth } = request;
        let user = match admission {
            Admission::UnknownNamespace => {
                let payload = socketio::connect_error_payload("Invalid namespace", None);
                session.send(text_frame(
                    self.settings.parser,
                    PacketKind::ConnectError,
                    &nsp,
                    None,
                    &payload,
                ));
                return None;
            }
            Admission::Unauthorized => {
                metrics::counter!("iocluster_auth_refused_total").increment(1);
                let payload = socketio::connect_error_payload("Unauthorized", None);
                session.send(text_frame(
                    self.settings.parser,
                    PacketKind::ConnectError,
                    &nsp,
                    None,
                    &payload,
                ));
                return None;
            }
            Admission::ByApp => None,
            Admission::User(user) => Some(user),
        };
        let auth = match &user {
            // The io-node verified the credential: the app-nodes (and Redis,
            // which keeps every event and the ledger) get the user, not the
            // secret or the token.
            Some(user) => Some(verified_auth(&auth, user)),
            None => (!auth.is_empty()).then_some(auth),
        };
        let sid: Arc<str> = ids::make(self.node_id(), &crate::engine::random_token(20)).into();
        let recovery = recovery.map(|recovery| recovery.for_socket(&sid));
        let socket = self.open_socket(session, &nsp, auth.as_deref(), sid, recovery)?;
        let nsp = socket.nsp.clone();
        let mut state = socket.lock();
        if let Some(user) = user {
            // Admitted here: CONNECT in the user's room; the connect event
            // still tells the app-nodes. The CONNECT goes out once the
            // user's room channel is subscribed, so that a publish to the
            // user made after the client saw it reaches it.
            self.join_locked(&socket, &mut state, vec![ids::user_room(&user)]);
            state.phase = Phase::Connected;
            let connect = connect_frame(self.settings.parser, &socket);
            let session = socket.session.clone();
            self.cluster.when_subscribed(Box::new(move || {
                session.send(connect);
            }));
            self.add_to_namespace(&socket);
        }
        self.cluster.ledger(LedgerOp::Create(
            socket.id.clone(),
            socket.ledger_entry(self.node_id(), &state),
        ));
        state.queue.push_back(Queued {
            kind: EventKind::Connect,
            data: auth,
            bin: Vec::new(),
            ack: None,
            reason: None,
            recovered: false,
        });
        self.dispatch_next(&socket, &mut state);
        let pending = !matches!(state.phase, Phase::Connected);
        drop(state);
        tracing::debug!(sid = %session.sid, socket = %socket.id, nsp = %nsp, "connect event queued");
        pending.then_some(socket)
    }

    /// Creates a socket of `session` in `nsp` and registers it (in the
    /// session and the registry): admitted or recovered, the same steps.
    /// `None`, having done nothing, when the session closed or already has a
    /// socket there.
    pub(super) fn open_socket(
        &self,
        session: &Arc<Session>,
        nsp: &str,
        auth: Option<&str>,
        sid: Arc<str>,
        recovery: Option<super::socket::SocketRecovery>,
    ) -> Option<Arc<Socket>> {
        // Without `auth` the socket shares the session's handshake.
        let handshake = match auth {
            Some(auth) => match session.handshake.with_auth(auth.to_owned()) {
                Ok(handshake) => handshake,
                Err(error) => {
                    // Our own encoding: cannot happen, but never admit a
                    // socket whose app-nodes would not see its `auth`.
                    tracing::error!(%error, "cannot add auth to the handshake");
                    session.close(CloseReason::ParseError);
                    return None;
                }
            },
            None => session.handshake.clone(),
        };
        // Sockets of a namespace share its name.
        let nsp: Arc<str> = read(&self.registry)
            .namespaces
            .get_key_value(nsp)
            .map_or_else(|| nsp.into(), |(known, _)| known.clone());
        let socket = Arc::new(Socket::new(
            sid,
            nsp.clone(),
            session.clone(),
            handshake,
            recovery,
        ));
        {
            let mut client = session.client();
            if session.is_closed() || client.sockets.contains(&nsp) {
                return None;
            }
            client.sockets.insert(nsp, socket.clone());
        }
        session.attach();
        write(&self.registry)
            .sockets
            .insert(socket.id.clone(), socket.clone());
        Some(socket)
    }

    /// No app-node decided on the socket's connection in time (none runs,
    /// or all are swamped): the client's connection is closed, so that it
    /// reconnects and asks again, as stock clients do on their own, rather
    /// than get a refusal it would take as final. Its other namespaces, if
    /// any, reconnect with it. The app-nodes get the socket's disconnect
    /// once one of them decides on the connection after all.
    pub(crate) fn admission_timed_out(&self, socket: &Arc<Socket>) {
        if !matches!(socket.lock().phase, Phase::Pending { closed: false, .. }) {
            return;
        }
        tracing::info!(socket = %socket.id, "no app-node answered the connection in time: closing it for the client to retry");
        socket.session.close(CloseReason::AdmissionTimeout);
    }

    /// The session closed: its sockets disconnect, with its close reason.
    pub(crate) fn on_session_closed(&self, session: &Arc<Session>) {
        let reason = session.close_reason();
        let sockets: Vec<_> = {
            let mut client = session.client();
            client.partial = None;
            client.sockets.drain().collect()
        };
        for socket in sockets {
            self.close_socket(&socket, reason.as_str());
        }
        tracing::debug!(sid = %session.sid, reason = reason.as_str(), "session closed");
    }

    /// Adds an admitted socket to its namespace's members (the recipients
    /// of namespace-wide emits).
    pub(super) fn add_to_namespace(&self, socket: &Arc<Socket>) {
        write(&self.registry)
            .namespaces
            .entry(socket.nsp.clone())
            .or_default()
            .insert(socket.id.clone(), socket.clone());
    }
}

/// A client that speaks `parser`, not this node's, asked to connect to
/// `nsp`: it gets a CONNECT_ERROR in its own parser, naming the one to use
/// (final for socket.io-client: no retry loop), and the node says so.
fn refuse_other_parser(session: &Session, parser: Parser, nsp: &str) {
    let message = match parser {
        Parser::Default => WRONG_PARSER_MSGPACK,
        Parser::Msgpack => WRONG_PARSER_DEFAULT,
    };
    tracing::warn!(sid = %session.sid, client_parser = ?parser, "a client of the other Socket.IO parser refused: {message}");
    metrics::counter!("iocluster_wrong_parser_total").increment(1);
    let payload = socketio::connect_error_payload(message, None);
    session.send(text_frame(
        parser,
        PacketKind::ConnectError,
        nsp,
        None,
        &payload,
    ));
}

/// A CONNECT `auth` payload whose credential the io-node verified, as the
/// app-nodes get it: the `hash` (a registered user's secret) and the
/// `token` (a JWT) taken out, `userId` set to the verified user, every other
/// field kept.
fn verified_auth(auth: &str, user: &str) -> String {
    let mut fields = match serde_json::from_str::<serde_json::Value>(auth) {
        Ok(serde_json::Value::Object(fields)) => fields,
        _ => serde_json::Map::new(),
    };
    fields.remove("hash");
    fields.remove("token");
    fields.insert("userId".to_owned(), user.into());
    serde_json::Value::Object(fields).to_string()
}
