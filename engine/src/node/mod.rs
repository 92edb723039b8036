//! The runtime: wires the network, consensus, storage and apply stages into threads (one each,
//! optionally pinned to cores), connected by bounded crossbeam channels; and the embedding API,
//! [`Node`].

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;

use crate::apply::StateMachine;
use crate::log::LogOptions;
use crate::raft::MembershipChange;
use crate::types::{LogIndex, NodeId};

/// One member of the cluster as the configuration names it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PeerConfig {
    /// Where its peer (replication) port listens.
    pub peer_addr: SocketAddr,
    /// Where its client port listens (for redirects), if it has one.
    pub client_addr: Option<SocketAddr>,
}

/// Everything a node needs to start. [`NodeConfig::new`] gives defaults for the tuning knobs.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    /// This node's id (not 0); must be a key of `members`.
    pub id: NodeId,
    /// The cluster's id; peers and clients of another cluster are refused.
    pub cluster_id: u64,
    /// The initial voters (including this node) and their addresses. Used when the data
    /// directory holds no membership yet.
    pub members: BTreeMap<NodeId, PeerConfig>,
    /// Where the log, hard state and snapshots live.
    pub data_dir: PathBuf,
    /// Bind address of the peer port (defaults to this node's `peer_addr`).
    pub peer_listen: Option<SocketAddr>,
    /// Bind address of the client port (defaults to this node's `client_addr`; none = no
    /// client port).
    pub client_listen: Option<SocketAddr>,
    /// Consensus tuning (timing in ticks, batching, window); `id` is overwritten with `id`.
    pub raft: crate::raft::Config,
    /// Length of one tick.
    pub tick: Duration,
    /// Log segment settings.
    pub log: LogOptions,
    /// Take a snapshot after this many applied entries since the last one.
    pub snapshot_entries: u64,
    /// Bound of every inter-stage channel (in messages; each message is a batch).
    pub channel_capacity: usize,
    /// Pin the stages to cores (network, consensus, storage, apply in that order, round robin
    /// over the listed core ids). `None`: no pinning.
    pub cpu_affinity: Option<Vec<usize>>,
    /// Network settings not derived from the above.
    pub max_frame_bytes: u32,
}

impl NodeConfig {
    /// A config for node `id` of `cluster_id` with the given initial members and data directory,
    /// and default tuning: 1 ms ticks (elections after 100..200 ms, heartbeats every 20 ms),
    /// default log options, a snapshot every 1 Mi entries, channels of 1024 batches, no pinning,
    /// 64 MiB frames.
    pub fn new(
        id: NodeId,
        cluster_id: u64,
        members: BTreeMap<NodeId, PeerConfig>,
        data_dir: PathBuf,
    ) -> NodeConfig {
        let mut raft = crate::raft::Config::new(id);
        raft.election_ticks = 100;
        raft.heartbeat_ticks = 20;
        NodeConfig {
            id,
            cluster_id,
            members,
            data_dir,
            peer_listen: None,
            client_listen: None,
            raft,
            tick: Duration::from_millis(1),
            log: LogOptions::default(),
            snapshot_entries: 1 << 20,
            channel_capacity: 1024,
            cpu_affinity: None,
            max_frame_bytes: 64 << 20,
        }
    }
}

/// A command that committed and was applied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Applied {
    /// Its log index.
    pub index: LogIndex,
    /// The state machine's reply (or answer, for a read).
    pub result: Bytes,
}

/// Why a request did not complete.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NodeError {
    /// This node is not the leader; `leader` is the one it knows of.
    NotLeader {
        /// The known leader.
        leader: Option<NodeId>,
    },
    /// Leadership was lost after the proposal was accepted: it may or may not commit.
    OutcomeUnknown,
    /// The node is shutting down or stopped.
    Stopped,
    /// Waiting timed out (the request may still complete).
    Timeout,
    /// Refused (bad argument, membership change in progress, ...): the message says why.
    Refused(String),
    /// The node failed (a storage error is fatal); the message says why.
    Failed(String),
}

/// Completes once a proposal (or read) has an outcome.
pub struct Receipt {}

impl Receipt {
    /// Blocks until the outcome is known.
    pub fn wait(self) -> Result<Applied, NodeError> {
        todo!("runtime helper")
    }

    /// Blocks at most `timeout`.
    pub fn wait_timeout(self, timeout: Duration) -> Result<Applied, NodeError> {
        let _ = timeout;
        todo!("runtime helper")
    }
}

/// A running replica. Dropping it shuts it down.
pub struct Node {}

impl Node {
    /// Opens (or creates) the data directory, recovers, and starts the stages.
    pub fn start<S: StateMachine>(config: NodeConfig, state_machine: S) -> Result<Node, NodeError> {
        let _ = (config, state_machine);
        todo!("runtime helper")
    }

    /// Proposes a command (only the leader accepts).
    pub fn propose(&self, command: Bytes) -> Receipt {
        let _ = command;
        todo!("runtime helper")
    }

    /// Runs `query` once every write committed before this call is applied (read-index).
    pub fn read_linearizable(&self, query: Bytes) -> Receipt {
        let _ = query;
        todo!("runtime helper")
    }

    /// Role, term, leader, commit, applied, per-peer progress, stage counters.
    pub fn status(&self) -> crate::node::NodeStatus {
        todo!("runtime helper")
    }

    /// Asks the leader to hand leadership to `to`.
    pub fn transfer_leadership(&self, to: NodeId) -> Result<(), NodeError> {
        let _ = to;
        todo!("runtime helper")
    }

    /// Adds or removes a member (one at a time); completes when the change is applied.
    pub fn change_membership(&self, change: MembershipChange) -> Receipt {
        let _ = change;
        todo!("runtime helper")
    }

    /// The bound peer address.
    pub fn peer_addr(&self) -> SocketAddr {
        todo!("runtime helper")
    }

    /// The bound client address, if any.
    pub fn client_addr(&self) -> Option<SocketAddr> {
        todo!("runtime helper")
    }

    /// Stops the stages, syncs and seals the log, and joins every thread.
    pub fn shutdown(self) -> Result<(), NodeError> {
        todo!("runtime helper")
    }
}

/// A node's view of itself and its peers (serializable to JSON for tools).
#[derive(Clone, Debug, serde::Serialize)]
pub struct NodeStatus {
    /// This node.
    pub id: u64,
    /// "leader", "follower", "candidate", "pre-candidate".
    pub role: String,
    /// Current term.
    pub term: u64,
    /// Known leader.
    pub leader: Option<u64>,
    /// Commit index.
    pub commit: u64,
    /// Applied index.
    pub applied: u64,
    /// Durable (synced) last index of the local log.
    pub durable: u64,
    /// Per-peer replication progress (leader only).
    pub peers: Vec<PeerProgress>,
}

/// One follower's progress as the leader sees it.
#[derive(Clone, Debug, serde::Serialize)]
pub struct PeerProgress {
    /// The follower.
    pub id: u64,
    /// Highest index known durable on it.
    pub matched: u64,
    /// Next index to send.
    pub next: u64,
    /// "probe", "replicate" or "snapshot".
    pub state: String,
}
