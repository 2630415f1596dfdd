//! Per-socket order: one queue item at a time, events that pile up batched
//! into the next item, and the limits on what may pile up.

use super::*;

#[test]
fn a_sockets_events_go_one_item_at_a_time_and_pile_up_into_one_item() {
    let fixture = Fixture::new();
    let session = fixture.session();
    let sid = fixture.admitted(&session, "/");
    fixture.send(&session, "2[\"a\"]").unwrap();
    fixture.send(&session, "2[\"b\"]").unwrap();
    fixture.send(&session, "21[\"c\"]").unwrap();
    let items = fixture.events();
    assert_eq!(items.len(), 1, "the second waits for the first's done");
    assert_eq!(
        (items[0][0].seq, items[0][0].data.as_deref()),
        (1, Some("[\"a\"]"))
    );
    fixture.done(&sid, "/", 1);
    let items = fixture.events();
    assert_eq!(items.len(), 1);
    let batch: Vec<_> = items[0]
        .iter()
        .map(|event| (event.seq, event.data.as_deref(), event.ack))
        .collect();
    assert_eq!(
        batch,
        [(2, Some("[\"b\"]"), None), (3, Some("[\"c\"]"), Some(1))]
    );
    // A done for anything but the item in flight changes nothing.
    fixture.done(&sid, "/", 2);
    fixture.send(&session, "2[\"d\"]").unwrap();
    assert!(fixture.events().is_empty());
    fixture.done(&sid, "/", 3);
    assert_eq!(fixture.events()[0][0].seq, 4);
}

#[test]
fn a_sockets_messages_go_to_its_partition_and_its_connect_and_disconnect_to_the_first() {
    let fixture = Fixture::with(Settings {
        queue_partitions: 8,
        ..settings()
    });
    let session = fixture.session();
    let sid = fixture.admitted(&session, "/");
    let home = iocluster_protocol::keys::partition_of(&sid, 8);
    fixture.send(&session, "2[\"a\"]").unwrap();
    fixture.done(&sid, "/", 1);
    fixture.send(&session, "2[\"b\"]").unwrap();
    // Redis lost its data: the item in flight goes to its partition again.
    fixture.sockets.resync(u64::MAX);
    let partitions = fixture.cluster.partitions.lock().unwrap().clone();
    assert_eq!(partitions, [0, home, home, home]);
    let other = (0..100)
        .map(|i| iocluster_protocol::keys::partition_of(&format!("n1.s{i}"), 8))
        .collect::<std::collections::HashSet<_>>();
    assert!(other.len() > 1, "sockets spread over the partitions");
}

#[test]
fn an_item_holds_at_most_event_batch_events() {
    let fixture = Fixture::with(Settings {
        event_batch: 2,
        ..settings()
    });
    let session = fixture.session();
    let sid = fixture.admitted(&session, "/");
    for n in 0..5 {
        fixture.send(&session, &format!("2[\"e\",{n}]")).unwrap();
    }
    let sizes = |items: Vec<Vec<Event>>| items.iter().map(Vec::len).collect::<Vec<_>>();
    assert_eq!(sizes(fixture.events()), [1]);
    fixture.done(&sid, "/", 1);
    assert_eq!(sizes(fixture.events()), [2]);
    fixture.done(&sid, "/", 3);
    assert_eq!(sizes(fixture.events()), [2]);
}

#[test]
fn a_socket_past_its_pending_limit_pauses_its_client_until_half_are_handled() {
    let fixture = Fixture::with(Settings {
        max_pending_events: 4,
        event_batch: 1,
        ..settings()
    });
    let session = fixture.session();
    let sid = fixture.admitted(&session, "/");
    fixture.send(&session, "2[\"e\",0]").unwrap(); // in flight
    for n in 1..4 {
        fixture.send(&session, &format!("2[\"e\",{n}]")).unwrap();
        assert!(!session.is_paused(), "{n} waiting");
    }
    // The fourth waiting: stop reading from the client, never close it.
    fixture.send(&session, "2[\"e\",4]").unwrap();
    assert!(session.is_paused());
    assert!(!session.is_closed());
    // Each done sends the next item; at two waiting (half) it reads again.
    fixture.done(&sid, "/", 1);
    assert!(session.is_paused(), "3 waiting");
    fixture.done(&sid, "/", 2);
    assert!(!session.is_paused(), "2 waiting");
    // Every event goes out, in order, none lost.
    for seq in 3..=5 {
        fixture.done(&sid, "/", seq);
    }
    let seqs: Vec<u64> = fixture
        .events()
        .iter()
        .flatten()
        .map(|event| event.seq)
        .collect();
    assert_eq!(seqs, [1, 2, 3, 4, 5]);
}

#[test]
fn a_socket_at_twice_its_pending_limit_is_closed() {
    // A paused client is not read from, so this takes a transport that
    // ignores the pause: the bound holds all the same.
    let fixture = Fixture::with(Settings {
        max_pending_events: 2,
        ..settings()
    });
    let session = fixture.session();
    fixture.admitted(&session, "/");
    fixture.send(&session, "2[\"e\",0]").unwrap(); // in flight
    for n in 1..=4 {
        fixture.send(&session, &format!("2[\"e\",{n}]")).unwrap();
    }
    assert_eq!(
        fixture.send(&session, "2[\"e\",5]"),
        Err(CloseReason::TooManyPendingEvents)
    );
}

#[test]
fn a_full_event_buffer_closes_the_client_rather_than_drop_its_event() {
    let fixture = Fixture::new();
    let session = fixture.session();
    fixture.admitted(&session, "/");
    fixture.cluster.full.store(true, Ordering::Relaxed);
    fixture.send(&session, "2[\"e\",1]").unwrap();
    assert!(session.is_closed());
    assert_eq!(session.close_reason(), CloseReason::Overloaded);
}

#[test]
fn each_event_lists_the_app_nodes_that_finished_its_sockets_earlier_items() {
    let fixture = Fixture::new();
    let session = fixture.session();
    let sid = fixture.admitted(&session, "/");
    let done_by = |seq: u64, app: &str| {
        fixture.apply(Command::Done(envelope::Done {
            nsp: "/".into(),
            sid: sid.clone(),
            seq,
            reject: None,
            app: Some(app.into()),
        }))
    };
    // `admitted` finished the connect without naming an app-node.
    fixture.send(&session, "2[\"a\"]").unwrap();
    assert!(fixture.events()[0][0].seen.is_empty());
    done_by(1, "app-1.x");
    fixture.send(&session, "2[\"b\"]").unwrap();
    assert_eq!(fixture.events()[0][0].seen, ["app-1.x"]);
    // Each app-node once, oldest first, whoever finished last.
    done_by(2, "app-2.y");
    fixture.send(&session, "2[\"c\"]").unwrap();
    assert_eq!(fixture.events()[0][0].seen, ["app-1.x", "app-2.y"]);
    done_by(3, "app-1.x");
    fixture.send(&session, "2[\"d\"]").unwrap();
    assert_eq!(fixture.events()[0][0].seen, ["app-1.x", "app-2.y"]);
    // At most SEEN_BY_MOST: the oldest goes first.
    let mut seq = 4;
    for n in 0..envelope::SEEN_BY_MOST {
        done_by(seq, &format!("app-{n}.z"));
        seq += 1;
        fixture.send(&session, "2[\"e\"]").unwrap();
        fixture.events();
    }
    done_by(seq, "last.w");
    fixture.send(&session, "2[\"f\"]").unwrap();
    let seen = fixture.events()[0][0].seen.clone();
    assert_eq!(seen.len(), envelope::SEEN_BY_MOST);
    assert_eq!(seen.last().map(String::as_str), Some("last.w"));
    assert!(!seen.iter().any(|app| app == "app-1.x"));
}
