//! The embedding API's errors: one enum, [`NodeError`], whose variants say what an embedder can
//! do next (retry elsewhere, retry later, give up on this node, fix the configuration).

use std::fmt;
use std::io;
use std::net::SocketAddr;

use crate::apply::snapshot::SnapshotError;
use crate::log::LogError;
use crate::raft::ProposeError;
use crate::types::NodeId;

/// The leader a node knows of, with the addresses its membership records for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeaderHint {
    /// The leader's id.
    pub id: NodeId,
    /// Its peer (replication) address, if the membership records one.
    pub peer_addr: Option<SocketAddr>,
    /// Its client address, if the membership records one.
    pub client_addr: Option<SocketAddr>,
}

/// Why a request was refused before it changed anything: retrying it unchanged on the same
/// node gives the same answer (except [`ProposeError::TransferInProgress`],
/// [`ProposeError::MembershipChangePending`] and [`ProposeError::TermNotCommitted`], which
/// pass).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Refusal {
    /// The consensus core refused it (never [`ProposeError::NotLeader`]: that is
    /// [`NodeError::NotLeader`]).
    Consensus(ProposeError),
    /// A batch proposal of no commands.
    EmptyBatch,
    /// A lease read on a node that does not run with `ReadMode::Lease`.
    LeaseReadsOff,
    /// Command `at` of a batch proposal is larger than an entry may be.
    BatchCommandTooLarge {
        /// Its position in the batch.
        at: usize,
        /// Its size.
        bytes: usize,
    },
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::Consensus(error) => write!(f, "{error}"),
            Refusal::EmptyBatch => write!(f, "a batch proposal needs at least one command"),
            Refusal::LeaseReadsOff => write!(
                f,
                "lease reads need every member to run with the lease read mode"
            ),
            Refusal::BatchCommandTooLarge { at, bytes } => write!(
                f,
                "command {at} of the batch: {}",
                ProposeError::EntryTooLarge { bytes: *bytes }
            ),
        }
    }
}

/// Why a node refused to start with its configuration (nothing was written).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConfigError {
    /// `id` is not one of `members`.
    NotAMember {
        /// The node's id.
        id: NodeId,
        /// The configured members.
        members: Vec<NodeId>,
    },
    /// A setting is out of range: `field` and why.
    OutOfRange {
        /// The [`super::NodeConfig`] field.
        field: &'static str,
        /// What is wrong with it.
        why: String,
    },
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::NotAMember { id, members } => {
                write!(f, "node {id} is not one of the members {members:?}")
            }
            ConfigError::OutOfRange { field, why } => write!(f, "{field}: {why}"),
        }
    }
}

/// Why a request did not complete, or a node did not start or stopped on its own.
///
/// ```no_run
/// use bytes::Bytes;
/// use lockstep::{Node, NodeError};
///
/// fn put(node: &Node, command: Bytes) -> Result<(), String> {
///     match node.propose(command).wait() {
///         Ok(_) => Ok(()),
///         Err(NodeError::NotLeader { leader: Some(hint) }) => {
///             Err(format!("retry at {} ({:?})", hint.id, hint.client_addr))
///         }
///         Err(NodeError::Storage { kind, detail }) => Err(format!("disk: {kind:?}: {detail}")),
///         Err(other) if other.is_fatal() => Err(format!("the node is down: {other}")),
///         Err(other) => Err(format!("retry later: {other}")),
///     }
/// }
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum NodeError {
    /// This node is not the leader: send the request to `leader` (none known: retry after an
    /// election, e.g. on the next change a [`super::Subscription`] reports).
    NotLeader {
        /// The leader this node knows of.
        leader: Option<LeaderHint>,
    },
    /// Leadership was lost after the proposal was accepted: it may or may not commit.
    OutcomeUnknown,
    /// The node is shutting down or has shut down (without a failure).
    ShuttingDown,
    /// Waiting timed out (the request may still complete).
    Timeout,
    /// The request was refused; nothing changed.
    Refused(Refusal),
    /// The node refused to start with this configuration.
    Config(ConfigError),
    /// The disk failed (a sync, a write, a read of the log or of a snapshot), or what it holds
    /// is unusable (damage, a log that does not fit its snapshot). Fatal: the node stops and
    /// answers every later request with this error; restart it once the cause is fixed (it
    /// recovers from what is durable).
    Storage {
        /// The kind of the underlying I/O error ([`io::ErrorKind::InvalidData`] for damage,
        /// [`io::ErrorKind::StorageFull`] for a full disk).
        kind: io::ErrorKind,
        /// What failed, naming the file (and offset) where it applies.
        detail: String,
    },
    /// The network could not start (e.g. [`io::ErrorKind::AddrInUse`] for a port in use).
    Network {
        /// The kind of the underlying I/O error.
        kind: io::ErrorKind,
        /// What failed.
        detail: String,
    },
    /// A stage thread could not be spawned.
    Spawn {
        /// The kind of the underlying I/O error.
        kind: io::ErrorKind,
        /// What failed.
        detail: String,
    },
    /// The state machine refused a snapshot it was given to restore.
    StateMachine(String),
}

impl NodeError {
    /// A storage failure from a log error, prefixed with what the node was doing.
    pub(crate) fn from_log(context: &str, error: &LogError) -> NodeError {
        let kind = match error {
            LogError::Io { source, .. } => source.kind(),
            LogError::Poisoned { errno } => io::Error::from_raw_os_error(*errno).kind(),
            LogError::NoSpace { .. } => io::ErrorKind::StorageFull,
            LogError::Locked { .. } => io::ErrorKind::ResourceBusy,
            LogError::HardStateMissing { .. } => io::ErrorKind::NotFound,
            LogError::BadOptions(_) => io::ErrorKind::InvalidInput,
            _ => io::ErrorKind::InvalidData,
        };
        NodeError::storage(kind, context, error)
    }

    /// A storage failure from a snapshot file's error.
    pub(crate) fn from_snapshot(error: SnapshotError) -> NodeError {
        let kind = match &error {
            SnapshotError::Io { source, .. } => source.kind(),
            SnapshotError::Corrupt { .. } => io::ErrorKind::InvalidData,
        };
        NodeError::storage(kind, "", error)
    }

    /// A storage failure of `kind`: `context`, then `error`.
    pub(crate) fn storage(
        kind: io::ErrorKind,
        context: &str,
        error: impl fmt::Display,
    ) -> NodeError {
        let detail = if context.is_empty() {
            error.to_string()
        } else {
            format!("{context}: {error}")
        };
        NodeError::Storage { kind, detail }
    }

    /// Whether the node that answered this is unusable from now on (stopped or failed):
    /// every later request gets the same answer.
    pub fn is_fatal(&self) -> bool {
        matches!(
            self,
            NodeError::ShuttingDown
                | NodeError::Storage { .. }
                | NodeError::Network { .. }
                | NodeError::Spawn { .. }
                | NodeError::StateMachine(_)
                | NodeError::Config(_)
        )
    }
}

impl fmt::Display for NodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NodeError::NotLeader { leader: Some(hint) } => {
                write!(f, "not the leader ({} is", hint.id)?;
                match hint.client_addr.or(hint.peer_addr) {
                    Some(addr) => write!(f, ", at {addr})"),
                    None => write!(f, ")"),
                }
            }
            NodeError::NotLeader { leader: None } => write!(f, "not the leader (none known)"),
            NodeError::OutcomeUnknown => {
                write!(f, "leadership was lost: the outcome is unknown")
            }
            NodeError::ShuttingDown => write!(f, "the node is shutting down"),
            NodeError::Timeout => write!(f, "timed out (the request may still complete)"),
            NodeError::Refused(why) => write!(f, "refused: {why}"),
            NodeError::Config(error) => write!(f, "refusing to start: {error}"),
            NodeError::Storage { detail, .. } => write!(f, "storage failed: {detail}"),
            NodeError::Network { detail, .. } => write!(f, "network failed: {detail}"),
            NodeError::Spawn { detail, .. } => write!(f, "cannot spawn a thread: {detail}"),
            NodeError::StateMachine(detail) => write!(f, "the state machine failed: {detail}"),
        }
    }
}

impl std::error::Error for NodeError {}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::types::LogIndex;

    #[test]
    fn log_errors_keep_their_io_kind_and_name_the_file() {
        let full = NodeError::from_log(
            "appending",
            &LogError::NoSpace {
                segment_bytes: 1 << 26,
            },
        );
        assert!(matches!(
            full,
            NodeError::Storage {
                kind: io::ErrorKind::StorageFull,
                ..
            }
        ));
        let damaged = NodeError::from_log(
            "",
            &LogError::Corrupt {
                file: PathBuf::from("/data/log/00000001.seg"),
                offset: 4096,
                index: LogIndex(7),
                reason: "bad checksum".into(),
            },
        );
        match damaged {
            NodeError::Storage { kind, detail } => {
                assert_eq!(kind, io::ErrorKind::InvalidData);
                assert!(detail.contains("00000001.seg"), "{detail}");
            }
            other => panic!("{other:?}"),
        }
        let eio = LogError::Poisoned { errno: libc::EIO };
        assert!(matches!(
            NodeError::from_log("syncing", &eio),
            NodeError::Storage { kind, .. } if kind == io::Error::from_raw_os_error(libc::EIO).kind()
        ));
    }

    #[test]
    fn not_leader_names_the_leader_and_its_address() {
        let hint = LeaderHint {
            id: NodeId(2),
            peer_addr: Some("127.0.0.1:7002".parse().unwrap()),
            client_addr: Some("127.0.0.1:8002".parse().unwrap()),
        };
        let text = NodeError::NotLeader { leader: Some(hint) }.to_string();
        assert_eq!(text, "not the leader (n2 is, at 127.0.0.1:8002)");
        assert!(!NodeError::NotLeader { leader: None }.is_fatal());
        assert!(NodeError::ShuttingDown.is_fatal());
    }
}
