//! The metrics an io-node records per packet, event or command, registered
//! once. `metrics::counter!` looks its key up in the recorder's registry
//! on every call (building the key, labels included, and hashing it):
//! about 4% of an io-node's CPU under echo load. These handles go
//! straight to their atomics. Made after the recorder is installed (see
//! `run`); without an ops listener there is no recorder and they do
//! nothing, as the macros would.

use iocluster_protocol::envelope::{Command, EventKind};
use iocluster_protocol::socketio::PacketKind;
use metrics::{Counter, Histogram};

pub(crate) struct HotMetrics {
    /// `iocluster_client_packets_total{type}`, by [`PacketKind`].
    client_packets: [Counter; 7],
    /// `iocluster_events_out_total{kind}`, by [`EventKind`].
    events_out: [Counter; 3],
    pub batched_events: Counter,
    /// `iocluster_commands_total{type}`, by [`Command`] variant.
    commands: [Counter; 7],
    pub round_trip: Histogram,
    pub deliveries: Counter,
    pub pubsub_messages: Counter,
    pub pubsub_bytes: Counter,
}

const PACKET_KINDS: [PacketKind; 7] = [
    PacketKind::Connect,
    PacketKind::Disconnect,
    PacketKind::Event,
    PacketKind::Ack,
    PacketKind::ConnectError,
    PacketKind::BinaryEvent,
    PacketKind::BinaryAck,
];

const EVENT_KINDS: [EventKind; 3] = [
    EventKind::Connect,
    EventKind::Message,
    EventKind::Disconnect,
];

/// The `type` labels of the commands, in the order of [`HotMetrics::command`]
/// (the names `Command::type_name` gives).
const COMMAND_TYPES: [&str; 7] = ["emit", "ack", "join", "leave", "data", "disconnect", "done"];

impl HotMetrics {
    pub(crate) fn new() -> HotMetrics {
        HotMetrics {
            client_packets: PACKET_KINDS.map(|kind| {
                metrics::counter!("iocluster_client_packets_total", "type" => packet_type(kind))
            }),
            events_out: EVENT_KINDS
                .map(|kind| metrics::counter!("iocluster_events_out_total", "kind" => kind.as_str())),
            batched_events: metrics::counter!("iocluster_batched_events_total"),
            commands: COMMAND_TYPES
                .map(|name| metrics::counter!("iocluster_commands_total", "type" => name)),
            round_trip: metrics::histogram!("iocluster_event_round_trip_seconds"),
            deliveries: metrics::counter!("iocluster_deliveries_total"),
            pubsub_messages: metrics::counter!("iocluster_pubsub_messages_total"),
            pubsub_bytes: metrics::counter!("iocluster_pubsub_bytes_total"),
        }
    }

    pub(crate) fn client_packet(&self, kind: PacketKind) -> &Counter {
        let index = match kind {
            PacketKind::Connect => 0,
            PacketKind::Disconnect => 1,
            PacketKind::Event => 2,
            PacketKind::Ack => 3,
            PacketKind::ConnectError => 4,
            PacketKind::BinaryEvent => 5,
            PacketKind::BinaryAck => 6,
        };
        &self.client_packets[index]
    }

    pub(crate) fn events_out(&self, kind: EventKind) -> &Counter {
        let index = match kind {
            EventKind::Connect => 0,
            EventKind::Message => 1,
            EventKind::Disconnect => 2,
        };
        &self.events_out[index]
    }

    /// The counter of `command`'s type; the indexes follow `COMMAND_TYPES`
    /// (the match is exhaustive, so a new command cannot be missed).
    pub(crate) fn command(&self, command: &Command) -> &Counter {
        let index = match command {
            Command::Emit(_) => 0,
            Command::Ack(_) => 1,
            Command::Join(_) => 2,
            Command::Leave(_) => 3,
            Command::SetData(_) => 4,
            Command::Disconnect(_) => 5,
            Command::Done(_) => 6,
        };
        &self.commands[index]
    }
}

/// The `type` label of a client packet.
pub(crate) fn packet_type(kind: PacketKind) -> &'static str {
    match kind {
        PacketKind::Connect => "connect",
        PacketKind::Disconnect => "disconnect",
        PacketKind::Event => "event",
        PacketKind::Ack => "ack",
        PacketKind::ConnectError => "connect_error",
        PacketKind::BinaryEvent => "binary_event",
        PacketKind::BinaryAck => "binary_ack",
    }
}
