//! Embedding lockstep: three replicas of a tiny key-value store in one process, talking over
//! loopback TCP, each with its own data directory. Prints what happens: the election, a few
//! writes and reads, a failover, and the restarted node catching up.
//!
//! Run: `cargo run --release -p lockstep --example embed`

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use lockstep::node::PeerConfig;
use lockstep::types::{LogIndex, NodeId};
use lockstep::{Node, NodeConfig, StateMachine};

/// The replicated state: `set key value` commands, queries by key.
#[derive(Default)]
struct Store {
    map: BTreeMap<String, String>,
}

impl StateMachine for Store {
    fn apply(&mut self, _index: LogIndex, command: &[u8]) -> Bytes {
        let text = String::from_utf8_lossy(command);
        match text.split_once('=') {
            Some((key, value)) => {
                let old = self.map.insert(key.to_string(), value.to_string());
                Bytes::from(old.unwrap_or_default())
            }
            None => Bytes::from_static(b"error: expected key=value"),
        }
    }

    fn query(&self, query: &[u8]) -> Bytes {
        let key = String::from_utf8_lossy(query);
        Bytes::from(self.map.get(key.as_ref()).cloned().unwrap_or_default())
    }

    fn snapshot(&self, out: &mut Vec<u8>) {
        for (key, value) in &self.map {
            out.extend_from_slice(format!("{key}={value}\n").as_bytes());
        }
    }

    fn restore(&mut self, snapshot: &[u8]) -> Result<(), lockstep::apply::RestoreError> {
        let text = std::str::from_utf8(snapshot).map_err(|err| err.to_string())?;
        self.map = text
            .lines()
            .map(|line| {
                line.split_once('=')
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .ok_or_else(|| format!("bad snapshot line {line:?}"))
            })
            .collect::<Result<_, _>>()?;
        Ok(())
    }
}

fn leader_of(nodes: &[Option<Node>]) -> usize {
    let start = Instant::now();
    loop {
        for (at, node) in nodes.iter().enumerate() {
            if node
                .as_ref()
                .is_some_and(|n| n.leadership().role == lockstep::Role::Leader)
            {
                return at;
            }
        }
        assert!(start.elapsed() < Duration::from_secs(10), "no leader");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = tempfile::tempdir()?;
    // Loopback ports free now, none picked twice.
    let peer_addrs = lockstep::net::free_loopback_addrs(3)?;
    let members: BTreeMap<NodeId, PeerConfig> = (1..=3)
        .zip(peer_addrs)
        .map(|(id, peer_addr)| {
            let peer = PeerConfig {
                peer_addr,
                client_addr: None,
            };
            (NodeId(id), peer)
        })
        .collect();
    let config = |id: u64| {
        let dir = root.path().join(format!("node-{id}"));
        let mut config = NodeConfig::new(NodeId(id), 1, members.clone(), dir);
        config.snapshot_entries = 1000;
        config
    };
    let start = |id: u64| Node::start(config(id), Store::default());
    let mut nodes: Vec<Option<Node>> = vec![Some(start(1)?), Some(start(2)?), Some(start(3)?)];
    let leader = leader_of(&nodes);
    println!("node {} leads", leader + 1);

    let node = nodes[leader].as_ref().expect("running");
    for (key, value) in [("color", "blue"), ("shape", "round"), ("color", "green")] {
        let applied = node.propose(Bytes::from(format!("{key}={value}"))).wait()?;
        println!(
            "set {key}={value} committed at index {} (previous value {:?})",
            applied.index,
            String::from_utf8_lossy(&applied.result)
        );
    }
    let read = node
        .read_linearizable(Bytes::from_static(b"color"))
        .wait()?;
    println!(
        "linearizable read of color at index {}: {:?}",
        read.index,
        String::from_utf8_lossy(&read.result)
    );

    println!("stopping the leader, node {}", leader + 1);
    nodes[leader].take().expect("running").shutdown()?;
    let second = leader_of(&nodes);
    println!("node {} leads now", second + 1);
    let node = nodes[second].as_ref().expect("running");
    let receipts: Vec<_> = (0..2000)
        .map(|i| node.propose(Bytes::from(format!("key{}={i}", i % 10))))
        .collect();
    let mut last = LogIndex::ZERO;
    for receipt in receipts {
        last = receipt.wait()?.index;
    }
    println!("2000 more writes committed, up to index {last}");

    println!("restarting node {}", leader + 1);
    nodes[leader] = Some(start(leader as u64 + 1)?);
    let restarted = nodes[leader].as_ref().expect("running");
    let begin = Instant::now();
    while restarted.status().applied < last.get() {
        std::thread::sleep(Duration::from_millis(10));
    }
    let counters = restarted.status().counters;
    println!(
        "node {} caught up to {last} in {:?} (snapshots installed: {})",
        leader + 1,
        begin.elapsed(),
        counters.snapshots_installed
    );
    let value = restarted.read_local(Bytes::from_static(b"key3")).wait()?;
    println!(
        "its local read of key3: {:?}",
        String::from_utf8_lossy(&value.result)
    );
    for node in nodes.into_iter().flatten() {
        node.shutdown()?;
    }
    println!("all nodes shut down cleanly");
    Ok(())
}
