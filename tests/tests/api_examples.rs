//! The admin API examples of docs/api-examples, run for real: each publishes
//! to a room and a client in that room must get it.

use std::process::Command;

use iocluster_tests::{Cluster, next_event, socket_on, workspace_root};
use serde_json::json;

fn available(program: &str) -> bool {
    Command::new(program)
        .arg("--version")
        .output()
        .is_ok_and(|out| out.status.success())
}

#[tokio::test]
async fn every_example_client_publishes() {
    // Production-like heartbeats: starting the interpreters can starve the
    // test's client of CPU for longer than the harness's short ones.
    let cluster = Cluster::builder("api-examples")
        .heartbeat(2_000, 5_000)
        .io_nodes(1)
        .app_nodes("iocluster-test-app", 1)
        .start()
        .await;
    let frontend = cluster.start_frontend().await;
    let (_client, reader) = socket_on(&cluster.io[0].url(), Some(json!({ "rooms": ["news"] })))
        .await
        .unwrap();
    let dir = workspace_root().join("docs").join("api-examples");
    let examples = [
        ("bash", "curl.sh"),
        ("python3", "python.py"),
        ("node", "node.mjs"),
        ("php", "php.php"),
    ];
    let mut ran = Vec::new();
    for (interpreter, file) in examples {
        if !available(interpreter) {
            eprintln!("{file}: `{interpreter}` is not installed here; not run");
            continue;
        }
        let text = format!("hello from {file}");
        let output = tokio::process::Command::new(interpreter)
            .arg(dir.join(file))
            .args(["news", &text])
            .env("IOCLUSTER_ADMIN_URL", frontend.admin_url())
            .env("IOCLUSTER_API_KEY", &frontend.api_key)
            .output()
            .await
            .unwrap();
        assert!(
            output.status.success(),
            "{file}: {}\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        let event = next_event(&reader, "news").await;
        assert_eq!(event.args, vec![json!({ "text": text })], "{file}");
        ran.push(file);
    }
    assert!(
        ran.len() >= 3,
        "curl, Python and Node run everywhere: {ran:?}"
    );
}
