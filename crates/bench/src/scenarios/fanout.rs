//! `fanout`: N subscribers in one room; one publisher emits `bcast` at a
//! fixed rate; every subscriber records one-way latency.

use serde_json::{Value, json};

use super::broadcast::broadcast_run;
use super::{Targets, connect, connect_many};
use crate::stats::{Latency, Timeline};

/// Runs the `fanout` scenario.
pub async fn run(
    targets: Targets,
    concurrency: usize,
    subscribers: usize,
    rate: f64,
    seconds: u64,
    payload: usize,
) -> anyhow::Result<(Value, Timeline, Latency)> {
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
    Ok((result, timeline, latency))
}
