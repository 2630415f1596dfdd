//! How every node reaches Redis, whatever the deployment: one server
//! (`redis://`, `rediss://`), a master behind Sentinels
//! (`redis+sentinel://`, see [`crate::sentinel`]) or a Redis Cluster
//! (`redis+cluster://host:port,host:port`, `rediss+cluster://` for TLS).
//!
//! A node asks a [`RedisClient`] for command connections ([`Redis`]: they
//! reconnect by themselves, and in a Redis Cluster follow the slots to
//! their masters through the redis crate's cluster support, retrying
//! across a failover) and for pub/sub connections (plain ones: a node
//! that loses one makes a new one and does what it does after any lost
//! subscription).
//!
//! **Redis Cluster, one slot.** Every key and channel name carries the
//! hash tag `{prefix}` ([`RedisClient::key_prefix`]), so all of them live
//! in one slot: every multi-key script keeps working, atomically, on the
//! master that owns it, and a master failover inside the cluster is
//! followed like a Sentinel failover. Pub/sub is the classic kind, which a
//! Redis Cluster carries to every node: a subscriber may use any node, and
//! takes the seed addresses in turn. This buys a cluster's failover and
//! managed-service compatibility, not its scale: one master carries all of
//! iocluster's traffic (docs/DEPLOY.md).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use iocluster_protocol::keys::Keys;
use redis::aio::{ConnectionLike, ConnectionManager};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, IntoConnectionInfo, Pipeline, RedisFuture, RedisResult, Value};

/// The scheme of a Redis Cluster URL.
pub const CLUSTER_SCHEME: &str = "redis+cluster://";

/// The scheme of a Redis Cluster URL with TLS.
pub const CLUSTER_TLS_SCHEME: &str = "rediss+cluster://";

/// A parsed `redis+cluster://[user:password@]h1:p1,h2:p2[/]` URL: the
/// seed nodes, each as a plain URL with the credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterUrl {
    pub seeds: Vec<String>,
    /// `redis://` or `rediss://`, and `user:password@` (or nothing): how
    /// to reach any node of the cluster.
    pub scheme: &'static str,
    pub credentials: String,
}

/// Reads a Redis Cluster URL; `None` if `url` is not one.
pub fn parse_cluster(url: &str) -> Option<Result<ClusterUrl, String>> {
    let (rest, scheme) = if let Some(rest) = url.strip_prefix(CLUSTER_SCHEME) {
        (rest, "redis")
    } else {
        (url.strip_prefix(CLUSTER_TLS_SCHEME)?, "rediss")
    };
    Some(parse_cluster_rest(rest, scheme))
}

fn parse_cluster_rest(rest: &str, scheme: &'static str) -> Result<ClusterUrl, String> {
    if rest.contains('?') {
        return Err("a Redis Cluster URL takes no parameters".into());
    }
    let (credentials, rest) = match rest.rsplit_once('@') {
        Some((credentials, rest)) => (format!("{credentials}@"), rest),
        None => (String::new(), rest),
    };
    let hosts = match rest.split_once('/') {
        Some((hosts, "")) => hosts,
        Some(_) => return Err("a Redis Cluster has no databases but 0: drop the /path".into()),
        None => rest,
    };
    let seeds: Vec<String> = hosts
        .split(',')
        .filter(|host| !host.is_empty())
        .map(|host| {
            if host.contains(':') {
                format!("{scheme}://{credentials}{host}")
            } else {
                format!("{scheme}://{credentials}{host}:6379")
            }
        })
        .collect();
    if seeds.is_empty() {
        return Err("no Redis Cluster node: redis+cluster://host:port,host:port".into());
    }
    for seed in &seeds {
        seed.as_str()
            .into_connection_info()
            .map_err(|error| format!("{seed}: {error}"))?;
    }
    Ok(ClusterUrl {
        seeds,
        scheme,
        credentials,
    })
}

/// Checks a Redis URL of any kind a node takes.
pub fn check_url(url: &str) -> Result<(), String> {
    if let Some(parsed) = crate::sentinel::parse(url) {
        return parsed.map(|_| ());
    }
    if let Some(parsed) = parse_cluster(url) {
        return parsed.map(|_| ());
    }
    redis::Client::open(url)
        .map(|_| ())
        .map_err(|error| error.to_string())
}

/// Where a node's Redis connections come from (see the module).
#[derive(Clone)]
pub enum RedisClient {
    /// One server, or the Sentinel forwarder's address.
    Single(Arc<redis::Client>),
    /// A Redis Cluster.
    Cluster(Arc<ClusterSeeds>),
}

/// A Redis Cluster's seed nodes.
pub struct ClusterSeeds {
    url: ClusterUrl,
    seeds: Vec<redis::ConnectionInfo>,
    /// The seed the next pub/sub connection tries first, when the master
    /// of its slot is not known.
    next: AtomicUsize,
    /// For the slot map (pub/sub connections, [`failovers`]).
    shared: tokio::sync::OnceCell<Redis>,
}

impl ClusterSeeds {
    /// A client builder for the seeds, with the given response timeout
    /// (`None` for blocking commands).
    fn builder(&self, response_timeout: Option<Duration>) -> ClusterClientBuilder {
        let builder = ClusterClientBuilder::new(self.seeds.clone())
            .connection_timeout(Duration::from_secs(2))
            // Retries ride out a failover (the cluster's node timeout,
            // then the election): about 7 s of them, at most 250 ms apart,
            // so a command goes through soon after the new master is
            // elected.
            .retries(30)
            .min_retry_wait(50)
            .max_retry_wait(250);
        match response_timeout {
            Some(timeout) => builder.response_timeout(timeout),
            None => builder,
        }
    }
}

/// A Redis client for `url` whose connections send at once (`TCP_NODELAY`):
/// every node writes small pipelined commands and waits for their replies,
/// so Nagle's algorithm would hold a write back until the previous one is
/// acknowledged, up to the peer's delayed-ACK time (40 ms on Linux).
///
/// A Sentinel URL (`redis+sentinel://…`, see [`crate::sentinel`]) gets a
/// client of the local forwarder to the current master (call it inside a
/// Tokio runtime); a Redis Cluster URL a cluster client.
pub fn redis_client(url: &str) -> RedisResult<RedisClient> {
    let invalid = |what: &'static str, error: String| {
        redis::RedisError::from((redis::ErrorKind::InvalidClientConfig, what, error))
    };
    if let Some(parsed) = crate::sentinel::parse(url) {
        let parsed = parsed.map_err(|error| invalid("invalid Sentinel URL", error))?;
        return redis_client(&crate::sentinel::local_url(url, &parsed)?);
    }
    if let Some(parsed) = parse_cluster(url) {
        let parsed = parsed.map_err(|error| invalid("invalid Redis Cluster URL", error))?;
        let seeds = parsed
            .seeds
            .iter()
            .map(|seed| nodelay(seed.as_str().into_connection_info()?))
            .collect::<RedisResult<Vec<_>>>()?;
        let cluster = Arc::new(ClusterSeeds {
            url: parsed,
            seeds,
            next: AtomicUsize::new(0),
            shared: tokio::sync::OnceCell::new(),
        });
        watch_masters(url, &cluster);
        return Ok(RedisClient::Cluster(cluster));
    }
    Ok(RedisClient::Single(Arc::new(redis::Client::open(
        nodelay(url.into_connection_info()?)?,
    )?)))
}

fn nodelay(info: redis::ConnectionInfo) -> RedisResult<redis::ConnectionInfo> {
    let tcp = info.tcp_settings().clone().set_nodelay(true);
    Ok(info.set_tcp_settings(tcp))
}

impl RedisClient {
    /// Whether this is a Redis Cluster.
    pub fn is_cluster(&self) -> bool {
        matches!(self, RedisClient::Cluster(_))
    }

    /// The key prefix to build names with: in a Redis Cluster the prefix as
    /// a hash tag (`{iocluster}`), so every key and channel is in one slot,
    /// unless it has a tag already; elsewhere the prefix itself.
    pub fn key_prefix(&self, prefix: &str) -> String {
        cluster_prefix(self.is_cluster(), prefix)
    }

    /// The names of keys and channels under `prefix`: on a Redis Cluster
    /// with the prefix as a hash tag and sharded room channels
    /// ([`Keys::sharded`]).
    pub fn keys(&self, prefix: &str) -> Keys {
        cluster_keys(self.is_cluster(), prefix)
    }

    /// A command connection that reconnects by itself (at most a second
    /// apart) with the given response timeout (`None` for blocking
    /// commands). In a Redis Cluster each call makes its own connections
    /// to the nodes, so a blocking command holds up no other.
    pub async fn connection(&self, response_timeout: Option<Duration>) -> RedisResult<Redis> {
        match self {
            RedisClient::Single(client) => {
                let config = crate::redis_manager_config(response_timeout);
                Ok(Redis::Single(
                    client.get_connection_manager_with_config(config).await?,
                ))
            }
            RedisClient::Cluster(cluster) => Ok(Redis::Cluster(
                cluster
                    .builder(response_timeout)
                    .build()?
                    .get_async_connection()
                    .await?,
            )),
        }
    }

    /// On a Redis Cluster, a connection for sharded pub/sub (RESP3) and
    /// the receiver of what it is pushed: `SSUBSCRIBE` on it goes to the
    /// master owning each channel's slot, messages arrive as
    /// [`redis::PushKind::SMessage`] pushes `[channel, payload]`. The
    /// redis crate reconnects it and subscribes again to the channels of
    /// a node it reconnects to, or that the slot map it reads again (after
    /// a `MOVED` or a failed command) moves; a channel the *server* drops
    /// (`sunsubscribe` push, when its slot moves away) is the caller's to
    /// subscribe again. `None` elsewhere.
    pub async fn sharded_pubsub(
        &self,
    ) -> RedisResult<
        Option<(
            ClusterConnection,
            tokio::sync::mpsc::UnboundedReceiver<redis::PushInfo>,
        )>,
    > {
        let RedisClient::Cluster(cluster) = self else {
            return Ok(None);
        };
        let (sender, receiver) = tokio::sync::mpsc::unbounded_channel();
        let connection = cluster
            .builder(Some(Duration::from_secs(10)))
            .use_protocol(redis::ProtocolVersion::RESP3)
            .push_sender(sender)
            .build()?
            .get_async_connection()
            .await?;
        Ok(Some((connection, receiver)))
    }

    /// A pub/sub connection: to the server, or in a Redis Cluster to the
    /// master of `key`'s slot, where the nodes' scripts publish (classic
    /// pub/sub reaches every node of a cluster, but `PUBSUB NUMSUB` counts
    /// a node's own subscribers, and the nodes ask the masters); if that
    /// master is not known or does not answer, to the first seed node that
    /// answers, starting after the one the last call used.
    pub async fn pubsub(&self, key: &str) -> RedisResult<redis::aio::PubSub> {
        match self {
            RedisClient::Single(client) => client.get_async_pubsub().await,
            RedisClient::Cluster(cluster) => {
                // The slot's master first, then the seeds in turn.
                let master = match cluster.master_of(key).await {
                    Ok(address) => {
                        let url = format!(
                            "{}://{}{address}",
                            cluster.url.scheme, cluster.url.credentials
                        );
                        url.as_str().into_connection_info().and_then(nodelay).ok()
                    }
                    Err(_) => None,
                };
                let first = cluster.next.fetch_add(1, Ordering::Relaxed);
                let seeds = (0..cluster.seeds.len())
                    .map(|index| cluster.seeds[(first + index) % cluster.seeds.len()].clone());
                let mut last = None;
                for node in master.into_iter().chain(seeds) {
                    let attempt = within(Duration::from_secs(2), "2 s", async {
                        redis::Client::open(node)?.get_async_pubsub().await
                    })
                    .await;
                    match attempt {
                        Ok(pubsub) => return Ok(pubsub),
                        Err(error) => last = Some(error),
                    }
                }
                Err(last.unwrap_or_else(|| {
                    redis::RedisError::from((redis::ErrorKind::Io, "no seed node"))
                }))
            }
        }
    }

    /// Sends `PING` once (every master's, in a Redis Cluster).
    pub async fn ping(&self) -> RedisResult<()> {
        match self {
            RedisClient::Single(client) => {
                let mut connection = client.get_multiplexed_async_connection().await?;
                redis::cmd("PING").query_async::<()>(&mut connection).await
            }
            RedisClient::Cluster(cluster) => {
                let mut connection = cluster.shared().await?;
                redis::cmd("PING").query_async::<()>(&mut connection).await
            }
        }
    }
}

/// `future`'s result, or an I/O error ("no answer within `said`") if it
/// takes longer than `limit`: how a node bounds a Redis call that must not
/// hang (a start-up ping, a lease renewal, a new connection).
pub async fn within<T>(
    limit: Duration,
    said: &str,
    future: impl std::future::Future<Output = RedisResult<T>>,
) -> RedisResult<T> {
    tokio::time::timeout(limit, future)
        .await
        .unwrap_or_else(|_| {
            Err(redis::RedisError::from((
                redis::ErrorKind::Io,
                "no answer",
                format!("within {said}"),
            )))
        })
}

static FAILOVERS: AtomicU64 = AtomicU64::new(0);

/// How many times this process saw the Redis master change: the Sentinels
/// name another, or a Redis Cluster another master for some slot. A node
/// that keeps state in Redis compares it between writes: a promoted
/// replica may lack the last writes acknowledged by the old master
/// (replication is asynchronous), so after a change it writes its state
/// again, as after a Redis that lost its data.
pub fn failovers() -> u64 {
    FAILOVERS.load(Ordering::Acquire)
}

pub(crate) fn count_failover() {
    FAILOVERS.fetch_add(1, Ordering::AcqRel);
    metrics::counter!("iocluster_redis_failovers_total").increment(1);
}

/// Starts (once per process and URL, inside a Tokio runtime) the task
/// that reads a Redis Cluster's slot map every half second and counts a
/// failover ([`failovers`]) when a slot's master changes: the cluster
/// connection follows the new master by itself, but the node must know,
/// to write its state again.
fn watch_masters(url: &str, cluster: &Arc<ClusterSeeds>) {
    static STARTED: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    let mut started = STARTED
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if started.iter().any(|known| known == url) {
        return;
    }
    started.push(url.to_owned());
    let cluster = cluster.clone();
    runtime.spawn(async move {
        let mut known: Option<Vec<(u16, u16, String)>> = None;
        loop {
            if let Ok(mut redis) = cluster.shared().await
                && let Ok(map) = slot_map(&mut redis).await
            {
                // Which master serves each range; not where it listens.
                let map: Vec<_> = map.into_iter().map(|r| (r.start, r.end, r.id)).collect();
                if known.as_ref().is_some_and(|known| *known != map) {
                    tracing::info!("a Redis Cluster slot has a new master");
                    count_failover();
                }
                known = Some(map);
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    });
}

impl ClusterSeeds {
    /// A command connection shared by the process's own checks.
    async fn shared(self: &Arc<Self>) -> RedisResult<Redis> {
        self.shared
            .get_or_try_init(|| async {
                RedisClient::Cluster(self.clone())
                    .connection(Some(Duration::from_secs(2)))
                    .await
            })
            .await
            .cloned()
    }

    /// `host:port` of the master of `key`'s slot.
    async fn master_of(self: &Arc<Self>, key: &str) -> RedisResult<String> {
        slot_master(&mut self.shared().await?, key).await
    }
}

/// One slot range of a Redis Cluster and its master, from `CLUSTER SLOTS`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct SlotRange {
    pub start: u16,
    pub end: u16,
    /// The master's node id (empty from a server too old to say).
    pub id: String,
    /// The master's `host:port`.
    pub address: String,
}

/// The slot ranges of a Redis Cluster with their masters, sorted.
pub async fn slot_map(redis: &mut Redis) -> RedisResult<Vec<SlotRange>> {
    let ranges: Vec<Vec<Value>> = redis::cmd("CLUSTER")
        .arg("SLOTS")
        .query_async(redis)
        .await?;
    let mut map = Vec::with_capacity(ranges.len());
    for range in ranges {
        // start, end, master [host, port, id], replicas…
        let [start, end, master, ..] = range.as_slice() else {
            continue;
        };
        let master: Vec<Value> = redis::from_redis_value(master.clone())?;
        let [host, port, rest @ ..] = master.as_slice() else {
            continue;
        };
        let host: String = redis::from_redis_value(host.clone())?;
        let port: u16 = redis::from_redis_value(port.clone())?;
        map.push(SlotRange {
            start: redis::from_redis_value(start.clone())?,
            end: redis::from_redis_value(end.clone())?,
            id: match rest.first() {
                Some(id) => redis::from_redis_value(id.clone())?,
                None => String::new(),
            },
            address: format!("{host}:{port}"),
        });
    }
    map.sort();
    Ok(map)
}

/// `host:port` of the master of `key`'s slot in a Redis Cluster.
pub async fn slot_master(redis: &mut Redis, key: &str) -> RedisResult<String> {
    let slot: u16 = redis::cmd("CLUSTER")
        .arg("KEYSLOT")
        .arg(key)
        .query_async(redis)
        .await?;
    slot_map(redis)
        .await?
        .into_iter()
        .find(|range| (range.start..=range.end).contains(&slot))
        .map(|range| range.address)
        .ok_or_else(|| redis::RedisError::from((redis::ErrorKind::Io, "no master serves the slot")))
}

/// Adds retained emits to their namespaces' recovery logs with
/// [`scripts::LOG`](iocluster_protocol::scripts::LOG) (`key`: any key of
/// the prefix, to route the call) and returns, for each `(mark, envelope)`
/// in order, the message that publishes it: its `offset` envelope, then
/// the envelope. For publishers on a Redis Cluster, whose room channels
/// the flush script cannot reach.
pub async fn log_retained(
    redis: &mut Redis,
    key: &str,
    emits: &[(&[u8], &[u8])],
) -> RedisResult<Vec<Vec<u8>>> {
    static SCRIPT: std::sync::LazyLock<redis::Script> =
        std::sync::LazyLock::new(|| redis::Script::new(iocluster_protocol::scripts::LOG));
    if emits.is_empty() {
        return Ok(Vec::new());
    }
    let mut invocation = SCRIPT.key(key);
    for (mark, envelope) in emits {
        invocation.arg(*mark).arg(*envelope);
    }
    let ids: Vec<String> = invocation.invoke_async(redis).await?;
    if ids.len() != emits.len() {
        return Err(redis::RedisError::from((
            redis::ErrorKind::UnexpectedReturnType,
            "the log script returned a wrong number of ids",
        )));
    }
    Ok(ids
        .into_iter()
        .zip(emits)
        .map(|(id, (_, envelope))| {
            let mut message = iocluster_protocol::envelope::Command::Offset(
                iocluster_protocol::envelope::Offset { id },
            )
            .encode();
            message.extend_from_slice(envelope);
            message
        })
        .collect())
}

/// [`RedisClient::keys`] for a Redis URL, without making a client.
pub fn keys(url: &str, prefix: &str) -> Keys {
    cluster_keys(parse_cluster(url).is_some(), prefix)
}

/// [`RedisClient::keys`] for a node that knows whether it runs on a Redis
/// Cluster.
pub fn cluster_keys(cluster: bool, prefix: &str) -> Keys {
    let prefix = cluster_prefix(cluster, prefix);
    if cluster {
        Keys::sharded(prefix)
    } else {
        Keys::new(prefix)
    }
}

/// [`RedisClient::key_prefix`] for a node that knows whether it runs on a
/// Redis Cluster.
pub fn cluster_prefix(cluster: bool, prefix: &str) -> String {
    let tagged = prefix
        .split_once('{')
        .is_some_and(|(_, rest)| rest.split_once('}').is_some_and(|(tag, _)| !tag.is_empty()));
    if cluster && !tagged {
        format!("{{{prefix}}}")
    } else {
        prefix.to_owned()
    }
}

/// A command connection to a server or a Redis Cluster; cheap to clone
/// (clones share the connection), reconnects by itself.
#[derive(Clone)]
pub enum Redis {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Redis {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Redis::Single(connection) => connection.req_packed_command(cmd),
            Redis::Cluster(connection) => connection.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Redis::Single(connection) => connection.req_packed_commands(pipeline, offset, count),
            Redis::Cluster(connection) => connection.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Redis::Single(connection) => connection.get_db(),
            Redis::Cluster(connection) => connection.get_db(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_urls_are_read() {
        let url = parse_cluster("redis+cluster://a:7000,b").unwrap().unwrap();
        assert_eq!(url.seeds, ["redis://a:7000", "redis://b:6379"]);
        assert_eq!((url.scheme, url.credentials.as_str()), ("redis", ""));
        let url = parse_cluster("rediss+cluster://u:p@a:7000,b:7001/")
            .unwrap()
            .unwrap();
        assert_eq!(url.seeds, ["rediss://u:p@a:7000", "rediss://u:p@b:7001"]);
        assert_eq!((url.scheme, url.credentials.as_str()), ("rediss", "u:p@"));
        assert!(parse_cluster("redis://a:7000").is_none());
        assert!(parse_cluster("redis+cluster://").unwrap().is_err());
        assert!(parse_cluster("redis+cluster://a:1/2").unwrap().is_err());
        assert!(parse_cluster("redis+cluster://a:1?x=1").unwrap().is_err());
        assert!(parse_cluster("redis+cluster://a:port").unwrap().is_err());
        assert!(check_url("redis+cluster://a:1,b:2").is_ok());
        assert!(check_url("redis+cluster://").is_err());
        assert!(check_url("redis://a:1").is_ok());
    }

    #[test]
    fn cluster_keys_share_one_hash_tag() {
        assert_eq!(cluster_prefix(true, "iocluster"), "{iocluster}");
        assert_eq!(cluster_prefix(true, "app:{ioc}"), "app:{ioc}");
        assert_eq!(cluster_prefix(true, "a{}b"), "{a{}b}");
        assert_eq!(cluster_prefix(false, "iocluster"), "iocluster");
    }
}
