//! Cluster-wide presence for applications: Socket.IO's `fetchSockets`,
//! `socketsJoin`, `socketsLeave` and `disconnectSockets`, on any
//! [`Emitter`] selection (`io.of("/").to("room")`, `socket.to(room)`, ...).
//!
//! Sockets are read from the live io-nodes' ledgers in Redis (docs/
//! PROTOCOL.md, "Presence"), with `iocluster_protocol::presence` doing the
//! decoding and planning the `HSCAN`s; no io-node is asked anything. Acting
//! on a selection publishes one `join`, `leave` or `disconnect` command per
//! socket to the io-node holding it, through the app-node's ordered
//! publisher. Each operation ends within its timeout ([`DEFAULT_TIMEOUT`],
//! or [`Emitter::timeout`]).
//!
//! As in Socket.IO, a selection is a moment's view: a socket that joins a
//! room (or connects) while the selection is being read may be missed, and
//! one that leaves meanwhile may still be listed (a command for it is then
//! ignored by its io-node). A socket waiting for admission is listed too.
//!
//! This module opens its own Redis connection on first use, apart from the
//! runtime's, so presence reads never wait behind queue takes or flushes.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use iocluster_protocol::envelope::{self, Command, Handshake};
use iocluster_protocol::presence::{Filter, SocketInfo, SocketScan};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::OnceCell;
use tokio::time::Instant;

use crate::payload::Payload;
use crate::socket::{Ctx, EmitError, Emitter, Publish};

/// How long a presence operation may take when the selection does not say
/// ([`Emitter::timeout`]): Socket.IO's default for cluster-wide requests.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// Sockets per page read from Redis (a page's plan is bounded; the whole
/// selection is then held, as `fetch_sockets` returns it).
const PAGE: usize = 500;

/// Most sockets named by id that are looked up directly (`HGET`) instead
/// of scanning every ledger.
const MAX_DIRECT: usize = 1_000;

/// Why a presence operation failed.
#[derive(Debug, thiserror::Error)]
pub enum PresenceError {
    #[error("Redis failed: {0}")]
    Redis(#[from] redis::RedisError),
    /// Out of time; for `sockets_join`, `sockets_leave` and
    /// `disconnect_sockets`, the sockets read so far were commanded.
    #[error("presence operation unfinished after {0:?}")]
    Timeout(Duration),
    #[error(transparent)]
    Emit(#[from] EmitError),
}

/// The app-node's way to read ledgers: its own Redis connection, opened on
/// first use.
pub(crate) struct Reader {
    url: String,
    redis: OnceCell<iocluster_ops::Redis>,
}

impl Reader {
    pub(crate) fn new(url: String) -> Reader {
        Reader {
            url,
            redis: OnceCell::new(),
        }
    }

    async fn redis(&self) -> redis::RedisResult<iocluster_ops::Redis> {
        self.redis
            .get_or_try_init(|| async {
                let client = iocluster_ops::redis_client(&self.url)?;
                client.connection(Some(DEFAULT_TIMEOUT)).await
            })
            .await
            .cloned()
    }
}

use iocluster_ops::presence::{hscan, live_nodes};

/// Reads the sockets `filter` selects, a page at a time, handing each page
/// to `each`; a socket appears once.
async fn for_each_page(
    ctx: &Ctx,
    filter: Filter,
    mut each: impl FnMut(Vec<SocketInfo>) -> Result<(), PresenceError>,
) -> Result<(), PresenceError> {
    let mut redis = ctx.presence.redis().await?;
    let nodes = live_nodes(&mut redis, &ctx.keys).await?;
    let mut seen = HashSet::new();
    let direct = filter.rooms.is_empty()
        && !filter.sids.is_empty()
        && filter.sids.len() * nodes.len().max(1) <= MAX_DIRECT;
    if direct {
        // Sockets named by id: look them up in every live ledger (a
        // socket id names the node it connected to, but any ledger may
        // hold it).
        let mut pipe = redis::pipe();
        let mut asked = Vec::new();
        for sid in &filter.sids {
            for node in &nodes {
                pipe.cmd("HGET").arg(ctx.keys.ledger(node)).arg(sid);
                asked.push((node, sid));
            }
        }
        let values: Vec<Option<Vec<u8>>> = pipe.query_async(&mut redis).await?;
        let sockets = asked
            .into_iter()
            .zip(values)
            .filter_map(|((node, sid), value)| {
                SocketInfo::from_ledger_entry(node, sid, &value?).ok()
            })
            .filter(|socket| filter.matches(socket) && seen.insert(socket.sid.clone()))
            .collect();
        return each(sockets);
    }
    let mut cursor = None;
    loop {
        let mut scan = SocketScan::new(filter.clone(), nodes.clone(), cursor, PAGE, usize::MAX);
        while let Some(step) = scan.step() {
            let (next, entries) = hscan(&mut redis, &ctx.keys, &step).await?;
            scan.feed(next, entries);
        }
        let page = scan.finish();
        if page.undecodable > 0 {
            tracing::warn!(
                entries = page.undecodable,
                "undecodable ledger entries skipped"
            );
        }
        let fresh: Vec<SocketInfo> = page
            .sockets
            .into_iter()
            .filter(|socket| seen.insert(socket.sid.clone()))
            .collect();
        each(fresh)?;
        match page.next {
            Some(next) => cursor = Some(next),
            None => return Ok(()),
        }
    }
}

/// A connected socket anywhere in the cluster, as its io-node's ledger
/// describes it (Socket.IO's `RemoteSocket`): a snapshot, plus commands
/// for it.
#[derive(Clone)]
pub struct RemoteSocket {
    info: SocketInfo,
    ctx: Arc<Ctx>,
}

impl std::fmt::Debug for RemoteSocket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteSocket")
            .field("id", &self.info.sid)
            .field("nsp", &self.info.nsp)
            .field("node", &self.info.node)
            .field("rooms", &self.info.rooms)
            .finish_non_exhaustive()
    }
}

impl RemoteSocket {
    /// The socket id.
    pub fn id(&self) -> &str {
        &self.info.sid
    }

    pub fn nsp(&self) -> &str {
        &self.info.nsp
    }

    /// The io-node holding it.
    pub fn node(&self) -> &str {
        &self.info.node
    }

    /// The rooms it is in (its own id excluded; `$user:<id>` included).
    pub fn rooms(&self) -> &[String] {
        &self.info.rooms
    }

    /// The user it was admitted as, if any.
    pub fn user(&self) -> Option<&str> {
        self.info.user()
    }

    /// Headers, query, address and auth as the client connected.
    pub fn handshake(&self) -> &Handshake {
        &self.info.handshake
    }

    /// Its data as `T`, if set and of that shape.
    pub fn data<T: DeserializeOwned>(&self) -> Option<T> {
        serde_json::from_str(self.info.data.as_deref()?).ok()
    }

    fn channel(&self) -> String {
        self.ctx.keys.node_channel(&self.info.node)
    }

    /// Emits `event` with one argument to this socket.
    pub fn emit<T: Serialize + ?Sized>(&self, event: &str, arg: &T) -> Result<(), EmitError> {
        let payload = Payload::from_arg(arg)?;
        let command = Command::Emit(envelope::Emit {
            nsp: self.info.nsp.clone(),
            sids: vec![self.info.sid.clone()],
            data: payload.event_json(event)?,
            bin: payload
                .attachments()
                .iter()
                .map(|b| serde_bytes::ByteBuf::from(b.to_vec()))
                .collect(),
            ..envelope::Emit::default()
        });
        self.ctx.publish(self.channel(), &command)
    }

    /// Joins `room`; returns once its io-node receives the room's traffic.
    pub async fn join(&self, room: impl Into<String>) -> Result<(), EmitError> {
        let (reply, receiver) = self.ctx.expect_reply();
        let token = reply.id;
        let command = Command::Join(envelope::Join {
            nsp: self.info.nsp.clone(),
            sid: self.info.sid.clone(),
            rooms: vec![room.into()],
            reply: Some(reply),
        });
        self.ctx.publish(self.channel(), &command)?;
        self.ctx
            .await_reply(token, receiver, self.ctx.join_timeout)
            .await
            .map(|_| ())
    }

    /// Leaves `room`.
    pub fn leave(&self, room: impl Into<String>) -> Result<(), EmitError> {
        let command = Command::Leave(envelope::Leave {
            nsp: self.info.nsp.clone(),
            sid: self.info.sid.clone(),
            rooms: vec![room.into()],
        });
        self.ctx.publish(self.channel(), &command)
    }

    /// Disconnects it from its namespace; with `close`, closes the client's
    /// whole connection.
    pub fn disconnect(&self, close: bool) -> Result<(), EmitError> {
        let command = Command::Disconnect(envelope::Disconnect {
            nsp: self.info.nsp.clone(),
            sid: self.info.sid.clone(),
            close,
        });
        self.ctx.publish(self.channel(), &command)
    }
}

/// What to do to each selected socket.
enum Action {
    Join(Vec<String>),
    Leave(Vec<String>),
    Disconnect(bool),
}

impl Emitter {
    /// Bounds the presence operations of this selection (`fetch_sockets`,
    /// `sockets_join`, `sockets_leave`, `disconnect_sockets`) to `timeout`
    /// instead of [`DEFAULT_TIMEOUT`].
    pub fn timeout(mut self, timeout: Duration) -> Emitter {
        self.presence_timeout = Some(timeout);
        self
    }

    fn presence_filter(&self) -> Filter {
        Filter {
            nsp: Some(self.nsp.clone()),
            rooms: self.rooms.clone(),
            sids: self.sids.clone(),
            except_rooms: self.except_rooms.clone(),
            except_sids: self.except_sids.clone(),
            ..Filter::default()
        }
    }

    fn limit(&self) -> Duration {
        self.presence_timeout.unwrap_or(DEFAULT_TIMEOUT)
    }

    /// The selected sockets, on every io-node (Socket.IO's
    /// `fetchSockets`), read from the ledgers in Redis.
    pub async fn fetch_sockets(&self) -> Result<Vec<RemoteSocket>, PresenceError> {
        let limit = self.limit();
        let mut sockets = Vec::new();
        let read = for_each_page(&self.ctx, self.presence_filter(), |page| {
            sockets.extend(page.into_iter().map(|info| RemoteSocket {
                info,
                ctx: self.ctx.clone(),
            }));
            Ok(())
        });
        tokio::time::timeout(limit, read)
            .await
            .map_err(|_| PresenceError::Timeout(limit))??;
        Ok(sockets)
    }

    /// Makes every selected socket join `rooms` (Socket.IO's
    /// `socketsJoin`). Returns how many sockets were told, once every
    /// io-node concerned receives the rooms' traffic: an emit to the rooms
    /// issued afterwards reaches them.
    pub async fn sockets_join<R: Into<String>>(
        &self,
        rooms: impl IntoIterator<Item = R>,
    ) -> Result<usize, PresenceError> {
        let rooms = rooms.into_iter().map(Into::into).collect();
        self.act(Action::Join(rooms)).await
    }

    /// Makes every selected socket leave `rooms` (Socket.IO's
    /// `socketsLeave`). Returns how many sockets were told (the commands
    /// are queued in order on the app-node's publisher).
    pub async fn sockets_leave<R: Into<String>>(
        &self,
        rooms: impl IntoIterator<Item = R>,
    ) -> Result<usize, PresenceError> {
        let rooms = rooms.into_iter().map(Into::into).collect();
        self.act(Action::Leave(rooms)).await
    }

    /// Disconnects every selected socket (Socket.IO's `disconnectSockets`);
    /// with `close`, closes their clients' whole connections. Returns how
    /// many sockets were told.
    pub async fn disconnect_sockets(&self, close: bool) -> Result<usize, PresenceError> {
        self.act(Action::Disconnect(close)).await
    }

    async fn act(&self, action: Action) -> Result<usize, PresenceError> {
        let limit = self.limit();
        let deadline = Instant::now() + limit;
        let ctx = &self.ctx;
        let mut told = 0;
        // For joins: per io-node, the last join read, held back so that it
        // alone asks for a confirmation (an io-node applies its commands
        // in order, and confirms once every subscription asked for so far
        // is active).
        let mut held: HashMap<String, envelope::Join> = HashMap::new();
        let mut commands: Vec<(String, Command)> = Vec::new();
        let work = async {
            let mut pages = Vec::new();
            for_each_page(ctx, self.presence_filter(), |page| {
                pages.push(page);
                Ok(())
            })
            .await?;
            Ok::<_, PresenceError>(pages)
        };
        // Read, then command: reading is bounded by the deadline, and so is
        // writing to the publish queue.
        let pages = tokio::time::timeout_at(deadline, work)
            .await
            .map_err(|_| PresenceError::Timeout(limit))??;
        for socket in pages.into_iter().flatten() {
            told += 1;
            let (nsp, sid) = (socket.nsp, socket.sid);
            match &action {
                Action::Join(rooms) => {
                    let join = envelope::Join {
                        nsp,
                        sid,
                        rooms: rooms.clone(),
                        reply: None,
                    };
                    if let Some(previous) = held.insert(socket.node.clone(), join) {
                        commands.push((socket.node, Command::Join(previous)));
                    }
                }
                Action::Leave(rooms) => commands.push((
                    socket.node,
                    Command::Leave(envelope::Leave {
                        nsp,
                        sid,
                        rooms: rooms.clone(),
                    }),
                )),
                Action::Disconnect(close) => commands.push((
                    socket.node,
                    Command::Disconnect(envelope::Disconnect {
                        nsp,
                        sid,
                        close: *close,
                    }),
                )),
            }
        }
        let mut waiting = Vec::new();
        for (node, mut join) in held {
            let (reply, receiver) = ctx.expect_reply();
            waiting.push((reply.id, receiver));
            join.reply = Some(reply);
            commands.push((node, Command::Join(join)));
        }
        for (node, command) in commands {
            let publish = Publish::Command {
                channel: ctx.keys.node_channel(&node),
                payload: command.encode(),
                partition: crate::socket::current_partition(),
            };
            let failure = match tokio::time::timeout_at(deadline, ctx.publisher.send(publish)).await
            {
                Ok(Ok(())) => continue,
                Ok(Err(_)) => PresenceError::Emit(EmitError::Closed),
                Err(_) => PresenceError::Timeout(limit),
            };
            for (token, _) in waiting {
                ctx.forget_reply(token);
            }
            return Err(failure);
        }
        let mut late = false;
        for (token, receiver) in waiting {
            let left = deadline.saturating_duration_since(Instant::now());
            if ctx.await_reply(token, receiver, left).await.is_err() {
                late = true;
            }
        }
        if late {
            return Err(PresenceError::Timeout(limit));
        }
        Ok(told)
    }
}
