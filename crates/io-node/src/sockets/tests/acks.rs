//! Acks both ways: the client's ack ids reach the app-node and its answer
//! comes back; the app-node's requests are numbered per socket and the
//! client's answer is routed to the app-node that asked.

use super::*;

#[test]
fn acks_go_both_ways() {
    let fixture = Fixture::new();
    let session = fixture.session();
    let sid = fixture.admitted(&session, "/");
    // Client to app-node.
    fixture.send(&session, "27[\"echo\",1]").unwrap();
    assert_eq!(fixture.events()[0][0].ack, Some(7));
    fixture.apply(Command::Ack(envelope::Ack {
        nsp: "/".into(),
        sid: sid.clone(),
        id: 7,
        data: "[1]".into(),
        bin: Vec::new(),
    }));
    assert_eq!(frames(&session), ["437[1]"]);
    // App-node to client.
    fixture.apply(Command::Emit(envelope::Emit {
        sids: vec![sid.clone()],
        ack: Some(ReplyTo {
            app: "app1".into(),
            id: 42,
        }),
        ..emit("/", "[\"ask\"]")
    }));
    assert_eq!(frames(&session), ["420[\"ask\"]"]);
    fixture.send(&session, "30[\"yes\"]").unwrap();
    let effects = fixture.effects();
    let [Effect::Publish(channel, payload)] = &effects[..] else {
        panic!("{effects:?}");
    };
    assert_eq!(channel, "p:a:app1");
    let Reply::Ack(reply) = Reply::decode(payload).unwrap() else {
        panic!("an ack reply");
    };
    assert_eq!(
        (reply.id, reply.sid, reply.data),
        (42, sid, "[\"yes\"]".to_owned())
    );
    // An ack for an id never asked (or already answered) goes nowhere.
    fixture.send(&session, "30[\"again\"]").unwrap();
    assert!(fixture.effects().is_empty());
}

#[test]
fn each_recipient_of_an_emit_with_ack_gets_its_own_ack_id() {
    let fixture = Fixture::new();
    let (one, two) = (fixture.session(), fixture.session());
    let a = fixture.admitted(&one, "/");
    fixture.admitted(&two, "/");
    let ask = |id| {
        Command::Emit(envelope::Emit {
            ack: Some(ReplyTo {
                app: "app1".into(),
                id,
            }),
            ..emit("/", "[\"q\"]")
        })
    };
    fixture.apply(ask(1));
    fixture.apply(Command::Emit(envelope::Emit {
        sids: vec![a],
        ..match ask(2) {
            Command::Emit(emit) => emit,
            _ => unreachable!(),
        }
    }));
    assert_eq!(frames(&one), ["420[\"q\"]", "421[\"q\"]"]);
    assert_eq!(frames(&two), ["420[\"q\"]"]);
}

#[test]
fn an_ack_that_cannot_be_published_closes_the_client() {
    let fixture = Fixture::new();
    let session = fixture.session();
    let sid = fixture.admitted(&session, "/");
    fixture.apply(Command::Emit(envelope::Emit {
        sids: vec![sid],
        ack: Some(ReplyTo {
            app: "app1".into(),
            id: 1,
        }),
        ..emit("/", "[\"q\"]")
    }));
    fixture.cluster.full.store(true, Ordering::Relaxed);
    assert_eq!(fixture.send(&session, "30[]"), Err(CloseReason::Overloaded));
}
