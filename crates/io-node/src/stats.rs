//! The metrics an io-node records per packet, event or command, registered
//! once. `metrics::counter!` looks its key up in the recorder's registry
//! on every call (building the key, labels included, and hashing it):
//! 3.7% of an io-node's perf samples under echo load. These handles go
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
    /// `iocluster_commands_total{type}`, by `Command::type_index`.
    commands: [Counter; 7],
    pub round_trip: Histogram,
    pub deliveries: Counter,
}

/// In the order of their discriminants (`kind as usize`).
const PACKET_KINDS: [PacketKind; 7] = [
    PacketKind::Connect,
    PacketKind::Disconnect,
    PacketKind::Event,
    PacketKind::Ack,
    PacketKind::ConnectError,
    PacketKind::BinaryEvent,
    PacketKind::BinaryAck,
];

/// In the order of their declaration (`kind as usize`).
const EVENT_KINDS: [EventKind; 3] = [
    EventKind::Connect,
    EventKind::Message,
    EventKind::Disconnect,
];

impl HotMetrics {
    pub(crate) fn new() -> HotMetrics {
        HotMetrics {
            client_packets: PACKET_KINDS.map(|kind| {
                metrics::counter!("iocluster_client_packets_total", "type" => packet_type(kind))
            }),
            events_out: EVENT_KINDS
                .map(|kind| metrics::counter!("iocluster_events_out_total", "kind" => kind.as_str())),
            batched_events: metrics::counter!("iocluster_batched_events_total"),
            commands: Command::TYPE_NAMES
                .map(|name| metrics::counter!("iocluster_commands_total", "type" => name)),
            round_trip: metrics::histogram!("iocluster_event_round_trip_seconds"),
            deliveries: metrics::counter!("iocluster_deliveries_total"),
        }
    }

    pub(crate) fn client_packet(&self, kind: PacketKind) -> &Counter {
        &self.client_packets[kind as usize]
    }

    pub(crate) fn events_out(&self, kind: EventKind) -> &Counter {
        &self.events_out[kind as usize]
    }

    pub(crate) fn command(&self, command: &Command) -> &Counter {
        &self.commands[command.type_index()]
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The label lists are indexed by discriminant: each kind sits at its own.
    #[test]
    fn each_kind_sits_at_its_discriminant() {
        for (index, kind) in PACKET_KINDS.iter().enumerate() {
            assert_eq!(*kind as usize, index);
        }
        for (index, kind) in EVENT_KINDS.iter().enumerate() {
            assert_eq!(*kind as usize, index);
        }
    }
}
