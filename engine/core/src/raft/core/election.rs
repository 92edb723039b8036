//! Elections: randomized timeouts, pre-vote, votes and their tally, the lease that makes
//! followers of a live leader ignore disruptive votes, and the role changes.

use super::{Campaign, Raft};
use crate::batch::{Batch, BatchBuilder, BatchKind};
use crate::raft::{MessageBody, Role};
use crate::types::{LogIndex, NodeId, Term};

impl Raft {
    pub(super) fn reset_election_timer(&mut self) {
        self.election_elapsed = 0;
        let spread = self.config.election_ticks as u64;
        self.randomized_timeout = self.config.election_ticks + (self.rng.next() % spread) as u32;
    }

    /// Voters of the latest membership campaign. So does a node that the latest membership
    /// removes while that change is uncommitted, if it voted before it (Raft dissertation
    /// 4.2.2): the remaining voters may need it as leader to commit the change. It does not
    /// count its own vote then (votes are tallied over the latest membership).
    ///
    /// A node repairing its log never campaigns (it may lack entries it acknowledged).
    pub(super) fn can_campaign(&self) -> bool {
        if self.repair_until.is_some() {
            return false;
        }
        if self.membership().is_voter(self.id) {
            return true;
        }
        match self.membership_log.len() {
            0 => false,
            len => {
                let (index, _) = self.membership_log[len - 1];
                let previous = match len {
                    1 => &self.base_membership,
                    _ => &self.membership_log[len - 2].1,
                };
                index > self.commit && previous.is_voter(self.id)
            }
        }
    }

    /// Followers that heard from a live leader within the election timeout (and, under lease
    /// reads, freshly started nodes) refuse disruptive (pre-)votes.
    pub(super) fn in_lease(&self) -> bool {
        self.config.check_quorum
            && self.election_elapsed < self.config.election_ticks
            && (self.leader.is_some() || self.boot_guard)
    }

    pub(super) fn log_up_to_date(&self, last_index: LogIndex, last_term: Term) -> bool {
        (last_term, last_index) >= (self.log.last_term(), self.log.last_index())
    }

    pub(super) fn campaign(&mut self, kind: Campaign) {
        self.reset_election_timer();
        self.votes.clear();
        self.leader = None;
        let pre = kind == Campaign::PreVote;
        let transfer = kind == Campaign::Transfer;
        if pre {
            self.role = Role::PreCandidate;
            self.stats.pre_votes_started += 1;
        } else {
            self.role = Role::Candidate;
            self.term = self.term.next();
            self.vote = Some(self.id);
            self.persist_hard_state();
            self.stats.elections_started += 1;
        }
        // A suspect log is no evidence for a vote, not even its own (see `suspect.rs`).
        if self.suspect.is_none() {
            self.votes.insert(self.id, true);
        }
        if self.election_won() {
            self.on_election_won();
            return;
        }
        let term = if pre { self.term.next() } else { self.term };
        let voters: Vec<NodeId> = self.membership().voters.iter().copied().collect();
        for voter in voters {
            if voter == self.id {
                continue;
            }
            let (last_index, last_term) = (self.log.last_index(), self.log.last_term());
            let body = if pre {
                MessageBody::PreVote {
                    last_index,
                    last_term,
                }
            } else {
                MessageBody::Vote {
                    last_index,
                    last_term,
                    leadership_transfer: transfer,
                }
            };
            // A vote request leaves only once term and self-vote are durable (send() routes
            // it through after_durable while the hard state is unsynced).
            self.send_with_term(voter, term, body, false);
        }
    }

    /// Whether this node may grant a (pre-)vote to a candidate whose log ends at
    /// `(last_term, last_index)`, beyond the usual checks: never while it repairs its log, and
    /// while its log is suspect only at or above the floor it learned from its peers (it
    /// would otherwise compare the candidate against a log that lost entries it may have
    /// acknowledged). Counts the refusal.
    pub(super) fn may_grant_votes(&mut self, last_index: LogIndex, last_term: Term) -> bool {
        if self.repair_until.is_some() {
            self.stats.votes_refused_repairing += 1;
            return false;
        }
        if !self.suspect_allows_vote(last_index, last_term) {
            self.stats.votes_refused_suspect += 1;
            return false;
        }
        true
    }

    pub(super) fn handle_vote(&mut self, from: NodeId, last_index: LogIndex, last_term: Term) {
        let can_vote = self.vote == Some(from) || (self.vote.is_none() && self.leader.is_none());
        let can_vote = can_vote && self.may_grant_votes(last_index, last_term);
        let granted = can_vote && self.log_up_to_date(last_index, last_term);
        if granted {
            self.reset_election_timer();
            if self.vote != Some(from) {
                self.vote = Some(from);
                self.persist_hard_state();
            }
        }
        let term = self.term;
        self.send_with_term(from, term, MessageBody::VoteResponse { granted }, granted);
    }

    pub(super) fn tally(&mut self, from: NodeId, granted: bool) {
        if !self.membership().is_voter(from) {
            return;
        }
        self.votes.entry(from).or_insert(granted);
        if self.election_won() {
            self.on_election_won();
        } else {
            let rejected = self.votes.values().filter(|granted| !**granted).count();
            let voters = self.membership().voters.len();
            if rejected > voters - self.membership().quorum() {
                self.become_follower(self.term, None);
            }
        }
    }

    pub(super) fn election_won(&self) -> bool {
        let membership = self.membership();
        let granted = self
            .votes
            .iter()
            .filter(|(id, granted)| **granted && membership.is_voter(**id))
            .count();
        granted >= membership.quorum()
    }

    pub(super) fn on_election_won(&mut self) {
        if self.role == Role::PreCandidate {
            self.campaign(Campaign::Election);
        } else {
            self.become_leader();
        }
    }

    pub(super) fn become_follower(&mut self, term: Term, leader: Option<NodeId>) {
        if term > self.term {
            self.term = term;
            self.vote = None;
            self.persist_hard_state();
        }
        if self.role == Role::Leader {
            let before = self.reads_failed.len();
            self.reads.fail_all(&mut self.reads_failed);
            self.stats.reads_failed += (self.reads_failed.len() - before) as u64;
        }
        self.role = Role::Follower;
        self.leader = leader;
        self.reset_election_timer();
        self.progress.clear();
        self.votes.clear();
        if !self.pending.is_empty() {
            self.pending = BatchBuilder::default();
        }
        self.broadcast_due = false;
        self.transfer = None;
        self.timeout_now_sent = false;
    }

    /// A message from the leader of the current term arrived.
    /// Returns false (the message must be dropped) when this node leads the same term: two
    /// leaders in one term is a faulty peer, never an input to act on.
    #[must_use]
    pub(super) fn follow(&mut self, from: NodeId) -> bool {
        if self.role == Role::Leader {
            self.refuse_protocol_violation(&format!(
                "two leaders in {}: self and {from}",
                self.term
            ));
            return false;
        }
        if self.role != Role::Follower {
            self.become_follower(self.term, Some(from));
        }
        self.leader = Some(from);
        self.election_elapsed = 0;
        self.boot_guard = false;
        true
    }

    /// A message only a faulty peer sends: a bug when every node runs this core (the simulator
    /// and the core's tests, which set [`crate::raft::Config::check_invariants`], panic), bad input otherwise
    /// (counted and dropped, the node keeps serving).
    pub(super) fn refuse_protocol_violation(&mut self, what: &str) {
        assert!(!self.config.check_invariants, "{}: {what}", self.id);
        self.stats.protocol_violations_refused += 1;
    }

    pub(super) fn become_leader(&mut self) {
        assert_eq!(
            self.role,
            Role::Candidate,
            "{}: leader from {:?}",
            self.id,
            self.role
        );
        self.role = Role::Leader;
        self.leader = Some(self.id);
        self.lease_revoked = false;
        self.stats.became_leader += 1;
        self.election_elapsed = 0;
        self.heartbeat_elapsed = 0;
        self.rebuild_progress();
        let noop = Batch::single(
            self.term,
            self.log.last_index().next(),
            BatchKind::Noop,
            b"",
        );
        self.append_batch(noop);
        self.broadcast_due = true;
        self.maybe_commit();
    }

    pub(super) fn quorum_recently_active(&self) -> bool {
        let membership = self.membership();
        let active = membership
            .voters
            .iter()
            .filter(|&&id| id == self.id || self.progress.get(&id).is_some_and(|p| p.recent_active))
            .count();
        active >= membership.quorum()
    }
}
