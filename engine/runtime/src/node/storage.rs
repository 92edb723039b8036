//! The storage thread: owns the [`Log`] and executes the core's [`StorageWrite`]s strictly in id
//! order, with group commit, releasing each write's `after_durable` messages (and telling
//! consensus) only once the write and every earlier one are durable.
//!
//! Group commit: everything queued is appended, then a sync round is requested for it. The log
//! keeps up to `LogOptions::syncs_in_flight` rounds in flight, so writes that arrive while
//! rounds run get their own round at once (or, with no room, the next round when one completes).
//! When nothing else is queued and no round runs, the round is synced on this thread instead
//! (`LogOptions::sync_inline_when_idle`): a lone commit skips two hand-offs.
//! With nothing to do but wait, the thread blocks on the log's doorbell, an eventfd that the
//! kernel rings on a sync completion and consensus rings when it queues work for a sleeping
//! storage thread: one wake-up per event, no relay thread (never spinning unless `spin_us`).
//! A write is durable once the log's durable seq
//! reaches the seq of the last record it appended (the log advances it only over a prefix of
//! completed rounds; hard state and snapshot files are written synchronously before that).
//!
//! Any storage error is fatal: the log refuses further work after a failed sync (never retried),
//! the error is reported to consensus and the thread ends.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender, TryRecvError};

use crate::apply::snapshot;
use crate::log::{HardState as LogHardState, Log};
use crate::net::NetHandle;
use crate::node::pipeline::{Feedback, Shared, StorageMsg};
use crate::node::spin::Spin;
use crate::node::stats::SyncTimer;
use crate::node::{LogCounters, NodeError};
use crate::raft::{Message, StorageWrite, WriteId};
use crate::types::NodeId;

/// The storage stage's state.
pub(crate) struct StorageStage {
    pub log: Log,
    pub snapshot_dir: PathBuf,
    pub net: Option<NetHandle>,
    pub feedback: Sender<Feedback>,
    pub shared: Arc<Shared>,
    /// Executed writes not yet reported durable: id, log seq that must be durable, messages.
    pending: VecDeque<(WriteId, u64, Vec<Message>)>,
    sync_timer: SyncTimer,
    /// Spin-before-block: polls the inbox and the sync completions before blocking.
    spin: Spin,
}

impl StorageStage {
    /// A stage over an opened (and start-up-checked) log.
    pub(crate) fn new(
        log: Log,
        snapshot_dir: PathBuf,
        net: Option<NetHandle>,
        feedback: Sender<Feedback>,
        shared: Arc<Shared>,
        spin: Spin,
    ) -> StorageStage {
        shared
            .durable_term
            .store(log.hard_state().term.get(), Ordering::Release);
        StorageStage {
            log,
            snapshot_dir,
            net,
            feedback,
            shared,
            pending: VecDeque::new(),
            sync_timer: SyncTimer::default(),
            spin,
        }
    }

    /// Runs until consensus drops its sender; then makes everything durable, releases it, and
    /// closes (seals) the log. A fatal error is reported as [`Feedback::Failed`].
    pub(crate) fn run(self, inbox: Receiver<StorageMsg>) {
        let shared = self.shared.clone();
        let feedback = self.feedback.clone();
        if let Err(error) = self.serve_and_close(&inbox) {
            shared.fail(error.clone());
            drop(feedback.send(Feedback::Failed(error)));
        }
    }

    fn serve_and_close(mut self, inbox: &Receiver<StorageMsg>) -> Result<(), NodeError> {
        self.serve(inbox)?;
        self.log
            .close()
            .map(drop)
            .map_err(|e| NodeError::from_log("closing the log", &e))
    }

    fn serve(&mut self, inbox: &Receiver<StorageMsg>) -> Result<(), NodeError> {
        let err = |error: crate::log::LogError| NodeError::from_log("", &error);
        let doorbell = self.log.doorbell().clone();
        'serve: loop {
            // Take everything queued, append it, and start a round for it.
            loop {
                match inbox.try_recv() {
                    Ok(message) => self.execute(message)?,
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => break 'serve,
                }
            }
            let (last_seq, durable_seq) = (self.log.last_seq(), self.log.durable_seq());
            self.sync_timer.requested(last_seq, durable_seq);
            // With nothing else queued the round may run on this thread (when none is running):
            // no hand-off to the kernel's sync worker and back (docs/LOG.md, "Inline syncs").
            if inbox.is_empty() {
                self.log.request_sync_idle().map_err(err)?;
            } else {
                self.log.request_sync().map_err(err)?;
            }
            self.log.poll_durable().map_err(err)?;
            self.release();
            let in_flight = self.log.sync_in_flight();
            if !in_flight {
                // Nothing in flight after a request: every executed write is durable.
                assert!(
                    self.pending.is_empty(),
                    "write {:?} waits for seq {} but no sync round is in flight (durable seq {})",
                    self.pending.front().map(|(id, _, _)| id),
                    self.pending.front().map_or(0, |&(_, seq, _)| seq),
                    self.log.durable_seq()
                );
            }
            // Spinning polls the ring's completions directly, as blocking on the doorbell
            // would, minus the sleep.
            let mut polled = Ok(None);
            let log = &mut self.log;
            let ready = self.spin.until(Duration::MAX, || {
                if !inbox.is_empty() {
                    return true;
                }
                if in_flight {
                    polled = log.poll_durable();
                }
                !matches!(polled, Ok(None))
            });
            polled.map_err(err)?;
            if !ready {
                // One place to sleep for both inputs: the kernel rings the doorbell on a sync
                // completion, consensus when it queues work (or goes away).
                doorbell.wait(None, || !inbox.is_empty());
            }
        }
        self.log.wait_durable().map_err(err)?;
        self.release();
        assert!(
            self.pending.is_empty(),
            "writes left unreleased after the final sync: first {:?}",
            self.pending.front().map(|(id, seq, _)| (id, seq))
        );
        Ok(())
    }

    fn execute(&mut self, message: StorageMsg) -> Result<(), NodeError> {
        match message {
            StorageMsg::Write(write) => self.write(write),
            StorageMsg::Compact(index) => self
                .log
                .compact_to(index)
                .map_err(|e| NodeError::from_log("", &e)),
        }
    }

    fn write(&mut self, write: StorageWrite) -> Result<(), NodeError> {
        let err = |error: crate::log::LogError| NodeError::from_log("", &error);
        let StorageWrite {
            id,
            hard_state,
            snapshot,
            truncate_from,
            batches,
            after_durable,
        } = write;
        assert!(
            self.pending.back().is_none_or(|&(last, _, _)| last < id),
            "storage write {id:?} out of order after {:?}",
            self.pending.back().map(|(last, _, _)| last)
        );
        if let Some(state) = hard_state {
            self.log
                .save_hard_state(LogHardState {
                    term: state.term,
                    vote: state.vote.unwrap_or(NodeId::ZERO),
                })
                .map_err(err)?;
            self.shared
                .durable_term
                .store(state.term.get(), Ordering::Release);
        }
        if let Some((meta, data)) = snapshot.as_deref() {
            snapshot::write(&self.snapshot_dir, meta, data).map_err(NodeError::from_snapshot)?;
            if self.log.term_at(meta.index) == Some(meta.term) {
                self.log.compact_to(meta.index).map_err(err)?;
            } else {
                self.log.reset_after(meta.index, meta.term).map_err(err)?;
            }
            snapshot::remove_older(&self.snapshot_dir, meta.index)
                .map_err(NodeError::from_snapshot)?;
        }
        if let Some(from) = truncate_from {
            if from <= self.log.last_index() {
                self.log.truncate_from(from).map_err(err)?;
            }
        }
        for batch in &batches {
            self.log.append(batch).map_err(err)?;
        }
        self.pending
            .push_back((id, self.log.last_seq(), after_durable));
        Ok(())
    }

    /// Hands the messages of every durable write to the network and tells consensus; publishes
    /// the log counters.
    fn release(&mut self) {
        let stats = self.log.stats();
        *self.shared.log.lock().expect("log counters lock") = LogCounters {
            entries_appended: stats.entries_appended,
            batches_appended: stats.appends,
            bytes_appended: stats.bytes_appended,
            syncs: stats.syncs,
            entries_synced: stats.entries_synced,
            bytes_synced: stats.bytes_synced,
        };
        let durable_seq = self.log.durable_seq();
        self.sync_timer
            .durable(durable_seq, &self.shared.sync_latency);
        let mut last = None;
        let mut messages = Vec::new();
        while self
            .pending
            .front()
            .is_some_and(|&(_, seq, _)| seq <= durable_seq)
        {
            let (id, _, after) = self.pending.pop_front().expect("front");
            messages.extend(after);
            last = Some(id);
        }
        if !messages.is_empty() {
            if let Some(net) = &self.net {
                net.send(messages);
            }
        }
        if let Some(id) = last {
            self.shared.durable_write.store(id.0, Ordering::Release);
            if self.shared.durable_feedback.load(Ordering::Acquire) {
                drop(self.feedback.send(Feedback::Durable(id)));
            }
        }
    }
}
