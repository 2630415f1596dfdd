//! What every iocluster binary shares besides the ops listener: config-file
//! errors, secrets that never print, logging set-up and the shutdown signal.

use std::path::Path;

use serde::Deserialize;
use serde::de::DeserializeOwned;

/// Why settings were refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {0}: {1}")]
    Read(String, std::io::Error),
    #[error("invalid config file {0}: {1}")]
    Parse(String, toml::de::Error),
    #[error("invalid {0}: {1}")]
    Invalid(&'static str, String),
}

/// Reads a TOML settings file.
pub fn read_toml<T: DeserializeOwned>(path: &Path) -> Result<T, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|error| ConfigError::Read(path.display().to_string(), error))?;
    toml::from_str(&text).map_err(|error| ConfigError::Parse(path.display().to_string(), error))
}

/// The Redis URL every node uses when none is given.
pub const DEFAULT_REDIS: &str = "redis://127.0.0.1:6379";

/// The key prefix every node uses when none is given.
pub const DEFAULT_PREFIX: &str = "iocluster";

/// A secret (API key, token secret): never shown by `Debug`, so never in a
/// log line.
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

/// How logs are written.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// The `--log-format` flag every binary takes; flatten it into the
/// binary's own parser.
#[derive(Debug, Clone, clap::Args)]
pub struct LogArgs {
    /// Log format: text (default) or json.
    #[arg(
        long,
        env = "IOCLUSTER_LOG_FORMAT",
        value_name = "FORMAT",
        default_value = "text"
    )]
    pub log_format: LogFormat,
}

impl LogArgs {
    /// Installs the tracing subscriber in the chosen format.
    pub fn init(&self) {
        init_tracing(self.log_format);
    }
}

/// How every node connects to Redis: reconnect attempts at most a second
/// apart whatever the outage lasted (so a node is back within a second of
/// Redis), and the given response timeout (`None` for blocking commands).
pub fn redis_manager_config(
    response_timeout: Option<std::time::Duration>,
) -> redis::aio::ConnectionManagerConfig {
    redis::aio::ConnectionManagerConfig::new()
        .set_max_delay(std::time::Duration::from_secs(1))
        .set_response_timeout(response_timeout)
}

/// Milliseconds since the Unix epoch (0 if the system clock is before it):
/// the wall clock every node writes to Redis (leases, credentials,
/// handshakes), read the same way everywhere.
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|since| u64::try_from(since.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Waits until Redis answers, for a node that is starting: it says so at
/// once when Redis does not (and again every ten failed attempts), retries
/// with backoff (at most 5 s apart), and logs when Redis answers. Gives up
/// with the last error after `patience` (`None`: never), for supervisors
/// that prefer a node that exits.
pub async fn wait_for_redis(
    client: &crate::RedisClient,
    patience: Option<std::time::Duration>,
) -> redis::RedisResult<()> {
    use std::time::{Duration, Instant};
    let started = Instant::now();
    let mut backoff = crate::Backoff::new(Duration::from_secs(5));
    let mut failures = 0u32;
    loop {
        let attempt = crate::within(Duration::from_secs(2), "2 s", client.ping()).await;
        match attempt {
            Ok(()) => {
                if failures > 0 {
                    tracing::info!(
                        waited_ms = started.elapsed().as_millis() as u64,
                        "Redis answers: starting"
                    );
                }
                return Ok(());
            }
            Err(error) => {
                if patience.is_some_and(|patience| started.elapsed() >= patience) {
                    tracing::error!(%error, "Redis did not answer in time: giving up");
                    return Err(error);
                }
                if failures.is_multiple_of(10) {
                    tracing::warn!(%error, "cannot reach Redis; retrying until it answers");
                }
                failures += 1;
                backoff.wait().await;
            }
        }
    }
}

/// The log filter without `RUST_LOG`: `info`, but only errors from the
/// redis crate, whose cluster client logs a warning for every attempt to
/// reach a failed node during a failover (hundreds a second); the nodes
/// log one line per outage themselves.
const DEFAULT_LOG_FILTER: &str = "info,redis=error";

/// Installs the tracing subscriber (`RUST_LOG` filters, default
/// [`DEFAULT_LOG_FILTER`]).
pub fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(DEFAULT_LOG_FILTER));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        if let Ok(mut term) =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        {
            tokio::select! {
                _ = ctrl_c => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = ctrl_c.await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_do_not_print() {
        assert_eq!(
            format!("{:?}", Secret("hunter2".into())),
            "Secret([redacted])"
        );
    }
}
