//! Connection state recovery across io-nodes, with the stock socket.io-client
//! (tests/js/recovery.mjs): an io-node killed (SIGKILL) or stopped (SIGTERM),
//! a client's own network drop, recovery on the same and on another io-node,
//! both transports, emits missed to a room, a socket, a user and everyone,
//! and a client that comes back too late.

use std::time::Duration;

use iocluster_tests::{Cluster, eventually};
use serde_json::{Value, json};

const SECRET: &str = "recovery-test-secret-of-at-least-32-bytes";

fn builder(test: &str, window_ms: u64) -> iocluster_tests::ClusterBuilder {
    let window = window_ms.to_string();
    Cluster::builder(test)
        .io_nodes(2)
        .heartbeat(2_000, 5_000)
        .io_args(&["--jwt-secret", SECRET])
        .app_args(&["--recovery", &window])
}

async fn cluster(test: &str, window_ms: u64) -> Cluster {
    builder(test, window_ms).start().await
}

/// Runs the scenario in `mode` and checks what every mode must give.
async fn recovers(test: &str, mode: &str, transport: &str, target: &str) -> Value {
    recovers_on(cluster(test, 60_000).await, mode, transport, target).await
}

async fn recovers_on(cluster: Cluster, mode: &str, transport: &str, target: &str) -> Value {
    let pid = cluster.io[0].process.pid().to_string();
    let result = cluster
        .scenario(
            "recovery.mjs",
            &[
                &format!("--mode={mode}"),
                &format!("--transport={transport}"),
                &format!("--target={target}"),
                &format!("--pid={pid}"),
                &format!("--secret={SECRET}"),
            ],
        )
        .await;
    assert_eq!(result["recovered"], json!([true, true]), "{result}");
    assert_eq!(result["sameId"], json!([true, true]), "{result}");
    assert_eq!(
        result["a"],
        json!([
            "pre", "room", "socket", "user", "all", "live", "direct", "again"
        ]),
        "{result}"
    );
    assert_eq!(result["c"], json!(["all"]), "{result}");
    assert_eq!(result["data"], json!({ "n": 7 }), "{result}");
    let rooms: Vec<&str> = result["rooms"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        rooms.contains(&"r") && rooms.contains(&"$user:ann"),
        "{result}"
    );
    assert_eq!(result["offsetsLookRight"], json!(true), "{result}");
    // Recovered, the sockets had no disconnect event: the application saw
    // them connected throughout.
    let disconnects = cluster.disconnect_reasons().await;
    assert!(
        disconnects
            .iter()
            .all(|line| !line.contains("transport close")
                && !line.contains("io-node lost")
                && !line.contains("server shutting down")),
        "{disconnects:?}"
    );
    result
}

#[tokio::test]
async fn an_io_node_killed_loses_no_state_and_no_message_websocket() {
    recovers("recovery-kill-ws", "kill", "websocket", "other").await;
}

#[tokio::test]
async fn an_io_node_killed_loses_no_state_and_no_message_polling() {
    recovers("recovery-kill-polling", "kill", "polling", "other").await;
}

#[tokio::test]
async fn an_io_node_stopped_hands_its_clients_over() {
    recovers("recovery-term", "term", "websocket", "other").await;
}

#[tokio::test]
async fn a_client_network_drop_recovers_on_the_same_io_node() {
    recovers("recovery-drop-same", "drop", "websocket", "same").await;
}

#[tokio::test]
async fn a_client_network_drop_recovers_on_another_io_node() {
    recovers("recovery-drop-other", "drop", "polling", "other").await;
}

/// The recovery scripts (park, drain, claim, sweep) keep to one slot on a
/// Redis Cluster.
#[tokio::test]
async fn an_io_node_killed_loses_no_state_and_no_message_on_a_redis_cluster() {
    let cluster = builder("recovery-kill-redis-cluster", 60_000)
        .redis_cluster()
        .start()
        .await;
    recovers_on(cluster, "kill", "websocket", "other").await;
}

#[tokio::test]
async fn a_client_back_too_late_gets_a_new_session() {
    back_too_late(cluster("recovery-late", 2_000).await).await;
}

#[tokio::test]
async fn a_client_back_too_late_gets_a_new_session_on_a_redis_cluster() {
    back_too_late(
        builder("recovery-late-redis-cluster", 2_000)
            .redis_cluster()
            .start()
            .await,
    )
    .await;
}

async fn back_too_late(cluster: Cluster) {
    let result = cluster
        .scenario(
            "recovery.mjs",
            &[
                "--mode=late",
                "--window=2000",
                &format!("--secret={SECRET}"),
            ],
        )
        .await;
    assert_eq!(result["recovered"], json!(false), "{result}");
    assert_eq!(result["sameId"], json!(false), "{result}");
    // The old session ended for the application exactly once.
    let old = result["oldId"].as_str().unwrap().to_owned();
    let prefix = format!("{old} ");
    eventually(
        Duration::from_secs(10),
        "the old session's disconnect",
        || async {
            let disconnects = cluster.disconnect_reasons().await;
            let count = disconnects
                .iter()
                .filter(|line| line.starts_with(&prefix))
                .count();
            (count == 1).then_some(())
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let disconnects = cluster.disconnect_reasons().await;
    assert_eq!(
        disconnects
            .iter()
            .filter(|line| line.starts_with(&prefix))
            .count(),
        1,
        "{disconnects:?}"
    );
}

/// The browser helper keeps one socket across a fail-over, so the stock
/// client recovers on the new io-node.
#[tokio::test]
async fn the_browser_helper_recovers_its_session_on_another_io_node() {
    let cluster = cluster("recovery-helper", 60_000).await;
    let frontend = cluster.start_frontend().await;
    let pids = cluster.io_pids();
    let result = cluster
        .scenario(
            "recovery-helper.mjs",
            &[
                &format!("--frontend={}", frontend.url()),
                &format!("--admin={}", frontend.admin_url()),
                &format!("--key={}", frontend.api_key),
                &format!("--pids={pids}"),
            ],
        )
        .await;
    assert_ne!(result["first"], result["second"], "{result}");
    assert_eq!(result["sameSocket"], json!(true), "{result}");
    assert_eq!(result["sameId"], json!(true), "{result}");
    assert_eq!(result["recovered"], json!(true), "{result}");
    assert_eq!(
        result["got"],
        json!(["before", "while away", "from the api", "after"]),
        "{result}"
    );
}

/// Hundreds of clients of a killed io-node claim their sessions at once
/// (while its lease runs out) and all recover, with every message sent
/// meanwhile.
#[tokio::test]
async fn hundreds_of_clients_of_a_killed_io_node_all_recover() {
    let cluster = cluster("recovery-many", 60_000).await;
    let pid = cluster.io[0].process.pid().to_string();
    let result = cluster
        .scenario(
            "recovery-many.mjs",
            &["--clients=300", "--messages=3", &format!("--pid={pid}")],
        )
        .await;
    eprintln!("{result}");
    assert_eq!(result["recovered"], 300, "{result}");
    assert_eq!(result["sameId"], 300, "{result}");
    assert_eq!(result["complete"], 300, "{result}");
    // The application saw no socket go with the node: the only disconnects
    // are the clients closing at the end.
    let disconnects = cluster.disconnect_reasons().await;
    assert!(
        disconnects
            .iter()
            .all(|line| line.ends_with(" client namespace disconnect")),
        "{disconnects:?}"
    );
}
