//! Every node setting written once. The [`settings!`](crate::settings!)
//! macro takes one definition per setting (its doc, TOML key, flag,
//! environment variable and default) and generates from it:
//!
//! - the raw struct, every field optional, read from TOML (`serde`, unknown
//!   keys refused) and from the command line (`clap::Args`: each flag's help
//!   shows its environment variable and default);
//! - reading the environment through [`Env`], so tests can feed in values;
//! - the merge, flag over environment over file over default (`load`, then
//!   `with_defaults`: the struct a node's `validate` starts from);
//! - `SETTINGS`, every setting's names, for tests that go through them all.
//!
//! Only the command line goes through clap; the environment is read here,
//! through the same [`Value::parse`], so that a test never has to touch the
//! process environment. Validation (ranges, addresses, pairs of settings)
//! stays with each node's config, which names the setting it refuses; the
//! checks they share are here ([`positive`], [`millis`], [`socket_addr`],
//! [`redis_and_prefix`]).
//!
//! ```
//! iocluster_ops::settings! {
//!     /// Settings as read from flags, environment and file.
//!     pub struct RawConfig;
//!     /// The settings with defaults applied.
//!     pub struct Settings;
//!
//!     /// Milliseconds between pings.
//!     #[setting(flag = "ping-interval", value_name = "MS", env = IOCLUSTER_PING_INTERVAL_MS, default = 25000)]
//!     ping_interval_ms: u64,
//!     /// Operations listener.
//!     #[setting(flag = "ops-listen", value_name = "ADDR", env = IOCLUSTER_OPS_LISTEN, unset = "none")]
//!     ops_listen: String,
//! }
//!
//! let env = [("IOCLUSTER_PING_INTERVAL_MS", "5")];
//! let raw = RawConfig::default().load(None, &env[..]).unwrap();
//! let settings = raw.with_defaults();
//! assert_eq!(settings.ping_interval_ms, 5);
//! assert_eq!(settings.ops_listen, None);
//! ```

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

pub use clap;

use crate::{ConfigError, Secret};

/// One setting's names, for tests and docs that go through them all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Setting {
    /// The TOML key, also the raw struct's field.
    pub key: &'static str,
    /// The long flag, without `--`.
    pub flag: &'static str,
    /// The environment variable.
    pub env: &'static str,
}

/// Checks the naming rule every node kind's settings follow: each
/// environment variable is `IOCLUSTER_` and the key in capitals (the Redis
/// URL's is `IOCLUSTER_REDIS_URL`), and no two settings share one. For the
/// node kinds' tests.
pub fn check_env_names(settings: &[Setting]) -> Result<(), String> {
    let mut seen = std::collections::HashSet::new();
    for setting in settings {
        let expected = match setting.key {
            "redis" => "IOCLUSTER_REDIS_URL".to_owned(),
            key => format!("IOCLUSTER_{}", key.to_uppercase()),
        };
        if setting.env != expected {
            return Err(format!(
                "{}: env {} is not {expected}",
                setting.key, setting.env
            ));
        }
        if !seen.insert(setting.env) {
            return Err(format!("{} is used twice", setting.env));
        }
    }
    Ok(())
}

/// Checks that a binary's long `--help` shows every setting's flag with
/// its environment variable and its default. For the node kinds' tests.
pub fn check_help(help: &str, settings: &[Setting]) -> Result<(), String> {
    let help = help.split_whitespace().collect::<Vec<_>>().join(" ");
    for setting in settings {
        let flag = format!("--{} ", setting.flag);
        let at = help
            .find(&flag)
            .ok_or_else(|| format!("{flag} is not in the help"))?;
        let end = help[at + 2..]
            .find(" --")
            .map_or(help.len(), |end| at + 2 + end);
        let text = &help[at..end];
        if !text.contains(&format!("[env: {}]", setting.env)) || !text.contains("[default: ") {
            return Err(format!("no env or default shown: {text}"));
        }
    }
    Ok(())
}

/// Where settings' environment variables come from: the process
/// environment ([`ProcessEnv`]) in a binary, a list of pairs in a test.
pub trait Env {
    fn var(&self, name: &str) -> Option<String>;
}

/// The process environment.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcessEnv;

impl Env for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var_os(name).map(|value| value.to_string_lossy().into_owned())
    }
}

impl Env for [(&str, &str)] {
    fn var(&self, name: &str) -> Option<String> {
        self.iter()
            .find(|(key, _)| *key == name)
            .map(|(_, value)| (*value).to_owned())
    }
}

/// A setting's type, as written on the command line or in the environment.
pub trait Value: Sized + Clone + Send + Sync + 'static {
    /// Reads a flag's or an environment variable's text.
    fn parse(text: &str) -> Result<Self, String>;
    /// Writes a value the way [`Value::parse`] reads it (defaults in `--help`).
    fn show(&self) -> String;
    /// A bare switch (`--users-auth`) rather than a flag taking a value.
    const SWITCH: bool = false;
}

macro_rules! from_str_values {
    ($($ty:ty),*) => {$(
        impl Value for $ty {
            fn parse(text: &str) -> Result<Self, String> {
                text.parse().map_err(|error| format!("{error}"))
            }
            fn show(&self) -> String {
                self.to_string()
            }
        }
    )*};
}

from_str_values!(u16, u32, u64, usize, String);

impl Value for bool {
    fn parse(text: &str) -> Result<Self, String> {
        text.parse()
            .map_err(|_| "expected true or false".to_owned())
    }
    fn show(&self) -> String {
        self.to_string()
    }
    const SWITCH: bool = true;
}

impl Value for PathBuf {
    fn parse(text: &str) -> Result<Self, String> {
        Ok(PathBuf::from(text))
    }
    fn show(&self) -> String {
        self.display().to_string()
    }
}

impl Value for Secret {
    fn parse(text: &str) -> Result<Self, String> {
        Ok(Secret(text.to_owned()))
    }
    fn show(&self) -> String {
        "[redacted]".to_owned()
    }
}

/// A comma-separated list.
impl<T: Value> Value for Vec<T> {
    fn parse(text: &str) -> Result<Self, String> {
        text.split(',')
            .map(str::trim)
            .filter(|item| !item.is_empty())
            .map(T::parse)
            .collect()
    }
    fn show(&self) -> String {
        self.iter().map(T::show).collect::<Vec<_>>().join(",")
    }
}

/// Checks a count that must not be 0.
pub fn positive<T: Default + PartialEq>(value: T, key: &'static str) -> Result<T, ConfigError> {
    if value == T::default() {
        return Err(ConfigError::Invalid(key, "must be greater than 0".into()));
    }
    Ok(value)
}

/// Checks a number of milliseconds that must not be 0.
pub fn millis(value: u64, key: &'static str) -> Result<Duration, ConfigError> {
    positive(value, key).map(Duration::from_millis)
}

/// Checks a socket address (`ip:port`).
pub fn socket_addr(value: &str, key: &'static str) -> Result<SocketAddr, ConfigError> {
    value
        .parse()
        .map_err(|error| ConfigError::Invalid(key, format!("{value:?}: {error}")))
}

/// Checks the Redis URL and key prefix every node is configured with: the
/// URL parses, the prefix is non-empty without spaces.
pub fn redis_and_prefix(redis: String, prefix: String) -> Result<(String, String), ConfigError> {
    crate::check_url(&redis)
        .map_err(|error| ConfigError::Invalid("redis", format!("{redis:?}: {error}")))?;
    if prefix.is_empty() || prefix.contains(char::is_whitespace) {
        return Err(ConfigError::Invalid(
            "prefix",
            "must be non-empty without spaces".into(),
        ));
    }
    Ok((redis, prefix))
}

/// Reads one setting from the environment; empty counts as unset, as it
/// does for clap.
#[doc(hidden)]
pub fn from_env<T: Value>(
    env: &(impl Env + ?Sized),
    name: &'static str,
) -> Result<Option<T>, ConfigError> {
    match env.var(name) {
        Some(text) if !text.is_empty() => T::parse(&text)
            .map(Some)
            .map_err(|error| ConfigError::Invalid(name, format!("{text:?}: {error}"))),
        _ => Ok(None),
    }
}

/// One setting's flag: the help is the doc (without its last period, as
/// clap's derive does), then the environment variable and the default in
/// clap's own `[env: ...] [default: ...]` form.
#[doc(hidden)]
pub fn arg<T: Value>(
    id: &'static str,
    flag: &'static str,
    doc: &[&str],
    env: &'static str,
    default: String,
) -> clap::Arg {
    let doc: Vec<&str> = doc
        .iter()
        .map(|line| line.trim())
        .filter(|line| !line.is_empty())
        .collect();
    let doc = doc.join(" ");
    let doc = doc.strip_suffix('.').unwrap_or(&doc);
    let spec = format!("[env: {env}] [default: {default}]");
    let action = if T::SWITCH {
        clap::ArgAction::SetTrue
    } else {
        clap::ArgAction::Set
    };
    clap::Arg::new(id)
        .long(flag)
        .help(format!("{doc} {spec}"))
        .long_help(format!("{doc}\n\n{spec}"))
        .action(action)
        .value_parser(T::parse)
}

/// The value given on the command line, if any (a switch's implicit
/// `false` is not one: it must not hide the environment or the file).
#[doc(hidden)]
pub fn flag_value<T: Value>(matches: &clap::ArgMatches, id: &str) -> Option<T> {
    match matches.value_source(id) {
        Some(clap::parser::ValueSource::CommandLine) => matches.get_one::<T>(id).cloned(),
        _ => None,
    }
}

/// Defines a node's settings, once each. See the [module docs](mod@crate::settings).
///
/// Each setting is its doc comment, a `#[setting(...)]` line and
/// `key: Type,`: the key is the TOML key and the raw struct's field; `flag`
/// the long flag; `value_name` the placeholder in `--help` (not for
/// switches); `env` the environment variable; then either `default =
/// expr` (of `Type`), applied when nothing sets it, or `unset = "text"`,
/// saying in `--help` what happens without it (the field stays an
/// `Option`).
#[macro_export]
macro_rules! settings {
    (
        $(#[$raw_attr:meta])*
        $raw_vis:vis struct $raw:ident;
        $(#[$settings_attr:meta])*
        $settings_vis:vis struct $settings:ident;
        $(
            $(#[doc = $doc:literal])*
            #[setting(
                flag = $flag:literal
                $(, value_name = $value_name:literal)?,
                env = $env:ident
                $(, default = $default:expr)?
                $(, unset = $unset:literal)?
                $(,)?
            )]
            $key:ident: $ty:ty,
        )*
    ) => {
        $(#[$raw_attr])*
        #[derive(Debug, Clone, Default, ::serde::Deserialize)]
        #[serde(default, deny_unknown_fields)]
        $raw_vis struct $raw {
            $(
                $(#[doc = $doc])*
                #[doc = ""]
                #[doc = concat!("Flag `--", $flag, "`, environment `", stringify!($env), "`.")]
                pub $key: ::core::option::Option<$ty>,
            )*
        }

        $(#[$settings_attr])*
        #[derive(Debug, Clone)]
        $settings_vis struct $settings {
            $(
                $(#[doc = $doc])*
                pub $key: $crate::__setting_type!($ty $(, $default)?),
            )*
        }

        impl $raw {
            /// Every setting's TOML key, flag and environment variable.
            pub const SETTINGS: &'static [$crate::settings::Setting] = &[$(
                $crate::settings::Setting {
                    key: stringify!($key),
                    flag: $flag,
                    env: stringify!($env),
                },
            )*];

            /// Fills every field `self` leaves empty from `other`.
            pub fn or(self, other: $raw) -> $raw {
                $raw {
                    $($key: self.$key.or(other.$key),)*
                }
            }

            /// Reads every setting's environment variable.
            pub fn from_env(
                env: &(impl $crate::settings::Env + ?Sized),
            ) -> ::core::result::Result<$raw, $crate::ConfigError> {
                ::core::result::Result::Ok($raw {
                    $($key: $crate::settings::from_env::<$ty>(env, stringify!($env))?,)*
                })
            }

            /// Reads a TOML file.
            pub fn from_file(
                path: &::std::path::Path,
            ) -> ::core::result::Result<$raw, $crate::ConfigError> {
                $crate::read_toml(path)
            }

            /// `self` (the flags) over the environment over the config file,
            /// if any.
            pub fn load(
                self,
                config_file: ::core::option::Option<&::std::path::Path>,
                env: &(impl $crate::settings::Env + ?Sized),
            ) -> ::core::result::Result<$raw, $crate::ConfigError> {
                let file = match config_file {
                    ::core::option::Option::Some(path) => $raw::from_file(path)?,
                    ::core::option::Option::None => $raw::default(),
                };
                ::core::result::Result::Ok(self.or($raw::from_env(env)?).or(file))
            }

            /// Applies the defaults; what is left is for validation.
            pub fn with_defaults(self) -> $settings {
                $settings {
                    $($key: $crate::__setting_default!(self.$key $(, $default)?),)*
                }
            }
        }

        impl $crate::settings::clap::Args for $raw {
            fn augment_args(command: $crate::settings::clap::Command) -> $crate::settings::clap::Command {
                command $(.arg(
                    $crate::settings::arg::<$ty>(
                        stringify!($key),
                        $flag,
                        &[$($doc),*],
                        stringify!($env),
                        $crate::__setting_shown!($ty $(, default $default)? $(, unset $unset)?),
                    )
                    $(.value_name($value_name))?
                ))*
            }

            fn augment_args_for_update(command: $crate::settings::clap::Command) -> $crate::settings::clap::Command {
                <$raw as $crate::settings::clap::Args>::augment_args(command)
            }
        }

        impl $crate::settings::clap::FromArgMatches for $raw {
            fn from_arg_matches(
                matches: &$crate::settings::clap::ArgMatches,
            ) -> ::core::result::Result<$raw, $crate::settings::clap::Error> {
                ::core::result::Result::Ok($raw {
                    $($key: $crate::settings::flag_value::<$ty>(matches, stringify!($key)),)*
                })
            }

            fn update_from_arg_matches(
                &mut self,
                matches: &$crate::settings::clap::ArgMatches,
            ) -> ::core::result::Result<(), $crate::settings::clap::Error> {
                $(
                    if let ::core::option::Option::Some(value) =
                        $crate::settings::flag_value::<$ty>(matches, stringify!($key))
                    {
                        self.$key = ::core::option::Option::Some(value);
                    }
                )*
                ::core::result::Result::Ok(())
            }
        }
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __setting_type {
    ($ty:ty, $default:expr) => { $ty };
    ($ty:ty) => { ::core::option::Option<$ty> };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __setting_default {
    ($value:expr, $default:expr) => {
        $value.unwrap_or_else(|| $default)
    };
    ($value:expr) => {
        $value
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __setting_shown {
    ($ty:ty, default $default:expr) => {{
        let default: $ty = $default;
        <$ty as $crate::settings::Value>::show(&default)
    }};
    ($ty:ty, unset $unset:literal) => {
        ::std::string::String::from($unset)
    };
}

#[cfg(test)]
mod tests {
    use clap::{Args, FromArgMatches};

    crate::settings! {
        /// Test settings.
        #[derive(PartialEq)]
        pub struct Raw;
        /// Test settings with defaults.
        pub struct Settings;

        /// Milliseconds between pings.
        #[setting(flag = "ping-interval", value_name = "MS", env = IOCLUSTER_PING_INTERVAL_MS, default = 25000)]
        ping_interval_ms: u64,
        /// A path,
        /// on two lines.
        #[setting(flag = "path", value_name = "PATH", env = IOCLUSTER_PATH, default = "/socket.io/".into())]
        path: String,
        /// Origins.
        #[setting(flag = "cors-origins", value_name = "ORIGINS", env = IOCLUSTER_CORS_ORIGINS, default = vec!["*".into()])]
        cors_origins: Vec<String>,
        /// A switch.
        #[setting(flag = "users-auth", env = IOCLUSTER_USERS_AUTH, default = false)]
        users_auth: bool,
        /// A secret.
        #[setting(flag = "jwt-secret", value_name = "SECRET", env = IOCLUSTER_JWT_SECRET, unset = "none")]
        jwt_secret: crate::Secret,
    }

    fn command() -> clap::Command {
        Raw::augment_args(clap::Command::new("test").no_binary_name(true))
    }

    fn flags(args: &[&str]) -> Result<Raw, clap::Error> {
        Raw::from_arg_matches(&command().try_get_matches_from(args)?)
    }

    #[test]
    fn flag_over_env_over_file_over_default() {
        let file = std::env::temp_dir().join(format!("iocluster-ops-{}.toml", std::process::id()));
        std::fs::write(
            &file,
            "ping_interval_ms = 3\npath = \"/file/\"\nusers_auth = true",
        )
        .unwrap();
        let env = [
            ("IOCLUSTER_PING_INTERVAL_MS", "2"),
            ("IOCLUSTER_PATH", "/env/"),
        ];
        let raw = flags(&["--ping-interval", "1"]).unwrap();
        let merged = raw.load(Some(&file), &env[..]);
        std::fs::remove_file(&file).unwrap();
        let settings = merged.unwrap().with_defaults();
        assert_eq!(settings.ping_interval_ms, 1, "flag");
        assert_eq!(settings.path, "/env/", "environment");
        assert!(
            settings.users_auth,
            "file: the absent switch does not hide it"
        );
        assert_eq!(settings.cors_origins, ["*"], "default");
        assert_eq!(settings.jwt_secret, None);
    }

    #[test]
    fn values_from_flags_and_env() {
        let raw = flags(&[
            "--users-auth",
            "--cors-origins",
            "a, b",
            "--jwt-secret",
            "s",
        ])
        .unwrap();
        assert_eq!(raw.users_auth, Some(true));
        assert_eq!(raw.cors_origins, Some(vec!["a".into(), "b".into()]));
        assert_eq!(raw.jwt_secret, Some(crate::Secret("s".into())));
        assert_eq!(flags(&[]).unwrap(), Raw::default());
        let env = [("IOCLUSTER_USERS_AUTH", "true"), ("IOCLUSTER_PATH", "")];
        let raw = Raw::from_env(&env[..]).unwrap();
        assert_eq!(raw.users_auth, Some(true));
        assert_eq!(raw.path, None, "empty counts as unset");
    }

    #[test]
    fn bad_values_name_the_flag_or_variable() {
        let error = flags(&["--ping-interval", "soon"]).unwrap_err().to_string();
        assert!(error.contains("--ping-interval"), "{error}");
        let env = [("IOCLUSTER_PING_INTERVAL_MS", "soon")];
        let error = Raw::from_env(&env[..]).unwrap_err().to_string();
        assert!(error.contains("IOCLUSTER_PING_INTERVAL_MS"), "{error}");
        let error = toml::from_str::<Raw>("ping_interval_ms = \"soon\"")
            .unwrap_err()
            .to_string();
        assert!(error.contains("ping_interval_ms"), "{error}");
        assert!(toml::from_str::<Raw>("bogus = 1").is_err());
    }

    #[test]
    fn shared_checks() {
        use super::{millis, positive, redis_and_prefix, socket_addr};
        use crate::{DEFAULT_PREFIX, DEFAULT_REDIS};
        use std::time::Duration;
        let check = |redis: &str, prefix: &str| redis_and_prefix(redis.into(), prefix.into());
        assert_eq!(
            check(DEFAULT_REDIS, DEFAULT_PREFIX).unwrap(),
            (DEFAULT_REDIS.to_owned(), DEFAULT_PREFIX.to_owned())
        );
        assert!(check("nope", DEFAULT_PREFIX).is_err());
        assert!(check(DEFAULT_REDIS, "a b").is_err());
        assert!(check(DEFAULT_REDIS, "").is_err());
        assert_eq!(
            positive(0_usize, "n").unwrap_err().to_string(),
            "invalid n: must be greater than 0"
        );
        assert_eq!(millis(5, "ms").unwrap(), Duration::from_millis(5));
        assert!(millis(0, "ms").is_err());
        assert!(socket_addr("127.0.0.1:1", "addr").is_ok());
        assert!(
            socket_addr("localhost", "addr")
                .unwrap_err()
                .to_string()
                .starts_with("invalid addr")
        );
    }

    #[test]
    fn help_shows_env_and_default() {
        let help = command().render_long_help().to_string();
        let help = help.split_whitespace().collect::<Vec<_>>().join(" ");
        for expected in [
            "Milliseconds between pings [env: IOCLUSTER_PING_INTERVAL_MS] [default: 25000]",
            "A path, on two lines [env: IOCLUSTER_PATH] [default: /socket.io/]",
            "[env: IOCLUSTER_CORS_ORIGINS] [default: *]",
            "[env: IOCLUSTER_USERS_AUTH] [default: false]",
            "[env: IOCLUSTER_JWT_SECRET] [default: none]",
            "--ping-interval <MS>",
        ] {
            assert!(help.contains(expected), "{expected:?} not in\n{help}");
        }
        assert_eq!(Raw::SETTINGS.len(), 5);
        assert_eq!(Raw::SETTINGS[0].env, "IOCLUSTER_PING_INTERVAL_MS");
    }
}
