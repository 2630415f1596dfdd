//! Publishers against receivers, the engine of `fanout` and `rooms`: each
//! receiver counts and times the `tick`s it gets on its connection's own
//! task, and the run reports delivery, loss, duplicates and latency.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::bail;
use iocluster_client::{Received, Socket};
use serde_json::{Value, json};

use super::{load_start, sample};
use crate::stats::{Latency, Seen, SharedLatency, Timeline};

fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
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

/// Runs publishers (each a closure producing its next message) against
/// receivers, then reports delivery and latency.
#[allow(clippy::too_many_arguments)]
pub async fn broadcast_run(
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
