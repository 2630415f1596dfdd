//! Engine.IO / Socket.IO conformance and hostile input against a real io-node:
//! each bad request gets the spec's error or a clean close, and the node keeps
//! serving everyone else.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use iocluster_tests::{Cluster, IoNode, http};
use tokio_tungstenite::tungstenite::Message;

const EIO: &str = "/socket.io/?EIO=4";

async fn handshake(node: &IoNode) -> (String, serde_json::Value) {
    let response = http(
        &node.addr(),
        "GET",
        &format!("{EIO}&transport=polling"),
        &[],
        b"",
    )
    .await
    .unwrap();
    assert_eq!(response.status, 200);
    let body = response.text();
    let open: serde_json::Value =
        serde_json::from_str(body.strip_prefix('0').expect("an open packet")).unwrap();
    (open["sid"].as_str().unwrap().to_owned(), open)
}

async fn post(node: &IoNode, sid: &str, body: &str) -> iocluster_tests::HttpResponse {
    http(
        &node.addr(),
        "POST",
        &format!("{EIO}&transport=polling&sid={sid}"),
        &[("Content-Type", "text/plain")],
        body.as_bytes(),
    )
    .await
    .unwrap()
}

async fn poll(node: &IoNode, sid: &str) -> iocluster_tests::HttpResponse {
    http(
        &node.addr(),
        "GET",
        &format!("{EIO}&transport=polling&sid={sid}"),
        &[],
        b"",
    )
    .await
    .unwrap()
}

/// A long-poll left waiting (in a task of its own) while the test goes on.
fn waiting_poll(
    node: &IoNode,
    sid: &str,
) -> tokio::task::JoinHandle<iocluster_tests::HttpResponse> {
    let (addr, path) = (node.addr(), format!("{EIO}&transport=polling&sid={sid}"));
    tokio::spawn(async move { http(&addr, "GET", &path, &[], b"").await.unwrap() })
}

fn assert_error(response: &iocluster_tests::HttpResponse, status: u16, code: u8) {
    assert_eq!(response.status, status, "{}", response.text());
    let body: serde_json::Value = serde_json::from_slice(&response.body).unwrap();
    assert_eq!(body["code"], code, "{}", response.text());
}

/// After a close the session is gone: a poll answers the close packet (if it
/// raced the cleanup) or "Session ID unknown".
async fn assert_closed(node: &IoNode, sid: &str) {
    tokio::time::sleep(Duration::from_millis(100)).await;
    let response = poll(node, sid).await;
    if response.status == 200 {
        assert_eq!(response.text(), "1");
    } else {
        assert_error(&response, 400, 1);
    }
}

#[tokio::test]
async fn polling_handshake_and_error_responses_follow_the_spec() {
    let cluster = Cluster::builder("protocol-polling")
        .io_nodes(1)
        .io_args(&[
            "--max-payload",
            "5000",
            "--cors-origins",
            "http://app.example",
        ])
        .start()
        .await;
    let node = &cluster.io[0];

    let (sid, open) = handshake(node).await;
    assert!(sid.starts_with("io0."), "{sid}");
    assert_eq!(open["upgrades"], serde_json::json!(["websocket"]));
    assert_eq!(open["pingInterval"], iocluster_tests::PING_INTERVAL_MS);
    assert_eq!(open["pingTimeout"], iocluster_tests::PING_TIMEOUT_MS);
    assert_eq!(open["maxPayload"], 5000);

    let addr = node.addr();
    assert_error(
        &http(
            &addr,
            "GET",
            "/socket.io/?EIO=3&transport=polling",
            &[],
            b"",
        )
        .await
        .unwrap(),
        400,
        5,
    );
    assert_error(
        &http(&addr, "GET", "/socket.io/?transport=polling", &[], b"")
            .await
            .unwrap(),
        400,
        5,
    );
    assert_error(
        &http(
            &addr,
            "GET",
            &format!("{EIO}&transport=carrier-pigeon"),
            &[],
            b"",
        )
        .await
        .unwrap(),
        400,
        0,
    );
    assert_error(
        &http(
            &addr,
            "POST",
            &format!("{EIO}&transport=polling"),
            &[],
            b"40",
        )
        .await
        .unwrap(),
        400,
        2,
    );
    assert_error(&poll(node, "io0.bogus").await, 400, 1);
    assert_error(&post(node, "nonsense", "40").await, 400, 1);
    assert_error(
        &http(
            &addr,
            "PUT",
            &format!("{EIO}&transport=polling&sid={sid}"),
            &[],
            b"",
        )
        .await
        .unwrap(),
        400,
        3,
    );

    // CORS for browsers on another origin (the frontend): a listed origin
    // gets credentials, any other is refused.
    let refused = http(
        &addr,
        "GET",
        &format!("{EIO}&transport=polling"),
        &[("Origin", "http://evil.example")],
        b"",
    )
    .await
    .unwrap();
    assert_error(&refused, 403, 4);
    let origin = [("Origin", "http://app.example")];
    let preflight = http(
        &addr,
        "OPTIONS",
        &format!("{EIO}&transport=polling"),
        &origin,
        b"",
    )
    .await
    .unwrap();
    assert_eq!(preflight.status, 204);
    assert_eq!(
        preflight.header("access-control-allow-origin"),
        Some("http://app.example")
    );

    // A whole Socket.IO exchange over polling.
    assert_eq!(post(node, &sid, "40{\"data\":[]}").await.text(), "ok");
    // CONNECT alone in its response (a write of its own), the connection
    // handler's emit in the next.
    let connected = poll(node, &sid).await.text();
    assert!(connected.starts_with("40{\"sid\":\"io0."), "{connected}");
    assert!(!connected.contains('\u{1e}'), "{connected}");
    let welcome = poll(node, &sid).await.text();
    assert!(welcome.starts_with("42[\"welcome\""), "{welcome}");
    assert_eq!(
        post(node, &sid, "42[\"append\",1]\u{1e}421[\"state\"]")
            .await
            .text(),
        "ok"
    );
    let state = poll(node, &sid).await.text();
    // The keys in the order the handler wrote them (serde_json keeps it).
    assert_eq!(state, "431[{\"rooms\":[],\"data\":[1]}]");
    // A binary event over polling: the attachment is base64 with a `b` prefix.
    assert_eq!(
        post(
            node,
            &sid,
            "451-[\"echo\",{\"_placeholder\":true,\"num\":0}]\u{1e}bAQID"
        )
        .await
        .text(),
        "ok"
    );
    let echoed = poll(node, &sid).await.text();
    assert_eq!(
        echoed,
        "451-[\"echo\",{\"_placeholder\":true,\"num\":0}]\u{1e}bAQID"
    );
    // An ack for an id the server never asked for is ignored.
    assert_eq!(post(node, &sid, "43999[\"stray\"]").await.text(), "ok");

    // Too large: 413, and the session is closed.
    let big = format!("42[\"echo\",\"{}\"]", "x".repeat(6000));
    assert_eq!(post(node, &sid, &big).await.status, 413);
    assert_closed(node, &sid).await;

    // Hostile packets close only their own session.
    for bad in [
        "9",
        "4{bad json",
        "42[1,2]",
        "42{\"a\":1}",
        "4",
        "452-[\"x\"]\u{1e}42[\"y\"]",
        "b!!!",
        "44{\"message\":\"x\"}",
    ] {
        let (sid, _) = handshake(node).await;
        assert_eq!(post(node, &sid, "40").await.text(), "ok");
        let response = post(node, &sid, bad).await;
        assert_eq!(response.status, 400, "{bad:?} should be refused");
        assert_closed(node, &sid).await;
    }

    // Two concurrent long-polls: the protocol says the session is broken.
    let (sid, _) = handshake(node).await;
    let first = waiting_poll(node, &sid);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_error(&poll(node, &sid).await, 400, 3);
    assert_eq!(first.await.unwrap().text(), "1");

    // Everyone else is still served.
    let result = cluster
        .scenario("load.mjs", &["--clients=2", "--events=2"])
        .await;
    assert_eq!(result["acked"], 4);
}

#[tokio::test]
async fn websocket_transport_and_hostile_frames() {
    let cluster = Cluster::builder("protocol-websocket")
        .io_nodes(1)
        .io_args(&["--max-payload", "5000"])
        .start()
        .await;
    let node = &cluster.io[0];
    let url = format!("ws://{}{EIO}&transport=websocket", node.addr());

    let (mut ws, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
    let open = next_text(&mut ws).await;
    let open: serde_json::Value = serde_json::from_str(open.strip_prefix('0').unwrap()).unwrap();
    assert_eq!(open["upgrades"], serde_json::json!([]));
    ws.send(Message::text("40")).await.unwrap();
    assert!(next_text(&mut ws).await.starts_with("40{\"sid\":\"io0."));
    assert!(next_text(&mut ws).await.starts_with("42[\"welcome\""));
    ws.send(Message::text("42[\"echo\",\"hi\"]")).await.unwrap();
    assert_eq!(next_text(&mut ws).await, "42[\"echo\",\"hi\"]");
    // Binary attachments arrive as binary frames.
    ws.send(Message::text(
        "451-[\"echo\",{\"_placeholder\":true,\"num\":0}]",
    ))
    .await
    .unwrap();
    ws.send(Message::binary(vec![9u8, 8, 7])).await.unwrap();
    assert_eq!(
        next_text(&mut ws).await,
        "451-[\"echo\",{\"_placeholder\":true,\"num\":0}]"
    );
    assert_eq!(next_frame(&mut ws).await, Message::binary(vec![9u8, 8, 7]));

    // The io-node writes data frames itself and tungstenite writes its own
    // control frames: a WebSocket ping gets its pong, and the data frames
    // around it arrive whole, with a 16-bit length as well as a 7-bit one.
    let long = "x".repeat(3000);
    ws.send(Message::Ping(b"are you there".to_vec().into()))
        .await
        .unwrap();
    ws.send(Message::text(format!("42[\"echo\",\"{long}\"]")))
        .await
        .unwrap();
    ws.send(Message::text("42[\"echo\",\"short\"]"))
        .await
        .unwrap();
    let mut pong = false;
    let mut texts = Vec::new();
    while !pong || texts.len() < 2 {
        let message = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .expect("no frame within 5 s")
            .expect("connection closed")
            .expect("read error");
        match message {
            Message::Pong(payload) => {
                assert_eq!(&payload[..], b"are you there");
                pong = true;
            }
            Message::Text(text) if text.as_str() == "2" => {
                ws.send(Message::text("3")).await.unwrap()
            }
            Message::Text(text) => texts.push(text.to_string()),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(
        texts,
        [
            format!("42[\"echo\",\"{long}\"]"),
            "42[\"echo\",\"short\"]".to_owned()
        ]
    );

    // Bogus session id for an upgrade.
    let bogus = format!("ws://{}{EIO}&transport=websocket&sid=io0.nope", node.addr());
    assert!(tokio_tungstenite::connect_async(&bogus).await.is_err());

    // Hostile frames close only their own connection.
    for bad in [
        Message::text("42[\"x\""),
        Message::text("x"),
        Message::binary(vec![1u8]),
        Message::text("4".repeat(6000)),
    ] {
        let (mut ws, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
        next_text(&mut ws).await;
        ws.send(Message::text("40")).await.unwrap();
        next_text(&mut ws).await;
        ws.send(bad.clone()).await.unwrap();
        let closed = tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                match ws.next().await {
                    None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return,
                    Some(Ok(_)) => continue,
                }
            }
        })
        .await;
        assert!(closed.is_ok(), "{bad:?} should close the connection");
    }

    // The first connection is unaffected.
    ws.send(Message::text("42[\"echo\",\"still here\"]"))
        .await
        .unwrap();
    assert_eq!(next_text(&mut ws).await, "42[\"echo\",\"still here\"]");
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// The next frame that is not a heartbeat ping (answered on the way).
async fn next_frame(ws: &mut Ws) -> Message {
    loop {
        let message = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .expect("no frame within 5 s")
            .expect("connection closed")
            .expect("read error");
        match &message {
            Message::Text(text) if text.as_str() == "2" => {
                ws.send(Message::text("3")).await.unwrap()
            }
            Message::Ping(_) | Message::Pong(_) => {}
            _ => return message,
        }
    }
}

async fn next_text(ws: &mut Ws) -> String {
    match next_frame(ws).await {
        Message::Text(text) => text.to_string(),
        other => panic!("expected a text frame, got {other:?}"),
    }
}

/// The last corners of Engine.IO v4 / Socket.IO v5 as the reference server
/// behaves: a client's close while a poll waits, a second WebSocket for a
/// session that has one, CONNECT in a write of its own, and a server-side
/// close that stock clients do not undo by reconnecting.
#[tokio::test]
async fn closes_upgrades_and_connect_writes_as_the_reference_server_does() {
    let cluster = Cluster::builder("protocol-corners")
        .io_nodes(1)
        .start()
        .await;
    let node = &cluster.io[0];

    // A close packet in a POST while a GET waits: the GET gets a noop, the
    // POST "ok", and the session is gone.
    let (sid, _) = handshake(node).await;
    let waiting = waiting_poll(node, &sid);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(post(node, &sid, "1").await.text(), "ok");
    assert_eq!(waiting.await.unwrap().text(), "6");
    assert_error(&poll(node, &sid).await, 400, 1);

    // CONNECT alone in its polling response; the connection handler's
    // first emit comes in the next one.
    let (sid, _) = handshake(node).await;
    assert_eq!(post(node, &sid, "40").await.text(), "ok");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let connect = poll(node, &sid).await.text();
    assert!(
        connect.starts_with("40{\"sid\":") && !connect.contains('\u{1e}'),
        "{connect:?}"
    );
    assert!(poll(node, &sid).await.text().starts_with("42[\"welcome\""));

    // A second WebSocket for a session that upgraded: accepted, then closed.
    let ws_url = |sid: &str| format!("ws://{}{EIO}&transport=websocket&sid={sid}", node.addr());
    let (mut first, _) = tokio_tungstenite::connect_async(ws_url(&sid))
        .await
        .unwrap();
    first.send(Message::text("2probe")).await.unwrap();
    assert_eq!(next_text(&mut first).await, "3probe");
    first.send(Message::text("5")).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (mut second, response) = tokio_tungstenite::connect_async(ws_url(&sid))
        .await
        .expect("the handshake of a second WebSocket succeeds");
    assert_eq!(response.status(), 101);
    let closed = tokio::time::timeout(Duration::from_secs(5), second.next())
        .await
        .expect("closed at once");
    assert!(
        matches!(closed, None | Some(Ok(Message::Close(_))) | Some(Err(_))),
        "{closed:?}"
    );
    // The first one still serves the session (after the noop that released
    // the poll during the probe).
    first
        .send(Message::text("42[\"echo\",\"still here\"]"))
        .await
        .unwrap();
    let mut echoed = next_text(&mut first).await;
    if echoed == "6" {
        echoed = next_text(&mut first).await;
    }
    assert_eq!(echoed, "42[\"echo\",\"still here\"]");

    // The application closes the connection: DISCONNECT for every namespace
    // first (a stock client then does not reconnect), then the close.
    first.send(Message::text("40/other,")).await.unwrap();
    assert!(next_text(&mut first).await.starts_with("40/other,"));
    first.send(Message::text("42[\"close\"]")).await.unwrap();
    let mut disconnects = Vec::new();
    loop {
        let message = tokio::time::timeout(Duration::from_secs(5), first.next())
            .await
            .expect("closed within 5 s");
        match message {
            Some(Ok(Message::Text(text))) if text.as_str().starts_with("41") => {
                disconnects.push(text.to_string())
            }
            Some(Ok(Message::Text(_) | Message::Ping(_) | Message::Pong(_))) => {}
            _ => break,
        }
    }
    disconnects.sort();
    assert_eq!(disconnects, ["41", "41/other,"]);
}

/// What a client or a foreign writer can throw at the relay (sessions
/// served by any io-node): a sid naming a live io-node that does not hold
/// it, a sid naming no io-node, a WebSocket for either, garbage and stray
/// envelopes on a node's relay channel. Each gets the protocol's error, a
/// real session keeps working through the other node, and the nodes keep
/// serving everyone.
#[tokio::test]
async fn hostile_relay_input_gets_the_protocol_errors_and_the_nodes_keep_serving() {
    use iocluster_protocol::envelope::relay::{Answer, Packet, Relay, Up};

    let cluster = Cluster::builder("relay-hostile").start().await;
    let (a, b) = (&cluster.io[0], &cluster.io[1]);
    // A sid of b's that b does not hold, asked of a: relayed, refused.
    assert_error(&poll(a, &format!("{}.bogus", b.id)).await, 400, 1);
    assert_error(&post(a, &format!("{}.bogus", b.id), "40").await, 400, 1);
    // A sid naming no live io-node: refused at once.
    assert_error(&poll(a, "ghost.abc").await, 400, 1);
    let upgrade = http(
        &a.addr(),
        "GET",
        &format!("{EIO}&transport=websocket&sid=ghost.abc"),
        &[
            ("Connection", "Upgrade"),
            ("Upgrade", "websocket"),
            ("Sec-WebSocket-Version", "13"),
            ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ],
        b"",
    )
    .await
    .unwrap();
    assert_error(&upgrade, 400, 1);

    // Garbage and stray envelopes on a's relay channel.
    let mut redis = cluster.redis().await;
    let channel = format!("{}:relay:{}", cluster.prefix, a.id);
    let stray = [
        b"\x93\x01\xa4poll".to_vec(),
        b"not msgpack at all".to_vec(),
        Relay::Up(Up {
            from: b.id.clone(),
            id: 999,
            packets: vec![Packet::Text("42[\"x\"]".into())],
        })
        .encode(),
        Relay::Answer(Answer {
            id: 12345,
            status: 200,
            content_type: "text/plain".into(),
            body: serde_bytes::ByteBuf::from(b"6".to_vec()),
        })
        .encode(),
    ];
    for payload in stray {
        let _: () = redis::cmd("PUBLISH")
            .arg(&channel)
            .arg(payload)
            .query_async(&mut redis)
            .await
            .unwrap();
    }

    // A real session of b's, polled and posted through a.
    let (sid, _) = handshake(b).await;
    assert_eq!(post(a, &sid, "40").await.text(), "ok");
    let connected = poll(a, &sid).await;
    assert_eq!(connected.status, 200, "{}", connected.text());
    assert!(connected.text().starts_with("40{"), "{}", connected.text());
    // Its client leaves (a close packet, through a): gone on b too.
    assert_eq!(post(a, &sid, "1").await.text(), "ok");
    assert_closed(b, &sid).await;

    // Everyone else is served as before.
    let report = cluster.scenario("cluster.mjs", &[]).await;
    assert!(report.get("admission").is_some(), "{report}");
}
