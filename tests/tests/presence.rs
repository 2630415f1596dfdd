//! Presence across three io-nodes: the admin API's socket, room and user
//! listings (content, filters, paging, 404s, the key), read from the
//! io-nodes' ledgers, for sockets whose rooms were joined through the
//! app-nodes.

use std::collections::BTreeSet;
use std::time::Duration;

use iocluster_client::{Client, ClientOptions, Socket};
use iocluster_tests::{Cluster, FrontendNode, eventually, http};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(10);

async fn connect(url: &str, nsp: &str, auth: Value) -> (Client, Socket) {
    let client = Client::connect(url, ClientOptions::default())
        .await
        .expect("the io-node takes the connection");
    let socket = client
        .socket(nsp, Some(auth))
        .await
        .expect("the app-node admits the socket");
    (client, socket)
}

/// Every socket the listing gives for `query`, following `next` to the
/// end; checks that no page is longer than `limit`.
async fn all_pages(frontend: &FrontendNode, query: &str, limit: usize) -> (Vec<Value>, usize) {
    let mut sockets = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let mut path = format!("/api/v1/sockets?limit={limit}&{query}");
        if let Some(cursor) = &cursor {
            path.push_str(&format!("&cursor={cursor}"));
        }
        let (status, body) = frontend.api("GET", &path, None).await;
        assert_eq!(status, 200, "{path}: {body}");
        let page = body["sockets"].as_array().expect("sockets is a list");
        assert!(page.len() <= limit, "{path}: {} > {limit}", page.len());
        sockets.extend(page.iter().cloned());
        pages += 1;
        match &body["next"] {
            Value::Null => return (sockets, pages),
            Value::String(next) => cursor = Some(next.clone()),
            other => panic!("next is {other}"),
        }
    }
}

fn sids(sockets: &[Value]) -> BTreeSet<String> {
    sockets
        .iter()
        .map(|s| s["sid"].as_str().expect("sid is text").to_owned())
        .collect()
}

async fn listed(frontend: &FrontendNode, query: &str) -> BTreeSet<String> {
    let (sockets, _) = all_pages(frontend, query, 500).await;
    let set = sids(&sockets);
    assert_eq!(set.len(), sockets.len(), "{query}: a socket listed twice");
    set
}

#[tokio::test]
async fn the_admin_api_lists_sockets_rooms_and_users() {
    let mut cluster = Cluster::builder("presence-api")
        .io_nodes(3)
        .io_args(&["--users-auth"])
        .start()
        .await;
    let frontend = cluster.start_frontend().await;
    for (user, secret) in [
        ("ann", "ann-secret-1234-Xq7"),
        ("bob", "bob-secret-1234-Xq7"),
    ] {
        let (status, body) = frontend
            .api(
                "PUT",
                &format!("/api/v1/users/{user}"),
                Some(json!({ "hash": secret })),
            )
            .await;
        assert_eq!(status, 200, "{body}");
    }
    let urls = cluster.io_urls();
    // ann on io0 and io1, bob on io2; rooms joined by the app-node at
    // connection (auth.rooms) and data set there.
    let (_a0, ann0) = connect(
        &urls[0],
        "/",
        json!({ "userId": "ann", "hash": "ann-secret-1234-Xq7", "rooms": ["lobby"], "data": { "score": 7 } }),
    )
    .await;
    let (_a1, ann1) = connect(
        &urls[1],
        "/",
        json!({ "userId": "ann", "hash": "ann-secret-1234-Xq7", "rooms": ["lobby"] }),
    )
    .await;
    let (_b, bob) = connect(
        &urls[2],
        "/",
        json!({ "userId": "bob", "hash": "bob-secret-1234-Xq7", "rooms": ["lobby", "games"] }),
    )
    .await;
    // Anonymous sockets, spread over the nodes; half of them in games.
    let mut anonymous = Vec::new();
    for n in 0..9 {
        let rooms = if n % 2 == 0 {
            json!(["games"])
        } else {
            json!([])
        };
        anonymous.push(connect(&urls[n % 3], "/", json!({ "rooms": rooms })).await);
    }
    let (_o, other) = connect(&urls[1], "/other", json!({ "rooms": ["lobby"] })).await;
    // A room joined later, through an event the app-node handles.
    let joined = anonymous[1]
        .1
        .emit_with_ack("join", vec![json!("late")], WAIT)
        .await
        .unwrap();
    assert_eq!(joined.args, [json!(true)]);

    let everyone: BTreeSet<String> = [&ann0, &ann1, &bob, &other]
        .into_iter()
        .chain(anonymous.iter().map(|(_, s)| s))
        .map(|s| s.id().to_owned())
        .collect();
    assert_eq!(everyone.len(), 13);
    eventually(WAIT, "every socket listed with its rooms", || async {
        let late = listed(&frontend, "room=late").await;
        (listed(&frontend, "").await == everyone && late.len() == 1).then_some(())
    })
    .await;

    // Content.
    let (sockets, _) = all_pages(&frontend, "user=ann", 500).await;
    assert_eq!(sockets.len(), 2);
    let first = sockets
        .iter()
        .find(|s| s["sid"] == ann0.id())
        .expect("ann0 listed");
    let mut rooms: Vec<String> = serde_json::from_value(first["rooms"].clone()).unwrap();
    rooms.sort();
    assert_eq!(rooms, ["$user:ann", "lobby"]);
    assert_eq!(first["namespace"], "/");
    assert_eq!(first["node"], "io0");
    assert_eq!(first["user"], "ann");
    assert!(
        first["address"].as_str().unwrap().starts_with("127.0.0.1:"),
        "{first}"
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let at = first["connectedAt"].as_u64().unwrap();
    assert!(at > now - 120_000 && at <= now, "{first}");
    let keys: BTreeSet<&str> = first
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        BTreeSet::from([
            "sid",
            "namespace",
            "node",
            "address",
            "user",
            "rooms",
            "connectedAt"
        ])
    );
    let (plain, _) = all_pages(&frontend, "room=late", 500).await;
    assert_eq!(plain[0]["user"], Value::Null);
    assert_eq!(plain[0]["rooms"], json!(["late"]));

    // Filters.
    let lobby: BTreeSet<String> = [&ann0, &ann1, &bob, &other]
        .iter()
        .map(|s| s.id().to_owned())
        .collect();
    assert_eq!(listed(&frontend, "room=lobby").await, lobby);
    let root_lobby: BTreeSet<String> = [&ann0, &ann1, &bob]
        .iter()
        .map(|s| s.id().to_owned())
        .collect();
    assert_eq!(
        listed(&frontend, "room=lobby&namespace=/").await,
        root_lobby
    );
    assert_eq!(
        listed(&frontend, "namespace=/other").await,
        BTreeSet::from([other.id().to_owned()])
    );
    assert_eq!(listed(&frontend, "room=games").await.len(), 6);
    assert_eq!(
        listed(&frontend, "user=bob").await,
        BTreeSet::from([bob.id().to_owned()])
    );
    // The search matches user ids and socket ids, case aside: bob's socket,
    // and any whose random id happens to hold "bob".
    let bobs: BTreeSet<String> = everyone
        .iter()
        .filter(|sid| **sid == bob.id() || sid.to_lowercase().contains("bob"))
        .cloned()
        .collect();
    assert!(bobs.contains(bob.id()));
    assert_eq!(listed(&frontend, "q=BOB").await, bobs);
    let part = &ann1.id()[ann1.id().len() - 8..];
    assert_eq!(
        listed(&frontend, &format!("q={part}")).await,
        BTreeSet::from([ann1.id().to_owned()])
    );
    let on_io2 = listed(&frontend, "node=io2").await;
    assert_eq!(on_io2.len(), 4);
    assert!(on_io2.iter().all(|sid| sid.starts_with("io2.")));
    // Empty parameters select nothing out.
    assert_eq!(
        listed(&frontend, "namespace=&room=&user=&node=&q=&cursor=").await,
        everyone
    );
    assert!(listed(&frontend, "user=nobody").await.is_empty());

    // Paging: more sockets than a page, each listed once.
    let (paged, pages) = all_pages(&frontend, "", 4).await;
    assert_eq!(sids(&paged), everyone);
    assert_eq!(paged.len(), everyone.len());
    assert!(pages >= 4, "{pages} pages");
    let (paged, _) = all_pages(&frontend, "room=games", 1).await;
    assert_eq!(paged.len(), 6);

    // One socket, with data and handshake.
    let (status, one) = frontend
        .api("GET", &format!("/api/v1/sockets/{}", ann0.id()), None)
        .await;
    assert_eq!(status, 200, "{one}");
    assert_eq!(one["sid"], ann0.id());
    assert_eq!(one["user"], "ann");
    assert_eq!(one["data"], json!({ "score": 7 }));
    let handshake = &one["handshake"];
    assert_eq!(handshake["address"], first["address"]);
    assert_eq!(handshake["time"], first["connectedAt"]);
    assert_eq!(handshake["secure"], false);
    assert!(
        handshake["url"]
            .as_str()
            .unwrap()
            .starts_with("/socket.io/")
    );
    assert!(
        handshake["query"]
            .as_array()
            .unwrap()
            .contains(&json!(["EIO", "4"]))
    );
    let headers = handshake["headers"].as_array().unwrap();
    assert!(headers.iter().any(|h| h[0] == "host"), "{handshake}");
    // The client connected straight over WebSocket: the upgrade's own
    // headers were in its request, and are left out by default.
    for upgrade in [
        "connection",
        "upgrade",
        "sec-websocket-key",
        "sec-websocket-version",
    ] {
        assert!(
            headers.iter().all(|h| h[0] != upgrade),
            "{upgrade} in {handshake}"
        );
    }
    // The credential never shows: auth has the verified user, not the hash.
    assert_eq!(handshake["auth"]["userId"], "ann");
    assert!(handshake["auth"].get("hash").is_none(), "{handshake}");
    let (status, one) = frontend
        .api("GET", &format!("/api/v1/sockets/{}", other.id()), None)
        .await;
    assert_eq!(
        (status, &one["namespace"], &one["data"]),
        (200, &json!("/other"), &Value::Null)
    );
    for sid in ["io0.nosuchsocket", "ghost.abc", "x"] {
        let (status, body) = frontend
            .api("GET", &format!("/api/v1/sockets/{sid}"), None)
            .await;
        assert_eq!(status, 404, "{sid}: {body}");
        assert_eq!(body["error"]["code"], "unknown_socket", "{body}");
    }

    // Rooms, largest first; user rooms only when asked for.
    let (status, body) = frontend.api("GET", "/api/v1/rooms", None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["complete"], true);
    assert_eq!(
        body["rooms"],
        json!([
            { "namespace": "/", "room": "games", "members": 6 },
            { "namespace": "/", "room": "lobby", "members": 3 },
            { "namespace": "/", "room": "late", "members": 1 },
            { "namespace": "/other", "room": "lobby", "members": 1 },
        ])
    );
    let (_, body) = frontend
        .api("GET", "/api/v1/rooms?namespace=/other", None)
        .await;
    assert_eq!(
        body["rooms"],
        json!([{ "namespace": "/other", "room": "lobby", "members": 1 }])
    );
    let (_, body) = frontend
        .api("GET", "/api/v1/rooms?q=LOB&limit=1", None)
        .await;
    assert_eq!(
        body["rooms"],
        json!([{ "namespace": "/", "room": "lobby", "members": 3 }])
    );
    let (_, body) = frontend.api("GET", "/api/v1/rooms?q=%24user", None).await;
    assert_eq!(
        body["rooms"],
        json!([
            { "namespace": "/", "room": "$user:ann", "members": 2 },
            { "namespace": "/", "room": "$user:bob", "members": 1 },
        ])
    );
    let (status, body) = frontend.api("GET", "/api/v1/users", None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["users"],
        json!([{ "user": "ann", "sockets": 2 }, { "user": "bob", "sockets": 1 }])
    );
    let (_, body) = frontend
        .api("GET", "/api/v1/users?namespace=/other", None)
        .await;
    assert_eq!(body["users"], json!([]));

    // Refusals, in the API's error shape.
    for path in [
        "/api/v1/sockets?limit=0",
        "/api/v1/sockets?limit=501",
        "/api/v1/sockets?limit=many",
        "/api/v1/sockets?cursor=bm90LWEtY3Vyc29y",
        "/api/v1/sockets?namespace=nope",
        "/api/v1/sockets?node=not%20a%20node",
        "/api/v1/sockets?colour=red",
        "/api/v1/rooms?limit=1000",
        "/api/v1/users?q=x",
    ] {
        let (status, body) = frontend.api("GET", path, None).await;
        assert_eq!(status, 400, "{path}: {body}");
        assert_eq!(body["error"]["code"], "invalid_request", "{path}: {body}");
    }
    for path in [
        "/api/v1/sockets".to_owned(),
        format!("/api/v1/sockets/{}", ann0.id()),
        "/api/v1/rooms".to_owned(),
        "/api/v1/users".to_owned(),
    ] {
        let response = http(&frontend.admin_addr(), "GET", &path, &[], b"")
            .await
            .unwrap();
        assert_eq!(response.status, 401, "{path}");
    }

    // Gone: a socket that left, and the sockets of a dead io-node.
    anonymous[1].1.disconnect().unwrap();
    let left = anonymous[1].1.id().to_owned();
    eventually(WAIT, "the socket that left unlisted", || async {
        (!listed(&frontend, "").await.contains(&left)).then_some(())
    })
    .await;
    cluster.io[2].process.kill();
    eventually(WAIT, "io2's sockets unlisted", || async {
        let now = listed(&frontend, "").await;
        (now.iter().all(|sid| !sid.starts_with("io2.")) && now.len() == 8).then_some(())
    })
    .await;
    let (status, _) = frontend
        .api("GET", &format!("/api/v1/sockets/{}", bob.id()), None)
        .await;
    assert_eq!(status, 404);
    let (_, body) = frontend.api("GET", "/api/v1/users", None).await;
    assert_eq!(body["users"], json!([{ "user": "ann", "sockets": 2 }]));
}

#[tokio::test]
async fn the_api_description_names_the_admin_listener() {
    let cluster = Cluster::builder("presence-openapi")
        .io_nodes(1)
        .app_nodes("iocluster-test-app", 1)
        .start()
        .await;
    let frontend = cluster.start_frontend().await;
    let spec = http(&frontend.admin_addr(), "GET", "/openapi.json", &[], b"")
        .await
        .unwrap();
    assert_eq!(spec.status, 200);
    let spec: Value = serde_json::from_slice(&spec.body).unwrap();
    assert_eq!(spec["servers"], json!([{ "url": frontend.admin_url() }]));
    for path in [
        "/api/v1/sockets",
        "/api/v1/sockets/{sid}",
        "/api/v1/rooms",
        "/api/v1/users",
    ] {
        assert!(spec["paths"][path]["get"].is_object(), "{path} described");
    }
    // No bare object anywhere: every object says what it holds.
    fn check(value: &Value, at: &str) {
        match value {
            Value::Object(map) => {
                if map.get("type") == Some(&json!("object")) {
                    assert!(
                        map.contains_key("properties") || map.contains_key("additionalProperties"),
                        "bare object at {at}"
                    );
                }
                for (key, inner) in map {
                    check(inner, &format!("{at}/{key}"));
                }
            }
            Value::Array(items) => {
                for (i, inner) in items.iter().enumerate() {
                    check(inner, &format!("{at}/{i}"));
                }
            }
            _ => {}
        }
    }
    check(&spec, "");
    // Every 200 has a body described by a schema.
    for (path, methods) in spec["paths"].as_object().unwrap() {
        for (method, operation) in methods.as_object().unwrap() {
            if method == "parameters" {
                continue;
            }
            let ok = &operation["responses"]["200"]["content"]["application/json"]["schema"];
            assert!(ok.is_object(), "{method} {path}: 200 without a schema");
        }
    }
    let docs = http(&frontend.admin_addr(), "GET", "/docs", &[], b"")
        .await
        .unwrap();
    let page = docs.text();
    assert!(page.contains(&format!(
        "curl -sS -X POST {}/api/v1/publish",
        frontend.admin_url()
    )));
    assert!(!page.contains("{{ADMIN_URL}}") && !page.contains("8081"));
    // A Host header that is not a plain host falls back to the listener's
    // address: nothing from it reaches the page.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(frontend.admin_addr())
        .await
        .unwrap();
    stream
        .write_all(b"GET /docs HTTP/1.1\r\nHost: x\"><script>alert(1)</script>\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.unwrap();
    let raw = String::from_utf8_lossy(&raw);
    assert!(raw.starts_with("HTTP/1.1 200"), "{raw}");
    assert!(!raw.contains("<script>alert"), "{raw}");
    assert!(raw.contains(&format!(
        "curl -sS -X POST {}/api/v1/publish",
        frontend.admin_url()
    )));
}

/// The SDK's cluster-wide selection calls, from handlers of the test app:
/// `fetch_sockets`, `sockets_join`, `sockets_leave`, `disconnect_sockets`.
#[tokio::test]
async fn the_sdk_fetches_and_commands_sockets_on_every_io_node() {
    let cluster = Cluster::builder("presence-sdk").io_nodes(3).start().await;
    let urls = cluster.io_urls();
    // Three red sockets, one per io-node; two others; one in /other.
    let mut red = Vec::new();
    for (n, url) in urls.iter().enumerate() {
        red.push(connect(url, "/", json!({ "rooms": ["red"], "data": { "n": n } })).await);
    }
    let (_g0, green) = connect(&urls[0], "/", json!({ "rooms": ["green"] })).await;
    let (_p, plain) = connect(&urls[2], "/", json!({})).await;
    let (_o, other) = connect(&urls[1], "/other", json!({ "rooms": ["red"] })).await;
    let red_ids: BTreeSet<String> = red.iter().map(|(_, s)| s.id().to_owned()).collect();

    async fn call(socket: &Socket, event: &str, arg: Value) -> Value {
        let answer = socket.emit_with_ack(event, vec![arg], WAIT).await.unwrap();
        answer.args.into_iter().next().unwrap_or(Value::Null)
    }
    fn ids(answer: &Value) -> BTreeSet<String> {
        answer["sockets"]
            .as_array()
            .unwrap_or_else(|| panic!("no sockets: {answer}"))
            .iter()
            .map(|s| s["id"].as_str().unwrap().to_owned())
            .collect()
    }

    // fetch_sockets: a room's members on every io-node, with their snapshot.
    let fetched = eventually(WAIT, "the red sockets fetched", || async {
        let answer = call(&plain, "fetch", json!({ "room": "red" })).await;
        (ids(&answer) == red_ids).then_some(answer)
    })
    .await;
    for socket in fetched["sockets"].as_array().unwrap() {
        let n = socket["data"]["n"].as_u64().unwrap() as usize;
        assert_eq!(socket["id"], red[n].1.id());
        assert_eq!(socket["node"], format!("io{n}"));
        assert_eq!(socket["nsp"], "/");
        assert_eq!(socket["rooms"], json!(["red"]));
        assert_eq!(socket["user"], Value::Null);
        assert!(
            socket["address"]
                .as_str()
                .unwrap()
                .starts_with("127.0.0.1:")
        );
    }
    // The whole namespace, except a room; one socket by id; /other apart.
    let everyone: BTreeSet<String> = red_ids
        .iter()
        .cloned()
        .chain([green.id().to_owned(), plain.id().to_owned()])
        .collect();
    assert_eq!(ids(&call(&plain, "fetch", json!({})).await), everyone);
    let not_red: BTreeSet<String> = [green.id().to_owned(), plain.id().to_owned()].into();
    assert_eq!(
        ids(&call(&plain, "fetch", json!({ "except": "red" })).await),
        not_red
    );
    let one = call(&plain, "fetch", json!({ "sid": red[1].1.id() })).await;
    assert_eq!(ids(&one), BTreeSet::from([red[1].1.id().to_owned()]));
    assert_eq!(
        ids(&call(&other, "fetch", json!({ "room": "red" })).await),
        BTreeSet::from([other.id().to_owned()])
    );
    assert!(ids(&call(&plain, "fetch", json!({ "sid": "io1.gone" })).await).is_empty());
    // (A zero timeout is not checked here: whether Redis answers before a
    // zero-length timer fires is a race, and tests assert no timing.)

    // sockets_join: once it answers, an emit to the room reaches every
    // socket told, on every io-node.
    let joined = call(
        &plain,
        "socketsJoin",
        json!({ "room": "red", "rooms": ["blue"] }),
    )
    .await;
    assert_eq!(joined, json!({ "count": 3 }));
    let sent = call(
        &plain,
        "toRoom",
        json!({ "rooms": ["blue"], "event": "sky", "data": 1 }),
    )
    .await;
    assert_eq!(sent, json!(true));
    for (_, socket) in &red {
        assert_eq!(iocluster_tests::next_named(socket, "sky").await, json!(1));
    }
    eventually(WAIT, "the blue members fetched", || async {
        (ids(&call(&plain, "fetch", json!({ "room": "blue" })).await) == red_ids).then_some(())
    })
    .await;
    // sockets_leave: the room empties.
    let left = call(
        &plain,
        "socketsLeave",
        json!({ "room": "blue", "rooms": ["blue"] }),
    )
    .await;
    assert_eq!(left, json!({ "count": 3 }));
    eventually(WAIT, "blue empty", || async {
        ids(&call(&plain, "fetch", json!({ "room": "blue" })).await)
            .is_empty()
            .then_some(())
    })
    .await;
    let state = red[0].1.emit_with_ack("state", vec![], WAIT).await.unwrap();
    assert_eq!(state.args[0]["rooms"], json!(["red"]));

    // disconnect_sockets: the red sockets are disconnected by the server,
    // the others stay.
    let kicked = call(&plain, "disconnectSockets", json!({ "room": "red" })).await;
    assert_eq!(kicked, json!({ "count": 3 }));
    for (_, socket) in &red {
        eventually(WAIT, "a red socket disconnected", || async {
            match socket.recv().await {
                Some(iocluster_client::Received::Disconnected) | None => Some(()),
                Some(iocluster_client::Received::Event(_)) => None,
            }
        })
        .await;
    }
    eventually(WAIT, "only the others left", || async {
        (ids(&call(&plain, "fetch", json!({})).await) == not_red).then_some(())
    })
    .await;
    let reasons = cluster.disconnect_reasons().await;
    for sid in &red_ids {
        assert!(
            reasons.contains(&format!("{sid} server namespace disconnect")),
            "{sid}: {reasons:?}"
        );
    }
    // Nothing matched: nothing to do.
    let none = call(
        &plain,
        "disconnectSockets",
        json!({ "room": "nobody-here" }),
    )
    .await;
    assert_eq!(none, json!({ "count": 0 }));
    assert_eq!(
        call(&green, "state", json!(null)).await["rooms"],
        json!(["green"])
    );
}
