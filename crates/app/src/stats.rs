//! The metrics an app-node exports, described once (`# HELP`) and present
//! from the start: each counter at 0 with each of its label values, each
//! histogram empty, so that alerts and dashboards need no first event.
//! The runtime records into them with the `metrics` macros; what every
//! node exports alike (build info, process, queue depth) is `iocluster_ops`'s.

use iocluster_protocol::envelope::EventKind;

/// The `task` label values of `iocluster_redis_errors_total`.
pub(crate) const REDIS_TASKS: [&str; 4] = ["taker", "publisher", "lease", "replies"];

/// Describes every metric family the app-node exports and makes each exist.
/// Called once the recorder is installed (with an ops listener).
pub(crate) fn describe() {
    use metrics::{describe_counter, describe_histogram};
    describe_counter!(
        "iocluster_events_handled_total",
        "Events handled by the application's handlers, by kind"
    );
    describe_histogram!(
        "iocluster_handler_seconds",
        metrics::Unit::Seconds,
        "Time in the application's handlers per event, by kind"
    );
    describe_counter!(
        "iocluster_redeliveries_total",
        "Events handed back to the queue from a lapsed app-node lease"
    );
    describe_counter!(
        "iocluster_redis_errors_total",
        "Failed Redis calls, by task"
    );
    for kind in [
        EventKind::Connect,
        EventKind::Message,
        EventKind::Disconnect,
    ] {
        metrics::counter!("iocluster_events_handled_total", "kind" => kind.as_str()).increment(0);
        // Registering the histogram is enough for it to be exported, empty.
        let _ = metrics::histogram!("iocluster_handler_seconds", "kind" => kind.as_str());
    }
    metrics::counter!("iocluster_redeliveries_total").increment(0);
    for task in REDIS_TASKS {
        metrics::counter!("iocluster_redis_errors_total", "task" => task).increment(0);
    }
}
