//! Presence: which sockets are connected, read from the io-nodes' ledgers.
//!
//! Every io-node keeps, for each socket it holds, an entry in its ledger
//! `P:sockets:<node>` (docs/PROTOCOL.md, "The ledger"): the socket's
//! `disconnect` event envelope with its current snapshot (namespace, rooms,
//! data, handshake), rewritten after every `join`, `leave` and `data`. That
//! makes the ledgers of the live io-nodes the cluster's list of connected
//! sockets, readable without asking any io-node. This module turns ledger
//! entries into [`SocketInfo`]s and plans the reading; the I/O (`SMEMBERS`,
//! `ZRANGE`, `HSCAN`, `HGET`) is the caller's, so the frontend's admin API
//! and the SDK read presence the same way:
//!
//! - [`live_ledger_nodes`]: the io-nodes to read (in `P:ledgers` with a lease
//!   in `P:nodes` that has not lapsed; a dead node's ledger is about to be
//!   drained, its sockets are gone);
//! - [`SocketScan`]: one page of sockets matching a [`Filter`], `HSCAN` by
//!   `HSCAN` over the nodes in id order, resumable from an opaque
//!   [`Cursor`], with a cap on items and on entries examined per page, so a
//!   request costs the same on a cluster of any size;
//! - [`Tally`]: sockets per room or per user, over a bounded number of
//!   entries.
//!
//! What it promises is what Redis' `SCAN` promises: a socket connected for
//! the whole walk is listed at least once; one that connects or leaves
//! meanwhile may or may not be; a socket may be listed twice when a ledger's
//! hash table is resized between two pages.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::envelope::{EnvelopeError, Event, Handshake};
use crate::ids;

/// Entries asked for per `HSCAN` (its `COUNT`, a hint to Redis).
pub const SCAN_COUNT: usize = 200;

/// Most entries one page of [`SocketScan`] examines, matching or not, when
/// the caller sets no other budget; past it the page ends early (fewer items,
/// even none) with a cursor to go on from.
pub const PAGE_BUDGET: usize = 5_000;

/// Most entries one [`Tally`] examines when the caller sets no other budget.
pub const TALLY_BUDGET: usize = 20_000;

/// Most distinct rooms (or users) a [`Tally`] counts; past it, it stops.
pub const TALLY_MAX_KEYS: usize = 50_000;

/// Longest cursor text accepted.
const MAX_CURSOR: usize = 512;

/// A ledger entry as `HSCAN` gives it: the socket id and the envelope.
pub type Entry = (String, Vec<u8>);

/// Why a ledger entry could not be read.
#[derive(Debug, thiserror::Error)]
pub enum PresenceError {
    #[error("undecodable ledger entry: {0}")]
    Undecodable(#[from] EnvelopeError),
    #[error("ledger entry {field:?} describes socket {sid:?}")]
    Mismatch { field: String, sid: String },
}

/// A connected socket, as its io-node's ledger describes it.
#[derive(Debug, Clone, PartialEq)]
pub struct SocketInfo {
    /// The socket id.
    pub sid: String,
    /// Its namespace.
    pub nsp: String,
    /// The io-node holding it (whose ledger lists it): commands for it go
    /// to `P:n:<node>`.
    pub node: String,
    /// The rooms it is in, its own id excluded; `$user:<id>` included.
    pub rooms: Vec<String>,
    /// Its data (JSON text) as last set by an app-node.
    pub data: Option<String>,
    /// What the client sent when it connected.
    pub handshake: Arc<Handshake>,
}

impl SocketInfo {
    /// Reads the entry `field` → `value` of `node`'s ledger. The entry must
    /// describe the socket it is filed under.
    pub fn from_ledger_entry(
        node: &str,
        field: &str,
        value: &[u8],
    ) -> Result<SocketInfo, PresenceError> {
        let event = Event::decode(value)?;
        if event.sid != field {
            return Err(PresenceError::Mismatch {
                field: field.to_owned(),
                sid: event.sid,
            });
        }
        Ok(SocketInfo {
            sid: event.sid,
            nsp: event.nsp,
            node: node.to_owned(),
            rooms: event.rooms,
            data: event.sdata,
            handshake: event.handshake,
        })
    }

    /// The user it was admitted as (its `$user:<id>` room), if any.
    pub fn user(&self) -> Option<&str> {
        ids::user_of(&self.rooms)
    }

    /// The client's address, `ip:port`.
    pub fn address(&self) -> &str {
        &self.handshake.address
    }

    /// When the client's connection opened, ms since the Unix epoch.
    pub fn connected_at(&self) -> u64 {
        self.handshake.time
    }

    /// Whether it is in `room` (its own id counts as a room).
    pub fn in_room(&self, room: &str) -> bool {
        self.sid == room || self.rooms.iter().any(|r| r == room)
    }
}

/// Which sockets to list. Empty fields select everything; the conditions
/// that are set must all hold.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Filter {
    /// Only this namespace.
    pub nsp: Option<String>,
    /// Only sockets held by this io-node.
    pub node: Option<String>,
    /// In any of these rooms, or named in `sids` (when either is non-empty,
    /// as an emit addresses sockets).
    pub rooms: Vec<String>,
    pub sids: Vec<String>,
    /// Minus the members of these rooms and these sockets.
    pub except_rooms: Vec<String>,
    pub except_sids: Vec<String>,
    /// Only sockets of this user.
    pub user: Option<String>,
    /// Only sockets whose id, address or user contains this text (ASCII
    /// letters compared without case).
    pub text: Option<String>,
}

impl Filter {
    pub fn matches(&self, socket: &SocketInfo) -> bool {
        if self.nsp.as_ref().is_some_and(|nsp| *nsp != socket.nsp) {
            return false;
        }
        if self.node.as_ref().is_some_and(|node| *node != socket.node) {
            return false;
        }
        let addressed = self.rooms.is_empty() && self.sids.is_empty()
            || self.rooms.iter().any(|room| socket.in_room(room))
            || self.sids.contains(&socket.sid);
        if !addressed {
            return false;
        }
        if self.except_rooms.iter().any(|room| socket.in_room(room))
            || self.except_sids.contains(&socket.sid)
        {
            return false;
        }
        if let Some(user) = &self.user
            && socket.user() != Some(user.as_str())
        {
            return false;
        }
        if let Some(text) = &self.text {
            let found = contains_ignoring_case(&socket.sid, text)
                || contains_ignoring_case(socket.address(), text)
                || socket
                    .user()
                    .is_some_and(|user| contains_ignoring_case(user, text));
            if !found {
                return false;
            }
        }
        true
    }
}

/// Whether `needle` occurs in `haystack`, ASCII letters compared without
/// case.
pub fn contains_ignoring_case(haystack: &str, needle: &str) -> bool {
    let (haystack, needle) = (haystack.as_bytes(), needle.as_bytes());
    needle.is_empty()
        || haystack
            .windows(needle.len())
            .any(|window| window.eq_ignore_ascii_case(needle))
}

/// The io-nodes whose ledgers list connected sockets: members of
/// `P:ledgers` (`SMEMBERS`) that hold a lease (`ZRANGE P:nodes <now> +inf
/// BYSCORE`), sorted by id, invalid ids left out.
pub fn live_ledger_nodes(ledgers: Vec<String>, leased: &[String]) -> Vec<String> {
    let leased: HashSet<&str> = leased.iter().map(String::as_str).collect();
    let mut nodes: Vec<String> = ledgers
        .into_iter()
        .filter(|node| ids::is_valid_node_id(node) && leased.contains(node.as_str()))
        .collect();
    nodes.sort();
    nodes.dedup();
    nodes
}

/// Where a [`SocketScan`] stopped: the io-node, the `HSCAN` cursor of the
/// batch to read next, and, when the page ended inside that batch, how to
/// skip what was already listed. Opaque to API users (its text is base64).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    node: String,
    scan: u64,
    /// The page ended inside the batch read at `scan`: that batch's next
    /// cursor and the last socket id listed from it (a batch's matches are
    /// listed in id order).
    inside: Option<(u64, String)>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid cursor (pass back the `next` of a previous page unchanged)")]
pub struct CursorError;

impl Cursor {
    /// The cursor as text: `1:<node>:<scan>:<next>:<last sid>` in URL-safe
    /// base64 (no padding).
    pub fn encode(&self) -> String {
        let (next, last) = match &self.inside {
            Some((next, last)) => (next.to_string(), last.as_str()),
            None => (String::new(), ""),
        };
        URL_SAFE_NO_PAD.encode(format!("1:{}:{}:{next}:{last}", self.node, self.scan))
    }

    pub fn decode(text: &str) -> Result<Cursor, CursorError> {
        if text.len() > MAX_CURSOR {
            return Err(CursorError);
        }
        let bytes = URL_SAFE_NO_PAD.decode(text).map_err(|_| CursorError)?;
        let text = String::from_utf8(bytes).map_err(|_| CursorError)?;
        let mut parts = text.splitn(5, ':');
        let mut part = || parts.next().ok_or(CursorError);
        let (version, node, scan, next, last) = (part()?, part()?, part()?, part()?, part()?);
        if version != "1" || !ids::is_valid_node_id(node) {
            return Err(CursorError);
        }
        let scan = scan.parse().map_err(|_| CursorError)?;
        let inside = match (next, last) {
            ("", "") => None,
            (next, last) if !last.is_empty() => {
                Some((next.parse().map_err(|_| CursorError)?, last.to_owned()))
            }
            _ => return Err(CursorError),
        };
        Ok(Cursor {
            node: node.to_owned(),
            scan,
            inside,
        })
    }
}

/// One `HSCAN` to run: `HSCAN P:sockets:<node> <cursor> COUNT <count>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanStep<'a> {
    pub node: &'a str,
    pub cursor: u64,
    pub count: usize,
}

/// A page of sockets and where to go on from.
#[derive(Debug, Clone, PartialEq)]
pub struct Page {
    pub sockets: Vec<SocketInfo>,
    /// `None`: every ledger was read to its end.
    pub next: Option<Cursor>,
    /// Entries that could not be read (skipped).
    pub undecodable: usize,
}

/// Reads one page of sockets, pure: ask [`SocketScan::step`] what to read,
/// run that `HSCAN`, hand the answer to [`SocketScan::feed`], until `step`
/// says `None`; then [`SocketScan::finish`].
///
/// The page ends when it holds `limit` sockets, when `budget` entries were
/// examined, or when every node was read. A batch's matching sockets are
/// taken in id order; when the page fills up inside a batch, the cursor
/// names that batch and the last socket taken, and the next page reads the
/// batch again and skips up to that socket — unless the batch's next cursor
/// changed (the hash table was resized meanwhile), then it skips nothing,
/// so nothing is missed (some sockets may be listed twice).
#[derive(Debug)]
pub struct SocketScan {
    filter: Filter,
    nodes: Vec<String>,
    /// The node being read, an index into `nodes` (`nodes.len()`: done).
    index: usize,
    scan: u64,
    inside: Option<(u64, String)>,
    limit: usize,
    budget: usize,
    sockets: Vec<SocketInfo>,
    listed: HashSet<String>,
    undecodable: usize,
}

impl SocketScan {
    /// A scan of `nodes` (from [`live_ledger_nodes`]), from `cursor` or
    /// from the start.
    pub fn new(
        filter: Filter,
        mut nodes: Vec<String>,
        cursor: Option<Cursor>,
        limit: usize,
        budget: usize,
    ) -> SocketScan {
        if let Some(node) = &filter.node {
            nodes.retain(|n| n == node);
        }
        nodes.sort();
        let (index, scan, inside) = match cursor {
            None => (0, 0, None),
            Some(cursor) => match nodes.binary_search(&cursor.node) {
                Ok(index) => (index, cursor.scan, cursor.inside),
                // That node is gone: on to the next one.
                Err(index) => (index, 0, None),
            },
        };
        SocketScan {
            filter,
            nodes,
            index,
            scan,
            inside,
            limit,
            budget,
            sockets: Vec::new(),
            listed: HashSet::new(),
            undecodable: 0,
        }
    }

    /// The next `HSCAN` to run, or `None` when the page is over.
    pub fn step(&self) -> Option<ScanStep<'_>> {
        if self.sockets.len() >= self.limit || self.budget == 0 {
            return None;
        }
        let node = self.nodes.get(self.index)?;
        Some(ScanStep {
            node,
            cursor: self.scan,
            count: SCAN_COUNT.min(self.budget),
        })
    }

    /// The answer to the last [`SocketScan::step`]: `HSCAN`'s next cursor
    /// and its field/value pairs.
    pub fn feed(&mut self, next: u64, entries: Vec<Entry>) {
        let Some(node) = self.nodes.get(self.index) else {
            return;
        };
        self.budget = self.budget.saturating_sub(entries.len().max(1));
        let mut matching: Vec<SocketInfo> = Vec::new();
        for (field, value) in &entries {
            match SocketInfo::from_ledger_entry(node, field, value) {
                Ok(socket) if self.filter.matches(&socket) => matching.push(socket),
                Ok(_) => {}
                Err(_) => self.undecodable += 1,
            }
        }
        matching.sort_by(|a, b| a.sid.cmp(&b.sid));
        if let Some((expected, last)) = self.inside.take()
            && expected == next
        {
            matching.retain(|socket| socket.sid > last);
        }
        let room = self.limit.saturating_sub(self.sockets.len());
        let mut taken = 0;
        let mut last_taken = None;
        for socket in matching.iter() {
            if taken == room {
                break;
            }
            taken += 1;
            last_taken = Some(socket.sid.clone());
            if self.listed.insert(socket.sid.clone()) {
                self.sockets.push(socket.clone());
            }
        }
        if taken < matching.len() {
            // Full inside this batch: read it again next time.
            self.inside = last_taken.map(|last| (next, last));
        } else if next == 0 {
            self.index += 1;
            self.scan = 0;
        } else {
            self.scan = next;
        }
    }

    pub fn finish(self) -> Page {
        let next = self.nodes.get(self.index).map(|node| Cursor {
            node: node.clone(),
            scan: self.scan,
            inside: self.inside,
        });
        Page {
            sockets: self.sockets,
            next,
            undecodable: self.undecodable,
        }
    }
}

/// What a [`Tally`] counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TallyOf {
    /// Members per `(namespace, room)`; `$` rooms only when the text filter
    /// starts with `$`.
    Rooms,
    /// Sockets per user (over every namespace unless one is given).
    Users,
}

/// A count: a room (with its namespace) or a user, and how many sockets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Count {
    pub nsp: String,
    pub name: String,
    pub sockets: u64,
}

/// What a [`Tally`] found, largest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Counts {
    pub counts: Vec<Count>,
    /// Every ledger was read to its end, within the budgets.
    pub complete: bool,
    pub undecodable: usize,
}

/// Counts sockets per room or per user over every ledger, pure like
/// [`SocketScan`] (`step`, `feed`, `finish`), examining at most `budget`
/// entries and counting at most [`TALLY_MAX_KEYS`] distinct names; past
/// either it stops and says it is not complete.
#[derive(Debug)]
pub struct Tally {
    of: TallyOf,
    nsp: Option<String>,
    /// For rooms only: names must contain it.
    text: Option<String>,
    nodes: Vec<String>,
    index: usize,
    scan: u64,
    budget: usize,
    counted: HashSet<String>,
    counts: HashMap<(String, String), u64>,
    overflow: bool,
    undecodable: usize,
}

impl Tally {
    pub fn new(
        of: TallyOf,
        nsp: Option<String>,
        text: Option<String>,
        mut nodes: Vec<String>,
        budget: usize,
    ) -> Tally {
        nodes.sort();
        Tally {
            of,
            nsp,
            text,
            nodes,
            index: 0,
            scan: 0,
            budget,
            counted: HashSet::new(),
            counts: HashMap::new(),
            overflow: false,
            undecodable: 0,
        }
    }

    pub fn step(&self) -> Option<ScanStep<'_>> {
        if self.budget == 0 || self.overflow {
            return None;
        }
        let node = self.nodes.get(self.index)?;
        Some(ScanStep {
            node,
            cursor: self.scan,
            count: SCAN_COUNT.min(self.budget),
        })
    }

    pub fn feed(&mut self, next: u64, entries: Vec<Entry>) {
        let Some(node) = self.nodes.get(self.index).cloned() else {
            return;
        };
        self.budget = self.budget.saturating_sub(entries.len().max(1));
        let dollar = self.text.as_deref().is_some_and(|t| t.starts_with('$'));
        for (field, value) in &entries {
            let socket = match SocketInfo::from_ledger_entry(&node, field, value) {
                Ok(socket) => socket,
                Err(_) => {
                    self.undecodable += 1;
                    continue;
                }
            };
            if self.nsp.as_ref().is_some_and(|nsp| *nsp != socket.nsp)
                // A socket met twice (the hash was resized) counts once.
                || !self.counted.insert(socket.sid.clone())
            {
                continue;
            }
            match self.of {
                TallyOf::Rooms => {
                    for room in &socket.rooms {
                        let reserved = room.starts_with(ids::RESERVED_ROOM_PREFIX);
                        if (reserved && !dollar)
                            || self
                                .text
                                .as_ref()
                                .is_some_and(|text| !contains_ignoring_case(room, text))
                        {
                            continue;
                        }
                        self.count(&socket.nsp, room);
                    }
                }
                TallyOf::Users => {
                    if let Some(user) = socket.user() {
                        self.count("", user);
                    }
                }
            }
        }
        if next == 0 {
            self.index += 1;
            self.scan = 0;
        } else {
            self.scan = next;
        }
    }

    fn count(&mut self, nsp: &str, name: &str) {
        let key = (nsp.to_owned(), name.to_owned());
        if let Some(count) = self.counts.get_mut(&key) {
            *count += 1;
        } else if self.counts.len() < TALLY_MAX_KEYS {
            self.counts.insert(key, 1);
        } else {
            self.overflow = true;
        }
    }

    /// The `limit` largest counts, largest first (ties by namespace, name).
    pub fn finish(self, limit: usize) -> Counts {
        let complete = !self.overflow && self.index >= self.nodes.len();
        let mut counts: Vec<Count> = self
            .counts
            .into_iter()
            .map(|((nsp, name), sockets)| Count { nsp, name, sockets })
            .collect();
        counts.sort_by(|a, b| {
            b.sockets
                .cmp(&a.sockets)
                .then_with(|| a.nsp.cmp(&b.nsp))
                .then_with(|| a.name.cmp(&b.name))
        });
        counts.truncate(limit);
        Counts {
            counts,
            complete,
            undecodable: self.undecodable,
        }
    }
}

#[cfg(test)]
mod tests;
