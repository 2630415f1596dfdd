//! Frontend settings: TOML file and flags, validated before anything binds.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;

pub use iocluster_ops::{ConfigError, Secret};

/// An io-node listed when the registry has none.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct StaticNode {
    pub id: String,
    pub url: String,
}

/// Settings as written in TOML or given as flags; every field optional.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    pub redis: Option<String>,
    pub prefix: Option<String>,
    pub listen: Option<String>,
    pub admin_listen: Option<String>,
    pub static_dir: Option<PathBuf>,
    pub client_bundle: Option<PathBuf>,
    pub api_key: Option<Secret>,
    pub fallback_nodes: Option<Vec<StaticNode>>,
    pub max_body_bytes: Option<usize>,
    pub allow_public_admin: Option<bool>,
}

impl RawConfig {
    pub fn from_file(path: &std::path::Path) -> Result<RawConfig, ConfigError> {
        iocluster_ops::read_toml(path)
    }

    /// Fills every field `self` leaves empty from `other`.
    pub fn or(self, other: RawConfig) -> RawConfig {
        RawConfig {
            redis: self.redis.or(other.redis),
            prefix: self.prefix.or(other.prefix),
            listen: self.listen.or(other.listen),
            admin_listen: self.admin_listen.or(other.admin_listen),
            static_dir: self.static_dir.or(other.static_dir),
            client_bundle: self.client_bundle.or(other.client_bundle),
            api_key: self.api_key.or(other.api_key),
            fallback_nodes: self.fallback_nodes.or(other.fallback_nodes),
            max_body_bytes: self.max_body_bytes.or(other.max_body_bytes),
            allow_public_admin: self.allow_public_admin.or(other.allow_public_admin),
        }
    }

    pub fn validate(self) -> Result<Config, ConfigError> {
        let (redis, prefix) = iocluster_ops::redis_and_prefix(self.redis, self.prefix)?;
        let addr = |value: Option<String>, default: &str, name: &'static str| {
            let value = value.unwrap_or_else(|| default.to_owned());
            value
                .parse::<SocketAddr>()
                .map_err(|error| ConfigError::Invalid(name, format!("{value:?}: {error}")))
        };
        let listen = addr(self.listen, "127.0.0.1:8080", "listen")?;
        let admin_listen = addr(self.admin_listen, "127.0.0.1:8081", "admin_listen")?;
        let allow_public_admin = self.allow_public_admin.unwrap_or(false);
        if !admin_listen.ip().is_loopback() && !allow_public_admin {
            return Err(ConfigError::Invalid(
                "admin_listen",
                format!(
                    "{admin_listen} is not a loopback address; set allow_public_admin = true to expose the admin API"
                ),
            ));
        }
        if let Some(key) = &self.api_key
            && key.0.len() < 16
        {
            return Err(ConfigError::Invalid(
                "api_key",
                "must be at least 16 characters".into(),
            ));
        }
        let fallback_nodes = self.fallback_nodes.unwrap_or_default();
        for node in &fallback_nodes {
            if !(node.url.starts_with("http://") || node.url.starts_with("https://")) {
                return Err(ConfigError::Invalid(
                    "fallback_nodes",
                    format!("{:?} is not an http(s) URL", node.url),
                ));
            }
        }
        let max_body_bytes = match self.max_body_bytes.unwrap_or(64 * 1024) {
            0 => {
                return Err(ConfigError::Invalid(
                    "max_body_bytes",
                    "must be greater than 0".into(),
                ));
            }
            n => n,
        };
        Ok(Config {
            redis,
            prefix,
            listen,
            admin_listen,
            static_dir: self
                .static_dir
                .unwrap_or_else(|| PathBuf::from("frontend/static")),
            client_bundle: self.client_bundle.unwrap_or_else(|| {
                PathBuf::from("frontend/node_modules/socket.io-client/dist/socket.io.min.js")
            }),
            api_key: self.api_key,
            fallback_nodes,
            max_body_bytes,
        })
    }
}

/// The settings the frontend runs with.
#[derive(Debug, Clone)]
pub struct Config {
    /// Default `redis://127.0.0.1:6379`.
    pub redis: String,
    /// Prefix of every Redis key and channel. Default `iocluster`.
    pub prefix: String,
    /// Public listener: pages, `/config.json`, `/config.js`, `/iocluster.js`.
    /// Default `127.0.0.1:8080`.
    pub listen: SocketAddr,
    /// Admin listener: the HTTP API, its OpenAPI description and the
    /// dashboard. Default `127.0.0.1:8081`; a non-loopback address needs
    /// `allow_public_admin`.
    pub admin_listen: SocketAddr,
    /// Static pages served on the public listener. Default `frontend/static`.
    pub static_dir: PathBuf,
    /// The socket.io-client browser bundle (from npm), served as
    /// `/socket.io.min.js`.
    pub client_bundle: PathBuf,
    /// Bearer key of the admin API; without it the API answers 401 to all.
    pub api_key: Option<Secret>,
    /// io-nodes listed when the registry has none.
    pub fallback_nodes: Vec<StaticNode>,
    /// Largest admin request body. Default 64 KiB.
    pub max_body_bytes: usize,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sample_config_is_valid() {
        let sample: RawConfig = toml::from_str(include_str!("../../../config/frontend.toml"))
            .expect("config/frontend.toml parses");
        sample.validate().expect("config/frontend.toml is valid");
    }

    #[test]
    fn the_admin_api_stays_private_unless_asked() {
        let public = RawConfig {
            admin_listen: Some("0.0.0.0:8081".into()),
            ..RawConfig::default()
        };
        assert!(public.clone().validate().is_err());
        let allowed = RawConfig {
            allow_public_admin: Some(true),
            ..public
        };
        assert!(allowed.validate().is_ok());
        let short = RawConfig {
            api_key: Some(Secret("short".into())),
            ..RawConfig::default()
        };
        assert!(short.validate().is_err());
        assert_eq!(
            format!("{:?}", Secret("hunter2hunter2hunter2".into())),
            "Secret([redacted])"
        );
    }
}
