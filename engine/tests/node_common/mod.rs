//! Shared pieces of the runtime tests: a tiny key-value state machine and node helpers.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use lockstep::node::PeerConfig;
use lockstep::types::{LogIndex, NodeId};
use lockstep::{Node, NodeConfig, StateMachine};

/// Commands are `key=value`; a query is a key (answered with its value) or `#hash` (answered
/// with a hash of the whole state and the number of entries applied).
#[derive(Default)]
pub struct Kv {
    pub map: BTreeMap<Vec<u8>, Vec<u8>>,
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

    fn restore(&mut self, snapshot: &[u8]) -> Result<(), String> {
        if snapshot.len() < 8 {
            return Err(format!("{} bytes", snapshot.len()));
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

/// A free loopback port (bound and released; fine for tests on one machine).
pub fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// Members 1..=n on free loopback ports (no client ports).
pub fn members(n: u64) -> BTreeMap<NodeId, PeerConfig> {
    (1..=n)
        .map(|id| {
            (
                NodeId(id),
                PeerConfig {
                    peer_addr: free_addr(),
                    client_addr: None,
                },
            )
        })
        .collect()
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
        found = nodes
            .iter()
            .position(|node| node.as_ref().is_some_and(|n| n.status().role == "leader"));
        found.is_some()
    });
    found.unwrap()
}
