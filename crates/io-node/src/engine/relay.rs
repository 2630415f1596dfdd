//! Sessions served by any io-node: no sticky sessions needed at the load
//! balancer.
//!
//! A session id names the io-node that holds the session (its *owner*). A
//! long-polling request or a WebSocket that reaches another node (the
//! *relayer*) is passed on to the owner through the cluster (the [`Peers`]
//! port; relay envelopes, `iocluster_protocol::envelope::relay`), and the
//! owner's answer comes back the same way:
//!
//! - a GET or a POST becomes a request the owner carries out on the session
//!   exactly as if it had come in directly (the same `polling` code), and
//!   whose HTTP answer goes back to the relayer;
//! - a WebSocket is probed through the owner (which releases the pending
//!   poll, as for a local upgrade) and, once the client sends `upgrade`,
//!   becomes a *link*: the owner drains the session's outbox into `down`
//!   envelopes, the relayer writes them to the WebSocket and sends what it
//!   reads back `up`. The owner's backpressure reaches the relayer as `hold`.
//!
//! The session, its heartbeat, order and limits stay with the owner; the
//! relayer keeps only the number of each request or link. A relayer learns
//! that an owner died from the cluster's live-node set and fails what
//! waited on it (400 for a request, a closed WebSocket), which is what a
//! client of a dead node sees anyway; after its own subscription was lost
//! (relay envelopes may be lost with it) it fails everything it relayed and
//! closes every session it served for others, so that nothing is silently
//! skipped: clients reconnect (and recover their sessions).

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use http::{StatusCode, header};
use iocluster_protocol::engine::{self, TransportError};
use iocluster_protocol::envelope::relay::{self as wire, Packet, Relay};
use serde_bytes::ByteBuf;
use tokio::sync::{mpsc, oneshot};

use super::responses::error;
use super::{CloseReason, Frame, Handler, Session, polling};

/// The cluster side, as the engine sees it: how to reach other io-nodes.
pub(crate) trait Peers: Send + Sync + 'static {
    /// This node's id.
    fn node_id(&self) -> &str;
    /// Queues `relay` for `node`'s relay channel; `false` when the outgoing
    /// buffer is full.
    fn send(&self, node: &str, relay: &Relay) -> bool;
    /// Whether `node` holds a live lease.
    fn is_live<'a>(&'a self, node: &'a str) -> Pin<Box<dyn Future<Output = bool> + Send + 'a>>;
}

/// Client packets a relayed WebSocket's owner may have waiting before it
/// closes the session as overloaded: the relayer stops reading once told to
/// hold, so only what was under way meanwhile piles up.
const LINK_INBOX: usize = 4096;

/// The relay state of a node, in both roles (`C`: what the layer above
/// keeps per session, as in [`Session`]).
pub(crate) struct Relays<C> {
    peers: OnceLock<Arc<dyn Peers>>,
    next: AtomicU64,
    /// Requests this node relayed, awaiting their answer.
    pending: Mutex<HashMap<u64, Pending>>,
    /// WebSockets this node relays to the session's owner.
    links: Mutex<HashMap<u64, Link>>,
    /// Polls and links other nodes relay to sessions held here.
    served: Mutex<HashMap<RelayedBy, Served<C>>>,
}

impl<C> Default for Relays<C> {
    fn default() -> Relays<C> {
        Relays {
            peers: OnceLock::new(),
            next: AtomicU64::new(0),
            pending: Mutex::default(),
            links: Mutex::default(),
            served: Mutex::default(),
        }
    }
}

/// A relayer's request or link: its node id and its number.
type RelayedBy = (Arc<str>, u64);

struct Pending {
    owner: Arc<str>,
    answer: oneshot::Sender<wire::Answer>,
}

struct Link {
    owner: Arc<str>,
    down: mpsc::UnboundedSender<Downward>,
}

/// What reaches a relayed WebSocket from its session's owner.
pub(super) enum Downward {
    Packets(Vec<Packet>),
    Hold(bool),
    Close,
}

enum Served<C> {
    Poll(tokio::task::AbortHandle),
    Link(mpsc::Sender<Upward>, Arc<Session<C>>),
}

/// What reaches a served session from the WebSocket another node relays.
enum Upward {
    Packets(Vec<Packet>),
    Gone(CloseReason),
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl<C> Relays<C> {
    /// Connects the relay to the cluster; until then, nothing is relayed.
    pub(crate) fn set_peers(&self, peers: Arc<dyn Peers>) {
        let _ = self.peers.set(peers);
    }

    fn peers(&self) -> Option<&Arc<dyn Peers>> {
        self.peers.get()
    }

    /// The owner of `sid` when it is another node: a request for it is
    /// relayed.
    pub(crate) fn foreign_owner<'a>(&self, sid: &'a str) -> Option<&'a str> {
        let owner = iocluster_protocol::ids::node_of(sid)?;
        let peers = self.peers()?;
        (owner != peers.node_id()).then_some(owner)
    }

    pub(crate) async fn is_live(&self, owner: &str) -> bool {
        match self.peers() {
            Some(peers) => peers.is_live(owner).await,
            None => false,
        }
    }

    fn send(&self, node: &str, relay: &Relay) -> bool {
        self.peers().is_some_and(|peers| peers.send(node, relay))
    }

    fn from(&self) -> String {
        self.peers()
            .map(|peers| peers.node_id().to_owned())
            .unwrap_or_default()
    }

    /// Sends the request `make` builds (given this node's id and the
    /// request's number) to `owner` and waits up to `wait` for the answer.
    /// `None`: the owner is gone, did not answer, or the request could not
    /// be sent. Dropped before the answer (the client left), the request is
    /// cancelled at the owner.
    async fn request(
        &self,
        owner: &str,
        wait: Duration,
        make: impl FnOnce(String, u64) -> Relay,
    ) -> Option<wire::Answer> {
        if !self.is_live(owner).await {
            return None;
        }
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let (answer, answered) = oneshot::channel();
        lock(&self.pending).insert(
            id,
            Pending {
                owner: owner.into(),
                answer,
            },
        );
        let mut guard = Cancel {
            relays: self,
            owner,
            id,
            armed: true,
        };
        if !self.send(owner, &make(self.from(), id)) {
            return None;
        }
        let answer = tokio::time::timeout(wait, answered).await;
        guard.armed = !matches!(answer, Ok(Ok(_)));
        answer.ok()?.ok()
    }

    /// Opens a link for a WebSocket whose client sent `upgrade`: the owner
    /// sends the session's frames on it from now on.
    pub(super) fn open_link(
        &self,
        owner: &str,
        sid: &str,
    ) -> Option<(u64, mpsc::UnboundedReceiver<Downward>)> {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let (down, receiver) = mpsc::unbounded_channel();
        lock(&self.links).insert(
            id,
            Link {
                owner: owner.into(),
                down,
            },
        );
        let upgrade = Relay::Upgrade(wire::Request {
            from: self.from(),
            id,
            sid: sid.to_owned(),
        });
        if !self.send(owner, &upgrade) {
            lock(&self.links).remove(&id);
            return None;
        }
        metrics::counter!("iocluster_relayed_total", "kind" => "websocket").increment(1);
        Some((id, receiver))
    }

    /// Client packets read from a relayed WebSocket, for its owner.
    pub(super) fn up(&self, owner: &str, id: u64, packets: Vec<Packet>) -> bool {
        let up = Relay::Up(wire::Up {
            from: self.from(),
            id,
            packets,
        });
        self.send(owner, &up)
    }

    /// A relayed WebSocket ended: its owner closes the session.
    pub(super) fn unlink(&self, owner: &str, id: u64, reason: CloseReason) {
        if lock(&self.links).remove(&id).is_some() {
            let gone = Relay::Gone(wire::Gone {
                from: self.from(),
                id,
                reason: reason.as_str().to_owned(),
            });
            self.send(owner, &gone);
        }
    }

    /// `owner` left the live set: what waited on it fails now.
    pub(crate) fn owner_lost(&self, owner: &str) {
        lock(&self.pending).retain(|_, pending| &*pending.owner != owner);
        lock(&self.links).retain(|_, link| {
            let keep = &*link.owner != owner;
            if !keep {
                let _ = link.down.send(Downward::Close);
            }
            keep
        });
    }

    /// Relay envelopes may have been lost (this node's subscription was
    /// down): fail every request and link relayed from here, and close
    /// every session served here for another node.
    pub(crate) fn reset(&self) {
        lock(&self.pending).clear();
        for (_, link) in lock(&self.links).drain() {
            let _ = link.down.send(Downward::Close);
        }
        for (_, served) in lock(&self.served).drain() {
            match served {
                Served::Poll(task) => task.abort(),
                Served::Link(_, session) => session.close(CloseReason::TransportError),
            }
        }
    }

    /// At shutdown: every relayed WebSocket is closed (its client
    /// reconnects elsewhere).
    pub(crate) fn close_links(&self) {
        for link in lock(&self.links).values() {
            let _ = link.down.send(Downward::Close);
        }
    }
}

/// Cancels a relayed request at its owner unless it was answered.
struct Cancel<'a, C> {
    relays: &'a Relays<C>,
    owner: &'a str,
    id: u64,
    armed: bool,
}

impl<C> Drop for Cancel<'_, C> {
    fn drop(&mut self) {
        lock(&self.relays.pending).remove(&self.id);
        if self.armed {
            let cancel = Relay::Cancel(wire::Link {
                from: self.relays.from(),
                id: self.id,
            });
            self.relays.send(self.owner, &cancel);
        }
    }
}

/// How long a relayer waits for the owner's answer: a poll is answered
/// within a ping interval (a ping at the latest), a POST sooner.
fn answer_wait(config: &crate::config::Config) -> Duration {
    config.ping_interval + config.ping_timeout + Duration::from_secs(5)
}

/// A long-polling GET or POST for a session `owner` holds.
pub(super) async fn relay_polling<H: Handler>(
    handler: &H,
    owner: &str,
    sid: &str,
    request: Request,
) -> Response {
    let engine = handler.engine();
    let wait = answer_wait(&engine.config);
    let relays = &engine.relays;
    let answer = match *request.method() {
        http::Method::GET => {
            metrics::counter!("iocluster_relayed_total", "kind" => "poll").increment(1);
            relays
                .request(owner, wait, |from, id| {
                    Relay::Poll(wire::Request {
                        from,
                        id,
                        sid: sid.to_owned(),
                    })
                })
                .await
        }
        http::Method::POST => {
            metrics::counter!("iocluster_relayed_total", "kind" => "post").increment(1);
            let limit = engine.config.max_payload;
            let Ok(body) = axum::body::to_bytes(request.into_body(), limit).await else {
                return (StatusCode::PAYLOAD_TOO_LARGE, "payload too large").into_response();
            };
            relays
                .request(owner, wait, |from, id| {
                    Relay::Post(wire::Post {
                        from,
                        id,
                        sid: sid.to_owned(),
                        body: ByteBuf::from(body.to_vec()),
                    })
                })
                .await
        }
        _ => return error(TransportError::BadRequest),
    };
    match answer {
        Some(answer) => into_response(answer),
        None => {
            metrics::counter!("iocluster_relay_failures_total").increment(1);
            error(TransportError::UnknownSid)
        }
    }
}

fn into_response(answer: wire::Answer) -> Response {
    let status = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::BAD_GATEWAY);
    let mut response = (status, answer.body.into_vec()).into_response();
    if let Ok(value) = http::HeaderValue::from_str(&answer.content_type) {
        response.headers_mut().insert(header::CONTENT_TYPE, value);
    }
    response
}

/// Asks the owner to let a WebSocket take over a polling session (the
/// client's `2probe`); whether it may.
pub(super) async fn probe<C: Default + Send + 'static>(
    engine: &super::Engine<C>,
    owner: &str,
    sid: &str,
) -> bool {
    let wait = answer_wait(&engine.config);
    let answer = engine
        .relays
        .request(owner, wait, |from, id| {
            Relay::Probe(wire::Request {
                from,
                id,
                sid: sid.to_owned(),
            })
        })
        .await;
    answer.is_some_and(|answer| answer.status == 200)
}

/// Takes every relay envelope for this node, from the cluster's
/// subscription, until the sender is dropped.
pub(crate) async fn serve<H: Handler>(
    handler: Arc<H>,
    mut inbound: mpsc::UnboundedReceiver<Vec<u8>>,
) {
    while let Some(bytes) = inbound.recv().await {
        match Relay::decode(&bytes) {
            Ok(relay) => dispatch(&handler, relay),
            Err(error) => tracing::warn!(%error, "invalid relay envelope"),
        }
    }
}

fn dispatch<H: Handler>(handler: &Arc<H>, relay: Relay) {
    let relays = &handler.engine().relays;
    match relay {
        // Owner side.
        Relay::Poll(request) => {
            let key: RelayedBy = (request.from.as_str().into(), request.id);
            let task_key = key.clone();
            let task_handler = handler.clone();
            // Held while the task starts, so that a poll answered at once
            // (its removal waits for this) leaves nothing behind.
            let mut served = lock(&relays.served);
            let task = tokio::spawn(async move {
                let response = owner_poll(&*task_handler, &request.sid).await;
                let relays = &task_handler.engine().relays;
                lock(&relays.served).remove(&task_key);
                answer(relays, &request.from, request.id, response).await;
            });
            served.insert(key, Served::Poll(task.abort_handle()));
        }
        Relay::Post(post) => {
            let handler = handler.clone();
            tokio::spawn(async move {
                let response = owner_post(&*handler, &post.sid, post.body.into_vec()).await;
                answer(&handler.engine().relays, &post.from, post.id, response).await;
            });
        }
        Relay::Cancel(link) => {
            if let Some(Served::Poll(task)) =
                lock(&relays.served).remove(&(link.from.into(), link.id))
            {
                task.abort();
            }
        }
        Relay::Probe(request) => {
            let allowed = match handler.engine().live_session(&request.sid) {
                Some(session) => {
                    let mut state = session.lock();
                    let free = !state.websocket && !state.upgrading;
                    if free {
                        state.upgrading = true;
                    }
                    drop(state);
                    if free {
                        // Releases a pending long-poll so the client can pause polling.
                        session.send(Frame::noop());
                    }
                    free
                }
                None => false,
            };
            let status = if allowed { 200 } else { 400 };
            relays.send(
                &request.from,
                &Relay::Answer(wire::Answer {
                    id: request.id,
                    status,
                    content_type: String::new(),
                    body: ByteBuf::new(),
                }),
            );
        }
        Relay::Upgrade(request) => {
            let session = handler
                .engine()
                .live_session(&request.sid)
                .filter(|session| {
                    let mut state = session.lock();
                    let upgrading = state.upgrading && !state.websocket;
                    if upgrading {
                        state.upgrading = false;
                        state.websocket = true;
                    }
                    upgrading
                });
            let Some(session) = session else {
                relays.send(&request.from, &Relay::Close(wire::Close { id: request.id }));
                return;
            };
            tracing::debug!(sid = %session.sid, relayer = %request.from, "upgraded to a relayed WebSocket");
            let (up, inbox) = mpsc::channel(LINK_INBOX);
            let relayer: Arc<str> = request.from.as_str().into();
            lock(&relays.served).insert(
                (relayer.clone(), request.id),
                Served::Link(up, session.clone()),
            );
            tokio::spawn(serve_link(
                handler.clone(),
                session,
                relayer,
                request.id,
                inbox,
            ));
        }
        Relay::Up(up) => to_served_link(relays, up.from, up.id, Upward::Packets(up.packets)),
        Relay::Gone(gone) => {
            let reason = CloseReason::ALL
                .into_iter()
                .find(|reason| reason.as_str() == gone.reason)
                .unwrap_or(CloseReason::TransportClose);
            to_served_link(relays, gone.from, gone.id, Upward::Gone(reason));
        }
        // Relayer side.
        Relay::Answer(answer) => {
            if let Some(pending) = lock(&relays.pending).remove(&answer.id) {
                let _ = pending.answer.send(answer);
            }
        }
        Relay::Down(down) => to_link(relays, down.id, Downward::Packets(down.packets), false),
        Relay::Hold(hold) => to_link(relays, hold.id, Downward::Hold(hold.paused), false),
        Relay::Close(close) => to_link(relays, close.id, Downward::Close, true),
    }
}

fn to_link<C>(relays: &Relays<C>, id: u64, down: Downward, last: bool) {
    let mut links = lock(&relays.links);
    if let Some(link) = links.get(&id) {
        let _ = link.down.send(down);
    }
    if last {
        links.remove(&id);
    }
}

fn to_served_link<C>(relays: &Relays<C>, from: String, id: u64, up: Upward) {
    let served = lock(&relays.served);
    if let Some(Served::Link(sender, session)) = served.get(&(from.into(), id))
        && sender.try_send(up).is_err()
    {
        // Far more than the relayer sends once told to hold: a relayer
        // that does not hold, or a session that cannot keep up.
        session.close(CloseReason::Overloaded);
    }
}

/// A relayed GET, carried out here as if it had come in directly.
async fn owner_poll<H: Handler>(handler: &H, sid: &str) -> Response {
    match polling::polling_session(handler.engine(), sid) {
        Ok(session) => polling::poll(handler.engine(), session).await,
        Err(refused) => error(refused),
    }
}

/// A relayed POST, carried out here as if it had come in directly.
async fn owner_post<H: Handler>(handler: &H, sid: &str, body: Vec<u8>) -> Response {
    match polling::polling_session(handler.engine(), sid) {
        Ok(session) => polling::post(handler, session, Request::new(Body::from(body))).await,
        Err(refused) => error(refused),
    }
}

/// Sends an HTTP answer back to the relayer.
async fn answer<C>(relays: &Relays<C>, relayer: &str, id: u64, response: Response) {
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .unwrap_or("text/plain; charset=UTF-8")
        .to_owned();
    // The engine's own bodies, in memory already.
    let body = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap_or_default();
    let answer = Relay::Answer(wire::Answer {
        id,
        status,
        content_type,
        body: ByteBuf::from(body.to_vec()),
    });
    if !relays.send(relayer, &answer) {
        tracing::warn!(
            relayer,
            "outgoing buffer full: a relayed answer was dropped"
        );
    }
}

/// Serves a session whose WebSocket another node holds: drains its outbox
/// into `down` envelopes, hands the client's packets that come `up` to the
/// layer above, and tells the relayer to hold while the session is paused.
async fn serve_link<H: Handler>(
    handler: Arc<H>,
    session: Arc<Session<H::Client>>,
    relayer: Arc<str>,
    id: u64,
    mut inbox: mpsc::Receiver<Upward>,
) {
    let relays = &handler.engine().relays;
    let reader = tokio::select! {
        reader = session.outbox_reader.lock() => Some(reader),
        _ = session.closed() => None,
    };
    let mut told_paused = false;
    while reader.is_some() {
        let paused = session.is_paused();
        if paused != told_paused {
            relays.send(&relayer, &Relay::Hold(wire::Hold { id, paused }));
            told_paused = paused;
        }
        tokio::select! {
            frame = session.next_frame() => {
                let Some(first) = frame else { break };
                let (packets, then_close) = down_batch(&session, first);
                if !packets.is_empty() && !relays.send(&relayer, &Relay::Down(wire::Down { id, packets })) {
                    session.close(CloseReason::Overloaded);
                    break;
                }
                if let Some(reason) = then_close {
                    session.close(reason);
                    break;
                }
            }
            up = inbox.recv(), if !paused => match up {
                Some(Upward::Packets(packets)) => {
                    if let Err(reason) = Box::pin(on_packets(&*handler, &session, packets)).await {
                        session.close(reason);
                        break;
                    }
                }
                Some(Upward::Gone(reason)) => {
                    session.close(reason);
                    break;
                }
                None => {
                    session.close(CloseReason::TransportError);
                    break;
                }
            },
            _ = session.until_resumed(), if paused => {}
        }
    }
    lock(&relays.served).remove(&(relayer.clone(), id));
    relays.send(&relayer, &Relay::Close(wire::Close { id }));
}

async fn on_packets<H: Handler>(
    handler: &H,
    session: &Arc<Session<H::Client>>,
    packets: Vec<Packet>,
) -> Result<(), CloseReason> {
    for packet in packets {
        match packet {
            Packet::Text(text) => match engine::decode_text(&text) {
                Ok(packet) => super::on_packet(handler, session, packet).await?,
                Err(_) => return Err(CloseReason::ParseError),
            },
            Packet::Binary(bytes) => {
                let packet = super::websocket::binary_packet(session, &bytes)?;
                super::on_packet(handler, session, packet).await?
            }
        }
    }
    Ok(())
}

/// `first` and what else waits in the outbox, as one `down` envelope's
/// packets (what one WebSocket write would take), and the reason to close
/// with after them for a [`Frame::CloseAfter`]. Binary packets as the
/// client's WebSocket carries them.
fn down_batch<C>(session: &Session<C>, first: Frame) -> (Vec<Packet>, Option<CloseReason>) {
    use super::websocket::{WRITE_BATCH, WRITE_BATCH_BYTES, binary_message};
    let binary = |data: &[u8]| {
        Packet::Binary(ByteBuf::from(
            binary_message(data, session.eio3).into_owned(),
        ))
    };
    let mut packets = Vec::new();
    let mut bytes = 0;
    let then_close = session.take_write(first, WRITE_BATCH, WRITE_BATCH_BYTES, |frame| {
        match frame {
            Frame::Text(text) | Frame::Alone(text) => {
                bytes += text.len();
                packets.push(Packet::Text(text.as_str().to_owned()));
            }
            Frame::WithBinary(text, attachments) => {
                bytes += text.len();
                packets.push(Packet::Text(text.as_str().to_owned()));
                for attachment in attachments.iter() {
                    bytes += attachment.len();
                    packets.push(binary(attachment));
                }
            }
            Frame::Binary(data, _) => {
                bytes += data.len();
                packets.push(binary(data));
            }
            Frame::CloseAfter(_) => {}
        }
        bytes
    });
    (packets, then_close)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{Timings, Watch};
    use iocluster_protocol::envelope::EncodedHandshake;

    fn session(watch: &Watch) -> Arc<Session<()>> {
        Session::new(
            "n1.s".into(),
            EncodedHandshake::new(&Default::default()),
            64,
            false,
            watch,
            None,
            false,
        )
    }

    fn watch() -> (Watch, super::super::Closed) {
        Watch::new(Timings {
            ping_interval: Duration::from_secs(10),
            ping_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(10),
        })
    }

    #[test]
    fn a_down_batch_ends_after_a_frame_that_must_be_alone() {
        let (watch, _closed) = watch();
        let session = session(&watch);
        session.send(Frame::text("42[\"b\"]".into()));
        session.send(Frame::text("42[\"c\"]".into()));
        let (packets, close) = down_batch(&session, Frame::alone("40{}".into()));
        assert_eq!(packets, vec![Packet::Text("40{}".into())]);
        assert_eq!(close, None);
        let first = session.outbox.try_pop().unwrap();
        let (packets, _) = down_batch(&session, first);
        assert_eq!(
            packets,
            vec![
                Packet::Text("42[\"b\"]".into()),
                Packet::Text("42[\"c\"]".into())
            ]
        );
    }

    #[test]
    fn attachments_follow_their_packet_and_a_close_ends_the_batch() {
        let (watch, _closed) = watch();
        let session = session(&watch);
        session.close_after_queued(CloseReason::ForcedClose);
        session.send(Frame::text("never".into()));
        let first = Frame::with_binary(
            "451-[\"f\",{\"_placeholder\":true,\"num\":0}]".into(),
            Arc::from(vec![bytes::Bytes::from_static(&[1, 2])]),
        );
        let (packets, close) = down_batch(&session, first);
        assert_eq!(packets.len(), 2);
        assert_eq!(packets[1], Packet::Binary(ByteBuf::from(vec![1, 2])));
        assert_eq!(close, Some(CloseReason::ForcedClose));
    }

    #[test]
    fn a_lost_owner_fails_its_requests_and_closes_its_links() {
        let relays = Relays::<()>::default();
        let (answer, mut answered) = oneshot::channel();
        lock(&relays.pending).insert(
            1,
            Pending {
                owner: "a".into(),
                answer,
            },
        );
        let (other, mut other_answered) = oneshot::channel();
        lock(&relays.pending).insert(
            2,
            Pending {
                owner: "b".into(),
                answer: other,
            },
        );
        let (down, mut link) = mpsc::unbounded_channel();
        lock(&relays.links).insert(
            3,
            Link {
                owner: "a".into(),
                down,
            },
        );
        relays.owner_lost("a");
        assert!(matches!(
            answered.try_recv(),
            Err(oneshot::error::TryRecvError::Closed)
        ));
        assert!(matches!(
            other_answered.try_recv(),
            Err(oneshot::error::TryRecvError::Empty)
        ));
        assert!(matches!(link.try_recv(), Ok(Downward::Close)));
        assert!(lock(&relays.links).is_empty());
    }
}
