//! The runtime: wires the network, consensus, storage and apply stages into threads (one each,
//! optionally pinned to cores), connected by bounded crossbeam channels; and the embedding API,
//! [`Node`].

mod apply;
mod consensus;
mod error;
mod events;
mod peers;
pub(crate) mod pipeline;
pub(crate) mod receipt;
mod spin;
pub mod start;
mod stats;
mod storage;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use bytes::Bytes;
use crossbeam_channel::{bounded, unbounded, Sender};

use crate::apply::StateMachine;
use crate::log::LogOptions;
use crate::net::{ClientLimits, ClientUsers, NetConfig, Transport};
use crate::raft::{MembershipChange, Raft};
use crate::resp::Frontend;
use crate::stage::run_stage;
use crate::types::{LogIndex, NodeId};

use self::apply::{ApplyStage, SnapshotEvery};
use self::consensus::{ConsensusStage, ReadConfirm, Request};
pub use self::error::{ConfigError, LeaderHint, NodeError, Refusal};
use self::events::Watch;
pub use self::events::{Changed, Leadership, Role, Subscription};
use self::peers::PeerBook;
use self::pipeline::{Shared, ToStorage};
use self::receipt::Completer;
pub use self::receipt::Receipt;
pub use self::spin::{Spin, SPIN_MAX};
pub use self::stats::{LatencySnapshot, QueueDepths, Rates, RuntimeStatus, SYNC_LATENCY_BOUNDS_US};
use self::storage::StorageStage;

/// One member of the cluster as the configuration names it: its peer address and client
/// address (the same type a membership carries).
pub type PeerConfig = crate::raft::MemberAddr;

/// Everything a node needs to start. [`NodeConfig::new`] gives defaults for the tuning knobs.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    /// This node's id (not 0); must be a key of `members`.
    pub id: NodeId,
    /// The cluster's id; peers and clients of another cluster are refused.
    pub cluster_id: u64,
    /// The initial voters (including this node) and their addresses: a new data directory
    /// starts its log with this membership. With `join`, the current members instead (this
    /// node included, for its own addresses), whose connections the node accepts until its
    /// log names the members. Once the log holds a membership, its members and the addresses
    /// it records take precedence (see `docs/RUNTIME.md`, "Membership").
    pub members: BTreeMap<NodeId, PeerConfig>,
    /// Start a new data directory as a node joining an existing cluster: no membership of its
    /// own, so it neither campaigns nor votes until the leader (after a
    /// [`MembershipChange::AddLearner`] naming it) has sent it the log or a snapshot. Ignored
    /// when the data directory already holds a log or a snapshot.
    pub join: bool,
    /// Where the log, hard state and snapshots live.
    pub data_dir: PathBuf,
    /// Bind address of the peer port (defaults to this node's `peer_addr`).
    pub peer_listen: Option<SocketAddr>,
    /// Bind address of the client port (defaults to this node's `client_addr`; none = no
    /// client port).
    pub client_listen: Option<SocketAddr>,
    /// Consensus tuning (timing in ticks, batching, window); `id` and `tick` are overwritten
    /// with `id` and `tick`.
    pub raft: crate::raft::Config,
    /// Length of one tick.
    pub tick: Duration,
    /// Log segment settings.
    pub log: LogOptions,
    /// Take a snapshot after this many applied entries since the last one.
    pub snapshot_entries: u64,
    /// ... or after this many bytes of applied entries since the last one, whichever comes
    /// first (default 64 MiB, one segment): bounds the in-memory log and the live log segments
    /// when entries are large.
    pub snapshot_bytes: u64,
    /// Bound of every inter-stage channel (in messages; each message is a batch).
    pub channel_capacity: usize,
    /// Pin the stages to cores (network, consensus, storage, apply in that order, round robin
    /// over the listed core ids). `None`: no pinning.
    pub cpu_affinity: Option<Vec<usize>>,
    /// Network settings not derived from the above.
    pub max_frame_bytes: u32,
    /// SO_SNDBUF / SO_RCVBUF requested for every socket (the network's default: 4 MiB).
    pub socket_buffer_bytes: usize,
    /// The RESP command set served on the client port (see [`crate::resp`]); `None`: the
    /// client port speaks only the native protocol.
    pub frontend: Option<Arc<dyn Frontend>>,
    /// The cluster's shared peer secret (see [`crate::net::NetConfig::peer_secret`]).
    pub peer_secret: Option<crate::net::PeerSecret>,
    /// Client passwords (default: none needed).
    pub client_users: Arc<ClientUsers>,
    /// Per-connection client limits (pipelined bytes, idle and slow-client timeouts).
    pub client_limits: ClientLimits,
    /// Most concurrent client connections.
    pub max_clients: usize,
    /// Largest client request (RESP command or native frame body), capped at `max_frame_bytes`.
    pub max_request_bytes: usize,
    /// TLS on the client and peer ports (default: none).
    pub tls: crate::net::TlsSettings,
    /// Spin-before-block of the network, consensus, storage and apply stages (default: none).
    pub spin: Spin,
    /// Whether the network thread may run light consensus turns itself while the consensus
    /// stage is idle (default: true; `docs/RUNTIME.md`, "Inline turns").
    pub inline_turns: bool,
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
        let net = NetConfig::new(cluster_id, id, ([127, 0, 0, 1], 0).into());
        let mut raft = crate::raft::Config::new(id);
        raft.election_ticks = 100;
        raft.heartbeat_ticks = 20;
        NodeConfig {
            id,
            cluster_id,
            members,
            join: false,
            data_dir,
            peer_listen: None,
            client_listen: None,
            raft,
            tick: Duration::from_millis(1),
            log: LogOptions::default(),
            snapshot_entries: 1 << 20,
            snapshot_bytes: 64 << 20,
            channel_capacity: 1024,
            cpu_affinity: None,
            max_frame_bytes: 64 << 20,
            socket_buffer_bytes: net.socket_buffer_bytes,
            frontend: None,
            peer_secret: None,
            client_users: Arc::new(ClientUsers::open()),
            client_limits: ClientLimits::default(),
            max_clients: net.max_clients,
            max_request_bytes: net.resp_limits.request_bytes_max,
            tls: crate::net::TlsSettings::default(),
            spin: Spin::default(),
            inline_turns: true,
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

/// The commands of one batch proposal, committed at consecutive indexes and applied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppliedBatch {
    /// The log index of the first command (command `i` is at `first + i`).
    pub first: LogIndex,
    /// The state machine's reply to each command, in order.
    pub results: Vec<Bytes>,
}

/// A running replica. Dropping it shuts it down.
pub struct Node {
    id: NodeId,
    requests: Sender<Request>,
    shared: Arc<Shared>,
    leadership: Arc<Watch>,
    threads: Vec<JoinHandle<()>>,
    transport: Option<Arc<Transport>>,
    peer_addr: SocketAddr,
    client_addr: Option<SocketAddr>,
}

impl Node {
    /// Opens (or creates) the data directory, recovers, and starts the stages.
    ///
    /// The network stage starts only when there is something to talk to (other members, or a
    /// client port); a single-member node without a client port runs without sockets.
    pub fn start<S: StateMachine>(config: NodeConfig, state_machine: S) -> Result<Node, NodeError> {
        let mut state_machine = state_machine;
        let Some(me) = config.members.get(&config.id).cloned() else {
            return Err(NodeError::Config(ConfigError::NotAMember {
                id: config.id,
                members: config.members.keys().copied().collect(),
            }));
        };
        for (field, zero) in [
            ("channel_capacity", config.channel_capacity == 0),
            ("tick", config.tick.is_zero()),
        ] {
            if zero {
                return Err(NodeError::Config(ConfigError::OutOfRange {
                    field,
                    why: "must be above zero".to_string(),
                }));
            }
        }
        let (log, restored) = start::recover(&config)?;
        if let Some((meta, data)) = &restored.snapshot {
            state_machine.restore(data).map_err(|why| {
                NodeError::StateMachine(format!(
                    "refusing to start: the state machine rejected the snapshot at {}: {why}",
                    meta.index
                ))
            })?;
        }
        let snapshot_meta = restored.snapshot.as_ref().map(|(meta, _)| meta.clone());
        let initial_membership = restored.initial_membership.clone();
        let mut raft_config = config.raft.clone();
        raft_config.id = config.id;
        raft_config.tick = config.tick;
        #[cfg(feature = "inject-bugs")]
        if let Ok(name) = std::env::var("LOCKSTEP_INJECT_BUG") {
            let bug = crate::raft::InjectedBug::from_name(&name).ok_or_else(|| {
                NodeError::Config(ConfigError::OutOfRange {
                    field: "LOCKSTEP_INJECT_BUG",
                    why: format!(
                        "{name}: no such bug (known: {})",
                        crate::raft::InjectedBug::names()
                    ),
                })
            })?;
            tracing::warn!(bug = %name, "TEST BUILD: a known bug is re-inserted into consensus");
            raft_config.inject_bug = Some(bug);
        }
        let raft = Raft::new(raft_config, restored).map_err(|error| {
            NodeError::Config(ConfigError::OutOfRange {
                field: "raft",
                why: error.to_string(),
            })
        })?;

        // Core slots: network, consensus, storage, apply (a shorter list wraps around).
        let core_for = |slot: usize| {
            config
                .cpu_affinity
                .as_ref()
                .filter(|cores| !cores.is_empty())
                .map(|cores| cores[slot % cores.len()])
        };
        let capacity = config.channel_capacity;
        let (net_sender, net_events) = bounded(capacity);
        let peer_listen = config.peer_listen.unwrap_or(me.peer_addr);
        let client_listen = config.client_listen.or(me.client_addr);
        let peers = PeerBook::new(
            config.id,
            &config.members,
            raft.membership(),
            raft.membership_epoch(),
        );
        let dial = peers.peers();
        let transport = if !dial.is_empty() || client_listen.is_some() {
            let mut net_config = NetConfig::new(config.cluster_id, config.id, peer_listen);
            net_config.peers = dial.into_iter().collect();
            net_config.client_listen = client_listen;
            net_config.max_frame_bytes = config.max_frame_bytes;
            net_config.socket_buffer_bytes = config.socket_buffer_bytes;
            net_config.frontend = config.frontend.clone();
            net_config.peer_secret = config.peer_secret.clone();
            net_config.client_users = Arc::clone(&config.client_users);
            net_config.client_limits = config.client_limits;
            net_config.max_clients = config.max_clients;
            net_config.resp_limits.request_bytes_max = config.max_request_bytes;
            net_config.tls = config.tls.clone();
            net_config.spin = config.spin.budget();
            net_config.core = core_for(0);
            let transport =
                Transport::start(net_config, net_sender).map_err(|error| NodeError::Network {
                    kind: error.kind(),
                    detail: format!("cannot start the network: {error}"),
                })?;
            Some(Arc::new(transport))
        } else {
            drop(net_sender);
            None
        };
        let net = transport.as_ref().map(|transport| transport.handle());
        let net_events = if transport.is_some() {
            net_events
        } else {
            crossbeam_channel::never()
        };
        let peer_addr = transport
            .as_ref()
            .map_or(peer_listen, |transport| transport.peer_addr());
        let client_addr = transport
            .as_ref()
            .and_then(|transport| transport.client_addr());

        let shared = Arc::new(Shared::default());
        let leadership = Watch::new(Leadership {
            role: Role::Follower,
            term: raft.term(),
            leader: None,
        });
        let (requests, request_inbox) = bounded(capacity);
        *shared.orphans.lock().expect("orphans lock") = Some(request_inbox.clone());
        let (to_storage, storage_inbox) = bounded(capacity);
        let to_storage = ToStorage::new(to_storage, log.doorbell().clone());
        let (to_apply, apply_inbox) = bounded(capacity);
        let (feedback, feedback_inbox) = unbounded();
        let snapshot_dir = start::snapshot_dir(&config.data_dir);
        let storage = StorageStage::new(
            log,
            snapshot_dir.clone(),
            net.clone(),
            feedback.clone(),
            shared.clone(),
            config.spin,
        );
        let apply = ApplyStage::new(
            state_machine,
            snapshot_meta.as_ref(),
            initial_membership,
            SnapshotEvery {
                entries: config.snapshot_entries.max(1),
                bytes: config.snapshot_bytes.max(1),
            },
            snapshot_dir,
            shared.clone(),
            net.clone(),
            feedback,
            config.spin,
        );
        let consensus = Arc::new(Mutex::new(ConsensusStage::new(
            raft,
            to_storage,
            to_apply,
            shared.clone(),
            peers,
            transport.clone(),
            leadership.clone(),
            config.spin,
        )));
        if let Some(transport) = transport.as_ref().filter(|_| config.inline_turns) {
            let turn = ConsensusStage::inline_turn(&consensus, net_events.clone());
            transport.set_inline_turn(Box::new(turn));
        }
        let id = config.id;
        let threads = vec![
            spawn("consensus", id, core_for(1), move || {
                ConsensusStage::run(consensus, request_inbox, net_events, feedback_inbox, net)
            })?,
            spawn("storage", id, core_for(2), move || {
                storage.run(storage_inbox)
            })?,
            spawn("apply", id, core_for(3), move || apply.run(apply_inbox))?,
        ];
        Ok(Node {
            id,
            requests,
            shared,
            leadership,
            threads,
            transport,
            peer_addr,
            client_addr,
        })
    }

    fn request<T>(&self, make: impl FnOnce(Completer<T>) -> Request) -> Receipt<T> {
        let (receipt, completer) = receipt::receipt(&self.shared);
        // If consensus is gone the completer is dropped with the request: the receipt then
        // reports why.
        drop(self.requests.send(make(completer)));
        self.shared.drop_orphans();
        receipt
    }

    /// Proposes a command (only the leader accepts). The receipt completes once the command
    /// is committed and applied here, with the state machine's reply.
    pub fn propose(&self, command: Bytes) -> Receipt<Applied> {
        self.request(|done| Request::Propose(command, done))
    }

    /// Proposes several commands as consecutive log entries (only the leader accepts): one
    /// request and one outcome for all of them, and one batch in the leader's log (two when
    /// the batch limits split it). All are accepted or none; an empty batch is refused.
    pub fn propose_batch(&self, commands: Vec<Bytes>) -> Receipt<AppliedBatch> {
        self.request(|done| Request::ProposeBatch(commands, done))
    }

    /// Linearizable read: runs `query` on the apply thread once every write committed before
    /// this call is applied here. Leadership is confirmed by a heartbeat round to a quorum
    /// (read index), so it holds whatever the clocks do. Leader only.
    pub fn read_linearizable(&self, query: Bytes) -> Receipt<Applied> {
        self.request(|done| Request::Read(query, ReadConfirm::Round, done))
    }

    /// Linearizable read index, for a state the caller reads itself: completes with an index
    /// once it is applied here, such that every write committed before this call is at or
    /// below it. Read your state (e.g. your own database handle) after it completes, on your
    /// own thread. Confirmed by a heartbeat round, as [`Node::read_linearizable`]. Leader only.
    pub fn read_index(&self) -> Receipt<LogIndex> {
        self.request(Request::ReadIndex)
    }

    /// Lease read: as [`Node::read_linearizable`], but served without a round trip while the
    /// leader's lease holds. Linearizable only if no member's clock runs faster than the
    /// configured drift bound allows; refused ([`Refusal::LeaseReadsOff`]) unless the node runs
    /// with [`crate::raft::ReadMode::Lease`] (every member must). Leader only.
    pub fn read_lease(&self, query: Bytes) -> Receipt<Applied> {
        self.request(|done| Request::Read(query, ReadConfirm::Lease, done))
    }

    /// Local (possibly stale) read: runs `query` against this node's applied state at once,
    /// on any role. The answer's index is the applied index it reflects; it may miss writes
    /// committed elsewhere (sequential per node, not linearizable).
    pub fn read_local(&self, query: Bytes) -> Receipt<Applied> {
        self.request(|done| Request::ReadLocal(query, done))
    }

    /// Watches this node's role, term and leader: see [`Subscription`].
    pub fn subscribe(&self) -> Subscription {
        Subscription::new(self.leadership.clone())
    }

    /// This node's role, term and known leader now.
    pub fn leadership(&self) -> Leadership {
        self.leadership.current()
    }

    /// Role, term, leader, commit, applied, per-peer progress, stage counters. A stopped node
    /// reports the role [`Role::Stopped`].
    pub fn status(&self) -> NodeStatus {
        if let Ok(status) = self.request(Request::Status).wait() {
            return status;
        }
        NodeStatus {
            id: self.id.get(),
            role: Role::Stopped,
            term: 0,
            leader: None,
            commit: 0,
            applied: self.shared.applied().get(),
            durable: 0,
            repair_until: None,
            suspect: false,
            peers: Vec::new(),
            members: Vec::new(),
            members_committed: false,
            counters: NodeCounters::default(),
            log: *self.shared.log.lock().expect("log counters lock"),
            net: None,
            runtime: RuntimeStatus {
                sync_latency: self.shared.sync_latency.snapshot(),
                ..RuntimeStatus::default()
            },
        }
    }

    /// Asks the leader to hand leadership to `to`; completes once the transfer has started
    /// (watch [`Node::subscribe`] for the new leader).
    pub fn transfer_leadership(&self, to: NodeId) -> Receipt<()> {
        self.request(|done| Request::Transfer(to, done))
    }

    /// Adds, promotes or removes a member (one at a time, on the leader); completes when the
    /// change is applied.
    ///
    /// Growing the cluster: start the new node with [`NodeConfig::join`] (its `members` the
    /// current ones plus itself), then [`MembershipChange::AddLearner`] with its address (every
    /// member connects to it as soon as the change is appended), wait until it has caught up
    /// ([`Node::status`]: its `match` near the leader's last index), then
    /// [`MembershipChange::Promote`]; a promotion of a learner that is far behind is refused.
    /// A node without a network (one member and no client port) cannot add members.
    pub fn change_membership(&self, change: MembershipChange) -> Receipt<Applied> {
        self.request(|done| Request::Membership(change, done))
    }

    /// The bound peer address (the configured one when the node runs without a network).
    pub fn peer_addr(&self) -> SocketAddr {
        self.peer_addr
    }

    /// The bound client address, if any.
    pub fn client_addr(&self) -> Option<SocketAddr> {
        self.client_addr
    }

    /// The fatal error that stopped this node on its own (a failed sync, a storage error, a
    /// snapshot that could not be written or restored), if one did. A failed node answers
    /// every request with it; its owner should shut it down and report the error.
    pub fn failure(&self) -> Option<NodeError> {
        self.shared.failure.lock().expect("failure lock").clone()
    }

    /// Stops the stages, syncs and seals the log, and joins every thread.
    pub fn shutdown(mut self) -> Result<(), NodeError> {
        self.stop()
    }

    /// Stop accepting, answer waiters, let storage make everything durable and seal the log,
    /// let apply drain, then stop the network. Idempotent.
    fn stop(&mut self) -> Result<(), NodeError> {
        if self.threads.is_empty() {
            return Ok(());
        }
        drop(self.requests.send(Request::Stop));
        for thread in self.threads.drain(..) {
            // A stage's panic ends the process (`crate::stage`), so a join cannot fail.
            thread
                .join()
                .expect("a stage that panicked has ended the process");
        }
        if let Some(transport) = self.transport.take() {
            // Every stage (the consensus one holds a reference for its status) has ended.
            match Arc::try_unwrap(transport) {
                Ok(transport) => transport.shutdown(),
                Err(_) => panic!("the transport is still shared after every stage ended"),
            }
        }
        match self.shared.gone() {
            NodeError::ShuttingDown => Ok(()),
            error => Err(error),
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Err(error) = self.stop() {
            tracing::error!(node = self.id.get(), error = ?error, "node stopped with an error");
        }
    }
}

/// Spawns the thread of stage `stage` of node `id`, pinned to `core` when given; a panic in
/// it ends the process ([`crate::stage::run_stage`]).
fn spawn(
    stage: &'static str,
    id: NodeId,
    core: Option<usize>,
    body: impl FnOnce() + Send + 'static,
) -> Result<JoinHandle<()>, NodeError> {
    let name = format!("ls-{stage}-{id}");
    std::thread::Builder::new()
        .name(name.clone())
        .spawn(move || {
            run_stage(stage, || {
                if let Some(id) = core {
                    if !core_affinity::set_for_current(core_affinity::CoreId { id }) {
                        tracing::warn!(thread = %name, core = id, "could not pin the thread");
                    }
                }
                body()
            })
        })
        .map_err(|error| NodeError::Spawn {
            kind: error.kind(),
            detail: format!("{stage} stage of {id}: {error}"),
        })
}

/// A node's view of itself and its peers (serializable to JSON for tools).
#[derive(Clone, Debug, serde::Serialize)]
pub struct NodeStatus {
    /// This node.
    pub id: u64,
    /// Its role ("leader", "follower", "candidate", "pre-candidate" or "stopped" in JSON).
    pub role: Role,
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
    /// Set while the node repairs a damaged log: it neither votes nor campaigns until
    /// `durable` reaches this index (docs/RAFT.md, "Repair").
    pub repair_until: Option<u64>,
    /// Set while the node's log tail was cut after an unclean stop and it has not yet learned
    /// from its peers what it may have acknowledged: it votes only for candidates it knows are
    /// up to date enough (docs/RAFT.md, "Suspect tail").
    pub suspect: bool,
    /// Per-peer replication progress (leader only).
    pub peers: Vec<PeerProgress>,
    /// The membership in effect (the latest appended) with the addresses this node uses.
    pub members: Vec<MemberStatus>,
    /// Whether that membership is committed (a change is in progress otherwise).
    pub members_committed: bool,
    /// What the consensus core did since start.
    pub counters: NodeCounters,
    /// What the storage stage did to the log since start.
    pub log: LogCounters,
    /// The network stage's counters (none when the node runs without a network).
    pub net: Option<crate::net::NetStats>,
    /// Leader changes, error replies, queue depths, rates and sync latency.
    pub runtime: RuntimeStatus,
}

/// One member of the membership in effect, as the status shows it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct MemberStatus {
    /// Node id.
    pub id: u64,
    /// "voter" or "learner".
    pub role: String,
    /// Its peer (replication) address, if known.
    pub peer_addr: Option<SocketAddr>,
    /// Its client address, if known.
    pub client_addr: Option<SocketAddr>,
}

/// Counters of the local log since the node started (monotonic).
#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub struct LogCounters {
    /// Entries appended.
    pub entries_appended: u64,
    /// Batch records appended (entries_appended / batches_appended = entries per batch).
    pub batches_appended: u64,
    /// Payload and header bytes appended.
    pub bytes_appended: u64,
    /// Sync rounds completed.
    pub syncs: u64,
    /// Entries made durable by those rounds (entries_synced / syncs = entries per sync).
    pub entries_synced: u64,
    /// Record bytes made durable by those rounds (bytes_synced / syncs = bytes per sync).
    pub bytes_synced: u64,
}

/// Counters of one node since it started (monotonic).
#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub struct NodeCounters {
    /// Entries proposed at this node while it led.
    pub entries_proposed: u64,
    /// Batches sealed by this node as leader.
    pub batches_sealed: u64,
    /// Storage writes handed to the storage stage.
    pub storage_writes: u64,
    /// Elections this node started.
    pub elections_started: u64,
    /// Snapshot chunks this node sent as leader.
    pub snapshot_chunks_sent: u64,
    /// Snapshots this node installed from a leader.
    pub snapshots_installed: u64,
    /// Reads confirmed.
    pub reads_ready: u64,
    /// Consensus turns taken on the consensus thread.
    pub turns: u64,
    /// Consensus turns the network thread ran itself (`docs/RUNTIME.md`, "Inline turns"):
    /// high under light load, near zero under heavy load.
    pub inline_turns: u64,
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
    /// Append messages sent to it and not yet acknowledged.
    pub inflight_messages: u32,
    /// Payload bytes sent to it and not yet acknowledged.
    pub inflight_bytes: u64,
}
