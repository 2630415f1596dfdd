//! A Socket.IO v4 client (Engine.IO v4 over WebSocket), built on the
//! `iocluster-protocol` codecs. iocluster's tests use it as the Rust client;
//! the load generator will too, so it keeps one task per connection and
//! shares nothing between connections.
//!
//! - [`Client`]: one Engine.IO connection. Its task answers pings, notices a
//!   silent server, reassembles binary packets and routes packets to sockets.
//! - [`Socket`]: one namespace on a client: emit (with or without ack and
//!   attachments), receive events, acknowledge, disconnect.
//!
//! The modules: `client` connects (and holds [`ClientOptions`]), `socket`
//! is the namespace handle, `connection` the task that owns the WebSocket,
//! `shared` the routing state those two share (and what it delivers), and
//! `error` the errors.
//!
//! ```no_run
//! # async fn demo() -> Result<(), iocluster_client::ClientError> {
//! let client = iocluster_client::Client::connect("http://127.0.0.1:3000", Default::default()).await?;
//! let socket = client.socket("/", Some(serde_json::json!({"token": "t"}))).await?;
//! socket.emit("hello", vec![serde_json::json!(1)])?;
//! let event = socket.recv_event(std::time::Duration::from_secs(5)).await?;
//! println!("{} {:?}", event.name, event.args);
//! # Ok(()) }
//! ```

mod client;
mod connection;
mod error;
mod shared;
mod socket;

pub use client::{Client, ClientOptions, tcp_connect};
pub use error::{ClientError, ConnectError};
pub use shared::{AckArgs, Incoming, Received};
pub use socket::{Socket, placeholder};
