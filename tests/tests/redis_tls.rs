//! TLS to Redis: nodes given `rediss://` (and `rediss+sentinel://`, with a
//! password on the Sentinels) reach a redis-server that listens with TLS,
//! checking its certificate against a CA they trust through
//! `SSL_CERT_FILE`; the cross-node scenario runs over it, and a master
//! killed under load behind TLS Sentinels fails over with every ack.

use std::path::Path;

use iocluster_tests::{Cluster, RedisTls};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair,
};

/// A CA, and a certificate for 127.0.0.1 it signed, as PEM files in `dir`.
fn certificates(dir: &Path) -> RedisTls {
    std::fs::create_dir_all(dir).unwrap();
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    // Names of their own: OpenSSL (Redis's replicas and Sentinels) takes a
    // certificate whose subject is its issuer's for a self-signed one.
    ca_params.distinguished_name = DistinguishedName::new();
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "iocluster test CA");
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate().unwrap();
    let mut params =
        CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()]).unwrap();
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, "127.0.0.1");
    let cert = params.signed_by(&key, &issuer).unwrap();
    let tls = RedisTls {
        ca: dir.join("ca.pem"),
        cert: dir.join("redis.pem"),
        key: dir.join("redis-key.pem"),
    };
    std::fs::write(&tls.ca, ca_cert.pem()).unwrap();
    std::fs::write(&tls.cert, cert.pem()).unwrap();
    std::fs::write(&tls.key, key.serialize_pem()).unwrap();
    tls
}

fn cert_dir(test: &str) -> std::path::PathBuf {
    iocluster_tests::workspace_root()
        .join("target")
        .join("test-certs")
        .join(test)
}

#[tokio::test]
async fn nodes_reach_redis_over_tls() {
    let tls = certificates(&cert_dir("redis-tls"));
    let cluster = Cluster::builder("redis-tls")
        .heartbeat(2_000, 5_000)
        .redis_tls(tls)
        .start()
        .await;
    let frontend = cluster.start_frontend().await;
    let report = cluster.scenario("cluster.mjs", &[]).await;
    assert!(report.get("admission").is_some(), "{report}");
    // The frontend reads the cluster over TLS too.
    let (status, overview) = frontend.api("GET", "/api/v1/cluster", None).await;
    assert_eq!(status, 200, "{overview}");
    assert_eq!(
        overview["ioNodes"].as_array().map(Vec::len),
        Some(2),
        "{overview}"
    );
    // Every node's connection came in on the TLS port: only this test's
    // own connection uses the plain one.
    let mut redis = cluster.redis().await;
    let clients: String = redis::cmd("CLIENT")
        .arg("LIST")
        .query_async(&mut redis)
        .await
        .unwrap();
    let tls_laddr = format!("laddr=127.0.0.1:{} ", cluster.redis.node_port());
    let plain: Vec<&str> = clients
        .lines()
        .filter(|line| !line.contains(&tls_laddr))
        .collect();
    assert_eq!(plain.len(), 1, "{clients}");
    assert!(clients.lines().count() >= 6, "{clients}");
}

/// `rediss+cluster://`: a Redis Cluster whose nodes listen, replicate and
/// talk to each other with TLS; the nodes find every master's TLS port from
/// the cluster and check each certificate; a master killed under load fails
/// over with every ack.
#[tokio::test]
async fn nodes_reach_a_tls_redis_cluster_and_follow_its_failover() {
    let tls = certificates(&cert_dir("redis-cluster-tls"));
    let mut cluster = Cluster::builder("redis-cluster-tls")
        .redis_cluster()
        .redis_tls(tls)
        .outlasting_failovers()
        .start()
        .await;
    assert!(cluster.redis_url().starts_with("rediss+cluster://"));
    cluster.cross_node_scenario().await;
    cluster
        .master_failover_drill(8, 40, "TLS Redis Cluster")
        .await;
    // The nodes' connections came in on the TLS ports (the test's own use
    // the plain ones): count them over the servers still running.
    let servers =
        std::iter::once(&cluster.redis).chain(cluster.redis_cluster.as_ref().unwrap().nodes.iter());
    let mut over_tls = 0;
    for server in servers {
        let Ok(mut redis) = server.connection().await else {
            continue;
        };
        let Ok(clients) = redis::cmd("CLIENT")
            .arg("LIST")
            .query_async::<String>(&mut redis)
            .await
        else {
            continue;
        };
        let tls_laddr = format!("laddr=127.0.0.1:{} ", server.node_port());
        over_tls += clients
            .lines()
            .filter(|line| line.contains(&tls_laddr))
            .count();
    }
    assert!(over_tls >= 4, "{over_tls} connections over TLS");
}

#[tokio::test]
async fn a_tls_master_behind_sentinels_with_a_password_fails_over_and_loses_nothing() {
    let tls = certificates(&cert_dir("sentinel-tls"));
    let mut cluster = Cluster::builder("sentinel-tls")
        .redis_tls(tls)
        .sentinel()
        .outlasting_failovers()
        .start()
        .await;
    cluster.master_failover_drill(8, 40, "TLS Sentinel").await;
}
