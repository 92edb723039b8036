//! Shared pieces of the runtime tests: a tiny key-value state machine, a test config, and
//! [`TestCluster`], which starts in-process nodes on free loopback ports (again on other ports
//! when a port picked free was taken meanwhile).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use lockstep::node::PeerConfig;
use lockstep::types::{LogIndex, NodeId};
use lockstep::{Node, NodeConfig, NodeError, Role, StateMachine};
use tempfile::TempDir;

use crate::ports::{free_loopback_addrs, retry_when_port_taken, StartFailure};

/// Commands are `key=value`; a query is a key (answered with its value) or `#hash` (answered
/// with a hash of the whole state and the number of entries applied).
#[derive(Default)]
pub struct Kv {
    /// The pairs set so far.
    pub map: BTreeMap<Vec<u8>, Vec<u8>>,
    /// Commands applied so far.
    pub applied: u64,
}

impl Kv {
    fn hash(&self) -> u64 {
        let mut hash = 0xcbf2_9ce4_8422_2325u64;
        for (key, value) in &self.map {
            for &byte in key.iter().chain(b"=").chain(value).chain(b";") {
                hash = (hash ^ byte as u64).wrapping_mul(0x100_0000_01b3);
            }
        }
        hash
    }
}

impl StateMachine for Kv {
    fn apply(&mut self, _index: LogIndex, command: &[u8]) -> Bytes {
        self.applied += 1;
        match command.iter().position(|&b| b == b'=') {
            Some(at) => {
                let old = self
                    .map
                    .insert(command[..at].to_vec(), command[at + 1..].to_vec());
                Bytes::from(old.unwrap_or_default())
            }
            None => Bytes::from_static(b"bad command"),
        }
    }

    fn query(&self, query: &[u8]) -> Bytes {
        if query == b"#hash" {
            return Bytes::from(format!("{:016x}/{}", self.hash(), self.map.len()));
        }
        Bytes::from(self.map.get(query).cloned().unwrap_or_default())
    }

    fn snapshot(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.applied.to_le_bytes());
        for (key, value) in &self.map {
            out.extend_from_slice(&(key.len() as u32).to_le_bytes());
            out.extend_from_slice(key);
            out.extend_from_slice(&(value.len() as u32).to_le_bytes());
            out.extend_from_slice(value);
        }
    }

    fn restore(&mut self, snapshot: &[u8]) -> Result<(), lockstep::apply::RestoreError> {
        if snapshot.len() < 8 {
            return Err(format!("{} bytes", snapshot.len()).into());
        }
        let mut map = BTreeMap::new();
        let applied = u64::from_le_bytes(snapshot[..8].try_into().unwrap());
        let mut rest = &snapshot[8..];
        let take = |rest: &mut &[u8]| -> Result<Vec<u8>, String> {
            if rest.len() < 4 {
                return Err("truncated".into());
            }
            let len = u32::from_le_bytes(rest[..4].try_into().unwrap()) as usize;
            if rest.len() < 4 + len {
                return Err("truncated".into());
            }
            let out = rest[4..4 + len].to_vec();
            *rest = &rest[4 + len..];
            Ok(out)
        };
        while !rest.is_empty() {
            let key = take(&mut rest)?;
            let value = take(&mut rest)?;
            map.insert(key, value);
        }
        self.map = map;
        self.applied = applied;
        Ok(())
    }
}

/// Members 1..=n on distinct free loopback peer ports, each with a free client port too when
/// `client_ports`. (A single member without a client port binds nothing: no network runs.)
pub fn members(n: u64, client_ports: bool) -> BTreeMap<NodeId, PeerConfig> {
    let per_member = if client_ports { 2 } else { 1 };
    let mut addrs = free_loopback_addrs(n as usize * per_member)
        .expect("free loopback ports")
        .into_iter();
    (1..=n)
        .map(|id| {
            let peer = PeerConfig {
                peer_addr: addrs.next().expect("a peer port per member"),
                client_addr: if client_ports { addrs.next() } else { None },
            };
            (NodeId(id), peer)
        })
        .collect()
}

/// Starts one node from its config (the test chooses the state machine).
type StartNode = Box<dyn Fn(NodeConfig) -> Result<Node, NodeError>>;

/// Nodes in this process on loopback ports picked free, each with its own data directory. The
/// node at position `at` has id `at + 1`.
pub struct TestCluster {
    /// The running nodes (`None` while stopped); declared first so they stop before their
    /// directories go.
    pub nodes: Vec<Option<Node>>,
    /// Every member's addresses.
    pub members: BTreeMap<NodeId, PeerConfig>,
    /// Each node's data directory.
    pub dirs: Vec<TempDir>,
    /// The config each node started with; a restart reuses it.
    pub configs: Vec<NodeConfig>,
    start_node: StartNode,
}

impl TestCluster {
    /// Starts `n` nodes with [`config`]`(id, members, dir, snapshot_entries)` adjusted by
    /// `tune`, each started by `start_node`. A port picked free can be taken (e.g. as the local
    /// port of another test's outgoing connection) before its node binds it: then the nodes
    /// started so far stop and the whole cluster starts again on fresh ports in fresh
    /// directories, up to [`START_ATTEMPTS`](crate::ports::START_ATTEMPTS) times. Any other start failure fails the test.
    pub fn start(
        n: u64,
        client_ports: bool,
        snapshot_entries: u64,
        tune: impl Fn(&mut NodeConfig),
        start_node: impl Fn(NodeConfig) -> Result<Node, NodeError> + 'static,
    ) -> TestCluster {
        let start_node: StartNode = Box::new(start_node);
        let started = retry_when_port_taken(|attempt| {
            let members = members(n, client_ports);
            let dirs: Vec<TempDir> = (0..n).map(|_| tempfile::tempdir().unwrap()).collect();
            let configs: Vec<NodeConfig> = dirs
                .iter()
                .enumerate()
                .map(|(at, dir)| {
                    let mut cfg = config(at as u64 + 1, &members, dir.path(), snapshot_entries);
                    tune(&mut cfg);
                    cfg
                })
                .collect();
            let nodes: Vec<Option<Node>> = configs
                .iter()
                .map(|cfg| start_node(cfg.clone()).map(Some))
                .collect::<Result<_, NodeError>>()
                .map_err(|error| match address_in_use(&error) {
                    true => StartFailure::PortTaken((attempt, error)),
                    false => StartFailure::Failed((attempt, error)),
                })?;
            Ok((nodes, members, dirs, configs))
        });
        match started {
            Ok((nodes, members, dirs, configs)) => TestCluster {
                nodes,
                members,
                dirs,
                configs,
                start_node,
            },
            Err(
                StartFailure::PortTaken((attempt, error)) | StartFailure::Failed((attempt, error)),
            ) => {
                panic!("cannot start the cluster (attempt {attempt}): {error}")
            }
        }
    }

    /// Starts the stopped node at `at` again, with its config and directory.
    pub fn restart(&mut self, at: usize) {
        assert!(self.nodes[at].is_none(), "node at {at} is running");
        let node = (self.start_node)(self.configs[at].clone())
            .unwrap_or_else(|error| panic!("cannot restart node at {at}: {error}"));
        self.nodes[at] = Some(node);
    }

    /// Shuts the node at `at` down cleanly.
    pub fn stop(&mut self, at: usize) {
        let node = self.nodes[at].take().expect("the node runs");
        node.shutdown().unwrap();
    }

    /// The running node at `at`.
    pub fn node(&self, at: usize) -> &Node {
        self.nodes[at].as_ref().expect("the node runs")
    }
}

/// Whether a start failed only because an address was in use (a port picked free was taken).
fn address_in_use(error: &NodeError) -> bool {
    matches!(
        error,
        NodeError::Network {
            kind: std::io::ErrorKind::AddrInUse,
            ..
        }
    )
}

/// A test config: small log segments, fast elections (10 ms ticks keep the 2-core machine calm).
pub fn config(
    id: u64,
    members: &BTreeMap<NodeId, PeerConfig>,
    data_dir: &Path,
    snapshot_entries: u64,
) -> NodeConfig {
    let mut config = NodeConfig::new(NodeId(id), 7, members.clone(), data_dir.to_path_buf());
    config.tick = Duration::from_millis(2);
    config.raft.election_ticks = 50;
    config.raft.heartbeat_ticks = 10;
    config.raft.seed = id;
    config.log.segment_bytes = 1 << 20;
    config.snapshot_entries = snapshot_entries;
    config
}

/// Waits until `check` holds, panicking with `what` after `limit`.
pub fn wait_for(what: &str, limit: Duration, mut check: impl FnMut() -> bool) {
    let start = Instant::now();
    while !check() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Waits until one of `nodes` leads; returns its position.
pub fn wait_leader(nodes: &[Option<Node>]) -> usize {
    let mut found = None;
    wait_for("a leader", Duration::from_secs(10), || {
        found = nodes.iter().position(|node| {
            node.as_ref()
                .is_some_and(|n| n.leadership().role == Role::Leader)
        });
        found.is_some()
    });
    found.unwrap()
}
