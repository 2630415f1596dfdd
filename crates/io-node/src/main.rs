//! `iocluster-io-node`: flags and config file, tracing, then [`iocluster_io_node::run`].

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use iocluster_io_node::RawConfig;
use iocluster_ops::settings::ProcessEnv;

/// jemalloc: less CPU per allocation than glibc malloc on the hot paths and
/// less memory held per idle connection (docs/BENCHMARKS.md).
#[cfg(feature = "jemalloc")]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Holds Socket.IO v4 client connections (WebSocket and HTTP long-polling) and
/// bridges them to app-nodes through Redis. Every setting is a flag, an
/// environment variable or a config file key; in that order of precedence.
#[derive(Debug, Parser)]
#[command(name = "iocluster-io-node", version, args_override_self = true)]
struct Args {
    /// TOML config file (see config/io-node.toml).
    #[arg(long, env = "IOCLUSTER_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(flatten)]
    settings: RawConfig,
    #[command(flatten)]
    log: iocluster_ops::LogArgs,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    args.log.init();
    let config = args
        .settings
        .load(args.config.as_deref(), &ProcessEnv)
        .and_then(RawConfig::validate)
        .context("invalid configuration")?;

    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    runtime.enable_all();
    if let Some(threads) = config.worker_threads {
        runtime.worker_threads(threads);
    }
    let runtime = runtime.build().context("cannot start the runtime")?;
    runtime.block_on(async move {
        let listener = iocluster_ops::listen(&config.listen, config.listen_backlog)
            .await
            .with_context(|| format!("cannot listen on {}", config.listen))?;
        iocluster_io_node::run(listener, config, iocluster_ops::shutdown_signal()).await?;
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn help_shows_every_setting_with_its_env_and_default() {
        let help = Args::command().render_long_help().to_string();
        iocluster_ops::settings::check_help(&help, RawConfig::SETTINGS).unwrap();
        let help = help.split_whitespace().collect::<Vec<_>>().join(" ");
        assert!(help.contains("--ping-interval <MS>"));
        assert!(help.contains("[env: IOCLUSTER_PING_INTERVAL_MS] [default: 25000]"));
        assert!(help.contains("[env: IOCLUSTER_REDIS_URL] [default: redis://127.0.0.1:6379]"));
    }

    #[test]
    fn flags_parse_and_switches_stay_plain() {
        let args = Args::try_parse_from([
            "iocluster-io-node",
            "--ping-interval",
            "5",
            "--ping-interval",
            "6",
            "--users-auth",
            "--cors-origins",
            "https://a.example,https://b.example",
        ])
        .unwrap();
        assert_eq!(
            args.settings.ping_interval_ms,
            Some(6),
            "the last flag wins"
        );
        assert_eq!(args.settings.users_auth, Some(true));
        assert_eq!(args.settings.require_auth, None);
        assert_eq!(args.settings.cors_origins.unwrap().len(), 2);
        assert!(Args::try_parse_from(["iocluster-io-node", "--users-auth", "true"]).is_err());
        let error = Args::try_parse_from(["iocluster-io-node", "--max-payload", "big"])
            .unwrap_err()
            .to_string();
        assert!(error.contains("--max-payload"), "{error}");
    }
}
