//! The simulated disk of one node: what is durable, what is written but not yet synced, and what a
//! crash leaves behind.
//!
//! The runtime performs a node's storage writes in id order. Each write is an ordered list of
//! operations: persist the hard state, install a snapshot, truncate the log suffix, append batches.
//! A write becomes durable when its sync completes; syncs complete in submission order (a later
//! sync covers every earlier write, as group commit does). The disk keeps two views:
//! - `durable`: what survives any crash;
//! - `written`: durable plus every pending write, i.e. the log as the node itself sees it.
//!
//! A crash keeps `durable` plus a random in-order prefix of the pending operations (the disk may
//! have written some of them before the crash), where the last kept append may be torn at an entry
//! boundary. The hard state is replaced whole or not at all, never mixed. Everything after the cut
//! is lost. The runtime's own snapshots (`compact`) are written atomically and durably at once.

use std::collections::VecDeque;
use std::fmt;

use bytes::Bytes;

use crate::batch::Batch;
use crate::raft::{HardState, SnapshotMeta};
use crate::types::{LogIndex, Term};

use super::rng::SimRng;

/// One storage write as the disk sees it (the core's `StorageWrite` without its messages).
#[derive(Clone, Debug)]
pub struct DiskWrite {
    /// The write's id; ids strictly increase per node incarnation.
    pub id: u64,
    /// Hard state to persist first, if any.
    pub hard_state: Option<HardState>,
    /// Snapshot to install, if any.
    pub snapshot: Option<(SnapshotMeta, Bytes)>,
    /// Drop every log entry at or after this index, if any.
    pub truncate_from: Option<LogIndex>,
    /// Batches to append, contiguous with the log.
    pub batches: Vec<Batch>,
}

/// What a log holds at an index.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Holding {
    /// The index is at or below the snapshot: its effect is in the snapshot.
    Compacted,
    /// An entry of this term.
    Entry(Term),
    /// Nothing (past the end of the log).
    Missing,
}

/// Hard state, snapshot and log after the snapshot: one view of a node's storage.
#[derive(Clone, Debug)]
pub struct StoredState {
    /// Term and vote (and whatever else the core persists with them).
    pub hard_state: HardState,
    /// The latest installed or taken snapshot.
    pub snapshot: Option<(SnapshotMeta, Bytes)>,
    /// The log after the snapshot, contiguous, in order.
    pub batches: Vec<Batch>,
}

impl StoredState {
    /// An empty store.
    pub fn new(hard_state: HardState) -> StoredState {
        StoredState {
            hard_state,
            snapshot: None,
            batches: Vec::new(),
        }
    }

    /// Index of the snapshot (0 without one).
    pub fn snapshot_index(&self) -> LogIndex {
        self.snapshot
            .as_ref()
            .map_or(LogIndex::ZERO, |(meta, _)| meta.index)
    }

    /// Index of the last entry (the snapshot's index if the log is empty).
    pub fn last_index(&self) -> LogIndex {
        self.batches
            .last()
            .map_or_else(|| self.snapshot_index(), |batch| batch.last_index())
    }

    /// What the store holds at `index`.
    pub fn holding(&self, index: LogIndex) -> Holding {
        if index.get() == 0 || index <= self.snapshot_index() {
            return Holding::Compacted;
        }
        match self.batch_containing(index) {
            Some(batch) => Holding::Entry(batch.term()),
            None => Holding::Missing,
        }
    }

    /// Term of the entry at `index`: the snapshot's term at its own index, 0 at index 0, `None`
    /// if unknown (below the snapshot or past the end).
    pub fn term_at(&self, index: LogIndex) -> Option<Term> {
        if index.get() == 0 {
            return Some(Term::ZERO);
        }
        if let Some((meta, _)) = &self.snapshot {
            if index == meta.index {
                return Some(meta.term);
            }
        }
        self.batch_containing(index).map(|batch| batch.term())
    }

    /// The batch holding `index`, if any.
    pub fn batch_containing(&self, index: LogIndex) -> Option<&Batch> {
        let position = self
            .batches
            .partition_point(|batch| batch.last_index() < index);
        self.batches
            .get(position)
            .filter(|batch| batch.contains(index))
    }

    /// Replaces the hard state.
    fn persist_hard_state(&mut self, hard_state: &HardState) {
        self.hard_state = *hard_state;
    }

    /// Installs a snapshot received from a leader: the log at and below its index is dropped,
    /// the rest is kept (the core truncates it in the same write if it conflicts).
    /// A snapshot older than the one held is ignored (the runtime's own snapshot already
    /// covers it).
    fn install_snapshot(&mut self, meta: &SnapshotMeta, data: &Bytes) {
        if meta.index <= self.snapshot_index() && self.snapshot.is_some() {
            return;
        }
        self.snapshot = Some((meta.clone(), data.clone()));
        self.drop_through(meta.index);
    }

    /// Takes a snapshot of our own applied state: drops the log at or below it, keeps the rest.
    pub fn compact(&mut self, meta: &SnapshotMeta, data: &Bytes) {
        if meta.index <= self.snapshot_index() {
            return;
        }
        self.snapshot = Some((meta.clone(), data.clone()));
        self.drop_through(meta.index);
    }

    fn drop_through(&mut self, index: LogIndex) {
        let keep_from = self
            .batches
            .partition_point(|batch| batch.last_index() <= index);
        self.batches.drain(..keep_from);
        if let Some(first) = self.batches.first_mut() {
            if first.first_index() <= index {
                *first = first.suffix_from(index.next());
            }
        }
    }

    /// Drops every entry at or after `from` (entries below the snapshot are not touched).
    fn truncate(&mut self, from: LogIndex) {
        let keep = self
            .batches
            .partition_point(|batch| batch.last_index() < from);
        self.batches.truncate(keep + 1);
        if let Some(last) = self.batches.last_mut() {
            if last.first_index() >= from {
                self.batches.pop();
            } else if last.last_index() >= from {
                *last = last.prefix_to(from.prev());
            }
        }
    }

    /// Appends a batch that must continue the log; the part already covered by the snapshot is
    /// skipped (a node may compact past entries whose write is still pending). Returns the part
    /// appended.
    fn append(&mut self, batch: &Batch) -> Result<Option<Batch>, AppendGap> {
        let snapshot_index = self.snapshot_index();
        if batch.last_index() <= snapshot_index {
            return Ok(None);
        }
        let batch = if batch.first_index() <= snapshot_index {
            batch.suffix_from(snapshot_index.next())
        } else {
            batch.clone()
        };
        let expected = self.last_index().next();
        if batch.first_index() != expected {
            return Err(AppendGap {
                batch,
                log_end: self.last_index(),
            });
        }
        self.batches.push(batch.clone());
        Ok(Some(batch))
    }
}

/// The operations of a write, in the order the runtime performs them.
enum Operation<'a> {
    HardState(&'a HardState),
    Snapshot(&'a SnapshotMeta, &'a Bytes),
    Truncate(LogIndex),
    Append(&'a Batch),
}

fn operations(write: &DiskWrite) -> impl Iterator<Item = Operation<'_>> {
    let hard_state = write.hard_state.iter().map(Operation::HardState);
    let snapshot = write
        .snapshot
        .iter()
        .map(|(meta, data)| Operation::Snapshot(meta, data));
    let truncate = write.truncate_from.into_iter().map(Operation::Truncate);
    let append = write.batches.iter().map(Operation::Append);
    hard_state.chain(snapshot).chain(truncate).chain(append)
}

/// Performs one operation; returns the batch appended, if any.
fn perform(state: &mut StoredState, operation: &Operation<'_>) -> Result<Option<Batch>, AppendGap> {
    match operation {
        Operation::HardState(hard_state) => state.persist_hard_state(hard_state),
        Operation::Snapshot(meta, data) => state.install_snapshot(meta, data),
        Operation::Truncate(from) => state.truncate(*from),
        Operation::Append(batch) => return state.append(batch),
    }
    Ok(None)
}

/// A write that appends a batch not continuing the log (a bug of the core that made it).
#[derive(Clone, Debug)]
pub struct AppendGap {
    /// The batch (less any part the snapshot covers).
    pub batch: Batch,
    /// The last index of the log it should have continued.
    pub log_end: LogIndex,
}

impl fmt::Display for AppendGap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "write appends {:?} but the log ends at {} (expected first index {})",
            self.batch,
            self.log_end,
            self.log_end.next()
        )
    }
}

impl std::error::Error for AppendGap {}

/// A batch that just became durable, with the term of the entry before it (if known).
#[derive(Clone, Debug)]
pub struct DurableAppend {
    /// The entries now durable.
    pub batch: Batch,
    /// Term of the entry at `batch.first_index() - 1` in the durable log right after the append.
    pub prev_term: Option<Term>,
}

/// Latency knobs of a disk (time units).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiskLatency {
    /// Fastest sync.
    pub sync_min: u64,
    /// Slowest ordinary sync.
    pub sync_max: u64,
    /// Slowest sync while the disk is in slow mode.
    pub slow_sync_max: u64,
}

/// One node's disk.
#[derive(Debug)]
pub struct Disk {
    durable: StoredState,
    written: StoredState,
    pending: VecDeque<DiskWrite>,
    newly_durable: Vec<DurableAppend>,
    latency: DiskLatency,
    slow: bool,
    last_sync_at: u64,
}

/// What a crash left behind, for the trace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CrashLoss {
    /// Pending writes at the crash.
    pub pending_writes: usize,
    /// Pending units (a write's header, or one append) that survived the crash.
    pub units_kept: usize,
    /// Pending units lost.
    pub units_lost: usize,
    /// Whether the last kept append was torn at an entry boundary.
    pub torn: bool,
}

impl Disk {
    /// A blank disk holding `hard_state` (the zero hard state of a new node).
    pub fn new(hard_state: HardState, latency: DiskLatency) -> Disk {
        assert!(latency.sync_min >= 1 && latency.sync_min <= latency.sync_max);
        assert!(latency.sync_max <= latency.slow_sync_max);
        Disk {
            durable: StoredState::new(hard_state),
            written: StoredState::new(hard_state),
            pending: VecDeque::new(),
            newly_durable: Vec::new(),
            latency,
            slow: false,
            last_sync_at: 0,
        }
    }

    /// What survives a crash right now.
    pub fn durable(&self) -> &StoredState {
        &self.durable
    }

    /// Durable state plus every pending write: the log as the node sees it.
    pub fn written(&self) -> &StoredState {
        &self.written
    }

    /// Turns slow mode on or off (syncs take `slow_sync_max / 2 ..= slow_sync_max`).
    pub fn set_slow(&mut self, slow: bool) {
        self.slow = slow;
    }

    /// Whether the disk is in slow mode.
    pub fn is_slow(&self) -> bool {
        self.slow
    }

    /// Performs `write` (visible in `written` at once) and returns the time its sync completes.
    /// Errors name a write that does not fit the log (a core bug).
    pub fn submit(
        &mut self,
        write: DiskWrite,
        now: u64,
        rng: &mut SimRng,
    ) -> Result<u64, AppendGap> {
        if let Some(previous) = self.pending.back() {
            assert!(
                write.id > previous.id,
                "write ids must increase: {} after {}",
                write.id,
                previous.id
            );
        }
        for operation in operations(&write) {
            perform(&mut self.written, &operation)?;
        }
        self.pending.push_back(write);
        // A slow sync takes between half and all of `slow_sync_max`.
        let (latency_min, latency_max) = if self.slow {
            (self.latency.slow_sync_max / 2, self.latency.slow_sync_max)
        } else {
            (self.latency.sync_min, self.latency.sync_max)
        };
        let done = now + rng.between(latency_min.max(1), latency_max);
        self.last_sync_at = self.last_sync_at.max(done);
        Ok(self.last_sync_at)
    }

    /// Completes the sync of every pending write with id `<= id`; returns how many became durable.
    pub fn sync_through(&mut self, id: u64) -> usize {
        let mut synced = 0;
        while self.pending.front().is_some_and(|write| write.id <= id) {
            let write = self.pending.pop_front().expect("checked non-empty");
            for operation in operations(&write) {
                self.perform_durable(&operation);
            }
            synced += 1;
        }
        synced
    }

    fn perform_durable(&mut self, operation: &Operation<'_>) {
        let appended = perform(&mut self.durable, operation)
            .expect("a write that fitted the written log fits the durable log");
        if let Some(batch) = appended {
            let prev_term = self.durable.term_at(batch.first_index().prev());
            self.newly_durable.push(DurableAppend { batch, prev_term });
        }
    }

    /// The batches that became durable (by a sync, or by surviving a crash) since the last call.
    pub fn take_newly_durable(&mut self) -> Vec<DurableAppend> {
        std::mem::take(&mut self.newly_durable)
    }

    /// The runtime snapshotted its state machine: written durably and at once.
    pub fn compact(&mut self, meta: &SnapshotMeta, data: &Bytes) {
        self.durable.compact(meta, data);
        self.written.compact(meta, data);
    }

    /// Crashes the node: keeps durable state plus a random prefix of the pending operations
    /// (the last kept append possibly torn), loses the rest. A write's hard state, snapshot and
    /// truncation survive together or not at all; its appends may survive one by one after them.
    /// Afterwards `durable == written`.
    pub fn crash(&mut self, rng: &mut SimRng) -> CrashLoss {
        self.crash_keeping(rng, None)
    }

    /// Damage found at the restart after a crash: every durable entry from `from` on is gone
    /// (a lost or cut segment file), as if never written. Returns the last index the log held
    /// before. Must follow a crash (nothing pending), and `from` must lie after the snapshot.
    pub fn damage_from(&mut self, from: LogIndex) -> LogIndex {
        assert!(
            self.pending.is_empty(),
            "damage to a disk with {} writes pending (damage follows a crash)",
            self.pending.len()
        );
        let last = self.durable.last_index();
        assert!(
            from > self.durable.snapshot_index() && from <= last,
            "damage from {from} outside the log ({}..={last})",
            self.durable.snapshot_index()
        );
        self.durable.truncate(from);
        self.written = self.durable.clone();
        last
    }

    /// A crash where nothing pending survives (scenarios use it to pin down a loss).
    pub fn crash_losing_pending(&mut self, rng: &mut SimRng) -> CrashLoss {
        self.crash_keeping(rng, Some(0))
    }

    fn crash_keeping(&mut self, rng: &mut SimRng, keep: Option<usize>) -> CrashLoss {
        let pending: Vec<DiskWrite> = self.pending.drain(..).collect();
        // Units that survive whole: each write's header (if it has one), then each batch.
        let units = |write: &DiskWrite| {
            let header = write.hard_state.is_some()
                || write.snapshot.is_some()
                || write.truncate_from.is_some();
            usize::from(header) + write.batches.len()
        };
        let total: usize = pending.iter().map(units).sum();
        let keep = keep.unwrap_or_else(|| match rng.below(4) {
            0 => 0,
            1 => total,
            _ => rng.below(total as u64 + 1) as usize,
        });
        let mut torn = false;
        let mut kept = 0usize;
        for write in &pending {
            if kept == keep {
                break;
            }
            let mut operations = operations(write).peekable();
            if !matches!(operations.peek(), Some(Operation::Append(_)) | None) {
                kept += 1;
                while let Some(operation) =
                    operations.next_if(|op| !matches!(op, Operation::Append(_)))
                {
                    self.perform_durable(&operation);
                }
            }
            for operation in operations {
                if kept == keep {
                    break;
                }
                kept += 1;
                match operation {
                    Operation::Append(batch) if kept == keep && rng.chance(300) => {
                        // The last surviving append is cut short: a prefix of its entries (or
                        // none) reached the disk.
                        let entries = rng.below(batch.entry_count() as u64);
                        torn = true;
                        if entries > 0 {
                            let prefix = batch.prefix_to(batch.first_index().plus(entries - 1));
                            self.perform_durable(&Operation::Append(&prefix));
                        }
                    }
                    operation => self.perform_durable(&operation),
                }
            }
        }
        self.written = self.durable.clone();
        self.last_sync_at = 0;
        CrashLoss {
            pending_writes: pending.len(),
            units_kept: keep,
            units_lost: total - keep,
            torn,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::{BatchBuilder, BatchKind};
    use crate::raft::Membership;
    use crate::types::NodeId;

    fn batch(term: u64, first: u64, count: u64) -> Batch {
        let mut builder = BatchBuilder::default();
        for i in 0..count {
            builder.push(&(first + i).to_le_bytes());
        }
        builder.finish(Term(term), LogIndex(first), BatchKind::Normal)
    }

    fn append(id: u64, batches: Vec<Batch>) -> DiskWrite {
        DiskWrite {
            id,
            hard_state: None,
            snapshot: None,
            truncate_from: None,
            batches,
        }
    }

    fn latency() -> DiskLatency {
        DiskLatency {
            sync_min: 1,
            sync_max: 10,
            slow_sync_max: 100,
        }
    }

    fn hard(term: u64, vote: u64) -> HardState {
        HardState {
            term: Term(term),
            vote: Some(NodeId(vote)),
        }
    }

    #[test]
    fn writes_become_durable_in_order_and_syncs_never_overtake() {
        let mut disk = Disk::new(HardState::default(), latency());
        let mut rng = SimRng::new(1);
        let first = disk
            .submit(append(1, vec![batch(1, 1, 3)]), 0, &mut rng)
            .unwrap();
        let second = disk
            .submit(append(2, vec![batch(1, 4, 2)]), 0, &mut rng)
            .unwrap();
        assert!(second >= first);
        assert_eq!(disk.written().last_index(), LogIndex(5));
        assert_eq!(disk.durable().last_index(), LogIndex(0));
        assert_eq!(disk.sync_through(1), 1);
        assert_eq!(disk.durable().last_index(), LogIndex(3));
        assert_eq!(disk.sync_through(2), 1);
        assert_eq!(disk.durable().last_index(), LogIndex(5));
        assert_eq!(disk.durable().holding(LogIndex(4)), Holding::Entry(Term(1)));
        assert_eq!(disk.durable().holding(LogIndex(6)), Holding::Missing);
    }

    #[test]
    fn non_contiguous_appends_are_refused() {
        let mut disk = Disk::new(HardState::default(), latency());
        let mut rng = SimRng::new(1);
        let error = disk
            .submit(append(1, vec![batch(1, 2, 1)]), 0, &mut rng)
            .unwrap_err();
        assert_eq!(
            (error.batch.first_index(), error.log_end),
            (LogIndex(2), LogIndex(0))
        );
        let error = error.to_string();
        assert!(error.contains("expected first index i1"), "{error}");
    }

    #[test]
    fn truncate_and_compact_cut_batches_at_entry_boundaries() {
        let mut state = StoredState::new(HardState::default());
        state.append(&batch(1, 1, 5)).unwrap();
        state.append(&batch(2, 6, 5)).unwrap();
        state.truncate(LogIndex(8));
        assert_eq!(state.last_index(), LogIndex(7));
        assert_eq!(state.term_at(LogIndex(7)), Some(Term(2)));
        let meta = SnapshotMeta {
            index: LogIndex(3),
            term: Term(1),
            membership: Membership::with_voters([NodeId(1)]),
        };
        state.compact(&meta, &Bytes::from_static(b"s"));
        assert_eq!(state.holding(LogIndex(2)), Holding::Compacted);
        assert_eq!(state.term_at(LogIndex(3)), Some(Term(1)));
        assert_eq!(state.batches[0].first_index(), LogIndex(4));
        // An append already covered by the snapshot is skipped, a straddling one is cut.
        let mut covered = StoredState::new(HardState::default());
        covered.compact(&meta, &Bytes::from_static(b"s"));
        covered.append(&batch(1, 1, 2)).unwrap();
        covered.append(&batch(1, 3, 3)).unwrap();
        assert_eq!(covered.batches[0].first_index(), LogIndex(4));
        assert_eq!(covered.last_index(), LogIndex(5));
    }

    #[test]
    fn a_crash_keeps_durable_state_and_a_prefix_of_pending_operations() {
        let mut outcomes = std::collections::BTreeSet::new();
        for seed in 0..200 {
            let mut disk = Disk::new(HardState::default(), latency());
            let mut rng = SimRng::new(seed);
            let mut first = append(1, vec![batch(1, 1, 2)]);
            first.hard_state = Some(hard(1, 1));
            disk.submit(first, 0, &mut rng).unwrap();
            disk.sync_through(1);
            let mut second = append(2, vec![batch(2, 3, 4), batch(2, 7, 4)]);
            second.hard_state = Some(hard(2, 2));
            disk.submit(second, 0, &mut rng).unwrap();
            disk.crash(&mut rng);
            let durable = disk.durable();
            assert_eq!(durable.last_index(), disk.written().last_index());
            let last = durable.last_index().get();
            assert!((2..=10).contains(&last), "seed {seed}: log ends at {last}");
            // Never a mix: entries of term 2 survive only with the term-2 hard state.
            if last > 2 {
                assert_eq!(durable.hard_state, hard(2, 2), "seed {seed}");
            } else {
                assert!(durable.hard_state == hard(1, 1) || durable.hard_state == hard(2, 2));
            }
            outcomes.insert((durable.hard_state.term, last));
        }
        // Lost everything, kept everything, and torn in between all happen.
        assert!(outcomes.contains(&(Term(1), 2)), "{outcomes:?}");
        assert!(outcomes.contains(&(Term(2), 10)), "{outcomes:?}");
        assert!(
            outcomes
                .iter()
                .any(|&(_, last)| last > 2 && last < 10 && last != 6),
            "no torn append in {outcomes:?}"
        );
    }
}
