//! The consensus thread: owns the [`Raft`] core and the reply targets of what was proposed here.
//!
//! One loop turn: wait for anything (or the next tick), read the clock and give the core the
//! time (every tick due since the last turn runs, none is dropped), drain every input that was
//! queued when the clock was read (peer messages, client requests, embedding-API requests,
//! stage feedback), then take ONE `ready()`. Time goes in before the inputs so that a stage that
//! stalled runs its timeouts first and checks a lease read against the true time
//! (`docs/RUNTIME.md`, "Time"). Everything that arrived while the previous turn ran lands in the same
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
//! Inline turns: when the stage is idle (its thread is not in a turn, nothing is queued for it
//! on the events channel, few proposals wait) and an event from the network is light (a few
//! messages or entries, no snapshot), the network thread runs the turn itself
//! ([`InlineConsensus`]): it steps the event into the core and carries out the `Ready` exactly
//! as this thread would, only without the hand-off and the wake-up of this thread. Under load
//! this thread takes every turn, so batching is unchanged (`docs/RUNTIME.md`, "Inline turns").
//! The stage lives behind a mutex; this thread holds the only strong reference.
//!
//! Targets: an entry proposed here is answered by apply once applied; entries still
//! uncommitted when this node stops leading are answered `OutcomeUnknown`; requests on a
//! non-leader get `NotLeader` with the leader's client address.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use crossbeam_channel::{Receiver, Select, Sender, TryRecvError};

use crate::batch::{Batch, ENTRY_BYTES_MAX};
use crate::net::{
    ClientReply, ClientRequest, ConnId, InlineTurn, NetEvent, NetHandle, NetSink, NoNet, Transport,
};
use crate::node::events::{Leadership, Role as NodeRole, Watch};
use crate::node::peers::PeerBook;
use crate::node::pipeline::{
    error_reply, ApplyMsg, BatchOutcome, BatchWaiter, Feedback, PendingRead, Shared, StorageMsg,
    Target, ToStorage,
};
use crate::node::receipt::Completer;
use crate::node::spin::Spin;
use crate::node::stats::{InboxProbes, Observed};
use crate::node::{
    Applied, AppliedBatch, NodeCounters, NodeError, NodeStatus, PeerProgress, Refusal,
};
use crate::raft::{
    MembershipChange, MessageBody, ProgressState, ProposeError, Raft, ReadId, Ready, Role, WriteId,
};
use crate::types::{LogIndex, NodeId};

/// Most inputs taken in one loop turn (so ticks and outputs are never starved).
const INPUTS_PER_TURN_MAX: usize = 4096;

/// Heaviest event the network thread handles in an inline turn: messages plus the entries
/// they carry (or client requests plus batched commands). A heavier one goes to this thread,
/// where it is batched with whatever else arrived.
const INLINE_EVENT_ENTRIES_MAX: usize = 16;

/// Most proposals waiting for their commit with which an inline turn still runs: more means
/// load, and then this thread's turns (which batch what queued meanwhile) go faster than many
/// small turns on the network thread (`docs/BENCHMARKS.md`).
const INLINE_PENDING_MAX: usize = 8;

/// Free room an inline turn needs in the channels to storage and apply: it must never block
/// the network thread (a turn sends storage at most one write, apply at most four messages).
const INLINE_STORAGE_ROOM: usize = 1;
const INLINE_APPLY_ROOM: usize = 4;

/// Most committed entries a follower holds back from apply.
pub(crate) const APPLY_DEFER_ENTRIES_MAX: u64 = 16_384;

/// Longest a follower holds a committed batch back from apply (checked at each tick). Ten
/// milliseconds: a tenth of the default election timeout, so a new leader has little to apply,
/// and far above a lone commit's time, so a follower's apply thread wakes once per many
/// commits instead of at every tick.
pub(crate) const APPLY_DEFER_FOR: Duration = Duration::from_millis(10);

/// How a linearizable read is confirmed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ReadConfirm {
    /// As the node's `ReadMode` says (the client protocol's reads).
    AsConfigured,
    /// By a heartbeat round to a quorum, whatever the `ReadMode`.
    Round,
    /// By the leader's lease (a round when the lease is not valid); refused unless the node
    /// runs with `ReadMode::Lease`.
    Lease,
}

/// A request from the embedding API ([`super::Node`]).
pub(crate) enum Request {
    /// Propose a command.
    Propose(Bytes, Completer<Applied>),
    /// Propose several commands at consecutive indexes.
    ProposeBatch(Vec<Bytes>, Completer<AppliedBatch>),
    /// A linearizable read (its query run by apply), confirmed as `confirm` says.
    Read(Bytes, ReadConfirm, Completer<Applied>),
    /// A linearizable read index, confirmed by a heartbeat round, answered once applied here.
    ReadIndex(Completer<LogIndex>),
    /// A read of this node's applied state, at once.
    ReadLocal(Bytes, Completer<Applied>),
    /// The node's status.
    Status(Completer<NodeStatus>),
    /// Hand leadership over.
    Transfer(NodeId, Completer<()>),
    /// Change the membership.
    Membership(MembershipChange, Completer<Applied>),
    /// Stop the node.
    Stop,
}

/// The consensus stage's state.
pub(crate) struct ConsensusStage {
    pub raft: Raft,
    /// The origin of the clock passed to the core ([`Raft::advance`]), and the last time
    /// passed.
    origin: Instant,
    clock: Duration,
    /// A request that arrived after the turn that found it read the clock: the next turn
    /// takes it first.
    late_request: Option<Request>,
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
    /// Role, term and leader as published to subscribers.
    leadership: Arc<Watch>,
    /// What was last published there (compared every turn without taking its lock).
    published: Leadership,
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
    /// A turn returned [`Flow::Stop`] (or the stage stopped): no more turns, inline or not.
    halted: bool,
    /// Set at the end of every turn: whether the next may be inline as far as the load goes
    /// (read by [`InlineConsensus`] before it touches the lock, so a loaded stage's thread
    /// never finds the lock taken by a turn that is not going to run).
    inline_open: Arc<AtomicBool>,
    /// Turns taken on this stage's thread, and inline on the network thread.
    turns: u64,
    inline_turns: u64,
}

/// How many network events and requests were queued when a turn read the clock: the turn
/// takes no more, so every read it handles arrived before the time its lease is checked at.
struct Queued {
    net_events: usize,
    requests: usize,
}

/// Takes one item from `inbox` if `count` allows, counting it down.
fn take_counted<T>(inbox: &Receiver<T>, count: &mut usize) -> Option<T> {
    if *count == 0 {
        return None;
    }
    let item = inbox.try_recv().ok()?;
    *count -= 1;
    Some(item)
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
        to_storage: ToStorage,
        to_apply: Sender<ApplyMsg>,
        shared: Arc<Shared>,
        peers: PeerBook,
        transport: Option<Arc<Transport>>,
        leadership: Arc<Watch>,
        spin: Spin,
    ) -> ConsensusStage {
        let published = leadership.current();
        let start = raft.status();
        let observed = Observed::new(start.commit.get(), start.applied.get());
        ConsensusStage {
            raft,
            origin: Instant::now(),
            clock: Duration::ZERO,
            late_request: None,
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
            leadership,
            published,
            replies: Vec::new(),
            local_reads: Vec::new(),
            observed,
            spin,
            deferred: Vec::new(),
            deferred_entries: 0,
            deferred_since: None,
            durable_seen: 0,
            halted: false,
            inline_open: Arc::new(AtomicBool::new(true)),
            turns: 0,
            inline_turns: 0,
        }
    }

    /// The inline turn over `stage` (see the module docs); `net_events` is the stage's events
    /// channel.
    pub(crate) fn inline_turn(
        stage: &Arc<Mutex<ConsensusStage>>,
        net_events: Receiver<NetEvent>,
    ) -> InlineConsensus {
        let open = Arc::clone(&lock(stage).inline_open);
        InlineConsensus {
            stage: Arc::downgrade(stage),
            open,
            net_events,
        }
    }

    /// Runs until [`Request::Stop`], the API side going away, or a fatal stage error. On the
    /// way out every waiting proposer and reader is answered and the senders to storage and
    /// apply are dropped, so those stages drain and finish. `stage` is the only strong
    /// reference (inline turns hold a weak one); `net` is `None` without a network.
    pub(crate) fn run(
        stage: Arc<Mutex<ConsensusStage>>,
        requests: Receiver<Request>,
        net_events: Receiver<NetEvent>,
        feedback: Receiver<Feedback>,
        net: Option<NetHandle>,
    ) {
        let mut net: Box<dyn NetSink> = match net {
            Some(handle) => Box::new(handle),
            None => Box::new(NoNet),
        };
        let spin = {
            let mut locked = lock(&stage);
            locked
                .observed
                .probe(InboxProbes::new(&requests, &net_events, &feedback));
            locked.spin
        };
        let mut next_tick = lock(&stage).next_wake();
        let mut inboxes = Select::new();
        inboxes.recv(&requests);
        inboxes.recv(&net_events);
        inboxes.recv(&feedback);
        // Whether the previous turn handled an input (a turn woken only by the tick does not
        // spin: the next input is then not likely to be close).
        let mut active = false;
        loop {
            if active {
                let until_tick = next_tick.saturating_duration_since(Instant::now());
                spin.until(until_tick, || {
                    !feedback.is_empty() || !net_events.is_empty() || !requests.is_empty()
                });
            }
            let timeout = next_tick.saturating_duration_since(Instant::now());
            // Inputs are taken under the lock; an inline turn may take an event first.
            let _ = inboxes.ready_timeout(timeout);
            let mut locked = lock(&stage);
            if locked.halted {
                break;
            }
            // Counted before the clock is read: every input the turn takes arrived before the
            // time the turn gives the core.
            let queued = Queued {
                net_events: net_events.len(),
                requests: requests.len(),
            };
            if locked.start_turn() == Flow::Stop {
                break;
            }
            let (flow, taken) = locked.take_inputs(&requests, &net_events, &feedback, queued);
            active = taken > 0;
            locked.turns += 1;
            if flow == Flow::Stop || locked.finish_turn(net.as_mut()) == Flow::Stop {
                break;
            }
            next_tick = locked.next_wake();
        }
        lock(&stage).stop(&requests, net.as_mut());
    }

    /// Takes what is queued (feedback first, then network events, then requests), up to
    /// [`INPUTS_PER_TURN_MAX`] and no more network events and requests than `queued` counted
    /// before the turn read the clock; returns how the loop goes on and how many inputs it took.
    fn take_inputs(
        &mut self,
        requests: &Receiver<Request>,
        net_events: &Receiver<NetEvent>,
        feedback: &Receiver<Feedback>,
        mut queued: Queued,
    ) -> (Flow, usize) {
        let mut taken = 0;
        if let Some(request) = self.late_request.take() {
            taken += 1;
            if self.on_request(request) == Flow::Stop {
                return (Flow::Stop, taken);
            }
        }
        while taken < INPUTS_PER_TURN_MAX {
            let flow = if let Ok(item) = feedback.try_recv() {
                self.on_feedback(item)
            } else if let Some(event) = take_counted(net_events, &mut queued.net_events) {
                self.on_net(event)
            } else if let Some(request) = take_counted(requests, &mut queued.requests) {
                self.on_request(request)
            } else {
                // Nothing more that was queued in time; a closed request channel still stops
                // the stage, and a request that came later waits for the next turn.
                match requests.try_recv() {
                    Ok(request) => self.late_request = Some(request),
                    Err(TryRecvError::Disconnected) => return (Flow::Stop, taken),
                    Err(TryRecvError::Empty) => {}
                }
                break;
            };
            taken += 1;
            if flow == Flow::Stop {
                return (Flow::Stop, taken);
            }
        }
        (Flow::Continue, taken)
    }

    /// When the loop must turn next: at the core's next tick, or at once when a request waits
    /// for its turn.
    fn next_wake(&self) -> Instant {
        if self.late_request.is_some() {
            return self.origin;
        }
        self.origin + self.raft.next_tick_at()
    }

    /// The start of every turn, inline or not, before it takes any input: reads the clock (the
    /// turn's only read), hands held-back batches to apply once they waited long enough, and
    /// gives the core the time, which runs every tick that fell due since the last turn
    /// (`docs/RUNTIME.md`, "Time").
    fn start_turn(&mut self) -> Flow {
        let now = Instant::now();
        let held = self.deferred_since;
        if held.is_some_and(|since| now.duration_since(since) >= APPLY_DEFER_FOR)
            && self.apply_deferred() == Flow::Stop
        {
            return Flow::Stop;
        }
        // The clock is monotonic; should it ever step back, the core sees it stand still.
        self.clock = self.clock.max(now.duration_since(self.origin));
        self.raft.advance(self.clock);
        Flow::Continue
    }

    /// The end of every turn, inline or not: takes the durable write, follows the membership,
    /// carries out the core's `Ready` and sends what the turn produced. A `Stop` halts the
    /// stage.
    fn finish_turn(&mut self, net: &mut dyn NetSink) -> Flow {
        self.take_durable();
        self.peers.sync(&self.raft, net);
        let mut flow = Flow::Continue;
        if self.raft.has_ready() {
            let ready = self.raft.ready();
            flow = self.perform(ready, net);
        }
        if flow == Flow::Continue {
            self.flush(net);
        } else {
            self.halted = true;
        }
        self.inline_open
            .store(self.load_allows_inline(), Ordering::Relaxed);
        flow
    }

    /// Whether the stage is live and light enough for an inline turn (what
    /// [`ConsensusStage::inline_open`] publishes).
    fn load_allows_inline(&self) -> bool {
        !self.halted && self.pending.len() <= INLINE_PENDING_MAX
    }

    /// Whether an inline turn may run now: the stage is live, not loaded, and has room to
    /// hand the turn's output on without blocking.
    fn may_turn_inline(&self) -> bool {
        fn room<T>(sender: &Sender<T>) -> usize {
            sender
                .capacity()
                .map_or(usize::MAX, |capacity| capacity - sender.len().min(capacity))
        }
        self.load_allows_inline()
            && room(self.to_storage.channel()) >= INLINE_STORAGE_ROOM
            && room(&self.to_apply) >= INLINE_APPLY_ROOM
    }

    /// Publishes `now` to the subscribers if it changed.
    fn publish(&mut self, now: Leadership) {
        if now != self.published {
            self.published = now;
            self.leadership.publish(now);
        }
    }

    fn not_leader(&self, leader: Option<NodeId>) -> NodeError {
        NodeError::NotLeader {
            leader: leader.map(|id| self.peers.hint(id)),
        }
    }

    fn refusal(&self, error: ProposeError) -> NodeError {
        match error {
            ProposeError::NotLeader { leader } => self.not_leader(leader),
            other => NodeError::Refused(Refusal::Consensus(other)),
        }
    }

    fn propose(&mut self, command: &[u8], target: Target) {
        match self.raft.propose(command) {
            Ok(index) => self.pending.push_back((index, target)),
            Err(error) => {
                let error = self.refusal(error);
                target.fail(error, &mut self.replies);
            }
        }
    }

    /// Proposes every command of a batch, or none: the checks that could refuse one command
    /// (leadership, size) are made before the first is proposed.
    fn propose_batch(&mut self, commands: &[Bytes], waiter: BatchWaiter) {
        let refusal = if commands.is_empty() {
            Some(NodeError::Refused(Refusal::EmptyBatch))
        } else {
            commands
                .iter()
                .position(|command| command.len() > ENTRY_BYTES_MAX)
                .map(|at| {
                    NodeError::Refused(Refusal::BatchCommandTooLarge {
                        at,
                        bytes: commands[at].len(),
                    })
                })
        };
        if let Some(error) = refusal {
            waiter.fail(error, &mut self.replies);
            return;
        }
        let mut targets = BatchOutcome::targets(waiter, commands.len());
        for (at, command) in commands.iter().enumerate() {
            let target = targets.next().expect("one target per command");
            match self.raft.propose(command) {
                Ok(index) => {
                    assert!(
                        self.pending.back().is_none_or(|(last, _)| *last < index),
                        "batch command {at} got index {index} after {:?}",
                        self.pending.back().map(|(last, _)| last)
                    );
                    self.pending.push_back((index, target));
                }
                Err(error) => {
                    assert_eq!(at, 0, "batch command {at} refused after the first: {error}");
                    let error = self.refusal(error);
                    target.fail(error, &mut self.replies);
                    return;
                }
            }
        }
    }

    fn read(&mut self, query: Bytes, confirm: ReadConfirm, target: Target) {
        let id = self.next_read;
        let started = match confirm {
            ReadConfirm::AsConfigured => self.raft.read_index(ReadId(id)),
            ReadConfirm::Round => self.raft.read_index_by_round(ReadId(id)),
            ReadConfirm::Lease if !self.raft.lease_reads() => {
                target.fail(
                    NodeError::Refused(Refusal::LeaseReadsOff),
                    &mut self.replies,
                );
                return;
            }
            ReadConfirm::Lease => self.raft.read_index(ReadId(id)),
        };
        match started {
            Ok(()) => {
                self.next_read += 1;
                self.reads.insert(id, (query, target));
            }
            Err(error) => {
                let error = self.refusal(error);
                target.fail(error, &mut self.replies);
            }
        }
    }

    fn on_request(&mut self, request: Request) -> Flow {
        match request {
            Request::Propose(command, done) => self.propose(&command, Target::Receipt(done)),
            Request::ProposeBatch(commands, done) => {
                self.propose_batch(&commands, BatchWaiter::Receipt(done))
            }
            Request::Read(query, confirm, done) => self.read(query, confirm, Target::Receipt(done)),
            Request::ReadIndex(done) => {
                self.read(Bytes::new(), ReadConfirm::Round, Target::Index(done))
            }
            Request::ReadLocal(query, done) => self.local_reads.push(PendingRead {
                index: LogIndex::ZERO,
                query,
                target: Target::Receipt(done),
            }),
            Request::Status(done) => done.complete(Ok(self.status())),
            Request::Transfer(to, done) => {
                let outcome = self
                    .raft
                    .transfer_leadership(to)
                    .map_err(|error| self.refusal(error));
                done.complete(outcome);
            }
            Request::Membership(change, done) => match self.raft.propose_membership(change) {
                Ok(index) => self.pending.push_back((index, Target::Receipt(done))),
                Err(error) => done.complete(Err(self.refusal(error))),
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
            } => self.read(
                query,
                ReadConfirm::AsConfigured,
                Target::Client { conn, req },
            ),
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
                        error_reply(req, &error)
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
                        let reply = error_reply(req, &error);
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
    fn perform(&mut self, ready: Ready, net: &mut dyn NetSink) -> Flow {
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
        self.publish(Leadership {
            role: self.role.into(),
            term: self.raft.term(),
            leader: self.leader,
        });
        // Messages first: a follower's append, write, sync and ack is the longer leg of a
        // commit, so it starts before the leader's own write is handed over. Safe in any order:
        // what may leave only after a sync travels in `write.after_durable`, not here.
        if !messages.is_empty() {
            net.send(messages);
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
                let error = self.not_leader(self.leader);
                target.fail(error, &mut self.replies);
            }
        }
        Flow::Continue
    }

    /// Leadership is gone: what was proposed here and is not committed may or may not commit.
    fn fail_uncommitted(&mut self, commit: LogIndex) {
        while let Some((index, target)) = self.pending.pop_back() {
            assert!(
                index > commit,
                "entry {index} is committed (commit {commit}) but was never handed to apply"
            );
            target.fail(NodeError::OutcomeUnknown, &mut self.replies);
        }
    }

    /// A snapshot from the leader replaces the log up to `index`: proposals made here at or
    /// below it will never be handed to apply one by one, and whether the entry that committed
    /// at their index is theirs cannot be told from the snapshot, so their outcome is unknown.
    /// (A deposed leader that is behind can step down and install a snapshot in one turn.)
    fn fail_covered_by_snapshot(&mut self, index: LogIndex) {
        while self
            .pending
            .front()
            .is_some_and(|(pending, _)| *pending <= index)
        {
            let (_, target) = self.pending.pop_front().expect("front");
            target.fail(NodeError::OutcomeUnknown, &mut self.replies);
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
    fn flush(&mut self, net: &mut dyn NetSink) {
        if !self.local_reads.is_empty() {
            // A read waits for an index that may sit in the held-back batches.
            self.apply_deferred();
            let reads = std::mem::take(&mut self.local_reads);
            // A closed apply channel means the node is stopping; the reads are dropped.
            drop(self.to_apply.send(ApplyMsg::Reads(reads)));
        }
        if !self.replies.is_empty() {
            self.observed.count_replies(&self.replies);
            net.reply(std::mem::take(&mut self.replies));
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
            role: status.role.into(),
            term: status.term.get(),
            leader: status.leader.map(NodeId::get),
            commit: status.commit.get(),
            applied,
            durable: status.durable.get(),
            repair_until: status.repair_until.map(LogIndex::get),
            suspect: status.suspect,
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
                turns: self.turns,
                inline_turns: self.inline_turns,
            },
            log,
            net: self.transport.as_ref().map(|transport| transport.stats()),
            runtime,
        }
    }

    /// Answers everyone still waiting here and halts the stage; dropping it then closes the
    /// stage channels. The transport is let go here: the last reference to the stage may be
    /// an inline turn's on the network thread, which must not end up owning (and joining)
    /// its own transport.
    fn stop(&mut self, requests: &Receiver<Request>, net: &mut dyn NetSink) {
        self.halted = true;
        self.inline_open.store(false, Ordering::Relaxed);
        self.transport = None;
        // SeqCst, paired with the senders' check (`Shared::drop_orphans`).
        self.shared.exited.store(true, Ordering::SeqCst);
        // What committed is applied before the node stops.
        self.apply_deferred();
        // Requests still queued are dropped: their waiters see the node gone.
        while requests.try_recv().is_ok() {}
        let error = self.shared.gone();
        let term = self.raft.term();
        self.publish(Leadership {
            role: NodeRole::Stopped,
            term,
            leader: None,
        });
        for (_, target) in std::mem::take(&mut self.pending) {
            target.fail(error.clone(), &mut self.replies);
        }
        for (_, (_, target)) in std::mem::take(&mut self.reads) {
            target.fail(error.clone(), &mut self.replies);
        }
        self.flush(net);
    }
}

/// Locks the stage. A poisoned lock means a turn panicked, which already took the node down
/// (every stage's panic is fatal), so it is not recovered from.
fn lock(stage: &Mutex<ConsensusStage>) -> MutexGuard<'_, ConsensusStage> {
    stage.lock().expect("consensus stage lock")
}

/// The consensus turn the network thread runs itself (see the module docs).
pub(crate) struct InlineConsensus {
    stage: Weak<Mutex<ConsensusStage>>,
    /// [`ConsensusStage::inline_open`].
    open: Arc<AtomicBool>,
    /// The events channel into the stage (only looked at: an event queued there is older than
    /// the one offered, so while any waits, the offered one queues behind it).
    net_events: Receiver<NetEvent>,
}

impl InlineTurn for InlineConsensus {
    fn offer(&mut self, event: NetEvent, net: &mut dyn NetSink) -> Option<NetEvent> {
        // The network thread is the only sender of `net_events`, so it stays empty from this
        // check until the event is handled.
        if !self.open.load(Ordering::Relaxed) || !self.net_events.is_empty() || !is_light(&event) {
            return Some(event);
        }
        let Some(stage) = self.stage.upgrade() else {
            return Some(event);
        };
        // Busy (the stage thread is in a turn): never wait for it.
        let Ok(mut locked) = stage.try_lock() else {
            return Some(event);
        };
        if !locked.may_turn_inline() {
            return Some(event);
        }
        locked.inline_turns += 1;
        // The event was read from its socket before the turn reads the clock.
        if locked.start_turn() == Flow::Stop || locked.on_net(event) == Flow::Stop {
            locked.halted = true;
        } else {
            locked.finish_turn(net);
        }
        None
    }
}

/// Whether `event` is light enough for an inline turn (see [`INLINE_EVENT_ENTRIES_MAX`]).
fn is_light(event: &NetEvent) -> bool {
    let weight = match event {
        NetEvent::Peer(messages) => {
            let mut weight = 0;
            for message in messages {
                weight += 1 + match &message.body {
                    MessageBody::Append { batches, .. } => batches
                        .iter()
                        .map(|batch| batch.entry_count() as usize)
                        .sum(),
                    MessageBody::Snapshot { .. } => return false,
                    _ => 0,
                };
            }
            weight
        }
        NetEvent::Client { requests, .. } => requests
            .iter()
            .map(|request| match request {
                ClientRequest::ProposeBatch { commands, .. } => 1 + commands.len(),
                _ => 1,
            })
            .sum(),
        NetEvent::ClientGone(_) => 0,
    };
    weight <= INLINE_EVENT_ENTRIES_MAX
}
