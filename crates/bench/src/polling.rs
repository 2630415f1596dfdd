//! A Socket.IO client over HTTP long-polling: what a browser does when
//! WebSocket is unavailable or before it upgrades. The connect storm uses it
//! to be admitted to namespace `/`; `polling-echo` keeps its sessions busy.
//!
//! A [`Session`] talks to one server or to several ([`Affinity`]): every
//! request to the server the client was given (a sticky load balancer), or
//! each request to the next server in turn (a round-robin balancer without
//! affinity, the load generator playing the balancer). Engine.IO allows a
//! session one GET and one POST at the same time, so requests are started
//! with [`Session::start_get`] / [`Session::start_post`] as futures that own
//! what they need, and handed back to [`Session::finish`]: a caller can keep
//! a long-poll GET waiting while it POSTs.
//!
//! Each server has a pool of HTTP/1.1 keep-alive connections: a request takes
//! an idle one (or opens one) and puts it back once answered. With at most
//! one GET and one POST in flight, a pool never holds more than two.

use std::fmt;
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::{Method, Request, header};
use hyper_util::rt::TokioIo;
use iocluster_protocol::engine::{self, Packet};
use iocluster_protocol::socketio::{self, PacketKind};
use serde::Deserialize;

/// Where a client's requests go when it was given several servers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Affinity {
    /// Every request to the client's own server (a sticky balancer).
    On,
    /// Each request to the next server in turn (a round-robin balancer
    /// without affinity): only a cluster whose servers answer any
    /// session's requests supports it.
    Off,
}

impl Affinity {
    pub fn as_str(self) -> &'static str {
        match self {
            Affinity::On => "on",
            Affinity::Off => "off",
        }
    }
}

/// Longer than any server's ping interval: a long-poll GET is answered by then.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// Most long-poll GETs to wait for the CONNECT (each is answered within the
/// server's ping interval at the latest).
const MAX_POLLS: usize = 10;

/// Binary attachments a server's packet may announce (this client sends
/// none and ignores those it gets).
const MAX_ATTACHMENTS: usize = 64;

/// Why a request or a session failed.
#[derive(Debug)]
pub enum Failure {
    /// The server answered with an error status (400 `Session ID unknown`,
    /// say).
    Status {
        method: Method,
        server: Arc<str>,
        status: u16,
        body: String,
    },
    /// No answer: connecting failed, the connection broke, or the request
    /// timed out.
    Transport {
        method: Method,
        server: Arc<str>,
        error: String,
    },
    /// An answer this client cannot read.
    Protocol(String),
    /// The server ended the session or refused the namespace.
    Closed(String),
}

impl Failure {
    /// A short name to count failures by: `http_400`, `transport`,
    /// `protocol`, `closed`.
    pub fn kind(&self) -> String {
        match self {
            Failure::Status { status, .. } => format!("http_{status}"),
            Failure::Transport { .. } => "transport".to_owned(),
            Failure::Protocol(_) => "protocol".to_owned(),
            Failure::Closed(_) => "closed".to_owned(),
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Status {
                method,
                server,
                status,
                body,
            } => write!(f, "{method} to {server} answered {status}: {body}"),
            Failure::Transport {
                method,
                server,
                error,
            } => write!(f, "{method} to {server} failed: {error}"),
            Failure::Protocol(what) => write!(f, "unexpected answer: {what}"),
            Failure::Closed(what) => f.write_str(what),
        }
    }
}

impl std::error::Error for Failure {}

/// What one record of a server's payload means to this client.
#[derive(Debug, PartialEq, Eq)]
pub enum Incoming<'a> {
    /// A ping, answered with `engine::pong(data)` in a POST.
    Ping(&'a str),
    /// CONNECT to namespace `/`.
    Connect,
    /// CONNECT_ERROR for namespace `/`, with its data.
    Refused(&'a str),
    /// The server closed the session (Engine.IO close) or the socket
    /// (DISCONNECT).
    Closed,
    /// An ack: its id and the JSON array of its arguments.
    Ack(u64, &'a str),
    /// Nothing this client acts on: a noop (what releases a waiting poll), a
    /// pong, an event, a binary attachment, another namespace's packet.
    Other,
}

/// The records of a long-polling payload, each read as [`Incoming`]; a
/// record that is not Engine.IO / Socket.IO is a [`Failure::Protocol`].
pub fn incoming(payload: &str) -> impl Iterator<Item = Result<Incoming<'_>, Failure>> {
    engine::split_payload(payload).map(read_record)
}

fn read_record(record: &str) -> Result<Incoming<'_>, Failure> {
    let packet = engine::decode_polling_record(record)
        .map_err(|error| Failure::Protocol(format!("{error} in record {record:?}")))?;
    let text = match packet {
        Packet::Ping(data) => return Ok(Incoming::Ping(data)),
        Packet::Close => return Ok(Incoming::Closed),
        Packet::Message(text) => text,
        Packet::Open(_) | Packet::Pong(_) | Packet::Binary(_) | Packet::Upgrade | Packet::Noop => {
            return Ok(Incoming::Other);
        }
    };
    let packet = socketio::parse(text, MAX_ATTACHMENTS)
        .map_err(|error| Failure::Protocol(format!("{error} in record {record:?}")))?;
    if packet.nsp != "/" {
        return Ok(Incoming::Other);
    }
    Ok(match packet.kind {
        PacketKind::Connect => Incoming::Connect,
        PacketKind::ConnectError => Incoming::Refused(packet.data),
        PacketKind::Disconnect => Incoming::Closed,
        PacketKind::Ack => match packet.id {
            Some(id) => Incoming::Ack(id, packet.data),
            None => return Err(Failure::Protocol(format!("ack without id: {record:?}"))),
        },
        PacketKind::Event | PacketKind::BinaryEvent | PacketKind::BinaryAck => Incoming::Other,
    })
}

/// Server addresses (`host:port`) from `http://` URLs.
pub fn servers(urls: &[String]) -> anyhow::Result<Arc<[Arc<str>]>> {
    urls.iter()
        .map(|url| {
            let authority = url
                .strip_prefix("http://")
                .with_context(|| format!("polling URLs start with http://, not {url:?}"))?;
            Ok(Arc::from(authority.trim_end_matches('/')))
        })
        .collect()
}

/// Opens an Engine.IO session over polling with the server of `url` and
/// connects to namespace `/`; returns once the server sent CONNECT.
pub async fn connect(url: &str, local: Option<IpAddr>) -> anyhow::Result<Session> {
    let mut session = Session::new(servers(&[url.to_owned()])?, 0, local, Affinity::On);
    session.connect().await?;
    Ok(session)
}

/// One HTTP/1.1 keep-alive connection: one request at a time.
struct Conn(SendRequest<Full<Bytes>>);

/// A request on its way: resolves to an [`Answer`] for [`Session::finish`].
pub type Pending = Pin<Box<dyn Future<Output = Answer> + Send>>;

/// A request's outcome, and the connection to put back in its pool.
pub struct Answer {
    server: usize,
    conn: Option<Conn>,
    opened: bool,
    result: Result<String, Failure>,
}

/// An Engine.IO session over long-polling, with its connections.
pub struct Session {
    servers: Arc<[Arc<str>]>,
    local: Option<IpAddr>,
    affinity: Affinity,
    /// The server of the next request.
    turn: usize,
    /// Idle keep-alive connections, per server.
    pools: Vec<Vec<Conn>>,
    /// Empty until the handshake.
    sid: String,
    /// HTTP requests answered or failed.
    pub requests: u64,
    /// TCP connections opened.
    pub connections: u64,
}

impl Session {
    /// A session not yet open, whose first request goes to `servers[first]`
    /// (modulo their number).
    pub fn new(
        servers: Arc<[Arc<str>]>,
        first: usize,
        local: Option<IpAddr>,
        affinity: Affinity,
    ) -> Session {
        let n = servers.len().max(1);
        Session {
            pools: (0..servers.len()).map(|_| Vec::new()).collect(),
            servers,
            local,
            affinity,
            turn: first % n,
            sid: String::new(),
            requests: 0,
            connections: 0,
        }
    }

    /// Opens a new Engine.IO session (the handshake GET, CONNECT to `/` in a
    /// POST), answering pings meanwhile, until the server's CONNECT. The
    /// connections stay in their pools.
    pub async fn connect(&mut self) -> Result<(), Failure> {
        self.sid.clear();
        let open = self.request(Method::GET, None).await?;
        let mut records = engine::split_payload(&open);
        let first = records.next().unwrap_or_default();
        let Ok(Packet::Open(json)) = engine::decode_polling_record(first) else {
            return Err(Failure::Protocol(format!(
                "expected the open packet, got {open:?}"
            )));
        };
        #[derive(Deserialize)]
        struct Open {
            sid: String,
        }
        let open_packet: Open = serde_json::from_str(json)
            .map_err(|error| Failure::Protocol(format!("open packet {json:?}: {error}")))?;
        if open_packet.sid.is_empty() {
            return Err(Failure::Protocol("empty sid".to_owned()));
        }
        let mut connected = false;
        let mut pongs = String::new();
        // Whatever else came with the open packet, then what the polls bring.
        for record in records {
            on_setup_record(read_record(record)?, &mut connected, &mut pongs)?;
        }
        self.sid = open_packet.sid;
        push_record(&mut pongs, "40");
        self.send(std::mem::take(&mut pongs)).await?;
        for _ in 0..MAX_POLLS {
            if connected {
                return Ok(());
            }
            let payload = self.request(Method::GET, None).await?;
            for item in incoming(&payload) {
                on_setup_record(item?, &mut connected, &mut pongs)?;
            }
            if !pongs.is_empty() {
                self.send(std::mem::take(&mut pongs)).await?;
            }
        }
        if connected {
            return Ok(());
        }
        Err(Failure::Protocol(format!(
            "no CONNECT after {MAX_POLLS} polls"
        )))
    }

    /// Opens connections until every server this session sends to has
    /// `per_server` idle ones: the load then starts with no TCP handshake.
    pub async fn warm(&mut self, per_server: usize) -> Result<(), Failure> {
        let servers: Vec<usize> = match self.affinity {
            Affinity::On => vec![self.turn],
            Affinity::Off => (0..self.servers.len()).collect(),
        };
        for server in servers {
            while self.pools[server].len() < per_server {
                let conn = Conn::open(&self.servers[server], self.local)
                    .await
                    .map_err(|error| Failure::Transport {
                        method: Method::GET,
                        server: self.servers[server].clone(),
                        error: format!("{error:#}"),
                    })?;
                self.connections += 1;
                self.pools[server].push(conn);
            }
        }
        Ok(())
    }

    /// Starts a long-poll GET.
    pub fn start_get(&mut self) -> Pending {
        self.start(Method::GET, None)
    }

    /// Starts a POST of `records` (joined by the record separator).
    pub fn start_post(&mut self, records: String) -> Pending {
        self.start(Method::POST, Some(records))
    }

    /// Takes back a started request's connection; its body, or why it failed
    /// (an error status, no answer).
    pub fn finish(&mut self, answer: Answer) -> Result<String, Failure> {
        self.requests += 1;
        if answer.opened {
            self.connections += 1;
        }
        if let Some(conn) = answer.conn {
            self.pools[answer.server].push(conn);
        }
        answer.result
    }

    /// One request, waited for.
    async fn request(&mut self, method: Method, body: Option<String>) -> Result<String, Failure> {
        let answer = self.start(method, body).await;
        self.finish(answer)
    }

    /// POSTs records; the server answers `ok`.
    async fn send(&mut self, records: String) -> Result<(), Failure> {
        let answer = self.request(Method::POST, Some(records)).await?;
        if answer != "ok" {
            return Err(Failure::Protocol(format!("POST answered {answer:?}")));
        }
        Ok(())
    }

    fn start(&mut self, method: Method, body: Option<String>) -> Pending {
        let server = self.turn;
        if self.affinity == Affinity::Off {
            self.turn = (self.turn + 1) % self.servers.len().max(1);
        }
        let mut uri = String::with_capacity(64);
        uri.push_str("/socket.io/?EIO=4&transport=polling");
        if !self.sid.is_empty() {
            uri.push_str("&sid=");
            uri.push_str(&self.sid);
        }
        let idle = self.pools[server].pop();
        let authority = self.servers[server].clone();
        let local = self.local;
        Box::pin(async move {
            let (conn, opened, result) = exchange(idle, &authority, local, method, uri, body).await;
            Answer {
                server,
                conn,
                opened,
                result,
            }
        })
    }
}

/// A record of the setup's payloads: CONNECT ends it, pings are answered,
/// a refusal or a close fails it.
fn on_setup_record(
    item: Incoming<'_>,
    connected: &mut bool,
    pongs: &mut String,
) -> Result<(), Failure> {
    match item {
        Incoming::Connect => *connected = true,
        Incoming::Ping(data) => push_record(pongs, &engine::pong(data)),
        Incoming::Refused(error) => {
            return Err(Failure::Closed(format!("connection refused: {error}")));
        }
        Incoming::Closed => {
            return Err(Failure::Closed("the server closed the session".to_owned()));
        }
        Incoming::Ack(..) | Incoming::Other => {}
    }
    Ok(())
}

/// Appends a record to a POST body.
pub fn push_record(body: &mut String, record: &str) {
    if !body.is_empty() {
        body.push(engine::RECORD_SEPARATOR);
    }
    body.push_str(record);
}

impl Conn {
    async fn open(authority: &str, local: Option<IpAddr>) -> anyhow::Result<Conn> {
        let stream = iocluster_client::tcp_connect(authority, local).await?;
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .context("HTTP handshake")?;
        tokio::spawn(connection);
        Ok(Conn(sender))
    }
}

/// One request on an idle connection (a new one when there is none, or when
/// the server closed the idle one): the connection to keep, whether it was
/// opened here, and the body or why there is none.
async fn exchange(
    idle: Option<Conn>,
    authority: &Arc<str>,
    local: Option<IpAddr>,
    method: Method,
    uri: String,
    body: Option<String>,
) -> (Option<Conn>, bool, Result<String, Failure>) {
    let transport = |error: String| Failure::Transport {
        method: method.clone(),
        server: authority.clone(),
        error,
    };
    let mut reused = None;
    if let Some(mut conn) = idle
        && conn.0.ready().await.is_ok()
    {
        reused = Some(conn);
    }
    let opened = reused.is_none();
    let mut conn = match reused {
        Some(conn) => conn,
        None => match tokio::time::timeout(REQUEST_TIMEOUT, Conn::open(authority, local)).await {
            Ok(Ok(conn)) => conn,
            Ok(Err(error)) => return (None, false, Err(transport(format!("{error:#}")))),
            Err(_) => return (None, false, Err(transport("connect timed out".to_owned()))),
        },
    };
    let mut request = Request::builder()
        .method(method.clone())
        .uri(uri)
        .header(header::HOST, &**authority);
    if body.is_some() {
        request = request.header(header::CONTENT_TYPE, "text/plain;charset=UTF-8");
    }
    let request = match request.body(Full::new(Bytes::from(body.unwrap_or_default()))) {
        Ok(request) => request,
        Err(error) => return (Some(conn), opened, Err(transport(error.to_string()))),
    };
    let answered = tokio::time::timeout(REQUEST_TIMEOUT, async {
        conn.0.ready().await?;
        let response = conn.0.send_request(request).await?;
        let status = response.status();
        let body = response.into_body().collect().await?.to_bytes();
        Ok::<_, hyper::Error>((status, body))
    })
    .await;
    let (status, body) = match answered {
        Ok(Ok(answer)) => answer,
        // The connection is of no further use.
        Ok(Err(error)) => return (None, opened, Err(transport(error.to_string()))),
        Err(_) => return (None, opened, Err(transport("request timed out".to_owned()))),
    };
    let result = match String::from_utf8(body.to_vec()) {
        Err(_) => Err(Failure::Protocol(format!(
            "{method} to {authority}: the body is not UTF-8"
        ))),
        Ok(text) if !status.is_success() => Err(Failure::Status {
            method,
            server: authority.clone(),
            status: status.as_u16(),
            body: text,
        }),
        Ok(text) => Ok(text),
    };
    (Some(conn), opened, result)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(payload: &str) -> Vec<Incoming<'_>> {
        incoming(payload).map(|item| item.unwrap()).collect()
    }

    #[test]
    fn reads_what_servers_send() {
        assert_eq!(read("2"), [Incoming::Ping("")]);
        assert_eq!(read("6"), [Incoming::Other]);
        assert_eq!(read("1"), [Incoming::Closed]);
        assert_eq!(read(r#"40{"sid":"abc"}"#), [Incoming::Connect]);
        assert_eq!(
            read("433[1]\u{1e}2\u{1e}4312[\"x\"]\u{1e}6"),
            [
                Incoming::Ack(3, "[1]"),
                Incoming::Ping(""),
                Incoming::Ack(12, r#"["x"]"#),
                Incoming::Other,
            ]
        );
        assert_eq!(
            read(r#"44{"message":"no"}"#),
            [Incoming::Refused(r#"{"message":"no"}"#)]
        );
        assert_eq!(read("41"), [Incoming::Closed]);
        // Events, other namespaces, binary attachments: not for this client.
        assert_eq!(
            read(
                "42[\"tick\",1]\u{1e}43/admin,5[1]\u{1e}451-[\"b\",{\"_placeholder\":true,\"num\":0}]\u{1e}bAQI="
            ),
            [
                Incoming::Other,
                Incoming::Other,
                Incoming::Other,
                Incoming::Other
            ]
        );
    }

    #[test]
    fn refuses_what_is_not_engine_io() {
        for payload in ["", "x", "4x", "433[1]\u{1e}", "43[1]", "b!!"] {
            assert!(incoming(payload).any(|item| item.is_err()), "{payload:?}");
        }
        assert_eq!(
            incoming("43[1]").next().unwrap().unwrap_err().to_string(),
            "unexpected answer: ack without id: \"43[1]\""
        );
    }

    #[test]
    fn failures_are_counted_by_kind() {
        let status = Failure::Status {
            method: Method::GET,
            server: Arc::from("127.0.0.1:3001"),
            status: 400,
            body: r#"{"code":1,"message":"Session ID unknown"}"#.to_owned(),
        };
        assert_eq!(status.kind(), "http_400");
        assert_eq!(
            status.to_string(),
            r#"GET to 127.0.0.1:3001 answered 400: {"code":1,"message":"Session ID unknown"}"#
        );
        assert_eq!(Failure::Closed(String::new()).kind(), "closed");
    }

    #[test]
    fn requests_follow_the_affinity() {
        let servers = servers(&["http://a:1".to_owned(), "http://b:2/".to_owned()]).unwrap();
        assert_eq!(&*servers[1], "b:2");
        let turns = |affinity, first| {
            let mut session = Session::new(servers.clone(), first, None, affinity);
            (0..5)
                .map(|_| {
                    let turn = session.turn;
                    drop(session.start_get());
                    turn
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(turns(Affinity::On, 3), [1, 1, 1, 1, 1]);
        assert_eq!(turns(Affinity::Off, 3), [1, 0, 1, 0, 1]);
        assert!(super::servers(&["ws://a:1".to_owned()]).is_err());
    }
}
