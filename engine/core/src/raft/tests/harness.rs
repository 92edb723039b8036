//! A small in-memory cluster of cores for scripted scenario tests: a FIFO network with cut
//! links and an optional rewrite hook (drop or alter messages), per-node disks whose writes become durable immediately
//! (`auto_sync`) or on command, crashes that lose unsynced writes, and a checker run after every
//! stabilization (election safety, state machine safety, each core's invariants).

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use bytes::Bytes;

use crate::batch::{Batch, BatchBuilder, BatchKind};
use crate::raft::{
    Config, HardState, Membership, Message, Raft, ReadId, ReadReady, Restored, Role, SnapshotMeta,
    StorageWrite,
};
use crate::types::{LogIndex, NodeId, Term};

/// What survived on one node's disk.
#[derive(Clone, Debug, Default)]
pub(crate) struct Disk {
    pub(crate) hard_state: HardState,
    pub(crate) snapshot: Option<(SnapshotMeta, Bytes)>,
    pub(crate) batches: Vec<Batch>,
}

impl Disk {
    fn apply(&mut self, write: &StorageWrite) {
        if let Some(hard_state) = write.hard_state {
            assert!(
                hard_state.term >= self.hard_state.term,
                "term went back on disk: {:?} -> {:?}",
                self.hard_state,
                hard_state
            );
            self.hard_state = hard_state;
        }
        if let Some((meta, data)) = write.snapshot.as_deref() {
            let index = meta.index;
            self.batches.retain(|batch| batch.last_index() > index);
            if let Some(first) = self.batches.first_mut() {
                if first.first_index() <= index {
                    *first = first.suffix_from(index.next());
                }
            }
            self.snapshot = Some((meta.clone(), data.clone()));
        }
        if let Some(from) = write.truncate_from {
            self.batches.retain(|batch| batch.first_index() < from);
            if let Some(last) = self.batches.last_mut() {
                if last.last_index() >= from {
                    *last = last.prefix_to(from.prev());
                }
            }
        }
        for batch in &write.batches {
            let expected = self.last_index().next();
            assert_eq!(
                batch.first_index(),
                expected,
                "disk append gap: {:?}",
                batch
            );
            self.batches.push(batch.clone());
        }
    }

    fn last_index(&self) -> LogIndex {
        self.batches.last().map_or(
            self.snapshot
                .as_ref()
                .map_or(LogIndex::ZERO, |(meta, _)| meta.index),
            Batch::last_index,
        )
    }
}

/// One simulated node.
pub(crate) struct Node {
    pub(crate) raft: Raft,
    pub(crate) config: Config,
    pub(crate) initial: Membership,
    pub(crate) disk: Disk,
    pub(crate) unsynced: Vec<StorageWrite>,
    pub(crate) auto_sync: bool,
    pub(crate) alive: bool,
    pub(crate) applied: BTreeMap<u64, (BatchKind, Vec<u8>)>,
    pub(crate) applied_index: LogIndex,
    pub(crate) applied_membership: Membership,
    pub(crate) reads: Vec<ReadReady>,
    pub(crate) reads_failed: Vec<ReadId>,
}

/// The cluster.
pub(crate) struct Cluster {
    pub(crate) nodes: BTreeMap<NodeId, Node>,
    pub(crate) network: VecDeque<Message>,
    pub(crate) cut: BTreeSet<(NodeId, NodeId)>,
    pub(crate) rewrite: Option<Box<dyn FnMut(Message) -> Option<Message>>>,
    leaders: BTreeMap<Term, NodeId>,
    committed: BTreeMap<u64, (BatchKind, Vec<u8>)>,
}

/// Test defaults: 10-tick elections, 2-tick heartbeats, seed 7 (mixed with the id), the
/// invariant check after every input (release builds included).
pub(crate) fn test_config(id: u64) -> Config {
    let mut config = Config::new(NodeId(id));
    config.seed = 7;
    config.check_invariants = true;
    config
}

/// Batches for a log given by its terms, one batch per run of equal terms.
/// Example: terms [1, 1, 2] give batches 1..=2 (term 1) and 3..=3 (term 2).
pub(crate) fn log_of_terms(terms: &[u64]) -> Vec<Batch> {
    let mut batches = Vec::new();
    let mut start = 0usize;
    while start < terms.len() {
        let mut end = start;
        while end + 1 < terms.len() && terms[end + 1] == terms[start] {
            end += 1;
        }
        let mut builder = BatchBuilder::default();
        for (offset, term) in terms[start..=end].iter().enumerate() {
            builder.push(format!("t{term}i{}", start + offset + 1).as_bytes());
        }
        batches.push(builder.finish(
            Term(terms[start]),
            LogIndex(start as u64 + 1),
            BatchKind::Normal,
        ));
        start = end + 1;
    }
    batches
}

/// The voters `ids`.
pub(crate) fn voters(ids: &[u64]) -> Membership {
    Membership::with_voters(ids.iter().map(|&id| NodeId(id)))
}

impl Cluster {
    /// Voters `ids`, empty logs, `tweak` applied to every config.
    pub(crate) fn new(ids: &[u64], tweak: impl Fn(&mut Config)) -> Cluster {
        let restored = ids
            .iter()
            .map(|&id| {
                (
                    id,
                    Restored {
                        initial_membership: voters(ids),
                        ..Restored::default()
                    },
                )
            })
            .collect();
        Cluster::with_restored(restored, tweak)
    }

    /// Nodes started from the given restored states.
    pub(crate) fn with_restored(
        nodes: Vec<(u64, Restored)>,
        tweak: impl Fn(&mut Config),
    ) -> Cluster {
        let mut cluster = Cluster {
            nodes: BTreeMap::new(),
            network: VecDeque::new(),
            cut: BTreeSet::new(),
            rewrite: None,
            leaders: BTreeMap::new(),
            committed: BTreeMap::new(),
        };
        for (id, restored) in nodes {
            let mut config = test_config(id);
            tweak(&mut config);
            cluster.add_node(config, restored);
        }
        cluster
    }

    /// Starts a node.
    pub(crate) fn add_node(&mut self, config: Config, restored: Restored) {
        let id = config.id;
        let disk = Disk {
            hard_state: restored.hard_state,
            snapshot: restored.snapshot.clone(),
            batches: restored.batches.clone(),
        };
        let initial = restored.initial_membership.clone();
        let applied_membership = restored
            .snapshot
            .as_ref()
            .map_or(initial.clone(), |(meta, _)| meta.membership.clone());
        let applied_index = restored
            .snapshot
            .as_ref()
            .map_or(LogIndex::ZERO, |(meta, _)| meta.index);
        let raft = Raft::new(config.clone(), restored).expect("valid config");
        self.nodes.insert(
            id,
            Node {
                raft,
                config,
                initial,
                disk,
                unsynced: Vec::new(),
                auto_sync: true,
                alive: true,
                applied: BTreeMap::new(),
                applied_index,
                applied_membership,
                reads: Vec::new(),
                reads_failed: Vec::new(),
            },
        );
    }

    pub(crate) fn node(&self, id: u64) -> &Node {
        &self.nodes[&NodeId(id)]
    }

    pub(crate) fn node_mut(&mut self, id: u64) -> &mut Node {
        self.nodes.get_mut(&NodeId(id)).expect("node exists")
    }

    pub(crate) fn raft(&mut self, id: u64) -> &mut Raft {
        &mut self.node_mut(id).raft
    }

    /// Takes one node's Ready and acts on it.
    fn process(&mut self, id: NodeId) {
        let node = self.nodes.get_mut(&id).expect("node");
        let ready = node.raft.ready();
        if let Some(soft) = ready.soft_state {
            if soft.role == Role::Leader {
                let previous = self.leaders.insert(soft.term, id);
                assert!(
                    previous.is_none_or(|p| p == id),
                    "election safety: {previous:?} and {id} both led {}",
                    soft.term
                );
            }
        }
        self.network.extend(ready.messages);
        if let Some(write) = ready.write {
            if let Some((meta, _)) = write.snapshot.as_deref() {
                node.applied_index = meta.index;
                node.applied_membership = meta.membership.clone();
            }
            node.unsynced.push(write);
        }
        for batch in &ready.committed {
            assert_eq!(
                batch.first_index(),
                node.applied_index.next(),
                "{id}: committed batches out of order"
            );
            for (offset, entry) in batch.entries().enumerate() {
                let index = batch.first_index().get() + offset as u64;
                let value = (batch.kind(), entry.to_vec());
                if let Some(existing) = self.committed.get(&index) {
                    assert_eq!(
                        existing, &value,
                        "state machine safety: {id} applies another entry at {index}"
                    );
                } else {
                    self.committed.insert(index, value.clone());
                }
                node.applied.insert(index, value);
            }
            if batch.kind() == BatchKind::Membership {
                let entry = batch.entries().next().expect("one entry");
                node.applied_membership = Membership::decode(entry).expect("membership");
            }
            node.applied_index = batch.last_index();
        }
        if !ready.committed.is_empty() {
            let applied = node.applied_index;
            node.raft.on_applied(applied);
        }
        node.reads.extend(ready.reads);
        node.reads_failed.extend(ready.reads_failed);
    }

    /// Makes every unsynced write of `id` durable and releases their messages.
    pub(crate) fn sync(&mut self, id: u64) {
        let node = self.node_mut(id);
        let writes = std::mem::take(&mut node.unsynced);
        let Some(last) = writes.last().map(|w| w.id) else {
            return;
        };
        let mut released = Vec::new();
        for write in writes {
            node.disk.apply(&write);
            released.extend(write.after_durable);
        }
        node.raft.on_durable(last);
        self.network.extend(released);
    }

    /// Runs the cluster until nothing moves: Readies processed, auto-synced disks synced,
    /// every message delivered (or dropped).
    pub(crate) fn stabilize(&mut self) {
        for _ in 0..100_000 {
            let mut moved = false;
            let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
            for &id in &ids {
                if self.nodes[&id].alive && self.nodes[&id].raft.has_ready() {
                    self.process(id);
                    moved = true;
                }
            }
            for &id in &ids {
                let node = &self.nodes[&id];
                if node.alive && node.auto_sync && !node.unsynced.is_empty() {
                    self.sync(id.get());
                    moved = true;
                }
            }
            while let Some(message) = self.network.pop_front() {
                moved = true;
                self.deliver(message);
            }
            if !moved {
                self.check();
                return;
            }
        }
        panic!("cluster did not stabilize");
    }

    fn deliver(&mut self, message: Message) {
        if self.cut.contains(&(message.from, message.to)) {
            return;
        }
        let message = match &mut self.rewrite {
            Some(rewrite) => match rewrite(message) {
                Some(message) => message,
                None => return,
            },
            None => message,
        };
        if let Some(node) = self.nodes.get_mut(&message.to) {
            if node.alive {
                node.raft.step(message);
            }
        }
    }

    /// Ticks every live node once, then stabilizes.
    pub(crate) fn tick_all(&mut self) {
        for node in self.nodes.values_mut() {
            if node.alive {
                node.raft.tick();
            }
        }
        self.stabilize();
    }

    /// Ticks every live node `n` times (stabilizing after each).
    pub(crate) fn ticks(&mut self, n: u32) {
        for _ in 0..n {
            self.tick_all();
        }
    }

    /// Ticks only `id` until it leads (other nodes are not ticked, so they do not compete).
    pub(crate) fn elect(&mut self, id: u64) {
        for _ in 0..100 {
            self.raft(id).tick();
            self.stabilize();
            if self.node(id).raft.status().role == Role::Leader {
                return;
            }
        }
        panic!(
            "{id} did not become leader: {:?}",
            self.node(id).raft.status()
        );
    }

    /// The live leader of the highest term, if any.
    pub(crate) fn leader(&self) -> Option<u64> {
        self.nodes
            .values()
            .filter(|node| node.alive)
            .map(|node| node.raft.status())
            .filter(|status| status.role == Role::Leader)
            .max_by_key(|status| status.term)
            .map(|status| status.id.get())
    }

    /// Proposes `count` 16-byte entries on `id`.
    pub(crate) fn propose(&mut self, id: u64, count: u32) -> LogIndex {
        let mut last = LogIndex::ZERO;
        for i in 0..count {
            let mut entry = [0u8; 16];
            entry[..4].copy_from_slice(&i.to_le_bytes());
            entry[4..12].copy_from_slice(&id.to_le_bytes());
            last = self.raft(id).propose(&entry).expect("leader accepts");
        }
        last
    }

    /// Cuts every link to and from `id`.
    pub(crate) fn isolate(&mut self, id: u64) {
        let others: Vec<NodeId> = self.nodes.keys().copied().collect();
        for other in others {
            self.cut.insert((NodeId(id), other));
            self.cut.insert((other, NodeId(id)));
        }
    }

    /// Cuts every link between a node of `side` and a node of `other`.
    pub(crate) fn partition(&mut self, side: &[u64], other: &[u64]) {
        for &a in side {
            for &b in other {
                self.cut.insert((NodeId(a), NodeId(b)));
                self.cut.insert((NodeId(b), NodeId(a)));
            }
        }
    }

    /// Ticks only the nodes `ids`, once each, then stabilizes.
    pub(crate) fn tick_only(&mut self, ids: &[u64]) {
        for &id in ids {
            self.raft(id).tick();
        }
        self.stabilize();
    }

    /// Restores every link.
    pub(crate) fn heal(&mut self) {
        self.cut.clear();
    }

    /// Crashes `id`: unsynced writes are lost.
    pub(crate) fn crash(&mut self, id: u64) {
        let node = self.node_mut(id);
        node.alive = false;
        node.unsynced.clear();
    }

    /// Restarts `id` from its disk.
    pub(crate) fn restart(&mut self, id: u64) {
        self.restart_damaged(id, None, RepairGate::Off);
    }

    /// Restarts `id` from its disk after damage from index `lost_from` on was cut off (as
    /// `Log::open_for_repair` does). `gate` says what the core is told: nothing (the bug the
    /// gate prevents), the highest index the log held, or (a lost segment: the extent is
    /// unknown) only the index it still holds and its term.
    pub(crate) fn restart_damaged(&mut self, id: u64, lost_from: Option<u64>, gate: RepairGate) {
        let mut node = self.nodes.remove(&NodeId(id)).expect("node");
        let held = node
            .disk
            .batches
            .last()
            .map_or(LogIndex::ZERO, Batch::last_index);
        if let Some(from) = lost_from {
            let from = LogIndex(from);
            node.disk.batches.retain(|batch| batch.first_index() < from);
            if let Some(last) = node.disk.batches.last_mut() {
                if last.last_index() >= from {
                    *last = last.prefix_to(from.prev());
                }
            }
        }
        let restored = Restored {
            hard_state: node.disk.hard_state,
            snapshot: node.disk.snapshot.clone(),
            batches: node.disk.batches.clone(),
            initial_membership: node.initial.clone(),
            repair_until: match gate {
                RepairGate::Off | RepairGate::Suspect => None,
                RepairGate::Until => Some(held),
                RepairGate::AboveTerm => Some(
                    node.disk
                        .batches
                        .last()
                        .map_or(LogIndex::ZERO, Batch::last_index),
                ),
            },
            repair_above_term: (gate == RepairGate::AboveTerm).then_some(node.disk.hard_state.term),
            suspect_term: (gate == RepairGate::Suspect).then_some(node.disk.hard_state.term),
        };
        self.add_node(node.config, restored);
    }

    /// Compacts `id` at its applied index with `data` as the snapshot.
    pub(crate) fn compact(&mut self, id: u64, data: Bytes) {
        let node = self.node_mut(id);
        let index = node.applied_index;
        let meta = SnapshotMeta {
            index,
            term: node.raft.term_at(index).expect("applied index held"),
            membership: node.applied_membership.clone(),
        };
        node.raft.compact(meta, data);
    }

    /// The terms of `id`'s in-memory log, per index from its first index.
    pub(crate) fn terms(&self, id: u64) -> Vec<(u64, u64)> {
        let mut terms = Vec::new();
        for batch in self.node(id).raft.log_batches() {
            for offset in 0..batch.entry_count() as u64 {
                terms.push((batch.first_index().get() + offset, batch.term().get()));
            }
        }
        terms
    }

    fn check(&self) {
        for node in self.nodes.values() {
            if node.alive {
                node.raft.invariants();
            }
        }
    }
}

/// What a node restarted with a damaged log is told (see `Cluster::restart_damaged`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RepairGate {
    /// Nothing: the bug the repair gate prevents.
    Off,
    /// The highest index the log held.
    Until,
    /// Only that the log may have held more, and the term it had reached.
    AboveTerm,
    /// A torn tail cut after an unclean stop (no repair): the log is suspect up to the term
    /// the node had reached.
    Suspect,
}
