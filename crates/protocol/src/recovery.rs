//! Connection state recovery (Socket.IO 4.6+), cluster-wide: the pieces of
//! it that are wire formats or pure rules.
//!
//! - A socket of a namespace with recovery gets a *private id* (`pid`) in
//!   its CONNECT: `<sid>.<mac>`, where `mac` is the lowercase hex of the
//!   first 16 bytes of HMAC-SHA256(cluster key, sid). The key lives in
//!   Redis (`P:recovery-key`), so any io-node can check a pid, and nobody
//!   who only knows a socket id (other clients may) can claim its session.
//! - Every emit retained for recovery is an entry of the namespace's log
//!   stream; the entry id is the *offset* the client sees as the last
//!   argument of the event and sends back when it reconnects.
//! - A client coming back with `{pid, offset}` gets its socket back (same
//!   sid, rooms and data) and every retained emit after `offset` that was
//!   for it ([`is_recipient`]), in log order.

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::envelope::Emit;

/// Bytes of the MAC in a pid.
const MAC_BYTES: usize = 16;

fn mac(key: &str, sid: &str) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(key.as_bytes()).expect("HMAC takes a key of any length");
    mac.update(sid.as_bytes());
    mac.finalize().into_bytes()[..MAC_BYTES]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The private id of socket `sid` under the cluster key `key`.
pub fn pid(key: &str, sid: &str) -> String {
    format!("{sid}.{}", mac(key, sid))
}

/// The socket a pid names, if the pid was made with `key`.
pub fn sid_of_pid<'a>(key: &str, pid: &'a str) -> Option<&'a str> {
    let (sid, presented) = pid.rsplit_once('.')?;
    crate::ids::node_of(sid)?;
    let expected = mac(key, sid);
    let same = expected.len() == presented.len()
        && expected
            .bytes()
            .zip(presented.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0;
    same.then_some(sid)
}

/// A log entry id (`<ms>-<seq>`), ordered as Redis orders them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Offset {
    pub ms: u64,
    pub seq: u64,
}

impl Offset {
    pub fn parse(text: &str) -> Option<Offset> {
        let (ms, seq) = text.split_once('-')?;
        Some(Offset {
            ms: ms.parse().ok()?,
            seq: seq.parse().ok()?,
        })
    }
}

impl std::fmt::Display for Offset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.ms, self.seq)
    }
}

/// What a reconnecting client sent in its CONNECT `auth`: socket.io-client
/// merges `pid` and `offset` into the application's own auth object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resume {
    pub pid: String,
    /// The last offset the client saw; `None` when it saw none since it
    /// connected.
    pub offset: Option<String>,
}

/// Splits a CONNECT `auth` (JSON text, empty if none) into the recovery
/// request, if any, and the application's auth without `pid` and `offset`
/// (empty when nothing is left of it).
pub fn split_auth(auth: &str) -> (Option<Resume>, String) {
    if !auth.contains("\"pid\"") {
        return (None, auth.to_owned());
    }
    let Ok(serde_json::Value::Object(mut fields)) = serde_json::from_str(auth) else {
        return (None, auth.to_owned());
    };
    let pid = fields.remove("pid");
    let offset = fields.remove("offset");
    let rest = if fields.is_empty() {
        String::new()
    } else {
        serde_json::Value::Object(fields).to_string()
    };
    let resume = match (pid, offset) {
        (Some(serde_json::Value::String(pid)), offset) => Some(Resume {
            pid,
            offset: match offset {
                Some(serde_json::Value::String(offset)) => Some(offset),
                _ => None,
            },
        }),
        _ => None,
    };
    (resume, rest)
}

/// `data` (a JSON array text, `["name", ...args]`) with the offset as its
/// last argument, as Socket.IO sends a retained packet.
pub fn with_offset(data: &str, offset: &str) -> String {
    let trimmed = data.trim_end();
    let Some(body) = trimmed.strip_suffix(']') else {
        return data.to_owned();
    };
    let offset = serde_json::to_string(offset).unwrap_or_default();
    let mut out = String::with_capacity(body.len() + offset.len() + 2);
    out.push_str(body);
    if !body.trim_end().ends_with('[') {
        out.push(',');
    }
    out.push_str(&offset);
    out.push(']');
    out
}

/// Whether socket `sid`, in `rooms` (its own id aside), is a recipient of
/// `emit`: the rule io-nodes apply to live emits, applied to the log.
pub fn is_recipient<'a>(
    emit: &Emit,
    sid: &str,
    mut in_room: impl FnMut(&str) -> bool + 'a,
) -> bool {
    let mut room = |name: &str| name == sid || in_room(name);
    let targeted = if emit.rooms.is_empty() && emit.sids.is_empty() {
        true
    } else {
        emit.rooms.iter().any(|name| room(name)) || emit.sids.iter().any(|s| s == sid)
    };
    targeted
        && !emit.except_sids.iter().any(|s| s == sid)
        && !emit.except_rooms.iter().any(|name| room(name))
}

/// A namespace's `P:recovery` value, `<window ms>:<packets kept>`, read.
pub fn parse_setting(value: &str) -> Option<(u64, u64)> {
    let (window, packets) = value.split_once(':')?;
    Some((window.parse().ok()?, packets.parse().ok()?))
}

/// The flush script's mark for an emit retained in `log`, keeping about
/// `packets` entries, the log expiring `ttl_ms` after its last one:
/// `#<packets>#<ttl ms>#<log key>`.
pub fn mark(packets: u64, ttl_ms: u64, log: &str) -> Vec<u8> {
    format!("#{packets}#{ttl_ms}#{log}").into_bytes()
}

/// The envelope the flush script puts before a retained emit in a
/// published message: `[1, "offset", {"id": <entry id>}]`, the id as a
/// MessagePack str8 (`d9 len …`), whatever its length.
pub fn offset_envelope(id: &str) -> Vec<u8> {
    let mut out = vec![0x93, 0x01, 0xa6];
    out.extend_from_slice(b"offset");
    out.extend_from_slice(&[0x81, 0xa2, b'i', b'd', 0xd9, id.len() as u8]);
    out.extend_from_slice(id.as_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pid_names_its_socket_only_under_its_key() {
        let pid = pid("k1", "io1.abc");
        assert!(pid.starts_with("io1.abc."));
        assert_eq!(sid_of_pid("k1", &pid), Some("io1.abc"));
        assert_eq!(sid_of_pid("k2", &pid), None);
        assert_eq!(sid_of_pid("k1", "io1.abc.00"), None);
        assert_eq!(sid_of_pid("k1", "nodot"), None);
        let forged = format!("io1.abd.{}", pid.rsplit_once('.').unwrap().1);
        assert_eq!(sid_of_pid("k1", &forged), None);
    }

    #[test]
    fn offsets_order_as_redis_orders_entry_ids() {
        let a = Offset::parse("1700000000000-5").unwrap();
        let b = Offset::parse("1700000000000-12").unwrap();
        let c = Offset::parse("1700000000001-0").unwrap();
        assert!(a < b && b < c);
        assert_eq!(a.to_string(), "1700000000000-5");
        assert_eq!(Offset::parse("x-1"), None);
        assert_eq!(Offset::parse("12"), None);
    }

    #[test]
    fn the_auth_loses_pid_and_offset_and_keeps_the_rest() {
        let (resume, rest) = split_auth(r#"{"token":"t","pid":"p","offset":"1-0"}"#);
        assert_eq!(
            resume,
            Some(Resume {
                pid: "p".into(),
                offset: Some("1-0".into())
            })
        );
        assert_eq!(rest, r#"{"token":"t"}"#);
        let (resume, rest) = split_auth(r#"{"pid":"p"}"#);
        assert_eq!(resume.unwrap().offset, None);
        assert_eq!(rest, "");
        assert_eq!(split_auth(r#"{"a":1}"#), (None, r#"{"a":1}"#.into()));
        assert_eq!(split_auth(""), (None, String::new()));
        // A pid that is not a string is no request, and is still removed.
        assert_eq!(
            split_auth(r#"{"pid":5,"a":1}"#),
            (None, r#"{"a":1}"#.into())
        );
    }

    #[test]
    fn the_offset_becomes_the_last_argument() {
        assert_eq!(with_offset(r#"["tick",1]"#, "5-0"), r#"["tick",1,"5-0"]"#);
        assert_eq!(with_offset(r#"["tick"]"#, "5-0"), r#"["tick","5-0"]"#);
        assert_eq!(with_offset("[]", "5-0"), r#"["5-0"]"#);
        assert_eq!(with_offset("nonsense", "5-0"), "nonsense");
    }

    #[test]
    fn recipients_follow_the_live_rule() {
        let mut emit = Emit {
            nsp: "/".into(),
            ..Emit::default()
        };
        let rooms = ["a".to_owned()];
        let in_rooms = |name: &str| rooms.iter().any(|r| r == name);
        assert!(is_recipient(&emit, "n.s", in_rooms));
        emit.except_rooms = vec!["a".into()];
        assert!(!is_recipient(&emit, "n.s", in_rooms));
        emit.except_rooms.clear();
        emit.rooms = vec!["b".into()];
        assert!(!is_recipient(&emit, "n.s", in_rooms));
        emit.rooms = vec!["b".into(), "a".into()];
        assert!(is_recipient(&emit, "n.s", in_rooms));
        emit.rooms = vec!["n.s".into()];
        assert!(is_recipient(&emit, "n.s", in_rooms));
        emit.rooms.clear();
        emit.sids = vec!["n.s".into()];
        assert!(is_recipient(&emit, "n.s", in_rooms));
        emit.except_sids = vec!["n.s".into()];
        assert!(!is_recipient(&emit, "n.s", in_rooms));
    }

    #[test]
    fn the_protocol_document_shows_the_offset_envelope() {
        let bytes: Vec<String> = offset_envelope("1733180000000-0")
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let doc = include_str!("../../../docs/PROTOCOL.md");
        assert!(doc.contains(&bytes.join(" ")), "{}", bytes.join(" "));
    }

    #[test]
    fn the_offset_envelope_decodes_as_a_command() {
        let bytes = offset_envelope("1700000000000-0");
        let command = crate::envelope::Command::decode(&bytes).unwrap();
        assert_eq!(
            command,
            crate::envelope::Command::Offset(crate::envelope::Offset {
                id: "1700000000000-0".into()
            })
        );
    }
}
