//! Faults done for real: io-nodes killed with SIGKILL, Redis killed and
//! restarted empty, app-nodes replaced under load, clients that stop reading
//! or flood. Each test prints how long recovery took (for
//! docs/RELIABILITY.md); none asserts a duration.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use iocluster_client::{Client, Socket};
use iocluster_tests::{Cluster, eventually, http, metric, socket_on};
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

const WAIT: Duration = Duration::from_secs(10);

/// A Rust client connected to namespace `/` of `url`, with `auth`.
async fn connected(url: &str, auth: Option<serde_json::Value>) -> (Client, Socket) {
    socket_on(url, auth).await.unwrap()
}

/// Sids of the sockets an io-node's ledger holds.
async fn ledger(cluster: &Cluster, node: &str) -> Vec<String> {
    let mut redis = cluster.redis().await;
    redis::cmd("HKEYS")
        .arg(format!("{}:sockets:{node}", cluster.prefix))
        .query_async(&mut redis)
        .await
        .unwrap()
}

/// The disconnect events handled with `reason`, by sid.
async fn disconnected_with(cluster: &Cluster, reason: &str) -> Vec<String> {
    cluster
        .disconnect_reasons()
        .await
        .into_iter()
        .filter_map(|line| {
            let (sid, why) = line.split_once(' ')?;
            (why == reason).then(|| sid.to_owned())
        })
        .collect()
}

fn assert_once_each(announced: &[String], expected: &[String]) {
    let unique: HashSet<&String> = announced.iter().collect();
    assert_eq!(
        unique.len(),
        announced.len(),
        "announced twice: {announced:?}"
    );
    let expected: HashSet<&String> = expected.iter().collect();
    assert_eq!(unique, expected);
}

#[tokio::test]
async fn a_killed_io_node_is_announced_once_and_its_clients_fail_over() {
    let mut cluster = Cluster::builder("kill-io").io_nodes(3).start().await;
    // Bystanders on another node must not be touched.
    let (_bystander_client, bystander) = connected(&cluster.io[1].url(), None).await;
    let clients = 40;
    let scenario = cluster.spawn_scenario("failover.mjs", &[&format!("--clients={clients}")]);
    let sids = eventually(WAIT, "every client admitted on io0", || async {
        let sids = ledger(&cluster, "io0").await;
        (sids.len() == clients && cluster.handled_total().await > clients as i64).then_some(sids)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    let killed = Instant::now();
    cluster.io[0].process.kill();
    // Two surviving io-nodes race to drain the dead node's ledger.
    eventually(WAIT, "a disconnect event per lost socket", || async {
        let announced = disconnected_with(&cluster, "io-node lost").await;
        (announced.len() >= clients).then_some(())
    })
    .await;
    eprintln!(
        "recovery: {clients} disconnect events handled {} ms after SIGKILL (lease {} ms)",
        killed.elapsed().as_millis(),
        iocluster_tests::LEASE_MS
    );
    let result = scenario.await.unwrap();
    eprintln!(
        "recovery: {clients} clients failed over within {} ms of SIGKILL",
        killed.elapsed().as_millis()
    );
    assert_eq!(result["failedOver"], clients, "{result}");
    assert_eq!(result["reasons"], json!(["transport close"]), "{result}");
    let first: Vec<String> = serde_json::from_value(result["firstSids"].clone()).unwrap();
    let mut expected = sids.clone();
    expected.sort();
    let mut first_sorted = first.clone();
    first_sorted.sort();
    assert_eq!(
        first_sorted, expected,
        "the ledger held exactly the clients"
    );

    // Nothing more comes, and nothing twice.
    tokio::time::sleep(Duration::from_millis(2 * iocluster_tests::LEASE_MS)).await;
    assert_once_each(&disconnected_with(&cluster, "io-node lost").await, &sids);
    assert!(ledger(&cluster, "io0").await.is_empty());
    assert!(!cluster.registered("nodes", "io0").await);
    // The bystander is still there and served.
    let answer = bystander
        .emit_with_ack("slow", vec![json!(0)], WAIT)
        .await
        .unwrap();
    assert!(answer.args[0].as_str().unwrap().starts_with("app"));
    let by_id = bystander.id().to_owned();
    assert!(
        !cluster
            .disconnect_reasons()
            .await
            .iter()
            .any(|line| line.starts_with(&by_id))
    );
}

#[tokio::test]
async fn an_io_node_restarted_under_its_old_id_announces_its_previous_clients() {
    // One io-node: nobody else could drain its ledger.
    let mut cluster = Cluster::builder("restart-io")
        .io_nodes(1)
        .app_nodes("iocluster-test-app", 1)
        .start()
        .await;
    let mut sids = Vec::new();
    let mut held = Vec::new();
    for _ in 0..5 {
        let (client, socket) = connected(&cluster.io[0].url(), None).await;
        sids.push(socket.id().to_owned());
        held.push((client, socket));
    }
    cluster.restart_io(0).await;
    let announced = eventually(WAIT, "the previous life's sockets announced", || async {
        let announced = disconnected_with(&cluster, "io-node lost").await;
        (announced.len() >= sids.len()).then_some(announced)
    })
    .await;
    assert_once_each(&announced, &sids);
    // The restarted node serves new clients.
    let (_client, socket) = connected(&cluster.io[0].url(), None).await;
    socket
        .emit_with_ack("slow", vec![json!(0)], WAIT)
        .await
        .unwrap();
}

/// The app-node calls its scripts by hash. A Redis that forgets them
/// (`SCRIPT FLUSH`, as a restart does) answers NOSCRIPT having run nothing;
/// the app-node loads them again and no event is lost or stuck: neither one
/// taken by the blocking pop that the take script was pipelined behind, nor
/// one whose flush (`done` and ack) failed.
#[tokio::test]
async fn redis_forgetting_its_scripts_loses_no_event() {
    let cluster = Cluster::builder("script-flush").io_nodes(1).start().await;
    let (_client, socket) = connected(&cluster.io[0].url(), None).await;
    assert_eq!(socket.recv_event(WAIT).await.unwrap().name, "welcome");
    let mut redis = cluster.redis().await;
    for round in 0..3 {
        // The app-nodes are idle, blocked in BLMOVE with the take script
        // queued behind it, when the scripts go.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let _: () = redis::cmd("SCRIPT")
            .arg("FLUSH")
            .query_async(&mut redis)
            .await
            .unwrap();
        let answers = futures_util::future::join_all(
            (0..4).map(|n| socket.emit_with_ack("append", vec![json!([round, n])], WAIT)),
        )
        .await;
        for answer in answers {
            answer.expect("every event is answered after SCRIPT FLUSH");
        }
    }
    for app in ["app0", "app1"] {
        assert_eq!(cluster.inflight_len(app).await, 0, "{app} kept an event");
    }
}

#[tokio::test]
async fn redis_restarted_empty_keeps_clients_connected_and_loses_no_event() {
    let mut cluster = Cluster::builder("redis-restart").start().await;
    let frontend = cluster.start_frontend().await;
    let frontend_ops = frontend.ops_addr();
    let (_a_client, a) = connected(&cluster.io[0].url(), Some(json!({ "rooms": ["r"] }))).await;
    let (_b_client, b) = connected(&cluster.io[1].url(), Some(json!({ "rooms": ["r"] }))).await;
    assert_eq!(a.recv_event(WAIT).await.unwrap().name, "welcome");
    assert_eq!(b.recv_event(WAIT).await.unwrap().name, "welcome");

    cluster.redis.stop();
    let down = Instant::now();
    // Events sent while Redis is down wait in the io-node, in order.
    let pending: Vec<_> = (0..3)
        .map(|n| a.emit_with_ack("append", vec![json!(n)], Duration::from_secs(30)))
        .collect();
    let pending = futures_util::future::join_all(pending);
    let ops = cluster.io[0].ops_addr();
    eventually(WAIT, "io0 reports not ready", || async {
        let ready = http(&ops, "GET", "/ready", &[], b"").await.ok()?;
        (ready.status == 503).then_some(())
    })
    .await;
    // The frontend too: it can list no io-node without Redis.
    eventually(WAIT, "the frontend reports not ready", || async {
        let ready = http(&frontend_ops, "GET", "/ready", &[], b"").await.ok()?;
        (ready.status == 503).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    cluster.redis.restart().await;
    let back = Instant::now();
    let answers = tokio::time::timeout(Duration::from_secs(30), pending)
        .await
        .expect("the events were handled after Redis came back");
    eprintln!(
        "recovery: events sent during a {} ms Redis outage answered {} ms after it came back",
        back.duration_since(down).as_millis(),
        back.elapsed().as_millis()
    );
    for answer in answers {
        answer.expect("every event sent during the outage is answered");
    }
    // The socket's state lives in the io-node: still there.
    let state = a.emit_with_ack("state", vec![], WAIT).await.unwrap();
    assert_eq!(state.args[0]["rooms"], json!(["r"]), "{state:?}");
    // Room subscriptions are restored: a room emit from io0 reaches io1.
    eventually(WAIT, "the room works across nodes again", || async {
        a.emit_with_ack(
            "toRoom",
            vec![json!({ "rooms": ["r"], "event": "hello", "data": 1 })],
            WAIT,
        )
        .await
        .ok()?;
        let got = b.recv_event(Duration::from_millis(500)).await.ok()?;
        (got.name == "hello").then_some(())
    })
    .await;
    eventually(WAIT, "io0 ready again", || async {
        let ready = http(&ops, "GET", "/ready", &[], b"").await.ok()?;
        (ready.status == 200).then_some(())
    })
    .await;
    eventually(WAIT, "the frontend ready again", || async {
        let ready = http(&frontend_ops, "GET", "/ready", &[], b"").await.ok()?;
        (ready.status == 200).then_some(())
    })
    .await;
    // Nobody was disconnected, no process died, the ledger is back.
    assert!(cluster.disconnect_reasons().await.is_empty());
    for app in &mut cluster.apps {
        assert!(app.process.is_running(), "app-node {} survived", app.id);
    }
    eventually(WAIT, "the ledger rewritten", || async {
        (ledger(&cluster, "io0").await == vec![a.id().to_owned()]).then_some(())
    })
    .await;
    // The outage in the logs: one warn line per task (not one per retry),
    // and a line when Redis answers again.
    let log = std::fs::read_to_string(cluster.logs().join("io0.log")).unwrap();
    let renewals = log
        .lines()
        .filter(|line| line.contains("cannot renew the node lease"))
        .count();
    assert!(renewals <= 1, "{renewals} warn lines for one short outage");
    assert!(
        log.contains("Redis answers again"),
        "no line for the end of the outage"
    );
}

#[tokio::test]
async fn every_app_node_replaced_one_by_one_while_clients_talk() {
    let mut cluster = Cluster::builder("rolling-deploy").start().await;
    let scenario =
        cluster.spawn_scenario("load.mjs", &["--clients=12", "--events=40", "--slow=20"]);
    tokio::time::sleep(Duration::from_millis(300)).await;
    for old in 0..2 {
        cluster.start_app().await;
        let status = cluster.apps[old]
            .process
            .terminate(Duration::from_secs(15))
            .await
            .expect("the app-node was running");
        assert!(status.success(), "app-node exited with {status}");
    }
    let result = scenario.await.unwrap();
    // load.mjs connects without reconnection: a dropped connection would
    // have failed it.
    assert_eq!(result["acked"], 12 * 40, "{result}");
    let served_by_new =
        result["apps"]["app2"].as_u64().unwrap_or(0) + result["apps"]["app3"].as_u64().unwrap_or(0);
    assert!(served_by_new > 0, "{result}");
}

/// Reads `ws` to its close frame: the data messages before it, or what
/// went wrong instead (a protocol error, or an end without a close frame).
async fn read_to_close(mut ws: RawWs) -> Result<usize, String> {
    let mut messages = 0;
    loop {
        match tokio::time::timeout(WAIT, ws.next()).await {
            Ok(Some(Ok(Message::Close(_)))) => return Ok(messages),
            Ok(Some(Ok(_))) => messages += 1,
            Ok(Some(Err(error))) => return Err(format!("after {messages} messages: {error}")),
            Ok(None) => return Err(format!("ended after {messages} messages without a close")),
            Err(_) => return Err(format!("silent after {messages} messages")),
        }
    }
}

type RawWs =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A raw WebSocket client connected to `/` with `auth`; returns the stream
/// and the socket id.
async fn raw_client(addr: &str, auth: serde_json::Value) -> (RawWs, String) {
    let url = format!("ws://{addr}/socket.io/?EIO=4&transport=websocket");
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    ws.send(Message::text(format!("40{auth}"))).await.unwrap();
    loop {
        let message = tokio::time::timeout(WAIT, ws.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        if let Message::Text(text) = message
            && let Some(json) = text.as_str().strip_prefix("40")
        {
            let value: serde_json::Value = serde_json::from_str(json).unwrap();
            return (ws, value["sid"].as_str().unwrap().to_owned());
        }
    }
}

#[tokio::test]
async fn a_client_that_stops_reading_is_cut_off_and_nobody_else_suffers() {
    let cluster = Cluster::builder("slow-client")
        .io_nodes(1)
        .app_nodes("iocluster-test-app", 1)
        // Long heartbeats: the stuck client must be caught by its outbox,
        // not by a ping timeout.
        .io_args(&[
            "--outbox-capacity",
            "64",
            "--ping-interval",
            "20000",
            "--ping-timeout",
            "20000",
        ])
        .start()
        .await;
    let (stuck, stuck_sid) = raw_client(&cluster.io[0].addr(), json!({ "rooms": ["r"] })).await;
    let mut stuck = Some(stuck);
    let mut drained = None;
    let cut_off = r#"iocluster_connections_closed_total{reason="slow client"}"#;
    let (_client, reader) = connected(&cluster.io[0].url(), Some(json!({ "rooms": ["r"] }))).await;
    assert_eq!(reader.recv_event(WAIT).await.unwrap().name, "welcome");
    // 25 MB in rounds a reader keeps up with; the stuck client gets all of
    // it queued, far past its outbox and its socket buffers.
    let (rounds, count) = (20, 20);
    for _ in 0..rounds {
        reader
            .emit_with_ack(
                "flood",
                vec![json!({ "room": "r", "count": count, "size": 65536 })],
                WAIT,
            )
            .await
            .unwrap();
        for n in 0..count {
            let event = reader.recv_event(WAIT).await.unwrap();
            assert_eq!(event.name, "blob");
            assert_eq!(event.args[0]["n"], n, "in order, none missing");
        }
        // Once cut off, the stuck client reads again: what the io-node had
        // begun to write it finishes, so whole frames and then a close
        // frame arrive, not a frame cut in two.
        if stuck.is_some() && metric(&cluster.io[0].ops_addr(), cut_off).await >= 1.0 {
            drained = Some(tokio::spawn(read_to_close(stuck.take().unwrap())));
        }
    }
    let reasons = eventually(WAIT, "the stuck client disconnected", || async {
        let reasons = disconnected_with(&cluster, "slow client").await;
        (!reasons.is_empty()).then_some(reasons)
    })
    .await;
    assert_eq!(reasons, vec![stuck_sid]);
    let closed = metric(&cluster.io[0].ops_addr(), cut_off).await;
    assert_eq!(closed, 1.0);
    let drained = drained.expect("cut off while the rounds ran");
    let frames = drained
        .await
        .unwrap()
        .expect("a whole stream ending in a close frame");
    assert!(frames > 0);
    // The reader is still connected and served.
    reader
        .emit_with_ack("slow", vec![json!(0)], WAIT)
        .await
        .unwrap();
}

/// The io-node's watch task: a client that never joins a namespace is
/// closed at the connect timeout (it answers pings, so nothing else closes
/// it); one that joined and answers pings is pinged every interval and stays.
#[tokio::test]
async fn clients_that_never_join_are_closed_and_those_that_answer_pings_stay() {
    let cluster = Cluster::builder("watch")
        .io_nodes(1)
        .app_nodes("iocluster-test-app", 1)
        .io_args(&[
            "--connect-timeout",
            "600",
            "--ping-interval",
            "300",
            "--ping-timeout",
            "300",
        ])
        .start()
        .await;
    let addr = cluster.io[0].addr();
    let url = format!("ws://{addr}/socket.io/?EIO=4&transport=websocket");
    let (mut lurker, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    let (mut joined, _) = raw_client(&addr, json!({})).await;
    let started = Instant::now();
    let (mut pings, mut lurker_closed) = (0, None);
    while started.elapsed() < Duration::from_secs(3) {
        tokio::select! {
            message = joined.next() => match message {
                Some(Ok(Message::Text(text))) if text.as_str() == "2" => {
                    pings += 1;
                    joined.send(Message::text("3")).await.unwrap();
                }
                Some(Ok(_)) => {}
                other => panic!("the client that joined was closed: {other:?}"),
            },
            message = lurker.next(), if lurker_closed.is_none() => match message {
                Some(Ok(Message::Text(text))) if text.as_str() == "2" => {
                    lurker.send(Message::text("3")).await.unwrap();
                }
                Some(Ok(Message::Text(_) | Message::Ping(_) | Message::Pong(_))) => {}
                _ => lurker_closed = Some(started.elapsed()),
            },
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
        }
    }
    let closed_after = lurker_closed.expect("the client that never joined was closed");
    println!("closed after {closed_after:?} (connect timeout 600 ms); {pings} pings in 3 s");
    assert!(pings >= 4, "pinged every 300 ms for 3 s, got {pings}");
    let ops = cluster.io[0].ops_addr();
    eventually(WAIT, "one close for a connect timeout", || async {
        let closed = metric(
            &ops,
            r#"iocluster_connections_closed_total{reason="connect timeout"}"#,
        )
        .await;
        (closed == 1.0).then_some(())
    })
    .await;
    assert_eq!(metric(&ops, "iocluster_connections").await, 1.0);
}

#[tokio::test]
async fn floods_are_slowed_and_connection_counts_capped() {
    let cluster = Cluster::builder("floods")
        .io_nodes(1)
        .app_nodes("iocluster-test-app", 1)
        .io_args(&[
            "--max-connections",
            "3",
            "--max-packets-per-second",
            "40",
            // The raw client answers no heartbeat.
            "--ping-interval",
            "20000",
            "--ping-timeout",
            "20000",
        ])
        .start()
        .await;
    let addr = cluster.io[0].addr();
    let (mut ws, _) = raw_client(&addr, json!({})).await;
    // 100 pings at once: 40 pass at once, the rest at 40/s; all answered,
    // the connection stays up.
    for n in 0..100 {
        ws.feed(Message::text(format!("2{n}"))).await.unwrap();
    }
    ws.flush().await.unwrap();
    let mut pongs = 0;
    while pongs < 100 {
        let message = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("pongs keep coming")
            .unwrap()
            .unwrap();
        if let Message::Text(text) = message
            && text.as_str().starts_with('3')
        {
            assert_eq!(text.as_str(), format!("3{pongs}"), "in order");
            pongs += 1;
        }
    }
    let throttled = metric(
        &cluster.io[0].ops_addr(),
        "iocluster_throttled_packets_total",
    )
    .await;
    assert!(throttled > 0.0, "the flood was throttled and counted");

    // Connection cap: 3 sessions (the raw client is one).
    let handshake = "/socket.io/?EIO=4&transport=polling";
    for _ in 0..2 {
        let ok = http(&addr, "GET", handshake, &[], b"").await.unwrap();
        assert_eq!(ok.status, 200);
    }
    let refused = http(&addr, "GET", handshake, &[], b"").await.unwrap();
    assert_eq!(refused.status, 503, "{}", refused.text());
    assert!(refused.text().contains("Server unavailable"));
    let counted = metric(
        &cluster.io[0].ops_addr(),
        "iocluster_connections_refused_total",
    )
    .await;
    assert_eq!(counted, 1.0);
}

#[tokio::test]
async fn clients_connect_over_tls() {
    let logs = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("target")
        .join("test-logs");
    std::fs::create_dir_all(&logs).unwrap();
    let certified =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
            .unwrap();
    let cert = logs.join("tls-cert.pem");
    let key = logs.join("tls-key.pem");
    std::fs::write(&cert, certified.cert.pem()).unwrap();
    std::fs::write(&key, certified.signing_key.serialize_pem()).unwrap();
    let cluster = Cluster::builder("tls")
        .io_nodes(1)
        .app_nodes("iocluster-test-app", 1)
        .io_args(&[
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ])
        .start()
        .await;
    let url = format!("https://{}", cluster.io[0].addr());
    let result = iocluster_tests::node_scenario(
        "tls.mjs",
        &[format!("--urls={url}"), format!("--ca={}", cert.display())],
    )
    .await;
    assert_eq!(
        result,
        json!({ "websocket": "websocket", "polling": "polling", "upgrade": "websocket" })
    );
    // Plain HTTP on the TLS port gets nowhere.
    let plain = http(
        &cluster.io[0].addr(),
        "GET",
        "/socket.io/?EIO=4&transport=polling",
        &[],
        b"",
    )
    .await;
    assert!(plain.is_err() || plain.unwrap().status != 200);
}

#[tokio::test]
async fn every_node_reports_health_readiness_and_metrics() {
    let cluster = Cluster::builder("ops")
        .io_nodes(1)
        .app_nodes("iocluster-test-app", 1)
        .start()
        .await;
    let io = cluster.io[0].ops_addr();
    let app = cluster.apps[0].ops_addr();
    // What each node kind exports before any traffic, against
    // docs/DEPLOY.md: tests/tests/operations.rs.
    for addr in [&io, &app] {
        for path in ["/health", "/ready"] {
            let response = http(addr, "GET", path, &[], b"").await.unwrap();
            assert_eq!(response.status, 200, "{addr}{path}");
        }
    }
    let (_client, socket) = connected(&cluster.io[0].url(), None).await;
    for n in 0..5 {
        socket
            .emit_with_ack("echo", vec![json!(n)], WAIT)
            .await
            .unwrap();
    }
    let sample = |addr: String, name: &'static str| async move { metric(&addr, name).await };
    assert_eq!(sample(io.clone(), "iocluster_connections").await, 1.0);
    assert_eq!(
        sample(io.clone(), r#"iocluster_events_out_total{kind="message"}"#).await,
        5.0
    );
    assert_eq!(
        sample(
            io.clone(),
            r#"iocluster_client_packets_total{type="event"}"#
        )
        .await,
        5.0
    );
    assert!(sample(io.clone(), r#"iocluster_commands_total{type="done"}"#).await >= 6.0);
    assert!(sample(io.clone(), "iocluster_deliveries_total").await >= 5.0);
    assert_eq!(
        sample(
            app.clone(),
            r#"iocluster_events_handled_total{kind="message"}"#
        )
        .await,
        5.0
    );
    assert_eq!(
        sample(
            app.clone(),
            r#"iocluster_handler_seconds_count{kind="message"}"#
        )
        .await,
        5.0
    );
}

#[tokio::test]
async fn a_stalled_io_node_declared_dead_closes_its_clients_without_announcing_twice() {
    let cluster = Cluster::builder("stall-io").io_nodes(2).start().await;
    let mut held = Vec::new();
    for _ in 0..5 {
        held.push(connected(&cluster.io[0].url(), None).await);
    }
    let sids: Vec<String> = held.iter().map(|(_, s)| s.id().to_owned()).collect();
    let pid = cluster.io[0].process.pid().to_string();
    // A stall longer than the lease, as a long GC pause or a partition would.
    assert!(
        std::process::Command::new("kill")
            .args(["-STOP", &pid])
            .status()
            .unwrap()
            .success()
    );
    let announced = eventually(WAIT, "the stalled node's sockets announced", || async {
        let announced = disconnected_with(&cluster, "io-node lost").await;
        (announced.len() >= sids.len()).then_some(announced)
    })
    .await;
    assert_once_each(&announced, &sids);
    assert!(
        std::process::Command::new("kill")
            .args(["-CONT", &pid])
            .status()
            .unwrap()
            .success()
    );
    // It wakes up, finds itself declared dead, and closes its clients.
    for (_, socket) in &held {
        let closed =
            tokio::time::timeout(WAIT, async { while socket.recv().await.is_some() {} }).await;
        assert!(closed.is_ok(), "client of the stalled node closed");
    }
    // Nothing was announced twice, under any reason.
    tokio::time::sleep(Duration::from_millis(2 * iocluster_tests::LEASE_MS)).await;
    let all = cluster.disconnect_reasons().await;
    for sid in &sids {
        let count = all
            .iter()
            .filter(|line| line.starts_with(sid.as_str()))
            .count();
        assert_eq!(count, 1, "{sid}: {all:?}");
    }
    // And it serves again, registered and with a fresh ledger.
    assert!(cluster.registered("nodes", "io0").await);
    let (_client, socket) = connected(&cluster.io[0].url(), None).await;
    socket
        .emit_with_ack("slow", vec![json!(0)], WAIT)
        .await
        .unwrap();
    assert_eq!(ledger(&cluster, "io0").await, vec![socket.id().to_owned()]);
}

#[tokio::test]
async fn an_event_whose_done_never_comes_is_pushed_again() {
    // A handler slower than redeliver_after looks like a lost `done` to the
    // io-node: it pushes the event again, another app-node handles it, and
    // the client still gets exactly its one answer.
    let cluster = Cluster::builder("redeliver")
        .io_nodes(1)
        .io_args(&["--redeliver-after", "300"])
        .start()
        .await;
    let (_client, socket) = connected(&cluster.io[0].url(), None).await;
    let before = cluster.handled_total().await;
    let answer = socket
        .emit_with_ack("slow", vec![json!(2000)], WAIT)
        .await
        .unwrap();
    assert!(answer.args[0].as_str().unwrap().starts_with("app"));
    let redelivered = metric(&cluster.io[0].ops_addr(), "iocluster_redeliveries_total").await;
    assert!(redelivered >= 1.0, "pushed again: {redelivered}");
    eventually(WAIT, "the event handled a second time", || async {
        (cluster.handled_total().await >= before + 2).then_some(())
    })
    .await;
    // The socket goes on: its next event is served.
    socket
        .emit_with_ack("slow", vec![json!(0)], WAIT)
        .await
        .unwrap();
}

#[tokio::test]
async fn undecodable_events_in_the_queue_are_dropped_and_serving_goes_on() {
    // Bytes that are no event (a foreign or buggy writer) reach an app-node:
    // it drops them from its in-flight list (the flush script's removal-only
    // message) and keeps serving.
    let cluster = Cluster::builder("garbage-events").start().await;
    let mut redis = cluster.redis().await;
    let events = format!("{}:events", cluster.prefix);
    let _: () = redis::cmd("LPUSH")
        .arg(&events)
        .arg(&b"\x93\x01"[..])
        .arg("not msgpack at all")
        .query_async(&mut redis)
        .await
        .unwrap();
    eventually(WAIT, "the garbage taken and dropped", || {
        let mut redis = redis.clone();
        let events = events.clone();
        let pattern = format!("{}:inflight:*", cluster.prefix);
        async move {
            let queued: i64 = redis::cmd("LLEN")
                .arg(&events)
                .query_async(&mut redis)
                .await
                .unwrap();
            let lists: Vec<String> = redis::cmd("KEYS")
                .arg(&pattern)
                .query_async(&mut redis)
                .await
                .unwrap();
            let mut inflight = 0;
            for list in lists {
                let n: i64 = redis::cmd("LLEN")
                    .arg(&list)
                    .query_async(&mut redis)
                    .await
                    .unwrap();
                inflight += n;
            }
            (queued == 0 && inflight == 0).then_some(())
        }
    })
    .await;
    let (_client, socket) = connected(&cluster.io[0].url(), None).await;
    let answer = socket
        .emit_with_ack("slow", vec![json!(0)], WAIT)
        .await
        .unwrap();
    assert!(answer.args[0].as_str().unwrap().starts_with("app"));
}

/// A flood of handshakes that never join a namespace, from one address,
/// takes at most that address's share of the sessions not yet joined:
/// past it the address gets 503, and a client from another address is
/// served meanwhile.
#[tokio::test]
async fn a_handshake_flood_from_one_address_leaves_room_for_everyone_else() {
    let cluster = Cluster::builder("handshake-flood")
        .io_nodes(1)
        .io_args(&["--max-unjoined-per-address", "50"])
        .start()
        .await;
    let addr = cluster.io[0].addr();
    let mut opened = 0;
    let mut refused = 0;
    for _ in 0..200 {
        let response = iocluster_tests::http(
            &addr,
            "GET",
            "/socket.io/?EIO=4&transport=polling",
            &[],
            b"",
        )
        .await
        .unwrap();
        match response.status {
            200 => opened += 1,
            503 => refused += 1,
            other => panic!("handshake answered {other}"),
        }
    }
    assert_eq!((opened, refused), (50, 150));
    // Another address is served while the flood's sessions are still open.
    let options = iocluster_client::ClientOptions {
        local_address: Some("127.0.0.2".parse().unwrap()),
        ..iocluster_client::ClientOptions::default()
    };
    let client = iocluster_client::Client::connect(&cluster.io[0].url(), options)
        .await
        .expect("a client from another address connects");
    let socket = client.socket("/", None).await.expect("and joins");
    assert_eq!(
        socket
            .recv_event(Duration::from_secs(5))
            .await
            .unwrap()
            .name,
        "welcome"
    );
    let refusals = metric(
        &cluster.io[0].ops_addr(),
        "iocluster_handshakes_refused_total",
    )
    .await;
    assert_eq!(refusals, 150.0);
}
