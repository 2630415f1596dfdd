//! What handlers hold: the [`Socket`] an event came from, [`Emitter`]s that
//! address sets of clients, and the [`Ack`] a client asked for.
//!
//! Everything here turns into commands on the app-node's ordered publish
//! queue: a handler's commands reach Redis in the order it issued them, and
//! before the handler's "done". Emits are synchronous, like Socket.IO's;
//! operations that need an answer from an io-node (a join, an emit that wants
//! an acknowledgement) are `async`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use iocluster_protocol::envelope::{self, Command, Handshake, Reply, ReplyTo};
use iocluster_protocol::ids;
use iocluster_protocol::keys::Keys;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_bytes::ByteBuf;
use tokio::sync::{mpsc, oneshot};

use crate::payload::{Payload, PayloadError};

/// Why a command could not be issued or was not answered.
#[derive(Debug, thiserror::Error)]
pub enum EmitError {
    #[error(transparent)]
    Payload(#[from] PayloadError),
    #[error("the publish queue is full")]
    Overloaded,
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("the app-node is shutting down")]
    Closed,
}

/// Work for the publisher task, written to Redis in order. Each carries the
/// partition of the event queue whose item's handler issued it
/// ([`current_partition`]): its `done` leaves that partition's in-flight
/// list, and what the handler issued before goes out no later.
pub(crate) enum Publish {
    /// `PUBLISH channel payload`.
    Command {
        channel: String,
        payload: Vec<u8>,
        partition: u16,
    },
    /// The handler of `raw` finished: remove it from this app-node's in-flight
    /// list and, if it was still there, publish `payload` (a done command).
    Done {
        raw: Vec<u8>,
        channel: String,
        payload: Vec<u8>,
        partition: u16,
    },
    /// Remove an undecodable event from the in-flight list.
    Discard { raw: Vec<u8>, partition: u16 },
    /// `PUBLISH channel payload` of an emit retained for connection state
    /// recovery: added to its namespace's log first (see the flush script),
    /// `mark` saying which log and how much it keeps.
    Retained {
        mark: Arc<[u8]>,
        channel: String,
        payload: Vec<u8>,
        partition: u16,
    },
}

tokio::task_local! {
    /// The partition of the queue item whose handlers run in this task.
    static PARTITION: u16;
}

/// The partition of the queue item being handled in this task; 0 outside
/// handlers (a timer's emit, a spawned task's).
pub(crate) fn current_partition() -> u16 {
    PARTITION.try_with(|k| *k).unwrap_or(0)
}

/// Runs `work` (a queue item's handlers) as taken from partition `k`: what
/// it publishes goes out with the item's `done`.
pub(crate) async fn in_partition<F: std::future::Future>(k: u16, work: F) -> F::Output {
    PARTITION.scope(k, work).await
}

impl Publish {
    /// Bytes it sends to Redis.
    pub(crate) fn len(&self) -> usize {
        match self {
            Publish::Command {
                channel, payload, ..
            } => channel.len() + payload.len(),
            Publish::Done {
                raw,
                channel,
                payload,
                ..
            } => raw.len() + channel.len() + payload.len(),
            Publish::Discard { raw, .. } => raw.len(),
            Publish::Retained {
                mark,
                channel,
                payload,
                ..
            } => mark.len() + channel.len() + payload.len(),
        }
    }
}

/// A namespace's recovery setting as `P:recovery` says it, and the flush
/// script's mark for its retained emits.
type Retention = (String, Arc<[u8]>);

/// State shared by every handle of one app-node.
pub(crate) struct Ctx {
    pub app_id: String,
    /// This run of the app-node: `<app id>.<random>`, in every `done` it
    /// sends; an event whose `app` is not it is of a socket this run has
    /// not seen (the new-session hook), exactly, with nothing kept per
    /// socket.
    pub instance: String,
    pub keys: Keys,
    pub publisher: mpsc::Sender<Publish>,
    pending: Mutex<HashMap<u64, oneshot::Sender<Reply>>>,
    next_token: AtomicU64,
    pub join_timeout: Duration,
    /// Namespaces with connection state recovery: their `P:recovery` value
    /// (`<window ms>:<packets>`) and the flush script's mark for their
    /// retained emits.
    /// Shared, not copied, by each retained emit.
    recovery: std::sync::RwLock<HashMap<String, Retention>>,
    /// Reads presence from the ledgers (its own Redis connection).
    pub(crate) presence: crate::presence::Reader,
}

impl Ctx {
    pub(crate) fn new(
        app_id: String,
        keys: Keys,
        publisher: mpsc::Sender<Publish>,
        join_timeout: Duration,
        redis_url: String,
    ) -> Ctx {
        Ctx {
            instance: format!("{app_id}.{}", crate::config::random_id()),
            app_id,
            keys,
            publisher,
            pending: Mutex::new(HashMap::new()),
            next_token: AtomicU64::new(1),
            join_timeout,
            recovery: std::sync::RwLock::default(),
            presence: crate::presence::Reader::new(redis_url),
        }
    }

    /// Turns connection state recovery on in `nsp` for `window` (off for
    /// zero), keeping up to `packets` emits in its log.
    pub(crate) fn set_recovery(&self, nsp: &str, window: Duration, packets: u64) {
        let mut recovery = self
            .recovery
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let window_ms = window.as_millis() as u64;
        if window_ms == 0 {
            recovery.remove(nsp);
            return;
        }
        // The log outlives an idle stretch as long as a session does (and a
        // minute more), so a client back in time never finds it gone.
        let ttl_ms = window_ms + 60_000;
        let mark = iocluster_protocol::recovery::mark(packets, ttl_ms, &self.keys.log(nsp));
        recovery.insert(
            nsp.to_owned(),
            (format!("{window_ms}:{packets}"), mark.into()),
        );
    }

    /// What `P:recovery` says of `nsp`: `<window ms>:<packets>`, empty when
    /// off.
    pub(crate) fn recovery_setting(&self, nsp: &str) -> String {
        self.recovery
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .get(nsp)
            .map(|(setting, _)| setting.clone())
            .unwrap_or_default()
    }

    /// The flush script's mark for an emit retained in `nsp`'s log.
    fn retention_mark(&self, nsp: &str) -> Option<Arc<[u8]>> {
        self.recovery
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .get(nsp)
            .map(|(_, mark)| mark.clone())
    }

    pub(crate) fn publish(&self, channel: String, command: &Command) -> Result<(), EmitError> {
        self.publisher
            .try_send(Publish::Command {
                channel,
                payload: command.encode(),
                partition: current_partition(),
            })
            .map_err(|error| match error {
                mpsc::error::TrySendError::Full(_) => EmitError::Overloaded,
                mpsc::error::TrySendError::Closed(_) => EmitError::Closed,
            })
    }

    fn pending(&self) -> std::sync::MutexGuard<'_, HashMap<u64, oneshot::Sender<Reply>>> {
        self.pending
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A token for a request whose reply comes on this app-node's channel.
    pub(crate) fn expect_reply(&self) -> (ReplyTo, oneshot::Receiver<Reply>) {
        let id = self.next_token.fetch_add(1, Ordering::Relaxed);
        let (sender, receiver) = oneshot::channel();
        self.pending().insert(id, sender);
        (
            ReplyTo {
                app: self.app_id.clone(),
                id,
            },
            receiver,
        )
    }

    pub(crate) async fn await_reply(
        &self,
        token: u64,
        receiver: oneshot::Receiver<Reply>,
        timeout: Duration,
    ) -> Result<Reply, EmitError> {
        match tokio::time::timeout(timeout, receiver).await {
            Ok(Ok(reply)) => Ok(reply),
            Ok(Err(_)) => Err(EmitError::Closed),
            Err(_) => {
                self.pending().remove(&token);
                Err(EmitError::Timeout(timeout))
            }
        }
    }

    /// Stops waiting for the reply of `token`.
    pub(crate) fn forget_reply(&self, token: u64) {
        self.pending().remove(&token);
    }

    /// Routes a reply from an io-node to whoever waits for it.
    pub(crate) fn on_reply(&self, reply: Reply) {
        let id = match &reply {
            Reply::Joined(joined) => joined.id,
            Reply::Ack(ack) => ack.id,
        };
        if let Some(sender) = self.pending().remove(&id) {
            let _ = sender.send(reply);
        }
    }

    /// Drops every waiter (shutdown).
    pub(crate) fn fail_pending(&self) {
        self.pending().clear();
    }
}

fn to_bins(payload: &Payload) -> Vec<ByteBuf> {
    payload
        .attachments()
        .iter()
        .map(|b| ByteBuf::from(b.to_vec()))
        .collect()
}

/// A set of clients of one namespace to emit to, like Socket.IO's
/// `io.to(room).except(other)`. With no room and no socket named, it is
/// every client of the namespace. The same selection can be fetched,
/// made to join or leave rooms, or disconnected, cluster-wide
/// (`fetch_sockets`, `sockets_join`, ... in `crate::presence`).
#[derive(Clone)]
pub struct Emitter {
    pub(crate) ctx: Arc<Ctx>,
    pub(crate) nsp: String,
    pub(crate) rooms: Vec<String>,
    pub(crate) sids: Vec<String>,
    pub(crate) except_rooms: Vec<String>,
    pub(crate) except_sids: Vec<String>,
    /// Bounds presence operations (`crate::presence`); `None`: the default.
    pub(crate) presence_timeout: Option<Duration>,
}

impl Emitter {
    pub(crate) fn new(ctx: Arc<Ctx>, nsp: &str) -> Emitter {
        Emitter {
            ctx,
            nsp: nsp.to_owned(),
            rooms: Vec::new(),
            sids: Vec::new(),
            except_rooms: Vec::new(),
            except_sids: Vec::new(),
            presence_timeout: None,
        }
    }

    /// Adds the members of `room` (a socket id works as a room of one).
    pub fn to(mut self, room: impl Into<String>) -> Emitter {
        self.rooms.push(room.into());
        self
    }

    /// Adds every socket of a user (admitted by the io-node from a
    /// registered credential or a token), on any io-node.
    pub fn to_user(self, user: &str) -> Emitter {
        self.to(ids::user_room(user))
    }

    /// Adds one socket by id.
    pub fn to_socket(mut self, sid: impl Into<String>) -> Emitter {
        self.sids.push(sid.into());
        self
    }

    /// Leaves out the members of `room`.
    pub fn except(mut self, room: impl Into<String>) -> Emitter {
        self.except_rooms.push(room.into());
        self
    }

    /// Leaves out one socket.
    pub fn except_socket(mut self, sid: impl Into<String>) -> Emitter {
        self.except_sids.push(sid.into());
        self
    }

    /// Emits `event` with one argument.
    pub fn emit<T: Serialize + ?Sized>(&self, event: &str, arg: &T) -> Result<(), EmitError> {
        self.emit_payload(event, &Payload::from_arg(arg)?)
    }

    /// Emits `event` with the elements of `args` (a tuple or array) as
    /// arguments.
    pub fn emit_args<T: Serialize + ?Sized>(&self, event: &str, args: &T) -> Result<(), EmitError> {
        self.emit_payload(event, &Payload::from_args(args)?)
    }

    /// Emits `event` with prepared arguments, attachments included.
    pub fn emit_payload(&self, event: &str, payload: &Payload) -> Result<(), EmitError> {
        let mut emit = envelope::Emit {
            nsp: self.nsp.clone(),
            rooms: self.rooms.clone(),
            sids: self.sids.clone(),
            except_rooms: self.except_rooms.clone(),
            except_sids: self.except_sids.clone(),
            data: payload.event_json(event)?,
            bin: to_bins(payload),
            ack: None,
            id: None,
            offset: None,
        };
        let routes = emit.route(&self.ctx.keys, rand::random);
        let encoded = Command::Emit(emit).encode();
        let mark = self.ctx.retention_mark(&self.nsp);
        let partition = current_partition();
        for channel in routes {
            let publish = match &mark {
                Some(mark) => Publish::Retained {
                    mark: mark.clone(),
                    channel,
                    payload: encoded.clone(),
                    partition,
                },
                None => Publish::Command {
                    channel,
                    payload: encoded.clone(),
                    partition,
                },
            };
            self.ctx
                .publisher
                .try_send(publish)
                .map_err(|_| EmitError::Overloaded)?;
        }
        Ok(())
    }
}

struct SocketInner {
    id: String,
    nsp: String,
    node: String,
    handshake: Arc<Handshake>,
    rooms: Mutex<Vec<String>>,
    data: Mutex<Option<String>>,
    recovered: bool,
    ctx: Arc<Ctx>,
}

/// One client in one namespace, as the event being handled saw it. Cheap to
/// clone; valid after the handler returns (emits still reach the client while
/// it is connected).
#[derive(Clone)]
pub struct Socket {
    inner: Arc<SocketInner>,
}

impl Socket {
    pub(crate) fn from_event(event: &envelope::Event, ctx: Arc<Ctx>) -> Socket {
        Socket {
            inner: Arc::new(SocketInner {
                id: event.sid.clone(),
                nsp: event.nsp.clone(),
                node: event.node.clone(),
                handshake: event.handshake.clone(),
                rooms: Mutex::new(event.rooms.clone()),
                data: Mutex::new(event.sdata.clone()),
                recovered: event.recovered,
                ctx,
            }),
        }
    }

    /// In a connection handler: the client lost its connection and came
    /// back with connection state recovery (Socket.IO's `socket.recovered`).
    /// It kept this id, its rooms and data, and got the emits it missed; its
    /// earlier life had no disconnect event (a socket has one, when it is
    /// gone for good), so this connect follows an earlier one for the same
    /// id. A refusal disconnects it.
    pub fn recovered(&self) -> bool {
        self.inner.recovered
    }

    /// The socket id (what `socket.id` is on the client).
    pub fn id(&self) -> &str {
        &self.inner.id
    }

    pub fn nsp(&self) -> &str {
        &self.inner.nsp
    }

    /// The io-node holding the client.
    pub fn node(&self) -> &str {
        &self.inner.node
    }

    /// Headers, query, address and auth as the client connected.
    pub fn handshake(&self) -> &Handshake {
        &self.inner.handshake
    }

    /// The `auth` object of the connection as `T`, if there was one.
    pub fn auth<T: DeserializeOwned>(&self) -> Option<T> {
        serde_json::from_str(self.inner.handshake.auth.as_deref()?).ok()
    }

    /// The rooms the socket is in (its own id excluded), including joins and
    /// leaves made by this handler.
    pub fn rooms(&self) -> Vec<String> {
        lock(&self.inner.rooms).clone()
    }

    /// The user this socket was admitted as (by a registered credential or a
    /// token, see the io-node's `users_auth` / `jwt_secret`), if any.
    pub fn user(&self) -> Option<String> {
        ids::user_of(lock(&self.inner.rooms).iter()).map(str::to_owned)
    }

    /// The socket's data as `T`, if set.
    pub fn data<T: DeserializeOwned>(&self) -> Option<T> {
        serde_json::from_str(lock(&self.inner.data).as_deref()?).ok()
    }

    /// Replaces the socket's data; every later event's snapshot carries it.
    pub fn set_data<T: Serialize + ?Sized>(&self, data: &T) -> Result<(), EmitError> {
        let json = serde_json::to_string(data).map_err(PayloadError::from)?;
        *lock(&self.inner.data) = Some(json.clone());
        self.inner.ctx.publish(
            self.node_channel(),
            &Command::SetData(envelope::SetData {
                nsp: self.inner.nsp.clone(),
                sid: self.inner.id.clone(),
                data: json,
            }),
        )
    }

    fn node_channel(&self) -> String {
        self.inner.ctx.keys.node_channel(&self.inner.node)
    }

    fn to_self(&self) -> Emitter {
        Emitter::new(self.inner.ctx.clone(), &self.inner.nsp).to_socket(self.inner.id.clone())
    }

    /// Emits to this client with one argument.
    pub fn emit<T: Serialize + ?Sized>(&self, event: &str, arg: &T) -> Result<(), EmitError> {
        self.to_self().emit(event, arg)
    }

    /// Emits to this client with several arguments (a tuple or array).
    pub fn emit_args<T: Serialize + ?Sized>(&self, event: &str, args: &T) -> Result<(), EmitError> {
        self.to_self().emit_args(event, args)
    }

    /// Emits prepared arguments (attachments included) to this client.
    pub fn emit_payload(&self, event: &str, payload: &Payload) -> Result<(), EmitError> {
        self.to_self().emit_payload(event, payload)
    }

    /// Emits to this client and waits for its acknowledgement.
    pub async fn emit_with_ack<T: Serialize + ?Sized>(
        &self,
        event: &str,
        arg: &T,
        timeout: Duration,
    ) -> Result<Payload, EmitError> {
        let payload = Payload::from_arg(arg)?;
        let ctx = &self.inner.ctx;
        let (reply_to, receiver) = ctx.expect_reply();
        let token = reply_to.id;
        let command = Command::Emit(envelope::Emit {
            nsp: self.inner.nsp.clone(),
            sids: vec![self.inner.id.clone()],
            data: payload.event_json(event)?,
            bin: to_bins(&payload),
            ack: Some(reply_to),
            ..envelope::Emit::default()
        });
        ctx.publish(self.node_channel(), &command)?;
        match ctx.await_reply(token, receiver, timeout).await? {
            Reply::Ack(ack) => Ok(Payload::from_raw(
                ack.data,
                ack.bin
                    .into_iter()
                    .map(|b| bytes::Bytes::from(b.into_vec()))
                    .collect(),
            )),
            Reply::Joined(_) => Err(EmitError::Closed),
        }
    }

    /// Every client in `room` but this one (Socket.IO's `socket.to(room)`).
    pub fn to(&self, room: impl Into<String>) -> Emitter {
        Emitter::new(self.inner.ctx.clone(), &self.inner.nsp)
            .to(room)
            .except_socket(self.inner.id.clone())
    }

    /// Every client of the namespace but this one.
    pub fn broadcast(&self) -> Emitter {
        Emitter::new(self.inner.ctx.clone(), &self.inner.nsp).except_socket(self.inner.id.clone())
    }

    /// Every client of a namespace (this one included).
    pub fn of(&self, nsp: &str) -> Emitter {
        Emitter::new(self.inner.ctx.clone(), nsp)
    }

    /// Joins `room`. Returns once the io-node receives the room's traffic, so
    /// an emit to the room issued afterwards, from anywhere, reaches this
    /// socket.
    pub async fn join(&self, room: impl Into<String>) -> Result<(), EmitError> {
        self.join_many(vec![room.into()]).await
    }

    /// Joins several rooms at once.
    pub async fn join_many(&self, rooms: Vec<String>) -> Result<(), EmitError> {
        {
            let mut known = lock(&self.inner.rooms);
            for room in &rooms {
                if !known.contains(room) {
                    known.push(room.clone());
                }
            }
        }
        let ctx = &self.inner.ctx;
        let (reply_to, receiver) = ctx.expect_reply();
        let token = reply_to.id;
        let command = Command::Join(envelope::Join {
            nsp: self.inner.nsp.clone(),
            sid: self.inner.id.clone(),
            rooms,
            reply: Some(reply_to),
        });
        ctx.publish(self.node_channel(), &command)?;
        ctx.await_reply(token, receiver, ctx.join_timeout)
            .await
            .map(|_| ())
    }

    /// Leaves `room`.
    pub fn leave(&self, room: &str) -> Result<(), EmitError> {
        lock(&self.inner.rooms).retain(|known| known != room);
        self.inner.ctx.publish(
            self.node_channel(),
            &Command::Leave(envelope::Leave {
                nsp: self.inner.nsp.clone(),
                sid: self.inner.id.clone(),
                rooms: vec![room.to_owned()],
            }),
        )
    }

    /// Disconnects the socket from its namespace (the client sees
    /// `io server disconnect` and does not reconnect on its own).
    pub fn disconnect(&self) -> Result<(), EmitError> {
        self.disconnect_command(false)
    }

    /// Closes the client's whole connection: every namespace gets its
    /// DISCONNECT first, so the client sees `io server disconnect` and does
    /// not reconnect on its own.
    pub fn close(&self) -> Result<(), EmitError> {
        self.disconnect_command(true)
    }

    fn disconnect_command(&self, close: bool) -> Result<(), EmitError> {
        self.inner.ctx.publish(
            self.node_channel(),
            &Command::Disconnect(envelope::Disconnect {
                nsp: self.inner.nsp.clone(),
                sid: self.inner.id.clone(),
                close,
            }),
        )
    }
}

/// The acknowledgement a client asked for with its event. Answer it once.
pub struct Ack {
    pub(crate) ctx: Arc<Ctx>,
    pub(crate) node: String,
    pub(crate) nsp: String,
    pub(crate) sid: String,
    pub(crate) id: u64,
}

impl Ack {
    /// Acknowledges with one argument.
    pub fn send<T: Serialize + ?Sized>(self, arg: &T) -> Result<(), EmitError> {
        let payload = Payload::from_arg(arg)?;
        self.send_payload(&payload)
    }

    /// Acknowledges with several arguments (a tuple or array).
    pub fn send_args<T: Serialize + ?Sized>(self, args: &T) -> Result<(), EmitError> {
        let payload = Payload::from_args(args)?;
        self.send_payload(&payload)
    }

    /// Acknowledges with prepared arguments, attachments included.
    pub fn send_payload(self, payload: &Payload) -> Result<(), EmitError> {
        let command = Command::Ack(envelope::Ack {
            nsp: self.nsp,
            sid: self.sid,
            id: self.id,
            data: payload.json().to_owned(),
            bin: to_bins(payload),
        });
        self.ctx
            .publish(self.ctx.keys.node_channel(&self.node), &command)
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
