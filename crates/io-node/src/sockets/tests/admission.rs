//! Admission: accepted, refused, timed out, refused without an app-node,
//! admitted by credentials.

use super::*;

#[test]
fn a_connection_waits_for_an_app_node_and_is_admitted_by_its_done() {
    let fixture = Fixture::new();
    let session = fixture.session();
    let request = fixture
        .sockets
        .on_message(&session, Message::Text("0/chat,{\"token\":1}"))
        .unwrap()
        .unwrap();
    assert_eq!(request.auth, "{\"token\":1}");
    fixture
        .sockets
        .connect(&session, request, Admission::ByApp, None);
    let effects = fixture.effects();
    let Some(Effect::Ledger(LedgerOp::Create(ledger_sid, entry))) = effects.first() else {
        panic!("the ledger entry first: {effects:?}");
    };
    let entry = Event::decode(entry).unwrap();
    assert_eq!(
        (entry.kind, entry.reason.as_deref()),
        (EventKind::Disconnect, Some("io-node lost"))
    );
    let Some(Effect::Event(events)) = effects.get(1) else {
        panic!("then the connect event: {effects:?}");
    };
    let connect = &events[0];
    assert_eq!(
        (connect.kind, connect.seq, connect.nsp.as_str()),
        (EventKind::Connect, 0, "/chat")
    );
    assert_eq!(connect.data.as_deref(), Some("{\"token\":1}"));
    assert_eq!(**ledger_sid, *connect.sid);
    assert!(
        frames(&session).is_empty(),
        "no CONNECT before the decision"
    );

    fixture.done(&connect.sid, "/chat", 0);
    let connected = session.outbox.try_pop().unwrap();
    assert_eq!(
        connected.as_text(),
        format!("40/chat,{{\"sid\":\"{}\"}}", connect.sid)
    );
    assert!(
        matches!(connected, Frame::Alone(_)),
        "CONNECT goes in a write of its own"
    );
    // Admitted: a namespace-wide emit reaches it.
    fixture.apply(Command::Emit(emit("/chat", "[\"hi\"]")));
    assert_eq!(frames(&session), ["42/chat,[\"hi\"]"]);
}

#[test]
fn a_refused_connection_gets_connect_error_and_needs_no_announcement() {
    let fixture = Fixture::new();
    let session = fixture.session();
    let sid = fixture.connect(&session, "/", Admission::ByApp).unwrap();
    fixture.apply(Command::Done(envelope::Done {
        nsp: "/".into(),
        sid: sid.clone(),
        seq: 0,
        reject: Some(envelope::Reject {
            message: "who are you?".into(),
            data: Some("{\"code\":7}".into()),
        }),
        app: None,
    }));
    assert_eq!(
        frames(&session),
        [r#"44{"message":"who are you?","data":{"code":7}}"#]
    );
    let effects = fixture.effects();
    assert!(
        matches!(&effects[..], [Effect::Ledger(LedgerOp::Forget(forgotten))] if **forgotten == *sid),
        "{effects:?}"
    );
    // Events for the refused socket go nowhere; the client may try again.
    fixture.send(&session, "2[\"x\"]").unwrap();
    assert!(fixture.effects().is_empty());
    assert!(fixture.connect(&session, "/", Admission::ByApp).is_some());
}

#[test]
fn unknown_namespaces_and_bad_credentials_are_refused_without_an_app_node() {
    let fixture = Fixture::new();
    let session = fixture.session();
    assert_eq!(
        fixture.connect(&session, "/nope", Admission::UnknownNamespace),
        None
    );
    assert_eq!(
        fixture.connect(&session, "/", Admission::Unauthorized),
        None
    );
    assert_eq!(
        frames(&session),
        [
            r#"44/nope,{"message":"Invalid namespace"}"#,
            r#"44{"message":"Unauthorized"}"#
        ]
    );
    assert!(fixture.effects().is_empty());
}

#[test]
fn an_admission_that_times_out_closes_the_connection_and_its_late_admission_disconnects_it() {
    let fixture = Fixture::new();
    let session = fixture.session();
    let request = fixture
        .sockets
        .on_message(&session, Message::Text("0"))
        .unwrap()
        .unwrap();
    let pending = fixture
        .sockets
        .connect(&session, request, Admission::ByApp, None)
        .expect("waits for an app-node");
    let sid = pending.id.to_string();
    fixture.effects();
    fixture.sockets.admission_timed_out(&pending);
    // No refusal the client would take as final: its connection closes,
    // and it reconnects to ask again.
    assert!(frames(&session).is_empty());
    assert_eq!(session.close_reason(), CloseReason::AdmissionTimeout);
    fixture.sockets.on_session_closed(&session); // the engine's cleanup
    // The app-node's late yes: no CONNECT, and its disconnect event follows.
    fixture.done(&sid, "/", 0);
    assert!(frames(&session).is_empty());
    let effects = fixture.effects();
    let Some(Effect::Ledger(LedgerOp::Announce(_, envelope))) = effects.last() else {
        panic!("{effects:?}");
    };
    let disconnect = Event::decode(envelope).unwrap();
    assert_eq!(
        (disconnect.seq, disconnect.reason.as_deref()),
        (1, Some("admission timeout"))
    );
}

#[test]
fn an_admission_decided_in_time_is_not_timed_out() {
    let fixture = Fixture::new();
    let session = fixture.session();
    let request = fixture
        .sockets
        .on_message(&session, Message::Text("0"))
        .unwrap()
        .unwrap();
    let pending = fixture
        .sockets
        .connect(&session, request, Admission::ByApp, None)
        .unwrap();
    fixture.done(&pending.id, "/", 0);
    fixture.sockets.admission_timed_out(&pending);
    assert!(!session.is_closed());
}

#[test]
fn a_user_admitted_by_credentials_gets_connect_once_its_room_is_subscribed() {
    let fixture = Fixture::new();
    let session = fixture.session();
    let sid = fixture
        .connect(&session, "/", Admission::User("ann".into()))
        .unwrap();
    assert!(
        frames(&session).is_empty(),
        "CONNECT waits for the subscription"
    );
    fixture.subscriptions_active();
    assert_eq!(frames(&session), [format!("40{{\"sid\":\"{sid}\"}}")]);
    // Reachable as the user, in its room, before any app-node answered.
    fixture.apply(Command::Emit(envelope::Emit {
        rooms: vec!["$user:ann".into()],
        ..emit("/", "[\"dm\"]")
    }));
    assert_eq!(frames(&session), ["42[\"dm\"]"]);
}

#[test]
fn an_app_node_refusing_a_user_admitted_by_credentials_disconnects_it() {
    let fixture = Fixture::new();
    let session = fixture.session();
    let sid = fixture
        .connect(&session, "/", Admission::User("ann".into()))
        .unwrap();
    fixture.subscriptions_active();
    frames(&session);
    fixture.apply(Command::Done(envelope::Done {
        nsp: "/".into(),
        sid,
        seq: 0,
        reject: Some(envelope::Reject {
            message: "banned".into(),
            data: None,
        }),
        app: None,
    }));
    assert_eq!(frames(&session), ["41"]);
}

#[test]
fn a_verified_credential_reaches_no_app_node_and_no_redis_key() {
    let fixture = Fixture::new();
    let session = fixture.session();
    let request = fixture
        .sockets
        .on_message(
            &session,
            Message::Text(r#"0{"userId":"ann","hash":"s3cret","lang":"fr"}"#),
        )
        .unwrap()
        .unwrap();
    fixture
        .sockets
        .connect(&session, request, Admission::User("ann".into()), None);
    let effects = fixture.effects();
    let mut seen = 0;
    for effect in &effects {
        let events = match effect {
            Effect::Event(events) => events.clone(),
            Effect::Ledger(LedgerOp::Create(_, entry)) => vec![Event::decode(entry).unwrap()],
            _ => continue,
        };
        for event in events {
            let auth: serde_json::Value =
                serde_json::from_str(event.handshake.auth.as_deref().unwrap()).unwrap();
            assert_eq!(auth, serde_json::json!({ "userId": "ann", "lang": "fr" }));
            if let Some(data) = &event.data {
                assert!(!data.contains("s3cret"), "{data}");
            }
            seen += 1;
        }
    }
    assert_eq!(
        seen, 2,
        "the connect event and the ledger entry: {effects:?}"
    );
    // A JWT's subject becomes the user; the token goes.
    let session = fixture.session();
    let request = fixture
        .sockets
        .on_message(&session, Message::Text(r#"0{"token":"e.y.J"}"#))
        .unwrap()
        .unwrap();
    fixture
        .sockets
        .connect(&session, request, Admission::User("bob".into()), None);
    let connect = fixture.events().remove(0).remove(0);
    assert_eq!(connect.data.as_deref(), Some(r#"{"userId":"bob"}"#));
}

#[test]
fn a_v2_client_names_a_namespace_with_its_query_and_gets_a_connect_without_payload() {
    let fixture = Fixture::new();
    let session = fixture.eio3_session();
    let request = fixture
        .sockets
        .on_message(&session, Message::Text("0/chat?token=abc,"))
        .unwrap()
        .unwrap();
    assert_eq!((request.nsp.as_str(), request.auth.as_str()), ("/chat", ""));
    fixture
        .sockets
        .connect(&session, request, Admission::ByApp, None);
    let effects = fixture.effects();
    let Some(Effect::Event(events)) = effects.get(1) else {
        panic!("the connect event: {effects:?}");
    };
    fixture.done(&events[0].sid, "/chat", 0);
    // socket.io-client 2.x takes only an array as a packet's payload.
    assert_eq!(frames(&session), ["40/chat,"]);
    fixture.apply(Command::Emit(emit("/chat", "[\"hi\"]")));
    assert_eq!(frames(&session), ["42/chat,[\"hi\"]"]);
}
