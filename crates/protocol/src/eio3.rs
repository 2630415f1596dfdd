//! Engine.IO v3 (`EIO=3`: socket.io-client 2.x and the apps pinned to it):
//! what differs from v4 on the wire. Packets are the same; the long-polling
//! payload is framed differently, and binary travels differently.
//!
//! - A text payload is each packet preceded by its length and `:`, the
//!   length counted in UTF-16 code units (JavaScript's `String.length`):
//!   `6:4hello2:40`. A binary packet in a text payload is `b4` + base64.
//! - A binary payload (`Content-Type: application/octet-stream`, what a
//!   client sends when a packet is binary) is, per packet: `0` (a string)
//!   or `1` (binary), the decimal length as one byte per digit, `0xFF`,
//!   then the packet: a string's UTF-8 bytes, or binary data after the
//!   type byte `4`.
//! - Over WebSocket a binary packet is a binary frame whose first byte is
//!   the packet type `4`.
//!
//! The server writes text payloads only (binary as `b4` + base64), which
//! every v3 client reads; it reads both kinds.

use std::borrow::Cow;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;

use crate::engine::{Packet, PacketError, decode_text};

/// The Engine.IO revision of socket.io-client 2.x (`EIO=3`).
pub const PROTOCOL_VERSION: &str = "3";

/// The first byte of a binary packet over WebSocket (and of binary data in
/// a binary payload): the `message` type.
pub const BINARY_MESSAGE: u8 = 4;

/// Most digits a packet's length may have in a payload.
const MAX_LENGTH_DIGITS: usize = 10;

/// Why a v3 payload could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PayloadError {
    #[error("malformed length in payload")]
    Length,
    #[error("packet runs past the end of the payload")]
    Truncated,
    #[error("packet: {0}")]
    Packet(#[from] PacketError),
    #[error("binary packet without the message type")]
    NotAMessage,
    #[error("string packet is not UTF-8")]
    NotUtf8,
}

/// Appends a text packet (`4hello`, `2`, …) to a text payload.
pub fn write_text(out: &mut String, packet: &str) {
    push_length(out, packet.encode_utf16().count());
    out.push_str(packet);
}

/// Appends a binary message to a text payload, as `b4` + base64.
pub fn write_binary(out: &mut String, data: &[u8]) {
    // `b4`, then 4 characters for every 3 bytes, padded.
    push_length(out, 2 + data.len().div_ceil(3) * 4);
    out.push_str("b4");
    BASE64.encode_string(data, out);
}

fn push_length(out: &mut String, length: usize) {
    use std::fmt::Write;
    // Writing to a String cannot fail.
    let _ = write!(out, "{length}:");
}

/// The packets of a payload a client POSTed: a binary payload if it starts
/// with the byte 0 or 1, a text payload otherwise.
pub fn decode_payload(body: &[u8]) -> Result<Vec<Packet<'_>>, PayloadError> {
    match body.first() {
        Some(0 | 1) => decode_binary_payload(body),
        _ => {
            let text = std::str::from_utf8(body).map_err(|_| PayloadError::NotUtf8)?;
            decode_text_payload(text)
        }
    }
}

/// The packets of a text payload.
pub fn decode_text_payload(payload: &str) -> Result<Vec<Packet<'_>>, PayloadError> {
    let mut packets = Vec::new();
    let mut rest = payload;
    while !rest.is_empty() {
        let colon = rest.find(':').ok_or(PayloadError::Length)?;
        let digits = &rest[..colon];
        if digits.is_empty()
            || digits.len() > MAX_LENGTH_DIGITS
            || !digits.bytes().all(|b| b.is_ascii_digit())
        {
            return Err(PayloadError::Length);
        }
        let units: usize = digits.parse().map_err(|_| PayloadError::Length)?;
        let body = &rest[colon + 1..];
        let end = utf16_prefix(body, units).ok_or(PayloadError::Truncated)?;
        packets.push(decode_record(&body[..end])?);
        rest = &body[end..];
    }
    Ok(packets)
}

/// The byte length of the first `units` UTF-16 code units of `text`, if
/// it has that many and they do not end inside a character.
fn utf16_prefix(text: &str, units: usize) -> Option<usize> {
    let mut counted = 0;
    for (at, c) in text.char_indices() {
        if counted == units {
            return Some(at);
        }
        counted += c.len_utf16();
        if counted > units {
            return None;
        }
    }
    (counted == units).then_some(text.len())
}

/// One packet of a text payload: `b4` + base64 is a binary message.
pub fn decode_record(record: &str) -> Result<Packet<'_>, PayloadError> {
    match record.strip_prefix('b') {
        Some(encoded) => {
            let encoded = encoded.strip_prefix('4').ok_or(PayloadError::NotAMessage)?;
            let bytes = BASE64
                .decode(encoded)
                .map_err(|_| PacketError::InvalidBase64)?;
            Ok(Packet::Binary(Cow::Owned(bytes)))
        }
        None => Ok(decode_text(record)?),
    }
}

/// The packets of a binary payload.
pub fn decode_binary_payload(payload: &[u8]) -> Result<Vec<Packet<'_>>, PayloadError> {
    let mut packets = Vec::new();
    let mut rest = payload;
    while let Some((&kind, after)) = rest.split_first() {
        let end = after
            .iter()
            .position(|&b| b == 0xFF)
            .ok_or(PayloadError::Length)?;
        let digits = &after[..end];
        if digits.is_empty() || digits.len() > MAX_LENGTH_DIGITS || digits.iter().any(|&d| d > 9) {
            return Err(PayloadError::Length);
        }
        let length = digits.iter().fold(0usize, |n, &d| n * 10 + usize::from(d));
        let body = &after[end + 1..];
        if body.len() < length {
            return Err(PayloadError::Truncated);
        }
        let (packet, tail) = body.split_at(length);
        packets.push(match kind {
            0 => {
                let text = std::str::from_utf8(packet).map_err(|_| PayloadError::NotUtf8)?;
                decode_text(text)?
            }
            1 => Packet::Binary(Cow::Borrowed(binary_message(packet)?)),
            _ => return Err(PayloadError::Length),
        });
        rest = tail;
    }
    Ok(packets)
}

/// The data of a binary packet (a WebSocket binary frame, or binary in a
/// binary payload): after the `message` type byte.
pub fn binary_message(packet: &[u8]) -> Result<&[u8], PayloadError> {
    match packet.split_first() {
        Some((&BINARY_MESSAGE, data)) => Ok(data),
        _ => Err(PayloadError::NotAMessage),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_payloads_count_utf16_code_units() {
        let mut out = String::new();
        write_text(&mut out, "4hello");
        write_text(&mut out, "2");
        // é is one UTF-16 unit, 😀 two; both more than one UTF-8 byte.
        write_text(&mut out, "4é😀");
        assert_eq!(out, "6:4hello1:24:4é😀");
        assert_eq!(
            decode_text_payload(&out).unwrap(),
            vec![
                Packet::Message("hello"),
                Packet::Ping(""),
                Packet::Message("é😀")
            ]
        );
    }

    #[test]
    fn binary_in_a_text_payload_is_b4_and_base64() {
        let mut out = String::new();
        write_binary(&mut out, &[1, 2, 3, 4]);
        assert_eq!(out, "10:b4AQIDBA==");
        assert_eq!(
            decode_text_payload(&out).unwrap(),
            vec![Packet::Binary(Cow::Owned(vec![1, 2, 3, 4]))]
        );
        let mut empty = String::new();
        write_binary(&mut empty, &[]);
        assert_eq!(empty, "2:b4");
    }

    #[test]
    fn binary_payloads_as_engine_io_client_3_writes_them() {
        // "451-[...]" as a string, then the attachment [1, 2, 3].
        let text = b"451-[\"f\",{\"_placeholder\":true,\"num\":0}]";
        let mut payload = vec![0];
        payload.extend(text.len().to_string().bytes().map(|d| d - b'0'));
        payload.push(0xFF);
        payload.extend_from_slice(text);
        payload.extend_from_slice(&[1, 4, 0xFF, 4, 1, 2, 3]);
        let packets = decode_payload(&payload).unwrap();
        assert_eq!(
            packets,
            vec![
                Packet::Message("51-[\"f\",{\"_placeholder\":true,\"num\":0}]"),
                Packet::Binary(Cow::Borrowed(&[1, 2, 3]))
            ]
        );
    }

    #[test]
    fn malformed_payloads_are_errors() {
        for bad in [
            "5:4hi",
            "x:4",
            ":4",
            "4hello",
            "99999999999:4",
            "2:b9",
            "4:b4!!",
            "2:😀",
            "1:😀",
            "1:9",
        ] {
            assert!(decode_text_payload(bad).is_err(), "{bad:?}");
        }
        for bad in [
            &[0u8, 1][..],
            &[0, 0xFF],
            &[1, 1, 0xFF, 3],
            &[0, 5, 0xFF, b'4'],
            &[2, 1, 0xFF, b'4'],
            &[0, 10, 0xFF],
            &[0, 1, 0xFF, 0xC3],
        ] {
            assert!(decode_binary_payload(bad).is_err(), "{bad:?}");
        }
        assert_eq!(decode_text_payload("").unwrap(), vec![]);
    }

    #[test]
    fn websocket_binary_frames_start_with_the_message_type() {
        assert_eq!(binary_message(&[4, 9, 9]).unwrap(), &[9, 9]);
        assert!(binary_message(&[]).is_err());
        assert!(binary_message(&[3, 1]).is_err());
    }
}
