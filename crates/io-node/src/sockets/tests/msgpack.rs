//! socket.io-msgpack-parser clients: binary packets in, binary frames out,
//! the same events and envelopes inside; a client of the other parser gets
//! a connect error it can read.

use iocluster_protocol::msgpack_parser;
use iocluster_protocol::socketio::PacketKind;

use super::*;
use crate::sockets::Parser;

const NONE: [&[u8]; 0] = [];

fn msgpack_fixture() -> Fixture {
    Fixture::with(Settings {
        parser: Parser::Msgpack,
        ..settings()
    })
}

fn binary_frames(session: &Session) -> Vec<msgpack_parser::Packet> {
    std::iter::from_fn(|| session.outbox.try_pop())
        .map(|frame| {
            let bytes = frame.as_binary().expect("a binary frame");
            msgpack_parser::read(bytes, 10).expect("what a client reads")
        })
        .collect()
}

#[test]
fn a_msgpack_client_connects_emits_binary_and_gets_binary_frames() {
    let fixture = msgpack_fixture();
    let session = fixture.session();
    let connect = msgpack_parser::encode(PacketKind::Connect, "/", None, r#"{"a":1}"#, &NONE);
    let request = fixture
        .sockets
        .on_message(&session, Message::Binary(connect))
        .unwrap()
        .expect("a CONNECT asks for admission");
    assert_eq!(request.auth, r#"{"a":1}"#);
    fixture
        .sockets
        .connect(&session, request, Admission::ByApp, None);
    let sid = fixture.events()[0][0].sid.clone();
    fixture.done(&sid, "/", 0);
    let frames = binary_frames(&session);
    assert_eq!(frames[0].kind, PacketKind::Connect);
    assert_eq!(frames[0].data, format!(r#"{{"sid":"{sid}"}}"#));
    // An event with a binary argument and an ack id: the app-nodes get the
    // usual envelope, binary as an attachment.
    let event = msgpack_parser::encode(
        PacketKind::Event,
        "/",
        Some(4),
        r#"["up",{"_placeholder":true,"num":0}]"#,
        &[b"\x01\x02".as_slice()],
    );
    let request = fixture
        .sockets
        .on_message(&session, Message::Binary(event))
        .unwrap();
    assert!(request.is_none());
    let events = fixture.events();
    let event = &events[0][0];
    assert_eq!(
        event.data.as_deref(),
        Some(r#"["up",{"_placeholder":true,"num":0}]"#)
    );
    assert_eq!(event.bin[0].as_ref(), b"\x01\x02");
    assert_eq!(event.ack, Some(4));
    // An emit with an attachment and an ack reply go out as binary packets.
    fixture.apply(Command::Emit(envelope::Emit {
        bin: vec![serde_bytes::ByteBuf::from(vec![9u8])],
        ..emit("/", r#"["file",{"_placeholder":true,"num":0}]"#)
    }));
    fixture.apply(Command::Ack(envelope::Ack {
        nsp: "/".into(),
        sid: sid.clone(),
        id: 4,
        data: "[true]".into(),
        bin: vec![],
    }));
    let frames = binary_frames(&session);
    assert_eq!(frames.len(), 2);
    assert_eq!(frames[0].kind, PacketKind::Event);
    assert_eq!(frames[0].data, r#"["file",{"_placeholder":true,"num":0}]"#);
    assert_eq!(frames[0].bin, vec![vec![9u8]]);
    assert_eq!((frames[1].kind, frames[1].id), (PacketKind::Ack, Some(4)));
    // Garbage closes the session, as a bad text packet does.
    assert_eq!(
        fixture
            .sockets
            .on_message(&session, Message::Binary(vec![0xc1])),
        Err(CloseReason::ParseError)
    );
}

#[test]
fn a_client_of_the_other_parser_gets_an_error_it_can_read() {
    // Default node, msgpack client: a msgpack CONNECT_ERROR.
    let fixture = Fixture::new();
    let session = fixture.session();
    let connect = msgpack_parser::encode(PacketKind::Connect, "/", None, "", &NONE);
    assert_eq!(
        fixture
            .sockets
            .on_message(&session, Message::Binary(connect)),
        Ok(None)
    );
    let frames = binary_frames(&session);
    assert_eq!(frames[0].kind, PacketKind::ConnectError);
    assert!(
        frames[0].data.contains("default Socket.IO parser"),
        "{:?}",
        frames[0]
    );
    // Msgpack node, default client: a text CONNECT_ERROR.
    let fixture = msgpack_fixture();
    let session = fixture.session();
    assert_eq!(
        fixture.sockets.on_message(&session, Message::Text("0")),
        Ok(None)
    );
    let text = frames_text(&session);
    assert!(
        text[0].starts_with("44{\"message\":\"this server uses socket.io-msgpack-parser"),
        "{text:?}"
    );
    // Other text packets on a msgpack node close the session.
    assert_eq!(
        fixture
            .sockets
            .on_message(&session, Message::Text("2[\"x\"]")),
        Err(CloseReason::ParseError)
    );
}

fn frames_text(session: &Session) -> Vec<String> {
    frames(session)
}
