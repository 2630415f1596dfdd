//! The fixture every cluster test shares: a private `redis-server` on a free
//! port, io-nodes and app-nodes started as real processes with short
//! timings, a raw HTTP client for protocol checks, and a runner for the
//! `socket.io-client` scenarios in `tests/js`.
//!
//! Processes are killed when their handle drops, so a failing test leaves
//! nothing behind. Each node's output goes to `target/test-logs/<test>/`.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub mod proxy;
pub use proxy::RoundRobinProxy;

/// Timings short enough for tests, long enough for a loaded 2-core machine.
pub const PING_INTERVAL_MS: u64 = 400;
pub const PING_TIMEOUT_MS: u64 = 400;
pub const LEASE_MS: u64 = 1500;

/// A free TCP port on 127.0.0.1 for a server a test starts: below the
/// kernel's ephemeral range (32768 and up on Linux), so that none of the
/// many outgoing connections of tests running in parallel takes it between
/// this check and the server's bind, and never the same one twice in this
/// process.
pub fn free_port() -> u16 {
    use std::sync::Mutex;
    static GIVEN: Mutex<Vec<u16>> = Mutex::new(Vec::new());
    let mut given = GIVEN
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let start = (std::process::id() as usize * 7919) % 12_000;
    for step in 0..12_000 {
        let port = 20_000 + ((start + step * 13) % 12_000) as u16;
        if given.contains(&port) {
            continue;
        }
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            given.push(port);
            return port;
        }
    }
    panic!("no free port on 127.0.0.1 between 20000 and 31999")
}

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// Where the workspace binaries are: `IOCLUSTER_BIN_DIR`, else the target dir.
pub fn bin(name: &str) -> PathBuf {
    let dir = std::env::var_os("IOCLUSTER_BIN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let target = std::env::var_os("CARGO_TARGET_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| workspace_root().join("target"));
            target.join("debug")
        });
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: run `cargo build --workspace --bins` first",
        path.display()
    );
    path
}

/// A child process killed (SIGKILL) on drop.
pub struct Process {
    child: Option<Child>,
    pub log: PathBuf,
}

impl Process {
    pub fn spawn(command: Command, log: PathBuf) -> Process {
        let _ = std::fs::remove_file(&log);
        Self::spawn_appending(command, log)
    }

    /// Like `spawn`, keeping what an earlier run wrote to the log.
    fn spawn_appending(mut command: Command, log: PathBuf) -> Process {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("cannot open the log file");
        let err = file.try_clone().expect("cannot clone the log file");
        command
            .stdout(Stdio::from(file))
            .stderr(Stdio::from(err))
            .stdin(Stdio::null());
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {command:?}: {e}"));
        Process {
            child: Some(child),
            log,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// SIGKILL: the process gets no chance to clean up.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, then waits for the exit (SIGKILL after `grace`), without
    /// blocking the test's runtime meanwhile: its clients keep answering
    /// pings while the process takes its time to stop.
    pub async fn terminate(&mut self, grace: Duration) -> Option<std::process::ExitStatus> {
        let mut child = self.child.take()?;
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status();
        let deadline = Instant::now() + grace;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                return child.wait().ok();
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The exit status if the process has exited (without waiting).
    pub fn try_status(&mut self) -> Option<std::process::ExitStatus> {
        self.child.as_mut()?.try_wait().ok().flatten()
    }

    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

fn log_dir(test: &str) -> PathBuf {
    let dir = workspace_root().join("target").join("test-logs").join(test);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("cannot create the log directory");
    dir
}

/// A private redis-server on a free port, keeping nothing on disk. With
/// [`RedisTls`] it also listens with TLS on a second port: nodes use that
/// one ([`RedisServer::node_url`]), the test's own connections the plain
/// one.
pub struct RedisServer {
    process: Process,
    port: u16,
    dir: PathBuf,
    tls: Option<(RedisTls, u16)>,
    /// A Redis Cluster node: its cluster bus port.
    cluster_port: Option<u16>,
}

/// A CA and a server certificate for 127.0.0.1 signed by it (PEM files),
/// for Redis with TLS. Nodes trust the CA through `SSL_CERT_FILE`.
#[derive(Clone, Debug)]
pub struct RedisTls {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl RedisTls {
    /// The arguments that make a redis-server (or Sentinel) also listen
    /// with TLS on `port` and speak TLS to the servers it replicates from
    /// or watches.
    fn server_args(&self, port: u16) -> Vec<String> {
        vec![
            "--tls-port".into(),
            port.to_string(),
            "--tls-cert-file".into(),
            self.cert.display().to_string(),
            "--tls-key-file".into(),
            self.key.display().to_string(),
            "--tls-ca-cert-file".into(),
            self.ca.display().to_string(),
            "--tls-auth-clients".into(),
            "no".into(),
            "--tls-replication".into(),
            "yes".into(),
        ]
    }
}

impl RedisServer {
    pub async fn start(logs: &Path) -> RedisServer {
        Self::start_with(logs, None).await
    }

    /// A server that also listens with TLS, with `tls`'s certificate.
    pub async fn start_with(logs: &Path, tls: Option<&RedisTls>) -> RedisServer {
        Self::launch(logs, tls, false, None).await
    }

    /// A node for a Redis Cluster (not yet joined: see [`RedisCluster`]),
    /// with a short node timeout (1 s) so that a failover is quick.
    async fn start_cluster_node(logs: &Path, tls: Option<&RedisTls>) -> RedisServer {
        Self::launch(logs, tls, true, None).await
    }

    /// A replica of `master` (over TLS when the master has it).
    pub async fn start_replica(logs: &Path, master: &RedisServer) -> RedisServer {
        let tls = master.tls.as_ref().map(|(tls, _)| tls);
        Self::launch(logs, tls, false, Some(master.node_port())).await
    }

    /// Starts a server on free ports (a TLS one too with `tls`, a cluster
    /// bus port for a cluster node), replicating the master on
    /// `replica_of` if given; returns once it answers.
    async fn launch(
        logs: &Path,
        tls: Option<&RedisTls>,
        cluster: bool,
        replica_of: Option<u16>,
    ) -> RedisServer {
        let port = free_port();
        let cluster_port = cluster.then(free_port);
        let dir = logs.join(format!("redis-{port}"));
        std::fs::create_dir_all(&dir).expect("cannot create the redis directory");
        let tls = tls.map(|tls| (tls.clone(), free_port()));
        let mut command = Self::command(port, &dir, tls.as_ref(), cluster_port);
        if let Some(master) = replica_of {
            command.args(["--replicaof", "127.0.0.1", &master.to_string()]);
        }
        let process = Process::spawn_appending(command, logs.join(format!("redis-{port}.log")));
        let server = RedisServer {
            process,
            port,
            dir,
            tls,
            cluster_port,
        };
        server.wait_ready().await;
        server
    }

    fn spawn(
        port: u16,
        dir: &Path,
        logs: &Path,
        tls: Option<&(RedisTls, u16)>,
        cluster_port: Option<u16>,
    ) -> Process {
        Process::spawn_appending(
            Self::command(port, dir, tls, cluster_port),
            logs.join(format!("redis-{port}.log")),
        )
    }

    /// The port nodes use: the TLS one if there is one.
    pub fn node_port(&self) -> u16 {
        self.tls.as_ref().map_or(self.port, |(_, port)| *port)
    }

    /// The URL nodes use: `rediss://` to the TLS port if there is one.
    pub fn node_url(&self) -> String {
        match &self.tls {
            Some((_, port)) => format!("rediss://127.0.0.1:{port}"),
            None => self.url(),
        }
    }

    fn command(
        port: u16,
        dir: &Path,
        tls: Option<&(RedisTls, u16)>,
        cluster_port: Option<u16>,
    ) -> Command {
        let mut command = Command::new("redis-server");
        command
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .arg("--dir")
            .arg(dir);
        if let Some((tls, tls_port)) = tls {
            command.args(tls.server_args(*tls_port));
        }
        if let Some(cluster_port) = cluster_port {
            command
                .args(["--cluster-enabled", "yes"])
                .args(["--cluster-port", &cluster_port.to_string()])
                .args(["--cluster-node-timeout", "1000"])
                // A replica's first sync at once, not after the 5 s
                // Redis 7 waits for more replicas to share one transfer.
                .args(["--repl-diskless-sync-delay", "0"])
                .arg("--cluster-config-file")
                .arg(dir.join("nodes.conf"));
            if tls.is_some() {
                // The cluster bus over TLS too; CLUSTER SLOTS then names
                // each node's TLS port to clients that came in with TLS.
                command.args(["--tls-cluster", "yes"]);
            }
        }
        if std::process::Command::new("redis-server")
            .arg("--version")
            .output()
            .is_err()
        {
            panic!("redis-server is not installed: run scripts/test.sh, which installs it");
        }
        command
    }

    async fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(mut conn) = self.connection().await
                && redis::cmd("PING")
                    .query_async::<String>(&mut conn)
                    .await
                    .is_ok()
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "redis-server on port {} did not start",
                self.port
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub async fn connection(&self) -> redis::RedisResult<redis::aio::MultiplexedConnection> {
        redis::Client::open(self.url())?
            .get_multiplexed_async_connection()
            .await
    }

    /// Stops the server (SIGKILL).
    pub fn stop(&mut self) {
        self.process.kill();
    }

    /// Starts it again on the same port (empty: nothing is kept on disk).
    pub async fn restart(&mut self) {
        self.process.kill();
        let logs = self
            .dir
            .parent()
            .expect("redis dir has a parent")
            .to_path_buf();
        // A cluster node keeps its nodes.conf, so it rejoins its cluster
        // (as a replica, if it lost its master role meanwhile).
        self.process = Self::spawn(
            self.port,
            &self.dir,
            &logs,
            self.tls.as_ref(),
            self.cluster_port,
        );
        self.wait_ready().await;
    }
}

/// A local Redis Cluster: three masters, each with one replica, made with
/// `redis-cli --cluster create` on loopback ports, node timeout 1 s. The
/// first node is the [`Cluster`]'s `redis`; this holds the other five.
pub struct RedisCluster {
    pub nodes: Vec<RedisServer>,
}

impl RedisCluster {
    /// Starts six nodes and joins them; returns the first (for
    /// [`Cluster::redis`]) and the cluster once every node says
    /// `cluster_state:ok`.
    pub async fn start(logs: &Path, tls: Option<&RedisTls>) -> (RedisServer, RedisCluster) {
        let mut nodes = Vec::new();
        for _ in 0..6 {
            nodes.push(RedisServer::start_cluster_node(logs, tls).await);
        }
        let addresses: Vec<String> = nodes
            .iter()
            .map(|node| format!("127.0.0.1:{}", node.port))
            .collect();
        let created = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addresses)
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .output()
            .expect("cannot run redis-cli (run scripts/test.sh, which installs it)");
        assert!(
            created.status.success(),
            "redis-cli --cluster create failed: {}",
            String::from_utf8_lossy(&created.stdout)
        );
        let deadline = Instant::now() + Duration::from_secs(30);
        for node in &nodes {
            loop {
                let state = match node.connection().await {
                    Ok(mut connection) => redis::cmd("CLUSTER")
                        .arg("INFO")
                        .query_async::<String>(&mut connection)
                        .await
                        .unwrap_or_default(),
                    Err(_) => String::new(),
                };
                // A replica can be promoted only once it has synced.
                let replication = match node.connection().await {
                    Ok(mut connection) => redis::cmd("INFO")
                        .arg("replication")
                        .query_async::<String>(&mut connection)
                        .await
                        .unwrap_or_default(),
                    Err(_) => String::new(),
                };
                let synced = replication.contains("role:master")
                    || replication.contains("master_link_status:up");
                if state.contains("cluster_state:ok") && synced {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "Redis Cluster node {} never became ok and synced: {state}",
                    node.port
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        let first = nodes.remove(0);
        (first, RedisCluster { nodes })
    }

    /// The URL nodes take: `redis+cluster://` and three of the six nodes
    /// (`first` and two of the others), as a deployment names a few seeds;
    /// `rediss+cluster://` and their TLS ports when they have TLS.
    pub fn url(&self, first: &RedisServer) -> String {
        let scheme = if first.tls.is_some() {
            "rediss+cluster"
        } else {
            "redis+cluster"
        };
        format!(
            "{scheme}://127.0.0.1:{},127.0.0.1:{},127.0.0.1:{}",
            first.node_port(),
            self.nodes[0].node_port(),
            self.nodes[2].node_port()
        )
    }

    /// The same over the plain ports (the test's own connections).
    fn plain_url(&self, first: &RedisServer) -> String {
        format!(
            "redis+cluster://127.0.0.1:{},127.0.0.1:{},127.0.0.1:{}",
            first.port, self.nodes[0].port, self.nodes[2].port
        )
    }
}

/// Three Sentinels watching a master (`mymaster`) and its one replica, all
/// on loopback ports, with short failure detection (1 s).
pub struct Sentinels {
    pub replica: RedisServer,
    ports: Vec<u16>,
    /// With TLS: each Sentinel's TLS port, which nodes use.
    tls_ports: Vec<u16>,
    /// The Sentinels' own password (`requirepass`), with TLS.
    password: Option<String>,
    _processes: Vec<Process>,
}

impl Sentinels {
    /// Starts a replica of `master` and three Sentinels; returns once every
    /// Sentinel knows the replica and the other two (a failover needs them).
    /// With a master that has TLS, the Sentinels speak TLS to it and
    /// listen with TLS too, and ask clients for a password.
    pub async fn start(master: &RedisServer, logs: &Path) -> Sentinels {
        let replica = RedisServer::start_replica(logs, master).await;
        let password = master.tls.as_ref().map(|_| "sentinel-secret".to_owned());
        let mut ports = Vec::new();
        let mut tls_ports = Vec::new();
        let mut processes = Vec::new();
        for _ in 0..3 {
            let port = free_port();
            let conf = logs.join(format!("sentinel-{port}.conf"));
            let mut text = format!(
                "port {port}\nbind 127.0.0.1\ndir {dir}\n\
                 sentinel monitor mymaster 127.0.0.1 {master} 2\n\
                 sentinel down-after-milliseconds mymaster 1000\n\
                 sentinel failover-timeout mymaster 4000\n\
                 sentinel parallel-syncs mymaster 1\n",
                dir = logs.display(),
                master = master.node_port(),
            );
            if let Some(password) = &password {
                // Sentinels authenticate to each other with it too.
                text.push_str(&format!(
                    "requirepass {password}\nsentinel sentinel-pass {password}\n"
                ));
            }
            std::fs::write(&conf, text).expect("cannot write a Sentinel config");
            let mut command = Command::new("redis-server");
            command.arg(&conf).arg("--sentinel");
            if let Some((tls, _)) = &master.tls {
                let tls_port = free_port();
                command.args(tls.server_args(tls_port));
                tls_ports.push(tls_port);
            }

            processes.push(Process::spawn_appending(
                command,
                logs.join(format!("sentinel-{port}.log")),
            ));
            ports.push(port);
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        for port in &ports {
            loop {
                if Self::ready(*port, password.as_deref()).await {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "Sentinel {port} never saw the replica and its peers"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        Sentinels {
            replica,
            ports,
            tls_ports,
            password,
            _processes: processes,
        }
    }

    async fn ready(port: u16, password: Option<&str>) -> bool {
        let credentials = password.map(|p| format!(":{p}@")).unwrap_or_default();
        let Ok(client) = redis::Client::open(format!("redis://{credentials}127.0.0.1:{port}"))
        else {
            return false;
        };
        let Ok(mut connection) = client.get_multiplexed_async_connection().await else {
            return false;
        };
        let replicas: redis::RedisResult<Vec<redis::Value>> = redis::cmd("SENTINEL")
            .arg("replicas")
            .arg("mymaster")
            .query_async(&mut connection)
            .await;
        let peers: redis::RedisResult<Vec<redis::Value>> = redis::cmd("SENTINEL")
            .arg("sentinels")
            .arg("mymaster")
            .query_async(&mut connection)
            .await;
        matches!((replicas, peers), (Ok(r), Ok(p)) if !r.is_empty() && p.len() >= 2)
    }

    /// The URL nodes take: `redis+sentinel://…/mymaster`, or with TLS
    /// `rediss+sentinel://…/mymaster?sentinel_password=…`.
    pub fn url(&self) -> String {
        let tls = !self.tls_ports.is_empty();
        let ports = if tls { &self.tls_ports } else { &self.ports };
        let hosts: Vec<String> = ports
            .iter()
            .map(|port| format!("127.0.0.1:{port}"))
            .collect();
        let scheme = if tls {
            "rediss+sentinel"
        } else {
            "redis+sentinel"
        };
        let query = self
            .password
            .as_ref()
            .map(|password| format!("?sentinel_password={password}"))
            .unwrap_or_default();
        format!("{scheme}://{}/mymaster{query}", hosts.join(","))
    }
}

/// An io-node process.
pub struct IoNode {
    pub id: String,
    pub port: u16,
    /// Its ops listener (`/health`, `/ready`, `/metrics`).
    pub ops_port: u16,
    pub process: Process,
}

impl IoNode {
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn ops_addr(&self) -> String {
        format!("127.0.0.1:{}", self.ops_port)
    }
}

/// An app-node process.
pub struct AppNode {
    pub id: String,
    pub ops_port: u16,
    pub process: Process,
}

impl AppNode {
    pub fn ops_addr(&self) -> String {
        format!("127.0.0.1:{}", self.ops_port)
    }
}

/// A frontend process: public and admin listeners.
pub struct FrontendNode {
    pub port: u16,
    pub admin_port: u16,
    pub ops_port: u16,
    pub api_key: String,
    pub process: Process,
}

impl FrontendNode {
    pub fn ops_addr(&self) -> String {
        format!("127.0.0.1:{}", self.ops_port)
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn admin_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.admin_port)
    }

    pub fn admin_addr(&self) -> String {
        format!("127.0.0.1:{}", self.admin_port)
    }

    /// An admin API call with the key; returns the status and the JSON body.
    pub async fn api(
        &self,
        method: &str,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> (u16, serde_json::Value) {
        let auth = format!("Bearer {}", self.api_key);
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let response = http(
            &self.admin_addr(),
            method,
            path,
            &[
                ("Authorization", auth.as_str()),
                ("Content-Type", "application/json"),
            ],
            body.as_bytes(),
        )
        .await
        .expect("the admin API answers");
        let json = serde_json::from_slice(&response.body).unwrap_or(serde_json::Value::Null);
        (response.status, json)
    }

    /// `POST /api/v1/publish` with `request`; the status and the JSON body.
    pub async fn publish(&self, request: serde_json::Value) -> (u16, serde_json::Value) {
        self.api("POST", "/api/v1/publish", Some(request)).await
    }
}

/// The value of a Prometheus sample (`name{labels}` exactly as exposed, or
/// a bare name) from a node's ops listener; 0 when absent.
pub async fn metric(ops_addr: &str, sample: &str) -> f64 {
    let response = http(ops_addr, "GET", "/metrics", &[], b"")
        .await
        .expect("cannot read /metrics");
    assert_eq!(
        response.status, 200,
        "/metrics answered {}",
        response.status
    );
    response
        .text()
        .lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| line.rsplit_once(' '))
        .filter(|(name, _)| *name == sample)
        .filter_map(|(_, value)| value.parse::<f64>().ok())
        .sum()
}

static PREFIXES: AtomicU32 = AtomicU32::new(0);

/// Redis, io-nodes and app-nodes for one test.
pub struct Cluster {
    pub redis: RedisServer,
    /// With [`ClusterBuilder::sentinel`]: the nodes reach Redis through them.
    pub sentinels: Option<Sentinels>,
    /// With [`ClusterBuilder::redis_cluster`]: `redis` is this Redis
    /// Cluster's first node, and the nodes reach the cluster through it.
    pub redis_cluster: Option<RedisCluster>,
    /// The prefix the nodes are given (`--prefix`); their keys are under
    /// [`Cluster::key_prefix`].
    pub prefix: String,
    pub io: Vec<IoNode>,
    pub apps: Vec<AppNode>,
    logs: PathBuf,
    app_binary: String,
    io_args: Vec<String>,
    app_args: Vec<String>,
    /// The io-nodes' ping interval and timeout, ms.
    heartbeat: (u64, u64),
    lease_ms: u64,
    /// With TLS to Redis: the CA nodes trust (`SSL_CERT_FILE`).
    redis_ca: Option<PathBuf>,
}

/// How to start a [`Cluster`].
pub struct ClusterBuilder {
    test: String,
    io_nodes: usize,
    app_binary: String,
    app_nodes: usize,
    io_args: Vec<String>,
    app_args: Vec<String>,
    heartbeat: (u64, u64),
    lease_ms: u64,
    sentinel: bool,
    redis_cluster: bool,
    redis_tls: Option<RedisTls>,
}

impl Cluster {
    /// `test` names the log directory.
    pub fn builder(test: &str) -> ClusterBuilder {
        ClusterBuilder {
            test: test.to_owned(),
            io_nodes: 2,
            app_binary: "iocluster-test-app".to_owned(),
            app_nodes: 2,
            io_args: Vec::new(),
            app_args: Vec::new(),
            lease_ms: LEASE_MS,
            sentinel: false,
            redis_cluster: false,
            redis_tls: None,
            heartbeat: (PING_INTERVAL_MS, PING_TIMEOUT_MS),
        }
    }

    /// `id:pid` of every io-node, comma-separated: how scenarios that kill
    /// an io-node themselves are told which process is which.
    pub fn io_pids(&self) -> String {
        self.io
            .iter()
            .map(|node| format!("{}:{}", node.id, node.process.pid()))
            .collect::<Vec<_>>()
            .join(",")
    }

    pub fn io_urls(&self) -> Vec<String> {
        self.io.iter().map(IoNode::url).collect()
    }

    pub fn logs(&self) -> &Path {
        &self.logs
    }

    /// A command connection to the cluster's Redis (to its Redis Cluster,
    /// with [`ClusterBuilder::redis_cluster`]).
    pub async fn redis(&self) -> iocluster_ops::Redis {
        iocluster_ops::redis_client(&self.test_redis_url())
            .expect("the test Redis URL")
            .connection(Some(Duration::from_secs(10)))
            .await
            .expect("cannot connect to the test Redis")
    }

    /// The URL the nodes get.
    pub fn redis_url(&self) -> String {
        match (&self.sentinels, &self.redis_cluster) {
            (Some(sentinels), _) => sentinels.url(),
            (None, Some(redis_cluster)) => redis_cluster.url(&self.redis),
            (None, None) => self.redis.node_url(),
        }
    }

    /// The URL of the test's own connections: the plain port, or the Redis
    /// Cluster.
    fn test_redis_url(&self) -> String {
        match &self.redis_cluster {
            Some(redis_cluster) => redis_cluster.plain_url(&self.redis),
            None => self.redis.url(),
        }
    }

    /// The prefix of every key and channel name the nodes use: the
    /// `--prefix`, as a hash tag on a Redis Cluster.
    pub fn key_prefix(&self) -> String {
        iocluster_ops::cluster_prefix(self.redis_cluster.is_some(), &self.prefix)
    }

    /// Starts one more io-node (with the builder's extra flags).
    pub async fn start_io(&mut self) -> usize {
        let index = self.io.len();
        let node = self
            .spawn_io(format!("io{index}"), free_port(), free_port())
            .await;
        self.io.push(node);
        index
    }

    /// A command for one of the workspace's binaries, on this cluster's
    /// Redis and prefix.
    fn node_command(&self, binary: &str) -> Command {
        let mut command = Command::new(bin(binary));
        command.args(["--redis", &self.redis_url(), "--prefix", &self.prefix]);
        if let Some(ca) = &self.redis_ca {
            command.env("SSL_CERT_FILE", ca);
        }
        command
    }

    /// Starts a frontend on this cluster's Redis and prefix, with an API key.
    pub async fn start_frontend(&self) -> FrontendNode {
        self.start_frontend_with(&[]).await
    }

    /// [`Cluster::start_frontend`] with extra flags.
    pub async fn start_frontend_with(&self, extra: &[&str]) -> FrontendNode {
        let (port, admin_port, ops_port) = (free_port(), free_port(), free_port());
        let api_key = "test-key-0123456789abcdef".to_owned();
        let root = workspace_root();
        let mut command = self.node_command("iocluster-frontend");
        command
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--admin-listen", &format!("127.0.0.1:{admin_port}")])
            .args(["--ops-listen", &format!("127.0.0.1:{ops_port}")])
            .arg("--static-dir")
            .arg(root.join("frontend").join("static"))
            .arg("--client-bundle")
            .arg(
                root.join("frontend")
                    .join("node_modules")
                    .join("socket.io-client")
                    .join("dist")
                    .join("socket.io.min.js"),
            )
            .args(extra)
            .env("IOCLUSTER_API_KEY", &api_key)
            .env("RUST_LOG", "info,iocluster_frontend=debug");
        let process = Process::spawn(command, self.logs.join("frontend.log"));
        let node = FrontendNode {
            port,
            admin_port,
            ops_port,
            api_key,
            process,
        };
        wait_http_ok(&node.addr(), "/config.json").await;
        node
    }

    /// Kills io-node `index` (if still running) and starts it again with the
    /// same id and ports.
    pub async fn restart_io(&mut self, index: usize) {
        self.io[index].process.kill();
        let (id, port, ops) = (
            self.io[index].id.clone(),
            self.io[index].port,
            self.io[index].ops_port,
        );
        self.io[index] = self.spawn_io(id, port, ops).await;
    }

    async fn spawn_io(&self, id: String, port: u16, ops_port: u16) -> IoNode {
        let mut command = self.node_command("iocluster-io-node");
        command
            .args(["--node-id", &id])
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--ping-interval", &self.heartbeat.0.to_string()])
            .args(["--ping-timeout", &self.heartbeat.1.to_string()])
            .args(["--lease", &self.lease_ms.to_string()])
            .args(["--ops-listen", &format!("127.0.0.1:{ops_port}")])
            .args(&self.io_args)
            .env("RUST_LOG", "info,iocluster_io_node=debug");
        let log = self.logs.join(format!("{id}.log"));
        let process = Process::spawn_appending(command, log);
        let node = IoNode {
            id,
            port,
            ops_port,
            process,
        };
        wait_http_ok(&node.ops_addr(), "/ready").await;
        node
    }

    /// Starts one more app-node of the cluster's app binary.
    pub async fn start_app(&mut self) -> usize {
        let index = self.apps.len();
        let id = format!("app{index}");
        let process = self.spawn_app(&id);
        self.apps.push(process);
        self.wait_app_ready(&id).await;
        index
    }

    /// Kills app-node `index` without warning (SIGKILL; nothing if it was
    /// killed already) and starts it again at once under the same id, as a
    /// supervisor with a fixed id does: its lease has not lapsed yet.
    pub async fn restart_app(&mut self, index: usize) {
        self.apps[index].process.kill();
        let id = self.apps[index].id.clone();
        let restarted = self.spawn_app(&id);
        // Its previous life is still registered: wait for this one's /ready
        // (generously: next to a whole test suite a start can be slow; the
        // log says why if it never comes).
        let log = self.logs.join(format!("{id}.log"));
        let ready = http_ok_within(&restarted.ops_addr(), "/ready", Duration::from_secs(45)).await;
        if !ready {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(40).collect();
            panic!(
                "restarted app-node {id} not ready; its log ends:\n{}",
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
        self.apps[index] = restarted;
    }

    fn spawn_app(&self, id: &str) -> AppNode {
        let ops_port = free_port();
        let mut command = self.node_command(&self.app_binary);
        command
            .args(["--app-id", id])
            .args(["--lease", &self.lease_ms.to_string()])
            .args(["--ops-listen", &format!("127.0.0.1:{ops_port}")])
            .args(&self.app_args)
            .env("RUST_LOG", "info,iocluster_app=debug");
        // Appending: a restarted app-node's log follows its previous life's.
        let process = Process::spawn_appending(command, self.logs.join(format!("{id}.log")));
        AppNode {
            id: id.to_owned(),
            ops_port,
            process,
        }
    }

    async fn wait_app_ready(&self, id: &str) {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if self.registered("apps", id).await {
                // Registered; give it a moment to subscribe to its reply channel.
                tokio::time::sleep(Duration::from_millis(100)).await;
                return;
            }
            assert!(
                Instant::now() < deadline,
                "app-node {id} did not register; see {}",
                self.logs.display()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Runs a `tests/js` scenario with the io-node URLs (and `extra` args)
    /// and returns the JSON it printed last.
    pub async fn scenario(&self, script: &str, extra: &[&str]) -> serde_json::Value {
        self.spawn_scenario(script, extra)
            .await
            .expect("the scenario task panicked")
    }

    /// Starts a scenario in the background (to do something to the cluster
    /// while it runs).
    pub fn spawn_scenario(
        &self,
        script: &str,
        extra: &[&str],
    ) -> tokio::task::JoinHandle<serde_json::Value> {
        let mut args: Vec<String> = vec![format!("--urls={}", self.io_urls().join(","))];
        args.extend(extra.iter().map(|s| s.to_string()));
        let script = script.to_owned();
        tokio::spawn(async move { node_scenario(&script, &args).await })
    }

    /// Starts a [`LiveScenario`] with the io-node URLs (and `extra` args).
    pub fn live_scenario(&self, script: &str, extra: &[&str]) -> LiveScenario {
        let mut args: Vec<String> = vec![format!("--urls={}", self.io_urls().join(","))];
        args.extend(extra.iter().map(|s| s.to_string()));
        LiveScenario::spawn(script, &args, &self.logs)
    }

    /// `sid reason` of every disconnect event the test app handled.
    pub async fn disconnect_reasons(&self) -> Vec<String> {
        let mut redis = self.redis().await;
        redis::cmd("LRANGE")
            .arg(format!("{}:test:disconnects", self.key_prefix()))
            .arg(0)
            .arg(-1)
            .query_async(&mut redis)
            .await
            .expect("cannot read the disconnect list")
    }

    /// Events the test app handled, over every app-node.
    pub async fn handled_total(&self) -> i64 {
        let mut redis = self.redis().await;
        let counts: Vec<i64> = redis::cmd("HVALS")
            .arg(format!("{}:test:handled", self.key_prefix()))
            .query_async(&mut redis)
            .await
            .expect("cannot read the handled counters");
        counts.iter().sum()
    }

    /// The names of the keys and channels of this cluster's prefix.
    pub fn keys(&self) -> iocluster_protocol::keys::Keys {
        if self.redis_cluster.is_some() {
            iocluster_protocol::keys::Keys::sharded(self.key_prefix())
        } else {
            iocluster_protocol::keys::Keys::new(self.key_prefix())
        }
    }

    /// How many items are in app-node `app`'s in-flight lists, over every
    /// partition of the event queue.
    pub async fn inflight_len(&self, app: &str) -> i64 {
        let mut redis = self.redis().await;
        let partitions = iocluster_ops::queue_partitions(&mut redis, &self.keys())
            .await
            .expect("cannot read the queue's partitions");
        self.partition_lengths(0..partitions, |partition| vec![partition.inflight(app)])
            .await
            .iter()
            .sum()
    }

    /// For each partition `k` of `partitions`, the items in its lists that
    /// `lists` names (`LLEN` summed over them).
    pub async fn partition_lengths(
        &self,
        partitions: std::ops::Range<u16>,
        lists: impl Fn(iocluster_protocol::keys::Partition) -> Vec<String>,
    ) -> Vec<i64> {
        let mut redis = self.redis().await;
        let keys = self.keys();
        let mut lengths = Vec::new();
        for k in partitions {
            let mut total = 0;
            for list in lists(keys.partition(k)) {
                let n: i64 = redis::cmd("LLEN")
                    .arg(list)
                    .query_async(&mut redis)
                    .await
                    .expect("cannot read a list's length");
                total += n;
            }
            lengths.push(total);
        }
        lengths
    }

    /// Whether `member` is in the registry sorted set `<prefix>:<set>`
    /// (`apps`, `nodes`, `nsps`).
    pub async fn registered(&self, set: &str, member: &str) -> bool {
        let mut redis = self.redis().await;
        let score: Option<f64> = redis::cmd("ZSCORE")
            .arg(format!("{}:{set}", self.key_prefix()))
            .arg(member)
            .query_async(&mut redis)
            .await
            .expect("cannot read the registry");
        score.is_some()
    }
}

impl ClusterBuilder {
    pub fn io_nodes(mut self, n: usize) -> Self {
        self.io_nodes = n;
        self
    }

    pub fn app_nodes(mut self, binary: &str, n: usize) -> Self {
        binary.clone_into(&mut self.app_binary);
        self.app_nodes = n;
        self
    }

    /// The io-nodes' ping interval and timeout in ms, instead of the short
    /// [`PING_INTERVAL_MS`] / [`PING_TIMEOUT_MS`] (which let heartbeat tests
    /// run quickly, but a client starved of CPU for 400 ms — next to a
    /// starting browser, say — misses them).
    pub fn heartbeat(mut self, interval_ms: u64, timeout_ms: u64) -> Self {
        self.heartbeat = (interval_ms, timeout_ms);
        self
    }

    /// Extra flags for every io-node.
    pub fn io_args(mut self, args: &[&str]) -> Self {
        self.io_args = args.iter().map(|s| s.to_string()).collect();
        self
    }

    /// Leases of io-nodes and app-nodes, ms (instead of [`LEASE_MS`]).
    pub fn lease(mut self, ms: u64) -> Self {
        self.lease_ms = ms;
        self
    }

    /// Leases (8 s) and client heartbeats (2 s, 10 s timeout) longer than
    /// a Redis failover (1 s to notice the master gone, then the
    /// election), so no node's lease lapses and no client times out
    /// meanwhile: for [`Cluster::master_failover_drill`].
    pub fn outlasting_failovers(self) -> Self {
        self.lease(8_000).heartbeat(2_000, 10_000)
    }

    /// A replica and three Sentinels next to the Redis; nodes get the
    /// Sentinel URL.
    /// Nodes reach Redis (and the Sentinels, with [`Self::sentinel`]) over
    /// TLS with this certificate; they trust its CA.
    pub fn redis_tls(mut self, tls: RedisTls) -> Self {
        self.redis_tls = Some(tls);
        self
    }

    pub fn sentinel(mut self) -> Self {
        self.sentinel = true;
        self
    }

    /// A local Redis Cluster (three masters with a replica each) instead
    /// of one Redis; nodes get its `redis+cluster://` URL.
    pub fn redis_cluster(mut self) -> Self {
        self.redis_cluster = true;
        self
    }

    /// Extra flags for every app-node.
    pub fn app_args(mut self, args: &[&str]) -> Self {
        self.app_args = args.iter().map(|s| s.to_string()).collect();
        self
    }

    pub async fn start(self) -> Cluster {
        let logs = log_dir(&self.test);
        let (redis, redis_cluster) = if self.redis_cluster {
            let (first, rest) = RedisCluster::start(&logs, self.redis_tls.as_ref()).await;
            (first, Some(rest))
        } else {
            (
                RedisServer::start_with(&logs, self.redis_tls.as_ref()).await,
                None,
            )
        };
        let sentinels = if self.sentinel {
            Some(Sentinels::start(&redis, &logs).await)
        } else {
            None
        };
        let n = PREFIXES.fetch_add(1, Ordering::Relaxed);
        let mut cluster = Cluster {
            redis,
            sentinels,
            redis_cluster,
            prefix: format!("t{}x{n}", std::process::id()),
            io: Vec::new(),
            apps: Vec::new(),
            logs,
            app_binary: self.app_binary,
            io_args: self.io_args,
            app_args: self.app_args,
            heartbeat: self.heartbeat,
            lease_ms: self.lease_ms,
            redis_ca: self.redis_tls.map(|tls| tls.ca),
        };
        for _ in 0..self.app_nodes {
            cluster.start_app().await;
        }
        for _ in 0..self.io_nodes {
            cluster.start_io().await;
        }
        cluster
    }
}

/// The parts of `cluster.mjs`, each "ok" when it passed.
pub const CROSS_NODE_PARTS: [&str; 10] = [
    "admission",
    "rooms",
    "broadcast",
    "leave",
    "acks",
    "binary",
    "namespaces",
    "order",
    "early_events",
    "disconnects",
];

impl Cluster {
    /// Runs `cluster.mjs` (admission, rooms, broadcasts, acks both ways,
    /// binary, namespaces, order, early events, disconnects, across the
    /// io-nodes), asserts every part passed, and returns its report.
    pub async fn cross_node_scenario(&self) -> serde_json::Value {
        let report = self.scenario("cluster.mjs", &[]).await;
        for part in CROSS_NODE_PARTS {
            assert_eq!(report[part], "ok", "{part}: {report}");
        }
        report
    }

    /// The failover drill: [`Cluster::kill_master_under_load`] with
    /// `clients` × `events`, every ack asserted (none lost, no client
    /// disconnected: load.mjs does not reconnect), then the whole
    /// cross-node scenario on the new master. Prints how long after the
    /// kill the last ack came (`what` names the setup).
    pub async fn master_failover_drill(&mut self, clients: usize, events: usize, what: &str) {
        let (result, took) = self.kill_master_under_load(clients, events).await;
        eprintln!(
            "{what}: master killed, every ack in {:.1} s after the kill",
            took.as_secs_f64()
        );
        assert_eq!(result["acked"], clients * events, "{result}");
        self.cross_node_scenario().await;
    }

    /// Kills the Redis master (SIGKILL) one second into `load.mjs` with
    /// `clients` stock clients, each sending `events` acked events of 60 ms
    /// one after another and not reconnecting (a client disconnected by the
    /// failover would miss its acks); returns the scenario's result and the
    /// time from the kill until every client was done. For clusters behind
    /// Sentinel or on a Redis Cluster (where the master killed is the one
    /// holding the nodes' keys): the nodes must follow the promoted replica.
    pub async fn kill_master_under_load(
        &mut self,
        clients: usize,
        events: usize,
    ) -> (serde_json::Value, Duration) {
        let load = self.slow_load(clients, events).await;
        let killed = Instant::now();
        self.kill_redis_master().await;
        let result = load.await.expect("the load scenario panicked");
        (result, killed.elapsed())
    }

    /// Starts `load.mjs` with `clients` stock clients, each sending
    /// `events` acked events of 60 ms one after another, not reconnecting
    /// and waiting up to 30 s for each ack; returns it one second in, for
    /// the caller to break something under it.
    pub async fn slow_load(
        &self,
        clients: usize,
        events: usize,
    ) -> tokio::task::JoinHandle<serde_json::Value> {
        let load = self.spawn_scenario(
            "load.mjs",
            &[
                &format!("--clients={clients}"),
                &format!("--events={events}"),
                "--slow=60",
                "--ackTimeout=30000",
            ],
        );
        tokio::time::sleep(Duration::from_millis(1_000)).await;
        load
    }
}

impl Cluster {
    /// Kills (SIGKILL) the Redis master: the one server, the Sentinels'
    /// master, or on a Redis Cluster the master of the slot that holds the
    /// nodes' keys. Returns its port.
    pub async fn kill_redis_master(&mut self) -> u16 {
        let Some(redis_cluster) = &mut self.redis_cluster else {
            self.redis.stop();
            return self.redis.port();
        };
        let port = {
            let mut redis = iocluster_ops::redis_client(&redis_cluster.plain_url(&self.redis))
                .expect("the Redis Cluster URL")
                .connection(Some(Duration::from_secs(5)))
                .await
                .expect("cannot reach the Redis Cluster");
            let tag = iocluster_ops::cluster_prefix(true, &self.prefix);
            let address = iocluster_ops::slot_master(&mut redis, &tag)
                .await
                .expect("no master serves the nodes' slot");
            address
                .rsplit_once(':')
                .and_then(|(_, port)| port.parse::<u16>().ok())
                .expect("the master's address has a port")
        };
        self.stop_redis_server(port);
        port
    }

    /// Stops (SIGKILL) the Redis server on `port`: the first one, or a
    /// node of the Redis Cluster.
    pub fn stop_redis_server(&mut self, port: u16) {
        if self.redis.port() == port {
            self.redis.stop();
            return;
        }
        self.redis_cluster
            .as_mut()
            .and_then(|cluster| cluster.nodes.iter_mut().find(|node| node.port() == port))
            .expect("a server of the Redis Cluster")
            .stop();
    }
}

/// Polls until `GET path` answers 200.
pub async fn wait_http_ok(addr: &str, path: &str) {
    assert!(
        http_ok_within(addr, path, Duration::from_secs(15)).await,
        "{addr}{path} never answered 200"
    );
}

/// Polls until `GET path` answers 200; `false` if it did not within `wait`.
pub async fn http_ok_within(addr: &str, path: &str, wait: Duration) -> bool {
    let deadline = Instant::now() + wait;
    loop {
        if let Ok(response) = http(addr, "GET", path, &[], b"").await
            && response.status == 200
        {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A raw HTTP/1.1 response.
#[derive(Debug)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// One HTTP/1.1 request on a fresh connection (`Connection: close`), for
/// protocol checks that a browser client would never send.
pub async fn http(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<HttpResponse> {
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    let mut request = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    stream.write_all(request.as_bytes()).await?;
    stream.write_all(body).await?;
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), stream.read_to_end(&mut raw))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "no response"))??;
    parse_response(&raw)
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidData, "bad response"))
}

fn parse_response(raw: &[u8]) -> Option<HttpResponse> {
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&raw[..split]).ok()?;
    let mut lines = head.split("\r\n");
    let status = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    let chunked = headers.iter().any(|(n, v)| {
        n.eq_ignore_ascii_case("transfer-encoding") && v.eq_ignore_ascii_case("chunked")
    });
    if chunked {
        body = dechunk(&body)?;
    }
    Some(HttpResponse {
        status,
        headers,
        body,
    })
}

fn dechunk(mut body: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = body.windows(2).position(|w| w == b"\r\n")?;
        let size =
            usize::from_str_radix(std::str::from_utf8(&body[..line_end]).ok()?.trim(), 16).ok()?;
        body = &body[line_end + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(body.get(..size)?);
        body = body.get(size + 2..)?;
    }
}

/// Runs `node tests/js/<script> <args>`, requires success, and returns the
/// JSON on the last line of its output.
pub async fn node_scenario(script: &str, args: &[String]) -> serde_json::Value {
    let js = js_dir();
    let mut command = tokio::process::Command::new("node");
    command.arg(js.join(script)).args(args).current_dir(&js);
    run_scenario(script, command).await
}

/// The python of `tests/py/.venv`, where scripts/test.sh installs
/// `tests/py/requirements.txt` (python-socketio and its client extras).
pub fn python() -> PathBuf {
    let python = workspace_root()
        .join("tests")
        .join("py")
        .join(".venv")
        .join("bin")
        .join("python");
    assert!(
        python.exists(),
        "{} is missing: run scripts/test.sh (or source scripts/lib.sh; ensure_python)",
        python.display()
    );
    python
}

/// Runs `tests/py/<script> <args>` with [`python`], requires success, and
/// returns the JSON on the last line of its output.
pub async fn python_scenario(script: &str, args: &[String]) -> serde_json::Value {
    let py = workspace_root().join("tests").join("py");
    let mut command = tokio::process::Command::new(python());
    command.arg(py.join(script)).args(args).current_dir(&py);
    run_scenario(script, command).await
}

fn js_dir() -> PathBuf {
    let js = workspace_root().join("tests").join("js");
    assert!(
        js.join("node_modules").join("socket.io-client").exists(),
        "tests/js/node_modules is missing: run scripts/test.sh (or npm ci in tests/js)"
    );
    js
}

/// Limit of one scenario run.
const SCENARIO_LIMIT: Duration = Duration::from_secs(120);

async fn run_scenario(script: &str, mut command: tokio::process::Command) -> serde_json::Value {
    let output = tokio::time::timeout(SCENARIO_LIMIT, command.kill_on_drop(true).output())
        .await
        .unwrap_or_else(|_| panic!("{script} ran past {} s", SCENARIO_LIMIT.as_secs()))
        .unwrap_or_else(|e| panic!("cannot run {script}: {e}"));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "{script} failed ({}):\n{stdout}\n{stderr}",
        output.status
    );
    last_json(script, &stdout)
}

fn last_json(script: &str, stdout: &str) -> serde_json::Value {
    let last = stdout
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("");
    serde_json::from_str(last)
        .unwrap_or_else(|e| panic!("{script} printed no JSON last ({e}):\n{stdout}"))
}

/// A `tests/js` scenario that talks with the test while it runs: it prints
/// JSON lines ([`LiveScenario::next_json`]) and reads JSON lines on its
/// standard input ([`LiveScenario::send`]), so the test can act on the
/// cluster at the moment the scenario is ready for it. Its standard error
/// goes to `<logs>/<script>.stderr`; it is killed if dropped.
pub struct LiveScenario {
    script: String,
    child: tokio::process::Child,
    stdin: tokio::process::ChildStdin,
    stdout: tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
    printed: Vec<String>,
    stderr: PathBuf,
}

impl LiveScenario {
    fn spawn(script: &str, args: &[String], logs: &Path) -> LiveScenario {
        let js = js_dir();
        let mut command = tokio::process::Command::new("node");
        command.arg(js.join(script)).args(args).current_dir(&js);
        Self::spawn_command(script, command, logs)
    }

    /// A python-socketio scenario of `tests/py`, run the same way.
    pub fn spawn_python(script: &str, args: &[String], logs: &Path) -> LiveScenario {
        let py = workspace_root().join("tests").join("py");
        let mut command = tokio::process::Command::new(python());
        command.arg(py.join(script)).args(args).current_dir(&py);
        Self::spawn_command(script, command, logs)
    }

    fn spawn_command(
        script: &str,
        mut command: tokio::process::Command,
        logs: &Path,
    ) -> LiveScenario {
        use tokio::io::AsyncBufReadExt;
        let stderr = logs.join(format!("{script}.stderr"));
        let file = std::fs::File::create(&stderr).expect("cannot create the scenario's log");
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(file))
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {script}: {e}"));
        let stdin = child.stdin.take().expect("piped stdin");
        let stdout = tokio::io::BufReader::new(child.stdout.take().expect("piped stdout")).lines();
        LiveScenario {
            script: script.to_owned(),
            child,
            stdin,
            stdout,
            printed: Vec::new(),
            stderr,
        }
    }

    fn failure(&self, what: &str) -> String {
        let stderr = std::fs::read_to_string(&self.stderr).unwrap_or_default();
        format!(
            "{}: {what}; it printed:\n{}\n{stderr}",
            self.script,
            self.printed.join("\n")
        )
    }

    /// The next line it prints that is a JSON object; panics if it ends or
    /// prints none within `wait`.
    pub async fn next_json(&mut self, wait: Duration) -> serde_json::Value {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let line = match tokio::time::timeout_at(deadline, self.stdout.next_line()).await {
                Ok(Ok(Some(line))) => line,
                Ok(_) => panic!("{}", self.failure("ended before printing JSON")),
                Err(_) => panic!("{}", self.failure("printed no JSON in time")),
            };
            self.printed.push(line.clone());
            if let Ok(value @ serde_json::Value::Object(_)) = serde_json::from_str(&line) {
                return value;
            }
        }
    }

    /// Writes `value` as one line on its standard input.
    pub async fn send(&mut self, value: &serde_json::Value) {
        let line = format!("{value}\n");
        self.stdin
            .write_all(line.as_bytes())
            .await
            .unwrap_or_else(|e| panic!("{}", self.failure(&format!("cannot be written to: {e}"))));
    }

    /// Waits for it to end, requires success and returns the JSON it
    /// printed last.
    pub async fn finish(mut self) -> serde_json::Value {
        let read = async {
            while let Ok(Some(line)) = self.stdout.next_line().await {
                self.printed.push(line);
            }
            self.child.wait().await
        };
        let status = tokio::time::timeout(SCENARIO_LIMIT, read).await;
        let status = match status {
            Ok(Ok(status)) => status,
            Ok(Err(e)) => panic!("{}", self.failure(&format!("cannot be waited for: {e}"))),
            Err(_) => panic!("{}", self.failure("ran too long")),
        };
        assert!(
            status.success(),
            "{}",
            self.failure(&format!("failed ({status})"))
        );
        last_json(&self.script, &self.printed.join("\n"))
    }
}

/// A Rust client on `url`, connected to namespace `/` with `auth`.
pub async fn socket_on(
    url: &str,
    auth: Option<serde_json::Value>,
) -> Result<(iocluster_client::Client, iocluster_client::Socket), iocluster_client::ClientError> {
    let client =
        iocluster_client::Client::connect(url, iocluster_client::ClientOptions::default()).await?;
    let socket = client.socket("/", auth).await?;
    Ok((client, socket))
}

/// The next event named `name` (others, such as the test app's `welcome`,
/// are skipped); panics after 10 s without one.
pub async fn next_event(
    socket: &iocluster_client::Socket,
    name: &str,
) -> iocluster_client::Incoming {
    loop {
        let event = socket
            .recv_event(Duration::from_secs(10))
            .await
            .unwrap_or_else(|error| panic!("no {name:?} event: {error}"));
        if event.name == name {
            return event;
        }
    }
}

/// The first argument of the next event named `name` ([`next_event`]).
pub async fn next_named(socket: &iocluster_client::Socket, name: &str) -> serde_json::Value {
    let event = next_event(socket, name).await;
    event
        .args
        .into_iter()
        .next()
        .unwrap_or(serde_json::Value::Null)
}

/// Polls `check` until it returns `Some`, or panics with `what` after `timeout`.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
