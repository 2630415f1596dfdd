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
//! a handler's commands before its `done`. With a partitioned event queue
//! (docs/PROTOCOL.md, "Partitions"), a batch is written as one flush per
//! partition, at once: order holds within a partition (a handler's commands
//! go with its `done`), not between the commands of items of different
//! partitions in one batch, whose handlers ran concurrently anyway.

use std::borrow::Cow;
use std::collections::HashMap;
use std::future::Future;
use std::time::Duration;

use iocluster_protocol::keys::{Keys, Partition};
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

/// [`scripts::flush_sharded`] with its hash, computed once.
fn flush_sharded_script() -> &'static redis::Script {
    static SCRIPT: std::sync::LazyLock<redis::Script> =
        std::sync::LazyLock::new(|| redis::Script::new(&scripts::flush_sharded()));
    &SCRIPT
}

/// Where flushes go: Redis when serving, a recorder in tests.
pub(crate) trait Sink {
    /// Writes one flush. An error means it may not have run: it is sent
    /// again (a `done` in it is published at most once all the same, since
    /// it goes out only with its event's removal from the in-flight list).
    fn write(&mut self, flush: &Flush<'_>) -> impl Future<Output = redis::RedisResult<()>> + Send;
}

/// The Redis [`Sink`]: one pipeline per flush and partition; on a Redis
/// Cluster with room messages or partitions, a few more steps
/// ([`RedisSink::write_sharded`]).
pub(crate) struct RedisSink {
    pub(crate) redis: iocluster_ops::Redis,
    /// This app-node's id: its in-flight lists are named after it.
    pub(crate) app_id: String,
    /// To tell sharded room channels (on a Redis Cluster) from the others.
    pub(crate) keys: Keys,
}

impl Sink for RedisSink {
    async fn write(&mut self, flush: &Flush<'_>) -> redis::RedisResult<()> {
        // On a Redis Cluster the flush script runs in its partition's slot:
        // it can neither `SPUBLISH` a room's or the broadcast channel nor,
        // outside the prefix's slot, add to a recovery log.
        if self.keys.sharded_rooms() {
            return self.write_sharded(flush).await;
        }
        self.write_partitions(flush).await
    }
}

impl RedisSink {
    /// Each partition's part of a flush, at once ([`Flush::by_partition`]).
    async fn write_partitions(&mut self, flush: &Flush<'_>) -> redis::RedisResult<()> {
        // The usual case, and the only one with one partition: no split.
        if let Some(k) = flush.single_partition() {
            let (pipe, script) = partition_pipeline(&self.keys, &self.app_id, k, flush);
            return write_pipeline(&mut self.redis, pipe, script).await;
        }
        let parts = flush.by_partition();
        let writes = parts.iter().map(|(k, part)| {
            let mut redis = self.redis.clone();
            let (pipe, script) = partition_pipeline(&self.keys, &self.app_id, *k, part);
            async move { write_pipeline(&mut redis, pipe, script).await }
        });
        futures_util::future::try_join_all(writes).await?;
        Ok(())
    }

    /// A flush with messages for sharded room channels (a Redis Cluster):
    /// the flush script runs in the prefix's slot and cannot publish on
    /// them. So, in order: the retained emits go into their logs
    /// ([`iocluster_ops::log_retained`], once each, so every copy carries
    /// the same offset); each room message is `SPUBLISH`ed on its room's
    /// master (all at once: they are for different rooms, or in queue
    /// order on one connection); and, once they are all published, the
    /// rest as one flush, so a handler's room emits still go out before its
    /// `done`. A retry sends it all again (at least once, as for any
    /// flush that fails half way).
    async fn write_sharded(&mut self, flush: &Flush<'_>) -> redis::RedisResult<()> {
        let retained = flush.retained();
        let logged =
            iocluster_ops::log_retained(&mut self.redis, &self.keys.events(), &retained.list)
                .await?;
        let (rooms, rest) = flush.shard(&self.keys, &retained, &logged);
        let publishes = rooms.iter().map(|message| {
            let mut redis = self.redis.clone();
            let command = redis::cmd(self.keys.publish_command(message.channel))
                .arg(message.channel)
                .arg(message.payload())
                .to_owned();
            async move { command.query_async::<()>(&mut redis).await }
        });
        futures_util::future::try_join_all(publishes).await?;
        if rest.messages.is_empty() {
            return Ok(());
        }
        self.write_partitions(&rest).await
    }
}

/// The pipeline that writes partition `k`'s part of a flush for app-node
/// `app_id`, and the script it calls. On a Redis Cluster a partition
/// publishes its node channels' messages sharded in its own slot
/// (`P:n:<node>` for the first, `Q:n:<node>` for the others: `SPUBLISH`),
/// where its flush script runs.
fn partition_pipeline(
    keys: &Keys,
    app_id: &str,
    k: u16,
    part: &Flush<'_>,
) -> (redis::Pipeline, &'static redis::Script) {
    let partition = keys.partition(k);
    let inflight = partition.inflight(app_id);
    if !keys.sharded_rooms() {
        let pipe = part.pipeline(&inflight, flush_script(), "PUBLISH", None);
        return (pipe, flush_script());
    }
    let rename = (k > 0).then_some((keys, &partition));
    let script = flush_sharded_script();
    (part.pipeline(&inflight, script, "SPUBLISH", rename), script)
}

/// Sends one flush's pipeline, which calls `script`.
async fn write_pipeline(
    redis: &mut iocluster_ops::Redis,
    pipe: redis::Pipeline,
    script: &redis::Script,
) -> redis::RedisResult<()> {
    match pipe.query_async::<()>(redis).await {
        Err(error) if is_noscript(&error) => {
            // A Redis that restarted (or flushed its scripts): nothing of
            // the flush ran. Load the script and send it again.
            script.prepare_invoke().load_async(redis).await?;
            pipe.query_async(redis).await
        }
        result => result,
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

/// The retained emits of a flush, `(mark, envelope)`, each once: in order,
/// and where each is in that order.
#[derive(Default)]
struct Retained<'a> {
    list: Vec<(&'a [u8], &'a [u8])>,
    index: HashMap<(&'a [u8], &'a [u8]), usize>,
}

/// One message of a flush; `channel` is empty for in-flight removals that
/// publish nothing (undecodable events). `partition`: the partition of the
/// queue its parts were issued for.
#[derive(Debug, PartialEq, Clone)]
struct Message<'a> {
    channel: &'a str,
    parts: Vec<Part<'a>>,
    partition: u16,
}

impl Message<'_> {
    /// The envelopes back to back, as published when nothing is removed.
    fn payload(&self) -> Vec<u8> {
        self.parts
            .iter()
            .flat_map(|(_, b)| b.iter().copied())
            .collect()
    }
}

impl<'a> Flush<'a> {
    fn plan(batch: &'a [Publish]) -> Flush<'a> {
        let mut messages: Vec<Message<'a>> = Vec::new();
        for item in batch {
            let (channel, part, partition) = match item {
                Publish::Command {
                    channel,
                    payload,
                    partition,
                } => (channel.as_str(), (None, &payload[..]), *partition),
                Publish::Done {
                    raw,
                    channel,
                    payload,
                    partition,
                } => (channel.as_str(), (Some(&raw[..]), &payload[..]), *partition),
                Publish::Discard { raw, partition } => ("", (Some(&raw[..]), &[][..]), *partition),
                // The flush script tells a retained emit by its mark's `#`.
                Publish::Retained {
                    mark,
                    channel,
                    payload,
                    partition,
                } => (
                    channel.as_str(),
                    (Some(&mark[..]), &payload[..]),
                    *partition,
                ),
            };
            match messages.last_mut() {
                Some(last) if last.channel == channel && last.partition == partition => {
                    last.parts.push(part)
                }
                _ => messages.push(Message {
                    channel,
                    parts: vec![part],
                    partition,
                }),
            }
        }
        Flush { messages }
    }

    /// The partition of every message, if they all have the same one.
    fn single_partition(&self) -> Option<u16> {
        let first = self.messages.first().map_or(0, |m| m.partition);
        self.messages
            .iter()
            .all(|m| m.partition == first)
            .then_some(first)
    }

    /// The flush split by partition, in order within each; the partitions
    /// in the order they first appear.
    fn by_partition(&self) -> Vec<(u16, Flush<'a>)> {
        let mut parts: Vec<(u16, Flush<'a>)> = Vec::new();
        for message in &self.messages {
            match parts.iter_mut().find(|(k, _)| *k == message.partition) {
                // Consecutive in its partition, for the same channel: one
                // message, as the plan would have made it.
                Some((_, part)) => match part.messages.last_mut() {
                    Some(last) if last.channel == message.channel => {
                        last.parts.extend(message.parts.iter().copied())
                    }
                    _ => part.messages.push(message.clone()),
                },
                None => parts.push((
                    message.partition,
                    Flush {
                        messages: vec![message.clone()],
                    },
                )),
            }
        }
        parts
    }

    /// The retained emits of the flush, each `(mark, envelope)` once, in
    /// order.
    fn retained(&self) -> Retained<'a> {
        let mut retained = Retained::default();
        for &(raw, envelope) in self.messages.iter().flat_map(|m| m.parts.iter()) {
            if let Some(mark) = raw.filter(|raw| raw.first() == Some(&b'#')) {
                let next = retained.list.len();
                if *retained.index.entry((mark, envelope)).or_insert(next) == next {
                    retained.list.push((mark, envelope));
                }
            }
        }
        retained
    }

    /// Splits the flush for sharded room channels: the room messages, to
    /// `SPUBLISH` one by one, and the rest, one flush; every retained emit
    /// (`retained[i]`) replaced by what publishes it (`logged[i]`: its
    /// `offset` envelope and itself), so neither needs the flush script's
    /// log.
    fn shard<'b>(
        &'b self,
        keys: &Keys,
        retained: &Retained<'_>,
        logged: &'b [Vec<u8>],
    ) -> (Vec<Message<'b>>, Flush<'b>) {
        let (rooms, rest) = self
            .messages
            .iter()
            .map(|message| Message {
                channel: message.channel,
                partition: message.partition,
                parts: message
                    .parts
                    .iter()
                    .map(|&(raw, envelope)| {
                        let logged = raw
                            .and_then(|raw| retained.index.get(&(raw, envelope)))
                            .and_then(|&i| logged.get(i));
                        match logged {
                            Some(message) => (None, &message[..]),
                            None => (raw, envelope),
                        }
                    })
                    .collect(),
            })
            // Outside the flush script: whatever is not a node channel
            // (rooms, the broadcast channel), which a partition's script on
            // a Redis Cluster would publish from the wrong slot.
            .partition(|message| {
                !message.channel.is_empty() && keys.parse_node_channel(message.channel).is_none()
            });
        (rooms, Flush { messages: rest })
    }

    /// Whether the flush needs the script: something leaves the in-flight
    /// list (a `done` or a discard) or goes into a recovery log.
    fn removes(&self) -> bool {
        self.messages
            .iter()
            .any(|message| message.parts.iter().any(|(raw, _)| raw.is_some()))
    }

    /// Plain `publish`es (`PUBLISH` or `SPUBLISH`) when nothing leaves the
    /// in-flight list, else the whole flush as one call of `script` (the
    /// flush script, or its sharded kind); with `rename`, node channels as
    /// the partition's.
    fn pipeline(
        &self,
        inflight_key: &str,
        script: &redis::Script,
        publish: &str,
        rename: Option<(&Keys, &Partition)>,
    ) -> redis::Pipeline {
        // A node channel of `keys` as the partition's own (`Q:n:<node>`).
        let channel = |channel: &'a str| -> Cow<'a, str> {
            match rename.and_then(|(keys, partition)| {
                keys.parse_node_channel(channel)
                    .map(|node| partition.node_channel(node))
            }) {
                Some(renamed) => Cow::Owned(renamed),
                None => Cow::Borrowed(channel),
            }
        };
        let mut pipe = redis::pipe();
        if !self.removes() {
            for message in &self.messages {
                pipe.cmd(publish)
                    .arg(channel(message.channel))
                    .arg(message.payload())
                    .ignore();
            }
            return pipe;
        }
        // EVALSHA: Redis would hash the script's text on every EVAL. After a
        // Redis restart it answers NOSCRIPT, having run nothing, and the
        // publisher loads the script and sends the flush again.
        let cmd = pipe
            .cmd("EVALSHA")
            .arg(script.get_hash())
            .arg(1)
            .arg(inflight_key);
        for message in &self.messages {
            cmd.arg(channel(message.channel).as_ref())
                .arg(message.parts.len());
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
            partition: 0,
        }
    }

    pub(crate) fn done(raw: &[u8], channel: &str, payload: &[u8]) -> Publish {
        done_in(0, raw, channel, payload)
    }

    pub(crate) fn done_in(partition: u16, raw: &[u8], channel: &str, payload: &[u8]) -> Publish {
        Publish::Done {
            raw: raw.to_vec(),
            channel: channel.into(),
            payload: payload.to_vec(),
            partition,
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
                partition: 0,
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
    fn on_a_redis_cluster_room_messages_go_apart_and_retained_emits_carry_their_log_ids() {
        let keys = Keys::sharded("{p}");
        let room = keys.room_channel("/", "r");
        let node = keys.node_channel("n1");
        let retained = |channel: &str, payload: &[u8]| Publish::Retained {
            mark: b"#10#60000#{p}:log:/"[..].into(),
            channel: channel.into(),
            payload: payload.to_vec(),
            partition: 0,
        };
        let batch = [
            command(&room, b"plain"),
            retained(&room, b"kept"),
            done(b"ev1", &node, b"done1"),
            // The same emit routed to a socket's node too: logged once.
            retained(&node, b"kept"),
            retained(&room, b"other"),
        ];
        let flush = Flush::plan(&batch);
        let retained = flush.retained();
        assert_eq!(
            retained.list,
            vec![
                (&b"#10#60000#{p}:log:/"[..], &b"kept"[..]),
                (&b"#10#60000#{p}:log:/"[..], &b"other"[..])
            ]
        );
        let logged = vec![b"@1 kept".to_vec(), b"@2 other".to_vec()];
        let (rooms, rest) = flush.shard(&keys, &retained, &logged);
        let rooms: Vec<(&str, Vec<u8>)> = rooms.iter().map(|m| (m.channel, m.payload())).collect();
        assert_eq!(
            rooms,
            vec![
                (room.as_str(), b"plain@1 kept".to_vec()),
                (room.as_str(), b"@2 other".to_vec())
            ]
        );
        assert_eq!(describe(&rest), vec![format!("{node}: ev1>done1, @1 kept")]);
        // The broadcast channel goes apart too (a partition's script may
        // run in another slot), node channels and discards stay.
        let all = keys.all_channel();
        let batch = [
            command(&all, b"everyone"),
            done(b"ev1", &node, b"done1"),
            Publish::Discard {
                raw: b"bad".to_vec(),
                partition: 0,
            },
        ];
        let flush = Flush::plan(&batch);
        let (apart, rest) = flush.shard(&keys, &flush.retained(), &[]);
        assert_eq!(
            apart.iter().map(|m| m.channel).collect::<Vec<_>>(),
            [all.as_str()]
        );
        assert_eq!(rest.messages.len(), 2);
    }

    #[test]
    fn a_flush_splits_by_partition_keeping_each_handlers_commands_with_its_done() {
        let in_partition = |k, channel: &str, payload: &[u8]| Publish::Command {
            channel: channel.into(),
            payload: payload.to_vec(),
            partition: k,
        };
        let batch = [
            in_partition(2, "n1", b"ack-a"),
            in_partition(0, "n1", b"timer"),
            in_partition(5, "n1", b"ack-b"),
            done_in(2, b"ev-a", "n1", b"done-a"),
            done_in(5, b"ev-b", "n1", b"done-b"),
            in_partition(2, "n2", b"emit"),
        ];
        let flush = Flush::plan(&batch);
        let parts: Vec<(u16, Vec<String>)> = flush
            .by_partition()
            .iter()
            .map(|(k, part)| (*k, describe(part)))
            .collect();
        assert_eq!(
            parts,
            vec![
                (
                    2,
                    vec!["n1: ack-a, ev-a>done-a".to_owned(), "n2: emit".to_owned()]
                ),
                (0, vec!["n1: timer".to_owned()]),
                (5, vec!["n1: ack-b, ev-b>done-b".to_owned()]),
            ]
        );
    }

    /// Each command of a pipeline as text.
    fn commands(pipe: &redis::Pipeline) -> Vec<Vec<String>> {
        iocluster_ops::pipeline_text(pipe)
    }

    #[test]
    fn on_a_redis_cluster_a_partition_publishes_sharded_in_its_own_slot() {
        let keys = Keys::sharded("{p}");
        let node = keys.node_channel("n1");
        let batch = [
            Publish::Command {
                channel: node.clone(),
                payload: b"ack".to_vec(),
                partition: 3,
            },
            done_in(3, b"ev", &node, b"done"),
        ];
        let flush = Flush::plan(&batch);
        let (pipe, script) = partition_pipeline(&keys, "app", 3, &flush);
        assert_eq!(script.get_hash(), flush_sharded_script().get_hash());
        assert_eq!(
            commands(&pipe),
            [[
                "EVALSHA",
                flush_sharded_script().get_hash(),
                "1",
                "{p:3}:inflight:app",
                "{p:3}:n:n1",
                "2",
                "",
                "ack",
                "ev",
                "done"
            ]]
        );
        // Partition 0 publishes on the node's own channel, sharded too.
        let (pipe, script) = partition_pipeline(&keys, "app", 0, &flush);
        assert_eq!(script.get_hash(), flush_sharded_script().get_hash());
        assert_eq!(commands(&pipe)[0][3..5], ["{p}:inflight:app", "{p}:n:n1"]);
        let (pipe, _) = partition_pipeline(&keys, "app", 0, &Flush::plan(&batch[..1]));
        assert_eq!(commands(&pipe), [["SPUBLISH", "{p}:n:n1", "ack"]]);
        // On one Redis every partition publishes on the classic channel.
        let plain = Keys::new("p");
        let (pipe, _) = partition_pipeline(&plain, "app", 3, &Flush::plan(&batch[..1]));
        assert_eq!(commands(&pipe), [["PUBLISH", "{p}:n:n1", "ack"]]);
    }

    #[test]
    fn only_a_flush_that_removes_events_needs_the_script() {
        let commands = [command("n1", b"a"), command("room", b"b")];
        assert!(!Flush::plan(&commands).removes());
        let with_done = [command("n1", b"a"), done(b"ev", "n1", b"d")];
        assert!(Flush::plan(&with_done).removes());
        let discard = [Publish::Discard {
            raw: b"x".to_vec(),
            partition: 0,
        }];
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
