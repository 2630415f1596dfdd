//! Recovery: ledger entries follow the socket's snapshot, a Redis that lost
//! its data gets the ledger and the lost items again, overdue items are
//! pushed again, and the stats the node publishes.

use super::*;

#[test]
fn set_data_and_rooms_reach_the_ledger_entry_and_the_next_snapshot() {
    let fixture = Fixture::new();
    let session = fixture.session();
    let sid = fixture.admitted(&session, "/");
    fixture.apply(Command::SetData(envelope::SetData {
        nsp: "/".into(),
        sid: sid.clone(),
        data: "{\"n\":1}".into(),
    }));
    fixture.apply(join(&sid, &["r"]));
    let stale: Vec<Arc<str>> = fixture
        .effects()
        .into_iter()
        .filter_map(|effect| match effect {
            Effect::Stale(sid) => Some(sid),
            _ => None,
        })
        .collect();
    let entries = fixture.sockets.ledger_entries(stale);
    let entry = Event::decode(&entries[0].1).unwrap();
    assert_eq!(entry.sdata.as_deref(), Some("{\"n\":1}"));
    assert_eq!(entry.rooms, ["r"]);
    fixture.send(&session, "2[\"e\",1]").unwrap();
    assert_eq!(fixture.events()[0][0].sdata.as_deref(), Some("{\"n\":1}"));
}

#[test]
fn a_redis_that_lost_its_data_gets_the_ledger_and_the_items_in_flight_again() {
    let fixture = Fixture::new();
    let session = fixture.session();
    fixture.admitted(&session, "/");
    fixture.send(&session, "2[\"e\",1]").unwrap(); // number 2: the connect was 1
    fixture.effects();
    fixture.sockets.resync(1); // written up to 1: item 2 was not lost
    let effects = fixture.effects();
    assert!(matches!(effects[0], Effect::Ledger(LedgerOp::Create(..))));
    assert!(matches!(
        effects.last(),
        Some(Effect::Ledger(LedgerOp::Register))
    ));
    assert!(
        !effects
            .iter()
            .any(|effect| matches!(effect, Effect::Event(_)))
    );
    fixture.sockets.resync(5);
    assert!(
        fixture.effects().is_empty(),
        "once until the rewrite is done"
    );
    fixture.sockets.resync_done();
    fixture.sockets.resync(5);
    assert_eq!(fixture.events()[0][0].data.as_deref(), Some("[\"e\",1]"));
}

#[test]
fn items_whose_done_never_came_are_pushed_again_when_overdue() {
    let fixture = Fixture::new();
    let session = fixture.session();
    fixture.admitted(&session, "/");
    fixture.send(&session, "2[\"e\",1]").unwrap();
    fixture.effects();
    fixture.sockets.redeliver(Duration::from_secs(60));
    assert!(fixture.events().is_empty(), "not overdue yet");
    fixture.sockets.redeliver(Duration::ZERO);
    assert_eq!(fixture.events()[0][0].data.as_deref(), Some("[\"e\",1]"));
}

#[test]
fn a_fenced_node_registers_a_fresh_ledger_once() {
    let fixture = Fixture::new();
    assert!(fixture.sockets.fence());
    assert!(!fixture.sockets.fence(), "once until the ledger is back");
    let effects = fixture.effects();
    assert!(matches!(&effects[..], [Effect::Ledger(LedgerOp::Register)]));
}

#[test]
fn the_stats_count_rooms_and_users_but_list_no_reserved_room() {
    let fixture = Fixture::new();
    let (one, two) = (fixture.session(), fixture.session());
    let a = fixture.admitted(&one, "/");
    fixture.connect(&two, "/", Admission::User("ann".into()));
    fixture.apply(join(&a, &["lobby"]));
    let stats: std::collections::HashMap<_, _> = fixture.sockets.stats().into_iter().collect();
    assert_eq!(stats["rooms"], r#"{"/,lobby":1}"#);
    assert_eq!(stats["room_count"], "1");
    assert_eq!(stats["users"], "1");
    assert_eq!(stats["namespaces"], r#"{"/":2}"#);
}
