//! What operators see, checked on real nodes: the metrics docs/DEPLOY.md
//! lists (both ways, for every node kind), the shipped Grafana dashboard and
//! Prometheus alert rules (every metric and label value they use exists on
//! live nodes), the logs of a Redis outage and of a start without Redis, and
//! a frontend started from another working directory.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use iocluster_tests::{Cluster, Process, bin, eventually, free_port, http, wait_http_ok};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(15);

/// The node kinds, as docs/DEPLOY.md's metric table names them.
const KINDS: [&str; 3] = ["io", "app", "frontend"];

/// The metric families docs/DEPLOY.md lists for each node kind.
fn documented() -> BTreeMap<&'static str, BTreeSet<String>> {
    let deploy =
        std::fs::read_to_string(iocluster_tests::workspace_root().join("docs/DEPLOY.md")).unwrap();
    let mut table: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
    for row in deploy
        .lines()
        .filter(|line| line.starts_with("| `iocluster_") || line.starts_with("| `process_"))
    {
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        let nodes: Vec<&str> = cells[2].split(", ").collect();
        for kind in KINDS {
            if !nodes.contains(&kind) && !nodes.contains(&"all") {
                continue;
            }
            for name in cells[1].split(", ") {
                let name = name.trim_matches('`').split('{').next().unwrap();
                table.entry(kind).or_default().insert(name.to_owned());
            }
        }
    }
    table
}

/// One sample of a Prometheus text exposition.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
}

/// The samples of an exposition (label values without escapes: ours have
/// none).
fn samples(exposition: &str) -> Vec<Sample> {
    exposition
        .lines()
        .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
        .map(|line| {
            let series = line.rsplit_once(' ').map_or(line, |(series, _)| series);
            let (name, labels) = match series.split_once('{') {
                Some((name, rest)) => (name, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            let labels = labels
                .split("\",")
                .filter_map(|pair| pair.split_once("=\""))
                .map(|(key, value)| (key.to_owned(), value.trim_end_matches('"').to_owned()))
                .collect();
            Sample {
                name: name.to_owned(),
                labels,
            }
        })
        .collect()
}

/// The families an exposition describes (`# HELP name ...`).
fn described(exposition: &str) -> BTreeSet<String> {
    exposition
        .lines()
        .filter_map(|line| line.strip_prefix("# HELP "))
        .filter_map(|rest| rest.split(' ').next())
        .map(str::to_owned)
        .collect()
}

/// Whether `sample` belongs to `family` (a histogram's series carry a suffix).
fn of_family(sample: &str, family: &str) -> bool {
    sample == family
        || ["_bucket", "_sum", "_count"]
            .iter()
            .any(|suffix| sample.strip_suffix(suffix) == Some(family))
}

/// A fresh io-node, app-node and frontend with ops listeners, and the
/// `/metrics` of each by kind, read before any client traffic (the app-node's
/// once its first lease beat has read the queue depth).
async fn fresh_cluster(
    test: &str,
) -> (
    Cluster,
    iocluster_tests::FrontendNode,
    BTreeMap<&'static str, String>,
) {
    let cluster = Cluster::builder(test)
        .io_nodes(1)
        .app_nodes("iocluster-test-app", 1)
        .start()
        .await;
    let frontend = cluster.start_frontend().await;
    let addrs = [
        ("io", cluster.io[0].ops_addr()),
        ("app", cluster.apps[0].ops_addr()),
        ("frontend", frontend.ops_addr()),
    ];
    let mut expositions = BTreeMap::new();
    for (kind, addr) in addrs {
        let exposition = eventually(WAIT, "the queue depth sampled", || {
            let addr = addr.clone();
            async move {
                let text = http(&addr, "GET", "/metrics", &[], b"").await.ok()?.text();
                (kind == "frontend" || text.contains("\niocluster_queue_depth ")).then_some(text)
            }
        })
        .await;
        expositions.insert(kind, exposition);
    }
    (cluster, frontend, expositions)
}

/// Every metric docs/DEPLOY.md lists for a node kind is described and has
/// a sample on a fresh node of that kind (counters at 0, each label value
/// included), and every family a node describes is listed for its kind.
#[tokio::test]
async fn every_node_kind_exports_exactly_what_deploy_md_lists() {
    let (_cluster, frontend, expositions) = fresh_cluster("ops-table").await;
    let table = documented();
    for kind in KINDS {
        let exposition = &expositions[kind];
        let listed = &table[kind];
        let samples = samples(exposition);
        for name in listed {
            assert!(
                exposition.contains(&format!("# HELP {name} ")),
                "{kind}: no HELP for {name}"
            );
            assert!(
                samples.iter().any(|sample| of_family(&sample.name, name)),
                "{kind}: no sample of {name} before any traffic"
            );
        }
        let unlisted: Vec<_> = described(exposition).difference(listed).cloned().collect();
        assert!(
            unlisted.is_empty(),
            "{kind} exports families docs/DEPLOY.md does not list for it: {unlisted:?}"
        );
        assert!(
            samples
                .iter()
                .any(|sample| sample.name == "iocluster_build_info"
                    && sample.labels.get("version").map(String::as_str)
                        == Some(env!("CARGO_PKG_VERSION"))
                    && sample.labels.contains_key("commit")),
            "{kind}: no iocluster_build_info with the version"
        );
    }
    assert!(table["io"].len() >= 25, "{:?}", table["io"]);
    assert!(table["app"].len() >= 12, "{:?}", table["app"]);
    assert!(table["frontend"].len() >= 12, "{:?}", table["frontend"]);
    // The process metrics are real readings, not placeholders.
    for kind in KINDS {
        let text = &expositions[kind];
        let value = |name: &str| -> f64 {
            text.lines()
                .find_map(|line| line.strip_prefix(&format!("{name} ")))
                .and_then(|value| value.trim().parse().ok())
                .unwrap_or_else(|| panic!("{kind}: no {name}"))
        };
        assert!(value("process_resident_memory_bytes") > 1e6, "{kind}: RSS");
        assert!(value("process_open_fds") >= 3.0, "{kind}: open fds");
        assert!(
            value("process_start_time_seconds") > 1.6e9,
            "{kind}: start time"
        );
    }
    // The frontend's own counters count.
    let ops = frontend.ops_addr();
    let before = iocluster_tests::metric(&ops, "iocluster_config_requests_total").await;
    let page = http(&frontend.addr(), "GET", "/config.json", &[], b"")
        .await
        .unwrap();
    assert_eq!(page.status, 200);
    let refused = http(
        &frontend.admin_addr(),
        "GET",
        "/api/v1/cluster",
        &[("Authorization", "Bearer not-the-key-0123456789")],
        b"",
    )
    .await
    .unwrap();
    assert_eq!(refused.status, 401);
    let (status, _) = frontend.api("GET", "/api/v1/cluster", None).await;
    assert_eq!(status, 200);
    for (sample, expected) in [
        ("iocluster_config_requests_total", before + 1.0),
        ("iocluster_admin_auth_refused_total", 1.0),
        (r#"iocluster_admin_requests_total{status="4xx"}"#, 1.0),
        (r#"iocluster_admin_requests_total{status="2xx"}"#, 1.0),
    ] {
        assert_eq!(
            iocluster_tests::metric(&ops, sample).await,
            expected,
            "{sample}"
        );
    }
}

/// Where a PromQL expression names a metric: the name, and the label values
/// it matches exactly (`name{label="value"}`).
fn selectors(expr: &str) -> Vec<(String, Vec<(String, String)>)> {
    let mut found = Vec::new();
    let bytes = expr.as_bytes();
    let mut at = 0;
    while at < bytes.len() {
        let starts_word =
            at == 0 || !(bytes[at - 1].is_ascii_alphanumeric() || bytes[at - 1] == b'_');
        let rest = &expr[at..];
        if starts_word && (rest.starts_with("iocluster_") || rest.starts_with("process_")) {
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            let name = rest[..end].to_owned();
            let mut matchers = Vec::new();
            if rest[end..].starts_with('{') {
                let close = rest[end..].find('}').expect("unclosed selector") + end;
                for matcher in rest[end + 1..close].split(',') {
                    // Only exact matches name a value that must exist.
                    if let Some((label, value)) = matcher.split_once("=\"")
                        && !label.ends_with(['!', '=', '~'])
                    {
                        matchers.push((
                            label.trim().to_owned(),
                            value.trim_end_matches('"').to_owned(),
                        ));
                    }
                }
            }
            found.push((name, matchers));
            at += end;
        } else {
            at += rest.chars().next().map_or(1, char::len_utf8);
        }
    }
    found
}

/// Checks that every metric (and exactly matched label value) an
/// expression uses is exported by some fresh node.
fn check_expr(where_: &str, expr: &str, all: &[Sample]) -> usize {
    let used = selectors(expr);
    for (name, matchers) in &used {
        let family: Vec<&Sample> = all.iter().filter(|s| s.name == *name).collect();
        assert!(
            !family.is_empty(),
            "{where_}: no node exports {name} ({expr})"
        );
        for (label, value) in matchers {
            assert!(
                family.iter().any(|s| s.labels.get(label) == Some(value)),
                "{where_}: no {name} has {label}={value:?} ({expr})"
            );
        }
    }
    used.len()
}

/// The shipped dashboard and alert rules parse, are well formed, and use
/// only metrics (and label values) that live nodes export.
#[tokio::test]
async fn the_dashboard_and_alert_rules_use_only_metrics_nodes_export() {
    let (cluster, _frontend, expositions) = fresh_cluster("ops-dashboard").await;
    let all: Vec<Sample> = expositions
        .values()
        .flat_map(|text| samples(text))
        .collect();
    let root = iocluster_tests::workspace_root();

    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(root.join("deploy/grafana/iocluster.json")).unwrap(),
    )
    .expect("the dashboard is JSON");
    assert_eq!(dashboard["uid"], "iocluster");
    let variables = dashboard["templating"]["list"].as_array().unwrap();
    assert!(
        variables
            .iter()
            .any(|v| v["name"] == "datasource" && v["query"] == "prometheus"),
        "a Prometheus data source variable"
    );
    let panels = dashboard["panels"].as_array().unwrap();
    let mut ids = BTreeSet::new();
    let mut titles = BTreeSet::new();
    let mut used = 0;
    let mut queries = Vec::new();
    for panel in panels {
        let id = panel["id"].as_u64().expect("every panel has an id");
        assert!(ids.insert(id), "panel id {id} twice");
        let title = panel["title"].as_str().expect("every panel has a title");
        titles.insert(title.to_owned());
        for key in ["h", "w", "x", "y"] {
            assert!(panel["gridPos"][key].is_u64(), "{title}: gridPos.{key}");
        }
        if panel["type"] == "row" {
            continue;
        }
        assert_eq!(panel["datasource"]["uid"], "${datasource}", "{title}");
        let targets = panel["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "{title}: no query");
        for target in targets {
            let expr = target["expr"].as_str().expect("a PromQL expr");
            used += check_expr(&format!("panel {title:?}"), expr, &all);
            queries.push(expr.replace("$__rate_interval", "5m"));
        }
    }
    // The panels the cluster's operators need.
    for wanted in [
        "Connections",
        "Events /s",
        "Deliveries /s",
        "Queue depth",
        "In-flight",
        "Handler latency",
        "Redeliveries /s",
        "Slow-client closes /s",
        "Redis errors /s",
    ] {
        assert!(titles.contains(wanted), "no panel {wanted:?}: {titles:?}");
    }
    assert!(used >= 30, "{used} metric uses in the dashboard");

    let text = std::fs::read_to_string(root.join("deploy/prometheus/alerts.yml")).unwrap();
    let docs = yaml_rust2::YamlLoader::load_from_str(&text).expect("alerts.yml is YAML");
    let groups = docs[0]["groups"].as_vec().expect("groups");
    let mut names = BTreeSet::new();
    for group in groups {
        assert!(group["name"].as_str().is_some(), "a group without a name");
        for rule in group["rules"].as_vec().expect("rules") {
            let name = rule["alert"].as_str().expect("every rule is an alert");
            assert!(names.insert(name.to_owned()), "alert {name} twice");
            let expr = rule["expr"].as_str().expect("an expr");
            assert!(
                ["critical", "warning", "info"]
                    .contains(&rule["labels"]["severity"].as_str().unwrap_or("")),
                "{name}: severity"
            );
            assert!(
                rule["annotations"]["summary"].as_str().is_some(),
                "{name}: summary"
            );
            if let Some(wait) = rule["for"].as_str() {
                assert!(
                    wait.trim_end_matches(['s', 'm', 'h'])
                        .parse::<u32>()
                        .is_ok(),
                    "{name}: for {wait}"
                );
            }
            let uses = check_expr(&format!("alert {name}"), expr, &all);
            // `up` is Prometheus's own; every other rule reads our metrics.
            assert!(
                uses > 0 || expr.starts_with("up{"),
                "{name} reads no metric"
            );
        }
    }
    assert!(names.len() >= 8, "{names:?}");
    // With Prometheus's own checker at hand, its verdict too on the PromQL
    // syntax: of the rules, and of the dashboard's queries as recording
    // rules (Grafana's $__rate_interval as 5m).
    let mut recorded = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (index, query) in queries.iter().enumerate() {
        recorded.push_str(&format!(
            "      - record: dashboard:query{index}\n        expr: {}\n",
            serde_json::to_string(query).unwrap()
        ));
    }
    let dashboard_rules = cluster.logs().join("dashboard-queries.yml");
    std::fs::write(&dashboard_rules, recorded).unwrap();
    for file in [root.join("deploy/prometheus/alerts.yml"), dashboard_rules] {
        if let Ok(output) = Command::new("promtool")
            .args(["check", "rules"])
            .arg(&file)
            .output()
        {
            assert!(
                output.status.success(),
                "promtool on {}: {}{}",
                file.display(),
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
        }
    }
}

/// A node process started by a test, logging JSON lines.
fn spawn_node(logs: &Path, name: &str, binary: &str, args: &[String]) -> Process {
    let mut command = Command::new(bin(binary));
    command
        .args(args)
        .args(["--log-format", "json"])
        .env("RUST_LOG", "info");
    Process::spawn(command, logs.join(format!("{name}.log")))
}

/// The JSON log lines of a node.
fn log_lines(logs: &Path, name: &str) -> Vec<Value> {
    std::fs::read_to_string(logs.join(format!("{name}.log")))
        .unwrap_or_default()
        .lines()
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect()
}

fn message(line: &Value) -> &str {
    line["fields"]["message"].as_str().unwrap_or("")
}

/// During a Redis outage of several seconds (many retries at 50 ms to 2 s)
/// each node's tasks write one warn line each, not one per retry, and one
/// info line each when Redis answers again.
#[tokio::test]
async fn a_redis_outage_is_logged_once_per_task_and_its_end_once() {
    let mut cluster = Cluster::builder("ops-outage-logs")
        .io_nodes(0)
        .app_nodes("iocluster-test-app", 0)
        .start()
        .await;
    let logs = cluster.logs().to_path_buf();
    let args = |list: &[&str]| -> Vec<String> {
        let mut args = vec![
            "--redis".to_owned(),
            cluster.redis.url(),
            "--prefix".to_owned(),
            cluster.prefix.clone(),
        ];
        args.extend(list.iter().map(|arg| arg.to_string()));
        args
    };
    let lease = iocluster_tests::LEASE_MS.to_string();
    let (io_ops, app_ops, fe_ops) = (free_port(), free_port(), free_port());
    let fe_port = free_port();
    let _io = spawn_node(
        &logs,
        "io",
        "iocluster-io-node",
        &args(&[
            "--lease",
            &lease,
            "--listen",
            &format!("127.0.0.1:{}", free_port()),
            "--ops-listen",
            &format!("127.0.0.1:{io_ops}"),
        ]),
    );
    let _app = spawn_node(
        &logs,
        "app",
        "iocluster-test-app",
        &args(&[
            "--lease",
            &lease,
            "--app-id",
            "app0",
            "--ops-listen",
            &format!("127.0.0.1:{app_ops}"),
        ]),
    );
    let _frontend = spawn_node(
        &logs,
        "frontend",
        "iocluster-frontend",
        &args(&[
            "--listen",
            &format!("127.0.0.1:{fe_port}"),
            "--admin-listen",
            &format!("127.0.0.1:{}", free_port()),
            "--ops-listen",
            &format!("127.0.0.1:{fe_ops}"),
        ]),
    );
    for port in [io_ops, app_ops, fe_ops] {
        wait_http_ok(&format!("127.0.0.1:{port}"), "/ready").await;
    }
    let frontend = format!("127.0.0.1:{fe_port}");
    wait_http_ok(&frontend, "/config.json").await;

    cluster.redis.stop();
    // Long enough for every task to retry many times; page loads meanwhile
    // ask the frontend for the io-nodes again and again.
    for _ in 0..12 {
        let _ = tokio::time::timeout(
            Duration::from_secs(1),
            http(&frontend, "GET", "/config.json", &[], b""),
        )
        .await;
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    cluster.redis.restart().await;
    for port in [io_ops, app_ops] {
        wait_http_ok(&format!("127.0.0.1:{port}"), "/ready").await;
    }
    wait_http_ok(&frontend, "/config.json").await;

    for node in ["io", "app", "frontend"] {
        // Every task that warned says when Redis is back.
        let lines = eventually(WAIT, "the outage's end in the log", || {
            let lines = log_lines(&logs, node);
            let warned: BTreeSet<String> = outage_tasks(&lines, "WARN");
            let ended: BTreeSet<String> = outage_tasks(&lines, "INFO");
            std::future::ready((!warned.is_empty() && warned == ended).then_some(lines))
        })
        .await;
        let mut warnings: BTreeMap<String, usize> = BTreeMap::new();
        for line in lines.iter().filter(|line| line["level"] == "WARN") {
            *warnings.entry(message(line).to_owned()).or_default() += 1;
        }
        for (text, count) in &warnings {
            assert_eq!(
                *count, 1,
                "{node}: {count} warn lines {text:?} for one outage"
            );
        }
        let ends = lines
            .iter()
            .filter(|line| message(line) == "Redis answers again")
            .count();
        assert_eq!(
            ends,
            outage_tasks(&lines, "INFO").len(),
            "{node}: one end line per task"
        );
    }
}

/// The tasks that logged an outage line of `level`: a warn when it begins
/// (`...; retrying`), an info when it ends.
fn outage_tasks(lines: &[Value], level: &str) -> BTreeSet<String> {
    lines
        .iter()
        .filter(|line| line["level"] == level)
        .filter(|line| {
            let text = message(line);
            if level == "WARN" {
                text.ends_with("; retrying")
            } else {
                text == "Redis answers again"
            }
        })
        .filter_map(|line| line["fields"]["task"].as_str().map(str::to_owned))
        .collect()
}

/// An app-node and a frontend started while Redis is down say so at once,
/// keep retrying with backoff (a warn line every ten attempts, not one per
/// attempt) and start when it comes up; with a start timeout they exit
/// non-zero instead, for supervisors that restart them.
#[tokio::test]
async fn app_nodes_and_frontends_started_before_redis_wait_or_exit() {
    // An app-node that needs nothing from Redis but what the SDK does (the
    // test app opens a Redis connection of its own before the SDK starts).
    const APP: &str = "iocluster-example-echo";
    let mut cluster = Cluster::builder("ops-redis-late")
        .io_nodes(0)
        .app_nodes("iocluster-test-app", 0)
        .start()
        .await;
    cluster.redis.stop();
    let logs = cluster.logs().to_path_buf();
    let redis = cluster.redis.url();
    let app_args = |ops: u16, extra: &[&str]| -> Vec<String> {
        let mut args: Vec<String> = [
            "--redis",
            &redis,
            "--prefix",
            &cluster.prefix,
            "--app-id",
            &format!("app-{ops}"),
            "--ops-listen",
            &format!("127.0.0.1:{ops}"),
        ]
        .iter()
        .map(|arg| arg.to_string())
        .collect();
        args.extend(extra.iter().map(|arg| arg.to_string()));
        args
    };
    let frontend_args = |ops: u16, extra: &[&str]| -> Vec<String> {
        let mut args: Vec<String> = [
            "--redis",
            &redis,
            "--prefix",
            &cluster.prefix,
            "--listen",
            &format!("127.0.0.1:{}", free_port()),
            "--admin-listen",
            &format!("127.0.0.1:{}", free_port()),
            "--ops-listen",
            &format!("127.0.0.1:{ops}"),
        ]
        .iter()
        .map(|arg| arg.to_string())
        .collect();
        args.extend(extra.iter().map(|arg| arg.to_string()));
        args
    };
    let (app_ops, fe_ops) = (free_port(), free_port());
    let mut patient = [
        (
            "app",
            spawn_node(&logs, "app", APP, &app_args(app_ops, &[])),
            app_ops,
        ),
        (
            "frontend",
            spawn_node(
                &logs,
                "frontend",
                "iocluster-frontend",
                &frontend_args(fe_ops, &[]),
            ),
            fe_ops,
        ),
    ];
    let mut impatient = [
        (
            "app-impatient",
            spawn_node(
                &logs,
                "app-impatient",
                APP,
                &app_args(free_port(), &["--redis-start-timeout", "300"]),
            ),
        ),
        (
            "frontend-impatient",
            spawn_node(
                &logs,
                "frontend-impatient",
                "iocluster-frontend",
                &frontend_args(free_port(), &["--redis-start-timeout", "300"]),
            ),
        ),
    ];
    let says_unreachable = |lines: &[Value]| {
        lines
            .iter()
            .filter(|line| {
                line["level"] == "WARN" && message(line).starts_with("cannot reach Redis")
            })
            .count()
    };
    for (name, _, _) in &patient {
        eventually(WAIT, "the node says Redis is unreachable", || async {
            (says_unreachable(&log_lines(&logs, name)) > 0).then_some(())
        })
        .await;
    }
    for (name, process) in &mut impatient {
        let status = eventually(WAIT, "the impatient node exits", || {
            let status = process.try_status();
            async move { status }
        })
        .await;
        assert!(!status.success(), "{name} gave up with an error");
        let lines = log_lines(&logs, name);
        assert!(
            lines
                .iter()
                .any(|line| message(line) == "Redis did not answer in time: giving up"),
            "{name}: {lines:?}"
        );
    }
    // The backoff grows to 5 s: over these seconds a handful of attempts,
    // and a warn line only every ten of them.
    tokio::time::sleep(Duration::from_secs(3)).await;
    for (name, process, ops) in &mut patient {
        assert!(process.is_running(), "{name} still waits");
        // Alive (a liveness probe must not kill a node that waits) and not
        // ready.
        let addr = format!("127.0.0.1:{ops}");
        let health = http(&addr, "GET", "/health", &[], b"").await;
        assert_eq!(health.map(|r| r.status).ok(), Some(200), "{name} alive");
        let ready = http(&addr, "GET", "/ready", &[], b"").await;
        assert_eq!(
            ready.map(|r| r.status).ok(),
            Some(503),
            "{name} not ready yet"
        );
        assert_eq!(
            says_unreachable(&log_lines(&logs, name)),
            1,
            "{name}: one warn line for the first ten attempts"
        );
    }
    cluster.redis.restart().await;
    for (name, process, ops) in &mut patient {
        wait_http_ok(&format!("127.0.0.1:{ops}"), "/ready").await;
        let lines = log_lines(&logs, name);
        assert!(
            lines
                .iter()
                .any(|line| message(line) == "Redis answers: starting"),
            "{name}: {lines:?}"
        );
        let status = process.terminate(WAIT).await.unwrap();
        assert!(status.success(), "{name} stopped cleanly");
    }
}

/// A frontend started from another working directory with a config file
/// whose paths are relative serves the pages and bundle the file names
/// (relative to the file), and refuses to start when the bundle is missing.
#[tokio::test]
async fn a_frontend_reads_its_files_relative_to_its_config_file() {
    let cluster = Cluster::builder("ops-frontend-paths")
        .io_nodes(0)
        .app_nodes("iocluster-test-app", 0)
        .start()
        .await;
    let logs = cluster.logs().to_path_buf();
    let site = logs.join("site");
    std::fs::create_dir_all(site.join("etc")).unwrap();
    std::fs::create_dir_all(site.join("www")).unwrap();
    std::fs::write(
        site.join("www/index.html"),
        "<p>served from the config's directory</p>",
    )
    .unwrap();
    std::fs::write(site.join("bundle.js"), "/* the bundle */").unwrap();
    let write_config = |name: &str, bundle: &str| {
        let path = site.join("etc").join(name);
        std::fs::write(
            &path,
            format!(
                "redis = {:?}\nprefix = {:?}\nstatic_dir = \"../www\"\nclient_bundle = {bundle:?}\n",
                cluster.redis.url(),
                cluster.prefix
            ),
        )
        .unwrap();
        path
    };
    let good = write_config("frontend.toml", "../bundle.js");
    let elsewhere = std::env::temp_dir();
    let port = free_port();
    let mut command = Command::new(bin("iocluster-frontend"));
    command
        .current_dir(&elsewhere)
        .arg("--config")
        .arg(&good)
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--admin-listen", &format!("127.0.0.1:{}", free_port())]);
    let _frontend = Process::spawn(command, logs.join("frontend.log"));
    let addr = format!("127.0.0.1:{port}");
    wait_http_ok(&addr, "/config.json").await;
    let page = http(&addr, "GET", "/", &[], b"").await.unwrap();
    assert_eq!(page.status, 200);
    assert_eq!(page.text(), "<p>served from the config's directory</p>");
    let bundle = http(&addr, "GET", "/socket.io.min.js", &[], b"")
        .await
        .unwrap();
    assert_eq!(bundle.status, 200);
    assert_eq!(bundle.text(), "/* the bundle */");

    // A missing bundle: a clear error naming the resolved path, at once.
    let bad = write_config("missing.toml", "../nowhere/socket.io.min.js");
    let output = Command::new(bin("iocluster-frontend"))
        .current_dir(&elsewhere)
        .arg("--config")
        .arg(&bad)
        .args(["--listen", &format!("127.0.0.1:{}", free_port())])
        .args(["--admin-listen", &format!("127.0.0.1:{}", free_port())])
        .env_remove("RUST_BACKTRACE")
        .env_remove("RUST_LIB_BACKTRACE")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    let expected = site.join("etc").join("../nowhere/socket.io.min.js");
    assert!(
        stderr.contains(&format!("client_bundle {} is missing", expected.display())),
        "{stderr}"
    );
}
