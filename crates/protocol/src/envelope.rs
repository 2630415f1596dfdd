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
//! - [`Reply`]: io-node to one app-node's own channel (join confirmations, and
//!   acknowledgements a client sent for an emit that asked for one).

use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;

use serde::de::{self, IgnoredAny, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};
use serde_bytes::ByteBuf;

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
        match fast::event(bytes) {
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

/// The field-by-field event reader behind [`Event::decode`].
mod fast {
    use std::cell::RefCell;
    use std::collections::HashMap;
    use std::sync::Arc;

    use rmp::decode::{read_array_len, read_int, read_map_len, read_str_from_slice};
    use serde_bytes::ByteBuf;

    use super::{Event, EventKind, Handshake, VERSION, value_len};

    /// Most handshakes a thread keeps decoded; past it the cache starts over.
    const CACHE: usize = 4096;

    /// Decoded handshakes by their bytes' hash, with the bytes.
    type Cache = HashMap<u64, (Box<[u8]>, Arc<Handshake>)>;

    thread_local! {
        static HANDSHAKES: RefCell<Cache> = RefCell::default();
    }

    /// A cheap hash of a handshake's bytes (FNV-1a over 8-byte words); the
    /// bytes themselves are compared on a hit.
    fn hash(bytes: &[u8]) -> u64 {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        let mut words = bytes.chunks_exact(8);
        for word in &mut words {
            let mut w = [0u8; 8];
            w.copy_from_slice(word);
            h = (h ^ u64::from_le_bytes(w)).wrapping_mul(0x0100_0000_01b3);
        }
        for &b in words.remainder() {
            h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
        h ^ bytes.len() as u64
    }

    fn handshake(bytes: &[u8]) -> Option<Arc<Handshake>> {
        let key = hash(bytes);
        HANDSHAKES.with(|cache| {
            let mut cache = cache.borrow_mut();
            if let Some((known, decoded)) = cache.get(&key)
                && **known == *bytes
            {
                return Some(decoded.clone());
            }
            let decoded = Arc::new(rmp_serde::from_slice::<Handshake>(bytes).ok()?);
            if cache.len() >= CACHE {
                cache.clear();
            }
            cache.insert(key, (bytes.into(), decoded.clone()));
            Some(decoded)
        })
    }

    fn str<'a>(r: &mut &'a [u8]) -> Option<&'a str> {
        let (value, rest) = read_str_from_slice(*r).ok()?;
        *r = rest;
        Some(value)
    }

    fn is_nil(r: &mut &[u8]) -> bool {
        if r.first() == Some(&0xc0) {
            *r = &r[1..];
            true
        } else {
            false
        }
    }

    fn opt_str(r: &mut &[u8]) -> Option<Option<String>> {
        if is_nil(r) {
            return Some(None);
        }
        Some(Some(str(r)?.to_owned()))
    }

    fn uint(r: &mut &[u8]) -> Option<u64> {
        read_int::<u64, _>(r).ok()
    }

    fn bin(r: &mut &[u8]) -> Option<ByteBuf> {
        let len = rmp::decode::read_bin_len(r).ok()? as usize;
        let (value, rest) = (r.get(..len)?, r.get(len..)?);
        *r = rest;
        Some(ByteBuf::from(value))
    }

    /// The event in `bytes`, or `None` for anything it is not sure of.
    pub(super) fn event(bytes: &[u8]) -> Option<Event> {
        let r = &mut &bytes[..];
        if read_array_len(r).ok()? != 3 || uint(r)? != u64::from(VERSION) || str(r)? != "event" {
            return None;
        }
        let fields = read_map_len(r).ok()?;
        let (mut kind, mut node, mut sid, mut nsp, mut seq) = (None, None, None, None, None);
        let (mut data, mut bins, mut ack, mut reason) = (None, Vec::new(), None, None);
        let (mut rooms, mut sdata, mut handshake_) = (Vec::new(), None, None);
        // serde refuses a field given twice; so does this reader (by
        // leaving it to serde). Each known field has its bit in `seen`.
        let mut seen = 0u16;
        for _ in 0..fields {
            let bit = match str(r)? {
                "kind" => {
                    kind = Some(match str(r)? {
                        "connect" => EventKind::Connect,
                        "message" => EventKind::Message,
                        "disconnect" => EventKind::Disconnect,
                        _ => return None,
                    });
                    1
                }
                "node" => {
                    node = Some(str(r)?.to_owned());
                    2
                }
                "sid" => {
                    sid = Some(str(r)?.to_owned());
                    4
                }
                "nsp" => {
                    nsp = Some(str(r)?.to_owned());
                    8
                }
                "seq" => {
                    seq = Some(uint(r)?);
                    16
                }
                "data" => {
                    data = opt_str(r)?;
                    32
                }
                "bin" => {
                    let n = read_array_len(r).ok()? as usize;
                    bins = Vec::with_capacity(n.min(r.len()));
                    for _ in 0..n {
                        bins.push(bin(r)?);
                    }
                    64
                }
                "ack" => {
                    ack = if is_nil(r) { None } else { Some(uint(r)?) };
                    128
                }
                "reason" => {
                    reason = opt_str(r)?;
                    256
                }
                "rooms" => {
                    let n = read_array_len(r).ok()? as usize;
                    rooms = Vec::with_capacity(n.min(r.len()));
                    for _ in 0..n {
                        rooms.push(str(r)?.to_owned());
                    }
                    512
                }
                "sdata" => {
                    sdata = opt_str(r)?;
                    1024
                }
                "handshake" => {
                    let len = value_len(r)?;
                    handshake_ = Some(handshake(&r[..len])?);
                    *r = &r[len..];
                    2048
                }
                _ => {
                    // A field this version does not know: skipped.
                    let len = value_len(r)?;
                    *r = &r[len..];
                    0
                }
            };
            if seen & bit != 0 {
                return None;
            }
            seen |= bit;
        }
        Some(Event {
            kind: kind?,
            node: node?,
            sid: sid?,
            nsp: nsp?,
            seq: seq?,
            data,
            bin: bins,
            ack,
            reason,
            rooms,
            sdata,
            handshake: handshake_?,
        })
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
}

impl<'a, R: ExactSizeIterator<Item = &'a str>> EventParts<'a, R> {
    /// Encodes the whole envelope `[1, "event", {…}]`.
    pub fn encode(self) -> Vec<u8> {
        let mut w = Vec::new();
        self.encode_into(&mut w);
        w
    }

    /// Appends the envelope to `w`: a queue item of several events is their
    /// envelopes back to back.
    pub fn encode_into(self, w: &mut Vec<u8>) {
        w.reserve(
            128 + self.node.len()
                + self.sid.len()
                + self.nsp.len()
                + self.data.map_or(0, str::len)
                + self.sdata.map_or(0, str::len)
                + self.bin.iter().map(|b| b.len() + 5).sum::<usize>()
                + 16 * self.rooms.len()
                + self.handshake.0.len(),
        );
        envelope_head(w, "event", 12);
        write_str_field(w, "kind", self.kind.as_str());
        write_str_field(w, "node", self.node);
        write_str_field(w, "sid", self.sid);
        write_str_field(w, "nsp", self.nsp);
        write_uint_field(w, "seq", self.seq);
        write_str_field(w, "data", self.data);
        write_bins_field(w, "bin", self.bin);
        write_str(w, "ack");
        match self.ack {
            Some(ack) => drop(rmp::encode::write_uint(w, ack)),
            None => drop(rmp::encode::write_nil(w)),
        }
        write_str_field(w, "reason", self.reason);
        write_str(w, "rooms");
        drop(rmp::encode::write_array_len(w, self.rooms.len() as u32));
        for room in self.rooms {
            write_str(w, room);
        }
        write_str_field(w, "sdata", self.sdata);
        write_str(w, "handshake");
        w.extend_from_slice(&self.handshake.0);
    }
}

// Field-by-field MessagePack writing, the same bytes as rmp-serde's named
// encoding. Writing into a Vec cannot fail: the results are dropped.

/// `[1, kind, {` with a map of `fields` entries to follow.
fn envelope_head(w: &mut Vec<u8>, kind: &str, fields: u32) {
    drop(rmp::encode::write_array_len(w, 3));
    drop(rmp::encode::write_uint(w, u64::from(VERSION)));
    write_str(w, kind);
    drop(rmp::encode::write_map_len(w, fields));
}

fn write_str(w: &mut Vec<u8>, value: &str) {
    drop(rmp::encode::write_str(w, value));
}

/// A key and a string, or nil for `None`.
fn write_str_field<'a>(w: &mut Vec<u8>, key: &str, value: impl Into<Option<&'a str>>) {
    write_str(w, key);
    match value.into() {
        Some(value) => write_str(w, value),
        None => drop(rmp::encode::write_nil(w)),
    }
}

fn write_uint_field(w: &mut Vec<u8>, key: &str, value: u64) {
    write_str(w, key);
    drop(rmp::encode::write_uint(w, value));
}

fn write_bins_field(w: &mut Vec<u8>, key: &str, bins: &[ByteBuf]) {
    write_str(w, key);
    drop(rmp::encode::write_array_len(w, bins.len() as u32));
    for bin in bins {
        drop(rmp::encode::write_bin(w, bin));
    }
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
}

impl Command {
    /// The envelope type string.
    /// Every command's `type`, in the order of [`Command::type_index`].
    pub const TYPE_NAMES: [&'static str; 7] =
        ["emit", "ack", "join", "leave", "data", "disconnect", "done"];

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
        }
    }

    pub fn type_name(&self) -> &'static str {
        Self::TYPE_NAMES[self.type_index()]
    }

    pub fn encode(&self) -> Vec<u8> {
        let kind = self.type_name();
        match self {
            Command::Emit(body) => encode_tagged(kind, body),
            // The two commands every event ends with, written field by
            // field (the same bytes as serde's, a fifth of the cost).
            Command::Ack(ack) => {
                let mut w = Vec::with_capacity(
                    64 + ack.nsp.len()
                        + ack.sid.len()
                        + ack.data.len()
                        + ack.bin.iter().map(|b| b.len() + 5).sum::<usize>(),
                );
                envelope_head(&mut w, kind, 5);
                write_str_field(&mut w, "nsp", ack.nsp.as_str());
                write_str_field(&mut w, "sid", ack.sid.as_str());
                write_uint_field(&mut w, "id", ack.id);
                write_str_field(&mut w, "data", ack.data.as_str());
                write_bins_field(&mut w, "bin", &ack.bin);
                w
            }
            Command::Join(body) => encode_tagged(kind, body),
            Command::Leave(body) => encode_tagged(kind, body),
            Command::SetData(body) => encode_tagged(kind, body),
            Command::Disconnect(body) => encode_tagged(kind, body),
            Command::Done(done) if done.reject.is_none() => {
                let mut w = Vec::with_capacity(48 + done.nsp.len() + done.sid.len());
                envelope_head(&mut w, kind, 4);
                write_str_field(&mut w, "nsp", done.nsp.as_str());
                write_str_field(&mut w, "sid", done.sid.as_str());
                write_uint_field(&mut w, "seq", done.seq);
                write_str_field(&mut w, "reject", None::<&str>);
                w
            }
            Command::Done(body) => encode_tagged(kind, body),
        }
    }

    pub fn decode(bytes: &[u8]) -> Result<Command, EnvelopeError> {
        decode_tagged(bytes)
    }

    /// Reads a message of one or more commands back to back (how app-nodes
    /// publish several at once). A command of an unknown type or version is
    /// reported and skipped; a malformed one ends the message.
    pub fn decode_all(bytes: &[u8]) -> impl Iterator<Item = Result<Command, EnvelopeError>> + '_ {
        let mut envelopes = envelopes(bytes);
        let mut ended = false;
        std::iter::from_fn(move || {
            if ended {
                return None;
            }
            let result = envelopes.next()?.and_then(decode_tagged);
            ended = matches!(result, Err(EnvelopeError::Malformed(_)));
            Some(result)
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

fn encode_tagged<T: Serialize>(kind: &str, body: &T) -> Vec<u8> {
    // Encoding plain structs into a Vec cannot fail.
    rmp_serde::to_vec_named(&(VERSION, kind, body)).unwrap_or_default()
}

/// The envelopes of a message or queue item that holds several back to back,
/// each as its own slice (serde's slice reader borrows; its stream reader
/// copies every string through a buffer). One that runs past the end is a
/// truncation error, and the last item.
fn envelopes(bytes: &[u8]) -> impl Iterator<Item = Result<&[u8], EnvelopeError>> + '_ {
    let mut rest = bytes;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let Some(len) = value_len(rest) else {
            rest = &[];
            return Some(Err(truncated()));
        };
        let (envelope, after) = rest.split_at(len);
        rest = after;
        Some(Ok(envelope))
    })
}

/// The error for bytes that end inside a value.
fn truncated() -> EnvelopeError {
    let eof = std::io::Error::from(std::io::ErrorKind::UnexpectedEof);
    EnvelopeError::Malformed(rmp_serde::decode::Error::InvalidMarkerRead(eof))
}

/// The length in bytes of the MessagePack value `bytes` starts with, found
/// from its markers and lengths alone (nothing is decoded); `None` when the
/// value runs past the end or uses the reserved marker. Iterative: nesting
/// costs no stack, and every value takes at least one byte, so a claimed
/// count larger than the input ends at the input's end.
fn value_len(bytes: &[u8]) -> Option<usize> {
    use rmp::Marker;
    let be = |at: usize, width: usize| -> Option<usize> {
        let field = bytes.get(at..at.checked_add(width)?)?;
        Some(field.iter().fold(0usize, |n, &b| (n << 8) | usize::from(b)))
    };
    let (mut at, mut pending) = (0usize, 1usize);
    while pending > 0 {
        pending -= 1;
        let marker = Marker::from_u8(*bytes.get(at)?);
        at += 1;
        // Bytes after the marker, and values nested in this one.
        let (skip, nested) = match marker {
            Marker::FixPos(_) | Marker::FixNeg(_) | Marker::Null | Marker::True | Marker::False => {
                (0, 0)
            }
            Marker::U8 | Marker::I8 => (1, 0),
            Marker::U16 | Marker::I16 => (2, 0),
            Marker::U32 | Marker::I32 | Marker::F32 => (4, 0),
            Marker::U64 | Marker::I64 | Marker::F64 => (8, 0),
            Marker::FixStr(len) => (usize::from(len), 0),
            Marker::Str8 | Marker::Bin8 => (1 + be(at, 1)?, 0),
            Marker::Str16 | Marker::Bin16 => (2 + be(at, 2)?, 0),
            Marker::Str32 | Marker::Bin32 => (4 + be(at, 4)?, 0),
            Marker::FixArray(len) => (0, usize::from(len)),
            Marker::Array16 => (2, be(at, 2)?),
            Marker::Array32 => (4, be(at, 4)?),
            Marker::FixMap(len) => (0, 2 * usize::from(len)),
            Marker::Map16 => (2, 2 * be(at, 2)?),
            Marker::Map32 => (4, be(at, 4)?.checked_mul(2)?),
            Marker::FixExt1 => (2, 0),
            Marker::FixExt2 => (3, 0),
            Marker::FixExt4 => (5, 0),
            Marker::FixExt8 => (9, 0),
            Marker::FixExt16 => (17, 0),
            Marker::Ext8 => (2 + be(at, 1)?, 0),
            Marker::Ext16 => (3 + be(at, 2)?, 0),
            Marker::Ext32 => (5 + be(at, 4)?, 0),
            Marker::Reserved => return None,
        };
        at = at.checked_add(skip)?;
        if at > bytes.len() {
            return None;
        }
        pending = pending.checked_add(nested)?;
    }
    Some(at)
}

/// An envelope family: knows which body type goes with each type string.
trait Tagged: Sized {
    /// Reads the body for `kind`; `Ok(None)` when the type is unknown.
    fn body<'de, A: SeqAccess<'de>>(kind: &str, seq: &mut A) -> Result<Option<Self>, A::Error>;
}

enum Outcome<T> {
    Decoded(T),
    Version(u8),
    Unknown(String),
}

fn decode_tagged<T: Tagged>(bytes: &[u8]) -> Result<T, EnvelopeError> {
    decode_from(&mut rmp_serde::Deserializer::from_read_ref(bytes))
}

fn decode_from<'de, T: Tagged, R: rmp_serde::decode::ReadSlice<'de>>(
    deserializer: &mut rmp_serde::Deserializer<R>,
) -> Result<T, EnvelopeError> {
    struct TaggedVisitor<T>(PhantomData<T>);
    impl<'de, T: Tagged> Visitor<'de> for TaggedVisitor<T> {
        type Value = Outcome<T>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("an envelope [version, type, body]")
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Outcome<T>, A::Error> {
            let version: u8 = seq
                .next_element()?
                .ok_or_else(|| de::Error::invalid_length(0, &self))?;
            if version != VERSION {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                return Ok(Outcome::Version(version));
            }
            let kind: String = seq
                .next_element()?
                .ok_or_else(|| de::Error::invalid_length(1, &self))?;
            let outcome = match T::body(&kind, &mut seq)? {
                Some(body) => Outcome::Decoded(body),
                None => Outcome::Unknown(kind),
            };
            while seq.next_element::<IgnoredAny>()?.is_some() {}
            Ok(outcome)
        }
    }
    match deserializer.deserialize_seq(TaggedVisitor::<T>(PhantomData))? {
        Outcome::Decoded(body) => Ok(body),
        Outcome::Version(version) => Err(EnvelopeError::UnsupportedVersion(version)),
        Outcome::Unknown(kind) => Err(EnvelopeError::UnknownType(kind)),
    }
}

/// Reads the body element as `T`, failing when it is missing.
fn element<'de, T: Deserialize<'de>, A: SeqAccess<'de>>(seq: &mut A) -> Result<T, A::Error> {
    seq.next_element()?
        .ok_or_else(|| de::Error::custom("envelope has no body"))
}

impl Tagged for Event {
    fn body<'de, A: SeqAccess<'de>>(kind: &str, seq: &mut A) -> Result<Option<Self>, A::Error> {
        Ok(match kind {
            "event" => Some(element(seq)?),
            _ => None,
        })
    }
}

impl Tagged for Command {
    fn body<'de, A: SeqAccess<'de>>(kind: &str, seq: &mut A) -> Result<Option<Self>, A::Error> {
        Ok(Some(match kind {
            "emit" => Command::Emit(element(seq)?),
            "ack" => Command::Ack(element(seq)?),
            "join" => Command::Join(element(seq)?),
            "leave" => Command::Leave(element(seq)?),
            "data" => Command::SetData(element(seq)?),
            "disconnect" => Command::Disconnect(element(seq)?),
            "done" => Command::Done(element(seq)?),
            _ => return Ok(None),
        }))
    }
}

impl Tagged for Reply {
    fn body<'de, A: SeqAccess<'de>>(kind: &str, seq: &mut A) -> Result<Option<Self>, A::Error> {
        Ok(Some(match kind {
            "joined" => Reply::Joined(element(seq)?),
            "ackreply" => Reply::Ack(element(seq)?),
            _ => return Ok(None),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn handshake() -> Arc<Handshake> {
        Arc::new(Handshake {
            headers: vec![("host".into(), "127.0.0.1".into())],
            query: vec![("EIO".into(), "4".into())],
            address: "127.0.0.1:5000".into(),
            time: 1,
            url: "/socket.io/?EIO=4".into(),
            secure: false,
            auth: Some("{\"token\":\"t\"}".into()),
        })
    }

    /// kind, data, bin, ack, reason, rooms, sdata, seq
    type Case<'a> = (
        EventKind,
        Option<&'a str>,
        &'a [ByteBuf],
        Option<u64>,
        Option<&'a str>,
        Vec<&'a str>,
        Option<&'a str>,
        u64,
    );

    /// The io-node's encoder writes exactly what serde writes, for every
    /// shape of event.
    #[test]
    fn event_parts_encode_as_events_do() {
        let bin = vec![
            ByteBuf::from(vec![0u8, 1, 255]),
            ByteBuf::from(vec![7u8; 300]),
        ];
        let shaken = handshake();
        let encoded = EncodedHandshake::new(&shaken);
        assert_eq!(encoded.decode().unwrap(), *shaken);
        let long = "x".repeat(70_000);
        let cases: Vec<Case> = vec![
            (EventKind::Connect, None, &[], None, None, vec![], None, 0),
            (
                EventKind::Message,
                Some("[\"hi\",{\"_placeholder\":true,\"num\":0}]"),
                &bin,
                Some(7),
                None,
                vec!["a", "b"],
                Some("{\"n\":1}"),
                3,
            ),
            (
                EventKind::Message,
                Some(&long),
                &[],
                Some(u64::MAX),
                None,
                vec![],
                None,
                1 << 40,
            ),
            (
                EventKind::Disconnect,
                None,
                &[],
                None,
                Some("transport close"),
                vec!["room"; 20],
                None,
                300,
            ),
        ];
        for (kind, data, bin, ack, reason, rooms, sdata, seq) in cases {
            let event = Event {
                kind,
                node: "n1".into(),
                sid: "n1.abc".into(),
                nsp: "/chat".into(),
                seq,
                data: data.map(Into::into),
                bin: bin.to_vec(),
                ack,
                reason: reason.map(Into::into),
                rooms: rooms.iter().map(|room| room.to_string()).collect(),
                sdata: sdata.map(Into::into),
                handshake: shaken.clone(),
            };
            let parts = EventParts {
                kind,
                node: "n1",
                sid: "n1.abc",
                nsp: "/chat",
                seq,
                data,
                bin,
                ack,
                reason,
                rooms: rooms.iter().copied(),
                sdata,
                handshake: &encoded,
            };
            assert_eq!(parts.encode(), event.encode(), "{kind:?} seq {seq}");
        }
    }

    /// The hand-written `ack` and `done` encodings are serde's bytes.
    #[test]
    fn acks_and_dones_encode_as_serde_does() {
        let long = "y".repeat(70_000);
        let acks = [
            Ack {
                nsp: "/".into(),
                sid: "n.s".into(),
                id: 0,
                data: "[]".into(),
                bin: vec![],
            },
            Ack {
                nsp: "/chat".into(),
                sid: "n.s".into(),
                id: u64::MAX,
                data: long.clone(),
                bin: vec![
                    ByteBuf::from(vec![1u8; 3]),
                    ByteBuf::from(vec![2u8; 70_000]),
                ],
            },
        ];
        for ack in acks {
            let command = Command::Ack(ack.clone());
            assert_eq!(command.encode(), encode_tagged("ack", &ack));
            assert_eq!(Command::decode(&command.encode()).unwrap(), command);
        }
        let dones = [
            Done {
                nsp: "/".into(),
                sid: "n.s".into(),
                seq: 0,
                reject: None,
            },
            Done {
                nsp: long.clone(),
                sid: "n.s".into(),
                seq: 1 << 40,
                reject: None,
            },
        ];
        for done in dones {
            let command = Command::Done(done.clone());
            assert_eq!(command.encode(), encode_tagged("done", &done));
            assert_eq!(Command::decode(&command.encode()).unwrap(), command);
        }
    }

    /// Events with the same handshake share one decoded copy; a different
    /// handshake (same everything but one header) gets its own.
    #[test]
    fn events_of_a_socket_share_their_decoded_handshake() {
        let event = |handshake: Arc<Handshake>| Event {
            kind: EventKind::Message,
            node: "n1".into(),
            sid: "n1.abc".into(),
            nsp: "/".into(),
            seq: 1,
            data: Some("[\"x\"]".into()),
            bin: vec![],
            ack: None,
            reason: None,
            rooms: vec![],
            sdata: None,
            handshake,
        };
        let first = Event::decode(&event(handshake()).encode()).unwrap();
        let second = Event::decode(&event(handshake()).encode()).unwrap();
        assert_eq!(first.handshake, handshake());
        assert!(Arc::ptr_eq(&first.handshake, &second.handshake));
        let mut other = (*handshake()).clone();
        other.headers[0].1 = "127.0.0.2".into();
        let third = Event::decode(&event(Arc::new(other.clone())).encode()).unwrap();
        assert_eq!(*third.handshake, other);
        assert!(!Arc::ptr_eq(&first.handshake, &third.handshake));
    }

    /// The fast event reader agrees with serde: on every shape the io-node
    /// writes, with fields in another order, with unknown fields, and it
    /// leaves to serde (and its error) a field given twice.
    #[test]
    fn the_fast_event_reader_agrees_with_serde() {
        #[derive(Serialize)]
        struct Shuffled<'a> {
            handshake: &'a Handshake,
            future_field: (u8, &'a str),
            seq: u64,
            rooms: Vec<&'a str>,
            sid: &'a str,
            kind: EventKind,
            nsp: &'a str,
            node: &'a str,
            data: Option<&'a str>,
        }
        let shaken = handshake();
        let encoded = EncodedHandshake::new(&shaken);
        let bin = [ByteBuf::from(vec![9u8; 40])];
        let mut envelopes = vec![];
        for (kind, data, ack, reason) in [
            (EventKind::Connect, None, None, None),
            (EventKind::Message, Some("[\"a\",1]"), Some(5), None),
            (EventKind::Disconnect, None, None, Some("ping timeout")),
        ] {
            envelopes.push(
                EventParts {
                    kind,
                    node: "n1",
                    sid: "n1.x",
                    nsp: "/",
                    seq: 7,
                    data,
                    bin: &bin,
                    ack,
                    reason,
                    rooms: ["r1", "r2"].into_iter(),
                    sdata: Some("{}"),
                    handshake: &encoded,
                }
                .encode(),
            );
        }
        let shuffled = Shuffled {
            handshake: &shaken,
            future_field: (1, "x"),
            seq: 300,
            rooms: vec!["a"],
            sid: "n1.y",
            kind: EventKind::Message,
            nsp: "/chat",
            node: "n1",
            data: Some("[]"),
        };
        envelopes.push(rmp_serde::to_vec_named(&(1u8, "event", &shuffled)).unwrap());
        for bytes in &envelopes {
            let fast = Event::decode(bytes).unwrap();
            assert_eq!(fast, Event::decode_with_serde(bytes).unwrap());
        }
        // "seq" twice: serde says no, and so does decode.
        let mut twice = envelopes[0].clone();
        let at = twice.windows(4).position(|w| w == b"\xa3seq").unwrap();
        twice[at + 1..at + 4].copy_from_slice(b"nsp");
        assert!(Event::decode_with_serde(&twice).is_err());
        assert!(Event::decode(&twice).is_err());
    }

    #[test]
    fn an_encoded_handshake_takes_a_sockets_auth() {
        let mut plain = (*handshake()).clone();
        plain.auth = None;
        let with = EncodedHandshake::new(&plain)
            .with_auth("{\"k\":2}".into())
            .unwrap();
        plain.auth = Some("{\"k\":2}".into());
        assert_eq!(with, EncodedHandshake::new(&plain));
    }

    #[test]
    fn events_round_trip() {
        let event = Event {
            kind: EventKind::Message,
            node: "n1".into(),
            sid: "n1.abc".into(),
            nsp: "/".into(),
            seq: 3,
            data: Some("[\"hi\",{\"_placeholder\":true,\"num\":0}]".into()),
            bin: vec![ByteBuf::from(vec![0u8, 1, 255])],
            ack: Some(7),
            reason: None,
            rooms: vec!["r".into()],
            sdata: Some("{\"nick\":\"a\"}".into()),
            handshake: handshake(),
        };
        let bytes = event.encode();
        assert_eq!(
            &bytes[..8],
            &[0x93, 0x01, 0xa5, b'e', b'v', b'e', b'n', b't']
        );
        assert_eq!(Event::decode(&bytes).unwrap(), event);
    }

    #[test]
    fn a_queue_item_of_several_events_decodes_whole_or_not_at_all() {
        let first = Event {
            kind: EventKind::Message,
            node: "n1".into(),
            sid: "n1.abc".into(),
            nsp: "/".into(),
            seq: 3,
            data: Some("[\"a\"]".into()),
            bin: Vec::new(),
            ack: None,
            reason: None,
            rooms: vec!["r".into()],
            sdata: None,
            handshake: handshake(),
        };
        let second = Event {
            seq: 4,
            data: Some("[\"b\",{\"_placeholder\":true,\"num\":0}]".into()),
            bin: vec![ByteBuf::from(vec![7u8; 300])],
            ack: Some(1),
            ..first.clone()
        };
        let mut item = first.encode();
        assert_eq!(Event::decode_all(&item).unwrap(), vec![first.clone()]);
        item.extend(second.encode());
        assert_eq!(
            Event::decode_all(&item).unwrap(),
            vec![first.clone(), second.clone()]
        );
        // Truncated, followed by garbage, or followed by a command: refused.
        assert!(Event::decode_all(&item[..item.len() - 1]).is_err());
        let mut garbage = item.clone();
        garbage.push(0xc1);
        assert!(Event::decode_all(&garbage).is_err());
        let mut mixed = item.clone();
        mixed.extend(
            Command::Done(Done {
                nsp: "/".into(),
                sid: "n1.abc".into(),
                seq: 4,
                reject: None,
            })
            .encode(),
        );
        assert!(Event::decode_all(&mixed).is_err());
        assert!(Event::decode_all(b"").is_err());
    }

    #[test]
    fn commands_round_trip() {
        let commands = [
            Command::Emit(Emit {
                nsp: "/".into(),
                rooms: vec!["a".into(), "b".into()],
                except_sids: vec!["n1.x".into()],
                data: "[\"tick\",1]".into(),
                id: Some(9),
                ..Emit::default()
            }),
            Command::Ack(Ack {
                nsp: "/".into(),
                sid: "n.s".into(),
                id: 1,
                data: "[]".into(),
                bin: vec![],
            }),
            Command::Join(Join {
                nsp: "/".into(),
                sid: "n.s".into(),
                rooms: vec!["r".into()],
                reply: Some(ReplyTo {
                    app: "a1".into(),
                    id: 5,
                }),
            }),
            Command::Leave(Leave {
                nsp: "/".into(),
                sid: "n.s".into(),
                rooms: vec!["r".into()],
            }),
            Command::SetData(SetData {
                nsp: "/".into(),
                sid: "n.s".into(),
                data: "1".into(),
            }),
            Command::Disconnect(Disconnect {
                nsp: "/".into(),
                sid: "n.s".into(),
                close: true,
            }),
            Command::Done(Done {
                nsp: "/".into(),
                sid: "n.s".into(),
                seq: 0,
                reject: Some(Reject {
                    message: "no".into(),
                    data: None,
                }),
            }),
        ];
        for command in &commands {
            assert_eq!(&Command::decode(&command.encode()).unwrap(), command);
        }
        // Several back to back, as an app-node publishes them.
        let message: Vec<u8> = commands.iter().flat_map(Command::encode).collect();
        let decoded: Vec<Command> = Command::decode_all(&message)
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(decoded, commands);
        let replies = [
            Reply::Joined(Joined { id: 1 }),
            Reply::Ack(AckReply {
                id: 2,
                nsp: "/".into(),
                sid: "n.s".into(),
                data: "[1]".into(),
                bin: vec![ByteBuf::from(vec![1u8])],
            }),
        ];
        for reply in replies {
            assert_eq!(Reply::decode(&reply.encode()).unwrap(), reply);
        }
    }

    #[test]
    fn bodies_ignore_unknown_fields_and_defaults_apply() {
        #[derive(Serialize)]
        struct Future<'a> {
            nsp: &'a str,
            data: &'a str,
            ack: Option<u8>,
            id: Option<u8>,
            priority: u8,
        }
        let bytes = rmp_serde::to_vec_named(&(
            1u8,
            "emit",
            Future {
                nsp: "/",
                data: "[\"x\"]",
                ack: None,
                id: None,
                priority: 3,
            },
        ))
        .unwrap();
        let Command::Emit(emit) = Command::decode(&bytes).unwrap() else {
            panic!("not an emit")
        };
        assert!(emit.rooms.is_empty() && emit.bin.is_empty());
        assert_eq!(emit.data, "[\"x\"]");
    }

    #[test]
    fn refuses_bad_envelopes() {
        let newer = rmp_serde::to_vec_named(&(2u8, "emit", ())).unwrap();
        assert!(matches!(
            Command::decode(&newer),
            Err(EnvelopeError::UnsupportedVersion(2))
        ));
        let unknown = rmp_serde::to_vec_named(&(1u8, "teleport", ())).unwrap();
        assert!(
            matches!(Command::decode(&unknown), Err(EnvelopeError::UnknownType(t)) if t == "teleport")
        );
        for garbage in [
            &b""[..],
            b"\x93",
            b"\xc1",
            b"\x93\x01\xa4emit\xc0",
            b"hello",
        ] {
            assert!(Command::decode(garbage).is_err());
            assert!(Event::decode(garbage).is_err());
        }
    }

    /// `value_len` agrees with serde on where a value ends, for every kind of
    /// value, and finds no end in a truncated one.
    #[test]
    fn value_lengths_match_the_encoder() {
        let values: Vec<Vec<u8>> = vec![
            rmp_serde::to_vec(&0u8).unwrap(),
            rmp_serde::to_vec(&-1i8).unwrap(),
            rmp_serde::to_vec(&-100i8).unwrap(),
            rmp_serde::to_vec(&300u16).unwrap(),
            rmp_serde::to_vec(&70_000u32).unwrap(),
            rmp_serde::to_vec(&u64::MAX).unwrap(),
            rmp_serde::to_vec(&-5_000_000_000i64).unwrap(),
            rmp_serde::to_vec(&1.5f32).unwrap(),
            rmp_serde::to_vec(&1.5f64).unwrap(),
            rmp_serde::to_vec(&(true, false, None::<u8>)).unwrap(),
            rmp_serde::to_vec(&"x".repeat(31)).unwrap(),
            rmp_serde::to_vec(&"x".repeat(200)).unwrap(),
            rmp_serde::to_vec(&"x".repeat(70_000)).unwrap(),
            rmp_serde::to_vec(&ByteBuf::from(vec![1u8; 10])).unwrap(),
            rmp_serde::to_vec(&ByteBuf::from(vec![1u8; 300])).unwrap(),
            rmp_serde::to_vec(&ByteBuf::from(vec![1u8; 70_000])).unwrap(),
            rmp_serde::to_vec(&vec![7u8; 20]).unwrap(),
            rmp_serde::to_vec(&vec![7u8; 70_000]).unwrap(),
            rmp_serde::to_vec(&std::collections::BTreeMap::from([(1u8, "a"), (2, "b")])).unwrap(),
            rmp_serde::to_vec(
                &(0..20)
                    .map(|n| (n, n))
                    .collect::<std::collections::BTreeMap<u32, u32>>(),
            )
            .unwrap(),
            // ext values: fixext 1/2/4/8/16 and ext 8/16/32
            vec![0xd4, 1, 0],
            vec![0xd5, 1, 0, 0],
            vec![0xd6, 1, 0, 0, 0, 0],
            [vec![0xd7, 1], vec![0; 8]].concat(),
            [vec![0xd8, 1], vec![0; 16]].concat(),
            [vec![0xc7, 3, 1], vec![0; 3]].concat(),
            [vec![0xc8, 1, 0, 1], vec![0; 256]].concat(),
            [vec![0xc9, 0, 1, 0, 0, 1], vec![0; 65536]].concat(),
            Command::Done(Done {
                nsp: "/".into(),
                sid: "n.s".into(),
                seq: 3,
                reject: None,
            })
            .encode(),
        ];
        for value in values {
            assert_eq!(
                value_len(&value),
                Some(value.len()),
                "{:x?}",
                &value[..value.len().min(8)]
            );
            let mut longer = value.clone();
            longer.extend_from_slice(&[0xc0, 0x01]);
            assert_eq!(value_len(&longer), Some(value.len()));
            assert_eq!(value_len(&value[..value.len() - 1]), None);
        }
        assert_eq!(value_len(&[0xc1]), None, "the reserved marker");
        assert_eq!(
            value_len(&[0xdd, 0xff, 0xff, 0xff, 0xff]),
            None,
            "a count past the input"
        );
        assert_eq!(value_len(&[]), None);
    }

    #[test]
    fn a_message_of_several_commands_skips_unknown_ones_and_stops_at_garbage() {
        let done = Command::Done(Done {
            nsp: "/".into(),
            sid: "n.s".into(),
            seq: 3,
            reject: None,
        });
        let mut message = done.encode();
        message.extend(rmp_serde::to_vec_named(&(1u8, "teleport", ("far",))).unwrap());
        message.extend(rmp_serde::to_vec_named(&(2u8, "emit", ())).unwrap());
        message.extend(done.encode());
        message.extend(b"\x93\x01");
        message.extend(done.encode());
        let results: Vec<_> = Command::decode_all(&message).collect();
        assert_eq!(results.len(), 5, "{results:?}");
        assert_eq!(results[0].as_ref().unwrap(), &done);
        assert!(matches!(&results[1], Err(EnvelopeError::UnknownType(t)) if t == "teleport"));
        assert!(matches!(
            results[2],
            Err(EnvelopeError::UnsupportedVersion(2))
        ));
        assert_eq!(results[3].as_ref().unwrap(), &done);
        // The truncated envelope ends the message: what follows is unreadable.
        assert!(matches!(results[4], Err(EnvelopeError::Malformed(_))));
        assert_eq!(Command::decode_all(b"").count(), 0);
    }
}

/// The examples docs/PROTOCOL.md shows, byte for byte.
#[cfg(test)]
mod documented_examples {
    use super::*;

    fn hex(bytes: &[u8]) -> String {
        bytes
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(" ")
    }

    fn example_event() -> Event {
        Event {
            kind: EventKind::Message,
            node: "io1".into(),
            sid: "io1.Xy".into(),
            nsp: "/".into(),
            seq: 1,
            data: Some("[\"hi\",1]".into()),
            bin: vec![],
            ack: Some(7),
            reason: None,
            rooms: vec!["lobby".into()],
            sdata: None,
            handshake: Arc::new(Handshake {
                headers: vec![("host".into(), "h".into())],
                query: vec![("EIO".into(), "4".into())],
                address: "127.0.0.1:5".into(),
                time: 1,
                url: "/".into(),
                secure: false,
                auth: None,
            }),
        }
    }

    #[test]
    fn match_the_document() {
        let event = example_event();
        let emit = Command::Emit(Emit {
            nsp: "/".into(),
            rooms: vec!["lobby".into()],
            data: "[\"tick\",1]".into(),
            ..Emit::default()
        });
        let done = Command::Done(Done {
            nsp: "/".into(),
            sid: "io1.Xy".into(),
            seq: 1,
            reject: None,
        });
        assert_eq!(
            hex(&event.encode()),
            "93 01 a5 65 76 65 6e 74 8c a4 6b 69 6e 64 a7 6d 65 73 73 61 67 65 a4 6e 6f 64 65 a3 69 6f 31 a3 73 69 64 a6 69 6f 31 2e 58 79 a3 6e 73 70 a1 2f a3 73 65 71 01 a4 64 61 74 61 a8 5b 22 68 69 22 2c 31 5d a3 62 69 6e 90 a3 61 63 6b 07 a6 72 65 61 73 6f 6e c0 a5 72 6f 6f 6d 73 91 a5 6c 6f 62 62 79 a5 73 64 61 74 61 c0 a9 68 61 6e 64 73 68 61 6b 65 87 a7 68 65 61 64 65 72 73 91 92 a4 68 6f 73 74 a1 68 a5 71 75 65 72 79 91 92 a3 45 49 4f a1 34 a7 61 64 64 72 65 73 73 ab 31 32 37 2e 30 2e 30 2e 31 3a 35 a4 74 69 6d 65 01 a3 75 72 6c a1 2f a6 73 65 63 75 72 65 c2 a4 61 75 74 68 c0"
        );
        assert_eq!(
            hex(&emit.encode()),
            "93 01 a4 65 6d 69 74 89 a3 6e 73 70 a1 2f a5 72 6f 6f 6d 73 91 a5 6c 6f 62 62 79 a4 73 69 64 73 90 ac 65 78 63 65 70 74 5f 72 6f 6f 6d 73 90 ab 65 78 63 65 70 74 5f 73 69 64 73 90 a4 64 61 74 61 aa 5b 22 74 69 63 6b 22 2c 31 5d a3 62 69 6e 90 a3 61 63 6b c0 a2 69 64 c0"
        );
        assert_eq!(
            hex(&done.encode()),
            "93 01 a4 64 6f 6e 65 84 a3 6e 73 70 a1 2f a3 73 69 64 a6 69 6f 31 2e 58 79 a3 73 65 71 01 a6 72 65 6a 65 63 74 c0"
        );
    }
}
