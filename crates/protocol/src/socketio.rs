//! Socket.IO v5 packets: `<type>[<attachments>-][<namespace>,][<ack id>][<JSON>]`.
//!
//! The io-node never re-encodes application data: a decoded packet keeps its JSON
//! text, which travels to app-nodes as is; an app-node's JSON arguments are framed
//! with a header written once by [`write_header`]. Validation here is what a
//! Socket.IO server owes its clients: the packet type is known, the namespace and
//! ack id are well formed, the JSON parses and has the shape its type demands.

use std::borrow::Cow;
use std::fmt::{self, Write as _};

use serde::Deserialize;
use serde::de::{self, IgnoredAny, SeqAccess, Visitor};

/// Socket.IO packet types, by their wire digit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PacketKind {
    Connect = 0,
    Disconnect = 1,
    Event = 2,
    Ack = 3,
    ConnectError = 4,
    BinaryEvent = 5,
    BinaryAck = 6,
}

impl PacketKind {
    fn from_byte(c: u8) -> Option<Self> {
        Some(match c {
            b'0' => PacketKind::Connect,
            b'1' => PacketKind::Disconnect,
            b'2' => PacketKind::Event,
            b'3' => PacketKind::Ack,
            b'4' => PacketKind::ConnectError,
            b'5' => PacketKind::BinaryEvent,
            b'6' => PacketKind::BinaryAck,
            _ => return None,
        })
    }

    /// Whether binary attachments follow a packet of this kind.
    pub fn is_binary(self) -> bool {
        matches!(self, PacketKind::BinaryEvent | PacketKind::BinaryAck)
    }
}

/// One decoded packet, borrowing from the text it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet<'a> {
    pub kind: PacketKind,
    /// `/` when the packet names no namespace.
    pub nsp: &'a str,
    /// How many binary attachments follow (binary kinds only).
    pub attachments: usize,
    pub id: Option<u64>,
    /// The JSON text of the payload, empty when there is none.
    pub data: &'a str,
}

/// Why a packet was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("empty packet")]
    Empty,
    #[error("unknown packet type")]
    UnknownKind,
    #[error("invalid attachment count")]
    InvalidAttachments,
    #[error("too many attachments ({0})")]
    TooManyAttachments(usize),
    #[error("invalid namespace")]
    InvalidNamespace,
    #[error("invalid ack id")]
    InvalidAckId,
    #[error("invalid payload: {0}")]
    InvalidPayload(&'static str),
}

/// Decodes a packet a client sent. `max_attachments` bounds the binary
/// attachments one packet may announce. Packet kinds only a server sends
/// (CONNECT_ERROR) are refused.
pub fn decode(text: &str, max_attachments: usize) -> Result<Packet<'_>, DecodeError> {
    let packet = parse(text, max_attachments)?;
    let Packet { kind, id, data, .. } = packet;
    match kind {
        PacketKind::Connect => {
            if id.is_some() {
                return Err(DecodeError::InvalidAckId);
            }
            if !data.is_empty() && !is_json_object(data) {
                return Err(DecodeError::InvalidPayload(
                    "CONNECT payload must be an object",
                ));
            }
        }
        PacketKind::Disconnect => {
            if id.is_some() || !data.is_empty() {
                return Err(DecodeError::InvalidPayload("DISCONNECT carries no payload"));
            }
        }
        PacketKind::Event | PacketKind::BinaryEvent => {
            event_name(data)?;
        }
        PacketKind::Ack | PacketKind::BinaryAck => {
            if id.is_none() {
                return Err(DecodeError::InvalidAckId);
            }
            if serde_json::from_str::<IgnoredSeq>(data).is_err() {
                return Err(DecodeError::InvalidPayload("ACK payload must be an array"));
            }
        }
        PacketKind::ConnectError => {
            return Err(DecodeError::InvalidPayload(
                "CONNECT_ERROR is sent by servers only",
            ));
        }
    }
    Ok(packet)
}

/// Splits a packet into its parts without checking its JSON: what a client
/// does with packets from a server it trusts.
pub fn parse(text: &str, max_attachments: usize) -> Result<Packet<'_>, DecodeError> {
    let bytes = text.as_bytes();
    let kind = PacketKind::from_byte(*bytes.first().ok_or(DecodeError::Empty)?)
        .ok_or(DecodeError::UnknownKind)?;
    let mut rest = &text[1..];

    let mut attachments = 0;
    if kind.is_binary() {
        let dash = rest.find('-').ok_or(DecodeError::InvalidAttachments)?;
        let digits = &rest[..dash];
        if digits.is_empty() || digits.len() > 6 || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(DecodeError::InvalidAttachments);
        }
        attachments = digits
            .parse()
            .map_err(|_| DecodeError::InvalidAttachments)?;
        if attachments > max_attachments {
            return Err(DecodeError::TooManyAttachments(attachments));
        }
        rest = &rest[dash + 1..];
    }

    let mut nsp = "/";
    if rest.starts_with('/') {
        match rest.find(',') {
            Some(comma) => {
                nsp = &rest[..comma];
                rest = &rest[comma + 1..];
            }
            None => {
                nsp = rest;
                rest = "";
            }
        }
        if nsp.bytes().any(|b| b.is_ascii_control()) {
            return Err(DecodeError::InvalidNamespace);
        }
    }

    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    let id = if digits > 0 {
        let id = rest[..digits]
            .parse::<u64>()
            .map_err(|_| DecodeError::InvalidAckId)?;
        rest = &rest[digits..];
        Some(id)
    } else {
        None
    };
    Ok(Packet {
        kind,
        nsp,
        attachments,
        id,
        data: rest,
    })
}

/// The event name of an EVENT payload (`["name", ...args]`), validating the
/// whole payload as JSON on the way.
pub fn event_name(data: &str) -> Result<Cow<'_, str>, DecodeError> {
    serde_json::from_str::<EventHead<'_>>(data)
        .map(|head| head.0)
        .map_err(|_| {
            DecodeError::InvalidPayload("EVENT payload must be an array starting with a name")
        })
}

fn is_json_object(data: &str) -> bool {
    serde_json::from_str::<IgnoredMap>(data).is_ok()
}

/// Accepts any JSON object without keeping it.
struct IgnoredMap;

impl<'de> Deserialize<'de> for IgnoredMap {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct MapVisitor;
        impl<'de> Visitor<'de> for MapVisitor {
            type Value = IgnoredMap;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<IgnoredMap, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(IgnoredMap)
            }
        }
        deserializer.deserialize_map(MapVisitor)
    }
}

/// Accepts any JSON array without keeping it.
struct IgnoredSeq;

impl<'de> Deserialize<'de> for IgnoredSeq {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct SeqVisitor;
        impl<'de> Visitor<'de> for SeqVisitor {
            type Value = IgnoredSeq;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an array")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<IgnoredSeq, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(IgnoredSeq)
            }
        }
        deserializer.deserialize_seq(SeqVisitor)
    }
}

/// The first element of an event array, the rest checked and skipped.
struct EventHead<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for EventHead<'de> {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct HeadVisitor;
        impl<'de> Visitor<'de> for HeadVisitor {
            type Value = EventHead<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an array starting with a string")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let name: Cow<'de, str> = seq
                    .next_element::<CowStr<'de>>()?
                    .ok_or_else(|| de::Error::invalid_length(0, &self))?
                    .0;
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(EventHead(name))
            }
        }
        deserializer.deserialize_seq(HeadVisitor)
    }
}

/// A string that borrows when the JSON has no escapes.
struct CowStr<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for CowStr<'de> {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct StrVisitor;
        impl<'de> Visitor<'de> for StrVisitor {
            type Value = CowStr<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(CowStr(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(CowStr(Cow::Owned(v.to_owned())))
            }
        }
        deserializer.deserialize_str(StrVisitor)
    }
}

/// Appends a packet header: type, attachment count, namespace (omitted for `/`)
/// and ack id. The JSON payload follows it directly.
pub fn write_header(
    out: &mut String,
    kind: PacketKind,
    nsp: &str,
    attachments: usize,
    id: Option<u64>,
) {
    out.push((b'0' + kind as u8) as char);
    if kind.is_binary() {
        let _ = write!(out, "{attachments}-");
    }
    if nsp != "/" {
        out.push_str(nsp);
        out.push(',');
    }
    if let Some(id) = id {
        let _ = write!(out, "{id}");
    }
}

/// Encodes a whole packet, choosing the binary kind when attachments follow.
pub fn encode(
    kind: PacketKind,
    nsp: &str,
    attachments: usize,
    id: Option<u64>,
    data: &str,
) -> String {
    let mut out = String::with_capacity(data.len() + nsp.len() + 16);
    write_packet(&mut out, kind, nsp, attachments, id, data);
    out
}

/// A Socket.IO packet as the Engine.IO message that carries it (`4` first),
/// in the binary kind when `attachments` follow it.
pub fn engine_message(
    kind: PacketKind,
    nsp: &str,
    attachments: usize,
    id: Option<u64>,
    data: &str,
) -> String {
    let mut out = String::with_capacity(data.len() + nsp.len() + 17);
    out.push('4');
    write_packet(&mut out, kind, nsp, attachments, id, data);
    out
}

/// Appends a whole packet: the binary kind when attachments follow, the
/// header, then the data.
fn write_packet(
    out: &mut String,
    kind: PacketKind,
    nsp: &str,
    attachments: usize,
    id: Option<u64>,
    data: &str,
) {
    let kind = match (kind, attachments > 0) {
        (PacketKind::Event, true) => PacketKind::BinaryEvent,
        (PacketKind::Ack, true) => PacketKind::BinaryAck,
        (kind, _) => kind,
    };
    write_header(out, kind, nsp, attachments, id);
    if nsp == "/" && id.is_none() && data.starts_with('/') {
        // Data that looks like a namespace needs the default one spelled out.
        out.push_str("/,");
    }
    out.push_str(data);
}

/// The CONNECT payload that admits a socket: `{"sid":"…"}`.
pub fn connect_payload(sid: &str) -> String {
    let sid = serde_json::to_string(sid).unwrap_or_else(|_| "\"\"".into());
    format!(r#"{{"sid":{sid}}}"#)
}

/// The CONNECT payload of a socket with connection state recovery:
/// `{"sid":"…","pid":"…"}`.
pub fn connect_payload_with_pid(sid: &str, pid: &str) -> String {
    let sid = serde_json::to_string(sid).unwrap_or_else(|_| "\"\"".into());
    let pid = serde_json::to_string(pid).unwrap_or_else(|_| "\"\"".into());
    format!(r#"{{"sid":{sid},"pid":{pid}}}"#)
}

/// The CONNECT_ERROR payload for a message: `{"message":"…"}`.
pub fn connect_error_payload(message: &str, data: Option<&str>) -> String {
    let message = serde_json::to_string(message).unwrap_or_else(|_| "\"\"".into());
    match data {
        Some(data) => format!(r#"{{"message":{message},"data":{data}}}"#),
        None => format!(r#"{{"message":{message}}}"#),
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn engine_messages_carry_their_packet() {
        assert_eq!(
            engine_message(PacketKind::Event, "/", 0, None, r#"["a"]"#),
            r#"42["a"]"#
        );
        assert_eq!(
            engine_message(PacketKind::Ack, "/chat", 0, Some(7), "[]"),
            "43/chat,7[]"
        );
        assert_eq!(
            engine_message(PacketKind::Event, "/", 2, Some(1), "[]"),
            "452-1[]"
        );
        assert_eq!(
            engine_message(PacketKind::Disconnect, "/a", 0, None, ""),
            "41/a,"
        );
        assert_eq!(connect_payload("n1~x"), r#"{"sid":"n1~x"}"#);
        let payload = connect_payload("a\"b");
        let packet = format!("0{payload}");
        assert_eq!(parse(&packet, 0).unwrap().data, r#"{"sid":"a\"b"}"#);
    }

    #[test]
    fn data_that_looks_like_a_namespace_round_trips() {
        // Found by the fuzzer (2/,/x): the default namespace must be spelled out.
        let packet = parse("2/,/x", 4).unwrap();
        assert_eq!((packet.nsp, packet.data), ("/", "/x"));
        let again = encode(packet.kind, packet.nsp, 0, None, packet.data);
        assert_eq!(again, "2/,/x");
        assert_eq!(parse(&again, 4).unwrap(), packet);
        assert_eq!(encode(PacketKind::Event, "/", 0, None, "[1]"), "2[1]");
    }

    use super::*;

    fn ok(text: &str) -> Packet<'_> {
        decode(text, 10).unwrap()
    }

    #[test]
    fn decodes_the_spec_examples() {
        assert_eq!(
            ok("0"),
            Packet {
                kind: PacketKind::Connect,
                nsp: "/",
                attachments: 0,
                id: None,
                data: ""
            }
        );
        assert_eq!(ok("0/admin,{\"token\":\"123\"}").nsp, "/admin");
        assert_eq!(ok("0/admin").nsp, "/admin");
        assert_eq!(ok("1/admin,").kind, PacketKind::Disconnect);
        let event = ok("2/admin,12[\"hello\",1]");
        assert_eq!(
            (event.nsp, event.id, event.data),
            ("/admin", Some(12), "[\"hello\",1]")
        );
        let ack = ok("3/admin,13[\"bar\"]");
        assert_eq!((ack.kind, ack.id), (PacketKind::Ack, Some(13)));
        let binary = ok("51-[\"hello\",{\"_placeholder\":true,\"num\":0}]");
        assert_eq!(
            (binary.kind, binary.attachments),
            (PacketKind::BinaryEvent, 1)
        );
        let binary_ack = ok("61-/admin,15[{\"_placeholder\":true,\"num\":0}]");
        assert_eq!((binary_ack.nsp, binary_ack.id), ("/admin", Some(15)));
    }

    #[test]
    fn refuses_malformed_packets() {
        let cases = [
            "",
            "9",
            "2",
            "2[]",
            "2[1]",
            "2{\"a\":1}",
            "2[\"a\"",
            "2[\"a\"]x",
            "0[]",
            "0\"x\"",
            "01",
            "1/a,x",
            "3[1]",
            "3/a,1{}",
            "4{\"message\":\"x\"}",
            "5[\"a\"]",
            "5x-[\"a\"]",
            "511-[\"a\"]",
            "299999999999999999999999[\"a\"]",
        ];
        for case in cases {
            assert!(decode(case, 10).is_err(), "{case:?} should be refused");
        }
        assert_eq!(
            decode("511-[\"a\"]", 10),
            Err(DecodeError::TooManyAttachments(11))
        );
    }

    #[test]
    fn event_names_borrow_or_unescape() {
        assert_eq!(event_name("[\"chat\",1,{}]").unwrap(), "chat");
        assert_eq!(event_name("[\"a\\\"b\"]").unwrap(), "a\"b");
    }

    #[test]
    fn encodes_headers() {
        assert_eq!(
            encode(PacketKind::Event, "/", 0, None, "[\"a\"]"),
            "2[\"a\"]"
        );
        assert_eq!(
            encode(PacketKind::Event, "/chat", 0, Some(4), "[\"a\"]"),
            "2/chat,4[\"a\"]"
        );
        assert_eq!(encode(PacketKind::Event, "/", 2, None, "[]"), "52-[]");
        assert_eq!(encode(PacketKind::Ack, "/x", 1, Some(7), "[]"), "61-/x,7[]");
        assert_eq!(
            encode(PacketKind::Connect, "/", 0, None, "{\"sid\":\"s\"}"),
            "0{\"sid\":\"s\"}"
        );
        assert_eq!(
            connect_error_payload("Invalid namespace", None),
            "{\"message\":\"Invalid namespace\"}"
        );
    }
}
