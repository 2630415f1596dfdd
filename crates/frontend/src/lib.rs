//! The frontend node: what browsers and operators talk to, besides the
//! io-nodes themselves.
//!
//! - Public listener: the application's static pages (and the demo chat),
//!   `/config.json` and `/config.js` (the live io-nodes, least loaded first),
//!   `/iocluster.js` (a helper that connects the stock socket.io-client to a
//!   live io-node and fails over), `/socket.io.min.js` (the client bundle,
//!   from npm at set-up time).
//! - Admin listener (loopback by default): the bearer-key HTTP API
//!   ([`admin`]: publish, credentials, cluster view, client actions;
//!   [`presence`]: connected sockets, rooms and users, read from the
//!   io-nodes' ledgers; [`dashboard`]: the dashboard's history and event
//!   tail), `/openapi.json` and `/docs` (both naming the listener's own
//!   address) and the live dashboard at `/`.
//!
//! - `stats`: the metrics it exports on its ops listener.
//!
//! It keeps no state but the dashboard's, in memory (a few minutes of
//! samples, the last tail entries): everything comes from the Redis registry
//! the nodes maintain, and everything it does goes out as the same commands
//! app-nodes publish.

pub mod admin;
pub mod config;
pub mod dashboard;
pub mod presence;
pub mod registry;
mod stats;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use iocluster_protocol::envelope::Command;
use iocluster_protocol::keys::Keys;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower_http::services::ServeDir;

pub use config::{Config, RawConfig};

const HELPER_JS: &str = include_str!("../../../frontend/iocluster.js");
const DASHBOARD_HTML: &str = include_str!("../../../frontend/admin/dashboard.html");
const DOCS_HTML: &str = include_str!("../../../frontend/admin/docs.html");
const OPENAPI_JSON: &str = include_str!("../../../frontend/admin/openapi.json");

/// Shared by every handler.
pub struct Frontend {
    pub config: Config,
    pub keys: Keys,
    /// The admin listener's address, for the API description when a
    /// request has no usable `Host` header.
    pub admin_addr: SocketAddr,
    redis: iocluster_ops::Redis,
    /// For the dashboard's tail subscription (opened only while watched).
    client: iocluster_ops::RedisClient,
    /// `/ready`: set by the dashboard's sampler, which reads Redis every
    /// 2 s ([`Frontend::set_redis_ok`]).
    readiness: iocluster_ops::Readiness,
    /// The history sampler's and the event tail's state.
    pub dashboard: dashboard::Dashboard,
    /// The last reading of the live io-nodes, and the registry's outage.
    nodes: tokio::sync::Mutex<Nodes>,
}

/// The last reading of the live io-nodes, and when it was taken; how the
/// registry's Redis has been failing, if it has (one warn line per
/// outage, not one per page load).
struct Nodes {
    reading: Option<(Instant, Arc<Vec<registry::LiveNode>>)>,
    outage: iocluster_ops::Outage,
}

impl Frontend {
    pub fn redis(&self) -> iocluster_ops::Redis {
        self.redis.clone()
    }

    /// Whether Redis answered the last reading. Without it the frontend
    /// cannot list the live io-nodes (`/config.json` answers 503, or the
    /// static list when one is configured, which keeps it ready) nor serve
    /// the admin API, so `/ready` answers 503 and a balancer sends pages to
    /// a frontend that can. Never ready again once shutting down.
    pub(crate) fn set_redis_ok(&self, ok: bool) {
        let serving = !self.dashboard.stop.is_cancelled();
        self.readiness
            .set(serving && (ok || !self.config.fallback_nodes.is_empty()));
    }

    /// Publishes one command on each channel, all at once; returns how
    /// many io-node subscriptions received it in all.
    pub async fn publish(&self, channels: &[String], command: Command) -> redis::RedisResult<u64> {
        let mut payload = command.encode();
        let mut redis = self.redis();
        if let Command::Emit(emit) = &command
            && emit.ack.is_none()
            && let Some(mark) = self.retention_mark(&mut redis, &emit.nsp).await?
        {
            // Into the namespace's log first, then published with its
            // offset (the log script: on a Redis Cluster the flush script
            // could not reach sharded room channels).
            let key = self.keys.recovery();
            let logged =
                iocluster_ops::log_retained(&mut redis, &key, &[(&mark, &payload)]).await?;
            payload = logged.into_iter().next().unwrap_or(payload);
        }
        // One command per channel: on a Redis Cluster each room channel
        // is in a slot of its own (`SPUBLISH`), and a pipeline is not.
        let publishes = channels.iter().map(|channel| {
            let mut redis = redis.clone();
            let command = redis::cmd(self.keys.publish_command(channel))
                .arg(channel)
                .arg(&payload)
                .to_owned();
            async move { command.query_async::<u64>(&mut redis).await }
        });
        let counts = futures_util::future::try_join_all(publishes).await?;
        Ok(counts.iter().sum())
    }

    /// The log script's mark for emits to `nsp`, when its app-nodes keep
    /// them for connection state recovery (`P:recovery`).
    async fn retention_mark(
        &self,
        redis: &mut iocluster_ops::Redis,
        nsp: &str,
    ) -> redis::RedisResult<Option<Vec<u8>>> {
        let setting: Option<String> = redis::cmd("HGET")
            .arg(self.keys.recovery())
            .arg(nsp)
            .query_async(redis)
            .await?;
        Ok(setting
            .as_deref()
            .and_then(iocluster_protocol::recovery::parse_setting)
            .filter(|(window, _)| *window > 0)
            .map(|(window, packets)| {
                iocluster_protocol::recovery::mark(packets, window + 60_000, &self.keys.log(nsp))
            }))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("cannot connect to Redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("server error: {0}")]
    Io(#[from] std::io::Error),
}

/// Serves both listeners until `shutdown` resolves.
pub async fn run(
    public: TcpListener,
    admin: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()>,
) -> Result<(), RunError> {
    let client = iocluster_ops::redis_client(config.redis.as_str())?;
    // Ready once Redis answers, until shutdown; the ops listener stops last.
    let readiness = iocluster_ops::Readiness::default();
    let ops_stop = CancellationToken::new();
    let ops = match &config.ops_listen {
        Some(addr) => {
            let ops = iocluster_ops::serve(addr, readiness.clone(), ops_stop.clone()).await?;
            stats::describe();
            Some(ops)
        }
        None => None,
    };
    let mut shutdown = std::pin::pin!(shutdown);
    tokio::select! {
        waited = iocluster_ops::wait_for_redis(&client, config.redis_start_timeout) => waited?,
        () = &mut shutdown => return Ok(()),
    }
    let redis = client.connection(Some(Duration::from_secs(5))).await?;
    readiness.set(true);
    if config.api_key.is_none() {
        tracing::warn!("no api_key configured: the admin API answers 401 to every request");
    }
    let stop = CancellationToken::new();
    let frontend = Arc::new(Frontend {
        keys: client.keys(&config.prefix),
        admin_addr: admin.local_addr()?,
        config,
        redis,
        client,
        readiness: readiness.clone(),
        dashboard: dashboard::Dashboard::new(stop.child_token()),
        nodes: tokio::sync::Mutex::new(Nodes {
            reading: None,
            outage: iocluster_ops::Outage::new("registry"),
        }),
    });
    let sampler = tokio::spawn(dashboard::sample(frontend.clone()));
    tracing::info!(
        public = %public.local_addr()?,
        admin = %admin.local_addr()?,
        "frontend listening"
    );
    let public = tokio::spawn(
        axum::serve(public, public_routes(frontend.clone()))
            .with_graceful_shutdown(stop.clone().cancelled_owned())
            .into_future(),
    );
    let admin = tokio::spawn(
        axum::serve(admin, admin_routes(frontend.clone()))
            .with_graceful_shutdown(stop.clone().cancelled_owned())
            .into_future(),
    );
    shutdown.await;
    tracing::info!("frontend shutting down");
    readiness.set(false);
    stop.cancel();
    let _ = public.await;
    let _ = admin.await;
    let _ = sampler.await;
    readiness.set(false);
    ops_stop.cancel();
    if let Some(ops) = ops {
        let _ = ops.await;
    }
    Ok(())
}

/// Pages, the io-node list and the browser helper.
pub fn public_routes(frontend: Arc<Frontend>) -> Router {
    let pages = ServeDir::new(&frontend.config.static_dir);
    Router::new()
        .route("/config.json", get(config_json))
        .route("/config.js", get(config_js))
        .route("/iocluster.js", get(helper_js))
        .route("/socket.io.min.js", get(client_bundle))
        .fallback_service(pages)
        .with_state(frontend)
}

/// The API (behind the key), its description and the dashboard.
pub fn admin_routes(frontend: Arc<Frontend>) -> Router {
    let api = Router::new()
        .route("/api/v1/publish", post(admin::publish))
        .route(
            "/api/v1/users/{id}",
            axum::routing::put(admin::put_user).delete(admin::delete_user),
        )
        .route("/api/v1/cluster", get(admin::cluster))
        .route("/api/v1/sockets", get(presence::sockets))
        .route("/api/v1/sockets/{sid}", get(presence::socket))
        .route("/api/v1/rooms", get(presence::rooms))
        .route("/api/v1/users", get(presence::users))
        .route("/api/v1/clients/{sid}/{action}", post(admin::client_action))
        .route("/api/v1/history", get(dashboard::history))
        .route("/api/v1/tail", get(dashboard::tail))
        .route_layer(axum::middleware::from_fn_with_state(
            frontend.clone(),
            admin::require_key,
        ))
        .layer(DefaultBodyLimit::max(frontend.config.max_body_bytes))
        .route_layer(axum::middleware::from_fn(stats::count_admin_request));
    Router::new()
        .route("/", get(|| async { html(DASHBOARD_HTML) }))
        .route("/docs", get(docs))
        .route("/openapi.json", get(openapi))
        .merge(api)
        .fallback(admin::not_found)
        .method_not_allowed_fallback(admin::method_not_allowed)
        .with_state(frontend)
}

/// The admin listener's URL as the client reached it: `http://` and the
/// request's `Host` when it is a plain host name or address (with a port),
/// else the address the listener is bound to.
fn admin_url(frontend: &Frontend, headers: &HeaderMap) -> String {
    let host = headers
        .get(header::HOST)
        .and_then(|value| value.to_str().ok())
        .filter(|host| {
            !host.is_empty()
                && host.len() <= 255
                && host
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b))
        });
    match host {
        Some(host) => format!("http://{host}"),
        None => format!("http://{}", frontend.admin_addr),
    }
}

/// `/openapi.json` with `servers` naming this listener.
async fn openapi(State(frontend): State<Arc<Frontend>>, headers: HeaderMap) -> Response {
    let mut spec: serde_json::Value = match serde_json::from_str(OPENAPI_JSON) {
        Ok(spec) => spec,
        Err(error) => {
            tracing::error!(%error, "the built-in openapi.json does not parse");
            return StatusCode::INTERNAL_SERVER_ERROR.into_response();
        }
    };
    spec["servers"] = serde_json::json!([{ "url": admin_url(&frontend, &headers) }]);
    (
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        spec.to_string(),
    )
        .into_response()
}

/// `/docs` with its examples on this listener's address (`admin_url` lets
/// through no character that means anything in HTML).
async fn docs(State(frontend): State<Arc<Frontend>>, headers: HeaderMap) -> Response {
    let page = DOCS_HTML.replace("{{ADMIN_URL}}", &admin_url(&frontend, &headers));
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        page,
    )
        .into_response()
}

fn html(body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        body,
    )
        .into_response()
}

fn no_cache(content_type: &'static str, body: String) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-store"),
            (header::ACCESS_CONTROL_ALLOW_ORIGIN, "*"),
        ],
        body,
    )
        .into_response()
}

/// How long one reading of the registry serves `/config.json` and
/// `/config.js`: every page load asks, Redis is read at most this often.
const NODES_TTL: Duration = Duration::from_millis(500);

/// The live io-nodes (or the static list), from a reading at most
/// [`NODES_TTL`] old; `None` when there is neither.
async fn nodes(frontend: &Frontend) -> Option<Arc<Vec<registry::LiveNode>>> {
    metrics::counter!("iocluster_config_requests_total").increment(1);
    let mut cached = frontend.nodes.lock().await;
    if let Some((at, nodes)) = cached.reading.as_ref()
        && at.elapsed() < NODES_TTL
    {
        return Some(nodes.clone());
    }
    let fallback = &frontend.config.fallback_nodes;
    let read = registry::live_nodes(&mut frontend.redis(), &frontend.keys, fallback).await;
    if read.failed.is_none() {
        cached.outage.recovered();
    }
    if let Some(error) = &read.failed {
        metrics::counter!("iocluster_redis_errors_total", "task" => "registry").increment(1);
        let what = if read.nodes.is_some() {
            "cannot read the registry; serving the static list"
        } else {
            "cannot read the registry and no static list is configured"
        };
        cached.outage.failed(what, error);
    }
    let nodes = Arc::new(read.nodes?);
    cached.reading = Some((Instant::now(), nodes.clone()));
    Some(nodes)
}

fn unavailable() -> Response {
    (StatusCode::SERVICE_UNAVAILABLE, "registry unavailable").into_response()
}

async fn config_json(State(frontend): State<Arc<Frontend>>) -> Response {
    match nodes(&frontend).await {
        Some(nodes) => no_cache(
            "application/json",
            serde_json::json!({ "nodes": &*nodes }).to_string(),
        ),
        None => unavailable(),
    }
}

async fn config_js(State(frontend): State<Arc<Frontend>>) -> Response {
    match nodes(&frontend).await {
        Some(nodes) => no_cache(
            "application/javascript; charset=utf-8",
            registry::config_js(&nodes),
        ),
        None => unavailable(),
    }
}

async fn helper_js() -> Response {
    no_cache(
        "application/javascript; charset=utf-8",
        HELPER_JS.to_owned(),
    )
}

async fn client_bundle(State(frontend): State<Arc<Frontend>>) -> Response {
    match tokio::fs::read(&frontend.config.client_bundle).await {
        Ok(bytes) => (
            [
                (
                    header::CONTENT_TYPE,
                    "application/javascript; charset=utf-8",
                ),
                (header::CACHE_CONTROL, "public, max-age=3600"),
            ],
            bytes,
        )
            .into_response(),
        Err(error) => {
            tracing::warn!(%error, path = %frontend.config.client_bundle.display(), "socket.io-client bundle missing (docs/DEPLOY.md)");
            (
                StatusCode::NOT_FOUND,
                "socket.io-client bundle missing (see the frontend's log)",
            )
                .into_response()
        }
    }
}
