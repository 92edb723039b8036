//! The messages cores exchange. Every message carries the sender's term; a receiver ignores (and
//! counts) messages of an older term, and a newer term makes it a follower of that term first.

use bytes::Bytes;

use crate::batch::Batch;
use crate::types::{LogIndex, NodeId, Term};

use super::ready::SnapshotMeta;

/// A message from one core to another.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    /// Sender.
    pub from: NodeId,
    /// Receiver.
    pub to: NodeId,
    /// The sender's term (for a pre-vote request: the term the sender would campaign in).
    pub term: Term,
    /// What it says.
    pub body: MessageBody,
}

/// The kinds of message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MessageBody {
    /// "Would you vote for me in `term`?" Changes nobody's term.
    PreVote {
        /// The candidate's last log index.
        last_index: LogIndex,
        /// The candidate's last log term.
        last_term: Term,
    },
    /// Answer to a pre-vote.
    PreVoteResponse {
        /// Whether the vote would be granted.
        granted: bool,
    },
    /// A vote request for `term`.
    Vote {
        /// The candidate's last log index.
        last_index: LogIndex,
        /// The candidate's last log term.
        last_term: Term,
        /// Sent because the leader asked this node to take over: receivers that heard from a
        /// live leader grant it anyway.
        leadership_transfer: bool,
    },
    /// Answer to a vote request (a grant leaves only once the voter's hard state is durable).
    VoteResponse {
        /// Whether the vote was granted.
        granted: bool,
    },
    /// Log entries `prev_index + 1 ..` (possibly none) and the leader's commit index.
    Append {
        /// Index just before the first batch.
        prev_index: LogIndex,
        /// Term of `prev_index` in the leader's log.
        prev_term: Term,
        /// Consecutive batches (shared payloads).
        batches: Vec<Batch>,
        /// The leader's commit index.
        commit: LogIndex,
    },
    /// Answer to an Append.
    ///
    /// Success: `index` is the highest index the follower holds durably that matches the
    /// leader's log. Reject: `index` is the rejected `prev_index`, and the hint tells the leader
    /// where to retry: `hint_term` is the follower's term at `index` and `hint_index` the first
    /// index of that term in its log; or, when the follower's log is shorter, `hint_term` is 0
    /// and `hint_index` its last index.
    AppendResponse {
        /// Whether the entries matched.
        success: bool,
        /// Durable match (success) or rejected prev_index (reject).
        index: LogIndex,
        /// Reject hint: an index (see above).
        hint_index: LogIndex,
        /// Reject hint: a term (see above).
        hint_term: Term,
    },
    /// Leader liveness, commit propagation and read-index confirmation.
    Heartbeat {
        /// The leader's commit index, capped at what this follower is known to hold.
        commit: LogIndex,
        /// The leader's heartbeat round, echoed in the response.
        read_round: u64,
    },
    /// Answer to a heartbeat.
    HeartbeatResponse {
        /// The round being answered.
        read_round: u64,
    },
    /// One chunk of a snapshot.
    Snapshot {
        /// What the snapshot covers.
        meta: SnapshotMeta,
        /// Byte offset of `data` within the snapshot.
        offset: u64,
        /// The chunk.
        data: Bytes,
        /// Whether this is the last chunk.
        done: bool,
    },
    /// Answer to a snapshot chunk.
    SnapshotResponse {
        /// The snapshot's index.
        index: LogIndex,
        /// The next byte offset the follower expects (the leader resends from here).
        next_offset: u64,
        /// Whether the whole snapshot is installed durably.
        done: bool,
    },
    /// "Start an election now" (leadership transfer to a caught-up follower).
    TimeoutNow,
}

impl MessageBody {
    /// Whether this is sent by a leader to its followers.
    #[inline]
    pub fn is_from_leader(&self) -> bool {
        matches!(
            self,
            MessageBody::Append { .. }
                | MessageBody::Heartbeat { .. }
                | MessageBody::Snapshot { .. }
                | MessageBody::TimeoutNow
        )
    }
}
