//! The Raft core: one node's election, replication, commit, read, transfer, snapshot and
//! membership logic, as a pure state machine driven by [`Raft`]'s methods.
//!
//! Guarantees (asserted by [`Raft::invariants`], run after every input in debug builds):
//! `applied <= committed handed out <= commit <= last index`; the durable index never exceeds
//! the last index; commit never decreases and never passes an entry whose term the leader could
//! not count (Figure 8); a leader's progress never claims more than its log holds.
//!
//! Durability before visibility: every message that depends on state not yet durable (acks,
//! vote grants, a candidate's requests, anything sent while a term change is unsynced) goes
//! into the pending [`StorageWrite`]'s `after_durable`, so the runtime can only release it once
//! the write is durable.

use std::collections::{BTreeMap, VecDeque};

use bytes::{Bytes, BytesMut};

use crate::batch::{Batch, BatchBuilder, BatchKind, ENTRY_BYTES_MAX};
use crate::types::{LogIndex, NodeId, Term};

#[cfg(any(test, feature = "inject-bugs"))]
use super::config::InjectedBug;
use super::config::{Config, ConfigError, ReadMode};
use super::membership::{Membership, MembershipChange};
use super::memlog::MemLog;
use super::message::{Message, MessageBody};
use super::progress::Progress;
use super::read_only::ReadQueue;
use super::ready::{
    HardState, ReadId, ReadReady, Ready, Restored, Role, SnapshotMeta, SoftState, StorageWrite,
    WriteId,
};
use super::status::{PeerStatus, ProgressState, ProposeError, Stats, Status};

/// Heartbeat answers without progress after which a replicating follower is probed again
/// from its match index (its acks or our appends were lost, or it restarted).
const STALLED_HEARTBEATS_MAX: u32 = 2;

/// A tiny seeded generator (splitmix64) for election timeouts.
#[derive(Debug)]
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

/// A snapshot being received from the leader, chunk by chunk.
#[derive(Debug)]
struct IncomingSnapshot {
    meta: SnapshotMeta,
    data: BytesMut,
}

/// Why a node campaigns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Campaign {
    /// A pre-vote round at `term + 1`, term unchanged.
    PreVote,
    /// A real election (after a won pre-vote, or with pre-vote off).
    Election,
    /// An election the leader asked for (TimeoutNow): no pre-vote, votes marked as transfer.
    Transfer,
}

/// A leadership transfer in progress.
#[derive(Debug, Clone, Copy)]
struct Transfer {
    target: NodeId,
    elapsed_ticks: u32,
}

/// One node's consensus core. See the module docs and `docs/RAFT.md`.
pub struct Raft {
    config: Config,
    id: NodeId,
    rng: SplitMix64,

    term: Term,
    vote: Option<NodeId>,
    role: Role,
    leader: Option<NodeId>,
    reported_soft: Option<SoftState>,

    log: MemLog,
    /// Highest index known committed.
    commit: LogIndex,
    /// Highest index handed to the runtime in `Ready::committed`.
    committed_out: LogIndex,
    applied: LogIndex,
    /// Highest index such that this node's log up to it is durable.
    durable: LogIndex,
    snapshot: Option<(SnapshotMeta, Bytes)>,
    incoming: Option<IncomingSnapshot>,

    /// Membership at the snapshot point (or the initial one).
    base_membership: Membership,
    /// Membership batches in the log after the snapshot point: (index, membership).
    membership_log: Vec<(LogIndex, Membership)>,

    ticks: u64,
    election_elapsed: u32,
    heartbeat_elapsed: u32,
    randomized_timeout: u32,
    /// Lease mode: a freshly started node may have promised a lease it forgot; it refuses
    /// disruptive votes until one election timeout has passed.
    boot_guard: bool,

    votes: BTreeMap<NodeId, bool>,

    progress: BTreeMap<NodeId, Progress>,
    pending: BatchBuilder,
    pending_capacity: usize,
    broadcast_due: bool,
    transfer: Option<Transfer>,
    timeout_now_sent: bool,
    /// A TimeoutNow went out in this term: its target may win a vote that bypasses the
    /// followers' lease at any time, so lease reads are off until the next term.
    lease_revoked: bool,
    reads: ReadQueue,

    messages: Vec<Message>,
    write: Option<StorageWrite>,
    /// Emitted writes not yet durable: (id, last log index when emitted, clamped by truncation).
    writes_inflight: VecDeque<(WriteId, LogIndex)>,
    next_write_id: u64,
    durable_write: WriteId,
    /// The emitted write holding the newest hard state, until it is durable.
    hard_state_write: Option<WriteId>,
    reads_ready: Vec<ReadReady>,
    reads_failed: Vec<ReadId>,

    stats: Stats,
    scratch: Vec<LogIndex>,
    scratch_rounds: Vec<u64>,
}

impl Raft {
    /// Starts a core from its config and what the runtime restored from disk.
    pub fn new(config: Config, restored: Restored) -> Result<Raft, ConfigError> {
        config.validate()?;
        let Restored {
            hard_state,
            snapshot,
            batches,
            initial_membership,
        } = restored;
        let (mut log, base_membership) = match &snapshot {
            Some((meta, _)) => (MemLog::new(meta.index, meta.term), meta.membership.clone()),
            None => (MemLog::new(LogIndex::ZERO, Term::ZERO), initial_membership),
        };
        let mut membership_log = Vec::new();
        for batch in batches {
            let expected = log.last_index().next();
            if batch.first_index() != expected {
                return Err(ConfigError::RestoredLogGap {
                    expected,
                    found: batch.first_index(),
                });
            }
            if batch.term() < log.last_term() || batch.term() > hard_state.term {
                return Err(ConfigError::RestoredTermOrder {
                    index: batch.first_index(),
                    term: batch.term(),
                    bound: if batch.term() > hard_state.term {
                        hard_state.term
                    } else {
                        log.last_term()
                    },
                });
            }
            if batch.kind() == BatchKind::Membership {
                let membership = decode_membership_batch(&batch)?;
                membership_log.push((batch.first_index(), membership));
            }
            log.append(batch);
        }
        let snapshot_index = log.snapshot_index();
        let id = config.id;
        let seed = config.seed ^ id.get().wrapping_mul(0x9e37_79b9_7f4a_7c15);
        let boot_guard = matches!(config.read_mode, ReadMode::Lease { .. });
        let mut raft = Raft {
            id,
            rng: SplitMix64(seed),
            term: hard_state.term,
            vote: hard_state.vote,
            role: Role::Follower,
            leader: None,
            reported_soft: None,
            durable: log.last_index(),
            log,
            commit: snapshot_index,
            committed_out: snapshot_index,
            applied: snapshot_index,
            snapshot,
            incoming: None,
            base_membership,
            membership_log,
            ticks: 0,
            election_elapsed: 0,
            heartbeat_elapsed: 0,
            randomized_timeout: config.election_ticks,
            boot_guard,
            votes: BTreeMap::new(),
            progress: BTreeMap::new(),
            pending: BatchBuilder::default(),
            pending_capacity: 4096,
            broadcast_due: false,
            transfer: None,
            timeout_now_sent: false,
            lease_revoked: false,
            reads: ReadQueue::default(),
            messages: Vec::new(),
            write: None,
            writes_inflight: VecDeque::new(),
            next_write_id: 1,
            durable_write: WriteId(0),
            hard_state_write: None,
            reads_ready: Vec::new(),
            reads_failed: Vec::new(),
            stats: Stats::default(),
            scratch: Vec::new(),
            scratch_rounds: Vec::new(),
            config,
        };
        raft.reset_election_timer();
        raft.debug_check();
        Ok(raft)
    }

    // ----------------------------------------------------------------------------------------
    // Inputs
    // ----------------------------------------------------------------------------------------

    /// One unit of logical time: drives election timeouts, heartbeats, check-quorum and the
    /// transfer deadline.
    pub fn tick(&mut self) {
        self.ticks += 1;
        if self.role == Role::Leader {
            self.tick_leader();
        } else {
            self.election_elapsed = self.election_elapsed.saturating_add(1);
            if self.election_elapsed >= self.config.election_ticks {
                self.boot_guard = false;
            }
            if self.election_elapsed >= self.randomized_timeout && self.can_campaign() {
                let kind = if self.config.pre_vote {
                    Campaign::PreVote
                } else {
                    Campaign::Election
                };
                self.campaign(kind);
            }
        }
        self.debug_check();
    }

    fn tick_leader(&mut self) {
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
        self.debug_check();
    }

    fn step_inner(&mut self, message: Message) {
        let Message {
            from,
            to,
            term,
            body,
        } = message;
        assert_eq!(to, self.id, "message for {to} stepped into {}", self.id);
        let from_leader = body.is_from_leader();
        let accepted = self.membership().contains(from) || (from_leader && term >= self.term);
        if !accepted {
            self.stats.non_member_ignored += 1;
            return;
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
                let granted = term > self.term && self.log_up_to_date(last_index, last_term);
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
                self.follow(from);
                self.handle_append(from, prev_index, prev_term, batches, commit);
            }
            MessageBody::Heartbeat { commit, read_round } => {
                self.follow(from);
                let commit = commit.min(self.log.last_index());
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
                self.follow(from);
                self.handle_snapshot_chunk(from, meta, offset, data, done);
            }
            MessageBody::TimeoutNow => {
                self.follow(from);
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

    /// Copies `command` into the pending batch; returns the index it will have. The batch is
    /// sealed (appended and sent) on [`Raft::ready`] or when it reaches a batch limit.
    pub fn propose(&mut self, command: &[u8]) -> Result<LogIndex, ProposeError> {
        self.check_can_propose()?;
        if command.len() > ENTRY_BYTES_MAX {
            return Err(ProposeError::EntryTooLarge {
                bytes: command.len(),
            });
        }
        self.pending.push(command);
        self.stats.entries_proposed += 1;
        let index = self
            .log
            .last_index()
            .plus(self.pending.entry_count() as u64);
        if self.pending.entry_count() >= self.config.batch_entries_max
            || self.pending.payload_bytes() >= self.config.batch_bytes_max as usize
        {
            self.seal_pending();
        }
        Ok(index)
    }

    /// Proposes one membership change; it takes effect as soon as it is appended. Refused while
    /// another change is uncommitted, and for a learner that is not caught up.
    pub fn propose_membership(
        &mut self,
        change: MembershipChange,
    ) -> Result<LogIndex, ProposeError> {
        self.check_can_propose()?;
        if let Some(&(index, _)) = self.membership_log.last() {
            if index > self.commit {
                return Err(ProposeError::MembershipChangePending { index });
            }
        }
        let next = self
            .membership()
            .apply(change)
            .map_err(ProposeError::Membership)?;
        if let MembershipChange::Promote(id) = change {
            let match_index = self
                .progress
                .get(&id)
                .map_or(LogIndex::ZERO, |p| p.match_index);
            let last_index = self
                .log
                .last_index()
                .plus(self.pending.entry_count() as u64);
            if match_index.get() + self.config.promote_lag_entries_max < last_index.get() {
                return Err(ProposeError::LearnerBehind {
                    id,
                    match_index,
                    last_index,
                });
            }
        }
        self.seal_pending();
        let index = self.log.last_index().next();
        let batch = Batch::single(self.term, index, BatchKind::Membership, &next.encode());
        self.append_batch(batch);
        self.broadcast_due = true;
        self.maybe_commit();
        Ok(index)
    }

    /// Starts a linearizable read. The read is reported in [`Ready::reads`] once leadership is
    /// confirmed (or at once under a valid lease), or in [`Ready::reads_failed`] if leadership
    /// is lost first.
    pub fn read_index(&mut self, id: ReadId) -> Result<(), ProposeError> {
        if self.role != Role::Leader {
            return Err(ProposeError::NotLeader {
                leader: self.leader,
            });
        }
        if !self.committed_in_term() {
            self.reads.wait_for_commit(id);
        } else if self.lease_valid() {
            self.reads_ready.push(ReadReady {
                id,
                index: self.commit,
            });
            self.stats.reads_ready += 1;
        } else {
            self.reads.push(id, self.commit);
        }
        Ok(())
    }

    /// Hands leadership to voter `to`: once it has the whole log it is told to campaign at
    /// once. Proposals are refused meanwhile; the transfer is abandoned after an election
    /// timeout.
    pub fn transfer_leadership(&mut self, to: NodeId) -> Result<(), ProposeError> {
        if self.role != Role::Leader {
            return Err(ProposeError::NotLeader {
                leader: self.leader,
            });
        }
        if to == self.id || !self.membership().is_voter(to) {
            return Err(ProposeError::BadTransferTarget { target: to });
        }
        if let Some(transfer) = self.transfer {
            if transfer.target == to {
                return Ok(());
            }
        }
        self.seal_pending();
        self.transfer = Some(Transfer {
            target: to,
            elapsed_ticks: 0,
        });
        self.timeout_now_sent = false;
        self.maybe_send_timeout_now();
        if !self.timeout_now_sent {
            self.send_appends(to);
        }
        Ok(())
    }

    /// Every write with id <= `write` is durable (the runtime has already sent their
    /// `after_durable` messages or is about to).
    pub fn on_durable(&mut self, write: WriteId) {
        assert!(
            write.0 < self.next_write_id,
            "on_durable({}) but the last write emitted is {}",
            write.0,
            self.next_write_id - 1
        );
        if write <= self.durable_write {
            return;
        }
        self.durable_write = write;
        while let Some(&(id, last)) = self.writes_inflight.front() {
            if id > write {
                break;
            }
            self.writes_inflight.pop_front();
            self.durable = last;
        }
        if self.hard_state_write.is_some_and(|id| id <= write) {
            self.hard_state_write = None;
        }
        if self.role == Role::Leader {
            self.maybe_commit();
        }
        self.debug_check();
    }

    /// The state machine applied everything up to `index` (at most what was handed out).
    pub fn on_applied(&mut self, index: LogIndex) {
        assert!(
            index <= self.committed_out,
            "applied {index} beyond the committed entries handed out ({})",
            self.committed_out
        );
        self.applied = self.applied.max(index);
    }

    /// The runtime took a snapshot up to `meta.index` (at most what was handed out as
    /// committed): the log prefix is dropped and the data kept for lagging followers.
    pub fn compact(&mut self, meta: SnapshotMeta, data: Bytes) {
        assert!(
            meta.index <= self.committed_out,
            "compact to {} beyond the committed entries handed out ({})",
            meta.index,
            self.committed_out
        );
        if meta.index < self.log.snapshot_index() {
            return;
        }
        assert_eq!(
            self.log.term_at(meta.index),
            Some(meta.term),
            "compact to {} with term {} that the log does not hold",
            meta.index,
            meta.term
        );
        assert_eq!(
            self.membership_at(meta.index),
            &meta.membership,
            "snapshot at {} carries a membership other than the log's",
            meta.index
        );
        self.log.compact_to(meta.index, meta.term);
        self.base_membership = meta.membership.clone();
        self.membership_log.retain(|&(index, _)| index > meta.index);
        self.snapshot = Some((meta, data));
        self.debug_check();
    }

    // ----------------------------------------------------------------------------------------
    // Outputs
    // ----------------------------------------------------------------------------------------

    /// Whether [`Raft::ready`] would return anything.
    pub fn has_ready(&self) -> bool {
        !self.messages.is_empty()
            || self.write.is_some()
            || self.committed_out < self.commit
            || !self.reads_ready.is_empty()
            || !self.reads_failed.is_empty()
            || self.reported_soft != Some(self.soft_state())
            || (self.role == Role::Leader
                && (!self.pending.is_empty() || self.broadcast_due || self.reads.round_due()))
    }

    /// Takes the outputs; a leader first seals its pending batch and sends what is due.
    pub fn ready(&mut self) -> Ready {
        if self.role == Role::Leader {
            self.seal_pending();
            if self.reads.round_due() {
                self.broadcast_heartbeat();
            }
            if self.broadcast_due {
                self.broadcast_due = false;
                let peers: Vec<NodeId> = self.progress.keys().copied().collect();
                for peer in peers {
                    self.send_appends(peer);
                }
            }
            self.confirm_reads();
        }
        let write = self.write.take().map(|mut write| {
            write.id = WriteId(self.next_write_id);
            self.next_write_id += 1;
            self.writes_inflight
                .push_back((write.id, self.log.last_index()));
            if write.hard_state.is_some() {
                self.hard_state_write = Some(write.id);
            }
            self.stats.writes += 1;
            write
        });
        let mut committed = Vec::new();
        if self.committed_out < self.commit {
            self.log
                .slice(self.committed_out.next(), self.commit, &mut committed);
            self.committed_out = self.commit;
        }
        let soft = self.soft_state();
        let soft_state = (self.reported_soft != Some(soft)).then(|| {
            self.reported_soft = Some(soft);
            soft
        });
        let ready = Ready {
            messages: std::mem::take(&mut self.messages),
            write,
            committed,
            commit_index: self.commit,
            reads: std::mem::take(&mut self.reads_ready),
            reads_failed: std::mem::take(&mut self.reads_failed),
            soft_state,
        };
        self.debug_check();
        ready
    }

    /// A snapshot of the core's state.
    pub fn status(&self) -> Status {
        Status {
            id: self.id,
            role: self.role,
            term: self.term,
            vote: self.vote,
            leader: self.leader,
            commit: self.commit,
            applied: self.applied,
            durable: self.durable,
            first_index: self.log.first_index(),
            last_index: self.log.last_index(),
            durable_write: self.durable_write,
            membership: self.membership().clone(),
            progress: self
                .progress
                .iter()
                .map(|(&id, p)| PeerStatus {
                    id,
                    voter: p.voter,
                    match_index: p.match_index,
                    next_index: p.next_index,
                    state: p.state,
                    inflight_messages: p.inflight_messages(),
                    inflight_bytes: p.inflight_bytes(),
                })
                .collect(),
            stats: self.stats,
        }
    }

    /// The uncompacted log held in memory (including sealed batches not yet durable).
    pub fn log_batches(&self) -> impl Iterator<Item = &Batch> {
        self.log.batches()
    }

    /// The term of `index` if this node holds it (or it is the snapshot point).
    pub fn term_at(&self, index: LogIndex) -> Option<Term> {
        self.log.term_at(index)
    }

    /// Asserts every invariant of the core, with the offending values in the message.
    /// Called after every input in debug builds; the simulator may call it too.
    pub fn invariants(&self) {
        let last = self.log.last_index();
        assert!(
            self.commit <= last,
            "{}: commit {} past last index {last}",
            self.id,
            self.commit
        );
        assert!(
            self.committed_out <= self.commit,
            "{}: handed out {} past commit {}",
            self.id,
            self.committed_out,
            self.commit
        );
        assert!(
            self.applied <= self.committed_out,
            "{}: applied {} past handed out {}",
            self.id,
            self.applied,
            self.committed_out
        );
        assert!(
            self.durable <= last,
            "{}: durable {} past last index {last}",
            self.id,
            self.durable
        );
        assert!(
            self.log.snapshot_index() <= self.commit,
            "{}: snapshot {} past commit {}",
            self.id,
            self.log.snapshot_index(),
            self.commit
        );
        assert!(
            self.log.last_term() <= self.term,
            "{}: last log term {} above current term {}",
            self.id,
            self.log.last_term(),
            self.term
        );
        self.log.check();
        let mut previous = self.log.snapshot_index();
        for &(index, _) in &self.membership_log {
            assert!(
                index > previous && index <= last,
                "{}: membership batch at {index} out of order (previous {previous}, last {last})",
                self.id
            );
            previous = index;
        }
        let mut previous_write = self.durable_write;
        for &(id, last_of_write) in &self.writes_inflight {
            assert!(
                id > previous_write && last_of_write <= last,
                "{}: write {} (last {last_of_write}) out of order after {}",
                self.id,
                id.0,
                previous_write.0
            );
            previous_write = id;
        }
        match self.role {
            Role::Leader => {
                assert_eq!(self.leader, Some(self.id), "{}: leader field", self.id);
                assert_eq!(
                    self.vote,
                    Some(self.id),
                    "{}: leader did not vote self",
                    self.id
                );
                assert!(
                    (self.pending.entry_count() as u64) < self.config.batch_entries_max as u64,
                    "{}: pending batch of {} entries not sealed",
                    self.id,
                    self.pending.entry_count()
                );
                for (peer, progress) in &self.progress {
                    assert_ne!(*peer, self.id, "progress for self");
                    progress.check(last);
                }
            }
            _ => {
                assert!(self.progress.is_empty(), "{}: progress off leader", self.id);
                assert!(self.pending.is_empty(), "{}: proposals off leader", self.id);
                assert!(self.reads.is_empty(), "{}: reads off leader", self.id);
            }
        }
    }

    #[inline]
    fn debug_check(&self) {
        #[cfg(debug_assertions)]
        self.invariants();
    }

    // ----------------------------------------------------------------------------------------
    // Elections
    // ----------------------------------------------------------------------------------------

    fn reset_election_timer(&mut self) {
        self.election_elapsed = 0;
        let spread = self.config.election_ticks as u64;
        self.randomized_timeout = self.config.election_ticks + (self.rng.next() % spread) as u32;
    }

    fn can_campaign(&self) -> bool {
        self.membership().is_voter(self.id)
    }

    /// Followers that heard from a live leader within the election timeout (and, under lease
    /// reads, freshly started nodes) refuse disruptive (pre-)votes.
    fn in_lease(&self) -> bool {
        self.config.check_quorum
            && self.election_elapsed < self.config.election_ticks
            && (self.leader.is_some() || self.boot_guard)
    }

    fn log_up_to_date(&self, last_index: LogIndex, last_term: Term) -> bool {
        (last_term, last_index) >= (self.log.last_term(), self.log.last_index())
    }

    fn campaign(&mut self, kind: Campaign) {
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
        self.votes.insert(self.id, true);
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

    fn handle_vote(&mut self, from: NodeId, last_index: LogIndex, last_term: Term) {
        let can_vote = self.vote == Some(from) || (self.vote.is_none() && self.leader.is_none());
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

    fn tally(&mut self, from: NodeId, granted: bool) {
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

    fn election_won(&self) -> bool {
        let membership = self.membership();
        let granted = self
            .votes
            .iter()
            .filter(|(id, granted)| **granted && membership.is_voter(**id))
            .count();
        granted >= membership.quorum()
    }

    fn on_election_won(&mut self) {
        if self.role == Role::PreCandidate {
            self.campaign(Campaign::Election);
        } else {
            self.become_leader();
        }
    }

    fn become_follower(&mut self, term: Term, leader: Option<NodeId>) {
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
    fn follow(&mut self, from: NodeId) {
        assert!(
            self.role != Role::Leader,
            "{}: two leaders in {}: self and {from}",
            self.id,
            self.term
        );
        if self.role != Role::Follower {
            self.become_follower(self.term, Some(from));
        }
        self.leader = Some(from);
        self.election_elapsed = 0;
        self.boot_guard = false;
    }

    fn become_leader(&mut self) {
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

    fn quorum_recently_active(&self) -> bool {
        let membership = self.membership();
        let active = membership
            .voters
            .iter()
            .filter(|&&id| id == self.id || self.progress.get(&id).is_some_and(|p| p.recent_active))
            .count();
        active >= membership.quorum()
    }

    // ----------------------------------------------------------------------------------------
    // Leader: proposals, replication, commit
    // ----------------------------------------------------------------------------------------

    fn check_can_propose(&self) -> Result<(), ProposeError> {
        if self.role != Role::Leader {
            return Err(ProposeError::NotLeader {
                leader: self.leader,
            });
        }
        if let Some(transfer) = self.transfer {
            return Err(ProposeError::TransferInProgress {
                target: transfer.target,
            });
        }
        Ok(())
    }

    /// Seals the pending proposals into one batch, appends it, and schedules sending.
    fn seal_pending(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let bytes = self.pending.payload_bytes();
        let batch = self
            .pending
            .finish(self.term, self.log.last_index().next(), BatchKind::Normal);
        self.pending_capacity = bytes.clamp(4096, self.config.batch_bytes_max as usize + 4096);
        self.pending = BatchBuilder::with_capacity(self.pending_capacity);
        self.stats.batches_sealed += 1;
        self.append_batch(batch);
        self.broadcast_due = true;
        self.maybe_commit();
    }

    /// Appends a batch to the in-memory log and to the pending write.
    fn append_batch(&mut self, batch: Batch) {
        if batch.kind() == BatchKind::Membership {
            let membership = decode_membership_batch(&batch).unwrap_or_else(|error| {
                panic!("{}: bad membership batch {:?}: {error}", self.id, batch)
            });
            self.membership_log.push((batch.first_index(), membership));
            self.on_membership_changed();
        }
        self.log.append(batch.clone());
        self.write_mut().batches.push(batch);
    }

    fn rebuild_progress(&mut self) {
        let next = self.log.last_index().next();
        let membership = self.membership().clone();
        self.progress.retain(|id, _| membership.contains(*id));
        for id in membership.members() {
            if id == self.id {
                continue;
            }
            let voter = membership.is_voter(id);
            self.progress
                .entry(id)
                .or_insert_with(|| Progress::new(next, voter))
                .voter = voter;
        }
    }

    fn on_membership_changed(&mut self) {
        if self.role == Role::Leader {
            self.rebuild_progress();
        } else if !self.can_campaign() && self.role != Role::Follower {
            self.become_follower(self.term, None);
        }
    }

    /// Sends what is due to `peer`: a snapshot chunk when its next index is compacted away, a
    /// probe, or as many Appends as its window allows.
    fn send_appends(&mut self, peer: NodeId) {
        let Some(progress) = self.progress.get(&peer) else {
            return;
        };
        if progress.state == ProgressState::Snapshot {
            return;
        }
        if progress.next_index < self.log.first_index() {
            self.start_snapshot(peer);
            return;
        }
        let (messages_max, bytes_max) = (
            self.config.inflight_messages_max,
            self.config.inflight_bytes_max,
        );
        loop {
            let progress = self.progress.get_mut(&peer).expect("peer checked");
            if !progress.can_send(messages_max, bytes_max) {
                return;
            }
            let next = progress.next_index;
            let replicate = progress.state == ProgressState::Replicate;
            if replicate && next > self.log.last_index() {
                return;
            }
            let (batches, bytes) = self
                .log
                .batches_from(next, self.config.append_bytes_max as u64);
            let last = batches.last().map_or(next.prev(), Batch::last_index);
            progress.on_sent(last, bytes);
            let prev_index = next.prev();
            let prev_term = self
                .log
                .term_at(prev_index)
                .expect("prev index of an append is held");
            self.stats.appends_sent += 1;
            let body = MessageBody::Append {
                prev_index,
                prev_term,
                batches,
                commit: self.commit,
            };
            self.send(peer, body);
            if !replicate {
                return;
            }
        }
    }

    fn start_snapshot(&mut self, peer: NodeId) {
        let (meta, _) = self
            .snapshot
            .as_ref()
            .unwrap_or_else(|| panic!("{}: log compacted with no snapshot", self.id));
        let index = meta.index;
        self.progress
            .get_mut(&peer)
            .expect("peer has progress")
            .become_snapshot(index);
        self.send_snapshot_chunk(peer, 0);
    }

    fn send_snapshot_chunk(&mut self, peer: NodeId, offset: u64) {
        let (meta, data) = self.snapshot.as_ref().expect("snapshot to send");
        let start = (offset as usize).min(data.len());
        let end = (start + self.config.snapshot_chunk_bytes as usize).min(data.len());
        let body = MessageBody::Snapshot {
            meta: meta.clone(),
            offset: start as u64,
            data: data.slice(start..end),
            done: end == data.len(),
        };
        let progress = self.progress.get_mut(&peer).expect("peer has progress");
        progress.snapshot_sent_end = end as u64;
        self.stats.snapshot_chunks_sent += 1;
        self.send(peer, body);
    }

    fn handle_append_response(
        &mut self,
        from: NodeId,
        success: bool,
        index: LogIndex,
        hint_index: LogIndex,
        hint_term: Term,
    ) {
        let last = self.log.last_index();
        let Some(progress) = self.progress.get_mut(&from) else {
            return;
        };
        progress.recent_active = true;
        if success {
            assert!(
                index <= last,
                "{}: {from} acks {index} past the leader's last index {last}",
                self.id
            );
            if progress.on_ack(index) {
                if progress.voter {
                    self.maybe_commit();
                }
                self.maybe_send_timeout_now();
            }
            self.send_appends(from);
            return;
        }
        if index <= progress.match_index
            || (progress.state == ProgressState::Probe && index != progress.next_index.prev())
            || progress.state == ProgressState::Snapshot
        {
            return; // stale
        }
        let mut next = if hint_term == Term::ZERO {
            hint_index.next()
        } else {
            match self.log.last_index_of_term(hint_term) {
                Some(last_of_term) => last_of_term.next(),
                None => hint_index.max(LogIndex(1)),
            }
        };
        next = next.min(index).max(progress.match_index.next());
        progress.become_probe(next);
        self.send_appends(from);
    }

    fn handle_heartbeat_response(&mut self, from: NodeId, read_round: u64) {
        let last = self.log.last_index();
        let Some(progress) = self.progress.get_mut(&from) else {
            return;
        };
        progress.recent_active = true;
        progress.acked_round = progress.acked_round.max(read_round);
        let mut resend_chunk = None;
        if progress.match_index < last {
            match progress.state {
                ProgressState::Probe => progress.unpause_probe(),
                ProgressState::Replicate => {
                    progress.stalled_heartbeats += 1;
                    if progress.stalled_heartbeats >= STALLED_HEARTBEATS_MAX {
                        let next = progress.match_index.next();
                        progress.become_probe(next);
                    }
                }
                ProgressState::Snapshot => {
                    if !progress.snapshot_progressed {
                        resend_chunk = Some((progress.snapshot_index, progress.snapshot_acked));
                    }
                    progress.snapshot_progressed = false;
                }
            }
        }
        if let Some((index, offset)) = resend_chunk {
            let current = self.snapshot.as_ref().map(|(meta, _)| meta.index);
            if current == Some(index) {
                self.send_snapshot_chunk(from, offset);
            } else {
                self.start_snapshot(from);
            }
        } else {
            self.send_appends(from);
        }
        self.confirm_reads();
    }

    fn handle_snapshot_response(
        &mut self,
        from: NodeId,
        index: LogIndex,
        next_offset: u64,
        done: bool,
    ) {
        let last = self.log.last_index();
        let Some(progress) = self.progress.get_mut(&from) else {
            return;
        };
        progress.recent_active = true;
        if done {
            assert!(
                index <= last,
                "{}: {from} installed snapshot {index} past last index {last}",
                self.id
            );
            if progress.on_ack(index) && progress.voter {
                self.maybe_commit();
            }
            self.send_appends(from);
            return;
        }
        if progress.state != ProgressState::Snapshot || progress.snapshot_index != index {
            return;
        }
        progress.snapshot_acked = next_offset;
        progress.snapshot_progressed = true;
        if next_offset == progress.snapshot_sent_end {
            self.send_snapshot_chunk(from, next_offset);
        }
    }

    /// Commit = the highest index a quorum of voters holds durably (this node counts only its
    /// durable index), and only if that entry is of the current term (Raft Figure 8).
    fn maybe_commit(&mut self) {
        if self.role != Role::Leader {
            return;
        }
        let mut matches = std::mem::take(&mut self.scratch);
        matches.clear();
        let membership = self.membership();
        for &voter in &membership.voters {
            if voter == self.id {
                matches.push(self.durable);
            } else if let Some(progress) = self.progress.get(&voter) {
                matches.push(progress.match_index);
            } else {
                matches.push(LogIndex::ZERO);
            }
        }
        let quorum = membership.quorum();
        matches.sort_unstable_by(|a, b| b.cmp(a));
        let candidate = matches[quorum - 1];
        self.scratch = matches;
        if candidate <= self.commit {
            return;
        }
        let term_ok = self.log.term_at(candidate) == Some(self.term);
        #[cfg(any(test, feature = "inject-bugs"))]
        let term_ok = term_ok || self.config.has_bug(InjectedBug::CommitOldTermByCounting);
        if !term_ok {
            return;
        }
        let was_committed_in_term = self.committed_in_term();
        self.commit = candidate;
        if !was_committed_in_term && self.committed_in_term() {
            self.reads.release_waiting(self.commit);
        }
        // A leader removed from the voters steps down once its removal is committed.
        let membership_index = self.membership_log.last().map(|&(index, _)| index);
        if !self.membership().is_voter(self.id)
            && membership_index.is_some_and(|index| index <= self.commit)
        {
            self.become_follower(self.term, None);
        }
    }

    fn committed_in_term(&self) -> bool {
        self.log.term_at(self.commit) == Some(self.term)
    }

    fn maybe_send_timeout_now(&mut self) {
        let Some(transfer) = self.transfer else {
            return;
        };
        if self.timeout_now_sent {
            return;
        }
        let caught_up = self
            .progress
            .get(&transfer.target)
            .is_some_and(|p| p.match_index == self.log.last_index());
        if caught_up {
            self.timeout_now_sent = true;
            self.lease_revoked = true;
            self.send(transfer.target, MessageBody::TimeoutNow);
        }
    }

    // ----------------------------------------------------------------------------------------
    // Leader: heartbeats and reads
    // ----------------------------------------------------------------------------------------

    fn broadcast_heartbeat(&mut self) {
        let round = self.reads.start_round(self.ticks);
        let peers: Vec<(NodeId, LogIndex)> = self
            .progress
            .iter()
            .map(|(&id, p)| (id, p.match_index))
            .collect();
        for (peer, match_index) in peers {
            self.stats.heartbeats_sent += 1;
            let body = MessageBody::Heartbeat {
                commit: self.commit.min(match_index),
                read_round: round,
            };
            self.send(peer, body);
        }
        self.confirm_reads();
    }

    /// The highest heartbeat round answered by a quorum of voters (this node counts as having
    /// answered every round it started).
    fn quorum_round(&mut self) -> u64 {
        let mut rounds = std::mem::take(&mut self.scratch_rounds);
        rounds.clear();
        let membership = self.membership();
        for &voter in &membership.voters {
            if voter == self.id {
                rounds.push(self.reads.round());
            } else {
                rounds.push(self.progress.get(&voter).map_or(0, |p| p.acked_round));
            }
        }
        rounds.sort_unstable_by(|a, b| b.cmp(a));
        let quorum_round = rounds.get(membership.quorum() - 1).copied().unwrap_or(0);
        self.scratch_rounds = rounds;
        quorum_round
    }

    fn confirm_reads(&mut self) {
        if self.role != Role::Leader || (self.reads.is_empty() && !self.reads.round_due()) {
            return;
        }
        let quorum_round = self.quorum_round();
        let before = self.reads_ready.len();
        self.reads.confirm(quorum_round, &mut self.reads_ready);
        self.stats.reads_ready += (self.reads_ready.len() - before) as u64;
    }

    /// Lease mode: a quorum answered a heartbeat sent less than
    /// `election_ticks - clock_drift_ticks` ticks ago, so no other leader can exist yet.
    fn lease_valid(&mut self) -> bool {
        let ReadMode::Lease { clock_drift_ticks } = self.config.read_mode else {
            return false;
        };
        if self.role != Role::Leader
            || self.transfer.is_some()
            || self.lease_revoked
            || !self.committed_in_term()
        {
            return false;
        }
        let quorum_round = self.quorum_round();
        let Some(sent) = self.reads.sent_tick(quorum_round) else {
            return false;
        };
        let window = (self.config.election_ticks - clock_drift_ticks) as u64;
        self.ticks - sent < window
    }

    // ----------------------------------------------------------------------------------------
    // Follower: appends and snapshots
    // ----------------------------------------------------------------------------------------

    fn handle_append(
        &mut self,
        from: NodeId,
        mut prev_index: LogIndex,
        mut prev_term: Term,
        mut batches: Vec<Batch>,
        leader_commit: LogIndex,
    ) {
        // Entries at or below our commit index are committed, hence already match: skip them.
        if prev_index < self.commit {
            batches.retain(|batch| batch.last_index() > self.commit);
            if let Some(first) = batches.first_mut() {
                if first.first_index() <= self.commit {
                    *first = first.suffix_from(self.commit.next());
                }
            }
            prev_index = self.commit;
            prev_term = self.log.term_at(self.commit).expect("commit index is held");
        }
        match self.log.term_at(prev_index) {
            Some(term) if term == prev_term => {}
            held => {
                let (hint_index, hint_term) = match held {
                    None => (self.log.last_index(), Term::ZERO),
                    Some(term) => (self.log.first_index_of_term_at(prev_index), term),
                };
                self.stats.appends_rejected += 1;
                self.send(
                    from,
                    MessageBody::AppendResponse {
                        success: false,
                        index: prev_index,
                        hint_index,
                        hint_term,
                    },
                );
                return;
            }
        }
        let mut expected = prev_index.next();
        for batch in batches {
            assert_eq!(
                batch.first_index(),
                expected,
                "{}: append from {from} has a gap at {:?}",
                self.id,
                batch
            );
            expected = batch.last_index().next();
            if let Some(conflict) = self.log.first_conflict(&batch) {
                self.truncate_log(conflict);
                self.append_batch(batch.suffix_from(conflict));
            } else if batch.last_index() > self.log.last_index() {
                let from_index = self.log.last_index().next().max(batch.first_index());
                let piece = if from_index > batch.first_index() {
                    batch.suffix_from(from_index)
                } else {
                    batch
                };
                self.append_batch(piece);
            }
        }
        let match_index = expected.prev();
        let new_commit = leader_commit.min(match_index);
        if new_commit > self.commit {
            self.commit = new_commit;
        }
        self.ack(
            from,
            MessageBody::AppendResponse {
                success: true,
                index: match_index,
                hint_index: LogIndex::ZERO,
                hint_term: Term::ZERO,
            },
            match_index,
        );
    }

    /// Drops the log from `from` on (a conflict with the leader), here and in storage.
    fn truncate_log(&mut self, from: LogIndex) {
        assert!(
            from > self.commit,
            "{}: conflict at {from} at or below commit {}",
            self.id,
            self.commit
        );
        self.stats.truncations += 1;
        self.log.truncate_from(from);
        let before = self.membership_log.len();
        self.membership_log.retain(|&(index, _)| index < from);
        if self.membership_log.len() != before {
            self.on_membership_changed();
        }
        self.clamp_durable(from.prev());
        let write = self.write_mut();
        let pending_first = write.batches.first().map(Batch::first_index);
        match pending_first {
            Some(first) if first <= from => {
                write.batches.retain(|batch| batch.first_index() < from);
                if let Some(last) = write.batches.last_mut() {
                    if last.last_index() >= from {
                        *last = last.prefix_to(from.prev());
                    }
                }
            }
            _ => {
                write.batches.clear();
                write.truncate_from = Some(write.truncate_from.map_or(from, |t| t.min(from)));
            }
        }
    }

    fn clamp_durable(&mut self, to: LogIndex) {
        self.durable = self.durable.min(to);
        for (_, last) in self.writes_inflight.iter_mut() {
            *last = (*last).min(to);
        }
    }

    fn handle_snapshot_chunk(
        &mut self,
        from: NodeId,
        meta: SnapshotMeta,
        offset: u64,
        data: Bytes,
        done: bool,
    ) {
        if meta.index <= self.commit {
            // Already hold everything it covers.
            self.incoming = None;
            let index = meta.index;
            self.ack(
                from,
                MessageBody::SnapshotResponse {
                    index,
                    next_offset: offset + data.len() as u64,
                    done: true,
                },
                index,
            );
            return;
        }
        if offset == 0 {
            self.incoming = Some(IncomingSnapshot {
                meta: meta.clone(),
                data: BytesMut::new(),
            });
        }
        let expected = match &self.incoming {
            Some(incoming)
                if incoming.meta.index == meta.index && incoming.meta.term == meta.term =>
            {
                incoming.data.len() as u64
            }
            _ => 0,
        };
        if offset != expected {
            let index = meta.index;
            self.send(
                from,
                MessageBody::SnapshotResponse {
                    index,
                    next_offset: expected,
                    done: false,
                },
            );
            return;
        }
        let incoming = self.incoming.as_mut().expect("incoming snapshot");
        incoming.data.extend_from_slice(&data);
        let next_offset = incoming.data.len() as u64;
        if !done {
            self.send(
                from,
                MessageBody::SnapshotResponse {
                    index: meta.index,
                    next_offset,
                    done: false,
                },
            );
            return;
        }
        let IncomingSnapshot { meta, data } = self.incoming.take().expect("incoming snapshot");
        self.install_snapshot(from, meta, data.freeze(), next_offset);
    }

    fn install_snapshot(&mut self, from: NodeId, meta: SnapshotMeta, data: Bytes, size: u64) {
        let index = meta.index;
        self.stats.snapshots_installed += 1;
        if self.log.term_at(index) == Some(meta.term) {
            // Keep the matching suffix after the snapshot point.
            self.log.compact_to(index, meta.term);
            self.membership_log.retain(|&(i, _)| i > index);
            let write = self.write_mut();
            write.batches.retain(|batch| batch.last_index() > index);
            if let Some(first) = write.batches.first_mut() {
                if first.first_index() <= index {
                    *first = first.suffix_from(index.next());
                }
            }
            if let Some(truncate) = write.truncate_from.as_mut() {
                *truncate = (*truncate).max(index.next());
            }
        } else {
            self.log = MemLog::new(index, meta.term);
            self.membership_log.clear();
            self.clamp_durable(index);
            let write = self.write_mut();
            write.batches.clear();
            write.truncate_from = Some(index.next());
        }
        self.base_membership = meta.membership.clone();
        self.on_membership_changed();
        self.commit = self.commit.max(index);
        self.committed_out = self.committed_out.max(index);
        self.write_mut().snapshot = Some((meta.clone(), data.clone()));
        self.snapshot = Some((meta, data));
        let body = MessageBody::SnapshotResponse {
            index,
            next_offset: size,
            done: true,
        };
        self.send_after_durable(from, body);
    }

    // ----------------------------------------------------------------------------------------
    // Output plumbing
    // ----------------------------------------------------------------------------------------

    fn soft_state(&self) -> SoftState {
        SoftState {
            role: self.role,
            leader: self.leader,
            term: self.term,
        }
    }

    /// The membership in effect: the latest appended.
    fn membership(&self) -> &Membership {
        self.membership_log
            .last()
            .map_or(&self.base_membership, |(_, membership)| membership)
    }

    fn membership_at(&self, index: LogIndex) -> &Membership {
        self.membership_log
            .iter()
            .rev()
            .find(|&&(at, _)| at <= index)
            .map_or(&self.base_membership, |(_, membership)| membership)
    }

    fn write_mut(&mut self) -> &mut StorageWrite {
        self.write.get_or_insert_with(StorageWrite::default)
    }

    fn persist_hard_state(&mut self) {
        let hard_state = HardState {
            term: self.term,
            vote: self.vote,
        };
        self.write_mut().hard_state = Some(hard_state);
    }

    fn hard_state_unsynced(&self) -> bool {
        self.hard_state_write.is_some()
            || self
                .write
                .as_ref()
                .is_some_and(|write| write.hard_state.is_some())
    }

    fn send(&mut self, to: NodeId, body: MessageBody) {
        let term = self.term;
        self.send_with_term(to, term, body, false);
    }

    /// Sends now, or after the pending write is durable when the hard state is unsynced or
    /// `needs_durability` (a vote grant) holds.
    fn send_with_term(
        &mut self,
        to: NodeId,
        term: Term,
        body: MessageBody,
        needs_durability: bool,
    ) {
        let message = Message {
            from: self.id,
            to,
            term,
            body,
        };
        let after_durable = needs_durability || self.hard_state_unsynced();
        #[cfg(any(test, feature = "inject-bugs"))]
        let after_durable = after_durable
            && !(needs_durability && self.config.has_bug(InjectedBug::AckBeforeDurable));
        if after_durable {
            self.write_mut().after_durable.push(message);
        } else {
            self.messages.push(message);
        }
    }

    fn send_after_durable(&mut self, to: NodeId, body: MessageBody) {
        let term = self.term;
        self.send_with_term(to, term, body, true);
    }

    /// Acknowledges `index` to the leader once this node's log up to `index` is durable.
    fn ack(&mut self, to: NodeId, body: MessageBody, index: LogIndex) {
        let truncating_below = self
            .write
            .as_ref()
            .and_then(|write| write.truncate_from)
            .is_some_and(|from| from <= index);
        let durable_now = index <= self.durable && !truncating_below;
        if durable_now {
            self.send(to, body);
        } else {
            self.send_after_durable(to, body);
        }
    }
}

/// Decodes the membership a `Membership` batch holds.
fn decode_membership_batch(batch: &Batch) -> Result<Membership, ConfigError> {
    let mut entries = batch.entries();
    let index = batch.first_index();
    let (Some(entry), None) = (entries.next(), entries.next()) else {
        return Err(ConfigError::RestoredBatch {
            index,
            error: crate::batch::BatchError::CountMismatch {
                expected: 1,
                found: batch.entry_count(),
            },
        });
    };
    Membership::decode(entry).map_err(|error| ConfigError::RestoredMembership { index, error })
}
