//! App-node settings, each one defined once below (its TOML key, flag,
//! environment variable, default and doc); the flags every app-node binary
//! shares ([`AppArgs`]), and logging.

use std::path::PathBuf;
use std::time::Duration;

use iocluster_ops::settings::{Env, ProcessEnv, millis, positive, redis_and_prefix, socket_addr};

/// The settings an app-node runs with. Each field's default and details are
/// on the [`RawAppConfig`] field it comes from.
#[derive(Debug, Clone)]
pub struct AppConfig {
    /// [`RawAppConfig::redis`].
    pub redis: String,
    /// Prefix of every Redis key and channel; must match the io-nodes'
    /// ([`RawAppConfig::prefix`]).
    pub prefix: String,
    /// This app-node's id ([`RawAppConfig::app_id`]).
    pub app_id: String,
    /// How long this app-node counts as alive without a heartbeat; after it,
    /// other app-nodes hand its unfinished events to someone else
    /// ([`RawAppConfig::lease_ms`]).
    pub lease: Duration,
    /// Events handled at once ([`RawAppConfig::concurrency`]).
    pub concurrency: usize,
    /// How long one handler may run before it is abandoned (its event is
    /// reported done) ([`RawAppConfig::handler_timeout_ms`]).
    pub handler_timeout: Duration,
    /// How long `join` waits for the io-node's confirmation
    /// ([`RawAppConfig::join_timeout_ms`]).
    pub join_timeout: Duration,
    /// How long shutdown waits for running handlers
    /// ([`RawAppConfig::shutdown_grace_ms`]).
    pub shutdown_grace: Duration,
    /// How long a starting app-node waits for Redis, `None`: for ever
    /// ([`RawAppConfig::redis_start_timeout_ms`]).
    pub redis_start_timeout: Option<Duration>,
    /// Address of the operations listener (`/health`, `/ready`, `/metrics`)
    /// ([`RawAppConfig::ops_listen`]).
    pub ops_listen: Option<String>,
    /// Connection state recovery window for namespaces that do not set
    /// their own; zero: off ([`RawAppConfig::recovery_ms`]).
    pub recovery: Duration,
    /// Emits kept per namespace log ([`RawAppConfig::recovery_packets`]).
    pub recovery_packets: u64,
    /// Decoded handshakes kept per thread ([`RawAppConfig::handshake_cache`]).
    pub handshake_cache: usize,
}

/// Every setting's default, with a random `app_id`.
impl Default for AppConfig {
    fn default() -> AppConfig {
        RawAppConfig::default()
            .validate()
            .expect("the defaults are valid (tested)")
    }
}

iocluster_ops::settings! {
    /// App-node settings as given by flags, the environment (`IOCLUSTER_*`)
    /// or a TOML file; every field optional. [`RawAppConfig::load`] merges
    /// them, flag over environment over file; [`RawAppConfig::validate`]
    /// applies the defaults and checks the values.
    pub struct RawAppConfig;
    /// App-node settings with their defaults applied, before validation.
    pub struct Settings;

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
    /// Prefix of every Redis key and channel; must match the io-nodes'.
    #[setting(flag = "prefix", value_name = "PREFIX", env = IOCLUSTER_PREFIX, default = iocluster_ops::DEFAULT_PREFIX.into())]
    prefix: String,
    /// This app-node's id, 1 to 32 of [A-Za-z0-9_-].
    #[setting(flag = "app-id", value_name = "ID", env = IOCLUSTER_APP_ID, unset = "random")]
    app_id: String,
    /// Milliseconds this app-node counts as alive without renewing its
    /// lease; when it lapses, other app-nodes hand its unfinished events to
    /// the queue again.
    #[setting(flag = "lease", value_name = "MS", env = IOCLUSTER_LEASE_MS, default = 5_000)]
    lease_ms: u64,
    /// Events handled at once.
    #[setting(flag = "concurrency", value_name = "N", env = IOCLUSTER_CONCURRENCY, default = 256)]
    concurrency: usize,
    /// Milliseconds a handler may run before it is abandoned and its event
    /// reported done.
    #[setting(flag = "handler-timeout", value_name = "MS", env = IOCLUSTER_HANDLER_TIMEOUT_MS, default = 30_000)]
    handler_timeout_ms: u64,
    /// Milliseconds join() waits for the io-node's confirmation.
    #[setting(flag = "join-timeout", value_name = "MS", env = IOCLUSTER_JOIN_TIMEOUT_MS, default = 5_000)]
    join_timeout_ms: u64,
    /// Milliseconds shutdown waits for running handlers.
    #[setting(flag = "shutdown-grace", value_name = "MS", env = IOCLUSTER_SHUTDOWN_GRACE_MS, default = 10_000)]
    shutdown_grace_ms: u64,
    /// Milliseconds a node starting waits for Redis to answer before it
    /// exits; 0: it waits for ever (it says so at once, then retries).
    #[setting(flag = "redis-start-timeout", value_name = "MS", env = IOCLUSTER_REDIS_START_TIMEOUT_MS, default = 0)]
    redis_start_timeout_ms: u64,
    /// Connection state recovery in every namespace of this application
    /// (a namespace's `recovery()` overrides it): milliseconds a client
    /// that lost its connection may take to come back, to any io-node, and
    /// get the same socket, rooms, data and the emits it missed. 0: off (as
    /// in Socket.IO). With it on, clients get each emit's log offset as an
    /// extra last argument.
    #[setting(flag = "recovery", value_name = "MS", env = IOCLUSTER_RECOVERY_MS, default = 0)]
    recovery_ms: u64,
    /// Emits each namespace with recovery keeps in its log in Redis (about
    /// this many: trimmed in blocks); a client that missed more gets a new
    /// session.
    #[setting(flag = "recovery-packets", value_name = "N", env = IOCLUSTER_RECOVERY_PACKETS, default = 10_000)]
    recovery_packets: u64,
    /// Decoded client handshakes kept per runtime thread, so that a
    /// socket's events share one (its handshake is in every event); past
    /// it the cache starts over. What the app-node keeps for the clients it
    /// serves: its memory does not grow with them beyond this.
    #[setting(flag = "handshake-cache", value_name = "N", env = IOCLUSTER_HANDSHAKE_CACHE, default = 4_096)]
    handshake_cache: usize,
    /// Operations listener: /health, /ready and /metrics (Prometheus).
    #[setting(flag = "ops-listen", value_name = "ADDR", env = IOCLUSTER_OPS_LISTEN, unset = "none")]
    ops_listen: String,
}

pub use iocluster_ops::ConfigError;

impl RawAppConfig {
    /// Applies the defaults and checks every value.
    pub fn validate(self) -> Result<AppConfig, ConfigError> {
        let settings = self.with_defaults();
        let app_id = settings.app_id.unwrap_or_else(random_id);
        if !iocluster_protocol::ids::is_valid_node_id(&app_id) {
            return Err(ConfigError::Invalid(
                "app_id",
                format!("{app_id:?} must be 1 to 32 of [A-Za-z0-9_-]"),
            ));
        }
        let (redis, prefix) = redis_and_prefix(settings.redis, settings.prefix)?;
        if let Some(addr) = &settings.ops_listen {
            socket_addr(addr, "ops_listen")?;
        }
        Ok(AppConfig {
            redis,
            prefix,
            app_id,
            lease: millis(settings.lease_ms, "lease_ms")?,
            concurrency: positive(settings.concurrency, "concurrency")?,
            handler_timeout: millis(settings.handler_timeout_ms, "handler_timeout_ms")?,
            join_timeout: millis(settings.join_timeout_ms, "join_timeout_ms")?,
            shutdown_grace: millis(settings.shutdown_grace_ms, "shutdown_grace_ms")?,
            redis_start_timeout: (settings.redis_start_timeout_ms > 0)
                .then(|| Duration::from_millis(settings.redis_start_timeout_ms)),
            ops_listen: settings.ops_listen,
            recovery: Duration::from_millis(settings.recovery_ms),
            recovery_packets: positive(settings.recovery_packets as usize, "recovery_packets")?
                as u64,
            handshake_cache: settings.handshake_cache,
        })
    }
}

/// The flags every app-node binary takes: `--config` and every setting of
/// [`RawAppConfig`] (each also an `IOCLUSTER_*` environment variable), and
/// `--log-format`. Flatten it into an application's own `clap` parser, or
/// use it as is.
#[derive(Debug, Clone, clap::Args)]
pub struct AppArgs {
    /// TOML config file (see config/app-node.toml).
    #[arg(long, env = "IOCLUSTER_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    #[command(flatten)]
    pub settings: RawAppConfig,
    #[command(flatten)]
    pub log: iocluster_ops::LogArgs,
}

pub use iocluster_ops::LogFormat;

impl AppArgs {
    /// The settings: flags over environment over config file over defaults.
    pub fn config(&self) -> Result<AppConfig, ConfigError> {
        self.config_from(&ProcessEnv)
    }

    fn config_from(&self, env: &(impl Env + ?Sized)) -> Result<AppConfig, ConfigError> {
        self.settings
            .clone()
            .load(self.config.as_deref(), env)?
            .validate()
    }

    /// Installs the tracing subscriber (`RUST_LOG` filters, default `info`).
    pub fn init_tracing(&self) {
        self.log.init();
    }
}

pub(crate) fn random_id() -> String {
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
        let error = RawAppConfig {
            join_timeout_ms: Some(0),
            ..Default::default()
        }
        .validate()
        .unwrap_err()
        .to_string();
        assert_eq!(error, "invalid join_timeout_ms: must be greater than 0");
        let env = [("IOCLUSTER_CONCURRENCY", "lots")];
        let error = RawAppConfig::from_env(&env[..]).unwrap_err().to_string();
        assert!(
            error.starts_with("invalid IOCLUSTER_CONCURRENCY"),
            "{error}"
        );
    }

    #[test]
    fn defaults() {
        let config = AppConfig::default();
        assert_eq!(config.redis, iocluster_ops::DEFAULT_REDIS);
        assert_eq!(config.lease, Duration::from_secs(5));
        assert_eq!(config.concurrency, 256);
        assert_eq!(config.handler_timeout, Duration::from_secs(30));
        assert_eq!(config.join_timeout, Duration::from_secs(5));
        assert_eq!(config.shutdown_grace, Duration::from_secs(10));
        assert_eq!(config.ops_listen, None);
        assert_ne!(config.app_id, AppConfig::default().app_id, "random");
    }

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        app: AppArgs,
    }

    #[test]
    fn every_setting_has_an_env_var_named_after_its_key() {
        iocluster_ops::settings::check_env_names(RawAppConfig::SETTINGS).unwrap();
        assert_eq!(RawAppConfig::SETTINGS.len(), 13);
    }

    #[test]
    fn help_shows_every_setting_with_its_env_and_default() {
        use clap::CommandFactory;
        let help = Cli::command().render_long_help().to_string();
        iocluster_ops::settings::check_help(&help, RawAppConfig::SETTINGS).unwrap();
        let help = help.split_whitespace().collect::<Vec<_>>().join(" ");
        assert!(help.contains("[env: IOCLUSTER_HANDLER_TIMEOUT_MS] [default: 30000]"));
    }

    #[test]
    fn flag_over_env_over_file_over_default() {
        use clap::Parser;
        let file = std::env::temp_dir().join(format!("iocluster-app-{}.toml", std::process::id()));
        std::fs::write(&file, "lease_ms = 3\nconcurrency = 3\njoin_timeout_ms = 3").unwrap();
        let cli = Cli::try_parse_from([
            "app".as_ref(),
            "--lease".as_ref(),
            "1".as_ref(),
            "--config".as_ref(),
            file.as_os_str(),
        ])
        .unwrap();
        let env = [("IOCLUSTER_LEASE_MS", "2"), ("IOCLUSTER_CONCURRENCY", "2")];
        let config = cli.app.config_from(&env[..]);
        std::fs::remove_file(&file).unwrap();
        let config = config.unwrap();
        assert_eq!(config.lease, Duration::from_millis(1), "flag");
        assert_eq!(config.concurrency, 2, "environment");
        assert_eq!(config.join_timeout, Duration::from_millis(3), "file");
        assert_eq!(config.shutdown_grace, Duration::from_secs(10), "default");
    }
}
