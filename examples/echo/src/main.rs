//! The Socket.IO protocol reference behaviour, as an iocluster app-node.
//!
//! Run it beside io-nodes on the same Redis and prefix:
//!
//! ```text
//! cargo run -p iocluster-example-echo -- --redis redis://127.0.0.1:6379
//! ```
//!
//! - on connection, emits `auth` with the handshake's auth payload (`{}` if none);
//! - `message` is answered with `message-back` and the same arguments;
//! - `message-with-ack` is acknowledged with the same arguments;
//! - namespace `/custom` also emits `auth`; any other namespace is refused.

use clap::Parser;
use iocluster_app::{App, AppArgs, Payload, Reject, Socket};

#[derive(Parser)]
#[command(
    name = "iocluster-example-echo",
    version,
    about = "Echo app-node: the Socket.IO reference behaviour"
)]
struct Args {
    #[command(flatten)]
    app: AppArgs,
}

async fn emit_auth(socket: Socket) -> Result<(), Reject> {
    let auth = socket
        .handshake()
        .auth
        .clone()
        .unwrap_or_else(|| "{}".to_owned());
    socket
        .emit_payload("auth", &Payload::from_raw(format!("[{auth}]"), Vec::new()))
        .map_err(|error| Reject::new(error.to_string()))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    args.app.init_tracing();
    let config = args.app.config()?;

    let mut app = App::new(config);
    app.namespace("/", |ns| {
        ns.on_connection(emit_auth);
        ns.on("message", |socket, payload: Payload, _ack| async move {
            if let Err(error) = socket.emit_payload("message-back", &payload) {
                tracing::warn!(%error, "cannot echo");
            }
        });
        ns.on(
            "message-with-ack",
            |_socket, payload: Payload, ack| async move {
                if let Some(ack) = ack
                    && let Err(error) = ack.send_payload(&payload)
                {
                    tracing::warn!(%error, "cannot acknowledge");
                }
            },
        );
    });
    app.namespace("/custom", |ns| {
        ns.on_connection(emit_auth);
    });
    app.run(iocluster_app::shutdown_signal()).await?;
    Ok(())
}
