//! The nemesis: a seeded schedule of faults injected into a live cluster, one at a time, each
//! held for a while and then undone.
//!
//! - `kill`: SIGKILL a random node, the leader, or a majority; restart them after the hold.
//! - `pause`: SIGSTOP a random node, or the leader for longer than an election timeout; SIGCONT.
//! - `partition` (network namespaces + nftables): isolate the leader, split the cluster into a
//!   random majority and minority, or cut the leader's outbound packets only (one-way); heal.
//! - `storage`: SIGKILL a node, then damage its log (flip a bit in a committed record, truncate
//!   a segment, or delete the newest segment) and restart it. A node may refuse to start on a
//!   damaged log, as long as it says why: the harness then records the refusal, puts the saved
//!   copy of the log back and starts it again, so the run goes on. One damaged node at a time:
//!   while a node is still repairing its log (status `repair_until`), no other is damaged.
//!
//! Every choice comes from one [`SimRng`] seeded by the run's seed; the timing of a real
//! cluster is not deterministic, so a seed reproduces the fault schedule, not the run.

use std::path::Path;
use std::time::Duration;

use lockstep::log::inspect::inspect;
use lockstep::log::record::RECORD_HEADER_BYTES;
use lockstep::log::segment::SEGMENT_BYTES_MIN;
use lockstep::sim::SimRng;

use super::cluster::Cluster;

/// A family of faults, as named on the command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FaultKind {
    /// Process crashes (SIGKILL) and restarts.
    Kill,
    /// Process pauses (SIGSTOP / SIGCONT).
    Pause,
    /// Network partitions.
    Partition,
    /// Log damage on a stopped node.
    Storage,
}

impl FaultKind {
    /// Parses a comma-separated list such as `kill,pause,partition,storage`.
    pub fn parse_list(text: &str) -> Result<Vec<FaultKind>, String> {
        let mut kinds = Vec::new();
        for name in text
            .split(',')
            .map(str::trim)
            .filter(|name| !name.is_empty())
        {
            let kind = match name {
                "kill" => FaultKind::Kill,
                "pause" => FaultKind::Pause,
                "partition" => FaultKind::Partition,
                "storage" => FaultKind::Storage,
                other => {
                    return Err(format!(
                        "--nemesis: unknown fault {other:?} (kill, pause, partition, storage)"
                    ))
                }
            };
            if !kinds.contains(&kind) {
                kinds.push(kind);
            }
        }
        Ok(kinds)
    }

    /// The command-line name.
    pub fn name(self) -> &'static str {
        match self {
            FaultKind::Kill => "kill",
            FaultKind::Pause => "pause",
            FaultKind::Partition => "partition",
            FaultKind::Storage => "storage",
        }
    }
}

/// One fault as injected.
#[derive(Clone, Debug)]
pub struct Fault {
    /// Its family.
    pub kind: FaultKind,
    /// What exactly, e.g. "kill -9 leader 2 for 640 ms".
    pub what: String,
    /// Milliseconds since the run started when it began.
    pub at_ms: u64,
}

/// The nemesis of one run.
pub struct Nemesis {
    rng: SimRng,
    kinds: Vec<FaultKind>,
    /// Faults injected so far.
    pub faults: Vec<Fault>,
    /// Storage faults after which the node refused to start (the refusal's reason).
    pub refused_starts: Vec<String>,
}

impl Nemesis {
    /// A nemesis drawing from `kinds` with `seed`.
    pub fn new(seed: u64, kinds: Vec<FaultKind>) -> Nemesis {
        assert!(!kinds.is_empty(), "a nemesis needs at least one fault kind");
        Nemesis {
            rng: SimRng::new(seed),
            kinds,
            faults: Vec::new(),
            refused_starts: Vec::new(),
        }
    }

    /// A quiet interval to wait before the next fault.
    pub fn quiet(&mut self) -> Duration {
        Duration::from_millis(self.rng.between(300, 1500))
    }

    /// Injects one fault, holds it, undoes it. `now_ms` stamps the fault record. An `Err` is a
    /// finding that ends the run (e.g. a node that will not restart after a plain kill -9).
    pub fn inject_one(&mut self, cluster: &mut Cluster, now_ms: u64) -> Result<(), String> {
        let kind = *self.rng.pick(&self.kinds);
        let leader = cluster.leader();
        let ids = cluster.ids();
        let what = match kind {
            FaultKind::Kill => {
                let targets = match self.rng.below(3) {
                    0 => vec![*self.rng.pick(&ids)],
                    1 => vec![leader.unwrap_or_else(|| *self.rng.pick(&ids))],
                    _ => self.majority(&ids),
                };
                let hold = self.rng.between(100, 1500);
                for id in &targets {
                    cluster.kill9(*id);
                }
                std::thread::sleep(Duration::from_millis(hold));
                for id in &targets {
                    cluster
                        .start_node(*id)
                        .map_err(|err| format!("restart after kill -9: {err}"))?;
                }
                format!("kill -9 {targets:?} (leader {leader:?}) for {hold} ms")
            }
            FaultKind::Pause => {
                let (target, hold, role) = match leader {
                    Some(leader) if self.rng.chance(600) => {
                        (leader, self.rng.between(300, 2000), "leader")
                    }
                    _ => (*self.rng.pick(&ids), self.rng.between(100, 1500), "node"),
                };
                cluster.pause(target);
                std::thread::sleep(Duration::from_millis(hold));
                cluster.resume(target);
                format!("pause {role} {target} for {hold} ms")
            }
            FaultKind::Partition => self.partition(cluster, leader)?,
            FaultKind::Storage => self.storage(cluster)?,
        };
        self.faults.push(Fault {
            kind,
            what,
            at_ms: now_ms,
        });
        Ok(())
    }

    /// A random majority of `ids`.
    fn majority(&mut self, ids: &[u64]) -> Vec<u64> {
        let mut shuffled = ids.to_vec();
        for i in (1..shuffled.len()).rev() {
            shuffled.swap(i, self.rng.below(i as u64 + 1) as usize);
        }
        shuffled.truncate(ids.len() / 2 + 1);
        shuffled.sort_unstable();
        shuffled
    }

    fn partition(&mut self, cluster: &mut Cluster, leader: Option<u64>) -> Result<String, String> {
        let netns = cluster
            .netns()
            .expect("partition faults are only scheduled with network namespaces");
        let ids = cluster.ids();
        let hold = self.rng.between(300, 2000);
        let leader = leader.unwrap_or_else(|| *self.rng.pick(&ids));
        let mut cuts: Vec<(u64, u64)> = Vec::new();
        let what = match self.rng.below(3) {
            0 => {
                for other in ids.iter().copied().filter(|id| *id != leader) {
                    cuts.push((leader, other));
                    cuts.push((other, leader));
                }
                format!("isolate leader {leader}")
            }
            1 => {
                let majority = self.majority(&ids);
                let minority: Vec<u64> = ids
                    .iter()
                    .copied()
                    .filter(|id| !majority.contains(id))
                    .collect();
                for a in &majority {
                    for b in &minority {
                        cuts.push((*a, *b));
                        cuts.push((*b, *a));
                    }
                }
                format!("split {majority:?} | {minority:?}")
            }
            _ => {
                for other in ids.iter().copied().filter(|id| *id != leader) {
                    cuts.push((leader, other));
                }
                format!("one-way: leader {leader}'s packets dropped")
            }
        };
        for (from, to) in &cuts {
            netns.cut(*from, *to)?;
        }
        std::thread::sleep(Duration::from_millis(hold));
        netns.heal()?;
        Ok(format!("{what} for {hold} ms"))
    }

    fn storage(&mut self, cluster: &mut Cluster) -> Result<String, String> {
        let ids = cluster.ids();
        let target = *self.rng.pick(&ids);
        // A node still repairing its log counts as failed (it neither votes nor campaigns):
        // damaging a second one would be two faults at once, which a 3-node cluster does not
        // tolerate (it would stay without a leader until one of them is repaired).
        if let Some(repairing) = ids.iter().copied().find(|&id| {
            cluster
                .status(id)
                .ok()
                .is_some_and(|status| !status["repair_until"].is_null())
        }) {
            return Ok(format!(
                "skipped: node {repairing} is still repairing its log"
            ));
        }
        let commit = cluster
            .status(target)
            .ok()
            .and_then(|status| status["commit"].as_u64())
            .unwrap_or(0);
        cluster.kill9(target);
        let log_dir = cluster.data_dir(target).join("log");
        let backup = cluster.data_dir(target).with_extension("log-backup");
        copy_dir(&log_dir, &backup)?;
        let what = match self.damage(&log_dir, commit)? {
            Some(damage) => damage,
            None => "nothing to damage yet".to_string(),
        };
        let what = format!("node {target}: {what}");
        if let Err(refusal) = cluster.start_node(target) {
            self.refused_starts.push(format!("{what}: {refusal}"));
            std::fs::remove_dir_all(&log_dir)
                .map_err(|err| format!("remove {}: {err}", log_dir.display()))?;
            copy_dir(&backup, &log_dir)?;
            cluster
                .start_node(target)
                .map_err(|err| format!("restart with the saved log: {err}"))?;
        }
        std::fs::remove_dir_all(&backup)
            .map_err(|err| format!("remove {}: {err}", backup.display()))?;
        Ok(what)
    }

    /// Damages the stopped log in `log_dir`, whose entries up to `commit` are committed;
    /// returns what was done, or `None` when the log holds no record yet.
    fn damage(&mut self, log_dir: &Path, commit: u64) -> Result<Option<String>, String> {
        let inspection =
            inspect(log_dir).map_err(|err| format!("inspect {}: {err}", log_dir.display()))?;
        let spans: Vec<_> = inspection.recovered.spans.iter().copied().collect();
        let committed: Vec<_> = spans
            .iter()
            .copied()
            .filter(|span| span.last_index.get() <= commit)
            .collect();
        let Some(newest) = inspection.segments.last() else {
            return Ok(None);
        };
        let pool = if committed.is_empty() {
            &spans
        } else {
            &committed
        };
        if pool.is_empty() {
            return Ok(None);
        }
        let span = *self.rng.pick(pool);
        let segment = inspection
            .segments
            .iter()
            .find(|segment| segment.first_seq == span.segment)
            .expect("a span lies in a scanned segment");
        match self.rng.below(3) {
            0 => {
                let record_bytes = RECORD_HEADER_BYTES as u64 + u64::from(span.payload_bytes);
                let offset = u64::from(span.offset) + self.rng.below(record_bytes);
                let bit = self.rng.below(8) as u8;
                flip_bit(&segment.path, offset, bit)?;
                Ok(Some(format!(
                    "flipped bit {bit} at byte {offset} of {} (record of entries {}..={}, commit {commit})",
                    segment.path.display(),
                    span.first_index.get(),
                    span.last_index.get()
                )))
            }
            1 => {
                let len = u64::from(span.offset).max(SEGMENT_BYTES_MIN);
                let path = segment.path.clone();
                let file = std::fs::OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .map_err(|err| format!("open {}: {err}", path.display()))?;
                file.set_len(len)
                    .map_err(|err| format!("truncate {}: {err}", path.display()))?;
                Ok(Some(format!(
                    "truncated {} to {len} bytes (cutting entries from {}, commit {commit})",
                    path.display(),
                    span.first_index.get()
                )))
            }
            _ => {
                let path = newest.path.clone();
                drop(inspection);
                std::fs::remove_file(&path)
                    .map_err(|err| format!("delete {}: {err}", path.display()))?;
                Ok(Some(format!(
                    "deleted the newest segment {} (commit {commit})",
                    path.display()
                )))
            }
        }
    }
}

/// Flips bit `bit` of the byte at `offset` in the file at `path`.
fn flip_bit(path: &Path, offset: u64, bit: u8) -> Result<(), String> {
    use std::os::unix::fs::FileExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(|err| format!("open {}: {err}", path.display()))?;
    let mut byte = [0u8; 1];
    file.read_exact_at(&mut byte, offset)
        .map_err(|err| format!("read {} at {offset}: {err}", path.display()))?;
    byte[0] ^= 1 << bit;
    file.write_all_at(&byte, offset)
        .map_err(|err| format!("write {} at {offset}: {err}", path.display()))
}

/// Copies the files of directory `from` (not recursive: a log directory is flat) to `to`.
fn copy_dir(from: &Path, to: &Path) -> Result<(), String> {
    std::fs::create_dir_all(to).map_err(|err| format!("create {}: {err}", to.display()))?;
    let listing =
        std::fs::read_dir(from).map_err(|err| format!("list {}: {err}", from.display()))?;
    for entry in listing {
        let entry = entry.map_err(|err| format!("list {}: {err}", from.display()))?;
        if entry.file_type().is_ok_and(|kind| kind.is_file()) {
            std::fs::copy(entry.path(), to.join(entry.file_name()))
                .map_err(|err| format!("copy {}: {err}", entry.path().display()))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fault_lists_parse_and_reject_unknown_names() {
        assert_eq!(
            FaultKind::parse_list("kill, pause,kill,storage").unwrap(),
            vec![FaultKind::Kill, FaultKind::Pause, FaultKind::Storage]
        );
        let err = FaultKind::parse_list("kill,flood").unwrap_err();
        assert!(err.contains("\"flood\""), "{err}");
    }

    #[test]
    fn flip_bit_changes_exactly_one_bit() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, [0u8, 0xff, 0]).unwrap();
        flip_bit(&path, 1, 3).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), vec![0, 0xf7, 0]);
    }
}
