//! `lockstep-bench core`: the consensus core's own ceiling, with no I/O at all.
//!
//! Three cores run in one thread. Writes are durable the moment they are handed over (the bench
//! calls `on_durable` at once and releases their `after_durable` messages), messages are
//! delivered through an in-process queue, and the state machine "applies" by reporting the commit
//! index back. A client proposes 16-byte entries to the leader as fast as it can, one full batch
//! per round; the figure is entries committed (by the leader) per second of wall time. Logs are
//! compacted behind the applied index so memory stays bounded.

use std::collections::VecDeque;
use std::fs;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use bytes::Bytes;
use lockstep::raft::{
    Config, Membership, Message, Raft, Ready, Restored, Role, SnapshotMeta, StorageWrite,
};
use lockstep::types::{LogIndex, NodeId};

/// Arguments of `lockstep-bench core`.
#[derive(clap::Args)]
pub struct Args {
    /// Seconds to measure (after a short warm-up).
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
    /// Bytes per entry.
    #[arg(long, default_value_t = 16)]
    entry_bytes: usize,
    /// Entries the client proposes per round (also the core's batch_entries_max).
    #[arg(long, default_value_t = 4096)]
    batch_entries: u32,
    /// Write the result as JSON to this file.
    #[arg(long)]
    json: Option<std::path::PathBuf>,
}

/// Nodes in the benchmarked cluster.
const NODES: u64 = 3;

/// Compact every node's log once this many entries were applied past its last snapshot.
const COMPACT_EVERY_ENTRIES: u64 = 1 << 20;

/// Core ticks are given once per this many rounds (heartbeats and check-quorum keep running).
const ROUNDS_PER_TICK: u64 = 64;

struct Node {
    raft: Raft,
    applied: LogIndex,
    snapshot_index: LogIndex,
    role: Role,
}

struct Bench {
    nodes: Vec<Node>,
    network: VecDeque<Message>,
    membership: Membership,
}

impl Bench {
    fn new(batch_entries: u32, batch_bytes: u32) -> Result<Bench, String> {
        let membership = Membership::with_voters((1..=NODES).map(NodeId));
        let mut nodes = Vec::new();
        for id in 1..=NODES {
            let mut config = Config::new(NodeId(id));
            config.batch_entries_max = batch_entries;
            config.batch_bytes_max = batch_bytes;
            config.append_bytes_max = batch_bytes.saturating_mul(4);
            config.inflight_bytes_max = u64::from(batch_bytes) * 64;
            config.seed = 1;
            let restored = Restored {
                initial_membership: membership.clone(),
                ..Restored::default()
            };
            let raft = Raft::new(config, restored).map_err(|e| format!("core config: {e}"))?;
            nodes.push(Node {
                raft,
                applied: LogIndex::ZERO,
                snapshot_index: LogIndex::ZERO,
                role: Role::Follower,
            });
        }
        Ok(Bench {
            nodes,
            network: VecDeque::new(),
            membership,
        })
    }

    fn leader(&self) -> Option<usize> {
        self.nodes.iter().position(|n| n.role == Role::Leader)
    }

    /// Performs every output until the cluster is quiet.
    fn settle(&mut self) {
        loop {
            let mut busy = false;
            for index in 0..self.nodes.len() {
                while self.nodes[index].raft.has_ready() {
                    busy = true;
                    let ready = self.nodes[index].raft.ready();
                    self.perform(index, ready);
                }
            }
            while let Some(message) = self.network.pop_front() {
                busy = true;
                let to = message.to.get() as usize - 1;
                self.nodes[to].raft.step(message);
            }
            if !busy {
                return;
            }
        }
    }

    fn perform(&mut self, index: usize, ready: Ready) {
        let node = &mut self.nodes[index];
        if let Some(soft) = ready.soft_state {
            node.role = soft.role;
        }
        self.network.extend(ready.messages);
        if let Some(StorageWrite {
            id, after_durable, ..
        }) = ready.write
        {
            // No I/O: the write is durable as soon as it is handed over.
            node.raft.on_durable(id);
            self.network.extend(after_durable);
        }
        if ready.commit_index > node.applied {
            node.applied = ready.commit_index;
            node.raft.on_applied(node.applied);
            if node.applied.get() - node.snapshot_index.get() >= COMPACT_EVERY_ENTRIES {
                let meta = SnapshotMeta {
                    index: node.applied,
                    term: node.raft.status().term,
                    membership: self.membership.clone(),
                };
                node.raft.compact(meta, Bytes::new());
                node.snapshot_index = node.applied;
            }
        }
    }

    fn tick(&mut self) {
        for node in &mut self.nodes {
            node.raft.tick();
        }
    }
}

/// Runs the benchmark.
pub fn run(args: Args) -> ExitCode {
    match measure(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("lockstep-bench core: {message}");
            ExitCode::FAILURE
        }
    }
}

fn measure(args: &Args) -> Result<(), String> {
    if args.seconds.is_nan() || args.seconds <= 0.0 || args.batch_entries == 0 {
        return Err("--seconds and --batch-entries must be positive".into());
    }
    let batch_bytes = (args.batch_entries as usize * (args.entry_bytes + 4)) as u32;
    let mut bench = Bench::new(args.batch_entries, batch_bytes)?;
    // Elect a leader.
    for _ in 0..1000 {
        if bench.leader().is_some() {
            break;
        }
        bench.tick();
        bench.settle();
    }
    let leader = bench.leader().ok_or("no leader after 1000 ticks")?;
    let entry = vec![0xABu8; args.entry_bytes];
    let mut round = 0u64;
    let mut run_for = |bench: &mut Bench, duration: Duration| -> Result<(u64, Duration), String> {
        let start_commit = bench.nodes[leader].applied;
        let start = Instant::now();
        loop {
            for _ in 0..16 {
                for _ in 0..args.batch_entries {
                    bench.nodes[leader]
                        .raft
                        .propose(&entry)
                        .map_err(|e| format!("leader refused a proposal: {e}"))?;
                }
                bench.settle();
                round += 1;
                if round % ROUNDS_PER_TICK == 0 {
                    bench.tick();
                    bench.settle();
                }
            }
            let elapsed = start.elapsed();
            if elapsed >= duration {
                let committed = bench.nodes[leader].applied.get() - start_commit.get();
                return Ok((committed, elapsed));
            }
        }
    };
    run_for(&mut bench, Duration::from_millis(500))?;
    let (committed, elapsed) = run_for(&mut bench, Duration::from_secs_f64(args.seconds))?;
    if bench.leader() != Some(leader) {
        return Err("leadership changed during the run".into());
    }
    let entries_per_sec = committed as f64 / elapsed.as_secs_f64();
    println!(
        "lockstep-bench core: {NODES} cores in one thread, no I/O, {}-byte entries, {} per batch",
        args.entry_bytes, args.batch_entries
    );
    println!(
        "  committed {committed} entries in {:.3} s: {:.2} M entries/s ({:.0} MB/s of entry bytes)",
        elapsed.as_secs_f64(),
        entries_per_sec / 1e6,
        entries_per_sec * args.entry_bytes as f64 / 1e6
    );
    if let Some(path) = &args.json {
        let json = serde_json::json!({
            "entries_per_sec": entries_per_sec,
            "entries": committed,
            "seconds": elapsed.as_secs_f64(),
            "config": {
                "nodes": NODES,
                "entry_bytes": args.entry_bytes,
                "batch_entries": args.batch_entries,
                "io": "none (writes durable at once, in-process messages, one thread)",
            },
        });
        let text = serde_json::to_string_pretty(&json).expect("json of plain values");
        fs::write(path, text + "\n").map_err(|e| format!("writing {}: {e}", path.display()))?;
    }
    Ok(())
}
