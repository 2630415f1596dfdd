//! `echo`: request/ack round trips, one in flight per client.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::{ACK_TIMEOUT, Targets, connect_many, load_start, sample};
use crate::stats::{Latency, SharedLatency, Timeline};

/// Runs the `echo` scenario.
pub async fn run(
    targets: Targets,
    concurrency: usize,
    clients: usize,
    seconds: u64,
) -> anyhow::Result<(Value, Timeline, Latency)> {
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
    Ok((result, timeline, latency))
}
