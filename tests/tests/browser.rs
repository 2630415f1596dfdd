//! Real browser tests: Debian's Chromium, headless, driven by playwright-core
//! from `tests/js`. The dashboard shows and acts on the live cluster; the
//! chat page fails over to another io-node when its own is killed.

use iocluster_tests::{Cluster, node_scenario};
use serde_json::json;

/// Every view of the dashboard with real data: two io-nodes, an app-node,
/// two clients in rooms (started by the scenario, which also kills `io1`).
#[tokio::test]
async fn the_dashboard_shows_and_acts_on_the_cluster() {
    // A browser starting on two cores can starve every other process for
    // longer than the tests' usual 400 ms pong deadline.
    let cluster = Cluster::builder("browser-dashboard")
        .app_nodes("iocluster-test-app", 1)
        .heartbeat(2_000, 10_000)
        .start()
        .await;
    let frontend = cluster.start_frontend().await;
    let shots = cluster.logs().join("dashboard");
    let result = node_scenario(
        "browser-dashboard.mjs",
        &[
            format!("--admin={}/", frontend.admin_url()),
            format!("--key={}", frontend.api_key),
            format!("--urls={}", cluster.io_urls().join(",")),
            format!("--pids=io1:{}", cluster.io[1].process.pid()),
            format!("--shots={}", shots.display()),
        ],
    )
    .await;
    assert_eq!(result["emptyBeforeKey"], true, "{result}");
    assert_eq!(result["connections"], 2, "{result}");
    assert_eq!(
        result["published"],
        json!(["from the dashboard"]),
        "{result}"
    );
    let tail = result["tailRow"].as_str().unwrap();
    assert!(tail.contains("echo") && tail.contains("client"), "{result}");
    assert_eq!(result["payloadHidden"], true, "{result}");
    assert_eq!(result["payloadShown"], true, "{result}");
    let detail = &result["detail"];
    assert!(
        detail["rooms"].as_str().unwrap().contains("lobby"),
        "{result}"
    );
    assert!(
        detail["data"].as_str().unwrap().contains("alice"),
        "{result}"
    );
    assert!(detail["node"].as_str().unwrap().contains("io0"), "{result}");
    assert_eq!(result["joined"], true, "{result}");
    assert_eq!(result["direct"], json!(["hi alice"]), "{result}");
    assert_eq!(
        result["disconnectReason"], "io server disconnect",
        "{result}"
    );
    assert_eq!(result["detailGone"], true, "{result}");
    assert_eq!(result["roomPublished"], json!(["hello room"]), "{result}");
    assert_eq!(result["lapsed"], "io1", "{result}");
    assert_eq!(result["keyInPage"], false, "{result}");
    for (view, overflow) in result["overflow"].as_object().unwrap() {
        assert!(
            overflow.as_i64().unwrap() <= 0,
            "{view} is wider than the screen: {result}"
        );
    }
    assert_eq!(result["overflow"].as_object().unwrap().len(), 10);
    for name in ["overview-desktop", "events-phone", "socket-detail-desktop"] {
        let size = std::fs::metadata(shots.join(format!("{name}.png")))
            .unwrap()
            .len();
        assert!(size > 20_000, "{name}.png shows a rendered page");
    }
    // The application saw the operator's disconnect.
    let reasons = cluster.disconnect_reasons().await;
    assert!(
        reasons
            .iter()
            .any(|r| r.ends_with("server namespace disconnect")),
        "{reasons:?}"
    );
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
    let pids = cluster.io_pids();
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

/// The demo chat page, two browsers on the chat app-node: one view at a
/// time, one connection per Join, members, timestamps, typing, escaped user
/// text, a phone-sized layout with nothing cut off, no failed request; then
/// the reconnecting and reconnected states when its io-node dies; Leave. The
/// screenshots land in the test's log directory.
#[tokio::test]
async fn the_demo_chat_page_works_on_desktop_and_phone() {
    let cluster = Cluster::builder("browser-chat")
        .heartbeat(2_000, 10_000)
        .io_args(&["--cors-origins", "*"])
        .app_nodes("iocluster-example-chat", 2)
        .start()
        .await;
    let frontend = cluster.start_frontend().await;
    let pids = cluster.io_pids();
    let result = node_scenario(
        "browser-chat.mjs",
        &[
            format!("--frontend={}/", frontend.url()),
            format!("--pids={pids}"),
            format!("--shots={}", cluster.logs().display()),
        ],
    )
    .await;

    // One view at a time.
    for (key, shown) in [
        ("login", true),
        ("room", false),
        ("log", false),
        ("input", false),
    ] {
        assert_eq!(result["before"][key], shown, "before Join, {key}: {result}");
    }
    for (key, shown) in [
        ("login", false),
        ("room", true),
        ("log", true),
        ("input", true),
    ] {
        assert_eq!(result["after"][key], shown, "after Join, {key}: {result}");
    }
    // A double Join opens one connection.
    for who in ["ann", "bob"] {
        let connections = &result["connections"][who];
        assert_eq!(connections["handshakes"], 1, "{who}: {result}");
        assert_eq!(connections["configReads"], 1, "{who}: {result}");
        assert_eq!(connections["connections"], 1, "{who}: {result}");
    }
    // Each sees both, and every message with its time, as text.
    let both = json!(["ann", "bob <b>"]);
    assert_eq!(result["listed"]["ann"], both, "{result}");
    assert_eq!(result["listed"]["bob"], both, "{result}");
    assert_eq!(result["typingShown"], "bob <b> is typing…", "{result}");
    let hostile = r#"<img src=x onerror="window.pwned=1">"#;
    for (who, other) in [("ann", "bob <b>"), ("bob", "ann")] {
        let seen = &result["seen"][who];
        assert_eq!(seen["pwned"], false, "{who}: {result}");
        assert_eq!(seen["images"], 0, "{who}: {result}");
        let messages = seen["messages"].as_array().unwrap();
        assert_eq!(messages.len(), 2, "{who}: {result}");
        let texts: Vec<_> = messages
            .iter()
            .map(|m| m["text"].as_str().unwrap())
            .collect();
        assert!(
            texts.contains(&hostile) && texts.contains(&"hello ann"),
            "{who}: {result}"
        );
        for message in messages {
            let time = message["time"].as_str().unwrap();
            assert!(
                time.len() >= 4 && time.contains(':'),
                "a time of day: {result}"
            );
            assert!(
                message["datetime"].as_str().unwrap().ends_with('Z'),
                "{result}"
            );
            let mine = message["who"] != other;
            assert_eq!(message["mine"], mine, "{who}: {result}");
        }
    }
    // Nothing cut off on a phone.
    for key in ["join", "input", "send", "status", "leave"] {
        assert_eq!(result["phone"][key], true, "at 390 px, {key}: {result}");
    }
    assert_eq!(result["phone"]["overflowX"], false, "{result}");
    assert_eq!(result["problems"], json!([]), "{result}");
    assert_eq!(
        result["icons"],
        json!(["/favicon.svg 200 image/svg+xml"]),
        "the icon, served: {result}"
    );

    // Failover, as the page shows it.
    assert_ne!(result["first"], result["second"], "{result}");
    assert_eq!(result["reconnecting"]["inputUsable"], true, "{result}");
    assert_eq!(result["reconnecting"]["sendDisabled"], true, "{result}");
    let banner = result["reconnecting"]["banner"].as_str().unwrap();
    assert!(
        banner.contains(result["first"].as_str().unwrap()),
        "{result}"
    );
    let status = result["reconnected"]["status"].as_str().unwrap();
    assert!(
        status.contains(result["second"].as_str().unwrap()),
        "{result}"
    );
    assert_eq!(result["left"]["login"], true, "{result}");
    assert_eq!(result["left"]["room"], false, "{result}");
    assert_eq!(result["left"]["annSaw"], "bob <b> left", "{result}");
    for (shot, bytes) in result["shots"].as_object().unwrap() {
        assert!(
            bytes.as_u64().unwrap() > 10_000,
            "{shot} shows a rendered page: {result}"
        );
    }
    assert_eq!(result["shots"].as_object().unwrap().len(), 12, "{result}");
}
