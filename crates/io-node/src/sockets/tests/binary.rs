//! Binary attachments: reassembled from the client, sent with the text
//! packet to it.

use super::*;

#[test]
fn binary_attachments_are_reassembled_into_one_event() {
    let fixture = Fixture::new();
    let session = fixture.session();
    fixture.admitted(&session, "/");
    fixture
        .send(
            &session,
            r#"52-["up",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]"#,
        )
        .unwrap();
    fixture.send_binary(&session, &[1, 2]).unwrap();
    assert!(fixture.events().is_empty(), "waits for every attachment");
    fixture.send_binary(&session, &[3]).unwrap();
    let items = fixture.events();
    let event = &items[0][0];
    let bin: Vec<&[u8]> = event.bin.iter().map(|b| b.as_ref()).collect();
    assert_eq!(bin, [&[1u8, 2][..], &[3][..]]);
}

#[test]
fn a_packet_before_the_attachments_of_the_last_one_is_a_parse_error() {
    let fixture = Fixture::new();
    let session = fixture.session();
    fixture.admitted(&session, "/");
    fixture
        .send(&session, r#"51-["up",{"_placeholder":true,"num":0}]"#)
        .unwrap();
    assert_eq!(
        fixture.send(&session, "2[\"e\",1]"),
        Err(CloseReason::ParseError)
    );
    // An attachment nobody announced is one too.
    let other = fixture.session();
    assert_eq!(
        fixture.send_binary(&other, &[1]),
        Err(CloseReason::ParseError)
    );
    // As are packets a client may not send, and garbage.
    assert_eq!(fixture.send(&other, "4{}"), Err(CloseReason::ParseError));
    assert_eq!(fixture.send(&other, "9"), Err(CloseReason::ParseError));
}

#[test]
fn more_attachments_than_allowed_is_a_parse_error() {
    let fixture = Fixture::with(Settings {
        max_attachments: 1,
        ..settings()
    });
    let session = fixture.session();
    fixture.admitted(&session, "/");
    assert_eq!(
        fixture.send(&session, r#"52-["up",{"_placeholder":true,"num":0}]"#),
        Err(CloseReason::ParseError)
    );
}

#[test]
fn an_emit_with_attachments_is_a_binary_event() {
    let fixture = Fixture::new();
    let session = fixture.session();
    fixture.admitted(&session, "/");
    fixture.apply(Command::Emit(envelope::Emit {
        bin: vec![serde_bytes::ByteBuf::from(vec![9u8])],
        ..emit("/", r#"["f",{"_placeholder":true,"num":0}]"#)
    }));
    let frame = session.outbox.try_pop().unwrap();
    assert_eq!(
        frame.as_text(),
        r#"451-["f",{"_placeholder":true,"num":0}]"#
    );
    assert!(
        matches!(frame, Frame::WithBinary(_, ref bin) if bin[..] == [Bytes::from_static(&[9])])
    );
}
