//! Reading the cluster's registry in Redis: the live io-nodes for browsers,
//! and the whole view for operators.

use std::collections::BTreeMap;

use iocluster_protocol::keys::Keys;
use serde::Serialize;
use serde_json::Value;

use crate::config::StaticNode;

/// An io-node as browsers see it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct LiveNode {
    pub id: String,
    pub url: String,
    pub connections: u64,
}

/// What one reading of the registry gave browsers.
#[derive(Debug)]
pub struct Reading {
    /// The io-nodes to offer; `None` when the registry could not be read
    /// and no static list is configured.
    pub nodes: Option<Vec<LiveNode>>,
    /// Why the registry could not be read, if it could not (the caller
    /// logs it, once per outage).
    pub failed: Option<redis::RedisError>,
}

/// Live io-nodes (lease not lapsed, details present), least loaded first;
/// the static list when the registry has none or cannot be read.
pub async fn live_nodes(
    redis: &mut iocluster_ops::Redis,
    keys: &Keys,
    fallback: &[StaticNode],
) -> Reading {
    let (registered, failed) = match io_nodes(redis, keys).await {
        Ok(nodes) => (nodes, None),
        Err(error) if !fallback.is_empty() => (Vec::new(), Some(error)),
        Err(error) => {
            return Reading {
                nodes: None,
                failed: Some(error),
            };
        }
    };
    let mut nodes: Vec<LiveNode> = if registered.is_empty() {
        fallback
            .iter()
            .map(|node| LiveNode {
                id: node.id.clone(),
                url: node.url.clone(),
                connections: 0,
            })
            .collect()
    } else {
        registered
            .into_iter()
            .map(|node| LiveNode {
                id: node.id,
                url: node.url,
                connections: node.connections,
            })
            .collect()
    };
    nodes.sort_by(|a, b| a.connections.cmp(&b.connections).then(a.id.cmp(&b.id)));
    Reading {
        nodes: Some(nodes),
        failed,
    }
}

/// An io-node with everything its registry entry says.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct IoNodeView {
    pub id: String,
    pub url: String,
    pub connections: u64,
    pub lease_left_ms: u64,
    pub started: u64,
    /// When the node last wrote its details and totals (ms, its clock).
    pub updated: u64,
    pub namespaces: BTreeMap<String, u64>,
    /// Its largest rooms, `<nsp>,<room>` → members here.
    pub rooms: BTreeMap<String, u64>,
    pub room_count: u64,
    pub users: u64,
    /// Running totals: events queued, frames delivered.
    pub events: u64,
    pub deliveries: u64,
    /// Rates over the node's last two writes of its totals (filled in from
    /// the dashboard's samples; 0 until two were seen).
    pub events_per_second: f64,
    pub deliveries_per_second: f64,
}

async fn io_nodes(
    redis: &mut iocluster_ops::Redis,
    keys: &Keys,
) -> redis::RedisResult<Vec<IoNodeView>> {
    let now = iocluster_ops::unix_ms();
    let leased: Vec<(String, f64)> = redis::cmd("ZRANGE")
        .arg(keys.nodes())
        .arg(now)
        .arg("+inf")
        .arg("BYSCORE")
        .arg("WITHSCORES")
        .query_async(redis)
        .await?;
    if leased.is_empty() {
        return Ok(Vec::new());
    }
    let mut pipe = redis::pipe();
    for (id, _) in &leased {
        pipe.cmd("HGETALL").arg(keys.node_info(id));
    }
    let details: Vec<BTreeMap<String, String>> = pipe.query_async(redis).await?;
    let number = |fields: &BTreeMap<String, String>, name: &str| {
        fields
            .get(name)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let json_counts = |fields: &BTreeMap<String, String>, name: &str| {
        fields
            .get(name)
            .and_then(|v| serde_json::from_str::<BTreeMap<String, u64>>(v).ok())
            .unwrap_or_default()
    };
    Ok(leased
        .into_iter()
        .zip(details)
        .filter_map(|((id, lease), fields)| {
            let url = fields.get("url")?.clone();
            Some(IoNodeView {
                url,
                connections: number(&fields, "connections"),
                lease_left_ms: (lease as u64).saturating_sub(now),
                started: number(&fields, "started"),
                updated: number(&fields, "updated"),
                namespaces: json_counts(&fields, "namespaces"),
                rooms: json_counts(&fields, "rooms"),
                room_count: number(&fields, "room_count"),
                users: number(&fields, "users"),
                events: number(&fields, "events"),
                deliveries: number(&fields, "deliveries"),
                events_per_second: 0.0,
                deliveries_per_second: 0.0,
                id,
            })
        })
        .collect())
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AppNodeView {
    pub id: String,
    pub alive: bool,
    pub lease_left_ms: i64,
    /// Events it took and has not finished.
    pub inflight: u64,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RoomView {
    pub nsp: String,
    pub room: String,
    pub size: u64,
}

/// The cluster as an operator sees it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterView {
    pub time: u64,
    pub io_nodes: Vec<IoNodeView>,
    pub app_nodes: Vec<AppNodeView>,
    pub served_namespaces: Vec<String>,
    /// Sockets per namespace, over every io-node.
    pub namespaces: BTreeMap<String, u64>,
    /// The largest rooms over every io-node (each node reports its 100
    /// largest, so a room spread thin over many nodes may be missing).
    pub rooms: Vec<RoomView>,
    pub connections: u64,
    pub users: u64,
    pub queue_depth: u64,
    pub inflight: u64,
    /// Running totals over the live io-nodes.
    pub events: u64,
    pub deliveries: u64,
    /// The sum of the live io-nodes' rates.
    pub events_per_second: f64,
    pub deliveries_per_second: f64,
}

pub async fn cluster_view(
    redis: &mut iocluster_ops::Redis,
    keys: &Keys,
) -> redis::RedisResult<ClusterView> {
    let now = iocluster_ops::unix_ms();
    let io_nodes = io_nodes(redis, keys).await?;
    let apps: Vec<(String, f64)> = redis::cmd("ZRANGE")
        .arg(keys.apps())
        .arg(0)
        .arg(-1)
        .arg("WITHSCORES")
        .query_async(redis)
        .await?;
    let served: Vec<String> = redis::cmd("ZRANGE")
        .arg(keys.namespaces())
        .arg(now)
        .arg("+inf")
        .arg("BYSCORE")
        .query_async(redis)
        .await?;
    // Every partition of the queue: on a Redis Cluster each in a slot of
    // its own, so one pipeline per partition.
    let partitions = iocluster_ops::queue_partitions(redis, keys).await?;
    let mut queue_depth = 0;
    let mut inflight = vec![0; apps.len()];
    for k in 0..partitions {
        let partition = keys.partition(k);
        let mut pipe = redis::pipe();
        pipe.cmd("LLEN").arg(partition.events());
        for (app, _) in &apps {
            pipe.cmd("LLEN").arg(partition.inflight(app));
        }
        let lengths: Vec<u64> = pipe.query_async(redis).await?;
        queue_depth += lengths.first().copied().unwrap_or(0);
        for (sum, n) in inflight.iter_mut().zip(lengths.iter().skip(1)) {
            *sum += n;
        }
    }
    let app_nodes: Vec<AppNodeView> = apps
        .into_iter()
        .zip(inflight)
        .map(|((id, lease), inflight)| AppNodeView {
            id,
            alive: lease as u64 > now,
            lease_left_ms: lease as i64 - now as i64,
            inflight,
        })
        .collect();
    let mut namespaces = BTreeMap::new();
    let mut rooms: BTreeMap<String, u64> = BTreeMap::new();
    for node in &io_nodes {
        for (nsp, count) in &node.namespaces {
            *namespaces.entry(nsp.clone()).or_insert(0) += count;
        }
        for (room, count) in &node.rooms {
            *rooms.entry(room.clone()).or_insert(0) += count;
        }
    }
    let mut rooms: Vec<RoomView> = rooms
        .into_iter()
        .map(|(name, size)| {
            let (nsp, room) = name.split_once(',').unwrap_or((name.as_str(), ""));
            RoomView {
                nsp: nsp.to_owned(),
                room: room.to_owned(),
                size,
            }
        })
        .collect();
    rooms.sort_by(|a, b| b.size.cmp(&a.size).then_with(|| a.room.cmp(&b.room)));
    rooms.truncate(100);
    Ok(ClusterView {
        time: now,
        connections: io_nodes.iter().map(|n| n.connections).sum(),
        users: io_nodes.iter().map(|n| n.users).sum(),
        events: io_nodes.iter().map(|n| n.events).sum(),
        deliveries: io_nodes.iter().map(|n| n.deliveries).sum(),
        inflight: app_nodes.iter().map(|a| a.inflight).sum(),
        io_nodes,
        app_nodes,
        served_namespaces: served,
        namespaces,
        rooms,
        queue_depth,
        events_per_second: 0.0,
        deliveries_per_second: 0.0,
    })
}

/// For `config.js`: the list as a JavaScript global.
pub fn config_js(nodes: &[LiveNode]) -> String {
    let json = serde_json::json!({ "nodes": nodes });
    format!("window.IOCLUSTER = {};\n", Value::to_string(&json))
}
