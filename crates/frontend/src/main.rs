//! `iocluster-frontend`: flags and config file, tracing, then
//! [`iocluster_frontend::run`].

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use iocluster_frontend::RawConfig;
use iocluster_ops::settings::ProcessEnv;

/// Serves browsers the live io-node list (/config.json, /config.js), the
/// failover helper (/iocluster.js) and static pages; serves operators the
/// admin HTTP API, its OpenAPI description and a live dashboard on a
/// separate, private listener. Every setting is a flag, an environment
/// variable or a config file key; in that order of precedence.
#[derive(Debug, Parser)]
#[command(name = "iocluster-frontend", version, args_override_self = true)]
struct Args {
    /// TOML config file (see config/frontend.toml).
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
        .load_from(args.config.as_deref(), &ProcessEnv)
        .and_then(RawConfig::validate)
        .context("invalid configuration")?;
    // A frontend without its pages or bundle would serve 404s: refuse to
    // start instead, naming the path it looked at.
    if !config.static_dir.is_dir() {
        anyhow::bail!(
            "static_dir {} is not a directory: install the pages there (docs/DEPLOY.md) or set static_dir (in a config file, relative to the file)",
            config.static_dir.display()
        );
    }
    if !config.client_bundle.is_file() {
        anyhow::bail!(
            "client_bundle {} is missing: copy socket.io-client's dist/socket.io.min.js there from a machine that ran `npm ci` in frontend/ (docs/DEPLOY.md), or set client_bundle",
            config.client_bundle.display()
        );
    }
    tracing::info!(
        static_dir = %config.static_dir.display(),
        client_bundle = %config.client_bundle.display(),
        "serving pages and the browser bundle"
    );
    let runtime = tokio::runtime::Runtime::new().context("cannot start the runtime")?;
    runtime.block_on(async move {
        let public = tokio::net::TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("cannot listen on {}", config.listen))?;
        let admin = tokio::net::TcpListener::bind(config.admin_listen)
            .await
            .with_context(|| format!("cannot listen on {}", config.admin_listen))?;
        iocluster_frontend::run(public, admin, config, iocluster_ops::shutdown_signal()).await?;
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
        assert!(help.contains("[env: IOCLUSTER_MAX_BODY_BYTES] [default: 65536]"));
    }

    #[test]
    fn the_admin_switch_stays_plain() {
        let args = Args::try_parse_from(["iocluster-frontend", "--allow-public-admin"]).unwrap();
        assert_eq!(args.settings.allow_public_admin, Some(true));
        let args = Args::try_parse_from(["iocluster-frontend"]).unwrap();
        assert_eq!(args.settings.allow_public_admin, None);
    }
}
