//! Engine.IO v4: packet types, text and binary packets, the long-polling payload
//! (packets joined by the record separator, binary as `b` + base64), the `open`
//! handshake body and the transport errors a server answers with.
//!
//! Decoding borrows from the input; encoding appends to a caller's buffer so a
//! frame can be built once and shared by every recipient.

use std::borrow::Cow;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::Serialize;

/// The Engine.IO protocol revision this crate speaks (`EIO=4`).
pub const PROTOCOL_VERSION: &str = "4";

/// Separates packets in a long-polling payload.
pub const RECORD_SEPARATOR: char = '\u{1e}';

/// Engine.IO packet types, by their wire digit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PacketType {
    Open = 0,
    Close = 1,
    Ping = 2,
    Pong = 3,
    Message = 4,
    Upgrade = 5,
    Noop = 6,
}

impl PacketType {
    /// The ASCII digit that starts a text packet of this type.
    pub fn as_char(self) -> char {
        (b'0' + self as u8) as char
    }

    fn from_char(c: u8) -> Option<Self> {
        Some(match c {
            b'0' => PacketType::Open,
            b'1' => PacketType::Close,
            b'2' => PacketType::Ping,
            b'3' => PacketType::Pong,
            b'4' => PacketType::Message,
            b'5' => PacketType::Upgrade,
            b'6' => PacketType::Noop,
            _ => return None,
        })
    }
}

/// One decoded Engine.IO packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet<'a> {
    Open(&'a str),
    Close,
    Ping(&'a str),
    Pong(&'a str),
    /// A text message: what follows the `4`.
    Message(&'a str),
    /// A binary message (a WebSocket binary frame, or `b<base64>` when polling).
    Binary(Cow<'a, [u8]>),
    Upgrade,
    Noop,
}

impl Packet<'_> {
    /// The packet as a text packet (type digit, then its data), what
    /// [`decode_text`] reads back to the same packet; `None` for binary.
    pub fn to_text(&self) -> Option<String> {
        let (kind, data) = match self {
            Packet::Open(data) => (PacketType::Open, *data),
            Packet::Close => (PacketType::Close, ""),
            Packet::Ping(data) => (PacketType::Ping, *data),
            Packet::Pong(data) => (PacketType::Pong, *data),
            Packet::Message(data) => (PacketType::Message, *data),
            Packet::Upgrade => (PacketType::Upgrade, ""),
            Packet::Noop => (PacketType::Noop, ""),
            Packet::Binary(_) => return None,
        };
        let mut text = String::with_capacity(1 + data.len());
        text.push(kind.as_char());
        text.push_str(data);
        Some(text)
    }
}

/// Why a packet could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PacketError {
    #[error("empty packet")]
    Empty,
    #[error("unknown packet type {0:?}")]
    UnknownType(char),
    #[error("invalid base64 in binary packet")]
    InvalidBase64,
}

/// Decodes a text packet (a WebSocket text frame). `b…` is not valid here: over
/// WebSocket, binary data travels in binary frames.
pub fn decode_text(text: &str) -> Result<Packet<'_>, PacketError> {
    let first = *text.as_bytes().first().ok_or(PacketError::Empty)?;
    let kind = PacketType::from_char(first)
        .ok_or_else(|| PacketError::UnknownType(text.chars().next().unwrap_or('?')))?;
    let data = &text[1..];
    Ok(match kind {
        PacketType::Open => Packet::Open(data),
        PacketType::Close => Packet::Close,
        PacketType::Ping => Packet::Ping(data),
        PacketType::Pong => Packet::Pong(data),
        PacketType::Message => Packet::Message(data),
        PacketType::Upgrade => Packet::Upgrade,
        PacketType::Noop => Packet::Noop,
    })
}

/// Decodes one record of a long-polling payload, where binary messages are
/// written `b` followed by base64.
pub fn decode_polling_record(record: &str) -> Result<Packet<'_>, PacketError> {
    match record.strip_prefix('b') {
        Some(encoded) => BASE64
            .decode(encoded)
            .map(|bytes| Packet::Binary(Cow::Owned(bytes)))
            .map_err(|_| PacketError::InvalidBase64),
        None => decode_text(record),
    }
}

/// Splits a long-polling payload into its records.
pub fn split_payload(payload: &str) -> impl Iterator<Item = &str> {
    payload.split(RECORD_SEPARATOR)
}

/// Appends a binary message as a long-polling record (`b` + base64).
pub fn write_polling_binary(out: &mut String, data: &[u8]) {
    out.push('b');
    BASE64.encode_string(data, out);
}

/// The server's ping, as a text packet.
pub const PING: &str = "2";

/// A noop, sent to release a pending long-poll (e.g. during an upgrade).
pub const NOOP: &str = "6";

/// A close packet: the answer to a long-poll of a session that is closed.
pub const CLOSE: &str = "1";

/// The answer to a WebSocket upgrade probe (`2probe`).
pub const PROBE_PONG: &str = "3probe";

/// The pong that answers a client's ping carrying `data`.
pub fn pong(data: &str) -> String {
    let mut pong = String::with_capacity(1 + data.len());
    pong.push(PacketType::Pong.as_char());
    pong.push_str(data);
    pong
}

/// The JSON body of an HTTP 503 to a handshake the server will not take
/// (shutting down, or at its connection limit): clients try another node.
pub const UNAVAILABLE_BODY: &str = r#"{"code":3,"message":"Server unavailable"}"#;

/// The body of the `open` packet.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct OpenPacket<'a> {
    pub sid: &'a str,
    pub upgrades: &'a [&'a str],
    pub ping_interval: u64,
    pub ping_timeout: u64,
    pub max_payload: u64,
}

impl OpenPacket<'_> {
    /// The whole text packet: `0{"sid":…}`.
    pub fn encode(&self) -> String {
        let mut out = String::with_capacity(128);
        out.push(PacketType::Open.as_char());
        // Serializing a struct of strings and integers cannot fail.
        out.push_str(&serde_json::to_string(self).unwrap_or_default());
        out
    }
}

/// The errors an Engine.IO server answers a bad HTTP request with (status 400 or
/// 403, JSON body `{"code":N,"message":"…"}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TransportError {
    #[error("Transport unknown")]
    UnknownTransport,
    #[error("Session ID unknown")]
    UnknownSid,
    #[error("Bad handshake method")]
    BadHandshakeMethod,
    #[error("Bad request")]
    BadRequest,
    #[error("Forbidden")]
    Forbidden,
    #[error("Unsupported protocol version")]
    UnsupportedProtocolVersion,
}

impl TransportError {
    /// The numeric code of the error body.
    pub fn code(self) -> u8 {
        match self {
            TransportError::UnknownTransport => 0,
            TransportError::UnknownSid => 1,
            TransportError::BadHandshakeMethod => 2,
            TransportError::BadRequest => 3,
            TransportError::Forbidden => 4,
            TransportError::UnsupportedProtocolVersion => 5,
        }
    }

    /// The HTTP status that goes with the error.
    pub fn status(self) -> u16 {
        match self {
            TransportError::Forbidden => 403,
            _ => 400,
        }
    }

    /// The JSON body, e.g. `{"code":1,"message":"Session ID unknown"}`.
    pub fn body(self) -> String {
        format!(r#"{{"code":{},"message":"{}"}}"#, self.code(), self)
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn unknown_types_are_reported_as_sent() {
        assert_eq!(decode_text("éa"), Err(PacketError::UnknownType('é')));
        assert_eq!(decode_text("9"), Err(PacketError::UnknownType('9')));
    }

    use super::*;

    #[test]
    fn decodes_text_packets() {
        assert_eq!(decode_text("2probe"), Ok(Packet::Ping("probe")));
        assert_eq!(decode_text("3"), Ok(Packet::Pong("")));
        assert_eq!(decode_text("4hello"), Ok(Packet::Message("hello")));
        assert_eq!(decode_text("5"), Ok(Packet::Upgrade));
        assert_eq!(decode_text("1"), Ok(Packet::Close));
        assert_eq!(decode_text(""), Err(PacketError::Empty));
        assert_eq!(decode_text("9x"), Err(PacketError::UnknownType('9')));
        assert_eq!(decode_text("b"), Err(PacketError::UnknownType('b')));
    }

    #[test]
    fn polling_records_carry_base64_binary() {
        let mut out = String::new();
        write_polling_binary(&mut out, &[1, 2, 3, 4]);
        assert_eq!(out, "bAQIDBA==");
        assert_eq!(
            decode_polling_record(&out),
            Ok(Packet::Binary(Cow::Owned(vec![1, 2, 3, 4])))
        );
        assert_eq!(
            decode_polling_record("b!!"),
            Err(PacketError::InvalidBase64)
        );
        let records: Vec<_> = split_payload("4hello\u{1e}2\u{1e}bAQ==").collect();
        assert_eq!(records, ["4hello", "2", "bAQ=="]);
    }

    #[test]
    fn open_packet_and_errors_match_the_spec() {
        let open = OpenPacket {
            sid: "abc",
            upgrades: &["websocket"],
            ping_interval: 25000,
            ping_timeout: 20000,
            max_payload: 1000000,
        };
        assert_eq!(
            open.encode(),
            r#"0{"sid":"abc","upgrades":["websocket"],"pingInterval":25000,"pingTimeout":20000,"maxPayload":1000000}"#
        );
        assert_eq!(
            TransportError::UnknownSid.body(),
            r#"{"code":1,"message":"Session ID unknown"}"#
        );
        assert_eq!(TransportError::Forbidden.status(), 403);
    }
}
