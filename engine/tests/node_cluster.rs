//! Three nodes in one process on loopback TCP with real files: replication, equal replica
//! state, failover, catch-up of a restarted node from the log and from a snapshot.

mod node_common;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use lockstep::node::PeerConfig;
use lockstep::raft::MembershipChange;
use lockstep::types::NodeId;
use lockstep::{Node, NodeError};
use node_common::{config, members, wait_for, wait_leader, Kv};

struct Cluster {
    members: BTreeMap<NodeId, PeerConfig>,
    dirs: Vec<tempfile::TempDir>,
    nodes: Vec<Option<Node>>,
    snapshot_entries: u64,
}

impl Cluster {
    fn start(n: u64, snapshot_entries: u64) -> Cluster {
        let members = members(n);
        let dirs: Vec<_> = (0..n).map(|_| tempfile::tempdir().unwrap()).collect();
        let mut cluster = Cluster {
            members,
            dirs,
            nodes: (0..n).map(|_| None).collect(),
            snapshot_entries,
        };
        for at in 0..n as usize {
            cluster.restart(at);
        }
        cluster
    }

    fn restart(&mut self, at: usize) {
        assert!(self.nodes[at].is_none());
        let cfg = config(
            at as u64 + 1,
            &self.members,
            self.dirs[at].path(),
            self.snapshot_entries,
        );
        self.nodes[at] = Some(Node::start(cfg, Kv::default()).unwrap());
    }

    fn stop(&mut self, at: usize) {
        self.nodes[at].take().unwrap().shutdown().unwrap();
    }

    fn node(&self, at: usize) -> &Node {
        self.nodes[at].as_ref().unwrap()
    }

    /// Proposes `count` commands at the leader (retrying across elections); returns its position.
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

    /// Waits until every running node has applied the same index and holds the same state.
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
    let mut cluster = Cluster::start(3, 1 << 20);
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
    let mut cluster = Cluster::start(3, 200);
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
fn a_voter_is_removed_and_the_rest_keep_committing() {
    let mut cluster = Cluster::start(3, 1 << 20);
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
