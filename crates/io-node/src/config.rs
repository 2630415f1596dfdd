//! io-node settings: each one defined once below (its TOML key, flag,
//! environment variable, default and doc), and the validated [`Config`] the
//! node runs with. Validation happens before anything binds, so a bad
//! setting stops the process with a message naming it.

use std::path::PathBuf;
use std::time::Duration;

use iocluster_ops::settings::{millis, positive, redis_and_prefix, socket_addr};

/// The headers left out of the handshake by default: secrets (cookies,
/// `Authorization`), and those that only carried the WebSocket upgrade (the
/// same for every client, meaningless once it is done, and copied into
/// every queued event). `Sec-WebSocket-Protocol` is kept: a client chose it.
const DEFAULT_DROPPED_HEADERS: [&str; 7] = [
    "cookie",
    "authorization",
    "connection",
    "upgrade",
    "sec-websocket-key",
    "sec-websocket-version",
    "sec-websocket-extensions",
];

iocluster_ops::settings! {
    /// io-node settings as given by flags, the environment (`IOCLUSTER_*`)
    /// or a TOML file; every field optional. [`RawConfig::load`] merges
    /// them, flag over environment over file; [`RawConfig::validate`]
    /// applies the defaults and checks the values.
    pub struct RawConfig;
    /// io-node settings with their defaults applied, before validation.
    pub struct Settings;

    /// This node's id, 1 to 32 of [A-Za-z0-9_-]; its session ids start with it.
    #[setting(flag = "node-id", value_name = "ID", env = IOCLUSTER_NODE_ID, unset = "random")]
    node_id: String,
    /// Redis URL: redis://[user:password@]host:port[/db], rediss:// for
    /// TLS (a private CA through SSL_CERT_FILE), or
    /// redis+sentinel://[user:password@]h1:26379,h2:26379/master[/db][?sentinel_password=P]
    /// (rediss+sentinel:// with TLS) to follow the master that Sentinel names
    /// through failovers, or redis+cluster://[user:password@]h1:7000,h2:7001
    /// (rediss+cluster:// with TLS) for a Redis Cluster (keys and channels
    /// in the slot of the prefix as a hash tag, room channels sharded
    /// over the masters).
    #[setting(flag = "redis", value_name = "URL", env = IOCLUSTER_REDIS_URL, default = iocluster_ops::DEFAULT_REDIS.into())]
    redis: String,
    /// Prefix of every Redis key and channel; app-nodes must use the same.
    #[setting(flag = "prefix", value_name = "PREFIX", env = IOCLUSTER_PREFIX, default = iocluster_ops::DEFAULT_PREFIX.into())]
    prefix: String,
    /// Client listener address.
    #[setting(flag = "listen", value_name = "ADDR", env = IOCLUSTER_LISTEN, default = "127.0.0.1:3000".into())]
    listen: String,
    /// URL browsers use to reach this node, published in the registry.
    #[setting(flag = "public-url", value_name = "URL", env = IOCLUSTER_PUBLIC_URL, unset = "http://<listen>")]
    public_url: String,
    /// Engine.IO path.
    #[setting(flag = "path", value_name = "PATH", env = IOCLUSTER_PATH, default = "/socket.io/".into())]
    path: String,
    /// Milliseconds between server pings.
    #[setting(flag = "ping-interval", value_name = "MS", env = IOCLUSTER_PING_INTERVAL_MS, default = 25_000)]
    ping_interval_ms: u64,
    /// Milliseconds a client has to answer a ping before it is disconnected.
    #[setting(flag = "ping-timeout", value_name = "MS", env = IOCLUSTER_PING_TIMEOUT_MS, default = 20_000)]
    ping_timeout_ms: u64,
    /// Milliseconds a client has, after the Engine.IO handshake, to join a
    /// namespace.
    #[setting(flag = "connect-timeout", value_name = "MS", env = IOCLUSTER_CONNECT_TIMEOUT_MS, default = 45_000)]
    connect_timeout_ms: u64,
    /// Milliseconds an app-node has to accept or reject a connection before
    /// the io-node closes the client's connection, so that it reconnects
    /// and tries again (stock clients do so on their own).
    #[setting(flag = "admission-timeout", value_name = "MS", env = IOCLUSTER_ADMISSION_TIMEOUT_MS, default = 10_000)]
    admission_timeout_ms: u64,
    /// Largest Engine.IO packet (WebSocket message or polling body) accepted,
    /// in bytes.
    #[setting(flag = "max-payload", value_name = "BYTES", env = IOCLUSTER_MAX_PAYLOAD, default = 1_000_000)]
    max_payload: usize,
    /// The Socket.IO parser clients use: default (JSON text, binary as
    /// attachments) or msgpack (socket.io-msgpack-parser, what Node's
    /// Socket.IO and socketioxide offer as `parser`). App-nodes are not
    /// concerned. A client of the other parser is refused with a connect
    /// error it can read (and a warn line here).
    #[setting(flag = "parser", value_name = "PARSER", env = IOCLUSTER_PARSER, default = "default".into())]
    parser: String,
    /// Also serve Engine.IO v3 clients (socket.io-client 2.x, and the apps
    /// pinned to it), as Node's `allowEIO3`: their handshake, heartbeat
    /// (the client pings), polling payloads and binary framing, and their
    /// implicit connection to namespace `/`. App-nodes see no difference.
    /// Needs the default parser.
    #[setting(flag = "allow-eio3", env = IOCLUSTER_ALLOW_EIO3, default = false)]
    allow_eio3: bool,
    /// Most binary attachments one Socket.IO packet may carry (with the
    /// msgpack parser: binary values in one packet).
    #[setting(flag = "max-attachments", value_name = "N", env = IOCLUSTER_MAX_ATTACHMENTS, default = 10)]
    max_attachments: usize,
    /// Frames queued for one client before it counts as too slow and is
    /// disconnected.
    #[setting(flag = "outbox-capacity", value_name = "FRAMES", env = IOCLUSTER_OUTBOX_CAPACITY, default = 1024)]
    outbox_capacity: usize,
    /// Client events one socket may have waiting for their turn (its events
    /// are handled in order, one queue item at a time) before the node stops
    /// reading from the client, until half of them are handled: a fast client
    /// is slowed down, never disconnected for it.
    #[setting(flag = "max-pending-events", value_name = "N", env = IOCLUSTER_MAX_PENDING_EVENTS, default = 256)]
    max_pending_events: usize,
    /// Most `message` events of one socket sent to an app-node as one queue
    /// item: events that arrived while the socket's previous item was being
    /// handled go together, so a fast client is not held to one event per
    /// round trip through Redis and an app-node. 1 sends every event alone.
    #[setting(flag = "event-batch", value_name = "N", env = IOCLUSTER_EVENT_BATCH, default = 32)]
    event_batch: usize,
    /// Partitions of the event queue this node spreads its sockets'
    /// `message` events over (each socket always to the same one; connects
    /// and disconnects go to the first, beside the ledger). On a Redis
    /// Cluster each partition hashes to a slot of its own, so the client
    /// event path spreads over the masters; on one Redis more than one
    /// only costs app-nodes a blocking connection each. App-nodes take
    /// from as many as the io-node with the most asks for.
    #[setting(flag = "queue-partitions", value_name = "N", env = IOCLUSTER_QUEUE_PARTITIONS, unset = "8 on a Redis Cluster, else 1")]
    queue_partitions: usize,
    /// Events waiting to be written to Redis before clients are refused.
    #[setting(flag = "event-buffer", value_name = "N", env = IOCLUSTER_EVENT_BUFFER, default = 100_000)]
    event_buffer: usize,
    /// Milliseconds this node's registry entry lives without a heartbeat.
    #[setting(flag = "lease", value_name = "MS", env = IOCLUSTER_LEASE_MS, default = 5_000)]
    lease_ms: u64,
    /// Origins (scheme://host[:port], comma-separated) of the web pages
    /// that may use this node from another origin, with credentials
    /// (cookies); `*` lets any page use it without credentials. Empty: only
    /// the node's own origin and non-browser clients (refused origins get
    /// 403 on the polling transport).
    #[setting(flag = "cors-origins", value_name = "ORIGINS", env = IOCLUSTER_CORS_ORIGINS, default = Vec::new())]
    cors_origins: Vec<String>,
    /// Request headers pages of allowed origins may send (a preflight
    /// answers them), comma-separated; add those your clients set with
    /// `extraHeaders`.
    #[setting(flag = "cors-headers", value_name = "HEADERS", env = IOCLUSTER_CORS_HEADERS, default = vec!["content-type".into()])]
    cors_headers: Vec<String>,
    /// Request headers left out of the handshake the app-nodes see, which
    /// is kept in Redis (in every queued event and in the io-node's ledger),
    /// comma-separated. By default cookies and `Authorization` (secrets),
    /// and the headers that only carry the WebSocket upgrade itself
    /// (`Connection`, `Upgrade`, `Sec-WebSocket-Key`, `-Version`,
    /// `-Extensions`, in every queued event otherwise: without them the
    /// benchmark's echo takes 5 % less CPU per round trip). Empty: forward
    /// every header.
    #[setting(flag = "handshake-drop-headers", value_name = "HEADERS", env = IOCLUSTER_HANDSHAKE_DROP_HEADERS, default = DEFAULT_DROPPED_HEADERS.map(String::from).to_vec())]
    handshake_drop_headers: Vec<String>,
    /// Refuse WebSocket upgrades whose `Origin` (browsers send one; CORS
    /// does not protect WebSockets) is neither the node's own nor allowed
    /// by `cors_origins`. Clients that send no `Origin` are not concerned.
    #[setting(flag = "websocket-origin-check", env = IOCLUSTER_WEBSOCKET_ORIGIN_CHECK, default = false)]
    websocket_origin_check: bool,
    /// Connections the kernel queues for the node to accept (its listen
    /// backlog; capped by net.core.somaxconn). A storm of connections past
    /// it has SYNs dropped, and those clients retry a second later.
    #[setting(flag = "listen-backlog", value_name = "N", env = IOCLUSTER_LISTEN_BACKLOG, default = 4_096)]
    listen_backlog: u32,
    /// Milliseconds after which an event whose `done` never came (lost with
    /// Redis, or published while this node's subscription was down) is
    /// pushed again. Keep it above the app-nodes' handler timeout.
    #[setting(flag = "redeliver-after", value_name = "MS", env = IOCLUSTER_REDELIVER_AFTER_MS, default = 60_000)]
    redeliver_after_ms: u64,
    /// Milliseconds a namespace stays served after the last app-node serving
    /// it stopped renewing its lease: a client connecting to it meanwhile
    /// (all app-nodes restarting at once) waits for an app-node, and
    /// reconnects until one answers, instead of being refused with "Invalid
    /// namespace" for good. App-nodes answer for their own namespaces when
    /// they run. 0: served only while an app-node's lease runs.
    #[setting(flag = "namespace-memory", value_name = "MS", env = IOCLUSTER_NAMESPACE_MEMORY_MS, default = 86_400_000)]
    namespace_memory_ms: u64,
    /// Most sessions that have not joined a namespace yet, from one client
    /// address (behind a proxy of `trusted_proxies`, the address it
    /// forwards); past it, that address's handshakes get HTTP 503, so that
    /// a flood of handshakes that never continue leaves room for everyone
    /// else. 0: no per-address limit.
    #[setting(flag = "max-unjoined-per-address", value_name = "N", env = IOCLUSTER_MAX_UNJOINED_PER_ADDRESS, default = 1_000)]
    max_unjoined_per_address: usize,
    /// Most sessions that have not joined a namespace yet, in all; past it,
    /// handshakes get HTTP 503.
    #[setting(flag = "max-unjoined", value_name = "N", env = IOCLUSTER_MAX_UNJOINED, default = 10_000)]
    max_unjoined: usize,
    /// Addresses of the proxies in front of this node whose
    /// `X-Forwarded-For` tells the client's address (for
    /// `max_unjoined_per_address`), comma-separated.
    #[setting(flag = "trusted-proxies", value_name = "ADDRS", env = IOCLUSTER_TRUSTED_PROXIES, default = Vec::new())]
    trusted_proxies: Vec<String>,
    /// Most Engine.IO sessions this node holds; past it, handshakes get
    /// HTTP 503.
    #[setting(flag = "max-connections", value_name = "N", env = IOCLUSTER_MAX_CONNECTIONS, default = 100_000)]
    max_connections: usize,
    /// Threads of the async runtime. With several nodes on one machine,
    /// fewer threads per node cost less CPU in sleeps and wake-ups
    /// (docs/BENCHMARKS.md).
    #[setting(flag = "worker-threads", value_name = "N", env = IOCLUSTER_WORKER_THREADS, unset = "$TOKIO_WORKER_THREADS, else one per CPU")]
    worker_threads: usize,
    /// Packets per second one connection may send (bursts of as many); a
    /// faster client is slowed down (its packets wait, so TCP pushes back).
    #[setting(flag = "max-packets-per-second", value_name = "N", env = IOCLUSTER_MAX_PACKETS_PER_SECOND, default = 2_000)]
    max_packets_per_second: u32,
    /// Operations listener: /health, /ready and /metrics (Prometheus).
    #[setting(flag = "ops-listen", value_name = "ADDR", env = IOCLUSTER_OPS_LISTEN, unset = "none")]
    ops_listen: String,
    /// PEM certificate chain: serve clients over TLS (with tls_key).
    #[setting(flag = "tls-cert", value_name = "FILE", env = IOCLUSTER_TLS_CERT, unset = "none")]
    tls_cert: PathBuf,
    /// PEM private key for tls_cert.
    #[setting(flag = "tls-key", value_name = "FILE", env = IOCLUSTER_TLS_KEY, unset = "none")]
    tls_key: PathBuf,
    /// Milliseconds SIGTERM waits for clients to close and their disconnect
    /// events to reach Redis.
    #[setting(flag = "shutdown-timeout", value_name = "MS", env = IOCLUSTER_SHUTDOWN_TIMEOUT_MS, default = 10_000)]
    shutdown_timeout_ms: u64,
    /// Milliseconds a node starting waits for Redis to answer before it
    /// exits; 0: it waits for ever (it says so at once, then retries).
    #[setting(flag = "redis-start-timeout", value_name = "MS", env = IOCLUSTER_REDIS_START_TIMEOUT_MS, default = 0)]
    redis_start_timeout_ms: u64,
    /// Admit clients whose CONNECT auth is {userId, hash} matching a
    /// credential registered in Redis (by the frontend's admin API), without
    /// an app-node round trip.
    #[setting(flag = "users-auth", env = IOCLUSTER_USERS_AUTH, default = false)]
    users_auth: bool,
    /// Admit clients whose CONNECT auth is {token}: an HS256 JWT signed with
    /// this secret, at least 32 bytes (sub = user id, exp required).
    #[setting(flag = "jwt-secret", value_name = "SECRET", env = IOCLUSTER_JWT_SECRET, unset = "none")]
    jwt_secret: Secret,
    /// Refuse clients that present no valid credentials instead of letting
    /// the app-nodes decide.
    #[setting(flag = "require-auth", env = IOCLUSTER_REQUIRE_AUTH, default = false)]
    require_auth: bool,
}

impl RawConfig {
    /// Applies the defaults and checks every value.
    pub fn validate(self) -> Result<Config, ConfigError> {
        let settings = self.with_defaults();
        let node_id = match settings.node_id {
            Some(id) if iocluster_protocol::ids::is_valid_node_id(&id) => id,
            Some(id) => {
                return Err(ConfigError::Invalid(
                    "node_id",
                    format!("{id:?} must be 1 to 32 of [A-Za-z0-9_-]"),
                ));
            }
            None => random_node_id(),
        };
        let (redis, prefix) = redis_and_prefix(settings.redis, settings.prefix)?;
        let listen = settings.listen;
        socket_addr(&listen, "listen")?;
        let mut path = settings.path;
        if !path.starts_with('/') {
            return Err(ConfigError::Invalid("path", "must start with /".into()));
        }
        if !path.ends_with('/') {
            path.push('/');
        }
        if let Some(ops) = &settings.ops_listen {
            socket_addr(ops, "ops_listen")?;
        }
        let tls = match (settings.tls_cert, settings.tls_key) {
            (None, None) => None,
            (Some(cert), Some(key)) => Some(TlsFiles { cert, key }),
            _ => {
                return Err(ConfigError::Invalid(
                    "tls_cert",
                    "tls_cert and tls_key go together".into(),
                ));
            }
        };
        if let Some(secret) = &settings.jwt_secret
            && secret.0.len() < 32
        {
            return Err(ConfigError::Invalid(
                "jwt_secret",
                "must be at least 32 bytes".into(),
            ));
        }
        if settings.allow_eio3 && settings.parser == "msgpack" {
            return Err(ConfigError::Invalid(
                "allow_eio3",
                "socket.io-client 2.x has no msgpack parser: use parser = \"default\"".into(),
            ));
        }
        let on_cluster = iocluster_ops::parse_cluster(&redis).is_some();
        Ok(Config {
            keys: iocluster_ops::keys(&redis, &prefix),
            public_url: settings
                .public_url
                .unwrap_or_else(|| format!("http://{listen}")),
            node_id,
            redis,
            prefix,
            listen,
            path,
            ping_interval: millis(settings.ping_interval_ms, "ping_interval_ms")?,
            ping_timeout: millis(settings.ping_timeout_ms, "ping_timeout_ms")?,
            connect_timeout: millis(settings.connect_timeout_ms, "connect_timeout_ms")?,
            admission_timeout: millis(settings.admission_timeout_ms, "admission_timeout_ms")?,
            max_payload: positive(settings.max_payload, "max_payload")?,
            max_attachments: settings.max_attachments,
            parser: match settings.parser.as_str() {
                "default" => Parser::Default,
                "msgpack" => Parser::Msgpack,
                other => {
                    return Err(ConfigError::Invalid(
                        "parser",
                        format!("{other:?}: use default or msgpack"),
                    ));
                }
            },
            allow_eio3: settings.allow_eio3,
            outbox_capacity: positive(settings.outbox_capacity, "outbox_capacity")?,
            max_pending_events: positive(settings.max_pending_events, "max_pending_events")?,
            event_batch: positive(settings.event_batch, "event_batch")?,
            queue_partitions: match settings.queue_partitions {
                Some(n) if (1..=1024).contains(&n) => n as u16,
                Some(n) => {
                    return Err(ConfigError::Invalid(
                        "queue_partitions",
                        format!("{n}: use 1 to 1024"),
                    ));
                }
                None if on_cluster => 8,
                None => 1,
            },
            event_buffer: positive(settings.event_buffer, "event_buffer")?,
            lease: millis(settings.lease_ms, "lease_ms")?,
            cors_origins: validate_origins(settings.cors_origins)?,
            cors_headers: validate_headers(settings.cors_headers, "cors_headers")?,
            websocket_origin_check: settings.websocket_origin_check,
            listen_backlog: positive(settings.listen_backlog as usize, "listen_backlog")? as u32,
            handshake_drop_headers: validate_headers(
                settings.handshake_drop_headers,
                "handshake_drop_headers",
            )?
            .into_iter()
            .map(|name| name.to_ascii_lowercase())
            .collect(),
            redeliver_after: millis(settings.redeliver_after_ms, "redeliver_after_ms")?,
            namespace_memory: Duration::from_millis(settings.namespace_memory_ms),
            max_connections: positive(settings.max_connections, "max_connections")?,
            max_unjoined_per_address: settings.max_unjoined_per_address,
            max_unjoined: positive(settings.max_unjoined, "max_unjoined")?,
            trusted_proxies: settings
                .trusted_proxies
                .iter()
                .map(|address| {
                    address.parse().map_err(|_| {
                        ConfigError::Invalid(
                            "trusted_proxies",
                            format!("{address:?} is not an IP address"),
                        )
                    })
                })
                .collect::<Result<_, _>>()?,
            worker_threads: settings
                .worker_threads
                .map(|threads| positive(threads, "worker_threads"))
                .transpose()?,
            max_packets_per_second: positive(
                settings.max_packets_per_second,
                "max_packets_per_second",
            )?,
            ops_listen: settings.ops_listen,
            tls,
            shutdown_timeout: millis(settings.shutdown_timeout_ms, "shutdown_timeout_ms")?,
            redis_start_timeout: (settings.redis_start_timeout_ms > 0)
                .then(|| std::time::Duration::from_millis(settings.redis_start_timeout_ms)),
            users_auth: settings.users_auth,
            jwt_secret: settings.jwt_secret,
            require_auth: settings.require_auth,
        })
    }
}

/// The Redis URL used when none is given.
pub use iocluster_ops::DEFAULT_REDIS;

/// The settings an io-node runs with. Each field's default and details are
/// on the [`RawConfig`] field it comes from.
#[derive(Debug, Clone)]
pub struct Config {
    /// This node's id, the prefix of every session id it issues
    /// ([`RawConfig::node_id`]).
    pub node_id: String,
    /// [`RawConfig::redis`].
    pub redis: String,
    /// Prefix of every Redis key and channel ([`RawConfig::prefix`]), as
    /// given.
    pub prefix: String,
    /// The names of keys and channels: under the prefix, on a Redis
    /// Cluster as a hash tag, with sharded room channels.
    pub keys: iocluster_protocol::keys::Keys,
    /// Client listener address ([`RawConfig::listen`]).
    pub listen: String,
    /// The URL browsers use to reach this node ([`RawConfig::public_url`]).
    pub public_url: String,
    /// The Engine.IO path, ending in `/` ([`RawConfig::path`]).
    pub path: String,
    /// How often the server pings a client ([`RawConfig::ping_interval_ms`]).
    pub ping_interval: Duration,
    /// How long a client has to answer a ping ([`RawConfig::ping_timeout_ms`]).
    pub ping_timeout: Duration,
    /// How long a client has to connect to a namespace
    /// ([`RawConfig::connect_timeout_ms`]).
    pub connect_timeout: Duration,
    /// How long an app-node has to accept or reject a connection
    /// ([`RawConfig::admission_timeout_ms`]).
    pub admission_timeout: Duration,
    /// Largest Engine.IO packet or polling body accepted, in bytes
    /// ([`RawConfig::max_payload`]).
    pub max_payload: usize,
    /// Most binary attachments of one packet ([`RawConfig::max_attachments`]).
    pub max_attachments: usize,
    /// Serve Engine.IO v3 clients too ([`RawConfig::allow_eio3`]).
    pub allow_eio3: bool,
    /// The Socket.IO parser clients use ([`RawConfig::parser`]).
    pub parser: Parser,
    /// Frames queued for one client before it is disconnected as too slow
    /// ([`RawConfig::outbox_capacity`]).
    pub outbox_capacity: usize,
    /// Client events one socket may have waiting before the node stops
    /// reading from its client ([`RawConfig::max_pending_events`]).
    pub max_pending_events: usize,
    /// Most `message` events of one socket in one queue item
    /// ([`RawConfig::event_batch`]).
    pub event_batch: usize,
    /// Partitions of the event queue ([`RawConfig::queue_partitions`]).
    pub queue_partitions: u16,
    /// Events waiting to be written to Redis before clients are refused
    /// ([`RawConfig::event_buffer`]).
    pub event_buffer: usize,
    /// How long this node's registry entry lives without a heartbeat
    /// ([`RawConfig::lease_ms`]).
    pub lease: Duration,
    /// Origins whose pages may use this node; `*`: any, without
    /// credentials ([`RawConfig::cors_origins`]).
    pub cors_origins: Vec<String>,
    /// Request headers allowed from those pages ([`RawConfig::cors_headers`]).
    pub cors_headers: Vec<String>,
    /// Headers left out of the handshake, lower case
    /// ([`RawConfig::handshake_drop_headers`]).
    pub handshake_drop_headers: Vec<String>,
    /// Check the origin of WebSocket upgrades too
    /// ([`RawConfig::websocket_origin_check`]).
    pub websocket_origin_check: bool,
    /// The client listener's backlog ([`RawConfig::listen_backlog`]).
    pub listen_backlog: u32,
    /// How long an event may wait for its `done` before it is pushed again
    /// ([`RawConfig::redeliver_after_ms`]).
    pub redeliver_after: Duration,
    /// How long a namespace stays served after its last app-node's lease
    /// ([`RawConfig::namespace_memory_ms`]).
    pub namespace_memory: Duration,
    /// Most Engine.IO sessions this node holds
    /// ([`RawConfig::max_connections`]).
    pub max_connections: usize,
    /// Most sessions not yet joined per client address, 0: no limit
    /// ([`RawConfig::max_unjoined_per_address`]).
    pub max_unjoined_per_address: usize,
    /// Most sessions not yet joined ([`RawConfig::max_unjoined`]).
    pub max_unjoined: usize,
    /// Proxies whose `X-Forwarded-For` is believed
    /// ([`RawConfig::trusted_proxies`]).
    pub trusted_proxies: Vec<std::net::IpAddr>,
    /// Threads of the node's async runtime; `None`: tokio's default
    /// ([`RawConfig::worker_threads`]).
    pub worker_threads: Option<usize>,
    /// Packets per second one connection may send
    /// ([`RawConfig::max_packets_per_second`]).
    pub max_packets_per_second: u32,
    /// Address of the operations listener (`/health`, `/ready`, `/metrics`)
    /// ([`RawConfig::ops_listen`]).
    pub ops_listen: Option<String>,
    /// Certificate chain and private key (PEM) to serve clients over TLS
    /// ([`RawConfig::tls_cert`], [`RawConfig::tls_key`]).
    pub tls: Option<TlsFiles>,
    /// On SIGTERM, how long the node waits for its clients to close and
    /// their disconnect events to reach Redis
    /// ([`RawConfig::shutdown_timeout_ms`]).
    pub shutdown_timeout: Duration,
    /// How long a starting node waits for Redis, `None`: for ever
    /// ([`RawConfig::redis_start_timeout_ms`]).
    pub redis_start_timeout: Option<std::time::Duration>,
    /// Admit clients by a credential registered in Redis
    /// ([`RawConfig::users_auth`]).
    pub users_auth: bool,
    /// Admit clients by an HS256 JWT signed with this secret
    /// ([`RawConfig::jwt_secret`]).
    pub jwt_secret: Option<Secret>,
    /// Refuse clients that present no credentials
    /// ([`RawConfig::require_auth`]).
    pub require_auth: bool,
}

/// Each entry `*` or an origin as browsers send it: scheme://host[:port],
/// nothing after.
fn validate_origins(origins: Vec<String>) -> Result<Vec<String>, ConfigError> {
    for origin in &origins {
        if origin == "*" {
            continue;
        }
        let parsed = url::Url::parse(origin).ok();
        let serialized = parsed.map(|url| url.origin().ascii_serialization());
        if serialized.as_deref() != Some(origin.as_str()) {
            return Err(ConfigError::Invalid(
                "cors_origins",
                format!(
                    "{origin:?} is not an origin like https://app.example or http://127.0.0.1:8080"
                ),
            ));
        }
    }
    Ok(origins)
}

fn validate_headers(headers: Vec<String>, key: &'static str) -> Result<Vec<String>, ConfigError> {
    for name in &headers {
        if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
            return Err(ConfigError::Invalid(
                key,
                format!("{name:?} is not a header name"),
            ));
        }
    }
    Ok(headers)
}

/// PEM files for TLS on the client listener.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

pub use iocluster_ops::{ConfigError, Secret};

fn random_node_id() -> String {
    use rand::Rng;
    let mut rng = rand::rng();
    (0..8)
        .map(|_| char::from(ALPHABET[rng.random_range(0..ALPHABET.len())]))
        .collect()
}

/// The characters of generated ids: URL-safe and valid in node ids.
pub(crate) const ALPHABET: &[u8] =
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// The Socket.IO parser an io-node's clients use ([`RawConfig::parser`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parser {
    /// JSON text packets, binary values as attachments.
    Default,
    /// socket.io-msgpack-parser: one MessagePack binary message a packet.
    Msgpack,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sample_config_is_valid() {
        let sample: RawConfig = toml::from_str(include_str!("../../../config/io-node.toml"))
            .expect("config/io-node.toml parses");
        sample.validate().expect("config/io-node.toml is valid");
    }

    #[test]
    fn batching_and_runtime_threads() {
        let config = RawConfig::default().validate().unwrap();
        assert_eq!(config.event_batch, 32);
        assert_eq!(config.worker_threads, None, "tokio's default");
        let set = RawConfig {
            event_batch: Some(1),
            worker_threads: Some(2),
            ..RawConfig::default()
        };
        let config = set.validate().unwrap();
        assert_eq!((config.event_batch, config.worker_threads), (1, Some(2)));
        for bad in [
            RawConfig {
                event_batch: Some(0),
                ..RawConfig::default()
            },
            RawConfig {
                worker_threads: Some(0),
                ..RawConfig::default()
            },
        ] {
            assert!(bad.validate().is_err());
        }
    }

    #[test]
    fn defaults_and_validation() {
        let config = RawConfig::default().validate().unwrap();
        assert_eq!(config.path, "/socket.io/");
        assert_eq!(config.ping_interval, Duration::from_secs(25));
        assert!(iocluster_protocol::ids::is_valid_node_id(&config.node_id));
        let bad = RawConfig {
            node_id: Some("a.b".into()),
            ..RawConfig::default()
        };
        assert!(bad.validate().is_err());
        let bad = RawConfig {
            ping_timeout_ms: Some(0),
            ..RawConfig::default()
        };
        assert!(bad.validate().is_err());
        let bad = RawConfig {
            listen: Some("nowhere".into()),
            ..RawConfig::default()
        };
        assert!(bad.validate().is_err());
        let file: RawConfig = toml::from_str("node_id = \"io1\"\nping_interval_ms = 100").unwrap();
        let merged = RawConfig {
            ping_interval_ms: Some(5),
            ..RawConfig::default()
        }
        .or(file);
        assert_eq!(merged.ping_interval_ms, Some(5));
        assert_eq!(merged.node_id.as_deref(), Some("io1"));
        assert!(toml::from_str::<RawConfig>("bogus = 1").is_err());
    }

    #[test]
    fn every_setting_has_an_env_var_named_after_its_key() {
        iocluster_ops::settings::check_env_names(RawConfig::SETTINGS).unwrap();
        assert_eq!(RawConfig::SETTINGS.len(), 41);
    }

    #[test]
    fn flag_over_env_over_file_over_default() {
        use clap::{Args, FromArgMatches};
        let command = RawConfig::augment_args(clap::Command::new("io-node"));
        let matches = command
            .try_get_matches_from(["io-node", "--lease", "1", "--users-auth"])
            .unwrap();
        let flags = RawConfig::from_arg_matches(&matches).unwrap();
        let env = [
            ("IOCLUSTER_LEASE_MS", "2"),
            ("IOCLUSTER_EVENT_BATCH", "2"),
            ("IOCLUSTER_CORS_ORIGINS", "https://env.example"),
        ];
        let file: RawConfig = toml::from_str(
            "lease_ms = 3\nevent_batch = 3\nmax_attachments = 3\nusers_auth = false",
        )
        .unwrap();
        let config = flags
            .or(RawConfig::from_env(&env[..]).unwrap())
            .or(file)
            .validate()
            .unwrap();
        assert_eq!(config.lease, Duration::from_millis(1), "flag");
        assert!(config.users_auth, "flag");
        assert_eq!(config.event_batch, 2, "environment");
        assert_eq!(config.cors_origins, ["https://env.example"], "environment");
        assert_eq!(config.max_attachments, 3, "file");
        assert_eq!(config.outbox_capacity, 1024, "default");
        assert!(!config.require_auth, "default");
    }

    #[test]
    fn bad_values_are_refused_by_name() {
        let error = |raw: RawConfig| raw.validate().unwrap_err().to_string();
        let zero = RawConfig {
            redeliver_after_ms: Some(0),
            ..RawConfig::default()
        };
        assert_eq!(
            error(zero),
            "invalid redeliver_after_ms: must be greater than 0"
        );
        let short = RawConfig {
            jwt_secret: Some(Secret("short".into())),
            ..RawConfig::default()
        };
        assert!(error(short).starts_with("invalid jwt_secret"));
        let half = RawConfig {
            tls_key: Some("key.pem".into()),
            ..RawConfig::default()
        };
        assert!(error(half).starts_with("invalid tls_cert"));
        let env = [("IOCLUSTER_MAX_CONNECTIONS", "many")];
        let env_error = RawConfig::from_env(&env[..]).unwrap_err().to_string();
        assert!(
            env_error.starts_with("invalid IOCLUSTER_MAX_CONNECTIONS"),
            "{env_error}"
        );
    }
}
