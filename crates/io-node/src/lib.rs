//! The io-node: holds Socket.IO v4 client connections and bridges them to the
//! cluster through Redis. Three layers, each importing only those below it:
//!
//! - [`engine`](crate::engine): Engine.IO sessions, the polling and
//!   WebSocket transports, heartbeats. Knows no Socket.IO and no Redis; hands
//!   client messages up through its `Handler` trait.
//! - [`sockets`](crate::sockets): the Socket.IO rules (sockets, rooms,
//!   admission, per-socket order, fan-out, acks, limits). Pure state, no I/O:
//!   what needs Redis it queues on the `Cluster` port.
//! - [`cluster`](crate::cluster): the only code that talks to Redis: writer,
//!   subscriber, registry lease, namespace list, ledger, credentials.
//!
//! `node` puts them together (the engine's handler); `clock`, `stats` and
//! [`config`] serve every layer; [`tls`] wraps the client listener.
//! [`run`] serves a bound listener until a shutdown future resolves.

mod clock;
mod cluster;
pub mod config;
mod engine;
mod node;
mod sockets;
mod stats;
pub mod tls;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::{any, get};
use axum::serve::{Listener, ListenerExt};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use config::{Config, RawConfig};

use crate::engine::{CloseReason, Engine};

/// How long a starting node waits for its subscriptions before it serves
/// anyway (they are retried meanwhile; events whose `done` is missed are
/// pushed again).
const SUBSCRIBE_BEFORE_SERVING: Duration = Duration::from_secs(10);
use crate::node::Node;
use crate::sockets::{Settings, Sockets};

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
    let mut shutdown = std::pin::pin!(shutdown);
    tokio::select! {
        waited = iocluster_ops::wait_for_redis(&client, config.redis_start_timeout) => waited?,
        () = &mut shutdown => return Ok(()),
    }
    // Large pipelines under load may take longer than the client's default
    // 500 ms; a spurious timeout would make the writer retry (and duplicate).
    let redis = client.connection(Some(Duration::from_secs(10))).await?;
    if config.ops_listen.is_some() {
        // Before the layers register their metrics handles (`stats`): a
        // handle made without a recorder stays a no-op.
        iocluster_ops::metrics_handle();
        stats::describe();
    }

    // The layers, bottom up.
    let config = Arc::new(config);
    let keys = config.keys.clone();
    let (engine, closed) = Engine::new((*config).clone());
    let engine = Arc::new(engine);
    let (bridge, receivers) = cluster::bridge(config.event_buffer);
    let settings = Settings::from(&*config);
    let partitions = settings.partitions.clone();
    let sockets = Arc::new(Sockets::new(settings, Arc::new(bridge.clone())));
    let namespaces = Arc::new(cluster::Namespaces::new(
        redis.clone(),
        &keys,
        config.namespace_memory,
    ));
    let readiness = iocluster_ops::Readiness::default();
    let peers = Arc::new(cluster::peers::ClusterPeers::new(
        config.node_id.clone(),
        keys.clone(),
        bridge.clone(),
        redis.clone(),
    ));
    engine.relays().set_peers(peers.clone());
    let (relay_in, relay_inbound) = tokio::sync::mpsc::unbounded_channel();
    let context = cluster::Context {
        config: config.clone(),
        keys,
        sockets: sockets.clone(),
        engine: engine.clone(),
        bridge,
        namespaces: namespaces.clone(),
        readiness: readiness.clone(),
        peers,
        relay_in,
        partitions,
    };
    let credentials = cluster::auth::Credentials::new(&config, redis.clone());
    let recovery =
        cluster::recovery::Recovery::new(redis.clone(), config.keys.clone(), config.lease);
    let node = Arc::new(Node::new(
        engine.clone(),
        sockets.clone(),
        namespaces.clone(),
        credentials,
        recovery,
    ));

    if let Err(error) = namespaces.refresh().await {
        tracing::warn!(%error, "cannot read the served namespaces yet");
    }
    cluster::registry::register(&context, &mut redis.clone()).await?;

    // The HTTP listeners stop with `serving`; the watch, subscriber and
    // registry with `tasks`; the writer once `drain` says everything it
    // will be given is queued.
    let serving = CancellationToken::new();
    let tasks = CancellationToken::new();
    let drain = CancellationToken::new();
    let ops = match &config.ops_listen {
        Some(addr) => Some(iocluster_ops::serve(addr, readiness.clone(), serving.clone()).await?),
        None => None,
    };
    let watch = tokio::spawn(engine::watch::watch(node.clone(), closed, tasks.clone()));
    let relay = tokio::spawn(engine::relay::serve(node.clone(), relay_inbound));
    let cluster_tasks = cluster::spawn(
        context.clone(),
        client,
        redis.clone(),
        receivers,
        tasks.clone(),
        drain.clone(),
    );

    // Serve once the node listens on its channels (on a Redis Cluster
    // one per partition of the queue, each on its master): a client's
    // `connect` or event answered before would have its `done` lost, and
    // wait for the admission timeout or the redelivery.
    let (subscribed, listening) = tokio::sync::oneshot::channel::<()>();
    sockets::Cluster::when_subscribed(
        &context.bridge,
        Box::new(move || {
            let _ = subscribed.send(());
        }),
    );
    if tokio::time::timeout(SUBSCRIBE_BEFORE_SERVING, listening)
        .await
        .is_err()
    {
        tracing::warn!("not subscribed to this node's channels yet: serving all the same");
    }
    readiness.set(true);

    let path = config.path.clone();
    let app = Router::new()
        .route(&path, any(engine::handle::<Node>))
        .route(path.trim_end_matches('/'), any(engine::handle::<Node>))
        .route("/health", get(|| async { "ok" }))
        .with_state(node.clone());

    tracing::info!(
        node = %config.node_id,
        listen = %listener.local_addr()?,
        path = %path,
        public_url = %config.public_url,
        tls = tls.is_some(),
        "io-node listening"
    );
    let server = match tls {
        Some(acceptor) => {
            let listener = tls::TlsListener::new(listener, acceptor)?.tap_io(|_| {});
            serve(listener, app, serving.clone())
        }
        // Frames go out as they are written: Nagle's algorithm would hold a
        // frame back until the client acknowledged the previous one.
        None => serve(
            listener.tap_io(|tcp| {
                let _ = tcp.set_nodelay(true);
            }),
            app,
            serving.clone(),
        ),
    };

    (&mut shutdown).await;
    let deadline = tokio::time::Instant::now() + config.shutdown_timeout;
    tracing::info!("shutting down: no new clients, leaving the registry, closing clients");
    engine.begin_shutdown();
    readiness.set(false);
    if let Err(error) = cluster::registry::deregister(&context, &mut redis.clone()).await {
        tracing::warn!(%error, "cannot leave the registry");
    }
    // Closing stops reading from the clients: nothing more is accepted.
    engine.close_all(CloseReason::ServerShutdown);
    engine.relays().close_links();
    // The watch task cleans up each closed session, queueing its sockets'
    // disconnect events behind the events their clients sent before.
    if tokio::time::timeout_at(deadline, engine.until_empty())
        .await
        .is_err()
    {
        tracing::warn!("shutdown deadline passed before every client was closed");
    }
    // Those events go out one queue item per socket at a time, each on the
    // `done` of the one before (per-socket order), so the subscriber keeps
    // running until every socket's last event has gone to the writer.
    if tokio::time::timeout_at(deadline, sockets.until_settled())
        .await
        .is_err()
    {
        tracing::warn!(
            sockets = sockets.count(),
            "shutdown deadline passed before the app-nodes took every event read"
        );
    }
    serving.cancel();
    tasks.cancel();
    let _ = tokio::time::timeout_at(deadline, watch).await;
    relay.abort();
    drain.cancel();
    for task in cluster_tasks {
        if tokio::time::timeout_at(deadline, task).await.is_err() {
            tracing::warn!("shutdown deadline passed before Redis took everything");
        }
    }
    let _ = tokio::time::timeout(Duration::from_secs(1), server).await;
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
