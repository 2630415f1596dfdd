//! The admin HTTP API (`/api/v1/...` on the admin listener), bearer-key
//! protected. Every request is validated whole before anything is written to
//! Redis: a 4xx means nothing was published or stored.

use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use iocluster_protocol::envelope::{self, Command};
use iocluster_protocol::{credentials, ids};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::Frontend;
use crate::registry;

/// Most recipients (or exclusions) of each kind in one request.
const MAX_LIST: usize = 1000;
/// Longest namespace, room, event name.
pub(crate) const MAX_NAME: usize = 256;
/// Event names a Socket.IO client reserves for itself.
const RESERVED_EVENTS: [&str; 6] = [
    "connect",
    "connect_error",
    "disconnect",
    "disconnecting",
    "newListener",
    "removeListener",
];

/// A 4xx/5xx answer: `{"error": {"code", "message"}}`.
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    pub(crate) fn new(
        status: StatusCode,
        code: &'static str,
        message: impl Into<String>,
    ) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    pub(crate) fn invalid(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_request", message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(json!({ "error": { "code": self.code, "message": self.message } })),
        )
            .into_response()
    }
}

impl From<redis::RedisError> for ApiError {
    fn from(error: redis::RedisError) -> ApiError {
        metrics::counter!("iocluster_redis_errors_total", "task" => "admin").increment(1);
        tracing::warn!(%error, "admin API: Redis failed");
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "redis_unavailable",
            "Redis is unreachable; nothing was done",
        )
    }
}

type ApiResult = Result<Response, ApiError>;

/// Checks `Authorization: Bearer <api_key>` in constant time.
pub async fn require_key(
    State(frontend): State<Arc<Frontend>>,
    request: Request,
    next: Next,
) -> Response {
    let Some(key) = &frontend.config.api_key else {
        metrics::counter!("iocluster_admin_auth_refused_total").increment(1);
        return ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "the admin API is off: no api_key is configured",
        )
        .into_response();
    };
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .unwrap_or("");
    if !credentials::same_secret(presented, &key.0) {
        metrics::counter!("iocluster_admin_auth_refused_total").increment(1);
        return ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "missing or wrong API key (Authorization: Bearer <key>)",
        )
        .into_response();
    }
    next.run(request).await
}

/// Parses a JSON body strictly (unknown fields refused), mapping every
/// failure to a clear 4xx.
fn parse<T: DeserializeOwned>(body: Result<Bytes, BytesRejection>) -> Result<T, ApiError> {
    let body = body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                "the request body is larger than max_body_bytes",
            )
        } else {
            ApiError::invalid(format!("cannot read the body: {rejection}"))
        }
    })?;
    let body: &[u8] = if body.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        &body
    };
    serde_json::from_slice(body).map_err(|error| ApiError::invalid(format!("bad JSON: {error}")))
}

fn root() -> String {
    "/".to_owned()
}

pub(crate) fn check_nsp(nsp: &str) -> Result<(), ApiError> {
    if !nsp.starts_with('/') || nsp.contains(',') || nsp.len() > MAX_NAME {
        return Err(ApiError::invalid(format!(
            "namespace {nsp:?} must start with / and contain no comma"
        )));
    }
    Ok(())
}

fn check_rooms(rooms: &[String], what: &str) -> Result<(), ApiError> {
    if rooms.len() > MAX_LIST {
        return Err(ApiError::invalid(format!("at most {MAX_LIST} {what}")));
    }
    for room in rooms {
        if room.is_empty() || room.len() > MAX_NAME {
            return Err(ApiError::invalid(format!(
                "room names are 1 to {MAX_NAME} bytes"
            )));
        }
        if room.starts_with(ids::RESERVED_ROOM_PREFIX) {
            return Err(ApiError::invalid(format!(
                "room {room:?}: names starting with $ are reserved (use users for a user's sockets)"
            )));
        }
    }
    Ok(())
}

fn check_sids(sids: &[String]) -> Result<(), ApiError> {
    if sids.len() > MAX_LIST {
        return Err(ApiError::invalid(format!("at most {MAX_LIST} sids")));
    }
    for sid in sids {
        if ids::node_of(sid).is_none() {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "unknown_recipient",
                format!("{sid:?} is not a socket id (<io-node>.<random>)"),
            ));
        }
    }
    Ok(())
}

fn user_rooms(users: &[String]) -> Result<Vec<String>, ApiError> {
    if users.len() > MAX_LIST {
        return Err(ApiError::invalid(format!("at most {MAX_LIST} users")));
    }
    users
        .iter()
        .map(|user| {
            if ids::is_valid_user_id(user) {
                Ok(ids::user_room(user))
            } else {
                Err(ApiError::invalid(format!(
                    "{user:?} is not a valid user id"
                )))
            }
        })
        .collect()
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Recipients {
    #[serde(default)]
    sids: Vec<String>,
    #[serde(default)]
    rooms: Vec<String>,
    #[serde(default)]
    users: Vec<String>,
    #[serde(default)]
    all: bool,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Exclusions {
    #[serde(default)]
    sids: Vec<String>,
    #[serde(default)]
    rooms: Vec<String>,
    #[serde(default)]
    users: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PublishRequest {
    #[serde(default = "root")]
    nsp: String,
    event: String,
    #[serde(default)]
    args: Vec<Value>,
    to: Recipients,
    #[serde(default)]
    except: Exclusions,
}

/// `POST /api/v1/publish`
pub async fn publish(
    State(frontend): State<Arc<Frontend>>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let request: PublishRequest = parse(body)?;
    check_nsp(&request.nsp)?;
    if request.event.is_empty() || request.event.len() > MAX_NAME {
        return Err(ApiError::invalid(format!(
            "event names are 1 to {MAX_NAME} bytes"
        )));
    }
    if RESERVED_EVENTS.contains(&request.event.as_str()) {
        return Err(ApiError::invalid(format!(
            "{:?} is reserved by Socket.IO clients",
            request.event
        )));
    }
    let to = request.to;
    let named = !(to.sids.is_empty() && to.rooms.is_empty() && to.users.is_empty());
    if to.all == named {
        return Err(ApiError::invalid(
            "name the recipients: either to.all = true, or to.sids / to.rooms / to.users",
        ));
    }
    check_sids(&to.sids)?;
    check_rooms(&to.rooms, "rooms")?;
    check_sids(&request.except.sids)?;
    check_rooms(&request.except.rooms, "excluded rooms")?;
    let mut rooms = to.rooms;
    rooms.extend(user_rooms(&to.users)?);
    let mut except_rooms = request.except.rooms;
    except_rooms.extend(user_rooms(&request.except.users)?);
    let mut data = vec![Value::String(request.event)];
    data.extend(request.args);
    let mut emit = envelope::Emit {
        nsp: request.nsp,
        rooms,
        sids: to.sids,
        except_rooms,
        except_sids: request.except.sids,
        data: Value::Array(data).to_string(),
        ..envelope::Emit::default()
    };
    let routes = emit.route(&frontend.keys, rand::random);
    let reached = frontend.publish(&routes, Command::Emit(emit)).await?;
    Ok(Json(json!({ "channels": routes.len(), "ioNodesReached": reached })).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct UserRequest {
    /// The secret the user's clients will present; generated when absent.
    hash: Option<String>,
    ttl_seconds: Option<u64>,
    expires_at: Option<u64>,
}

/// `PUT /api/v1/users/{id}`: registers (or replaces) a user's credential.
pub async fn put_user(
    State(frontend): State<Arc<Frontend>>,
    Path(user): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    if !ids::is_valid_user_id(&user) {
        return Err(ApiError::invalid(format!(
            "{user:?} is not a valid user id"
        )));
    }
    let request: UserRequest = parse(body)?;
    let generated = request.hash.is_none();
    let hash = match request.hash {
        Some(hash) if hash.len() > 1024 => {
            return Err(ApiError::invalid("hash must be at most 1024 bytes"));
        }
        Some(hash) if !credentials::strong_enough(&hash) => {
            return Err(ApiError::invalid(format!(
                "hash must be a random secret of at least {} characters, {} of them different \
                 (or leave it out and one is generated)",
                credentials::MIN_SECRET_LEN,
                credentials::MIN_DISTINCT_CHARS
            )));
        }
        Some(hash) => hash,
        None => random_text(32),
    };
    let now = iocluster_ops::unix_ms();
    let expires_at = match (request.ttl_seconds, request.expires_at) {
        (Some(_), Some(_)) => {
            return Err(ApiError::invalid("give ttlSeconds or expiresAt, not both"));
        }
        (Some(0), None) => return Err(ApiError::invalid("ttlSeconds must be positive")),
        (Some(ttl), None) => Some(now.saturating_add(ttl.saturating_mul(1000))),
        (None, Some(at)) if at <= now => {
            return Err(ApiError::invalid("expiresAt (ms since the epoch) is past"));
        }
        (None, at) => at,
    };
    let key = frontend.keys.user(&user);
    let salt = random_hex(16);
    let secret = credentials::salted_digest(&salt, &hash);
    let mut pipe = redis::pipe();
    pipe.atomic()
        .cmd("DEL")
        .arg(&key)
        .ignore()
        .cmd("HSET")
        .arg(&key)
        .arg("salt")
        .arg(&salt)
        .arg("secret")
        .arg(secret)
        .arg("created")
        .arg(now)
        .ignore();
    if let Some(at) = expires_at {
        pipe.cmd("PEXPIREAT").arg(&key).arg(at).ignore();
    }
    pipe.query_async::<()>(&mut frontend.redis()).await?;
    tracing::info!(user = %user, generated, "user credential registered");
    let mut answer = json!({ "userId": user, "expiresAt": expires_at });
    if generated {
        // The only time it is shown: Redis keeps only its salted digest.
        answer["hash"] = hash.into();
    }
    Ok(Json(answer).into_response())
}

/// `len` URL-safe characters from the thread's CSPRNG (6 bits each).
fn random_text(len: usize) -> String {
    use rand::Rng;
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut rng = rand::rng();
    (0..len)
        .map(|_| char::from(ALPHABET[rng.random_range(0..ALPHABET.len())]))
        .collect()
}

/// `bytes` random bytes from the thread's CSPRNG, as lowercase hex.
fn random_hex(bytes: usize) -> String {
    (0..bytes)
        .map(|_| format!("{:02x}", rand::random::<u8>()))
        .collect()
}

/// `DELETE /api/v1/users/{id}`: revokes the credential (new connections
/// with it are refused; live ones stay until disconnected).
pub async fn delete_user(
    State(frontend): State<Arc<Frontend>>,
    Path(user): Path<String>,
) -> ApiResult {
    if !ids::is_valid_user_id(&user) {
        return Err(ApiError::invalid(format!(
            "{user:?} is not a valid user id"
        )));
    }
    let removed: u64 = redis::cmd("DEL")
        .arg(frontend.keys.user(&user))
        .query_async(&mut frontend.redis())
        .await?;
    if removed == 0 {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_user",
            format!("no credential registered for {user:?}"),
        ));
    }
    tracing::info!(user = %user, "user credential revoked");
    Ok(Json(json!({ "userId": user, "revoked": true })).into_response())
}

/// `GET /api/v1/cluster`
pub async fn cluster(State(frontend): State<Arc<Frontend>>) -> ApiResult {
    let mut view = registry::cluster_view(&mut frontend.redis(), &frontend.keys).await?;
    frontend.dashboard.add_rates(&mut view);
    Ok(Json(view).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DisconnectRequest {
    #[serde(default = "root")]
    nsp: String,
    #[serde(default)]
    close: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RoomsRequest {
    #[serde(default = "root")]
    nsp: String,
    rooms: Vec<String>,
}

/// `POST /api/v1/clients/{sid}/{action}`: `disconnect`, `join`, `leave`.
pub async fn client_action(
    State(frontend): State<Arc<Frontend>>,
    Path((sid, action)): Path<(String, String)>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let Some(node) = ids::node_of(&sid) else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_client",
            format!("{sid:?} is not a socket id"),
        ));
    };
    let command = match action.as_str() {
        "disconnect" => {
            let request: DisconnectRequest = parse(body)?;
            check_nsp(&request.nsp)?;
            Command::Disconnect(envelope::Disconnect {
                nsp: request.nsp,
                sid: sid.clone(),
                close: request.close,
            })
        }
        "join" | "leave" => {
            let request: RoomsRequest = parse(body)?;
            check_nsp(&request.nsp)?;
            if request.rooms.is_empty() {
                return Err(ApiError::invalid("rooms must name at least one room"));
            }
            check_rooms(&request.rooms, "rooms")?;
            if action == "join" {
                Command::Join(envelope::Join {
                    nsp: request.nsp,
                    sid: sid.clone(),
                    rooms: request.rooms,
                    reply: None,
                })
            } else {
                Command::Leave(envelope::Leave {
                    nsp: request.nsp,
                    sid: sid.clone(),
                    rooms: request.rooms,
                })
            }
        }
        other => {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "unknown_action",
                format!("{other:?}: use disconnect, join or leave"),
            ));
        }
    };
    // Every open socket has an entry in its io-node's ledger (from its
    // connect until its disconnect is announced): none, no such socket.
    // A socket connected in the last few milliseconds may not have one yet.
    // A socket recovered on another io-node than its id names is in that
    // node's ledger (`P:where` says which); the command still goes to the
    // channel of the node its id names, which its holder listens to.
    let mut redis = frontend.redis();
    let holder: Option<String> = redis::cmd("HGET")
        .arg(frontend.keys.located())
        .arg(&sid)
        .query_async(&mut redis)
        .await?;
    let open: bool = redis::cmd("HEXISTS")
        .arg(frontend.keys.ledger(holder.as_deref().unwrap_or(node)))
        .arg(&sid)
        .query_async(&mut redis)
        .await?;
    if !open {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_client",
            format!("no open socket {sid:?}"),
        ));
    }
    let channel = frontend.keys.node_channel(node);
    let reached = frontend.publish(&[channel], command).await?;
    if reached == 0 {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_client",
            format!("io-node {node:?} holding {sid:?} is not live"),
        ));
    }
    Ok(Json(json!({ "sid": sid, "action": action, "ioNodesReached": reached })).into_response())
}

/// Any path the API does not have: 404 in the API's error shape.
pub async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such path")
}

/// A path the API has, with another method: 405 in the API's error shape.
pub async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this path does not take that method",
    )
}
