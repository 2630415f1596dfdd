//! The long-polling transport: a GET waits for frames and returns all that
//! are ready (up to `max_payload`), a POST carries one or more packets.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use http::{StatusCode, header};
use iocluster_protocol::engine::{self, TransportError};

use super::limits::RateLimiter;
use super::responses::{error, text};
use super::{CloseReason, Engine, Frame, Handler, Session};

/// A long-polling GET: waits for frames, then returns all that are ready.
pub(super) async fn poll<C>(engine: &Engine<C>, session: Arc<Session<C>>) -> Response {
    let Ok(_reader) = session.outbox_reader.try_lock() else {
        // Two concurrent GETs: the protocol says the session is broken.
        session.close(CloseReason::TransportError);
        return error(TransportError::BadRequest);
    };
    let Some(first) = session.next_frame().await else {
        // Closed while waiting. A client that closed it (a close packet in
        // a POST) gets a noop; anything else tells the client it is closed.
        return match session.close_reason() {
            CloseReason::TransportClose => text(engine::NOOP.to_owned()),
            _ => text(engine::CLOSE.to_owned()),
        };
    };
    let budget = engine.config.max_payload;
    let mut body = String::new();
    let mut then_close = write_polling_frame(&mut body, &first);
    let mut last = first;
    while then_close.is_none() && !last.ends_write() && body.len() < budget {
        let Some(frame) = session.outbox.try_pop() else {
            break;
        };
        if !matches!(frame, Frame::CloseAfter(_)) {
            body.push(engine::RECORD_SEPARATOR);
        }
        then_close = write_polling_frame(&mut body, &frame);
        last = frame;
    }
    if let Some(reason) = then_close {
        session.close(reason);
        if body.is_empty() {
            return text(engine::CLOSE.to_owned());
        }
    }
    text(body)
}

/// Appends a frame's packets to a polling body; returns the reason to close
/// the session with once the body is sent, for a [`Frame::CloseAfter`].
fn write_polling_frame(body: &mut String, frame: &Frame) -> Option<CloseReason> {
    match frame {
        Frame::Text(text) | Frame::Alone(text) => body.push_str(text.as_str()),
        Frame::WithBinary(text, attachments) => {
            body.push_str(text.as_str());
            for attachment in attachments.iter() {
                body.push(engine::RECORD_SEPARATOR);
                engine::write_polling_binary(body, attachment);
            }
        }
        Frame::Binary(bytes, _) => engine::write_polling_binary(body, bytes),
        Frame::CloseAfter(reason) => return Some(*reason),
    }
    None
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
    let Ok(payload) = std::str::from_utf8(&body) else {
        session.close(CloseReason::ParseError);
        return error(TransportError::BadRequest);
    };
    let rate = handler.engine().config.max_packets_per_second;
    for record in engine::split_payload(payload) {
        // Held while the layer above cannot take more from this client: the
        // rest of the body waits (it is in memory already, at most
        // `max_payload`), and the client sends nothing more meanwhile.
        if session.is_paused() {
            session.until_resumed().await;
            if session.is_closed() {
                return error(TransportError::BadRequest);
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
        let result = match engine::decode_polling_record(record) {
            Ok(packet) => super::on_packet(handler, session, packet).await,
            Err(_) => Err(CloseReason::ParseError),
        };
        if let Err(reason) = result {
            session.close(reason);
            // A close packet is the client's own goodbye, not an error.
            if reason == CloseReason::TransportClose {
                break;
            }
            return error(TransportError::BadRequest);
        }
    }
    ([(header::CONTENT_TYPE, "text/html")], "ok").into_response()
}
