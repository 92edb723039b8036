//! The lockstep server: a [`crate::node::Node`] running one of the example state machines, with
//! its configuration (TOML file and flags), run until SIGINT/SIGTERM. Shared by `lockstep serve`
//! and by `lockstep-bench`, which re-executes itself as a node.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use crate::apps::AppKind;

/// One cluster member in a server configuration.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MemberConfig {
    /// The member's node id (not 0).
    pub id: u64,
    /// Its peer (replication) address.
    pub peer_addr: SocketAddr,
    /// Its client address.
    pub client_addr: SocketAddr,
}

/// Tuning knobs; every one has a default.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Tuning {
    /// Length of one consensus tick, milliseconds.
    pub tick_ms: u64,
    /// Election timeout base, in ticks.
    pub election_ticks: u32,
    /// Heartbeat interval, in ticks.
    pub heartbeat_ticks: u32,
    /// Most entries per batch.
    pub batch_entries_max: u32,
    /// Most payload bytes per batch.
    pub batch_bytes_max: u32,
    /// Most payload bytes per append message.
    pub append_bytes_max: u32,
    /// Per-follower window: most append messages in flight.
    pub inflight_messages_max: u32,
    /// Per-follower window: most bytes in flight.
    pub inflight_bytes_max: u64,
    /// Snapshot after this many applied entries.
    pub snapshot_entries: u64,
    /// Log segment size in bytes.
    pub segment_bytes: u64,
    /// "io_uring" or "fdatasync".
    pub sync: String,
    /// Core ids to pin stages to; empty = no pinning.
    pub cpu_affinity: Vec<usize>,
    /// Bound of each inter-stage channel, in batches.
    pub channel_capacity: usize,
    /// Largest frame, in bytes.
    pub max_frame_bytes: u32,
}

impl Default for Tuning {
    /// The defaults of [`crate::node::NodeConfig::new`] and [`crate::log::LogOptions`].
    fn default() -> Tuning {
        Tuning {
            tick_ms: 1,
            election_ticks: 100,
            heartbeat_ticks: 20,
            batch_entries_max: 4096,
            batch_bytes_max: 256 << 10,
            append_bytes_max: 1 << 20,
            inflight_messages_max: 64,
            inflight_bytes_max: 16 << 20,
            snapshot_entries: 1 << 20,
            segment_bytes: 64 << 20,
            sync: "io_uring".to_string(),
            cpu_affinity: Vec::new(),
            channel_capacity: 1024,
            max_frame_bytes: 64 << 20,
        }
    }
}

/// A server's whole configuration (the TOML file's shape; `docs/CONFIG.md` documents it).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// This node's id; must be one of `members`.
    pub id: u64,
    /// The cluster id.
    pub cluster_id: u64,
    /// Data directory.
    pub data_dir: PathBuf,
    /// Which state machine to run.
    pub app: AppKind,
    /// The initial voters (this node included).
    pub members: Vec<MemberConfig>,
    /// Tuning.
    #[serde(default)]
    pub tuning: Tuning,
}

/// Why the server could not start or stopped with an error.
#[derive(Debug)]
pub struct ServerError(pub String);

impl ServerConfig {
    /// Reads and validates a TOML file; errors name the file, the option and the problem.
    pub fn load(path: &Path) -> Result<ServerConfig, ServerError> {
        let _ = path;
        todo!("server helper")
    }
}

/// Starts the node and serves until SIGINT or SIGTERM, then shuts down cleanly.
pub fn run(config: ServerConfig) -> Result<(), ServerError> {
    let _ = config;
    todo!("server helper")
}
