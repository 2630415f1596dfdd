//! Running events: a queue item's handlers, one event after another on one
//! [`Socket`], under the handler timeout and with panics caught, then the
//! `done` that finishes the item; and [`Running`] / [`Finished`], which
//! start handler tasks and let shutdown wait for them.
//!
//! It leaves to others where items come from (`taker`) and how commands and
//! `done`s reach Redis (`publisher`): it only puts them on the ordered publish
//! queue, the handlers' commands first, then the `done`.

use std::collections::HashMap;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use iocluster_protocol::envelope::{self, Command, Event, EventKind};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::namespace::{Namespace, Reject, SessionHandler};
use crate::payload::Payload;
use crate::socket::{Ack, Ctx, Publish, Socket};

/// The application's handlers, as [`App`](crate::App) collected them.
pub(crate) struct Handlers {
    pub(crate) namespaces: HashMap<String, Namespace>,
    pub(crate) on_new_session: Option<SessionHandler>,
}

/// Starts handler tasks. Each holds a clone of `complete` until it ends,
/// as mini-redis's connection handlers hold `shutdown_complete_tx`: once
/// every [`Running`] is dropped (the taker's, at its end), [`Finished`] sees
/// the channel close when the last handler ends.
#[derive(Clone)]
pub(crate) struct Running {
    complete: mpsc::Sender<()>,
    /// Cancelled when the grace period runs out: every handler still running
    /// is dropped at its next `.await`.
    abandon: CancellationToken,
}

/// Waits for the handlers [`Running`] started.
pub(crate) struct Finished {
    complete: mpsc::Receiver<()>,
    abandon: CancellationToken,
}

/// A way to start handlers, and one to wait for them all.
pub(crate) fn running() -> (Running, Finished) {
    let (complete, receiver) = mpsc::channel(1);
    let abandon = CancellationToken::new();
    (
        Running {
            complete,
            abandon: abandon.clone(),
        },
        Finished {
            complete: receiver,
            abandon,
        },
    )
}

impl Running {
    /// Runs `work` (one item's handlers and its `done`) as a task of its own.
    pub(crate) fn spawn(&self, work: impl Future<Output = ()> + Send + 'static) {
        let complete = self.complete.clone();
        let abandon = self.abandon.clone();
        tokio::spawn(async move {
            abandon.run_until_cancelled(work).await;
            drop(complete);
        });
    }
}

impl Finished {
    /// Waits for every handler started to end, until `deadline`; then drops
    /// those still running (their events stay in the in-flight list, to be
    /// handed back). Returns once none runs, so everything they queued is on
    /// the publish queue; `false` if some were dropped. Every [`Running`]
    /// must be gone by then, or this waits for the deadline.
    pub(crate) async fn wait(mut self, deadline: Instant) -> bool {
        // `recv` only ever returns `None`: no one sends on it.
        if tokio::time::timeout_at(deadline, self.complete.recv())
            .await
            .is_ok()
        {
            return true;
        }
        tracing::warn!(
            handlers = self.complete.sender_strong_count(),
            "shutdown grace period ran out with handlers still running: their events go back to the queue"
        );
        self.abandon.cancel();
        self.complete.recv().await;
        false
    }
}

/// What runs an event: the application's handlers and what they need.
pub(crate) struct Dispatcher {
    ctx: Arc<Ctx>,
    handlers: Handlers,
    handler_timeout: Duration,
}

impl Dispatcher {
    pub(crate) fn new(ctx: Arc<Ctx>, handlers: Handlers, handler_timeout: Duration) -> Dispatcher {
        Dispatcher {
            ctx,
            handlers,
            handler_timeout,
        }
    }

    /// The namespaces the application serves.
    pub(crate) fn namespaces(&self) -> impl Iterator<Item = &String> {
        self.handlers.namespaces.keys()
    }

    /// Handles one queue item: one event, or several of one socket (an
    /// io-node sends the `message` events that piled up behind a socket's
    /// previous item together). They run in order on one [`Socket`], so each
    /// handler sees the joins, leaves and data of the handlers before it,
    /// just as the next item's snapshot would. A `done` for the last event of
    /// each socket finishes the item.
    ///
    /// `partition`: the partition of the event queue it was taken from,
    /// where its `done` removes it (and with which every command its
    /// handlers issue goes out).
    pub(crate) async fn handle(&self, raw: Vec<u8>, partition: u16) {
        // Boxed: the item's future is large (the handlers' futures are in
        // it), and every layer that wraps it by value copies it, once per
        // event (measured: the app-node's `memmove` went from 14 % to 21 %
        // of its CPU when the task-local scope was added unboxed).
        crate::socket::in_partition(partition, Box::pin(self.handle_item(raw, partition))).await
    }

    async fn handle_item(&self, raw: Vec<u8>, partition: u16) {
        let events = match Event::decode_all(&raw) {
            Ok(events) => events,
            Err(error) => {
                tracing::error!(%error, "undecodable event discarded");
                let _ = self
                    .ctx
                    .publisher
                    .send(Publish::Discard { raw, partition })
                    .await;
                return;
            }
        };
        let mut raw = Some(raw);
        let mut events = events.into_iter().peekable();
        let mut socket: Option<Socket> = None;
        while let Some(event) = events.next() {
            let handle = match socket.take() {
                Some(socket) if socket.id() == event.sid && socket.nsp() == event.nsp => socket,
                _ => Socket::from_event(&event, self.ctx.clone()),
            };
            let span = tracing::debug_span!(
                "event",
                sid = %event.sid,
                nsp = %event.nsp,
                seq = event.seq,
                kind = ?event.kind,
            );
            let reject = self
                .handle_event(&event, handle.clone())
                .instrument(span)
                .await;
            let next = events.peek();
            if next.is_some_and(|next| next.sid == event.sid && next.nsp == event.nsp) {
                socket = Some(handle);
                continue;
            }
            let done = Command::Done(envelope::Done {
                nsp: event.nsp,
                sid: event.sid,
                seq: event.seq,
                reject: reject.map(|reject| envelope::Reject {
                    message: reject.message,
                    data: reject.data.map(|data| data.to_string()),
                }),
                app: Some(self.ctx.instance.clone()),
            });
            let channel = self.ctx.keys.node_channel(&event.node);
            let payload = done.encode();
            let publish = if next.is_some() {
                Publish::Command {
                    channel,
                    payload,
                    partition,
                }
            } else {
                // The item leaves the in-flight list with its last done.
                Publish::Done {
                    raw: raw.take().unwrap_or_default(),
                    channel,
                    payload,
                    partition,
                }
            };
            let _ = self.ctx.publisher.send(publish).await;
        }
    }

    /// Runs one event's handlers under the handler timeout, catching panics;
    /// for a connection, returns the refusal, if any.
    async fn handle_event(&self, event: &Event, socket: Socket) -> Option<Reject> {
        let kind = event.kind.as_str();
        let started = std::time::Instant::now();
        let work = self.run_handlers(event, socket);
        let reject =
            match tokio::time::timeout(self.handler_timeout, AssertUnwindSafe(work).catch_unwind())
                .await
            {
                Ok(Ok(reject)) => reject,
                Ok(Err(_)) => {
                    tracing::error!(sid = %event.sid, kind = ?event.kind, "handler panicked");
                    (event.kind == EventKind::Connect).then(|| Reject::new("Internal error"))
                }
                Err(_) => {
                    tracing::error!(sid = %event.sid, kind = ?event.kind, "handler timed out");
                    (event.kind == EventKind::Connect).then(|| Reject::new("Internal error"))
                }
            };
        metrics::histogram!("iocluster_handler_seconds", "kind" => kind)
            .record(started.elapsed().as_secs_f64());
        metrics::counter!("iocluster_events_handled_total", "kind" => kind).increment(1);
        reject
    }

    /// Runs the application's handlers for one event; for a connection,
    /// returns the refusal, if any.
    async fn run_handlers(&self, event: &Event, socket: Socket) -> Option<Reject> {
        let namespace = self.handlers.namespaces.get(&event.nsp);
        // A message of a socket no earlier item of which this run of the
        // app-node finished (the io-node lists those that did).
        let new_session = event.kind == EventKind::Message
            && !event.seen.iter().any(|app| *app == self.ctx.instance);
        let Some(namespace) = namespace else {
            tracing::debug!(nsp = %event.nsp, "event for a namespace this application does not serve");
            return (event.kind == EventKind::Connect).then(|| Reject::new("Invalid namespace"));
        };
        if new_session && let Some(hook) = &self.handlers.on_new_session {
            hook(socket.clone()).await;
        }
        match event.kind {
            EventKind::Connect => match &namespace.on_connection {
                Some(handler) => handler(socket).await.err(),
                None => None,
            },
            EventKind::Message => {
                let bin = event
                    .bin
                    .iter()
                    .map(|b| bytes::Bytes::copy_from_slice(b))
                    .collect();
                let (name, payload) =
                    match Payload::from_event(event.data.as_deref().unwrap_or("[]"), bin) {
                        Ok(parsed) => parsed,
                        Err(error) => {
                            tracing::warn!(%error, "malformed event data");
                            return None;
                        }
                    };
                let ack = event.ack.map(|id| Ack {
                    ctx: self.ctx.clone(),
                    node: event.node.clone(),
                    nsp: event.nsp.clone(),
                    sid: event.sid.clone(),
                    id,
                });
                if let Some(handler) = namespace.events.get(&name) {
                    handler(socket, payload, ack).await;
                } else if let Some(handler) = &namespace.on_any {
                    handler(socket, name, payload, ack).await;
                } else {
                    tracing::debug!(event = %name, "no handler");
                }
                None
            }
            EventKind::Disconnect => {
                if let Some(handler) = &namespace.on_disconnect {
                    handler(socket, event.reason.clone().unwrap_or_default()).await;
                }
                None
            }
        }
    }
}
