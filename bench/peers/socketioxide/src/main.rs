//! The benchmark contract on socketioxide with its Redis adapter (a Rust
//! Socket.IO server with cross-process broadcast). One process per port:
//!   iocluster-bench-peer-socketioxide PORT REDIS_URL
//! - `join` (room, ack) → joins the room, acks `true`;
//! - `echo` (arg, ack) → acks with the same argument;
//! - `bcast` ({room, payload}) → emits `tick` (payload) to the whole room,
//!   on every process.

use serde::Deserialize;
use serde_json::Value;
use socketioxide::SocketIo;
use socketioxide::adapter::Adapter;
use socketioxide::extract::{AckSender, Data, SocketRef};
use socketioxide::handler::ConnectHandler;
use socketioxide_redis::{RedisAdapter, RedisAdapterCtr};

#[derive(Deserialize)]
struct Bcast {
    room: String,
    payload: Value,
}

/// Registers the event handlers. A middleware, not the connect handler:
/// socketioxide sends CONNECT and only then spawns the connect handler, so
/// handlers registered there race with the client's first event (the load
/// generator sends `join` at once, and lost that race now and then: the
/// `join` ack never came). Middlewares run before CONNECT is sent.
async fn register<A: Adapter>(socket: SocketRef<A>) -> Result<(), std::convert::Infallible> {
    socket.on("join", on_join::<A>);
    socket.on("echo", on_echo::<A>);
    socket.on("bcast", on_bcast::<A>);
    Ok(())
}

async fn on_connect<A: Adapter>(_socket: SocketRef<A>) {}

async fn on_join<A: Adapter>(socket: SocketRef<A>, Data(room): Data<String>, ack: AckSender<A>) {
    socket.join(room);
    let _ = ack.send(&true);
}

async fn on_echo<A: Adapter>(Data(arg): Data<Value>, ack: AckSender<A>) {
    let _ = ack.send(&arg);
}

async fn on_bcast<A: Adapter>(socket: SocketRef<A>, Data(bcast): Data<Bcast>) {
    let _ = socket.within(bcast.room).emit("tick", &bcast.payload).await;
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (Some(port), Some(redis_url)) = (args.next(), args.next()) else {
        eprintln!("usage: iocluster-bench-peer-socketioxide PORT REDIS_URL");
        std::process::exit(2);
    };
    // The adapter's driver speaks RESP3.
    let separator = if redis_url.contains('?') { '&' } else { '?' };
    let client = redis::Client::open(format!("{redis_url}{separator}protocol=resp3"))?;
    let adapter = RedisAdapterCtr::new_with_redis(&client).await?;
    let (layer, io) = SocketIo::builder()
        .with_adapter::<RedisAdapter<_>>(adapter)
        .build_layer();
    io.ns("/", on_connect.with(register)).await?;
    let app = axum::Router::new().layer(layer);
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port.parse::<u16>()?)).await?;
    println!("socketioxide on {port}");
    axum::serve(listener, app).await?;
    Ok(())
}
