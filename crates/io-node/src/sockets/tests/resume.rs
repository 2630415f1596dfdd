//! Connection state recovery: pids, parking, the recovered socket and its
//! replay.

use super::*;
use crate::sockets::NamespaceRecovery;
use crate::sockets::packets::ConnectRequest;

fn recovery() -> NamespaceRecovery {
    NamespaceRecovery {
        window_ms: 120_000,
        key: "key".into(),
    }
}

/// A socket admitted in a namespace with recovery; its id.
fn admitted_with_recovery(fixture: &Fixture, session: &Arc<Session>) -> String {
    let request = fixture
        .sockets
        .on_message(session, Message::Text("0"))
        .unwrap()
        .unwrap();
    fixture
        .sockets
        .connect(session, request, Admission::ByApp, Some(&recovery()));
    let sid = fixture.events()[0][0].sid.clone();
    fixture.done(&sid, "/", 0);
    sid
}

fn previous(sid: &str, rooms: &[&str]) -> Event {
    let mut event = Event::decode_with_serde(
        &Event {
            kind: EventKind::Disconnect,
            node: "n1".into(),
            sid: sid.into(),
            nsp: "/".into(),
            seq: 3,
            data: None,
            bin: vec![],
            ack: None,
            reason: Some("transport close".into()),
            rooms: vec![],
            sdata: Some(r#"{"n":1}"#.into()),
            handshake: Arc::new(Handshake::default()),
            recovered: false,
            seen: Vec::new(),
        }
        .encode(),
    )
    .unwrap();
    event.rooms = rooms.iter().map(|room| room.to_string()).collect();
    event
}

fn logged(data: &str, rooms: &[&str], offset: &str) -> envelope::Emit {
    envelope::Emit {
        rooms: rooms.iter().map(|room| room.to_string()).collect(),
        offset: Some(offset.into()),
        ..emit("/", data)
    }
}

fn recover(fixture: &Fixture, session: &Arc<Session>, previous: Event) -> bool {
    let request = ConnectRequest {
        nsp: "/".into(),
        auth: String::new(),
    };
    fixture
        .sockets
        .recover(session, request, previous, &recovery(), Some("2-0".into()))
}

#[test]
fn a_socket_with_recovery_gets_a_pid_and_parks_when_its_transport_closes() {
    let fixture = Fixture::new();
    let session = fixture.session();
    let sid = admitted_with_recovery(&fixture, &session);
    let connect = frames(&session).remove(0);
    let pid = iocluster_protocol::recovery::pid("key", &sid);
    assert_eq!(connect, format!(r#"40{{"sid":"{sid}","pid":"{pid}"}}"#));
    fixture.effects();
    session.close(CloseReason::TransportClose);
    fixture.sockets.on_session_closed(&session);
    let effects = fixture.effects();
    assert!(
        effects.iter().any(|effect| matches!(
            effect,
            Effect::Ledger(LedgerOp::Park(parked, _, 120_000)) if **parked == *sid
        )),
        "{effects:?}"
    );
    assert!(
        !effects
            .iter()
            .any(|effect| matches!(effect, Effect::Ledger(LedgerOp::Announce(..))))
    );
}

#[test]
fn a_socket_the_client_leaves_is_announced_not_parked() {
    let fixture = Fixture::new();
    let session = fixture.session();
    admitted_with_recovery(&fixture, &session);
    fixture.effects();
    fixture.send(&session, "1").unwrap();
    let effects = fixture.effects();
    assert!(
        effects
            .iter()
            .any(|effect| matches!(effect, Effect::Ledger(LedgerOp::Announce(..)))),
        "{effects:?}"
    );
}

#[test]
fn a_recovered_socket_gets_connect_then_what_it_missed_then_live_traffic_once() {
    let fixture = Fixture::new();
    let session = fixture.session();
    assert!(recover(&fixture, &session, previous("n1.old", &["r"])));
    // Rooms and data are back; the app-nodes hear of a recovered connect.
    let events = fixture.events();
    let connect = &events[0][0];
    assert_eq!(connect.kind, EventKind::Connect);
    assert!(connect.recovered);
    assert_eq!(connect.sid, "n1.old");
    assert_eq!(connect.rooms, ["r"]);
    assert_eq!(connect.sdata.as_deref(), Some(r#"{"n":1}"#));
    // Nothing goes out before the replay; live emits wait.
    fixture.apply(Command::Emit(logged(r#"["live"]"#, &["r"], "5-0")));
    fixture.apply(Command::Emit(emit("/", r#"["unlogged"]"#)));
    assert!(frames(&session).is_empty());
    fixture.subscriptions_active();
    let replays = std::mem::take(&mut *fixture.cluster.replays.lock().unwrap());
    assert_eq!(replays.len(), 1);
    assert_eq!(replays[0].2.as_deref(), Some("2-0"));
    fixture.sockets.replayed(
        "n1.old",
        Some(vec![
            logged(r#"["missed",1]"#, &["r"], "3-0"),
            logged(r#"["other"]"#, &["elsewhere"], "4-0"),
            logged(r#"["live"]"#, &["r"], "5-0"),
        ]),
    );
    let pid = iocluster_protocol::recovery::pid("key", "n1.old");
    assert_eq!(
        frames(&session),
        [
            format!(r#"40{{"sid":"n1.old","pid":"{pid}"}}"#),
            r#"42["missed",1,"3-0"]"#.to_owned(),
            r#"42["live","5-0"]"#.to_owned(),
            r#"42["unlogged"]"#.to_owned(),
        ]
    );
    // A copy of a replayed emit still on its way is dropped; later ones go.
    fixture.apply(Command::Emit(logged(r#"["live"]"#, &["r"], "5-0")));
    fixture.apply(Command::Emit(logged(r#"["next"]"#, &["r"], "6-0")));
    assert_eq!(frames(&session), [r#"42["next","6-0"]"#]);
}

#[test]
fn a_socket_recovered_away_from_its_node_listens_on_that_node_channel() {
    let fixture = Fixture::new();
    let session = fixture.session();
    assert!(recover(&fixture, &session, previous("n9.old", &[])));
    let effects = fixture.effects();
    assert!(
        effects
            .iter()
            .any(|effect| matches!(effect, Effect::Subscribe(channel) if channel == "p:n:n9")),
        "{effects:?}"
    );
    assert!(effects.iter().any(
        |effect| matches!(effect, Effect::Ledger(LedgerOp::Locate(sid)) if **sid == *"n9.old")
    ));
    fixture.subscriptions_active();
    fixture.sockets.replayed("n9.old", Some(vec![]));
    frames(&session);
    // Commands for it, addressed to its id's node, reach it here.
    fixture.apply(Command::Emit(envelope::Emit {
        sids: vec!["n9.old".into()],
        ..emit("/", r#"["hi"]"#)
    }));
    assert_eq!(frames(&session), [r#"42["hi"]"#]);
    session.close(CloseReason::TransportClose);
    fixture.sockets.on_session_closed(&session);
    assert!(
        fixture
            .effects()
            .iter()
            .any(|effect| matches!(effect, Effect::Unsubscribe(channel) if channel == "p:n:n9"))
    );
}

#[test]
fn a_replay_that_cannot_be_read_closes_the_connection_and_parks_again() {
    let fixture = Fixture::new();
    let session = fixture.session();
    assert!(recover(&fixture, &session, previous("n1.old", &["r"])));
    fixture.effects();
    fixture.sockets.replayed("n1.old", None);
    assert!(session.is_closed());
    fixture.sockets.on_session_closed(&session);
    // Its disconnect waits for its connect event's done, as any socket's.
    fixture.done("n1.old", "/", 0);
    assert!(
        fixture
            .effects()
            .iter()
            .any(|effect| matches!(effect, Effect::Ledger(LedgerOp::Park(..))))
    );
}

#[test]
fn a_session_still_open_here_is_not_opened_twice() {
    let fixture = Fixture::new();
    let session = fixture.session();
    let sid = admitted_with_recovery(&fixture, &session);
    let other = fixture.session();
    assert!(!recover(&fixture, &other, previous(&sid, &[])));
}

#[test]
fn a_release_closes_the_socket_as_a_lost_transport() {
    let fixture = Fixture::new();
    let session = fixture.session();
    let sid = admitted_with_recovery(&fixture, &session);
    fixture.apply(Command::Release(envelope::Release {
        nsp: "/".into(),
        sid,
    }));
    assert!(session.is_closed());
    assert_eq!(session.close_reason(), CloseReason::TransportClose);
}

#[test]
fn on_a_redis_cluster_a_socket_recovered_away_listens_on_every_partition_of_its_node() {
    let fixture = Fixture::with(Settings {
        keys: iocluster_protocol::keys::Keys::sharded("{p}"),
        queue_partitions: 2,
        partitions: std::sync::Arc::new(std::sync::atomic::AtomicU16::new(3)),
        ..settings()
    });
    let session = fixture.session();
    assert!(recover(&fixture, &session, previous("n9.old", &[])));
    let subscribed: Vec<String> = fixture
        .effects()
        .into_iter()
        .filter_map(|effect| match effect {
            Effect::Subscribe(channel) if channel.contains(":n:") => Some(channel),
            _ => None,
        })
        .collect();
    assert_eq!(subscribed, ["{p}:n:n9", "{p:1}:n:n9", "{p:2}:n:n9"]);
    fixture.subscriptions_active();
    session.close(CloseReason::TransportClose);
    fixture.sockets.on_session_closed(&session);
    let unsubscribed = fixture
        .effects()
        .into_iter()
        .filter(
            |effect| matches!(effect, Effect::Unsubscribe(channel) if channel.contains(":n:n9")),
        )
        .count();
    assert_eq!(unsubscribed, 3);
}
