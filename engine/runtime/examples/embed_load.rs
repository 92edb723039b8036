//! A quick load run through the embedding API: a 3-node cluster in one process (loopback TCP,
//! real files and syncs), `PROPOSERS` threads each keeping `WINDOW` proposals of 16-byte
//! commands in flight at the leader for `SECONDS`; then one proposal at a time for latency.
//! Prints commits per second and the median single-proposal latency. The cluster benchmark
//! proper lives in `bench/`; this is the runtime's own smoke measurement.
//!
//! Run: `cargo run --release -p lockstep --example embed_load` (env `PROPOSERS`, `WINDOW`,
//! `SECONDS` override the defaults 8, 4096, 3).

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use lockstep::node::PeerConfig;
use lockstep::types::{LogIndex, NodeId};
use lockstep::{Node, NodeConfig, StateMachine};

/// Counts and hashes the commands it applies.
#[derive(Default)]
struct Counter {
    count: u64,
    hash: u64,
}

impl StateMachine for Counter {
    fn apply(&mut self, _index: LogIndex, command: &[u8]) -> Bytes {
        self.count += 1;
        for &byte in command {
            self.hash = (self.hash ^ byte as u64).wrapping_mul(0x100_0000_01b3);
        }
        Bytes::new()
    }

    fn query(&self, _query: &[u8]) -> Bytes {
        Bytes::from(format!("{}/{:x}", self.count, self.hash))
    }

    fn snapshot(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.count.to_le_bytes());
        out.extend_from_slice(&self.hash.to_le_bytes());
    }

    fn restore(&mut self, snapshot: &[u8]) -> Result<(), lockstep::apply::RestoreError> {
        if snapshot.len() != 16 {
            return Err(format!("{} bytes, expected 16", snapshot.len()).into());
        }
        self.count = u64::from_le_bytes(snapshot[..8].try_into().expect("8 bytes"));
        self.hash = u64::from_le_bytes(snapshot[8..].try_into().expect("8 bytes"));
        Ok(())
    }
}

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(default)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proposers = env("PROPOSERS", 8) as usize;
    let window = env("WINDOW", 4096) as usize;
    let seconds = env("SECONDS", 3);
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
    let nodes: Vec<Node> = (1..=3)
        .map(|id| {
            let dir = root.path().join(format!("node-{id}"));
            let config = NodeConfig::new(NodeId(id), 1, members.clone(), dir);
            Node::start(config, Counter::default())
        })
        .collect::<Result<_, _>>()?;
    let leader = loop {
        if let Some(at) = nodes
            .iter()
            .position(|n| n.leadership().role == lockstep::Role::Leader)
        {
            break at;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let nodes = Arc::new(nodes);
    let stop = Arc::new(AtomicBool::new(false));
    let committed = Arc::new(AtomicU64::new(0));
    let begin = Instant::now();
    let threads: Vec<_> = (0..proposers)
        .map(|p| {
            let (nodes, stop, committed) = (nodes.clone(), stop.clone(), committed.clone());
            std::thread::spawn(move || {
                let node = &nodes[leader];
                let mut inflight = VecDeque::with_capacity(window);
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    while inflight.len() < window {
                        let mut command = [0u8; 16];
                        command[..8].copy_from_slice(&(p as u64).to_le_bytes());
                        command[8..].copy_from_slice(&n.to_le_bytes());
                        n += 1;
                        inflight.push_back(node.propose(Bytes::copy_from_slice(&command)));
                    }
                    let receipt: lockstep::Receipt = inflight.pop_front().expect("one");
                    receipt.wait().expect("committed");
                    committed.fetch_add(1, Ordering::Relaxed);
                }
                for receipt in inflight {
                    receipt.wait().expect("committed");
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs(seconds));
    let done = committed.load(Ordering::Relaxed);
    let elapsed = begin.elapsed();
    stop.store(true, Ordering::Relaxed);
    for thread in threads {
        thread.join().expect("proposer");
    }
    println!(
        "{proposers} proposers x {window} in flight, 16-byte commands: {:.0} commits/s over {elapsed:?}",
        done as f64 / elapsed.as_secs_f64()
    );
    let mut latencies_us = Vec::new();
    for i in 0..500u64 {
        let start = Instant::now();
        nodes[leader]
            .propose(Bytes::copy_from_slice(&i.to_le_bytes()))
            .wait()?;
        latencies_us.push(start.elapsed().as_micros() as u64);
    }
    latencies_us.sort_unstable();
    println!(
        "one proposal at a time: median {} us, p99 {} us",
        latencies_us[latencies_us.len() / 2],
        latencies_us[latencies_us.len() * 99 / 100]
    );
    let status = nodes[leader].status();
    println!(
        "leader: {} entries in {} batches ({:.0} entries/batch), {} storage writes",
        status.counters.entries_proposed,
        status.counters.batches_sealed,
        status.counters.entries_proposed as f64 / status.counters.batches_sealed.max(1) as f64,
        status.counters.storage_writes
    );
    let nodes = Arc::try_unwrap(nodes).map_err(|_| "nodes still shared")?;
    for node in nodes {
        node.shutdown()?;
    }
    Ok(())
}
