//! `iocluster-io-node`: flags and config file, tracing, then [`iocluster_io_node::run`].

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use iocluster_io_node::RawConfig;

/// jemalloc: less CPU per allocation than glibc malloc on the hot paths and
/// less memory held per idle connection (docs/BENCHMARKS.md).
#[cfg(feature = "jemalloc")]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Holds Socket.IO v4 client connections (WebSocket and HTTP long-polling) and
/// bridges them to app-nodes through Redis. Flags override the config file.
#[derive(Debug, Parser)]
#[command(name = "iocluster-io-node", version, args_override_self = true)]
struct Args {
    /// Redis URL.
    #[arg(long, env = "IOCLUSTER_REDIS_URL", value_name = "URL")]
    redis: Option<String>,
    /// Client listener address (default 127.0.0.1:3000).
    #[arg(long, env = "IOCLUSTER_LISTEN", value_name = "ADDR")]
    listen: Option<String>,
    /// TOML config file (see config/io-node.toml); flags override it.
    #[arg(long, env = "IOCLUSTER_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// This node's id, 1 to 32 of [A-Za-z0-9_-] (default: random).
    #[arg(long, env = "IOCLUSTER_NODE_ID", value_name = "ID")]
    node_id: Option<String>,
    /// Prefix of every Redis key and channel (default iocluster).
    #[arg(long, env = "IOCLUSTER_PREFIX", value_name = "PREFIX")]
    prefix: Option<String>,
    /// URL browsers use to reach this node, published in the registry
    /// (default http://<listen>).
    #[arg(long, env = "IOCLUSTER_PUBLIC_URL", value_name = "URL")]
    public_url: Option<String>,
    /// Engine.IO path (default /socket.io/).
    #[arg(long, value_name = "PATH")]
    path: Option<String>,
    /// Milliseconds between server pings (default 25000).
    #[arg(long, value_name = "MS")]
    ping_interval: Option<u64>,
    /// Milliseconds a client has to answer a ping (default 20000).
    #[arg(long, value_name = "MS")]
    ping_timeout: Option<u64>,
    /// Milliseconds a client has to join a namespace after connecting (default 45000).
    #[arg(long, value_name = "MS")]
    connect_timeout: Option<u64>,
    /// Milliseconds an app-node has to accept a connection before the client
    /// gets CONNECT_ERROR (default 10000).
    #[arg(long, value_name = "MS")]
    admission_timeout: Option<u64>,
    /// Largest packet or polling body accepted, in bytes (default 1000000).
    #[arg(long, value_name = "BYTES")]
    max_payload: Option<usize>,
    /// Milliseconds this node's registry lease lasts without renewal (default 5000).
    #[arg(long, value_name = "MS")]
    lease: Option<u64>,
    /// Frames queued for one client before it counts as too slow and is
    /// disconnected (default 1024).
    #[arg(long, value_name = "FRAMES")]
    outbox_capacity: Option<usize>,
    /// Milliseconds after which an event whose `done` never came is pushed
    /// again (default 60000).
    #[arg(long, value_name = "MS")]
    redeliver_after: Option<u64>,
    /// Most client connections this node holds; more get HTTP 503 (default 100000).
    #[arg(long, value_name = "N")]
    max_connections: Option<usize>,
    /// Threads of the async runtime (default: $TOKIO_WORKER_THREADS, else one
    /// per CPU). With several nodes on one machine, fewer threads per node
    /// cost less CPU in sleeps and wake-ups.
    #[arg(long, env = "IOCLUSTER_WORKER_THREADS", value_name = "N")]
    worker_threads: Option<usize>,
    /// Packets per second one connection may send before it is slowed down
    /// (default 2000).
    #[arg(long, value_name = "N")]
    max_packets_per_second: Option<u32>,
    /// Operations listener: /health, /ready and /metrics (Prometheus)
    /// (default: none).
    #[arg(long, env = "IOCLUSTER_OPS_LISTEN", value_name = "ADDR")]
    ops_listen: Option<String>,
    /// PEM certificate chain: serve clients over TLS (with --tls-key).
    #[arg(long, value_name = "FILE")]
    tls_cert: Option<PathBuf>,
    /// PEM private key for --tls-cert.
    #[arg(long, value_name = "FILE")]
    tls_key: Option<PathBuf>,
    /// Milliseconds SIGTERM waits for clients to close and their disconnect
    /// events to reach Redis (default 10000).
    #[arg(long, value_name = "MS")]
    shutdown_timeout: Option<u64>,
    /// Admit clients with auth {userId, hash} matching a credential
    /// registered in Redis (the frontend's admin API), without an app-node.
    #[arg(long)]
    users_auth: bool,
    /// Admit clients with auth {token}: an HS256 JWT signed with this secret
    /// (at least 32 bytes; sub = user id, exp required).
    #[arg(
        long,
        env = "IOCLUSTER_JWT_SECRET",
        value_name = "SECRET",
        hide_env_values = true
    )]
    jwt_secret: Option<String>,
    /// Refuse clients without valid credentials instead of asking app-nodes.
    #[arg(long)]
    require_auth: bool,
    #[command(flatten)]
    log: iocluster_ops::LogArgs,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    args.log.init();
    let file = match &args.config {
        Some(path) => RawConfig::from_file(path)?,
        None => RawConfig::default(),
    };
    let flags = RawConfig {
        node_id: args.node_id,
        redis: args.redis,
        prefix: args.prefix,
        listen: args.listen,
        public_url: args.public_url,
        path: args.path,
        ping_interval_ms: args.ping_interval,
        ping_timeout_ms: args.ping_timeout,
        connect_timeout_ms: args.connect_timeout,
        admission_timeout_ms: args.admission_timeout,
        max_payload: args.max_payload,
        lease_ms: args.lease,
        outbox_capacity: args.outbox_capacity,
        redeliver_after_ms: args.redeliver_after,
        max_connections: args.max_connections,
        worker_threads: args.worker_threads,
        max_packets_per_second: args.max_packets_per_second,
        ops_listen: args.ops_listen,
        tls_cert: args.tls_cert,
        tls_key: args.tls_key,
        shutdown_timeout_ms: args.shutdown_timeout,
        users_auth: args.users_auth.then_some(true),
        jwt_secret: args.jwt_secret.map(iocluster_io_node::config::Secret),
        require_auth: args.require_auth.then_some(true),
        ..RawConfig::default()
    };
    let config = flags.or(file).validate().context("invalid configuration")?;

    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    runtime.enable_all();
    if let Some(threads) = config.worker_threads {
        runtime.worker_threads(threads);
    }
    let runtime = runtime.build().context("cannot start the runtime")?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(&config.listen)
            .await
            .with_context(|| format!("cannot listen on {}", config.listen))?;
        iocluster_io_node::run(listener, config, iocluster_ops::shutdown_signal()).await?;
        Ok(())
    })
}
