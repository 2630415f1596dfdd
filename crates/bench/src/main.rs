//! `iocluster-bench`: a load generator for any Socket.IO v4 server (Engine.IO
//! v4 over WebSocket), so iocluster and its peers are measured on identical
//! work. Every server under test implements the same contract:
//! `join` (room, ack), `echo` (args, ack with the same args), `bcast`
//! ({room, payload}) → `tick` (payload) to everyone in the room.
//!
//! Results are one JSON object on stdout; progress goes to stderr; `--plot`
//! writes an SVG (deliveries per second over time, latency percentiles).

mod plot;
mod polling;
mod stats;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use futures_util::StreamExt;
use iocluster_client::{Client, ClientOptions, Received, Socket};
use serde_json::{Value, json};
use tokio::sync::watch;

use crate::stats::{Latency, Seen, SharedLatency, Timeline};

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
    /// Hold N idle connections (the run script samples server memory).
    Idle {
        #[arg(long, default_value_t = 1000)]
        connections: usize,
        #[arg(long, default_value_t = 10)]
        seconds: u64,
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

#[derive(Clone, Copy, clap::ValueEnum)]
enum Transport {
    Websocket,
    Polling,
}

fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

const ACK_TIMEOUT: Duration = Duration::from_secs(30);

/// Where clients connect to and from: client `i` takes URL `i` and source
/// address `i`, both round robin.
#[derive(Clone)]
struct Targets {
    urls: Arc<[String]>,
    sources: Arc<[std::net::IpAddr]>,
}

impl Targets {
    fn url(&self, i: usize) -> &str {
        &self.urls[i % self.urls.len()]
    }

    fn source(&self, i: usize) -> Option<std::net::IpAddr> {
        (!self.sources.is_empty()).then(|| self.sources[i % self.sources.len()])
    }
}

/// The rooms of the `rooms` scenario: client `i` is on server `i % servers`
/// and the `k`-th client of a server is in that server's room
/// `k / size`. With one server group, rooms are runs of consecutive clients,
/// spread over every server the clients are.
#[derive(Clone, Copy)]
struct RoomPlan {
    clients: usize,
    size: usize,
    servers: usize,
}

impl RoomPlan {
    fn room_of(&self, i: usize) -> String {
        let (server, k) = (i % self.servers, i / self.servers);
        format!("room-{server}-{}", k / self.size)
    }

    /// How many clients are in client `i`'s room.
    fn members(&self, i: usize) -> u64 {
        let (server, k) = (i % self.servers, i / self.servers);
        let on_server = (self.clients + self.servers - 1 - server) / self.servers;
        let first = (k / self.size) * self.size;
        (on_server.min(first + self.size) - first) as u64
    }
}

/// Client `i` connected to namespace `/`.
async fn connect(targets: &Targets, i: usize) -> anyhow::Result<(Client, Arc<Socket>)> {
    let url = targets.url(i);
    let options = ClientOptions {
        connect_timeout: Duration::from_secs(30),
        local_address: targets.source(i),
        ..ClientOptions::default()
    };
    let client = Client::connect(url, options)
        .await
        .with_context(|| format!("connecting to {url}"))?;
    let socket = client.socket("/", None).await?;
    Ok((client, Arc::new(socket)))
}

/// Connects `n` clients (at most `concurrency` at a time), each joining the
/// room `room_of(i)` when given.
async fn connect_many(
    targets: &Targets,
    n: usize,
    concurrency: usize,
    room_of: Option<&(dyn Fn(usize) -> String + Sync)>,
) -> anyhow::Result<Vec<(Client, Arc<Socket>)>> {
    let bar = progress(n as u64, "connecting");
    let results: Vec<anyhow::Result<(usize, Client, Arc<Socket>)>> =
        futures_util::stream::iter(0..n)
            .map(|i| {
                let room = room_of.map(|f| f(i));
                let bar = bar.clone();
                async move {
                    let (client, socket) = connect(targets, i).await?;
                    if let Some(room) = room {
                        socket
                            .emit_with_ack("join", vec![json!(room)], ACK_TIMEOUT)
                            .await
                            .context("join")?;
                    }
                    bar.inc(1);
                    Ok((i, client, socket))
                }
            })
            .buffer_unordered(concurrency.max(1))
            .collect()
            .await;
    bar.finish_and_clear();
    let mut clients = Vec::with_capacity(n);
    for result in results {
        let (i, client, socket) = result?;
        clients.push((i, client, socket));
    }
    clients.sort_by_key(|(i, _, _)| *i);
    Ok(clients.into_iter().map(|(_, c, s)| (c, s)).collect())
}

fn progress(len: u64, what: &str) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(len);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{msg} {bar:30} {pos}/{len} {elapsed}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar.set_message(what.to_owned());
    bar.set_draw_target(indicatif::ProgressDrawTarget::stderr());
    bar
}

/// What the receiving clients saw, together.
#[derive(Default)]
struct Tally {
    /// Cleared when the run ends: later arrivals are not counted.
    counting: AtomicBool,
    delivered: Arc<AtomicU64>,
    duplicates: AtomicU64,
    disconnected: AtomicU64,
    latency: SharedLatency,
}

/// Counts and times the `tick`s `socket` receives, on its connection's own
/// task (no queue, no wake-up per event: the load generator shares the
/// machine with what it measures). `who` picks its latency stripe; with
/// `track_duplicates`, (sender, seq) pairs seen before count as duplicates,
/// not deliveries.
fn receive(who: usize, socket: &Socket, tally: Arc<Tally>, track_duplicates: bool) {
    let mut seen = Seen::default();
    socket.on_receive(move |received| {
        if !tally.counting.load(Ordering::Relaxed) {
            return;
        }
        match received {
            Received::Event(event) if event.name == "tick" => {
                let now = now_us();
                let payload = event.args.first().unwrap_or(&Value::Null);
                let sent = payload["t"].as_u64().unwrap_or(now);
                if track_duplicates
                    && let (Some(from), Some(seq)) =
                        (payload["from"].as_u64(), payload["seq"].as_u64())
                    && !seen.insert(from, seq)
                {
                    tally.duplicates.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                tally.latency.record(who, now.saturating_sub(sent));
                tally.delivered.fetch_add(1, Ordering::Relaxed);
            }
            Received::Event(_) => {}
            Received::Disconnected => {
                tally.disconnected.fetch_add(1, Ordering::Relaxed);
            }
        }
    });
}

/// Samples a counter every second into a timeline, with a progress line.
fn sample(
    counter: Arc<AtomicU64>,
    what: &'static str,
) -> (tokio::task::JoinHandle<Timeline>, watch::Sender<bool>) {
    let (stop, mut stopped) = watch::channel(false);
    let handle = tokio::spawn(async move {
        let bar = indicatif::ProgressBar::new_spinner();
        bar.set_draw_target(indicatif::ProgressDrawTarget::stderr());
        let mut timeline = Timeline::default();
        let mut ticker = tokio::time::interval(Duration::from_secs(1));
        ticker.tick().await;
        let mut last = 0;
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                _ = stopped.changed() => break,
            }
            let now = counter.load(Ordering::Relaxed);
            timeline.push(now - last);
            bar.set_message(format!("{what}: {}/s, {now} in all", now - last));
            bar.tick();
            last = now;
        }
        bar.finish_and_clear();
        timeline
    });
    (handle, stop)
}

/// Tells the run script (on stderr) that setup is over and the measured load
/// starts now, so it can read the servers' CPU time at that point.
fn load_start() {
    eprintln!("LOAD-START");
}

/// Runs publishers (each a closure producing its next message) against
/// receivers, then reports delivery and latency.
#[allow(clippy::too_many_arguments)]
async fn broadcast_run(
    receivers: Vec<Arc<Socket>>,
    publishers: Vec<(Arc<Socket>, String)>,
    rate_per_publisher: f64,
    seconds: u64,
    payload: usize,
    expected_per_message: &(dyn Fn(usize) -> u64 + Sync),
    track_duplicates: bool,
) -> anyhow::Result<(Value, Timeline, Latency)> {
    if rate_per_publisher <= 0.0 {
        bail!("--rate must be positive");
    }
    let tally = Arc::new(Tally::default());
    tally.counting.store(true, Ordering::Relaxed);
    for (who, socket) in receivers.iter().enumerate() {
        receive(who, socket, tally.clone(), track_duplicates);
    }
    let delivered = tally.delivered.clone();
    let (sampler, stop_sampler) = sample(delivered.clone(), "deliveries");
    let pad = "x".repeat(payload);
    load_start();
    let started = Instant::now();
    let deadline = started + Duration::from_secs(seconds);
    let interval = Duration::from_secs_f64(1.0 / rate_per_publisher);
    let senders: Vec<_> = publishers
        .into_iter()
        .enumerate()
        .map(|(from, (socket, room))| {
            let pad = pad.clone();
            tokio::spawn(async move {
                // Spread the publishers over the interval.
                let offset = interval.mul_f64((from % 97) as f64 / 97.0);
                tokio::time::sleep(offset).await;
                let mut ticker = tokio::time::interval(interval);
                ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
                let mut sent = 0u64;
                while Instant::now() < deadline {
                    ticker.tick().await;
                    let message = json!({
                        "room": room,
                        "payload": { "from": from, "seq": sent, "t": now_us(), "pad": pad },
                    });
                    if socket.emit("bcast", vec![message]).is_err() {
                        // The server closed this publisher: reported, not hidden.
                        return (from, sent, Some(started.elapsed().as_secs_f64()));
                    }
                    sent += 1;
                }
                (from, sent, None)
            })
        })
        .collect();
    let mut sent_by = Vec::new();
    for sender in senders {
        sent_by.push(sender.await?);
    }
    let sent: u64 = sent_by.iter().map(|(_, n, _)| n).sum();
    let expected: u64 = sent_by
        .iter()
        .map(|(from, n, _)| n * expected_per_message(*from))
        .sum();
    // Publishers the server disconnected, and when the first one was.
    let cut: Vec<f64> = sent_by.iter().filter_map(|(_, _, cut)| *cut).collect();
    if let Some(first) = cut.iter().copied().reduce(f64::min) {
        eprintln!(
            "{} publisher(s) disconnected by the server, the first after {first:.2} s",
            cut.len()
        );
    }
    // Let what is on its way arrive (at most 5 s more).
    let drain = Instant::now() + Duration::from_secs(5);
    while delivered.load(Ordering::Relaxed) < expected && Instant::now() < drain {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let elapsed = started.elapsed().as_secs_f64();
    tally.counting.store(false, Ordering::Relaxed);
    let _ = stop_sampler.send(true);
    let received = delivered.load(Ordering::Relaxed);
    let duplicates = tally.duplicates.load(Ordering::Relaxed);
    let disconnected = tally.disconnected.load(Ordering::Relaxed);
    let timeline = sampler.await?;
    let latency = tally.latency.merged();
    // The receivers' connections stay open until here.
    drop(receivers);
    let result = json!({
        "sent": sent,
        "expected": expected,
        "delivered": received,
        "lost": expected.saturating_sub(received),
        "duplicates": duplicates,
        "disconnected": disconnected,
        "publishers_disconnected": cut.len(),
        "first_publisher_cut_s": cut.iter().copied().reduce(f64::min),
        "seconds": elapsed,
        "deliveries_per_s": received as f64 / elapsed,
        "latency_ms": latency.summary(),
    });
    Ok((result, timeline, latency))
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
            let room = |_| "fanout".to_owned();
            let subs = connect_many(&targets, subscribers, concurrency, Some(&room)).await?;
            let (publisher_client, publisher) = connect(&targets, 0).await?;
            let sockets = subs.iter().map(|(_, s)| s.clone()).collect();
            let (mut result, timeline, latency) = broadcast_run(
                sockets,
                vec![(publisher, "fanout".to_owned())],
                rate,
                seconds,
                payload,
                &|_| subscribers as u64,
                true,
            )
            .await?;
            result["scenario"] = json!("fanout");
            result["subscribers"] = json!(subscribers);
            result["rate"] = json!(rate);
            drop((subs, publisher_client));
            (result, timeline, latency)
        }
        Scenario::Rooms {
            clients,
            room_size,
            rate,
            seconds,
            local_rooms,
        } => {
            let rooms = RoomPlan {
                clients,
                size: room_size.max(1),
                servers: if local_rooms { targets.urls.len() } else { 1 },
            };
            let room_of = move |i: usize| rooms.room_of(i);
            let all = connect_many(&targets, clients, concurrency, Some(&room_of)).await?;
            let sockets = all.iter().map(|(_, s)| s.clone()).collect();
            let publishers = all
                .iter()
                .enumerate()
                .map(|(i, (_, s))| (s.clone(), room_of(i)))
                .collect();
            let size_of = move |i: usize| rooms.members(i);
            let (mut result, timeline, latency) =
                broadcast_run(sockets, publishers, rate, seconds, 16, &size_of, true).await?;
            result["scenario"] = json!("rooms");
            result["clients"] = json!(clients);
            result["room_size"] = json!(room_size);
            result["local_rooms"] = json!(local_rooms);
            result["rate_per_client"] = json!(rate);
            drop(all);
            (result, timeline, latency)
        }
        Scenario::Echo { clients, seconds } => {
            let all = connect_many(&targets, clients, concurrency, None).await?;
            let done = Arc::new(AtomicU64::new(0));
            let (sampler, stop_sampler) = sample(done.clone(), "round trips");
            load_start();
            let started = Instant::now();
            let deadline = started + Duration::from_secs(seconds);
            let latency = Arc::new(SharedLatency::new());
            let tasks: Vec<_> = all
                .iter()
                .enumerate()
                .map(|(who, (_, socket))| {
                    let socket = socket.clone();
                    let done = done.clone();
                    let latency = latency.clone();
                    tokio::spawn(async move {
                        let mut failed = 0u64;
                        let mut n = 0u64;
                        while Instant::now() < deadline {
                            let t = Instant::now();
                            match socket
                                .emit_with_ack("echo", vec![json!(n)], ACK_TIMEOUT)
                                .await
                            {
                                Ok(ack) if ack.args == vec![json!(n)] => {
                                    latency.record(who, t.elapsed().as_micros() as u64);
                                    done.fetch_add(1, Ordering::Relaxed);
                                }
                                _ => failed += 1,
                            }
                            n += 1;
                        }
                        failed
                    })
                })
                .collect();
            let mut failed = 0;
            for task in tasks {
                failed += task.await?;
            }
            let latency = latency.merged();
            let elapsed = started.elapsed().as_secs_f64();
            let _ = stop_sampler.send(true);
            let timeline = sampler.await?;
            let trips = done.load(Ordering::Relaxed);
            let result = json!({
                "scenario": "echo",
                "clients": clients,
                "round_trips": trips,
                "failed": failed,
                "seconds": elapsed,
                "round_trips_per_s": trips as f64 / elapsed,
                "latency_ms": latency.summary(),
            });
            drop(all);
            (result, timeline, latency)
        }
        Scenario::Idle {
            connections,
            seconds,
        } => {
            let started = Instant::now();
            let results: Vec<bool> = futures_util::stream::iter(0..connections)
                .map(|i| {
                    let targets = &targets;
                    async move { connect(targets, i).await.ok() }
                })
                .buffer_unordered(concurrency.max(1))
                .map(|c| {
                    // Keep the connection: leak it into a holder below.
                    HELD.with_held(c)
                })
                .collect()
                .await;
            let connected = results.iter().filter(|ok| **ok).count();
            let setup = started.elapsed().as_secs_f64();
            // The run script reads the servers' memory now.
            eprintln!("IDLE-READY {connected}");
            tokio::time::sleep(Duration::from_secs(seconds)).await;
            let still = HELD.alive();
            let result = json!({
                "scenario": "idle",
                "connections": connections,
                "connected": connected,
                "failed": connections - connected,
                "still_connected": still,
                "setup_seconds": setup,
            });
            (result, Timeline::default(), Latency::new())
        }
        Scenario::ConnectStorm { clients, transport } => {
            let started = Instant::now();
            let tasks: Vec<_> = (0..clients)
                .map(|i| {
                    let targets = targets.clone();
                    tokio::spawn(async move {
                        let t = Instant::now();
                        // Whatever keeps the connection open until the end.
                        let held: Box<dyn std::any::Any + Send> = match transport {
                            Transport::Websocket => Box::new(connect(&targets, i).await?),
                            Transport::Polling => Box::new(
                                polling::Polling::connect(targets.url(i), targets.source(i))
                                    .await?,
                            ),
                        };
                        anyhow::Ok((t.elapsed().as_micros() as u64, held))
                    })
                })
                .collect();
            let mut latency = Latency::new();
            let mut failed = 0;
            let mut first_error = None;
            let mut held = Vec::new();
            for task in tasks {
                match task.await? {
                    Ok((us, client)) => {
                        latency.record(us);
                        held.push(client);
                    }
                    Err(error) => {
                        failed += 1;
                        first_error.get_or_insert_with(|| format!("{error:#}"));
                    }
                }
            }
            let elapsed = started.elapsed().as_secs_f64();
            let result = json!({
                "scenario": "connect-storm",
                "transport": match transport {
                    Transport::Websocket => "websocket",
                    Transport::Polling => "polling",
                },
                "clients": clients,
                "first_error": first_error,
                "connected": held.len(),
                "failed": failed,
                "seconds_until_all": elapsed,
                "connect_ms": latency.summary(),
            });
            drop(held);
            (result, Timeline::default(), latency)
        }
    };
    if let Some(path) = &args.plot {
        plot::write(path, &result, &timeline, &latency)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(result)
}

/// Idle connections are kept here until the process exits.
struct Held(std::sync::Mutex<Vec<(Client, Arc<Socket>)>>);

static HELD: Held = Held(std::sync::Mutex::new(Vec::new()));

impl Held {
    fn with_held(&self, client: Option<(Client, Arc<Socket>)>) -> bool {
        match client {
            Some(client) => {
                self.0
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(client);
                true
            }
            None => false,
        }
    }

    fn alive(&self) -> usize {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    warn_fd_limit();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let result = runtime.block_on(run(args))?;
    println!("{result}");
    // Connections close with the process.
    std::process::exit(0);
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

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::RoomPlan;

    /// Every client's room size is the number of clients given that room,
    /// and local rooms never span two servers.
    #[test]
    fn room_plans_count_their_members() {
        for (clients, size, servers) in [(25, 10, 1), (25, 10, 2), (31, 4, 3), (7, 10, 4)] {
            let plan = RoomPlan {
                clients,
                size,
                servers,
            };
            let mut members: HashMap<String, (u64, Vec<usize>)> = HashMap::new();
            for i in 0..clients {
                let entry = members.entry(plan.room_of(i)).or_default();
                entry.0 += 1;
                entry.1.push(i % servers);
            }
            for i in 0..clients {
                let (count, on) = &members[&plan.room_of(i)];
                assert_eq!(
                    plan.members(i),
                    *count,
                    "{clients} {size} {servers} client {i}"
                );
                assert!(on.iter().all(|s| *s == on[0]));
                assert!(*count as usize <= size);
            }
        }
    }
}
