//! The cluster end to end: real Redis, io-nodes and app-nodes as processes,
//! the official socket.io-client (tests/js) across io-nodes.

use std::time::Duration;

use iocluster_tests::{Cluster, eventually};

#[tokio::test]
async fn echo_reference_behaviour_on_every_transport_and_node() {
    let cluster = Cluster::builder("echo")
        .app_nodes("iocluster-example-echo", 2)
        .start()
        .await;
    let result = cluster.scenario("echo.mjs", &[]).await;
    assert_eq!(result["checked"].as_array().unwrap().len(), 6, "{result}");
}

#[tokio::test]
async fn rooms_broadcasts_acks_binary_and_order_across_nodes() {
    let cluster = Cluster::builder("features").start().await;
    cluster.cross_node_scenario().await;
    // The order part's events piled up behind slow ones: some travelled to
    // the app-nodes several to a queue item.
    let batched =
        iocluster_tests::metric(&cluster.io[0].ops_addr(), "iocluster_batched_events_total").await;
    assert!(batched >= 2.0, "no event was sent in a batch ({batched})");
    // Every item that came back done was timed once; items hold one or more
    // events, and disconnects are not answered.
    let ops = cluster.io[0].ops_addr();
    let timed = iocluster_tests::metric(&ops, "iocluster_event_round_trip_seconds_count").await;
    let answerable = iocluster_tests::metric(&ops, r#"iocluster_events_out_total{kind="message"}"#)
        .await
        + iocluster_tests::metric(&ops, r#"iocluster_events_out_total{kind="connect"}"#).await;
    assert!(
        timed >= 1.0 && timed <= answerable - batched / 2.0,
        "{timed} round trips timed for {answerable} events, {batched} of them batched"
    );
}

#[tokio::test]
async fn chat_example_across_nodes() {
    let cluster = Cluster::builder("chat")
        .app_nodes("iocluster-example-chat", 2)
        .start()
        .await;
    let result = cluster.scenario("chat.mjs", &[]).await;
    assert_eq!(result["chat"], "ok");
}

#[tokio::test]
async fn every_event_is_handled_exactly_once_and_spread_over_app_nodes() {
    let cluster = Cluster::builder("once").start().await;
    let (clients, events) = (20, 25);
    let result = cluster
        .scenario(
            "load.mjs",
            &[
                &format!("--clients={clients}"),
                &format!("--events={events}"),
            ],
        )
        .await;
    assert_eq!(result["acked"], clients * events);
    // Both app-nodes took part.
    let apps = result["apps"].as_object().unwrap();
    assert_eq!(apps.len(), 2, "events reached only {apps:?}");
    // connect + events + disconnect, each handled once.
    let expected = i64::from(clients * (events + 2));
    let total = eventually(
        Duration::from_secs(10),
        "every disconnect handled",
        || async {
            let total = cluster.handled_total().await;
            (total >= expected).then_some(total)
        },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(cluster.handled_total().await, total);
    assert_eq!(total, expected, "some event was handled twice or never");
    let reasons = cluster.disconnect_reasons().await;
    assert_eq!(reasons.len(), clients as usize);
    assert!(
        reasons
            .iter()
            .all(|r| r.ends_with("client namespace disconnect") || r.ends_with("transport close")),
        "{reasons:?}"
    );
}

#[tokio::test]
async fn event_batch_one_sends_every_event_alone() {
    // `event_batch = 1` keeps the queue format of app-nodes from before
    // batching (one event per item), for a rolling upgrade: the features
    // scenario still passes, its order part included, and no item held
    // more than one event. The io-nodes also run on one runtime thread
    // (`--worker-threads 1`, as `scripts/bench.sh --threads 1` runs them).
    let config =
        std::env::temp_dir().join(format!("iocluster-batch-one-{}.toml", std::process::id()));
    std::fs::write(&config, "event_batch = 1\n").unwrap();
    let cluster = Cluster::builder("batch-one")
        .io_args(&[
            "--config",
            config.to_str().unwrap(),
            "--worker-threads",
            "1",
        ])
        .start()
        .await;
    let result = cluster.scenario("cluster.mjs", &[]).await;
    for part in ["rooms", "acks", "order", "disconnects"] {
        assert_eq!(result[part], "ok", "{part}: {result}");
    }
    for io in &cluster.io {
        let batched =
            iocluster_tests::metric(&io.ops_addr(), "iocluster_batched_events_total").await;
        assert_eq!(batched, 0.0, "{} sent batched items", io.id);
    }
}

#[tokio::test]
async fn an_app_node_killed_mid_event_loses_nothing() {
    let mut cluster = Cluster::builder("kill-app").start().await;
    let scenario =
        cluster.spawn_scenario("load.mjs", &["--clients=16", "--events=8", "--slow=150"]);
    // Let both app-nodes hold events, then kill one without warning.
    tokio::time::sleep(Duration::from_millis(700)).await;
    cluster.apps[0].process.kill();
    let result = scenario.await.unwrap();
    assert_eq!(result["acked"], 16 * 8, "{result}");
    // The survivor took over the dead node's events.
    assert!(result["apps"]["app1"].as_u64().unwrap() > 0, "{result}");
    assert_eq!(
        cluster.inflight_len("app0").await,
        0,
        "the dead app-node's in-flight events were handed back"
    );
    // A restarted app-node serves again without any client noticing.
    cluster.start_app().await;
    let again = cluster
        .scenario("load.mjs", &["--clients=4", "--events=4"])
        .await;
    assert_eq!(again["acked"], 16);
}

#[tokio::test]
async fn an_app_node_killed_mid_batch_loses_nothing() {
    // Each socket emits 8 slow events at once: the first travels alone, the
    // other 7 pile up behind it and travel as one queue item. Killing an
    // app-node in the middle of such items hands them back whole: every
    // event is answered, and the handlers that had already run for the
    // item run again on the survivor (at-least-once).
    let mut cluster = Cluster::builder("kill-app-batch").start().await;
    let scenario = cluster.spawn_scenario(
        "load.mjs",
        &["--clients=16", "--events=8", "--slow=150", "--burst"],
    );
    eventually(
        Duration::from_secs(20),
        "batched items in flight",
        || async {
            let mut batched = 0.0;
            for io in &cluster.io {
                batched +=
                    iocluster_tests::metric(&io.ops_addr(), "iocluster_batched_events_total").await;
            }
            (batched >= 7.0).then_some(())
        },
    )
    .await;
    // Two handlers of the first items have run.
    tokio::time::sleep(Duration::from_millis(300)).await;
    cluster.apps[0].process.kill();
    let result = scenario.await.unwrap();
    assert_eq!(result["acked"], 16 * 8, "{result}");
    assert!(result["apps"]["app1"].as_u64().unwrap() > 0, "{result}");
    // 16 connections and 128 events, plus what ran again.
    let handled = cluster.handled_total().await;
    assert!(handled > 16 + 128, "no handler ran again: {handled}");
    assert_eq!(
        cluster.inflight_len("app0").await,
        0,
        "the dead app-node's items were handed back"
    );
}

/// A queue of four partitions on one Redis: a socket's messages go to its
/// partition, its connect to the first; app-nodes take from all four. A
/// burst keeps its order, and an app-node killed with items in flight in
/// several partitions has every one of them handed back.
#[tokio::test]
async fn a_partitioned_queue_keeps_order_and_hands_back_every_partition() {
    let mut cluster = Cluster::builder("partitions")
        .io_args(&["--queue-partitions", "4"])
        .start()
        .await;
    let keys = cluster.keys();
    let mut redis = cluster.redis().await;
    assert_eq!(
        iocluster_ops::queue_partitions(&mut redis, &keys)
            .await
            .unwrap(),
        4
    );
    let result = cluster.scenario("burst.mjs", &["--events=200"]).await;
    for transport in ["websocket", "polling", "upgrade"] {
        assert_eq!(result[transport]["acks"], 200, "{result}");
    }

    let scenario = cluster.spawn_scenario(
        "load.mjs",
        &["--clients=16", "--events=8", "--slow=150", "--burst"],
    );
    // Items in flight in at least two partitions past the first.
    eventually(
        Duration::from_secs(20),
        "items in several partitions",
        || async {
            let held = cluster
                .partition_lengths(1..4, |partition| {
                    vec![partition.inflight("app0"), partition.inflight("app1")]
                })
                .await;
            (held.iter().filter(|&&n| n > 0).count() >= 2).then_some(())
        },
    )
    .await;
    cluster.apps[0].process.kill();
    let result = scenario.await.unwrap();
    assert_eq!(result["acked"], 16 * 8, "{result}");
    assert!(result["apps"]["app1"].as_u64().unwrap() > 0, "{result}");
    assert_eq!(
        cluster.inflight_len("app0").await,
        0,
        "the dead app-node's items were handed back from every partition"
    );
    // Its lease keys went with them.
    for k in 1..4 {
        let exists: bool = redis::cmd("EXISTS")
            .arg(keys.partition(k).lease("app0"))
            .query_async(&mut redis)
            .await
            .unwrap();
        assert!(!exists, "partition {k} still holds app0's lease");
    }
}

/// Every app-node killed (kill -9) with a partitioned queue: the clients'
/// events wait in their partitions, and the first app-node back takes
/// them from every partition; each is answered, no client is dropped.
#[tokio::test]
async fn every_app_node_killed_with_a_partitioned_queue_loses_no_event() {
    let mut cluster = Cluster::builder("partitions-outage")
        .io_args(&["--queue-partitions", "4"])
        .heartbeat(2_000, 5_000)
        .start()
        .await;
    let mut clients = Vec::new();
    let mut sockets = Vec::new();
    // 16 sockets: all in fewer than two of the partitions past the first
    // has a chance of about 3 / 2^16.
    for i in 0..16 {
        let client = iocluster_client::Client::connect(
            &cluster.io[i % cluster.io.len()].url(),
            iocluster_client::ClientOptions::default(),
        )
        .await
        .unwrap();
        let socket = client.socket("/", None).await.unwrap();
        socket
            .recv_event(Duration::from_secs(5))
            .await
            .expect("welcome");
        clients.push(client);
        sockets.push(socket);
    }
    for app in &mut cluster.apps {
        app.process.kill();
    }
    let frontend = cluster.start_frontend().await;
    let answers = futures_util::future::join_all(sockets.iter().map(|socket| {
        socket.emit_with_ack("slow", vec![serde_json::json!(0)], Duration::from_secs(30))
    }));
    let back = async {
        // The events wait in at least two partitions past the first.
        eventually(
            Duration::from_secs(10),
            "events in several partitions",
            || async {
                let waiting = cluster
                    .partition_lengths(1..4, |partition| vec![partition.events()])
                    .await;
                (waiting.iter().filter(|&&n| n > 0).count() >= 2).then_some(())
            },
        )
        .await;
        // The dashboard's queue depth counts every partition: one event
        // per socket waits.
        eventually(
            Duration::from_secs(10),
            "the queue depth over every partition",
            || async {
                let (status, view) = frontend.api("GET", "/api/v1/cluster", None).await;
                (status == 200 && view["queueDepth"] == sockets.len()).then_some(())
            },
        )
        .await;
        // Past the dead app-nodes' leases, then one comes back.
        tokio::time::sleep(Duration::from_millis(2 * iocluster_tests::LEASE_MS)).await;
        cluster.start_app().await;
    };
    let (answers, ()) = tokio::join!(answers, back);
    for answer in answers {
        answer.expect("every event is answered once an app-node is back");
    }
    // No socket was disconnected meanwhile.
    let reasons = cluster.disconnect_reasons().await;
    for socket in &sockets {
        assert!(
            !reasons.iter().any(|r| r.starts_with(socket.id())),
            "{reasons:?}"
        );
    }
    drop(clients);
}

/// Every app-node stops (a deploy that restarts them all at once) for longer
/// than their leases: stock clients connecting meanwhile are never refused
/// for good. The namespace stays served (`namespace_memory`); an admission
/// no app-node answers in time closes the connection, and the client
/// reconnects and asks again until an app-node is back. A client already
/// connected keeps its connection, and its event is answered.
#[tokio::test]
async fn clients_connecting_while_no_app_node_runs_are_admitted_when_one_returns() {
    // Heartbeats as in production, not the harness's 400 ms: what is
    // tested is the app-nodes' absence, and the client connected before it
    // must not miss a ping on a loaded machine (it did once in CI, with
    // the file's twelve tests at once on two cores).
    let mut cluster = Cluster::builder("app-outage")
        .app_nodes("iocluster-test-app", 1)
        .heartbeat(2_000, 5_000)
        .io_args(&["--admission-timeout", "700"])
        .start()
        .await;
    let client = iocluster_client::Client::connect(
        &cluster.io[0].url(),
        iocluster_client::ClientOptions::default(),
    )
    .await
    .unwrap();
    let socket = client.socket("/", None).await.unwrap();
    socket
        .recv_event(Duration::from_secs(5))
        .await
        .expect("welcome");
    cluster.apps[0]
        .process
        .terminate(Duration::from_secs(15))
        .await
        .expect("the app-node was running");
    // Past its lease: the namespace's lease has lapsed too.
    tokio::time::sleep(Duration::from_millis(2 * iocluster_tests::LEASE_MS)).await;
    let scenario = cluster.spawn_scenario("outage.mjs", &["--clients=3"]);
    let answered = async {
        socket
            .emit_with_ack("slow", vec![serde_json::json!(0)], Duration::from_secs(30))
            .await
    };
    let back = async {
        // Several admission timeouts and reconnects meanwhile.
        tokio::time::sleep(Duration::from_secs(3)).await;
        cluster.start_app().await;
    };
    let (answered, ()) = tokio::join!(answered, back);
    answered.expect("the connected client's event is answered");
    let result = scenario.await.unwrap();
    for transport in ["websocket", "polling"] {
        assert_eq!(result[transport]["admitted"], 3, "{result}");
        assert_eq!(result[transport]["answered"], 3, "{result}");
    }
    let reconnects = result["websocket"]["reconnects"].as_u64().unwrap()
        + result["polling"]["reconnects"].as_u64().unwrap();
    assert!(
        reconnects > 0,
        "admissions timed out and were retried: {result}"
    );
    // The abandoned attempts reach the application as connect + disconnect
    // (reason `admission timeout`), the scenario's clients left when done,
    // and the client connected before the outage was never disconnected.
    let reasons = cluster.disconnect_reasons().await;
    assert!(
        reasons.iter().all(|r| r.ends_with("admission timeout")
            || r.ends_with("client namespace disconnect")),
        "{reasons:?}"
    );
    assert!(
        !reasons.iter().any(|r| r.starts_with(socket.id())),
        "{reasons:?}"
    );
    drop(client);
}

#[tokio::test]
async fn namespaces_nobody_serves_are_refused() {
    let cluster = Cluster::builder("invalid-namespace")
        .io_nodes(1)
        .app_nodes("iocluster-example-echo", 1)
        .start()
        .await;
    let url = cluster.io[0].url();
    let result = iocluster_tests::node_scenario(
        "connect-error.mjs",
        &[
            format!("--url={url}"),
            "--nsp=/admin".into(),
            "--expect=Invalid namespace".into(),
        ],
    )
    .await;
    assert_eq!(result["message"], "Invalid namespace");
}

/// A stock client emitting far more acked events at once than an io-node
/// lets wait per socket is slowed down, not cut off: every ack arrives, in
/// order, on every transport.
#[tokio::test]
async fn a_burst_of_events_is_slowed_down_not_cut_off() {
    // Heartbeats as in production, not the harness's 400 ms: what is tested
    // is backpressure, on a shared machine.
    let cluster = Cluster::builder("burst")
        .io_nodes(1)
        .heartbeat(2_000, 5_000)
        .start()
        .await;
    let result = cluster.scenario("burst.mjs", &["--events=2000"]).await;
    for transport in ["websocket", "polling", "upgrade"] {
        assert_eq!(result[transport]["acks"], 2000, "{result}");
    }
    let pauses =
        iocluster_tests::metric(&cluster.io[0].ops_addr(), "iocluster_client_pauses_total").await;
    assert!(
        pauses >= 1.0,
        "the burst went past max_pending_events: {result}"
    );
}

/// An app-node killed and started again at once under the same id (what a
/// supervisor with a fixed id does), before its lease lapses: the events
/// its previous life held go back to the queue as it starts, not when an
/// io-node's redelivery gives up on them, and every ack arrives.
#[tokio::test]
async fn an_app_node_restarted_under_its_id_hands_back_what_it_held_at_once() {
    let mut cluster = Cluster::builder("restart-app-same-id")
        .app_nodes("iocluster-test-app", 1)
        .start()
        .await;
    // Each ack within 10 s: the io-nodes would push an event again only
    // after redeliver_after (60 s).
    let scenario = cluster.spawn_scenario(
        "load.mjs",
        &[
            "--clients=16",
            "--events=8",
            "--slow=300",
            "--ackTimeout=10000",
        ],
    );
    // Several of the 300 ms events in flight at once, not just the quick
    // connect events of the start (which could all be done by the kill).
    eventually(Duration::from_secs(10), "events in flight", || async {
        (cluster.inflight_len("app0").await >= 8).then_some(())
    })
    .await;
    cluster.apps[0].process.kill();
    let left = cluster.inflight_len("app0").await;
    assert!(left > 0, "the killed app-node held events");
    cluster.restart_app(0).await;
    let result = scenario.await.unwrap();
    assert_eq!(result["acked"], 16 * 8, "{result}");
    let log = std::fs::read_to_string(cluster.logs().join("app0.log")).unwrap();
    assert!(
        log.contains("left events in flight"),
        "the restarted app-node handed its previous life's events back"
    );
}
