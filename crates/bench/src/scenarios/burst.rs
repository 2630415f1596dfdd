//! `burst`: each client emits `events` acked `echo`s at once, without
//! waiting for any ack (a chatty client, or one flushing what it buffered
//! offline), then waits for all of them. Measures how fast the acks come
//! back and whether they come back in order: per-socket order must not make
//! a fast client slow.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use serde_json::{Value, json};

use super::{Targets, connect_many, load_start, sample};
use crate::stats::{Latency, SharedLatency, Timeline};

/// How long one burst may take to be answered in full.
const BURST_TIMEOUT: Duration = Duration::from_secs(120);

/// Runs the `burst` scenario.
pub async fn run(
    targets: Targets,
    concurrency: usize,
    clients: usize,
    events: u64,
) -> anyhow::Result<(Value, Timeline, Latency)> {
    let all = connect_many(&targets, clients, concurrency, None).await?;
    let done = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let (sampler, stop_sampler) = sample(done.clone(), "acks");
    load_start();
    let started = Instant::now();
    let latency = Arc::new(SharedLatency::new());
    let tasks: Vec<_> = all
        .iter()
        .enumerate()
        .map(|(who, (_, socket))| {
            let socket = socket.clone();
            let done = done.clone();
            let latency = latency.clone();
            tokio::spawn(async move {
                // Emitted in order, all at once: each future sends its
                // packet when first polled, which `FuturesUnordered` does in
                // the order they were pushed; it then yields them in the
                // order they were woken, which is the order the client read
                // their acks in.
                let sent = Instant::now();
                let mut acks: FuturesUnordered<_> = (0..events)
                    .map(|n| {
                        let socket = socket.clone();
                        async move {
                            let answer = socket
                                .emit_with_ack("echo", vec![json!(n)], BURST_TIMEOUT)
                                .await;
                            (n, answer, Instant::now())
                        }
                    })
                    .collect();
                let (mut answered, mut wrong, mut out_of_order) = (0u64, 0u64, 0u64);
                let mut highest: Option<u64> = None;
                while let Some((n, answer, arrived)) = acks.next().await {
                    match answer {
                        Ok(ack) if ack.args == vec![json!(n)] => {
                            answered += 1;
                            done.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            latency.record(who, arrived.duration_since(sent).as_micros() as u64);
                        }
                        _ => wrong += 1,
                    }
                    // Out of order: an ack read after that of a later event.
                    if highest.is_some_and(|highest| n < highest) {
                        out_of_order += 1;
                    }
                    highest = highest.max(Some(n));
                }
                (answered, wrong, out_of_order, sent.elapsed())
            })
        })
        .collect();
    let (mut answered, mut wrong, mut out_of_order) = (0, 0, 0);
    let mut slowest = Duration::ZERO;
    for task in tasks {
        let (a, w, o, took) = task.await?;
        answered += a;
        wrong += w;
        out_of_order += o;
        slowest = slowest.max(took);
    }
    let elapsed = started.elapsed().as_secs_f64();
    let _ = stop_sampler.send(true);
    let timeline = sampler.await?;
    let latency = latency.merged();
    let result = json!({
        "scenario": "burst",
        "clients": clients,
        "events_per_client": events,
        "answered": answered,
        "lost": (clients as u64 * events) - answered,
        "wrong": wrong,
        "out_of_order": out_of_order,
        "seconds": elapsed,
        "slowest_client_seconds": slowest.as_secs_f64(),
        "acks_per_s": answered as f64 / elapsed,
        "latency_ms": latency.summary(),
    });
    drop(all);
    Ok((result, timeline, latency))
}
