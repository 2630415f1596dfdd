//! socket.io-msgpack-parser: io-nodes with `--parser msgpack` serve the stock
//! socket.io-client with the npm parser on both transports (binary both
//! ways through an app-node, rooms across io-nodes), app-nodes unchanged,
//! and python-socketio with its msgpack serializer; a client of the other
//! parser gets a readable, final connect error.

use iocluster_tests::Cluster;
use serde_json::json;

async fn msgpack_cluster(test: &str) -> Cluster {
    Cluster::builder(test)
        .heartbeat(2_000, 5_000)
        .io_args(&["--parser", "msgpack"])
        .start()
        .await
}

#[tokio::test]
async fn the_stock_client_with_the_msgpack_parser_works_on_both_transports() {
    let cluster = msgpack_cluster("msgpack").await;
    for transport in ["websocket", "polling"] {
        let result = cluster
            .scenario("msgpack.mjs", &[&format!("--transport={transport}")])
            .await;
        assert_eq!(
            result["echoed"],
            json!([[1, 2, 3], { "n": 1 }]),
            "{transport}: {result}"
        );
        assert_eq!(result["news"], json!("hi"), "{transport}: {result}");
        assert_eq!(result["welcome"], json!(true), "{transport}: {result}");
    }
}

#[tokio::test]
async fn a_client_of_the_other_parser_is_told_and_does_not_retry() {
    let cluster = msgpack_cluster("msgpack-mismatch").await;
    let result = cluster
        .scenario("msgpack.mjs", &["--mismatch=default"])
        .await;
    assert!(
        result["message"]
            .as_str()
            .unwrap()
            .contains("socket.io-msgpack-parser"),
        "{result}"
    );
    assert_eq!(result["attempts"], 0, "{result}");
    let default = Cluster::builder("msgpack-mismatch-default")
        .io_nodes(1)
        .heartbeat(2_000, 5_000)
        .start()
        .await;
    for transport in ["websocket", "polling"] {
        let result = default
            .scenario(
                "msgpack.mjs",
                &["--mismatch=msgpack", &format!("--transport={transport}")],
            )
            .await;
        assert!(
            result["message"]
                .as_str()
                .unwrap()
                .contains("default Socket.IO parser"),
            "{transport}: {result}"
        );
        assert_eq!(result["attempts"], 0, "{transport}: {result}");
    }
}

#[tokio::test]
async fn python_socketio_with_its_msgpack_serializer_works_on_both_transports() {
    let cluster = msgpack_cluster("msgpack-python").await;
    for transport in ["polling", "upgrade"] {
        let result = iocluster_tests::python_scenario(
            "msgpack_client.py",
            &[
                format!("--url={}", cluster.io_urls()[0]),
                format!("--transport={transport}"),
            ],
        )
        .await;
        assert_eq!(result["welcome"], json!(true), "{transport}: {result}");
        assert_eq!(
            result["ack"],
            json!(["text", 1.5, {"nested": [1, null, true]}, [1, 2, 3]]),
            "{transport}: {result}"
        );
        assert_eq!(
            result["echo"],
            json!([[9, 8], "after"]),
            "{transport}: {result}"
        );
        assert_eq!(result["joined"], json!(true), "{transport}: {result}");
        assert_eq!(
            result["news"],
            json!("to the room"),
            "{transport}: {result}"
        );
        assert_eq!(
            result["asked"],
            json!({"answer": ["answer to 42"]}),
            "{transport}: {result}"
        );
        let expected = if transport == "polling" {
            "polling"
        } else {
            "websocket"
        };
        assert_eq!(
            result["transport"],
            json!(expected),
            "{transport}: {result}"
        );
        assert_eq!(result["disconnects"], json!([]), "{transport}: {result}");
    }
}
