//! [`Socket`], one namespace of a [`Client`](crate::Client): emitting (with
//! or without ack and attachments), receiving, acknowledging, leaving. It
//! writes packets to the connection task's queue and reads what the task
//! routed to its slot.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use iocluster_protocol::socketio::{self, PacketKind};
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::Message;

use crate::error::ClientError;
use crate::shared::{AckArgs, Deliver, Incoming, Received, Shared};

/// One namespace of a [`Client`](crate::Client).
pub struct Socket {
    pub(crate) id: String,
    pub(crate) nsp: String,
    pub(crate) outgoing: mpsc::UnboundedSender<Message>,
    pub(crate) shared: Arc<Shared>,
    /// Behind a lock so a socket can wait for an ack and receive at once.
    pub(crate) events: tokio::sync::Mutex<mpsc::UnboundedReceiver<Received>>,
    pub(crate) next_ack: Arc<AtomicU64>,
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
}
