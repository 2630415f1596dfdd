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
    commands: [Counter; Command::TYPE_NAMES.len()],
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

/// Describes every metric family the io-node exports (`# HELP`) and makes
/// each counter exist at 0 from the start, with each of its label values,
/// so that alerts and dashboards need no first increment. Called once the
/// recorder is installed (with an ops listener).
pub(crate) fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram};
    let counters: [(&str, &str); 25] = [
        (
            "iocluster_connections_opened_total",
            "Engine.IO sessions opened",
        ),
        (
            "iocluster_connections_closed_total",
            "Sessions closed, by reason",
        ),
        (
            "iocluster_connections_refused_total",
            "Handshakes refused at max_connections or while draining",
        ),
        (
            "iocluster_handshakes_refused_total",
            "Handshakes refused for the budget of sessions not yet in a namespace",
        ),
        (
            "iocluster_origins_refused_total",
            "Requests refused for their Origin",
        ),
        (
            "iocluster_client_pauses_total",
            "Clients no longer read from because their events piled up past max_pending_events",
        ),
        (
            "iocluster_auth_refused_total",
            "Namespace connections refused by users_auth or jwt_secret",
        ),
        (
            "iocluster_tls_handshake_failures_total",
            "TLS handshakes that failed",
        ),
        (
            "iocluster_client_packets_total",
            "Socket.IO packets from clients, by type",
        ),
        (
            "iocluster_throttled_packets_total",
            "Packets over max_packets_per_second (the client is slowed)",
        ),
        (
            "iocluster_relayed_total",
            "Requests and WebSockets for sessions another io-node holds, relayed to it, by kind",
        ),
        (
            "iocluster_relay_failures_total",
            "Relayed requests that got no answer (owner gone or silent): answered 400",
        ),
        (
            "iocluster_events_out_total",
            "Events pushed to the queue, by kind",
        ),
        (
            "iocluster_batched_events_total",
            "Events that travelled several to a queue item",
        ),
        (
            "iocluster_redeliveries_total",
            "Queue items pushed again (no done in time)",
        ),
        (
            "iocluster_commands_total",
            "Commands from app-nodes applied, by type",
        ),
        (
            "iocluster_wrong_parser_total",
            "Clients refused for speaking the other Socket.IO parser",
        ),
        (
            "iocluster_recoveries_total",
            "Sockets recovered (connection state recovery)",
        ),
        (
            "iocluster_recovery_replayed_total",
            "Missed emits replayed to recovered sockets",
        ),
        (
            "iocluster_deliveries_total",
            "Frames written to clients' outboxes by emits",
        ),
        (
            "iocluster_pubsub_messages_total",
            "Pub/sub messages received from Redis",
        ),
        (
            "iocluster_pubsub_bytes_total",
            "Pub/sub bytes received from Redis",
        ),
        (
            "iocluster_redis_errors_total",
            "Failed Redis calls, by task",
        ),
        (
            "iocluster_redis_reconnects_total",
            "Lost Redis connections, by task",
        ),
        ("iocluster_queue_depth", "Events waiting in the event queue"),
    ];
    for (name, help) in counters {
        if name == "iocluster_queue_depth" {
            describe_gauge!(name, help);
        } else {
            describe_counter!(name, help);
        }
    }
    describe_gauge!("iocluster_connections", "Clients connected now");
    describe_gauge!(
        "iocluster_inflight_events",
        "Sockets with a queue item at an app-node now"
    );
    describe_histogram!(
        "iocluster_event_round_trip_seconds",
        metrics::Unit::Seconds,
        "From a queue item's push to its done"
    );
    for name in [
        "iocluster_connections_opened_total",
        "iocluster_connections_refused_total",
        "iocluster_handshakes_refused_total",
        "iocluster_origins_refused_total",
        "iocluster_client_pauses_total",
        "iocluster_auth_refused_total",
        "iocluster_tls_handshake_failures_total",
        "iocluster_throttled_packets_total",
        "iocluster_relay_failures_total",
        "iocluster_batched_events_total",
        "iocluster_redeliveries_total",
        "iocluster_recoveries_total",
        "iocluster_recovery_replayed_total",
        "iocluster_wrong_parser_total",
        "iocluster_deliveries_total",
        "iocluster_pubsub_messages_total",
        "iocluster_pubsub_bytes_total",
    ] {
        metrics::counter!(name).increment(0);
    }
    for reason in crate::engine::CloseReason::ALL {
        metrics::counter!("iocluster_connections_closed_total", "reason" => reason.as_str())
            .increment(0);
    }
    for kind in ["poll", "post", "websocket"] {
        metrics::counter!("iocluster_relayed_total", "kind" => kind).increment(0);
    }
    for task in ["writer", "registry", "subscriber"] {
        metrics::counter!("iocluster_redis_errors_total", "task" => task).increment(0);
        metrics::counter!("iocluster_redis_reconnects_total", "task" => task).increment(0);
    }
    metrics::gauge!("iocluster_connections").set(0.0);
    metrics::gauge!("iocluster_inflight_events").set(0.0);
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
