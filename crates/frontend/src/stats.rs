//! The metrics a frontend exports, described once (`# HELP`) and present
//! from the start (each counter at 0 with each of its label values), so
//! that alerts and dashboards need no first request. What every node
//! exports alike (build info, process) is `iocluster_ops`'s.

use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;

/// The `status` label values of `iocluster_admin_requests_total`.
const STATUS_CLASSES: [&str; 3] = ["2xx", "4xx", "5xx"];

/// The `task` label values of `iocluster_redis_errors_total`: reading the
/// registry for browsers, and the admin API.
pub(crate) const REDIS_TASKS: [&str; 2] = ["registry", "admin"];

/// Describes every metric family the frontend exports and makes each
/// exist. Called once the recorder is installed (with an ops listener).
pub(crate) fn describe() {
    use metrics::describe_counter;
    describe_counter!(
        "iocluster_config_requests_total",
        "Requests for the live io-node list (/config.json, /config.js)"
    );
    describe_counter!(
        "iocluster_admin_requests_total",
        "Admin API requests answered, by status class"
    );
    describe_counter!(
        "iocluster_admin_auth_refused_total",
        "Admin API requests refused for a missing or wrong API key"
    );
    describe_counter!(
        "iocluster_redis_errors_total",
        "Failed Redis calls, by task"
    );
    metrics::counter!("iocluster_config_requests_total").increment(0);
    metrics::counter!("iocluster_admin_auth_refused_total").increment(0);
    for status in STATUS_CLASSES {
        metrics::counter!("iocluster_admin_requests_total", "status" => status).increment(0);
    }
    for task in REDIS_TASKS {
        metrics::counter!("iocluster_redis_errors_total", "task" => task).increment(0);
    }
}

/// Counts an admin API request by the class of its answer.
pub(crate) async fn count_admin_request(request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    let status = response.status().as_u16();
    let class = match status {
        500.. => "5xx",
        400.. => "4xx",
        _ => "2xx",
    };
    metrics::counter!("iocluster_admin_requests_total", "status" => class).increment(1);
    response
}
