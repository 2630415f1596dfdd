//! Writing envelopes: [`encode_tagged`], serde's named encoding that is the
//! reference, and the hand-written writers of the hot envelopes
//! ([`EventParts::encode`], [`Command::encode`] for `ack` and `done`), which
//! must write exactly serde's bytes (tested byte for byte in `tests`).

use serde::Serialize;
use serde_bytes::ByteBuf;

use super::{Command, EventParts, VERSION};

impl<'a, R: ExactSizeIterator<Item = &'a str>> EventParts<'a, R> {
    /// Encodes the whole envelope `[1, "event", {…}]`.
    pub fn encode(self) -> Vec<u8> {
        let mut w = Vec::new();
        self.encode_into(&mut w);
        w
    }

    /// Appends the envelope to `w`: a queue item of several events is their
    /// envelopes back to back.
    pub fn encode_into(self, w: &mut Vec<u8>) {
        w.reserve(
            128 + self.node.len()
                + self.sid.len()
                + self.nsp.len()
                + self.data.map_or(0, str::len)
                + self.sdata.map_or(0, str::len)
                + self.bin.iter().map(|b| b.len() + 5).sum::<usize>()
                + 16 * self.rooms.len()
                + self.handshake.0.len()
                + self.seen.iter().map(|app| app.len() + 2).sum::<usize>(),
        );
        let fields = 12 + u32::from(self.recovered) + u32::from(!self.seen.is_empty());
        envelope_head(w, "event", fields);
        write_str_field(w, "kind", self.kind.as_str());
        write_str_field(w, "node", self.node);
        write_str_field(w, "sid", self.sid);
        write_str_field(w, "nsp", self.nsp);
        write_uint_field(w, "seq", self.seq);
        write_str_field(w, "data", self.data);
        write_bins_field(w, "bin", self.bin);
        write_str(w, "ack");
        match self.ack {
            Some(ack) => drop(rmp::encode::write_uint(w, ack)),
            None => drop(rmp::encode::write_nil(w)),
        }
        write_str_field(w, "reason", self.reason);
        write_str(w, "rooms");
        drop(rmp::encode::write_array_len(w, self.rooms.len() as u32));
        for room in self.rooms {
            write_str(w, room);
        }
        write_str_field(w, "sdata", self.sdata);
        write_str(w, "handshake");
        w.extend_from_slice(&self.handshake.0);
        if self.recovered {
            write_str(w, "recovered");
            drop(rmp::encode::write_bool(w, true));
        }
        if !self.seen.is_empty() {
            write_str(w, "seen");
            drop(rmp::encode::write_array_len(w, self.seen.len() as u32));
            for app in self.seen {
                write_str(w, app);
            }
        }
    }
}

impl Command {
    pub fn encode(&self) -> Vec<u8> {
        let kind = self.type_name();
        match self {
            Command::Emit(body) => encode_tagged(kind, body),
            // The two commands every event ends with, written field by
            // field (the same bytes as serde's, a fifth of the cost).
            Command::Ack(ack) => {
                let mut w = Vec::with_capacity(
                    64 + ack.nsp.len()
                        + ack.sid.len()
                        + ack.data.len()
                        + ack.bin.iter().map(|b| b.len() + 5).sum::<usize>(),
                );
                envelope_head(&mut w, kind, 5);
                write_str_field(&mut w, "nsp", ack.nsp.as_str());
                write_str_field(&mut w, "sid", ack.sid.as_str());
                write_uint_field(&mut w, "id", ack.id);
                write_str_field(&mut w, "data", ack.data.as_str());
                write_bins_field(&mut w, "bin", &ack.bin);
                w
            }
            Command::Join(body) => encode_tagged(kind, body),
            Command::Leave(body) => encode_tagged(kind, body),
            Command::SetData(body) => encode_tagged(kind, body),
            Command::Disconnect(body) => encode_tagged(kind, body),
            Command::Done(done) if done.reject.is_none() => {
                let app = done.app.as_deref();
                let mut w = Vec::with_capacity(
                    56 + done.nsp.len() + done.sid.len() + app.map_or(0, str::len),
                );
                envelope_head(&mut w, kind, 4 + u32::from(app.is_some()));
                write_str_field(&mut w, "nsp", done.nsp.as_str());
                write_str_field(&mut w, "sid", done.sid.as_str());
                write_uint_field(&mut w, "seq", done.seq);
                write_str_field(&mut w, "reject", None::<&str>);
                if let Some(app) = app {
                    write_str_field(&mut w, "app", app);
                }
                w
            }
            Command::Done(body) => encode_tagged(kind, body),
            Command::Offset(body) => encode_tagged(kind, body),
            Command::Release(body) => encode_tagged(kind, body),
        }
    }
}

// Field-by-field MessagePack writing, the same bytes as rmp-serde's named
// encoding. Writing into a Vec cannot fail: the results are dropped.

/// `[1, kind, {` with a map of `fields` entries to follow.
fn envelope_head(w: &mut Vec<u8>, kind: &str, fields: u32) {
    drop(rmp::encode::write_array_len(w, 3));
    drop(rmp::encode::write_uint(w, u64::from(VERSION)));
    write_str(w, kind);
    drop(rmp::encode::write_map_len(w, fields));
}

fn write_str(w: &mut Vec<u8>, value: &str) {
    drop(rmp::encode::write_str(w, value));
}

/// A key and a string, or nil for `None`.
fn write_str_field<'a>(w: &mut Vec<u8>, key: &str, value: impl Into<Option<&'a str>>) {
    write_str(w, key);
    match value.into() {
        Some(value) => write_str(w, value),
        None => drop(rmp::encode::write_nil(w)),
    }
}

fn write_uint_field(w: &mut Vec<u8>, key: &str, value: u64) {
    write_str(w, key);
    drop(rmp::encode::write_uint(w, value));
}

fn write_bins_field(w: &mut Vec<u8>, key: &str, bins: &[ByteBuf]) {
    write_str(w, key);
    drop(rmp::encode::write_array_len(w, bins.len() as u32));
    for bin in bins {
        drop(rmp::encode::write_bin(w, bin));
    }
}

pub(super) fn encode_tagged<T: Serialize>(kind: &str, body: &T) -> Vec<u8> {
    // Encoding plain structs into a Vec cannot fail.
    rmp_serde::to_vec_named(&(VERSION, kind, body)).unwrap_or_default()
}
