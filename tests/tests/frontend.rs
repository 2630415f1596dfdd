//! The frontend node across two io-nodes: the live io-node list, the admin
//! API (publish to users on every node, credentials with expiry and
//! revocation, JWT admission, cluster view, client actions), and what it
//! refuses.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use iocluster_client::{Client, ClientError, Received, Socket};
use iocluster_tests::{Cluster, eventually, http, metric, next_named, socket_on};
use serde_json::{Value, json};
use sha2::Sha256;

const WAIT: Duration = Duration::from_secs(10);
const JWT_SECRET: &str = "a-test-secret-of-at-least-32-bytes!!";

async fn connect(url: &str, auth: Value) -> Result<(Client, Socket), ClientError> {
    socket_on(url, Some(auth)).await
}

/// Nothing named `name` arrives within a moment.
async fn nothing_named(socket: &Socket, name: &str) {
    while let Ok(event) = socket.recv_event(Duration::from_millis(300)).await {
        assert_ne!(event.name, name, "unexpected {name}: {event:?}");
    }
}

fn token(claims: Value, secret: &str) -> String {
    let signed = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(r#"{"alg":"HS256","typ":"JWT"}"#),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(signed.as_bytes());
    format!(
        "{signed}.{}",
        URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
    )
}

fn now_s() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[tokio::test]
async fn browsers_get_the_live_io_nodes_and_the_pages() {
    let mut cluster = Cluster::builder("frontend-config").start().await;
    let frontend = cluster.start_frontend().await;
    // The frontend has an ops listener like every node.
    for path in ["/health", "/ready", "/metrics"] {
        let response = http(&frontend.ops_addr(), "GET", path, &[], b"")
            .await
            .unwrap();
        assert_eq!(response.status, 200, "{path}");
    }
    let (_c, _s) = connect(&cluster.io[1].url(), json!({})).await.unwrap();
    // io1 has a client: io0 is listed first (least loaded).
    let listed = eventually(WAIT, "both io-nodes listed, least loaded first", || async {
        let response = http(&frontend.addr(), "GET", "/config.json", &[], b"")
            .await
            .ok()?;
        let json: Value = serde_json::from_slice(&response.body).ok()?;
        let ids: Vec<String> = json["nodes"]
            .as_array()?
            .iter()
            .map(|n| n["id"].as_str().unwrap_or("").to_owned())
            .collect();
        (ids == ["io0", "io1"] && json["nodes"][1]["connections"] == 1).then_some(json)
    })
    .await;
    assert_eq!(listed["nodes"][0]["url"], cluster.io[0].url());
    let js = http(&frontend.addr(), "GET", "/config.js", &[], b"")
        .await
        .unwrap();
    assert!(js.text().starts_with("window.IOCLUSTER = {\"nodes\":["));
    assert_eq!(js.header("cache-control"), Some("no-store"));
    for (path, needle) in [
        ("/", "iocluster chat"),
        ("/iocluster.js", "iocluster.connect"),
        ("/socket.io.min.js", "Socket.IO"),
    ] {
        let page = http(&frontend.addr(), "GET", path, &[], b"").await.unwrap();
        assert_eq!(page.status, 200, "{path}");
        assert!(page.text().contains(needle), "{path} has {needle}");
    }
    // A killed io-node leaves the list within about a lease.
    cluster.io[0].process.kill();
    eventually(WAIT, "the dead io-node dropped", || async {
        let response = http(&frontend.addr(), "GET", "/config.json", &[], b"")
            .await
            .ok()?;
        let json: Value = serde_json::from_slice(&response.body).ok()?;
        (json["nodes"].as_array()?.len() == 1 && json["nodes"][0]["id"] == "io1").then_some(())
    })
    .await;
}

#[tokio::test]
async fn the_admin_api_reaches_every_socket_of_a_user_once() {
    let cluster = Cluster::builder("frontend-users")
        .io_args(&["--users-auth"])
        .start()
        .await;
    let frontend = cluster.start_frontend().await;
    let (status, body) = frontend
        .api(
            "PUT",
            "/api/v1/users/ann",
            Some(json!({ "hash": "ann-secret-1234-Xq7" })),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let ann = json!({ "userId": "ann", "hash": "ann-secret-1234-Xq7" });
    // Two tabs on io0 and one on io1, all admitted by the io-nodes.
    let (_a, tab1) = connect(&cluster.io[0].url(), ann.clone()).await.unwrap();
    let (_b, tab2) = connect(&cluster.io[0].url(), ann.clone()).await.unwrap();
    let (_c, phone) = connect(&cluster.io[1].url(), ann.clone()).await.unwrap();
    let (_d, other) = connect(&cluster.io[1].url(), json!({})).await.unwrap();
    // The app-nodes still hear about the connections, and see the user.
    let state = tab1.emit_with_ack("state", vec![], WAIT).await.unwrap();
    assert_eq!(state.args[0]["rooms"], json!(["$user:ann"]));

    let (status, body) = frontend
        .publish(json!({ "event": "notice", "args": [{"n": 1}], "to": { "users": ["ann"] } }))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["ioNodesReached"], 2, "{body}");
    for socket in [&tab1, &tab2, &phone] {
        assert_eq!(next_named(socket, "notice").await, json!({"n": 1}));
        nothing_named(socket, "notice").await;
    }
    nothing_named(&other, "notice").await;

    // Except: all but one tab.
    let (status, _) = frontend
        .publish(json!({
            "event": "notice",
            "args": [2],
            "to": { "all": true },
            "except": { "sids": [tab2.id()] },
        }))
        .await;
    assert_eq!(status, 200);
    for socket in [&tab1, &phone, &other] {
        assert_eq!(next_named(socket, "notice").await, json!(2));
    }
    nothing_named(&tab2, "notice").await;

    // Redis keeps a salted digest, never the secret.
    let mut redis = cluster.redis().await;
    let (salt, stored): (String, String) = redis::cmd("HMGET")
        .arg(format!("{}:user:ann", cluster.prefix))
        .arg("salt")
        .arg("secret")
        .query_async(&mut redis)
        .await
        .unwrap();
    assert_eq!(salt.len(), 32);
    assert_eq!(
        stored,
        iocluster_protocol::credentials::salted_digest(&salt, "ann-secret-1234-Xq7")
    );
    // A secret the API generates, shown once, admits its user.
    let (status, body) = frontend
        .api("PUT", "/api/v1/users/cid", Some(json!({})))
        .await;
    assert_eq!(status, 200, "{body}");
    let generated = body["hash"].as_str().unwrap().to_owned();
    assert_eq!(generated.len(), 32);
    let (_e, cid) = connect(
        &cluster.io[1].url(),
        json!({ "userId": "cid", "hash": generated }),
    )
    .await
    .unwrap();
    let state = cid.emit_with_ack("state", vec![], WAIT).await.unwrap();
    assert_eq!(state.args[0]["rooms"], json!(["$user:cid"]));
    // A guessable secret is not registered.
    let (status, _) = frontend
        .api(
            "PUT",
            "/api/v1/users/dee",
            Some(json!({ "hash": "aaaaaaaaaaaaaaaaaaaaaaaa" })),
        )
        .await;
    assert_eq!(status, 400);

    // A wrong secret is refused by the io-node itself.
    let refused = connect(
        &cluster.io[0].url(),
        json!({ "userId": "ann", "hash": "wrong-secret" }),
    )
    .await;
    assert!(
        matches!(&refused, Err(ClientError::ConnectRefused(e)) if e.message == "Unauthorized"),
        "{:?}",
        refused.err()
    );
    // Revoked: new connections refused, live ones stay.
    let (status, _) = frontend.api("DELETE", "/api/v1/users/ann", None).await;
    assert_eq!(status, 200);
    let (status, _) = frontend.api("DELETE", "/api/v1/users/ann", None).await;
    assert_eq!(status, 404);
    assert!(connect(&cluster.io[1].url(), ann.clone()).await.is_err());
    tab1.emit_with_ack("slow", vec![json!(0)], WAIT)
        .await
        .unwrap();
    // Expiry.
    let (status, body) = frontend
        .api(
            "PUT",
            "/api/v1/users/bob",
            Some(json!({ "hash": "bob-secret-1234-Xq7", "ttlSeconds": 1 })),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let bob = json!({ "userId": "bob", "hash": "bob-secret-1234-Xq7" });
    assert!(connect(&cluster.io[0].url(), bob.clone()).await.is_ok());
    tokio::time::sleep(Duration::from_millis(1300)).await;
    assert!(connect(&cluster.io[0].url(), bob).await.is_err());
}

#[tokio::test]
async fn tokens_admit_users_until_they_expire() {
    let cluster = Cluster::builder("frontend-jwt")
        .io_args(&["--jwt-secret", JWT_SECRET, "--require-auth"])
        .start()
        .await;
    let frontend = cluster.start_frontend().await;
    let good = token(json!({ "sub": "carol", "exp": now_s() + 60 }), JWT_SECRET);
    let (_a, socket) = connect(&cluster.io[1].url(), json!({ "token": good }))
        .await
        .unwrap();
    let (status, body) = frontend
        .publish(json!({ "event": "hi", "to": { "users": ["carol"] } }))
        .await;
    assert_eq!((status, body["ioNodesReached"].clone()), (200, json!(1)));
    next_named(&socket, "hi").await;
    // Connected means reachable: a publish to a user right after their
    // CONNECT reaches them, each time on a room channel subscribed anew.
    for n in 0..20 {
        let user = format!("user-{n}");
        let fresh = token(json!({ "sub": user, "exp": now_s() + 60 }), JWT_SECRET);
        let (_client, socket) = connect(&cluster.io[n % 2].url(), json!({ "token": fresh }))
            .await
            .unwrap();
        let (status, body) = frontend
            .publish(json!({ "event": "hi", "to": { "users": [user] } }))
            .await;
        assert_eq!(
            (status, body["ioNodesReached"].clone()),
            (200, json!(1)),
            "{user}"
        );
        next_named(&socket, "hi").await;
    }
    let refusals = [
        json!({ "token": token(json!({ "sub": "carol", "exp": now_s() - 1 }), JWT_SECRET) }),
        json!({ "token": token(json!({ "sub": "carol", "exp": now_s() + 60 }), "another-secret-of-at-least-32-bytes") }),
        json!({ "token": "not.a.token" }),
        // --require-auth: no credentials, no entry.
        json!({}),
    ];
    for auth in refusals {
        let result = connect(&cluster.io[0].url(), auth.clone()).await;
        assert!(
            matches!(&result, Err(ClientError::ConnectRefused(e)) if e.message == "Unauthorized"),
            "{auth}: {:?}",
            result.err()
        );
    }
    assert_eq!(
        metric(&cluster.io[0].ops_addr(), "iocluster_auth_refused_total").await,
        4.0
    );
}

#[tokio::test]
async fn the_cluster_view_and_client_actions() {
    let cluster = Cluster::builder("frontend-cluster").start().await;
    let frontend = cluster.start_frontend().await;
    let (_a, a) = connect(&cluster.io[0].url(), json!({ "rooms": ["r1"] }))
        .await
        .unwrap();
    let (_b, _b_socket) = connect(&cluster.io[1].url(), json!({ "rooms": ["r1", "r2"] }))
        .await
        .unwrap();
    let view = eventually(WAIT, "the view shows both clients and rooms", || async {
        let (status, view) = frontend.api("GET", "/api/v1/cluster", None).await;
        (status == 200
            && view["connections"] == 2
            && view["rooms"].as_array().is_some_and(|r| !r.is_empty()))
        .then_some(view)
    })
    .await;
    assert_eq!(view["ioNodes"].as_array().unwrap().len(), 2);
    assert_eq!(view["appNodes"].as_array().unwrap().len(), 2);
    assert!(view["appNodes"][0]["alive"].as_bool().unwrap());
    assert_eq!(view["namespaces"]["/"], 2);
    assert_eq!(
        view["rooms"][0],
        json!({ "nsp": "/", "room": "r1", "size": 2 })
    );
    assert_eq!(
        view["rooms"][1],
        json!({ "nsp": "/", "room": "r2", "size": 1 })
    );
    assert_eq!(view["queueDepth"], 0);
    assert!(
        view["servedNamespaces"]
            .as_array()
            .unwrap()
            .contains(&json!("/"))
    );

    // Join a room through the API, get what is published there, leave it.
    let path = format!("/api/v1/clients/{}/join", a.id());
    let (status, body) = frontend
        .api("POST", &path, Some(json!({ "rooms": ["vip"] })))
        .await;
    assert_eq!(status, 200, "{body}");
    eventually(WAIT, "a is in vip", || async {
        let state = a.emit_with_ack("state", vec![], WAIT).await.ok()?;
        let rooms = state.args[0]["rooms"].as_array()?.clone();
        rooms.contains(&json!("vip")).then_some(())
    })
    .await;
    let (status, _) = frontend
        .publish(json!({ "event": "vip-news", "to": { "rooms": ["vip"] } }))
        .await;
    assert_eq!(status, 200);
    next_named(&a, "vip-news").await;
    let path = format!("/api/v1/clients/{}/disconnect", a.id());
    let (status, _) = frontend.api("POST", &path, None).await;
    assert_eq!(status, 200);
    eventually(WAIT, "a disconnected by the server", || async {
        match a.recv().await {
            Some(Received::Disconnected) | None => Some(()),
            Some(Received::Event(_)) => None,
        }
    })
    .await;
    let (status, body) = frontend
        .api("POST", "/api/v1/clients/ghost.abcdef/disconnect", None)
        .await;
    assert_eq!(status, 404, "{body}");
    // A sid of a live io-node that names no open socket (a's, now gone).
    let (status, body) = frontend.api("POST", &path, None).await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["error"]["code"], "unknown_client", "{body}");
    // Unknown paths and methods answer in the API's error shape.
    let (status, body) = frontend.api("GET", "/api/v1/nothing-here", None).await;
    assert_eq!((status, &body["error"]["code"]), (404, &json!("not_found")));
    let (status, body) = frontend.api("DELETE", "/api/v1/publish", None).await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (405, &json!("method_not_allowed"))
    );
}

#[tokio::test]
async fn the_admin_api_refuses_bad_requests_and_does_nothing() {
    let cluster = Cluster::builder("frontend-refusals")
        .io_nodes(1)
        .app_nodes("iocluster-test-app", 1)
        .start()
        .await;
    let frontend = cluster.start_frontend().await;
    let admin = frontend.admin_addr();
    let publish = br#"{"event":"x","to":{"all":true}}"#;
    for auth in [
        None,
        Some("Bearer wrong-key-0123456789"),
        Some("test-key-0123456789abcdef"),
    ] {
        let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("Authorization", *a)).collect();
        let response = http(&admin, "POST", "/api/v1/publish", &headers, publish)
            .await
            .unwrap();
        assert_eq!(response.status, 401, "{auth:?}");
        let body: Value = serde_json::from_slice(&response.body).unwrap();
        assert_eq!(body["error"]["code"], "unauthorized");
    }
    let bad = [
        (json!("not an object"), 400),
        (json!({ "event": "x" }), 400),
        (json!({ "event": "x", "to": {} }), 400),
        (
            json!({ "event": "x", "to": { "all": true, "rooms": ["a"] } }),
            400,
        ),
        (
            json!({ "event": "x", "to": { "all": true }, "bogus": 1 }),
            400,
        ),
        (json!({ "event": "connect", "to": { "all": true } }), 400),
        (json!({ "event": "", "to": { "all": true } }), 400),
        (
            json!({ "event": "x", "nsp": "nope", "to": { "all": true } }),
            400,
        ),
        (
            json!({ "event": "x", "to": { "rooms": ["$user:ann"] } }),
            400,
        ),
        (
            json!({ "event": "x", "to": { "sids": ["not-a-sid"] } }),
            422,
        ),
        (json!({ "event": "x", "to": { "users": [""] } }), 400),
        (
            json!({ "event": "x", "args": ["y".repeat(70_000)], "to": { "all": true } }),
            413,
        ),
    ];
    for (body, expected) in bad {
        let (status, answer) = frontend.publish(body.clone()).await;
        assert_eq!(status, expected, "{body}: {answer}");
        assert!(answer["error"]["message"].is_string(), "{answer}");
    }
    let raw = http(
        &admin,
        "POST",
        "/api/v1/publish",
        &[("Authorization", "Bearer test-key-0123456789abcdef")],
        b"{not json",
    )
    .await
    .unwrap();
    assert_eq!(raw.status, 400);
    for (path, body) in [
        ("/api/v1/users/ann", json!({ "hash": "short" })),
        (
            "/api/v1/users/ann",
            json!({ "hash": "long-enough-secret-1X", "ttlSeconds": 5, "expiresAt": 1 }),
        ),
        (
            "/api/v1/users/ann",
            json!({ "hash": "long-enough-secret-1X", "expiresAt": 1 }),
        ),
    ] {
        let (status, answer) = frontend.api("PUT", path, Some(body)).await;
        assert_eq!(status, 400, "{answer}");
    }
    // Nothing reached Redis: no emit was applied and no user stored.
    assert_eq!(
        metric(
            &cluster.io[0].ops_addr(),
            r#"iocluster_commands_total{type="emit"}"#
        )
        .await,
        0.0
    );
    let mut redis = cluster.redis().await;
    let stored: bool = redis::cmd("EXISTS")
        .arg(format!("{}:user:ann", cluster.prefix))
        .query_async(&mut redis)
        .await
        .unwrap();
    assert!(!stored);
    // The docs are there for whoever reaches the admin listener.
    let spec = http(&admin, "GET", "/openapi.json", &[], b"")
        .await
        .unwrap();
    let spec: Value = serde_json::from_slice(&spec.body).unwrap();
    assert_eq!(spec["openapi"], "3.0.3");
    assert!(spec["paths"]["/api/v1/publish"]["post"].is_object());
    let docs = http(&admin, "GET", "/docs", &[], b"").await.unwrap();
    assert!(docs.text().contains("/openapi.json"));
    // Secrets never reach the log.
    let log = std::fs::read_to_string(&frontend.process.log).unwrap();
    assert!(!log.contains(&frontend.api_key));
}

#[tokio::test]
async fn the_static_list_stands_in_when_no_io_node_is_registered() {
    let cluster = Cluster::builder("frontend-fallback")
        .io_nodes(0)
        .app_nodes("iocluster-test-app", 0)
        .start()
        .await;
    let config = cluster.logs().join("frontend.toml");
    std::fs::write(
        &config,
        "[[fallback_nodes]]\nid = \"edge-1\"\nurl = \"https://edge-1.example.com\"\n",
    )
    .unwrap();
    let frontend = cluster
        .start_frontend_with(&["--config", config.to_str().unwrap()])
        .await;
    let response = http(&frontend.addr(), "GET", "/config.json", &[], b"")
        .await
        .unwrap();
    let json: Value = serde_json::from_slice(&response.body).unwrap();
    assert_eq!(
        json,
        json!({ "nodes": [{ "id": "edge-1", "url": "https://edge-1.example.com", "connections": 0 }] })
    );
}
