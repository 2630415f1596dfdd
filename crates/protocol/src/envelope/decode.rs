//! Reading envelopes: [`decode_tagged`], serde's reading that is the
//! reference and gives the errors, and the hand-written readers that must
//! accept exactly what it accepts: the field-by-field event reader behind
//! [`Event::decode`](super::Event::decode) (with a per-thread cache of decoded
//! handshakes), and [`value_len`], which finds where each envelope of a
//! message ends without decoding it.

use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;

use rmp::decode::{read_array_len, read_int, read_map_len, read_str_from_slice};
use serde::de::{self, IgnoredAny, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer};
use serde_bytes::ByteBuf;

use super::{Command, EnvelopeError, Event, EventKind, Handshake, Reply, VERSION};

// The field-by-field event reader behind `Event::decode`.

/// Most handshakes a thread keeps decoded (see [`set_handshake_cache`]);
/// past it the cache starts over.
static CACHE: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(4096);

/// Sets how many decoded handshakes each thread keeps for
/// [`Event::decode`] (4096 by default; 0 keeps none): the memory a reader
/// of events spends on the clients it meets is bounded by it.
pub fn set_handshake_cache(entries: usize) {
    CACHE.store(entries, std::sync::atomic::Ordering::Relaxed);
}

/// Decoded handshakes by their bytes' hash, with the bytes.
type Cache = HashMap<u64, (Box<[u8]>, Arc<Handshake>)>;

thread_local! {
    static HANDSHAKES: RefCell<Cache> = RefCell::default();
}

/// A cheap hash of a handshake's bytes (FNV-1a over 8-byte words); the
/// bytes themselves are compared on a hit.
fn hash(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut words = bytes.chunks_exact(8);
    for word in &mut words {
        let mut w = [0u8; 8];
        w.copy_from_slice(word);
        h = (h ^ u64::from_le_bytes(w)).wrapping_mul(0x0100_0000_01b3);
    }
    for &b in words.remainder() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    h ^ bytes.len() as u64
}

fn handshake(bytes: &[u8]) -> Option<Arc<Handshake>> {
    let key = hash(bytes);
    HANDSHAKES.with(|cache| {
        let mut cache = cache.borrow_mut();
        if let Some((known, decoded)) = cache.get(&key)
            && **known == *bytes
        {
            return Some(decoded.clone());
        }
        let decoded = Arc::new(rmp_serde::from_slice::<Handshake>(bytes).ok()?);
        let most = CACHE.load(std::sync::atomic::Ordering::Relaxed);
        if cache.len() >= most {
            cache.clear();
            if most == 0 {
                return Some(decoded);
            }
        }
        cache.insert(key, (bytes.into(), decoded.clone()));
        Some(decoded)
    })
}

fn str<'a>(r: &mut &'a [u8]) -> Option<&'a str> {
    let (value, rest) = read_str_from_slice(*r).ok()?;
    *r = rest;
    Some(value)
}

fn is_nil(r: &mut &[u8]) -> bool {
    if r.first() == Some(&0xc0) {
        *r = &r[1..];
        true
    } else {
        false
    }
}

fn opt_str(r: &mut &[u8]) -> Option<Option<String>> {
    if is_nil(r) {
        return Some(None);
    }
    Some(Some(str(r)?.to_owned()))
}

fn uint(r: &mut &[u8]) -> Option<u64> {
    read_int::<u64, _>(r).ok()
}

fn bin(r: &mut &[u8]) -> Option<ByteBuf> {
    let len = rmp::decode::read_bin_len(r).ok()? as usize;
    let (value, rest) = (r.get(..len)?, r.get(len..)?);
    *r = rest;
    Some(ByteBuf::from(value))
}

/// The event in `bytes`, or `None` for anything it is not sure of.
pub(super) fn event(bytes: &[u8]) -> Option<Event> {
    let r = &mut &bytes[..];
    if read_array_len(r).ok()? != 3 || uint(r)? != u64::from(VERSION) || str(r)? != "event" {
        return None;
    }
    let fields = read_map_len(r).ok()?;
    let (mut kind, mut node, mut sid, mut nsp, mut seq) = (None, None, None, None, None);
    let (mut data, mut bins, mut ack, mut reason) = (None, Vec::new(), None, None);
    let (mut rooms, mut sdata, mut handshake_) = (Vec::new(), None, None);
    let mut recovered = false;
    let mut seen_by = Vec::new();
    // serde refuses a field given twice; so does this reader (by
    // leaving it to serde). Each known field has its bit in `seen`.
    let mut seen = 0u16;
    for _ in 0..fields {
        let bit = match str(r)? {
            "kind" => {
                kind = Some(match str(r)? {
                    "connect" => EventKind::Connect,
                    "message" => EventKind::Message,
                    "disconnect" => EventKind::Disconnect,
                    _ => return None,
                });
                1
            }
            "node" => {
                node = Some(str(r)?.to_owned());
                2
            }
            "sid" => {
                sid = Some(str(r)?.to_owned());
                4
            }
            "nsp" => {
                nsp = Some(str(r)?.to_owned());
                8
            }
            "seq" => {
                seq = Some(uint(r)?);
                16
            }
            "data" => {
                data = opt_str(r)?;
                32
            }
            "bin" => {
                let n = read_array_len(r).ok()? as usize;
                bins = Vec::with_capacity(n.min(r.len()));
                for _ in 0..n {
                    bins.push(bin(r)?);
                }
                64
            }
            "ack" => {
                ack = if is_nil(r) { None } else { Some(uint(r)?) };
                128
            }
            "reason" => {
                reason = opt_str(r)?;
                256
            }
            "rooms" => {
                let n = read_array_len(r).ok()? as usize;
                rooms = Vec::with_capacity(n.min(r.len()));
                for _ in 0..n {
                    rooms.push(str(r)?.to_owned());
                }
                512
            }
            "sdata" => {
                sdata = opt_str(r)?;
                1024
            }
            "handshake" => {
                let len = value_len(r)?;
                handshake_ = Some(handshake(&r[..len])?);
                *r = &r[len..];
                2048
            }
            "recovered" => {
                recovered = rmp::decode::read_bool(r).ok()?;
                4096
            }
            "seen" => {
                let n = read_array_len(r).ok()? as usize;
                seen_by = Vec::with_capacity(n.min(r.len()));
                for _ in 0..n {
                    seen_by.push(str(r)?.to_owned());
                }
                8192
            }
            _ => {
                // A field this version does not know: skipped.
                let len = value_len(r)?;
                *r = &r[len..];
                0
            }
        };
        if seen & bit != 0 {
            return None;
        }
        seen |= bit;
    }
    Some(Event {
        kind: kind?,
        node: node?,
        sid: sid?,
        nsp: nsp?,
        seq: seq?,
        data,
        bin: bins,
        ack,
        reason,
        rooms,
        sdata,
        handshake: handshake_?,
        recovered,
        seen: seen_by,
    })
}

/// The envelopes of a message or queue item that holds several back to back,
/// each as its own slice (serde's slice reader borrows; its stream reader
/// copies every string through a buffer). One that runs past the end is a
/// truncation error, and the last item.
pub(super) fn envelopes(bytes: &[u8]) -> impl Iterator<Item = Result<&[u8], EnvelopeError>> + '_ {
    let mut rest = bytes;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let Some(len) = value_len(rest) else {
            rest = &[];
            return Some(Err(truncated()));
        };
        let (envelope, after) = rest.split_at(len);
        rest = after;
        Some(Ok(envelope))
    })
}

/// The error for bytes that end inside a value.
pub(super) fn truncated() -> EnvelopeError {
    let eof = std::io::Error::from(std::io::ErrorKind::UnexpectedEof);
    EnvelopeError::Malformed(rmp_serde::decode::Error::InvalidMarkerRead(eof))
}

/// The length in bytes of the MessagePack value `bytes` starts with, found
/// from its markers and lengths alone (nothing is decoded); `None` when the
/// value runs past the end or uses the reserved marker. Iterative: nesting
/// costs no stack, and every value takes at least one byte, so a claimed
/// count larger than the input ends at the input's end.
pub(super) fn value_len(bytes: &[u8]) -> Option<usize> {
    use rmp::Marker;
    let be = |at: usize, width: usize| -> Option<usize> {
        let field = bytes.get(at..at.checked_add(width)?)?;
        Some(field.iter().fold(0usize, |n, &b| (n << 8) | usize::from(b)))
    };
    let (mut at, mut pending) = (0usize, 1usize);
    while pending > 0 {
        pending -= 1;
        let marker = Marker::from_u8(*bytes.get(at)?);
        at += 1;
        // Bytes after the marker, and values nested in this one.
        let (skip, nested) = match marker {
            Marker::FixPos(_) | Marker::FixNeg(_) | Marker::Null | Marker::True | Marker::False => {
                (0, 0)
            }
            Marker::U8 | Marker::I8 => (1, 0),
            Marker::U16 | Marker::I16 => (2, 0),
            Marker::U32 | Marker::I32 | Marker::F32 => (4, 0),
            Marker::U64 | Marker::I64 | Marker::F64 => (8, 0),
            Marker::FixStr(len) => (usize::from(len), 0),
            Marker::Str8 | Marker::Bin8 => (1 + be(at, 1)?, 0),
            Marker::Str16 | Marker::Bin16 => (2 + be(at, 2)?, 0),
            Marker::Str32 | Marker::Bin32 => (4 + be(at, 4)?, 0),
            Marker::FixArray(len) => (0, usize::from(len)),
            Marker::Array16 => (2, be(at, 2)?),
            Marker::Array32 => (4, be(at, 4)?),
            Marker::FixMap(len) => (0, 2 * usize::from(len)),
            Marker::Map16 => (2, 2 * be(at, 2)?),
            Marker::Map32 => (4, be(at, 4)?.checked_mul(2)?),
            Marker::FixExt1 => (2, 0),
            Marker::FixExt2 => (3, 0),
            Marker::FixExt4 => (5, 0),
            Marker::FixExt8 => (9, 0),
            Marker::FixExt16 => (17, 0),
            Marker::Ext8 => (2 + be(at, 1)?, 0),
            Marker::Ext16 => (3 + be(at, 2)?, 0),
            Marker::Ext32 => (5 + be(at, 4)?, 0),
            Marker::Reserved => return None,
        };
        at = at.checked_add(skip)?;
        if at > bytes.len() {
            return None;
        }
        pending = pending.checked_add(nested)?;
    }
    Some(at)
}

/// An envelope family: knows which body type goes with each type string.
pub(super) trait Tagged: Sized {
    /// Reads the body for `kind`; `Ok(None)` when the type is unknown.
    fn body<'de, A: SeqAccess<'de>>(kind: &str, seq: &mut A) -> Result<Option<Self>, A::Error>;
}

enum Outcome<T> {
    Decoded(T),
    Version(u8),
    Unknown(String),
}

pub(super) fn decode_tagged<T: Tagged>(bytes: &[u8]) -> Result<T, EnvelopeError> {
    decode_from(&mut rmp_serde::Deserializer::from_read_ref(bytes))
}

fn decode_from<'de, T: Tagged, R: rmp_serde::decode::ReadSlice<'de>>(
    deserializer: &mut rmp_serde::Deserializer<R>,
) -> Result<T, EnvelopeError> {
    struct TaggedVisitor<T>(PhantomData<T>);
    impl<'de, T: Tagged> Visitor<'de> for TaggedVisitor<T> {
        type Value = Outcome<T>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("an envelope [version, type, body]")
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Outcome<T>, A::Error> {
            let version: u8 = seq
                .next_element()?
                .ok_or_else(|| de::Error::invalid_length(0, &self))?;
            if version != VERSION {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                return Ok(Outcome::Version(version));
            }
            let kind: String = seq
                .next_element()?
                .ok_or_else(|| de::Error::invalid_length(1, &self))?;
            let outcome = match T::body(&kind, &mut seq)? {
                Some(body) => Outcome::Decoded(body),
                None => Outcome::Unknown(kind),
            };
            while seq.next_element::<IgnoredAny>()?.is_some() {}
            Ok(outcome)
        }
    }
    match deserializer.deserialize_seq(TaggedVisitor::<T>(PhantomData))? {
        Outcome::Decoded(body) => Ok(body),
        Outcome::Version(version) => Err(EnvelopeError::UnsupportedVersion(version)),
        Outcome::Unknown(kind) => Err(EnvelopeError::UnknownType(kind)),
    }
}

/// Reads the body element as `T`, failing when it is missing.
pub(super) fn element<'de, T: Deserialize<'de>, A: SeqAccess<'de>>(
    seq: &mut A,
) -> Result<T, A::Error> {
    seq.next_element()?
        .ok_or_else(|| de::Error::custom("envelope has no body"))
}

impl Tagged for Event {
    fn body<'de, A: SeqAccess<'de>>(kind: &str, seq: &mut A) -> Result<Option<Self>, A::Error> {
        Ok(match kind {
            "event" => Some(element(seq)?),
            _ => None,
        })
    }
}

impl Tagged for Command {
    fn body<'de, A: SeqAccess<'de>>(kind: &str, seq: &mut A) -> Result<Option<Self>, A::Error> {
        Ok(Some(match kind {
            "emit" => Command::Emit(element(seq)?),
            "ack" => Command::Ack(element(seq)?),
            "join" => Command::Join(element(seq)?),
            "leave" => Command::Leave(element(seq)?),
            "data" => Command::SetData(element(seq)?),
            "disconnect" => Command::Disconnect(element(seq)?),
            "done" => Command::Done(element(seq)?),
            "offset" => Command::Offset(element(seq)?),
            "release" => Command::Release(element(seq)?),
            _ => return Ok(None),
        }))
    }
}

impl Tagged for Reply {
    fn body<'de, A: SeqAccess<'de>>(kind: &str, seq: &mut A) -> Result<Option<Self>, A::Error> {
        Ok(Some(match kind {
            "joined" => Reply::Joined(element(seq)?),
            "ackreply" => Reply::Ack(element(seq)?),
            _ => return Ok(None),
        }))
    }
}
