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
        // The chat page, on the frontend's origin, polls the io-nodes.
        .io_args(&["--cors-origins", "*"])
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

/// Only the pages of allowed origins reach an io-node: a page of a listed
/// origin connects on polling and WebSocket; a page of another origin is
/// refused on both (polling by CORS, WebSocket by the origin check).
#[tokio::test]
async fn only_pages_of_allowed_origins_reach_an_io_node() {
    let (allowed, other) = (iocluster_tests::free_port(), iocluster_tests::free_port());
    let origin = format!("http://127.0.0.1:{allowed}");
    let cluster = Cluster::builder("browser-cors")
        .io_nodes(1)
        .heartbeat(2_000, 10_000)
        .io_args(&["--cors-origins", &origin, "--websocket-origin-check"])
        .start()
        .await;
    let result = node_scenario(
        "browser-cors.mjs",
        &[
            format!("--url={}", cluster.io[0].url()),
            format!("--allowed={allowed}"),
            format!("--other={other}"),
        ],
    )
    .await;
    assert_eq!(result["allowed"]["polling"], "connected", "{result}");
    assert_eq!(result["allowed"]["websocket"], "connected", "{result}");
    for transport in ["polling", "websocket"] {
        let refused = result["other"][transport].as_str().unwrap();
        assert!(refused.starts_with("refused"), "{result}");
    }
    let refusals =
        iocluster_tests::metric(&cluster.io[0].ops_addr(), "iocluster_origins_refused_total").await;
    assert!(refusals >= 2.0, "{result}");
}
