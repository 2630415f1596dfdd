//! Redis behind Sentinel (`redis+sentinel://…`): a master, one replica and
//! three Sentinels started by the test. The master is killed (SIGKILL) while
//! clients emit acked events; the Sentinels promote the replica, every node
//! follows it, no client is disconnected and every ack arrives; then the
//! whole cross-node scenario (rooms, broadcasts, acks both ways) runs on the
//! new master.

use iocluster_tests::Cluster;

#[tokio::test]
async fn a_master_killed_under_load_fails_over_and_loses_nothing() {
    let mut cluster = Cluster::builder("sentinel-failover")
        .sentinel()
        .outlasting_failovers()
        .start()
        .await;
    // 12 clients, each 50 acked events of 60 ms one after another: the
    // kill lands in the middle.
    cluster.master_failover_drill(12, 50, "Sentinel").await;
    // Every node found the new master.
    let replica = &cluster.sentinels.as_ref().unwrap().replica;
    let mut redis = replica.connection().await.unwrap();
    let role: Vec<redis::Value> = redis::cmd("ROLE").query_async(&mut redis).await.unwrap();
    assert_eq!(
        redis::from_redis_value::<String>(role[0].clone()).unwrap(),
        "master"
    );
    let nodes: Vec<String> = redis::cmd("ZRANGE")
        .arg(format!("{}:nodes", cluster.prefix))
        .arg(0)
        .arg(-1)
        .query_async(&mut redis)
        .await
        .unwrap();
    assert_eq!(nodes.len(), 2, "{nodes:?}");
}

#[test]
fn bad_sentinel_urls_are_refused_at_start() {
    let output = std::process::Command::new(iocluster_tests::bin("iocluster-io-node"))
        .args(["--redis", "redis+sentinel://127.0.0.1:1"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let text = String::from_utf8_lossy(&output.stderr);
    assert!(text.contains("master"), "{text}");
}
