//! The Redis scripts of the protocol run against a real redis-server, for
//! what no end-to-end scenario reaches in a test's time: a recovered
//! socket's `P:where` entry (the io-node holding it) goes when the socket
//! is announced gone by the sweep or by the drain of a dead holder's
//! ledger, so the hash does not grow with every such socket.

use iocluster_protocol::keys::Keys;
use iocluster_protocol::scripts;
use iocluster_tests::RedisServer;

/// A fresh redis-server (logging under `target/test-logs/<test>`) and a
/// connection to it.
async fn redis_server(test: &str) -> (RedisServer, redis::aio::MultiplexedConnection) {
    let logs = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../target/test-logs")
        .join(test);
    std::fs::create_dir_all(&logs).unwrap();
    let server = RedisServer::start(&logs).await;
    let connection = server.connection().await.unwrap();
    (server, connection)
}

/// The event queue, newest first.
async fn queued(redis: &mut redis::aio::MultiplexedConnection, keys: &Keys) -> Vec<Vec<u8>> {
    redis::cmd("LRANGE")
        .arg(keys.events())
        .arg(0)
        .arg(-1)
        .query_async(redis)
        .await
        .unwrap()
}

#[tokio::test]
async fn the_sweep_forgets_where_an_expired_session_was_held() {
    let (_server, mut redis) = redis_server("scripts-sweep").await;
    let keys = Keys::new("p");
    // io1.a was recovered on io2, then io2 parked it; its window is over.
    let sid = "io1.a";
    redis::pipe()
        .cmd("SET")
        .arg(keys.session(sid))
        .arg("disconnect-envelope")
        .cmd("ZADD")
        .arg(keys.parked())
        .arg(1)
        .arg(sid)
        .cmd("HSET")
        .arg(keys.located())
        .arg(sid)
        .arg("io2")
        .cmd("HSET")
        .arg(keys.located())
        .arg("io1.b")
        .arg("io2")
        .exec_async(&mut redis)
        .await
        .unwrap();
    let announced: u64 = redis::Script::new(scripts::SWEEP)
        .key(keys.parked())
        .key(keys.events())
        .key(keys.located())
        .arg(1_000)
        .arg(100)
        .arg(keys.session(""))
        .invoke_async(&mut redis)
        .await
        .unwrap();
    assert_eq!(announced, 1);
    assert_eq!(
        queued(&mut redis, &keys).await,
        vec![b"disconnect-envelope".to_vec()]
    );
    let located: Vec<String> = redis::cmd("HKEYS")
        .arg(keys.located())
        .query_async(&mut redis)
        .await
        .unwrap();
    assert_eq!(
        located,
        vec!["io1.b"],
        "the expired socket's entry is gone, only"
    );
}

#[tokio::test]
async fn draining_a_dead_holder_forgets_where_its_sockets_were_held() {
    let (_server, mut redis) = redis_server("scripts-drain").await;
    let keys = Keys::new("p");
    // io2 holds io1.a (recovered there) in a namespace without recovery,
    // and died: its lease lapsed.
    let sid = "io1.a";
    let envelope = iocluster_protocol::envelope::Event {
        kind: iocluster_protocol::envelope::EventKind::Disconnect,
        node: "io2".into(),
        sid: sid.into(),
        nsp: "/".into(),
        seq: 3,
        data: None,
        bin: Vec::new(),
        ack: None,
        reason: Some("io-node lost".into()),
        rooms: Vec::new(),
        sdata: None,
        handshake: Default::default(),
        recovered: false,
        seen: Vec::new(),
    }
    .encode();
    redis::pipe()
        .cmd("ZADD")
        .arg(keys.nodes())
        .arg(1)
        .arg("io2")
        .cmd("SADD")
        .arg(keys.ledgers())
        .arg("io2")
        .cmd("HSET")
        .arg(keys.ledger("io2"))
        .arg(sid)
        .arg(&envelope)
        .cmd("HSET")
        .arg(keys.located())
        .arg(sid)
        .arg("io2")
        .exec_async(&mut redis)
        .await
        .unwrap();
    let (moved, left): (u64, i64) = redis::Script::new(scripts::DRAIN)
        .key(keys.nodes())
        .key(keys.ledger("io2"))
        .key(keys.events())
        .key(keys.ledgers())
        .key(keys.reaped("io2"))
        .key(keys.node_info("io2"))
        .key(keys.recovery())
        .key(keys.parked())
        .key(keys.located())
        .arg("io2")
        .arg(1_000)
        .arg(100)
        .arg("0")
        .arg(60_000)
        .arg(keys.session(""))
        .invoke_async(&mut redis)
        .await
        .unwrap();
    assert_eq!((moved, left), (1, 0));
    assert_eq!(queued(&mut redis, &keys).await, vec![envelope]);
    let located: bool = redis::cmd("HEXISTS")
        .arg(keys.located())
        .arg(sid)
        .query_async(&mut redis)
        .await
        .unwrap();
    assert!(!located, "the announced socket's P:where entry is gone");
}
