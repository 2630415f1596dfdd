//! The names of every Redis key and pub/sub channel, all under one prefix
//! (`iocluster` by default). docs/PROTOCOL.md lists them with their types.

/// Builds key and channel names under a prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keys {
    prefix: String,
    /// What room channels start with: the prefix, or, with sharded rooms,
    /// the prefix without its hash tag's braces.
    rooms: String,
    sharded: bool,
}

impl Keys {
    pub fn new(prefix: impl Into<String>) -> Keys {
        let prefix = prefix.into();
        Keys {
            rooms: prefix.clone(),
            prefix,
            sharded: false,
        }
    }

    /// Names for a Redis Cluster whose room channels are *sharded*
    /// (`SPUBLISH` / `SSUBSCRIBE`): `prefix` is the hash-tagged prefix
    /// every key uses (`{iocluster}`), and a room channel is named with
    /// the prefix's braces dropped (`iocluster:r:/,lobby`), so that each
    /// room hashes to a slot of its own and rooms spread over the masters.
    pub fn sharded(prefix: impl Into<String>) -> Keys {
        let prefix = prefix.into();
        Keys {
            rooms: prefix.replace(['{', '}'], ""),
            prefix,
            sharded: true,
        }
    }

    /// Whether room channels are sharded ([`Keys::sharded`]).
    pub fn sharded_rooms(&self) -> bool {
        self.sharded
    }

    /// Whether `channel` is published with `SPUBLISH` rather than
    /// `PUBLISH`: on a Redis Cluster ([`Keys::sharded`]) a room channel, a
    /// node channel (`P:n:<node>`, or a partition's), or the broadcast
    /// channel. The app-nodes' reply channels, the relay channels and the
    /// event tail stay classic.
    pub fn is_sharded(&self, channel: &str) -> bool {
        self.sharded
            && (self.parse_room_channel(channel).is_some()
                || self.parse_node_channel(channel).is_some()
                || self.partition_node_channel(channel).is_some()
                || channel == self.all_channel())
    }

    /// The io-node of a node channel of this prefix (`P:n:<node>`), or
    /// `None` for any other name.
    pub fn parse_node_channel<'a>(&self, channel: &'a str) -> Option<&'a str> {
        channel
            .strip_prefix(self.prefix.as_str())?
            .strip_prefix(":n:")
    }

    /// The partition and io-node of a partition's node channel
    /// ([`Partition::node_channel`], `k ≥ 1`), or `None`.
    pub fn partition_node_channel<'a>(&self, channel: &'a str) -> Option<(u16, &'a str)> {
        let (head, tail) = match hash_tag_end(&self.prefix) {
            Some(end) => self.prefix.split_at(end),
            None => (self.prefix.as_str(), ""),
        };
        let rest = channel.strip_prefix(head)?.strip_prefix(':')?;
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        let k: u16 = rest[..digits].parse().ok().filter(|k| *k > 0)?;
        let node = rest[digits..].strip_prefix(tail)?.strip_prefix(":n:")?;
        (self.partition(k).node_channel(node) == channel).then_some((k, node))
    }

    /// The command that publishes on `channel`: `SPUBLISH` or `PUBLISH`.
    pub fn publish_command(&self, channel: &str) -> &'static str {
        if self.is_sharded(channel) {
            "SPUBLISH"
        } else {
            "PUBLISH"
        }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    fn join(&self, parts: &[&str]) -> String {
        let mut key = String::with_capacity(
            self.prefix.len() + parts.iter().map(|p| p.len() + 1).sum::<usize>(),
        );
        key.push_str(&self.prefix);
        for part in parts {
            key.push(':');
            key.push_str(part);
        }
        key
    }

    /// List: the event queue. io-nodes `LPUSH`, app-nodes move from the right.
    pub fn events(&self) -> String {
        self.join(&["events"])
    }

    /// List: the events an app-node took from the queue and has not finished.
    pub fn inflight(&self, app: &str) -> String {
        self.join(&["inflight", app])
    }

    /// Sorted set with one member, `count`, scored by the number of
    /// partitions the event queue has (docs/PROTOCOL.md, "Partitions"):
    /// io-nodes raise it (`ZADD GT`) to their own count, app-nodes take
    /// from that many. Missing: one.
    pub fn partitions(&self) -> String {
        self.join(&["partitions"])
    }

    /// The names of partition `k` of the event queue. Partition 0 is the
    /// queue above (`P:events`, `P:inflight:<app>`); partition `k ≥ 1`
    /// lives under `P` with `:k` added inside its hash tag (`{iocluster:3}`
    /// for `{iocluster}`), so on a Redis Cluster each partition hashes to
    /// a slot of its own, or after it when `P` has no tag (`iocluster:3`).
    pub fn partition(&self, k: u16) -> Partition {
        if k == 0 {
            return Partition {
                base: self.prefix.clone(),
                k,
            };
        }
        let base = match hash_tag_end(&self.prefix) {
            Some(end) => format!("{}:{k}{}", &self.prefix[..end], &self.prefix[end..]),
            None => format!("{}:{k}", self.prefix),
        };
        Partition { base, k }
    }

    /// Sorted set: live app-nodes, scored by the time (ms) their lease ends.
    pub fn apps(&self) -> String {
        self.join(&["apps"])
    }

    /// Sorted set: served namespaces, scored by the time (ms) the last lease of
    /// an app-node serving them ends.
    pub fn namespaces(&self) -> String {
        self.join(&["nsps"])
    }

    /// Sorted set: live io-nodes, scored by the time (ms) their lease ends.
    pub fn nodes(&self) -> String {
        self.join(&["nodes"])
    }

    /// Hash: an io-node's details (`url`, `connections`, `started`).
    pub fn node_info(&self, node: &str) -> String {
        self.join(&["node", node])
    }

    /// Hash: an io-node's ledger, one field per open socket (its id), whose
    /// value is the socket's `disconnect` event envelope as the cluster would
    /// announce it if the node died. The event is announced once: by the
    /// node, or by whoever drains the ledger of a node found dead.
    pub fn ledger(&self, node: &str) -> String {
        self.join(&["sockets", node])
    }

    /// Set: the io-nodes that have a ledger (to find those of dead nodes).
    pub fn ledgers(&self) -> String {
        self.join(&["ledgers"])
    }

    /// String with a TTL: set when a dead io-node's ledger was drained, so
    /// that node, if it was alive after all, announces nothing twice.
    pub fn reaped(&self, node: &str) -> String {
        self.join(&["reaped", node])
    }

    /// Hash: namespaces with connection state recovery, the field's value
    /// the longest disconnection (ms) after which a client still recovers.
    /// Written by app-nodes with their lease.
    pub fn recovery(&self) -> String {
        self.join(&["recovery"])
    }

    /// String: the cluster's key for session ids (`pid`s), made once by
    /// the first io-node that needs it (`SET NX`).
    pub fn recovery_key(&self) -> String {
        self.join(&["recovery-key"])
    }

    /// Stream: the packets retained for connection state recovery in a
    /// namespace, each entry one `emit` envelope (field `e`); the entry id
    /// is the offset clients see.
    pub fn log(&self, nsp: &str) -> String {
        self.join(&["log", nsp])
    }

    /// String: a disconnected socket's parked session (its disconnect
    /// event envelope), until it recovers or [`Keys::parked`] says it is
    /// over.
    pub fn session(&self, sid: &str) -> String {
        self.join(&["session", sid])
    }

    /// Hash: socket id → the io-node holding it, for sockets recovered on
    /// another io-node than the one their id names.
    pub fn located(&self) -> String {
        self.join(&["where"])
    }

    /// Sorted set: parked sessions by socket id, scored by the time (ms)
    /// after which they can no longer recover.
    pub fn parked(&self) -> String {
        self.join(&["parked"])
    }

    /// Hash: a registered user credential (`secret` = hex SHA-256 of the
    /// user's secret, `created` ms); expires with the credential.
    pub fn user(&self, user: &str) -> String {
        self.join(&["user", user])
    }

    /// Channel: commands for clients of one io-node.
    pub fn node_channel(&self, node: &str) -> String {
        self.join(&["n", node])
    }

    /// Channel: relay envelopes for one io-node: requests for the sessions
    /// it holds, and answers to the requests it relayed
    /// ([`crate::envelope::relay`]).
    pub fn relay_channel(&self, node: &str) -> String {
        self.join(&["relay", node])
    }

    /// Channel: commands for every io-node (emits to a whole namespace).
    pub fn all_channel(&self) -> String {
        self.join(&["all"])
    }

    /// Channel: emits to one room. Namespaces cannot contain `,`, so the name is
    /// unambiguous whatever the room is called.
    pub fn room_channel(&self, nsp: &str, room: &str) -> String {
        let mut key = String::with_capacity(self.rooms.len() + nsp.len() + room.len() + 4);
        key.push_str(&self.rooms);
        key.push_str(":r:");
        key.push_str(nsp);
        key.push(',');
        key.push_str(room);
        key
    }

    /// The namespace and room of a room channel of this prefix, or `None`
    /// for any other name. The first `,` ends the namespace.
    pub fn parse_room_channel<'a>(&self, channel: &'a str) -> Option<(&'a str, &'a str)> {
        let rest = channel
            .strip_prefix(self.rooms.as_str())?
            .strip_prefix(":r:")?;
        rest.split_once(',')
    }

    /// Channel: sampled copies of the client events io-nodes queue, while
    /// [`Keys::tail_on`] exists (docs/PROTOCOL.md, "The event tail").
    pub fn tail(&self) -> String {
        self.join(&["tail"])
    }

    /// String with a short TTL: set by a frontend while an operator watches
    /// the event tail; io-nodes publish on [`Keys::tail`] only while it exists.
    pub fn tail_on(&self) -> String {
        self.join(&["tail", "on"])
    }

    /// Channel: replies for one app-node.
    pub fn app_channel(&self, app: &str) -> String {
        self.join(&["a", app])
    }
}

/// Where the first hash tag of `name` ends (the index of its `}`), if it
/// has one Redis Cluster would use: a `{` followed, later, by a `}` with
/// something between them.
fn hash_tag_end(name: &str) -> Option<usize> {
    let open = name.find('{')?;
    let close = open + 1 + name[open + 1..].find('}')?;
    (close > open + 1).then_some(close)
}

/// The keys of one partition of the event queue ([`Keys::partition`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partition {
    base: String,
    k: u16,
}

impl Partition {
    /// Its number.
    pub fn number(&self) -> u16 {
        self.k
    }

    /// List: the partition's events; io-nodes `LPUSH`, app-nodes move from
    /// the right.
    pub fn events(&self) -> String {
        format!("{}:events", self.base)
    }

    /// List: the events of this partition app-node `app` took and has not
    /// finished.
    pub fn inflight(&self, app: &str) -> String {
        format!("{}:inflight:{app}", self.base)
    }

    /// Channel (partitions `k ≥ 1`, on a Redis Cluster): the commands and
    /// `done`s for io-node `node` that items of this partition brought,
    /// sharded in the partition's slot, so that the flush script running
    /// there publishes them (`SPUBLISH`) in the same atomic step as it
    /// removes the items. Partition 0's is `P:n:<node>` (classic).
    pub fn node_channel(&self, node: &str) -> String {
        format!("{}:n:{node}", self.base)
    }

    /// String with a TTL (partitions `k ≥ 1`): app-node `app`'s lease, as
    /// seen in this partition's slot, so that handing back its events
    /// checks the lease in the same atomic step (`P:apps` is in another
    /// slot on a Redis Cluster).
    pub fn lease(&self, app: &str) -> String {
        format!("{}:lease:{app}", self.base)
    }
}

/// The partition of the event queue that takes the `message` events of
/// socket `sid` when there are `partitions` of them: FNV-1a (32 bits) of
/// the id's bytes, modulo the count. Any io-node must choose the same way
/// only for tidiness: order holds whatever the partition (an io-node has
/// one item of a socket in flight at a time).
pub fn partition_of(sid: &str, partitions: u16) -> u16 {
    if partitions <= 1 {
        return 0;
    }
    let mut hash: u32 = 0x811c_9dc5;
    for byte in sid.bytes() {
        hash ^= u32::from(byte);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    (hash % u32::from(partitions)) as u16
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        let keys = Keys::new("ioc");
        assert_eq!(keys.events(), "ioc:events");
        assert_eq!(keys.inflight("a1"), "ioc:inflight:a1");
        assert_eq!(keys.node_channel("n1"), "ioc:n:n1");
        assert_eq!(keys.room_channel("/chat", "a:b,c"), "ioc:r:/chat,a:b,c");
        assert_eq!(keys.all_channel(), "ioc:all");
        assert_eq!(keys.ledger("n1"), "ioc:sockets:n1");
        assert_eq!(keys.ledgers(), "ioc:ledgers");
        assert_eq!(keys.reaped("n1"), "ioc:reaped:n1");
        assert_eq!(keys.app_channel("a1"), "ioc:a:a1");
        assert_eq!(keys.tail(), "ioc:tail");
        assert_eq!(keys.tail_on(), "ioc:tail:on");
        assert!(!keys.sharded_rooms());
        assert_eq!(keys.publish_command("ioc:r:/,a"), "PUBLISH");
    }

    #[test]
    fn sharded_room_channels_leave_the_prefix_slot() {
        let keys = Keys::sharded("{ioc}");
        assert_eq!(keys.events(), "{ioc}:events");
        assert_eq!(keys.node_channel("n1"), "{ioc}:n:n1");
        assert_eq!(keys.room_channel("/", "lobby"), "ioc:r:/,lobby");
        assert_eq!(
            keys.parse_room_channel("ioc:r:/,lobby"),
            Some(("/", "lobby"))
        );
        assert_eq!(keys.parse_room_channel("{ioc}:r:/,lobby"), None);
        assert_eq!(keys.publish_command("ioc:r:/,lobby"), "SPUBLISH");
        assert_eq!(keys.publish_command("{ioc}:n:n1"), "SPUBLISH");
        assert_eq!(keys.publish_command("{ioc}:all"), "SPUBLISH");
        assert_eq!(keys.publish_command("{ioc}:a:app"), "PUBLISH");
        assert_eq!(keys.publish_command("{ioc}:relay:n1"), "PUBLISH");
        assert_eq!(keys.publish_command("{ioc}:tail"), "PUBLISH");
        let tagged = Keys::sharded("app:{ioc}");
        assert_eq!(tagged.room_channel("/", "x"), "app:ioc:r:/,x");
    }

    #[test]
    fn partition_zero_is_the_queue_and_the_others_get_a_slot_of_their_own() {
        let sharded = Keys::sharded("{ioc}");
        assert_eq!(sharded.partition(0).events(), sharded.events());
        assert_eq!(sharded.partition(0).inflight("a"), sharded.inflight("a"));
        assert_eq!(sharded.partition(3).events(), "{ioc:3}:events");
        assert_eq!(sharded.partition(3).inflight("a"), "{ioc:3}:inflight:a");
        assert_eq!(sharded.partition(3).lease("a"), "{ioc:3}:lease:a");
        assert_eq!(sharded.partition(3).number(), 3);
        assert_eq!(sharded.partition(3).node_channel("io1"), "{ioc:3}:n:io1");
        assert_eq!(
            sharded.partition_node_channel("{ioc:3}:n:io1"),
            Some((3, "io1"))
        );
        assert!(sharded.is_sharded("{ioc:3}:n:io1"));
        assert!(sharded.is_sharded("{ioc}:n:io1"));
        assert!(!Keys::new("ioc").is_sharded("ioc:n:io1"));
        assert_eq!(sharded.partition_node_channel("{ioc}:n:io1"), None);
        assert_eq!(sharded.partition_node_channel("{ioc:0}:n:io1"), None);
        assert_eq!(sharded.partition_node_channel("{ioc:3}:events"), None);
        assert_eq!(sharded.parse_node_channel("{ioc}:n:io1"), Some("io1"));
        assert_eq!(sharded.parse_node_channel("{ioc}:all"), None);
        let tagged = Keys::sharded("app:{ioc}x");
        assert_eq!(
            tagged.partition_node_channel(&tagged.partition(12).node_channel("a")),
            Some((12, "a"))
        );
        assert_eq!(
            Keys::sharded("app:{ioc}x").partition(2).events(),
            "app:{ioc:2}x:events"
        );
        let plain = Keys::new("ioc");
        assert_eq!(plain.partition(2).events(), "ioc:2:events");
        assert_eq!(plain.partitions(), "ioc:partitions");
        // `{}` is no hash tag: Redis Cluster hashes the whole name.
        assert_eq!(Keys::new("a{}b").partition(1).events(), "a{}b:1:events");
    }

    #[test]
    fn a_socket_keeps_its_partition_and_sockets_spread() {
        assert_eq!(partition_of("io1.abc", 1), 0);
        assert_eq!(partition_of("io1.abc", 0), 0);
        assert_eq!(partition_of("io1.abc", 8), partition_of("io1.abc", 8));
        // FNV-1a of "a" is 0xe40c292c.
        assert_eq!(partition_of("a", 1000), (0xe40c_292c_u32 % 1000) as u16);
        let mut counts = [0u32; 8];
        for i in 0..8000 {
            counts[partition_of(&format!("io1.s{i}"), 8) as usize] += 1;
        }
        assert!(
            counts.iter().all(|&n| (800..1200).contains(&n)),
            "{counts:?}"
        );
    }

    #[test]
    fn room_channels_parse_back() {
        let keys = Keys::new("ioc");
        let channel = keys.room_channel("/chat", "a:b,c");
        assert_eq!(keys.parse_room_channel(&channel), Some(("/chat", "a:b,c")));
        assert_eq!(keys.parse_room_channel("ioc:n:n1"), None);
        assert_eq!(keys.parse_room_channel("other:r:/,x"), None);
    }
}
