//! The admin API's presence calls: who is connected, in which rooms, as
//! which users (`/api/v1/sockets`, `/api/v1/sockets/{sid}`, `/api/v1/rooms`,
//! `/api/v1/users`).
//!
//! Everything is read from the live io-nodes' ledgers (docs/PROTOCOL.md,
//! "The ledger"); `iocluster_protocol::presence` decodes the entries and
//! plans the reading, this module runs the `HSCAN`s and shapes the JSON.
//! Every call is bounded whatever the cluster's size: a page holds at most
//! [`MAX_LIMIT`] sockets and examines at most `presence::PAGE_BUDGET`
//! entries (then it ends early with a cursor), and a room or user count
//! examines at most `presence::TALLY_BUDGET` entries (then it says
//! `"complete": false`).

use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use iocluster_protocol::ids;
use iocluster_protocol::presence::{
    self, Cursor, Filter, PAGE_BUDGET, SocketInfo, SocketScan, TALLY_BUDGET, Tally, TallyOf,
};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::Frontend;
use crate::admin::{ApiError, MAX_NAME, check_nsp};

/// Items per page when the request does not say.
pub const DEFAULT_LIMIT: usize = 100;
/// Most items per page.
pub const MAX_LIMIT: usize = 500;

type ApiResult = Result<Response, ApiError>;

use iocluster_ops::presence::{hscan, live_nodes};

fn query<T>(query: Result<Query<T>, QueryRejection>) -> Result<T, ApiError> {
    query
        .map(|Query(query)| query)
        .map_err(|rejection| ApiError::invalid(format!("bad query: {}", rejection.body_text())))
}

/// An optional parameter: absent and empty mean the same.
fn given(value: Option<String>) -> Option<String> {
    value.filter(|v| !v.is_empty())
}

fn limit(value: Option<String>) -> Result<usize, ApiError> {
    match given(value) {
        None => Ok(DEFAULT_LIMIT),
        Some(text) => match text.parse::<usize>() {
            Ok(n) if (1..=MAX_LIMIT).contains(&n) => Ok(n),
            _ => Err(ApiError::invalid(format!(
                "limit must be a whole number from 1 to {MAX_LIMIT}"
            ))),
        },
    }
}

fn namespace(value: Option<String>) -> Result<Option<String>, ApiError> {
    let nsp = given(value);
    if let Some(nsp) = &nsp {
        check_nsp(nsp)?;
    }
    Ok(nsp)
}

fn text(value: Option<String>, what: &str) -> Result<Option<String>, ApiError> {
    let text = given(value);
    if text.as_ref().is_some_and(|t| t.len() > MAX_NAME) {
        return Err(ApiError::invalid(format!(
            "{what} is at most {MAX_NAME} bytes"
        )));
    }
    Ok(text)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SocketsQuery {
    namespace: Option<String>,
    room: Option<String>,
    user: Option<String>,
    node: Option<String>,
    q: Option<String>,
    limit: Option<String>,
    cursor: Option<String>,
}

/// A socket as listed.
fn summary(socket: &SocketInfo) -> Value {
    json!({
        "sid": socket.sid,
        "namespace": socket.nsp,
        "node": socket.node,
        "address": socket.address(),
        "user": socket.user(),
        "rooms": socket.rooms,
        "connectedAt": socket.connected_at(),
    })
}

/// JSON text from a ledger as a value (`null` if absent; text that does
/// not parse, which no node writes, also reads as `null`).
fn json_text(text: Option<&str>) -> Value {
    text.and_then(|text| serde_json::from_str(text).ok())
        .unwrap_or(Value::Null)
}

/// A socket with its data and handshake.
fn detail(socket: &SocketInfo) -> Value {
    let mut value = summary(socket);
    let handshake = &socket.handshake;
    value["data"] = json_text(socket.data.as_deref());
    value["handshake"] = json!({
        "address": handshake.address,
        "time": handshake.time,
        "url": handshake.url,
        "secure": handshake.secure,
        "headers": handshake.headers,
        "query": handshake.query,
        "auth": json_text(handshake.auth.as_deref()),
    });
    value
}

/// `GET /api/v1/sockets`: one page of connected sockets.
pub async fn sockets(
    State(frontend): State<Arc<Frontend>>,
    request: Result<Query<SocketsQuery>, QueryRejection>,
) -> ApiResult {
    let request = query(request)?;
    let limit = limit(request.limit)?;
    let nsp = namespace(request.namespace)?;
    let room = text(request.room, "room")?;
    let user = given(request.user);
    if user.as_ref().is_some_and(|u| !ids::is_valid_user_id(u)) {
        return Err(ApiError::invalid("user is not a valid user id"));
    }
    let node = given(request.node);
    if node.as_ref().is_some_and(|n| !ids::is_valid_node_id(n)) {
        return Err(ApiError::invalid("node is not a valid io-node id"));
    }
    let q = text(request.q, "q")?;
    let cursor = given(request.cursor)
        .map(|text| Cursor::decode(&text))
        .transpose()
        .map_err(|error| ApiError::invalid(error.to_string()))?;
    let filter = Filter {
        nsp,
        node,
        rooms: room.into_iter().collect(),
        user,
        text: q,
        ..Filter::default()
    };
    let mut redis = frontend.redis();
    let nodes = live_nodes(&mut redis, &frontend.keys).await?;
    let mut scan = SocketScan::new(filter, nodes, cursor, limit, PAGE_BUDGET);
    while let Some(step) = scan.step() {
        let (next, entries) = hscan(&mut redis, &frontend.keys, &step).await?;
        scan.feed(next, entries);
    }
    let page = scan.finish();
    if page.undecodable > 0 {
        tracing::warn!(
            entries = page.undecodable,
            "undecodable ledger entries skipped"
        );
    }
    let sockets: Vec<Value> = page.sockets.iter().map(summary).collect();
    let next = page.next.map(|cursor| cursor.encode());
    Ok(Json(json!({ "sockets": sockets, "next": next })).into_response())
}

/// The socket `sid` from the live ledgers (its id names the io-node it
/// connected to, but any live ledger may hold it), or `None`.
pub async fn find_socket(frontend: &Frontend, sid: &str) -> redis::RedisResult<Option<SocketInfo>> {
    if sid.is_empty() || sid.len() > MAX_NAME {
        return Ok(None);
    }
    let mut redis = frontend.redis();
    let mut nodes = live_nodes(&mut redis, &frontend.keys).await?;
    if nodes.is_empty() {
        return Ok(None);
    }
    // Its own node first: where it almost always is.
    if let Some(own) = ids::node_of(sid)
        && let Some(at) = nodes.iter().position(|n| n == own)
    {
        nodes.swap(0, at);
    }
    let mut pipe = redis::pipe();
    for node in &nodes {
        pipe.cmd("HGET").arg(frontend.keys.ledger(node)).arg(sid);
    }
    let values: Vec<Option<Vec<u8>>> = pipe.query_async(&mut redis).await?;
    for (node, value) in nodes.iter().zip(values) {
        let Some(value) = value else { continue };
        match SocketInfo::from_ledger_entry(node, sid, &value) {
            Ok(socket) => return Ok(Some(socket)),
            Err(error) => {
                tracing::warn!(%error, node = %node, sid = %sid, "undecodable ledger entry")
            }
        }
    }
    Ok(None)
}

/// `GET /api/v1/sockets/{sid}`: one socket with its data and handshake.
pub async fn socket(State(frontend): State<Arc<Frontend>>, Path(sid): Path<String>) -> ApiResult {
    match find_socket(&frontend, &sid).await? {
        Some(socket) => Ok(Json(detail(&socket)).into_response()),
        None => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_socket",
            format!("no connected socket {sid:?}"),
        )),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoomsQuery {
    namespace: Option<String>,
    q: Option<String>,
    limit: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UsersQuery {
    namespace: Option<String>,
    limit: Option<String>,
}

async fn tally(
    frontend: &Frontend,
    mut tally: Tally,
    limit: usize,
) -> Result<presence::Counts, ApiError> {
    let mut redis = frontend.redis();
    while let Some(step) = tally.step() {
        let (next, entries) = hscan(&mut redis, &frontend.keys, &step).await?;
        tally.feed(next, entries);
    }
    let counts = tally.finish(limit);
    if counts.undecodable > 0 {
        tracing::warn!(
            entries = counts.undecodable,
            "undecodable ledger entries skipped"
        );
    }
    Ok(counts)
}

/// `GET /api/v1/rooms`: rooms by members, largest first.
pub async fn rooms(
    State(frontend): State<Arc<Frontend>>,
    request: Result<Query<RoomsQuery>, QueryRejection>,
) -> ApiResult {
    let request = query(request)?;
    let limit = limit(request.limit)?;
    let nsp = namespace(request.namespace)?;
    let q = text(request.q, "q")?;
    let nodes = live_nodes(&mut frontend.redis(), &frontend.keys).await?;
    let counts = tally(
        &frontend,
        Tally::new(TallyOf::Rooms, nsp, q, nodes, TALLY_BUDGET),
        limit,
    )
    .await?;
    let rooms: Vec<Value> = counts
        .counts
        .iter()
        .map(|c| json!({ "namespace": c.nsp, "room": c.name, "members": c.sockets }))
        .collect();
    Ok(Json(json!({ "rooms": rooms, "complete": counts.complete })).into_response())
}

/// `GET /api/v1/users`: users online, by sockets, most first.
pub async fn users(
    State(frontend): State<Arc<Frontend>>,
    request: Result<Query<UsersQuery>, QueryRejection>,
) -> ApiResult {
    let request = query(request)?;
    let limit = limit(request.limit)?;
    let nsp = namespace(request.namespace)?;
    let nodes = live_nodes(&mut frontend.redis(), &frontend.keys).await?;
    let counts = tally(
        &frontend,
        Tally::new(TallyOf::Users, nsp, None, nodes, TALLY_BUDGET),
        limit,
    )
    .await?;
    let users: Vec<Value> = counts
        .counts
        .iter()
        .map(|c| json!({ "user": c.name, "sockets": c.sockets }))
        .collect();
    Ok(Json(json!({ "users": users, "complete": counts.complete })).into_response())
}
