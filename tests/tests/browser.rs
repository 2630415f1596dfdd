//! Real browser tests: Debian's Chromium, headless, driven by playwright-core
//! from `tests/js`. The dashboard renders the live cluster and publishes; the
//! chat page fails over to another io-node when its own is killed.

use iocluster_tests::{Cluster, next_event, node_scenario, socket_on};
use serde_json::json;

#[tokio::test]
async fn the_dashboard_shows_the_cluster_and_publishes() {
    // A browser starting on two cores can starve every other process for
    // longer than the tests' usual 400 ms pong deadline.
    let cluster = Cluster::builder("browser-dashboard")
        .heartbeat(2_000, 10_000)
        .start()
        .await;
    let frontend = cluster.start_frontend().await;
    let (_client, reader) = socket_on(&cluster.io[1].url(), Some(json!({ "rooms": ["news"] })))
        .await
        .unwrap();
    let screenshot = cluster.logs().join("dashboard.png");
    let result = node_scenario(
        "browser-dashboard.mjs",
        &[
            format!("--admin={}/", frontend.admin_url()),
            format!("--key={}", frontend.api_key),
            "--expect=io0,io1".to_owned(),
            "--room=news".to_owned(),
            format!("--screenshot={}", screenshot.display()),
        ],
    )
    .await;
    assert_eq!(result["emptyBeforeKey"], true, "{result}");
    assert_eq!(result["connections"], 1, "{result}");
    assert_eq!(result["roomListed"], true, "{result}");
    assert_eq!(result["keyInPage"], false, "{result}");
    assert!(
        result["screenshotBytes"].as_u64().unwrap() > 20_000,
        "the screenshot shows a rendered page: {result}"
    );
    let event = next_event(&reader, "breaking").await;
    assert_eq!(event.args, vec![json!("from the dashboard")]);
}

#[tokio::test]
async fn the_browser_helper_fails_over_when_its_io_node_dies() {
    let cluster = Cluster::builder("browser-failover")
        .heartbeat(2_000, 10_000)
        .app_nodes("iocluster-example-chat", 2)
        .start()
        .await;
    let frontend = cluster.start_frontend().await;
    let pids = cluster
        .io
        .iter()
        .map(|node| format!("{}:{}", node.id, node.process.pid()))
        .collect::<Vec<_>>()
        .join(",");
    let result = node_scenario(
        "browser-failover.mjs",
        &[
            format!("--frontend={}/", frontend.url()),
            format!("--pids={pids}"),
        ],
    )
    .await;
    assert_ne!(result["first"], result["second"], "{result}");
    assert_eq!(result["connections"], 2, "{result}");
}
