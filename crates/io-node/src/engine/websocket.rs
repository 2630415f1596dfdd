//! The WebSocket transport: the upgrade of the HTTP request, a WebSocket
//! opened straight away or taking over a polling session (probe, then
//! `upgrade`), and the one task per connection that reads packets and
//! writes the outbox in batches.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::Body;
use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use futures_util::{SinkExt, StreamExt};
use http::{HeaderMap, StatusCode, header};
use hyper_util::rt::TokioIo;
use iocluster_protocol::engine::{self, TransportError};
use tokio::io::AsyncWriteExt;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::frame::FrameHeader;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};
use tracing::Instrument;

use super::limits::RateLimiter;
use super::responses::{capture_handshake, error, open_packet};
use super::{CloseReason, Frame, Handler, Session};

pub(super) fn is_websocket_upgrade(headers: &HeaderMap) -> bool {
    let has_token = |name: header::HeaderName, token: &str| {
        headers
            .get_all(name)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
            .any(|part| part.trim().eq_ignore_ascii_case(token))
    };
    has_token(header::CONNECTION, "upgrade")
        && has_token(header::UPGRADE, "websocket")
        && headers
            .get(header::SEC_WEBSOCKET_VERSION)
            .is_some_and(|v| v == "13")
        && headers.contains_key(header::SEC_WEBSOCKET_KEY)
}

/// Completes the WebSocket handshake, then closes the WebSocket at once.
pub(super) fn accept_and_close(mut request: Request) -> Response {
    let Some(key) = request.headers().get(header::SEC_WEBSOCKET_KEY).cloned() else {
        return error(TransportError::BadRequest);
    };
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
    let on_upgrade = hyper::upgrade::on(&mut request);
    tokio::spawn(async move {
        let Ok(upgraded) = on_upgrade.await else {
            return;
        };
        let mut ws = WebSocketStream::from_raw_socket(
            TokioIo::new(upgraded),
            Role::Server,
            Some(WebSocketConfig::default().read_buffer_size(WS_READ_BUFFER)),
        )
        .await;
        let _ = tokio::time::timeout(CLOSE_GRACE, ws.close(None)).await;
    });
    switching_protocols(accept)
}

fn switching_protocols(accept: String) -> Response {
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::CONNECTION, "upgrade")
        .header(header::UPGRADE, "websocket")
        .header(header::SEC_WEBSOCKET_ACCEPT, accept)
        .body(Body::empty())
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

pub(super) fn upgrade<H: Handler>(
    handler: Arc<H>,
    peer: SocketAddr,
    mut request: Request,
    query: Vec<(String, String)>,
    existing: Option<Arc<Session<H::Client>>>,
    ticket: Option<super::budget::Ticket>,
    eio3: bool,
) -> Response {
    let engine = handler.engine();
    let Some(key) = request.headers().get(header::SEC_WEBSOCKET_KEY).cloned() else {
        return error(TransportError::BadRequest);
    };
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
    let handshake = existing
        .is_none()
        .then(|| capture_handshake(&engine.config, peer, &request, query));
    let on_upgrade = hyper::upgrade::on(&mut request);
    let max_payload = engine.config.max_payload;
    // This task sets the WebSocket up and ends; the task that lives as long
    // as the connection runs `serve_websocket` alone (see `spawn_serve`).
    tokio::spawn(async move {
        let upgraded = match Box::pin(on_upgrade).await {
            Ok(upgraded) => upgraded,
            Err(error) => {
                tracing::debug!(%error, "WebSocket upgrade failed");
                return;
            }
        };
        let ws = server_ws(upgraded, max_payload).await;
        match (existing, handshake.zip(ticket)) {
            (Some(session), _) => {
                let span =
                    tracing::debug_span!("session", sid = %session.sid, transport = "websocket");
                run_upgrade(handler, session, ws).instrument(span).await;
            }
            (None, Some((handshake, ticket))) => {
                let session = handler.engine().open_session(handshake, true, ticket, eio3);
                let span =
                    tracing::debug_span!("session", sid = %session.sid, transport = "websocket");
                run_websocket(handler, session, ws).instrument(span).await;
            }
            (None, None) => {}
        }
    });
    switching_protocols(accept)
}

/// The server side of an upgraded connection.
async fn server_ws(upgraded: hyper::upgrade::Upgraded, max_payload: usize) -> Ws {
    // tungstenite reserves its whole read buffer per connection (128 KiB
    // by default): idle connections must stay small.
    let config = WebSocketConfig::default()
        .read_buffer_size(WS_READ_BUFFER)
        .write_buffer_size(WS_WRITE_BUFFER)
        .max_message_size(Some(max_payload))
        .max_frame_size(Some(max_payload));
    Box::new(
        Box::pin(WebSocketStream::from_raw_socket(
            TokioIo::new(upgraded),
            Role::Server,
            Some(config),
        ))
        .await,
    )
}

/// A WebSocket for a session another io-node holds: accepted here, probed
/// through the owner, then relayed to it (see `super::relay`).
pub(super) fn upgrade_relayed<H: Handler>(
    handler: Arc<H>,
    mut request: Request,
    owner: Arc<str>,
    sid: Arc<str>,
) -> Response {
    let Some(key) = request.headers().get(header::SEC_WEBSOCKET_KEY).cloned() else {
        return error(TransportError::BadRequest);
    };
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
    let on_upgrade = hyper::upgrade::on(&mut request);
    let max_payload = handler.engine().config.max_payload;
    let span = tracing::debug_span!("relayed", %sid, %owner, transport = "websocket");
    tokio::spawn(
        async move {
            let Ok(upgraded) = on_upgrade.await else {
                return;
            };
            let ws = server_ws(upgraded, max_payload).await;
            run_relayed(handler, ws, owner, sid).await;
        }
        .instrument(span),
    );
    switching_protocols(accept)
}

/// The probe and the `upgrade` of a relayed WebSocket, then its traffic
/// until either side closes. The client gets as long as a heartbeat to
/// send each.
async fn run_relayed<H: Handler>(handler: Arc<H>, mut ws: Ws, owner: Arc<str>, sid: Arc<str>) {
    let engine = handler.engine();
    let patience = engine.config.ping_interval + engine.config.ping_timeout;
    let mut probed = false;
    loop {
        let message = match tokio::time::timeout(patience, ws.next()).await {
            Ok(message) => message,
            Err(_) => break,
        };
        let text = match message {
            Some(Ok(Message::Text(text))) => text,
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            _ => break,
        };
        match engine::decode_text(text.as_str()) {
            Ok(engine::Packet::Ping("probe")) if !probed => {
                if !super::relay::probe(engine, &owner, &sid).await {
                    break;
                }
                let pong = Message::Text(Utf8Bytes::from_static(engine::PROBE_PONG));
                if Box::pin(ws.send(pong)).await.is_err() {
                    return;
                }
                probed = true;
            }
            Ok(engine::Packet::Upgrade) if probed => {
                let Some((id, down)) = engine.relays().open_link(&owner, &sid) else {
                    break;
                };
                tracing::debug!("upgraded to a WebSocket relayed to the owner");
                let reason = serve_relayed(&*handler, &mut ws, &owner, id, down).await;
                engine.relays().unlink(&owner, id, reason);
                break;
            }
            _ => break,
        }
    }
    let _ = Box::pin(tokio::time::timeout(CLOSE_GRACE, SinkExt::close(&mut ws))).await;
}

/// Moves a relayed WebSocket's traffic: what the client sends goes `up` to
/// the owner (within the packet rate, and not while the owner holds), what
/// comes `down` is written. Returns why it ended.
async fn serve_relayed<H: Handler>(
    handler: &H,
    ws: &mut Ws,
    owner: &str,
    id: u64,
    mut down: tokio::sync::mpsc::UnboundedReceiver<super::relay::Downward>,
) -> CloseReason {
    use super::relay::Downward;
    use iocluster_protocol::envelope::relay::Packet;
    let engine = handler.engine();
    let relays = engine.relays();
    let mut limiter = RateLimiter::new(engine.config.max_packets_per_second);
    let mut throttled: Option<Pin<Box<tokio::time::Sleep>>> = None;
    let mut held = false;
    let backlog = engine.config.outbox_capacity;
    loop {
        let reading = !held && throttled.is_none();
        tokio::select! {
            message = ws.next(), if reading => {
                let packet = match message {
                    Some(Ok(Message::Text(text))) => Packet::Text(text.as_str().to_owned()),
                    Some(Ok(Message::Binary(bytes))) => Packet::Binary(bytes.to_vec().into()),
                    Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => continue,
                    Some(Ok(Message::Close(_))) | None => return CloseReason::TransportClose,
                    Some(Err(error)) => {
                        tracing::debug!(%error, "relayed WebSocket read failed");
                        return CloseReason::TransportError;
                    }
                };
                if !relays.up(owner, id, vec![packet]) {
                    return CloseReason::Overloaded;
                }
                if let Some(wait) = limiter.take() {
                    metrics::counter!("iocluster_throttled_packets_total").increment(1);
                    throttled = Some(Box::pin(tokio::time::sleep(wait)));
                }
            }
            () = async { throttled.as_mut().expect("set").as_mut().await }, if throttled.is_some() => {
                throttled = None;
            }
            from_owner = down.recv() => match from_owner {
                Some(Downward::Packets(packets)) => {
                    // The owner sends as fast as the session's frames come:
                    // a client that reads slower than that is cut off, as a
                    // full outbox cuts off a direct one.
                    if down.len() > backlog {
                        return CloseReason::SlowClient;
                    }
                    let mut out = Vec::new();
                    for packet in &packets {
                        match packet {
                            Packet::Text(text) => encode_data_frame(&mut out, Data::Text, text.as_bytes()),
                            Packet::Binary(bytes) => encode_data_frame(&mut out, Data::Binary, bytes),
                        }
                    }
                    if let Err(error) = write_out(ws, &out, true).await {
                        tracing::debug!(%error, "relayed WebSocket write failed");
                        return CloseReason::TransportError;
                    }
                }
                Some(Downward::Hold(paused)) => held = paused,
                Some(Downward::Close) | None => return CloseReason::ServerShutdown,
            },
        }
    }
}

/// One WebSocket, read and written by one task: not split into halves,
/// whose shared lock every poll of either side would take. Boxed, so the
/// task that serves it for the connection's life stays small.
type Ws = Box<WebSocketStream<TokioIo<hyper::upgrade::Upgraded>>>;

/// A WebSocket opened straight away: send the handshake, then serve.
async fn run_websocket<H: Handler>(handler: Arc<H>, session: Arc<Session<H::Client>>, mut ws: Ws) {
    let open = open_packet(handler.engine(), &session.sid, &[]);
    if Box::pin(ws.send(Message::Text(open.into()))).await.is_err() {
        session.close(CloseReason::TransportError);
        return;
    }
    if session.eio3 {
        super::connect_main_namespace(&*handler, &session).await;
    }
    spawn_serve(handler, session, ws);
}

/// Starts the task that serves an open WebSocket for as long as it lives.
/// Its own task, so that it holds nothing of the setup: what it holds is
/// memory every idle client costs (an async fn that awaits another keeps
/// room for both).
fn spawn_serve<H: Handler>(handler: Arc<H>, session: Arc<Session<H::Client>>, ws: Ws) {
    let span = tracing::Span::current();
    tokio::spawn(serve_websocket(handler, session, ws).instrument(span));
}

/// A WebSocket opened to upgrade a polling session: answer the probe, wait
/// for `upgrade`, then take over the outbox.
async fn run_upgrade<H: Handler>(handler: Arc<H>, session: Arc<Session<H::Client>>, mut ws: Ws) {
    loop {
        let message = tokio::select! {
            message = ws.next() => message,
            _ = session.closed() => return,
        };
        let text = match message {
            Some(Ok(Message::Text(text))) => text,
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            _ => return, // The probe failed; the session goes on polling.
        };
        match engine::decode_text(text.as_str()) {
            Ok(engine::Packet::Ping("probe")) => {
                if Box::pin(ws.send(Message::Text(Utf8Bytes::from_static(engine::PROBE_PONG))))
                    .await
                    .is_err()
                {
                    return;
                }
                session.lock().upgrading = true;
                // Releases a pending long-poll so the client can pause polling.
                session.send(Frame::noop());
            }
            Ok(engine::Packet::Upgrade) if session.lock().upgrading => {
                {
                    let mut state = session.lock();
                    state.upgrading = false;
                    state.websocket = true;
                }
                tracing::debug!("upgraded to WebSocket");
                spawn_serve(handler, session, ws);
                return;
            }
            _ => {
                session.close(CloseReason::ParseError);
                return;
            }
        }
    }
}

/// Bytes read from a WebSocket at a time; larger messages still arrive
/// whole (up to `max_payload`), a read at a time. Small, because tungstenite
/// holds this buffer for every connection, idle or not.
const WS_READ_BUFFER: usize = 512;

/// Bytes tungstenite gathers before it writes to the socket. It writes only
/// the open packet, the probe's answer and control frames (pongs, the
/// close); data frames go out through [`write_frames`]. The buffer keeps
/// its largest size, so it stays small.
const WS_WRITE_BUFFER: usize = 512;

/// Most frames written with one write.
pub(super) const WRITE_BATCH: usize = 64;

/// A write batch takes no more frames once it holds this many bytes: its
/// buffer exists only while it is written.
pub(super) const WRITE_BATCH_BYTES: usize = 16 * 1024;

/// What woke a WebSocket task ([`serve_websocket`]).
enum Woke {
    /// The pause of a client over its packet rate is over.
    Resumed,
    /// The read side gave something (`None`: the stream ended).
    Message(Option<Result<Message, tokio_tungstenite::tungstenite::Error>>),
    /// A frame to write, or `None`: the session is closed.
    Frame(Option<Frame>),
}

async fn serve_websocket<H: Handler>(
    handler: Arc<H>,
    session: Arc<Session<H::Client>>,
    mut ws: Ws,
) {
    let _reader = tokio::select! {
        reader = session.outbox_reader.lock() => reader,
        _ = session.closed() => return,
    };
    let mut limiter = RateLimiter::new(handler.engine().config.max_packets_per_second);
    // Set while a client over its packet rate is not read from (its frames
    // keep flowing out meanwhile). Boxed: most connections never need it.
    let mut pause: Option<Pin<Box<tokio::time::Sleep>>> = None;
    // Which side is looked at first, alternating, so that neither a client
    // that floods us nor a busy outbox starves the other.
    let mut frames_first = false;
    // Set when tungstenite may hold output of its own (a pong or a close
    // reply queued while it read): flushed before the next frames go out.
    let mut control_pending = false;
    // Set when the task stops inside a frame it could not finish writing.
    let mut mid_frame = false;
    loop {
        frames_first = !frames_first;
        let woke = std::future::poll_fn(|cx| {
            // First: a push, a close or the read side's waker from here on
            // wakes the task again.
            session.register_reader(cx.waker());
            if let Some(sleep) = pause.as_mut()
                && sleep.as_mut().poll(cx).is_ready()
            {
                return Poll::Ready(Woke::Resumed);
            }
            if frames_first && let Poll::Ready(frame) = session.frame_ready() {
                return Poll::Ready(Woke::Frame(frame));
            }
            // The read side only when its waker fired (or it last gave a
            // message): not on every frame the task is woken to write; and
            // not while the client is over its packet rate or the layer
            // above paused it (a resume wakes the task).
            if pause.is_none() && !session.is_paused() && session.take_read_wake() {
                let read_waker = session.read_waker();
                let mut read_cx = Context::from_waker(&read_waker);
                if let Poll::Ready(message) = ws.poll_next_unpin(&mut read_cx) {
                    session.set_read_wake();
                    return Poll::Ready(Woke::Message(message));
                }
            }
            if frames_first {
                Poll::Pending
            } else {
                session.frame_ready().map(Woke::Frame)
            }
        })
        .await;
        match woke {
            Woke::Resumed => pause = None,
            Woke::Message(message) => {
                control_pending = true;
                if let Some(wait) = limiter.take() {
                    session.hold_back();
                    metrics::counter!("iocluster_throttled_packets_total").increment(1);
                    pause = Some(Box::pin(tokio::time::sleep(wait)));
                }
                let result = match message {
                    // Handling is boxed for the same reason as writing.
                    Some(Ok(Message::Text(text))) => match engine::decode_text(text.as_str()) {
                        Ok(packet) => Box::pin(super::on_packet(&*handler, &session, packet)).await,
                        Err(_) => Err(CloseReason::ParseError),
                    },
                    Some(Ok(Message::Binary(bytes))) => match binary_packet(&session, &bytes) {
                        Ok(packet) => Box::pin(super::on_packet(&*handler, &session, packet)).await,
                        Err(reason) => Err(reason),
                    },
                    Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => Ok(()),
                    Some(Ok(Message::Close(_))) | None => Err(CloseReason::TransportClose),
                    Some(Err(error)) => {
                        tracing::debug!(%error, "WebSocket read failed");
                        Err(CloseReason::TransportError)
                    }
                };
                if let Err(reason) = result {
                    session.close(reason);
                    break;
                }
            }
            // `None` once the session is closed: a close wakes the task too.
            Woke::Frame(None) => break,
            Woke::Frame(Some(frame)) => {
                // Boxed: the write state exists only while writing, so an
                // idle connection's task stays small.
                let written = Box::pin(write_frames(
                    &mut ws,
                    &session,
                    frame,
                    std::mem::take(&mut control_pending),
                ))
                .await;
                match written {
                    Ok(Written::All) => {}
                    Ok(Written::ThenClosed) => break,
                    Ok(Written::Cut) => {
                        mid_frame = true;
                        break;
                    }
                    Err(error) => {
                        tracing::debug!(%error, "WebSocket write failed");
                        session.close(CloseReason::TransportError);
                        break;
                    }
                }
            }
        }
    }
    // Closing the transport without a Socket.IO DISCONNECT lets stock clients
    // reconnect (to this node or another one).
    if !mid_frame {
        let _ = Box::pin(tokio::time::timeout(CLOSE_GRACE, ws.close())).await;
    }
}

/// A binary WebSocket message as an Engine.IO packet: the message itself
/// for v4, after its `message` type byte for v3.
pub(super) fn binary_packet<C>(
    session: &Session<C>,
    bytes: &[u8],
) -> Result<engine::Packet<'static>, CloseReason> {
    let data = if session.eio3 {
        iocluster_protocol::eio3::binary_message(bytes).map_err(|_| CloseReason::ParseError)?
    } else {
        bytes
    };
    Ok(engine::Packet::Binary(data.to_vec().into()))
}

/// How long a closing WebSocket task may take to finish the write under way,
/// and then to send its close frame.
const CLOSE_GRACE: std::time::Duration = std::time::Duration::from_secs(1);

/// How a write batch ended ([`write_frames`]).
enum Written {
    /// All of it, the session still open.
    All,
    /// All of it, but the session closed meanwhile.
    ThenClosed,
    /// The session closed and the rest could not be written within
    /// `CLOSE_GRACE`: the stream may stop inside a frame.
    Cut,
}

/// Writes `first` and what else waits in the outbox (at most `WRITE_BATCH`
/// frames, or `WRITE_BATCH_BYTES` of them) to the socket with one write.
///
/// A session that closes meanwhile (a client too slow for its outbox, a
/// shutdown) does not cut the batch where it stands: that could be inside a
/// frame, and the close frame after it would be read as part of that
/// frame. The batch gets `CLOSE_GRACE` more to finish.
///
/// The frames are encoded here rather than fed through tungstenite's
/// `Sink`: a server's data frame is a small header and the payload, while
/// every `Sink` call registers the task's waker twice and copies the frame
/// into tungstenite's buffer. tungstenite's own output (a pong, a close
/// reply, queued while it read) goes first when there may be some
/// (`flush_first`), so nothing interleaves with it.
async fn write_frames<C>(
    ws: &mut Ws,
    session: &Session<C>,
    first: Frame,
    flush_first: bool,
) -> Result<Written, tokio_tungstenite::tungstenite::Error> {
    let mut out = Vec::new();
    let eio3 = session.eio3;
    let then_close = session.take_write(first, WRITE_BATCH, WRITE_BATCH_BYTES, |frame| {
        encode_frame(&mut out, frame, eio3);
        out.len()
    });
    if let Some(reason) = then_close {
        // Everything queued before the close goes out first, within the
        // grace a closing session's write gets.
        let written = tokio::time::timeout(CLOSE_GRACE, write_out(ws, &out, flush_first)).await;
        session.close(reason);
        return match written {
            Ok(result) => result.map(|()| Written::ThenClosed),
            Err(_) => Ok(Written::Cut),
        };
    }
    let write = write_out(ws, &out, flush_first);
    tokio::pin!(write);
    // Biased: a write that completes at once (the usual case) never
    // registers with the session's close.
    tokio::select! {
        biased;
        result = &mut write => result.map(|()| Written::All),
        _ = session.closed() => match tokio::time::timeout(CLOSE_GRACE, write).await {
            Ok(result) => result.map(|()| Written::ThenClosed),
            Err(_) => Ok(Written::Cut),
        },
    }
}

/// Appends `frame` as WebSocket data frames (its text, then one binary
/// frame per attachment), as a server sends them: final, unmasked.
/// Writes encoded frames to the socket at once, after tungstenite's own
/// output if it may have some (`flush_first`).
async fn write_out(
    ws: &mut Ws,
    out: &[u8],
    flush_first: bool,
) -> Result<(), tokio_tungstenite::tungstenite::Error> {
    if flush_first {
        ws.flush().await?;
    }
    let io = ws.get_mut();
    io.write_all(out).await?;
    io.flush().await?;
    Ok(())
}

/// Appends a frame's packets as WebSocket data frames (a
/// [`Frame::CloseAfter`] is not a packet: `take_write` stops at it).
fn encode_frame(out: &mut Vec<u8>, frame: &Frame, eio3: bool) {
    match frame {
        Frame::Text(text) | Frame::Alone(text) => {
            encode_data_frame(out, Data::Text, text.as_bytes())
        }
        Frame::WithBinary(text, attachments) => {
            encode_data_frame(out, Data::Text, text.as_bytes());
            for attachment in attachments.iter() {
                encode_data_frame(out, Data::Binary, &binary_message(attachment, eio3));
            }
        }
        Frame::Binary(bytes, _) => {
            encode_data_frame(out, Data::Binary, &binary_message(bytes, eio3))
        }
        Frame::CloseAfter(_) => {}
    }
}

/// A binary packet as a WebSocket carries it: as is for v4, after the
/// `message` type byte for a v3 client.
pub(super) fn binary_message(data: &[u8], eio3: bool) -> std::borrow::Cow<'_, [u8]> {
    if !eio3 {
        return std::borrow::Cow::Borrowed(data);
    }
    let mut prefixed = Vec::with_capacity(data.len() + 1);
    prefixed.push(iocluster_protocol::eio3::BINARY_MESSAGE);
    prefixed.extend_from_slice(data);
    std::borrow::Cow::Owned(prefixed)
}

/// One final, unmasked data frame (a server's), its header written by
/// tungstenite (RFC 6455, section 5.2).
fn encode_data_frame(out: &mut Vec<u8>, opcode: Data, payload: &[u8]) {
    let header = FrameHeader {
        is_final: true,
        opcode: OpCode::Data(opcode),
        ..FrameHeader::default()
    };
    out.reserve(payload.len() + 10);
    // Writing to a Vec cannot fail.
    let _ = header.format(payload.len() as u64, out);
    out.extend_from_slice(payload);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What tungstenite itself would write for the same server frame.
    fn tungstenite_frame(opcode: Data, payload: &[u8]) -> Vec<u8> {
        let frame = tokio_tungstenite::tungstenite::protocol::frame::Frame::message(
            payload.to_vec(),
            OpCode::Data(opcode),
            true,
        );
        let mut out = Vec::new();
        frame.format(&mut out).expect("formats into a Vec");
        out
    }

    #[test]
    fn data_frames_are_byte_for_byte_what_tungstenite_writes() {
        // Each length encoding, at and either side of its bounds.
        for len in [0, 1, 125, 126, 127, 0xFFFF, 0x1_0000, 0x1_0001] {
            let payload: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            for opcode in [Data::Text, Data::Binary] {
                let mut out = Vec::new();
                encode_data_frame(&mut out, opcode, &payload);
                assert_eq!(out, tungstenite_frame(opcode, &payload), "length {len}");
            }
        }
    }

    #[test]
    fn a_frame_with_attachments_is_its_text_then_one_binary_frame_each() {
        let text = "451-[\"file\",{\"_placeholder\":true,\"num\":0}]";
        let attachment = bytes::Bytes::from_static(&[1, 2, 3]);
        let frame = Frame::WithBinary(Utf8Bytes::from_static(text), Arc::from(vec![attachment]));
        let mut out = Vec::new();
        encode_frame(&mut out, &frame, false);
        let mut expected = tungstenite_frame(Data::Text, text.as_bytes());
        expected.extend(tungstenite_frame(Data::Binary, &[1, 2, 3]));
        assert_eq!(out, expected);
    }
}
