//! The SDK's public face: [`App`], which collects the application's
//! namespaces (`namespace`) and hands them to the runtime, and [`Io`] for
//! emitting from outside handlers.
//!
//! This module only records what the application wants; serving it (Redis
//! connections, the queue, leases, the ordered publisher, shutdown) is the
//! `runtime` module's job, which [`App::run`] hands everything to.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;

use tokio::sync::mpsc;

use crate::config::AppConfig;
use crate::error::AppError;
use crate::namespace::{Namespace, SessionHandler};
use crate::runtime;
use crate::socket::{Ctx, Emitter, Publish, Socket};

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
        iocluster_protocol::envelope::set_handshake_cache(config.handshake_cache);
        let (publisher, publish_rx) = mpsc::channel(runtime::PUBLISH_QUEUE);
        let ctx = Arc::new(Ctx::new(
            config.app_id.clone(),
            iocluster_ops::keys(&config.redis, &config.prefix),
            publisher,
            config.join_timeout,
            config.redis.clone(),
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
        let nsp = normalize_nsp(nsp);
        let namespace = self.namespaces.entry(nsp.clone()).or_default();
        setup(namespace);
        let window = namespace.recovery.unwrap_or(self.config.recovery);
        self.ctx
            .set_recovery(&nsp, window, self.config.recovery_packets);
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
