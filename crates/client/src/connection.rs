//! The connection task: owns the WebSocket, answers pings, notices a silent
//! server, reassembles binary packets and routes each packet to its
//! namespace's slot. Handles only queue frames for it to write.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use iocluster_protocol::engine;
use iocluster_protocol::socketio::{self, PacketKind};
use serde_json::Value;
use tokio::sync::{mpsc, watch};
use tokio_tungstenite::tungstenite::Message;

use crate::error::ConnectError;
use crate::shared::{AckArgs, Deliver, Incoming, Received, Shared, Slot};

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
pub(crate) async fn run(
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
