//! Scenario tests: each drives a small cluster through one situation from the Raft paper or
//! the issue and checks the rule it is named after.

use std::time::Duration;

use bytes::Bytes;

use super::harness::{log_of_terms, voters, Cluster, RepairGate};
use crate::batch::BatchKind;
use crate::raft::{
    HardState, InjectedBug, MembershipChange, Message, MessageBody, ProposeError, ReadId, ReadMode,
    Restored, Role,
};
use crate::types::{LogIndex, NodeId, Term};

fn role(cluster: &Cluster, id: u64) -> Role {
    cluster.node(id).raft.status().role
}

fn commit(cluster: &Cluster, id: u64) -> LogIndex {
    cluster.node(id).raft.status().commit
}

/// Ticks node `leader` of nodes 1..=3 (all syncing by hand) until it leads, syncing every node
/// once the messages of each tick settled; the entry it appends when elected stays unsynced.
fn elect_syncing_by_hand(cluster: &mut Cluster, leader: u64) {
    for _ in 0..30 {
        cluster.raft(leader).tick();
        cluster.stabilize();
        for id in 1..=3 {
            cluster.sync(id);
        }
        cluster.stabilize();
        if role(cluster, leader) == Role::Leader {
            return;
        }
    }
    panic!("node {leader} was not elected within 30 ticks");
}

#[test]
fn leader_election_basics() {
    let mut cluster = Cluster::new(&[1, 2, 3], |_| {});
    cluster.ticks(40);
    let leader = cluster.leader().expect("a leader is elected");
    let term = cluster.node(leader).raft.status().term;
    for id in [1, 2, 3] {
        let status = cluster.node(id).raft.status();
        assert_eq!(status.term, term, "{id} agrees on the term");
        assert_eq!(status.leader, Some(NodeId(leader)), "{id} knows the leader");
        if id != leader {
            assert_eq!(status.role, Role::Follower);
        }
        // the new leader's Noop is committed everywhere
        assert_eq!(status.commit, LogIndex(1), "{id}");
        assert_eq!(cluster.node(id).applied[&1].0, BatchKind::Noop);
    }
}

#[test]
fn single_node_elects_itself_and_commits() {
    let mut cluster = Cluster::new(&[1], |_| {});
    cluster.elect(1);
    let last = cluster.propose(1, 10);
    cluster.stabilize();
    assert_eq!(commit(&cluster, 1), last);
}

#[test]
fn election_timeouts_are_randomized() {
    let mut cluster = Cluster::new(&[1, 2, 3, 4, 5], |_| {});
    // everyone is ticked; with equal timeouts all would campaign at once and split the vote
    cluster.ticks(19);
    let started: u64 = cluster
        .nodes
        .values()
        .map(|n| n.raft.status().stats.pre_votes_started)
        .sum();
    assert!(started >= 1, "someone timed out in [10, 20)");
    assert!(started < 5, "not everyone at the same tick");
}

#[test]
fn pre_vote_prevents_term_inflation_from_a_partitioned_node() {
    let mut cluster = Cluster::new(&[1, 2, 3], |_| {});
    cluster.elect(1);
    let term = cluster.node(1).raft.status().term;
    cluster.isolate(3);
    cluster.ticks(100);
    let isolated = cluster.node(3).raft.status();
    assert_eq!(
        isolated.term, term,
        "pre-vote never succeeds, so the term stays"
    );
    assert!(isolated.stats.pre_votes_started >= 3);
    cluster.heal();
    cluster.ticks(30);
    assert_eq!(
        cluster.leader(),
        Some(1),
        "the rejoining node does not disrupt"
    );
    assert_eq!(cluster.node(1).raft.status().term, term);

    // Without pre-vote the same partition inflates the term and disrupts the leader.
    let mut cluster = Cluster::new(&[1, 2, 3], |config| config.pre_vote = false);
    cluster.elect(1);
    cluster.isolate(3);
    cluster.ticks(100);
    assert!(cluster.node(3).raft.status().term > term.next());
}

#[test]
fn check_quorum_steps_down_a_partitioned_leader() {
    let mut cluster = Cluster::new(&[1, 2, 3], |_| {});
    cluster.elect(1);
    cluster.isolate(1);
    cluster.ticks(25);
    let old = cluster.node(1).raft.status();
    assert_eq!(
        old.role,
        Role::Follower,
        "no quorum heard within an election timeout"
    );
    assert_eq!(old.stats.check_quorum_step_downs, 1);
    let new_leader = cluster.leader().expect("the majority elects a new leader");
    assert_ne!(new_leader, 1);
}

#[test]
fn followers_that_hear_a_live_leader_ignore_votes() {
    let mut cluster = Cluster::new(&[1, 2, 3], |_| {});
    cluster.elect(1);
    let term = cluster.node(1).raft.status().term;
    let last_index = cluster.node(3).raft.status().last_index;
    let vote = Message {
        from: NodeId(3),
        to: NodeId(2),
        term: term.next(),
        body: MessageBody::Vote {
            last_index,
            last_term: term,
            leadership_transfer: false,
        },
    };
    cluster.raft(2).step(vote);
    let status = cluster.node(2).raft.status();
    assert_eq!(
        status.term, term,
        "the disruptive vote did not bump the term"
    );
    assert_eq!(status.stats.votes_ignored_in_lease, 1);
}

#[test]
fn stale_terms_and_non_members_are_ignored() {
    let mut cluster = Cluster::new(&[1, 2, 3], |_| {});
    cluster.elect(1);
    let stale = Message {
        from: NodeId(3),
        to: NodeId(2),
        term: Term(0),
        body: MessageBody::VoteResponse { granted: true },
    };
    cluster.raft(2).step(stale);
    // A non-member's answer is ignored, even at a newer term.
    let foreign = Message {
        from: NodeId(9),
        to: NodeId(1),
        term: Term(50),
        body: MessageBody::AppendResponse {
            success: true,
            index: LogIndex(1),
            hint_index: LogIndex::ZERO,
            hint_term: Term::ZERO,
        },
    };
    cluster.raft(1).step(foreign);
    // A non-member's vote request is heard (a lagging member may not know it was added), but
    // refused while the leader is live.
    let candidate = Message {
        from: NodeId(9),
        to: NodeId(2),
        term: Term(50),
        body: MessageBody::Vote {
            last_index: LogIndex(100),
            last_term: Term(49),
            leadership_transfer: false,
        },
    };
    cluster.raft(2).step(candidate);
    assert_eq!(cluster.node(2).raft.status().stats.stale_term_ignored, 1);
    assert_eq!(cluster.node(1).raft.status().stats.non_member_ignored, 1);
    assert_eq!(
        cluster.node(2).raft.status().stats.votes_ignored_in_lease,
        1
    );
    assert_eq!(cluster.node(1).raft.status().role, Role::Leader);
    assert_eq!(cluster.node(2).raft.status().term, Term(1));
}

/// Raft paper Figure 7: a leader for term 8 and followers (a)-(f) with missing and extra
/// entries; after replication every log equals the leader's.
#[test]
fn figure_7_logs_converge_to_the_leader() {
    let logs: [(u64, &[u64]); 7] = [
        (1, &[1, 1, 1, 4, 4, 5, 5, 6, 6, 6]),
        (2, &[1, 1, 1, 4, 4, 5, 5, 6, 6]),
        (3, &[1, 1, 1, 4]),
        (4, &[1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 6]),
        (5, &[1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 7, 7]),
        (6, &[1, 1, 1, 4, 4, 4, 4]),
        (7, &[1, 1, 1, 2, 2, 2, 3, 3, 3, 3, 3]),
    ];
    let restored = logs
        .iter()
        .map(|&(id, terms)| {
            (
                id,
                Restored {
                    hard_state: HardState {
                        term: Term(7),
                        vote: None,
                    },
                    batches: log_of_terms(terms),
                    initial_membership: voters(&[1, 2, 3, 4, 5, 6, 7]),
                    ..Restored::default()
                },
            )
        })
        .collect();
    let mut cluster = Cluster::with_restored(restored, |config| config.append_bytes_max = 16);
    cluster.elect(1);
    assert_eq!(cluster.node(1).raft.status().term, Term(8));
    cluster.ticks(4);
    let expected = cluster.terms(1);
    assert_eq!(expected.len(), 11, "the leader's 10 entries and its noop");
    for id in 2..=7 {
        assert_eq!(cluster.terms(id), expected, "follower {id} converged");
        assert_eq!(commit(&cluster, id), LogIndex(11));
    }
    let rejects: u64 = (2..=7)
        .map(|id| cluster.node(id).raft.status().stats.appends_rejected)
        .sum();
    let truncations: u64 = (2..=7)
        .map(|id| cluster.node(id).raft.status().stats.truncations)
        .sum();
    assert!(
        rejects >= 3,
        "missing and conflicting entries were rejected"
    );
    assert!(
        truncations >= 3,
        "extra entries of (c), (d) and (f) were cut"
    );
}

/// Raft paper Figure 8: the leader of term 4 holds an entry of term 2 on a majority, yet must
/// not commit it by counting, because a node with a term-3 entry at that index can still win.
fn figure_8_cluster(bug: Option<InjectedBug>) -> Cluster {
    let logs: [(u64, &[u64]); 3] = [(1, &[1, 2]), (2, &[1]), (3, &[1, 3])];
    let restored = logs
        .iter()
        .map(|&(id, terms)| {
            (
                id,
                Restored {
                    hard_state: HardState {
                        term: Term(3),
                        vote: None,
                    },
                    batches: log_of_terms(terms),
                    initial_membership: voters(&[1, 2, 3]),
                    ..Restored::default()
                },
            )
        })
        .collect();
    let mut cluster = Cluster::with_restored(restored, |config| {
        config.append_bytes_max = 1; // one batch per Append
        config.inject_bug = bug;
    });
    cluster.isolate(3);
    // Node 2 gets the term-2 entry but never the leader's term-4 noop (it is cut out of
    // every Append to node 2).
    cluster.rewrite = Some(Box::new(|mut message: Message| {
        if message.to == NodeId(2) {
            if let MessageBody::Append { batches, .. } = &mut message.body {
                batches.retain(|batch| batch.kind() != BatchKind::Noop);
            }
        }
        Some(message)
    }));
    cluster.elect(1);
    cluster.ticks(3);
    cluster
}

#[test]
fn figure_8_old_term_entry_is_not_committed_by_counting() {
    let mut cluster = figure_8_cluster(None);
    let leader = cluster.node(1).raft.status();
    assert_eq!(leader.term, Term(4));
    let match_2 = leader.progress.iter().find(|p| p.id == NodeId(2)).unwrap();
    assert_eq!(
        match_2.match_index,
        LogIndex(2),
        "a majority holds index 2 (term 2)"
    );
    assert_eq!(
        leader.commit,
        LogIndex(0),
        "but it is not committed by counting"
    );

    // Why: node 3 (term-3 entry at index 2) can still win and overwrite it.
    cluster.crash(1);
    cluster.rewrite = None;
    cluster.heal();
    cluster.ticks(60);
    let leader = cluster.leader().expect("a new leader");
    assert_eq!(leader, 3);
    assert_eq!(
        cluster.terms(2)[1],
        (2, 3),
        "index 2 now holds term 3 everywhere"
    );
}

#[test]
fn figure_8_bug_switch_commits_the_old_term_entry() {
    let cluster = figure_8_cluster(Some(InjectedBug::CommitOldTermByCounting));
    assert_eq!(
        commit(&cluster, 1),
        LogIndex(2),
        "with the check skipped, the old-term entry is committed by counting"
    );
}

#[test]
fn disk_stalled_leader_commits_through_a_follower_quorum() {
    let mut cluster = Cluster::new(&[1, 2, 3], |_| {});
    cluster.elect(1);
    cluster.node_mut(1).auto_sync = false;
    let last = cluster.propose(1, 100);
    cluster.stabilize();
    let status = cluster.node(1).raft.status();
    assert!(
        status.durable < last,
        "the leader's own write is not durable"
    );
    assert_eq!(status.commit, last, "two durable followers are a quorum");

    // With one follower stalled too, the commit waits.
    cluster.node_mut(2).auto_sync = false;
    let next = cluster.propose(1, 10);
    cluster.stabilize();
    assert_eq!(
        commit(&cluster, 1),
        last,
        "only one durable copy of the new entries"
    );
    cluster.sync(1);
    cluster.stabilize();
    assert_eq!(
        commit(&cluster, 1),
        next,
        "the leader's sync completes the quorum"
    );
}

#[test]
fn followers_ack_only_after_durable() {
    let mut cluster = Cluster::new(&[1, 2, 3], |_| {});
    cluster.elect(1);
    cluster.node_mut(2).auto_sync = false;
    cluster.node_mut(3).auto_sync = false;
    let last = cluster.propose(1, 5);
    cluster.stabilize();
    assert!(
        commit(&cluster, 1) < last,
        "no follower ack leaves before its sync"
    );
    let unsynced = &cluster.node(2).unsynced;
    assert!(unsynced
        .iter()
        .flat_map(|w| &w.after_durable)
        .any(|m| matches!(m.body, MessageBody::AppendResponse { success: true, .. })));
    cluster.sync(2);
    cluster.stabilize();
    assert_eq!(commit(&cluster, 1), last);
}

#[test]
fn ack_before_durable_bug_switch_leaks_acks() {
    let mut cluster = Cluster::new(&[1, 2, 3], |config| {
        config.inject_bug = Some(InjectedBug::AckBeforeDurable)
    });
    cluster.elect(1);
    cluster.node_mut(2).auto_sync = false;
    cluster.node_mut(3).auto_sync = false;
    let last = cluster.propose(1, 5);
    cluster.stabilize();
    assert_eq!(
        commit(&cluster, 1),
        last,
        "acks left before any follower synced"
    );
}

#[test]
fn votes_and_vote_requests_wait_for_durable_hard_state() {
    let mut cluster = Cluster::new(&[1, 2, 3], |_| {});
    cluster.node_mut(1).auto_sync = false;
    cluster.node_mut(2).auto_sync = false;
    cluster.node_mut(3).auto_sync = false;
    for _ in 0..30 {
        cluster.raft(1).tick();
        cluster.stabilize();
        if role(&cluster, 1) == Role::Candidate {
            break;
        }
    }
    assert_eq!(role(&cluster, 1), Role::Candidate);
    assert!(cluster.network.is_empty());
    let write = &cluster.node(1).unsynced.last().unwrap();
    assert_eq!(write.hard_state.unwrap().vote, Some(NodeId(1)));
    assert_eq!(
        write.after_durable.len(),
        2,
        "vote requests wait for the self-vote"
    );
    cluster.sync(1);
    cluster.stabilize();
    assert_eq!(
        role(&cluster, 1),
        Role::Candidate,
        "grants wait for the voters' syncs"
    );
    cluster.sync(2);
    cluster.stabilize();
    assert_eq!(role(&cluster, 1), Role::Leader);
}

#[test]
fn node_rejoining_with_a_diverged_log_converges() {
    let mut cluster = Cluster::new(&[1, 2, 3], |_| {});
    cluster.elect(1);
    cluster.propose(1, 10);
    cluster.stabilize();
    cluster.isolate(1);
    // entries only the isolated leader has: never committed
    cluster.propose(1, 7);
    cluster.stabilize();
    cluster.ticks(30);
    let leader = cluster.leader().expect("new leader");
    assert_ne!(leader, 1);
    let committed = cluster.propose(leader, 20);
    cluster.stabilize();
    cluster.heal();
    cluster.ticks(10);
    assert_eq!(role(&cluster, 1), Role::Follower);
    assert_eq!(
        cluster.terms(1),
        cluster.terms(leader),
        "diverged suffix replaced"
    );
    assert!(cluster.node(1).raft.status().stats.truncations >= 1);
    assert!(commit(&cluster, 1) >= committed);
}

#[test]
fn crash_loses_unsynced_writes_but_never_acknowledged_ones() {
    let mut cluster = Cluster::new(&[1, 2, 3], |_| {});
    cluster.elect(1);
    let acked = cluster.propose(1, 10);
    cluster.stabilize();
    cluster.node_mut(3).auto_sync = false;
    cluster.propose(1, 5);
    cluster.stabilize();
    cluster.crash(3);
    cluster.restart(3);
    let status = cluster.node(3).raft.status();
    assert_eq!(status.last_index, acked, "only the synced prefix survived");
    cluster.ticks(6);
    assert_eq!(
        cluster.terms(3),
        cluster.terms(1),
        "re-replicated after restart"
    );
}

#[test]
fn read_index_confirms_leadership_with_a_heartbeat_quorum() {
    let mut cluster = Cluster::new(&[1, 2, 3], |_| {});
    cluster.elect(1);
    let last = cluster.propose(1, 3);
    cluster.stabilize();
    cluster.raft(1).read_index(ReadId(7)).unwrap();
    cluster.stabilize();
    let reads = &cluster.node(1).reads;
    assert_eq!(reads.len(), 1);
    assert_eq!((reads[0].id, reads[0].index), (ReadId(7), last));
    assert_eq!(
        cluster.raft(2).read_index(ReadId(8)),
        Err(ProposeError::NotLeader {
            leader: Some(NodeId(1))
        })
    );

    // A partitioned leader cannot confirm; its reads fail when it steps down.
    cluster.isolate(1);
    cluster.raft(1).read_index(ReadId(9)).unwrap();
    cluster.stabilize();
    assert_eq!(cluster.node(1).reads.len(), 1, "not confirmed");
    cluster.ticks(25);
    assert_eq!(cluster.node(1).reads_failed, vec![ReadId(9)]);
}

#[test]
fn read_index_waits_for_a_commit_in_the_leaders_term() {
    let mut cluster = Cluster::new(&[1, 2, 3], |_| {});
    for id in 1..=3 {
        cluster.node_mut(id).auto_sync = false;
    }
    cluster.raft(1).tick();
    elect_syncing_by_hand(&mut cluster, 1);
    assert_eq!(
        commit(&cluster, 1),
        LogIndex(0),
        "noop not yet durable anywhere"
    );
    cluster.raft(1).read_index(ReadId(1)).unwrap();
    cluster.stabilize();
    assert!(
        cluster.node(1).reads.is_empty(),
        "waits for the noop's commit"
    );
    for id in 1..=3 {
        cluster.sync(id);
    }
    cluster.stabilize();
    for id in 1..=3 {
        cluster.sync(id);
    }
    cluster.stabilize();
    let reads = &cluster.node(1).reads;
    assert_eq!(reads.len(), 1);
    assert_eq!(reads[0].index, LogIndex(1));
}

#[test]
fn lease_reads_skip_the_round_until_the_lease_lapses() {
    let mut cluster = Cluster::new(&[1, 2, 3], |config| {
        config.read_mode = ReadMode::Lease {
            clock_drift_ticks: 2,
        }
    });
    cluster.ticks(40);
    let leader = cluster.leader().expect("a leader");
    cluster.raft(leader).read_index(ReadId(1)).unwrap();
    let ready = cluster.raft(leader).ready();
    assert_eq!(ready.reads.len(), 1, "served at once under the lease");
    assert!(
        !ready
            .messages
            .iter()
            .any(|m| matches!(m.body, MessageBody::Heartbeat { .. })),
        "without a heartbeat round"
    );
    cluster.stabilize();

    cluster.isolate(leader);
    for _ in 0..8 {
        cluster.raft(leader).tick();
        cluster.stabilize();
    }
    assert_eq!(
        role(&cluster, leader),
        Role::Leader,
        "check-quorum not yet due"
    );
    cluster.raft(leader).read_index(ReadId(2)).unwrap();
    cluster.stabilize();
    assert!(
        !cluster.node(leader).reads.iter().any(|r| r.id == ReadId(2)),
        "lease lapsed after election_ticks - clock_drift_ticks: needs a round"
    );
}

#[test]
fn leadership_transfer_hands_over_to_a_caught_up_follower() {
    let mut cluster = Cluster::new(&[1, 2, 3], |_| {});
    cluster.elect(1);
    cluster.propose(1, 10);
    cluster.stabilize();
    cluster.node_mut(2).auto_sync = false; // target lags: transfer waits for its catch-up
    cluster.propose(1, 5);
    cluster.stabilize();
    cluster.raft(1).transfer_leadership(NodeId(2)).unwrap();
    assert_eq!(
        cluster.raft(1).propose(b"x"),
        Err(ProposeError::TransferInProgress { target: NodeId(2) })
    );
    cluster.stabilize();
    assert_eq!(role(&cluster, 1), Role::Leader, "target not caught up yet");
    cluster.node_mut(2).auto_sync = true;
    cluster.sync(2);
    cluster.stabilize();
    assert_eq!(
        cluster.leader(),
        Some(2),
        "TimeoutNow made 2 campaign and win"
    );
    assert_eq!(role(&cluster, 1), Role::Follower);
    assert_eq!(
        cluster.raft(1).transfer_leadership(NodeId(3)),
        Err(ProposeError::NotLeader {
            leader: Some(NodeId(2))
        })
    );
}

#[test]
fn leadership_transfer_aborts_after_an_election_timeout() {
    let mut cluster = Cluster::new(&[1, 2, 3], |_| {});
    cluster.elect(1);
    cluster.isolate(3);
    cluster.propose(1, 5);
    cluster.stabilize();
    cluster.raft(1).transfer_leadership(NodeId(3)).unwrap();
    for _ in 0..10 {
        cluster.raft(1).tick();
        cluster.stabilize();
    }
    assert_eq!(role(&cluster, 1), Role::Leader);
    assert_eq!(cluster.node(1).raft.status().stats.transfers_aborted, 1);
    assert!(cluster.raft(1).propose(b"after").is_ok());
}

#[test]
fn snapshot_reaches_a_lagging_follower_in_chunks() {
    let mut cluster = Cluster::new(&[1, 2, 3], |config| config.snapshot_chunk_bytes = 1000);
    cluster.elect(1);
    cluster.isolate(3);
    let last = cluster.propose(1, 500);
    cluster.stabilize();
    let data = Bytes::from(vec![0xab; 9_500]);
    for id in [1, 2] {
        cluster.compact(id, data.clone());
    }
    assert_eq!(
        cluster.node(1).raft.status().first_index,
        last.next(),
        "log prefix dropped"
    );
    cluster.propose(1, 20);
    cluster.stabilize();
    cluster.heal();
    cluster.ticks(6);
    let leader = cluster.node(1).raft.status();
    assert_eq!(
        leader.stats.snapshot_chunks_sent, 10,
        "9500 bytes in 1000-byte chunks"
    );
    let follower = cluster.node(3).raft.status();
    assert_eq!(follower.stats.snapshots_installed, 1);
    assert_eq!(
        follower.commit, leader.commit,
        "appends followed the snapshot"
    );
    assert_eq!(cluster.node(3).disk.snapshot.as_ref().unwrap().1, data);
    assert_eq!(cluster.terms(3), cluster.terms(1));
    cluster.crash(3);
    cluster.restart(3);
    cluster.ticks(4);
    assert_eq!(
        commit(&cluster, 3),
        leader.commit,
        "restarts from the snapshot"
    );
}

#[test]
fn add_learner_then_promote_then_remove_the_leader() {
    let mut cluster = Cluster::new(&[1, 2, 3], |_| {});
    cluster.elect(1);
    cluster.propose(1, 50);
    cluster.stabilize();
    let mut config = super::harness::test_config(4);
    config.seed = 4;
    cluster.add_node(config, Restored::default());

    assert!(matches!(
        cluster
            .raft(1)
            .propose_membership(MembershipChange::Promote(NodeId(4))),
        Err(ProposeError::Membership(_))
    ));
    let index = cluster
        .raft(1)
        .propose_membership(MembershipChange::AddLearner(NodeId(4), None))
        .unwrap();
    assert_eq!(
        cluster
            .raft(1)
            .propose_membership(MembershipChange::AddLearner(NodeId(5), None)),
        Err(ProposeError::MembershipChangePending { index })
    );
    cluster.stabilize();
    cluster.ticks(4);
    let learner = cluster.node(4).raft.status();
    assert_eq!(learner.commit, commit(&cluster, 1), "the learner caught up");
    assert!(learner.membership.learners.contains(&NodeId(4)));
    // learners never campaign
    cluster.isolate(4);
    cluster.ticks(40);
    assert_eq!(cluster.node(4).raft.status().stats.pre_votes_started, 0);
    cluster.heal();
    cluster.ticks(4);

    // a lagging learner is not promoted
    let mut config5 = super::harness::test_config(5);
    config5.seed = 5;
    cluster.add_node(config5, Restored::default());
    cluster.isolate(5);
    cluster
        .raft(1)
        .propose_membership(MembershipChange::AddLearner(NodeId(5), None))
        .unwrap();
    cluster.stabilize();
    cluster.propose(1, 2000);
    cluster.stabilize();
    assert!(matches!(
        cluster
            .raft(1)
            .propose_membership(MembershipChange::Promote(NodeId(5))),
        Err(ProposeError::LearnerBehind { .. })
    ));
    cluster
        .raft(1)
        .propose_membership(MembershipChange::Remove(NodeId(5)))
        .unwrap();
    cluster.stabilize();

    cluster
        .raft(1)
        .propose_membership(MembershipChange::Promote(NodeId(4)))
        .unwrap();
    cluster.stabilize();
    assert_eq!(
        cluster.node(1).raft.status().membership.voters,
        voters(&[1, 2, 3, 4]).voters
    );
    // Remove the leader itself: it steps down once the removal commits.
    cluster
        .raft(1)
        .propose_membership(MembershipChange::Remove(NodeId(1)))
        .unwrap();
    cluster.stabilize();
    assert_eq!(role(&cluster, 1), Role::Follower);
    let campaigns = cluster.node(1).raft.status().stats.pre_votes_started;
    cluster.ticks(40);
    let leader = cluster
        .leader()
        .expect("the remaining voters elect a leader");
    assert_ne!(leader, 1);
    let last = cluster.propose(leader, 5);
    cluster.stabilize();
    cluster.ticks(2); // followers learn the commit index from the next heartbeat
    for id in [2, 3, 4] {
        assert_eq!(commit(&cluster, id), last, "{id}");
        assert_eq!(
            cluster.node(id).raft.status().membership.voters,
            voters(&[2, 3, 4]).voters
        );
    }
    assert_eq!(
        cluster.node(1).raft.status().stats.pre_votes_started,
        campaigns,
        "a removed node never campaigns"
    );
}

#[test]
fn pipelining_keeps_many_appends_in_flight() {
    let mut cluster = Cluster::new(&[1, 2, 3], |config| {
        config.batch_entries_max = 10;
        config.append_bytes_max = 200;
        config.inflight_messages_max = 4;
    });
    cluster.elect(1);
    cluster.node_mut(2).auto_sync = false;
    cluster.node_mut(3).auto_sync = false;
    cluster.propose(1, 200);
    cluster.stabilize();
    let status = cluster.raft(1).status();
    for peer in status.progress {
        assert_eq!(
            peer.inflight_messages, 4,
            "window full, bounded by messages"
        );
    }
    cluster.node_mut(2).auto_sync = true;
    cluster.node_mut(3).auto_sync = true;
    cluster.sync(2);
    cluster.sync(3);
    cluster.stabilize();
    cluster.ticks(2);
    assert_eq!(commit(&cluster, 1), LogIndex(201));
}

/// Regression (sim seed 1287): a leader that sent TimeoutNow must not serve lease reads again in
/// that term, even after its transfer is abandoned, because the transfer vote bypasses the
/// followers' lease.
#[test]
fn lease_is_revoked_by_a_leadership_transfer() {
    let mut cluster = Cluster::new(&[1, 2, 3], |config| {
        config.read_mode = ReadMode::Lease {
            clock_drift_ticks: 2,
        }
    });
    cluster.ticks(40);
    let leader = cluster.leader().expect("a leader");
    let target = if leader == 1 { 2 } else { 1 };
    // The target gets TimeoutNow, but everything it sends in its new term is lost: the
    // transfer is abandoned.
    let term = cluster.node(leader).raft.status().term;
    cluster.rewrite = Some(Box::new(move |message: Message| {
        (message.term == term).then_some(message)
    }));
    cluster
        .raft(leader)
        .transfer_leadership(NodeId(target))
        .unwrap();
    cluster.stabilize();
    for _ in 0..10 {
        cluster.raft(leader).tick();
        cluster.stabilize();
    }
    assert_eq!(role(&cluster, leader), Role::Leader);
    assert_eq!(
        cluster.node(leader).raft.status().stats.transfers_aborted,
        1
    );
    cluster.raft(leader).read_index(ReadId(5)).unwrap();
    let ready = cluster.raft(leader).ready();
    assert!(ready.reads.is_empty(), "no lease read after a TimeoutNow");
    assert!(ready
        .messages
        .iter()
        .any(|m| matches!(m.body, MessageBody::Heartbeat { .. })));
}

#[test]
fn snapshot_transfer_restarts_when_the_follower_restarts() {
    let mut cluster = Cluster::new(&[1, 2, 3], |config| config.snapshot_chunk_bytes = 1000);
    cluster.elect(1);
    cluster.isolate(3);
    cluster.propose(1, 300);
    cluster.stabilize();
    let data = Bytes::from(vec![7u8; 5_000]);
    cluster.compact(1, data.clone());
    cluster.heal();
    // Let two chunks through, then crash the follower mid-transfer.
    let mut chunks = 0;
    cluster.rewrite = Some(Box::new(move |message: Message| {
        if let MessageBody::Snapshot { .. } = message.body {
            chunks += 1;
            if chunks > 2 {
                return None;
            }
        }
        Some(message)
    }));
    cluster.ticks(6);
    assert!(cluster.node(3).disk.snapshot.is_none(), "not complete yet");
    cluster.crash(3);
    cluster.restart(3);
    cluster.rewrite = None;
    cluster.ticks(10);
    assert_eq!(cluster.node(3).disk.snapshot.as_ref().unwrap().1, data);
    assert_eq!(cluster.terms(3), cluster.terms(1));
}

#[test]
fn restored_state_is_validated_and_resumed() {
    use crate::raft::{Config, ConfigError, Raft};
    let mut batches = log_of_terms(&[1, 1, 2]);
    let restored = |batches: Vec<crate::batch::Batch>, term: u64| Restored {
        hard_state: HardState {
            term: Term(term),
            vote: Some(NodeId(1)),
        },
        batches,
        initial_membership: voters(&[1, 2, 3]),
        ..Restored::default()
    };
    let raft = Raft::new(Config::new(NodeId(1)), restored(batches.clone(), 2)).unwrap();
    let status = raft.status();
    assert_eq!(
        (status.last_index, status.durable),
        (LogIndex(3), LogIndex(3))
    );
    assert_eq!((status.term, status.vote), (Term(2), Some(NodeId(1))));
    assert!(matches!(
        Raft::new(Config::new(NodeId(1)), restored(batches.clone(), 1)),
        Err(ConfigError::RestoredTermOrder { .. })
    ));
    batches.remove(0);
    assert_eq!(
        Raft::new(Config::new(NodeId(1)), restored(batches, 2)).err(),
        Some(ConfigError::RestoredLogGap {
            expected: LogIndex(1),
            found: LogIndex(3)
        })
    );
}

#[test]
fn proposals_are_sealed_at_the_batch_limit_and_refused_off_leader() {
    let mut cluster = Cluster::new(&[1, 2, 3], |config| config.batch_entries_max = 8);
    cluster.elect(1);
    assert_eq!(
        cluster.raft(2).propose(b"x"),
        Err(ProposeError::NotLeader {
            leader: Some(NodeId(1))
        })
    );
    let first = cluster.raft(1).propose(b"a").unwrap();
    assert_eq!(first, LogIndex(2), "after the noop");
    cluster.propose(1, 7);
    assert_eq!(cluster.node(1).raft.status().stats.batches_sealed, 1);
    assert_eq!(cluster.node(1).raft.status().last_index, LogIndex(9));
    cluster.propose(1, 3);
    cluster.stabilize();
    let stats = cluster.node(1).raft.status().stats;
    assert_eq!(stats.batches_sealed, 2, "the rest sealed by ready()");
    assert_eq!(commit(&cluster, 1), LogIndex(12));
}

/// Regression (sim seeds 38, 141, 181, 320, 732, 1286): a leader that removes itself and loses
/// leadership before the removal commits must still campaign (Raft dissertation 4.2.2), or the
/// remaining voter, still on the old membership, can never gather a quorum: the old leader's
/// longer log makes it refuse that voter.
#[test]
fn a_leader_removing_itself_still_campaigns_until_the_removal_commits() {
    let mut cluster = Cluster::new(&[1, 2, 3], |_| {});
    cluster.elect(1);
    cluster
        .raft(1)
        .propose_membership(MembershipChange::Remove(NodeId(3)))
        .unwrap();
    cluster.stabilize();
    cluster.ticks(2);
    cluster.isolate(1);
    cluster
        .raft(1)
        .propose_membership(MembershipChange::Remove(NodeId(1)))
        .unwrap();
    cluster.propose(1, 3);
    cluster.stabilize();
    cluster.ticks(25);
    assert_eq!(
        role(&cluster, 1),
        Role::Follower,
        "check-quorum stepped it down"
    );
    assert_ne!(
        role(&cluster, 2),
        Role::Leader,
        "2 alone is not a quorum of {{1, 2}}"
    );
    cluster.heal();
    cluster.ticks(80);
    assert_eq!(
        cluster.leader(),
        Some(2),
        "1 led again, committed its removal, left"
    );
    let status = cluster.node(2).raft.status();
    assert_eq!(status.membership.voters, voters(&[2]).voters);
    let last = cluster.propose(2, 2);
    cluster.stabilize();
    assert_eq!(commit(&cluster, 2), last);
}

/// Regression (sim seed 2414): a member whose log lags may not know that a candidate was added;
/// it must still hear the candidate's vote requests, or a quorum that needs it never forms.
#[test]
fn a_lagging_member_hears_a_candidate_it_does_not_know() {
    use crate::batch::Batch;
    let new_membership = voters(&[2, 4]);
    let log = vec![Batch::single(
        Term(1),
        LogIndex(1),
        BatchKind::Membership,
        &new_membership.encode(),
    )];
    let restored = vec![
        (
            2,
            Restored {
                initial_membership: voters(&[1, 2]),
                ..Restored::default()
            },
        ),
        (
            4,
            Restored {
                hard_state: HardState {
                    term: Term(1),
                    vote: None,
                },
                batches: log,
                initial_membership: voters(&[1, 2]),
                ..Restored::default()
            },
        ),
    ];
    let mut cluster = Cluster::with_restored(restored, |_| {});
    cluster.elect(4);
    cluster.ticks(2);
    assert_eq!(
        cluster.node(2).raft.status().membership,
        new_membership,
        "2 learned the membership from its new leader"
    );
}

/// Entries 2..=6 commit on {1, 2} while 3 is cut off; then 1 crashes and 2 restarts with its
/// log damaged from index 2 (cut off by the repair open). Returns the cluster with 2 and 3 up
/// and connected, after enough time for an election among them.
fn committed_entries_lost_on_a_voter(gate: RepairGate) -> Cluster {
    let mut cluster = Cluster::new(&[1, 2, 3], |_| {});
    cluster.elect(1);
    cluster.isolate(3);
    let last = cluster.propose(1, 5);
    cluster.stabilize();
    assert_eq!((last, commit(&cluster, 1)), (LogIndex(6), LogIndex(6)));
    assert_eq!(cluster.node(2).raft.status().durable, LogIndex(6));
    cluster.crash(1);
    cluster.crash(2);
    cluster.restart_damaged(2, Some(2), gate);
    cluster.heal();
    cluster.ticks(100);
    cluster
}

#[test]
fn repair_a_node_that_lost_acknowledged_entries_neither_votes_nor_campaigns() {
    let mut cluster = committed_entries_lost_on_a_voter(RepairGate::Until);
    let repairing = cluster.node(2).raft.status();
    assert_eq!(repairing.repair_until, Some(LogIndex(6)));
    assert!(repairing.stats.votes_refused_repairing > 0);
    assert_eq!(repairing.stats.pre_votes_started, 0, "never campaigns");
    assert_eq!(
        cluster.leader(),
        None,
        "3 lacks the committed entries and 2 may not vote for it"
    );
    // The node holding the entries comes back: it wins with 3's vote and repairs 2.
    cluster.restart(1);
    cluster.ticks(100);
    assert_eq!(cluster.leader(), Some(1));
    let repaired = cluster.node(2).raft.status();
    assert_eq!(repaired.repair_until, None);
    assert_eq!(repaired.stats.repairs_completed, 1);
    for id in [1, 2, 3] {
        let terms = cluster.terms(id);
        assert_eq!(
            &terms[1..6],
            &[(2, 1), (3, 1), (4, 1), (5, 1), (6, 1)],
            "{id} holds the committed entries"
        );
    }
}

#[test]
#[should_panic(expected = "state machine safety")]
fn repair_gate_off_loses_a_committed_entry() {
    // The same damage without the repair gate: 2 votes for 3, whose new term overwrites the
    // entries that had committed, and the harness sees another entry applied at index 2. The
    // gate above is what prevents this.
    committed_entries_lost_on_a_voter(RepairGate::Off);
}

#[test]
fn repair_of_an_unknown_extent_waits_for_an_entry_of_a_newer_term() {
    // 2 lost a whole segment: it only knows it held index 1 and had reached term 1.
    let mut cluster = committed_entries_lost_on_a_voter(RepairGate::AboveTerm);
    let repairing = cluster.node(2).raft.status();
    assert_eq!(repairing.repair_until, Some(LogIndex(1)));
    assert!(repairing.stats.votes_refused_repairing > 0);
    assert_eq!(repairing.stats.pre_votes_started, 0, "never campaigns");
    assert_eq!(cluster.leader(), None, "2 may not vote for 3");
    cluster.restart(1);
    cluster.ticks(100);
    assert_eq!(cluster.leader(), Some(1));
    let repaired = cluster.node(2).raft.status();
    assert_eq!(repaired.repair_until, None);
    assert_eq!(repaired.stats.repairs_completed, 1);
    assert!(
        cluster.terms(2).last().is_some_and(|&(_, term)| term > 1),
        "lifted only with an entry of the new term: {:?}",
        cluster.terms(2)
    );
    for id in [1, 2, 3] {
        assert_eq!(
            &cluster.terms(id)[1..6],
            &[(2, 1), (3, 1), (4, 1), (5, 1), (6, 1)],
            "{id} holds the committed entries"
        );
    }
}

/// A follower that lost acknowledged entries while the cluster is idle (a replaced disk, a
/// cut tail) is repaired by heartbeats alone: the heartbeat's commit, capped at what the leader
/// believes it holds, is past its log, and its answer tells the leader where its log ends.
#[test]
fn an_idle_leader_repairs_a_follower_that_lost_entries_from_heartbeats() {
    let mut cluster = Cluster::new(&[1, 2, 3], |_| {});
    cluster.elect(1);
    cluster.propose(1, 5);
    cluster.stabilize();
    let last = cluster.node(1).raft.status().durable;
    cluster.crash(2);
    cluster.restart_damaged(2, Some(2), RepairGate::Off);
    assert_eq!(cluster.node(2).raft.status().durable, LogIndex(1));
    // No proposal: only heartbeats reach 2.
    cluster.ticks(30);
    let leader = cluster.node(1).raft.status();
    assert_eq!(leader.role, Role::Leader);
    assert!(leader.stats.followers_lost_entries >= 1);
    assert_eq!(cluster.node(2).raft.status().durable, last);
}

#[test]
fn leader_lowers_the_match_of_a_follower_that_lost_acknowledged_entries() {
    // The leader stays up: it had counted 2 up to 6 in this term. After 2 restarts with its log
    // cut at 2, its rejects show a log ending below that match; the leader must send from there
    // again (a match never moves down otherwise).
    let mut cluster = Cluster::new(&[1, 2, 3], |_| {});
    cluster.elect(1);
    cluster.propose(1, 5);
    cluster.stabilize();
    cluster.crash(2);
    cluster.restart_damaged(2, Some(2), RepairGate::Until);
    assert_eq!(
        cluster.node(2).raft.status().repair_until,
        Some(LogIndex(6))
    );
    cluster.propose(1, 1);
    cluster.ticks(30);
    let leader = cluster.node(1).raft.status();
    assert!(leader.stats.followers_lost_entries >= 1);
    let repaired = cluster.node(2).raft.status();
    assert_eq!(
        (repaired.repair_until, repaired.durable),
        (None, LogIndex(7))
    );
    assert_eq!(cluster.terms(2), cluster.terms(1));
}

/// A leader whose turns come three times slower than its followers' ticks (a runtime stalled by
/// back-pressure, a pause or a slow disk) is told the true time at each turn, before its inputs:
/// by then its followers have elected someone else, so a read it takes must be refused or go
/// through a round, never be served on the lease it held before the stall.
#[test]
fn lease_is_measured_in_clock_time_that_a_stalled_leader_does_not_lose() {
    let mut cluster = Cluster::new(&[1, 2, 3], |config| {
        config.read_mode = ReadMode::Lease {
            clock_drift_ticks: 2,
        }
    });
    cluster.ticks(40);
    let old = cluster.leader().expect("a leader");
    cluster.raft(old).read_index(ReadId(1)).unwrap();
    assert_eq!(cluster.raft(old).ready().reads.len(), 1, "a lease read");
    cluster.stabilize();
    let tick = cluster.node(old).config.tick;
    let start = cluster.node(old).raft.next_tick_at() - tick;
    cluster.isolate(old);
    let followers: Vec<u64> = [1, 2, 3].into_iter().filter(|&id| id != old).collect();
    let mut step = 0u32;
    let new = loop {
        step += 1;
        assert!(step < 100, "the followers elect a new leader");
        for &id in &followers {
            cluster.raft(id).tick();
        }
        cluster.stabilize();
        if step % 3 == 0 {
            // The stalled leader's turn: the runtime passes the clock before any input.
            cluster.raft(old).advance(start + tick * step);
            cluster.stabilize();
        }
        if let Some(&new) = followers
            .iter()
            .find(|&&id| role(&cluster, id) == Role::Leader)
        {
            break new;
        }
    };
    let written = cluster.propose(new, 1);
    cluster.stabilize();
    assert_eq!(commit(&cluster, new), written, "the new leader commits");
    // The old leader's next turn, with a read queued.
    let now = start + tick * (step + 3 - step % 3);
    cluster.raft(old).advance(now);
    let stale = commit(&cluster, old);
    if cluster.raft(old).read_index(ReadId(2)).is_ok() {
        let ready = cluster.raft(old).ready();
        assert!(
            ready.reads.iter().all(|read| read.id != ReadId(2)),
            "node {old} served a read at {stale} on its lease {:?} after its last tick before \
             the stall, while node {new} leads and committed {written}",
            now - start
        );
    }
}

/// The lease runs `election_ticks - clock_drift_ticks` ticks of clock time from the moment its
/// round was sent (a round sent late in a tick, by a turn that started late, lasts from then),
/// and not one nanosecond longer.
#[test]
fn lease_lapses_exactly_its_window_after_the_round_was_sent() {
    let mut cluster = Cluster::new(&[1, 2, 3], |config| {
        config.read_mode = ReadMode::Lease {
            clock_drift_ticks: 2,
        }
    });
    cluster.ticks(40);
    let leader = cluster.leader().expect("a leader");
    let tick = cluster.node(leader).config.tick;
    let sent_at = loop {
        // A turn that starts 0.4 tick after the tick fell due.
        let now = cluster.node(leader).raft.next_tick_at() + tick * 2 / 5;
        cluster.raft(leader).advance(now);
        let ready = cluster.raft(leader).ready();
        let heartbeat = ready
            .messages
            .iter()
            .any(|m| matches!(m.body, MessageBody::Heartbeat { .. }));
        cluster.network.extend(ready.messages);
        cluster.stabilize();
        if heartbeat {
            break now;
        }
    };
    cluster.isolate(leader);
    let window = tick * 8;
    cluster
        .raft(leader)
        .advance(sent_at + window - Duration::from_nanos(1));
    cluster.raft(leader).read_index(ReadId(1)).unwrap();
    let ready = cluster.raft(leader).ready();
    assert_eq!(ready.reads.len(), 1, "served within the window");
    cluster.raft(leader).advance(sent_at + window);
    cluster.raft(leader).read_index(ReadId(2)).unwrap();
    let ready = cluster.raft(leader).ready();
    assert!(ready.reads.is_empty(), "lapsed at the window's end");
}

/// A read asked to be confirmed by a round waits for one even while the lease is valid (the
/// embedding API's `read_index` and `read_linearizable` on a node that runs with leases).
#[test]
fn a_read_by_round_waits_for_a_quorum_under_a_valid_lease() {
    let mut cluster = Cluster::new(&[1, 2, 3], |config| {
        config.read_mode = ReadMode::Lease {
            clock_drift_ticks: 2,
        }
    });
    cluster.ticks(40);
    let leader = cluster.leader().expect("a leader");
    assert!(cluster.node(leader).raft.lease_reads());
    cluster.raft(leader).read_index(ReadId(1)).unwrap();
    let ready = cluster.raft(leader).ready();
    assert_eq!(ready.reads.len(), 1, "the lease serves a read at once");
    cluster.isolate(leader);
    cluster.raft(leader).read_index_by_round(ReadId(2)).unwrap();
    let ready = cluster.raft(leader).ready();
    assert!(
        ready.reads.is_empty(),
        "a read by round waits for its round"
    );
    assert!(ready
        .messages
        .iter()
        .any(|m| matches!(m.body, MessageBody::Heartbeat { .. })));
    cluster.stabilize();
    let ready = cluster.raft(leader).ready();
    assert!(
        ready.reads.is_empty(),
        "no quorum answered the cut-off leader"
    );
}

#[test]
fn suspect_a_node_whose_tail_was_cut_votes_only_for_a_candidate_it_learned_is_up_to_date() {
    // 2's log lost its acknowledged tail 2..=6 to a cut after an unclean stop; 1, the other
    // holder, is down; 3 lacks the entries. 2 hears 3 but not a quorum of the other voters.
    let mut cluster = committed_entries_lost_on_a_voter(RepairGate::Suspect);
    let suspect = cluster.node(2).raft.status();
    assert!(suspect.suspect, "2 learned from 3 alone: {suspect:?}");
    assert!(suspect.stats.votes_refused_suspect > 0);
    assert_eq!(
        cluster.leader(),
        None,
        "3 lacks the committed entries and 2 may not vote for it"
    );
    // 1 comes back: its vote requests complete what 2 learns, and only a log at least as up
    // to date as 1's can win; 1's new term then lifts the suspicion.
    cluster.restart(1);
    cluster.ticks(100);
    assert_eq!(cluster.leader(), Some(1));
    let lifted = cluster.node(2).raft.status();
    assert!(!lifted.suspect, "{lifted:?}");
    assert_eq!(lifted.stats.suspicions_lifted, 1);
    for id in [1, 2, 3] {
        assert_eq!(
            &cluster.terms(id)[1..6],
            &[(2, 1), (3, 1), (4, 1), (5, 1), (6, 1)],
            "{id} holds the committed entries"
        );
    }
}

/// Entries 2..=6 commit on all three nodes; then all three lose power at once and restart with
/// their tails cut at different points (`keep` is the last index each keeps). Returns the
/// cluster after enough time for an election.
fn whole_cluster_power_cut(keep: [u64; 3], pre_vote: bool) -> Cluster {
    let mut cluster = Cluster::new(&[1, 2, 3], |config| config.pre_vote = pre_vote);
    cluster.elect(1);
    cluster.propose(1, 5);
    cluster.stabilize();
    // Heartbeats carry the commit index to the followers, which apply the entries.
    cluster.ticks(10);
    for id in [1, 2, 3] {
        assert_eq!(commit(&cluster, id), LogIndex(6));
        cluster.crash(id);
    }
    for (id, keep) in [1, 2, 3].into_iter().zip(keep) {
        cluster.restart_damaged(id, Some(keep + 1), RepairGate::Suspect);
        assert!(cluster.node(id).raft.status().suspect);
    }
    cluster.ticks(300);
    cluster
}

#[test]
fn suspect_nodes_all_cut_at_once_still_elect_a_leader_holding_every_committed_entry() {
    for pre_vote in [true, false] {
        let mut cluster = whole_cluster_power_cut([4, 6, 3], pre_vote);
        assert_eq!(
            cluster.leader(),
            Some(2),
            "only 2 still holds index 6 (pre-vote {pre_vote})"
        );
        let leader_term = cluster.node(2).raft.status().term;
        cluster.propose(2, 1);
        cluster.stabilize();
        for id in [1, 2, 3] {
            let status = cluster.node(id).raft.status();
            assert!(!status.suspect, "{status:?}");
            assert_eq!(
                &cluster.terms(id)[1..7],
                &[
                    (2, 1),
                    (3, 1),
                    (4, 1),
                    (5, 1),
                    (6, 1),
                    (7, leader_term.get())
                ],
                "{id} holds the committed entries (pre-vote {pre_vote})"
            );
        }
    }
}

#[test]
fn suspect_learns_only_from_senders_past_its_term_and_counts_a_quorum_of_other_voters() {
    // Node 1 restarts suspect at term 2 with log [1, 2]; voters 1, 2, 3 and learner 4.
    let mut membership = voters(&[1, 2, 3]);
    membership.learners.insert(NodeId(4));
    let restored = Restored {
        hard_state: HardState {
            term: Term(2),
            vote: None,
        },
        batches: log_of_terms(&[1, 2]),
        initial_membership: membership,
        suspect_term: Some(Term(2)),
        ..Restored::default()
    };
    let mut raft = crate::raft::Raft::new(crate::raft::Config::new(NodeId(1)), restored).unwrap();
    let request = |from: u64, term: u64, pre: bool, last: (u64, u64)| Message {
        from: NodeId(from),
        to: NodeId(1),
        term: Term(term),
        body: if pre {
            MessageBody::PreVote {
                last_index: LogIndex(last.1),
                last_term: Term(last.0),
            }
        } else {
            MessageBody::Vote {
                last_index: LogIndex(last.1),
                last_term: Term(last.0),
                leadership_transfer: false,
            }
        },
    };
    // A pre-candidate still at term 2 says nothing; 3 at term 3 does; a learner does not count.
    raft.step(request(2, 3, true, (2, 9)));
    raft.step(request(3, 3, false, (2, 3)));
    raft.step(request(4, 4, false, (2, 9)));
    let status = raft.status();
    assert!(status.suspect);
    assert_eq!(status.vote, None, "one report of two needed: no vote");
    assert_eq!(status.stats.votes_refused_suspect, 3);
    // 2, pre-voting from term 4, completes the quorum of other voters: floor (2, 5). Its
    // pre-vote is at the floor; 3's vote at (2, 3) is below it.
    raft.step(request(2, 5, true, (2, 5)));
    raft.step(request(3, 5, false, (2, 3)));
    let status = raft.status();
    assert_eq!((status.vote, status.stats.votes_refused_suspect), (None, 4));
    assert!(status.suspect, "its own log (2, 2) is below the floor");
    raft.step(request(2, 6, false, (2, 5)));
    assert_eq!(raft.status().vote, Some(NodeId(2)), "at the floor: granted");
}

/// The single-server change bug: voters {1, 2, 3, 4} and learner 5. Leader 1 appends
/// Promote(5) at index p, which only 5 receives. Partition {1, 5} | {2, 3, 4}: 2 wins (4's vote
/// counts, but 2's Appends never reach 4), appends its Noop at p and, at once, Remove(4) at
/// p + 1 — which, counted over {1, 2, 3}, commits p and p + 1 on {2, 3}. Partition {2, 3} |
/// {1, 4, 5}: 4's log is older than 1's and 5's, 5 is a voter in its own view, so 1 or 5 wins
/// with {1, 4, 5}, a majority of {1, 2, 3, 4, 5}, and commits Promote(5) at p.
///
/// Returns the cluster after the second partition healed, p, and 2's answer to Remove(4).
fn single_server_change_race(
    bug: Option<InjectedBug>,
) -> (Cluster, LogIndex, Result<LogIndex, ProposeError>) {
    let mut cluster = Cluster::new(&[1, 2, 3, 4], |config| config.inject_bug = bug);
    cluster.elect(1);
    cluster.propose(1, 3);
    let mut config = super::harness::test_config(5);
    config.inject_bug = bug;
    cluster.add_node(config, Restored::default());
    cluster
        .raft(1)
        .propose_membership(MembershipChange::AddLearner(NodeId(5), None))
        .unwrap();
    cluster.stabilize();
    cluster.ticks(2);

    cluster.partition(&[1, 5], &[2, 3, 4]);
    let p = cluster
        .raft(1)
        .propose_membership(MembershipChange::Promote(NodeId(5)))
        .unwrap();
    cluster.stabilize();
    assert_eq!(
        cluster.node(5).raft.status().durable,
        p,
        "5 holds Promote(5)"
    );
    assert!(commit(&cluster, 1) < p, "Promote(5) needs 3 of 5 voters");

    // 3 and 4 stop hearing 1 for an election timeout, then 2 campaigns; its Appends to 4 are lost.
    for _ in 0..10 {
        cluster.tick_only(&[3, 4]);
    }
    cluster.rewrite = Some(Box::new(|message: Message| {
        let append = matches!(message.body, MessageBody::Append { .. });
        (!(append && message.to == NodeId(4))).then_some(message)
    }));
    cluster.elect(2);
    let term_2 = cluster.node(2).raft.status().term;
    assert_eq!(
        cluster.terms(2).last(),
        Some(&(p.get(), term_2.get())),
        "2's Noop at p"
    );
    assert!(
        commit(&cluster, 2) < p,
        "2's Noop needs 3 of {{1, 2, 3, 4}}"
    );
    let removal = cluster
        .raft(2)
        .propose_membership(MembershipChange::Remove(NodeId(4)));
    cluster.stabilize();

    cluster.rewrite = None;
    cluster.heal();
    cluster.partition(&[2, 3], &[1, 4, 5]);
    for _ in 0..100 {
        cluster.tick_only(&[1, 4, 5]);
        if [1, 5]
            .iter()
            .any(|&id| role(&cluster, id) == Role::Leader && commit(&cluster, id) > p)
        {
            break;
        }
    }
    cluster.heal();
    cluster.ticks(40);
    (cluster, p, removal)
}

#[test]
fn a_new_leader_changes_membership_only_after_committing_in_its_term() {
    let (mut cluster, p, removal) = single_server_change_race(None);
    assert!(
        matches!(removal, Err(ProposeError::TermNotCommitted { .. })),
        "2 refuses Remove(4) before its Noop commits: {removal:?}"
    );
    // (The harness asserts at every apply that no two nodes commit different entries at an
    // index.) Every log holds Promote(5) at p, committed.
    let leader = cluster.leader().expect("a leader after the heal");
    for id in 1..=5 {
        assert_eq!(cluster.terms(id), cluster.terms(leader), "{id} converged");
        assert!(commit(&cluster, id) >= p, "{id} commits p");
    }
    assert_eq!(
        cluster.node(leader).applied[&p.get()].0,
        BatchKind::Membership
    );
    // Once its Noop is committed, the leader accepts the change.
    cluster
        .raft(leader)
        .propose_membership(MembershipChange::Remove(NodeId(4)))
        .unwrap();
    cluster.stabilize();
    assert_eq!(
        cluster.node(leader).raft.status().membership.voters,
        voters(&[1, 2, 3, 5]).voters
    );
}

#[test]
#[should_panic(expected = "state machine safety")]
fn membership_change_before_term_commit_bug_switch_commits_two_entries_at_one_index() {
    let _ = single_server_change_race(Some(InjectedBug::MembershipChangeBeforeTermCommit));
}

#[test]
fn a_fresh_leaders_noop_commit_allows_a_membership_change() {
    let mut cluster = Cluster::new(&[1, 2, 3], |_| {});
    for id in 1..=3 {
        cluster.node_mut(id).auto_sync = false;
    }
    elect_syncing_by_hand(&mut cluster, 1);
    assert_eq!(commit(&cluster, 1), LogIndex(0), "Noop not durable yet");
    let term = cluster.node(1).raft.status().term;
    assert_eq!(
        cluster
            .raft(1)
            .propose_membership(MembershipChange::Remove(NodeId(3))),
        Err(ProposeError::TermNotCommitted { term })
    );
    for _ in 0..2 {
        for id in 1..=3 {
            cluster.sync(id);
        }
        cluster.stabilize();
    }
    assert_eq!(commit(&cluster, 1), LogIndex(1), "the Noop committed");
    assert_eq!(
        cluster
            .raft(1)
            .propose_membership(MembershipChange::Remove(NodeId(3))),
        Ok(LogIndex(2))
    );
}
