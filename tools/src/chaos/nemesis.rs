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
//! - `member`: replace a member by a new machine: remove it from the membership (through the
//!   leader, retried across leader changes), SIGKILL it and wipe its data directory, start a new
//!   node with a fresh id and fresh addresses (`serve --join`, empty data directory), add it as
//!   a learner with its addresses, wait until it caught up, and promote it. Only when every
//!   member is up, answers, is not repairing its log and the membership is committed: with one
//!   voter removed from three, both others are needed for a majority.
//! - `power`: cut the power of a random node, the leader, a random minority, or every node at
//!   once: their disks (power-cut filesystems, see `crate::powerfs`) forget what the nodes never
//!   synced (everything, a torn prefix, or a random subset of sectors and directories), the
//!   nodes are killed, and after the hold the disks are powered on and the nodes restarted. A
//!   node that cannot restart after a power cut is a finding: losing power is normal.
//!
//! Every choice comes from one [`SimRng`] seeded by the run's seed; the timing of a real
//! cluster is not deterministic, so a seed reproduces the fault schedule, not the run.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use lockstep::client::ClusterClient;
use lockstep::log::inspect::inspect;
use lockstep::log::record::RECORD_HEADER_BYTES;
use lockstep::log::segment::SEGMENT_BYTES_MIN;
use lockstep::raft::{MemberAddr, MembershipChange};
use lockstep::sim::SimRng;
use lockstep::types::NodeId;
use serde_json::Value;

use super::cluster::{Cluster, CLUSTER_ID};
use crate::powerfs::CutMode;

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
    /// Replacement of a member by a new node (remove, wipe, join, add, promote).
    Member,
    /// Power cuts: unsynced writes lost on one node, a minority, or all nodes at once.
    Power,
}

/// Bound on one replacement (removal, restart, addition, catch-up, promotion); no other fault
/// is active meanwhile, so a cluster that cannot do it in this time is a finding.
const REPLACE_TIMEOUT: Duration = Duration::from_secs(30);

/// Status queries of one node before the power check gives up on it.
const STATUS_TRIES: usize = 5;

/// Pause between two looks at the leader while a membership change goes on.
const MEMBER_POLL: Duration = Duration::from_millis(50);

impl FaultKind {
    /// Parses a comma-separated list such as `kill,pause,partition,storage,member`.
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
                "member" => FaultKind::Member,
                "power" => FaultKind::Power,
                other => {
                    return Err(format!(
                        "--nemesis: unknown fault {other:?} (kill, pause, partition, storage, \
                         member, power)"
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
            FaultKind::Member => "member",
            FaultKind::Power => "power",
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
    /// Power cuts by scope (`node`, `leader`, `minority`, `all`).
    pub power_cuts: BTreeMap<&'static str, u64>,
    /// Power cuts by what survived of the unsynced writes (`forget`, `torn`, `subset`).
    pub power_cut_modes: BTreeMap<&'static str, u64>,
    /// Node power cuts in all (a cut of every node of three counts three).
    pub nodes_power_cut: u64,
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
            power_cuts: BTreeMap::new(),
            power_cut_modes: BTreeMap::new(),
            nodes_power_cut: 0,
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
            FaultKind::Member => self.replace(cluster, leader)?,
            FaultKind::Power => self.power(cluster, leader)?,
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
        self.subset(ids, ids.len() / 2 + 1)
    }

    /// `len` of `ids` chosen at random, in id order.
    fn subset(&mut self, ids: &[u64], len: usize) -> Vec<u64> {
        let mut shuffled = ids.to_vec();
        for i in (1..shuffled.len()).rev() {
            shuffled.swap(i, self.rng.below(i as u64 + 1) as usize);
        }
        shuffled.truncate(len);
        shuffled.sort_unstable();
        shuffled
    }

    /// The `power` fault: cuts the power of a node, the leader, a minority or every node,
    /// holds, powers them on and restarts them.
    fn power(&mut self, cluster: &mut Cluster, leader: Option<u64>) -> Result<String, String> {
        let ids = cluster.ids();
        let (scope, targets) = match self.rng.below(4) {
            0 => ("node", vec![*self.rng.pick(&ids)]),
            1 => (
                "leader",
                vec![leader.unwrap_or_else(|| *self.rng.pick(&ids))],
            ),
            2 => ("minority", self.subset(&ids, (ids.len() - 1) / 2)),
            _ => ("all", ids.clone()),
        };
        let mode = *self.rng.pick(&CutMode::ALL);
        let seed = self.rng.next_u64();
        let report = cluster.power_cut(&targets, mode, seed)?;
        // The cut nodes are dead: no write is acknowledged any more until they restart.
        let acked = cluster.address_book().highest_acked();
        let hold = self.rng.between(100, 1000);
        std::thread::sleep(Duration::from_millis(hold));
        for &id in &targets {
            cluster
                .power_on(id)
                .map_err(|err| format!("restart after a power cut ({mode}): {err}"))?;
        }
        *self.power_cuts.entry(scope).or_default() += 1;
        *self.power_cut_modes.entry(mode.name()).or_default() += 1;
        self.nodes_power_cut += targets.len() as u64;
        check_acked_durable(cluster, acked, &targets, mode)?;
        Ok(format!(
            "power cut of {scope} {targets:?} (leader {leader:?}, {mode}) for {hold} ms: \
             {} unsynced bytes lost, {} kept, {} directories reverted",
            report.bytes_forgotten, report.bytes_kept, report.dirs_reverted
        ))
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

impl Nemesis {
    /// The `member` fault: replaces a member (the leader a third of the time) by a new node.
    fn replace(&mut self, cluster: &mut Cluster, leader: Option<u64>) -> Result<String, String> {
        if let Some(why) = replace_blocked(cluster) {
            return Ok(format!("skipped replacement: {why}"));
        }
        let ids = cluster.ids();
        let target = match leader {
            Some(leader) if self.rng.chance(333) => leader,
            _ => *self.rng.pick(&ids),
        };
        let role = if Some(target) == leader {
            "leader"
        } else {
            "node"
        };
        let started = Instant::now();
        let deadline = started + REPLACE_TIMEOUT;
        let removed = drive_change(
            cluster,
            deadline,
            MembershipChange::Remove(NodeId(target)),
            |members| !members.iter().any(|(id, _)| *id == target),
            |_| true,
        )
        .map_err(|err| format!("remove node {target}: {err}"))?;
        cluster.set_members(ids.iter().copied().filter(|id| *id != target).collect());
        cluster.wipe(target)?;
        let new = cluster
            .start_joining_node()
            .map_err(|err| format!("start the node replacing {target}: {err}"))?;
        let config = cluster.member_config(new).clone();
        let addr = MemberAddr {
            peer_addr: config.peer_addr,
            client_addr: Some(config.client_addr),
        };
        let added = drive_change(
            cluster,
            deadline,
            MembershipChange::AddLearner(NodeId(new), Some(addr)),
            |members| members.iter().any(|(id, _)| *id == new),
            |_| true,
        )
        .map_err(|err| format!("add node {new} (replacing {target}) as a learner: {err}"))?;
        let mut members = cluster.ids();
        members.push(new);
        cluster.set_members(members);
        let mut commit_before = None;
        let promoted = drive_change(
            cluster,
            deadline,
            MembershipChange::Promote(NodeId(new)),
            |members| members.contains(&(new, true)),
            // Propose the promotion once the leader sees the learner caught up (the leader
            // refuses it before, which would only be retried).
            |status| {
                crate::member_cmd::caught_up(status, NodeId(new), &mut commit_before) == Some(true)
            },
        )
        .map_err(|err| format!("promote node {new} (replacing {target}): {err}"))?;
        Ok(format!(
            "replace {role} {target} by node {new} (removed {removed}, added {added}, promoted \
             {promoted}) in {} ms",
            started.elapsed().as_millis()
        ))
    }
}

/// Why a member cannot be replaced now, or `None` when it can: every member must be up and
/// unpaused, answer its status and not be repairing its log, and the leader's membership must
/// be committed and be the one the harness knows, all voters. Removing one of three voters
/// leaves two, and both are needed for a majority, so nothing else may be down.
fn replace_blocked(cluster: &Cluster) -> Option<String> {
    let ids = cluster.ids();
    for &id in &ids {
        if !cluster.is_up(id) || cluster.is_paused(id) {
            return Some(format!("node {id} is down or paused"));
        }
        match cluster.status(id) {
            Err(err) => return Some(format!("node {id} does not answer: {err}")),
            Ok(status) if !status["repair_until"].is_null() => {
                return Some(format!("node {id} is still repairing its log"))
            }
            Ok(_) => {}
        }
    }
    let Some(status) = cluster.leader_status() else {
        return Some("no leader".to_string());
    };
    let Some((members, committed)) = leader_members(&status) else {
        return Some("the leader's status shows no membership".to_string());
    };
    if !committed {
        return Some("a membership change is in progress".to_string());
    }
    let expected: Vec<(u64, bool)> = ids.iter().map(|id| (*id, true)).collect();
    if members != expected {
        return Some(format!(
            "the leader's members {members:?} (id, voter) are not the voters {ids:?}"
        ));
    }
    None
}

/// The membership in a leader's status: (id, voter) in id order, and whether it is committed.
pub fn leader_members(status: &Value) -> Option<(Vec<(u64, bool)>, bool)> {
    let mut members: Vec<(u64, bool)> = status["members"]
        .as_array()?
        .iter()
        .map(|member| {
            let id = member["id"].as_u64()?;
            Some((id, member["role"].as_str()? == "voter"))
        })
        .collect::<Option<_>>()?;
    members.sort_unstable();
    Some((members, status["members_committed"].as_bool()?))
}

/// Proposes `change` at the leader until the leader shows a committed membership for which
/// `done` holds, or `deadline`. The leader may change, and a proposal whose outcome is unknown
/// may have taken effect (then it is refused as not applying, or is simply seen done): each
/// round starts from what the leader shows, not from what was sent. `ready` (given the
/// leader's status) says whether to propose in this round or wait for the next look. Returns
/// where the change went ("at iN", or "seen committed" when the answer to it was lost).
fn drive_change(
    cluster: &Cluster,
    deadline: Instant,
    change: MembershipChange,
    done: impl Fn(&[(u64, bool)]) -> bool,
    mut ready: impl FnMut(&Value) -> bool,
) -> Result<String, String> {
    let mut client = ClusterClient::new(
        cluster.client_addrs(),
        CLUSTER_ID,
        Duration::from_millis(1000),
    )
    .with_retry_for(Duration::from_secs(2));
    let mut index = None;
    let mut last = "no leader seen".to_string();
    loop {
        if Instant::now() > deadline {
            return Err(format!(
                "not done within {REPLACE_TIMEOUT:?} (last: {last})"
            ));
        }
        let status = cluster.leader_status();
        match status.as_ref().and_then(leader_members) {
            None => last = "no leader seen".to_string(),
            Some((members, false)) => {
                last = format!("a change is in progress (members {members:?})");
            }
            Some((members, true)) if done(&members) => {
                return Ok(index.map_or("seen committed".to_string(), |at| format!("at i{at}")));
            }
            Some(_) => {
                let status = status.expect("a membership comes from a status");
                if !ready(&status) {
                    last = "waiting until the leader sees the learner caught up".to_string();
                } else {
                    if let Some(leader) = status["id"].as_u64() {
                        client.switch_to(cluster.client_addr(leader));
                    }
                    match client.change_membership(change) {
                        Ok(at) => {
                            index = Some(at.get());
                            continue;
                        }
                        Err(err) => last = err.to_string(),
                    }
                }
            }
        }
        std::thread::sleep(MEMBER_POLL);
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

/// After a power cut of `targets`, every write acknowledged before it (up to log index
/// `acked`) must still be durable on a majority of the members: it was durable on a majority
/// when it was acknowledged, and what was durable survives a power cut. The error reports lost
/// acknowledged writes with each member's durable index.
fn check_acked_durable(
    cluster: &Cluster,
    acked: u64,
    targets: &[u64],
    mode: CutMode,
) -> Result<(), String> {
    let ids = cluster.ids();
    let durable: Vec<(u64, Option<u64>)> = ids
        .iter()
        .map(|&id| {
            // A node that just restarted may take a moment to answer.
            let index = (0..STATUS_TRIES).find_map(|attempt| {
                if attempt > 0 {
                    std::thread::sleep(MEMBER_POLL);
                }
                cluster
                    .status(id)
                    .ok()
                    .and_then(|status| status["durable"].as_u64())
            });
            (id, index)
        })
        .collect();
    let holding = durable
        .iter()
        .filter(|(_, index)| index.is_some_and(|index| index >= acked))
        .count();
    if holding * 2 > ids.len() {
        return Ok(());
    }
    Err(format!(
        "lost acknowledged writes: index {acked} was acknowledged to a client before the power \
         cut of {targets:?} ({mode}), but only {holding} of {} members hold it durably after \
         it, where a majority must (node, durable index): {durable:?}",
        ids.len()
    ))
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
        assert_eq!(
            FaultKind::parse_list("member,kill").unwrap(),
            vec![FaultKind::Member, FaultKind::Kill]
        );
        assert_eq!(FaultKind::Member.name(), "member");
        let err = FaultKind::parse_list("kill,flood").unwrap_err();
        assert!(err.contains("\"flood\"") && err.contains("member"), "{err}");
    }

    #[test]
    fn a_leader_status_gives_its_members_in_id_order() {
        let status: Value = serde_json::from_str(
            r#"{"role":"leader","members_committed":false,"members":[
                {"id":5,"role":"voter","peer_addr":"127.0.0.1:1","client_addr":null},
                {"id":2,"role":"voter","peer_addr":null,"client_addr":null},
                {"id":7,"role":"learner","peer_addr":null,"client_addr":null}]}"#,
        )
        .unwrap();
        assert_eq!(
            leader_members(&status),
            Some((vec![(2, true), (5, true), (7, false)], false))
        );
        assert_eq!(leader_members(&serde_json::json!({"role": "leader"})), None);
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
