//! Direct control of a simulated cluster for scripted scenarios (test builds only): the script
//! moves time forward, cuts links, changes clocks and disks, crashes, restarts, proposes and reads;
//! every event is still checked.

use crate::raft::{MembershipChange, ProposeError, ReadId};
use crate::types::{LogIndex, NodeId};

use super::super::checker::{Checked, Violation};
use super::super::profile::TICK;
use super::Cluster;

/// Direct control for scripted scenarios: no client, reader or nemesis runs unless asked; the
/// scenario moves time forward, cuts links, crashes and proposes, and every step is still
/// checked.
impl Cluster {
    /// Starts every node (time 0).
    pub(in crate::sim) fn start_all(&mut self) -> Checked {
        for node in 0..self.nodes.len() {
            self.start(node)?;
        }
        Ok(())
    }

    /// Processes events until `done` holds (returns true) or `ticks` ticks pass (false).
    pub(in crate::sim) fn run_until(
        &mut self,
        ticks: u64,
        done: impl Fn(&Cluster) -> bool,
    ) -> Result<bool, Violation> {
        let deadline = self.now() + ticks * TICK;
        while !done(self) {
            // Peek first: an event past the deadline stays queued for the next call.
            if self.queue.next_time().is_none_or(|time| time > deadline) {
                return Ok(false);
            }
            let event = self.queue.pop().expect("peeked");
            self.handle(event)?;
        }
        Ok(true)
    }

    /// The running leader with the highest term, if any.
    pub(in crate::sim) fn leader(&self) -> Option<usize> {
        (0..self.nodes.len())
            .filter(|&i| self.nodes[i].is_leader())
            .max_by_key(|&i| self.nodes[i].term)
    }

    /// Nodes in the cluster (spares included).
    pub(in crate::sim) fn node_count(&self) -> usize {
        self.nodes.len()
    }

    /// Whether `node` is a running leader.
    pub(in crate::sim) fn is_leader(&self, node: usize) -> bool {
        self.nodes[node].is_leader()
    }

    /// The commit index `node` reported last in this incarnation.
    pub(in crate::sim) fn commit_of(&self, node: usize) -> LogIndex {
        self.nodes[node].commit
    }

    /// The last index of `node`'s log as written.
    pub(in crate::sim) fn last_index_of(&self, node: usize) -> LogIndex {
        self.nodes[node].disk.written().last_index()
    }

    /// The last durable index of `node`'s log.
    pub(in crate::sim) fn durable_index_of(&self, node: usize) -> LogIndex {
        self.nodes[node].disk.durable().last_index()
    }

    /// Cuts every link between the nodes in `side` (0-based) and the others.
    pub(in crate::sim) fn isolate(&mut self, side: &[usize]) {
        let (inside, outside): (Vec<NodeId>, Vec<NodeId>) = self
            .nodes
            .iter()
            .map(|n| n.id)
            .partition(|id| side.contains(&(id.get() as usize - 1)));
        self.network.partition(&inside, &outside);
        let now = self.now();
        self.trace
            .record(now, format_args!("partition {inside:?} | {outside:?}"));
    }

    /// Restores every link.
    pub(in crate::sim) fn heal(&mut self) {
        self.network.heal();
        let now = self.now();
        self.trace.record(now, format_args!("heal"));
    }

    /// Makes `node`'s disk slow the moment it next becomes leader (before its first write).
    pub(in crate::sim) fn slow_disk_on_leadership(&mut self, node: usize) {
        self.slow_disk_on_leadership = Some(node);
    }

    /// Turns `node`'s slow-disk mode on or off.
    pub(in crate::sim) fn set_slow_disk(&mut self, node: usize, slow: bool) {
        self.nodes[node].disk.set_slow(slow);
    }

    /// Proposes `command` at `node`; returns whether the core accepted it.
    pub(in crate::sim) fn propose_at(
        &mut self,
        node: usize,
        command: &[u8],
    ) -> Result<bool, Violation> {
        let raft = self.nodes[node]
            .raft
            .as_mut()
            .expect("proposing at a running node");
        let accepted = raft.propose(command).is_ok();
        self.drain(node)?;
        Ok(accepted)
    }

    /// Loses every Append message to `node` from now on (`None`: none).
    pub(in crate::sim) fn lose_appends_to(&mut self, node: Option<usize>) {
        self.appends_lost_to = node.map(|node| self.nodes[node].id);
        let now = self.now();
        self.trace.record(
            now,
            format_args!("appends lost to {:?}", self.appends_lost_to),
        );
    }

    /// Breaks `node`'s core on purpose (its commit index jumps to `commit`), to prove that the
    /// cores check their invariants after every simulated event.
    pub(in crate::sim) fn break_commit_of(&mut self, node: usize, commit: LogIndex) {
        self.nodes[node]
            .raft
            .as_mut()
            .expect("breaking a running node")
            .break_commit_for_test(commit);
    }

    /// Proposes a membership change at `node`; returns the core's answer.
    pub(in crate::sim) fn change_membership_at(
        &mut self,
        node: usize,
        change: MembershipChange,
    ) -> Result<Result<LogIndex, ProposeError>, Violation> {
        let raft = self.nodes[node]
            .raft
            .as_mut()
            .expect("changing the membership at a running node");
        let result = raft.propose_membership(change);
        let (now, id) = (self.now(), self.nodes[node].id);
        self.trace
            .record(now, format_args!("{id} membership {change:?}: {result:?}"));
        self.drain(node)?;
        Ok(result)
    }

    /// Sets the period of `node`'s clock (time units per tick) from its next tick on.
    pub(in crate::sim) fn set_tick_period(&mut self, node: usize, period: u64) {
        self.nodes[node].tick_period = period;
    }

    /// A client read at `node`; returns whether the core accepted it.
    pub(in crate::sim) fn read_at(&mut self, node: usize) -> Result<bool, Violation> {
        let id = self.next_read;
        self.next_read += 1;
        let raft = self.nodes[node]
            .raft
            .as_mut()
            .expect("reading at a running node");
        let accepted = raft.read_index(ReadId(id)).is_ok();
        if accepted {
            self.reads_issued.insert(id, self.checker.commit_max());
        }
        self.drain(node)?;
        Ok(accepted)
    }

    /// Reads served so far.
    pub(in crate::sim) fn reads_served(&self) -> u64 {
        self.stats.reads_served
    }

    /// Crashes `node`, losing every write not yet durable.
    pub(in crate::sim) fn crash_losing_pending(&mut self, node: usize) -> Checked {
        self.crash_with(node, true)
    }

    /// The core's status of a running `node`.
    pub(in crate::sim) fn status_of(&self, node: usize) -> Option<crate::raft::Status> {
        self.nodes[node].raft.as_ref().map(|raft| raft.status())
    }

    /// Restarts a crashed `node` from its durable state.
    pub(in crate::sim) fn restart(&mut self, node: usize) -> Checked {
        self.start(node)
    }
}
