//! `connect-storm`: N clients connect at once, over WebSocket or HTTP
//! long-polling; the time until all are admitted.

use std::time::Instant;

use serde_json::{Value, json};

use super::{Targets, connect};
use crate::polling;
use crate::stats::{Latency, Timeline};

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum Transport {
    Websocket,
    Polling,
}
/// Runs the `connect-storm` scenario.
pub async fn run(
    targets: Targets,
    clients: usize,
    transport: Transport,
) -> anyhow::Result<(Value, Timeline, Latency)> {
    let started = Instant::now();
    let tasks: Vec<_> = (0..clients)
        .map(|i| {
            let targets = targets.clone();
            tokio::spawn(async move {
                let t = Instant::now();
                // Whatever keeps the connection open until the end.
                let held: Box<dyn std::any::Any + Send> = match transport {
                    Transport::Websocket => Box::new(connect(&targets, i).await?),
                    Transport::Polling => {
                        Box::new(polling::connect(targets.url(i), targets.source(i)).await?)
                    }
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
    Ok((result, Timeline::default(), latency))
}
