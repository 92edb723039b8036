//! The consensus thread: owns the [`Raft`] core and the reply targets of what was proposed here.
//!
//! One loop turn: wait for anything (or the next tick), drain every input that is already
//! queued (peer messages, client requests, embedding-API requests, stage feedback), tick if due,
//! then take ONE `ready()`. Everything that arrived while the previous turn ran lands in the same
//! batch: that is where batching comes from. The `Ready` is then carried out: the storage write
//! goes to storage (the leader's own append runs in parallel with the appends it sends),
//! messages go to the network, committed batches (with their targets) and confirmed reads go to
//! apply.
//!
//! A follower holds committed batches back from apply for up to [`APPLY_DEFER_FOR`] (or until a
//! read, a snapshot, a role change or stop needs them, or [`APPLY_DEFER_ENTRIES_MAX`] entries
//! wait): nobody waits for them there, and one hand-off per period instead of one per append
//! spares the apply thread (and the CPU the commit path needs) a wake-up per append.
//!
//! Targets: an entry proposed here is answered by apply once applied; entries still
//! uncommitted when this node stops leading are answered `OutcomeUnknown`; requests on a
//! non-leader get `NotLeader` with the leader's client address.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use crossbeam_channel::{Receiver, Sender};

use crate::batch::{Batch, ENTRY_BYTES_MAX};
use crate::net::{ClientReply, ClientRequest, ConnId, NetEvent, NetHandle, Transport};
use crate::node::peers::PeerBook;
use crate::node::pipeline::{
    error_reply, ApplyMsg, BatchOutcome, BatchWaiter, Feedback, PendingRead, Shared, StorageMsg,
    Target, ToStorage,
};
use crate::node::spin::Spin;
use crate::node::stats::{InboxProbes, Observed};
use crate::node::{Applied, AppliedBatch, NodeCounters, NodeError, NodeStatus, PeerProgress};
use crate::raft::{
    MembershipChange, ProgressState, ProposeError, Raft, ReadId, Ready, Role, WriteId,
};
use crate::types::{LogIndex, NodeId};

/// Most inputs taken in one loop turn (so ticks and outputs are never starved).
const INPUTS_PER_TURN_MAX: usize = 4096;

/// Most committed entries a follower holds back from apply.
pub(crate) const APPLY_DEFER_ENTRIES_MAX: u64 = 16_384;

/// Longest a follower holds a committed batch back from apply (checked at each tick). Ten
/// milliseconds: a tenth of the default election timeout, so a new leader has little to apply,
/// and far above a lone commit's time, so a follower's apply thread wakes once per many
/// commits instead of at every tick.
pub(crate) const APPLY_DEFER_FOR: Duration = Duration::from_millis(10);

/// A request from the embedding API ([`super::Node`]).
pub(crate) enum Request {
    /// Propose a command.
    Propose(Bytes, Sender<Result<Applied, NodeError>>),
    /// Propose several commands at consecutive indexes.
    ProposeBatch(Vec<Bytes>, Sender<Result<AppliedBatch, NodeError>>),
    /// A linearizable read.
    Read(Bytes, Sender<Result<Applied, NodeError>>),
    /// A read of this node's applied state, at once.
    ReadLocal(Bytes, Sender<Result<Applied, NodeError>>),
    /// The node's status.
    Status(Sender<NodeStatus>),
    /// Hand leadership over.
    Transfer(NodeId, Sender<Result<(), NodeError>>),
    /// Change the membership.
    Membership(MembershipChange, Sender<Result<Applied, NodeError>>),
    /// Stop the node.
    Stop,
}

/// The consensus stage's state.
pub(crate) struct ConsensusStage {
    pub raft: Raft,
    pub tick: Duration,
    pub net: Option<NetHandle>,
    pub to_storage: ToStorage,
    pub to_apply: Sender<ApplyMsg>,
    pub shared: Arc<Shared>,
    /// The transport's peers and the members' client addresses, following the membership.
    peers: PeerBook,
    /// For the network counters in the status.
    transport: Option<Arc<Transport>>,
    /// Entries proposed here and not yet handed to apply, ascending by index.
    pending: VecDeque<(LogIndex, Target)>,
    reads: HashMap<u64, (Bytes, Target)>,
    next_read: u64,
    leader: Option<NodeId>,
    role: Role,
    replies: Vec<(ConnId, ClientReply)>,
    local_reads: Vec<PendingRead>,
    /// Leader changes, error replies, queue probes and rates, for the status.
    observed: Observed,
    /// Spin-before-block after a turn that handled input.
    spin: Spin,
    /// Committed batches (with no targets) held back from apply on a follower, their entry
    /// count, and when the first of them was held back.
    deferred: Vec<Batch>,
    deferred_entries: u64,
    deferred_since: Option<Instant>,
    /// The last durable write id taken from [`Shared::durable_write`].
    durable_seen: u64,
}

/// Whether the loop keeps going.
#[derive(PartialEq, Eq)]
enum Flow {
    Continue,
    Stop,
}

impl ConsensusStage {
    /// A stage over a core restored from disk; `transport` is `None` without a network.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        raft: Raft,
        tick: Duration,
        to_storage: ToStorage,
        to_apply: Sender<ApplyMsg>,
        shared: Arc<Shared>,
        peers: PeerBook,
        transport: Option<Arc<Transport>>,
        spin: Spin,
    ) -> ConsensusStage {
        let start = raft.status();
        let observed = Observed::new(start.commit.get(), start.applied.get());
        ConsensusStage {
            raft,
            tick,
            net: transport.as_ref().map(|transport| transport.handle()),
            to_storage,
            to_apply,
            shared,
            peers,
            transport,
            pending: VecDeque::new(),
            reads: HashMap::new(),
            next_read: 1,
            leader: None,
            role: Role::Follower,
            replies: Vec::new(),
            local_reads: Vec::new(),
            observed,
            spin,
            deferred: Vec::new(),
            deferred_entries: 0,
            deferred_since: None,
            durable_seen: 0,
        }
    }

    /// Runs until [`Request::Stop`], the API side going away, or a fatal stage error. On the
    /// way out every waiting proposer and reader is answered and the senders to storage and
    /// apply are dropped, so those stages drain and finish.
    pub(crate) fn run(
        mut self,
        requests: Receiver<Request>,
        net_events: Receiver<NetEvent>,
        feedback: Receiver<Feedback>,
    ) {
        let mut next_tick = Instant::now() + self.tick;
        self.observed
            .probe(InboxProbes::new(&requests, &net_events, &feedback));
        // Whether the previous turn handled an input (a turn woken only by the tick does not
        // spin: the next input is then not likely to be close).
        let mut active = false;
        loop {
            if active {
                let until_tick = next_tick.saturating_duration_since(Instant::now());
                self.spin.until(until_tick, || {
                    !feedback.is_empty() || !net_events.is_empty() || !requests.is_empty()
                });
            }
            let timeout = next_tick.saturating_duration_since(Instant::now());
            let mut taken = 1;
            let mut flow = crossbeam_channel::select! {
                recv(requests) -> request => match request {
                    Ok(request) => self.on_request(request),
                    Err(_) => Flow::Stop,
                },
                recv(net_events) -> event => match event {
                    Ok(event) => self.on_net(event),
                    Err(_) => Flow::Continue,
                },
                recv(feedback) -> item => match item {
                    Ok(item) => self.on_feedback(item),
                    Err(_) => Flow::Continue,
                },
                default(timeout) => {
                    taken = 0;
                    Flow::Continue
                },
            };
            active = taken > 0;
            while flow == Flow::Continue && taken < INPUTS_PER_TURN_MAX {
                taken += 1;
                flow = if let Ok(item) = feedback.try_recv() {
                    self.on_feedback(item)
                } else if let Ok(event) = net_events.try_recv() {
                    self.on_net(event)
                } else if let Ok(request) = requests.try_recv() {
                    self.on_request(request)
                } else {
                    break;
                };
                active = true;
            }
            if flow == Flow::Stop {
                break;
            }
            self.take_durable();
            let now = Instant::now();
            if now >= next_tick {
                let held = self.deferred_since;
                if held.is_some_and(|since| now.duration_since(since) >= APPLY_DEFER_FOR)
                    && self.apply_deferred() == Flow::Stop
                {
                    break;
                }
                self.raft.tick();
                next_tick += self.tick;
                if next_tick < now {
                    // Far behind (a long stall): do not replay the missed ticks in a burst.
                    next_tick = now + self.tick;
                }
            }
            self.peers.sync(&self.raft, self.net.as_ref());
            if self.raft.has_ready() {
                let ready = self.raft.ready();
                if self.perform(ready) == Flow::Stop {
                    break;
                }
            }
            self.flush();
        }
        self.stop(&requests);
    }

    fn leader_addr(&self) -> Option<SocketAddr> {
        self.leader
            .and_then(|leader| self.peers.client_addr(leader))
    }

    fn refusal(&self, error: ProposeError) -> NodeError {
        match error {
            ProposeError::NotLeader { leader } => NodeError::NotLeader { leader },
            other => NodeError::Refused(other.to_string()),
        }
    }

    fn propose(&mut self, command: &[u8], target: Target) {
        match self.raft.propose(command) {
            Ok(index) => self.pending.push_back((index, target)),
            Err(error) => {
                let error = self.refusal(error);
                let addr = self.leader_addr();
                target.fail(error, addr, &mut self.replies);
            }
        }
    }

    /// Proposes every command of a batch, or none: the checks that could refuse one command
    /// (leadership, size) are made before the first is proposed.
    fn propose_batch(&mut self, commands: &[Bytes], waiter: BatchWaiter) {
        let refusal = if commands.is_empty() {
            Some(NodeError::Refused(
                "a batch proposal needs at least one command".to_string(),
            ))
        } else {
            commands
                .iter()
                .position(|command| command.len() > ENTRY_BYTES_MAX)
                .map(|at| {
                    NodeError::Refused(format!(
                        "command {at} of the batch: {}",
                        ProposeError::EntryTooLarge {
                            bytes: commands[at].len()
                        }
                    ))
                })
        };
        if let Some(error) = refusal {
            let addr = self.leader_addr();
            waiter.fail(error, addr, &mut self.replies);
            return;
        }
        let mut targets = BatchOutcome::targets(waiter, commands.len());
        for (at, command) in commands.iter().enumerate() {
            let target = targets.next().expect("one target per command");
            match self.raft.propose(command) {
                Ok(index) => {
                    assert!(
                        self.pending.back().map_or(true, |(last, _)| *last < index),
                        "batch command {at} got index {index} after {:?}",
                        self.pending.back().map(|(last, _)| last)
                    );
                    self.pending.push_back((index, target));
                }
                Err(error) => {
                    assert_eq!(at, 0, "batch command {at} refused after the first: {error}");
                    let error = self.refusal(error);
                    let addr = self.leader_addr();
                    target.fail(error, addr, &mut self.replies);
                    return;
                }
            }
        }
    }

    fn read(&mut self, query: Bytes, target: Target) {
        let id = self.next_read;
        match self.raft.read_index(ReadId(id)) {
            Ok(()) => {
                self.next_read += 1;
                self.reads.insert(id, (query, target));
            }
            Err(error) => {
                let error = self.refusal(error);
                let addr = self.leader_addr();
                target.fail(error, addr, &mut self.replies);
            }
        }
    }

    fn on_request(&mut self, request: Request) -> Flow {
        match request {
            Request::Propose(command, sender) => self.propose(&command, Target::Receipt(sender)),
            Request::ProposeBatch(commands, sender) => {
                self.propose_batch(&commands, BatchWaiter::Receipt(sender))
            }
            Request::Read(query, sender) => self.read(query, Target::Receipt(sender)),
            Request::ReadLocal(query, sender) => self.local_reads.push(PendingRead {
                index: LogIndex::ZERO,
                query,
                target: Target::Receipt(sender),
            }),
            Request::Status(sender) => drop(sender.send(self.status())),
            Request::Transfer(to, sender) => {
                let outcome = self
                    .raft
                    .transfer_leadership(to)
                    .map_err(|error| self.refusal(error));
                drop(sender.send(outcome));
            }
            Request::Membership(change, sender) => match self.raft.propose_membership(change) {
                Ok(index) => self.pending.push_back((index, Target::Receipt(sender))),
                Err(error) => drop(sender.send(Err(self.refusal(error)))),
            },
            Request::Stop => return Flow::Stop,
        }
        Flow::Continue
    }

    fn on_net(&mut self, event: NetEvent) -> Flow {
        match event {
            NetEvent::Peer(messages) => {
                for message in messages {
                    self.raft.step(message);
                }
            }
            NetEvent::Client { conn, requests } => {
                for request in requests {
                    self.on_client(conn, request);
                }
            }
            NetEvent::ClientGone(_) => {}
        }
        Flow::Continue
    }

    fn on_client(&mut self, conn: ConnId, request: ClientRequest) {
        match request {
            ClientRequest::Propose { req, command } => {
                self.propose(&command, Target::Client { conn, req })
            }
            ClientRequest::ProposeBatch { req, commands } => {
                self.propose_batch(&commands, BatchWaiter::Client { conn, req })
            }
            ClientRequest::Read {
                req,
                query,
                linearizable: true,
            } => self.read(query, Target::Client { conn, req }),
            ClientRequest::Read {
                req,
                query,
                linearizable: false,
            } => self.local_reads.push(PendingRead {
                index: LogIndex::ZERO,
                query,
                target: Target::Client { conn, req },
            }),
            ClientRequest::Status { req } => {
                let json =
                    serde_json::to_string(&self.status()).expect("a status always serializes");
                self.replies.push((conn, ClientReply::Status { req, json }));
            }
            ClientRequest::TransferLeader { req, to } => {
                let reply = match self.raft.transfer_leadership(to) {
                    Ok(()) => ClientReply::Ok { req },
                    Err(error) => {
                        let error = self.refusal(error);
                        error_reply(req, &error, self.leader_addr())
                    }
                };
                self.replies.push((conn, reply));
            }
            ClientRequest::ChangeMembership { req, change } => {
                match self.raft.propose_membership(change) {
                    Ok(index) => self
                        .pending
                        .push_back((index, Target::Client { conn, req })),
                    Err(error) => {
                        let error = self.refusal(error);
                        let reply = error_reply(req, &error, self.leader_addr());
                        self.replies.push((conn, reply));
                    }
                }
            }
        }
    }

    fn on_feedback(&mut self, item: Feedback) -> Flow {
        match item {
            Feedback::Durable(write) => self.raft.on_durable(write),
            Feedback::Snapshot(meta, data) => {
                let index = meta.index;
                self.raft.compact(meta, data);
                if self.to_storage.send(StorageMsg::Compact(index)).is_err() {
                    return Flow::Stop;
                }
            }
            Feedback::Failed(error) => {
                self.shared.fail(error);
                return Flow::Stop;
            }
        }
        Flow::Continue
    }

    /// Carries out one `Ready`.
    fn perform(&mut self, ready: Ready) -> Flow {
        let Ready {
            messages,
            write,
            committed,
            commit_index,
            reads,
            reads_failed,
            soft_state,
        } = ready;
        let mut lost_leadership = false;
        if let Some(soft) = soft_state {
            lost_leadership = self.role == Role::Leader && soft.role != Role::Leader;
            self.role = soft.role;
            self.shared
                .durable_feedback
                .store(soft.role != Role::Follower, Ordering::Release);
            self.observed.leader_seen(self.leader, soft.leader);
            self.leader = soft.leader;
        }
        // Messages first: a follower's append, write, sync and ack is the longer leg of a
        // commit, so it starts before the leader's own write is handed over. Safe in any order:
        // what may leave only after a sync travels in `write.after_durable`, not here.
        if !messages.is_empty() {
            if let Some(net) = &self.net {
                net.send(messages);
            }
        }
        if let Some(write) = write {
            if let Some((meta, data)) = write.snapshot.as_deref() {
                self.fail_covered_by_snapshot(meta.index);
                if self.apply_deferred() == Flow::Stop {
                    return Flow::Stop;
                }
                let install = ApplyMsg::Install(meta.clone(), data.clone());
                if self.to_apply.send(install).is_err() {
                    return Flow::Stop;
                }
            }
            if self.to_storage.send(StorageMsg::Write(write)).is_err() {
                return Flow::Stop;
            }
        }
        if let Some(last) = committed.last().map(|batch| batch.last_index()) {
            let mut targets = Vec::new();
            while self
                .pending
                .front()
                .is_some_and(|(index, _)| *index <= last)
            {
                targets.push(self.pending.pop_front().expect("front"));
            }
            let entries: u64 = committed
                .iter()
                .map(|batch| u64::from(batch.entry_count()))
                .sum();
            if targets.is_empty()
                && self.role == Role::Follower
                && self.deferred_entries + entries <= APPLY_DEFER_ENTRIES_MAX
            {
                self.deferred_since.get_or_insert_with(Instant::now);
                self.deferred.extend(committed);
                self.deferred_entries += entries;
            } else {
                let mut batches = self.take_deferred();
                batches.extend(committed);
                if self
                    .to_apply
                    .send(ApplyMsg::Committed { batches, targets })
                    .is_err()
                {
                    return Flow::Stop;
                }
            }
        }
        if lost_leadership {
            self.fail_uncommitted(commit_index);
        }
        for ready in reads {
            if let Some((query, target)) = self.reads.remove(&ready.id.0) {
                self.local_reads.push(PendingRead {
                    index: ready.index,
                    query,
                    target,
                });
            }
        }
        for failed in reads_failed {
            if let Some((_, target)) = self.reads.remove(&failed.0) {
                let error = NodeError::NotLeader {
                    leader: self.leader,
                };
                let addr = self.leader_addr();
                target.fail(error, addr, &mut self.replies);
            }
        }
        Flow::Continue
    }

    /// Leadership is gone: what was proposed here and is not committed may or may not commit.
    fn fail_uncommitted(&mut self, commit: LogIndex) {
        let addr = self.leader_addr();
        while let Some((index, target)) = self.pending.pop_back() {
            assert!(
                index > commit,
                "entry {index} is committed (commit {commit}) but was never handed to apply"
            );
            target.fail(NodeError::OutcomeUnknown, addr, &mut self.replies);
        }
    }

    /// A snapshot from the leader replaces the log up to `index`: proposals made here at or
    /// below it will never be handed to apply one by one, and whether the entry that committed
    /// at their index is theirs cannot be told from the snapshot, so their outcome is unknown.
    /// (A deposed leader that is behind can step down and install a snapshot in one turn.)
    fn fail_covered_by_snapshot(&mut self, index: LogIndex) {
        let addr = self.leader_addr();
        while self
            .pending
            .front()
            .is_some_and(|(pending, _)| *pending <= index)
        {
            let (_, target) = self.pending.pop_front().expect("front");
            target.fail(NodeError::OutcomeUnknown, addr, &mut self.replies);
        }
    }

    /// Takes the durable write id storage published (see [`Shared::durable_feedback`]).
    fn take_durable(&mut self) {
        let durable = self.shared.durable_write.load(Ordering::Acquire);
        if durable > self.durable_seen {
            self.durable_seen = durable;
            self.raft.on_durable(WriteId(durable));
        }
    }

    /// Hands the committed batches held back on a follower to apply.
    fn apply_deferred(&mut self) -> Flow {
        if self.deferred.is_empty() {
            return Flow::Continue;
        }
        let batches = self.take_deferred();
        let message = ApplyMsg::Committed {
            batches,
            targets: Vec::new(),
        };
        match self.to_apply.send(message) {
            Ok(()) => Flow::Continue,
            Err(_) => Flow::Stop,
        }
    }

    fn take_deferred(&mut self) -> Vec<Batch> {
        self.deferred_entries = 0;
        self.deferred_since = None;
        std::mem::take(&mut self.deferred)
    }

    /// Sends what this turn produced for apply and for clients.
    fn flush(&mut self) {
        if !self.local_reads.is_empty() {
            // A read waits for an index that may sit in the held-back batches.
            self.apply_deferred();
            let reads = std::mem::take(&mut self.local_reads);
            // A closed apply channel means the node is stopping; the reads are dropped.
            drop(self.to_apply.send(ApplyMsg::Reads(reads)));
        }
        if !self.replies.is_empty() {
            self.observed.count_replies(&self.replies);
            match &self.net {
                Some(net) => net.reply(std::mem::take(&mut self.replies)),
                None => self.replies.clear(),
            }
        }
    }

    fn status(&mut self) -> NodeStatus {
        let applied = self.shared.applied();
        self.raft.on_applied(applied);
        let applied = applied.get();
        let status = self.raft.status();
        let log = *self.shared.log.lock().expect("log counters lock");
        let runtime = self.observed.status(
            self.to_storage.channel(),
            &self.to_apply,
            &log,
            status.commit.get(),
            applied,
            &self.shared.sync_latency,
        );
        NodeStatus {
            id: status.id.get(),
            role: role_name(status.role).to_string(),
            term: status.term.get(),
            leader: status.leader.map(NodeId::get),
            commit: status.commit.get(),
            applied,
            durable: status.durable.get(),
            repair_until: status.repair_until.map(LogIndex::get),
            peers: status
                .progress
                .iter()
                .map(|peer| PeerProgress {
                    id: peer.id.get(),
                    matched: peer.match_index.get(),
                    next: peer.next_index.get(),
                    state: match peer.state {
                        ProgressState::Probe => "probe",
                        ProgressState::Replicate => "replicate",
                        ProgressState::Snapshot => "snapshot",
                    }
                    .to_string(),
                    inflight_messages: peer.inflight_messages,
                    inflight_bytes: peer.inflight_bytes,
                })
                .collect(),
            members: self.peers.members(self.raft.membership()),
            members_committed: self.raft.membership_committed(),
            counters: NodeCounters {
                entries_proposed: status.stats.entries_proposed,
                batches_sealed: status.stats.batches_sealed,
                storage_writes: status.stats.writes,
                elections_started: status.stats.elections_started,
                snapshot_chunks_sent: status.stats.snapshot_chunks_sent,
                snapshots_installed: status.stats.snapshots_installed,
                reads_ready: status.stats.reads_ready,
            },
            log,
            net: self.transport.as_ref().map(|transport| transport.stats()),
            runtime,
        }
    }

    /// Answers everyone still waiting here; dropping `self` then closes the stage channels.
    fn stop(mut self, requests: &Receiver<Request>) {
        self.shared.exited.store(true, Ordering::Release);
        // What committed is applied before the node stops.
        self.apply_deferred();
        // Requests still queued are dropped: their waiters see the node gone.
        while requests.try_recv().is_ok() {}
        let error = self.shared.gone();
        for (_, target) in std::mem::take(&mut self.pending) {
            target.fail(error.clone(), None, &mut self.replies);
        }
        for (_, (_, target)) in std::mem::take(&mut self.reads) {
            target.fail(error.clone(), None, &mut self.replies);
        }
        self.flush();
    }
}

/// The status name of a role.
pub(crate) fn role_name(role: Role) -> &'static str {
    match role {
        Role::Leader => "leader",
        Role::Follower => "follower",
        Role::Candidate => "candidate",
        Role::PreCandidate => "pre-candidate",
    }
}
