//! Three nodes in one process on loopback TCP with real files: replication, equal replica
//! state, failover, catch-up of a restarted node from the log and from a snapshot; and the
//! harness starting a cluster again on other ports when a port picked free was taken.

mod node_common;

use std::net::TcpListener;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use lockstep::raft::MembershipChange;
use lockstep::types::NodeId;
use lockstep::{Node, NodeError};
use node_common::{wait_for, wait_leader, Kv, TestCluster};

/// A cluster of [`Kv`] nodes.
fn start(n: u64, snapshot_entries: u64) -> TestCluster {
    TestCluster::start(
        n,
        false,
        snapshot_entries,
        |_| {},
        |cfg| Node::start(cfg, Kv::default()),
    )
}

/// What these tests do with a cluster.
trait Workload {
    /// Proposes `count` commands at the leader (retrying across elections); returns its position.
    fn propose(&self, prefix: &str, count: usize) -> usize;
    /// Waits until every running node has applied the same index and holds the same state.
    fn assert_converged(&self);
    /// The snapshot files of the node at `at`.
    fn snapshot_files(&self, at: usize) -> Vec<PathBuf>;
}

impl Workload for TestCluster {
    fn propose(&self, prefix: &str, count: usize) -> usize {
        let leader = wait_leader(&self.nodes);
        let receipts: Vec<_> = (0..count)
            .map(|i| {
                self.node(leader)
                    .propose(Bytes::from(format!("{prefix}{}={i}", i % 50)))
            })
            .collect();
        for receipt in receipts {
            match receipt.wait_timeout(Duration::from_secs(10)) {
                Ok(_) => {}
                Err(NodeError::NotLeader { .. } | NodeError::OutcomeUnknown) => {}
                Err(other) => panic!("proposal failed: {other:?}"),
            }
        }
        leader
    }

    fn assert_converged(&self) {
        let hash_of = |node: &Node| {
            node.read_local(Bytes::from_static(b"#hash"))
                .wait()
                .unwrap()
        };
        wait_for("replicas to converge", Duration::from_secs(15), || {
            let answers: Vec<_> = self.nodes.iter().flatten().map(hash_of).collect();
            answers
                .windows(2)
                .all(|pair| pair[0].index == pair[1].index && pair[0].result == pair[1].result)
        });
    }

    fn snapshot_files(&self, at: usize) -> Vec<PathBuf> {
        match std::fs::read_dir(self.dirs[at].path().join("snapshots")) {
            Ok(listing) => listing.map(|entry| entry.unwrap().path()).collect(),
            Err(_) => Vec::new(),
        }
    }
}

#[test]
fn three_nodes_replicate_fail_over_and_catch_up() {
    let mut cluster = start(3, 1 << 20);
    let leader = cluster.propose("a", 500);
    cluster.assert_converged();
    let read = cluster
        .node(leader)
        .read_linearizable(Bytes::from_static(b"a7"))
        .wait()
        .unwrap();
    assert_eq!(read.result, Bytes::from_static(b"457"));
    let follower = (leader + 1) % 3;
    match cluster
        .node(follower)
        .propose(Bytes::from_static(b"x=1"))
        .wait()
    {
        Err(NodeError::NotLeader { leader: Some(id) }) => {
            assert_eq!(id, NodeId(leader as u64 + 1))
        }
        other => panic!("a follower accepted a proposal: {other:?}"),
    }

    // The leader stops: another takes over and keeps committing.
    cluster.stop(leader);
    let second = cluster.propose("b", 300);
    assert_ne!(second, leader);
    // The old leader comes back and catches up from the log.
    cluster.restart(leader);
    cluster.assert_converged();
    let status = cluster.node(second).status();
    assert_eq!(status.peers.len(), 2, "{status:?}");
}

#[test]
fn a_node_behind_a_compacted_log_catches_up_by_snapshot() {
    let mut cluster = start(3, 200);
    let leader = cluster.propose("a", 100);
    cluster.assert_converged();
    let lagging = (leader + 1) % 3;
    cluster.stop(lagging);
    let leader = cluster.propose("b", 1000);
    cluster.assert_converged();
    assert!(
        !cluster.snapshot_files(leader).is_empty(),
        "the leader took a snapshot"
    );
    assert!(
        cluster.snapshot_files(lagging).is_empty(),
        "the lagging node had no snapshot yet"
    );
    cluster.restart(lagging);
    cluster.assert_converged();
    let counters = cluster.node(lagging).status().counters;
    assert_eq!(
        counters.snapshots_installed, 1,
        "the lagging node installed the leader's snapshot: {counters:?}"
    );
    assert_eq!(cluster.snapshot_files(lagging).len(), 1);
    // And it keeps working after a restart from that snapshot.
    cluster.stop(lagging);
    cluster.restart(lagging);
    cluster.propose("c", 100);
    cluster.assert_converged();
}

#[test]
fn large_entries_are_snapshotted_by_bytes_long_before_the_entry_count() {
    let cluster = TestCluster::start(
        3,
        false,
        1_000_000,
        |cfg| cfg.snapshot_bytes = 256 << 10,
        |cfg| Node::start(cfg, Kv::default()),
    );
    let leader = wait_leader(&cluster.nodes);
    let value = "v".repeat(8 << 10);
    let receipts: Vec<_> = (0..64)
        .map(|i| {
            cluster
                .node(leader)
                .propose(Bytes::from(format!("k{}={value}", i % 8)))
        })
        .collect();
    for receipt in receipts {
        receipt
            .wait_timeout(Duration::from_secs(10))
            .expect("committed");
    }
    cluster.assert_converged();
    // 64 entries of 8 KiB = 512 KiB: two 256 KiB periods, far below 1 000 000 entries.
    for at in 0..3 {
        wait_for(
            &format!("node {at} to snapshot by bytes"),
            Duration::from_secs(10),
            || !cluster.snapshot_files(at).is_empty(),
        );
    }
}

#[test]
fn a_voter_is_removed_and_the_rest_keep_committing() {
    let mut cluster = start(3, 1 << 20);
    let leader = cluster.propose("a", 100);
    let removed = (leader + 1) % 3;
    let removed_id = NodeId(removed as u64 + 1);
    // Under CPU starvation leadership may move meanwhile: retry at the current leader (a retry
    // after an unknown outcome may find the change already made).
    let mut retried = false;
    loop {
        let leader = wait_leader(&cluster.nodes);
        let outcome = cluster
            .node(leader)
            .change_membership(MembershipChange::Remove(removed_id))
            .wait_timeout(Duration::from_secs(10));
        match outcome {
            Ok(applied) => {
                assert!(applied.index.get() > 100);
                break;
            }
            Err(NodeError::NotLeader { .. } | NodeError::OutcomeUnknown) => retried = true,
            Err(NodeError::Refused(why)) if retried && why.contains("not a member") => break,
            Err(other) => panic!("removal failed: {other:?}"),
        }
    }
    let leader = wait_leader(&cluster.nodes);
    match cluster
        .node(leader)
        .change_membership(MembershipChange::Remove(removed_id))
        .wait()
    {
        Err(NodeError::Refused(why)) => assert!(why.contains("not a member"), "{why}"),
        Err(NodeError::NotLeader { .. }) => {}
        other => panic!("removing twice: {other:?}"),
    }
    cluster.stop(removed);
    // Two voters left: both are needed, and they still commit.
    let leader = cluster.propose("b", 200);
    let status = cluster.node(leader).status();
    assert_eq!(status.peers.len(), 1, "{status:?}");
    cluster.assert_converged();
}

#[test]
fn a_port_taken_before_its_node_binds_it_starts_the_cluster_again_on_other_ports() {
    let starts = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&starts);
    let cluster = TestCluster::start(
        3,
        false,
        1 << 20,
        |_| {},
        move |cfg| {
            // The second node's peer port is taken between the pick and the bind.
            let _thief = (counted.fetch_add(1, Ordering::SeqCst) == 1)
                .then(|| TcpListener::bind(cfg.members[&cfg.id].peer_addr).unwrap());
            Node::start(cfg, Kv::default())
        },
    );
    assert_eq!(
        starts.load(Ordering::SeqCst),
        2 + 3,
        "two starts, then all three on fresh ports"
    );
    cluster.propose("a", 10);
    cluster.assert_converged();
}

#[test]
#[should_panic(expected = "cannot start the cluster (attempt 1)")]
fn a_start_failing_for_another_reason_is_not_retried() {
    TestCluster::start(
        2,
        false,
        1 << 20,
        |_| {},
        |cfg| {
            if cfg.id == NodeId(2) {
                return Err(NodeError::Failed("no space left on device".into()));
            }
            Node::start(cfg, Kv::default())
        },
    );
}
