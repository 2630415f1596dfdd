//! The raw baseline: one process, no Redis, just enough Engine.IO v4 /
//! Socket.IO v5 over WebSocket for the scenario contract (handshake, ping,
//! CONNECT to "/", join / echo / bcast). A broadcast frame is encoded once
//! and shared by every member. Usage: iocluster-bench-peer-raw [ADDR]

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

type Rooms = Arc<Mutex<HashMap<String, HashMap<u64, mpsc::Sender<Utf8Bytes>>>>>;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:3000".into());
    let listener = TcpListener::bind(&addr).await?;
    eprintln!("raw peer on {addr}");
    let rooms: Rooms = Arc::default();
    let ids = Arc::new(AtomicU64::new(1));
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        let id = ids.fetch_add(1, Ordering::Relaxed);
        tokio::spawn(serve(stream, id, rooms.clone()));
    }
}

async fn serve(stream: TcpStream, id: u64, rooms: Rooms) {
    // The same small buffers as the io-node, for a fair memory figure; the
    // write buffer lets the frames waiting in the channel go out in one send.
    let config = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(4096);
    let Ok(ws) = tokio_tungstenite::accept_async_with_config(stream, Some(config)).await else {
        return;
    };
    let (mut sink, mut source) = ws.split();
    let (tx, mut rx) = mpsc::channel::<Utf8Bytes>(1024);
    let open = format!(
        "0{{\"sid\":\"raw{id}\",\"upgrades\":[],\"pingInterval\":25000,\"pingTimeout\":20000,\"maxPayload\":1000000}}"
    );
    if sink.send(Message::text(open)).await.is_err() {
        return;
    }
    let writer = tokio::spawn(async move {
        let mut ping = tokio::time::interval(Duration::from_secs(25));
        ping.tick().await;
        loop {
            let msg = tokio::select! {
                m = rx.recv() => match m { Some(m) => m, None => break },
                _ = ping.tick() => Utf8Bytes::from_static("2"),
            };
            // Everything already waiting goes out with it, in one flush.
            let mut write = sink.feed(Message::Text(msg)).await;
            while write.is_ok() {
                match rx.try_recv() {
                    Ok(msg) => write = sink.feed(Message::Text(msg)).await,
                    Err(_) => break,
                }
            }
            if write.is_err() || sink.flush().await.is_err() {
                break;
            }
        }
    });
    let mut joined: Vec<String> = Vec::new();
    while let Some(Ok(msg)) = source.next().await {
        let Message::Text(text) = msg else {
            if matches!(msg, Message::Close(_)) {
                break;
            }
            continue;
        };
        let t = text.as_str();
        if t == "40" || t.starts_with("40{") {
            let _ = tx.send(format!("40{{\"sid\":\"s{id}\"}}").into()).await;
        } else if let Some(rest) = t.strip_prefix("42") {
            let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
            let ack = &rest[..digits];
            let Ok(Value::Array(args)) = serde_json::from_str::<Value>(&rest[digits..]) else {
                continue;
            };
            match args.first().and_then(Value::as_str) {
                Some("join") => {
                    if let Some(room) = args.get(1).and_then(Value::as_str) {
                        rooms
                            .lock()
                            .unwrap()
                            .entry(room.to_owned())
                            .or_default()
                            .insert(id, tx.clone());
                        joined.push(room.to_owned());
                    }
                    if !ack.is_empty() {
                        let _ = tx.send(format!("43{ack}[true]").into()).await;
                    }
                }
                Some("echo") if !ack.is_empty() => {
                    let rest = Value::Array(args[1..].to_vec());
                    let _ = tx.send(format!("43{ack}{rest}").into()).await;
                }
                Some("bcast") => {
                    let Some(msg) = args.get(1) else { continue };
                    let (Some(room), Some(payload)) =
                        (msg.get("room").and_then(Value::as_str), msg.get("payload"))
                    else {
                        continue;
                    };
                    let frame: Utf8Bytes = format!("42[\"tick\",{payload}]").into();
                    let members: Vec<_> = rooms
                        .lock()
                        .unwrap()
                        .get(room)
                        .map(|m| m.values().cloned().collect())
                        .unwrap_or_default();
                    for member in members {
                        // A full outbox drops the client's frame: the bench counts it as lost.
                        let _ = member.try_send(frame.clone());
                    }
                    if !ack.is_empty() {
                        let _ = tx.send(format!("43{ack}[true]").into()).await;
                    }
                }
                _ => {}
            }
        } else if t == "1" || t.starts_with("41") {
            break;
        }
    }
    let mut all = rooms.lock().unwrap();
    for room in joined {
        if let Some(m) = all.get_mut(&room) {
            m.remove(&id);
            if m.is_empty() {
                all.remove(&room);
            }
        }
    }
    drop(all);
    writer.abort();
}
