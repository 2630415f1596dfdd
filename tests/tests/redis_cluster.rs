//! A Redis Cluster (`redis+cluster://…`): three masters with a replica
//! each, made by the test with `redis-cli --cluster create`. Every key and
//! channel of the nodes is in one slot (the prefix is their hash tag), so
//! the suite's scenarios run unchanged; a master killed under load fails
//! over inside the cluster with nothing lost.

use std::time::{Duration, Instant};

use iocluster_tests::{Cluster, eventually};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(20);

/// Rooms, broadcasts, acks both ways, binary and order across io-nodes; an
/// app-node killed mid-event; an io-node killed under its clients; and
/// the admin API, all on the Redis Cluster.
#[tokio::test]
async fn the_suites_scenarios_run_on_a_redis_cluster() {
    let mut cluster = Cluster::builder("redis-cluster")
        .redis_cluster()
        .io_nodes(3)
        .start()
        .await;
    let tag = cluster.key_prefix();
    assert_eq!(tag, format!("{{{}}}", cluster.prefix));

    cluster.cross_node_scenario().await;

    // Every key the nodes wrote is in the prefix's slot.
    let mut redis = cluster.redis().await;
    let slot: i64 = redis::cmd("CLUSTER")
        .arg("KEYSLOT")
        .arg(&tag)
        .query_async(&mut redis)
        .await
        .unwrap();
    let in_slot: i64 = redis::cmd("CLUSTER")
        .arg("COUNTKEYSINSLOT")
        .arg(slot)
        .query_async(&mut redis)
        .await
        .unwrap();
    assert!(in_slot >= 5, "only {in_slot} keys in the slot of {tag}");
    let nodes: Vec<String> = redis::cmd("ZRANGE")
        .arg(format!("{tag}:nodes"))
        .arg(0)
        .arg(-1)
        .query_async(&mut redis)
        .await
        .unwrap();
    assert_eq!(nodes.len(), 3, "{nodes:?}");

    // An app-node killed mid-event: the survivor takes its events over.
    let scenario =
        cluster.spawn_scenario("load.mjs", &["--clients=16", "--events=8", "--slow=150"]);
    tokio::time::sleep(Duration::from_millis(700)).await;
    cluster.apps[0].process.kill();
    let result = scenario.await.unwrap();
    assert_eq!(result["acked"], 16 * 8, "{result}");
    assert_eq!(cluster.inflight_len("app0").await, 0);
    cluster.start_app().await;

    // An io-node killed under its clients: each is announced once and
    // fails over.
    let clients = 20;
    let scenario = cluster.spawn_scenario("failover.mjs", &[&format!("--clients={clients}")]);
    eventually(WAIT, "every client admitted on io0", || async {
        let count: usize = redis::cmd("HLEN")
            .arg(format!("{tag}:sockets:io0"))
            .query_async(&mut cluster.redis().await)
            .await
            .unwrap();
        (count == clients).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let killed = Instant::now();
    cluster.io[0].process.kill();
    let result = scenario.await.unwrap();
    eprintln!(
        "io-node killed: {clients} clients failed over in {} ms",
        killed.elapsed().as_millis()
    );
    assert_eq!(result["failedOver"], clients, "{result}");
    assert_eq!(result["reasons"], json!(["transport close"]), "{result}");
    eventually(WAIT, "a disconnect event per lost socket", || async {
        (lost(&cluster).await >= clients).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(2 * iocluster_tests::LEASE_MS)).await;
    assert_eq!(lost(&cluster).await, clients, "announced once each");

    // The admin API publishes through the cluster too: both live io-nodes
    // hear it.
    let frontend = cluster.start_frontend().await;
    let (status, body) = frontend
        .publish(json!({ "event": "news", "args": [1], "to": { "all": true } }))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["ioNodesReached"], 2, "{body}");

    // Presence reads the ledgers through the cluster: a socket is listed,
    // with the room its app-node joined, and the API reaches it.
    let client = iocluster_client::Client::connect(
        &cluster.io[1].url(),
        iocluster_client::ClientOptions::default(),
    )
    .await
    .unwrap();
    let socket = client
        .socket("/", Some(json!({ "rooms": ["lobby"] })))
        .await
        .unwrap();
    let sid = socket.id().to_owned();
    // A publish to a room goes out with SPUBLISH on the room's master:
    // the one io-node with a member hears it, and the member gets it.
    let (status, body) = frontend
        .publish(json!({ "event": "news", "args": ["lobby"], "to": { "rooms": ["lobby"] } }))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["ioNodesReached"], 1, "{body}");
    let news = loop {
        let event = socket.recv_event(WAIT).await.expect("the room's news");
        if event.name == "news" && event.args.first() == Some(&json!("lobby")) {
            break event;
        }
    };
    assert_eq!(news.args, vec![json!("lobby")]);
    let (status, one) = frontend
        .api("GET", &format!("/api/v1/sockets/{sid}"), None)
        .await;
    assert_eq!(status, 200, "{one}");
    assert!(
        one["rooms"].as_array().unwrap().contains(&json!("lobby")),
        "{one}"
    );
    let (status, body) = frontend
        .api("GET", "/api/v1/sockets?room=lobby", None)
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["sockets"][0]["sid"], sid, "{body}");
    let (status, body) = frontend
        .api("POST", &format!("/api/v1/clients/{sid}/disconnect"), None)
        .await;
    assert_eq!(status, 200, "{body}");
    let end = tokio::time::timeout(WAIT, async {
        loop {
            match socket.recv().await {
                Some(iocluster_client::Received::Event(_)) => continue,
                other => return other,
            }
        }
    })
    .await
    .expect("the API's disconnect reaches the socket");
    assert!(
        matches!(end, Some(iocluster_client::Received::Disconnected) | None),
        "{end:?}"
    );
}

/// How many sockets the test app saw disconnected with "io-node lost".
async fn lost(cluster: &Cluster) -> usize {
    cluster
        .disconnect_reasons()
        .await
        .into_iter()
        .filter(|line| line.ends_with(" io-node lost"))
        .count()
}

#[tokio::test]
async fn a_master_killed_under_load_fails_over_and_loses_nothing() {
    let mut cluster = Cluster::builder("redis-cluster-failover")
        .redis_cluster()
        .outlasting_failovers()
        .start()
        .await;
    cluster.master_failover_drill(12, 50, "Redis Cluster").await;
    let mut redis = cluster.redis().await;
    let nodes: Vec<String> = redis::cmd("ZRANGE")
        .arg(format!("{}:nodes", cluster.key_prefix()))
        .arg(0)
        .arg(-1)
        .query_async(&mut redis)
        .await
        .unwrap();
    assert_eq!(nodes.len(), 2, "{nodes:?}");
}

/// The event queue's partitions spread over the masters; the master
/// holding the most of them (not the prefix's) is killed under load: its
/// replica takes over, the nodes follow it, and every ack arrives.
#[tokio::test]
async fn a_partitions_master_killed_under_load_fails_over_and_loses_nothing() {
    let mut cluster = Cluster::builder("redis-cluster-partitions")
        .redis_cluster()
        .outlasting_failovers()
        .start()
        .await;
    let keys = cluster.keys();
    let mut redis = cluster.redis().await;
    let prefix_master = iocluster_ops::slot_master(&mut redis, &cluster.key_prefix())
        .await
        .unwrap();
    let mut held: std::collections::HashMap<String, Vec<u16>> = Default::default();
    for k in 1..8 {
        let master = iocluster_ops::slot_master(&mut redis, &keys.partition(k).events())
            .await
            .unwrap();
        held.entry(master).or_default().push(k);
    }
    drop(redis);
    let (victim, partitions) = held
        .iter()
        .filter(|(master, _)| **master != prefix_master)
        .max_by_key(|(_, partitions)| partitions.len())
        .map(|(master, partitions)| (master.clone(), partitions.clone()))
        .expect("a master holds partitions and not the prefix");
    let port: u16 = victim.rsplit_once(':').unwrap().1.parse().unwrap();

    let (clients, events) = (12, 50);
    let load = cluster.slow_load(clients, events).await;
    let killed = Instant::now();
    cluster.stop_redis_server(port);
    let result = load.await.unwrap();
    eprintln!(
        "master of partitions {partitions:?} killed: every ack {:.1} s after the kill",
        killed.elapsed().as_secs_f64()
    );
    assert_eq!(result["acked"], clients * events, "{result}");
    assert_eq!(lost(&cluster).await, 0, "no client was declared lost");
    cluster.cross_node_scenario().await;
}

#[test]
fn bad_cluster_urls_are_refused_at_start() {
    for url in ["redis+cluster://", "redis+cluster://127.0.0.1:1/3"] {
        let output = std::process::Command::new(iocluster_tests::bin("iocluster-io-node"))
            .args(["--redis", url])
            .output()
            .unwrap();
        assert!(!output.status.success());
        let text = String::from_utf8_lossy(&output.stderr);
        assert!(text.contains("Redis Cluster"), "{url}: {text}");
    }
}

/// The ports of the cluster's six servers.
fn redis_ports(cluster: &Cluster) -> Vec<u16> {
    let mut ports = vec![cluster.redis.port()];
    if let Some(redis_cluster) = &cluster.redis_cluster {
        ports.extend(redis_cluster.nodes.iter().map(|node| node.port()));
    }
    ports
}

/// Each live master's port and the sharded channels subscribed on it.
async fn shard_channels(cluster: &Cluster) -> Vec<(u16, Vec<String>)> {
    let mut masters = Vec::new();
    for port in redis_ports(cluster) {
        let Ok(client) = redis::Client::open(format!("redis://127.0.0.1:{port}/")) else {
            continue;
        };
        let Ok(Ok(mut redis)) = tokio::time::timeout(
            Duration::from_secs(1),
            client.get_multiplexed_async_connection(),
        )
        .await
        else {
            continue;
        };
        let Ok(role) = redis::cmd("ROLE")
            .query_async::<Vec<redis::Value>>(&mut redis)
            .await
        else {
            continue;
        };
        if !matches!(role.first(), Some(redis::Value::BulkString(role)) if role == b"master") {
            continue;
        }
        let channels: Vec<String> = redis::cmd("PUBSUB")
            .arg("SHARDCHANNELS")
            .query_async(&mut redis)
            .await
            .unwrap();
        masters.push((port, channels));
    }
    masters
}

/// One member of a room, connected to one io-node.
struct Member {
    room: String,
    _client: iocluster_client::Client,
    socket: iocluster_client::Socket,
}

/// A member of each room on each of the first two io-nodes (joined by
/// the test app from their `auth`).
async fn join_rooms(cluster: &Cluster, rooms: &[String]) -> Vec<Member> {
    let mut members = Vec::new();
    for room in rooms {
        for io in &cluster.io[..2] {
            let client = iocluster_client::Client::connect(
                &io.url(),
                iocluster_client::ClientOptions::default(),
            )
            .await
            .unwrap();
            let socket = client
                .socket("/", Some(json!({ "rooms": [room] })))
                .await
                .unwrap();
            members.push(Member {
                room: room.clone(),
                _client: client,
                socket,
            });
        }
    }
    members
}

/// Has the first member of each room emit `news` with `tag` to its room
/// (through the test app's `toRoom`, an SDK emit to a room); returns the
/// members that did not receive it within `within`.
async fn room_round(
    members: &[Member],
    rooms: &[String],
    tag: &str,
    within: Duration,
) -> Vec<String> {
    for room in rooms {
        let sender = members.iter().find(|m| &m.room == room).unwrap();
        sender
            .socket
            .emit_with_ack(
                "toRoom",
                vec![json!({ "rooms": [room], "event": "news", "data": tag })],
                WAIT,
            )
            .await
            .expect("the app acknowledges toRoom");
    }
    let mut missed = Vec::new();
    for member in members {
        let deadline = Instant::now() + within;
        let got = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match member.socket.recv_event(left).await {
                Ok(event) if event.name == "news" && event.args.first() == Some(&json!(tag)) => {
                    break true;
                }
                Ok(_) => continue,
                Err(_) => break false,
            }
        };
        if !got {
            missed.push(format!("{} on {}", member.room, member.socket.id()));
        }
    }
    missed
}

/// Room channels are sharded: each room's channel hashes to a slot of its
/// own, so the io-nodes' subscriptions (and the app-nodes' `SPUBLISH`es)
/// spread over the three masters. A master holding rooms (not the one
/// holding the nodes' keys) is killed: its replica takes over, the io-nodes
/// subscribe again there, and every room reaches every member again, no
/// client disconnected.
#[tokio::test]
async fn rooms_are_sharded_over_the_masters_and_outlive_a_master_failover() {
    let mut cluster = Cluster::builder("redis-cluster-shards")
        .redis_cluster()
        .io_nodes(2)
        .start()
        .await;
    let rooms: Vec<String> = (0..12).map(|i| format!("room{i}")).collect();
    let members = join_rooms(&cluster, &rooms).await;
    let missed = room_round(&members, &rooms, "before", WAIT).await;
    assert!(missed.is_empty(), "missed before the failover: {missed:?}");

    // Both io-nodes subscribe to each room on the master of its slot:
    // the rooms are spread, and none is in the prefix's slot. Each also
    // listens on its node channel of each partition of the queue past
    // the first (8 by default on a Redis Cluster).
    let all = shard_channels(&cluster).await;
    let keys = cluster.keys();
    for io in ["io0", "io1"] {
        let mut partitions: Vec<u16> = all
            .iter()
            .flat_map(|(_, channels)| channels)
            .filter_map(|channel| keys.partition_node_channel(channel))
            .filter(|(_, node)| *node == io)
            .map(|(k, _)| k)
            .collect();
        partitions.sort();
        assert_eq!(partitions, (1..8).collect::<Vec<u16>>(), "{all:?}");
        // Its own channel and the broadcast channel are sharded too, in
        // the prefix's slot.
        let channels: Vec<&String> = all.iter().flat_map(|(_, channels)| channels).collect();
        assert!(channels.contains(&&keys.node_channel(io)), "{all:?}");
    }
    let broadcast = keys.all_channel();
    let listening = all
        .iter()
        .flat_map(|(_, channels)| channels)
        .filter(|channel| **channel == broadcast)
        .count();
    assert_eq!(
        listening, 1,
        "one master carries the broadcast channel: {all:?}"
    );
    let masters = room_shards(all);
    assert_eq!(masters.len(), 3, "{masters:?}");
    let holding = masters.iter().filter(|(_, c)| !c.is_empty()).count();
    assert!(holding >= 2, "rooms on {holding} master(s): {masters:?}");
    let subscribed: usize = masters.iter().map(|(_, c)| c.len()).sum();
    assert_eq!(subscribed, rooms.len(), "{masters:?}");

    // Kill the master with the most rooms, unless it holds the nodes' keys.
    let mut redis = cluster.redis().await;
    let prefix_master = iocluster_ops::slot_master(&mut redis, &cluster.key_prefix())
        .await
        .unwrap();
    drop(redis);
    let (victim, victim_rooms) = masters
        .iter()
        .filter(|(port, _)| !prefix_master.ends_with(&format!(":{port}")))
        .max_by_key(|(_, channels)| channels.len())
        .cloned()
        .unwrap();
    assert!(!victim_rooms.is_empty(), "{masters:?}");
    let killed = Instant::now();
    cluster.stop_redis_server(victim);

    // Until the replica is promoted and the io-nodes subscribed there, the
    // rooms on that master miss emits (as on any lost subscription); then
    // every room reaches every member again.
    let mut round = 0;
    let missed = loop {
        round += 1;
        let tag = format!("after{round}");
        let missed = room_round(&members, &rooms, &tag, Duration::from_secs(1)).await;
        if missed.is_empty() || killed.elapsed() > Duration::from_secs(40) {
            break missed;
        }
    };
    assert!(
        missed.is_empty(),
        "still missed after the failover: {missed:?}"
    );
    eprintln!(
        "master with {} room(s) killed: every room delivered again {:.1} s after the kill",
        victim_rooms.len(),
        killed.elapsed().as_secs_f64()
    );
    let masters = room_shards(shard_channels(&cluster).await);
    let subscribed: usize = masters.iter().map(|(_, c)| c.len()).sum();
    assert_eq!(subscribed, rooms.len(), "{masters:?}");
}

/// [`shard_channels`], room channels only.
fn room_shards(masters: Vec<(u16, Vec<String>)>) -> Vec<(u16, Vec<String>)> {
    masters
        .into_iter()
        .map(|(port, channels)| {
            let rooms = channels.into_iter().filter(|c| c.contains(":r:")).collect();
            (port, rooms)
        })
        .collect()
}

/// A plain connection to one server of the Redis Cluster.
async fn server(port: u16) -> redis::aio::MultiplexedConnection {
    redis::Client::open(format!("redis://127.0.0.1:{port}/"))
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

/// A room's slot moved to another master while its members stay (the
/// server tells the subscribers with `sunsubscribe`, and publishers get
/// `MOVED`): the io-nodes subscribe again on the new master, the app-node
/// publishes there, and the room's traffic goes on; no client disconnected.
#[tokio::test]
async fn a_rooms_slot_moved_to_another_master_keeps_its_traffic() {
    let cluster = Cluster::builder("redis-cluster-migrate")
        .redis_cluster()
        .io_nodes(2)
        .start()
        .await;
    let rooms: Vec<String> = (0..4).map(|i| format!("room{i}")).collect();
    let members = join_rooms(&cluster, &rooms).await;
    let missed = room_round(&members, &rooms, "before", WAIT).await;
    assert!(missed.is_empty(), "missed before the move: {missed:?}");

    // room0's channel, its slot, the master holding it and another one.
    let channel = iocluster_ops::cluster_keys(true, &cluster.prefix).room_channel("/", "room0");
    let masters = shard_channels(&cluster).await;
    let (source, _) = masters
        .iter()
        .find(|(_, channels)| channels.contains(&channel))
        .cloned()
        .unwrap_or_else(|| panic!("{channel} is subscribed nowhere: {masters:?}"));
    let target = masters
        .iter()
        .map(|(port, _)| *port)
        .find(|port| *port != source)
        .unwrap();
    let mut source_redis = server(source).await;
    let mut target_redis = server(target).await;
    let slot: u16 = redis::cmd("CLUSTER")
        .arg("KEYSLOT")
        .arg(&channel)
        .query_async(&mut source_redis)
        .await
        .unwrap();
    let id = |port: u16| async move {
        let mut redis = server(port).await;
        redis::cmd("CLUSTER")
            .arg("MYID")
            .query_async::<String>(&mut redis)
            .await
            .unwrap()
    };
    let (source_id, target_id) = (id(source).await, id(target).await);

    // The move, as `redis-cli --cluster reshard` makes it (the slot has no
    // keys: a channel is not one): importing, migrating, then the owner.
    let setslot = |redis: &mut redis::aio::MultiplexedConnection, how: &str, node: &str| {
        let mut redis = redis.clone();
        let command = redis::cmd("CLUSTER")
            .arg("SETSLOT")
            .arg(slot)
            .arg(how)
            .arg(node)
            .to_owned();
        async move { command.query_async::<()>(&mut redis).await.unwrap() }
    };
    setslot(&mut target_redis, "IMPORTING", &source_id).await;
    setslot(&mut source_redis, "MIGRATING", &target_id).await;
    let moved = Instant::now();
    setslot(&mut target_redis, "NODE", &target_id).await;
    setslot(&mut source_redis, "NODE", &target_id).await;
    for (port, _) in &masters {
        if *port != source && *port != target {
            setslot(&mut server(*port).await, "NODE", &target_id).await;
        }
    }

    let mut round = 0;
    let missed = loop {
        round += 1;
        let missed = room_round(
            &members,
            &rooms,
            &format!("moved{round}"),
            Duration::from_secs(1),
        )
        .await;
        if missed.is_empty() || moved.elapsed() > Duration::from_secs(20) {
            break missed;
        }
    };
    assert!(missed.is_empty(), "still missed after the move: {missed:?}");
    eprintln!(
        "slot {slot} moved: every room delivered again {:.1} s after the move",
        moved.elapsed().as_secs_f64()
    );
    let masters = shard_channels(&cluster).await;
    let on_target = masters
        .iter()
        .find(|(port, _)| *port == target)
        .map(|(_, channels)| channels.contains(&channel));
    assert_eq!(on_target, Some(true), "{masters:?}");
    let on_source = masters
        .iter()
        .find(|(port, _)| *port == source)
        .map(|(_, channels)| channels.contains(&channel));
    assert_eq!(on_source, Some(false), "{masters:?}");
}

/// With connection state recovery on a Redis Cluster, a retained emit to a
/// (sharded) room is first added to the namespace's log in the prefix's
/// slot, then published with its offset: from an app-node's handler and
/// from the admin API alike, the member gets the emit with the id of its
/// log entry as the last argument.
#[tokio::test]
async fn retained_room_emits_carry_their_log_offset_on_a_redis_cluster() {
    let cluster = Cluster::builder("redis-cluster-retained")
        .redis_cluster()
        .io_nodes(2)
        .app_args(&["--recovery", "60000"])
        .start()
        .await;
    let members = join_rooms(&cluster, &["r".to_owned()]).await;
    let frontend = cluster.start_frontend().await;
    let log = format!("{}:log:/", cluster.key_prefix());

    // The offset `member` gets with the `news` whose first argument is `tag`.
    async fn offset_of(member: &Member, tag: &str) -> String {
        loop {
            let event = member.socket.recv_event(WAIT).await.expect("the news");
            if event.name == "news" && event.args.first() == Some(&json!(tag)) {
                let offset = event
                    .args
                    .last()
                    .and_then(|v| v.as_str())
                    .map(str::to_owned);
                return offset.unwrap_or_else(|| panic!("no offset: {event:?}"));
            }
        }
    }

    members[0]
        .socket
        .emit_with_ack(
            "toRoom",
            vec![json!({ "rooms": ["r"], "event": "news", "data": "sdk" })],
            WAIT,
        )
        .await
        .unwrap();
    let (status, body) = frontend
        .publish(json!({ "event": "news", "args": ["api"], "to": { "rooms": ["r"] } }))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["ioNodesReached"], 2, "{body}");
    let mut redis = cluster.redis().await;
    // The log's entry ids.
    let entries: Vec<(String, redis::Value)> = redis::cmd("XRANGE")
        .arg(&log)
        .arg("-")
        .arg("+")
        .query_async(&mut redis)
        .await
        .unwrap();
    let logged: Vec<&str> = entries.iter().map(|(id, _)| id.as_str()).collect();
    for tag in ["sdk", "api"] {
        let offsets = [
            offset_of(&members[0], tag).await,
            offset_of(&members[1], tag).await,
        ];
        assert_eq!(
            offsets[0], offsets[1],
            "one entry, one offset, for both members"
        );
        assert!(
            logged.contains(&offsets[0].as_str()),
            "{tag}: {offsets:?} not in {logged:?}"
        );
    }
}
