//! A multi-room chat: the classic Socket.IO chat, made cluster-wide. Clients on
//! any io-node talk to each other; any app-node handles any event.
//!
//! Run it beside io-nodes on the same Redis and prefix:
//!
//! ```text
//! cargo run -p iocluster-example-chat -- --redis redis://127.0.0.1:6379
//! ```
//!
//! Protocol (namespace `/`):
//! - connect with `auth: { nickname }` (1 to 32 characters), else refused;
//! - `join` (room, ack) → the room hears `user joined` `{nickname, room}`;
//!   ack `{room, ok: true}`; then the room, the newcomer included, hears
//!   `members` `{room, members, total, complete, version}` (see `members.rs`);
//! - `leave` (room) → the room hears `user left` `{nickname, room}`, then
//!   `members`;
//! - `message` `{room, text}` (ack) → everyone in the room, sender included,
//!   gets `message` `{room, nickname, text, at}`; ack `{ok}`;
//! - `typing` `{room, typing}` → the rest of the room gets `typing`
//!   `{room, nickname, typing}`;
//! - on disconnect, every room the user was in hears `user left`, then
//!   `members`.
//!
//! Member lists live in Redis under `<prefix>:chat:members:<room>` (the
//! chat's own keys, beside the cluster's); everything else is stateless.

mod members;

use clap::Parser;
use iocluster_app::{App, AppArgs, Reject, Socket};
use members::Rooms;
use serde::{Deserialize, Serialize};
use serde_json::json;

#[derive(Parser)]
#[command(
    name = "iocluster-example-chat",
    version,
    about = "Chat app-node: multi-room chat across the cluster"
)]
struct Args {
    #[command(flatten)]
    app: AppArgs,
}

#[derive(Deserialize)]
struct Auth {
    nickname: String,
}

#[derive(Serialize, Deserialize)]
struct Profile {
    nickname: String,
}

#[derive(Deserialize)]
struct Message {
    room: String,
    text: String,
}

#[derive(Deserialize)]
struct Typing {
    room: String,
    typing: bool,
}

const MAX_TEXT: usize = 2000;

fn nickname(socket: &Socket) -> String {
    socket
        .data::<Profile>()
        .map(|p| p.nickname)
        .unwrap_or_else(|| "anonymous".into())
}

fn valid_room(room: &str) -> bool {
    !room.is_empty() && room.len() <= 64
}

/// Tells `room` who is in it after a change (a failed change is logged: the
/// lists catch up with the room's next change).
fn announce(socket: &Socket, room: &str, change: redis::RedisResult<members::Members>) {
    match change {
        Ok(members) => {
            let _ = socket.of("/").to(room.to_owned()).emit("members", &members);
        }
        Err(error) => tracing::warn!(%error, room, "cannot update the member list"),
    }
}

/// Rooms of the chat (not the cluster's own `$` rooms).
fn chat_rooms(socket: &Socket) -> impl Iterator<Item = String> {
    socket
        .rooms()
        .into_iter()
        .filter(|room| !room.starts_with('$'))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    args.app.init_tracing();
    let config = args.app.config()?;
    let client = iocluster_ops::redis_client(&config.redis)?;
    iocluster_ops::wait_for_redis(&client, config.redis_start_timeout).await?;
    let redis = client
        .connection(Some(std::time::Duration::from_secs(10)))
        .await?;
    let rooms = Rooms::new(redis, &client.key_prefix(&config.prefix));
    let (on_join, on_leave, on_gone) = (rooms.clone(), rooms.clone(), rooms);

    let mut app = App::new(config);
    app.namespace("/", move |ns| {
        ns.on_connection(|socket| async move {
            let Some(Auth { nickname }) = socket.auth::<Auth>() else {
                return Err(Reject::new("nickname required"));
            };
            let nickname = nickname.trim().to_owned();
            if nickname.is_empty() || nickname.chars().count() > 32 {
                return Err(Reject::new("nickname must be 1 to 32 characters"));
            }
            socket.set_data(&Profile { nickname }).map_err(|e| Reject::new(e.to_string()))?;
            Ok(())
        });
        ns.on("join", move |socket, room: String, ack| {
            let rooms = on_join.clone();
            async move {
            if !valid_room(&room) {
                if let Some(ack) = ack {
                    let _ = ack.send(&json!({ "room": room, "ok": false, "error": "invalid room" }));
                }
                return;
            }
            if let Err(error) = socket.join(room.clone()).await {
                tracing::warn!(%error, "join failed");
                if let Some(ack) = ack {
                    let _ = ack.send(&json!({ "room": room, "ok": false, "error": "try again" }));
                }
                return;
            }
            let name = nickname(&socket);
            let _ = socket.to(room.clone()).emit("user joined", &json!({ "nickname": name, "room": room }));
            if let Some(ack) = ack {
                let _ = ack.send(&json!({ "room": room, "ok": true }));
            }
            announce(&socket, &room, rooms.add(&room, socket.id(), &name).await);
            }
        });
        ns.on("leave", move |socket, room: String, _ack| {
            let rooms = on_leave.clone();
            async move {
            if socket.rooms().contains(&room) {
                let _ = socket.leave(&room);
                let _ = socket.to(room.clone()).emit("user left", &json!({ "nickname": nickname(&socket), "room": room }));
                announce(&socket, &room, rooms.remove(&room, socket.id()).await);
            }
            }
        });
        ns.on("message", |socket, message: Message, ack| async move {
            let ok = socket.rooms().contains(&message.room) && message.text.len() <= MAX_TEXT;
            if ok {
                let _ = socket.of("/").to(message.room.clone()).emit(
                    "message",
                    &json!({ "room": message.room, "nickname": nickname(&socket), "text": message.text, "at": iocluster_ops::unix_ms() }),
                );
            }
            if let Some(ack) = ack {
                let _ = ack.send(&json!({ "ok": ok }));
            }
        });
        ns.on("typing", |socket, typing: Typing, _ack| async move {
            if socket.rooms().contains(&typing.room) {
                let _ = socket.to(typing.room.clone()).emit(
                    "typing",
                    &json!({ "room": typing.room, "nickname": nickname(&socket), "typing": typing.typing }),
                );
            }
        });
        ns.on_disconnect(move |socket, _reason| {
            let rooms = on_gone.clone();
            async move {
            let name = nickname(&socket);
            for room in chat_rooms(&socket) {
                let _ = socket.to(room.clone()).emit("user left", &json!({ "nickname": name, "room": room }));
                announce(&socket, &room, rooms.remove(&room, socket.id()).await);
            }
            }
        });
    });
    app.run(iocluster_app::shutdown_signal()).await?;
    Ok(())
}
