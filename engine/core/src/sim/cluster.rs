//! The simulated cluster: real consensus cores driven through seeded events, playing the runtime
//! for each of them (disk, network, state machine, clients) and reporting every fact to the
//! checker.
//!
//! One run: `steps` events under the seed's fault mix (see [`Profile`]), then a quiet period
//! (network healed, disks fast, every node restarted, no new faults) in which a leader must emit
//! and commit a fresh proposal within [`LIVENESS_TICKS`] ticks. The run stops at the first
//! violation. Everything random comes from one [`SimRng`] and events are ordered by
//! `(time, sequence)`, so the seed alone determines the run and its trace hash.

use std::collections::{BTreeMap, VecDeque};
use std::fmt;

use bytes::Bytes;

use crate::batch::{Batch, BatchKind};
#[cfg(any(test, feature = "inject-bugs"))]
use crate::raft::InjectedBug;
use crate::raft::{
    Config, HardState, Membership, MembershipChange, Message, MessageBody, Raft, ReadId, ReadMode,
    ReadReady, Ready, Restored, Role, SnapshotMeta, StorageWrite, WriteId,
};
use crate::types::{LogIndex, NodeId, Term};

use super::checker::{entry_hash, Checked, Checker, Invariant, StateDigest, Violation};
use super::disk::{Disk, DiskWrite, Holding};
use super::network::{Network, NetworkFaults};
use super::profile::{NemesisAction, Profile, TICK};
use super::queue::EventQueue;
use super::rng::SimRng;
use super::trace::Trace;

#[cfg(test)]
#[path = "scripted.rs"]
mod scripted;

/// Ticks the cluster gets, once faults stop, to elect a leader and commit a new proposal.
pub const LIVENESS_TICKS: u64 = 1000;

/// A client stops proposing to a node whose log runs this many entries past its commit index
/// (clients bound their outstanding requests; without this a leader cut off from its quorum
/// would pile up an unbounded backlog).
pub const CLIENT_BACKLOG_MAX: u64 = 256;

/// Election timeout of every simulated core, in ticks.
pub const ELECTION_TICKS: u32 = 10;

/// Lease reads allow a follower's clock to run `LEASE_DRIFT_TICKS` ticks ahead of the leader's
/// over one election timeout.
pub const LEASE_DRIFT_TICKS: u32 = 2;

/// Shortest tick period of a node's clock (time units; the longest is [`TICK`]). Clock rates
/// differ by at most `TICK / TICK_PERIOD_MIN` = 1.087: over one election timeout (10 ticks) a
/// follower counts at most 0.87 ticks more than the leader, plus up to one tick of phase, which
/// stays within the documented lease bound of [`LEASE_DRIFT_TICKS`] (see `docs/RAFT.md`).
pub const TICK_PERIOD_MIN: u64 = 92;

/// What to run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SimOptions {
    /// The seed: it determines the fault mix and every random choice.
    pub seed: u64,
    /// Cluster size (1 to 7 voters).
    pub nodes: usize,
    /// Events to process under faults before the quiet period.
    pub steps: u64,
    /// Print every event.
    pub trace: bool,
    /// Re-insert a known bug in every core (test-only switch).
    #[cfg(any(test, feature = "inject-bugs"))]
    pub bug: Option<InjectedBug>,
}

impl SimOptions {
    /// A run of `seed` on `nodes` nodes for `steps` events, untraced, no injected bug.
    pub fn new(seed: u64, nodes: usize, steps: u64) -> SimOptions {
        SimOptions {
            seed,
            nodes,
            steps,
            trace: false,
            #[cfg(any(test, feature = "inject-bugs"))]
            bug: None,
        }
    }

    /// The command that replays this run with its trace.
    pub fn replay_command(&self) -> String {
        #[allow(unused_mut)]
        let mut command = format!(
            "lockstep sim --seed {} --nodes {} --steps {} --trace",
            self.seed, self.nodes, self.steps
        );
        #[cfg(any(test, feature = "inject-bugs"))]
        if let Some(bug) = self.bug {
            command.push_str(&format!(" --bug {}", bug.name()));
        }
        command
    }
}

/// Counters of a run.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SimStats {
    /// Events processed (fault phase and quiet period).
    pub events: u64,
    /// Entries committed (applied somewhere).
    pub committed: u64,
    /// Proposals the cores accepted.
    pub proposed: u64,
    /// Terms that had a leader.
    pub leaders: u64,
    /// Highest term seen.
    pub term_max: u64,
    /// Crashes.
    pub crashes: u64,
    /// Crashes that kept part of the unsynced writes / tore an append.
    pub torn_crashes: u64,
    /// Restarts that found a suffix of the durable log gone (and started in repair).
    pub damaged_restarts: u64,
    /// Of those, restarts whose last durable batch was cut as a torn tail (started suspect).
    pub cut_tail_restarts: u64,
    /// Partitions and one-way cuts.
    pub partitions: u64,
    /// Messages delivered.
    pub delivered: u64,
    /// Messages dropped (loss, cut link, node down).
    pub dropped: u64,
    /// Reads served.
    pub reads_served: u64,
    /// Snapshots taken by the runtime.
    pub compactions: u64,
    /// Snapshots installed from a leader.
    pub snapshots_installed: u64,
    /// Leadership transfers started.
    pub transfers: u64,
    /// Membership changes the leader accepted.
    pub membership_changes: u64,
}

impl SimStats {
    /// Adds `other`'s counters to these (totals over a sweep; `term_max` takes the maximum).
    pub fn add(&mut self, other: &SimStats) {
        self.events += other.events;
        self.committed += other.committed;
        self.proposed += other.proposed;
        self.leaders += other.leaders;
        self.term_max = self.term_max.max(other.term_max);
        self.crashes += other.crashes;
        self.torn_crashes += other.torn_crashes;
        self.damaged_restarts += other.damaged_restarts;
        self.cut_tail_restarts += other.cut_tail_restarts;
        self.partitions += other.partitions;
        self.delivered += other.delivered;
        self.dropped += other.dropped;
        self.reads_served += other.reads_served;
        self.compactions += other.compactions;
        self.snapshots_installed += other.snapshots_installed;
        self.transfers += other.transfers;
        self.membership_changes += other.membership_changes;
    }
}

/// The outcome of a run.
#[derive(Clone, Debug)]
pub struct SimReport {
    /// What ran.
    pub options: SimOptions,
    /// Hash of the whole event trace.
    pub trace_hash: u64,
    /// Counters.
    pub stats: SimStats,
    /// The first broken invariant, if any.
    pub violation: Option<Violation>,
    /// Virtual time at the end (or at the violation).
    pub time: u64,
}

impl fmt::Display for SimReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = &self.stats;
        match &self.violation {
            Some(violation) => writeln!(
                f,
                "VIOLATION seed {} ({} nodes) at time {}: {violation}",
                self.options.seed, self.options.nodes, self.time
            )?,
            None => writeln!(
                f,
                "ok seed {} ({} nodes, {} steps)",
                self.options.seed, self.options.nodes, self.options.steps
            )?,
        }
        writeln!(
            f,
            "  events {} committed {} proposed {} leaders {} term {} crashes {} (torn {}, \
             damaged log {}, tail cut {}) partitions {} delivered {} dropped {} reads {} compactions {} snapshots {} \
             transfers {} membership changes {}",
            s.events,
            s.committed,
            s.proposed,
            s.leaders,
            s.term_max,
            s.crashes,
            s.torn_crashes,
            s.damaged_restarts,
            s.cut_tail_restarts,
            s.partitions,
            s.delivered,
            s.dropped,
            s.reads_served,
            s.compactions,
            s.snapshots_installed,
            s.transfers,
            s.membership_changes
        )?;
        write!(f, "  trace hash {:016x}", self.trace_hash)?;
        if self.violation.is_some() {
            write!(f, "\n  replay: {}", self.options.replay_command())?;
        }
        Ok(())
    }
}

/// Runs one seed to completion (or to its first violation). A panic inside a core or the
/// simulator is caught and reported as a violation of [`Invariant::NoPanic`].
pub fn run(options: SimOptions) -> SimReport {
    assert!(
        (1..=7).contains(&options.nodes),
        "a simulated cluster has 1 to 7 nodes, not {}",
        options.nodes
    );
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let mut cluster = Cluster::new(options.clone());
        let violation = cluster.run().err();
        if let Some(violation) = &violation {
            let now = cluster.queue.now();
            cluster
                .trace
                .record(now, format_args!("VIOLATION {violation}"));
        }
        cluster.stats.committed = cluster.checker.committed_len();
        SimReport {
            options: options.clone(),
            trace_hash: cluster.trace.hash(),
            stats: cluster.stats,
            violation,
            time: cluster.queue.now(),
        }
    }));
    caught.unwrap_or_else(|panic| {
        let message = panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "a panic without a message".to_string());
        SimReport {
            options,
            trace_hash: 0,
            stats: SimStats::default(),
            violation: Some(Violation {
                invariant: Invariant::NoPanic,
                detail: message,
            }),
            time: 0,
        }
    })
}

enum Event {
    Tick {
        node: usize,
        incarnation: u64,
    },
    Deliver {
        message: Message,
    },
    Synced {
        node: usize,
        incarnation: u64,
        write: WriteId,
    },
    Restart {
        node: usize,
    },
    Propose,
    Read,
    Nemesis,
    LivenessProbe,
}

/// The runtime side of one node.
struct SimNode {
    id: NodeId,
    raft: Option<Raft>,
    incarnation: u64,
    disk: Disk,
    /// Messages waiting for their write to be durable, by write id.
    after_durable: VecDeque<(WriteId, Vec<Message>)>,
    /// The state machine.
    digest: StateDigest,
    /// Membership as of the applied index.
    membership_applied: Membership,
    /// Last index the runtime snapshotted.
    snapshot_index: LogIndex,
    /// Commit index reported last in this incarnation.
    commit: LogIndex,
    role: Role,
    term: Term,
    /// A leader whose term and self-vote are durable: only then did it really win (a
    /// single-voter leader acts before, but nothing leaves it until that write is durable, and
    /// a crash may erase its term).
    leader_confirmed: bool,
    /// Time units between two ticks of this node's clock (drifting clocks, bounded).
    tick_period: u64,
    /// Confirmed reads waiting for the state machine, with the commit index at their issue.
    reads: Vec<(ReadReady, LogIndex)>,
    /// A repair in progress: the damage this node lost entries to, kept (like the repair
    /// marker on a real disk) until the core reports the repair complete.
    repair: Option<Repair>,
}

/// Entries lost to injected damage, and the repair the node restarts with.
#[derive(Clone, Copy, Debug)]
struct Repair {
    /// The lost range.
    lost: (LogIndex, LogIndex),
    /// What the core gets as `Restored::repair_until` / `repair_above_term`.
    until: LogIndex,
    above_term: Option<Term>,
    /// Set instead of a repair when the damage was a cut tail (the last durable batch, cut as
    /// torn): what the core gets as `Restored::suspect_term`.
    suspect_term: Option<Term>,
}

impl SimNode {
    fn is_leader(&self) -> bool {
        self.raft.is_some() && self.role == Role::Leader
    }
}

pub(super) struct Cluster {
    options: SimOptions,
    profile: Profile,
    rng: SimRng,
    queue: EventQueue<Event>,
    network: Network,
    nodes: Vec<SimNode>,
    membership: Membership,
    checker: Checker,
    trace: Trace,
    stats: SimStats,
    /// Issued reads: id -> highest commit reported anywhere when issued.
    reads_issued: BTreeMap<u64, LogIndex>,
    next_read: u64,
    next_proposal: u64,
    /// Set when the quiet period starts: (start time, liveness marker committed?).
    quiet: Option<(u64, bool)>,
    marker: Vec<u8>,
    /// Scripted: this node's disk turns slow the moment it becomes leader.
    slow_disk_on_leadership: Option<usize>,
    /// Scripted: every Append message to this node is lost (its other messages pass).
    appends_lost_to: Option<NodeId>,
}

fn violation(invariant: Invariant, detail: String) -> Checked {
    Err(Violation { invariant, detail })
}

/// A compact, deterministic one-line description of a message for the trace.
fn describe(message: &Message) -> String {
    let body = match &message.body {
        MessageBody::PreVote {
            last_index,
            last_term,
        } => format!("PreVote last {last_index}/{last_term}"),
        MessageBody::PreVoteResponse { granted } => format!("PreVoteResponse {granted}"),
        MessageBody::Vote {
            last_index,
            last_term,
            leadership_transfer,
        } => format!("Vote last {last_index}/{last_term} transfer {leadership_transfer}"),
        MessageBody::VoteResponse { granted } => format!("VoteResponse {granted}"),
        MessageBody::Append {
            prev_index,
            prev_term,
            batches,
            commit,
        } => {
            let last = batches.last().map_or(*prev_index, |b| b.last_index());
            format!(
                "Append prev {prev_index}/{prev_term} to {last} ({} batches) commit {commit}",
                batches.len()
            )
        }
        MessageBody::AppendResponse {
            success,
            index,
            hint_index,
            hint_term,
        } => format!("AppendResponse {success} {index} hint {hint_index}/{hint_term}"),
        MessageBody::Heartbeat { commit, read_round } => {
            format!("Heartbeat commit {commit} round {read_round}")
        }
        MessageBody::HeartbeatResponse { read_round } => {
            format!("HeartbeatResponse round {read_round}")
        }
        MessageBody::Snapshot {
            meta,
            offset,
            data,
            done,
        } => format!(
            "Snapshot {}/{} offset {offset} len {} done {done}",
            meta.index,
            meta.term,
            data.len()
        ),
        MessageBody::SnapshotResponse {
            index,
            next_offset,
            done,
        } => format!("SnapshotResponse {index} next {next_offset} done {done}"),
        MessageBody::TimeoutNow => "TimeoutNow".to_string(),
    };
    format!("{}->{} {} {body}", message.from, message.to, message.term)
}

impl Cluster {
    fn new(options: SimOptions) -> Cluster {
        let profile = Profile::for_seed(options.seed);
        Cluster::with_profile(options, profile)
    }

    /// A cluster with an explicit fault mix (scenarios); nothing runs until events are pushed.
    pub(super) fn with_profile(options: SimOptions, profile: Profile) -> Cluster {
        let membership = Membership::with_voters((1..=options.nodes as u64).map(NodeId));
        // Seeds with membership changes get one spare node, started outside the cluster.
        let spare = usize::from(profile.membership_changes);
        let mut clock_rng = SimRng::new(options.seed ^ 0xC10C_C10C_C10C_C10C);
        let nodes = (0..options.nodes + spare)
            .map(|i| SimNode {
                tick_period: clock_rng.between(TICK_PERIOD_MIN, TICK),
                id: NodeId(i as u64 + 1),
                raft: None,
                incarnation: 0,
                disk: Disk::new(HardState::default(), profile.disk.clone()),
                after_durable: VecDeque::new(),
                digest: StateDigest::default(),
                membership_applied: membership.clone(),
                snapshot_index: LogIndex::ZERO,
                commit: LogIndex::ZERO,
                role: Role::Follower,
                term: Term::ZERO,
                leader_confirmed: false,
                reads: Vec::new(),
                repair: None,
            })
            .collect();
        Cluster {
            rng: SimRng::new(options.seed),
            queue: EventQueue::new(),
            network: Network::new(profile.network.clone()),
            nodes,
            membership,
            checker: Checker::new(),
            trace: Trace::new(options.trace),
            stats: SimStats::default(),
            reads_issued: BTreeMap::new(),
            next_read: 1,
            next_proposal: 1,
            quiet: None,
            marker: format!("liveness-{}", options.seed).into_bytes(),
            slow_disk_on_leadership: None,
            appends_lost_to: None,
            profile,
            options,
        }
    }

    fn run(&mut self) -> Checked {
        if self.trace.printing() {
            println!("profile: {:?}", self.profile);
        }
        for node in 0..self.nodes.len() {
            self.start(node)?;
        }
        self.queue.push(1, Event::Propose);
        if self.profile.read_gap_max > 0 {
            self.queue.push(1, Event::Read);
        }
        self.queue
            .push(self.profile.nemesis_gap_max / 2, Event::Nemesis);
        let mut steps = 0u64;
        while steps < self.options.steps {
            let event = self.queue.pop().expect("ticks keep the queue non-empty");
            self.handle(event)?;
            steps += 1;
        }
        self.start_quiet_period()?;
        let deadline = self.queue.now() + LIVENESS_TICKS * TICK;
        loop {
            if self.quiet.is_some_and(|(_, done)| done) {
                return Ok(());
            }
            if self.queue.next_time().is_none_or(|time| time > deadline) {
                let roles: Vec<String> = self
                    .nodes
                    .iter()
                    .map(|n| match &n.raft {
                        Some(_) => format!("{} {:?} {}", n.id, n.role, n.term),
                        None => format!("{} down", n.id),
                    })
                    .collect();
                return violation(
                    Invariant::Liveness,
                    format!(
                        "no new proposal committed within {LIVENESS_TICKS} ticks after faults \
                         stopped; nodes: {}",
                        roles.join(", ")
                    ),
                );
            }
            let event = self.queue.pop().expect("peeked");
            self.handle(event)?;
        }
    }

    fn now(&self) -> u64 {
        self.queue.now()
    }

    fn config(&self, node: usize) -> Config {
        let mut config = Config::new(self.nodes[node].id);
        config.election_ticks = ELECTION_TICKS;
        config.heartbeat_ticks = 2;
        config.seed = self.options.seed;
        config.check_invariants = true;
        if self.profile.lease_reads {
            config.read_mode = ReadMode::Lease {
                clock_drift_ticks: LEASE_DRIFT_TICKS,
            };
        }
        config.batch_entries_max = self.profile.batch_entries_max;
        config.append_bytes_max = self.profile.append_bytes_max;
        config.inflight_messages_max = self.profile.inflight_messages_max;
        config.snapshot_chunk_bytes = self.profile.snapshot_chunk_bytes;
        #[cfg(any(test, feature = "inject-bugs"))]
        {
            config.inject_bug = self.options.bug;
        }
        config
    }

    /// Starts (or restarts) `node` from its durable state.
    fn start(&mut self, node: usize) -> Checked {
        let config = self.config(node);
        let now = self.now();
        let n = &mut self.nodes[node];
        let durable = n.disk.durable().clone();
        let repair = n.repair.filter(|repair| repair.suspect_term.is_none());
        let restored = Restored {
            hard_state: durable.hard_state,
            snapshot: durable.snapshot.clone(),
            batches: durable.batches.clone(),
            initial_membership: self.membership.clone(),
            repair_until: repair.map(|repair| repair.until),
            repair_above_term: repair.and_then(|repair| repair.above_term),
            suspect_term: n.repair.and_then(|repair| repair.suspect_term),
        };
        let raft = match Raft::new(config, restored) {
            Ok(raft) => raft,
            Err(error) => {
                return violation(
                    Invariant::CoreContract,
                    format!(
                        "{} refuses its durable state on restart: {error} (hard state {:?}, \
                         snapshot at {}, log to {})",
                        n.id,
                        durable.hard_state,
                        durable.snapshot_index(),
                        durable.last_index()
                    ),
                );
            }
        };
        n.incarnation += 1;
        n.raft = Some(raft);
        n.after_durable.clear();
        n.commit = LogIndex::ZERO;
        n.role = Role::Follower;
        n.leader_confirmed = false;
        n.term = durable.hard_state.term;
        n.reads.clear();
        match &durable.snapshot {
            Some((meta, data)) => {
                n.digest = StateDigest::decode(data).expect("the simulator wrote this snapshot");
                n.membership_applied = meta.membership.clone();
                n.snapshot_index = meta.index;
            }
            None => {
                n.digest = StateDigest::default();
                n.membership_applied = self.membership.clone();
                n.snapshot_index = LogIndex::ZERO;
            }
        }
        let (id, incarnation) = (n.id, n.incarnation);
        self.trace.record(
            now,
            format_args!(
                "{id} start #{incarnation} hard {:?} snapshot {} log to {}",
                durable.hard_state,
                durable.snapshot_index(),
                durable.last_index()
            ),
        );
        // A repair the restored log already covers is dropped by the core at once.
        self.note_repair(node);
        // Spread the nodes' tick phases over one tick.
        let phase = self.rng.below(TICK) + 1;
        self.queue
            .push(now + phase, Event::Tick { node, incarnation });
        self.drain(node)
    }

    fn crash(&mut self, node: usize) -> Checked {
        self.crash_with(node, false)
    }

    fn crash_with(&mut self, node: usize, lose_all_pending: bool) -> Checked {
        let now = self.now();
        let n = &mut self.nodes[node];
        if n.raft.take().is_none() {
            return Ok(());
        }
        let loss = if lose_all_pending {
            n.disk.crash_losing_pending(&mut self.rng)
        } else {
            n.disk.crash(&mut self.rng)
        };
        n.after_durable.clear();
        n.reads.clear();
        self.stats.crashes += 1;
        if loss.units_kept > 0 || loss.torn {
            self.stats.torn_crashes += 1;
        }
        self.trace
            .record(now, format_args!("{} crash {:?}", n.id, loss));
        // Whatever survived the crash is now durable: it joins the log-matching registry.
        self.check_durable_appends(node)?;
        if !lose_all_pending {
            self.maybe_damage(node);
        }
        // Scripted crashes (which lose every pending write) restart when the script says so.
        if self.quiet.is_none() && !lose_all_pending {
            let downtime = self.rng.between(1, self.profile.downtime_max);
            self.queue.push(now + downtime, Event::Restart { node });
        }
        Ok(())
    }

    /// With the profile's chance, and only while no other node has a repair pending: a suffix of
    /// the crashed `node`'s durable log is lost (as the real log finds a lost or cut segment at
    /// start), and the node restarts in repair: with the lost extent known (`until` = the last
    /// index it held), or unknown (`above_term` = the highest term it had reached). Or its last
    /// durable batch is damaged and cut as a torn tail, and it restarts suspect
    /// (`suspect_term` = the highest term it had reached).
    ///
    /// A damaged log is a failure of that node until it is repaired, so it is injected only
    /// where the cluster tolerates one: three voters or more, and a fixed membership (a change
    /// passes through configurations of two voters, which tolerate none).
    fn maybe_damage(&mut self, node: usize) {
        let per_mille = self.profile.damaged_restart_per_mille;
        if per_mille == 0
            || self.quiet.is_some()
            || self.profile.membership_changes
            || self.membership.voters.len() < 3
        {
            return;
        }
        if self.nodes.iter().any(|n| n.repair.is_some()) || !self.rng.chance(per_mille) {
            return;
        }
        let now = self.now();
        let n = &mut self.nodes[node];
        let durable = n.disk.durable();
        let (first, last) = (durable.snapshot_index().next(), durable.last_index());
        if first > last {
            return;
        }
        let term_reached = durable
            .hard_state
            .term
            .max(durable.term_at(last).unwrap_or(Term::ZERO));
        let from = LogIndex(self.rng.between(first.get(), last.get()));
        let known = self.rng.chance(500);
        // A cut tail loses the last durable batch whole (one record), never the snapshot.
        let cut_tail = known && self.rng.chance(500);
        let from = match durable.batches.last() {
            Some(batch) if cut_tail => batch.first_index().max(first),
            _ => from,
        };
        let held = n.disk.damage_from(from);
        n.repair = Some(Repair {
            lost: (from, held),
            until: if known { held } else { from.prev() },
            above_term: (!known).then_some(term_reached),
            suspect_term: cut_tail.then_some(term_reached),
        });
        self.stats.damaged_restarts += 1;
        self.stats.cut_tail_restarts += u64::from(cut_tail);
        let what = match (cut_tail, known) {
            (true, _) => "tail cut, suspect",
            (false, true) => "extent known",
            (false, false) => "extent unknown",
        };
        self.trace.record(
            now,
            format_args!("{} damaged: lost {from}..={held} ({what})", n.id),
        );
    }

    /// Forgets `node`'s repair (or suspicion) once its core says it is complete (lifted).
    fn note_repair(&mut self, node: usize) {
        let n = &mut self.nodes[node];
        if n.repair.is_some()
            && n.raft.as_ref().is_some_and(|raft| {
                let status = raft.status();
                status.repair_until.is_none() && !status.suspect
            })
        {
            n.repair = None;
        }
    }

    /// Checks Log Matching for the batches of `node` that just became durable. Entries enter the
    /// registry only once durable: an entry that never reached a disk (e.g. written by a leader
    /// whose own term was not yet durable, then lost in a crash) never existed for anyone else.
    fn check_durable_appends(&mut self, node: usize) -> Checked {
        let id = self.nodes[node].id;
        for append in self.nodes[node].disk.take_newly_durable() {
            if let Some(prev_term) = append.prev_term {
                self.checker.on_append(id, &append.batch, prev_term)?;
            }
        }
        Ok(())
    }

    fn handle(&mut self, event: Event) -> Checked {
        self.stats.events += 1;
        let now = self.now();
        match event {
            Event::Tick { node, incarnation } => {
                let n = &mut self.nodes[node];
                if n.incarnation != incarnation {
                    return Ok(());
                }
                let Some(raft) = n.raft.as_mut() else {
                    return Ok(());
                };
                raft.tick();
                let period = n.tick_period;
                self.queue
                    .push(now + period, Event::Tick { node, incarnation });
                self.drain(node)
            }
            Event::Deliver { message } => {
                let to = message.to.get() as usize - 1;
                let up = self.nodes[to].raft.is_some();
                let append_lost = self.appends_lost_to == Some(message.to)
                    && matches!(message.body, MessageBody::Append { .. });
                if !up || append_lost || !self.network.connected(message.from, message.to) {
                    self.stats.dropped += 1;
                    self.trace
                        .record(now, format_args!("lost {}", describe(&message)));
                    return Ok(());
                }
                self.stats.delivered += 1;
                self.trace
                    .record(now, format_args!("deliver {}", describe(&message)));
                self.nodes[to]
                    .raft
                    .as_mut()
                    .expect("checked up")
                    .step(message);
                self.drain(to)
            }
            Event::Synced {
                node,
                incarnation,
                write,
            } => {
                let n = &mut self.nodes[node];
                if n.incarnation != incarnation || n.raft.is_none() {
                    return Ok(());
                }
                n.disk.sync_through(write.0);
                self.check_durable_appends(node)?;
                let n = &mut self.nodes[node];
                let mut released = Vec::new();
                while n.after_durable.front().is_some_and(|(id, _)| *id <= write) {
                    released.extend(n.after_durable.pop_front().expect("non-empty").1);
                }
                self.trace
                    .record(now, format_args!("{} synced w{}", n.id, write.0));
                n.raft.as_mut().expect("checked up").on_durable(write);
                self.note_repair(node);
                self.confirm_leader(node)?;
                for message in released {
                    self.send(message)?;
                }
                self.drain(node)
            }
            Event::Restart { node } => {
                if self.nodes[node].raft.is_some() {
                    return Ok(());
                }
                self.start(node)
            }
            Event::Propose => {
                if self.quiet.is_some() {
                    return Ok(());
                }
                let gap = self.rng.between(1, self.profile.propose_gap_max);
                self.queue.push(now + gap, Event::Propose);
                self.propose()
            }
            Event::Read => {
                if self.quiet.is_some() {
                    return Ok(());
                }
                let gap = self.rng.between(1, self.profile.read_gap_max);
                self.queue.push(now + gap, Event::Read);
                self.read()
            }
            Event::Nemesis => {
                if self.quiet.is_some() {
                    return Ok(());
                }
                let gap = self.rng.between(1, self.profile.nemesis_gap_max);
                self.queue.push(now + gap, Event::Nemesis);
                self.nemesis()
            }
            Event::LivenessProbe => self.liveness_probe(),
        }
    }

    /// The node a client would talk to: usually the leader of the highest term, sometimes any.
    fn client_target(&mut self) -> Option<usize> {
        let leader = (0..self.nodes.len())
            .filter(|&i| self.nodes[i].is_leader())
            .max_by_key(|&i| self.nodes[i].term);
        let up: Vec<usize> = (0..self.nodes.len())
            .filter(|&i| self.nodes[i].raft.is_some())
            .collect();
        if up.is_empty() {
            return None;
        }
        match leader {
            Some(leader) if !self.rng.chance(150) => Some(leader),
            _ => Some(*self.rng.pick(&up)),
        }
    }

    fn propose(&mut self) -> Checked {
        let Some(node) = self.client_target() else {
            return Ok(());
        };
        let burst = self.rng.between(1, self.profile.propose_burst_max);
        let n = &self.nodes[node];
        let backlog = n
            .disk
            .written()
            .last_index()
            .get()
            .saturating_sub(n.commit.get());
        if backlog > CLIENT_BACKLOG_MAX {
            self.trace.record(
                self.queue.now(),
                format_args!("client backs off {}: {backlog} entries uncommitted", n.id),
            );
            return Ok(());
        }
        let mut accepted = 0;
        let raft = self.nodes[node].raft.as_mut().expect("target is up");
        for _ in 0..burst {
            let mut command = [0u8; 16];
            command[..8].copy_from_slice(&self.options.seed.to_le_bytes());
            command[8..].copy_from_slice(&self.next_proposal.to_le_bytes());
            self.next_proposal += 1;
            if raft.propose(&command).is_ok() {
                accepted += 1;
            }
        }
        self.stats.proposed += accepted;
        let id = self.nodes[node].id;
        self.trace.record(
            self.queue.now(),
            format_args!("client proposes {burst} to {id}: {accepted} accepted"),
        );
        self.drain(node)
    }

    fn read(&mut self) -> Checked {
        let Some(node) = self.client_target() else {
            return Ok(());
        };
        let id = self.next_read;
        self.next_read += 1;
        let raft = self.nodes[node].raft.as_mut().expect("target is up");
        let result = raft.read_index(ReadId(id));
        let node_id = self.nodes[node].id;
        self.trace.record(
            self.queue.now(),
            format_args!("client read r{id} at {node_id}: {}", result.is_ok()),
        );
        if result.is_ok() {
            self.reads_issued.insert(id, self.checker.commit_max());
        }
        self.drain(node)
    }

    fn nemesis(&mut self) -> Checked {
        let Some(action) = self.profile.pick_action(&mut self.rng) else {
            return Ok(());
        };
        let now = self.now();
        let count = self.nodes.len();
        let ids: Vec<NodeId> = self.nodes.iter().map(|n| n.id).collect();
        match action {
            NemesisAction::Crash => {
                let node = self.rng.below(count as u64) as usize;
                self.crash(node)?;
            }
            NemesisAction::CrashLeader => {
                if let Some(leader) = (0..count).find(|&i| self.nodes[i].is_leader()) {
                    self.crash(leader)?;
                }
            }
            NemesisAction::Partition => {
                if count > 1 {
                    let mut side = Vec::new();
                    let mut rest = Vec::new();
                    for id in &ids {
                        if self.rng.chance(500) {
                            side.push(*id);
                        } else {
                            rest.push(*id);
                        }
                    }
                    self.network.partition(&side, &rest);
                    self.stats.partitions += 1;
                    self.trace
                        .record(now, format_args!("partition {side:?} | {rest:?}"));
                }
            }
            NemesisAction::CutOneWay => {
                if count > 1 {
                    let from = *self.rng.pick(&ids);
                    let to = *self.rng.pick(&ids);
                    if from != to {
                        self.network.cut_one_way(from, to);
                        self.stats.partitions += 1;
                        self.trace.record(now, format_args!("cut {from}->{to}"));
                    }
                }
            }
            NemesisAction::Heal => {
                self.network.heal();
                self.trace.record(now, format_args!("heal"));
            }
            NemesisAction::ToggleSlowDisk => {
                let node = self.rng.below(count as u64) as usize;
                let n = &mut self.nodes[node];
                let slow = !n.disk.is_slow();
                n.disk.set_slow(slow);
                self.trace
                    .record(now, format_args!("{} disk slow {slow}", n.id));
            }
            NemesisAction::ChangeMembership => return self.change_membership(),
            NemesisAction::TransferLeadership => {
                if count > 1 {
                    if let Some(leader) = (0..count).find(|&i| self.nodes[i].is_leader()) {
                        let to = *self.rng.pick(&ids);
                        let n = &mut self.nodes[leader];
                        if to != n.id {
                            let result = n
                                .raft
                                .as_mut()
                                .expect("leader is up")
                                .transfer_leadership(to);
                            self.stats.transfers += u64::from(result.is_ok());
                            self.trace
                                .record(now, format_args!("transfer {}->{to}: {:?}", n.id, result));
                            return self.drain(leader);
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// Asks the leader for one membership change: add a non-member as learner, promote a
    /// learner, or remove a voter or learner.
    fn change_membership(&mut self) -> Checked {
        let Some(leader) = (0..self.nodes.len()).find(|&i| self.nodes[i].is_leader()) else {
            return Ok(());
        };
        let membership = self.nodes[leader]
            .raft
            .as_ref()
            .expect("leader is up")
            .status()
            .membership;
        let outsiders: Vec<NodeId> = self
            .nodes
            .iter()
            .map(|n| n.id)
            .filter(|id| !membership.contains(*id))
            .collect();
        let learners: Vec<NodeId> = membership.learners.iter().copied().collect();
        let members: Vec<NodeId> = membership.members().collect();
        let change = match self.rng.below(3) {
            0 if !outsiders.is_empty() => {
                MembershipChange::AddLearner(*self.rng.pick(&outsiders), None)
            }
            1 if !learners.is_empty() => MembershipChange::Promote(*self.rng.pick(&learners)),
            _ if members.len() > 1 => MembershipChange::Remove(*self.rng.pick(&members)),
            _ => return Ok(()),
        };
        let raft = self.nodes[leader].raft.as_mut().expect("leader is up");
        let result = raft.propose_membership(change);
        let now = self.now();
        self.trace.record(
            now,
            format_args!(
                "{} membership {change:?}: {result:?}",
                self.nodes[leader].id
            ),
        );
        self.stats.membership_changes += u64::from(result.is_ok());
        self.drain(leader)
    }

    fn start_quiet_period(&mut self) -> Checked {
        let now = self.now();
        self.trace.record(now, format_args!("quiet period"));
        self.quiet = Some((now, false));
        self.network.heal();
        let quiet_network = NetworkFaults::quiet(1, self.profile.network.delay_max);
        self.network.set_faults(quiet_network);
        for node in 0..self.nodes.len() {
            self.nodes[node].disk.set_slow(false);
            if self.nodes[node].raft.is_none() {
                self.start(node)?;
            }
        }
        self.queue.push(now + TICK, Event::LivenessProbe);
        Ok(())
    }

    fn liveness_probe(&mut self) -> Checked {
        let now = self.now();
        self.queue.push(now + 5 * TICK, Event::LivenessProbe);
        if let Some(leader) = (0..self.nodes.len()).find(|&i| self.nodes[i].is_leader()) {
            let marker = self.marker.clone();
            let result = self.nodes[leader]
                .raft
                .as_mut()
                .expect("leader is up")
                .propose(&marker);
            self.trace.record(
                now,
                format_args!("liveness probe at {}: {:?}", self.nodes[leader].id, result),
            );
            return self.drain(leader);
        }
        Ok(())
    }

    /// Checks Election Safety and Leader Completeness for `node` once it leads with a durable
    /// term.
    fn confirm_leader(&mut self, node: usize) -> Checked {
        let n = &mut self.nodes[node];
        if n.role != Role::Leader || n.leader_confirmed || n.raft.is_none() {
            return Ok(());
        }
        if n.disk.durable().hard_state.term != n.term {
            return Ok(());
        }
        n.leader_confirmed = true;
        self.checker.on_leader(n.id, n.term, n.disk.written())
    }

    /// Sends one message through the network.
    fn send(&mut self, message: Message) -> Checked {
        if let MessageBody::VoteResponse { granted: true } = message.body {
            self.checker
                .on_vote_granted(message.from, message.term, message.to)?;
        }
        let delays = self.network.route(&mut self.rng, message.from, message.to);
        let now = self.now();
        if delays.is_empty() {
            self.stats.dropped += 1;
            self.trace
                .record(now, format_args!("drop {}", describe(&message)));
        }
        if let Some((last, copies)) = delays.split_last() {
            for delay in copies {
                let message = message.clone();
                self.queue.push(now + delay, Event::Deliver { message });
            }
            self.queue.push(now + last, Event::Deliver { message });
        }
        Ok(())
    }

    /// Takes and performs every output of `node`'s core.
    fn drain(&mut self, node: usize) -> Checked {
        loop {
            let Some(raft) = self.nodes[node].raft.as_mut() else {
                return Ok(());
            };
            if !raft.has_ready() {
                return Ok(());
            }
            let ready = raft.ready();
            self.perform(node, ready)?;
        }
    }

    fn perform(&mut self, node: usize, ready: Ready) -> Checked {
        let now = self.now();
        let id = self.nodes[node].id;
        if let Some(soft) = ready.soft_state {
            let n = &mut self.nodes[node];
            n.role = soft.role;
            n.term = soft.term;
            self.stats.term_max = self.stats.term_max.max(soft.term.get());
            self.trace.record(
                now,
                format_args!(
                    "{id} is {:?} of {} (leader {:?})",
                    soft.role, soft.term, soft.leader
                ),
            );
            if soft.role == Role::Leader {
                self.stats.leaders += 1;
                if self.slow_disk_on_leadership == Some(node) {
                    self.slow_disk_on_leadership = None;
                    self.nodes[node].disk.set_slow(true);
                }
            }
            self.nodes[node].leader_confirmed = false;
            self.confirm_leader(node)?;
        }
        if let Some(write) = ready.write {
            self.perform_write(node, write)?;
        }
        for message in ready.messages {
            self.send(message)?;
        }
        if !ready.committed.is_empty() {
            self.apply(node, &ready.committed)?;
        }
        self.commit(node, ready.commit_index)?;
        for read in ready.reads {
            let issued = self
                .reads_issued
                .get(&read.id.0)
                .copied()
                .unwrap_or(LogIndex::ZERO);
            self.nodes[node].reads.push((read, issued));
        }
        for failed in ready.reads_failed {
            self.trace
                .record(now, format_args!("{id} read r{} failed", failed.0));
        }
        self.serve_reads(node)
    }

    fn perform_write(&mut self, node: usize, write: StorageWrite) -> Checked {
        let now = self.now();
        let n = &mut self.nodes[node];
        let id = n.id;
        let is_leader = n.role == Role::Leader;
        let written = n.disk.written();
        if let Some(hard_state) = write.hard_state {
            let previous = written.hard_state;
            self.checker.on_hard_state(
                id,
                (previous.term, previous.vote),
                (hard_state.term, hard_state.vote),
            )?;
        }
        if let Some((meta, data)) = write.snapshot.as_deref() {
            if is_leader {
                return violation(
                    Invariant::LeaderAppendOnly,
                    format!("leader {id} installs a snapshot at {}", meta.index),
                );
            }
            let digest = StateDigest::decode(data).ok_or_else(|| Violation {
                invariant: Invariant::CoreContract,
                detail: format!("{id} installs a snapshot whose data is not ours: {data:?}"),
            })?;
            self.checker.on_snapshot_state(id, &digest)?;
            // Load it unless the state machine is already past it.
            if digest.applied > n.digest.applied {
                n.digest = digest;
                n.membership_applied = meta.membership.clone();
            }
            n.snapshot_index = n.snapshot_index.max(meta.index);
            self.stats.snapshots_installed += 1;
        }
        if let Some(from) = write.truncate_from {
            self.checker.on_truncate(id, is_leader, written, from)?;
        }
        if self.trace.printing() || !write.batches.is_empty() {
            let last = write.batches.last().map(|b| b.last_index());
            self.trace.record(
                now,
                format_args!(
                    "{id} write w{} hard {:?} snapshot {:?} truncate {:?} append {:?}..{:?} \
                     ({} after sync)",
                    write.id.0,
                    write.hard_state,
                    write.snapshot.as_deref().map(|(m, _)| m.index),
                    write.truncate_from,
                    write.batches.first().map(|b| b.first_index()),
                    last,
                    write.after_durable.len()
                ),
            );
        }
        let disk_write = DiskWrite {
            id: write.id.0,
            hard_state: write.hard_state,
            snapshot: write.snapshot.map(|snapshot| *snapshot),
            truncate_from: write.truncate_from,
            batches: write.batches,
        };
        let done = n
            .disk
            .submit(disk_write, now, &mut self.rng)
            .map_err(|detail| Violation {
                invariant: Invariant::CoreContract,
                detail: format!("{id}: {detail}"),
            })?;
        n.after_durable.push_back((write.id, write.after_durable));
        self.queue.push(
            done,
            Event::Synced {
                node,
                incarnation: n.incarnation,
                write: write.id,
            },
        );
        Ok(())
    }

    fn apply(&mut self, node: usize, committed: &[Batch]) -> Checked {
        let n = &mut self.nodes[node];
        let id = n.id;
        for batch in committed {
            if batch.last_index() <= n.digest.applied {
                continue;
            }
            if batch.first_index() > n.digest.applied.next() {
                return violation(
                    Invariant::CoreContract,
                    format!(
                        "{id} gets committed {batch:?} but has applied only {}",
                        n.digest.applied
                    ),
                );
            }
            if batch.kind() == BatchKind::Membership {
                if let Some(entry) = batch.entries().next() {
                    if let Ok(membership) = Membership::decode(entry) {
                        n.membership_applied = membership;
                    }
                }
            }
            for (offset, entry) in batch.entries().enumerate() {
                let index = batch.first_index().plus(offset as u64);
                if index <= n.digest.applied {
                    continue;
                }
                let hash = entry_hash(batch, entry);
                n.digest = n.digest.advance(index, batch.term(), hash);
                self.checker
                    .on_apply(id, index, batch.term(), hash, n.digest.hash)?;
                if entry == self.marker.as_slice() {
                    if let Some((start, _)) = self.quiet {
                        self.quiet = Some((start, true));
                    }
                }
            }
        }
        let applied = n.digest.applied;
        let raft = n.raft.as_mut().expect("applying on a running node");
        raft.on_applied(applied);
        // Runtime snapshot + compaction.
        // The runtime's snapshot is written durably at once, so it waits until the term of what
        // it covers is durable (a real runtime orders it after the pending hard state write):
        // a restart never finds a snapshot newer than its term.
        let every = self.profile.compact_every;
        let term_durable = n.digest.applied_term <= n.disk.durable().hard_state.term;
        if every > 0 && term_durable && applied.get() >= n.snapshot_index.get() + every {
            let meta = SnapshotMeta {
                index: applied,
                term: n.digest.applied_term,
                membership: n.membership_applied.clone(),
            };
            let data = Bytes::from(n.digest.encode());
            n.disk.compact(&meta, &data);
            raft.compact(meta, data);
            n.snapshot_index = applied;
            self.stats.compactions += 1;
            self.trace
                .record(self.queue.now(), format_args!("{id} compacts to {applied}"));
        }
        Ok(())
    }

    fn commit(&mut self, node: usize, commit: LogIndex) -> Checked {
        let n = &self.nodes[node];
        if commit == n.commit {
            return Ok(());
        }
        let id = n.id;
        let previous = n.commit;
        // The voters whose durable logs must hold the commit: a leader counts with its latest
        // appended membership; in a cluster whose membership never changes that is the
        // initial one for every node. (Under membership changes a follower may not know the
        // membership its leader counted with, so only leaders' reports are checked.)
        let voters = if n.role == Role::Leader {
            n.raft.as_ref().map(|raft| raft.status().membership)
        } else if self.profile.membership_changes {
            None
        } else {
            Some(self.membership.clone())
        };
        let mut held = Vec::with_capacity(self.nodes.len());
        let mut quorum = 0;
        if let (true, Some(voters)) = (commit > previous, &voters) {
            quorum = voters.quorum();
            let term = n.disk.written().term_at(commit);
            for voter in &voters.voters {
                let holder = &self.nodes[voter.get() as usize - 1];
                let disk = holder.disk.durable();
                // A node that lost the entry to injected damage still counts for it until its
                // repair completes: its ack was honest when given, and the repair keeps it from
                // voting until it holds the entry again (what the damage tests).
                let lost = holder
                    .repair
                    .is_some_and(|repair| (repair.lost.0..=repair.lost.1).contains(&commit));
                let holds = lost
                    || match (disk.holding(commit), term) {
                        (Holding::Compacted, _) => true,
                        (Holding::Entry(t), Some(term)) => t == term,
                        (Holding::Entry(_), None) => true,
                        (Holding::Missing, _) => false,
                    };
                held.push((*voter, holds));
            }
        }
        self.checker
            .on_commit(id, previous, commit, &held, quorum)?;
        // Entries a leader commits are committed in its term: every leader of a later term must
        // hold them (the leaders of later terms that exist already are checked here, later ones
        // when they are elected).
        if n.role == Role::Leader && commit > previous {
            let term = n.term;
            let from = previous.next();
            self.checker.on_leader_commit(term, from, commit);
            for other in &self.nodes {
                if other.is_leader() && other.leader_confirmed && other.term > term {
                    self.checker.check_leader_holds(
                        other.id,
                        other.term,
                        other.disk.written(),
                        from,
                        commit,
                    )?;
                }
            }
        }
        self.nodes[node].commit = commit;
        self.trace
            .record(self.queue.now(), format_args!("{id} commit {commit}"));
        Ok(())
    }

    fn serve_reads(&mut self, node: usize) -> Checked {
        let n = &mut self.nodes[node];
        if n.reads.is_empty() {
            return Ok(());
        }
        let applied = n.digest.applied;
        let id = n.id;
        let (ready, waiting): (Vec<_>, Vec<_>) = n
            .reads
            .drain(..)
            .partition(|(read, _)| read.index <= applied);
        n.reads = waiting;
        for (read, issued) in ready {
            self.checker
                .on_read_served(id, read.id.0, issued, read.index)?;
            self.stats.reads_served += 1;
            self.trace.record(
                self.queue.now(),
                format_args!(
                    "{id} serves read r{} at {} (applied {applied})",
                    read.id.0, read.index
                ),
            );
        }
        Ok(())
    }
}
