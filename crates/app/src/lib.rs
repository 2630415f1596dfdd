//! The app-node SDK: write Socket.IO server logic once, run it on any number
//! of stateless app-nodes behind the io-nodes.
//!
//! ```no_run
//! use iocluster_app::{App, AppConfig, Reject};
//!
//! # async fn example() -> Result<(), iocluster_app::AppError> {
//! let mut app = App::new(AppConfig::default());
//! app.namespace("/", |ns| {
//!     ns.on_connection(|socket| async move {
//!         if socket.auth::<serde_json::Value>().is_none() {
//!             return Err(Reject::new("auth required"));
//!         }
//!         socket.join("lobby").await.map_err(|e| Reject::new(e.to_string()))?;
//!         Ok(())
//!     });
//!     ns.on("chat", |socket, text: String, _ack| async move {
//!         let _ = socket.to("lobby").emit("chat", &text);
//!     });
//! });
//! app.run(std::future::pending()).await
//! # }
//! ```
//!
//! - `app`: what applications call: [`App`] and [`Io`].
//! - `namespace`: what they register: [`Namespace`] handlers, [`Reject`].
//! - `error`: [`AppError`], why an app-node stopped.
//! - `runtime`: what [`App::run`] does: queue consumption, handler tasks,
//!   the ordered publisher, replies, leases, hand-back of a dead app-node's
//!   events, and shutdown in that order backwards.
//! - `socket`: [`Socket`], [`Emitter`] and [`Ack`], which turn into commands.
//! - `presence`: cluster-wide `fetch_sockets`, `sockets_join`,
//!   `sockets_leave` and `disconnect_sockets` on any [`Emitter`] selection,
//!   read from the io-nodes' ledgers; [`RemoteSocket`].
//! - `payload`: [`Payload`], event arguments as JSON text plus attachments,
//!   and [`FromPayload`] for typed handler arguments.
//! - [`config`]: [`AppConfig`], the shared flags [`AppArgs`], logging.
//! - `stats`: the metrics an app-node exports, described and present from
//!   the start.

mod app;
pub mod config;
mod error;
mod namespace;
mod payload;
mod presence;
mod runtime;
mod socket;
mod stats;

pub use app::{App, Io};
pub use config::{AppArgs, AppConfig};
pub use error::AppError;
pub use iocluster_protocol::envelope::Handshake;
pub use namespace::{Namespace, Reject};
pub use payload::{FromPayload, Payload, PayloadError};
pub use presence::{DEFAULT_TIMEOUT as PRESENCE_TIMEOUT, PresenceError, RemoteSocket};
pub use socket::{Ack, EmitError, Emitter, Socket};

/// Resolves on SIGINT or SIGTERM: pass it to [`App::run`].
pub use iocluster_ops::shutdown_signal;
