//! Relay envelopes: one io-node serving a client whose session another
//! io-node holds (no sticky sessions at the load balancer).
//!
//! A session id names the io-node that holds the session
//! ([`crate::ids::node_of`]). When a long-polling request or a WebSocket
//! carrying such a sid reaches another io-node (the *relayer*), that node
//! passes it on to the holder (the *owner*) on the owner's relay channel
//! ([`crate::keys::Keys::relay_channel`]) and gets the answer back on its
//! own. The owner keeps everything a session is (its outbox, heartbeat,
//! order, limits); the relayer only moves bytes. Same envelope layout as
//! every other: `[1, type, {fields}]`.
//!
//! Relayer → owner: [`Relay::Poll`], [`Relay::Post`], [`Relay::Cancel`],
//! [`Relay::Probe`], [`Relay::Upgrade`], [`Relay::Up`], [`Relay::Gone`].
//! Owner → relayer: [`Relay::Answer`], [`Relay::Down`], [`Relay::Hold`],
//! [`Relay::Close`]. A request or link is named by the relayer's node id
//! (`from`) and a number it chose (`id`), unique on that node.

use serde::de::SeqAccess;
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;

use super::EnvelopeError;
use super::decode::{Tagged, decode_tagged, element};
use super::encode::encode_tagged;

/// One Engine.IO packet as a transport carries it: a text packet (the
/// Engine.IO packet type digit first, as on a WebSocket) or a binary one.
/// MessagePack `str` for text, `bin` for binary.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum Packet {
    Text(String),
    Binary(ByteBuf),
}

impl<'de> Deserialize<'de> for Packet {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Packet, D::Error> {
        struct PacketVisitor;
        impl<'de> serde::de::Visitor<'de> for PacketVisitor {
            type Value = Packet;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a str (text packet) or a bin (binary packet)")
            }
            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Packet, E> {
                Ok(Packet::Text(text.to_owned()))
            }
            fn visit_string<E: serde::de::Error>(self, text: String) -> Result<Packet, E> {
                Ok(Packet::Text(text))
            }
            fn visit_bytes<E: serde::de::Error>(self, bytes: &[u8]) -> Result<Packet, E> {
                Ok(Packet::Binary(ByteBuf::from(bytes)))
            }
            fn visit_byte_buf<E: serde::de::Error>(self, bytes: Vec<u8>) -> Result<Packet, E> {
                Ok(Packet::Binary(ByteBuf::from(bytes)))
            }
        }
        deserializer.deserialize_any(PacketVisitor)
    }
}

/// A request from the relayer: which one and for which session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    /// The relayer's node id: where the answer goes.
    pub from: String,
    /// The relayer's number for this request (or link).
    pub id: u64,
    pub sid: String,
}

/// A long-polling POST's body, relayed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Post {
    pub from: String,
    pub id: u64,
    pub sid: String,
    /// The request body as the client sent it (at most `max_payload`).
    pub body: ByteBuf,
}

/// Names a request or link of the relayer's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Link {
    pub from: String,
    pub id: u64,
}

/// Client packets read by the relayer's WebSocket, in order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Up {
    pub from: String,
    pub id: u64,
    pub packets: Vec<Packet>,
}

/// The relayer's WebSocket ended; the owner closes the session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Gone {
    pub from: String,
    pub id: u64,
    /// `transport close` (the client closed it), `transport error`, or
    /// `slow client` (the relayer could not write fast enough).
    pub reason: String,
}

/// The owner's HTTP answer to a [`Relay::Poll`], [`Relay::Post`] or
/// [`Relay::Probe`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Answer {
    pub id: u64,
    pub status: u16,
    /// The `Content-Type` of the body.
    pub content_type: String,
    pub body: ByteBuf,
}

/// Frames for a relayed WebSocket, to write in one write, in order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Down {
    pub id: u64,
    pub packets: Vec<Packet>,
}

/// Flow control of a relayed WebSocket: while `paused`, the relayer reads
/// nothing from the client (the owner's backpressure, carried over).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hold {
    pub id: u64,
    pub paused: bool,
}

/// The session of a relayed WebSocket closed; the relayer closes the
/// WebSocket once what came before is written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Close {
    pub id: u64,
}

/// A message between io-nodes on a relay channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Relay {
    /// A long-polling GET: answered when the session has frames (or closes).
    Poll(Request),
    /// A long-polling POST.
    Post(Post),
    /// The relayer's client left before the answer: drop the pending poll.
    Cancel(Link),
    /// A WebSocket probe (`2probe`) for a polling session: the owner
    /// answers 200 and releases the pending poll, or 400.
    Probe(Request),
    /// The client sent `upgrade` on the probed WebSocket: link `id` now
    /// carries the session.
    Upgrade(Request),
    Up(Up),
    Gone(Gone),
    Answer(Answer),
    Down(Down),
    Hold(Hold),
    Close(Close),
}

impl Relay {
    pub fn encode(&self) -> Vec<u8> {
        match self {
            Relay::Poll(body) => encode_tagged("poll", body),
            Relay::Post(body) => encode_tagged("post", body),
            Relay::Cancel(body) => encode_tagged("cancel", body),
            Relay::Probe(body) => encode_tagged("probe", body),
            Relay::Upgrade(body) => encode_tagged("upgrade", body),
            Relay::Up(body) => encode_tagged("up", body),
            Relay::Gone(body) => encode_tagged("gone", body),
            Relay::Answer(body) => encode_tagged("answer", body),
            Relay::Down(body) => encode_tagged("down", body),
            Relay::Hold(body) => encode_tagged("hold", body),
            Relay::Close(body) => encode_tagged("close", body),
        }
    }

    pub fn decode(bytes: &[u8]) -> Result<Relay, EnvelopeError> {
        decode_tagged(bytes)
    }
}

impl Tagged for Relay {
    fn body<'de, A: SeqAccess<'de>>(kind: &str, seq: &mut A) -> Result<Option<Self>, A::Error> {
        Ok(Some(match kind {
            "poll" => Relay::Poll(element(seq)?),
            "post" => Relay::Post(element(seq)?),
            "cancel" => Relay::Cancel(element(seq)?),
            "probe" => Relay::Probe(element(seq)?),
            "upgrade" => Relay::Upgrade(element(seq)?),
            "up" => Relay::Up(element(seq)?),
            "gone" => Relay::Gone(element(seq)?),
            "answer" => Relay::Answer(element(seq)?),
            "down" => Relay::Down(element(seq)?),
            "hold" => Relay::Hold(element(seq)?),
            "close" => Relay::Close(element(seq)?),
            _ => return Ok(None),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn every_kind() -> Vec<Relay> {
        let request = Request {
            from: "io-2".into(),
            id: 7,
            sid: "io-1.abc".into(),
        };
        let packets = vec![
            Packet::Text("42[\"hi\"]".into()),
            Packet::Binary(ByteBuf::from(vec![1, 2, 3])),
        ];
        vec![
            Relay::Poll(request.clone()),
            Relay::Post(Post {
                from: "io-2".into(),
                id: 8,
                sid: "io-1.abc".into(),
                body: ByteBuf::from(b"4hello".to_vec()),
            }),
            Relay::Cancel(Link {
                from: "io-2".into(),
                id: 7,
            }),
            Relay::Probe(request.clone()),
            Relay::Upgrade(request),
            Relay::Up(Up {
                from: "io-2".into(),
                id: 9,
                packets: packets.clone(),
            }),
            Relay::Gone(Gone {
                from: "io-2".into(),
                id: 9,
                reason: "transport close".into(),
            }),
            Relay::Answer(Answer {
                id: 7,
                status: 200,
                content_type: "text/plain; charset=UTF-8".into(),
                body: ByteBuf::from(b"6".to_vec()),
            }),
            Relay::Down(Down { id: 9, packets }),
            Relay::Hold(Hold {
                id: 9,
                paused: true,
            }),
            Relay::Close(Close { id: 9 }),
        ]
    }

    #[test]
    fn every_relay_envelope_round_trips() {
        for relay in every_kind() {
            let bytes = relay.encode();
            assert_eq!(Relay::decode(&bytes).unwrap(), relay);
        }
    }

    #[test]
    fn the_documented_poll_bytes() {
        // docs/PROTOCOL.md, "Relaying: sessions served by any io-node".
        let poll = Relay::Poll(Request {
            from: "io-2".into(),
            id: 7,
            sid: "io-1.abc".into(),
        });
        let hex: Vec<String> = poll.encode().iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            hex.join(" "),
            "93 01 a4 70 6f 6c 6c 83 a4 66 72 6f 6d a4 69 6f 2d 32 a2 69 64 07 a3 73 69 64 \
             a8 69 6f 2d 31 2e 61 62 63"
        );
    }

    #[test]
    fn packets_keep_text_and_binary_apart() {
        let down = Relay::Down(Down {
            id: 1,
            packets: vec![Packet::Text(String::new()), Packet::Binary(ByteBuf::new())],
        });
        let bytes = down.encode();
        // A str, then a bin: the marker says which.
        assert!(bytes.ends_with(&[0x92, 0xa0, 0xc4, 0x00]));
        assert_eq!(Relay::decode(&bytes).unwrap(), down);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for bytes in [
            &b""[..],
            b"\x93\x01\xa4poll",
            b"\x93\x01\xa4poll\x80",
            b"\x93\x02\xa4poll\x80",
            b"\x93\x01\xa3zzz\x80",
            b"\x93\x01\xa2up\x83\xa4from\xa1a\xa2id\x01\xa7packets\x91\xc3",
        ] {
            assert!(Relay::decode(bytes).is_err(), "{bytes:?}");
        }
    }
}
