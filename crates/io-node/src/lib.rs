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

mod auth;
mod bridge;
mod ledger;
mod limits;
mod node;
mod session;
mod socket;
mod stats;
pub mod tls;
mod transport;

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::routing::{any, get};
use axum::serve::{Listener, ListenerExt};
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
    #[error("TLS: {0}")]
    Tls(#[from] tls::TlsError),
}

/// Serves clients on `listener` until `shutdown` resolves, then stops taking
/// new clients, leaves the registry, closes every client (stock clients
/// reconnect elsewhere), writes their disconnect events to Redis and exits,
/// all within `shutdown_timeout`.
pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()>,
) -> Result<(), RunError> {
    let tls = config.tls.as_ref().map(tls::acceptor).transpose()?;
    let client = iocluster_ops::redis_client(config.redis.as_str())?;
    // Large pipelines under load may take longer than the client's default
    // 500 ms; a spurious timeout would make the writer retry (and duplicate).
    let manager = iocluster_ops::redis_manager_config(Some(Duration::from_secs(10)));
    let redis = client.get_connection_manager_with_config(manager).await?;
    let (bridge, receivers) = bridge::bridge(config.event_buffer);
    let (watch, closed) = session::Watch::new(&config);
    if config.ops_listen.is_some() {
        // Before the node registers its metrics handles (`stats`): a handle
        // made without a recorder stays a no-op.
        iocluster_ops::metrics_handle();
    }
    let node = Node::new(config, bridge, redis.clone(), watch);
    if let Err(error) = node.refresh_namespaces().await {
        tracing::warn!(%error, "cannot read the served namespaces yet");
    }
    let mut registration = redis.clone();
    bridge::register(&node, &mut registration).await?;
    node.readiness().set(true);

    let ops_stop = CancellationToken::new();
    let ops = match &node.config().ops_listen {
        Some(addr) => {
            Some(iocluster_ops::serve(addr, node.readiness().clone(), ops_stop.clone()).await?)
        }
        None => None,
    };
    let stop = CancellationToken::new();
    let watch = tokio::spawn(session::watch(node.clone(), closed, stop.clone()));
    let drain = CancellationToken::new();
    let tasks = bridge::spawn(
        node.clone(),
        client,
        redis.clone(),
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
        tls = tls.is_some(),
        "io-node listening"
    );
    let http_stop = CancellationToken::new();
    let server = match tls {
        Some(acceptor) => {
            let listener = tls::TlsListener::new(listener, acceptor)?.tap_io(|_| {});
            serve(listener, app, http_stop.clone())
        }
        // Frames go out as they are written: Nagle's algorithm would hold a
        // frame back until the client acknowledged the previous one.
        None => serve(
            listener.tap_io(|tcp| {
                let _ = tcp.set_nodelay(true);
            }),
            app,
            http_stop.clone(),
        ),
    };

    shutdown.await;
    let deadline = tokio::time::Instant::now() + node.config().shutdown_timeout;
    tracing::info!("shutting down: no new clients, leaving the registry, closing clients");
    node.begin_shutdown();
    if let Err(error) = bridge::deregister(&node, &mut redis.clone()).await {
        tracing::warn!(%error, "cannot leave the registry");
    }
    node.close_all(session::CloseReason::ServerShutdown);
    // Give the watch task a moment to queue every disconnect event.
    while node.connection_count() > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    http_stop.cancel();
    stop.cancel();
    // Disconnects it still queues must reach the writer before it drains.
    let _ = tokio::time::timeout_at(deadline, watch).await;
    drain.cancel();
    for task in tasks {
        if tokio::time::timeout_at(deadline, task).await.is_err() {
            tracing::warn!("shutdown deadline passed before Redis took everything");
        }
    }
    let _ = tokio::time::timeout(Duration::from_secs(1), server).await;
    ops_stop.cancel();
    if let Some(ops) = ops {
        let _ = tokio::time::timeout(Duration::from_secs(1), ops).await;
    }
    tracing::info!("io-node stopped");
    Ok(())
}

/// Serves the client routes on any listener whose address is a socket
/// address, until `stop` is cancelled.
fn serve<L>(listener: L, app: Router, stop: CancellationToken) -> tokio::task::JoinHandle<()>
where
    L: Listener<Addr = SocketAddr>,
    for<'a> SocketAddr: axum::extract::connect_info::Connected<axum::serve::IncomingStream<'a, L>>,
{
    let server = axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(stop.cancelled_owned());
    tokio::spawn(async move {
        if let Err(error) = server.await {
            tracing::error!(%error, "client listener failed");
        }
    })
}
