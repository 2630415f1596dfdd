//! Connecting: [`ClientOptions`], the TCP connection ([`tcp_connect`]), the
//! Engine.IO handshake, and [`Client`], the handle of one connection that
//! opens namespaces. What happens after the handshake is the connection
//! task's (`connection`).

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use iocluster_protocol::socketio::{self, PacketKind};
use serde_json::Value;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_tungstenite::MaybeTlsStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use crate::connection::run;
use crate::error::ClientError;
use crate::shared::{Deliver, Shared, Slot};
use crate::socket::Socket;

/// How to connect.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Engine.IO path. Default `/socket.io/`.
    pub path: String,
    /// Extra query parameters.
    pub query: Vec<(String, String)>,
    /// Bound on the handshake and on each namespace connection. Default 10 s.
    pub connect_timeout: Duration,
    /// The local address to connect from (port chosen by the system). One
    /// address has one range of ephemeral ports: a load generator holding
    /// more connections than that spreads them over several addresses
    /// (any of 127.0.0.0/8 works on loopback). Default: the system's choice.
    pub local_address: Option<std::net::IpAddr>,
}

impl Default for ClientOptions {
    fn default() -> ClientOptions {
        ClientOptions {
            path: "/socket.io/".into(),
            query: Vec::new(),
            connect_timeout: Duration::from_secs(10),
            local_address: None,
        }
    }
}

/// Bytes read from the WebSocket at a time (larger messages take several reads).
const READ_BUFFER: usize = 8 * 1024;

/// A TCP connection to `authority` (`host[:port][/...]`) from `local` when
/// given (port chosen by the system), with `TCP_NODELAY` set. Also what other
/// clients of a server (the load generator's long-polling one) connect with.
pub async fn tcp_connect(
    authority: &str,
    local: Option<std::net::IpAddr>,
) -> Result<tokio::net::TcpStream, ClientError> {
    let host = authority.split('/').next().unwrap_or(authority);
    let remote = tokio::net::lookup_host(host)
        .await?
        .find(|addr| local.is_none_or(|local| addr.is_ipv4() == local.is_ipv4()))
        .ok_or_else(|| ClientError::InvalidUrl(authority.to_owned()))?;
    let socket = if remote.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    if let Some(local) = local {
        socket.bind(std::net::SocketAddr::new(local, 0))?;
    }
    socket.set_nodelay(true)?;
    Ok(socket.connect(remote).await?)
}

/// One Engine.IO connection over WebSocket.
pub struct Client {
    sid: String,
    outgoing: mpsc::UnboundedSender<Message>,
    shared: Arc<Shared>,
    closed: watch::Receiver<bool>,
    options: ClientOptions,
}

impl Client {
    /// Connects to `url` (`http://host:port` or `ws://host:port`).
    pub async fn connect(url: &str, options: ClientOptions) -> Result<Client, ClientError> {
        let base = url
            .strip_prefix("http://")
            .or_else(|| url.strip_prefix("ws://"))
            .ok_or_else(|| ClientError::InvalidUrl(url.to_owned()))?
            .trim_end_matches('/');
        let mut ws_url = format!("ws://{base}{}?EIO=4&transport=websocket", options.path);
        for (key, value) in &options.query {
            ws_url.push('&');
            ws_url.push_str(key);
            ws_url.push('=');
            ws_url.push_str(value);
        }
        let handshake = async {
            // tungstenite zero-fills its whole read buffer (128 KiB by
            // default) before every read: a small one keeps reads cheap.
            let config = WebSocketConfig::default().read_buffer_size(READ_BUFFER);
            let (mut ws, _) = match options.local_address {
                None => {
                    tokio_tungstenite::connect_async_with_config(&ws_url, Some(config), true)
                        .await?
                }
                Some(local) => {
                    let stream = tcp_connect(base, Some(local)).await?;
                    tokio_tungstenite::client_async_with_config(
                        &ws_url,
                        MaybeTlsStream::Plain(stream),
                        Some(config),
                    )
                    .await?
                }
            };
            let open = match ws.next().await {
                Some(Ok(Message::Text(text))) => text,
                other => {
                    return Err(ClientError::Handshake(format!(
                        "expected the open packet, got {other:?}"
                    )));
                }
            };
            let body = open
                .as_str()
                .strip_prefix('0')
                .ok_or_else(|| ClientError::Handshake(format!("not an open packet: {open}")))?;
            let open: Value = serde_json::from_str(body)?;
            Ok((ws, open))
        };
        let (ws, open) = tokio::time::timeout(options.connect_timeout, handshake)
            .await
            .map_err(|_| ClientError::Timeout)??;
        let sid = open["sid"]
            .as_str()
            .ok_or_else(|| ClientError::Handshake("no sid".into()))?
            .to_owned();
        let silence = Duration::from_millis(
            open["pingInterval"].as_u64().unwrap_or(25_000)
                + open["pingTimeout"].as_u64().unwrap_or(20_000),
        );
        let shared = Arc::new(Shared {
            slots: Mutex::new(HashMap::new()),
        });
        let (outgoing, outgoing_rx) = mpsc::unbounded_channel();
        let (closed_tx, closed) = watch::channel(false);
        tokio::spawn(run(
            ws,
            outgoing_rx,
            outgoing.clone(),
            shared.clone(),
            silence,
            closed_tx,
        ));
        Ok(Client {
            sid,
            outgoing,
            shared,
            closed,
            options,
        })
    }

    /// The Engine.IO session id.
    pub fn sid(&self) -> &str {
        &self.sid
    }

    /// Connects to namespace `nsp` with an optional `auth` object.
    pub async fn socket(&self, nsp: &str, auth: Option<Value>) -> Result<Socket, ClientError> {
        let (connect_tx, connect_rx) = oneshot::channel();
        let (events_tx, events) = mpsc::unbounded_channel();
        self.shared.slots().insert(
            nsp.to_owned(),
            Slot {
                connect: Some(connect_tx),
                events: Deliver::Queue(events_tx),
                acks: HashMap::new(),
            },
        );
        let data = auth.map(|auth| auth.to_string()).unwrap_or_default();
        self.send_text(socketio::encode(PacketKind::Connect, nsp, 0, None, &data))?;
        let result = tokio::time::timeout(self.options.connect_timeout, connect_rx).await;
        let outcome = match result {
            Ok(Ok(Ok(id))) => Ok(id),
            Ok(Ok(Err(refused))) => Err(ClientError::ConnectRefused(refused)),
            Ok(Err(_)) => Err(ClientError::Closed),
            Err(_) => Err(ClientError::Timeout),
        };
        match outcome {
            Ok(id) => Ok(Socket {
                id,
                nsp: nsp.to_owned(),
                outgoing: self.outgoing.clone(),
                shared: self.shared.clone(),
                events: tokio::sync::Mutex::new(events),
                next_ack: Arc::new(AtomicU64::new(0)),
            }),
            Err(error) => {
                self.shared.slots().remove(nsp);
                Err(error)
            }
        }
    }

    /// Sends an Engine.IO text frame as is (for protocol tests).
    pub fn send_raw(&self, text: impl Into<String>) -> Result<(), ClientError> {
        self.outgoing
            .send(Message::text(text.into()))
            .map_err(|_| ClientError::Closed)
    }

    fn send_text(&self, packet: String) -> Result<(), ClientError> {
        self.send_raw(format!("4{packet}"))
    }

    /// Closes the connection.
    pub fn close(&self) {
        let _ = self.outgoing.send(Message::Close(None));
    }

    /// Resolves when the connection has ended.
    pub async fn closed(&self) {
        let mut closed = self.closed.clone();
        let _ = closed.wait_for(|closed| *closed).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn refuses_urls_it_cannot_reach() {
        let refused = Client::connect("ftp://x", ClientOptions::default()).await;
        assert!(matches!(refused, Err(ClientError::InvalidUrl(_))));
    }

    #[tokio::test]
    async fn connects_from_the_local_address_it_is_given() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let options = ClientOptions {
            local_address: Some("127.0.0.7".parse().unwrap()),
            connect_timeout: Duration::from_secs(5),
            ..ClientOptions::default()
        };
        let client = tokio::spawn(async move { Client::connect(&url, options).await });
        let (stream, peer) = listener.accept().await.unwrap();
        assert_eq!(peer.ip().to_string(), "127.0.0.7");
        // No WebSocket answer: the client reports the failed handshake.
        drop(stream);
        assert!(client.await.unwrap().is_err());
    }
}
