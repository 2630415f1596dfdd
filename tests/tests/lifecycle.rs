//! Sessions that end without a goodbye, and io-nodes that shut down: every
//! socket's `disconnect` event reaches the application once, with the reason.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt, stream};
use iocluster_tests::{Cluster, eventually, http};
use tokio_tungstenite::tungstenite::Message;

const EIO: &str = "/socket.io/?EIO=4";

async fn connections(cluster: &Cluster, node: &str) -> u64 {
    let mut redis = cluster.redis().await;
    let count: Option<u64> = redis::cmd("HGET")
        .arg(format!("{}:node:{node}", cluster.prefix))
        .arg("connections")
        .query_async(&mut redis)
        .await
        .unwrap();
    count.unwrap_or(0)
}

/// A raw WebSocket that joined `/` (its CONNECT read).
async fn joined(
    url: &str,
) -> tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>> {
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    ws.next().await.unwrap().unwrap();
    ws.send(Message::text("40")).await.unwrap();
    let connect = ws.next().await.unwrap().unwrap();
    assert!(connect.to_text().unwrap().starts_with("40"));
    ws
}

/// Opens a polling session and joins `/`, then never polls again.
async fn abandoned_polling_session(addr: String) {
    let response = http(&addr, "GET", &format!("{EIO}&transport=polling"), &[], b"")
        .await
        .unwrap();
    let open: serde_json::Value =
        serde_json::from_str(response.text().strip_prefix('0').unwrap()).unwrap();
    let sid = open["sid"].as_str().unwrap();
    let posted = http(
        &addr,
        "POST",
        &format!("{EIO}&transport=polling&sid={sid}"),
        &[],
        b"40",
    )
    .await
    .unwrap();
    assert_eq!(posted.status, 200);
}

#[tokio::test]
async fn thousands_of_abandoned_sessions_are_reclaimed_with_disconnect_events() {
    let cluster = Cluster::builder("abandoned").io_nodes(1).start().await;
    let addr = cluster.io[0].addr();
    const POLLING: usize = 2000;
    const WEBSOCKETS: usize = 200;

    stream::iter((0..POLLING).map(|_| abandoned_polling_session(addr.clone())))
        .buffer_unordered(64)
        .collect::<Vec<()>>()
        .await;

    // Half-open WebSockets: they joined, then stop reading and answering pings.
    let url = format!("ws://{addr}{EIO}&transport=websocket");
    let mut silent = Vec::new();
    for _ in 0..WEBSOCKETS {
        let (mut ws, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
        ws.next().await.unwrap().unwrap();
        ws.send(Message::text("40")).await.unwrap();
        silent.push(ws);
    }

    let reasons = eventually(
        Duration::from_secs(60),
        "a disconnect event per abandoned socket",
        || async {
            let reasons = cluster.disconnect_reasons().await;
            (reasons.len() >= POLLING + WEBSOCKETS).then_some(reasons)
        },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        cluster.disconnect_reasons().await.len(),
        POLLING + WEBSOCKETS,
        "exactly one each"
    );
    assert!(
        reasons.iter().all(|r| r.ends_with(" ping timeout")),
        "{:?}",
        &reasons[..5]
    );
    let mut sids: Vec<&str> = reasons
        .iter()
        .map(|r| r.split(' ').next().unwrap())
        .collect();
    sids.sort_unstable();
    sids.dedup();
    assert_eq!(sids.len(), POLLING + WEBSOCKETS);
    eventually(
        Duration::from_secs(10),
        "the registry to show no connection",
        || async { (connections(&cluster, "io0").await == 0).then_some(()) },
    )
    .await;
    drop(silent);
}

#[tokio::test]
async fn an_io_node_shutting_down_closes_its_clients_and_leaves_the_registry() {
    let mut cluster = Cluster::builder("io-shutdown").io_nodes(2).start().await;
    let clients = 5;
    let url = format!("ws://{}{EIO}&transport=websocket", cluster.io[0].addr());
    let mut sockets = Vec::new();
    for _ in 0..clients {
        sockets.push(joined(&url).await);
    }
    let status = cluster.io[0]
        .process
        .terminate(Duration::from_secs(10))
        .await
        .expect("the io-node was running");
    assert!(status.success(), "io-node exited with {status}");
    // Clients see the transport close (and would reconnect elsewhere).
    for ws in &mut sockets {
        let closed = tokio::time::timeout(Duration::from_secs(5), async {
            while let Some(Ok(message)) = ws.next().await {
                if message.is_close() {
                    break;
                }
            }
        })
        .await;
        assert!(closed.is_ok());
    }
    let reasons = eventually(Duration::from_secs(10), "disconnect events", || async {
        let reasons = cluster.disconnect_reasons().await;
        (reasons.len() >= clients).then_some(reasons)
    })
    .await;
    assert_eq!(reasons.len(), clients);
    assert!(
        reasons.iter().all(|r| r.ends_with("server shutting down")),
        "{reasons:?}"
    );
    assert!(
        !cluster.registered("nodes", "io0").await,
        "the node left the registry"
    );
    // The other io-node still serves.
    let result = iocluster_tests::node_scenario(
        "load.mjs",
        &[
            format!("--urls={}", cluster.io[1].url()),
            "--clients=2".into(),
            "--events=2".into(),
        ],
    )
    .await;
    assert_eq!(result["acked"], 4);
}

#[tokio::test]
async fn an_app_node_shutting_down_finishes_its_events() {
    let mut cluster = Cluster::builder("app-shutdown")
        .io_nodes(1)
        .app_nodes("iocluster-test-app", 1)
        .start()
        .await;
    let scenario = cluster.spawn_scenario("load.mjs", &["--clients=8", "--events=6", "--slow=100"]);
    tokio::time::sleep(Duration::from_millis(300)).await;
    // A rolling deploy: start the replacement, then stop the old one.
    cluster.start_app().await;
    let status = cluster.apps[0]
        .process
        .terminate(Duration::from_secs(15))
        .await
        .expect("the app-node was running");
    assert!(status.success(), "app-node exited with {status}");
    let result = scenario.await.unwrap();
    assert_eq!(result["acked"], 8 * 6, "{result}");
    assert!(
        !cluster.registered("apps", "app0").await,
        "the app-node left the registry"
    );
}

/// An io-node told to stop under load stops reading first, then hands the
/// app-nodes every event it had read, though most still waited behind an
/// event in flight (per-socket order) when the stop came: none is lost.
#[tokio::test]
async fn an_io_node_shutting_down_hands_over_every_event_it_read() {
    let mut cluster = Cluster::builder("io-shutdown-drain")
        .io_nodes(1)
        .start()
        .await;
    let (clients, queued) = (20, 10);
    let url = format!("ws://{}{EIO}&transport=websocket", cluster.io[0].addr());
    let mut sockets = Vec::new();
    for _ in 0..clients {
        sockets.push(joined(&url).await);
    }
    // Each socket: a slow event in flight, then events queued behind it.
    for ws in &mut sockets {
        ws.send(Message::text(r#"42["slow",500]"#)).await.unwrap();
        for n in 0..queued {
            ws.send(Message::text(format!(r#"42["echo",{n}]"#)))
                .await
                .unwrap();
        }
    }
    let sent = (clients * (1 + queued)) as f64;
    let ops = cluster.io[0].ops_addr();
    eventually(
        Duration::from_secs(10),
        "the io-node read every event",
        || {
            let ops = ops.clone();
            async move {
                let read =
                    iocluster_tests::metric(&ops, "iocluster_client_packets_total{type=\"event\"}")
                        .await;
                (read >= sent).then_some(())
            }
        },
    )
    .await;
    let status = cluster.io[0]
        .process
        .terminate(Duration::from_secs(15))
        .await
        .expect("the io-node was running");
    assert!(status.success(), "io-node exited with {status}");
    // Every connect, every event read, then every disconnect.
    let expected = (clients + clients * (1 + queued) + clients) as i64;
    eventually(Duration::from_secs(10), "every event handled", || async {
        (cluster.handled_total().await >= expected).then_some(())
    })
    .await;
    assert_eq!(cluster.handled_total().await, expected, "none twice");
    let reasons = eventually(Duration::from_secs(10), "disconnect events", || async {
        let reasons = cluster.disconnect_reasons().await;
        (reasons.len() >= clients).then_some(reasons)
    })
    .await;
    assert!(
        reasons.iter().all(|r| r.ends_with("server shutting down")),
        "{reasons:?}"
    );
}

/// A node started while Redis is down says so at once and waits for it,
/// then serves; with --redis-start-timeout it gives up and exits instead,
/// for supervisors that prefer that.
#[tokio::test]
async fn a_node_started_before_redis_waits_for_it() {
    let mut cluster = Cluster::builder("redis-late")
        .io_nodes(0)
        .app_nodes("iocluster-test-app", 0)
        .start()
        .await;
    cluster.redis.stop();
    let ops_port = iocluster_tests::free_port();
    let spawn = |name: &str, extra: &[&str]| {
        let mut command = std::process::Command::new(iocluster_tests::bin("iocluster-io-node"));
        command
            .args(["--redis", &cluster.redis.url(), "--prefix", &cluster.prefix])
            .args([
                "--listen",
                &format!("127.0.0.1:{}", iocluster_tests::free_port()),
            ])
            .args(extra)
            .env("RUST_LOG", "info");
        iocluster_tests::Process::spawn(command, cluster.logs().join(format!("{name}.log")))
    };
    let mut patient = spawn(
        "patient",
        &["--ops-listen", &format!("127.0.0.1:{ops_port}")],
    );
    let mut impatient = spawn("impatient", &["--redis-start-timeout", "300"]);
    let log = cluster.logs().join("patient.log");
    eventually(
        Duration::from_secs(5),
        "the node says Redis is unreachable",
        || {
            let log = log.clone();
            async move {
                std::fs::read_to_string(&log)
                    .ok()
                    .filter(|text| text.contains("cannot reach Redis"))
            }
        },
    )
    .await;
    let status = eventually(Duration::from_secs(10), "the impatient node exits", || {
        let status = impatient.try_status();
        async move { status }
    })
    .await;
    assert!(!status.success(), "gave up with an error");
    assert!(patient.is_running(), "the patient node still waits");
    cluster.redis.restart().await;
    iocluster_tests::wait_http_ok(&format!("127.0.0.1:{ops_port}"), "/ready").await;
    let log = std::fs::read_to_string(cluster.logs().join("patient.log")).unwrap();
    assert!(log.contains("Redis answers: starting"), "{log}");
    let status = patient.terminate(Duration::from_secs(10)).await.unwrap();
    assert!(status.success());
}
