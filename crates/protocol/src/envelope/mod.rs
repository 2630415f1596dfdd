//! The MessagePack envelopes io-nodes and app-nodes exchange through Redis.
//!
//! Every envelope is a MessagePack array of three: `[version, type, body]`, where
//! `version` is [`VERSION`], `type` a short string and `body` a map with named
//! fields (rmp-serde's named encoding). A reader checks the version, dispatches on
//! the type and ignores body fields it does not know, so fields can be added
//! without a version bump. JSON application data travels as JSON *text* inside the
//! envelope, binary attachments as MessagePack `bin`, unchanged.
//!
//! - [`Event`] (`"event"`): io-node to the event queue, one per client packet.
//! - [`Command`]: app-node to io-nodes over pub/sub.
//! - [`relay::Relay`]: io-node to io-node, serving a session another node
//!   holds.
//! - [`Reply`]: io-node to one app-node's own channel (join confirmations, and
//!   acknowledgements a client sent for an emit that asked for one).

//!
//! The files: this one holds the types and their public API; `encode` and
//! `decode` hold the writing and the reading, each the serde way (the
//! reference) and the hand-written fast paths that must produce or accept
//! exactly the same bytes; `tests` and `documented_examples` check both.

mod decode;
mod encode;
pub mod relay;

#[cfg(test)]
mod documented_examples;
#[cfg(test)]
mod tests;

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;

pub use decode::set_handshake_cache;
use decode::{decode_tagged, envelopes, truncated};
use encode::encode_tagged;

/// The envelope version this crate writes and reads.
pub const VERSION: u8 = 1;

/// Why an envelope could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum EnvelopeError {
    #[error("malformed envelope: {0}")]
    Malformed(#[from] rmp_serde::decode::Error),
    #[error("unsupported envelope version {0}")]
    UnsupportedVersion(u8),
    #[error("unknown envelope type {0:?}")]
    UnknownType(String),
}

/// What a client did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventKind {
    /// The client asked to join a namespace; the app-node answers with a
    /// [`Done`] that accepts or rejects it.
    Connect,
    /// The client emitted an event (`data` is `["name", ...args]`).
    Message,
    /// The socket is gone (`reason` says why). Sent once per accepted socket.
    Disconnect,
}

/// What the client sent when it connected, as the io-node saw it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Handshake {
    /// Request headers, names in lower case; repeated headers joined by `, `.
    pub headers: Vec<(String, String)>,
    /// The query string of the first request, decoded.
    pub query: Vec<(String, String)>,
    /// The client's address, `ip:port`.
    pub address: String,
    /// When the Engine.IO session opened, in milliseconds since the Unix epoch.
    pub time: u64,
    /// The path and query of the first request.
    pub url: String,
    /// Whether the connection came over TLS.
    pub secure: bool,
    /// JSON text: the `auth` object the client sent with CONNECT to this
    /// namespace, if any.
    pub auth: Option<String>,
}

impl EventKind {
    /// The wire name (`connect`, `message`, `disconnect`).
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Connect => "connect",
            EventKind::Message => "message",
            EventKind::Disconnect => "disconnect",
        }
    }
}

/// One client packet, with a snapshot of the client, on its way to an app-node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub kind: EventKind,
    /// The io-node holding the client.
    pub node: String,
    /// The socket id (one per namespace a client joined).
    pub sid: String,
    pub nsp: String,
    /// The position of this event among its socket's events, from 0 (connect).
    pub seq: u64,
    /// JSON text: the `auth` object (connect, when the client sent one) or the
    /// `["name", ...args]` array (message).
    pub data: Option<String>,
    /// Binary attachments, referred to from `data` by placeholders.
    #[serde(default)]
    pub bin: Vec<ByteBuf>,
    /// The ack id the client expects an answer on (message only).
    pub ack: Option<u64>,
    /// Why the socket went away (disconnect only).
    pub reason: Option<String>,
    /// The rooms the socket is in, its own id excluded.
    #[serde(default)]
    pub rooms: Vec<String>,
    /// The socket's data (JSON text) as last set by an app-node.
    pub sdata: Option<String>,
    pub handshake: Arc<Handshake>,
    /// `connect` only: the socket is one that disconnected and came back
    /// with connection state recovery (same sid, rooms and data); its
    /// earlier life had no disconnect event.
    #[serde(default, skip_serializing_if = "is_false")]
    pub recovered: bool,
    /// The app-nodes (their [`Done::app`]) that finished an earlier queue
    /// item of this socket on this io-node, oldest first, at most
    /// [`SEEN_BY_MOST`]: an app-node not among them has not seen the
    /// socket (the SDK's new-session hook).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub seen: Vec<String>,
}

/// Most app-nodes an event's `seen` lists; past it the oldest is dropped.
pub const SEEN_BY_MOST: usize = 16;

fn is_false(value: &bool) -> bool {
    !*value
}

impl Event {
    /// Encodes the whole envelope `[1, "event", {…}]`.
    pub fn encode(&self) -> Vec<u8> {
        encode_tagged("event", self)
    }

    /// Decodes an event envelope. Well-formed events are read field by field
    /// and share the decoded handshake of earlier events with the same
    /// handshake bytes (a socket's events all carry the same one); anything
    /// else goes through serde, which is the reference and gives the errors.
    pub fn decode(bytes: &[u8]) -> Result<Event, EnvelopeError> {
        match decode::event(bytes) {
            Some(event) => Ok(event),
            None => decode_tagged(bytes),
        }
    }

    /// Decodes a queue item: one or more event envelopes back to back (an
    /// io-node sends a socket's waiting `message` events as one item). Any
    /// envelope that does not decode, or bytes left over, make the whole
    /// item undecodable.
    pub fn decode_all(bytes: &[u8]) -> Result<Vec<Event>, EnvelopeError> {
        if bytes.is_empty() {
            return Err(truncated());
        }
        envelopes(bytes)
            .map(|envelope| envelope.and_then(Event::decode))
            .collect()
    }

    /// [`Event::decode`] through serde alone: the reference the fast reader
    /// is tested (and fuzzed) against.
    #[doc(hidden)]
    pub fn decode_with_serde(bytes: &[u8]) -> Result<Event, EnvelopeError> {
        decode_tagged(bytes)
    }
}
/// A [`Handshake`] encoded once, as the MessagePack map an event's
/// `handshake` field holds. An io-node keeps its clients' handshakes this way:
/// one allocation per client instead of one per header, and nothing to encode
/// again for each event ([`EventParts::encode`] copies the bytes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedHandshake(bytes::Bytes);

impl EncodedHandshake {
    pub fn new(handshake: &Handshake) -> EncodedHandshake {
        // Encoding a plain struct into a Vec cannot fail. Kept for the whole
        // connection: exactly its size, not the Vec's grown capacity.
        let bytes = rmp_serde::to_vec_named(handshake).unwrap_or_default();
        EncodedHandshake(bytes::Bytes::copy_from_slice(&bytes))
    }

    pub fn decode(&self) -> Result<Handshake, EnvelopeError> {
        Ok(rmp_serde::from_slice(&self.0)?)
    }

    /// The same handshake with the `auth` a socket sent.
    pub fn with_auth(&self, auth: String) -> Result<EncodedHandshake, EnvelopeError> {
        let mut handshake = self.decode()?;
        handshake.auth = Some(auth);
        Ok(EncodedHandshake::new(&handshake))
    }
}

/// An [`Event`] as an io-node writes it: borrowed parts and an
/// [`EncodedHandshake`]. [`EventParts::encode`] writes the same bytes as
/// [`Event::encode`] for the same event, field by field.
#[derive(Debug, Clone)]
pub struct EventParts<'a, R> {
    pub kind: EventKind,
    pub node: &'a str,
    pub sid: &'a str,
    pub nsp: &'a str,
    pub seq: u64,
    pub data: Option<&'a str>,
    pub bin: &'a [ByteBuf],
    pub ack: Option<u64>,
    pub reason: Option<&'a str>,
    /// The rooms the socket is in, its own id excluded.
    pub rooms: R,
    pub sdata: Option<&'a str>,
    pub handshake: &'a EncodedHandshake,
    /// Written (as a 13th field) only when true.
    pub recovered: bool,
    /// Written (after `recovered`) only when not empty.
    pub seen: &'a [Arc<str>],
}
/// Where an answer to a command goes: an app-node's channel and a token it
/// chose.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplyTo {
    pub app: String,
    pub id: u64,
}

/// Emit an event to clients of one namespace.
///
/// Recipients: the sockets in any of `rooms` or named in `sids`; every socket of
/// the namespace when both are empty. Then sockets in `except_rooms` or named in
/// `except_sids` are removed. A socket counts as a member of the room named by its
/// own id. A socket receives the emit once even when several channels carry it
/// (`id` is set whenever the publisher sent the same emit on several channels).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Emit {
    pub nsp: String,
    #[serde(default)]
    pub rooms: Vec<String>,
    #[serde(default)]
    pub sids: Vec<String>,
    #[serde(default)]
    pub except_rooms: Vec<String>,
    #[serde(default)]
    pub except_sids: Vec<String>,
    /// JSON text `["name", ...args]`.
    pub data: String,
    #[serde(default)]
    pub bin: Vec<ByteBuf>,
    /// Ask the (single) recipient for an acknowledgement, answered with
    /// [`Reply::Ack`] on the app-node's channel.
    pub ack: Option<ReplyTo>,
    /// Deduplication id, set when the emit was published on several channels.
    pub id: Option<u64>,
    /// The emit's offset in its namespace's recovery log: not a field of
    /// the envelope but the [`Offset`] command before it in the message
    /// ([`Command::decode_all`] puts it here), or the log entry's id.
    #[serde(skip)]
    pub offset: Option<String>,
}

impl Emit {
    /// The channels that reach every recipient: one per room, one per io-node
    /// holding a named socket (a socket id used as a room counts), or the
    /// broadcast channel when neither rooms nor sockets are named. Publish
    /// the same envelope on each; set `id` when there are several.
    pub fn routes(&self, keys: &crate::keys::Keys) -> Vec<String> {
        if self.rooms.is_empty() && self.sids.is_empty() {
            return vec![keys.all_channel()];
        }
        let mut routes: Vec<String> = self
            .rooms
            .iter()
            .map(|room| keys.room_channel(&self.nsp, room))
            .collect();
        for sid in self.sids.iter().chain(self.rooms.iter()) {
            if let Some(node) = crate::ids::node_of(sid) {
                let channel = keys.node_channel(node);
                if !routes.contains(&channel) {
                    routes.push(channel);
                }
            }
        }
        routes
    }

    /// [`Emit::routes`], setting the deduplication `id` (drawn by `fresh_id`)
    /// when the emit goes out on several channels.
    pub fn route(
        &mut self,
        keys: &crate::keys::Keys,
        fresh_id: impl FnOnce() -> u64,
    ) -> Vec<String> {
        let routes = self.routes(keys);
        self.id = (routes.len() > 1).then(fresh_id);
        routes
    }
}

/// Answer a client's acknowledgement request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Ack {
    pub nsp: String,
    pub sid: String,
    /// The client's ack id ([`Event::ack`]).
    pub id: u64,
    /// JSON text: the array of arguments.
    pub data: String,
    #[serde(default)]
    pub bin: Vec<ByteBuf>,
}

/// Add a socket to rooms. With `reply`, the io-node answers [`Reply::Joined`] once
/// it receives every room's traffic.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Join {
    pub nsp: String,
    pub sid: String,
    pub rooms: Vec<String>,
    pub reply: Option<ReplyTo>,
}

/// Remove a socket from rooms.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Leave {
    pub nsp: String,
    pub sid: String,
    pub rooms: Vec<String>,
}

/// Replace a socket's data (JSON text), seen by every later event's snapshot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SetData {
    pub nsp: String,
    pub sid: String,
    pub data: String,
}

/// Disconnect a socket from its namespace; with `close`, close the client's whole
/// connection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Disconnect {
    pub nsp: String,
    pub sid: String,
    #[serde(default)]
    pub close: bool,
}

/// A connection refused by the application.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reject {
    pub message: String,
    /// Optional JSON text sent to the client as `data`.
    pub data: Option<String>,
}

/// An app-node finished handling event `seq` of a socket. Sent after every
/// command the handler issued, so the io-node may dispatch the socket's next
/// event. For a connect event it also carries the decision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Done {
    pub nsp: String,
    pub sid: String,
    pub seq: u64,
    /// For a connect event: `None` admits the socket.
    pub reject: Option<Reject>,
    /// The app-node that handled the item, as it names itself for this run
    /// (unique per process: `<app id>.<random>`); the io-node lists it in
    /// the socket's next events ([`Event::seen`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app: Option<String>,
}

/// The log offset of the emit that follows it in the same message: the
/// flush script writes it, after adding the emit to its namespace's
/// recovery log (`[1, "offset", {"id": "<entry id>"}]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Offset {
    pub id: String,
}

/// Hand over a socket whose client came back on another connection with
/// connection state recovery: the io-node holding it closes it as if its
/// transport closed, which parks its session for the new connection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Release {
    pub nsp: String,
    pub sid: String,
}

/// A message from an app-node to io-nodes.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    Emit(Emit),
    Ack(Ack),
    Join(Join),
    Leave(Leave),
    SetData(SetData),
    Disconnect(Disconnect),
    Done(Done),
    Offset(Offset),
    Release(Release),
}

impl Command {
    /// The envelope type string.
    /// Every command's `type`, in the order of [`Command::type_index`].
    pub const TYPE_NAMES: [&'static str; 9] = [
        "emit",
        "ack",
        "join",
        "leave",
        "data",
        "disconnect",
        "done",
        "offset",
        "release",
    ];

    /// This command's place in [`Command::TYPE_NAMES`].
    pub fn type_index(&self) -> usize {
        match self {
            Command::Emit(_) => 0,
            Command::Ack(_) => 1,
            Command::Join(_) => 2,
            Command::Leave(_) => 3,
            Command::SetData(_) => 4,
            Command::Disconnect(_) => 5,
            Command::Done(_) => 6,
            Command::Offset(_) => 7,
            Command::Release(_) => 8,
        }
    }

    pub fn type_name(&self) -> &'static str {
        Self::TYPE_NAMES[self.type_index()]
    }

    pub fn decode(bytes: &[u8]) -> Result<Command, EnvelopeError> {
        decode_tagged(bytes)
    }

    /// Reads a message of one or more commands back to back (how app-nodes
    /// publish several at once). A command of an unknown type or version is
    /// reported and skipped; a malformed one ends the message. An
    /// [`Offset`] is not returned: it goes into the [`Emit`] right after it.
    pub fn decode_all(bytes: &[u8]) -> impl Iterator<Item = Result<Command, EnvelopeError>> + '_ {
        let mut envelopes = envelopes(bytes);
        let mut ended = false;
        let mut offset: Option<String> = None;
        std::iter::from_fn(move || {
            loop {
                if ended {
                    return None;
                }
                let result = envelopes.next()?.and_then(decode_tagged);
                ended = matches!(result, Err(EnvelopeError::Malformed(_)));
                match result {
                    Ok(Command::Offset(next)) => offset = Some(next.id),
                    Ok(Command::Emit(mut emit)) => {
                        emit.offset = offset.take();
                        return Some(Ok(Command::Emit(emit)));
                    }
                    other => {
                        offset = None;
                        return Some(other);
                    }
                }
            }
        })
    }
}

/// The io-node received every room of a [`Join`] that asked for a reply.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Joined {
    /// The [`ReplyTo::id`] of the join.
    pub id: u64,
}

/// A client acknowledged an emit that asked for it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AckReply {
    /// The [`ReplyTo::id`] of the emit.
    pub id: u64,
    pub nsp: String,
    pub sid: String,
    /// JSON text: the array of arguments the client acknowledged with.
    pub data: String,
    #[serde(default)]
    pub bin: Vec<ByteBuf>,
}

/// A message from an io-node to one app-node's own channel.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    Joined(Joined),
    Ack(AckReply),
}

impl Reply {
    pub fn encode(&self) -> Vec<u8> {
        match self {
            Reply::Joined(body) => encode_tagged("joined", body),
            Reply::Ack(body) => encode_tagged("ackreply", body),
        }
    }

    pub fn decode(bytes: &[u8]) -> Result<Reply, EnvelopeError> {
        decode_tagged(bytes)
    }
}
