//! The Raft core: one node's election, replication, commit, read, transfer, snapshot and
//! membership logic, as a pure state machine driven by [`Raft`]'s methods.
//!
//! This file holds the state, the client-facing calls, the outputs and the invariants; the
//! logic lives in `step.rs` (tick and message dispatch), `election.rs`, `leader.rs` and
//! `follower.rs`, each an `impl Raft` block over the same private state.
//!
//! Guarantees (asserted by [`Raft::invariants`], run after every input in debug builds, and in
//! release builds with [`Config::check_invariants`]):
//! `applied <= committed handed out <= commit <= last index`; the durable index never exceeds
//! the last index; commit never decreases and never passes an entry whose term the leader could
//! not count (Figure 8); a leader's progress never claims more than its log holds.
//!
//! Durability before visibility: every message that depends on state not yet durable (acks,
//! vote grants, a candidate's requests, anything sent while a term change is unsynced) goes
//! into the pending [`StorageWrite`]'s `after_durable`, so the runtime can only release it once
//! the write is durable.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

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
use super::status::{PeerStatus, ProposeError, Stats, Status};

mod election;
mod follower;
mod leader;
mod step;
mod suspect;

use suspect::Suspect;

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
    /// Repairing a damaged log: no votes, no campaigns until `durable` reaches this index...
    repair_until: Option<LogIndex>,
    /// ...and, when set, until the durable log holds an entry of a term above this one.
    repair_above_term: Option<Term>,
    /// Set while the log's tail was cut after an unclean stop (see `suspect.rs`).
    suspect: Option<Suspect>,
    snapshot: Option<(SnapshotMeta, Bytes)>,
    incoming: Option<IncomingSnapshot>,

    /// Membership at the snapshot point (or the initial one).
    base_membership: Membership,
    /// Membership batches in the log after the snapshot point: (index, membership).
    membership_log: Vec<(LogIndex, Membership)>,
    /// Changes whenever the membership in effect may have (see [`Raft::membership`]).
    membership_epoch: u64,

    /// The clock as the runtime last gave it ([`Raft::advance`]).
    now: Duration,
    /// When the next tick is due on that clock.
    next_tick_at: Duration,
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
            repair_until,
            repair_above_term,
            suspect_term,
        } = restored;
        if let Some((meta, _)) = &snapshot {
            if meta.term > hard_state.term {
                return Err(ConfigError::RestoredTermOrder {
                    index: meta.index,
                    term: meta.term,
                    bound: hard_state.term,
                });
            }
        }
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
            repair_until,
            repair_above_term: repair_until.and(repair_above_term),
            suspect: suspect_term.map(Suspect::new),
            log,
            commit: snapshot_index,
            committed_out: snapshot_index,
            applied: snapshot_index,
            snapshot,
            incoming: None,
            base_membership,
            membership_log,
            membership_epoch: 0,
            now: Duration::ZERO,
            next_tick_at: config.tick,
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
        if raft.repair_covered() {
            // The log already holds what the repair waits for (ignored, see `Restored`).
            raft.repair_until = None;
            raft.repair_above_term = None;
        }
        raft.lift_suspicion_if_learned();
        raft.reset_election_timer();
        raft.check_after_input();
        Ok(raft)
    }

    // ----------------------------------------------------------------------------------------
    // Inputs
    // ----------------------------------------------------------------------------------------

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

    /// Proposes one membership change; it takes effect as soon as it is appended. Refused until
    /// this leader has committed an entry of its term (see `docs/RAFT.md`, "Membership"), while
    /// another change is uncommitted, and for a learner that is not caught up.
    pub fn propose_membership(
        &mut self,
        change: MembershipChange,
    ) -> Result<LogIndex, ProposeError> {
        self.check_can_propose()?;
        #[cfg(any(test, feature = "inject-bugs"))]
        let term_checked = !self
            .config
            .has_bug(InjectedBug::MembershipChangeBeforeTermCommit);
        #[cfg(not(any(test, feature = "inject-bugs")))]
        let term_checked = true;
        if term_checked && !self.committed_in_term() {
            return Err(ProposeError::TermNotCommitted { term: self.term });
        }
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
        self.check_after_input();
        Ok(index)
    }

    /// Starts a linearizable read. The read is reported in [`Ready::reads`] once leadership is
    /// confirmed (or at once under a valid lease, in [`ReadMode::Lease`]), or in
    /// [`Ready::reads_failed`] if leadership is lost first.
    pub fn read_index(&mut self, id: ReadId) -> Result<(), ProposeError> {
        self.start_read(id, true)
    }

    /// As [`Raft::read_index`], but always confirmed by a heartbeat round, never by a lease.
    pub fn read_index_by_round(&mut self, id: ReadId) -> Result<(), ProposeError> {
        self.start_read(id, false)
    }

    /// Whether this node serves reads under a lease ([`ReadMode::Lease`]).
    pub fn lease_reads(&self) -> bool {
        matches!(self.config.read_mode, ReadMode::Lease { .. })
    }

    fn start_read(&mut self, id: ReadId, lease: bool) -> Result<(), ProposeError> {
        if self.role != Role::Leader {
            return Err(ProposeError::NotLeader {
                leader: self.leader,
            });
        }
        #[cfg(any(test, feature = "inject-bugs"))]
        let confirmed = self.config.has_bug(InjectedBug::ReadWithoutConfirmation);
        #[cfg(not(any(test, feature = "inject-bugs")))]
        let confirmed = false;
        if !confirmed && !self.committed_in_term() {
            self.reads.wait_for_commit(id);
        } else if confirmed || (lease && self.lease_valid()) {
            self.reads_ready.push(ReadReady {
                id,
                index: self.commit,
            });
            self.stats.reads_ready += 1;
        } else {
            self.reads.push(id, self.commit);
        }
        self.check_after_input();
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
        self.check_after_input();
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
        if self.repair_until.is_some() && self.repair_covered() {
            // Every entry this node may have acknowledged before the damage is held again,
            // matching a leader's log: it may vote again.
            self.repair_until = None;
            self.repair_above_term = None;
            self.stats.repairs_completed += 1;
        }
        self.lift_suspicion_if_learned();
        if self.hard_state_write.is_some_and(|id| id <= write) {
            self.hard_state_write = None;
        }
        if self.role == Role::Leader {
            self.maybe_commit();
        }
        self.check_after_input();
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
        self.check_after_input();
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
        self.check_after_input();
        ready
    }

    /// The current term.
    pub fn term(&self) -> Term {
        self.term
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
            repair_until: self.repair_until,
            suspect: self.suspect.is_some(),
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

    /// Whether the durable log holds everything a repair waits for: it reaches `repair_until`
    /// and, with `repair_above_term`, its entry at the durable index has a higher term (terms
    /// never decrease along a log, so then every entry the node may have acknowledged before
    /// the damage is covered by a leader's log).
    fn repair_covered(&self) -> bool {
        self.repair_until.is_none_or(|until| self.durable >= until)
            && self
                .repair_above_term
                .is_none_or(|term| self.log.term_at(self.durable).is_some_and(|at| at > term))
    }

    /// The term of `index` if this node holds it (or it is the snapshot point).
    pub fn term_at(&self, index: LogIndex) -> Option<Term> {
        self.log.term_at(index)
    }

    /// Asserts every invariant of the core, with the offending values in the message.
    /// Called after every input in debug builds, and in release builds with
    /// [`Config::check_invariants`].
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
        if let Some(until) = self.repair_until {
            assert!(
                self.role == Role::Follower && !self.repair_covered(),
                "{}: repairing up to {until} (above term {:?}) but {:?} with durable {}",
                self.id,
                self.repair_above_term,
                self.role,
                self.durable
            );
        }
        if let Some(suspect) = &self.suspect {
            let durable_term = self.log.term_at(self.durable);
            assert!(
                durable_term.is_none_or(|term| term <= suspect.term_bound),
                "{}: suspect up to {} but its durable entry {} has term {durable_term:?}",
                self.id,
                suspect.term_bound,
                self.durable
            );
            assert!(
                !self.votes.contains_key(&self.id),
                "{}: suspect but counts its own vote in {}",
                self.id,
                self.term
            );
        }
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

    /// Runs [`Raft::invariants`] in debug builds, and in release builds when
    /// [`Config::check_invariants`] asks for it (the simulator and the core's tests do).
    #[inline]
    fn check_after_input(&self) {
        if cfg!(debug_assertions) || self.config.check_invariants {
            self.invariants();
        }
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

    /// The membership in effect: the latest appended (committed or not).
    pub fn membership(&self) -> &Membership {
        self.membership_log
            .last()
            .map_or(&self.base_membership, |(_, membership)| membership)
    }

    /// A number that changes whenever the membership in effect may have changed (a membership
    /// batch appended or truncated away, a snapshot installed): a cheap "look again" signal.
    pub fn membership_epoch(&self) -> u64 {
        self.membership_epoch
    }

    /// Whether the membership in effect is committed (so a member it removed can be forgotten).
    pub fn membership_committed(&self) -> bool {
        self.membership_log
            .last()
            .is_none_or(|&(index, _)| index <= self.commit)
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

/// Decodes the membership a `Membership` batch of the restored log holds.
pub(super) fn decode_membership_batch(batch: &Batch) -> Result<Membership, ConfigError> {
    Membership::of_batch(batch).map_err(|error| ConfigError::RestoredMembership {
        index: batch.first_index(),
        error,
    })
}

#[cfg(test)]
impl Raft {
    /// Breaks the commit index on purpose, to prove that the invariant check runs.
    pub(crate) fn break_commit_for_test(&mut self, commit: LogIndex) {
        self.commit = commit;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// With `check_invariants` the check runs after every input whatever the build: this test
    /// passes under `cargo test --release` too, where `debug_assertions` are off.
    #[test]
    #[should_panic(expected = "commit i9 past last index i0")]
    fn invariants_run_after_every_input_with_check_invariants_in_release_too() {
        let mut config = Config::new(NodeId(1));
        config.check_invariants = true;
        let restored = Restored {
            initial_membership: Membership::with_voters([NodeId(1), NodeId(2), NodeId(3)]),
            ..Restored::default()
        };
        let mut raft = Raft::new(config, restored).expect("valid");
        raft.break_commit_for_test(LogIndex(9));
        raft.tick();
    }
}
