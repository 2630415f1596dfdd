//! io-node settings: the raw form read from TOML and flags, and the validated
//! [`Config`] the node runs with. Validation happens before anything binds, so a
//! bad setting stops the process with a clear message.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// Settings as written in a TOML file or given as flags; every field optional.
/// Defaults are documented on [`Config`].
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    pub node_id: Option<String>,
    pub redis: Option<String>,
    pub prefix: Option<String>,
    pub listen: Option<String>,
    pub public_url: Option<String>,
    pub path: Option<String>,
    pub ping_interval_ms: Option<u64>,
    pub ping_timeout_ms: Option<u64>,
    pub connect_timeout_ms: Option<u64>,
    pub admission_timeout_ms: Option<u64>,
    pub max_payload: Option<usize>,
    pub max_attachments: Option<usize>,
    pub outbox_capacity: Option<usize>,
    pub max_pending_events: Option<usize>,
    pub event_batch: Option<usize>,
    pub event_buffer: Option<usize>,
    pub lease_ms: Option<u64>,
    pub cors_origins: Option<Vec<String>>,
    pub redeliver_after_ms: Option<u64>,
    pub max_connections: Option<usize>,
    pub worker_threads: Option<usize>,
    pub max_packets_per_second: Option<u32>,
    pub ops_listen: Option<String>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub shutdown_timeout_ms: Option<u64>,
    pub users_auth: Option<bool>,
    pub jwt_secret: Option<Secret>,
    pub require_auth: Option<bool>,
}

impl RawConfig {
    /// Reads a TOML file.
    pub fn from_file(path: &Path) -> Result<RawConfig, ConfigError> {
        iocluster_ops::read_toml(path)
    }

    /// Fills every field `self` leaves empty from `other`.
    pub fn or(self, other: RawConfig) -> RawConfig {
        RawConfig {
            node_id: self.node_id.or(other.node_id),
            redis: self.redis.or(other.redis),
            prefix: self.prefix.or(other.prefix),
            listen: self.listen.or(other.listen),
            public_url: self.public_url.or(other.public_url),
            path: self.path.or(other.path),
            ping_interval_ms: self.ping_interval_ms.or(other.ping_interval_ms),
            ping_timeout_ms: self.ping_timeout_ms.or(other.ping_timeout_ms),
            connect_timeout_ms: self.connect_timeout_ms.or(other.connect_timeout_ms),
            admission_timeout_ms: self.admission_timeout_ms.or(other.admission_timeout_ms),
            max_payload: self.max_payload.or(other.max_payload),
            max_attachments: self.max_attachments.or(other.max_attachments),
            outbox_capacity: self.outbox_capacity.or(other.outbox_capacity),
            max_pending_events: self.max_pending_events.or(other.max_pending_events),
            event_batch: self.event_batch.or(other.event_batch),
            event_buffer: self.event_buffer.or(other.event_buffer),
            lease_ms: self.lease_ms.or(other.lease_ms),
            cors_origins: self.cors_origins.or(other.cors_origins),
            redeliver_after_ms: self.redeliver_after_ms.or(other.redeliver_after_ms),
            max_connections: self.max_connections.or(other.max_connections),
            worker_threads: self.worker_threads.or(other.worker_threads),
            max_packets_per_second: self.max_packets_per_second.or(other.max_packets_per_second),
            ops_listen: self.ops_listen.or(other.ops_listen),
            tls_cert: self.tls_cert.or(other.tls_cert),
            tls_key: self.tls_key.or(other.tls_key),
            shutdown_timeout_ms: self.shutdown_timeout_ms.or(other.shutdown_timeout_ms),
            users_auth: self.users_auth.or(other.users_auth),
            jwt_secret: self.jwt_secret.or(other.jwt_secret),
            require_auth: self.require_auth.or(other.require_auth),
        }
    }

    /// Checks every value and applies defaults.
    pub fn validate(self) -> Result<Config, ConfigError> {
        let node_id = match self.node_id {
            Some(id) if iocluster_protocol::ids::is_valid_node_id(&id) => id,
            Some(id) => {
                return Err(ConfigError::Invalid(
                    "node_id",
                    format!("{id:?} must be 1 to 32 of [A-Za-z0-9_-]"),
                ));
            }
            None => random_node_id(),
        };
        let (redis, prefix) = iocluster_ops::redis_and_prefix(self.redis, self.prefix)?;
        let listen = self.listen.unwrap_or_else(|| "127.0.0.1:3000".to_owned());
        listen
            .parse::<std::net::SocketAddr>()
            .map_err(|error| ConfigError::Invalid("listen", format!("{listen:?}: {error}")))?;
        let mut path = self.path.unwrap_or_else(|| "/socket.io/".to_owned());
        if !path.starts_with('/') {
            return Err(ConfigError::Invalid("path", "must start with /".into()));
        }
        if !path.ends_with('/') {
            path.push('/');
        }
        let ms =
            |value: Option<u64>, default: u64, name: &'static str| match value.unwrap_or(default) {
                0 => Err(ConfigError::Invalid(name, "must be greater than 0".into())),
                ms => Ok(Duration::from_millis(ms)),
            };
        let positive = |value: Option<usize>, default: usize, name: &'static str| match value
            .unwrap_or(default)
        {
            0 => Err(ConfigError::Invalid(name, "must be greater than 0".into())),
            n => Ok(n),
        };
        if let Some(ops) = &self.ops_listen {
            ops.parse::<std::net::SocketAddr>()
                .map_err(|error| ConfigError::Invalid("ops_listen", format!("{ops:?}: {error}")))?;
        }
        let tls = match (self.tls_cert, self.tls_key) {
            (None, None) => None,
            (Some(cert), Some(key)) => Some(TlsFiles { cert, key }),
            _ => {
                return Err(ConfigError::Invalid(
                    "tls_cert",
                    "tls_cert and tls_key go together".into(),
                ));
            }
        };
        let config = Config {
            public_url: self
                .public_url
                .unwrap_or_else(|| format!("http://{listen}")),
            node_id,
            redis,
            prefix,
            listen,
            path,
            ping_interval: ms(self.ping_interval_ms, 25_000, "ping_interval_ms")?,
            ping_timeout: ms(self.ping_timeout_ms, 20_000, "ping_timeout_ms")?,
            connect_timeout: ms(self.connect_timeout_ms, 45_000, "connect_timeout_ms")?,
            admission_timeout: ms(self.admission_timeout_ms, 10_000, "admission_timeout_ms")?,
            max_payload: positive(self.max_payload, 1_000_000, "max_payload")?,
            max_attachments: self.max_attachments.unwrap_or(10),
            outbox_capacity: positive(self.outbox_capacity, 1024, "outbox_capacity")?,
            max_pending_events: positive(self.max_pending_events, 256, "max_pending_events")?,
            event_batch: positive(self.event_batch, 32, "event_batch")?,
            event_buffer: positive(self.event_buffer, 100_000, "event_buffer")?,
            lease: ms(self.lease_ms, 5_000, "lease_ms")?,
            cors_origins: self.cors_origins.unwrap_or_else(|| vec!["*".to_owned()]),
            redeliver_after: ms(self.redeliver_after_ms, 60_000, "redeliver_after_ms")?,
            max_connections: positive(self.max_connections, 100_000, "max_connections")?,
            worker_threads: self
                .worker_threads
                .map(|threads| positive(Some(threads), 1, "worker_threads"))
                .transpose()?,
            max_packets_per_second: match self.max_packets_per_second.unwrap_or(2_000) {
                0 => {
                    return Err(ConfigError::Invalid(
                        "max_packets_per_second",
                        "must be greater than 0".into(),
                    ));
                }
                n => n,
            },
            ops_listen: self.ops_listen,
            tls,
            shutdown_timeout: ms(self.shutdown_timeout_ms, 10_000, "shutdown_timeout_ms")?,
            users_auth: self.users_auth.unwrap_or(false),
            jwt_secret: match self.jwt_secret {
                Some(secret) if secret.0.len() < 32 => {
                    return Err(ConfigError::Invalid(
                        "jwt_secret",
                        "must be at least 32 bytes".into(),
                    ));
                }
                secret => secret,
            },
            require_auth: self.require_auth.unwrap_or(false),
        };
        Ok(config)
    }
}

/// The Redis URL used when none is given.
pub use iocluster_ops::DEFAULT_REDIS;

/// The settings an io-node runs with.
#[derive(Debug, Clone)]
pub struct Config {
    /// This node's id, the prefix of every session id it issues. Default: random.
    pub node_id: String,
    /// Default `redis://127.0.0.1:6379`.
    pub redis: String,
    /// Prefix of every Redis key and channel. Default `iocluster`.
    pub prefix: String,
    /// Client listener address. Default `127.0.0.1:3000`.
    pub listen: String,
    /// The URL browsers use to reach this node, published in the registry.
    /// Default `http://<listen>`.
    pub public_url: String,
    /// The Engine.IO path. Default `/socket.io/`.
    pub path: String,
    /// How often the server pings a client. Default 25 s.
    pub ping_interval: Duration,
    /// How long a client has to answer a ping. Default 20 s.
    pub ping_timeout: Duration,
    /// How long a client has, after the Engine.IO handshake, to connect to a
    /// namespace. Default 45 s.
    pub connect_timeout: Duration,
    /// How long an app-node has to accept or reject a connection before the
    /// client gets CONNECT_ERROR. Default 10 s.
    pub admission_timeout: Duration,
    /// Largest Engine.IO packet or polling body accepted, in bytes. Default 1 MB.
    pub max_payload: usize,
    /// Most binary attachments one Socket.IO packet may carry. Default 10.
    pub max_attachments: usize,
    /// Frames queued for one client before it counts as too slow and is
    /// disconnected. Default 1024.
    pub outbox_capacity: usize,
    /// Client events one socket may have waiting for their turn (its events are
    /// handled in order, one queue item at a time) before it is disconnected.
    /// Default 256.
    pub max_pending_events: usize,
    /// Most `message` events of one socket sent to an app-node as one queue
    /// item: events that arrived while the socket's previous item was being
    /// handled go together, so a fast client is not held to one event per
    /// round trip through Redis and an app-node. 1 sends every event alone.
    /// Default 32.
    pub event_batch: usize,
    /// Events waiting to be written to Redis before clients are refused. Default
    /// 100 000.
    pub event_buffer: usize,
    /// How long this node's registry entry lives without a heartbeat. Default 5 s.
    pub lease: Duration,
    /// Origins allowed to use the polling transport across origins; `*` allows
    /// any. Default `["*"]`.
    pub cors_origins: Vec<String>,
    /// An event with an app-node gets pushed again when its `done` has not
    /// come after this long (it was lost with Redis, or the `done` was
    /// published while this node's subscription was down). Keep it above the
    /// app-nodes' handler timeout. Default 60 s.
    pub redeliver_after: Duration,
    /// Most Engine.IO sessions this node holds; past it, handshakes get
    /// HTTP 503. Default 100 000.
    pub max_connections: usize,
    /// Threads of the node's async runtime. Default: tokio's (the
    /// `TOKIO_WORKER_THREADS` environment variable, else one per CPU). On a
    /// machine shared by several nodes, fewer threads per process mean
    /// fewer sleeps and wake-ups between them (docs/BENCHMARKS.md).
    pub worker_threads: Option<usize>,
    /// Packets per second one connection may send (burst: as many); a
    /// faster client is slowed down (its packets wait, so TCP pushes back).
    /// Default 2000.
    pub max_packets_per_second: u32,
    /// Address of the operations listener (`/health`, `/ready`, `/metrics`).
    /// Default: none.
    pub ops_listen: Option<String>,
    /// Certificate chain and private key (PEM) to serve clients over TLS.
    pub tls: Option<TlsFiles>,
    /// On SIGTERM, how long the node waits for its clients to close and
    /// their disconnect events to reach Redis. Default 10 s.
    pub shutdown_timeout: Duration,
    /// Admit clients whose CONNECT auth is `{userId, hash}` matching a
    /// credential registered in Redis (by the frontend's admin API), without
    /// an app-node round trip. Default off.
    pub users_auth: bool,
    /// Admit clients whose CONNECT auth is `{token}`, an HS256 JWT signed
    /// with this secret (`sub` = user id, `exp` required). Default: none.
    pub jwt_secret: Option<Secret>,
    /// Refuse clients that present no credentials (instead of letting the
    /// app-nodes decide). Default off.
    pub require_auth: bool,
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
}
