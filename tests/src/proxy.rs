//! A round-robin HTTP/1.1 reverse proxy with no session affinity, standing in
//! for a load balancer in front of several io-nodes.
//!
//! Every HTTP request goes to the next backend in turn, requests of one
//! keep-alive client connection included (each gets a fresh upstream
//! connection). A WebSocket upgrade goes to the next backend in turn too;
//! once the backend answers 101 the two connections are spliced byte for
//! byte until either side closes. A client that goes away drops its upstream
//! request; a backend that refuses the connection gives 502. Requests carry
//! `X-Forwarded-For`. Dropping the proxy stops it and every connection.
//!
//! It records where each request went ([`RoundRobinProxy::routes`]), so tests
//! can check that a session was served by several io-nodes.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

type ProxyBody = BoxBody<Bytes, hyper::Error>;

/// One request as the proxy routed it.
#[derive(Clone, Debug)]
pub struct Route {
    /// `host:port` of the backend it went to.
    pub backend: String,
    pub method: String,
    /// Path and query, as the client sent them.
    pub target: String,
    /// A WebSocket upgrade request.
    pub upgrade: bool,
    /// The status the client got (`None` while waiting for the backend, or
    /// if the client went away first).
    pub status: Option<u16>,
}

impl Route {
    /// The value of query parameter `name` (such as Engine.IO's `sid`).
    pub fn query(&self, name: &str) -> Option<&str> {
        let (_, query) = self.target.split_once('?')?;
        query
            .split('&')
            .filter_map(|pair| pair.split_once('='))
            .find(|(key, _)| *key == name)
            .map(|(_, value)| value)
    }
}

/// The proxy; stops when dropped.
pub struct RoundRobinProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: CancellationToken,
}

struct Shared {
    backends: Mutex<Vec<String>>,
    next: AtomicUsize,
    routes: Mutex<Vec<Route>>,
    /// Requests (and tunnels) open to each backend.
    in_flight: Mutex<HashMap<String, usize>>,
    settled: Notify,
}

impl RoundRobinProxy {
    /// Listens on 127.0.0.1 (a free port) in front of `backends`
    /// (`host:port`). Needs a Tokio runtime.
    pub fn start(backends: Vec<String>) -> RoundRobinProxy {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("cannot bind the proxy");
        listener
            .set_nonblocking(true)
            .expect("cannot make the proxy's listener non-blocking");
        let addr = listener.local_addr().expect("the proxy has an address");
        let listener = TcpListener::from_std(listener).expect("the proxy needs a Tokio runtime");
        let shared = Arc::new(Shared {
            backends: Mutex::new(backends),
            next: AtomicUsize::new(0),
            routes: Mutex::new(Vec::new()),
            in_flight: Mutex::new(HashMap::new()),
            settled: Notify::new(),
        });
        let stop = CancellationToken::new();
        tokio::spawn(accept(listener, shared.clone(), stop.clone()));
        RoundRobinProxy { addr, shared, stop }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn addr(&self) -> String {
        self.addr.to_string()
    }

    /// Every request routed so far, in the order they arrived.
    pub fn routes(&self) -> Vec<Route> {
        self.shared.routes.lock().unwrap().clone()
    }

    /// Takes `backend` out of the rotation (as a load balancer's health
    /// check would); what is open to it stays open.
    pub fn remove_backend(&self, backend: &str) {
        self.shared
            .backends
            .lock()
            .unwrap()
            .retain(|name| name != backend);
    }

    /// Requests and WebSocket tunnels open to `backend` now.
    pub fn open_to(&self, backend: &str) -> usize {
        self.shared.open_to(backend)
    }

    /// Resolves once nothing is open to `backend` (take it out of the
    /// rotation first).
    pub async fn drained(&self, backend: &str) {
        loop {
            let settled = self.shared.settled.notified();
            if self.shared.open_to(backend) == 0 {
                return;
            }
            settled.await;
        }
    }
}

impl Drop for RoundRobinProxy {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl Shared {
    fn next_backend(&self) -> Option<String> {
        let backends = self.backends.lock().unwrap();
        if backends.is_empty() {
            return None;
        }
        let turn = self.next.fetch_add(1, Ordering::Relaxed);
        Some(backends[turn % backends.len()].clone())
    }

    fn open_to(&self, backend: &str) -> usize {
        self.in_flight
            .lock()
            .unwrap()
            .get(backend)
            .copied()
            .unwrap_or(0)
    }

    fn record(&self, route: Route) -> usize {
        let mut routes = self.routes.lock().unwrap();
        routes.push(route);
        routes.len() - 1
    }

    fn set_status(&self, index: usize, status: StatusCode) {
        self.routes.lock().unwrap()[index].status = Some(status.as_u16());
    }
}

/// Counts one open request (or tunnel) to a backend while it lives.
struct Open {
    shared: Arc<Shared>,
    backend: String,
}

impl Open {
    fn new(shared: &Arc<Shared>, backend: &str) -> Open {
        *shared
            .in_flight
            .lock()
            .unwrap()
            .entry(backend.to_owned())
            .or_default() += 1;
        Open {
            shared: shared.clone(),
            backend: backend.to_owned(),
        }
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        if let Some(count) = self.shared.in_flight.lock().unwrap().get_mut(&self.backend) {
            *count -= 1;
        }
        self.shared.settled.notify_waiters();
    }
}

/// Aborts a task when dropped: the upstream connection of a request goes
/// with the request.
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// An upstream response body that keeps its upstream connection (and its
/// place in the in-flight count) exactly as long as the client reads it.
struct Upstream {
    body: Incoming,
    _connection: AbortOnDrop,
    _open: Open,
}

impl Body for Upstream {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

async fn accept(listener: TcpListener, shared: Arc<Shared>, stop: CancellationToken) {
    loop {
        let (stream, peer) = tokio::select! {
            _ = stop.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(_) => continue,
            },
        };
        let shared = shared.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn({
                let stop = stop.clone();
                move |request| forward(shared.clone(), stop.clone(), peer, request)
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades();
            tokio::select! {
                _ = stop.cancelled() => {}
                _ = connection => {}
            }
        });
    }
}

fn is_upgrade(headers: &HeaderMap) -> bool {
    let connection_upgrade = headers.get_all(header::CONNECTION).iter().any(|value| {
        value
            .to_str()
            .unwrap_or("")
            .split(',')
            .any(|token| token.trim().eq_ignore_ascii_case("upgrade"))
    });
    connection_upgrade && headers.contains_key(header::UPGRADE)
}

/// Removes the hop-by-hop headers of a plain request or response (an
/// upgrade keeps `Connection` and `Upgrade`, which it is about).
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .filter_map(|token| HeaderName::from_bytes(token.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in [
        "connection",
        "keep-alive",
        "proxy-connection",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    ] {
        headers.remove(name);
    }
}

fn add_forwarded_for(headers: &mut HeaderMap, peer: SocketAddr) {
    let ip = peer.ip().to_string();
    let value = match headers.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
        Some(earlier) => format!("{earlier}, {ip}"),
        None => ip,
    };
    if let Ok(value) = HeaderValue::from_str(&value) {
        headers.insert("x-forwarded-for", value);
    }
}

fn plain(status: StatusCode, text: &str) -> Response<ProxyBody> {
    let mut response = Response::new(
        Full::new(Bytes::from(text.to_owned()))
            .map_err(|never| match never {})
            .boxed(),
    );
    *response.status_mut() = status;
    response
}

async fn forward(
    shared: Arc<Shared>,
    stop: CancellationToken,
    peer: SocketAddr,
    mut request: Request<Incoming>,
) -> Result<Response<ProxyBody>, Infallible> {
    let upgrade = is_upgrade(request.headers());
    let Some(backend) = shared.next_backend() else {
        return Ok(plain(StatusCode::BAD_GATEWAY, "no backend"));
    };
    let index = shared.record(Route {
        backend: backend.clone(),
        method: request.method().to_string(),
        target: request
            .uri()
            .path_and_query()
            .map(|pq| pq.to_string())
            .unwrap_or_default(),
        upgrade,
        status: None,
    });
    let open = Open::new(&shared, &backend);
    // The client's side of an upgrade, before the request moves upstream.
    let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut request));
    if !upgrade {
        strip_hop_by_hop(request.headers_mut());
    }
    add_forwarded_for(request.headers_mut(), peer);

    let upstream = match TcpStream::connect(&backend).await {
        Ok(stream) => stream,
        Err(error) => {
            shared.set_status(index, StatusCode::BAD_GATEWAY);
            return Ok(plain(
                StatusCode::BAD_GATEWAY,
                &format!("{backend}: {error}"),
            ));
        }
    };
    let (mut sender, connection) =
        match hyper::client::conn::http1::handshake(TokioIo::new(upstream)).await {
            Ok(pair) => pair,
            Err(error) => {
                shared.set_status(index, StatusCode::BAD_GATEWAY);
                return Ok(plain(
                    StatusCode::BAD_GATEWAY,
                    &format!("{backend}: {error}"),
                ));
            }
        };
    // Dropped with this future (the client went away) or with the response
    // body: either way the upstream connection closes.
    let connection = AbortOnDrop(tokio::spawn(async move {
        let _ = connection.with_upgrades().await;
    }));
    let mut response = match sender.send_request(request).await {
        Ok(response) => response,
        Err(error) => {
            shared.set_status(index, StatusCode::BAD_GATEWAY);
            return Ok(plain(
                StatusCode::BAD_GATEWAY,
                &format!("{backend}: {error}"),
            ));
        }
    };
    shared.set_status(index, response.status());

    if let Some(client_upgrade) = client_upgrade
        && response.status() == StatusCode::SWITCHING_PROTOCOLS
    {
        let upstream_upgrade = hyper::upgrade::on(&mut response);
        tokio::spawn(async move {
            let _open = open;
            let _connection = connection;
            let tunnel = async {
                if let (Ok(client), Ok(upstream)) = tokio::join!(client_upgrade, upstream_upgrade) {
                    splice(TokioIo::new(client), TokioIo::new(upstream)).await;
                }
            };
            tokio::select! {
                _ = stop.cancelled() => {}
                _ = tunnel => {}
            }
        });
        return Ok(response.map(|_| Empty::new().map_err(|never| match never {}).boxed()));
    }

    strip_hop_by_hop(response.headers_mut());
    Ok(response.map(|body| {
        Upstream {
            body,
            _connection: connection,
            _open: open,
        }
        .boxed()
    }))
}

/// Copies bytes both ways until either side closes (or fails); then both
/// connections are dropped, which closes them.
async fn splice<A, B>(a: A, b: B)
where
    A: AsyncRead + AsyncWrite,
    B: AsyncRead + AsyncWrite,
{
    let (mut a_read, mut a_write) = tokio::io::split(a);
    let (mut b_read, mut b_write) = tokio::io::split(b);
    tokio::select! {
        _ = tokio::io::copy(&mut a_read, &mut b_write) => {}
        _ = tokio::io::copy(&mut b_read, &mut a_write) => {}
    }
}
