//! What the engine answers over HTTP, for every transport: the protocol's
//! error replies, text bodies, the `open` packet, and the handshake's
//! capture of the request that opened a session.

use std::net::SocketAddr;

use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use http::{StatusCode, header};
use iocluster_protocol::engine::{OpenPacket, TransportError};
use iocluster_protocol::envelope::{EncodedHandshake, Handshake};

use super::Engine;

pub(super) fn error(error: TransportError) -> Response {
    (
        StatusCode::from_u16(error.status()).unwrap_or(StatusCode::BAD_REQUEST),
        [(header::CONTENT_TYPE, "application/json")],
        error.body(),
    )
        .into_response()
}

pub(super) fn text(body: String) -> Response {
    ([(header::CONTENT_TYPE, "text/plain; charset=UTF-8")], body).into_response()
}

/// The handshake the app-nodes see, from the request that opened a
/// session: its headers but those of `config.handshake_drop_headers`
/// (by default cookies and `Authorization`, and the WebSocket upgrade's own
/// headers: the handshake is kept in Redis, in every queued event and in
/// the ledger), query, address and time.
pub(super) fn capture_handshake(
    config: &crate::config::Config,
    peer: SocketAddr,
    request: &Request,
    query: Vec<(String, String)>,
) -> EncodedHandshake {
    let secure = config.tls.is_some();
    let dropped = &config.handshake_drop_headers;
    let mut headers: Vec<(String, String)> = Vec::new();
    for (name, value) in request.headers() {
        if dropped.iter().any(|drop| drop == name.as_str()) {
            continue;
        }
        let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
        match headers.iter_mut().find(|(known, _)| known == name.as_str()) {
            Some((_, joined)) => {
                joined.push_str(", ");
                joined.push_str(&value);
            }
            None => headers.push((name.as_str().to_owned(), value)),
        }
    }
    EncodedHandshake::new(&Handshake {
        headers,
        query,
        address: peer.to_string(),
        time: crate::clock::unix_ms(),
        url: request
            .uri()
            .path_and_query()
            .map(|pq| pq.as_str().to_owned())
            .unwrap_or_default(),
        secure,
        auth: None,
    })
}

pub(super) fn open_packet<C>(engine: &Engine<C>, sid: &str, upgrades: &[&str]) -> String {
    let config = &engine.config;
    OpenPacket {
        sid,
        upgrades,
        ping_interval: config.ping_interval.as_millis() as u64,
        ping_timeout: config.ping_timeout.as_millis() as u64,
        max_payload: config.max_payload as u64,
    }
    .encode()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_handshake_leaves_out_the_dropped_headers() {
        let mut config = crate::config::RawConfig::default().validate().unwrap();
        let request = Request::builder()
            .uri("/socket.io/?EIO=4&transport=polling")
            .header("cookie", "session=secret")
            .header("authorization", "Bearer secret")
            .header("connection", "Upgrade")
            .header("upgrade", "websocket")
            .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
            .header("sec-websocket-version", "13")
            .header("sec-websocket-extensions", "permessage-deflate")
            .header("sec-websocket-protocol", "chat")
            .header("x-client", "one")
            .header("x-client", "two")
            .body(axum::body::Body::empty())
            .unwrap();
        let peer: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let handshake = capture_handshake(&config, peer, &request, Vec::new())
            .decode()
            .unwrap();
        assert_eq!(
            handshake.headers,
            [
                ("sec-websocket-protocol".to_owned(), "chat".to_owned()),
                ("x-client".to_owned(), "one, two".to_owned())
            ]
        );
        config.handshake_drop_headers = Vec::new();
        let handshake = capture_handshake(&config, peer, &request, Vec::new())
            .decode()
            .unwrap();
        // Every header of the request, in its order, repeats joined.
        let names: Vec<&str> = handshake.headers.iter().map(|(n, _)| n.as_str()).collect();
        let sent: Vec<&str> = request.headers().keys().map(|n| n.as_str()).collect();
        assert_eq!(names, sent);
        assert_eq!(names.len(), 9);
    }
}
