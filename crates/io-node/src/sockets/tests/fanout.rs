//! Rooms and fan-out: subscriptions follow local membership, an emit
//! reaches each local recipient once, except-lists, namespaces, frames
//! held for a socket being admitted, and the outbox limit.

use super::*;

fn subscription_changes(effects: Vec<Effect>) -> Vec<String> {
    effects
        .into_iter()
        .filter_map(|effect| match effect {
            Effect::Subscribe(channel) => Some(format!("+{channel}")),
            Effect::Unsubscribe(channel) => Some(format!("-{channel}")),
            _ => None,
        })
        .collect()
}

#[test]
fn joins_and_leaves_subscribe_to_a_room_while_it_has_a_local_member() {
    let fixture = Fixture::new();
    let (one, two) = (fixture.session(), fixture.session());
    let a = fixture.admitted(&one, "/");
    let b = fixture.admitted(&two, "/");
    fixture.apply(join(&a, &["r"]));
    fixture.apply(join(&b, &["r", "s"]));
    assert_eq!(
        subscription_changes(fixture.effects()),
        ["+p:r:/,r", "+p:r:/,s"]
    );
    fixture.apply(leave(&a, &["r"]));
    assert!(
        subscription_changes(fixture.effects()).is_empty(),
        "b is still in r"
    );
    fixture.apply(leave(&b, &["r", "s"]));
    assert_eq!(
        subscription_changes(fixture.effects()),
        ["-p:r:/,r", "-p:r:/,s"]
    );
    // The next event's snapshot shows the rooms.
    fixture.apply(join(&a, &["t"]));
    fixture.send(&one, "2[\"e\",1]").unwrap();
    assert_eq!(fixture.events()[0][0].rooms, ["t"]);
}

#[test]
fn a_join_with_a_reply_is_answered_once_its_subscription_is_active() {
    let fixture = Fixture::new();
    let session = fixture.session();
    let sid = fixture.admitted(&session, "/");
    fixture.apply(Command::Join(envelope::Join {
        nsp: "/".into(),
        sid,
        rooms: vec!["r".into()],
        reply: Some(ReplyTo {
            app: "app1".into(),
            id: 5,
        }),
    }));
    let effects = fixture.effects();
    let order: Vec<&str> = effects
        .iter()
        .map(|effect| match effect {
            Effect::Subscribe(_) => "subscribe",
            Effect::Stale(_) => "stale",
            Effect::Reply(channel, payload) => {
                assert_eq!(channel, "p:a:app1");
                assert_eq!(
                    Reply::decode(payload).unwrap(),
                    Reply::Joined(envelope::Joined { id: 5 })
                );
                "reply"
            }
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(order, ["subscribe", "stale", "reply"]);
}

#[test]
fn an_emit_to_several_rooms_reaches_each_client_once() {
    let fixture = Fixture::new();
    let (one, two, three) = (fixture.session(), fixture.session(), fixture.session());
    let a = fixture.admitted(&one, "/");
    let b = fixture.admitted(&two, "/");
    fixture.admitted(&three, "/");
    fixture.apply(join(&a, &["r", "s"]));
    fixture.apply(join(&b, &["s"]));
    fixture.apply(Command::Emit(envelope::Emit {
        rooms: vec!["r".into(), "s".into()],
        sids: vec![a.clone()],
        ..emit("/", "[1]")
    }));
    assert_eq!(frames(&one), ["42[1]"]);
    assert_eq!(frames(&two), ["42[1]"]);
    assert!(frames(&three).is_empty());
    // The same emit on another channel (same id) is delivered once.
    let tagged = envelope::Emit {
        id: Some(99),
        ..emit("/", "[2]")
    };
    fixture.apply(Command::Emit(tagged.clone()));
    fixture.apply(Command::Emit(tagged));
    for session in [&one, &two, &three] {
        assert_eq!(frames(session), ["42[2]"]);
    }
}

#[test]
fn except_lists_take_rooms_and_sockets_out() {
    let fixture = Fixture::new();
    let (one, two, three) = (fixture.session(), fixture.session(), fixture.session());
    let a = fixture.admitted(&one, "/");
    let b = fixture.admitted(&two, "/");
    let c = fixture.admitted(&three, "/");
    fixture.apply(join(&a, &["r", "quiet"]));
    fixture.apply(join(&b, &["r"]));
    fixture.apply(join(&c, &["r"]));
    fixture.apply(Command::Emit(envelope::Emit {
        rooms: vec!["r".into()],
        except_rooms: vec!["quiet".into()],
        except_sids: vec![b],
        ..emit("/", "[1]")
    }));
    assert!(frames(&one).is_empty());
    assert!(frames(&two).is_empty());
    assert_eq!(frames(&three), ["42[1]"]);
    // A socket's own id is a room it alone is in.
    fixture.apply(Command::Emit(envelope::Emit {
        except_rooms: vec![c],
        ..emit("/", "[2]")
    }));
    assert_eq!(frames(&one), ["42[2]"]);
    assert_eq!(frames(&two), ["42[2]"]);
    assert!(frames(&three).is_empty());
}

#[test]
fn emits_stay_in_their_namespace() {
    let fixture = Fixture::new();
    let session = fixture.session();
    let root = fixture.admitted(&session, "/");
    fixture.admitted(&session, "/chat");
    fixture.apply(Command::Emit(emit("/chat", "[1]")));
    fixture.apply(Command::Emit(envelope::Emit {
        sids: vec![root],
        ..emit("/chat", "[2]")
    }));
    assert_eq!(frames(&session), ["42/chat,[1]"]);
}

#[test]
fn frames_for_a_socket_being_admitted_wait_for_its_connect() {
    let fixture = Fixture::new();
    let session = fixture.session();
    let sid = fixture.connect(&session, "/", Admission::ByApp).unwrap();
    fixture.apply(Command::Emit(envelope::Emit {
        sids: vec![sid.clone()],
        ..emit("/", "[\"welcome\"]")
    }));
    assert!(frames(&session).is_empty());
    fixture.done(&sid, "/", 0);
    assert_eq!(
        frames(&session),
        [
            format!("40{{\"sid\":\"{sid}\"}}"),
            "42[\"welcome\"]".to_owned()
        ]
    );
}

#[test]
fn a_client_that_cannot_keep_up_with_its_outbox_is_closed_as_slow() {
    let fixture = Fixture::with(Settings {
        outbox_capacity: 4,
        ..settings()
    });
    let session = fixture.session();
    fixture.admitted(&session, "/");
    for n in 0..4 {
        fixture.apply(Command::Emit(emit("/", &format!("[{n}]"))));
    }
    assert!(!session.is_closed());
    fixture.apply(Command::Emit(emit("/", "[4]")));
    assert_eq!(session.close_reason(), CloseReason::SlowClient);
}
