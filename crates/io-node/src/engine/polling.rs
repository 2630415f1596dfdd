//! The long-polling transport: a GET waits for frames and returns all that
//! are ready (up to `max_payload`), a POST carries one or more packets.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use http::{StatusCode, header};
use iocluster_protocol::eio3;
use iocluster_protocol::engine::{self, TransportError};

use super::limits::RateLimiter;
use super::responses::{error, text};
use super::{CloseReason, Engine, Frame, Handler, Session};

/// The session a long-polling request for `sid` is for: `UnknownSid` if
/// there is none (or it is closed), `BadRequest` once it moved to a
/// WebSocket. For requests that came in here and for those relayed here.
pub(super) fn polling_session<C: Default + Send + 'static>(
    engine: &Engine<C>,
    sid: &str,
) -> Result<Arc<Session<C>>, TransportError> {
    let session = engine.live_session(sid).ok_or(TransportError::UnknownSid)?;
    if session.lock().websocket {
        return Err(TransportError::BadRequest);
    }
    Ok(session)
}

/// A long-polling GET: waits for frames, then returns all that are ready.
pub(super) async fn poll<C>(engine: &Engine<C>, session: Arc<Session<C>>) -> Response {
    let Ok(_reader) = session.outbox_reader.try_lock() else {
        // Two concurrent GETs: the protocol says the session is broken.
        session.close(CloseReason::TransportError);
        return error(TransportError::BadRequest);
    };
    let eio3 = session.eio3;
    let Some(first) = session.next_frame().await else {
        // Closed while waiting. A client that closed it (a close packet in
        // a POST) gets a noop; anything else tells the client it is closed.
        return match session.close_reason() {
            CloseReason::TransportClose => text(single(eio3, engine::NOOP)),
            _ => text(single(eio3, engine::CLOSE)),
        };
    };
    let mut body = String::new();
    let budget = engine.config.max_payload;
    let then_close = session.take_write(first, usize::MAX, budget, |frame| {
        if !eio3 && !body.is_empty() {
            body.push(engine::RECORD_SEPARATOR);
        }
        write_polling_frame(&mut body, frame, eio3);
        body.len()
    });
    if let Some(reason) = then_close {
        session.close(reason);
        if body.is_empty() {
            return text(single(eio3, engine::CLOSE));
        }
    }
    text(body)
}

/// A body of one packet.
fn single(eio3: bool, packet: &str) -> String {
    let mut body = String::new();
    if eio3 {
        eio3::write_text(&mut body, packet);
    } else {
        body.push_str(packet);
    }
    body
}

/// Appends a frame's packets to a polling body, framed the v3 way for a v3
/// client (a [`Frame::CloseAfter`] is not a packet: `take_write` stops at
/// it).
fn write_polling_frame(body: &mut String, frame: &Frame, eio3: bool) {
    let text = |body: &mut String, packet: &str| {
        if eio3 {
            eio3::write_text(body, packet);
        } else {
            body.push_str(packet);
        }
    };
    let binary = |body: &mut String, data: &[u8]| {
        if eio3 {
            eio3::write_binary(body, data);
        } else {
            engine::write_polling_binary(body, data);
        }
    };
    match frame {
        Frame::Text(packet) | Frame::Alone(packet) => text(body, packet.as_str()),
        Frame::WithBinary(packet, attachments) => {
            text(body, packet.as_str());
            for attachment in attachments.iter() {
                if !eio3 {
                    body.push(engine::RECORD_SEPARATOR);
                }
                binary(body, attachment);
            }
        }
        Frame::Binary(bytes, _) => binary(body, bytes),
        Frame::CloseAfter(_) => {}
    }
}

/// A long-polling POST: one or more packets from the client.
pub(super) async fn post<H: Handler>(
    handler: &H,
    session: Arc<Session<H::Client>>,
    request: Request,
) -> Response {
    if session.posting.swap(true, Ordering::AcqRel) {
        session.close(CloseReason::TransportError);
        return error(TransportError::BadRequest);
    }
    let response = read_post(handler, &session, request).await;
    session.posting.store(false, Ordering::Release);
    response
}

async fn read_post<H: Handler>(
    handler: &H,
    session: &Arc<Session<H::Client>>,
    request: Request,
) -> Response {
    let limit = handler.engine().config.max_payload;
    let body = match axum::body::to_bytes(request.into_body(), limit).await {
        Ok(body) => body,
        Err(_) => {
            session.close(CloseReason::TransportError);
            return (StatusCode::PAYLOAD_TOO_LARGE, "payload too large").into_response();
        }
    };
    if session.eio3 {
        let Ok(packets) = eio3::decode_payload(&body) else {
            session.close(CloseReason::ParseError);
            return error(TransportError::BadRequest);
        };
        for packet in packets {
            if let Some(refused) = take_packet(handler, session, Ok(packet)).await {
                return refused;
            }
        }
        return ok();
    }
    let Ok(payload) = std::str::from_utf8(&body) else {
        session.close(CloseReason::ParseError);
        return error(TransportError::BadRequest);
    };
    for record in engine::split_payload(payload) {
        let packet = engine::decode_polling_record(record).map_err(|_| CloseReason::ParseError);
        if let Some(refused) = take_packet(handler, session, packet).await {
            return refused;
        }
    }
    ok()
}

fn ok() -> Response {
    ([(header::CONTENT_TYPE, "text/html")], "ok").into_response()
}

/// Hands one packet of a POST to the engine, within the packet rate and
/// not while the layer above holds the client back. `Some`: the answer to
/// the POST now (the session closed); the rest of the body is not read.
async fn take_packet<H: Handler>(
    handler: &H,
    session: &Arc<Session<H::Client>>,
    packet: Result<engine::Packet<'_>, CloseReason>,
) -> Option<Response> {
    let rate = handler.engine().config.max_packets_per_second;
    // Held while the layer above cannot take more from this client: the
    // rest of the body waits (it is in memory already, at most
    // `max_payload`), and the client sends nothing more meanwhile.
    if session.is_paused() {
        session.until_resumed().await;
        if session.is_closed() {
            return Some(error(TransportError::BadRequest));
        }
    }
    let wait = session
        .lock()
        .limiter
        .get_or_insert_with(|| RateLimiter::new(rate))
        .take();
    if let Some(wait) = wait {
        session.hold_back();
        metrics::counter!("iocluster_throttled_packets_total").increment(1);
        tokio::time::sleep(wait).await;
    }
    let result = match packet {
        Ok(packet) => super::on_packet(handler, session, packet).await,
        Err(reason) => Err(reason),
    };
    let Err(reason) = result else {
        return None;
    };
    session.close(reason);
    // A close packet is the client's own goodbye, not an error.
    Some(if reason == CloseReason::TransportClose {
        ok()
    } else {
        error(TransportError::BadRequest)
    })
}
