//! The benchmark contract as an iocluster app-node (every server under test
//! implements the same, see docs/BENCHMARKS.md):
//! - `join` (room) → joins the room, acks `true`;
//! - `echo` (any args) → acks with the same arguments;
//! - `bcast` ({room, payload}) → emits `tick` (payload) to the room.

use clap::Parser;
use iocluster_app::{App, AppArgs, Payload};
use serde::Deserialize;
use serde_json::Value;

/// jemalloc, as the io-node: less CPU per allocation than the system malloc.
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Parser)]
#[command(
    name = "iocluster-bench-app",
    version,
    about = "Benchmark contract app-node"
)]
struct Args {
    #[command(flatten)]
    app: AppArgs,
}

#[derive(Deserialize)]
struct Bcast {
    room: String,
    payload: Value,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    args.app.init_tracing();
    let mut app = App::new(args.app.config()?);
    app.namespace("/", |ns| {
        ns.on("join", |socket, room: String, ack| async move {
            let joined = socket.join(room).await.is_ok();
            if let Some(ack) = ack {
                let _ = ack.send(&joined);
            }
        });
        ns.on("echo", |_socket, payload: Payload, ack| async move {
            if let Some(ack) = ack {
                let _ = ack.send_payload(&payload);
            }
        });
        ns.on("bcast", |socket, bcast: Bcast, _ack| async move {
            if let Err(error) = socket.of("/").to(bcast.room).emit("tick", &bcast.payload) {
                tracing::warn!(%error, "cannot broadcast");
            }
        });
    });
    app.run(iocluster_app::shutdown_signal()).await?;
    Ok(())
}
