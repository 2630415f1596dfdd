//! Operations shared by every iocluster node: settings, each defined once
//! ([`settings!`]), settings files, secrets, logging, the shutdown signal
//! ([`node`]), and the operations listener (`--ops-listen`):
//!
//! - `GET /health`: 200 while the process serves at all (liveness);
//! - `GET /ready`: 200 when the node can do its job (Redis reachable, not
//!   shutting down), else 503 (readiness: take it out of rotation);
//! - `GET /metrics`: Prometheus text format, from the `metrics` facade,
//!   with what every node exports alike: `iocluster_build_info` (version
//!   and commit) and the process's CPU time, memory, open files and start
//!   time (`process_*`, read from the OS at each scrape).
//!
//! Nodes record metrics with the `metrics` macros wherever they are; without
//! an ops listener no recorder is installed and the macros cost next to
//! nothing.

mod node;
pub mod presence;
pub mod sentinel;
pub mod settings;
mod store;

pub use node::{
    ConfigError, DEFAULT_PREFIX, DEFAULT_REDIS, LogArgs, LogFormat, Secret, init_tracing,
    read_toml, redis_manager_config, shutdown_signal, unix_ms, wait_for_redis,
};
pub use store::{
    CLUSTER_SCHEME, CLUSTER_TLS_SCHEME, ClusterUrl, Redis, RedisClient, SlotRange, check_url,
    cluster_keys, cluster_prefix, failovers, keys, log_retained, parse_cluster, redis_client,
    slot_map, slot_master, within,
};

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use axum::Router;
use axum::http::StatusCode;
use axum::routing::get;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Whether the node is ready; cheap to clone and to update.
#[derive(Clone, Default)]
pub struct Readiness(Arc<AtomicBool>);

impl Readiness {
    pub fn set(&self, ready: bool) {
        self.0.store(ready, Ordering::Relaxed);
    }

    pub fn get(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// The iocluster version every node reports (`iocluster_build_info`).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The git commit the binaries were built from, when the build said
/// (`IOCLUSTER_GIT_COMMIT=$(git rev-parse HEAD) cargo build ...`, as
/// `scripts/package-frontend.sh` does); `unknown` otherwise. Read from the
/// environment at build time rather than by a build script running git, so
/// that a commit does not rebuild every crate that depends on this one.
pub const GIT_COMMIT: &str = match option_env!("IOCLUSTER_GIT_COMMIT") {
    Some(commit) if !commit.is_empty() => commit,
    _ => "unknown",
};

/// Installs the process-wide Prometheus recorder (once; later calls return
/// the same handle), with what every node exports alike: the
/// `iocluster_build_info` gauge and the `process_*` metrics. `None` if
/// another recorder was installed first.
pub fn metrics_handle() -> Option<PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let buckets = [
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                10.0, 30.0,
            ];
            let recorder = PrometheusBuilder::new()
                .set_buckets(&buckets)
                .and_then(|builder| builder.install_recorder());
            match recorder {
                Ok(handle) => {
                    describe_common();
                    Some(handle)
                }
                Err(error) => {
                    tracing::warn!(%error, "cannot install the metrics recorder");
                    None
                }
            }
        })
        .clone()
}

/// Describes and sets what every node exports alike, once the recorder is
/// installed.
fn describe_common() {
    metrics::describe_gauge!(
        "iocluster_build_info",
        "Always 1; the labels say which iocluster version and git commit this node runs"
    );
    metrics::gauge!("iocluster_build_info", "version" => VERSION, "commit" => GIT_COMMIT).set(1.0);
    metrics::describe_gauge!("iocluster_queue_depth", "Events waiting in the event queue");
    metrics::describe_counter!(
        "iocluster_redis_failovers_total",
        "Times the Redis master changed: named anew by the Sentinels (redis+sentinel://), or any slot's master in a Redis Cluster (redis+cluster://); 0 with one Redis"
    );
    metrics::counter!("iocluster_redis_failovers_total").increment(0);
    let process = metrics_process::Collector::default();
    process.describe();
    process.collect();
}

/// Reads the length of the event queue into the `iocluster_queue_depth`
/// gauge (every node reports it, so any one scrape shows the backlog).
/// A TCP listener on `addr` (`host:port`, the first address it resolves
/// to) whose accept queue holds `backlog` connections (the kernel caps it at
/// `net.core.somaxconn`). Tokio's own `bind` asks for 128 (as std does); a connection
/// storm past the queue has its SYNs dropped, and those clients retry only
/// a second later.
pub async fn listen(addr: &str, backlog: u32) -> std::io::Result<TcpListener> {
    let Some(address) = tokio::net::lookup_host(addr).await?.next() else {
        return Err(std::io::Error::new(
            std::io::ErrorKind::AddrNotAvailable,
            format!("{addr} resolves to no address"),
        ));
    };
    let socket = if address.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(address)?;
    socket.listen(backlog)
}

pub async fn sample_queue_depth(redis: &mut crate::Redis, events_keys: &[String]) {
    let mut depth = 0;
    for key in events_keys {
        match redis::cmd("LLEN").arg(key).query_async::<u64>(redis).await {
            Ok(n) => depth += n,
            Err(error) => {
                tracing::debug!(%error, "cannot read the queue depth");
                return;
            }
        }
    }
    metrics::gauge!("iocluster_queue_depth").set(depth as f64);
}

/// A command's arguments as text (lossy), to compare planned commands in
/// tests and logs.
pub fn command_text(cmd: &redis::Cmd) -> Vec<String> {
    cmd.args_iter()
        .map(|arg| match arg {
            redis::Arg::Simple(bytes) => String::from_utf8_lossy(bytes).into_owned(),
            _ => "<cursor>".to_owned(),
        })
        .collect()
}

/// Each command of a pipeline as [`command_text`].
pub fn pipeline_text(pipe: &redis::Pipeline) -> Vec<Vec<String>> {
    pipe.cmd_iter().map(command_text).collect()
}

/// The event queue's keys, partition by partition, for `partitions` of
/// them (docs/PROTOCOL.md, "Partitions").
pub fn queue_keys(keys: &iocluster_protocol::keys::Keys, partitions: u16) -> Vec<String> {
    (0..partitions.max(1))
        .map(|k| keys.partition(k).events())
        .collect()
}

/// How many partitions the event queue has, as the io-nodes say
/// (`P:partitions`; one when they have not said).
pub async fn queue_partitions(
    redis: &mut crate::Redis,
    keys: &iocluster_protocol::keys::Keys,
) -> redis::RedisResult<u16> {
    let count: Option<f64> = redis::cmd("ZSCORE")
        .arg(keys.partitions())
        .arg("count")
        .query_async(redis)
        .await?;
    Ok(count.map_or(1, |n| n.clamp(1.0, f64::from(u16::MAX)) as u16))
}

/// The ops routes.
pub fn router(readiness: Readiness, metrics: Option<PrometheusHandle>) -> Router {
    Router::new()
        .route("/health", get(|| async { "ok" }))
        .route(
            "/ready",
            get(move || {
                let ready = readiness.get();
                async move {
                    if ready {
                        (StatusCode::OK, "ready")
                    } else {
                        (StatusCode::SERVICE_UNAVAILABLE, "not ready")
                    }
                }
            }),
        )
        .route(
            "/metrics",
            get(move || {
                let body = metrics.as_ref().map(|handle| {
                    // CPU time, memory and open files as of this scrape.
                    metrics_process::Collector::default().collect();
                    handle.run_upkeep();
                    handle.render()
                });
                async move {
                    match body {
                        Some(body) => (StatusCode::OK, body),
                        None => (StatusCode::NOT_FOUND, "metrics are off".to_owned()),
                    }
                }
            }),
        )
}

/// Binds `addr` and serves the ops routes until `stop` is cancelled.
pub async fn serve(
    addr: &str,
    readiness: Readiness,
    stop: CancellationToken,
) -> std::io::Result<tokio::task::JoinHandle<()>> {
    let listener = TcpListener::bind(addr).await?;
    tracing::info!(listen = %listener.local_addr()?, "ops listener (health, ready, metrics)");
    let app = router(readiness, metrics_handle());
    Ok(tokio::spawn(async move {
        let server = axum::serve(listener, app).with_graceful_shutdown(stop.cancelled_owned());
        if let Err(error) = server.await {
            tracing::warn!(%error, "ops listener failed");
        }
    }))
}

/// How one task reports a Redis outage in its logs: a warn line when it
/// begins, then at most one every [`Outage::EVERY`] (with the failures
/// meanwhile), and one info line when Redis answers again, with how long
/// it was away. A task retrying every half second no longer writes a line
/// each time.
#[derive(Debug)]
pub struct Outage {
    task: &'static str,
    since: Option<std::time::Instant>,
    last_warning: Option<std::time::Instant>,
    failures: u64,
}

impl Outage {
    /// The least time between two warn lines of one outage.
    pub const EVERY: std::time::Duration = std::time::Duration::from_secs(30);

    pub fn new(task: &'static str) -> Outage {
        Outage {
            task,
            since: None,
            last_warning: None,
            failures: 0,
        }
    }

    /// A Redis call of this task failed (`what` says which).
    pub fn failed(&mut self, what: &str, error: &dyn std::fmt::Display) {
        let now = std::time::Instant::now();
        self.since.get_or_insert(now);
        self.failures += 1;
        if self
            .last_warning
            .is_none_or(|at| now.duration_since(at) >= Self::EVERY)
        {
            self.last_warning = Some(now);
            tracing::warn!(task = self.task, failures = self.failures, %error, "{what}; retrying");
        }
    }

    /// A Redis call of this task worked: the end of the outage, if any.
    pub fn recovered(&mut self) {
        if let Some(since) = self.since.take() {
            tracing::info!(
                task = self.task,
                failures = self.failures,
                down_ms = since.elapsed().as_millis() as u64,
                "Redis answers again"
            );
        }
        self.last_warning = None;
        self.failures = 0;
    }
}

/// The longest pause between attempts of the tasks on the event path
/// (the io-node's writer, the app-node's taker, publisher and reply
/// listener): a Redis outage or failover ends for the clients at most this
/// long after Redis answers again. Two attempts a second per task cost
/// Redis nothing while it is away.
pub const EVENT_PATH_RETRY: std::time::Duration = std::time::Duration::from_millis(500);

/// The pause before retrying a failed Redis call: 50 ms, doubling up to
/// `max`, back to 50 ms after a success ([`Backoff::reset`]).
#[derive(Debug)]
pub struct Backoff {
    next: std::time::Duration,
    max: std::time::Duration,
}

impl Backoff {
    const FIRST: std::time::Duration = std::time::Duration::from_millis(50);

    pub fn new(max: std::time::Duration) -> Backoff {
        Backoff {
            next: Self::FIRST,
            max,
        }
    }

    /// Sleeps for the current pause and doubles the next one.
    pub async fn wait(&mut self) {
        tokio::time::sleep(self.next).await;
        self.next = (self.next * 2).min(self.max);
    }

    pub fn reset(&mut self) {
        self.next = Self::FIRST;
    }
}
