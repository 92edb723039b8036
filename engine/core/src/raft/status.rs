//! What a core reports about itself ([`Status`], [`Stats`]) and the typed refusals of its
//! client-facing calls ([`ProposeError`]).

use std::fmt;

use crate::types::{LogIndex, NodeId, Term};

use super::membership::{Membership, MembershipError};
use super::ready::{Role, WriteId};

/// How a leader replicates to one follower.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ProgressState {
    /// Sends one Append and waits for its answer (after a reject or at the start of a term).
    Probe,
    /// Sends optimistically within the in-flight window.
    Replicate,
    /// Sends a snapshot in chunks.
    Snapshot,
}

/// A leader's view of one peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerStatus {
    /// The peer.
    pub id: NodeId,
    /// Whether it votes.
    pub voter: bool,
    /// Highest index it holds durably (as acknowledged).
    pub match_index: LogIndex,
    /// Next index to send it.
    pub next_index: LogIndex,
    /// Replication mode.
    pub state: ProgressState,
    /// Append messages in flight.
    pub inflight_messages: u32,
    /// Payload bytes in flight.
    pub inflight_bytes: u64,
}

/// Counters of what a core did and ignored.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Messages stepped.
    pub messages_received: u64,
    /// Messages ignored because their term is older.
    pub stale_term_ignored: u64,
    /// Messages ignored because the sender is not a member.
    pub non_member_ignored: u64,
    /// Messages refused because they break the protocol (a second leader in this node's term
    /// while it leads, an acknowledgement past this leader's last index): only a faulty peer
    /// sends them.
    pub protocol_violations_refused: u64,
    /// (Pre-)votes ignored because a live leader was heard within the election timeout.
    pub votes_ignored_in_lease: u64,
    /// Pre-vote rounds started.
    pub pre_votes_started: u64,
    /// Elections started (term bumped).
    pub elections_started: u64,
    /// Times this node became leader.
    pub became_leader: u64,
    /// Times a leader stepped down because check-quorum failed.
    pub check_quorum_step_downs: u64,
    /// Proposals accepted.
    pub entries_proposed: u64,
    /// Batches sealed by this leader.
    pub batches_sealed: u64,
    /// Append messages sent.
    pub appends_sent: u64,
    /// Append messages rejected by this follower.
    pub appends_rejected: u64,
    /// Log suffixes truncated by this follower because of a conflict.
    pub truncations: u64,
    /// Heartbeats sent.
    pub heartbeats_sent: u64,
    /// Snapshot chunks sent.
    pub snapshot_chunks_sent: u64,
    /// Snapshots installed from a leader.
    pub snapshots_installed: u64,
    /// Storage writes emitted.
    pub writes: u64,
    /// Reads confirmed.
    pub reads_ready: u64,
    /// Reads failed by a loss of leadership.
    pub reads_failed: u64,
    /// Leadership transfers aborted after an election timeout.
    pub transfers_aborted: u64,
    /// (Pre-)votes refused because this node is repairing its log.
    pub votes_refused_repairing: u64,
    /// Repairs completed (the log again durably covers what it held before the damage).
    pub repairs_completed: u64,
    /// (Pre-)votes refused because this node's log is suspect (its tail was cut after an
    /// unclean stop) and the candidate is not known to be up to date enough.
    pub votes_refused_suspect: u64,
    /// Suspicions lifted (the log again holds whatever it may have acknowledged).
    pub suspicions_lifted: u64,
    /// Leader: rejects showing that a follower's log ends below its match (it lost entries).
    pub followers_lost_entries: u64,
}

/// A snapshot of a core's state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    /// This node.
    pub id: NodeId,
    /// Its role.
    pub role: Role,
    /// Current term (possibly not yet durable).
    pub term: Term,
    /// Vote in the current term.
    pub vote: Option<NodeId>,
    /// The known leader.
    pub leader: Option<NodeId>,
    /// Commit index.
    pub commit: LogIndex,
    /// Applied index (as reported by the runtime).
    pub applied: LogIndex,
    /// Highest index of this node's log known durable.
    pub durable: LogIndex,
    /// First index held in memory (after the snapshot).
    pub first_index: LogIndex,
    /// Last index in the log (including the sealed, not yet durable, batches).
    pub last_index: LogIndex,
    /// Last write id the runtime reported durable.
    pub durable_write: WriteId,
    /// While repairing a damaged log: the index the log must durably reach again before this
    /// node votes or campaigns (see [`Restored::repair_until`](super::Restored::repair_until)).
    pub repair_until: Option<LogIndex>,
    /// Set while this node's log is suspect: its tail was cut after an unclean stop and it has
    /// not yet learned what it may have acknowledged (see
    /// [`Restored::suspect_term`](super::Restored::suspect_term)).
    pub suspect: bool,
    /// The membership in effect (the latest appended).
    pub membership: Membership,
    /// A leader's view of its peers (empty otherwise).
    pub progress: Vec<PeerStatus>,
    /// Counters.
    pub stats: Stats,
}

/// The words of [`ProposeError::TermNotCommitted`]'s message that say "retry shortly" to a
/// client that only sees the message (e.g. `lockstep member`).
pub const TERM_NOT_COMMITTED_TEXT: &str = "has not committed an entry of its term";

/// Why a proposal, read, transfer or membership change was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProposeError {
    /// Only the leader accepts this; `leader` is the one this node knows of.
    NotLeader {
        /// The known leader, if any.
        leader: Option<NodeId>,
    },
    /// A leadership transfer is in progress.
    TransferInProgress {
        /// Its target.
        target: NodeId,
    },
    /// A command is larger than [`crate::batch::ENTRY_BYTES_MAX`].
    EntryTooLarge {
        /// Its size.
        bytes: usize,
    },
    /// A membership change is appended but not yet committed.
    MembershipChangePending {
        /// Its index.
        index: LogIndex,
    },
    /// A membership change waits until this leader has committed an entry of its own term
    /// (its Noop, at the latest): a change appended before could fork the log with a change
    /// of an earlier leader that this one does not hold (see `docs/RAFT.md`). Retry shortly.
    TermNotCommitted {
        /// The leader's term.
        term: Term,
    },
    /// The change does not apply to the current membership.
    Membership(MembershipError),
    /// The learner is too far behind to be promoted safely.
    LearnerBehind {
        /// The learner.
        id: NodeId,
        /// Its durable match.
        match_index: LogIndex,
        /// The leader's last index.
        last_index: LogIndex,
    },
    /// The transfer target is not a voter other than this node.
    BadTransferTarget {
        /// The target.
        target: NodeId,
    },
}

impl fmt::Display for ProposeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProposeError::NotLeader { leader: Some(id) } => write!(f, "not the leader ({id} is)"),
            ProposeError::NotLeader { leader: None } => write!(f, "not the leader (none known)"),
            ProposeError::TransferInProgress { target } => {
                write!(f, "leadership transfer to {target} in progress")
            }
            ProposeError::EntryTooLarge { bytes } => {
                write!(f, "entry of {bytes} bytes is too large")
            }
            ProposeError::MembershipChangePending { index } => {
                write!(f, "membership change at {index} is not committed yet")
            }
            ProposeError::TermNotCommitted { term } => write!(
                f,
                "the leader {TERM_NOT_COMMITTED_TEXT} {term} yet (it does once it is heard by a \
                 quorum; retry the membership change shortly)"
            ),
            ProposeError::Membership(error) => write!(f, "membership change refused: {error}"),
            ProposeError::LearnerBehind {
                id,
                match_index,
                last_index,
            } => write!(
                f,
                "learner {id} holds {match_index} of {last_index}: not caught up"
            ),
            ProposeError::BadTransferTarget { target } => {
                write!(f, "{target} is not another voter")
            }
        }
    }
}

impl std::error::Error for ProposeError {}
