//! The app-node runtime: the handlers an application registers, and the loop
//! that takes events from the queue and runs them.
//!
//! Reliability: an event moves atomically from the queue to this app-node's
//! in-flight list (`LMOVE`, several per round trip through a script), and
//! leaves it only when its handler is done, in the same atomic step that
//! publishes the "done" to its io-node. An app-node whose lease lapses has its
//! in-flight events moved back to the queue by any other app-node. Together:
//! every event is handled at least once; it is handled twice only when an
//! app-node dies (or stalls past its lease) between running a handler and
//! reporting it done.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::{FutureExt, StreamExt};
use iocluster_protocol::envelope::{self, Command, Event, EventKind, Reply};
use iocluster_protocol::keys::Keys;
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::config::AppConfig;
use crate::payload::{FromPayload, Payload};
use crate::socket::{Ack, Ctx, Emitter, Publish, Socket};

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;
type ConnectHandler = Arc<dyn Fn(Socket) -> BoxFuture<Result<(), Reject>> + Send + Sync>;
type EventHandler = Arc<dyn Fn(Socket, Payload, Option<Ack>) -> BoxFuture<()> + Send + Sync>;
type DisconnectHandler = Arc<dyn Fn(Socket, String) -> BoxFuture<()> + Send + Sync>;
type SessionHandler = Arc<dyn Fn(Socket) -> BoxFuture<()> + Send + Sync>;
type AnyEventHandler =
    Arc<dyn Fn(Socket, String, Payload, Option<Ack>) -> BoxFuture<()> + Send + Sync>;

/// A refused connection: the client's `connect_error` gets `message` (and
/// `data`).
#[derive(Debug, Clone)]
pub struct Reject {
    pub message: String,
    pub data: Option<serde_json::Value>,
}

impl Reject {
    pub fn new(message: impl Into<String>) -> Reject {
        Reject {
            message: message.into(),
            data: None,
        }
    }

    pub fn with_data(mut self, data: serde_json::Value) -> Reject {
        self.data = Some(data);
        self
    }
}

/// The handlers of one namespace.
#[derive(Default)]
pub struct Namespace {
    on_connection: Option<ConnectHandler>,
    events: HashMap<String, EventHandler>,
    on_any: Option<AnyEventHandler>,
    on_disconnect: Option<DisconnectHandler>,
}

impl Namespace {
    /// Runs when a client connects; `Err` refuses the connection. Without it,
    /// every connection is accepted. The client gets CONNECT only after this
    /// returns, and its later events wait until then.
    pub fn on_connection<F, Fut>(&mut self, handler: F) -> &mut Namespace
    where
        F: Fn(Socket) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), Reject>> + Send + 'static,
    {
        self.on_connection = Some(Arc::new(move |socket| Box::pin(handler(socket))));
        self
    }

    /// Runs for each `event` a client emits. `T` receives the arguments (see
    /// [`FromPayload`]); arguments that do not fit are logged and the event
    /// dropped. `ack` is set when the client asked for an acknowledgement.
    pub fn on<T, F, Fut>(&mut self, event: &str, handler: F) -> &mut Namespace
    where
        T: FromPayload + Send + 'static,
        F: Fn(Socket, T, Option<Ack>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let handler = Arc::new(handler);
        let name = event.to_owned();
        self.events.insert(
            event.to_owned(),
            Arc::new(move |socket, payload, ack| {
                let handler = handler.clone();
                let name = name.clone();
                Box::pin(async move {
                    match T::from_payload(payload) {
                        Ok(args) => handler(socket, args, ack).await,
                        Err(error) => tracing::warn!(event = %name, %error, "arguments do not fit the handler"),
                    }
                })
            }),
        );
        self
    }

    /// Runs for events no [`Namespace::on`] handler takes.
    pub fn on_any<F, Fut>(&mut self, handler: F) -> &mut Namespace
    where
        F: Fn(Socket, String, Payload, Option<Ack>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.on_any = Some(Arc::new(move |socket, name, payload, ack| {
            Box::pin(handler(socket, name, payload, ack))
        }));
        self
    }

    /// Runs once when a connected socket goes away, with Socket.IO's reason
    /// (`transport close`, `ping timeout`, `client namespace disconnect`, ...).
    pub fn on_disconnect<F, Fut>(&mut self, handler: F) -> &mut Namespace
    where
        F: Fn(Socket, String) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.on_disconnect = Some(Arc::new(move |socket, reason| {
            Box::pin(handler(socket, reason))
        }));
        self
    }
}

/// Why an app-node stopped.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("cannot connect to Redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("cannot open the ops listener: {0}")]
    Ops(#[from] std::io::Error),
}

/// A handle that emits from outside handlers (timers, other tasks).
#[derive(Clone)]
pub struct Io {
    ctx: Arc<Ctx>,
}

impl Io {
    /// Every client of `nsp`; narrow it with `to`, `except`, ...
    pub fn of(&self, nsp: &str) -> Emitter {
        Emitter::new(self.ctx.clone(), nsp)
    }
}

/// An application: its namespaces and handlers, and the runtime that serves
/// them. Every app-node under one prefix must run the same application.
pub struct App {
    config: AppConfig,
    namespaces: HashMap<String, Namespace>,
    on_new_session: Option<SessionHandler>,
    ctx: Arc<Ctx>,
    publish_rx: mpsc::Receiver<Publish>,
}

/// Publishes waiting to be written before emits report `Overloaded`.
const PUBLISH_QUEUE: usize = 65_536;
/// Most events taken from the queue in one round trip.
const FETCH_BATCH: usize = 64;
/// Most publishes written in one round trip, and the bytes after which a
/// flush takes no more.
const PUBLISH_BATCH: usize = 512;
const PUBLISH_BATCH_BYTES: usize = 1 << 20;

/// Moves up to ARGV[1] events from the queue to the in-flight list, oldest
/// first (the queue's right end), in three commands however many there are.
const FETCH_SCRIPT: &str = r"
local items = redis.call('LRANGE', KEYS[1], '-' .. ARGV[1], '-1')
if #items == 0 then return items end
redis.call('LTRIM', KEYS[1], 0, -#items - 1)
local out = {}
for i = #items, 1, -1 do out[#out + 1] = items[i] end
redis.call('LPUSH', KEYS[2], unpack(out))
return out";

/// Publishes one flush of the publish queue. ARGV is a list of messages:
/// `channel, n`, then `n` pairs `event, envelope`. A pair with an event is a
/// `done`: the event leaves the in-flight list and the envelope goes out only
/// if it was still there (not handed to another app-node meanwhile). Each
/// message's kept envelopes are published back to back in one `PUBLISH`; an
/// empty channel publishes nothing. `LREM` searches from the tail (count
/// -1): items enter the in-flight list at its head, so the ones finishing,
/// usually the oldest, are near the tail (half the `LREM` time at echo
/// with 100 clients). Constant arguments are Lua strings: Redis 7.0 formats
/// a Lua number argument with `printf("%.17g")` on every call.
const FLUSH_SCRIPT: &str = r"
local i = 1
while i <= #ARGV do
  local channel, n = ARGV[i], tonumber(ARGV[i + 1])
  i = i + 2
  local parts = {}
  for _ = 1, n do
    local event, envelope = ARGV[i], ARGV[i + 1]
    i = i + 2
    if event == '' or redis.call('LREM', KEYS[1], '-1', event) > 0 then
      parts[#parts + 1] = envelope
    end
  end
  if channel ~= '' and #parts > 0 then
    redis.call('PUBLISH', channel, table.concat(parts))
  end
end
return 0";

/// [`FLUSH_SCRIPT`] with its hash, computed once.
fn flush_script() -> &'static redis::Script {
    static SCRIPT: std::sync::LazyLock<redis::Script> =
        std::sync::LazyLock::new(|| redis::Script::new(FLUSH_SCRIPT));
    &SCRIPT
}

/// Hands the in-flight events of an app-node whose lease lapsed back to the
/// queue, and forgets the app-node. Atomic, so racing app-nodes move each
/// event once.
const REAP_SCRIPT: &str = r"
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if (not score) or tonumber(score) > tonumber(ARGV[2]) then return -1 end
local moved = 0
while redis.call('LMOVE', KEYS[2], KEYS[3], 'LEFT', 'RIGHT') do moved = moved + 1 end
redis.call('ZREM', KEYS[1], ARGV[1])
return moved";

impl App {
    pub fn new(config: AppConfig) -> App {
        let (publisher, publish_rx) = mpsc::channel(PUBLISH_QUEUE);
        let ctx = Arc::new(Ctx::new(
            config.app_id.clone(),
            Keys::new(config.prefix.clone()),
            publisher,
            config.join_timeout,
        ));
        App {
            config,
            namespaces: HashMap::new(),
            on_new_session: None,
            ctx,
            publish_rx,
        }
    }

    /// Declares namespace `nsp` (e.g. `/` or `/chat`) and its handlers.
    /// io-nodes refuse clients connecting to namespaces no app-node declares.
    pub fn namespace(&mut self, nsp: &str, setup: impl FnOnce(&mut Namespace)) -> &mut App {
        let namespace = self.namespaces.entry(normalize_nsp(nsp)).or_default();
        setup(namespace);
        self
    }

    /// Runs before the first event of a socket this app-node has not seen
    /// (after its own restart, or when another app-node handled the socket's
    /// connection), so the application can rebuild per-client context.
    pub fn on_new_session<F, Fut>(&mut self, handler: F) -> &mut App
    where
        F: Fn(Socket) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.on_new_session = Some(Arc::new(move |socket| Box::pin(handler(socket))));
        self
    }

    /// A handle to emit from outside handlers.
    pub fn io(&self) -> Io {
        Io {
            ctx: self.ctx.clone(),
        }
    }

    /// Serves events until `shutdown` resolves, then finishes the events in
    /// hand (within the grace period), hands back any it could not finish and
    /// leaves the registry.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<(), AppError> {
        let App {
            config,
            namespaces,
            on_new_session,
            ctx,
            publish_rx,
        } = self;
        let keys = ctx.keys.clone();
        let client = iocluster_ops::redis_client(config.redis.as_str())?;
        let manager = iocluster_ops::redis_manager_config(Some(Duration::from_secs(10)));
        let mut redis = client
            .get_connection_manager_with_config(manager.clone())
            .await?;
        // Blocking pops need a connection of their own, without a response
        // timeout shorter than the pop's.
        let blocking_config =
            iocluster_ops::redis_manager_config(Some(BLOCKING_POP + Duration::from_secs(5)));
        let blocking = client
            .get_connection_manager_with_config(blocking_config)
            .await?;

        let nsps: Vec<String> = namespaces.keys().cloned().collect();
        heartbeat(&mut redis, &keys, &config, &nsps).await?;

        let stop = CancellationToken::new();
        let readiness = iocluster_ops::Readiness::default();
        let mut tasks = Vec::new();
        if let Some(addr) = &config.ops_listen {
            tasks.push(iocluster_ops::serve(addr, readiness.clone(), stop.child_token()).await?);
        }
        let replies_ready = CancellationToken::new();
        tasks.extend([
            tokio::spawn(publisher(
                redis.clone(),
                keys.inflight(&config.app_id),
                publish_rx,
            )),
            tokio::spawn(replies(
                client.clone(),
                ctx.clone(),
                stop.clone(),
                replies_ready.clone(),
            )),
            tokio::spawn(lease_keeper(
                redis.clone(),
                keys.clone(),
                config.clone(),
                nsps.clone(),
                readiness.clone(),
                stop.clone(),
            )),
        ]);
        // Join confirmations and acks come on our channel: listen before
        // taking any event.
        replies_ready.cancelled().await;
        readiness.set(true);
        tracing::info!(app = %config.app_id, prefix = %config.prefix, namespaces = ?nsps, "app-node serving");

        let shared = Arc::new(Shared {
            ctx: ctx.clone(),
            namespaces,
            on_new_session,
            seen: Mutex::new(Seen::default()),
            handler_timeout: config.handler_timeout,
        });
        let semaphore = Arc::new(Semaphore::new(config.concurrency));
        let events_key = keys.events();
        let inflight_key = keys.inflight(&config.app_id);
        let taking = CancellationToken::new();
        let mut taker = tokio::spawn(take_events(
            shared.clone(),
            semaphore.clone(),
            redis.clone(),
            blocking,
            events_key.clone(),
            inflight_key.clone(),
            taking.clone(),
        ));
        let ended = tokio::select! {
            _ = shutdown => None,
            ended = &mut taker => Some(ended),
        };
        taking.cancel();
        match ended {
            None => {
                let _ = taker.await;
            }
            Some(Err(error)) => tracing::error!(%error, "taking events failed: shutting down"),
            Some(Ok(())) => {}
        }

        tracing::info!("shutting down: finishing events in hand");
        readiness.set(false);
        let all = u32::try_from(config.concurrency).unwrap_or(u32::MAX);
        if tokio::time::timeout(config.shutdown_grace, semaphore.acquire_many(all))
            .await
            .is_err()
        {
            tracing::warn!("shutdown grace period ran out with handlers still running");
        }
        drop(shared);
        // Let the publisher write what the handlers issued.
        let flush_deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while ctx.publisher.capacity() < ctx.publisher.max_capacity()
            && tokio::time::Instant::now() < flush_deadline
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        stop.cancel();
        ctx.fail_pending();
        // Whatever is still ours goes back to the queue, then we leave.
        let handed_back: redis::RedisResult<i64> = redis::Script::new(REAP_SCRIPT)
            .key(keys.apps())
            .key(&inflight_key)
            .key(&events_key)
            .arg(&config.app_id)
            .arg(u64::MAX)
            .invoke_async(&mut redis)
            .await;
        match handed_back {
            Ok(moved) if moved > 0 => {
                tracing::info!(moved, "handed unfinished events back to the queue")
            }
            Ok(_) => {}
            Err(error) => {
                tracing::warn!(%error, "cannot hand events back; the lease will expire instead")
            }
        }
        for task in tasks.drain(..) {
            task.abort();
        }
        tracing::info!("app-node stopped");
        Ok(())
    }
}

/// Takes events from the queue into this app-node's in-flight list and
/// starts their handlers, until `stop`. A task of its own, so that it runs
/// on the runtime's worker threads: `App::run` is usually awaited from
/// `main`, outside them, where every wake-up of this loop (an event taken, a
/// permit freed) would be one thread waking another.
async fn take_events(
    shared: Arc<Shared>,
    semaphore: Arc<Semaphore>,
    mut redis: redis::aio::ConnectionManager,
    mut blocking: redis::aio::ConnectionManager,
    events_key: String,
    inflight_key: String,
    stop: CancellationToken,
) {
    let fetch = redis::Script::new(FETCH_SCRIPT);
    let mut backoff = iocluster_ops::Backoff::new(Duration::from_secs(2));
    // Whether the last take found the queue empty: then the next one blocks
    // at once (with the take script right behind the blocking pop, in one
    // round trip), instead of first asking for what is probably not there.
    // At a low event rate that is one request to Redis per event instead
    // of two.
    let mut drained = false;
    loop {
        let first = tokio::select! {
            permit = semaphore.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
            _ = stop.cancelled() => break,
        };
        let room = (semaphore.available_permits() + 1).min(FETCH_BATCH);
        let taken = if drained {
            tracing::trace!(room, "blocking pop, then fetching");
            tokio::select! {
                taken = block_then_fetch(&mut blocking, &fetch, &events_key, &inflight_key, room) => taken,
                // Events moved by an abandoned take stay in our in-flight
                // list and are handed back at the end.
                _ = stop.cancelled() => break,
            }
        } else {
            tracing::trace!(room, "fetching");
            fetch
                .key(&events_key)
                .key(&inflight_key)
                .arg(room)
                .invoke_async(&mut redis)
                .await
        };
        let batch: Vec<Vec<u8>> = match taken {
            Ok(batch) => batch,
            Err(error) => {
                tracing::warn!(%error, "cannot take events from the queue; retrying");
                backoff.wait().await;
                continue;
            }
        };
        backoff.reset();
        drained = batch.len() < room;
        if batch.is_empty() {
            continue;
        }
        let mut first = Some(first);
        for raw in batch {
            let permit = match first.take() {
                Some(permit) => permit,
                None => match semaphore.clone().try_acquire_owned() {
                    Ok(permit) => permit,
                    // Cannot happen: only this loop takes permits and it
                    // fetched no more than were free.
                    Err(_) => semaphore
                        .clone()
                        .acquire_owned()
                        .await
                        .expect("semaphore is never closed"),
                },
            };
            let shared = shared.clone();
            tokio::spawn(async move {
                shared.handle(raw).await;
                drop(permit);
            });
        }
    }
}

/// Waits for an event with `BLMOVE` and takes up to `room - 1` more with
/// the take script, both in one pipeline: when the pop is served, Redis
/// runs the script at once, so a burst comes back whole with its first
/// event. The events come oldest first, as [`FETCH_SCRIPT`] gives them.
/// Both replies are read whatever the other one was, so an event either
/// command moved into the in-flight list is always handled; a script Redis
/// no longer knows (it restarted) had run nothing, and is sent again (and
/// loaded) alone.
async fn block_then_fetch(
    blocking: &mut redis::aio::ConnectionManager,
    fetch: &redis::Script,
    events_key: &str,
    inflight_key: &str,
    room: usize,
) -> redis::RedisResult<Vec<Vec<u8>>> {
    let mut pipe = redis::pipe();
    pipe.ignore_errors();
    pipe.cmd("BLMOVE")
        .arg(events_key)
        .arg(inflight_key)
        .arg("RIGHT")
        .arg("LEFT")
        .arg(BLOCKING_POP.as_secs_f64());
    let more = room - 1;
    if more > 0 {
        pipe.cmd("EVALSHA")
            .arg(fetch.get_hash())
            .arg(2)
            .arg(events_key)
            .arg(inflight_key)
            .arg(more);
    }
    // One reply per command, an error reply as an `Err` of its own.
    fn reply<T: redis::FromRedisValue>(value: redis::Value) -> redis::RedisResult<T> {
        redis::from_redis_value::<redis::RedisResult<T>>(value)?
    }
    let replies: Vec<redis::Value> = pipe.query_async(blocking).await?;
    let mut replies = replies.into_iter();
    let popped: redis::RedisResult<Option<Vec<u8>>> = replies.next().map_or(Ok(None), reply);
    let fetched: Option<redis::RedisResult<Vec<Vec<u8>>>> = replies.next().map(reply);
    // A script Redis no longer knows (it restarted) ran nothing: send it
    // again alone (it is loaded on the way).
    let fetched = match fetched {
        Some(Err(error)) if is_noscript(&error) => Some(
            fetch
                .key(events_key)
                .key(inflight_key)
                .arg(more)
                .invoke_async(blocking)
                .await,
        ),
        fetched => fetched,
    };
    // Whatever either command moved into the in-flight list is ours now
    // and must be handled: an error of one does not drop the other's.
    let mut batch = Vec::new();
    match popped {
        Ok(popped) => batch.extend(popped),
        Err(error) if fetched.is_none() => return Err(error),
        Err(error) => tracing::warn!(%error, "blocking pop failed"),
    }
    match fetched {
        None => {}
        Some(Ok(fetched)) => batch.extend(fetched),
        Some(Err(error)) if batch.is_empty() => return Err(error),
        Some(Err(error)) => tracing::warn!(%error, "cannot take more events after a blocking pop"),
    }
    Ok(batch)
}

/// Redis does not know the script called by hash: it restarted or flushed
/// its scripts, and ran nothing.
fn is_noscript(error: &redis::RedisError) -> bool {
    error.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript)
}

/// How long one blocking pop waits for an event.
const BLOCKING_POP: Duration = Duration::from_secs(1);

fn normalize_nsp(nsp: &str) -> String {
    if nsp.starts_with('/') {
        nsp.to_owned()
    } else {
        format!("/{nsp}")
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Sockets this app-node has met, in two generations so memory stays bounded
/// (a socket whose disconnect another app-node handled is forgotten in time).
#[derive(Default)]
struct Seen {
    current: HashSet<String>,
    previous: HashSet<String>,
}

const SEEN_GENERATION: usize = 100_000;

impl Seen {
    /// Records `sid`; `true` if it was new.
    fn meet(&mut self, sid: &str) -> bool {
        if self.current.contains(sid) || self.previous.contains(sid) {
            return false;
        }
        if self.current.len() >= SEEN_GENERATION {
            self.previous = std::mem::take(&mut self.current);
        }
        self.current.insert(sid.to_owned());
        true
    }

    fn forget(&mut self, sid: &str) {
        self.current.remove(sid);
        self.previous.remove(sid);
    }
}

struct Shared {
    ctx: Arc<Ctx>,
    namespaces: HashMap<String, Namespace>,
    on_new_session: Option<SessionHandler>,
    seen: Mutex<Seen>,
    handler_timeout: Duration,
}

impl Shared {
    /// Handles one queue item: one event, or several of one socket (an
    /// io-node sends the `message` events that piled up behind a socket's
    /// previous item together). They run in order on one [`Socket`], so each
    /// handler sees the joins, leaves and data of the handlers before it,
    /// just as the next item's snapshot would. A `done` for the last event of
    /// each socket finishes the item.
    async fn handle(&self, raw: Vec<u8>) {
        let events = match Event::decode_all(&raw) {
            Ok(events) => events,
            Err(error) => {
                tracing::error!(%error, "undecodable event discarded");
                let _ = self.ctx.publisher.send(Publish::Discard { raw }).await;
                return;
            }
        };
        let mut raw = Some(raw);
        let mut events = events.into_iter().peekable();
        let mut socket: Option<Socket> = None;
        while let Some(event) = events.next() {
            let handle = match socket.take() {
                Some(socket) if socket.id() == event.sid && socket.nsp() == event.nsp => socket,
                _ => Socket::from_event(&event, self.ctx.clone()),
            };
            let span = tracing::debug_span!(
                "event",
                sid = %event.sid,
                nsp = %event.nsp,
                seq = event.seq,
                kind = ?event.kind,
            );
            let reject = self
                .handle_event(&event, handle.clone())
                .instrument(span)
                .await;
            let next = events.peek();
            if next.is_some_and(|next| next.sid == event.sid && next.nsp == event.nsp) {
                socket = Some(handle);
                continue;
            }
            let done = Command::Done(envelope::Done {
                nsp: event.nsp,
                sid: event.sid,
                seq: event.seq,
                reject: reject.map(|reject| envelope::Reject {
                    message: reject.message,
                    data: reject.data.map(|data| data.to_string()),
                }),
            });
            let channel = self.ctx.keys.node_channel(&event.node);
            let payload = done.encode();
            let publish = if next.is_some() {
                Publish::Command { channel, payload }
            } else {
                // The item leaves the in-flight list with its last done.
                Publish::Done {
                    raw: raw.take().unwrap_or_default(),
                    channel,
                    payload,
                }
            };
            let _ = self.ctx.publisher.send(publish).await;
        }
    }

    /// Runs one event's handlers under the handler timeout, catching panics;
    /// for a connection, returns the refusal, if any.
    async fn handle_event(&self, event: &Event, socket: Socket) -> Option<Reject> {
        let kind = event.kind.as_str();
        let started = std::time::Instant::now();
        let work = self.run_handlers(event, socket);
        let reject =
            match tokio::time::timeout(self.handler_timeout, AssertUnwindSafe(work).catch_unwind())
                .await
            {
                Ok(Ok(reject)) => reject,
                Ok(Err(_)) => {
                    tracing::error!(sid = %event.sid, kind = ?event.kind, "handler panicked");
                    (event.kind == EventKind::Connect).then(|| Reject::new("Internal error"))
                }
                Err(_) => {
                    tracing::error!(sid = %event.sid, kind = ?event.kind, "handler timed out");
                    (event.kind == EventKind::Connect).then(|| Reject::new("Internal error"))
                }
            };
        metrics::histogram!("iocluster_handler_seconds", "kind" => kind)
            .record(started.elapsed().as_secs_f64());
        metrics::counter!("iocluster_events_handled_total", "kind" => kind).increment(1);
        reject
    }

    /// Runs the application's handlers for one event; for a connection,
    /// returns the refusal, if any.
    async fn run_handlers(&self, event: &Event, socket: Socket) -> Option<Reject> {
        let namespace = self.namespaces.get(&event.nsp);
        let new_session = match event.kind {
            EventKind::Connect => {
                lock(&self.seen).meet(&event.sid);
                false
            }
            EventKind::Message => lock(&self.seen).meet(&event.sid),
            EventKind::Disconnect => {
                lock(&self.seen).forget(&event.sid);
                false
            }
        };
        let Some(namespace) = namespace else {
            tracing::debug!(nsp = %event.nsp, "event for a namespace this application does not serve");
            return (event.kind == EventKind::Connect).then(|| Reject::new("Invalid namespace"));
        };
        if new_session && let Some(hook) = &self.on_new_session {
            hook(socket.clone()).await;
        }
        match event.kind {
            EventKind::Connect => match &namespace.on_connection {
                Some(handler) => handler(socket).await.err(),
                None => None,
            },
            EventKind::Message => {
                let bin = event
                    .bin
                    .iter()
                    .map(|b| bytes::Bytes::copy_from_slice(b))
                    .collect();
                let (name, payload) =
                    match Payload::from_event(event.data.as_deref().unwrap_or("[]"), bin) {
                        Ok(parsed) => parsed,
                        Err(error) => {
                            tracing::warn!(%error, "malformed event data");
                            return None;
                        }
                    };
                let ack = event.ack.map(|id| Ack {
                    ctx: self.ctx.clone(),
                    node: event.node.clone(),
                    nsp: event.nsp.clone(),
                    sid: event.sid.clone(),
                    id,
                });
                if let Some(handler) = namespace.events.get(&name) {
                    handler(socket, payload, ack).await;
                } else if let Some(handler) = &namespace.on_any {
                    handler(socket, name, payload, ack).await;
                } else {
                    tracing::debug!(event = %name, "no handler");
                }
                None
            }
            EventKind::Disconnect => {
                if let Some(handler) = &namespace.on_disconnect {
                    handler(socket, event.reason.clone().unwrap_or_default()).await;
                }
                None
            }
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Renews this app-node's lease and the leases of its namespaces.
async fn heartbeat(
    redis: &mut redis::aio::ConnectionManager,
    keys: &Keys,
    config: &AppConfig,
    nsps: &[String],
) -> redis::RedisResult<()> {
    let until = now_ms() + config.lease.as_millis() as u64;
    let mut pipe = redis::pipe();
    pipe.cmd("ZADD")
        .arg(keys.apps())
        .arg(until)
        .arg(&config.app_id)
        .ignore();
    for nsp in nsps {
        pipe.cmd("ZADD")
            .arg(keys.namespaces())
            .arg("GT")
            .arg(until)
            .arg(nsp)
            .ignore();
    }
    pipe.query_async(redis).await
}

/// Keeps the lease and hands back the events of app-nodes whose lease lapsed.
async fn lease_keeper(
    mut redis: redis::aio::ConnectionManager,
    keys: Keys,
    config: AppConfig,
    nsps: Vec<String>,
    readiness: iocluster_ops::Readiness,
    stop: CancellationToken,
) {
    let mut ticker = tokio::time::interval((config.lease / 4).max(Duration::from_millis(20)));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let reap = redis::Script::new(REAP_SCRIPT);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = ticker.tick() => {}
        }
        if let Err(error) = heartbeat(&mut redis, &keys, &config, &nsps).await {
            readiness.set(false);
            metrics::counter!("iocluster_redis_errors_total", "task" => "lease").increment(1);
            tracing::warn!(%error, "cannot renew the lease");
            continue;
        }
        if !stop.is_cancelled() {
            readiness.set(true);
        }
        iocluster_ops::sample_queue_depth(&mut redis, &keys.events()).await;
        let now = now_ms();
        let expired: redis::RedisResult<Vec<String>> = redis::cmd("ZRANGE")
            .arg(keys.apps())
            .arg("-inf")
            .arg(now)
            .arg("BYSCORE")
            .arg("LIMIT")
            .arg(0)
            .arg(16)
            .query_async(&mut redis)
            .await;
        for app in expired.unwrap_or_default() {
            if app == config.app_id {
                continue;
            }
            let moved: redis::RedisResult<i64> = reap
                .key(keys.apps())
                .key(keys.inflight(&app))
                .key(keys.events())
                .arg(&app)
                .arg(now)
                .invoke_async(&mut redis)
                .await;
            match moved {
                Ok(moved) if moved >= 0 => {
                    metrics::counter!("iocluster_redeliveries_total").increment(moved as u64);
                    tracing::warn!(app = %app, moved, "app-node lease lapsed: its events went back to the queue")
                }
                Ok(_) => {}
                Err(error) => tracing::warn!(%error, "cannot hand back a lapsed app-node's events"),
            }
        }
    }
}

/// Writes the publish queue to Redis in order, many per round trip.
async fn publisher(
    mut redis: redis::aio::ConnectionManager,
    inflight_key: String,
    mut queue: mpsc::Receiver<Publish>,
) {
    let mut batch = Vec::with_capacity(PUBLISH_BATCH);
    while let Some(first) = queue.recv().await {
        let mut bytes = first.len();
        batch.push(first);
        while batch.len() < PUBLISH_BATCH && bytes < PUBLISH_BATCH_BYTES {
            match queue.try_recv() {
                Ok(item) => {
                    bytes += item.len();
                    batch.push(item);
                }
                Err(_) => break,
            }
        }
        let flush = Flush::plan(&batch);
        let pipe = flush.pipeline(&inflight_key);
        let mut backoff = iocluster_ops::Backoff::new(Duration::from_secs(2));
        while let Err(error) = pipe.query_async::<()>(&mut redis).await {
            if is_noscript(&error) {
                // A Redis that restarted (or flushed its scripts): nothing
                // of the flush ran. Load the script and send it again.
                let loaded: redis::RedisResult<String> =
                    flush_script().prepare_invoke().load_async(&mut redis).await;
                if loaded.is_ok() {
                    continue;
                }
            }
            tracing::warn!(%error, items = batch.len(), "cannot publish; retrying");
            backoff.wait().await;
        }
        batch.clear();
    }
}

/// One flush of the publish queue: consecutive items for the same channel
/// become one message (their envelopes back to back), so order holds for
/// every recipient while a handler's commands and its `done` cost one
/// `PUBLISH`.
#[derive(Debug, PartialEq)]
struct Flush<'a> {
    messages: Vec<Message<'a>>,
}

/// `(event, envelope)`: with an event, the envelope is a `done` that goes out
/// only if the event is still in this app-node's in-flight list.
type Part<'a> = (Option<&'a [u8]>, &'a [u8]);

/// One message of a flush; `channel` is empty for in-flight removals that
/// publish nothing (undecodable events).
#[derive(Debug, PartialEq)]
struct Message<'a> {
    channel: &'a str,
    parts: Vec<Part<'a>>,
}

impl<'a> Flush<'a> {
    fn plan(batch: &'a [Publish]) -> Flush<'a> {
        let mut messages: Vec<Message<'a>> = Vec::new();
        for item in batch {
            let (channel, part) = match item {
                Publish::Command { channel, payload } => (channel.as_str(), (None, &payload[..])),
                Publish::Done {
                    raw,
                    channel,
                    payload,
                } => (channel.as_str(), (Some(&raw[..]), &payload[..])),
                Publish::Discard { raw } => ("", (Some(&raw[..]), &[][..])),
            };
            match messages.last_mut() {
                Some(last) if last.channel == channel => last.parts.push(part),
                _ => messages.push(Message {
                    channel,
                    parts: vec![part],
                }),
            }
        }
        Flush { messages }
    }

    /// Plain `PUBLISH`es when nothing leaves the in-flight list, else the
    /// whole flush as one [`FLUSH_SCRIPT`] call.
    fn pipeline(&self, inflight_key: &str) -> redis::Pipeline {
        let mut pipe = redis::pipe();
        let removes = self
            .messages
            .iter()
            .any(|message| message.parts.iter().any(|(raw, _)| raw.is_some()));
        if !removes {
            for message in &self.messages {
                let payload: Vec<u8> = message
                    .parts
                    .iter()
                    .flat_map(|(_, b)| b.iter().copied())
                    .collect();
                pipe.cmd("PUBLISH")
                    .arg(message.channel)
                    .arg(payload)
                    .ignore();
            }
            return pipe;
        }
        // EVALSHA: Redis would hash the script's text on every EVAL. After a
        // Redis restart it answers NOSCRIPT, having run nothing, and the
        // publisher loads the script and sends the flush again.
        let cmd = pipe
            .cmd("EVALSHA")
            .arg(flush_script().get_hash())
            .arg(1)
            .arg(inflight_key);
        for message in &self.messages {
            cmd.arg(message.channel).arg(message.parts.len());
            for (raw, bytes) in &message.parts {
                cmd.arg(raw.unwrap_or_default()).arg(*bytes);
            }
        }
        cmd.ignore();
        pipe
    }
}

/// Listens on this app-node's channel for join confirmations and acks.
async fn replies(
    client: redis::Client,
    ctx: Arc<Ctx>,
    stop: CancellationToken,
    ready: CancellationToken,
) {
    let channel = ctx.keys.app_channel(&ctx.app_id);
    let mut backoff = iocluster_ops::Backoff::new(Duration::from_secs(2));
    loop {
        let subscribed = async {
            let mut pubsub = client.get_async_pubsub().await?;
            pubsub.subscribe(&channel).await?;
            Ok::<_, redis::RedisError>(pubsub)
        };
        let mut pubsub = tokio::select! {
            _ = stop.cancelled() => return,
            result = subscribed => match result {
                Ok(pubsub) => pubsub,
                Err(error) => {
                    tracing::warn!(%error, "cannot subscribe to the reply channel; retrying");
                    backoff.wait().await;
                    continue;
                }
            }
        };
        backoff.reset();
        ready.cancel();
        let mut messages = pubsub.on_message();
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                message = messages.next() => {
                    let Some(message) = message else { break };
                    match Reply::decode(message.get_payload_bytes()) {
                        Ok(reply) => ctx.on_reply(reply),
                        Err(error) => tracing::warn!(%error, "invalid reply"),
                    }
                }
            }
        }
        tracing::warn!("reply channel lost; reconnecting");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// docs/PROTOCOL.md tells other app-nodes to run these scripts: it
    /// must show them as the SDK has them (indentation aside).
    #[test]
    fn the_protocol_document_shows_the_scripts_the_sdk_runs() {
        let lines = |text: &str| -> String {
            text.lines()
                .map(str::trim)
                .filter(|line| !line.is_empty())
                .collect::<Vec<_>>()
                .join("\n")
        };
        let doc = lines(include_str!("../../../docs/PROTOCOL.md"));
        for script in [FETCH_SCRIPT, FLUSH_SCRIPT] {
            let script = lines(script);
            assert!(doc.contains(&script), "docs/PROTOCOL.md lacks:\n{script}");
        }
    }

    fn command(channel: &str, payload: &[u8]) -> Publish {
        Publish::Command {
            channel: channel.into(),
            payload: payload.to_vec(),
        }
    }

    fn done(raw: &[u8], channel: &str, payload: &[u8]) -> Publish {
        Publish::Done {
            raw: raw.to_vec(),
            channel: channel.into(),
            payload: payload.to_vec(),
        }
    }

    #[test]
    fn a_flush_joins_consecutive_items_for_one_channel_and_keeps_order() {
        let batch = [
            command("n1", b"ack1"),
            done(b"ev1", "n1", b"done1"),
            command("room", b"emit"),
            done(b"ev2", "n2", b"done2"),
            Publish::Discard {
                raw: b"bad".to_vec(),
            },
            done(b"ev3", "n1", b"done3"),
            command("n1", b"late"),
        ];
        let flush = Flush::plan(&batch);
        let shape: Vec<(&str, Vec<Part>)> = flush
            .messages
            .iter()
            .map(|m| (m.channel, m.parts.clone()))
            .collect();
        assert_eq!(
            shape,
            vec![
                (
                    "n1",
                    vec![(None, &b"ack1"[..]), (Some(&b"ev1"[..]), &b"done1"[..])]
                ),
                ("room", vec![(None, &b"emit"[..])]),
                ("n2", vec![(Some(&b"ev2"[..]), &b"done2"[..])]),
                ("", vec![(Some(&b"bad"[..]), &b""[..])]),
                (
                    "n1",
                    vec![(Some(&b"ev3"[..]), &b"done3"[..]), (None, &b"late"[..])]
                ),
            ]
        );
    }
}
