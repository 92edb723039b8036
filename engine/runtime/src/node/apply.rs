//! The apply thread: owns the [`StateMachine`], runs committed batches in order behind the
//! commit index, answers proposers and readers, restores installed snapshots, and takes its own
//! snapshots every `snapshot_entries` applied entries or `snapshot_bytes` applied entry bytes,
//! whichever comes first ([`SnapshotEvery`]).
//!
//! Guarantees: entries are applied exactly once each, in index order (entries at or below the
//! applied index, e.g. after a snapshot restore, are skipped); a read is answered only once
//! applied >= its index; a snapshot file covers only terms already durable in the hard state.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;
use crossbeam_channel::{Receiver, Sender};

use super::pipeline::{ApplyMsg, Feedback, PendingRead, Shared, Target};
use super::{Applied, NodeError, Spin};
use crate::apply::{snapshot, StateMachine};
use crate::batch::{Batch, BatchKind};
use crate::net::{ClientReply, ConnId, NetHandle};
use crate::raft::{Membership, SnapshotMeta};
use crate::types::{LogIndex, Term};

/// When the apply stage takes a snapshot: once `entries` entries or `bytes` bytes of entries
/// were applied since the last one (or since the start), whichever comes first. The byte bound
/// keeps large entries from growing the in-memory log (which holds every entry since the last
/// snapshot) and the log on disk without limit before the entry count is reached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct SnapshotEvery {
    pub entries: u64,
    pub bytes: u64,
}

/// The apply stage's state.
pub(crate) struct ApplyStage<S: StateMachine> {
    pub state_machine: S,
    pub applied: LogIndex,
    pub applied_term: Term,
    /// The membership in effect at `applied` (for the snapshots this stage takes).
    pub membership: Membership,
    pub snapshot_index: LogIndex,
    pub snapshot_every: SnapshotEvery,
    /// Entry bytes applied since `snapshot_index`.
    pub bytes_since_snapshot: u64,
    pub snapshot_dir: PathBuf,
    pub shared: Arc<Shared>,
    pub net: Option<NetHandle>,
    pub feedback: Sender<Feedback>,
    /// Reads waiting for `applied` to reach their index, and the lowest such index.
    reads: Vec<PendingRead>,
    reads_next: Option<LogIndex>,
    /// The replies of a run of commands (kept for its capacity; empty between runs).
    run_replies: Vec<Bytes>,
    replies: Vec<(ConnId, ClientReply)>,
    /// Spin-before-block on the inbox.
    spin: Spin,
}

impl<S: StateMachine> ApplyStage<S> {
    /// A stage whose state machine already holds the state at `applied` (a restored snapshot or
    /// nothing).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        state_machine: S,
        snapshot: Option<&SnapshotMeta>,
        initial_membership: Membership,
        snapshot_every: SnapshotEvery,
        snapshot_dir: PathBuf,
        shared: Arc<Shared>,
        net: Option<NetHandle>,
        feedback: Sender<Feedback>,
        spin: Spin,
    ) -> ApplyStage<S> {
        let (applied, applied_term, membership) = match snapshot {
            Some(meta) => (meta.index, meta.term, meta.membership.clone()),
            None => (LogIndex::ZERO, Term::ZERO, initial_membership),
        };
        shared.applied.store(applied.get(), Ordering::Release);
        ApplyStage {
            state_machine,
            applied,
            applied_term,
            membership,
            snapshot_index: applied,
            snapshot_every,
            bytes_since_snapshot: 0,
            snapshot_dir,
            shared,
            net,
            feedback,
            reads: Vec::new(),
            reads_next: None,
            run_replies: Vec::new(),
            replies: Vec::new(),
            spin,
        }
    }

    /// Runs until consensus drops its sender (after draining what is queued) or a fatal error.
    pub(crate) fn run(mut self, inbox: Receiver<ApplyMsg>) {
        loop {
            self.spin
                .until(std::time::Duration::MAX, || !inbox.is_empty());
            let Ok(message) = inbox.recv() else { break };
            let before = self.applied;
            let mut outcome = self.handle(message);
            while outcome.is_ok() {
                match inbox.try_recv() {
                    Ok(message) => outcome = self.handle(message),
                    Err(_) => break,
                }
            }
            if let Err(error) = outcome.and_then(|()| self.after_turn(before)) {
                self.shared.fail(error.clone());
                drop(self.feedback.send(Feedback::Failed(error)));
                break;
            }
        }
        for read in self.reads.drain(..) {
            read.target.fail(self.shared.gone(), &mut self.replies);
        }
        self.flush_replies();
    }

    fn handle(&mut self, message: ApplyMsg) -> Result<(), NodeError> {
        match message {
            ApplyMsg::Committed { batches, targets } => {
                let mut targets = targets.into_iter().peekable();
                for batch in &batches {
                    self.apply_batch(batch, &mut targets);
                }
                assert!(
                    targets.peek().is_none(),
                    "targets left after applying through {}",
                    self.applied
                );
            }
            ApplyMsg::Reads(reads) => {
                self.reads.extend(reads);
                self.reads_next = self.reads.iter().map(|read| read.index).min();
                // Served now if they can be: a batch queued behind them may hold a write that
                // the same client sent after the read (pipelined), which the read must not see.
                self.serve_reads();
            }
            ApplyMsg::Install(meta, data) => {
                if meta.index > self.applied {
                    self.state_machine.restore(&data).map_err(|why| {
                        NodeError::StateMachine(format!(
                            "restoring the snapshot at {} failed: {why}",
                            meta.index
                        ))
                    })?;
                    self.applied = meta.index;
                    self.applied_term = meta.term;
                    self.membership = meta.membership;
                    self.snapshot_index = meta.index;
                    self.bytes_since_snapshot = 0;
                }
            }
        }
        Ok(())
    }

    fn apply_batch(
        &mut self,
        batch: &Batch,
        targets: &mut std::iter::Peekable<std::vec::IntoIter<(LogIndex, Target)>>,
    ) {
        if batch.last_index() <= self.applied {
            return;
        }
        assert!(
            batch.first_index() <= self.applied.next(),
            "committed batch {}..={} leaves a gap after applied {}",
            batch.first_index(),
            batch.last_index(),
            self.applied
        );
        let skip = (self.applied.get() + 1).saturating_sub(batch.first_index().get()) as usize;
        let entries: Vec<&[u8]> = batch.entries().skip(skip).collect();
        let mut at = 0;
        while at < entries.len() {
            let first = self.applied.next();
            // A run ends where a waiting read must see the state (`ApplyMsg::Reads` above).
            let run = match self.reads_next.filter(|next| *next >= first) {
                Some(next) => ((next.get() - first.get()) as usize + 1).min(entries.len() - at),
                None => entries.len() - at,
            };
            let mut results = self.apply_run(batch.kind(), first, &entries[at..at + run]);
            for (offset, result) in results.drain(..).enumerate() {
                self.applied = first.plus(offset as u64);
                self.answer_targets(targets, result);
            }
            self.run_replies = results;
            at += run;
            if self.reads_next.is_some_and(|next| next <= self.applied) {
                self.serve_reads();
            }
        }
        self.applied_term = batch.term();
    }

    /// Applies `commands` (of a batch of `kind`) at consecutive indexes from `first`; the
    /// reply to each.
    fn apply_run(&mut self, kind: BatchKind, first: LogIndex, commands: &[&[u8]]) -> Vec<Bytes> {
        assert!(!commands.is_empty(), "an empty run at {first}");
        self.bytes_since_snapshot += commands.iter().map(|c| c.len() as u64).sum::<u64>();
        match kind {
            BatchKind::Normal => {
                let mut replies = std::mem::take(&mut self.run_replies);
                self.state_machine
                    .apply_batch(first, commands, &mut replies);
                assert_eq!(
                    replies.len(),
                    commands.len(),
                    "the state machine answered {} of the {} commands from {first}",
                    replies.len(),
                    commands.len()
                );
                replies
            }
            BatchKind::Membership => {
                for (offset, entry) in commands.iter().enumerate() {
                    self.membership = Membership::decode(entry).unwrap_or_else(|error| {
                        panic!(
                            "committed membership entry at {} does not decode: {error}",
                            first.plus(offset as u64)
                        )
                    });
                }
                vec![Bytes::new(); commands.len()]
            }
            BatchKind::Noop => vec![Bytes::new(); commands.len()],
        }
    }

    /// Answers the targets waiting for the entry just applied (`self.applied`) with `result`.
    fn answer_targets(
        &mut self,
        targets: &mut std::iter::Peekable<std::vec::IntoIter<(LogIndex, Target)>>,
        result: Bytes,
    ) {
        let index = self.applied;
        while targets.peek().is_some_and(|(at, _)| *at <= index) {
            let (at, target) = targets.next().expect("peeked");
            assert_eq!(at, index, "a target for {at} was skipped at {index}");
            target.succeed(
                Applied {
                    index,
                    result: result.clone(),
                },
                false,
                &mut self.replies,
            );
        }
    }

    /// After a batch of messages: serve reads, publish the applied index, maybe snapshot, and
    /// send the client replies in one go.
    fn after_turn(&mut self, before: LogIndex) -> Result<(), NodeError> {
        // Reads an installed snapshot covers.
        self.serve_reads();
        let applied = self.applied;
        if applied != before {
            // Consensus reads it when it needs it (status): no wake-up per applied batch.
            self.shared.applied.store(applied.get(), Ordering::Release);
            self.maybe_snapshot()?;
        }
        self.flush_replies();
        Ok(())
    }

    /// Answers every waiting read whose index is applied, from the state as it is now.
    fn serve_reads(&mut self) {
        let applied = self.applied;
        if self.reads_next.is_none_or(|next| next > applied) {
            return;
        }
        let mut waiting = Vec::new();
        for read in self.reads.drain(..) {
            if read.index <= applied {
                let result = if read.target.wants_query() {
                    self.state_machine.query(&read.query)
                } else {
                    Bytes::new()
                };
                read.target.succeed(
                    Applied {
                        index: applied,
                        result,
                    },
                    true,
                    &mut self.replies,
                );
            } else {
                waiting.push(read);
            }
        }
        self.reads = waiting;
        self.reads_next = self.reads.iter().map(|read| read.index).min();
    }

    fn maybe_snapshot(&mut self) -> Result<(), NodeError> {
        let every = self.snapshot_every;
        let due = self.applied.get() >= self.snapshot_index.get() + every.entries
            || self.bytes_since_snapshot >= every.bytes;
        let term_durable =
            self.applied_term.get() <= self.shared.durable_term.load(Ordering::Acquire);
        if !due || !term_durable {
            return Ok(());
        }
        let meta = SnapshotMeta {
            index: self.applied,
            term: self.applied_term,
            membership: self.membership.clone(),
        };
        let mut data = Vec::new();
        self.state_machine.snapshot(&mut data);
        snapshot::write(&self.snapshot_dir, &meta, &data).map_err(NodeError::from_snapshot)?;
        snapshot::remove_older(&self.snapshot_dir, meta.index).map_err(NodeError::from_snapshot)?;
        tracing::debug!(
            index = meta.index.get(),
            bytes = data.len(),
            "snapshot taken"
        );
        self.snapshot_index = meta.index;
        self.bytes_since_snapshot = 0;
        drop(
            self.feedback
                .send(Feedback::Snapshot(meta, Bytes::from(data))),
        );
        Ok(())
    }

    fn flush_replies(&mut self) {
        if self.replies.is_empty() {
            return;
        }
        match &self.net {
            Some(net) => net.reply(std::mem::take(&mut self.replies)),
            None => self.replies.clear(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::Batch;
    use crate::node::pipeline::ApplyMsg;
    use crate::types::NodeId;

    /// The last value set: a command is the new value, a query returns the current one.
    #[derive(Default)]
    struct Register(Bytes);

    impl StateMachine for Register {
        fn apply(&mut self, _index: LogIndex, command: &[u8]) -> Bytes {
            std::mem::replace(&mut self.0, Bytes::copy_from_slice(command))
        }
        fn query(&self, _query: &[u8]) -> Bytes {
            self.0.clone()
        }
        fn snapshot(&self, out: &mut Vec<u8>) {
            out.extend_from_slice(&self.0);
        }
        fn restore(&mut self, snapshot: &[u8]) -> Result<(), crate::apply::RestoreError> {
            self.0 = Bytes::copy_from_slice(snapshot);
            Ok(())
        }
    }

    fn set(index: u64, value: &str) -> ApplyMsg {
        ApplyMsg::Committed {
            batches: vec![Batch::single(
                Term(1),
                LogIndex(index),
                BatchKind::Normal,
                value.as_bytes(),
            )],
            targets: Vec::new(),
        }
    }

    /// A one-voter stage over a [`Register`], snapshotting after `snapshot_bytes` (the entry
    /// bound far away).
    fn register_stage(
        dir: &std::path::Path,
        snapshot_bytes: u64,
        shared: Arc<Shared>,
        feedback: Sender<Feedback>,
    ) -> ApplyStage<Register> {
        ApplyStage::new(
            Register::default(),
            None,
            Membership::with_voters([NodeId(1)]),
            SnapshotEvery {
                entries: 1_000_000,
                bytes: snapshot_bytes,
            },
            dir.to_path_buf(),
            shared,
            None,
            feedback,
            Spin::default(),
        )
    }

    /// A read queued between two commits sees the first and not the second, even when apply
    /// takes all three in one turn (pipelined `SET a 1`, `GET a`, `SET a 2` on one connection).
    #[test]
    fn a_read_is_answered_before_the_commits_queued_behind_it() {
        let dir = tempfile::tempdir().unwrap();
        let (feedback, _feedback_rx) = crossbeam_channel::unbounded();
        let shared = Arc::new(Shared::default());
        let stage = register_stage(dir.path(), u64::MAX, shared.clone(), feedback);
        let (to_apply, inbox) = crossbeam_channel::unbounded();
        let mut answers = Vec::new();
        let mut read = |index: u64| {
            let (answer, completer) = super::super::receipt::receipt(&shared);
            answers.push(answer);
            PendingRead {
                index: LogIndex(index),
                query: Bytes::new(),
                target: Target::Receipt(completer),
            }
        };
        to_apply.send(set(1, "1")).unwrap();
        to_apply.send(ApplyMsg::Reads(vec![read(1)])).unwrap();
        to_apply.send(set(2, "2")).unwrap();
        // A read whose index comes in the middle of a later batch sees exactly that index.
        to_apply.send(ApplyMsg::Reads(vec![read(3)])).unwrap();
        to_apply
            .send(ApplyMsg::Committed {
                batches: vec![{
                    let mut builder = crate::batch::BatchBuilder::default();
                    builder.push(b"3");
                    builder.push(b"4");
                    builder.finish(Term(1), LogIndex(3), BatchKind::Normal)
                }],
                targets: Vec::new(),
            })
            .unwrap();
        drop(to_apply);
        stage.run(inbox);
        let mut answers = answers.into_iter();
        let first = answers.next().unwrap().wait().unwrap();
        assert_eq!((first.index, &first.result[..]), (LogIndex(1), &b"1"[..]));
        let second = answers.next().unwrap().wait().unwrap();
        assert_eq!((second.index, &second.result[..]), (LogIndex(3), &b"3"[..]));
    }

    /// Snapshot indexes taken after applying `values` at 1.. in one turn, with a 10-byte bound
    /// and an entry bound far away.
    fn snapshots_after(values: &[&str]) -> Vec<LogIndex> {
        let dir = tempfile::tempdir().unwrap();
        let (feedback, feedback_rx) = crossbeam_channel::unbounded();
        let shared = Arc::new(Shared::default());
        shared.durable_term.store(1, Ordering::Release);
        let stage = register_stage(dir.path(), 10, shared, feedback);
        let (to_apply, inbox) = crossbeam_channel::unbounded();
        for (at, value) in values.iter().enumerate() {
            to_apply.send(set(at as u64 + 1, value)).unwrap();
        }
        drop(to_apply);
        stage.run(inbox);
        feedback_rx
            .try_iter()
            .filter_map(|item| match item {
                Feedback::Snapshot(meta, _) => Some(meta.index),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn snapshot_bytes_of_applied_entries_trigger_a_snapshot_before_snapshot_entries() {
        assert_eq!(
            snapshots_after(&["12345", "678"]),
            vec![],
            "8 bytes: not yet"
        );
        assert_eq!(snapshots_after(&["12345", "678", "90"]), vec![LogIndex(3)]);
    }
}
