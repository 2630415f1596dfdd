//! The SDK's public face: [`App`], the [`Namespace`] handlers an
//! application registers, [`Io`] for emitting from outside handlers,
//! [`Reject`] and [`AppError`].
//!
//! This module only records what the application wants; serving it (Redis
//! connections, the queue, leases, the ordered publisher, shutdown) is the
//! `runtime` module's job, which [`App::run`] hands everything to.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use iocluster_protocol::keys::Keys;
use tokio::sync::mpsc;

use crate::config::AppConfig;
use crate::payload::{FromPayload, Payload};
use crate::runtime;
use crate::socket::{Ack, Ctx, Emitter, Publish, Socket};

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
}

impl Namespace {
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

/// Why an app-node stopped.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("cannot connect to Redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("cannot open the ops listener: {0}")]
    Ops(#[from] std::io::Error),
}

/// A handle that emits from outside handlers (timers, other tasks). It may
/// outlive [`App::run`]: once the app-node has stopped, its emits fail with
/// [`EmitError::Closed`](crate::EmitError::Closed).
#[derive(Clone)]
pub struct Io {
    ctx: Arc<Ctx>,
}

impl Io {
    /// Every client of `nsp`; narrow it with `to`, `except`, ...
    pub fn of(&self, nsp: &str) -> Emitter {
        Emitter::new(self.ctx.clone(), nsp)
    }
}

/// An application: its namespaces and handlers, and the runtime that serves
/// them. Every app-node under one prefix must run the same application.
pub struct App {
    config: AppConfig,
    namespaces: HashMap<String, Namespace>,
    on_new_session: Option<SessionHandler>,
    /// Shared by every handle; holds the sending end of the publish queue.
    ctx: Arc<Ctx>,
    /// The receiving end of the publish queue (bounded: a full queue makes
    /// emits fail with `Overloaded`), made here so that [`App::io`] works
    /// before `run`; `run` gives it to the publisher.
    publish_rx: mpsc::Receiver<Publish>,
}

impl App {
    pub fn new(config: AppConfig) -> App {
        let (publisher, publish_rx) = mpsc::channel(runtime::PUBLISH_QUEUE);
        let ctx = Arc::new(Ctx::new(
            config.app_id.clone(),
            Keys::new(config.prefix.clone()),
            publisher,
            config.join_timeout,
        ));
        App {
            config,
            namespaces: HashMap::new(),
            on_new_session: None,
            ctx,
            publish_rx,
        }
    }

    /// Declares namespace `nsp` (e.g. `/` or `/chat`) and its handlers.
    /// io-nodes refuse clients connecting to namespaces no app-node declares.
    pub fn namespace(&mut self, nsp: &str, setup: impl FnOnce(&mut Namespace)) -> &mut App {
        let namespace = self.namespaces.entry(normalize_nsp(nsp)).or_default();
        setup(namespace);
        self
    }

    /// Runs before the first event of a socket this app-node has not seen
    /// (after its own restart, or when another app-node handled the socket's
    /// connection), so the application can rebuild per-client context.
    pub fn on_new_session<F, Fut>(&mut self, handler: F) -> &mut App
    where
        F: Fn(Socket) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.on_new_session = Some(Arc::new(move |socket| Box::pin(handler(socket))));
        self
    }

    /// A handle to emit from outside handlers.
    pub fn io(&self) -> Io {
        Io {
            ctx: self.ctx.clone(),
        }
    }

    /// Serves events until `shutdown` resolves, then finishes the events in
    /// hand (within the grace period), hands back any it could not finish and
    /// leaves the registry.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<(), AppError> {
        let App {
            config,
            namespaces,
            on_new_session,
            ctx,
            publish_rx,
        } = self;
        let handlers = runtime::Handlers {
            namespaces,
            on_new_session,
        };
        runtime::run(config, handlers, ctx, publish_rx, shutdown).await
    }
}

fn normalize_nsp(nsp: &str) -> String {
    if nsp.starts_with('/') {
        nsp.to_owned()
    } else {
        format!("/{nsp}")
    }
}
