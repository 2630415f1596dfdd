//! What an application registers: the handlers of each [`Namespace`] and
//! the [`Reject`] a connection handler answers with. Plain data that both
//! the public API (`app`) and the runtime read; it knows neither.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use crate::payload::{FromPayload, Payload};
use crate::socket::{Ack, Socket};

pub(crate) type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;
pub(crate) type ConnectHandler = Arc<dyn Fn(Socket) -> BoxFuture<Result<(), Reject>> + Send + Sync>;
pub(crate) type EventHandler =
    Arc<dyn Fn(Socket, Payload, Option<Ack>) -> BoxFuture<()> + Send + Sync>;
pub(crate) type DisconnectHandler = Arc<dyn Fn(Socket, String) -> BoxFuture<()> + Send + Sync>;
pub(crate) type SessionHandler = Arc<dyn Fn(Socket) -> BoxFuture<()> + Send + Sync>;
pub(crate) type AnyEventHandler =
    Arc<dyn Fn(Socket, String, Payload, Option<Ack>) -> BoxFuture<()> + Send + Sync>;

/// A refused connection: the client's `connect_error` gets `message` (and
/// `data`).
#[derive(Debug, Clone)]
pub struct Reject {
    pub message: String,
    pub data: Option<serde_json::Value>,
}

impl Reject {
    pub fn new(message: impl Into<String>) -> Reject {
        Reject {
            message: message.into(),
            data: None,
        }
    }

    pub fn with_data(mut self, data: serde_json::Value) -> Reject {
        self.data = Some(data);
        self
    }
}

/// The handlers of one namespace.
#[derive(Default)]
pub struct Namespace {
    pub(crate) on_connection: Option<ConnectHandler>,
    pub(crate) events: HashMap<String, EventHandler>,
    pub(crate) on_any: Option<AnyEventHandler>,
    pub(crate) on_disconnect: Option<DisconnectHandler>,
    pub(crate) recovery: Option<std::time::Duration>,
}

impl Namespace {
    /// Connection state recovery in this namespace, overriding the app-node's
    /// `recovery_ms`: a client that loses its connection and comes back
    /// within `max_disconnection` (to any io-node) gets the same socket id,
    /// rooms and data, and every emit it missed. `Duration::ZERO` turns it
    /// off. With it on, each emit without an acknowledgement is kept in the
    /// namespace's log in Redis (`recovery_packets` entries at most), and
    /// clients get its log offset as an extra last argument, as with
    /// Socket.IO's `connectionStateRecovery`.
    pub fn recovery(&mut self, max_disconnection: std::time::Duration) -> &mut Namespace {
        self.recovery = Some(max_disconnection);
        self
    }

    /// Runs when a client connects; `Err` refuses the connection. Without it,
    /// every connection is accepted. The client gets CONNECT only after this
    /// returns, and its later events wait until then.
    pub fn on_connection<F, Fut>(&mut self, handler: F) -> &mut Namespace
    where
        F: Fn(Socket) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), Reject>> + Send + 'static,
    {
        self.on_connection = Some(Arc::new(move |socket| Box::pin(handler(socket))));
        self
    }

    /// Runs for each `event` a client emits. `T` receives the arguments (see
    /// [`FromPayload`]); arguments that do not fit are logged and the event
    /// dropped. `ack` is set when the client asked for an acknowledgement.
    pub fn on<T, F, Fut>(&mut self, event: &str, handler: F) -> &mut Namespace
    where
        T: FromPayload + Send + 'static,
        F: Fn(Socket, T, Option<Ack>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let handler = Arc::new(handler);
        let name = event.to_owned();
        self.events.insert(
            event.to_owned(),
            Arc::new(move |socket, payload, ack| {
                let handler = handler.clone();
                let name = name.clone();
                Box::pin(async move {
                    match T::from_payload(payload) {
                        Ok(args) => handler(socket, args, ack).await,
                        Err(error) => tracing::warn!(event = %name, %error, "arguments do not fit the handler"),
                    }
                })
            }),
        );
        self
    }

    /// Runs for events no [`Namespace::on`] handler takes.
    pub fn on_any<F, Fut>(&mut self, handler: F) -> &mut Namespace
    where
        F: Fn(Socket, String, Payload, Option<Ack>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.on_any = Some(Arc::new(move |socket, name, payload, ack| {
            Box::pin(handler(socket, name, payload, ack))
        }));
        self
    }

    /// Runs once when a connected socket goes away, with Socket.IO's reason
    /// (`transport close`, `ping timeout`, `client namespace disconnect`, ...).
    pub fn on_disconnect<F, Fut>(&mut self, handler: F) -> &mut Namespace
    where
        F: Fn(Socket, String) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.on_disconnect = Some(Arc::new(move |socket, reason| {
            Box::pin(handler(socket, reason))
        }));
        self
    }
}
