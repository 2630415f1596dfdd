//! `iocluster-frontend`: flags and config file, tracing, then
//! [`iocluster_frontend::run`].

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use iocluster_frontend::RawConfig;
use iocluster_frontend::config::Secret;

/// Serves browsers the live io-node list (/config.json, /config.js), the
/// failover helper (/iocluster.js) and static pages; serves operators the
/// admin HTTP API, its OpenAPI description and a live dashboard on a
/// separate, private listener. Flags override the config file.
#[derive(Debug, Parser)]
#[command(name = "iocluster-frontend", version, args_override_self = true)]
struct Args {
    /// Redis URL (default redis://127.0.0.1:6379).
    #[arg(long, env = "IOCLUSTER_REDIS_URL", value_name = "URL")]
    redis: Option<String>,
    /// Public listener for pages and the io-node list (default 127.0.0.1:8080).
    #[arg(long, env = "IOCLUSTER_LISTEN", value_name = "ADDR")]
    listen: Option<String>,
    /// Admin listener for the API and dashboard (default 127.0.0.1:8081;
    /// a non-loopback address also needs --allow-public-admin).
    #[arg(long, env = "IOCLUSTER_ADMIN_LISTEN", value_name = "ADDR")]
    admin_listen: Option<String>,
    /// Let --admin-listen bind a non-loopback address.
    #[arg(long)]
    allow_public_admin: bool,
    /// TOML config file (see config/frontend.toml); flags override it.
    #[arg(long, env = "IOCLUSTER_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Prefix of every Redis key and channel (default iocluster).
    #[arg(long, env = "IOCLUSTER_PREFIX", value_name = "PREFIX")]
    prefix: Option<String>,
    /// Bearer key of the admin API, at least 16 characters (without one the
    /// API refuses every request).
    #[arg(
        long,
        env = "IOCLUSTER_API_KEY",
        value_name = "KEY",
        hide_env_values = true
    )]
    api_key: Option<String>,
    /// Directory of static pages (default frontend/static).
    #[arg(long, value_name = "DIR")]
    static_dir: Option<PathBuf>,
    /// The socket.io-client browser bundle served as /socket.io.min.js
    /// (default frontend/node_modules/socket.io-client/dist/socket.io.min.js).
    #[arg(long, value_name = "FILE")]
    client_bundle: Option<PathBuf>,
    /// Largest admin request body in bytes (default 65536).
    #[arg(long, value_name = "BYTES")]
    max_body_bytes: Option<usize>,
    #[command(flatten)]
    log: iocluster_ops::LogArgs,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    args.log.init();
    let file = match &args.config {
        Some(path) => RawConfig::from_file(path)?,
        None => RawConfig::default(),
    };
    let flags = RawConfig {
        redis: args.redis,
        prefix: args.prefix,
        listen: args.listen,
        admin_listen: args.admin_listen,
        static_dir: args.static_dir,
        client_bundle: args.client_bundle,
        api_key: args.api_key.map(Secret),
        max_body_bytes: args.max_body_bytes,
        allow_public_admin: args.allow_public_admin.then_some(true),
        ..RawConfig::default()
    };
    let config = flags.or(file).validate().context("invalid configuration")?;
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
