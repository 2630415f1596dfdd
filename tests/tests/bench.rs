//! The load generator works against a real cluster (a smoke test: the
//! figures themselves belong to scripts/bench.sh, never to assertions).

use iocluster_tests::{Cluster, bin, metric};
use serde_json::Value;

async fn bench(cluster: &Cluster, args: &[&str]) -> Value {
    let output = tokio::process::Command::new(bin("iocluster-bench"))
        .arg("--urls")
        .arg(cluster.io_urls().join(","))
        .args(args)
        .output()
        .await
        .expect("iocluster-bench runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("one JSON result on stdout")
}

#[tokio::test]
async fn the_load_generator_measures_every_scenario() {
    let cluster = Cluster::builder("bench")
        .app_nodes("iocluster-bench-app", 2)
        .start()
        .await;
    let plot = cluster.logs().join("fanout.svg");
    let fanout = bench(
        &cluster,
        &[
            "--plot",
            plot.to_str().unwrap(),
            "fanout",
            "--subscribers",
            "50",
            "--rate",
            "20",
            "--seconds",
            "2",
        ],
    )
    .await;
    assert!(fanout["sent"].as_u64().unwrap() > 0, "{fanout}");
    assert_eq!(fanout["delivered"], fanout["expected"], "{fanout}");
    assert_eq!(fanout["lost"], 0, "{fanout}");
    assert_eq!(fanout["duplicates"], 0, "{fanout}");
    assert!(fanout["latency_ms"]["p99"].is_number(), "{fanout}");
    assert!(std::fs::read_to_string(&plot).unwrap().starts_with("<svg"));

    // Rooms spread over both io-nodes, then every room on one io-node.
    for local_rooms in [false, true] {
        let mut args = vec![
            "rooms",
            "--clients",
            "40",
            "--room-size",
            "10",
            "--rate",
            "2",
            "--seconds",
            "2",
        ];
        if local_rooms {
            args.push("--local-rooms");
        }
        let rooms = bench(&cluster, &args).await;
        assert_eq!(rooms["delivered"], rooms["expected"], "{rooms}");
        assert_eq!(rooms["local_rooms"], local_rooms, "{rooms}");
    }
    // Each io-node counts what Redis sent it.
    for node in &cluster.io {
        let ops = node.ops_addr();
        assert!(metric(&ops, "iocluster_pubsub_messages_total").await > 0.0);
        assert!(metric(&ops, "iocluster_pubsub_bytes_total").await > 0.0);
    }

    let echo = bench(&cluster, &["echo", "--clients", "10", "--seconds", "1"]).await;
    assert!(echo["round_trips"].as_u64().unwrap() > 0, "{echo}");
    assert_eq!(echo["failed"], 0, "{echo}");

    let storm = bench(&cluster, &["connect-storm", "--clients", "100"]).await;
    assert_eq!(storm["connected"], 100, "{storm}");

    let storm = bench(
        &cluster,
        &["connect-storm", "--clients", "50", "--transport", "polling"],
    )
    .await;
    assert_eq!(storm["connected"], 50, "{storm}");
    assert_eq!(storm["transport"], "polling", "{storm}");

    // Held from two source addresses, as large idle runs do.
    let idle = bench(
        &cluster,
        &[
            "--source-addresses",
            "127.0.0.1,127.0.0.2",
            "idle",
            "--connections",
            "100",
            "--seconds",
            "1",
        ],
    )
    .await;
    assert_eq!(idle["still_connected"], 100, "{idle}");
}

/// A publisher the server disconnects (here for sending packets larger than
/// the node's `max_payload`, which the subscribers' stay under) is reported
/// by the load generator, not hidden in a short, clean-looking run.
#[tokio::test]
async fn the_load_generator_reports_a_publisher_the_server_cuts_off() {
    let cluster = Cluster::builder("bench-cut")
        .io_nodes(1)
        .app_nodes("iocluster-bench-app", 1)
        .io_args(&["--max-payload", "64", "--max-packets-per-second", "100000"])
        .start()
        .await;
    let fanout = bench(
        &cluster,
        &[
            "fanout",
            "--subscribers",
            "5",
            "--rate",
            "2000",
            "--seconds",
            "2",
        ],
    )
    .await;
    assert_eq!(fanout["publishers_disconnected"], 1, "{fanout}");
    assert!(
        fanout["first_publisher_cut_s"].as_f64().unwrap() < 2.0,
        "{fanout}"
    );
    let closed = metric(
        &cluster.io[0].ops_addr(),
        r#"iocluster_connections_closed_total{reason="transport error"}"#,
    )
    .await;
    // The publisher's, and the subscribers' dropped at the end of the run.
    assert!(closed >= 1.0, "{fanout}");
}
