//! The scenarios, one module each, and what they share: where clients
//! connect to and from ([`Targets`]), connecting them, progress bars, the
//! per-second sampler and the `LOAD-START` mark. `broadcast` runs publishers
//! against receivers for `fanout` and `rooms`.

pub mod broadcast;
pub mod burst;
pub mod connect_storm;
pub mod echo;
pub mod fanout;
pub mod idle;
pub mod polling_echo;
pub mod rooms;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context;
use futures_util::StreamExt;
use iocluster_client::{Client, ClientOptions, Socket};
use serde_json::json;
use tokio::sync::watch;

use crate::stats::Timeline;

pub const ACK_TIMEOUT: Duration = Duration::from_secs(30);

/// Where clients connect to and from: client `i` takes URL `i` and source
/// address `i`, both round robin.
#[derive(Clone)]
pub struct Targets {
    pub urls: Arc<[String]>,
    pub sources: Arc<[std::net::IpAddr]>,
}

impl Targets {
    pub fn url(&self, i: usize) -> &str {
        &self.urls[i % self.urls.len()]
    }

    pub fn source(&self, i: usize) -> Option<std::net::IpAddr> {
        (!self.sources.is_empty()).then(|| self.sources[i % self.sources.len()])
    }
}
/// Client `i` connected to namespace `/`.
pub async fn connect(targets: &Targets, i: usize) -> anyhow::Result<(Client, Arc<Socket>)> {
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
pub async fn connect_many(
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
/// Samples a counter every second into a timeline, with a progress line.
pub fn sample(
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
pub fn load_start() {
    eprintln!("LOAD-START");
}
