//! `polling-echo`: request/ack round trips over HTTP long-polling, one acked
//! `echo` in flight per client, with or without server affinity.
//!
//! Each client keeps a long-poll GET waiting and POSTs its `echo` (and the
//! pongs to the server's pings) while it waits: Engine.IO's one GET and one
//! POST per session. With `--affinity on` all of a client's requests go to
//! its own server (clients spread round robin); with `--affinity off` each
//! request goes to the next server in turn, as a round-robin balancer
//! without sticky sessions would send them. A request that fails (an error
//! status such as 400 `Session ID unknown`, no answer) or a session the
//! server closes is counted by kind; the client then opens a new session
//! after [`RECONNECT_DELAY`] and goes on until the end of the run.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::bail;
use futures_util::StreamExt;
use iocluster_protocol::socketio::{self, PacketKind};
use serde_json::{Value, json};

use super::{ACK_TIMEOUT, Targets, load_start, progress, sample};
use crate::polling::{self, Affinity, Failure, Incoming, Pending, Session};
use crate::stats::{Latency, SharedLatency, Timeline};

/// How long a client whose session failed waits before opening another
/// (socket.io-client's default reconnection delay).
const RECONNECT_DELAY: Duration = Duration::from_secs(1);

/// Keep-alive connections opened per server during setup: one for the
/// long-poll GET, one for the POST beside it.
const CONNECTIONS_PER_SERVER: usize = 2;

/// Runs the `polling-echo` scenario.
pub async fn run(
    targets: Targets,
    concurrency: usize,
    clients: usize,
    seconds: u64,
    affinity: Affinity,
) -> anyhow::Result<(Value, Timeline, Latency)> {
    let servers = polling::servers(&targets.urls)?;
    let mut tally = Tally::default();

    // Setup, not timed: every session open, its connections warm.
    let bar = progress(clients as u64, "connecting");
    let opened: Vec<(usize, Session, Option<Failure>)> = futures_util::stream::iter(0..clients)
        .map(|i| {
            let mut session = Session::new(servers.clone(), i, targets.source(i), affinity);
            let bar = bar.clone();
            async move {
                let mut failure = session.connect().await.err();
                if failure.is_none() {
                    failure = session.warm(CONNECTIONS_PER_SERVER).await.err();
                }
                bar.inc(1);
                (i, session, failure)
            }
        })
        .buffer_unordered(concurrency.max(1))
        .collect()
        .await;
    bar.finish_and_clear();
    let mut opened = opened;
    opened.sort_by_key(|(i, _, _)| *i);
    let mut sessions = Vec::with_capacity(clients);
    let mut connect_failed = 0u64;
    for (i, session, failure) in opened {
        tally.connections += session.connections;
        match failure {
            Some(failure) => {
                connect_failed += 1;
                tally.error(&failure);
            }
            None => sessions.push((i, session)),
        }
    }
    let connected = sessions.len();
    if connected == 0 {
        bail!(
            "no client connected ({connect_failed} failed: {}); first error: {}",
            kinds(&tally.errors),
            tally.first_error.as_deref().unwrap_or("none")
        );
    }
    let setup_connections = tally.connections;

    let done = Arc::new(AtomicU64::new(0));
    let (sampler, stop_sampler) = sample(done.clone(), "round trips");
    load_start();
    let started = Instant::now();
    let deadline = started + Duration::from_secs(seconds);
    let latency = Arc::new(SharedLatency::new());
    let tasks: Vec<_> = sessions
        .into_iter()
        .map(|(who, mut session)| {
            // Only what the load costs is counted from here on.
            session.requests = 0;
            session.connections = 0;
            let client = Echoer {
                who,
                deadline,
                done: done.clone(),
                latency: latency.clone(),
            };
            tokio::spawn(client.run(session))
        })
        .collect();
    let mut load = Tally::default();
    for task in tasks {
        load.merge(task.await?);
    }
    let latency = latency.merged();
    let elapsed = started.elapsed().as_secs_f64();
    let _ = stop_sampler.send(true);
    let timeline = sampler.await?;
    let trips = done.load(Ordering::Relaxed);
    let load_connections = load.connections;
    let load_requests = load.requests;
    tally.merge(load);
    let result = json!({
        "scenario": "polling-echo",
        "transport": "polling",
        "affinity": affinity.as_str(),
        "servers": servers.len(),
        "clients": clients,
        "connected": connected,
        "connect_failed": connect_failed,
        "round_trips": trips,
        "lost": tally.lost,
        "errors": tally.errors.values().sum::<u64>(),
        "errors_by_kind": tally.errors,
        "first_error": tally.first_error,
        "sessions_broken": tally.broken,
        "reconnects": tally.reconnects,
        "http_requests": load_requests,
        "http_connections_setup": setup_connections,
        "http_connections_load": load_connections,
        "seconds": elapsed,
        "round_trips_per_s": trips as f64 / elapsed,
        "http_requests_per_s": load_requests as f64 / elapsed,
        "latency_ms": latency.summary(),
    });
    Ok((result, timeline, latency))
}

/// `{"http_400": 3, ...}` as `http_400 ×3, ...`.
fn kinds(errors: &BTreeMap<String, u64>) -> String {
    let kinds: Vec<String> = errors.iter().map(|(k, n)| format!("{k} ×{n}")).collect();
    kinds.join(", ")
}

/// What went wrong for some clients, and what their requests cost.
#[derive(Default)]
struct Tally {
    /// Echoes without their ack (timed out, or the session broke first), or
    /// with other arguments than sent.
    lost: u64,
    /// Failures by [`Failure::kind`].
    errors: BTreeMap<String, u64>,
    first_error: Option<String>,
    /// Sessions that failed during the load.
    broken: u64,
    /// New sessions opened after one failed.
    reconnects: u64,
    requests: u64,
    connections: u64,
}

impl Tally {
    fn error(&mut self, failure: &Failure) {
        *self.errors.entry(failure.kind()).or_default() += 1;
        self.first_error.get_or_insert_with(|| failure.to_string());
    }

    fn merge(&mut self, other: Tally) {
        self.lost += other.lost;
        for (kind, n) in other.errors {
            *self.errors.entry(kind).or_default() += n;
        }
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
        self.broken += other.broken;
        self.reconnects += other.reconnects;
        self.requests += other.requests;
        self.connections += other.connections;
    }

    fn absorb(&mut self, session: &mut Session) {
        self.requests += std::mem::take(&mut session.requests);
        self.connections += std::mem::take(&mut session.connections);
    }
}

/// One client's load: echo after echo until the deadline, a new session
/// whenever one fails.
struct Echoer {
    who: usize,
    deadline: Instant,
    done: Arc<AtomicU64>,
    latency: Arc<SharedLatency>,
}

/// The echo waiting for its ack.
struct InFlight {
    id: u64,
    sent: Instant,
}

impl Echoer {
    async fn run(self, mut session: Session) -> Tally {
        let mut tally = Tally::default();
        let mut n = 0u64;
        loop {
            let ended = self.echo(&mut session, &mut n, &mut tally).await;
            tally.absorb(&mut session);
            let Err(failure) = ended else {
                return tally;
            };
            tally.broken += 1;
            tally.error(&failure);
            // A new session, until one opens or the run is over.
            loop {
                if Instant::now() + RECONNECT_DELAY >= self.deadline {
                    return tally;
                }
                tokio::time::sleep(RECONNECT_DELAY).await;
                let opened = session.connect().await;
                tally.absorb(&mut session);
                match opened {
                    Ok(()) => {
                        tally.reconnects += 1;
                        break;
                    }
                    Err(failure) => tally.error(&failure),
                }
            }
        }
    }

    /// Echoes on an open session until the deadline (and the last echo's
    /// ack or timeout); a failed request or a closed session ends it early.
    async fn echo(
        &self,
        session: &mut Session,
        n: &mut u64,
        tally: &mut Tally,
    ) -> Result<(), Failure> {
        // Records for the next POST: echoes and pongs.
        let mut outbox = String::new();
        let mut get: Option<Pending> = None;
        let mut post: Option<Pending> = None;
        let mut in_flight: Option<InFlight> = None;
        let result = loop {
            let now = Instant::now();
            if in_flight.is_none() {
                if now >= self.deadline {
                    break Ok(());
                }
                in_flight = Some(InFlight { id: *n, sent: now });
                polling::push_record(&mut outbox, &echo_record(*n));
            }
            if get.is_none() {
                get = Some(session.start_get());
            }
            if post.is_none() && !outbox.is_empty() {
                post = Some(session.start_post(std::mem::take(&mut outbox)));
            }
            let ack_deadline = in_flight
                .as_ref()
                .map_or(self.deadline, |echo| echo.sent + ACK_TIMEOUT);
            tokio::select! {
                answer = answer(&mut get) => {
                    get = None;
                    let payload = match session.finish(answer) {
                        Ok(payload) => payload,
                        Err(failure) => break Err(failure),
                    };
                    if let Err(failure) = self.on_payload(&payload, &mut in_flight, &mut outbox, n, tally) {
                        break Err(failure);
                    }
                }
                answer = answer(&mut post), if post.is_some() => {
                    post = None;
                    match session.finish(answer) {
                        Ok(body) if body == "ok" => {}
                        Ok(body) => break Err(Failure::Protocol(format!("POST answered {body:?}"))),
                        Err(failure) => break Err(failure),
                    }
                }
                _ = tokio::time::sleep_until(ack_deadline.into()), if in_flight.is_some() => {
                    in_flight = None;
                    tally.lost += 1;
                    *n += 1;
                }
            }
        };
        if result.is_err() && in_flight.is_some() {
            tally.lost += 1;
            *n += 1;
        }
        // Requests still on their way are dropped with their connections.
        result
    }

    /// A long-poll's payload: acks, pings, the end of the session.
    fn on_payload(
        &self,
        payload: &str,
        in_flight: &mut Option<InFlight>,
        outbox: &mut String,
        n: &mut u64,
        tally: &mut Tally,
    ) -> Result<(), Failure> {
        for item in polling::incoming(payload) {
            match item? {
                Incoming::Ping(data) => {
                    polling::push_record(outbox, &iocluster_protocol::engine::pong(data));
                }
                Incoming::Ack(id, args) => {
                    let Some(echo) = in_flight.as_ref() else {
                        continue;
                    };
                    if id != echo.id {
                        // The ack of an echo already counted lost.
                        continue;
                    }
                    if serde_json::from_str::<Value>(args).is_ok_and(|v| v == json!([id])) {
                        self.latency
                            .record(self.who, echo.sent.elapsed().as_micros() as u64);
                        self.done.fetch_add(1, Ordering::Relaxed);
                    } else {
                        tally.lost += 1;
                    }
                    *in_flight = None;
                    *n += 1;
                }
                Incoming::Closed => {
                    return Err(Failure::Closed("the server closed the session".to_owned()));
                }
                Incoming::Refused(error) => {
                    return Err(Failure::Closed(format!("namespace refused: {error}")));
                }
                Incoming::Connect | Incoming::Other => {}
            }
        }
        Ok(())
    }
}

/// A started request's answer; never, for none.
async fn answer(pending: &mut Option<Pending>) -> polling::Answer {
    match pending {
        Some(request) => request.await,
        None => std::future::pending().await,
    }
}

/// `42<n>["echo",<n>]`: the echo event with ack id and argument `n`.
fn echo_record(n: u64) -> String {
    socketio::engine_message(
        PacketKind::Event,
        "/",
        0,
        Some(n),
        &format!(r#"["echo",{n}]"#),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_echo_is_an_event_with_its_ack_id() {
        assert_eq!(echo_record(7), r#"427["echo",7]"#);
    }
}
