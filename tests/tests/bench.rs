//! The load generator works against a real cluster (a smoke test: the
//! figures themselves belong to scripts/bench.sh, never to assertions).

use iocluster_tests::{Cluster, bin};
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

    let rooms = bench(
        &cluster,
        &[
            "rooms",
            "--clients",
            "40",
            "--room-size",
            "10",
            "--rate",
            "2",
            "--seconds",
            "2",
        ],
    )
    .await;
    assert_eq!(rooms["delivered"], rooms["expected"], "{rooms}");

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
