//! The leader: sealing proposals into batches, per-follower sending (probe, pipelined
//! replicate, snapshot chunks), handling answers, commit by durable quorum with the Figure 8
//! rule, leadership transfer, heartbeat rounds and read confirmation (read-index and lease).

use super::{Raft, STALLED_HEARTBEATS_MAX};
use crate::batch::{Batch, BatchBuilder, BatchKind};
use crate::raft::progress::Progress;
#[cfg(any(test, feature = "inject-bugs"))]
use crate::raft::InjectedBug;
use crate::raft::{Membership, MessageBody, ProgressState, ProposeError, ReadMode, Role};
use crate::types::{LogIndex, NodeId, Term};

impl Raft {
    pub(super) fn check_can_propose(&self) -> Result<(), ProposeError> {
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
    pub(super) fn seal_pending(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let bytes = self.pending.payload_bytes();
        let batch = self
            .pending
            .finish(self.term, self.log.last_index().next(), BatchKind::Normal);
        self.pending_capacity = bytes.clamp(4096, self.config.batch_bytes_max as usize + 4096);
        if self.pending.capacity() < self.pending_capacity {
            self.pending = BatchBuilder::with_capacity(self.pending_capacity);
        }
        self.stats.batches_sealed += 1;
        self.append_batch(batch);
        self.broadcast_due = true;
        self.maybe_commit();
    }

    /// Appends a batch to the in-memory log and to the pending write. A membership batch must
    /// decode: the leader encodes its own, and a peer's are checked when their message is
    /// decoded (`net::peer_msg`), so one that does not is a bug here, not bad input.
    pub(super) fn append_batch(&mut self, batch: Batch) {
        if batch.kind() == BatchKind::Membership {
            let membership = Membership::of_batch(&batch).unwrap_or_else(|error| {
                panic!("{}: bad membership batch {:?}: {error}", self.id, batch)
            });
            self.membership_log.push((batch.first_index(), membership));
            self.on_membership_changed();
        }
        self.log.append(batch.clone());
        self.write_mut().batches.push(batch);
    }

    pub(super) fn rebuild_progress(&mut self) {
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

    pub(super) fn on_membership_changed(&mut self) {
        self.membership_epoch += 1;
        if self.role == Role::Leader {
            self.rebuild_progress();
        } else if !self.can_campaign() && self.role != Role::Follower {
            self.become_follower(self.term, None);
        }
    }

    /// Sends what is due to `peer`: a snapshot chunk when its next index is compacted away, a
    /// probe, or as many Appends as its window allows.
    pub(super) fn send_appends(&mut self, peer: NodeId) {
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

    pub(super) fn start_snapshot(&mut self, peer: NodeId) {
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

    pub(super) fn send_snapshot_chunk(&mut self, peer: NodeId, offset: u64) {
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

    pub(super) fn handle_append_response(
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
            if index > last {
                self.refuse_protocol_violation(&format!(
                    "{from} acks {index} past the leader's last index {last}"
                ));
                return;
            }
            if progress.on_ack(index) {
                if progress.voter {
                    self.maybe_commit();
                }
                self.maybe_send_timeout_now();
            }
            self.send_appends(from);
            return;
        }
        if hint_term == Term::ZERO
            && hint_index < progress.match_index
            && progress.state != ProgressState::Snapshot
        {
            // Its log is shorter than what it acknowledged: it lost entries (protocol-aware
            // recovery; `docs/RAFT.md`, "Repair"). Without lowering the match, nothing below it
            // would ever be sent again. Lowering it is safe even for a stale answer: the match
            // only feeds commit (which never decreases) and moves up again with the next ack.
            progress.on_lost_entries(hint_index);
            self.stats.followers_lost_entries += 1;
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

    pub(super) fn handle_heartbeat_response(&mut self, from: NodeId, read_round: u64) {
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

    pub(super) fn handle_snapshot_response(
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
            if index > last {
                self.refuse_protocol_violation(&format!(
                    "{from} installed snapshot {index} past last index {last}"
                ));
                return;
            }
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
    pub(super) fn maybe_commit(&mut self) {
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

    pub(super) fn committed_in_term(&self) -> bool {
        self.log.term_at(self.commit) == Some(self.term)
    }

    pub(super) fn maybe_send_timeout_now(&mut self) {
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

    pub(super) fn broadcast_heartbeat(&mut self) {
        let round = self.reads.start_round(self.now);
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
    pub(super) fn quorum_round(&mut self) -> u64 {
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

    pub(super) fn confirm_reads(&mut self) {
        if self.role != Role::Leader || (self.reads.is_empty() && !self.reads.round_due()) {
            return;
        }
        let quorum_round = self.quorum_round();
        let before = self.reads_ready.len();
        self.reads.confirm(quorum_round, &mut self.reads_ready);
        self.stats.reads_ready += (self.reads_ready.len() - before) as u64;
    }

    /// Lease mode: a quorum answered a heartbeat round sent less than
    /// `election_ticks - clock_drift_ticks` ticks ago on the clock given to
    /// [`Raft::advance`], so no other leader can exist yet (`docs/RAFT.md`, "Reads").
    pub(super) fn lease_valid(&mut self) -> bool {
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
        let Some(sent_at) = self.reads.sent_at(quorum_round) else {
            return false;
        };
        assert!(
            sent_at <= self.now,
            "{}: round {quorum_round} sent at {sent_at:?}, after now {:?}",
            self.id,
            self.now
        );
        let window = self.config.tick * (self.config.election_ticks - clock_drift_ticks);
        self.now - sent_at < window
    }
}
