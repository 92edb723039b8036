//! Inputs that drive time and messages: `advance` and `tick` (timeouts, heartbeats,
//! check-quorum, the transfer deadline) and `step` (term rules, non-member filtering, dispatch
//! by message kind).

use std::time::Duration;

use super::{Campaign, Raft};

/// Most election timeouts one [`Raft::advance`] replays tick by tick: a leader's check-quorum
/// steps it down within two, a follower's randomized timeout runs out within two more.
const REPLAY_ELECTIONS_MAX: u128 = 4;
use crate::raft::{Message, MessageBody, Role};
use crate::types::{LogIndex, Term};

impl Raft {
    /// The runtime's monotonic clock reads `now` (time since an origin the runtime picks; the
    /// core never reads a clock). Ticks fall due every `config.tick` on that clock, and every
    /// tick that fell due since the last call is replayed now, none dropped: the runtime calls
    /// this at the start of each turn, before the turn's inputs, so a node that stalled (a
    /// pause, back-pressure, a slow disk) runs its timeouts and check-quorum before it handles
    /// anything that queued meanwhile. Lease reads are checked against `now` (see
    /// `docs/RAFT.md`, "Reads").
    ///
    /// Beyond `REPLAY_ELECTIONS_MAX` election timeouts in one call, further ticks are counted
    /// but not replayed: with no input in between they could only repeat campaigns nobody can
    /// answer before the next input (a leader has stepped down by then, see `tick_leader`).
    pub fn advance(&mut self, now: Duration) {
        assert!(
            now >= self.now,
            "{}: the clock went back from {:?} to {now:?}",
            self.id,
            self.now
        );
        self.now = now;
        if now < self.next_tick_at {
            return;
        }
        let tick_nanos = self.config.tick.as_nanos();
        let due = (now - self.next_tick_at).as_nanos() / tick_nanos + 1;
        let replay_max = REPLAY_ELECTIONS_MAX * u128::from(self.config.election_ticks);
        for _ in 0..due.min(replay_max) {
            self.tick_once();
        }
        let skipped = u64::try_from(due * tick_nanos).expect("a stall of less than 584 years");
        self.next_tick_at += Duration::from_nanos(skipped);
        assert!(
            self.next_tick_at > now && self.next_tick_at - now <= self.config.tick,
            "{}: next tick at {:?} is not within one tick after {now:?}",
            self.id,
            self.next_tick_at
        );
    }

    /// One unit of logical time: moves the clock to the next tick and makes it due.
    pub fn tick(&mut self) {
        self.advance(self.next_tick_at);
    }

    /// When the next tick falls due on the runtime's clock (see [`Raft::advance`]).
    pub fn next_tick_at(&self) -> Duration {
        self.next_tick_at
    }

    /// Drives election timeouts, heartbeats, check-quorum and the transfer deadline by one tick.
    fn tick_once(&mut self) {
        if self.role == Role::Leader {
            self.tick_leader();
        } else {
            self.election_elapsed = self.election_elapsed.saturating_add(1);
            if self.election_elapsed >= self.config.election_ticks {
                self.boot_guard = false;
            }
            if self.election_elapsed >= self.randomized_timeout && self.can_campaign() {
                // A suspect node runs real elections: its request, at a term above every
                // peer's, is what lets suspect peers learn its log end (see `suspect.rs`).
                let kind = if self.config.pre_vote && self.suspect.is_none() {
                    Campaign::PreVote
                } else {
                    Campaign::Election
                };
                self.campaign(kind);
            }
        }
        self.check_after_input();
    }

    pub(super) fn tick_leader(&mut self) {
        self.heartbeat_elapsed += 1;
        self.election_elapsed += 1;
        if let Some(transfer) = &mut self.transfer {
            transfer.elapsed_ticks += 1;
            if transfer.elapsed_ticks >= self.config.election_ticks {
                self.transfer = None;
                self.timeout_now_sent = false;
                self.stats.transfers_aborted += 1;
            }
        }
        if self.election_elapsed >= self.config.election_ticks {
            self.election_elapsed = 0;
            if self.config.check_quorum {
                if !self.quorum_recently_active() {
                    self.stats.check_quorum_step_downs += 1;
                    self.become_follower(self.term, None);
                    return;
                }
                for progress in self.progress.values_mut() {
                    progress.recent_active = false;
                }
            }
        }
        if self.heartbeat_elapsed >= self.config.heartbeat_ticks {
            self.heartbeat_elapsed = 0;
            self.broadcast_heartbeat();
        }
    }

    /// Handles a message from a peer. Stale-term messages and messages from non-members are
    /// ignored and counted.
    pub fn step(&mut self, message: Message) {
        self.stats.messages_received += 1;
        self.step_inner(message);
        self.check_after_input();
    }

    pub(super) fn step_inner(&mut self, message: Message) {
        let Message {
            from,
            to,
            term,
            body,
        } = message;
        assert_eq!(to, self.id, "message for {to} stepped into {}", self.id);
        // A non-member's answers are ignored. Its leader messages are accepted when current (a
        // node just added may not know the membership that contains it yet), and so are its
        // vote requests: a lagging member may not know the candidate was added, and refusing
        // to listen can leave the cluster without a quorum. Disruption by removed nodes is
        // handled by pre-vote and the lease, as for any other node.
        let from_leader = body.is_from_leader();
        let vote_request = matches!(body, MessageBody::PreVote { .. } | MessageBody::Vote { .. });
        let accepted =
            self.membership().contains(from) || vote_request || (from_leader && term >= self.term);
        if !accepted {
            self.stats.non_member_ignored += 1;
            return;
        }
        match body {
            // A pre-candidate is still at the term below the one its request carries.
            MessageBody::PreVote {
                last_index,
                last_term,
            } => self.note_log_end(
                from,
                Term(term.get().saturating_sub(1)),
                last_term,
                last_index,
            ),
            MessageBody::Vote {
                last_index,
                last_term,
                ..
            } => self.note_log_end(from, term, last_term, last_index),
            _ => {}
        }
        if term > self.term {
            match &body {
                MessageBody::PreVote { .. } | MessageBody::Vote { .. } => {
                    let transfer = matches!(
                        body,
                        MessageBody::Vote {
                            leadership_transfer: true,
                            ..
                        }
                    );
                    if !transfer && self.in_lease() {
                        self.stats.votes_ignored_in_lease += 1;
                        return;
                    }
                    if matches!(body, MessageBody::Vote { .. }) {
                        self.become_follower(term, None);
                    }
                }
                MessageBody::PreVoteResponse { granted: true } => {}
                _ => self.become_follower(term, from_leader.then_some(from)),
            }
        } else if term < self.term {
            match body {
                MessageBody::Append { .. } | MessageBody::Heartbeat { .. }
                    if self.config.check_quorum || self.config.pre_vote =>
                {
                    // Tell the stale leader about the newer term so it steps down.
                    self.send(
                        from,
                        MessageBody::AppendResponse {
                            success: false,
                            index: LogIndex::ZERO,
                            hint_index: LogIndex::ZERO,
                            hint_term: Term::ZERO,
                        },
                    );
                }
                MessageBody::PreVote { .. } => {
                    self.send(from, MessageBody::PreVoteResponse { granted: false });
                }
                _ => {}
            }
            self.stats.stale_term_ignored += 1;
            return;
        }
        match body {
            MessageBody::PreVote {
                last_index,
                last_term,
            } => {
                let granted = term > self.term
                    && self.log_up_to_date(last_index, last_term)
                    && self.may_grant_votes(last_index, last_term);
                let reply_term = if granted { term } else { self.term };
                self.send_with_term(
                    from,
                    reply_term,
                    MessageBody::PreVoteResponse { granted },
                    false,
                );
            }
            MessageBody::Vote {
                last_index,
                last_term,
                ..
            } => self.handle_vote(from, last_index, last_term),
            MessageBody::PreVoteResponse { granted } => {
                if self.role == Role::PreCandidate && term == self.term.next() {
                    self.tally(from, granted);
                }
            }
            MessageBody::VoteResponse { granted } => {
                if self.role == Role::Candidate {
                    self.tally(from, granted);
                }
            }
            MessageBody::Append {
                prev_index,
                prev_term,
                batches,
                commit,
            } => {
                if !self.follow(from) {
                    return;
                }
                self.handle_append(from, prev_index, prev_term, batches, commit);
            }
            MessageBody::Heartbeat { commit, read_round } => {
                if !self.follow(from) {
                    return;
                }
                let last = self.log.last_index();
                if commit > last {
                    // The leader caps a heartbeat's commit at what it believes this node holds:
                    // a commit past the log means entries it acknowledged are gone (a replaced
                    // disk, a cut tail). Say where the log ends, as a too-short log answers an
                    // append, so the leader sends from there without waiting for a new write.
                    self.send(
                        from,
                        MessageBody::AppendResponse {
                            success: false,
                            index: commit,
                            hint_index: last,
                            hint_term: Term::ZERO,
                        },
                    );
                }
                let commit = commit.min(last);
                if commit > self.commit {
                    self.commit = commit;
                }
                self.send(from, MessageBody::HeartbeatResponse { read_round });
            }
            MessageBody::Snapshot {
                meta,
                offset,
                data,
                done,
            } => {
                if !self.follow(from) {
                    return;
                }
                self.handle_snapshot_chunk(from, meta, offset, data, done);
            }
            MessageBody::TimeoutNow => {
                if !self.follow(from) {
                    return;
                }
                if self.can_campaign() {
                    self.campaign(Campaign::Transfer);
                }
            }
            MessageBody::AppendResponse {
                success,
                index,
                hint_index,
                hint_term,
            } => {
                if self.role == Role::Leader {
                    self.handle_append_response(from, success, index, hint_index, hint_term);
                }
            }
            MessageBody::HeartbeatResponse { read_round } => {
                if self.role == Role::Leader {
                    self.handle_heartbeat_response(from, read_round);
                }
            }
            MessageBody::SnapshotResponse {
                index,
                next_offset,
                done,
            } => {
                if self.role == Role::Leader {
                    self.handle_snapshot_response(from, index, next_offset, done);
                }
            }
        }
    }
}
