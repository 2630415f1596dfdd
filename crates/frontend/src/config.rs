//! Frontend settings: each one defined once below (its TOML key, flag,
//! environment variable, default and doc), validated into [`Config`] before
//! anything binds.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use iocluster_ops::settings::{Value, positive, redis_and_prefix, socket_addr};
pub use iocluster_ops::{ConfigError, Secret};

/// An io-node listed when the registry has none.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct StaticNode {
    pub id: String,
    pub url: String,
}

/// `id=url` on the command line and in the environment.
impl Value for StaticNode {
    fn parse(text: &str) -> Result<StaticNode, String> {
        match text.split_once('=') {
            Some((id, url)) if !id.is_empty() && !url.is_empty() => Ok(StaticNode {
                id: id.to_owned(),
                url: url.to_owned(),
            }),
            _ => Err("expected id=url".to_owned()),
        }
    }

    fn show(&self) -> String {
        format!("{}={}", self.id, self.url)
    }
}

iocluster_ops::settings! {
    /// Frontend settings as given by flags, the environment (`IOCLUSTER_*`)
    /// or a TOML file; every field optional. [`RawConfig::load`] merges
    /// them, flag over environment over file; [`RawConfig::validate`]
    /// applies the defaults and checks the values.
    pub struct RawConfig;
    /// Frontend settings with their defaults applied, before validation.
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
    /// Prefix of every Redis key and channel; the nodes must use the same.
    #[setting(flag = "prefix", value_name = "PREFIX", env = IOCLUSTER_PREFIX, default = iocluster_ops::DEFAULT_PREFIX.into())]
    prefix: String,
    /// Public listener: pages, /config.json, /config.js, /iocluster.js and
    /// /socket.io.min.js.
    #[setting(flag = "listen", value_name = "ADDR", env = IOCLUSTER_LISTEN, default = "127.0.0.1:8080".into())]
    listen: String,
    /// Admin listener: the HTTP API, its OpenAPI description and the
    /// dashboard. A non-loopback address also needs allow_public_admin.
    #[setting(flag = "admin-listen", value_name = "ADDR", env = IOCLUSTER_ADMIN_LISTEN, default = "127.0.0.1:8081".into())]
    admin_listen: String,
    /// Let admin_listen bind a non-loopback address.
    #[setting(flag = "allow-public-admin", env = IOCLUSTER_ALLOW_PUBLIC_ADMIN, default = false)]
    allow_public_admin: bool,
    /// Bearer key of the admin API, at least 16 characters; without one the
    /// API refuses every request.
    #[setting(flag = "api-key", value_name = "KEY", env = IOCLUSTER_API_KEY, unset = "none")]
    api_key: Secret,
    /// Directory of static pages served on the public listener. A relative
    /// path in a config file starts from the file's directory; on the
    /// command line or in the environment, from the working directory.
    #[setting(flag = "static-dir", value_name = "DIR", env = IOCLUSTER_STATIC_DIR, unset = "share/iocluster/static beside the binary's directory, else the source tree's frontend/static")]
    static_dir: PathBuf,
    /// The socket.io-client browser bundle (from npm), served as
    /// /socket.io.min.js. Relative paths as for static_dir.
    #[setting(flag = "client-bundle", value_name = "FILE", env = IOCLUSTER_CLIENT_BUNDLE, unset = "share/iocluster/socket.io.min.js beside the binary's directory, else the source tree's")]
    client_bundle: PathBuf,
    /// io-nodes listed when the registry has none, as id=url,id=url (a
    /// [[fallback_nodes]] table of id and url in TOML).
    #[setting(flag = "fallback-nodes", value_name = "NODES", env = IOCLUSTER_FALLBACK_NODES, unset = "none")]
    fallback_nodes: Vec<StaticNode>,
    /// Largest admin request body, in bytes.
    #[setting(flag = "max-body-bytes", value_name = "BYTES", env = IOCLUSTER_MAX_BODY_BYTES, default = 64 * 1024)]
    max_body_bytes: usize,
    /// Milliseconds a node starting waits for Redis to answer before it
    /// exits; 0: it waits for ever (it says so at once, then retries).
    #[setting(flag = "redis-start-timeout", value_name = "MS", env = IOCLUSTER_REDIS_START_TIMEOUT_MS, default = 0)]
    redis_start_timeout_ms: u64,
    /// Operations listener: /health, /ready and /metrics (Prometheus).
    #[setting(flag = "ops-listen", value_name = "ADDR", env = IOCLUSTER_OPS_LISTEN, unset = "none")]
    ops_listen: String,
}

/// Where the pages and the browser bundle are when no setting says: an
/// installation's `share/iocluster/` beside the binary's directory
/// (`/usr/local/bin/iocluster-frontend` → `/usr/local/share/iocluster/`,
/// as `scripts/package-frontend.sh` lays them out), else the source tree
/// the binary was built from (`cargo run`, the tests).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assets {
    pub static_dir: PathBuf,
    pub client_bundle: PathBuf,
}

impl Assets {
    /// The installation layout under `prefix` (`/usr/local`, say).
    pub fn installed(prefix: &Path) -> Assets {
        let share = prefix.join("share").join("iocluster");
        Assets {
            static_dir: share.join("static"),
            client_bundle: share.join("socket.io.min.js"),
        }
    }

    /// The source tree this binary was built from, where `npm ci` in
    /// `frontend/` puts the bundle.
    pub fn source_tree() -> Assets {
        let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
        let root = crate_dir
            .parent()
            .and_then(Path::parent)
            .unwrap_or(crate_dir);
        let frontend = root.join("frontend");
        Assets {
            static_dir: frontend.join("static"),
            client_bundle: frontend
                .join("node_modules")
                .join("socket.io-client")
                .join("dist")
                .join("socket.io.min.js"),
        }
    }

    /// The installation beside `binary` if its pages are there, else the
    /// source tree if its pages are there, else the installation (so that
    /// the error names where they were expected).
    pub fn find(binary: Option<&Path>) -> Assets {
        let installed = binary
            .and_then(Path::parent)
            .and_then(Path::parent)
            .map(Assets::installed);
        let source = Assets::source_tree();
        match installed {
            Some(installed) if installed.static_dir.is_dir() => installed,
            _ if source.static_dir.is_dir() => source,
            Some(installed) => installed,
            None => source,
        }
    }
}

impl RawConfig {
    /// The settings of a config file, its relative paths made relative to
    /// the file's directory (so a frontend reads the same files whatever
    /// its working directory).
    pub fn from_config_file(path: &Path) -> Result<RawConfig, ConfigError> {
        let mut file = RawConfig::from_file(path)?;
        let dir = path.parent().unwrap_or(Path::new(""));
        for setting in [&mut file.static_dir, &mut file.client_bundle] {
            if let Some(value) = setting.as_mut()
                && value.is_relative()
            {
                *value = dir.join(&*value);
            }
        }
        Ok(file)
    }

    /// `self` (the flags) over the environment over the config file, if
    /// any, with the file's relative paths taken from its directory.
    pub fn load_from(
        self,
        config_file: Option<&Path>,
        env: &(impl iocluster_ops::settings::Env + ?Sized),
    ) -> Result<RawConfig, ConfigError> {
        let file = match config_file {
            Some(path) => RawConfig::from_config_file(path)?,
            None => RawConfig::default(),
        };
        Ok(self.or(RawConfig::from_env(env)?).or(file))
    }

    /// Applies the defaults and checks every value; pages and bundle not
    /// set are looked for beside this process's binary ([`Assets::find`]).
    pub fn validate(self) -> Result<Config, ConfigError> {
        let binary = std::env::current_exe().ok();
        self.validate_for(binary.as_deref())
    }

    /// [`RawConfig::validate`] for a frontend whose binary is `binary`.
    pub fn validate_for(self, binary: Option<&Path>) -> Result<Config, ConfigError> {
        let settings = self.with_defaults();
        let assets = (settings.static_dir.is_none() || settings.client_bundle.is_none())
            .then(|| Assets::find(binary));
        let static_dir = match settings.static_dir {
            Some(dir) => dir,
            None => assets
                .as_ref()
                .map(|a| a.static_dir.clone())
                .unwrap_or_default(),
        };
        let client_bundle = match settings.client_bundle {
            Some(file) => file,
            None => assets.map(|a| a.client_bundle).unwrap_or_default(),
        };
        let (redis, prefix) = redis_and_prefix(settings.redis, settings.prefix)?;
        let listen = socket_addr(&settings.listen, "listen")?;
        let admin_listen = socket_addr(&settings.admin_listen, "admin_listen")?;
        if !admin_listen.ip().is_loopback() && !settings.allow_public_admin {
            return Err(ConfigError::Invalid(
                "admin_listen",
                format!(
                    "{admin_listen} is not a loopback address; set allow_public_admin = true to expose the admin API"
                ),
            ));
        }
        if let Some(key) = &settings.api_key
            && key.0.len() < 16
        {
            return Err(ConfigError::Invalid(
                "api_key",
                "must be at least 16 characters".into(),
            ));
        }
        if let Some(addr) = &settings.ops_listen {
            socket_addr(addr, "ops_listen")?;
        }
        let fallback_nodes = settings.fallback_nodes.unwrap_or_default();
        for node in &fallback_nodes {
            if !(node.url.starts_with("http://") || node.url.starts_with("https://")) {
                return Err(ConfigError::Invalid(
                    "fallback_nodes",
                    format!("{:?} is not an http(s) URL", node.url),
                ));
            }
        }
        Ok(Config {
            redis,
            prefix,
            listen,
            admin_listen,
            static_dir,
            client_bundle,
            api_key: settings.api_key,
            fallback_nodes,
            max_body_bytes: positive(settings.max_body_bytes, "max_body_bytes")?,
            ops_listen: settings.ops_listen,
            redis_start_timeout: (settings.redis_start_timeout_ms > 0)
                .then(|| std::time::Duration::from_millis(settings.redis_start_timeout_ms)),
        })
    }
}

/// The settings the frontend runs with. Each field's default and details
/// are on the [`RawConfig`] field it comes from.
#[derive(Debug, Clone)]
pub struct Config {
    /// [`RawConfig::redis`].
    pub redis: String,
    /// Prefix of every Redis key and channel ([`RawConfig::prefix`]).
    pub prefix: String,
    /// Public listener: pages, `/config.json`, `/config.js`, `/iocluster.js`
    /// ([`RawConfig::listen`]).
    pub listen: SocketAddr,
    /// Admin listener: the HTTP API, its OpenAPI description and the
    /// dashboard ([`RawConfig::admin_listen`]).
    pub admin_listen: SocketAddr,
    /// Static pages served on the public listener ([`RawConfig::static_dir`]).
    pub static_dir: PathBuf,
    /// The socket.io-client browser bundle (from npm), served as
    /// `/socket.io.min.js` ([`RawConfig::client_bundle`]).
    pub client_bundle: PathBuf,
    /// Bearer key of the admin API; without it the API answers 401 to all
    /// ([`RawConfig::api_key`]).
    pub api_key: Option<Secret>,
    /// io-nodes listed when the registry has none
    /// ([`RawConfig::fallback_nodes`]).
    pub fallback_nodes: Vec<StaticNode>,
    /// Largest admin request body ([`RawConfig::max_body_bytes`]).
    pub max_body_bytes: usize,
    /// Address of the operations listener (`/health`, `/ready`, `/metrics`)
    /// ([`RawConfig::ops_listen`]).
    pub ops_listen: Option<String>,
    /// How long a starting frontend waits for Redis, `None`: for ever
    /// ([`RawConfig::redis_start_timeout_ms`]).
    pub redis_start_timeout: Option<std::time::Duration>,
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

    #[test]
    fn every_setting_has_an_env_var_named_after_its_key() {
        iocluster_ops::settings::check_env_names(RawConfig::SETTINGS).unwrap();
        assert_eq!(RawConfig::SETTINGS.len(), 12);
    }

    #[test]
    fn flag_over_env_over_file_over_default() {
        use clap::{Args, FromArgMatches};
        let command = RawConfig::augment_args(clap::Command::new("frontend"));
        let matches = command
            .try_get_matches_from(["frontend", "--listen", "127.0.0.1:1"])
            .unwrap();
        let flags = RawConfig::from_arg_matches(&matches).unwrap();
        let env = [
            ("IOCLUSTER_LISTEN", "127.0.0.1:2"),
            ("IOCLUSTER_ADMIN_LISTEN", "127.0.0.1:2"),
            (
                "IOCLUSTER_FALLBACK_NODES",
                "io-1=http://a:3001,io-2=https://b",
            ),
        ];
        let file: RawConfig = toml::from_str(
            "listen = \"127.0.0.1:3\"\nadmin_listen = \"127.0.0.1:3\"\nmax_body_bytes = 3",
        )
        .unwrap();
        let config = flags
            .or(RawConfig::from_env(&env[..]).unwrap())
            .or(file)
            .validate()
            .unwrap();
        assert_eq!(config.listen.port(), 1, "flag");
        assert_eq!(config.admin_listen.port(), 2, "environment");
        assert_eq!(config.fallback_nodes.len(), 2, "environment");
        assert_eq!(config.fallback_nodes[1].url, "https://b");
        assert_eq!(config.max_body_bytes, 3, "file");
        assert_eq!(
            config.static_dir,
            Assets::source_tree().static_dir,
            "default, outside an installation"
        );
    }

    #[test]
    fn relative_paths_in_a_config_file_start_from_its_directory() {
        let dir = std::env::temp_dir().join(format!("iocluster-frontend-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("frontend.toml");
        std::fs::write(
            &file,
            "static_dir = \"www\"\nclient_bundle = \"/opt/b/socket.io.min.js\"\n",
        )
        .unwrap();
        let config = RawConfig::default()
            .load_from(Some(&file), &[][..])
            .unwrap()
            .validate()
            .unwrap();
        assert_eq!(config.static_dir, dir.join("www"));
        assert_eq!(
            config.client_bundle,
            PathBuf::from("/opt/b/socket.io.min.js"),
            "absolute paths stay"
        );
        // A flag's relative path is the working directory's, as in a shell.
        let flags = RawConfig {
            static_dir: Some("pages".into()),
            ..RawConfig::default()
        };
        let config = flags
            .load_from(Some(&file), &[][..])
            .unwrap()
            .validate()
            .unwrap();
        assert_eq!(config.static_dir, PathBuf::from("pages"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn without_settings_the_pages_are_looked_for_beside_the_binary() {
        let prefix = std::env::temp_dir().join(format!("iocluster-prefix-{}", std::process::id()));
        let binary = prefix.join("bin").join("iocluster-frontend");
        // Nothing installed there: the source tree's pages.
        let config = RawConfig::default().validate_for(Some(&binary)).unwrap();
        assert_eq!(config.static_dir, Assets::source_tree().static_dir);
        // Installed: those.
        std::fs::create_dir_all(prefix.join("share/iocluster/static")).unwrap();
        let config = RawConfig::default().validate_for(Some(&binary)).unwrap();
        assert_eq!(
            config.static_dir,
            prefix.join("share/iocluster/static"),
            "{config:?}"
        );
        assert_eq!(
            config.client_bundle,
            prefix.join("share/iocluster/socket.io.min.js")
        );
        std::fs::remove_dir_all(&prefix).unwrap();
    }

    #[test]
    fn bad_values_are_refused_by_name() {
        let env = [("IOCLUSTER_FALLBACK_NODES", "http://a:3001")];
        let error = RawConfig::from_env(&env[..]).unwrap_err().to_string();
        assert!(
            error.starts_with("invalid IOCLUSTER_FALLBACK_NODES"),
            "{error}"
        );
        let ftp = RawConfig {
            fallback_nodes: Some(vec![StaticNode::parse("io-1=ftp://a").unwrap()]),
            ..RawConfig::default()
        };
        let error = ftp.validate().unwrap_err().to_string();
        assert!(error.starts_with("invalid fallback_nodes"), "{error}");
        let zero = RawConfig {
            max_body_bytes: Some(0),
            ..RawConfig::default()
        };
        let error = zero.validate().unwrap_err().to_string();
        assert_eq!(error, "invalid max_body_bytes: must be greater than 0");
    }
}
