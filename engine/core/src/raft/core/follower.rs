//! The follower: accepting appends (conflict search, truncation, fast-backtracking hints,
//! durable acks), and assembling and installing snapshots received in chunks.

use super::{IncomingSnapshot, Raft};
use crate::batch::Batch;
use crate::raft::memlog::MemLog;
use crate::raft::{MessageBody, SnapshotMeta};
use crate::types::{LogIndex, NodeId, Term};
use bytes::{Bytes, BytesMut};

impl Raft {
    pub(super) fn handle_append(
        &mut self,
        from: NodeId,
        mut prev_index: LogIndex,
        mut prev_term: Term,
        mut batches: Vec<Batch>,
        leader_commit: LogIndex,
    ) {
        if !self.append_is_well_formed(prev_index, prev_term, &batches) {
            return;
        }
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

    /// A leader of this node's term sends entries of no later term, in order of term, right
    /// after `prev_index`, with no gap; anything else comes from a faulty peer and is refused.
    fn append_is_well_formed(
        &mut self,
        prev_index: LogIndex,
        prev_term: Term,
        batches: &[Batch],
    ) -> bool {
        let mut expected = prev_index.next();
        let mut term = prev_term;
        for batch in batches {
            if batch.first_index() != expected || batch.term() < term || batch.term() > self.term {
                self.refuse_protocol_violation(&format!(
                    "append after {prev_index} (term {prev_term}) holds {batch:?} at {expected} \
                     in term {}",
                    self.term
                ));
                return false;
            }
            expected = batch.last_index().next();
            term = batch.term();
        }
        if prev_term > self.term {
            self.refuse_protocol_violation(&format!(
                "append after {prev_index} of term {prev_term} in term {}",
                self.term
            ));
            return false;
        }
        true
    }

    /// Drops the log from `from` on (a conflict with the leader), here and in storage.
    pub(super) fn truncate_log(&mut self, from: LogIndex) {
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

    pub(super) fn clamp_durable(&mut self, to: LogIndex) {
        self.durable = self.durable.min(to);
        for (_, last) in self.writes_inflight.iter_mut() {
            *last = (*last).min(to);
        }
    }

    pub(super) fn handle_snapshot_chunk(
        &mut self,
        from: NodeId,
        meta: SnapshotMeta,
        offset: u64,
        data: Bytes,
        done: bool,
    ) {
        if meta.term > self.term {
            self.refuse_protocol_violation(&format!(
                "snapshot at {} of term {} in term {}",
                meta.index, meta.term, self.term
            ));
            return;
        }
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

    pub(super) fn install_snapshot(
        &mut self,
        from: NodeId,
        meta: SnapshotMeta,
        data: Bytes,
        size: u64,
    ) {
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
        self.write_mut().snapshot = Some(Box::new((meta.clone(), data.clone())));
        self.snapshot = Some((meta, data));
        let body = MessageBody::SnapshotResponse {
            index,
            next_offset: size,
            done: true,
        };
        self.send_after_durable(from, body);
    }
}
