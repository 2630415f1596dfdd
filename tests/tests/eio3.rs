//! Socket.IO v2 clients (Engine.IO v3): io-nodes with `--allow-eio3` serve
//! the stock socket.io-client 2.x on every transport (its implicit
//! connection to `/`, client-sent pings, v3 polling payloads, binary both
//! ways, a second namespace with a query), against app-nodes that do not
//! know the difference, directly and through a balancer without affinity.
//! Without the option v3 is refused (`protocol.rs`, the handshake errors).

use iocluster_tests::{Cluster, RoundRobinProxy};
use serde_json::{Value, json};

fn check(result: &Value, transport: &str) {
    let expect = |field: &str, value: Value| {
        assert_eq!(result[field], value, "{transport} {field}: {result}");
    };
    expect("welcome", json!(true));
    expect(
        "acks",
        json!([[0, {"n": 0}], [1, {"n": 1}], [2, {"n": 2}], [3, {"n": 3}], [4, {"n": 4}]]),
    );
    expect("burst", json!((0..20).collect::<Vec<_>>()));
    expect("binaryAck", json!([[1, 2, 3], [4]]));
    expect("echo", json!([9, 8, 7]));
    expect("joined", json!(true));
    expect("roomNews", json!("to the room"));
    expect("asked", json!({"answer": ["answer to 42"]}));
    expect("otherWelcome", json!(true));
    expect("otherAck", json!(["other"]));
    expect("afterWait", json!(["still here"]));
    expect("disconnects", json!([]));
    expect("kickReason", json!("io server disconnect"));
    let want = if transport == "polling" {
        "polling"
    } else {
        "websocket"
    };
    expect("transport", json!(want));
    assert!(
        result["pongs"].as_u64().unwrap() >= 2,
        "{transport}: {result}"
    );
}

#[tokio::test]
async fn socket_io_client_2_works_on_every_transport() {
    // Short heartbeats: the client pings several times during the wait.
    let cluster = Cluster::builder("eio3")
        .io_nodes(1)
        .heartbeat(400, 800)
        .io_args(&["--allow-eio3"])
        .start()
        .await;
    for transport in ["polling", "websocket", "upgrade"] {
        let result = cluster
            .scenario(
                "eio3.mjs",
                &[&format!("--transport={transport}"), "--wait=2000"],
            )
            .await;
        check(&result, transport);
    }
    // The app-node saw each socket leave once. Per transport: the kicked
    // one; the one in /other, which the client left; and the one in `/` of
    // that second connection (a v2 client is in `/` on every connection, as
    // with Node's Socket.IO), gone with its transport.
    let mut reasons: Vec<String> = cluster
        .disconnect_reasons()
        .await
        .iter()
        .map(|line| line.split_once(' ').unwrap().1.to_owned())
        .collect();
    reasons.sort();
    let mut expected = [
        "client namespace disconnect",
        "server namespace disconnect",
        "transport close",
    ]
    .repeat(3);
    expected.sort();
    assert_eq!(reasons, expected);
}

#[tokio::test]
async fn socket_io_client_2_through_a_balancer_without_affinity() {
    let cluster = Cluster::builder("eio3-any-node")
        .io_nodes(3)
        .heartbeat(400, 800)
        .io_args(&["--allow-eio3"])
        .start()
        .await;
    let backends: Vec<String> = cluster
        .io_urls()
        .iter()
        .map(|url| url.trim_start_matches("http://").to_owned())
        .collect();
    let proxy = RoundRobinProxy::start(backends);
    for transport in ["polling", "upgrade"] {
        let result = cluster
            .scenario(
                "eio3.mjs",
                &[
                    &format!("--url={}", proxy.url()),
                    &format!("--transport={transport}"),
                    "--wait=2000",
                ],
            )
            .await;
        check(&result, transport);
    }
}

/// Malformed Engine.IO v3 input, over raw HTTP: the handshake is framed
/// the v3 way; a POST whose payload does not parse (a length past the end,
/// a binary packet of another type) gets 400 and closes the session; a
/// well-formed text and binary payload is taken.
#[tokio::test]
async fn malformed_v3_payloads_get_400_and_close_the_session() {
    use iocluster_tests::http;

    let cluster = Cluster::builder("eio3-malformed")
        .io_nodes(1)
        .heartbeat(2_000, 5_000)
        .io_args(&["--allow-eio3"])
        .start()
        .await;
    let addr = cluster.io_urls()[0]
        .trim_start_matches("http://")
        .to_owned();
    let path = "/socket.io/?EIO=3&transport=polling";
    let open = |body: String| -> String {
        // `<length>:0{...}`: the open packet in a v3 payload.
        let (length, packet) = body.split_once(':').expect("a v3 payload");
        assert_eq!(
            length.parse::<usize>().unwrap(),
            packet.encode_utf16().count()
        );
        let open: serde_json::Value =
            serde_json::from_str(packet.strip_prefix('0').expect("the open packet")).unwrap();
        open["sid"].as_str().unwrap().to_owned()
    };
    for bad in [&b"9:4hi"[..], b"2:b9", b"\x01\x02\xff\x03\x01"] {
        let response = http(&addr, "GET", path, &[], b"").await.unwrap();
        let sid = open(response.text());
        let session = format!("{path}&sid={sid}");
        let posted = http(&addr, "POST", &session, &[], bad).await.unwrap();
        assert_eq!(posted.status, 400, "{bad:?}: {}", posted.text());
        // Gone: a later poll is refused (or told it is closed).
        let polled = http(&addr, "GET", &session, &[], b"").await.unwrap();
        assert!(
            polled.status == 400 || polled.text().ends_with(":1"),
            "{bad:?}: {} {}",
            polled.status,
            polled.text()
        );
    }
    // Well-formed: a ping as text, then a binary payload with a ping.
    let response = http(&addr, "GET", path, &[], b"").await.unwrap();
    let sid = open(response.text());
    let session = format!("{path}&sid={sid}");
    let posted = http(&addr, "POST", &session, &[], b"1:2").await.unwrap();
    assert_eq!(posted.text(), "ok");
    let posted = http(&addr, "POST", &session, &[], b"\x00\x01\xff2")
        .await
        .unwrap();
    assert_eq!(posted.text(), "ok");
}
