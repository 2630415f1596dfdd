//! Disconnects and close reasons: a closed session's sockets, a namespace
//! left by either side, a forced close.

use super::*;

/// The socket and reason of the first disconnect announced.
fn announced(effects: Vec<Effect>) -> Option<(String, String)> {
    effects.into_iter().find_map(|effect| match effect {
        Effect::Ledger(LedgerOp::Announce(sid, envelope)) => Some((
            sid.to_string(),
            Event::decode(&envelope).unwrap().reason.unwrap(),
        )),
        _ => None,
    })
}

#[test]
fn a_closed_session_disconnects_its_sockets_with_its_reason_after_their_item() {
    let fixture = Fixture::new();
    let session = fixture.session();
    let sid = fixture.admitted(&session, "/");
    fixture.apply(join(&sid, &["r"]));
    fixture.send(&session, "2[\"e\",1]").unwrap();
    fixture.effects();
    session.close(CloseReason::PingTimeout);
    fixture.sockets.on_session_closed(&session);
    let effects = fixture.effects();
    assert!(
        matches!(&effects[..], [Effect::Unsubscribe(channel)] if channel == "p:r:/,r"),
        "the disconnect waits for the item in flight: {effects:?}"
    );
    fixture.done(&sid, "/", 1);
    let effects = fixture.effects();
    let [Effect::Ledger(LedgerOp::Announce(announced, envelope))] = &effects[..] else {
        panic!("{effects:?}");
    };
    assert_eq!(**announced, *sid);
    let disconnect = Event::decode(envelope).unwrap();
    assert_eq!(
        (
            disconnect.kind,
            disconnect.seq,
            disconnect.reason.as_deref()
        ),
        (EventKind::Disconnect, 2, Some("ping timeout"))
    );
    assert_eq!(disconnect.rooms, ["r"], "the snapshot keeps its rooms");
    // Gone: commands for it do nothing.
    fixture.apply(Command::Emit(envelope::Emit {
        sids: vec![sid],
        ..emit("/", "[1]")
    }));
    assert!(frames(&session).is_empty());
}

#[test]
fn a_socket_closed_while_being_admitted_is_announced_after_the_decision() {
    let fixture = Fixture::new();
    let session = fixture.session();
    let sid = fixture.connect(&session, "/", Admission::ByApp).unwrap();
    session.close(CloseReason::TransportClose);
    fixture.sockets.on_session_closed(&session);
    assert!(announced(fixture.effects()).is_none());
    fixture.done(&sid, "/", 0);
    assert_eq!(
        announced(fixture.effects()),
        Some((sid, "transport close".to_owned()))
    );
}

#[test]
fn namespace_disconnects_from_either_side() {
    let fixture = Fixture::new();
    let session = fixture.session();
    let root = fixture.admitted(&session, "/");
    let chat = fixture.admitted(&session, "/chat");
    fixture.send(&session, "1/chat,").unwrap();
    assert_eq!(
        announced(fixture.effects()),
        Some((chat, "client namespace disconnect".to_owned()))
    );
    fixture.apply(Command::Disconnect(envelope::Disconnect {
        nsp: "/".into(),
        sid: root.clone(),
        close: false,
    }));
    assert_eq!(frames(&session), ["41"]);
    assert_eq!(
        announced(fixture.effects()),
        Some((root, "server namespace disconnect".to_owned()))
    );
    assert!(!session.is_closed(), "the connection stays");
    // The client may connect to the namespace again.
    assert!(fixture.connect(&session, "/", Admission::ByApp).is_some());
}

#[test]
fn a_forced_close_disconnects_every_namespace_then_closes_the_connection() {
    let fixture = Fixture::new();
    let session = fixture.session();
    let sid = fixture.admitted(&session, "/");
    fixture.admitted(&session, "/chat");
    fixture.apply(Command::Disconnect(envelope::Disconnect {
        nsp: "/".into(),
        sid,
        close: true,
    }));
    // DISCONNECT for each namespace (a stock client then does not
    // reconnect), and the transport closes once they are written.
    let outbox: Vec<Frame> = std::iter::from_fn(|| session.outbox.try_pop()).collect();
    let texts: Vec<&str> = outbox.iter().map(Frame::as_text).collect();
    assert_eq!(texts, ["41", "41/chat,", ""]);
    assert!(matches!(
        outbox.last(),
        Some(Frame::CloseAfter(CloseReason::ForcedClose))
    ));
    assert!(!session.is_closed(), "not before the transport wrote them");
}

#[test]
fn a_second_connect_to_the_same_namespace_is_ignored() {
    let fixture = Fixture::new();
    let session = fixture.session();
    fixture.admitted(&session, "/");
    assert_eq!(
        fixture.sockets.on_message(&session, Message::Text("0")),
        Ok(None)
    );
}
