//! Reading ledger entries, filtering, and the paging and tallying plans,
//! driven with made-up `HSCAN` answers.

use super::*;
use crate::envelope::EventKind;

fn entry(node: &str, sid: &str, nsp: &str, rooms: &[&str], address: &str) -> Entry {
    let event = Event {
        kind: EventKind::Disconnect,
        node: node.into(),
        sid: sid.into(),
        nsp: nsp.into(),
        seq: 3,
        data: None,
        bin: Vec::new(),
        ack: None,
        reason: Some("io-node lost".into()),
        rooms: rooms.iter().map(|r| r.to_string()).collect(),
        sdata: Some("{\"n\":1}".into()),
        handshake: Arc::new(Handshake {
            headers: vec![("host".into(), "h".into())],
            query: vec![("EIO".into(), "4".into())],
            address: address.into(),
            time: 1_700_000_000_000,
            url: "/socket.io/?EIO=4".into(),
            secure: false,
            auth: Some("{\"userId\":\"ann\"}".into()),
        }),
        recovered: false,
        seen: Vec::new(),
    };
    (sid.to_owned(), event.encode())
}

fn socket(sid: &str, nsp: &str, rooms: &[&str], address: &str) -> SocketInfo {
    let (field, value) = entry("io1", sid, nsp, rooms, address);
    SocketInfo::from_ledger_entry("io1", &field, &value).unwrap()
}

#[test]
fn a_ledger_entry_reads_as_a_socket() {
    let (field, value) = entry(
        "io1",
        "io1.Ab",
        "/chat",
        &["lobby", "$user:ann"],
        "10.0.0.1:5",
    );
    let socket = SocketInfo::from_ledger_entry("io1", &field, &value).unwrap();
    assert_eq!(socket.sid, "io1.Ab");
    assert_eq!(socket.nsp, "/chat");
    assert_eq!(socket.node, "io1");
    assert_eq!(socket.rooms, ["lobby", "$user:ann"]);
    assert_eq!(socket.data.as_deref(), Some("{\"n\":1}"));
    assert_eq!(socket.user(), Some("ann"));
    assert_eq!(socket.address(), "10.0.0.1:5");
    assert_eq!(socket.connected_at(), 1_700_000_000_000);
    assert_eq!(socket.handshake.query, [("EIO".into(), "4".into())]);
    assert!(socket.in_room("lobby") && socket.in_room("io1.Ab") && !socket.in_room("x"));
    // Filed under another socket's id, or not an envelope: refused.
    assert!(matches!(
        SocketInfo::from_ledger_entry("io1", "io1.Other", &value),
        Err(PresenceError::Mismatch { .. })
    ));
    assert!(matches!(
        SocketInfo::from_ledger_entry("io1", "io1.Ab", b"\x93\x01garbage"),
        Err(PresenceError::Undecodable(_))
    ));
    assert!(SocketInfo::from_ledger_entry("io1", "io1.Ab", b"").is_err());
}

#[test]
fn filters_select_as_documented() {
    let ann = socket("io1.A", "/", &["lobby", "$user:ann"], "10.0.0.1:5");
    let bob = socket("io1.B", "/", &["games"], "192.168.1.9:7");
    let other = socket("io1.C", "/other", &["lobby"], "10.0.0.2:5");
    let all = Filter::default();
    assert!(all.matches(&ann) && all.matches(&bob) && all.matches(&other));
    let select = |filter: Filter| -> Vec<&str> {
        [&ann, &bob, &other]
            .into_iter()
            .filter(|s| filter.matches(s))
            .map(|s| s.sid.as_str())
            .collect()
    };
    let nsp = Some("/".to_owned());
    assert_eq!(
        select(Filter {
            nsp: nsp.clone(),
            ..Filter::default()
        }),
        ["io1.A", "io1.B"]
    );
    assert_eq!(
        select(Filter {
            rooms: vec!["lobby".into()],
            ..Filter::default()
        }),
        ["io1.A", "io1.C"]
    );
    // Rooms and sids add up; a socket id is a room of one.
    assert_eq!(
        select(Filter {
            rooms: vec!["io1.C".into()],
            sids: vec!["io1.B".into()],
            ..Filter::default()
        }),
        ["io1.B", "io1.C"]
    );
    assert_eq!(
        select(Filter {
            rooms: vec!["lobby".into()],
            except_rooms: vec!["$user:ann".into()],
            ..Filter::default()
        }),
        ["io1.C"]
    );
    assert_eq!(
        select(Filter {
            except_sids: vec!["io1.A".into()],
            nsp,
            ..Filter::default()
        }),
        ["io1.B"]
    );
    assert_eq!(
        select(Filter {
            user: Some("ann".into()),
            ..Filter::default()
        }),
        ["io1.A"]
    );
    assert!(
        select(Filter {
            user: Some("an".into()),
            ..Filter::default()
        })
        .is_empty()
    );
    // Text: part of the id, the address or the user, without case.
    for (text, expected) in [
        ("io1.b", vec!["io1.B"]),
        ("192.168", vec!["io1.B"]),
        ("AN", vec!["io1.A"]),
        (":5", vec!["io1.A", "io1.C"]),
        ("", vec!["io1.A", "io1.B", "io1.C"]),
    ] {
        let filter = Filter {
            text: Some(text.into()),
            ..Filter::default()
        };
        assert_eq!(select(filter), expected, "{text:?}");
    }
    let node = Filter {
        node: Some("io2".into()),
        ..Filter::default()
    };
    assert!(select(node).is_empty());
}

#[test]
fn only_leased_ledgers_are_read() {
    let nodes = live_ledger_nodes(
        vec!["io2".into(), "dead".into(), "io1".into(), "bad id".into()],
        &["io1".into(), "io2".into(), "io3".into(), "bad id".into()],
    );
    assert_eq!(nodes, ["io1", "io2"]);
}

#[test]
fn cursors_round_trip_and_refuse_tampering() {
    for cursor in [
        Cursor {
            node: "io-1".into(),
            scan: 0,
            inside: None,
        },
        Cursor {
            node: "n".into(),
            scan: u64::MAX,
            inside: Some((7, "n.a:b".into())),
        },
    ] {
        let text = cursor.encode();
        assert!(
            text.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        );
        assert_eq!(Cursor::decode(&text), Ok(cursor));
    }
    let forged = |raw: &str| Cursor::decode(&URL_SAFE_NO_PAD.encode(raw));
    for raw in [
        "2:io1:0::",
        "1:bad node:0::",
        "1:io1:x::",
        "1:io1:0:5:",
        "1:io1:0::x",
        "1:io1:0",
    ] {
        assert_eq!(forged(raw), Err(CursorError), "{raw}");
    }
    assert_eq!(Cursor::decode("not base64!"), Err(CursorError));
    assert_eq!(Cursor::decode(&"A".repeat(600)), Err(CursorError));
}

/// A fake ledger: `HSCAN` in batches of `batch` fields, in the order given.
struct Ledgers(Vec<(String, Vec<Entry>)>, usize);

impl Ledgers {
    fn hscan(&self, node: &str, cursor: u64) -> (u64, Vec<Entry>) {
        let entries = &self.0.iter().find(|(n, _)| n == node).unwrap().1;
        let start = cursor as usize;
        let end = (start + self.1).min(entries.len());
        let next = if end == entries.len() { 0 } else { end as u64 };
        (next, entries[start..end].to_vec())
    }

    fn nodes(&self) -> Vec<String> {
        self.0.iter().map(|(n, _)| n.clone()).collect()
    }

    fn page(&self, filter: &Filter, cursor: Option<Cursor>, limit: usize, budget: usize) -> Page {
        let mut scan = SocketScan::new(filter.clone(), self.nodes(), cursor, limit, budget);
        while let Some(step) = scan.step() {
            let (next, entries) = self.hscan(step.node, step.cursor);
            scan.feed(next, entries);
        }
        scan.finish()
    }
}

fn cluster(per_node: usize, batch: usize) -> Ledgers {
    let nodes = ["io0", "io1", "io2"]
        .iter()
        .map(|node| {
            let entries = (0..per_node)
                .map(|i| {
                    let rooms: &[&str] = if i % 2 == 0 { &["even"] } else { &[] };
                    entry(node, &format!("{node}.s{i:03}"), "/", rooms, "127.0.0.1:1")
                })
                .collect();
            (node.to_string(), entries)
        })
        .collect();
    Ledgers(nodes, batch)
}

fn sids(page: &Page) -> Vec<String> {
    page.sockets.iter().map(|s| s.sid.clone()).collect()
}

#[test]
fn pages_cover_every_socket_once_whatever_the_limit() {
    let ledgers = cluster(25, 10);
    let expected: Vec<String> = ledgers
        .0
        .iter()
        .flat_map(|(_, entries)| entries.iter().map(|(sid, _)| sid.clone()))
        .collect();
    for limit in [1, 3, 10, 11, 100] {
        let mut seen = Vec::new();
        let mut cursor = None;
        let mut pages = 0;
        loop {
            let page = ledgers.page(&Filter::default(), cursor, limit, PAGE_BUDGET);
            assert!(page.sockets.len() <= limit);
            seen.extend(sids(&page));
            pages += 1;
            let Some(next) = page.next else { break };
            // Through text, as an API user passes it back.
            cursor = Some(Cursor::decode(&next.encode()).unwrap());
        }
        assert_eq!(seen, expected, "limit {limit}");
        assert!(pages >= 75usize.div_ceil(limit), "limit {limit}");
    }
}

#[test]
fn filters_apply_while_scanning_and_the_budget_ends_a_page() {
    let ledgers = cluster(25, 10);
    let even = Filter {
        rooms: vec!["even".into()],
        ..Filter::default()
    };
    let page = ledgers.page(&even, None, 100, PAGE_BUDGET);
    assert_eq!(page.sockets.len(), 39);
    assert!(page.next.is_none());
    assert!(page.sockets.iter().all(|s| s.in_room("even")));
    // Only one node.
    let io1 = Filter {
        node: Some("io1".into()),
        ..even.clone()
    };
    let page = ledgers.page(&io1, None, 100, PAGE_BUDGET);
    assert_eq!(page.sockets.len(), 13);
    assert!(page.sockets.iter().all(|s| s.node == "io1"));
    // A budget of 20 entries: two batches, then a cursor to go on.
    let page = ledgers.page(&even, None, 100, 20);
    assert_eq!(page.sockets.len(), 10);
    let rest = ledgers.page(&even, page.next, 100, PAGE_BUDGET);
    assert_eq!(rest.sockets.len(), 29);
    // Nothing matches: pages may be empty while there is more to read.
    let none = Filter {
        user: Some("nobody".into()),
        ..Filter::default()
    };
    let page = ledgers.page(&none, None, 100, 30);
    assert!(page.sockets.is_empty() && page.next.is_some());
}

#[test]
fn a_resized_batch_is_read_again_without_skipping() {
    let ledgers = cluster(25, 10);
    let page = ledgers.page(&Filter::default(), None, 4, PAGE_BUDGET);
    assert_eq!(
        sids(&page),
        ["io0.s000", "io0.s001", "io0.s002", "io0.s003"]
    );
    let cursor = page.next.unwrap();
    assert!(cursor.inside.is_some());
    // The same batch comes back with another next cursor: resized.
    let mut scan = SocketScan::new(Filter::default(), ledgers.nodes(), Some(cursor), 4, 100);
    let (_, entries) = ledgers.hscan("io0", 0);
    scan.feed(99, entries);
    assert_eq!(
        sids(&scan.finish()),
        ["io0.s000", "io0.s001", "io0.s002", "io0.s003"]
    );
}

#[test]
fn a_cursor_on_a_node_gone_goes_on_with_the_next() {
    let ledgers = cluster(5, 10);
    let gone = Cursor {
        node: "io05".into(),
        scan: 3,
        inside: Some((0, "io05.x".into())),
    };
    let page = ledgers.page(&Filter::default(), Some(gone), 100, PAGE_BUDGET);
    assert_eq!(page.sockets.len(), 10);
    assert_eq!(page.sockets[0].sid, "io1.s000");
}

#[test]
fn undecodable_entries_are_skipped_and_counted() {
    let mut ledgers = cluster(3, 10);
    ledgers.0[0]
        .1
        .push(("io0.bad".into(), b"nonsense".to_vec()));
    let page = ledgers.page(&Filter::default(), None, 100, PAGE_BUDGET);
    assert_eq!((page.sockets.len(), page.undecodable), (9, 1));
}

fn tally(
    ledgers: &Ledgers,
    of: TallyOf,
    nsp: Option<&str>,
    text: Option<&str>,
    budget: usize,
    limit: usize,
) -> Counts {
    let mut tally = Tally::new(
        of,
        nsp.map(str::to_owned),
        text.map(str::to_owned),
        ledgers.nodes(),
        budget,
    );
    while let Some(step) = tally.step() {
        let (next, entries) = ledgers.hscan(step.node, step.cursor);
        tally.feed(next, entries);
    }
    tally.finish(limit)
}

#[test]
fn rooms_and_users_are_counted_largest_first() {
    let ledgers = Ledgers(
        vec![
            (
                "io0".into(),
                vec![
                    entry("io0", "io0.a", "/", &["lobby", "$user:ann"], "a:1"),
                    entry("io0", "io0.b", "/", &["lobby", "games"], "a:1"),
                    entry("io0", "io0.c", "/x", &["lobby", "$user:ann"], "a:1"),
                ],
            ),
            (
                "io1".into(),
                vec![
                    entry("io1", "io1.a", "/", &["lobby", "$user:bob"], "a:1"),
                    entry("io1", "io1.b", "/", &["games", "$user:ann"], "a:1"),
                ],
            ),
        ],
        2,
    );
    let rooms = tally(&ledgers, TallyOf::Rooms, None, None, TALLY_BUDGET, 100);
    assert!(rooms.complete);
    let listed: Vec<(&str, &str, u64)> = rooms
        .counts
        .iter()
        .map(|c| (c.nsp.as_str(), c.name.as_str(), c.sockets))
        .collect();
    assert_eq!(
        listed,
        [("/", "lobby", 3), ("/", "games", 2), ("/x", "lobby", 1)]
    );
    let rooms = tally(
        &ledgers,
        TallyOf::Rooms,
        Some("/"),
        Some("GAM"),
        TALLY_BUDGET,
        100,
    );
    assert_eq!(rooms.counts.len(), 1);
    assert_eq!(rooms.counts[0].name, "games");
    // `$` rooms only when asked for.
    let reserved = tally(
        &ledgers,
        TallyOf::Rooms,
        Some("/"),
        Some("$user"),
        TALLY_BUDGET,
        100,
    );
    let names: Vec<&str> = reserved.counts.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["$user:ann", "$user:bob"]);
    let users = tally(&ledgers, TallyOf::Users, None, None, TALLY_BUDGET, 100);
    let listed: Vec<(&str, u64)> = users
        .counts
        .iter()
        .map(|c| (c.name.as_str(), c.sockets))
        .collect();
    assert_eq!(listed, [("ann", 3), ("bob", 1)]);
    let users = tally(&ledgers, TallyOf::Users, Some("/"), None, TALLY_BUDGET, 1);
    assert_eq!(
        users.counts,
        [Count {
            nsp: String::new(),
            name: "ann".into(),
            sockets: 2
        }]
    );
    // Out of budget: incomplete.
    let partial = tally(&ledgers, TallyOf::Rooms, None, None, 2, 100);
    assert!(!partial.complete);
}
