//! A Socket.IO v4 client (Engine.IO v4 over WebSocket), built on the
//! `iocluster-protocol` codecs. iocluster's tests use it as the Rust client;
//! the load generator will too, so it keeps one task per connection and
//! shares nothing between connections.
//!
//! - [`Client`]: one Engine.IO connection. Its task answers pings, notices a
//!   silent server, reassembles binary packets and routes packets to sockets.
//! - [`Socket`]: one namespace on a client: emit (with or without ack and
//!   attachments), receive events, acknowledge, disconnect.
//!
//! ```no_run
//! # async fn demo() -> Result<(), iocluster_client::ClientError> {
//! let client = iocluster_client::Client::connect("http://127.0.0.1:3000", Default::default()).await?;
//! let socket = client.socket("/", Some(serde_json::json!({"token": "t"}))).await?;
//! socket.emit("hello", vec![serde_json::json!(1)])?;
//! let event = socket.recv_event(std::time::Duration::from_secs(5)).await?;
//! println!("{} {:?}", event.name, event.args);
//! # Ok(()) }
//! ```

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use iocluster_protocol::engine;
use iocluster_protocol::socketio::{self, PacketKind};
use serde_json::Value;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_tungstenite::MaybeTlsStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

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

/// The server refused a namespace connection (CONNECT_ERROR).
#[derive(Debug, Clone, PartialEq)]
pub struct ConnectError {
    pub message: String,
    pub data: Option<Value>,
}

/// Why an operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("invalid URL {0:?}")]
    InvalidUrl(String),
    #[error("WebSocket error: {0}")]
    WebSocket(#[from] tokio_tungstenite::tungstenite::Error),
    #[error("bad handshake: {0}")]
    Handshake(String),
    #[error("connection refused: {}", .0.message)]
    ConnectRefused(ConnectError),
    #[error("protocol error: {0}")]
    Protocol(String),
    #[error("timed out")]
    Timeout,
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    #[error("connection closed")]
    Closed,
    #[error("invalid JSON: {0}")]
    Json(#[from] serde_json::Error),
}

/// An event the server sent to a socket.
#[derive(Debug, Clone, PartialEq)]
pub struct Incoming {
    pub name: String,
    pub args: Vec<Value>,
    /// Attachments, referred to from `args` by placeholders.
    pub attachments: Vec<Bytes>,
    /// Set when the server wants an acknowledgement ([`Socket::ack`]).
    pub ack: Option<u64>,
}

/// What a socket's receiver yields.
#[derive(Debug, Clone, PartialEq)]
pub enum Received {
    Event(Incoming),
    /// The server disconnected the namespace (`io server disconnect`).
    Disconnected,
}

/// Arguments of an acknowledgement.
#[derive(Debug, Clone, PartialEq)]
pub struct AckArgs {
    pub args: Vec<Value>,
    pub attachments: Vec<Bytes>,
}

/// Routing state of one namespace, shared with the connection task.
struct Slot {
    connect: Option<oneshot::Sender<Result<String, ConnectError>>>,
    events: Deliver,
    acks: HashMap<u64, oneshot::Sender<AckArgs>>,
}

/// Where a namespace's events go.
enum Deliver {
    /// To [`Socket::recv`].
    Queue(mpsc::UnboundedSender<Received>),
    /// To a function the connection task calls ([`Socket::on_receive`]).
    Call(Box<dyn FnMut(Received) + Send>),
}

impl Deliver {
    fn send(&mut self, received: Received) {
        match self {
            Deliver::Queue(queue) => {
                let _ = queue.send(received);
            }
            Deliver::Call(call) => call(received),
        }
    }
}

struct Shared {
    slots: Mutex<HashMap<String, Slot>>,
}

impl Shared {
    fn slots(&self) -> std::sync::MutexGuard<'_, HashMap<String, Slot>> {
        self.slots.lock().unwrap_or_else(|p| p.into_inner())
    }
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

/// One namespace of a [`Client`].
pub struct Socket {
    id: String,
    nsp: String,
    outgoing: mpsc::UnboundedSender<Message>,
    shared: Arc<Shared>,
    /// Behind a lock so a socket can wait for an ack and receive at once.
    events: tokio::sync::Mutex<mpsc::UnboundedReceiver<Received>>,
    next_ack: Arc<AtomicU64>,
}

impl Socket {
    /// The socket id the server assigned.
    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn nsp(&self) -> &str {
        &self.nsp
    }

    /// Emits `event` with `args`.
    pub fn emit(&self, event: &str, args: Vec<Value>) -> Result<(), ClientError> {
        self.send(PacketKind::Event, event_json(event, args), Vec::new(), None)
    }

    /// Emits `event` with `args` that refer to `attachments` by placeholder
    /// (see [`placeholder`]).
    pub fn emit_binary(
        &self,
        event: &str,
        args: Vec<Value>,
        attachments: Vec<Bytes>,
    ) -> Result<(), ClientError> {
        self.send(
            PacketKind::Event,
            event_json(event, args),
            attachments,
            None,
        )
    }

    /// Emits `event` and waits for the server's acknowledgement.
    pub async fn emit_with_ack(
        &self,
        event: &str,
        args: Vec<Value>,
        timeout: Duration,
    ) -> Result<AckArgs, ClientError> {
        self.emit_binary_with_ack(event, args, Vec::new(), timeout)
            .await
    }

    /// Emits `event` with attachments and waits for the acknowledgement.
    pub async fn emit_binary_with_ack(
        &self,
        event: &str,
        args: Vec<Value>,
        attachments: Vec<Bytes>,
        timeout: Duration,
    ) -> Result<AckArgs, ClientError> {
        let id = self.next_ack.fetch_add(1, Ordering::Relaxed);
        let (ack_tx, ack_rx) = oneshot::channel();
        if let Some(slot) = self.shared.slots().get_mut(&self.nsp) {
            slot.acks.insert(id, ack_tx);
        }
        self.send(
            PacketKind::Event,
            event_json(event, args),
            attachments,
            Some(id),
        )?;
        match tokio::time::timeout(timeout, ack_rx).await {
            Ok(Ok(ack)) => Ok(ack),
            Ok(Err(_)) => Err(ClientError::Closed),
            Err(_) => {
                if let Some(slot) = self.shared.slots().get_mut(&self.nsp) {
                    slot.acks.remove(&id);
                }
                Err(ClientError::Timeout)
            }
        }
    }

    /// Answers the server's acknowledgement request `id`.
    pub fn ack(&self, id: u64, args: Vec<Value>) -> Result<(), ClientError> {
        self.send(
            PacketKind::Ack,
            Value::Array(args).to_string(),
            Vec::new(),
            Some(id),
        )
    }

    /// The next thing the server sent; `None` once the connection is gone.
    pub async fn recv(&self) -> Option<Received> {
        self.events.lock().await.recv().await
    }

    /// The next thing received, as an event, within `timeout`.
    pub async fn recv_event(&self, timeout: Duration) -> Result<Incoming, ClientError> {
        match tokio::time::timeout(timeout, self.recv()).await {
            Ok(Some(Received::Event(event))) => Ok(event),
            Ok(Some(Received::Disconnected)) | Ok(None) => Err(ClientError::Closed),
            Err(_) => Err(ClientError::Timeout),
        }
    }

    /// From now on what the server sends this socket goes to `f` instead
    /// of to [`Socket::recv`]: `f` runs on the connection's own task as each
    /// packet is read, so an event costs no queue and no task wake-up (for
    /// receivers that only count and time, like a load generator's). What
    /// was already waiting for `recv` goes to `f` first, in order (unless a
    /// `recv` is waiting at that moment: what it gets is its own). `f` gets
    /// [`Received::Disconnected`] once when the server ends the namespace or
    /// the connection ends. It must return quickly and must not call this
    /// client's `emit_with_ack` (it runs under the lock that method takes).
    pub fn on_receive(&self, f: impl FnMut(Received) + Send + 'static) {
        let mut call: Box<dyn FnMut(Received) + Send> = Box::new(f);
        let mut slots = self.shared.slots();
        // Under the lock, so that nothing newer overtakes what is queued.
        let mut ended = false;
        if let Ok(mut queued) = self.events.try_lock() {
            while let Ok(received) = queued.try_recv() {
                ended |= received == Received::Disconnected;
                call(received);
            }
        }
        match slots.get_mut(&self.nsp) {
            Some(slot) => slot.events = Deliver::Call(call),
            None if !ended => call(Received::Disconnected),
            None => {}
        }
    }

    /// Leaves the namespace.
    pub fn disconnect(&self) -> Result<(), ClientError> {
        self.shared.slots().remove(&self.nsp);
        self.send(PacketKind::Disconnect, String::new(), Vec::new(), None)
    }

    fn send(
        &self,
        kind: PacketKind,
        data: String,
        attachments: Vec<Bytes>,
        id: Option<u64>,
    ) -> Result<(), ClientError> {
        let packet = socketio::encode(kind, &self.nsp, attachments.len(), id, &data);
        self.outgoing
            .send(Message::text(format!("4{packet}")))
            .map_err(|_| ClientError::Closed)?;
        for attachment in attachments {
            self.outgoing
                .send(Message::binary(attachment))
                .map_err(|_| ClientError::Closed)?;
        }
        Ok(())
    }
}

/// The JSON object that stands for attachment `num` in arguments.
pub fn placeholder(num: usize) -> Value {
    serde_json::json!({ "_placeholder": true, "num": num })
}

fn event_json(event: &str, args: Vec<Value>) -> String {
    let mut items = Vec::with_capacity(args.len() + 1);
    items.push(Value::String(event.to_owned()));
    items.extend(args);
    Value::Array(items).to_string()
}

/// A packet waiting for its attachments.
struct Partial {
    kind: PacketKind,
    nsp: String,
    id: Option<u64>,
    data: String,
    expected: usize,
    attachments: Vec<Bytes>,
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// The connection task: owns the WebSocket until either side closes it.
async fn run(
    ws: Ws,
    mut outgoing_rx: mpsc::UnboundedReceiver<Message>,
    outgoing: mpsc::UnboundedSender<Message>,
    shared: Arc<Shared>,
    silence: Duration,
    closed: watch::Sender<bool>,
) {
    let (mut sink, mut stream) = ws.split();
    let mut partial: Option<Partial> = None;
    // One timer for the connection's life, moved on only when it fires
    // early: a timer per message costs a timer-wheel entry added and removed
    // for every frame, which a load generator receiving 100 000 frames a
    // second pays for in CPU it takes from the servers it measures.
    let mut heard = tokio::time::Instant::now();
    let deadline = tokio::time::sleep(silence);
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            message = stream.next() => {
                let message = match message {
                    Some(Ok(message)) => message,
                    _ => break, // closed or failed
                };
                heard = tokio::time::Instant::now();
                let result = match message {
                    Message::Text(text) => on_text(text.as_str(), &shared, &outgoing, &mut partial),
                    Message::Binary(bytes) => on_binary(bytes, &shared, &mut partial),
                    Message::Close(_) => break,
                    _ => Ok(()),
                };
                if result.is_err() {
                    break;
                }
            }
            () = &mut deadline => {
                if heard.elapsed() >= silence {
                    break; // the server went silent
                }
                deadline.as_mut().reset(heard + silence);
            }
            message = outgoing_rx.recv() => {
                let Some(message) = message else { break };
                let close = message.is_close();
                if sink.send(message).await.is_err() || close {
                    break;
                }
            }
        }
    }
    let _ = sink.close().await;
    // Dropping the slots ends every socket's receiver and pending ack; a
    // socket with a receiving function is told.
    let slots: Vec<Slot> = shared.slots().drain().map(|(_, slot)| slot).collect();
    for mut slot in slots {
        if let Deliver::Call(_) = slot.events {
            slot.events.send(Received::Disconnected);
        }
    }
    let _ = closed.send(true);
}

fn on_text(
    text: &str,
    shared: &Shared,
    outgoing: &mpsc::UnboundedSender<Message>,
    partial: &mut Option<Partial>,
) -> Result<(), ()> {
    match engine::decode_text(text).map_err(|_| ())? {
        engine::Packet::Ping(data) => {
            let _ = outgoing.send(Message::text(format!("3{data}")));
        }
        engine::Packet::Message(text) => {
            let packet = socketio::parse(text, usize::MAX).map_err(|_| ())?;
            if packet.attachments > 0 {
                *partial = Some(Partial {
                    kind: packet.kind,
                    nsp: packet.nsp.to_owned(),
                    id: packet.id,
                    data: packet.data.to_owned(),
                    expected: packet.attachments,
                    attachments: Vec::new(),
                });
            } else {
                dispatch(
                    shared,
                    packet.kind,
                    packet.nsp,
                    packet.id,
                    packet.data,
                    Vec::new(),
                );
            }
        }
        engine::Packet::Close => return Err(()),
        _ => {}
    }
    Ok(())
}

fn on_binary(bytes: Bytes, shared: &Shared, partial: &mut Option<Partial>) -> Result<(), ()> {
    let current = partial.as_mut().ok_or(())?;
    current.attachments.push(bytes);
    if current.attachments.len() == current.expected
        && let Some(done) = partial.take()
    {
        dispatch(
            shared,
            done.kind,
            &done.nsp,
            done.id,
            &done.data,
            done.attachments,
        );
    }
    Ok(())
}

fn dispatch(
    shared: &Shared,
    kind: PacketKind,
    nsp: &str,
    id: Option<u64>,
    data: &str,
    attachments: Vec<Bytes>,
) {
    let mut slots = shared.slots();
    let Some(slot) = slots.get_mut(nsp) else {
        return;
    };
    match kind {
        PacketKind::Connect => {
            let sid = serde_json::from_str::<Value>(data)
                .ok()
                .and_then(|v| v["sid"].as_str().map(str::to_owned));
            if let (Some(connect), Some(sid)) = (slot.connect.take(), sid) {
                let _ = connect.send(Ok(sid));
            }
        }
        PacketKind::ConnectError => {
            let body: Value = serde_json::from_str(data).unwrap_or(Value::Null);
            let refused = ConnectError {
                message: body["message"].as_str().unwrap_or_default().to_owned(),
                data: body.get("data").cloned(),
            };
            if let Some(connect) = slot.connect.take() {
                let _ = connect.send(Err(refused));
            }
            slots.remove(nsp);
        }
        PacketKind::Disconnect => {
            slot.events.send(Received::Disconnected);
            slots.remove(nsp);
        }
        PacketKind::Event | PacketKind::BinaryEvent => {
            let Ok(Value::Array(mut items)) = serde_json::from_str::<Value>(data) else {
                return;
            };
            if items.is_empty() {
                return;
            }
            let Value::String(name) = items.remove(0) else {
                return;
            };
            slot.events.send(Received::Event(Incoming {
                name,
                args: items,
                attachments,
                ack: id,
            }));
        }
        PacketKind::Ack | PacketKind::BinaryAck => {
            let Some(id) = id else { return };
            let Ok(Value::Array(args)) = serde_json::from_str::<Value>(data) else {
                return;
            };
            if let Some(waiter) = slot.acks.remove(&id) {
                let _ = waiter.send(AckArgs { args, attachments });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_arrays() {
        assert_eq!(
            event_json("a", vec![Value::from(1), placeholder(0)]),
            r#"["a",1,{"_placeholder":true,"num":0}]"#
        );
        assert_eq!(event_json("b", vec![]), r#"["b"]"#);
    }

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
