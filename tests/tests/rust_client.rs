//! The cluster through the Rust client (`iocluster-client`): rooms across
//! io-nodes, acks both ways, binary attachments, refusals.

use std::time::Duration;

use bytes::Bytes;
use iocluster_client::{Client, ClientError, ClientOptions, Received, placeholder};
use iocluster_tests::Cluster;
use serde_json::json;

const WAIT: Duration = Duration::from_secs(5);

#[tokio::test]
async fn rust_clients_talk_across_io_nodes() {
    let cluster = Cluster::builder("rust-client").start().await;
    let urls = cluster.io_urls();
    let first = Client::connect(&urls[0], ClientOptions::default())
        .await
        .unwrap();
    let second = Client::connect(&urls[1], ClientOptions::default())
        .await
        .unwrap();
    assert!(first.sid().starts_with("io0.") && second.sid().starts_with("io1."));

    let a = first
        .socket("/", Some(json!({ "rooms": ["team"] })))
        .await
        .unwrap();
    let b = second.socket("/", None).await.unwrap();
    assert_eq!(a.recv_event(WAIT).await.unwrap().name, "welcome");
    assert_eq!(b.recv_event(WAIT).await.unwrap().name, "welcome");
    let joined = b
        .emit_with_ack("join", vec![json!("team")], WAIT)
        .await
        .unwrap();
    assert_eq!(joined.args, vec![json!(true)]);

    // An emit to the room from one io-node reaches members on both, once.
    a.emit_with_ack(
        "toRoom",
        vec![json!({ "rooms": ["team"], "event": "news", "data": 7 })],
        WAIT,
    )
    .await
    .unwrap();
    for socket in [&a, &b] {
        let news = socket.recv_event(WAIT).await.unwrap();
        assert_eq!(
            (news.name.as_str(), news.args.clone()),
            ("news", vec![json!(7)])
        );
    }

    // The server asks a client for an acknowledgement and gets its answer.
    let answer = async {
        let question = b.recv_event(WAIT).await.unwrap();
        assert_eq!(
            (question.name.as_str(), question.args.clone()),
            ("question", vec![json!(20)])
        );
        b.ack(
            question.ack.expect("an ack id"),
            vec![json!({ "doubled": 40 })],
        )
        .unwrap();
    };
    let (asked, ()) = tokio::join!(
        b.emit_with_ack(
            "ask",
            vec![json!({ "event": "question", "data": 20 })],
            WAIT
        ),
        answer
    );
    assert_eq!(
        asked.unwrap().args,
        vec![json!({ "answer": [{ "doubled": 40 }] })]
    );

    // Binary attachments both ways.
    let bytes = Bytes::from_static(&[0, 1, 2, 255]);
    a.emit_binary(
        "echo",
        vec![json!("bin"), placeholder(0)],
        vec![bytes.clone()],
    )
    .unwrap();
    let echoed = a.recv_event(WAIT).await.unwrap();
    assert_eq!(echoed.name, "echo");
    assert_eq!(echoed.args, vec![json!("bin"), placeholder(0)]);
    assert_eq!(echoed.attachments, vec![bytes]);

    // A refused connection reports the application's message and data.
    let refused = first
        .socket(
            "/other",
            Some(json!({ "reject": "no", "rejectData": { "why": 1 } })),
        )
        .await;
    match refused {
        Err(ClientError::ConnectRefused(error)) => {
            assert_eq!(error.message, "no");
            assert_eq!(error.data, Some(json!({ "why": 1 })));
        }
        Err(other) => panic!("expected a refusal, got {other}"),
        Ok(_) => panic!("expected a refusal"),
    }

    // A server-side disconnect ends the namespace.
    b.emit("kick", vec![]).unwrap();
    loop {
        match tokio::time::timeout(WAIT, b.recv()).await.unwrap() {
            Some(Received::Disconnected) => break,
            Some(Received::Event(_)) => continue,
            None => panic!("connection closed instead of a namespace disconnect"),
        }
    }
}

#[tokio::test]
async fn replacing_every_app_node_keeps_clients_connected() {
    let mut cluster = Cluster::builder("app-replace")
        .io_nodes(1)
        .app_nodes("iocluster-test-app", 1)
        .start()
        .await;
    let client = Client::connect(&cluster.io[0].url(), ClientOptions::default())
        .await
        .unwrap();
    let socket = client
        .socket("/", Some(json!({ "rooms": ["kept"], "data": { "n": 1 } })))
        .await
        .unwrap();
    assert_eq!(socket.recv_event(WAIT).await.unwrap().name, "welcome");
    let before = socket
        .emit_with_ack("slow", vec![json!(0)], WAIT)
        .await
        .unwrap();
    assert_eq!(before.args, vec![json!("app0")]);

    // Deploy: the new app-node starts, the old one stops.
    cluster.start_app().await;
    let status = cluster.apps[0]
        .process
        .terminate(Duration::from_secs(15))
        .await
        .unwrap();
    assert!(status.success());

    // Same connection, same socket: the new app-node serves it from the
    // event's snapshot, and its new-session hook ran once for it.
    let after = socket
        .emit_with_ack("slow", vec![json!(0)], WAIT)
        .await
        .unwrap();
    assert_eq!(after.args, vec![json!("app1")]);
    let state = socket.emit_with_ack("state", vec![], WAIT).await.unwrap();
    assert_eq!(
        state.args,
        vec![json!({ "rooms": ["kept"], "data": { "n": 1 } })]
    );
    let mut redis = cluster.redis().await;
    let met: Vec<String> = redis::cmd("LRANGE")
        .arg(format!("{}:test:new_sessions", cluster.prefix))
        .arg(0)
        .arg(-1)
        .query_async(&mut redis)
        .await
        .unwrap();
    assert_eq!(met, vec![format!("app1 {}", socket.id())]);
    assert!(
        cluster.disconnect_reasons().await.is_empty(),
        "no client was disconnected"
    );
}

/// The new-session hook runs once in each app-node that meets a socket it
/// did not admit, however its events alternate between app-nodes, with
/// nothing kept per socket in the app-nodes (the io-node lists, in each
/// event, the app-nodes that finished the socket's earlier items).
#[tokio::test]
async fn the_new_session_hook_runs_once_per_app_node_that_meets_a_socket() {
    let cluster = Cluster::builder("new-session-hook")
        .io_nodes(1)
        .app_nodes("iocluster-test-app", 3)
        .start()
        .await;
    let client = Client::connect(&cluster.io[0].url(), ClientOptions::default())
        .await
        .unwrap();
    let socket = client.socket("/", None).await.unwrap();
    let welcome = socket.recv_event(WAIT).await.unwrap();
    let admitted_by = welcome.args[0]["app"].as_str().unwrap().to_owned();
    let mut served = std::collections::BTreeSet::new();
    for _ in 0..30 {
        let answer = socket
            .emit_with_ack("slow", vec![json!(0)], WAIT)
            .await
            .unwrap();
        served.insert(answer.args[0].as_str().unwrap().to_owned());
    }
    assert!(
        served.len() >= 2,
        "the events went to one app-node: {served:?}"
    );
    let mut redis = cluster.redis().await;
    let mut met: Vec<String> = redis::cmd("LRANGE")
        .arg(format!("{}:test:new_sessions", cluster.prefix))
        .arg(0)
        .arg(-1)
        .query_async(&mut redis)
        .await
        .unwrap();
    met.sort();
    let expected: Vec<String> = served
        .iter()
        .filter(|app| **app != admitted_by)
        .map(|app| format!("{app} {}", socket.id()))
        .collect();
    assert_eq!(
        met, expected,
        "admitted by {admitted_by}, served by {served:?}"
    );
}

/// A socket's events handed to a function on the connection task
/// (`Socket::on_receive`, what the load generator counts with): those
/// already queued first, then the new ones, in order; the server's
/// namespace disconnect, and the end of the connection, once each.
#[tokio::test]
async fn a_receiving_function_gets_every_event_in_order_and_the_end_once() {
    let cluster = Cluster::builder("rust-client-receive").start().await;
    let urls = cluster.io_urls();
    let client = Client::connect(&urls[0], ClientOptions::default())
        .await
        .unwrap();
    let socket = client.socket("/", None).await.unwrap();
    // The welcome, and an echo, are (or will be) queued for `recv`.
    socket.emit("echo", vec![json!(1)]).unwrap();
    let (seen_tx, mut seen) = tokio::sync::mpsc::unbounded_channel();
    let tx = seen_tx.clone();
    socket.on_receive(move |received| {
        let _ = tx.send(received);
    });
    socket.emit("echo", vec![json!(2)]).unwrap();
    socket.emit("kick", vec![]).unwrap();
    let mut got = Vec::new();
    loop {
        match tokio::time::timeout(WAIT, seen.recv()).await.unwrap() {
            Some(Received::Event(event)) => got.push((event.name, event.args)),
            Some(Received::Disconnected) => break,
            None => panic!("the receiving function was dropped"),
        }
    }
    assert_eq!(
        got,
        vec![
            ("welcome".to_owned(), got[0].1.clone()),
            ("echo".to_owned(), vec![json!(1)]),
            ("echo".to_owned(), vec![json!(2)]),
        ]
    );
    // Nothing after the disconnect, and `recv` has nothing either.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(seen.try_recv().is_err());

    // The connection's end reaches the function of a socket still joined.
    let other = Client::connect(&urls[1], ClientOptions::default())
        .await
        .unwrap();
    let socket = other.socket("/", None).await.unwrap();
    let tx = seen_tx.clone();
    socket.on_receive(move |received| {
        if received == Received::Disconnected {
            let _ = tx.send(received);
        }
    });
    other.close();
    assert_eq!(
        tokio::time::timeout(WAIT, seen.recv()).await.unwrap(),
        Some(Received::Disconnected)
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(seen.try_recv().is_err());
}
