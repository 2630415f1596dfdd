//! The HTTP side of Engine.IO: routing a request to the handshake, a
//! long-polling request or a WebSocket, behind the origin policy (`cors`).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Request, State};
use axum::response::{IntoResponse, Response};
use http::{Method, StatusCode, header};
use iocluster_protocol::eio3;
use iocluster_protocol::engine::{self, TransportError};

use super::responses::{capture_handshake, error, open_packet, text};
use super::{Handler, polling, websocket};

/// The query parameters Engine.IO uses.
struct EngineQuery {
    eio: Option<String>,
    transport: Option<String>,
    sid: Option<String>,
}

fn parse_query(query: &str) -> (EngineQuery, Vec<(String, String)>) {
    let pairs: Vec<(String, String)> = url::form_urlencoded::parse(query.as_bytes())
        .into_owned()
        .collect();
    let find = |name: &str| {
        pairs
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.clone())
    };
    (
        EngineQuery {
            eio: find("EIO"),
            transport: find("transport"),
            sid: find("sid"),
        },
        pairs,
    )
}

/// Entry point for every request under the Engine.IO path.
pub(crate) async fn handle<H: Handler>(
    State(handler): State<Arc<H>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: Request,
) -> Response {
    let policy = &handler.engine().origins;
    let access = policy.access(request.headers());
    let websocket = websocket::is_websocket_upgrade(request.headers());
    if policy.refuses(&access, websocket) {
        let origin = request
            .headers()
            .get(header::ORIGIN)
            .and_then(|origin| origin.to_str().ok())
            .unwrap_or("?");
        tracing::warn!(%peer, origin, websocket, "origin not allowed (cors_origins)");
        metrics::counter!("iocluster_origins_refused_total").increment(1);
        return error(TransportError::Forbidden);
    }
    let mut response = route(handler.clone(), peer, request).await;
    policy.apply(&access, response.headers_mut());
    response
}

async fn route<H: Handler>(handler: Arc<H>, peer: SocketAddr, request: Request) -> Response {
    let engine = handler.engine();
    if request.method() == Method::OPTIONS {
        return StatusCode::NO_CONTENT.into_response();
    }
    let (query, pairs) = parse_query(request.uri().query().unwrap_or(""));
    let eio3 = match query.eio.as_deref() {
        Some(engine::PROTOCOL_VERSION) => false,
        Some(eio3::PROTOCOL_VERSION) if engine.config.allow_eio3 => true,
        _ => return error(TransportError::UnsupportedProtocolVersion),
    };
    let websocket = match query.transport.as_deref() {
        Some("polling") => false,
        Some("websocket") => true,
        _ => return error(TransportError::UnknownTransport),
    };
    if query.sid.is_none() && !engine.admits_new_session() {
        // Shutting down, or at max_connections: try another node.
        metrics::counter!("iocluster_connections_refused_total").increment(1);
        return unavailable();
    }
    // A new session: a place in the budget of sessions not yet joined.
    let ticket = match &query.sid {
        None => match engine.reserve_unjoined(peer.ip(), request.headers()) {
            Some(ticket) => Some(ticket),
            None => return unavailable(),
        },
        Some(_) => None,
    };
    match (websocket, query.sid, ticket) {
        (false, None, Some(ticket)) if request.method() == Method::GET => {
            let handshake = capture_handshake(&engine.config, peer, &request, pairs);
            drop(request);
            handshake_polling(&*handler, handshake, ticket, eio3).await
        }
        (false, None, _) => error(TransportError::BadHandshakeMethod),
        (false, Some(sid), _) => {
            if let Some(owner) = engine.relays().foreign_owner(&sid) {
                return super::relay::relay_polling(&*handler, owner, &sid, request).await;
            }
            let session = match polling::polling_session(engine, &sid) {
                Ok(session) => session,
                Err(refused) => return error(refused),
            };
            match *request.method() {
                Method::GET => polling::poll(engine, session).await,
                Method::POST => polling::post(&*handler, session, request).await,
                _ => error(TransportError::BadRequest),
            }
        }
        (true, sid, ticket) => {
            if request.method() != Method::GET
                || !websocket::is_websocket_upgrade(request.headers())
            {
                return error(TransportError::BadRequest);
            }
            if let Some(sid) = &sid
                && let Some(owner) = engine.relays().foreign_owner(sid)
            {
                // Another node holds the session: the WebSocket is relayed
                // to it (unless it is gone).
                if !engine.relays().is_live(owner).await {
                    return error(TransportError::UnknownSid);
                }
                return websocket::upgrade_relayed(
                    handler.clone(),
                    request,
                    owner.into(),
                    sid.as_str().into(),
                );
            }
            let session = match sid {
                Some(sid) => {
                    let Some(session) = engine.session(&sid) else {
                        return error(TransportError::UnknownSid);
                    };
                    let taken = {
                        let state = session.lock();
                        state.websocket || state.upgrading
                    };
                    if taken {
                        // A second WebSocket for a session that has one (or
                        // is getting one): accepted, then closed, as the
                        // reference server does.
                        return websocket::accept_and_close(request);
                    }
                    Some(session)
                }
                None => None,
            };
            websocket::upgrade(handler, peer, request, pairs, session, ticket, eio3)
        }
    }
}

/// HTTP 503 with the protocol's JSON body: clients retry (elsewhere).
fn unavailable() -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        [(header::CONTENT_TYPE, "application/json")],
        engine::UNAVAILABLE_BODY,
    )
        .into_response()
}

async fn handshake_polling<H: Handler>(
    handler: &H,
    handshake: iocluster_protocol::envelope::EncodedHandshake,
    ticket: super::budget::Ticket,
    eio3: bool,
) -> Response {
    let engine = handler.engine();
    let session = engine.open_session(handshake, false, ticket, eio3);
    let open = open_packet(engine, &session.sid, &["websocket"]);
    if !eio3 {
        return text(open);
    }
    let mut payload = String::with_capacity(open.len() + 8);
    eio3::write_text(&mut payload, &open);
    super::connect_main_namespace(handler, &session).await;
    text(payload)
}
