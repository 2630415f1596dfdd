//! `iocluster-bench`: a load generator for any Socket.IO v4 server (Engine.IO
//! v4 over WebSocket, or HTTP long-polling for `polling-echo` and the
//! long-polling connect storm), so iocluster and its peers are measured on
//! identical work. Every server under test implements the same contract:
//! `join` (room, ack), `echo` (args, ack with the same args), `bcast`
//! ({room, payload}) → `tick` (payload) to everyone in the room.
//!
//! Results are one JSON object on stdout; progress goes to stderr; `--plot`
//! writes an SVG (deliveries per second over time, latency percentiles).
//! `chart` draws recorded figures of several runs as one SVG, for the docs.
//!
//! This file holds the flags and hands them to a scenario in `scenarios`.

mod plot;
mod polling;
mod scenarios;
mod stats;

use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use serde_json::Value;

use crate::polling::Affinity;
use crate::scenarios::Targets;
use crate::scenarios::connect_storm::Transport;

/// jemalloc, as the io-node: the load generator shares the machine with the
/// servers it measures, so every allocation it saves is CPU they get.
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Load generator for Socket.IO v4 servers (iocluster and its peers).
#[derive(Parser)]
#[command(name = "iocluster-bench", version)]
struct Args {
    /// Server URLs, comma-separated; clients are spread over them round robin.
    #[arg(
        long,
        global = true,
        value_delimiter = ',',
        default_value = "http://127.0.0.1:3001"
    )]
    urls: Vec<String>,
    /// Local addresses to connect from, comma-separated; clients are spread
    /// over them round robin. Each address has its own ephemeral port range
    /// (about 28 000 ports by default), so large idle runs on loopback use
    /// several, e.g. `127.0.0.1,127.0.0.2,127.0.0.3,127.0.0.4`.
    #[arg(long, global = true, value_delimiter = ',')]
    source_addresses: Vec<std::net::IpAddr>,
    /// Write an SVG plot of the run here.
    #[arg(long, global = true, value_name = "FILE")]
    plot: Option<PathBuf>,
    /// Connections opened at once while setting up.
    #[arg(long, global = true, default_value_t = 200)]
    connect_concurrency: usize,
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Subcommand)]
enum Scenario {
    /// N subscribers in one room; one publisher emits `bcast` at a fixed
    /// rate; every subscriber records one-way latency.
    Fanout {
        #[arg(long, default_value_t = 100)]
        subscribers: usize,
        /// Messages per second from the publisher.
        #[arg(long, default_value_t = 10.0)]
        rate: f64,
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Padding bytes per message.
        #[arg(long, default_value_t = 32)]
        payload: usize,
    },
    /// Many small rooms, every client publishing to its own room at a low
    /// rate: the chat shape.
    Rooms {
        #[arg(long, default_value_t = 1000)]
        clients: usize,
        #[arg(long, default_value_t = 10)]
        room_size: usize,
        /// Messages per second from each client.
        #[arg(long, default_value_t = 1.0)]
        rate: f64,
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Make every room of clients on one server (clients go to the
        /// servers round robin; by default a room's members are spread over
        /// all of them). Shows whether a broadcast reaches only the servers
        /// with recipients.
        #[arg(long)]
        local_rooms: bool,
    },
    /// Request/ack round trips (`echo`), one in flight per client.
    Echo {
        #[arg(long, default_value_t = 100)]
        clients: usize,
        #[arg(long, default_value_t = 10)]
        seconds: u64,
    },
    /// Each client emits `events` acked `echo`s at once, without waiting,
    /// then waits for every ack: how fast a chatty client is answered, and
    /// whether in order.
    Burst {
        #[arg(long, default_value_t = 1)]
        clients: usize,
        #[arg(long, default_value_t = 10_000)]
        events: u64,
    },
    /// Request/ack round trips (`echo`) over HTTP long-polling, one in
    /// flight per client: a long-poll GET always waiting, the echoes and
    /// pongs POSTed beside it.
    PollingEcho {
        #[arg(long, default_value_t = 100)]
        clients: usize,
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// `on`: all of a client's requests go to its own server (clients
        /// spread round robin over --urls), as behind a sticky balancer.
        /// `off`: each request goes to the next server in turn, as behind a
        /// round-robin balancer without affinity (the servers must answer
        /// any session's requests).
        #[arg(long, value_enum, default_value_t = Affinity::On)]
        affinity: Affinity,
    },
    /// Hold N idle connections (the run script samples server memory).
    Idle {
        #[arg(long, default_value_t = 1000)]
        connections: usize,
        #[arg(long, default_value_t = 10)]
        seconds: u64,
    },
    /// Draw recorded figures (a JSON file: title, source, axes,
    /// categories, one series of values per system) as an SVG line chart.
    /// Sends no load; for the docs (docs/img/).
    Chart {
        /// The figures, e.g. docs/img/fanout-p99.json.
        figures: PathBuf,
        /// Where the SVG goes.
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
    /// N clients connect at once: time until all are admitted.
    ConnectStorm {
        #[arg(long, default_value_t = 1000)]
        clients: usize,
        /// How the clients connect: `websocket` (straight away) or `polling`
        /// (HTTP long-polling, as browsers start without an upgrade).
        #[arg(long, value_enum, default_value_t = Transport::Websocket)]
        transport: Transport,
    },
}

async fn run(args: Args) -> anyhow::Result<Value> {
    if args.urls.is_empty() {
        bail!("--urls is empty");
    }
    let targets = Targets {
        urls: args.urls.clone().into(),
        sources: args.source_addresses.clone().into(),
    };
    let concurrency = args.connect_concurrency;
    let (result, timeline, latency) = match args.scenario {
        Scenario::Fanout {
            subscribers,
            rate,
            seconds,
            payload,
        } => {
            scenarios::fanout::run(targets, concurrency, subscribers, rate, seconds, payload)
                .await?
        }
        Scenario::Rooms {
            clients,
            room_size,
            rate,
            seconds,
            local_rooms,
        } => {
            scenarios::rooms::run(
                targets,
                concurrency,
                clients,
                room_size,
                rate,
                seconds,
                local_rooms,
            )
            .await?
        }
        Scenario::Echo { clients, seconds } => {
            scenarios::echo::run(targets, concurrency, clients, seconds).await?
        }
        Scenario::Burst { clients, events } => {
            scenarios::burst::run(targets, concurrency, clients, events).await?
        }
        Scenario::PollingEcho {
            clients,
            seconds,
            affinity,
        } => scenarios::polling_echo::run(targets, concurrency, clients, seconds, affinity).await?,
        Scenario::Idle {
            connections,
            seconds,
        } => scenarios::idle::run(targets, concurrency, connections, seconds).await?,
        Scenario::ConnectStorm { clients, transport } => {
            scenarios::connect_storm::run(targets, clients, transport).await?
        }
        Scenario::Chart { .. } => unreachable!("drawn in main, without a runtime"),
    };
    if let Some(path) = &args.plot {
        plot::write(path, &result, &timeline, &latency)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(result)
}
fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Scenario::Chart { figures, out } = &args.scenario {
        return draw_chart(figures, out);
    }
    warn_fd_limit();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let result = runtime.block_on(run(args))?;
    println!("{result}");
    // Connections close with the process.
    std::process::exit(0);
}

/// `iocluster-bench chart`: recorded figures to an SVG.
fn draw_chart(figures: &std::path::Path, out: &std::path::Path) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(figures)
        .with_context(|| format!("reading {}", figures.display()))?;
    let figures: plot::Figures = serde_json::from_str(&text)
        .with_context(|| format!("invalid figures in {}", figures.display()))?;
    let svg = plot::chart(&figures).map_err(anyhow::Error::msg)?;
    std::fs::write(out, svg).with_context(|| format!("writing {}", out.display()))?;
    Ok(())
}

/// Idle runs hold many sockets: say when the soft file limit is below the
/// hard one (scripts/bench.sh raises it with `ulimit -n`).
fn warn_fd_limit() {
    if let Ok(limits) = std::fs::read_to_string("/proc/self/limits")
        && let Some(line) = limits.lines().find(|l| l.starts_with("Max open files"))
    {
        let parts: Vec<&str> = line.split_whitespace().collect();
        if parts.len() >= 5 && parts[3] != parts[4] {
            eprintln!(
                "note: the open-file limit is {} (hard {}): run `ulimit -n {}` before large idle runs",
                parts[3], parts[4], parts[4]
            );
        }
    }
}
