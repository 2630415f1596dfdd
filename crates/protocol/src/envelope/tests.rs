//! Both ways of writing and of reading an envelope agree, byte for byte
//! and value for value.

use super::decode::value_len;
use super::encode::encode_tagged;
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
    for (((kind, data, bin, ack, reason, rooms, sdata, seq), recovered), app) in cases
        .into_iter()
        .flat_map(|case| [(case.clone(), false), (case, true)])
        .flat_map(|case| [(case.clone(), vec![]), (case, vec!["app-1.Zq9", "app-2.x"])])
    {
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
            recovered,
            seen: app.iter().map(|app| app.to_string()).collect(),
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
            recovered,
            seen: &app.iter().map(|app| Arc::from(*app)).collect::<Vec<_>>(),
        };
        let bytes = parts.encode();
        assert_eq!(bytes, event.encode(), "{kind:?} seq {seq}");
        assert_eq!(Event::decode(&bytes).unwrap(), event, "{kind:?} seq {seq}");
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
            app: None,
        },
        Done {
            nsp: long.clone(),
            sid: "n.s".into(),
            seq: 1 << 40,
            reject: None,
            app: None,
        },
        Done {
            nsp: "/".into(),
            sid: "n.s".into(),
            seq: 7,
            reject: None,
            app: Some("app-1.Zq9".into()),
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
        recovered: false,
        seen: Vec::new(),
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
                recovered: false,
                seen: &[],
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
        recovered: false,
        seen: Vec::new(),
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
        recovered: false,
        seen: Vec::new(),
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
            app: None,
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
            app: None,
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
            app: None,
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
        app: None,
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
