//! What a core hands to its runtime ([`Ready`], [`StorageWrite`]) and what the runtime hands
//! back at start ([`Restored`]): the contract between the pure core and the code doing I/O.
//!
//! Durability before visibility is structural: a message that may only leave once something is
//! durable (a follower's ack, a vote grant, a candidate's vote request, anything sent while a
//! term change is unsynced) travels in [`StorageWrite::after_durable`] and is released by the
//! runtime only after that write (and every earlier one) is durable.

use bytes::Bytes;

use crate::batch::Batch;
use crate::types::{LogIndex, NodeId, Term};

use super::membership::Membership;
use super::message::Message;

/// The state that must survive a crash before a vote or a term change is acted on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct HardState {
    /// The current term.
    pub term: Term,
    /// Whom this node voted for in `term`.
    pub vote: Option<NodeId>,
}

/// What a snapshot covers.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct SnapshotMeta {
    /// The last index the snapshot includes.
    pub index: LogIndex,
    /// The term of that index.
    pub term: Term,
    /// The membership in effect at that index.
    pub membership: Membership,
}

/// What the runtime restored from disk (empty for a brand-new node).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Restored {
    /// Term and vote.
    pub hard_state: HardState,
    /// The latest snapshot; the core keeps the data to send to lagging followers.
    pub snapshot: Option<(SnapshotMeta, Bytes)>,
    /// The log after the snapshot, in order.
    pub batches: Vec<Batch>,
    /// The membership used when neither the snapshot nor the log holds one.
    pub initial_membership: Membership,
    /// Set when the log lost entries it once held durably (damage cut off at start, see
    /// `docs/RAFT.md`, "Repair"): the highest index it held. Some of the lost entries may have
    /// been acknowledged, so a leader may have counted this node for their commit; until its
    /// log is durable up to this index again (fetched from a leader by the ordinary append or
    /// snapshot path), the node neither grants (pre-)votes nor campaigns, which could otherwise
    /// elect a leader that lacks a committed entry. Ignored when the log already reaches it.
    pub repair_until: Option<LogIndex>,
    /// With `repair_until`, when the log may have held more than that index (a lost segment:
    /// nothing says how far it reached): the highest term the node had reached. The repair then
    /// also waits until the durable log holds an entry of a higher term, which only a leader
    /// elected without this node can have written, and whose log holds every entry committed
    /// in the earlier terms (`docs/RAFT.md`, "Repair").
    pub repair_above_term: Option<Term>,
    /// Set when recovery cut the log's tail after an unclean stop (`docs/RAFT.md`, "Suspect
    /// tail"): a term no lower than that of any entry the node may have acknowledged before
    /// the cut (its current term then). The cut records may have been durable and
    /// acknowledged, so until the node has learned the log ends of a quorum of the other
    /// voters (from their vote requests at a higher term), or its durable log holds an entry
    /// of a higher term, it grants no (pre-)vote on the strength of its own log and does not
    /// count its own vote.
    pub suspect_term: Option<Term>,
}

/// Identifies a [`StorageWrite`]; ids strictly increase, starting at 1.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct WriteId(pub u64);

/// Identifies a read request; chosen by the runtime, echoed back.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ReadId(pub u64);

/// A read that is now linearizable: serve it once the state machine has applied `index`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReadReady {
    /// The request.
    pub id: ReadId,
    /// The state machine must have applied at least this index.
    pub index: LogIndex,
}

/// A core's role.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// Follows a leader (or waits for one). Learners are followers that never campaign.
    Follower,
    /// Runs a pre-vote round (term unchanged).
    PreCandidate,
    /// Campaigns in its term.
    Candidate,
    /// Leads its term.
    Leader,
}

/// Role and leader, reported when either changes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SoftState {
    /// The role.
    pub role: Role,
    /// The known leader of `term`.
    pub leader: Option<NodeId>,
    /// The current term.
    pub term: Term,
}

/// Storage work, performed by the runtime in id order.
///
/// Order within a write: persist `hard_state` (if any), install `snapshot` (if any: the log at
/// and below its index is dropped), truncate the log from `truncate_from` (if any), append
/// `batches`. Make it durable (one sync may cover many writes), THEN send `after_durable` and
/// call `Raft::on_durable(id)`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StorageWrite {
    /// This write's id.
    pub id: WriteId,
    /// New term / vote.
    pub hard_state: Option<HardState>,
    /// A snapshot received from the leader, to persist and load into the state machine (boxed:
    /// rare, and it would otherwise make every write as large as a membership).
    pub snapshot: Option<Box<(SnapshotMeta, Bytes)>>,
    /// Drop the log from this index on.
    pub truncate_from: Option<LogIndex>,
    /// Batches to append, consecutive.
    pub batches: Vec<Batch>,
    /// Messages to send once this write is durable.
    pub after_durable: Vec<Message>,
}

impl StorageWrite {
    /// Whether the write changes nothing on disk (it only orders `after_durable`).
    pub fn is_empty(&self) -> bool {
        self.hard_state.is_none()
            && self.snapshot.is_none()
            && self.truncate_from.is_none()
            && self.batches.is_empty()
    }
}

/// Everything a core produced since the last [`Raft::ready`](super::Raft::ready).
#[derive(Debug, Default)]
pub struct Ready {
    /// Messages that may be sent now.
    pub messages: Vec<Message>,
    /// At most one storage write.
    pub write: Option<StorageWrite>,
    /// Newly committed batches in order, all kinds, to apply. If `write` holds a snapshot, load
    /// it into the state machine first.
    pub committed: Vec<Batch>,
    /// The commit index.
    pub commit_index: LogIndex,
    /// Reads now safe to serve once applied >= their index.
    pub reads: Vec<ReadReady>,
    /// Reads that failed because leadership was lost before they were confirmed.
    pub reads_failed: Vec<ReadId>,
    /// Role / leader / term, when changed.
    pub soft_state: Option<SoftState>,
}
