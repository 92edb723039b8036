//! Three nodes in one process on loopback TCP with real files: replication, equal replica
//! state, failover, catch-up of a restarted node from the log and from a snapshot; and the
//! harness starting a cluster again on other ports when a port picked free was taken.

use std::net::TcpListener;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use lockstep::node::PeerConfig;
use lockstep::raft::{MembershipChange, MembershipError, ProposeError};
use lockstep::types::{LogIndex, NodeId};
use lockstep::{Node, NodeError, Refusal};
use lockstep_testkit::cluster::{wait_for, wait_leader, Kv, TestCluster};

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
    /// The complete snapshot files of the node at `at` (not one still being written).
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
            Ok(listing) => listing
                .map(|entry| entry.unwrap().path())
                .filter(|path| path.extension().is_some_and(|ext| ext == "snap"))
                .collect(),
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
        Err(NodeError::NotLeader { leader: Some(hint) }) => {
            assert_eq!(hint.id, NodeId(leader as u64 + 1));
            assert_eq!(hint.peer_addr, Some(cluster.node(leader).peer_addr()));
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
    // Idle followers take the leader's heartbeats in turns on their network thread.
    wait_for("inline consensus turns", Duration::from_secs(10), || {
        (0..3).any(|at| cluster.node(at).status().counters.inline_turns > 0)
    });
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
    // Snapshots are written by the storage stage, after the state machine moved on.
    wait_for(
        "the leader's snapshot on disk",
        Duration::from_secs(10),
        || !cluster.snapshot_files(leader).is_empty(),
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
    wait_for(
        "the installed snapshot on the lagging node's disk",
        Duration::from_secs(10),
        || cluster.snapshot_files(lagging).len() == 1,
    );
    // And it keeps working after a restart from that snapshot.
    cluster.stop(lagging);
    cluster.restart(lagging);
    cluster.propose("c", 100);
    cluster.assert_converged();
}

/// A follower restarted on an empty data directory (its disk replaced) while the cluster is idle
/// is brought back by the leader's heartbeats alone: no new write is needed for the leader to
/// learn that the follower's log ends below what it had acknowledged.
#[test]
fn a_follower_whose_disk_was_wiped_catches_up_while_the_cluster_is_idle() {
    let mut cluster = start(3, 1_000_000);
    let leader = cluster.propose("a", 200);
    cluster.assert_converged();
    let wiped = (leader + 1) % 3;
    cluster.stop(wiped);
    let dir = cluster.dirs[wiped].path().to_path_buf();
    std::fs::remove_dir_all(&dir).unwrap();
    std::fs::create_dir(&dir).unwrap();
    cluster.restart(wiped);
    let target = cluster.node(leader).status().commit;
    wait_for(
        "the wiped follower to catch up without new writes",
        Duration::from_secs(20),
        || cluster.node(wiped).status().applied >= target,
    );
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

/// Makes `change` at the current leader, retrying across elections (a retry after an unknown
/// outcome, or a promotion of a learner still catching up, may be refused: `done_if` says which
/// refusal means the change was already made; a leader just elected refuses until it has
/// committed an entry of its term, which is simply retried). Returns the change's index, if this call made it.
fn change_membership(
    cluster: &TestCluster,
    change: MembershipChange,
    done_if: &str,
) -> Option<LogIndex> {
    let mut retried = false;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        assert!(
            std::time::Instant::now() < deadline,
            "{change:?} never made"
        );
        let leader = wait_leader(&cluster.nodes);
        let outcome = cluster
            .node(leader)
            .change_membership(change)
            .wait_timeout(Duration::from_secs(10));
        match outcome {
            Ok(applied) => return Some(applied.index),
            Err(NodeError::NotLeader { .. } | NodeError::OutcomeUnknown) => retried = true,
            Err(NodeError::Refused(why)) if retried && why.to_string().contains(done_if) => {
                return None
            }
            Err(NodeError::Refused(Refusal::Consensus(
                ProposeError::LearnerBehind { .. } | ProposeError::TermNotCommitted { .. },
            ))) => std::thread::sleep(Duration::from_millis(20)),
            Err(other) => panic!("{change:?} failed: {other:?}"),
        }
    }
}

#[test]
fn a_voter_is_removed_and_the_rest_keep_committing() {
    let mut cluster = start(3, 1 << 20);
    let leader = cluster.propose("a", 100);
    let removed = (leader + 1) % 3;
    let removed_id = NodeId(removed as u64 + 1);
    // Under CPU starvation leadership may move meanwhile.
    let remove = MembershipChange::Remove(removed_id);
    if let Some(index) = change_membership(&cluster, remove, "not a member") {
        assert!(index.get() > 100);
    }
    let leader = wait_leader(&cluster.nodes);
    match cluster.node(leader).change_membership(remove).wait() {
        Err(NodeError::Refused(Refusal::Consensus(ProposeError::Membership(
            MembershipError::NotAMember(id),
        )))) => assert_eq!(id, removed_id),
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

/// Starts node `cluster.nodes.len() + 1` to join the cluster (configured with the members so
/// far and itself, which it is added to `cluster.members`); returns its id and addresses.
fn start_joiner(cluster: &mut TestCluster, snapshot_entries: u64) -> (NodeId, PeerConfig) {
    let id = NodeId(cluster.nodes.len() as u64 + 1);
    let joiner = PeerConfig {
        peer_addr: lockstep::net::free_loopback_addrs(1).unwrap()[0],
        client_addr: None,
    };
    cluster.members.insert(id, joiner);
    let dir = tempfile::tempdir().unwrap();
    let mut cfg =
        lockstep_testkit::cluster::config(id.get(), &cluster.members, dir.path(), snapshot_entries);
    cfg.join = true;
    cluster
        .nodes
        .push(Some(Node::start(cfg.clone(), Kv::default()).unwrap()));
    cluster.dirs.push(dir);
    cluster.configs.push(cfg);
    (id, joiner)
}

/// Adds the started joiner `id` as a learner at `addrs`, then promotes it to voter.
fn add_voter(cluster: &TestCluster, id: NodeId, addrs: PeerConfig) {
    change_membership(
        cluster,
        MembershipChange::AddLearner(id, Some(addrs)),
        "already a member",
    );
    change_membership(cluster, MembershipChange::Promote(id), "not a learner");
}

/// Grows a 3-node cluster by a node that joins at run time (named only by the membership
/// change), replaces node 1 by it, and restarts everyone with their original configurations:
/// nodes 2 and 3 were never configured with node 4, so they must find it in their logs.
fn a_node_joins_replaces_a_voter_and_survives_restarts(snapshot_entries: u64) {
    let mut cluster = start(3, snapshot_entries);
    cluster.propose("a", 300);
    let (id, joiner) = start_joiner(&mut cluster, snapshot_entries);
    assert_eq!(id, NodeId(4));
    // Before it is added it only waits: no campaign, no term of its own.
    std::thread::sleep(Duration::from_millis(300));
    let waiting = cluster.node(3).status();
    assert_eq!((waiting.role.as_str(), waiting.commit), ("follower", 0));

    add_voter(&cluster, id, joiner);
    cluster.propose("b", 100);
    cluster.assert_converged();
    // Every node shows the same four voters, node 4 at the address only the change named.
    for at in 0..4 {
        let status = cluster.node(at).status();
        let members: Vec<(u64, &str, Option<std::net::SocketAddr>)> = status
            .members
            .iter()
            .map(|member| (member.id, member.role.as_str(), member.peer_addr))
            .collect();
        let expected: Vec<(u64, &str, Option<std::net::SocketAddr>)> = (1..=4)
            .map(|id| (id, "voter", Some(cluster.members[&NodeId(id)].peer_addr)))
            .collect();
        assert_eq!(members, expected, "node at {at}");
        assert!(status.members_committed);
    }

    // Node 4 replaces node 1 (perhaps the leader: it then steps down once the change commits).
    change_membership(
        &cluster,
        MembershipChange::Remove(NodeId(1)),
        "not a member",
    );
    cluster.stop(0);
    cluster.propose("c", 100);
    cluster.assert_converged();

    for at in 1..4 {
        cluster.stop(at);
    }
    for at in 1..4 {
        cluster.restart(at);
    }
    let leader = cluster.propose("d", 100);
    assert_ne!(leader, 0);
    let status = cluster.node(leader).status();
    let mut peers: Vec<u64> = status.peers.iter().map(|peer| peer.id).collect();
    peers.sort_unstable();
    let expected: Vec<u64> = [2, 3, 4]
        .into_iter()
        .filter(|&id| id != leader as u64 + 1)
        .collect();
    assert_eq!(peers, expected, "{status:?}");
    cluster.assert_converged();
}

#[test]
fn a_node_joins_through_the_log_replaces_a_voter_and_survives_restarts() {
    a_node_joins_replaces_a_voter_and_survives_restarts(1 << 20);
}

#[test]
fn a_node_joins_through_a_snapshot_replaces_a_voter_and_survives_restarts() {
    a_node_joins_replaces_a_voter_and_survives_restarts(50);
}

/// The member with the smallest id is down while the cluster adds two members with larger ids
/// and removes the others, so the leader is a node the restarted member's log does not name
/// and that never waits for it to dial: the leader (larger id) dials it after
/// `reverse_dial_after`, and it catches up (found by the chaos `member` fault, seed 23).
#[test]
fn a_member_down_across_changes_catches_up_from_a_new_leader_with_a_larger_id() {
    let mut cluster = start(3, 1 << 20);
    cluster.propose("a", 100);
    cluster.stop(0);
    cluster.propose("b", 100);
    for _ in 4..=5 {
        let (id, addrs) = start_joiner(&mut cluster, 1 << 20);
        add_voter(&cluster, id, addrs);
    }
    for at in 1..3 {
        let id = NodeId(at as u64 + 1);
        change_membership(&cluster, MembershipChange::Remove(id), "not a member");
        cluster.propose("c", 20);
        cluster.stop(at);
    }
    let leader = cluster.propose("d", 100);
    assert!(leader >= 3, "the leader is node {}", leader + 1);
    // Node 1 comes back knowing only nodes 2 and 3 (both gone): it dials them in vain.
    cluster.restart(0);
    cluster.assert_converged();
    let status = cluster.node(0).status();
    let members: Vec<u64> = status.members.iter().map(|member| member.id).collect();
    assert_eq!(members, vec![1, 4, 5], "{status:?}");
    // It is a working member again: with node 5 stopped, nodes 1 and 4 still commit.
    cluster.stop(4);
    cluster.propose("e", 100);
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
                return Err(NodeError::Storage {
                    kind: std::io::ErrorKind::StorageFull,
                    detail: "no space left on device".into(),
                });
            }
            Node::start(cfg, Kv::default())
        },
    );
}
