//! App-node settings, the flags every app-node binary shares, and logging.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

/// The settings an app-node runs with.
#[derive(Debug, Clone)]
pub struct AppConfig {
    /// Default `redis://127.0.0.1:6379`.
    pub redis: String,
    /// Prefix of every Redis key and channel; must match the io-nodes'.
    /// Default `iocluster`.
    pub prefix: String,
    /// This app-node's id. Default: random.
    pub app_id: String,
    /// How long this app-node counts as alive without a heartbeat; after it,
    /// other app-nodes hand its unfinished events to someone else. Default 5 s.
    pub lease: Duration,
    /// Events handled at once. Default 256.
    pub concurrency: usize,
    /// How long one handler may run before it is abandoned (its event is
    /// reported done). Default 30 s.
    pub handler_timeout: Duration,
    /// How long `join` waits for the io-node's confirmation. Default 5 s.
    pub join_timeout: Duration,
    /// How long shutdown waits for running handlers. Default 10 s.
    pub shutdown_grace: Duration,
    /// Address of the operations listener (`/health`, `/ready`, `/metrics`).
    /// Default: none.
    pub ops_listen: Option<String>,
}

impl Default for AppConfig {
    fn default() -> AppConfig {
        AppConfig {
            redis: iocluster_ops::DEFAULT_REDIS.to_owned(),
            prefix: iocluster_ops::DEFAULT_PREFIX.to_owned(),
            app_id: random_id(),
            lease: Duration::from_secs(5),
            concurrency: 256,
            handler_timeout: Duration::from_secs(30),
            join_timeout: Duration::from_secs(5),
            shutdown_grace: Duration::from_secs(10),
            ops_listen: None,
        }
    }
}

/// Settings as written in a TOML file; every field optional.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAppConfig {
    pub redis: Option<String>,
    pub prefix: Option<String>,
    pub app_id: Option<String>,
    pub lease_ms: Option<u64>,
    pub concurrency: Option<usize>,
    pub handler_timeout_ms: Option<u64>,
    pub join_timeout_ms: Option<u64>,
    pub shutdown_grace_ms: Option<u64>,
    pub ops_listen: Option<String>,
}

pub use iocluster_ops::ConfigError;

impl RawAppConfig {
    pub fn from_file(path: &std::path::Path) -> Result<RawAppConfig, ConfigError> {
        iocluster_ops::read_toml(path)
    }

    /// Checks every value and applies defaults.
    pub fn validate(self) -> Result<AppConfig, ConfigError> {
        let defaults = AppConfig::default();
        let app_id = self.app_id.unwrap_or(defaults.app_id);
        if !iocluster_protocol::ids::is_valid_node_id(&app_id) {
            return Err(ConfigError::Invalid(
                "app_id",
                format!("{app_id:?} must be 1 to 32 of [A-Za-z0-9_-]"),
            ));
        }
        let (redis, prefix) = iocluster_ops::redis_and_prefix(self.redis, self.prefix)?;
        let ms = |value: Option<u64>, default: Duration, name: &'static str| match value {
            Some(0) => Err(ConfigError::Invalid(name, "must be greater than 0".into())),
            Some(ms) => Ok(Duration::from_millis(ms)),
            None => Ok(default),
        };
        let concurrency = match self.concurrency {
            Some(0) => {
                return Err(ConfigError::Invalid(
                    "concurrency",
                    "must be greater than 0".into(),
                ));
            }
            Some(n) => n,
            None => defaults.concurrency,
        };
        Ok(AppConfig {
            redis,
            prefix,
            app_id,
            lease: ms(self.lease_ms, defaults.lease, "lease_ms")?,
            concurrency,
            handler_timeout: ms(
                self.handler_timeout_ms,
                defaults.handler_timeout,
                "handler_timeout_ms",
            )?,
            join_timeout: ms(
                self.join_timeout_ms,
                defaults.join_timeout,
                "join_timeout_ms",
            )?,
            shutdown_grace: ms(
                self.shutdown_grace_ms,
                defaults.shutdown_grace,
                "shutdown_grace_ms",
            )?,
            ops_listen: match self.ops_listen {
                Some(addr) => {
                    addr.parse::<std::net::SocketAddr>().map_err(|error| {
                        ConfigError::Invalid("ops_listen", format!("{addr:?}: {error}"))
                    })?;
                    Some(addr)
                }
                None => None,
            },
        })
    }
}

/// The flags every app-node binary takes. Flatten it into an application's
/// own `clap` parser, or use it as is.
#[derive(Debug, Clone, clap::Args)]
pub struct AppArgs {
    /// Redis URL (default redis://127.0.0.1:6379).
    #[arg(long, env = "IOCLUSTER_REDIS_URL", value_name = "URL")]
    pub redis: Option<String>,
    /// Prefix of every Redis key and channel; must match the io-nodes'
    /// (default iocluster).
    #[arg(long, env = "IOCLUSTER_PREFIX", value_name = "PREFIX")]
    pub prefix: Option<String>,
    /// TOML config file (see config/app-node.toml); flags override it.
    #[arg(long, env = "IOCLUSTER_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// This app-node's id, 1 to 32 of [A-Za-z0-9_-] (default: random).
    #[arg(long, env = "IOCLUSTER_APP_ID", value_name = "ID")]
    pub app_id: Option<String>,
    /// Milliseconds this app-node counts as alive without a heartbeat
    /// (default 5000).
    #[arg(long, value_name = "MS")]
    pub lease: Option<u64>,
    /// Events handled at once (default 256).
    #[arg(long, value_name = "N")]
    pub concurrency: Option<usize>,
    /// Operations listener: /health, /ready and /metrics (Prometheus)
    /// (default: none).
    #[arg(long, env = "IOCLUSTER_OPS_LISTEN", value_name = "ADDR")]
    pub ops_listen: Option<String>,
    #[command(flatten)]
    pub log: iocluster_ops::LogArgs,
}

pub use iocluster_ops::LogFormat;

impl AppArgs {
    /// Reads the config file, if any, and lets the flags override it.
    pub fn config(&self) -> Result<AppConfig, ConfigError> {
        let file = match &self.config {
            Some(path) => RawAppConfig::from_file(path)?,
            None => RawAppConfig::default(),
        };
        RawAppConfig {
            redis: self.redis.clone().or(file.redis),
            prefix: self.prefix.clone().or(file.prefix),
            app_id: self.app_id.clone().or(file.app_id),
            lease_ms: self.lease.or(file.lease_ms),
            concurrency: self.concurrency.or(file.concurrency),
            ops_listen: self.ops_listen.clone().or(file.ops_listen),
            ..file
        }
        .validate()
    }

    /// Installs the tracing subscriber (`RUST_LOG` filters, default `info`).
    pub fn init_tracing(&self) {
        self.log.init();
    }
}

fn random_id() -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    (0..10)
        .map(|_| char::from(ALPHABET[rand::random_range(0..ALPHABET.len())]))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sample_config_is_valid() {
        let sample: RawAppConfig = toml::from_str(include_str!("../../../config/app-node.toml"))
            .expect("config/app-node.toml parses");
        sample.validate().expect("config/app-node.toml is valid");
    }

    #[test]
    fn validation() {
        assert!(RawAppConfig::default().validate().is_ok());
        assert!(
            RawAppConfig {
                app_id: Some("a b".into()),
                ..Default::default()
            }
            .validate()
            .is_err()
        );
        assert!(
            RawAppConfig {
                concurrency: Some(0),
                ..Default::default()
            }
            .validate()
            .is_err()
        );
        assert!(
            RawAppConfig {
                lease_ms: Some(0),
                ..Default::default()
            }
            .validate()
            .is_err()
        );
    }
}
