//! The routing state a [`Client`](crate::Client)'s connection task shares
//! with its sockets: one slot per namespace (the pending connect, where
//! events go, the acks awaited), and the values delivered through it.

use std::collections::HashMap;
use std::sync::Mutex;

use bytes::Bytes;
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};

use crate::error::ConnectError;

/// An event the server sent to a socket.
#[derive(Debug, Clone, PartialEq)]
pub struct Incoming {
    pub name: String,
    pub args: Vec<Value>,
    /// Attachments, referred to from `args` by placeholders.
    pub attachments: Vec<Bytes>,
    /// Set when the server wants an acknowledgement ([`Socket::ack`](crate::Socket::ack)).
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
pub(crate) struct Slot {
    pub(crate) connect: Option<oneshot::Sender<Result<String, ConnectError>>>,
    pub(crate) events: Deliver,
    pub(crate) acks: HashMap<u64, oneshot::Sender<AckArgs>>,
}

/// Where a namespace's events go.
pub(crate) enum Deliver {
    /// To [`Socket::recv`](crate::Socket::recv).
    Queue(mpsc::UnboundedSender<Received>),
    /// To a function the connection task calls ([`Socket::on_receive`](crate::Socket::on_receive)).
    Call(Box<dyn FnMut(Received) + Send>),
}

impl Deliver {
    pub(crate) fn send(&mut self, received: Received) {
        match self {
            Deliver::Queue(queue) => {
                let _ = queue.send(received);
            }
            Deliver::Call(call) => call(received),
        }
    }
}

pub(crate) struct Shared {
    pub(crate) slots: Mutex<HashMap<String, Slot>>,
}

impl Shared {
    pub(crate) fn slots(&self) -> std::sync::MutexGuard<'_, HashMap<String, Slot>> {
        self.slots.lock().unwrap_or_else(|p| p.into_inner())
    }
}
