//! What the dashboard needs beyond the registry's present tense: a short
//! history of the cluster and an event tail. The only state the frontend
//! keeps, in memory, bounded, per frontend process (a restarted frontend
//! starts both afresh).
//!
//! - **History.** A sampler reads the cluster view every [`SAMPLE_EVERY`]
//!   and keeps [`WINDOW`] of points: the cluster's connections, queue depth,
//!   in-flight events and rates, and per node its connections, events/s and
//!   deliveries/s (io-nodes) or in-flight events (app-nodes). A node that
//!   stops being alive stays listed for [`WINDOW`] with its state: `draining`
//!   (an io-node that left the registry itself and is still closing its
//!   clients), `stopped` (it left cleanly) or `lapsed` (its lease ran out:
//!   it died or stalled). Rates come from each io-node's running totals in
//!   `P:node:<id>` divided by the time between the node's own `updated`
//!   stamps: a node writes its totals once per lease beat, so two readings
//!   closer than that see the same totals, and reading them against the
//!   frontend's clock (as the page once did) gave 0 one time in two and
//!   twice the rate the next.
//! - **Tail.** While a page polls `/api/v1/tail` (and [`WATCH_FOR`] after),
//!   a task subscribes to the command channels (`P:n:*`, `P:r:*`, `P:all`)
//!   and to `P:tail`, where io-nodes publish sampled copies of the client
//!   events they queue while `P:tail:on` exists; this task keeps that key
//!   alive. At most [`TAIL_PER_SECOND`] messages a second of each source
//!   (client events, commands) are decoded and kept (the rest are counted
//!   as skipped), the last [`TAIL_KEEP`] of them.
//!   Payloads are kept only while a page asks for them, and shown only to
//!   requests that ask.
//!
//! Reading the registry is `registry`'s; publishing is `admin`'s.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use iocluster_protocol::envelope::{Command, Event, EventKind};
use iocluster_protocol::keys::Keys;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::Frontend;
use crate::admin::ApiError;
use crate::registry::{self, ClusterView};

/// How often the sampler reads the cluster.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(2);
/// How much history is kept, and how long a node that stopped stays listed.
pub const WINDOW: Duration = Duration::from_secs(600);
/// Points per series: the window at one point per sample, and some slack
/// for a sampler that ran late.
const POINTS: usize = 320;
/// Most io-nodes, and most app-nodes, tracked: beyond it the longest gone
/// are forgotten first, and new ones are not tracked while all are alive.
const MAX_TRACKED: usize = 256;

/// Tail entries kept.
pub const TAIL_KEEP: usize = 1000;
/// Most tail messages decoded and kept per second, of client events and of
/// commands each (the rest are skipped).
pub const TAIL_PER_SECOND: u64 = 50;
/// How long after the last poll the tail keeps listening.
pub const WATCH_FOR: Duration = Duration::from_secs(30);
/// TTL of `P:tail:on`, renewed every [`SWITCH_EVERY`] while someone watches.
const SWITCH_TTL_MS: u64 = 10_000;
const SWITCH_EVERY: Duration = Duration::from_secs(3);
/// Longest payload kept, in bytes (cut at a character boundary).
const PAYLOAD_MAX: usize = 2048;
/// Most room or socket names kept per entry.
const NAMES_MAX: usize = 20;
/// Longest name kept (rooms, events, sids), in bytes.
const NAME_MAX: usize = 256;

/// The dashboard's state, shared by the sampler, the tail task and the
/// handlers. The locks are never held across an `.await`.
pub struct Dashboard {
    history: Mutex<History>,
    tail: Mutex<TailState>,
    /// Stops the sampler and the tail task at shutdown.
    pub(crate) stop: CancellationToken,
}

impl Dashboard {
    pub fn new(stop: CancellationToken) -> Dashboard {
        Dashboard {
            history: Mutex::new(History::default()),
            tail: Mutex::new(TailState::default()),
            stop,
        }
    }

    fn history(&self) -> MutexGuard<'_, History> {
        self.history
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn tail(&self) -> MutexGuard<'_, TailState> {
        self.tail
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Fills in the rates of a cluster view from the last samples.
    pub fn add_rates(&self, view: &mut ClusterView) {
        let history = self.history();
        let (mut events, mut deliveries) = (0.0, 0.0);
        for node in &mut view.io_nodes {
            if let Some(track) = history.io_nodes.get(&node.id) {
                node.events_per_second = round(track.events_rate);
                node.deliveries_per_second = round(track.deliveries_rate);
                events += track.events_rate;
                deliveries += track.deliveries_rate;
            }
        }
        view.events_per_second = round(events);
        view.deliveries_per_second = round(deliveries);
    }
}

fn round(rate: f64) -> f64 {
    (rate * 10.0).round() / 10.0
}

/// Where a node is in its life, as the registry shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeState {
    /// Its lease runs.
    Alive,
    /// An io-node that left the registry itself (a clean shutdown) and whose
    /// ledger still lists sockets: it is closing its clients.
    Draining,
    /// It left the registry itself, and has nothing left to close.
    Stopped,
    /// Its lease ran out without it leaving: it died, or stalled.
    Lapsed,
}

/// One sample of the whole cluster.
#[derive(Debug, Clone, Copy, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterPoint {
    pub time: u64,
    pub connections: u64,
    pub io_nodes: u64,
    pub app_nodes: u64,
    pub queue_depth: u64,
    pub inflight: u64,
    pub events_per_second: f64,
    pub deliveries_per_second: f64,
}

#[derive(Debug, Clone, Copy, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct IoPoint {
    pub time: u64,
    pub connections: u64,
    pub events_per_second: f64,
    pub deliveries_per_second: f64,
}

#[derive(Debug, Clone, Copy, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AppPoint {
    pub time: u64,
    pub inflight: u64,
}

/// An io-node's running totals as of its own `updated` stamp.
#[derive(Debug, Clone, Copy)]
struct Totals {
    started: u64,
    updated: u64,
    events: u64,
    deliveries: u64,
}

#[derive(Debug)]
struct IoTrack {
    url: String,
    started: u64,
    state: NodeState,
    /// When the state began (for `lapsed`: when the lease ended).
    since: u64,
    lease_end: u64,
    connections: u64,
    room_count: u64,
    users: u64,
    totals: Option<Totals>,
    events_rate: f64,
    deliveries_rate: f64,
    points: VecDeque<IoPoint>,
}

#[derive(Debug)]
struct AppTrack {
    state: NodeState,
    since: u64,
    lease_end: u64,
    inflight: u64,
    points: VecDeque<AppPoint>,
}

/// The samples of the last [`WINDOW`], and every node seen in it. Pure:
/// [`History::observe`] takes a reading, the sampler does the I/O.
#[derive(Debug, Default)]
pub struct History {
    cluster: VecDeque<ClusterPoint>,
    io_nodes: BTreeMap<String, IoTrack>,
    app_nodes: BTreeMap<String, AppTrack>,
}

fn push_bounded<T>(points: &mut VecDeque<T>, point: T) {
    if points.len() == POINTS {
        points.pop_front();
    }
    points.push_back(point);
}

impl History {
    /// The io-nodes whose ledger size the next [`History::observe`] needs:
    /// those that were alive and are missing from `view` before their lease
    /// ended (they left on their own), and those draining.
    pub fn ledger_checks(&self, view: &ClusterView) -> Vec<String> {
        self.io_nodes
            .iter()
            .filter(|(id, track)| match track.state {
                NodeState::Alive => {
                    track.lease_end > view.time && !view.io_nodes.iter().any(|n| &n.id == *id)
                }
                NodeState::Draining => true,
                NodeState::Stopped | NodeState::Lapsed => false,
            })
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// Takes one reading: the cluster view, and the ledger sizes asked for
    /// by [`History::ledger_checks`] (a missing one counts as empty).
    pub fn observe(&mut self, view: &ClusterView, ledgers: &BTreeMap<String, u64>) {
        let now = view.time;
        self.observe_io_nodes(view, ledgers);
        self.observe_app_nodes(view);
        let alive = |state: NodeState| state == NodeState::Alive;
        let (events, deliveries) = self
            .io_nodes
            .values()
            .filter(|track| alive(track.state))
            .fold((0.0, 0.0), |(e, d), track| {
                (e + track.events_rate, d + track.deliveries_rate)
            });
        push_bounded(
            &mut self.cluster,
            ClusterPoint {
                time: now,
                connections: view.connections,
                io_nodes: view.io_nodes.len() as u64,
                app_nodes: view.app_nodes.iter().filter(|a| a.alive).count() as u64,
                queue_depth: view.queue_depth,
                inflight: view.inflight,
                events_per_second: round(events),
                deliveries_per_second: round(deliveries),
            },
        );
        self.forget_before(now.saturating_sub(WINDOW.as_millis() as u64));
    }

    fn observe_io_nodes(&mut self, view: &ClusterView, ledgers: &BTreeMap<String, u64>) {
        let now = view.time;
        for node in &view.io_nodes {
            if !self.io_nodes.contains_key(&node.id) && !make_room(&mut self.io_nodes, |t| t.state)
            {
                continue;
            }
            let track = self
                .io_nodes
                .entry(node.id.clone())
                .or_insert_with(|| IoTrack {
                    url: String::new(),
                    started: node.started,
                    state: NodeState::Alive,
                    since: node.started.min(now),
                    lease_end: 0,
                    connections: 0,
                    room_count: 0,
                    users: 0,
                    totals: None,
                    events_rate: 0.0,
                    deliveries_rate: 0.0,
                    points: VecDeque::new(),
                });
            if track.state != NodeState::Alive || track.started != node.started {
                // Back (a restart under the same id): a new life.
                track.state = NodeState::Alive;
                track.since = node.started.min(now);
            }
            track.url.clone_from(&node.url);
            track.started = node.started;
            track.lease_end = now + node.lease_left_ms;
            track.connections = node.connections;
            track.room_count = node.room_count;
            track.users = node.users;
            let fresh = Totals {
                started: node.started,
                updated: node.updated,
                events: node.events,
                deliveries: node.deliveries,
            };
            match track.totals {
                Some(old)
                    if old.started == fresh.started
                        && fresh.updated > old.updated
                        && fresh.events >= old.events
                        && fresh.deliveries >= old.deliveries =>
                {
                    let seconds = (fresh.updated - old.updated) as f64 / 1000.0;
                    track.events_rate = (fresh.events - old.events) as f64 / seconds;
                    track.deliveries_rate = (fresh.deliveries - old.deliveries) as f64 / seconds;
                    track.totals = Some(fresh);
                }
                // The node has not written new totals since: its last rate
                // stands.
                Some(old) if old.started == fresh.started && old.updated == fresh.updated => {}
                // First reading, or totals that went back (a restart).
                _ => {
                    track.events_rate = 0.0;
                    track.deliveries_rate = 0.0;
                    track.totals = Some(fresh);
                }
            }
            push_bounded(
                &mut track.points,
                IoPoint {
                    time: now,
                    connections: node.connections,
                    events_per_second: round(track.events_rate),
                    deliveries_per_second: round(track.deliveries_rate),
                },
            );
        }
        for (id, track) in &mut self.io_nodes {
            if view.io_nodes.iter().any(|n| &n.id == id) {
                continue;
            }
            let ledger = ledgers.get(id).copied().unwrap_or(0);
            let next = match track.state {
                NodeState::Alive if track.lease_end <= now => NodeState::Lapsed,
                NodeState::Alive | NodeState::Draining if ledger > 0 => NodeState::Draining,
                NodeState::Alive | NodeState::Draining => NodeState::Stopped,
                state => state,
            };
            if next != track.state {
                track.since = if next == NodeState::Lapsed {
                    track.lease_end
                } else {
                    now
                };
                track.state = next;
                track.events_rate = 0.0;
                track.deliveries_rate = 0.0;
                if next != NodeState::Draining {
                    track.connections = 0;
                    track.room_count = 0;
                    track.users = 0;
                }
            }
        }
    }

    fn observe_app_nodes(&mut self, view: &ClusterView) {
        let now = view.time;
        for app in &view.app_nodes {
            if !self.app_nodes.contains_key(&app.id) && !make_room(&mut self.app_nodes, |t| t.state)
            {
                continue;
            }
            let lease_end = now.saturating_add_signed(app.lease_left_ms);
            let track = self
                .app_nodes
                .entry(app.id.clone())
                .or_insert_with(|| AppTrack {
                    state: if app.alive {
                        NodeState::Alive
                    } else {
                        NodeState::Lapsed
                    },
                    since: if app.alive { now } else { lease_end },
                    lease_end,
                    inflight: 0,
                    points: VecDeque::new(),
                });
            let state = if app.alive {
                NodeState::Alive
            } else {
                NodeState::Lapsed
            };
            if state != track.state {
                track.since = if app.alive { now } else { lease_end };
                track.state = state;
            }
            track.lease_end = lease_end;
            track.inflight = app.inflight;
            push_bounded(
                &mut track.points,
                AppPoint {
                    time: now,
                    inflight: app.inflight,
                },
            );
        }
        for (id, track) in &mut self.app_nodes {
            if track.state != NodeState::Alive || view.app_nodes.iter().any(|a| &a.id == id) {
                continue;
            }
            // Gone from the registry: it handed its events back itself
            // before its lease ended, or another app-node did after.
            if track.lease_end > now {
                track.state = NodeState::Stopped;
                track.since = now;
            } else {
                track.state = NodeState::Lapsed;
                track.since = track.lease_end;
            }
            track.inflight = 0;
        }
    }

    /// Drops points older than `cutoff`, and nodes gone since before it.
    fn forget_before(&mut self, cutoff: u64) {
        while self.cluster.front().is_some_and(|p| p.time < cutoff) {
            self.cluster.pop_front();
        }
        self.io_nodes
            .retain(|_, track| track.state == NodeState::Alive || track.since >= cutoff);
        for track in self.io_nodes.values_mut() {
            while track.points.front().is_some_and(|p| p.time < cutoff) {
                track.points.pop_front();
            }
        }
        self.app_nodes
            .retain(|_, track| track.state == NodeState::Alive || track.since >= cutoff);
        for track in self.app_nodes.values_mut() {
            while track.points.front().is_some_and(|p| p.time < cutoff) {
                track.points.pop_front();
            }
        }
    }

    /// The history from `after` (ms, exclusive) on, as `/api/v1/history`
    /// serves it.
    pub fn since(&self, after: u64) -> serde_json::Value {
        let points = |time: u64| time > after;
        let io_nodes: Vec<serde_json::Value> = self
            .io_nodes
            .iter()
            .map(|(id, t)| {
                let series: Vec<&IoPoint> = t.points.iter().filter(|p| points(p.time)).collect();
                json!({
                    "id": id,
                    "url": t.url,
                    "state": t.state,
                    "since": t.since,
                    "started": t.started,
                    "leaseEnd": t.lease_end,
                    "connections": t.connections,
                    "roomCount": t.room_count,
                    "users": t.users,
                    "eventsPerSecond": round(t.events_rate),
                    "deliveriesPerSecond": round(t.deliveries_rate),
                    "series": series,
                })
            })
            .collect();
        let app_nodes: Vec<serde_json::Value> = self
            .app_nodes
            .iter()
            .map(|(id, t)| {
                let series: Vec<&AppPoint> = t.points.iter().filter(|p| points(p.time)).collect();
                json!({
                    "id": id,
                    "state": t.state,
                    "since": t.since,
                    "leaseEnd": t.lease_end,
                    "inflight": t.inflight,
                    "series": series,
                })
            })
            .collect();
        let cluster: Vec<&ClusterPoint> = self.cluster.iter().filter(|p| points(p.time)).collect();
        json!({
            "time": self.cluster.back().map_or(0, |p| p.time),
            "intervalMs": SAMPLE_EVERY.as_millis() as u64,
            "windowMs": WINDOW.as_millis() as u64,
            "cluster": cluster,
            "ioNodes": io_nodes,
            "appNodes": app_nodes,
        })
    }
}

/// Whether a new node may be tracked: under [`MAX_TRACKED`], or after
/// forgetting the node gone the longest.
fn make_room<T>(tracks: &mut BTreeMap<String, T>, state: impl Fn(&T) -> NodeState) -> bool
where
    T: HasSince,
{
    if tracks.len() < MAX_TRACKED {
        return true;
    }
    let oldest = tracks
        .iter()
        .filter(|(_, track)| state(track) != NodeState::Alive)
        .min_by_key(|(_, track)| track.since())
        .map(|(id, _)| id.clone());
    match oldest {
        Some(id) => {
            tracks.remove(&id);
            true
        }
        None => false,
    }
}

trait HasSince {
    fn since(&self) -> u64;
}

impl HasSince for IoTrack {
    fn since(&self) -> u64 {
        self.since
    }
}

impl HasSince for AppTrack {
    fn since(&self) -> u64 {
        self.since
    }
}

/// Reads the cluster every [`SAMPLE_EVERY`] into the history, until
/// shutdown.
pub async fn sample(frontend: Arc<Frontend>) {
    let mut ticker = tokio::time::interval(SAMPLE_EVERY);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut outage = iocluster_ops::Outage::new("dashboard sampler");
    let stop = frontend.dashboard.stop.clone();
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = ticker.tick() => {}
        }
        match sample_once(&frontend).await {
            Ok(()) => {
                outage.recovered();
                frontend.set_redis_ok(true);
            }
            Err(error) => {
                frontend.set_redis_ok(false);
                outage.failed("cannot sample the cluster", &error);
            }
        }
    }
}

async fn sample_once(frontend: &Frontend) -> redis::RedisResult<()> {
    let mut redis = frontend.redis();
    let view = registry::cluster_view(&mut redis, &frontend.keys).await?;
    let checks = frontend.dashboard.history().ledger_checks(&view);
    let mut ledgers = BTreeMap::new();
    if !checks.is_empty() {
        let mut pipe = redis::pipe();
        for id in &checks {
            pipe.cmd("HLEN").arg(frontend.keys.ledger(id));
        }
        let lengths: Vec<u64> = pipe.query_async(&mut redis).await?;
        ledgers.extend(checks.into_iter().zip(lengths));
    }
    frontend.dashboard.history().observe(&view, &ledgers);
    Ok(())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HistoryQuery {
    /// Only points after this time (ms since the epoch).
    #[serde(default)]
    after: u64,
}

/// `GET /api/v1/history?after=`
pub async fn history(
    State(frontend): State<Arc<Frontend>>,
    query: Result<Query<HistoryQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(query) = query.map_err(|rejection| ApiError::invalid(rejection.body_text()))?;
    let body = frontend.dashboard.history().since(query.after);
    Ok(Json(body).into_response())
}

/// One thing seen on the tail.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TailEntry {
    pub seq: u64,
    /// When the frontend saw it (ms since the epoch).
    pub time: u64,
    /// `client` (an event a client sent, sampled by its io-node) or
    /// `command` (published by an app-node or the admin API).
    pub source: &'static str,
    /// `connect`, `message`, `disconnect` (client) or the command's type.
    pub kind: &'static str,
    /// The channel it came on, without the prefix (`n:io1`, `r:/,news`,
    /// `all`, `tail`).
    pub channel: String,
    /// The io-node holding the socket (client events, commands to one node).
    pub node: Option<String>,
    pub nsp: String,
    pub sid: Option<String>,
    /// The event name (a client's `message`, an `emit`).
    pub event: Option<String>,
    /// Rooms: a client event's snapshot, an emit's target rooms, a join's
    /// or leave's rooms (at most [`NAMES_MAX`]).
    pub rooms: Vec<String>,
    /// Sockets an emit names.
    pub sids: Vec<String>,
    /// Anything else worth a glance: `seq 3`, a disconnect's reason, a
    /// refusal's message.
    pub detail: Option<String>,
    /// JSON text, cut at [`PAYLOAD_MAX`] bytes; kept only while a page asks
    /// for payloads.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payload: Option<String>,
}

#[derive(Debug, Default)]
struct TailState {
    entries: VecDeque<TailEntry>,
    last_seq: u64,
    watched_until: Option<Instant>,
    payloads_until: Option<Instant>,
    /// Whether the tail task runs (started by a poll, ends unwatched).
    running: bool,
    /// Whether it is subscribed right now.
    subscribed: bool,
    /// Messages left out over the rate limit, since the frontend started.
    skipped: u64,
    /// Per source (commands, client events): the current one-second window
    /// (seconds since `epoch`) and the messages taken in it.
    windows: [(u64, u64); 2],
    epoch: Option<Instant>,
}

impl TailState {
    fn watched(&self) -> bool {
        self.watched_until
            .is_some_and(|until| until > Instant::now())
    }

    fn payloads(&self) -> bool {
        self.payloads_until
            .is_some_and(|until| until > Instant::now())
    }

    /// Takes one of this second's messages of a source (client events
    /// and commands have a budget each, so a flood of one leaves room for
    /// the other); `false` (counted) when spent.
    fn admit(&mut self, client: bool) -> bool {
        let epoch = *self.epoch.get_or_insert_with(Instant::now);
        let second = epoch.elapsed().as_secs();
        let window = &mut self.windows[usize::from(client)];
        if window.0 != second {
            *window = (second, 0);
        }
        if window.1 >= TAIL_PER_SECOND {
            self.skipped += 1;
            return false;
        }
        window.1 += 1;
        true
    }

    fn push(&mut self, mut entry: TailEntry) {
        self.last_seq += 1;
        entry.seq = self.last_seq;
        if self.entries.len() == TAIL_KEEP {
            self.entries.pop_front();
        }
        self.entries.push_back(entry);
    }
}

fn cut(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

fn names(list: &[String]) -> Vec<String> {
    list.iter()
        .take(NAMES_MAX)
        .map(|name| cut(name, NAME_MAX))
        .collect()
}

/// The event name of `["name", ...args]` JSON text, without parsing the
/// arguments.
fn event_name(data: &str) -> Option<String> {
    let rest = data.trim_start().strip_prefix('[')?;
    let mut values = serde_json::Deserializer::from_str(rest).into_iter::<String>();
    values.next()?.ok().map(|name| cut(&name, NAME_MAX))
}

/// The entries one message of `channel` (a name under this prefix) makes.
fn decode_message(
    keys: &Keys,
    channel: &str,
    payload: &[u8],
    with_payloads: bool,
) -> Vec<TailEntry> {
    let short = channel
        .strip_prefix(keys.prefix())
        .and_then(|rest| rest.strip_prefix(':'))
        .unwrap_or(channel);
    let time = iocluster_ops::unix_ms();
    let keep = |data: &str| with_payloads.then(|| cut(data, PAYLOAD_MAX));
    let entry = |source, kind, nsp: &str| TailEntry {
        seq: 0,
        time,
        source,
        kind,
        channel: short.to_owned(),
        node: None,
        nsp: cut(nsp, NAME_MAX),
        sid: None,
        event: None,
        rooms: Vec::new(),
        sids: Vec::new(),
        detail: None,
        payload: None,
    };
    if channel == keys.tail() {
        let Ok(events) = Event::decode_all(payload) else {
            return Vec::new();
        };
        return events
            .into_iter()
            .map(|event| {
                let mut e = entry("client", event.kind.as_str(), &event.nsp);
                e.node = Some(cut(&event.node, NAME_MAX));
                e.sid = Some(cut(&event.sid, NAME_MAX));
                e.rooms = names(&event.rooms);
                match event.kind {
                    EventKind::Message => {
                        let data = event.data.as_deref().unwrap_or("[]");
                        e.event = event_name(data);
                        e.payload = keep(data);
                        e.detail = Some(match event.ack {
                            Some(ack) => format!("seq {}, ack {ack}", event.seq),
                            None => format!("seq {}", event.seq),
                        });
                    }
                    EventKind::Connect => {
                        e.payload = event.data.as_deref().and_then(keep);
                        e.detail = Some(format!("from {}", cut(&event.handshake.address, 64)));
                    }
                    EventKind::Disconnect => {
                        e.detail = event.reason.as_deref().map(|r| cut(r, NAME_MAX));
                    }
                }
                e
            })
            .collect();
    }
    let node = short.strip_prefix("n:").map(|node| cut(node, NAME_MAX));
    Command::decode_all(payload)
        .filter_map(Result::ok)
        .map(|command| {
            let kind = command.type_name();
            let mut e = match &command {
                Command::Emit(c) => entry("command", kind, &c.nsp),
                Command::Ack(c) => entry("command", kind, &c.nsp),
                Command::Join(c) => entry("command", kind, &c.nsp),
                Command::Leave(c) => entry("command", kind, &c.nsp),
                Command::SetData(c) => entry("command", kind, &c.nsp),
                Command::Disconnect(c) => entry("command", kind, &c.nsp),
                Command::Done(c) => entry("command", kind, &c.nsp),
                Command::Release(c) => entry("command", kind, &c.nsp),
                // Folded into the emit after it by `decode_all`.
                Command::Offset(_) => entry("command", kind, ""),
            };
            e.node.clone_from(&node);
            match command {
                Command::Release(c) => e.sid = Some(cut(&c.sid, NAME_MAX)),
                Command::Offset(_) => {}
                Command::Emit(c) => {
                    e.event = event_name(&c.data);
                    e.detail = c.offset.as_deref().map(|offset| format!("offset {offset}"));
                    e.rooms = names(&c.rooms);
                    e.sids = names(&c.sids);
                    e.payload = keep(&c.data);
                    let excluded = c.except_rooms.len() + c.except_sids.len();
                    if excluded > 0 {
                        e.detail = Some(format!("{excluded} excluded"));
                    }
                }
                Command::Ack(c) => {
                    e.sid = Some(cut(&c.sid, NAME_MAX));
                    e.detail = Some(format!("ack {}", c.id));
                    e.payload = keep(&c.data);
                }
                Command::Join(c) => {
                    e.sid = Some(cut(&c.sid, NAME_MAX));
                    e.rooms = names(&c.rooms);
                }
                Command::Leave(c) => {
                    e.sid = Some(cut(&c.sid, NAME_MAX));
                    e.rooms = names(&c.rooms);
                }
                Command::SetData(c) => {
                    e.sid = Some(cut(&c.sid, NAME_MAX));
                    e.payload = keep(&c.data);
                }
                Command::Disconnect(c) => {
                    e.sid = Some(cut(&c.sid, NAME_MAX));
                    e.detail = c.close.then(|| "close".to_owned());
                }
                Command::Done(c) => {
                    e.sid = Some(cut(&c.sid, NAME_MAX));
                    e.detail = Some(match &c.reject {
                        Some(reject) => {
                            format!("seq {}, refused: {}", c.seq, cut(&reject.message, NAME_MAX))
                        }
                        None => format!("seq {}", c.seq),
                    });
                }
            }
            e
        })
        .collect()
}

/// A glob pattern matching `text` literally, then `*`.
fn literal_pattern(text: &str) -> String {
    let mut pattern = String::with_capacity(text.len() + 1);
    for c in text.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            pattern.push('\\');
        }
        pattern.push(c);
    }
    pattern.push('*');
    pattern
}

/// Runs while someone watches: subscribes, keeps `P:tail:on`, records.
async fn tail_task(frontend: Arc<Frontend>) {
    let dashboard = &frontend.dashboard;
    let mut backoff = iocluster_ops::Backoff::new(Duration::from_secs(5));
    loop {
        {
            let mut tail = dashboard.tail();
            if !tail.watched() || dashboard.stop.is_cancelled() {
                tail.running = false;
                return;
            }
        }
        let watched = watch(&frontend).await;
        dashboard.tail().subscribed = false;
        match watched {
            Ok(()) => backoff.reset(),
            Err(error) => {
                tracing::warn!(%error, "event tail: Redis subscription failed; retrying");
                backoff.wait().await;
            }
        }
    }
}

async fn watch(frontend: &Frontend) -> redis::RedisResult<()> {
    let dashboard = &frontend.dashboard;
    let keys = &frontend.keys;
    let (mut sink, mut stream) = frontend
        .client
        .pubsub(frontend.keys.prefix())
        .await?
        .split();
    let prefix = keys.prefix();
    sink.psubscribe(&[
        literal_pattern(&format!("{prefix}:n:")),
        literal_pattern(&format!("{prefix}:r:")),
    ])
    .await?;
    sink.subscribe(&[keys.all_channel(), keys.tail()]).await?;
    dashboard.tail().subscribed = true;
    tracing::debug!("event tail: watching");
    let mut switch = tokio::time::interval(SWITCH_EVERY);
    loop {
        tokio::select! {
            () = dashboard.stop.cancelled() => return Ok(()),
            _ = switch.tick() => {
                if !dashboard.tail().watched() {
                    tracing::debug!("event tail: nobody watches");
                    return Ok(());
                }
                redis::cmd("SET")
                    .arg(keys.tail_on())
                    .arg(1)
                    .arg("PX")
                    .arg(SWITCH_TTL_MS)
                    .query_async::<()>(&mut frontend.redis())
                    .await?;
            }
            message = stream.next() => {
                let Some(message) = message else {
                    return Err(redis::RedisError::from((
                        redis::ErrorKind::Io,
                        "subscription connection lost",
                    )));
                };
                let with_payloads = {
                    let mut tail = dashboard.tail();
                    if !tail.admit(message.get_channel_name() == keys.tail()) {
                        continue;
                    }
                    tail.payloads()
                };
                let entries = decode_message(
                    keys,
                    message.get_channel_name(),
                    message.get_payload_bytes(),
                    with_payloads,
                );
                let mut tail = dashboard.tail();
                for entry in entries {
                    tail.push(entry);
                }
            }
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TailQuery {
    /// Only entries with a larger `seq`.
    #[serde(default)]
    after: u64,
    /// Most entries returned (the newest), 1 to [`TAIL_KEEP`]; 200 by default.
    limit: Option<usize>,
    /// `client` or `command`.
    source: Option<String>,
    /// `connect`, `message`, `disconnect`, `emit`, `ack`, `join`, `leave`,
    /// `data`, `done`.
    kind: Option<String>,
    nsp: Option<String>,
    /// Text found in the sid, node, event name, channel or a room.
    q: Option<String>,
    /// Include payloads (and keep them from now on, for [`WATCH_FOR`]).
    #[serde(default)]
    payloads: bool,
}

/// `GET /api/v1/tail?after=`: the entries after `after`, and the tail kept
/// running for [`WATCH_FOR`].
pub async fn tail(
    State(frontend): State<Arc<Frontend>>,
    query: Result<Query<TailQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(query) = query.map_err(|rejection| ApiError::invalid(rejection.body_text()))?;
    let limit = query.limit.unwrap_or(200);
    if limit == 0 || limit > TAIL_KEEP {
        return Err(ApiError::invalid(format!("limit must be 1 to {TAIL_KEEP}")));
    }
    if let Some(source) = &query.source
        && source != "client"
        && source != "command"
    {
        return Err(ApiError::invalid("source must be client or command"));
    }
    if let Some(text) = [&query.kind, &query.nsp, &query.q]
        .into_iter()
        .flatten()
        .find(|text| text.len() > NAME_MAX)
    {
        return Err(ApiError::invalid(format!(
            "filters are at most {NAME_MAX} bytes ({} given)",
            text.len()
        )));
    }
    let q = query.q.as_deref().filter(|q| !q.is_empty());
    let matches = |e: &TailEntry| {
        query.source.as_deref().is_none_or(|s| s == e.source)
            && query.kind.as_deref().is_none_or(|k| k == e.kind)
            && query.nsp.as_deref().is_none_or(|n| n == e.nsp)
            && q.is_none_or(|q| {
                e.channel.contains(q)
                    || e.sid.as_deref().is_some_and(|s| s.contains(q))
                    || e.node.as_deref().is_some_and(|s| s.contains(q))
                    || e.event.as_deref().is_some_and(|s| s.contains(q))
                    || e.rooms.iter().chain(&e.sids).any(|r| r.contains(q))
            })
    };
    let now = Instant::now();
    let (entries, last, subscribed, skipped, start) = {
        let mut tail = frontend.dashboard.tail();
        tail.watched_until = Some(now + WATCH_FOR);
        if query.payloads {
            tail.payloads_until = Some(now + WATCH_FOR);
        }
        let start = !tail.running;
        tail.running = true;
        let mut entries: Vec<TailEntry> = tail
            .entries
            .iter()
            .rev()
            .take_while(|e| e.seq > query.after)
            .filter(|e| matches(e))
            .take(limit)
            .cloned()
            .collect();
        entries.reverse();
        (entries, tail.last_seq, tail.subscribed, tail.skipped, start)
    };
    if start {
        tokio::spawn(tail_task(frontend.clone()));
    }
    let entries: Vec<TailEntry> = entries
        .into_iter()
        .map(|mut e| {
            if !query.payloads {
                e.payload = None;
            }
            e
        })
        .collect();
    Ok(Json(json!({
        "watching": subscribed,
        "next": last,
        "skipped": skipped,
        "perSecond": TAIL_PER_SECOND,
        "entries": entries,
    }))
    .into_response())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc as StdArc;

    use iocluster_protocol::envelope::{self, Handshake};

    use super::*;
    use crate::registry::{AppNodeView, IoNodeView};

    fn io(id: &str, updated: u64, events: u64) -> IoNodeView {
        IoNodeView {
            id: id.to_owned(),
            url: format!("http://{id}"),
            connections: 3,
            lease_left_ms: 4_000,
            started: 1_000,
            updated,
            namespaces: BTreeMap::new(),
            rooms: BTreeMap::new(),
            room_count: 0,
            users: 0,
            events,
            deliveries: events * 2,
            events_per_second: 0.0,
            deliveries_per_second: 0.0,
        }
    }

    fn view(time: u64, io_nodes: Vec<IoNodeView>, apps: Vec<AppNodeView>) -> ClusterView {
        ClusterView {
            time,
            connections: io_nodes.iter().map(|n| n.connections).sum(),
            io_nodes,
            app_nodes: apps,
            served_namespaces: Vec::new(),
            namespaces: BTreeMap::new(),
            rooms: Vec::new(),
            users: 0,
            queue_depth: 0,
            inflight: 0,
            events: 0,
            deliveries: 0,
            events_per_second: 0.0,
            deliveries_per_second: 0.0,
        }
    }

    fn app(id: &str, lease_left_ms: i64) -> AppNodeView {
        AppNodeView {
            id: id.to_owned(),
            alive: lease_left_ms > 0,
            lease_left_ms,
            inflight: 1,
        }
    }

    fn state(history: &History, id: &str) -> (NodeState, u64) {
        let track = &history.io_nodes[id];
        (track.state, track.since)
    }

    #[test]
    fn rates_come_from_the_nodes_own_stamps() {
        let mut history = History::default();
        let none = BTreeMap::new();
        // The node writes its totals every 2 s; the sampler reads every 1 s.
        history.observe(&view(10_000, vec![io("a", 9_500, 100)], vec![]), &none);
        history.observe(&view(11_000, vec![io("a", 11_500, 300)], vec![]), &none);
        assert_eq!(history.io_nodes["a"].events_rate, 100.0);
        assert_eq!(history.io_nodes["a"].deliveries_rate, 200.0);
        // No new totals: the rate stands rather than reading 0.
        history.observe(&view(12_000, vec![io("a", 11_500, 300)], vec![]), &none);
        assert_eq!(history.io_nodes["a"].events_rate, 100.0);
        let last = history.cluster.back().unwrap();
        assert_eq!(last.events_per_second, 100.0);
        assert_eq!(last.deliveries_per_second, 200.0);
        // Totals that went back (a restart): no negative rate.
        history.observe(&view(13_000, vec![io("a", 13_500, 5)], vec![]), &none);
        assert_eq!(history.io_nodes["a"].events_rate, 0.0);
        let mut cluster = view(13_000, vec![io("a", 13_500, 5)], vec![]);
        let dashboard = Dashboard::new(CancellationToken::new());
        *dashboard.history() = history;
        dashboard.add_rates(&mut cluster);
        assert_eq!(cluster.events_per_second, 0.0);
    }

    #[test]
    fn a_dead_node_stays_listed_as_lapsed_then_goes() {
        let mut history = History::default();
        let none = BTreeMap::new();
        history.observe(
            &view(10_000, vec![io("a", 9_000, 0), io("b", 9_000, 0)], vec![]),
            &none,
        );
        // b's lease (4 s) runs out: it is no longer in the view.
        let later = view(15_000, vec![io("a", 15_000, 0)], vec![]);
        assert!(history.ledger_checks(&later).is_empty());
        history.observe(&later, &none);
        assert_eq!(state(&history, "b"), (NodeState::Lapsed, 14_000));
        assert_eq!(state(&history, "a").0, NodeState::Alive);
        let json = history.since(0);
        assert_eq!(json["ioNodes"][1]["state"], "lapsed");
        // Forgotten a window after it died.
        let window = WINDOW.as_millis() as u64;
        history.observe(
            &view(14_000 + window + 1, vec![io("a", 15_000, 0)], vec![]),
            &none,
        );
        assert!(!history.io_nodes.contains_key("b"));
        assert!(history.io_nodes["a"].points.iter().all(|p| p.time > 14_000));
    }

    #[test]
    fn a_node_that_leaves_drains_then_stops() {
        let mut history = History::default();
        history.observe(
            &view(10_000, vec![io("a", 9_000, 0)], vec![]),
            &BTreeMap::new(),
        );
        // Gone 1 s later, well before its lease (4 s) would end.
        let gone = view(11_000, vec![], vec![]);
        assert_eq!(history.ledger_checks(&gone), vec!["a".to_owned()]);
        history.observe(&gone, &BTreeMap::from([("a".to_owned(), 2)]));
        assert_eq!(state(&history, "a"), (NodeState::Draining, 11_000));
        history.observe(
            &view(12_000, vec![], vec![]),
            &BTreeMap::from([("a".to_owned(), 0)]),
        );
        assert_eq!(state(&history, "a"), (NodeState::Stopped, 12_000));
        // And back under the same id: alive again.
        let mut back = io("a", 13_000, 0);
        back.started = 12_500;
        history.observe(&view(13_000, vec![back], vec![]), &BTreeMap::new());
        assert_eq!(state(&history, "a"), (NodeState::Alive, 12_500));
    }

    #[test]
    fn app_nodes_lapse_or_stop() {
        let mut history = History::default();
        let none = BTreeMap::new();
        history.observe(
            &view(10_000, vec![], vec![app("x", 3_000), app("y", 3_000)]),
            &none,
        );
        // x's lease lapsed (still listed, not alive); y left cleanly.
        history.observe(&view(14_000, vec![], vec![app("x", -1_000)]), &none);
        assert_eq!(history.app_nodes["x"].state, NodeState::Lapsed);
        assert_eq!(history.app_nodes["x"].since, 13_000);
        assert_eq!(history.app_nodes["y"].state, NodeState::Lapsed);
        history.observe(&view(15_000, vec![], vec![app("z", 3_000)]), &none);
        history.observe(&view(16_000, vec![], vec![]), &none);
        assert_eq!(history.app_nodes["z"].state, NodeState::Stopped);
    }

    #[test]
    fn history_is_bounded() {
        let mut history = History::default();
        for i in 0..(MAX_TRACKED as u64 + 10) {
            let id = format!("n{i}");
            history.observe(&view(i * 10, vec![io(&id, i, 0)], vec![]), &BTreeMap::new());
        }
        assert!(history.io_nodes.len() <= MAX_TRACKED);
        assert!(history.cluster.len() <= POINTS);
    }

    #[test]
    fn tail_entries_from_events_and_commands() {
        let keys = Keys::new("p");
        let event = Event {
            kind: EventKind::Message,
            node: "io1".into(),
            sid: "io1.Xy".into(),
            nsp: "/".into(),
            seq: 2,
            data: Some(r#"["chat", {"text": "secret"}]"#.into()),
            bin: Vec::new(),
            ack: None,
            reason: None,
            rooms: vec!["lobby".into()],
            sdata: None,
            handshake: StdArc::new(Handshake::default()),
            recovered: false,
            seen: Vec::new(),
        };
        let mut item = event.encode();
        item.extend(event.encode());
        let entries = decode_message(&keys, "p:tail", &item, false);
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0].source, "client");
        assert_eq!(entries[0].event.as_deref(), Some("chat"));
        assert_eq!(entries[0].rooms, vec!["lobby".to_owned()]);
        assert_eq!(entries[0].channel, "tail");
        assert_eq!(entries[0].payload, None);
        let with = decode_message(&keys, "p:tail", &item, true);
        assert!(with[0].payload.as_deref().unwrap().contains("secret"));

        let emit = Command::Emit(envelope::Emit {
            nsp: "/".into(),
            rooms: vec!["news".into()],
            data: r#"["breaking", 1]"#.into(),
            ..envelope::Emit::default()
        });
        let entries = decode_message(&keys, "p:r:/,news", &emit.encode(), false);
        assert_eq!(entries[0].kind, "emit");
        assert_eq!(entries[0].channel, "r:/,news");
        assert_eq!(entries[0].event.as_deref(), Some("breaking"));
        let done = Command::Done(envelope::Done {
            nsp: "/".into(),
            sid: "io1.Xy".into(),
            seq: 4,
            reject: None,
            app: None,
        });
        let entries = decode_message(&keys, "p:n:io1", &done.encode(), false);
        assert_eq!(entries[0].node.as_deref(), Some("io1"));
        assert_eq!(entries[0].detail.as_deref(), Some("seq 4"));
        // Garbage makes nothing, and no panic.
        assert!(decode_message(&keys, "p:tail", b"\x93\x01", false).is_empty());
        assert!(decode_message(&keys, "p:all", b"\xff\xff", false).is_empty());
    }

    #[test]
    fn names_and_patterns() {
        assert_eq!(event_name(r#"["hi", 1, 2]"#).as_deref(), Some("hi"));
        assert_eq!(event_name(r#" [ "a\"b" ]"#).as_deref(), Some("a\"b"));
        assert_eq!(event_name("[1]"), None);
        assert_eq!(event_name("{}"), None);
        assert_eq!(cut("ééé", 3), "é…");
        assert_eq!(literal_pattern("a*b[c]:n:"), r"a\*b\[c\]:n:*");
    }

    #[test]
    fn the_tail_keeps_the_budget_and_the_last_entries() {
        let mut tail = TailState::default();
        let taken = (0..TAIL_PER_SECOND * 2)
            .filter(|_| tail.admit(false))
            .count() as u64;
        // Within a second, or across two at most.
        assert!((TAIL_PER_SECOND..=TAIL_PER_SECOND * 2).contains(&taken));
        // Commands spent their budget; client events have theirs.
        assert!(tail.admit(true));
        let entry = decode_message(
            &Keys::new("p"),
            "p:all",
            &Command::Emit(envelope::Emit::default()).encode(),
            false,
        )
        .remove(0);
        for _ in 0..TAIL_KEEP + 5 {
            tail.push(entry.clone());
        }
        assert_eq!(tail.entries.len(), TAIL_KEEP);
        assert_eq!(tail.entries.front().unwrap().seq, 6);
    }
}
