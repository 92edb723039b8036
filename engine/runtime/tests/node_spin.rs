//! Spin-before-block (`NodeConfig::spin`) changes only how idle stages wait: a 3-node cluster
//! whose stages spin commits one proposal at a time (the path the spin is for) and batches
//! alike, every replica ends with the same state, and the nodes shut down cleanly.

use std::time::Duration;

use bytes::Bytes;
use lockstep::node::Spin;
use lockstep::Node;
use lockstep_testkit::cluster::{wait_for, wait_leader, Kv, TestCluster};

#[test]
fn a_cluster_of_spinning_stages_commits_and_converges() {
    let cluster = TestCluster::start(
        3,
        false,
        1 << 20,
        |cfg| cfg.spin = Spin::new(Duration::from_micros(200)),
        |cfg| Node::start(cfg, Kv::default()),
    );
    let nodes = cluster.nodes;
    let leader = nodes[wait_leader(&nodes)].as_ref().unwrap();
    // One in flight at a time: every hop finds its stage idle.
    for i in 0..50 {
        let applied = leader
            .propose(Bytes::from(format!("k{i}=v{i}")))
            .wait_timeout(Duration::from_secs(10))
            .unwrap();
        assert!(applied.index.get() > 0);
    }
    let batch: Vec<Bytes> = (0..200).map(|i| Bytes::from(format!("b{i}={i}"))).collect();
    let applied = leader
        .propose_batch(batch)
        .wait_timeout(Duration::from_secs(10))
        .unwrap();
    assert_eq!(applied.results.len(), 200);
    let hash_of = |node: &Node| {
        node.read_local(Bytes::from_static(b"#hash"))
            .wait()
            .unwrap()
    };
    wait_for("replicas to converge", Duration::from_secs(15), || {
        let answers: Vec<_> = nodes.iter().flatten().map(hash_of).collect();
        answers
            .windows(2)
            .all(|pair| pair[0].index == pair[1].index && pair[0].result == pair[1].result)
    });
    for node in nodes.into_iter().flatten() {
        node.shutdown().unwrap();
    }
}
