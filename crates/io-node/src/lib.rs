//! The io-node: holds Socket.IO v4 client connections and bridges them to the
//! cluster through Redis.
//!
//! - [`config`]: settings, validated before anything binds.
//! - `transport`: HTTP long-polling, WebSocket and the upgrade (Engine.IO).
//! - `session`: one Engine.IO session per client: outbox, heartbeat, close.
//! - `socket`: one Socket.IO socket per namespace joined: rooms, data, and the
//!   one-at-a-time sequence of its events.
//! - `node`: the shared state and its rules: client packets become events,
//!   commands from app-nodes reach clients.
//! - `bridge`: the Redis tasks (queue writer, subscriber, registry lease).
//!
//! [`run`] serves a bound listener until a shutdown future resolves.

pub mod config;

mod bridge;
mod node;
mod session;
mod socket;
mod transport;

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::routing::{any, get};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use config::{Config, RawConfig};
pub use node::Node;

/// Why the node could not run.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("cannot connect to Redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("server error: {0}")]
    Io(#[from] std::io::Error),
}

/// How long shutdown waits for queued events to reach Redis.
const DRAIN_GRACE: Duration = Duration::from_secs(5);

/// Serves clients on `listener` until `shutdown` resolves, then closes every
/// client (they reconnect elsewhere), writes their disconnect events to Redis
/// and leaves the registry.
pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()>,
) -> Result<(), RunError> {
    let client = redis::Client::open(config.redis.as_str())?;
    // Large pipelines under load may take longer than the client's default
    // 500 ms; a spurious timeout would make the writer retry (and duplicate).
    let manager = redis::aio::ConnectionManagerConfig::new()
        .set_response_timeout(Some(Duration::from_secs(10)));
    let redis = client.get_connection_manager_with_config(manager).await?;
    let (bridge, receivers) = bridge::bridge(config.event_buffer);
    let node = Node::new(config, bridge, redis.clone());
    if let Err(error) = node.refresh_namespaces().await {
        tracing::warn!(%error, "cannot read the served namespaces yet");
    }

    let stop = CancellationToken::new();
    let drain = CancellationToken::new();
    let tasks = bridge::spawn(
        node.clone(),
        client,
        redis,
        receivers,
        stop.clone(),
        drain.clone(),
    );

    let path = node.config().path.clone();
    let app = Router::new()
        .route(&path, any(transport::handle))
        .route(path.trim_end_matches('/'), any(transport::handle))
        .route("/health", get(|| async { "ok" }))
        .with_state(node.clone());

    tracing::info!(
        node = node.id(),
        listen = %listener.local_addr()?,
        path = %path,
        public_url = %node.config().public_url,
        "io-node listening"
    );
    let http_stop = CancellationToken::new();
    let server = axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(http_stop.clone().cancelled_owned());
    let server = tokio::spawn(async move { server.await });

    shutdown.await;
    tracing::info!("shutting down: closing clients");
    node.close_all(session::CloseReason::ServerShutdown);
    // Give session tasks a moment to queue their disconnect events.
    let deadline = tokio::time::Instant::now() + DRAIN_GRACE;
    while node.connection_count() > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    http_stop.cancel();
    stop.cancel();
    drain.cancel();
    for task in tasks {
        if tokio::time::timeout_at(deadline, task).await.is_err() {
            tracing::warn!("shutdown grace period ran out before Redis took everything");
        }
    }
    let _ = tokio::time::timeout(Duration::from_secs(1), server).await;
    tracing::info!("io-node stopped");
    Ok(())
}
