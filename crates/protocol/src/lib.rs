//! Every wire format iocluster speaks, and nothing else: this crate does no I/O.
//!
//! - [`engine`]: Engine.IO v4 packets, the long-polling payload framing, the
//!   handshake (`open`) body and the transport error responses.
//! - [`socketio`]: Socket.IO v5 packets (namespaces, ack ids, binary attachments).
//! - [`envelope`]: the versioned MessagePack envelopes that io-nodes and app-nodes
//!   exchange through Redis (client [`envelope::Event`]s one way,
//!   [`envelope::Command`]s the other).
//! - [`keys`]: the names of every Redis key and pub/sub channel, under one prefix.
//! - [`credentials`]: how user credentials are stored and compared.
//! - [`scripts`]: the Lua scripts of the Redis protocol (the SDK's queue
//!   take, flush and hand-back; the io-node's ledger), as docs/PROTOCOL.md
//!   shows them.
//! - [`presence`]: connected sockets read from the io-nodes' ledgers
//!   (decoding, filters, bounded paging and tallies), for the admin API and
//!   the SDK alike.
//! - [`ids`]: session / socket ids, which carry the id of the io-node that owns them
//!   so a command for one client can be routed without a lookup.
//!
//! `docs/PROTOCOL.md` describes the Redis side byte for byte; the tests here keep
//! the examples in that document honest.

pub mod credentials;
pub mod eio3;
pub mod engine;
pub mod envelope;
pub mod ids;
pub mod keys;
pub mod msgpack_parser;
pub mod presence;
pub mod recovery;
pub mod scripts;
pub mod socketio;
