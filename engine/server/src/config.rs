//! A server's configuration: the TOML file's shape ([`ServerConfig`]), loading, validation
//! that names the option at fault, and the mapping onto the runtime's
//! [`crate::node::NodeConfig`]. Every option is documented in `docs/CONFIG.md`.
//!
//! Guarantee: a [`ServerConfig`] that passed [`ServerConfig::validate`] maps onto a `NodeConfig`
//! whose consensus settings pass [`crate::raft::Config::validate`].

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub use super::error::ServerError;
use super::security::{Limits, Security};
use crate::apps::AppKind;
use crate::log::{AppendMode, LogOptions, SyncMode, MAX_SYNCS_IN_FLIGHT};
use crate::net::NetConfig;
use crate::node::{NodeConfig, PeerConfig};
use crate::raft::ReadMode;
use crate::types::NodeId;

/// The smallest allowed `max_frame_bytes`: room for handshakes, heartbeats and replies.
pub const MAX_FRAME_BYTES_MIN: u32 = 64 << 10;

/// The cluster id the tools (`lockstep cluster`, `status`, `member`, `lockstep-bench`) present
/// when none is given; the examples in the documentation use it too.
pub const DEFAULT_CLUSTER_ID: u64 = 7;

/// Log segments are a whole number of these.
const SEGMENT_ALIGN_BYTES: u64 = 4096;

/// One cluster member in a server configuration.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemberConfig {
    /// The member's node id (not 0).
    pub id: u64,
    /// Its peer (replication) address.
    pub peer_addr: SocketAddr,
    /// Its client address.
    pub client_addr: SocketAddr,
}

impl MemberConfig {
    /// Parses the flag form `ID=PEER_ADDR/CLIENT_ADDR`, e.g.
    /// `1=127.0.0.1:7001/127.0.0.1:6380`.
    pub fn parse(text: &str) -> Result<MemberConfig, MemberParseError> {
        let error = |problem| MemberParseError {
            text: text.to_owned(),
            problem,
        };
        let (id, addrs) = text
            .split_once('=')
            .ok_or_else(|| error(MemberProblem::Shape))?;
        let (peer, client) = addrs
            .split_once('/')
            .ok_or_else(|| error(MemberProblem::Shape))?;
        let id = id.trim().parse::<u64>().map_err(|source| {
            error(MemberProblem::Id {
                id: id.to_owned(),
                source,
            })
        })?;
        let addr = |addr: &str, role| {
            addr.trim().parse::<SocketAddr>().map_err(|source| {
                error(MemberProblem::Addr {
                    role,
                    addr: addr.to_owned(),
                    source,
                })
            })
        };
        let peer_addr = addr(peer, "peer")?;
        let client_addr = addr(client, "client")?;
        Ok(MemberConfig {
            id,
            peer_addr,
            client_addr,
        })
    }
}

/// A member in the flag form that cannot be parsed: the text, and what is wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberParseError {
    /// The text given.
    pub text: String,
    /// What is wrong with it.
    pub problem: MemberProblem,
}

/// What is wrong with a member in the flag form.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MemberProblem {
    /// Not `ID=PEER_ADDR/CLIENT_ADDR`.
    Shape,
    /// The node id is not a number.
    Id {
        /// The id given.
        id: String,
        /// Why it is not one.
        source: std::num::ParseIntError,
    },
    /// An address is not `IP:PORT`.
    Addr {
        /// Which address: `peer` or `client`.
        role: &'static str,
        /// The address given.
        addr: String,
        /// Why it is not one.
        source: std::net::AddrParseError,
    },
}

impl fmt::Display for MemberParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = &self.text;
        match &self.problem {
            MemberProblem::Shape => write!(
                f,
                "{text:?}: expected ID=PEER_ADDR/CLIENT_ADDR, e.g. 1=127.0.0.1:7001/127.0.0.1:6380"
            ),
            MemberProblem::Id { id, source } => write!(f, "{text:?}: node id {id:?}: {source}"),
            MemberProblem::Addr { role, addr, source } => {
                write!(f, "{text:?}: {role} address {addr:?}: {source}")
            }
        }
    }
}

impl std::error::Error for MemberParseError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.problem {
            MemberProblem::Shape => None,
            MemberProblem::Id { source, .. } => Some(source),
            MemberProblem::Addr { source, .. } => Some(source),
        }
    }
}

impl fmt::Display for MemberConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}={}/{}", self.id, self.peer_addr, self.client_addr)
    }
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
    /// ... or after this many bytes of applied entries, whichever comes first.
    pub snapshot_bytes: u64,
    /// Log segment size in bytes.
    pub segment_bytes: u64,
    /// "io_uring", "fdatasync", or "none" (no syncs at all: NOT durable, for benchmarks only).
    pub sync: String,
    /// "mmap" (copy into the mapped segment) or "pwrite" (vectored writes into the file).
    pub append_mode: String,
    /// Core ids to pin stages to; empty = no pinning.
    pub cpu_affinity: Vec<usize>,
    /// Bound of each inter-stage channel, in batches.
    pub channel_capacity: usize,
    /// Largest frame, in bytes.
    pub max_frame_bytes: u32,
    /// Sync rounds the log keeps in flight at once (1..=64).
    pub syncs_in_flight: usize,
    /// Sync on the storage thread itself when it has nothing else to do and no round runs
    /// (pwrite append mode only). See docs/TUNING.md.
    pub sync_inline: bool,
    /// Let the network thread run light consensus turns itself while the consensus stage is
    /// idle. See docs/TUNING.md.
    pub inline_turns: bool,
    /// SO_SNDBUF / SO_RCVBUF requested for every peer and client socket, bytes.
    pub socket_buffer_bytes: usize,
    /// How the leader confirms linearizable reads: "index" (a heartbeat round to a quorum per
    /// batch of reads) or "lease" (no round while a quorum answered within the election
    /// timeout less a clock-drift margin of a tenth of it; relies on bounded clock drift).
    pub read_mode: String,
    /// Spin-before-block: how long an idle stage polls its inputs before it blocks,
    /// microseconds (0, the default: never spins; at most 10000). See docs/TUNING.md.
    pub spin_us: u64,
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
            snapshot_bytes: 64 << 20,
            segment_bytes: 64 << 20,
            sync: "io_uring".to_string(),
            append_mode: "pwrite".to_string(),
            cpu_affinity: Vec::new(),
            channel_capacity: 1024,
            max_frame_bytes: 64 << 20,
            syncs_in_flight: LogOptions::default().syncs_in_flight,
            sync_inline: LogOptions::default().sync_inline_when_idle,
            inline_turns: true,
            socket_buffer_bytes: NetConfig::new(0, NodeId(1), ([127, 0, 0, 1], 0).into())
                .socket_buffer_bytes,
            read_mode: "index".to_string(),
            spin_us: 0,
        }
    }
}

impl Tuning {
    /// The sync mode `sync` names.
    pub fn sync_mode(&self) -> Result<SyncMode, ServerError> {
        match self.sync.as_str() {
            "io_uring" => Ok(SyncMode::IoUring),
            "fdatasync" => Ok(SyncMode::Fdatasync),
            "none" => Ok(SyncMode::None),
            other => Err(ServerError::option(
                "tuning.sync",
                format!(
                    "{other:?} is not a sync mode (expected \"io_uring\", \"fdatasync\" or \
                     \"none\")"
                ),
            )),
        }
    }

    /// The read mode `read_mode` names; a lease allows a tenth of the election timeout (at
    /// least one tick) of clock drift.
    pub fn read_mode(&self) -> Result<ReadMode, ServerError> {
        match self.read_mode.as_str() {
            "index" => Ok(ReadMode::ReadIndex),
            "lease" => Ok(ReadMode::Lease {
                clock_drift_ticks: (self.election_ticks / 10).max(1),
            }),
            other => Err(ServerError::option(
                "tuning.read_mode",
                format!("{other:?} is not a read mode (expected \"index\" or \"lease\")"),
            )),
        }
    }

    /// The append mode `append_mode` names.
    pub fn append_mode(&self) -> Result<AppendMode, ServerError> {
        match self.append_mode.as_str() {
            "mmap" => Ok(AppendMode::Mmap),
            "pwrite" => Ok(AppendMode::Pwrite),
            other => Err(ServerError::option(
                "tuning.append_mode",
                format!("{other:?} is not an append mode (expected \"mmap\" or \"pwrite\")"),
            )),
        }
    }

    fn validate(&self) -> Result<(), ServerError> {
        let nonzero: [(&str, u64); 14] = [
            ("tick_ms", self.tick_ms),
            ("election_ticks", self.election_ticks as u64),
            ("heartbeat_ticks", self.heartbeat_ticks as u64),
            ("batch_entries_max", self.batch_entries_max as u64),
            ("batch_bytes_max", self.batch_bytes_max as u64),
            ("append_bytes_max", self.append_bytes_max as u64),
            ("inflight_messages_max", self.inflight_messages_max as u64),
            ("inflight_bytes_max", self.inflight_bytes_max),
            ("snapshot_entries", self.snapshot_entries),
            ("snapshot_bytes", self.snapshot_bytes),
            ("segment_bytes", self.segment_bytes),
            ("channel_capacity", self.channel_capacity as u64),
            ("syncs_in_flight", self.syncs_in_flight as u64),
            ("socket_buffer_bytes", self.socket_buffer_bytes as u64),
        ];
        if let Some((name, _)) = nonzero.iter().find(|(_, value)| *value == 0) {
            return Err(ServerError::option(
                &format!("tuning.{name}"),
                "must be at least 1".to_string(),
            ));
        }
        if self.election_ticks < 2 {
            return Err(ServerError::option(
                "tuning.election_ticks",
                format!("{} is below 2", self.election_ticks),
            ));
        }
        if self.heartbeat_ticks >= self.election_ticks {
            return Err(ServerError::option(
                "tuning.heartbeat_ticks",
                format!(
                    "{} must be below election_ticks ({})",
                    self.heartbeat_ticks, self.election_ticks
                ),
            ));
        }
        if self.segment_bytes % SEGMENT_ALIGN_BYTES != 0 {
            return Err(ServerError::option(
                "tuning.segment_bytes",
                format!(
                    "{} is not a multiple of {SEGMENT_ALIGN_BYTES}",
                    self.segment_bytes
                ),
            ));
        }
        if self.max_frame_bytes < MAX_FRAME_BYTES_MIN {
            return Err(ServerError::option(
                "tuning.max_frame_bytes",
                format!(
                    "{} is below the minimum {MAX_FRAME_BYTES_MIN}",
                    self.max_frame_bytes
                ),
            ));
        }
        if self.append_bytes_max >= self.max_frame_bytes {
            return Err(ServerError::option(
                "tuning.append_bytes_max",
                format!(
                    "{} must be below max_frame_bytes ({}) so an append message fits a frame",
                    self.append_bytes_max, self.max_frame_bytes
                ),
            ));
        }
        if Duration::from_micros(self.spin_us) > crate::node::SPIN_MAX {
            return Err(ServerError::option(
                "tuning.spin_us",
                format!(
                    "{} is above the limit of {} µs",
                    self.spin_us,
                    crate::node::SPIN_MAX.as_micros()
                ),
            ));
        }
        if self.syncs_in_flight > MAX_SYNCS_IN_FLIGHT {
            return Err(ServerError::option(
                "tuning.syncs_in_flight",
                format!(
                    "{} is above the log's limit of {MAX_SYNCS_IN_FLIGHT}",
                    self.syncs_in_flight
                ),
            ));
        }
        let mut seen_cores = HashSet::new();
        if let Some(core) = self
            .cpu_affinity
            .iter()
            .find(|core| !seen_cores.insert(**core))
        {
            return Err(ServerError::option(
                "tuning.cpu_affinity",
                format!("core {core} is listed twice"),
            ));
        }
        self.sync_mode()?;
        self.append_mode()?;
        self.read_mode()?;
        Ok(())
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
    /// Where to serve Prometheus metrics (`GET /metrics`); none (the default): no endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics_addr: Option<SocketAddr>,
    /// Log filter (`info`, `debug`, `lockstep=debug,warn`, ...); none: `LOCKSTEP_LOG`, else
    /// `info`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_level: Option<String>,
    /// Log format, `text` or `json`; none: `LOCKSTEP_LOG_FORMAT`, else `text`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_format: Option<String>,
    /// The initial voters (this node included); with `join`, the current members and this node.
    pub members: Vec<MemberConfig>,
    /// Start a new data directory as a node joining an existing cluster (see
    /// `NodeConfig::join`); ignored once the data directory holds a log.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub join: bool,
    /// Tuning.
    #[serde(default)]
    pub tuning: Tuning,
    /// Peer and client authentication, TLS.
    #[serde(default)]
    pub security: Security,
    /// Limits on what one client may cost the node.
    #[serde(default)]
    pub limits: Limits,
}

/// A configuration as a file or flags give it: every option may be missing, for another
/// source to fill in (flags over a file: see `lockstep serve`). [`ConfigLayer::complete`] makes
/// it a [`ServerConfig`], naming every missing required option at once.
#[derive(Clone, Debug, Default, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigLayer {
    /// This node's id.
    pub id: Option<u64>,
    /// The cluster id.
    pub cluster_id: Option<u64>,
    /// Data directory.
    pub data_dir: Option<PathBuf>,
    /// Which state machine to run.
    pub app: Option<AppKind>,
    /// See [`ServerConfig::metrics_addr`].
    pub metrics_addr: Option<SocketAddr>,
    /// See [`ServerConfig::log_level`].
    pub log_level: Option<String>,
    /// See [`ServerConfig::log_format`].
    pub log_format: Option<String>,
    /// The members; empty: none given.
    #[serde(default)]
    pub members: Vec<MemberConfig>,
    /// See [`ServerConfig::join`].
    #[serde(default)]
    pub join: bool,
    /// Tuning (defaults for every knob not given).
    #[serde(default)]
    pub tuning: Tuning,
    /// Peer and client authentication, TLS.
    #[serde(default)]
    pub security: Security,
    /// Limits on what one client may cost the node.
    #[serde(default)]
    pub limits: Limits,
}

impl ConfigLayer {
    /// Reads and parses a TOML file; errors name the file.
    pub fn parse_file(path: &Path) -> Result<ConfigLayer, ServerError> {
        let text = std::fs::read_to_string(path).map_err(|source| ServerError::Read {
            path: path.to_owned(),
            source,
        })?;
        ConfigLayer::parse_toml(&text).map_err(|e| e.in_source(&path.display().to_string()))
    }

    /// Parses TOML text.
    pub fn parse_toml(text: &str) -> Result<ConfigLayer, ServerError> {
        toml::from_str(text).map_err(ServerError::Toml)
    }

    /// The whole configuration (not yet validated); the error names every required option
    /// that is missing, with its flag.
    pub fn complete(self) -> Result<ServerConfig, ServerError> {
        let missing: Vec<&'static str> = [
            ("id", self.id.is_none()),
            ("cluster_id", self.cluster_id.is_none()),
            ("data_dir", self.data_dir.is_none()),
            ("app", self.app.is_none()),
            ("members", self.members.is_empty()),
        ]
        .iter()
        .filter(|(_, missing)| *missing)
        .map(|(field, _)| *field)
        .collect();
        match (self.id, self.cluster_id, self.data_dir, self.app) {
            (Some(id), Some(cluster_id), Some(data_dir), Some(app)) if missing.is_empty() => {
                Ok(ServerConfig {
                    id,
                    cluster_id,
                    data_dir,
                    app,
                    metrics_addr: self.metrics_addr,
                    log_level: self.log_level,
                    log_format: self.log_format,
                    members: self.members,
                    join: self.join,
                    tuning: self.tuning,
                    security: self.security,
                    limits: self.limits,
                })
            }
            _ => Err(ServerError::Missing(missing)),
        }
    }
}

/// How log lines are written to stderr.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    /// One human-readable line per event.
    Text,
    /// One JSON object per line (timestamp, level, target, fields, message).
    Json,
}

impl LogFormat {
    /// The format `name` names (`text` or `json`).
    pub fn from_name(name: &str) -> Result<LogFormat, UnknownLogFormat> {
        match name {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            other => Err(UnknownLogFormat(other.to_owned())),
        }
    }
}

/// A name that is not a [`LogFormat`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnknownLogFormat(pub String);

impl fmt::Display for UnknownLogFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:?} is not a log format (expected \"text\" or \"json\")",
            self.0
        )
    }
}

impl std::error::Error for UnknownLogFormat {}

impl ServerConfig {
    /// Reads and validates a TOML file; errors name the file, the option and the problem.
    pub fn load(path: &Path) -> Result<ServerConfig, ServerError> {
        let config = ServerConfig::parse_file(path)?;
        config
            .validate()
            .map_err(|e| e.in_source(&path.display().to_string()))?;
        Ok(config)
    }

    /// Reads and parses a TOML file without validating it; the error names the file.
    pub fn parse_file(path: &Path) -> Result<ServerConfig, ServerError> {
        ConfigLayer::parse_file(path)?
            .complete()
            .map_err(|e| e.in_source(&path.display().to_string()))
    }

    /// Parses TOML text without validating it; a missing required option is an error naming
    /// each one missing.
    pub fn parse_toml(text: &str) -> Result<ServerConfig, ServerError> {
        ConfigLayer::parse_toml(text)?.complete()
    }

    /// The configuration as TOML text (what [`ServerConfig::parse_toml`] reads back).
    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("a ServerConfig always serializes to TOML")
    }

    /// Checks every option; the error names the first one at fault and why.
    pub fn validate(&self) -> Result<(), ServerError> {
        if self.id == 0 {
            return Err(ServerError::option(
                "id",
                "0 is reserved for \"no node\"".to_string(),
            ));
        }
        if self.data_dir.as_os_str().is_empty() {
            return Err(ServerError::option("data_dir", "is empty".to_string()));
        }
        if self.members.is_empty() {
            return Err(ServerError::option(
                "members",
                "no member is listed".to_string(),
            ));
        }
        let mut ids = HashSet::new();
        let mut addrs: BTreeMap<SocketAddr, String> = BTreeMap::new();
        for member in &self.members {
            if member.id == 0 {
                return Err(ServerError::option(
                    "members",
                    "node id 0 is reserved for \"no node\"".to_string(),
                ));
            }
            if !ids.insert(member.id) {
                return Err(ServerError::option(
                    "members",
                    format!("node id {} is listed twice", member.id),
                ));
            }
            for (addr, role) in [
                (member.peer_addr, "peer_addr"),
                (member.client_addr, "client_addr"),
            ] {
                let owner = format!("the {role} of node {}", member.id);
                if let Some(previous) = addrs.insert(addr, owner.clone()) {
                    return Err(ServerError::option(
                        "members",
                        format!("{addr} is both {previous} and {owner}"),
                    ));
                }
            }
        }
        if !ids.contains(&self.id) {
            let mut listed: Vec<u64> = ids.into_iter().collect();
            listed.sort_unstable();
            return Err(ServerError::option(
                "id",
                format!("{} is not among the members {listed:?}", self.id),
            ));
        }
        self.validate_observability()?;
        if let Some(tls) = &self.security.tls {
            tls.validate()?;
        }
        self.tuning.validate()?;
        self.limits.validate()?;
        self.security.client_users()?;
        let raft = self.raft_config()?;
        raft.validate()
            .map_err(|e| ServerError::option("tuning", e.to_string()))?;
        Ok(())
    }

    /// Checks `metrics_addr`, `log_level` and `log_format` (the filter's syntax is checked
    /// where the logger is set up).
    fn validate_observability(&self) -> Result<(), ServerError> {
        if let (Some(addr), Some(own)) = (self.metrics_addr, self.own_member()) {
            if addr == own.peer_addr || addr == own.client_addr {
                return Err(ServerError::option(
                    "metrics_addr",
                    format!("{addr} is also this node's peer or client address"),
                ));
            }
        }
        if self
            .log_level
            .as_deref()
            .is_some_and(|level| level.trim().is_empty())
        {
            return Err(ServerError::option("log_level", "is empty".to_string()));
        }
        self.log_format()?;
        Ok(())
    }

    /// The configured log format, if one is configured.
    pub fn log_format(&self) -> Result<Option<LogFormat>, ServerError> {
        self.log_format
            .as_deref()
            .map(LogFormat::from_name)
            .transpose()
            .map_err(|err| ServerError::option_caused("log_format", err.to_string(), err))
    }

    /// This node's own member entry.
    pub fn own_member(&self) -> Option<&MemberConfig> {
        self.members.iter().find(|member| member.id == self.id)
    }

    fn raft_config(&self) -> Result<crate::raft::Config, ServerError> {
        let tuning = &self.tuning;
        let mut raft = crate::raft::Config::new(NodeId(self.id));
        raft.election_ticks = tuning.election_ticks;
        raft.heartbeat_ticks = tuning.heartbeat_ticks;
        raft.batch_entries_max = tuning.batch_entries_max;
        raft.batch_bytes_max = tuning.batch_bytes_max;
        raft.append_bytes_max = tuning.append_bytes_max;
        raft.inflight_messages_max = tuning.inflight_messages_max;
        raft.inflight_bytes_max = tuning.inflight_bytes_max;
        raft.read_mode = tuning.read_mode()?;
        raft.seed = self.cluster_id ^ self.id.rotate_left(32);
        Ok(raft)
    }

    /// Validates and maps onto the runtime's configuration.
    pub fn node_config(&self) -> Result<NodeConfig, ServerError> {
        self.validate()?;
        let tuning = &self.tuning;
        let members = self
            .members
            .iter()
            .map(|member| {
                let peer = PeerConfig {
                    peer_addr: member.peer_addr,
                    client_addr: Some(member.client_addr),
                };
                (NodeId(member.id), peer)
            })
            .collect();
        let mut node = NodeConfig::new(
            NodeId(self.id),
            self.cluster_id,
            members,
            self.data_dir.clone(),
        );
        node.join = self.join;
        node.raft = self.raft_config()?;
        node.tick = Duration::from_millis(tuning.tick_ms);
        node.log = LogOptions {
            segment_bytes: tuning.segment_bytes,
            sync_mode: tuning.sync_mode()?,
            append_mode: tuning.append_mode()?,
            syncs_in_flight: tuning.syncs_in_flight,
            sync_inline_when_idle: tuning.sync_inline,
            ..LogOptions::default()
        };
        node.snapshot_entries = tuning.snapshot_entries;
        node.snapshot_bytes = tuning.snapshot_bytes;
        node.channel_capacity = tuning.channel_capacity;
        node.cpu_affinity = if tuning.cpu_affinity.is_empty() {
            None
        } else {
            Some(tuning.cpu_affinity.clone())
        };
        node.max_frame_bytes = tuning.max_frame_bytes;
        node.socket_buffer_bytes = tuning.socket_buffer_bytes;
        node.peer_secret = self.security.peer_secret()?;
        node.client_users = Arc::new(self.security.client_users()?);
        node.client_limits = self.limits.client_limits();
        node.max_clients = self.limits.max_clients;
        node.max_request_bytes = self.limits.max_request_bytes;
        if let (Some(tls), Some(own)) = (&self.security.tls, self.own_member()) {
            node.tls = tls.load(own.peer_addr.ip())?;
        }
        node.spin = crate::node::Spin::new(Duration::from_micros(tuning.spin_us));
        node.inline_turns = tuning.inline_turns;
        Ok(node)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
id = 2
cluster_id = 7
data_dir = "/tmp/lockstep-2"
app = "kv"

[[members]]
id = 1
peer_addr = "127.0.0.1:7001"
client_addr = "127.0.0.1:6380"

[[members]]
id = 2
peer_addr = "127.0.0.1:7002"
client_addr = "127.0.0.1:6381"

[tuning]
sync = "fdatasync"
snapshot_entries = 1000
"#;

    fn error_of(text: &str) -> String {
        match ServerConfig::parse_toml(text).and_then(|config| config.validate()) {
            Ok(()) => panic!("accepted:\n{text}"),
            Err(err) => err.to_string(),
        }
    }

    #[test]
    fn a_good_file_loads_and_maps_onto_the_node_config() {
        let config = ServerConfig::parse_toml(GOOD).unwrap();
        config.validate().unwrap();
        assert_eq!(config.tuning.snapshot_entries, 1000);
        assert_eq!(config.tuning.tick_ms, Tuning::default().tick_ms);
        let node = config.node_config().unwrap();
        assert_eq!(node.id, NodeId(2));
        assert_eq!(node.cluster_id, 7);
        assert_eq!(node.members.len(), 2);
        assert_eq!(node.log.sync_mode, SyncMode::Fdatasync);
        assert_eq!(node.snapshot_entries, 1000);
        assert_eq!(node.raft.election_ticks, 100);
        assert_eq!(node.cpu_affinity, None);
        assert_eq!(
            node.log.syncs_in_flight,
            LogOptions::default().syncs_in_flight
        );
        assert_eq!(node.socket_buffer_bytes, 4 << 20);
        assert_eq!(
            node.spin,
            crate::node::Spin::default(),
            "spinning is off by default"
        );
        assert_eq!(config.metrics_addr, None);
        assert_eq!(config.log_format().unwrap(), None);
        assert_eq!(
            ServerConfig::parse_toml(&config.to_toml()).unwrap(),
            config.clone()
        );
        let observed = ServerConfig {
            metrics_addr: Some("127.0.0.1:9100".parse().unwrap()),
            log_level: Some("lockstep=debug,info".to_string()),
            log_format: Some("json".to_string()),
            ..config
        };
        observed.validate().unwrap();
        assert_eq!(observed.log_format().unwrap(), Some(LogFormat::Json));
        assert_eq!(
            ServerConfig::parse_toml(&observed.to_toml()).unwrap(),
            observed
        );
    }

    #[test]
    fn errors_name_the_option() {
        let cases: [(&str, &str, &str); 19] = [
            ("app = \"kv\"", "app = \"kv\"\nbogus = 1", "bogus"),
            (
                "sync = \"fdatasync\"",
                "sync = \"fdatasync\"\nfrobnicate = 1",
                "frobnicate",
            ),
            ("\"127.0.0.1:7001\"", "\"127.0.0.1:70001\"", "peer_addr"),
            (
                "id = 2\ncluster",
                "id = 5\ncluster",
                "`id` (flag --id): 5 is not among the members [1, 2]",
            ),
            ("id = 1\npeer", "id = 2\npeer", "node id 2 is listed twice"),
            (
                "\"127.0.0.1:6381\"",
                "\"127.0.0.1:6380\"",
                "127.0.0.1:6380 is both",
            ),
            ("\"fdatasync\"", "\"sometimes\"", "`tuning.sync`"),
            (
                "snapshot_entries = 1000",
                "snapshot_entries = 0",
                "`tuning.snapshot_entries`",
            ),
            ("app = \"kv\"", "app = \"sql\"", "app"),
            (
                "sync = \"fdatasync\"",
                "heartbeat_ticks = 100",
                "`tuning.heartbeat_ticks`",
            ),
            (
                "sync = \"fdatasync\"",
                "segment_bytes = 5000",
                "`tuning.segment_bytes`",
            ),
            (
                "sync = \"fdatasync\"",
                "cpu_affinity = [0, 0]",
                "`tuning.cpu_affinity`",
            ),
            (
                "app = \"kv\"",
                "app = \"kv\"\nmetrics_addr = \"127.0.0.1:6381\"",
                "option `metrics_addr` (flag --metrics-addr): 127.0.0.1:6381 is also",
            ),
            (
                "app = \"kv\"",
                "app = \"kv\"\nmetrics_addr = \"localhost\"",
                "metrics_addr",
            ),
            (
                "sync = \"fdatasync\"",
                "sync = \"fdatasync\"\nread_mode = \"stale\"",
                "option `tuning.read_mode` (flag --read-mode): \"stale\" is not a read mode",
            ),
            (
                "sync = \"fdatasync\"",
                "syncs_in_flight = 65",
                "option `tuning.syncs_in_flight` (flag --syncs-in-flight): 65 is above",
            ),
            (
                "sync = \"fdatasync\"",
                "spin_us = 10001",
                "option `tuning.spin_us` (flag --spin-us): 10001 is above the limit of 10000",
            ),
            (
                "app = \"kv\"",
                "app = \"kv\"\nlog_format = \"xml\"",
                "option `log_format` (flag --log-format): \"xml\" is not a log format",
            ),
            (
                "app = \"kv\"",
                "app = \"kv\"\nlog_level = \" \"",
                "option `log_level` (flag --log-level): is empty",
            ),
        ];
        for (from, to, expected) in cases {
            assert!(GOOD.contains(from), "{from}");
            let message = error_of(&GOOD.replacen(from, to, 1));
            assert!(message.contains(expected), "{to:?}: {message}");
        }
        let message = error_of(&GOOD.replacen("app = \"kv\"\n", "", 1));
        assert!(message.contains("missing field `app`"), "{message}");
    }

    #[test]
    fn lease_reads_map_onto_the_core() {
        let text = GOOD.replacen(
            "sync = \"fdatasync\"",
            "sync = \"fdatasync\"\nread_mode = \"lease\"",
            1,
        );
        let config = ServerConfig::parse_toml(&text).unwrap();
        let node = config.node_config().unwrap();
        assert_eq!(
            node.raft.read_mode,
            ReadMode::Lease {
                clock_drift_ticks: (config.tuning.election_ticks / 10).max(1)
            }
        );
        let default = ServerConfig::parse_toml(GOOD).unwrap();
        assert_eq!(
            default.node_config().unwrap().raft.read_mode,
            ReadMode::ReadIndex
        );
    }

    #[test]
    fn load_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.toml");
        let err = ServerConfig::load(&path).unwrap_err();
        assert!(
            matches!(&err, ServerError::Read { path: at, source }
                if *at == path && source.kind() == std::io::ErrorKind::NotFound),
            "{err:?}"
        );
        let err = err.to_string();
        assert!(
            err.contains("node.toml") && err.contains("cannot read"),
            "{err}"
        );
        std::fs::write(&path, GOOD.replacen("cluster_id = 7", "cluster_id = -7", 1)).unwrap();
        let err = ServerConfig::load(&path).unwrap_err().to_string();
        assert!(
            err.contains("node.toml") && err.contains("cluster_id"),
            "{err}"
        );
        std::fs::write(&path, GOOD.replacen("id = 2\n", "id = 9\n", 1)).unwrap();
        let err = ServerConfig::load(&path).unwrap_err().to_string();
        assert!(
            err.starts_with(&format!("{}: option `id`", path.display())),
            "{err}"
        );
        std::fs::write(&path, GOOD).unwrap();
        assert_eq!(ServerConfig::load(&path).unwrap().id, 2);
    }

    #[test]
    fn member_flags_parse() {
        let member = MemberConfig::parse("3=127.0.0.1:7003/127.0.0.1:6382").unwrap();
        assert_eq!(member.id, 3);
        assert_eq!(member.to_string(), "3=127.0.0.1:7003/127.0.0.1:6382");
        for bad in [
            "3",
            "3=127.0.0.1:7003",
            "x=127.0.0.1:1/127.0.0.1:2",
            "3=a/b",
        ] {
            assert!(MemberConfig::parse(bad).is_err(), "{bad}");
        }
        let err = MemberConfig::parse("3=127.0.0.1:7003/nowhere").unwrap_err();
        assert!(
            matches!(err.problem, MemberProblem::Addr { role: "client", .. }),
            "{err:?}"
        );
        assert_eq!(
            err.to_string(),
            "\"3=127.0.0.1:7003/nowhere\": client address \"nowhere\": invalid socket address \
             syntax"
        );
    }
}
