//! The node side of `--embedded`: proposer threads inside the node process, on the embedding
//! API.
//!
//! For each round the bench publishes, `clients` threads each keep `depth` entries in flight as
//! receipts of `propose` (batch 1) or `propose_batch` requests, refilled as the client-protocol
//! load refills ([`refill_at`]); an entry's latency runs from the call that proposed it to its
//! receipt completing (committed by a quorum, durable, applied here). Threads propose only while
//! this node leads: a `NotLeader` or `OutcomeUnknown` answer counts what was in flight as
//! abandoned, and the thread waits for leadership again ([`Node::subscribe`]). A receipt is
//! waited on in slices (`Receipt::wait_for`), so the window's end and the node's stop are seen promptly.

use std::collections::VecDeque;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use lockstep::{Node, NodeError, Receipt, Role};

use super::{plan_path, read_json, results_path, write_json, NodeRun, Plan};
use crate::cluster::load::{refill_at, run_threads, LoadPlan, Tally, PAYLOAD};

/// The longest a proposer waits without looking at the clock and the stop flag.
const SLICE: Duration = Duration::from_millis(20);

/// Runs every round the bench publishes in `dir` on node `id`, until `ending` is set; each
/// round's results go to `dir` (a failure to write them is reported on stderr, where the bench
/// keeps the node's output).
pub fn serve(node: &Node, id: u64, dir: &Path, ending: &AtomicBool) {
    for round in 1.. {
        let Some(plan) = await_plan(dir, round, ending) else {
            return;
        };
        let run = run_round(node, &plan, ending);
        if let Err(error) = write_json(&results_path(dir, id, round), &run) {
            eprintln!("lockstep-bench node {id}: embedded round {round}: {error}");
        }
    }
}

/// Round `round`'s plan, once the bench wrote it (`None`: `ending` came first, or the plan is
/// unreadable, which is reported).
fn await_plan(dir: &Path, round: u64, ending: &AtomicBool) -> Option<Plan> {
    let path = plan_path(dir, round);
    while !path.exists() {
        if ending.load(Ordering::Relaxed) {
            return None;
        }
        std::thread::sleep(SLICE);
    }
    read_json(&path)
        .map_err(|error| eprintln!("lockstep-bench node: embedded round {round}: {error}"))
        .ok()
}

/// One round on `plan.clients` proposer threads.
fn run_round(node: &Node, plan: &Plan, ending: &AtomicBool) -> NodeRun {
    let load = plan.load_plan();
    let tally = run_threads(&load, "proposer", |load, index| {
        let mut tally = Tally::new(Some(index));
        let payload = Bytes::from_static(&PAYLOAD[..load.entry_bytes]);
        if load.batch == 1 {
            Proposer::new(node, load, ending, || node.propose(payload.clone())).run(&mut tally);
        } else {
            let commands = vec![payload; load.batch];
            Proposer::new(node, load, ending, || node.propose_batch(commands.clone()))
                .run(&mut tally);
        }
        tally
    });
    NodeRun::new(&tally, load.series.counts())
}

/// One proposer thread: its receipts in flight, oldest first, with when each was proposed.
struct Proposer<'a, T, P> {
    node: &'a Node,
    load: &'a LoadPlan,
    ending: &'a AtomicBool,
    propose: P,
    in_flight: VecDeque<(Receipt<T>, Instant)>,
}

impl<'a, T, P: Fn() -> Receipt<T>> Proposer<'a, T, P> {
    fn new(node: &'a Node, load: &'a LoadPlan, ending: &'a AtomicBool, propose: P) -> Self {
        Proposer {
            node,
            load,
            ending,
            propose,
            in_flight: VecDeque::new(),
        }
    }

    /// Whether the window is over or the node is stopping.
    fn over(&self) -> bool {
        Instant::now() >= self.load.measure_end || self.ending.load(Ordering::Relaxed)
    }

    /// Proposes while this node leads until the window ends (what is in flight then is left).
    fn run(&mut self, tally: &mut Tally) {
        let requests = self.load.depth.div_ceil(self.load.batch);
        let refill = refill_at(requests);
        let entries = self.load.batch as u64;
        self.sleep_until(self.load.load_start);
        while !self.over() {
            if self.node.leadership().role != Role::Leader {
                self.await_leadership();
                continue;
            }
            if self.in_flight.len() <= refill {
                while self.in_flight.len() < requests {
                    let since = Instant::now();
                    self.in_flight.push_back(((self.propose)(), since));
                    tally.sent += entries;
                }
            }
            let Some(outcome) = self.wait_oldest() else {
                continue;
            };
            let (_, since) = self
                .in_flight
                .pop_front()
                .expect("the oldest was waited on");
            match outcome {
                Ok(_) => tally.record(self.load, since, Instant::now(), entries),
                Err(NodeError::NotLeader { .. }) => {
                    tally.not_leader += 1;
                    self.abandon(tally);
                }
                Err(NodeError::OutcomeUnknown) => self.abandon(tally),
                Err(error) if error.is_fatal() => {
                    tally.errors.push(format!("proposer: {error}"));
                    return;
                }
                Err(_) => tally.failed += entries,
            }
        }
    }

    /// The outcome of the oldest receipt if it completes within a [`SLICE`] (and the window).
    fn wait_oldest(&mut self) -> Option<Result<T, NodeError>> {
        let left = self
            .load
            .measure_end
            .saturating_duration_since(Instant::now());
        let (receipt, _) = self.in_flight.front_mut()?;
        receipt.wait_for(left.min(SLICE))
    }

    /// Counts the answered request and everything still in flight as abandoned (their outcome
    /// is unknown) and forgets them.
    fn abandon(&mut self, tally: &mut Tally) {
        tally.abandoned += (self.in_flight.len() as u64 + 1) * self.load.batch as u64;
        self.in_flight.clear();
    }

    /// Waits until this node leads, the window ends or the node stops.
    fn await_leadership(&self) {
        let mut leadership = self.node.subscribe();
        while leadership.current().role != Role::Leader && !self.over() {
            leadership.wait_changed_timeout(SLICE);
        }
    }

    /// Sleeps until `at` (or the node stops).
    fn sleep_until(&self, at: Instant) {
        while !self.ending.load(Ordering::Relaxed) {
            let left = at.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return;
            }
            std::thread::sleep(left.min(SLICE));
        }
    }
}
