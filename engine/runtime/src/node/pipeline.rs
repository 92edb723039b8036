//! The items that travel between the stages, and the little state they share.
//!
//! Channels (see `docs/RUNTIME.md`): consensus -> storage ([`StorageMsg`]) and consensus ->
//! apply ([`ApplyMsg`]) are bounded, so a slow disk or state machine pushes back on consensus
//! and, through it, on the network and the proposers. Storage -> consensus and apply ->
//! consensus ([`Feedback`]) are unbounded: those stages must never block on consensus (it may
//! itself be blocked sending to them), and they send at most one feedback item per loop turn.
//! Every item carries a batch (a `Vec`), never one entry.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use crossbeam_channel::{Receiver, Sender};

use crate::batch::Batch;
use crate::log::Doorbell;
use crate::net::{ClientReply, ConnId};
use crate::raft::{SnapshotMeta, StorageWrite, WriteId};
use crate::types::LogIndex;

use super::consensus::Request;
use super::receipt::Completer;
use super::{Applied, AppliedBatch, LogCounters, NodeError};

/// Who is waiting for the outcome of one proposal or read.
pub(crate) enum Target {
    /// A caller of the embedding API, holding a [`super::Receipt`].
    Receipt(Completer<Applied>),
    /// A caller of [`super::Node::read_index`]: answered with the applied index, no query.
    Index(Completer<LogIndex>),
    /// A client connection and the request id it chose.
    Client {
        /// The connection.
        conn: ConnId,
        /// The request id to echo.
        req: u64,
    },
    /// One command of a batch proposal (they have consecutive indexes); the batch is answered
    /// once, when its last command is applied or the first failure is known.
    BatchPart(Arc<Mutex<BatchOutcome>>),
}

/// Who waits for a whole batch proposal.
pub(crate) enum BatchWaiter {
    /// A caller of [`super::Node::propose_batch`].
    Receipt(Completer<AppliedBatch>),
    /// A client's `ProposeBatch` request.
    Client {
        /// The connection.
        conn: ConnId,
        /// The request id to echo.
        req: u64,
    },
    /// Answered already (later outcomes are dropped).
    Answered,
}

/// The results of a batch proposal gathered so far (shared by the [`Target::BatchPart`]s of
/// its commands: apply succeeds them in index order, consensus may fail the uncommitted tail).
pub(crate) struct BatchOutcome {
    waiter: BatchWaiter,
    /// Commands in the batch.
    count: usize,
    /// Index of the first command (known once the first result arrives).
    first: LogIndex,
    /// Results of the first `results.len()` commands.
    results: Vec<Bytes>,
}

impl BatchOutcome {
    /// One target per command of a batch of `count` commands, all answering `waiter`.
    pub(crate) fn targets(waiter: BatchWaiter, count: usize) -> impl Iterator<Item = Target> {
        assert!(count > 0, "a batch proposal of no commands");
        let outcome = Arc::new(Mutex::new(BatchOutcome {
            waiter,
            count,
            first: LogIndex::ZERO,
            results: Vec::with_capacity(count),
        }));
        (0..count).map(move |_| Target::BatchPart(outcome.clone()))
    }

    fn succeed(&mut self, applied: Applied, replies: &mut Vec<(ConnId, ClientReply)>) {
        if matches!(self.waiter, BatchWaiter::Answered) {
            return;
        }
        if self.results.is_empty() {
            self.first = applied.index;
        }
        let expected = self.first.plus(self.results.len() as u64);
        assert_eq!(
            applied.index,
            expected,
            "batch command {} of {} applied at {} (first at {})",
            self.results.len(),
            self.count,
            applied.index,
            self.first
        );
        self.results.push(applied.result);
        if self.results.len() < self.count {
            return;
        }
        let results = std::mem::take(&mut self.results);
        match std::mem::replace(&mut self.waiter, BatchWaiter::Answered) {
            BatchWaiter::Receipt(completer) => completer.complete(Ok(AppliedBatch {
                first: self.first,
                results,
            })),
            BatchWaiter::Client { conn, req } => replies.push((
                conn,
                ClientReply::AppliedBatch {
                    req,
                    first: self.first,
                    results,
                },
            )),
            BatchWaiter::Answered => unreachable!("a batch is answered once"),
        }
    }

    fn fail(&mut self, error: NodeError, replies: &mut Vec<(ConnId, ClientReply)>) {
        std::mem::replace(&mut self.waiter, BatchWaiter::Answered).fail(error, replies);
    }
}

impl BatchWaiter {
    /// Answers the whole batch with a failure (see [`Target::fail`]).
    pub(crate) fn fail(self, error: NodeError, replies: &mut Vec<(ConnId, ClientReply)>) {
        match self {
            BatchWaiter::Receipt(completer) => completer.complete(Err(error)),
            BatchWaiter::Client { conn, req } => replies.push((conn, error_reply(req, &error))),
            BatchWaiter::Answered => {}
        }
    }
}

impl Target {
    /// Whether a read for this target runs the state machine's query (a read-index caller
    /// only wants the index).
    pub(crate) fn wants_query(&self) -> bool {
        !matches!(self, Target::Index(_))
    }

    /// Answers with a success: for a client, `Applied` for a proposal or `ReadOk` for a read.
    pub(crate) fn succeed(
        self,
        applied: Applied,
        read: bool,
        replies: &mut Vec<(ConnId, ClientReply)>,
    ) {
        match self {
            // The caller may have given up (timeout, dropped receipt): nothing to do then.
            Target::Receipt(completer) => completer.complete(Ok(applied)),
            Target::Index(completer) => completer.complete(Ok(applied.index)),
            Target::Client { conn, req } => {
                let reply = if read {
                    ClientReply::ReadOk {
                        req,
                        index: applied.index,
                        result: applied.result,
                    }
                } else {
                    ClientReply::Applied {
                        req,
                        index: applied.index,
                        result: applied.result,
                    }
                };
                replies.push((conn, reply));
            }
            Target::BatchPart(outcome) => outcome
                .lock()
                .expect("batch outcome lock")
                .succeed(applied, replies),
        }
    }

    /// Answers with a failure.
    pub(crate) fn fail(self, error: NodeError, replies: &mut Vec<(ConnId, ClientReply)>) {
        match self {
            Target::Receipt(completer) => completer.complete(Err(error)),
            Target::Index(completer) => completer.complete(Err(error)),
            Target::Client { conn, req } => replies.push((conn, error_reply(req, &error))),
            Target::BatchPart(outcome) => outcome
                .lock()
                .expect("batch outcome lock")
                .fail(error, replies),
        }
    }
}

/// The client protocol's form of a [`NodeError`].
pub(crate) fn error_reply(req: u64, error: &NodeError) -> ClientReply {
    let message = match error {
        NodeError::NotLeader { leader } => {
            return ClientReply::NotLeader {
                req,
                leader: leader.map(|hint| hint.id),
                leader_addr: leader
                    .and_then(|hint| hint.client_addr)
                    .map(|addr| addr.to_string()),
            }
        }
        NodeError::OutcomeUnknown => {
            "leadership was lost: the outcome is unknown (the command may still commit)".to_string()
        }
        NodeError::ShuttingDown => "the node is stopping: the outcome is unknown".to_string(),
        NodeError::Timeout => "timed out: the outcome is unknown".to_string(),
        NodeError::Refused(why) => format!("refused: {why}"),
        other => format!("the node failed: {other}"),
    };
    ClientReply::Error { req, message }
}

/// A read waiting for the state machine to reach `index` (0 for a local read: served at once).
pub(crate) struct PendingRead {
    /// The applied index the answer must reflect.
    pub index: LogIndex,
    /// The query.
    pub query: Bytes,
    /// Who gets the answer.
    pub target: Target,
}

/// Consensus -> apply.
pub(crate) enum ApplyMsg {
    /// Committed batches in order, with the targets of the entries proposed here (ascending).
    Committed {
        /// The batches.
        batches: Vec<Batch>,
        /// `(index, target)` of the entries someone here waits for.
        targets: Vec<(LogIndex, Target)>,
    },
    /// Reads to serve once applied.
    Reads(Vec<PendingRead>),
    /// A snapshot received from the leader: restore the state machine from it (its file is
    /// written by storage). Sent before the committed batches that follow it.
    Install(SnapshotMeta, Bytes),
}

/// The storage stage has ended: a message to it was dropped.
#[derive(Debug)]
pub(crate) struct StorageGone;

/// Consensus -> storage: the bounded channel, and the storage thread's doorbell (it sleeps on
/// the log's doorbell, not on the channel, so a send must ring it).
pub(crate) struct ToStorage {
    /// `None` only while dropping.
    sender: Option<Sender<StorageMsg>>,
    doorbell: Arc<Doorbell>,
}

impl ToStorage {
    /// A sender over `sender`, ringing `doorbell` (the storage thread's log's).
    pub(crate) fn new(sender: Sender<StorageMsg>, doorbell: Arc<Doorbell>) -> ToStorage {
        ToStorage {
            sender: Some(sender),
            doorbell,
        }
    }

    fn sender(&self) -> &Sender<StorageMsg> {
        self.sender
            .as_ref()
            .expect("the storage sender lives until drop")
    }

    /// Queues a message (blocking while the channel is full) and wakes storage if it sleeps.
    /// Fails (dropping the message) when storage is gone.
    pub(crate) fn send(&self, message: StorageMsg) -> Result<(), StorageGone> {
        self.sender().send(message).map_err(|_| StorageGone)?;
        self.doorbell.ring_if_sleeping();
        Ok(())
    }

    /// The channel, for queue-depth probes.
    pub(crate) fn channel(&self) -> &Sender<StorageMsg> {
        self.sender()
    }
}

impl Drop for ToStorage {
    /// Storage notices a disconnected inbox only when it looks: disconnect, then wake it.
    fn drop(&mut self) {
        drop(self.sender.take());
        self.doorbell.ring();
    }
}

/// Consensus -> storage.
pub(crate) enum StorageMsg {
    /// A write to execute (in id order).
    Write(StorageWrite),
    /// A snapshot up to this index is durable: drop the log behind it.
    Compact(LogIndex),
}

/// Storage or apply -> consensus.
pub(crate) enum Feedback {
    /// Every write up to this id is durable (its `after_durable` messages have been handed to
    /// the network). Sent only while [`Shared::durable_feedback`] is set; otherwise consensus
    /// reads [`Shared::durable_write`] at its next turn.
    Durable(WriteId),
    /// The apply stage wrote a snapshot file durably.
    Snapshot(SnapshotMeta, Bytes),
    /// A stage hit a fatal error; the node stops.
    Failed(NodeError),
}

/// What every stage and the [`super::Node`] handle can read.
#[derive(Default)]
pub(crate) struct Shared {
    /// The state machine's applied index.
    pub applied: AtomicU64,
    /// The term of the durable hard state (a snapshot may only cover terms up to it, or a
    /// restart would find a snapshot newer than its term).
    pub durable_term: AtomicU64,
    /// The id of the last write storage made durable (a [`WriteId`]); consensus reads it every
    /// turn.
    pub durable_write: AtomicU64,
    /// Set by consensus while it needs to hear of durable writes at once (a leader counts its
    /// own write toward a commit; a candidate its own vote): storage then also sends
    /// [`Feedback::Durable`], which wakes consensus. A follower learns of them at its next turn
    /// (at the latest its next tick): nothing it sends waits for that (its acks leave from
    /// storage), so it is spared a wake-up per write.
    pub durable_feedback: AtomicBool,
    /// The first fatal error, if any.
    pub failure: Mutex<Option<NodeError>>,
    /// The log counters, published by storage once per loop turn.
    pub log: Mutex<LogCounters>,
    /// Sync latency, observed by storage (see [`super::stats::SyncTimer`]).
    pub sync_latency: super::stats::LatencyHistogram,
    /// Set by consensus once it takes no more requests.
    pub exited: AtomicBool,
    /// A receiver of the request channel, so that requests sent after consensus exited (they
    /// stay queued while a sender lives) can be dropped, which disconnects their waiters.
    pub orphans: Mutex<Option<Receiver<Request>>>,
}

impl Shared {
    /// Records the first fatal error.
    pub(crate) fn fail(&self, error: NodeError) {
        let mut failure = self.failure.lock().expect("failure lock");
        if failure.is_none() {
            tracing::error!(error = %error, "node failed");
            *failure = Some(error);
        }
    }

    /// The error for a request that found the node gone.
    pub(crate) fn gone(&self) -> NodeError {
        match &*self.failure.lock().expect("failure lock") {
            Some(error) => error.clone(),
            None => NodeError::ShuttingDown,
        }
    }

    /// Drops the requests queued after consensus exited (their receipts then report the node
    /// gone). Called by every sender after it sends: consensus sets `exited` before its last
    /// drain, so a request is either drained by consensus or by its sender.
    pub(crate) fn drop_orphans(&self) {
        if self.exited.load(Ordering::SeqCst) {
            if let Some(orphans) = &*self.orphans.lock().expect("orphans lock") {
                while orphans.try_recv().is_ok() {}
            }
        }
    }

    /// The applied index.
    pub(crate) fn applied(&self) -> LogIndex {
        LogIndex(self.applied.load(Ordering::Acquire))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn applied(index: u64, result: &'static str) -> Applied {
        Applied {
            index: LogIndex(index),
            result: Bytes::from_static(result.as_bytes()),
        }
    }

    #[test]
    fn a_client_batch_is_answered_once_after_its_last_command() {
        let mut replies = Vec::new();
        let waiter = BatchWaiter::Client {
            conn: ConnId(3),
            req: 9,
        };
        let targets: Vec<Target> = BatchOutcome::targets(waiter, 3).collect();
        for (at, target) in targets.into_iter().enumerate() {
            assert!(replies.is_empty(), "answered before command {at}");
            target.succeed(
                applied(10 + at as u64, ["a", "b", "c"][at]),
                false,
                &mut replies,
            );
        }
        assert_eq!(replies.len(), 1);
        let (conn, reply) = replies.pop().unwrap();
        assert_eq!(conn, ConnId(3));
        assert_eq!(
            reply,
            ClientReply::AppliedBatch {
                req: 9,
                first: LogIndex(10),
                results: ["a", "b", "c"]
                    .map(|text: &'static str| Bytes::from_static(text.as_bytes()))
                    .to_vec(),
            }
        );
    }

    #[test]
    fn a_lost_tail_answers_the_batch_with_the_first_failure_only() {
        let shared = Arc::new(Shared::default());
        let (mut receipt, completer) = super::super::receipt::receipt(&shared);
        let mut replies = Vec::new();
        let mut targets = BatchOutcome::targets(BatchWaiter::Receipt(completer), 3);
        let (first, second, third) = (
            targets.next().unwrap(),
            targets.next().unwrap(),
            targets.next().unwrap(),
        );
        // The first command committed; leadership is lost before the others (consensus fails
        // them from the back), then apply reaches the committed one.
        third.fail(NodeError::OutcomeUnknown, &mut replies);
        second.fail(NodeError::OutcomeUnknown, &mut replies);
        first.succeed(applied(5, "x"), false, &mut replies);
        assert!(replies.is_empty());
        assert_eq!(receipt.try_wait(), Some(Err(NodeError::OutcomeUnknown)));
    }

    #[test]
    #[should_panic(expected = "applied at i7 (first at i5)")]
    fn batch_commands_must_apply_at_consecutive_indexes() {
        let mut replies = Vec::new();
        let waiter = BatchWaiter::Client {
            conn: ConnId(1),
            req: 1,
        };
        let mut targets = BatchOutcome::targets(waiter, 3);
        targets
            .next()
            .unwrap()
            .succeed(applied(5, ""), false, &mut replies);
        targets
            .next()
            .unwrap()
            .succeed(applied(7, ""), false, &mut replies);
    }
}
