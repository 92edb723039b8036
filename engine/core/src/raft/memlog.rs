//! The in-memory log: the uncompacted entries as a deque of [`Batch`]es (shared payloads), after
//! a snapshot point `(snapshot_index, snapshot_term)`.
//!
//! Guarantees (checked by [`MemLog::check`]): batches are consecutive, start right after the
//! snapshot index, and their terms never decrease. All lookups are per batch (binary search),
//! never per entry; splitting a batch at an entry boundary is the only per-entry walk, and it
//! happens only on truncation, compaction or an unaligned send.

use std::collections::VecDeque;

use crate::batch::Batch;
use crate::types::{LogIndex, Term};

/// Batches after a snapshot point.
#[derive(Debug, Default)]
pub(crate) struct MemLog {
    snapshot_index: LogIndex,
    snapshot_term: Term,
    batches: VecDeque<Batch>,
}

impl MemLog {
    /// An empty log after the snapshot point `(index, term)` (`(0, 0)` for none).
    pub(crate) fn new(snapshot_index: LogIndex, snapshot_term: Term) -> MemLog {
        MemLog {
            snapshot_index,
            snapshot_term,
            batches: VecDeque::new(),
        }
    }

    /// Index of the snapshot point (the entry before the first held one).
    #[inline]
    pub(crate) fn snapshot_index(&self) -> LogIndex {
        self.snapshot_index
    }

    /// The first index held in memory.
    #[inline]
    pub(crate) fn first_index(&self) -> LogIndex {
        self.snapshot_index.next()
    }

    /// The last index (the snapshot index when no batch is held).
    #[inline]
    pub(crate) fn last_index(&self) -> LogIndex {
        self.batches
            .back()
            .map_or(self.snapshot_index, Batch::last_index)
    }

    /// The term of the last index.
    #[inline]
    pub(crate) fn last_term(&self) -> Term {
        self.batches.back().map_or(self.snapshot_term, Batch::term)
    }

    /// Position in `batches` of the batch holding `index` (which must be held).
    fn position(&self, index: LogIndex) -> usize {
        let position = self
            .batches
            .partition_point(|batch| batch.last_index() < index);
        debug_assert!(
            self.batches[position].contains(index),
            "{index} not in {:?}",
            self.batches[position]
        );
        position
    }

    /// The term of `index`, if it is the snapshot point or held.
    pub(crate) fn term_at(&self, index: LogIndex) -> Option<Term> {
        if index == self.snapshot_index {
            return Some(self.snapshot_term);
        }
        if index < self.snapshot_index || index > self.last_index() {
            return None;
        }
        Some(self.batches[self.position(index)].term())
    }

    /// Appends a batch that starts right after the last index.
    pub(crate) fn append(&mut self, batch: Batch) {
        assert_eq!(
            batch.first_index(),
            self.last_index().next(),
            "append {:?} after last index {}",
            batch,
            self.last_index()
        );
        assert!(
            batch.term() >= self.last_term(),
            "append {:?} with a term below the last term {}",
            batch,
            self.last_term()
        );
        self.batches.push_back(batch);
    }

    /// Drops every entry at or after `from` (which must be above the snapshot index).
    ///
    /// Example: batches 1..=4 and 5..=9 truncated from 7 leave 1..=4 and 5..=6.
    pub(crate) fn truncate_from(&mut self, from: LogIndex) {
        assert!(
            from > self.snapshot_index,
            "truncate from {from} at or below the snapshot index {}",
            self.snapshot_index
        );
        while let Some(last) = self.batches.back() {
            if last.first_index() >= from {
                self.batches.pop_back();
            } else {
                if last.last_index() >= from {
                    let kept = last.prefix_to(from.prev());
                    *self.batches.back_mut().expect("non-empty") = kept;
                }
                break;
            }
        }
    }

    /// Drops every entry at or below `index`, which becomes the snapshot point with `term`.
    /// When `index` is past the last index, the log becomes empty.
    ///
    /// Example: batches 1..=4 and 5..=9 compacted to 6 leave 7..=9 after snapshot point 6.
    pub(crate) fn compact_to(&mut self, index: LogIndex, term: Term) {
        assert!(
            index >= self.snapshot_index,
            "compact to {index} below the snapshot index {}",
            self.snapshot_index
        );
        while let Some(first) = self.batches.front() {
            if first.last_index() <= index {
                self.batches.pop_front();
            } else {
                if first.first_index() <= index {
                    let kept = first.suffix_from(index.next());
                    *self.batches.front_mut().expect("non-empty") = kept;
                }
                break;
            }
        }
        self.snapshot_index = index;
        self.snapshot_term = term;
    }

    /// Batches from `from` on (the first one cut to start at `from`), whole batches while their
    /// payload bytes stay within `bytes_max` (at least one batch when any is held).
    /// Returns the batches and their payload bytes.
    pub(crate) fn batches_from(&self, from: LogIndex, bytes_max: u64) -> (Vec<Batch>, u64) {
        assert!(
            from > self.snapshot_index,
            "read from {from} at or below the snapshot index {}",
            self.snapshot_index
        );
        let mut out = Vec::new();
        let mut bytes = 0u64;
        if from > self.last_index() {
            return (out, bytes);
        }
        for batch in self.batches.range(self.position(from)..) {
            let piece = if batch.first_index() < from {
                batch.suffix_from(from)
            } else {
                batch.clone()
            };
            let size = piece.payload().len() as u64;
            if !out.is_empty() && bytes + size > bytes_max {
                break;
            }
            bytes += size;
            out.push(piece);
        }
        (out, bytes)
    }

    /// The entries `from ..= to` as batches (cut at both ends), for the apply stage.
    pub(crate) fn slice(&self, from: LogIndex, to: LogIndex, out: &mut Vec<Batch>) {
        if from > to {
            return;
        }
        assert!(
            from > self.snapshot_index && to <= self.last_index(),
            "slice {from}..={to} outside {}..={}",
            self.first_index(),
            self.last_index()
        );
        for batch in self.batches.range(self.position(from)..) {
            if batch.first_index() > to {
                break;
            }
            let mut piece = if batch.first_index() < from {
                batch.suffix_from(from)
            } else {
                batch.clone()
            };
            if piece.last_index() > to {
                piece = piece.prefix_to(to);
            }
            out.push(piece);
        }
    }

    /// The first index in `batch`'s range whose term in this log differs from `batch.term()`
    /// (a conflict), or `None` when every held index of the range agrees. Indexes past the
    /// last one are not conflicts.
    pub(crate) fn first_conflict(&self, batch: &Batch) -> Option<LogIndex> {
        let start = batch.first_index().max(self.first_index());
        let end = batch.last_index().min(self.last_index());
        if start > end {
            return None;
        }
        for held in self.batches.range(self.position(start)..) {
            if held.first_index() > end {
                break;
            }
            if held.term() != batch.term() {
                return Some(held.first_index().max(start));
            }
        }
        None
    }

    /// The last index whose term is `term`, if any is held (the snapshot point counts).
    pub(crate) fn last_index_of_term(&self, term: Term) -> Option<LogIndex> {
        let after = self.batches.partition_point(|batch| batch.term() <= term);
        if after > 0 {
            let batch = &self.batches[after - 1];
            return (batch.term() == term).then(|| batch.last_index());
        }
        (self.snapshot_term == term && self.snapshot_index > LogIndex::ZERO)
            .then_some(self.snapshot_index)
    }

    /// The first held index (or the snapshot point) with the same term as `index`, which must
    /// be the snapshot point or held.
    pub(crate) fn first_index_of_term_at(&self, index: LogIndex) -> LogIndex {
        let term = self
            .term_at(index)
            .expect("first_index_of_term_at: index held");
        if term == self.snapshot_term {
            return self.snapshot_index;
        }
        let first = self.batches.partition_point(|batch| batch.term() < term);
        self.batches[first].first_index()
    }

    /// The held batches, in order.
    pub(crate) fn batches(&self) -> impl Iterator<Item = &Batch> {
        self.batches.iter()
    }

    /// Asserts the module's invariants.
    pub(crate) fn check(&self) {
        let mut expected = self.first_index();
        let mut term = self.snapshot_term;
        for batch in &self.batches {
            assert_eq!(
                batch.first_index(),
                expected,
                "memlog gap: {:?} where {expected} was due",
                batch
            );
            assert!(
                batch.term() >= term,
                "memlog term order: {:?} after term {term}",
                batch
            );
            expected = batch.last_index().next();
            term = batch.term();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::{BatchBuilder, BatchKind};
    use proptest::prelude::*;

    fn batch(term: u64, first: u64, count: u32) -> Batch {
        let mut builder = BatchBuilder::default();
        for i in 0..count {
            builder.push(&(first + i as u64).to_le_bytes());
        }
        builder.finish(Term(term), LogIndex(first), BatchKind::Normal)
    }

    fn log_of(batches: &[(u64, u64, u32)]) -> MemLog {
        let mut log = MemLog::new(LogIndex(0), Term(0));
        for &(term, first, count) in batches {
            log.append(batch(term, first, count));
        }
        log.check();
        log
    }

    #[test]
    fn term_at_and_bounds() {
        let log = log_of(&[(1, 1, 4), (2, 5, 5)]);
        assert_eq!(log.last_index(), LogIndex(9));
        assert_eq!(log.last_term(), Term(2));
        assert_eq!(log.term_at(LogIndex(0)), Some(Term(0)));
        assert_eq!(log.term_at(LogIndex(4)), Some(Term(1)));
        assert_eq!(log.term_at(LogIndex(5)), Some(Term(2)));
        assert_eq!(log.term_at(LogIndex(10)), None);
    }

    #[test]
    fn truncate_cuts_inside_a_batch() {
        let mut log = log_of(&[(1, 1, 4), (2, 5, 5)]);
        log.truncate_from(LogIndex(7));
        log.check();
        assert_eq!(log.last_index(), LogIndex(6));
        log.truncate_from(LogIndex(5));
        assert_eq!(log.last_index(), LogIndex(4));
        assert_eq!(log.last_term(), Term(1));
    }

    #[test]
    fn compact_keeps_the_suffix() {
        let mut log = log_of(&[(1, 1, 4), (2, 5, 5)]);
        log.compact_to(LogIndex(6), Term(2));
        log.check();
        assert_eq!(log.first_index(), LogIndex(7));
        assert_eq!(log.term_at(LogIndex(6)), Some(Term(2)));
        assert_eq!(log.term_at(LogIndex(5)), None);
        log.compact_to(LogIndex(20), Term(3));
        assert_eq!(log.last_index(), LogIndex(20));
        assert_eq!(log.last_term(), Term(3));
    }

    #[test]
    fn batches_from_respects_bytes() {
        let log = log_of(&[(1, 1, 4), (2, 5, 5), (2, 10, 1)]);
        // each entry is 4 + 8 = 12 bytes
        let (out, bytes) = log.batches_from(LogIndex(3), 24 + 60);
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].first_index(), LogIndex(3));
        assert_eq!(bytes, 84);
        let (one, _) = log.batches_from(LogIndex(5), 1);
        assert_eq!(one.len(), 1, "at least one batch goes");
        let mut sliced = Vec::new();
        log.slice(LogIndex(2), LogIndex(6), &mut sliced);
        assert_eq!(sliced.len(), 2);
        assert_eq!(sliced[1].last_index(), LogIndex(6));
    }

    /// Operations on the log, checked against a plain vector of terms.
    #[derive(Clone, Debug)]
    enum Op {
        Append { term_step: u64, count: u32 },
        Truncate { back: u64 },
        Compact { ahead: u64 },
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0u64..2, 1u32..5).prop_map(|(term_step, count)| Op::Append { term_step, count }),
            (0u64..6).prop_map(|back| Op::Truncate { back }),
            (0u64..6).prop_map(|ahead| Op::Compact { ahead }),
        ]
    }

    proptest! {
        #[test]
        fn matches_a_vector_of_terms(ops in proptest::collection::vec(op(), 1..40)) {
            let mut log = MemLog::new(LogIndex(0), Term(0));
            // model[i] = term of index i + 1; indexes <= snapshot are None (compacted)
            let mut model: Vec<Option<u64>> = Vec::new();
            let mut snapshot = 0u64;
            for op in ops {
                match op {
                    Op::Append { term_step, count } => {
                        let term = log.last_term().get().max(1) + term_step;
                        let first = log.last_index().get() + 1;
                        log.append(batch(term, first, count));
                        model.extend(std::iter::repeat_n(Some(term), count as usize));
                    }
                    Op::Truncate { back } => {
                        let from = (model.len() as u64 + 1).saturating_sub(back).max(snapshot + 1);
                        log.truncate_from(LogIndex(from));
                        model.truncate(from as usize - 1);
                    }
                    Op::Compact { ahead } => {
                        let to = (snapshot + ahead).min(model.len() as u64);
                        if to > snapshot {
                            let term = model[to as usize - 1].unwrap();
                            log.compact_to(LogIndex(to), Term(term));
                            for slot in model.iter_mut().take(to as usize - 1) {
                                *slot = None;
                            }
                            snapshot = to;
                        }
                    }
                }
                log.check();
                prop_assert_eq!(log.last_index().get(), model.len() as u64);
                for (i, term) in model.iter().enumerate() {
                    let index = LogIndex(i as u64 + 1);
                    match term {
                        Some(term) if index.get() >= snapshot => {
                            prop_assert_eq!(log.term_at(index), Some(Term(*term)));
                        }
                        _ => prop_assert_eq!(log.term_at(index), None),
                    }
                }
                if log.last_index() >= log.first_index() {
                    let (all, _) = log.batches_from(log.first_index(), u64::MAX);
                    let count: u64 = all.iter().map(|b| b.entry_count() as u64).sum();
                    prop_assert_eq!(count, log.last_index().get() - snapshot);
                }
            }
        }
    }

    #[test]
    fn conflicts_and_term_searches() {
        let log = log_of(&[(1, 1, 4), (2, 5, 2), (3, 7, 3)]);
        assert_eq!(log.first_conflict(&batch(2, 5, 4)), Some(LogIndex(7)));
        assert_eq!(log.first_conflict(&batch(1, 3, 2)), None);
        assert_eq!(log.first_conflict(&batch(3, 7, 10)), None);
        assert_eq!(log.last_index_of_term(Term(2)), Some(LogIndex(6)));
        assert_eq!(log.last_index_of_term(Term(4)), None);
        assert_eq!(log.first_index_of_term_at(LogIndex(9)), LogIndex(7));
        assert_eq!(log.first_index_of_term_at(LogIndex(2)), LogIndex(1));
    }
}
