//! An app-node for the cluster tests: each SDK feature behind an event, and
//! counters in Redis (`<prefix>:test:*`) so tests can check what ran where.
//!
//! Run by the tests (`tests/src/lib.rs`); by hand:
//! `iocluster-test-app --redis redis://127.0.0.1:6379 --prefix test`.
//!
//! Namespaces `/` and `/other`. Connection: `auth.reject` refuses with that
//! message (and `auth.rejectData`); `auth.rooms` are joined; `auth.data` becomes
//! the socket's data; then `welcome` `{sid, app}` is emitted. Events:
//! `echo` (emits `echo` back with the same arguments and attachments), `ack`
//! (acknowledged with the same arguments), `join`/`leave` (room; ack), `toRoom`
//! `{rooms, sids, event, data, except}`, `broadcast` `{event, data}`, `all`
//! `{event, data}`, `slow` (ms; ack: app id), `state` (ack: `{rooms, data}`),
//! `append` (n: appends n to the socket data list), `ask` `{event, data}` (emits
//! with ack to the client; acks with the client's answer), `flood` ({room,
//! count, size}: that many `blob` events to the room), `kick`, `close`;
//! presence, cluster-wide, on a selection `{room, sid, except, timeoutMs}`
//! of the socket's namespace: `fetch` (ack: `{sockets}`), `socketsJoin` /
//! `socketsLeave` (`rooms`), `disconnectSockets` (`close`) (ack: `{count}`;
//! failures ack `{error}`).
//! Every handled event is counted in `test:handled` (hash field = app id) and
//! every message event's `seq` recorded per socket; disconnects go to the
//! list `test:disconnects` as `sid reason`; sockets met for the first time
//! after their connection go to `test:new_sessions` as `app sid`.

use std::time::Duration;

use clap::Parser;
use iocluster_app::{App, AppArgs, Payload, Reject, Socket};
use serde::Deserialize;
use serde_json::{Value, json};

#[derive(Parser)]
#[command(
    name = "iocluster-test-app",
    version,
    about = "App-node used by the iocluster cluster tests"
)]
struct Args {
    #[command(flatten)]
    app: AppArgs,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct Auth {
    reject: Option<String>,
    reject_data: Option<Value>,
    #[serde(default)]
    rooms: Vec<String>,
    data: Option<Value>,
}

#[derive(Deserialize)]
struct Flood {
    room: String,
    count: usize,
    size: usize,
}

#[derive(Deserialize)]
struct ToRoom {
    #[serde(default)]
    rooms: Vec<String>,
    #[serde(default)]
    sids: Vec<String>,
    event: String,
    data: Value,
    except: Option<String>,
}

/// A presence selection: `room` (else the whole namespace), `sid`,
/// `except` (a room), a `timeoutMs`; `rooms` and `close` for the actions.
#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct Select {
    room: Option<String>,
    sid: Option<String>,
    except: Option<String>,
    timeout_ms: Option<u64>,
    #[serde(default)]
    rooms: Vec<String>,
    #[serde(default)]
    close: bool,
}

impl Select {
    fn emitter(&self, socket: &Socket) -> iocluster_app::Emitter {
        let mut emitter = socket.of(socket.nsp());
        if let Some(room) = &self.room {
            emitter = emitter.to(room.clone());
        }
        if let Some(sid) = &self.sid {
            emitter = emitter.to_socket(sid.clone());
        }
        if let Some(except) = &self.except {
            emitter = emitter.except(except.clone());
        }
        if let Some(ms) = self.timeout_ms {
            emitter = emitter.timeout(Duration::from_millis(ms));
        }
        emitter
    }
}

#[derive(Deserialize)]
struct Named {
    event: String,
    data: Value,
}

#[derive(Clone)]
struct Counters {
    redis: iocluster_ops::Redis,
    prefix: String,
    app: String,
}

impl Counters {
    async fn handled(&self) {
        let mut redis = self.redis.clone();
        let _: redis::RedisResult<()> = redis::cmd("HINCRBY")
            .arg(format!("{}:test:handled", self.prefix))
            .arg(&self.app)
            .arg(1)
            .query_async(&mut redis)
            .await;
    }

    async fn new_session(&self, sid: &str) {
        let mut redis = self.redis.clone();
        let _: redis::RedisResult<()> = redis::cmd("RPUSH")
            .arg(format!("{}:test:new_sessions", self.prefix))
            .arg(format!("{} {sid}", self.app))
            .query_async(&mut redis)
            .await;
    }

    async fn disconnected(&self, sid: &str, reason: &str) {
        let mut redis = self.redis.clone();
        let _: redis::RedisResult<()> = redis::cmd("RPUSH")
            .arg(format!("{}:test:disconnects", self.prefix))
            .arg(format!("{sid} {reason}"))
            .query_async(&mut redis)
            .await;
    }
}

fn setup(ns: &mut iocluster_app::Namespace, counters: Counters) {
    let c = counters.clone();
    ns.on_connection(move |socket: Socket| {
        let c = c.clone();
        async move {
            c.handled().await;
            let auth: Auth = socket.auth().unwrap_or_default();
            if let Some(message) = auth.reject {
                let mut reject = Reject::new(message);
                if let Some(data) = auth.reject_data {
                    reject = reject.with_data(data);
                }
                return Err(reject);
            }
            if !auth.rooms.is_empty() {
                socket
                    .join_many(auth.rooms)
                    .await
                    .map_err(|e| Reject::new(e.to_string()))?;
            }
            if let Some(data) = auth.data {
                socket
                    .set_data(&data)
                    .map_err(|e| Reject::new(e.to_string()))?;
            }
            socket
                .emit("welcome", &json!({ "sid": socket.id(), "app": c.app }))
                .map_err(|e| Reject::new(e.to_string()))?;
            Ok(())
        }
    });
    let c = counters.clone();
    ns.on_any(move |socket: Socket, name: String, payload: Payload, ack| {
        let c = c.clone();
        async move {
            c.handled().await;
            if name == "ack" {
                // Acknowledge with the very same arguments.
                if let Some(ack) = ack {
                    let _ = ack.send_payload(&payload);
                }
                return;
            }
            let reply = move |value: Value| {
                if let Some(ack) = ack {
                    let _ = ack.send(&value);
                }
            };
            match name.as_str() {
                "echo" => {
                    // Acknowledge with the very same arguments.
                    let _ = socket.emit_payload("echo", &payload);
                    reply(Value::Null);
                }
                "join" => {
                    let room: String = payload.arg(0).ok().flatten().unwrap_or_default();
                    let ok = socket.join(room).await.is_ok();
                    reply(json!(ok));
                }
                "leave" => {
                    let room: String = payload.arg(0).ok().flatten().unwrap_or_default();
                    reply(json!(socket.leave(&room).is_ok()));
                }
                "toRoom" => {
                    if let Ok(Some(to)) = payload.arg::<ToRoom>(0) {
                        let mut emitter = socket.of(socket.nsp());
                        for room in to.rooms {
                            emitter = emitter.to(room);
                        }
                        for sid in to.sids {
                            emitter = emitter.to_socket(sid);
                        }
                        if let Some(except) = to.except {
                            emitter = emitter.except(except);
                        }
                        let _ = emitter.emit(&to.event, &to.data);
                    }
                    reply(json!(true));
                }
                "broadcast" => {
                    if let Ok(Some(named)) = payload.arg::<Named>(0) {
                        let _ = socket.broadcast().emit(&named.event, &named.data);
                    }
                    reply(json!(true));
                }
                "all" => {
                    if let Ok(Some(named)) = payload.arg::<Named>(0) {
                        let _ = socket.of(socket.nsp()).emit(&named.event, &named.data);
                    }
                    reply(json!(true));
                }
                "slow" => {
                    let ms: u64 = payload.arg(0).ok().flatten().unwrap_or(0);
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                    reply(json!(c.app));
                }
                "state" => {
                    reply(json!({ "rooms": socket.rooms(), "data": socket.data::<Value>() }));
                }
                "append" => {
                    let n: Value = payload.arg(0).ok().flatten().unwrap_or(Value::Null);
                    let mut list: Vec<Value> = socket.data::<Vec<Value>>().unwrap_or_default();
                    list.push(n);
                    let _ = socket.set_data(&list);
                    reply(json!(list.len()));
                }
                "ask" => {
                    if let Ok(Some(named)) = payload.arg::<Named>(0) {
                        let answer = socket
                            .emit_with_ack(&named.event, &named.data, Duration::from_secs(3))
                            .await;
                        match answer {
                            Ok(answer) => {
                                reply(json!({ "answer": answer.values().unwrap_or_default() }))
                            }
                            Err(error) => reply(json!({ "error": error.to_string() })),
                        }
                    }
                }
                "flood" => {
                    // {room, count, size}: that many `blob` events of `size`
                    // bytes to the room, as fast as the cluster takes them.
                    if let Ok(Some(flood)) = payload.arg::<Flood>(0) {
                        let blob = "x".repeat(flood.size);
                        let emitter = socket.of(socket.nsp()).to(flood.room);
                        for n in 0..flood.count {
                            let _ = emitter.emit("blob", &json!({ "n": n, "blob": blob }));
                        }
                    }
                    reply(json!(true));
                }
                "fetch" => {
                    // {room?, sid?, except?, timeoutMs?}: the sockets of this
                    // namespace, on every io-node (presence).
                    let select: Select = payload.arg(0).ok().flatten().unwrap_or_default();
                    let emitter = select.emitter(&socket);
                    match emitter.fetch_sockets().await {
                        Ok(sockets) => {
                            let list: Vec<Value> = sockets
                                .iter()
                                .map(|s| {
                                    json!({
                                        "id": s.id(),
                                        "nsp": s.nsp(),
                                        "node": s.node(),
                                        "rooms": s.rooms(),
                                        "user": s.user(),
                                        "data": s.data::<Value>(),
                                        "address": s.handshake().address,
                                    })
                                })
                                .collect();
                            reply(json!({ "sockets": list }));
                        }
                        Err(error) => reply(json!({ "error": error.to_string() })),
                    }
                }
                "socketsJoin" | "socketsLeave" | "disconnectSockets" => {
                    // {room?, sid?, except?, rooms, close, timeoutMs?}
                    let select: Select = payload.arg(0).ok().flatten().unwrap_or_default();
                    let emitter = select.emitter(&socket);
                    let done = match name.as_str() {
                        "socketsJoin" => emitter.sockets_join(select.rooms.clone()).await,
                        "socketsLeave" => emitter.sockets_leave(select.rooms.clone()).await,
                        _ => emitter.disconnect_sockets(select.close).await,
                    };
                    match done {
                        Ok(count) => reply(json!({ "count": count })),
                        Err(error) => reply(json!({ "error": error.to_string() })),
                    }
                }
                "kick" => {
                    let _ = socket.disconnect();
                }
                "close" => {
                    let _ = socket.close();
                }
                other => tracing::debug!(event = other, "unknown test event"),
            }
        }
    });
    let c = counters;
    ns.on_disconnect(move |socket: Socket, reason: String| {
        let c = c.clone();
        async move {
            c.handled().await;
            c.disconnected(socket.id(), &reason).await;
        }
    });
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    args.app.init_tracing();
    let config = args.app.config()?;
    let client = iocluster_ops::redis_client(config.redis.as_str())?;
    let counters = Counters {
        redis: client.connection(Some(Duration::from_millis(500))).await?,
        prefix: client.key_prefix(&config.prefix),
        app: config.app_id.clone(),
    };
    let mut app = App::new(config);
    app.namespace("/", |ns| setup(ns, counters.clone()));
    app.namespace("/other", |ns| setup(ns, counters.clone()));
    app.on_new_session(move |socket: Socket| {
        let counters = counters.clone();
        async move { counters.new_session(socket.id()).await }
    });
    app.run(iocluster_app::shutdown_signal()).await?;
    Ok(())
}
