//! The packets of `socket.io-msgpack-parser` (the parser Node's Socket.IO and
//! socketioxide offer besides the default one): each Socket.IO packet is one
//! MessagePack map `{"type", "nsp", "data"?, "id"?}` in one binary Engine.IO
//! message, binary arguments are MessagePack `bin` values in place, and there
//! are no attachments.
//!
//! Inside, the io-node keeps what the default parser gives and the envelopes
//! carry: the payload as JSON text, binary values as attachments referred to
//! by `{"_placeholder":true,"num":i}`. [`decode`] turns a client's packet into
//! that form (and checks it with the default parser's rules), [`encode`] turns
//! it back.

use rmpv::Value;

use crate::socketio::{self, DecodeError, PacketKind};

/// Deepest nesting a client's packet may have (serde_json's limit too).
const MAX_DEPTH: usize = 128;

/// A client's packet in the io-node's form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet {
    pub kind: PacketKind,
    pub nsp: String,
    pub id: Option<u64>,
    /// JSON text, empty when the packet has no data.
    pub data: String,
    pub bin: Vec<Vec<u8>>,
}

fn kind_of(value: &Value) -> Option<PacketKind> {
    Some(match value.as_u64()? {
        0 => PacketKind::Connect,
        1 => PacketKind::Disconnect,
        2 => PacketKind::Event,
        3 => PacketKind::Ack,
        4 => PacketKind::ConnectError,
        _ => return None,
    })
}

fn number(kind: PacketKind) -> u64 {
    match kind {
        PacketKind::Connect => 0,
        PacketKind::Disconnect => 1,
        PacketKind::Event | PacketKind::BinaryEvent => 2,
        PacketKind::Ack | PacketKind::BinaryAck => 3,
        PacketKind::ConnectError => 4,
    }
}

/// JavaScript's `undefined` as notepack writes it (`d4 00 00`).
fn is_undefined(value: &Value) -> bool {
    matches!(value, Value::Ext(0, data) if data.iter().all(|b| *b == 0))
}

/// JSON for a MessagePack value; `bin` values become placeholders.
fn to_json(
    value: Value,
    bin: &mut Vec<Vec<u8>>,
    max_attachments: usize,
) -> Result<serde_json::Value, DecodeError> {
    use serde_json::Value as J;
    Ok(match value {
        Value::Nil => J::Null,
        Value::Boolean(b) => J::Bool(b),
        Value::Integer(n) => match (n.as_u64(), n.as_i64()) {
            (Some(u), _) => J::from(u),
            (None, Some(i)) => J::from(i),
            _ => return Err(DecodeError::InvalidPayload("integer out of range")),
        },
        Value::F32(f) => serde_json::Number::from_f64(f64::from(f)).map_or(J::Null, J::Number),
        Value::F64(f) => serde_json::Number::from_f64(f).map_or(J::Null, J::Number),
        Value::String(s) => J::String(
            s.into_str()
                .ok_or(DecodeError::InvalidPayload("string is not UTF-8"))?,
        ),
        Value::Binary(bytes) => {
            if bin.len() >= max_attachments {
                return Err(DecodeError::TooManyAttachments(bin.len() + 1));
            }
            bin.push(bytes);
            serde_json::json!({ "_placeholder": true, "num": bin.len() - 1 })
        }
        Value::Array(items) => J::Array(
            items
                .into_iter()
                .map(|item| to_json(item, bin, max_attachments))
                .collect::<Result<_, _>>()?,
        ),
        Value::Map(pairs) => {
            let mut map = serde_json::Map::with_capacity(pairs.len());
            for (key, value) in pairs {
                let Value::String(key) = key else {
                    return Err(DecodeError::InvalidPayload("map key is not a string"));
                };
                let key = key
                    .into_str()
                    .ok_or(DecodeError::InvalidPayload("string is not UTF-8"))?;
                // A JavaScript object has each key once; a second one
                // would leave the first one's attachments unreferenced.
                if map
                    .insert(key, to_json(value, bin, max_attachments)?)
                    .is_some()
                {
                    return Err(DecodeError::InvalidPayload("a map key given twice"));
                }
            }
            J::Object(map)
        }
        // notepack (the parser's MessagePack library) writes JavaScript's
        // `undefined` as extension 0; JSON has only null for it.
        ext if is_undefined(&ext) => J::Null,
        Value::Ext(..) => return Err(DecodeError::InvalidPayload("extension type")),
    })
}

/// Decodes a packet a client sent, with at most `max_attachments` binary
/// values, and checks it as the default parser checks its packets.
pub fn decode(bytes: &[u8], max_attachments: usize) -> Result<Packet, DecodeError> {
    let packet = read(bytes, max_attachments)?;
    // The default parser's rules, on the same packet in its text form.
    let text_kind = match (packet.kind, packet.bin.is_empty()) {
        (PacketKind::Event, false) => PacketKind::BinaryEvent,
        (PacketKind::Ack, false) => PacketKind::BinaryAck,
        (kind, _) => kind,
    };
    let text = socketio::encode(
        text_kind,
        &packet.nsp,
        packet.bin.len(),
        packet.id,
        &packet.data,
    );
    socketio::decode(&text, max_attachments)?;
    Ok(packet)
}

/// Reads a packet of either side without the rules a client's packets
/// follow (what a client does with a server's).
pub fn read(bytes: &[u8], max_attachments: usize) -> Result<Packet, DecodeError> {
    let mut reader = bytes;
    let value = rmpv::decode::read_value_with_max_depth(&mut reader, MAX_DEPTH)
        .map_err(|_| DecodeError::InvalidPayload("not MessagePack"))?;
    if !reader.is_empty() {
        return Err(DecodeError::InvalidPayload("bytes after the packet"));
    }
    let Value::Map(fields) = value else {
        return Err(DecodeError::InvalidPayload("a packet is a map"));
    };
    let (mut kind, mut nsp, mut id, mut data) = (None, None, None, None);
    for (key, value) in fields {
        match key.as_str() {
            Some("type") => kind = Some(kind_of(&value).ok_or(DecodeError::UnknownKind)?),
            Some("nsp") => {
                nsp = Some(
                    value
                        .as_str()
                        .ok_or(DecodeError::InvalidNamespace)?
                        .to_owned(),
                )
            }
            Some("id" | "data") if value.is_nil() || is_undefined(&value) => {}
            Some("id") => id = Some(value.as_u64().ok_or(DecodeError::InvalidAckId)?),
            Some("data") => data = Some(value),
            _ => {}
        }
    }
    let kind = kind.ok_or(DecodeError::UnknownKind)?;
    let nsp = nsp.ok_or(DecodeError::InvalidNamespace)?;
    let mut bin = Vec::new();
    let data = match data {
        None | Some(Value::Nil) if kind != PacketKind::Event && kind != PacketKind::Ack => {
            String::new()
        }
        None => return Err(DecodeError::InvalidPayload("no data")),
        Some(value) => to_json(value, &mut bin, max_attachments)?.to_string(),
    };
    Ok(Packet {
        kind,
        nsp,
        id,
        data,
        bin,
    })
}

/// Writes a JSON value as MessagePack; a placeholder naming one of `bin`
/// is written as that `bin`.
fn write_json(out: &mut Vec<u8>, value: &serde_json::Value, bin: &[impl AsRef<[u8]>]) {
    use serde_json::Value as J;
    match value {
        J::Null => drop(rmp::encode::write_nil(out)),
        J::Bool(b) => drop(rmp::encode::write_bool(out, *b)),
        J::Number(n) => {
            if let Some(u) = n.as_u64() {
                drop(rmp::encode::write_uint(out, u));
            } else if let Some(i) = n.as_i64() {
                drop(rmp::encode::write_sint(out, i));
            } else {
                drop(rmp::encode::write_f64(out, n.as_f64().unwrap_or(0.0)));
            }
        }
        J::String(s) => drop(rmp::encode::write_str(out, s)),
        J::Array(items) => {
            drop(rmp::encode::write_array_len(out, items.len() as u32));
            for item in items {
                write_json(out, item, bin);
            }
        }
        J::Object(map) => {
            if map.len() == 2
                && map.get("_placeholder") == Some(&J::Bool(true))
                && let Some(bytes) = map
                    .get("num")
                    .and_then(J::as_u64)
                    .and_then(|num| bin.get(num as usize))
            {
                drop(rmp::encode::write_bin(out, bytes.as_ref()));
                return;
            }
            drop(rmp::encode::write_map_len(out, map.len() as u32));
            for (key, value) in map {
                drop(rmp::encode::write_str(out, key));
                write_json(out, value, bin);
            }
        }
    }
}

/// The packet the io-node sends, as one binary message: `data` is JSON text
/// (empty for none) whose placeholders name `bin`.
pub fn encode(
    kind: PacketKind,
    nsp: &str,
    id: Option<u64>,
    data: &str,
    bin: &[impl AsRef<[u8]>],
) -> Vec<u8> {
    let data: Option<serde_json::Value> = if data.is_empty() {
        None
    } else {
        serde_json::from_str(data).ok()
    };
    let fields = 2 + u32::from(data.is_some()) + u32::from(id.is_some());
    let mut out = Vec::with_capacity(32 + bin.iter().map(|b| b.as_ref().len()).sum::<usize>());
    drop(rmp::encode::write_map_len(&mut out, fields));
    drop(rmp::encode::write_str(&mut out, "type"));
    drop(rmp::encode::write_uint(&mut out, number(kind)));
    drop(rmp::encode::write_str(&mut out, "nsp"));
    drop(rmp::encode::write_str(&mut out, nsp));
    if let Some(data) = &data {
        drop(rmp::encode::write_str(&mut out, "data"));
        write_json(&mut out, data, bin);
    }
    if let Some(id) = id {
        drop(rmp::encode::write_str(&mut out, "id"));
        drop(rmp::encode::write_uint(&mut out, id));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const NONE: [&[u8]; 0] = [];

    #[test]
    fn an_event_with_binary_round_trips_through_placeholders() {
        let bytes = encode(
            PacketKind::Event,
            "/chat",
            Some(7),
            r#"["file",{"_placeholder":true,"num":0},1.5,-3,null]"#,
            &[b"\x00\x01".as_slice()],
        );
        let packet = decode(&bytes, 10).unwrap();
        assert_eq!(packet.kind, PacketKind::Event);
        assert_eq!(packet.nsp, "/chat");
        assert_eq!(packet.id, Some(7));
        assert_eq!(
            packet.data,
            r#"["file",{"_placeholder":true,"num":0},1.5,-3,null]"#
        );
        assert_eq!(packet.bin, vec![vec![0u8, 1]]);
    }

    /// A client's packet `{"type": 2, "nsp": "/", "data": ["up", {<pairs>}]}`.
    fn event_with_object(pairs: &[(&str, &[u8])]) -> Vec<u8> {
        let mut out = Vec::new();
        rmp::encode::write_map_len(&mut out, 3).unwrap();
        rmp::encode::write_str(&mut out, "type").unwrap();
        rmp::encode::write_uint(&mut out, 2).unwrap();
        rmp::encode::write_str(&mut out, "nsp").unwrap();
        rmp::encode::write_str(&mut out, "/").unwrap();
        rmp::encode::write_str(&mut out, "data").unwrap();
        rmp::encode::write_array_len(&mut out, 2).unwrap();
        rmp::encode::write_str(&mut out, "up").unwrap();
        rmp::encode::write_map_len(&mut out, pairs.len() as u32).unwrap();
        for (key, bytes) in pairs {
            rmp::encode::write_str(&mut out, key).unwrap();
            rmp::encode::write_bin(&mut out, bytes).unwrap();
        }
        out
    }

    #[test]
    fn an_object_keeps_its_key_order_and_its_attachments_their_numbers() {
        // Keys out of alphabetical order: the JSON and the attachments
        // follow the client's order, and writing the packet back gives
        // the client's bytes (found by the msgpack fuzz target: sorted keys
        // renumbered the attachments on the way back).
        let bytes = event_with_object(&[("zeta", b"\x01"), ("alpha", b"\x02")]);
        let packet = decode(&bytes, 10).unwrap();
        assert_eq!(
            packet.data,
            r#"["up",{"zeta":{"_placeholder":true,"num":0},"alpha":{"_placeholder":true,"num":1}}]"#
        );
        assert_eq!(packet.bin, vec![vec![1u8], vec![2u8]]);
        let again = encode(
            packet.kind,
            &packet.nsp,
            packet.id,
            &packet.data,
            &packet.bin,
        );
        assert_eq!(again, bytes);
        assert_eq!(decode(&again, 10).unwrap(), packet);
    }

    #[test]
    fn an_object_with_a_key_given_twice_is_refused() {
        let bytes = event_with_object(&[("a", b"\x01"), ("a", b"\x02")]);
        assert!(matches!(
            decode(&bytes, 10),
            Err(DecodeError::InvalidPayload("a map key given twice"))
        ));
    }

    #[test]
    fn connect_and_disconnect_need_no_data() {
        let packet = decode(&encode(PacketKind::Connect, "/", None, "", &NONE), 10).unwrap();
        assert_eq!(
            (packet.kind, packet.data.as_str()),
            (PacketKind::Connect, "")
        );
        let packet = decode(
            &encode(PacketKind::Connect, "/", None, r#"{"token":"t"}"#, &NONE),
            10,
        )
        .unwrap();
        assert_eq!(packet.data, r#"{"token":"t"}"#);
        let packet = decode(&encode(PacketKind::Disconnect, "/", None, "", &NONE), 10).unwrap();
        assert_eq!(packet.kind, PacketKind::Disconnect);
    }

    #[test]
    fn what_the_default_parser_refuses_is_refused() {
        // An event needs a non-empty array whose first item is its name.
        assert!(decode(&encode(PacketKind::Event, "/", None, "[]", &NONE), 10).is_err());
        assert!(decode(&encode(PacketKind::Event, "/", None, "[1]", &NONE), 10).is_err());
        assert!(decode(&encode(PacketKind::Event, "/", None, "", &NONE), 10).is_err());
        // Too many binary values.
        let many = r#"["x",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]"#;
        let two = [b"a".as_slice(), b"b".as_slice()];
        assert!(matches!(
            decode(&encode(PacketKind::Event, "/", None, many, &two), 1),
            Err(DecodeError::TooManyAttachments(2))
        ));
        // Not a map, unknown type, no namespace, trailing bytes, garbage.
        assert!(decode(&[0x90], 10).is_err());
        assert!(decode(&[0x81, 0xa4, b't', b'y', b'p', b'e', 0x09], 10).is_err());
        assert!(decode(&[0x81, 0xa4, b't', b'y', b'p', b'e', 0x00], 10).is_err());
        let mut trailing = encode(PacketKind::Connect, "/", None, "", &NONE);
        trailing.push(0xc0);
        assert!(decode(&trailing, 10).is_err());
        assert!(decode(&[0xc1], 10).is_err());
        assert!(decode(&[], 10).is_err());
    }

    #[test]
    fn undefined_as_the_npm_client_writes_it_is_absent() {
        // {type: 0, data: undefined, nsp: "/"} from socket.io-msgpack-parser.
        let bytes = [
            0x83, 0xa4, b't', b'y', b'p', b'e', 0x00, 0xa4, b'd', b'a', b't', b'a', 0xd4, 0x00,
            0x00, 0xa3, b'n', b's', b'p', 0xa1, b'/',
        ];
        let packet = decode(&bytes, 10).unwrap();
        assert_eq!(
            (packet.kind, packet.data.as_str()),
            (PacketKind::Connect, "")
        );
        // The npm parser's own bytes for an event with a binary argument.
        let event = [
            0x84, 0xa4, 0x74, 0x79, 0x70, 0x65, 0x02, 0xa3, 0x6e, 0x73, 0x70, 0xa1, 0x2f, 0xa4,
            0x64, 0x61, 0x74, 0x61, 0x92, 0xa4, 0x65, 0x63, 0x68, 0x6f, 0xc4, 0x02, 0x01, 0x02,
            0xa2, 0x69, 0x64, 0x03,
        ];
        let packet = decode(&event, 10).unwrap();
        assert_eq!(packet.data, r#"["echo",{"_placeholder":true,"num":0}]"#);
        assert_eq!(
            (packet.id, packet.bin.clone()),
            (Some(3), vec![vec![1u8, 2]])
        );
    }

    /// Found by the fuzz target: a float32 argument must come back the same
    /// after JSON text and back (serde_json's `float_roundtrip`).
    #[test]
    fn floats_survive_the_json_text() {
        let bytes = [
            0x84, 0xa4, 0x74, 0x79, 0x70, 0x65, 0x02, 0xa3, 0x6e, 0x73, 0x70, 0xa1, 0x2f, 0xa4,
            0x64, 0x61, 0x74, 0x61, 0x92, 0xa4, 0x65, 0x63, 0x68, 0x70, 0xca, 0x21, 0x00, 0x57,
            0x02, 0xa2, 0x69, 0x64, 0x03,
        ];
        let packet = decode(&bytes, 10).unwrap();
        let again = encode(
            packet.kind,
            &packet.nsp,
            packet.id,
            &packet.data,
            &packet.bin,
        );
        assert_eq!(decode(&again, 10).unwrap(), packet);
    }

    #[test]
    fn deep_nesting_is_refused_not_a_stack_overflow() {
        let mut bytes = vec![0x83, 0xa4];
        bytes.extend_from_slice(b"type");
        bytes.push(0x02);
        bytes.push(0xa3);
        bytes.extend_from_slice(b"nsp");
        bytes.extend_from_slice(&[0xa1, b'/']);
        bytes.push(0xa4);
        bytes.extend_from_slice(b"data");
        bytes.extend(std::iter::repeat_n(0x91, 100_000));
        bytes.push(0xc0);
        assert!(decode(&bytes, 10).is_err());
    }

    #[test]
    fn what_the_server_sends_decodes_to_what_it_meant() {
        let bytes = encode(
            PacketKind::Connect,
            "/",
            None,
            r#"{"sid":"io1.x","pid":"p"}"#,
            &NONE,
        );
        let value = rmpv::decode::read_value(&mut &bytes[..]).unwrap();
        let map = value.as_map().unwrap();
        assert_eq!(map.len(), 3);
        assert_eq!(map[0].1.as_u64(), Some(0));
        assert_eq!(map[1].1.as_str(), Some("/"));
        let ack = encode(PacketKind::Ack, "/", Some(3), "[1]", &NONE);
        let value = rmpv::decode::read_value(&mut &ack[..]).unwrap();
        assert_eq!(value.as_map().unwrap()[3].1.as_u64(), Some(3));
    }
}
