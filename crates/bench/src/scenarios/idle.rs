//! `idle`: hold N idle connections while the run script samples server
//! memory.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use iocluster_client::{Client, Socket};
use serde_json::{Value, json};

use super::{Targets, connect};
use crate::stats::{Latency, Timeline};

/// Runs the `idle` scenario.
pub async fn run(
    targets: Targets,
    concurrency: usize,
    connections: usize,
    seconds: u64,
) -> anyhow::Result<(Value, Timeline, Latency)> {
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
    Ok((result, Timeline::default(), Latency::new()))
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
