//! The ordered publisher: the one task that writes the app-node's publish
//! queue to Redis, in queue order, many items per round trip.
//!
//! It owns the receiving end of the queue, the planning of a batch into
//! messages ([`Flush::plan`], pure), the Redis calls that carry a plan out
//! (the flush script of `iocluster_protocol::scripts`, reloaded after a
//! `NOSCRIPT`), retries, and the last flush at shutdown ([`Publisher::finish`]).
//! What goes into the queue, and when, is the handles' business (`socket`)
//! and the dispatcher's (a `done` after its handlers).
//!
//! Ordering: the queue is the only way commands leave an app-node, and this
//! task writes a batch only after the previous one was written, so every
//! recipient sees one app-node's commands in the order they were queued, and
//! a handler's commands before its `done`.

use std::future::Future;
use std::time::Duration;

use iocluster_protocol::scripts;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::is_noscript;
use crate::socket::Publish;

/// Publishes waiting to be written before emits report `Overloaded`.
pub(crate) const PUBLISH_QUEUE: usize = 65_536;
/// Most publishes written in one round trip, and the bytes after which a
/// flush takes no more.
const PUBLISH_BATCH: usize = 512;
const PUBLISH_BATCH_BYTES: usize = 1 << 20;
/// How long, once shutdown asked for the last flush, a flush that Redis
/// refuses is retried. What is still unwritten then is lost as in a crash:
/// its commands never go out, and its events, still in the in-flight list,
/// are handed back (by this app-node if Redis comes back for the hand-back,
/// else by another one when the lease lapses).
const FINAL_FLUSH_RETRIES: Duration = Duration::from_secs(10);

/// [`scripts::FLUSH`] with its hash, computed once.
fn flush_script() -> &'static redis::Script {
    static SCRIPT: std::sync::LazyLock<redis::Script> =
        std::sync::LazyLock::new(|| redis::Script::new(scripts::FLUSH));
    &SCRIPT
}

/// Where flushes go: Redis when serving, a recorder in tests.
pub(crate) trait Sink {
    /// Writes one flush. An error means it may not have run: it is sent
    /// again (a `done` in it is published at most once all the same, since
    /// it goes out only with its event's removal from the in-flight list).
    fn write(&mut self, flush: &Flush<'_>) -> impl Future<Output = redis::RedisResult<()>> + Send;
}

/// The Redis [`Sink`]: one pipeline per flush.
pub(crate) struct RedisSink {
    pub(crate) redis: iocluster_ops::Redis,
    pub(crate) inflight_key: String,
}

impl Sink for RedisSink {
    async fn write(&mut self, flush: &Flush<'_>) -> redis::RedisResult<()> {
        let pipe = flush.pipeline(&self.inflight_key);
        match pipe.query_async::<()>(&mut self.redis).await {
            Err(error) if is_noscript(&error) => {
                // A Redis that restarted (or flushed its scripts): nothing
                // of the flush ran. Load the script and send it again.
                flush_script()
                    .prepare_invoke()
                    .load_async(&mut self.redis)
                    .await?;
                pipe.query_async(&mut self.redis).await
            }
            result => result,
        }
    }
}

/// The running publisher task.
pub(crate) struct Publisher {
    task: JoinHandle<()>,
    /// Cancelled by [`Publisher::finish`]: the task closes the queue to new
    /// items, writes what it holds, and ends.
    finish: CancellationToken,
}

impl Publisher {
    pub(crate) fn spawn<S: Sink + Send + 'static>(
        sink: S,
        queue: mpsc::Receiver<Publish>,
    ) -> Publisher {
        let finish = CancellationToken::new();
        let task = tokio::spawn(publish(sink, queue, finish.clone()));
        Publisher { task, finish }
    }

    /// The last flush: closes the queue (later emits fail with `Closed`),
    /// writes everything queued before, in order, and returns once it is
    /// written (or, with Redis refusing, after [`FINAL_FLUSH_RETRIES`]).
    ///
    /// The queue cannot end by its senders going away, as mini-redis's
    /// does: every [`Io`](crate::Io) handle holds one, and the application
    /// may keep those past `run`. So the receiving end closes it instead.
    pub(crate) async fn finish(self) {
        self.finish.cancel();
        if let Err(error) = self.task.await {
            tracing::error!(%error, "the publisher failed");
        }
    }
}

/// Writes the publish queue to its sink in order, many per round trip, until
/// `finish` and then the queue is empty.
async fn publish<S: Sink>(
    mut sink: S,
    mut queue: mpsc::Receiver<Publish>,
    finish: CancellationToken,
) {
    let mut batch = Vec::with_capacity(PUBLISH_BATCH);
    let mut closed = false;
    loop {
        let first = if closed {
            queue.recv().await
        } else {
            tokio::select! {
                first = queue.recv() => first,
                () = finish.cancelled() => {
                    // No more items: what is queued now is the last of it,
                    // and `recv` hands it out before saying the queue ended.
                    queue.close();
                    closed = true;
                    continue;
                }
            }
        };
        let Some(first) = first else { break };
        let mut bytes = first.len();
        batch.push(first);
        while batch.len() < PUBLISH_BATCH && bytes < PUBLISH_BATCH_BYTES {
            match queue.try_recv() {
                Ok(item) => {
                    bytes += item.len();
                    batch.push(item);
                }
                Err(_) => break,
            }
        }
        let flush = Flush::plan(&batch);
        let mut backoff = iocluster_ops::Backoff::new(iocluster_ops::EVENT_PATH_RETRY);
        let mut outage = iocluster_ops::Outage::new("publisher");
        let mut give_up_at: Option<Instant> = None;
        while let Err(error) = sink.write(&flush).await {
            if finish.is_cancelled() {
                let deadline =
                    *give_up_at.get_or_insert_with(|| Instant::now() + FINAL_FLUSH_RETRIES);
                if Instant::now() >= deadline {
                    tracing::error!(%error, items = batch.len(), "cannot publish at shutdown: giving up; the events go back to the queue");
                    break;
                }
            }
            metrics::counter!("iocluster_redis_errors_total", "task" => "publisher").increment(1);
            outage.failed("cannot publish", &error);
            backoff.wait().await;
        }
        outage.recovered();
        drop(flush);
        batch.clear();
    }
}

/// One flush of the publish queue: consecutive items for the same channel
/// become one message (their envelopes back to back), so order holds for
/// every recipient while a handler's commands and its `done` cost one
/// `PUBLISH`.
#[derive(Debug, PartialEq)]
pub(crate) struct Flush<'a> {
    messages: Vec<Message<'a>>,
}

/// `(event, envelope)`: with an event, the envelope is a `done` that goes out
/// only if the event is still in this app-node's in-flight list; with a mark
/// (`#…`, never the first byte of an event), an emit retained in a recovery
/// log.
type Part<'a> = (Option<&'a [u8]>, &'a [u8]);

/// One message of a flush; `channel` is empty for in-flight removals that
/// publish nothing (undecodable events).
#[derive(Debug, PartialEq)]
struct Message<'a> {
    channel: &'a str,
    parts: Vec<Part<'a>>,
}

impl<'a> Flush<'a> {
    fn plan(batch: &'a [Publish]) -> Flush<'a> {
        let mut messages: Vec<Message<'a>> = Vec::new();
        for item in batch {
            let (channel, part) = match item {
                Publish::Command { channel, payload } => (channel.as_str(), (None, &payload[..])),
                Publish::Done {
                    raw,
                    channel,
                    payload,
                } => (channel.as_str(), (Some(&raw[..]), &payload[..])),
                Publish::Discard { raw } => ("", (Some(&raw[..]), &[][..])),
                // The flush script tells a retained emit by its mark's `#`.
                Publish::Retained {
                    mark,
                    channel,
                    payload,
                } => (channel.as_str(), (Some(&mark[..]), &payload[..])),
            };
            match messages.last_mut() {
                Some(last) if last.channel == channel => last.parts.push(part),
                _ => messages.push(Message {
                    channel,
                    parts: vec![part],
                }),
            }
        }
        Flush { messages }
    }

    /// Whether the flush needs the script: something leaves the in-flight
    /// list (a `done` or a discard) or goes into a recovery log.
    fn removes(&self) -> bool {
        self.messages
            .iter()
            .any(|message| message.parts.iter().any(|(raw, _)| raw.is_some()))
    }

    /// Plain `PUBLISH`es when nothing leaves the in-flight list, else the
    /// whole flush as one [`scripts::FLUSH`] call.
    fn pipeline(&self, inflight_key: &str) -> redis::Pipeline {
        let mut pipe = redis::pipe();
        if !self.removes() {
            for message in &self.messages {
                let payload: Vec<u8> = message
                    .parts
                    .iter()
                    .flat_map(|(_, b)| b.iter().copied())
                    .collect();
                pipe.cmd("PUBLISH")
                    .arg(message.channel)
                    .arg(payload)
                    .ignore();
            }
            return pipe;
        }
        // EVALSHA: Redis would hash the script's text on every EVAL. After a
        // Redis restart it answers NOSCRIPT, having run nothing, and the
        // publisher loads the script and sends the flush again.
        let cmd = pipe
            .cmd("EVALSHA")
            .arg(flush_script().get_hash())
            .arg(1)
            .arg(inflight_key);
        for message in &self.messages {
            cmd.arg(message.channel).arg(message.parts.len());
            for (raw, bytes) in &message.parts {
                cmd.arg(raw.unwrap_or_default()).arg(*bytes);
            }
        }
        cmd.ignore();
        pipe
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    pub(crate) fn command(channel: &str, payload: &[u8]) -> Publish {
        Publish::Command {
            channel: channel.into(),
            payload: payload.to_vec(),
        }
    }

    pub(crate) fn done(raw: &[u8], channel: &str, payload: &[u8]) -> Publish {
        Publish::Done {
            raw: raw.to_vec(),
            channel: channel.into(),
            payload: payload.to_vec(),
        }
    }

    /// A message as `channel: part, part`, a part as `event>envelope` or
    /// `envelope`: short enough to compare whole flushes.
    fn describe(flush: &Flush<'_>) -> Vec<String> {
        let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
        flush
            .messages
            .iter()
            .map(|message| {
                let parts: Vec<String> = message
                    .parts
                    .iter()
                    .map(|(raw, envelope)| match raw {
                        Some(raw) => format!("{}>{}", text(raw), text(envelope)),
                        None => text(envelope),
                    })
                    .collect();
                format!("{}: {}", message.channel, parts.join(", "))
            })
            .collect()
    }

    /// A [`Sink`] that records every flush it was given and fails the
    /// first `failures` writes.
    #[derive(Clone, Default)]
    pub(crate) struct Recorder {
        pub(crate) written: Arc<Mutex<Vec<String>>>,
        pub(crate) failures: Arc<Mutex<usize>>,
    }

    impl Recorder {
        pub(crate) fn written(&self) -> Vec<String> {
            self.written.lock().unwrap().clone()
        }
    }

    impl Sink for Recorder {
        async fn write(&mut self, flush: &Flush<'_>) -> redis::RedisResult<()> {
            {
                let mut failures = self.failures.lock().unwrap();
                if *failures > 0 {
                    *failures -= 1;
                    return Err(redis::RedisError::from(std::io::Error::from(
                        std::io::ErrorKind::ConnectionReset,
                    )));
                }
            }
            // A round trip, so that items queue up meanwhile.
            tokio::time::sleep(Duration::from_millis(1)).await;
            self.written.lock().unwrap().extend(describe(flush));
            Ok(())
        }
    }

    #[test]
    fn a_flush_joins_consecutive_items_for_one_channel_and_keeps_order() {
        let batch = [
            command("n1", b"ack1"),
            done(b"ev1", "n1", b"done1"),
            command("room", b"emit"),
            done(b"ev2", "n2", b"done2"),
            Publish::Discard {
                raw: b"bad".to_vec(),
            },
            done(b"ev3", "n1", b"done3"),
            command("n1", b"late"),
        ];
        let flush = Flush::plan(&batch);
        let shape: Vec<(&str, Vec<Part>)> = flush
            .messages
            .iter()
            .map(|m| (m.channel, m.parts.clone()))
            .collect();
        assert_eq!(
            shape,
            vec![
                (
                    "n1",
                    vec![(None, &b"ack1"[..]), (Some(&b"ev1"[..]), &b"done1"[..])]
                ),
                ("room", vec![(None, &b"emit"[..])]),
                ("n2", vec![(Some(&b"ev2"[..]), &b"done2"[..])]),
                ("", vec![(Some(&b"bad"[..]), &b""[..])]),
                (
                    "n1",
                    vec![(Some(&b"ev3"[..]), &b"done3"[..]), (None, &b"late"[..])]
                ),
            ]
        );
    }

    #[test]
    fn only_a_flush_that_removes_events_needs_the_script() {
        let commands = [command("n1", b"a"), command("room", b"b")];
        assert!(!Flush::plan(&commands).removes());
        let with_done = [command("n1", b"a"), done(b"ev", "n1", b"d")];
        assert!(Flush::plan(&with_done).removes());
        let discard = [Publish::Discard { raw: b"x".to_vec() }];
        assert!(Flush::plan(&discard).removes());
    }

    #[tokio::test(start_paused = true)]
    async fn finishing_writes_everything_queued_in_order_then_refuses_more() {
        let recorder = Recorder::default();
        *recorder.failures.lock().unwrap() = 2;
        let (sender, queue) = mpsc::channel(16);
        let publisher = Publisher::spawn(recorder.clone(), queue);
        for i in 0..5 {
            let raw = format!("ev{i}");
            sender.send(command("n1", b"ack")).await.unwrap();
            sender
                .send(done(raw.as_bytes(), "n1", b"done"))
                .await
                .unwrap();
        }
        publisher.finish().await;
        let written = recorder.written().join("\n");
        let expected = (0..5)
            .map(|i| format!("ack, ev{i}>done"))
            .collect::<Vec<_>>()
            .join(", ");
        // However the batches fell, the parts come in queue order.
        let parts: Vec<&str> = written
            .lines()
            .map(|line| line.strip_prefix("n1: ").unwrap())
            .collect();
        assert_eq!(parts.join(", "), expected);
        assert!(matches!(
            sender.try_send(command("n1", b"late")),
            Err(mpsc::error::TrySendError::Closed(_))
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn the_last_flush_gives_up_on_a_redis_that_keeps_refusing() {
        let recorder = Recorder::default();
        *recorder.failures.lock().unwrap() = usize::MAX;
        let (sender, queue) = mpsc::channel(16);
        let publisher = Publisher::spawn(recorder.clone(), queue);
        sender.send(done(b"ev", "n1", b"done")).await.unwrap();
        let started = Instant::now();
        publisher.finish().await;
        assert!(started.elapsed() >= FINAL_FLUSH_RETRIES);
        assert!(started.elapsed() < FINAL_FLUSH_RETRIES + Duration::from_secs(3));
        assert!(recorder.written().is_empty());
    }
}
