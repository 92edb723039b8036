//! The embedding API as an async program and a database author use it: receipts polled as
//! futures wake their task, leadership subscriptions, each read mode's refusals and answers, and
//! what a stopped node tells its subscribers.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use bytes::Bytes;
use lockstep::apply::RestoreError;
use lockstep::raft::ReadMode;
use lockstep::types::LogIndex;
use lockstep::{Node, NodeError, Refusal, Role, StateMachine};
use lockstep_testkit::cluster::{config, members, Kv};

/// A waker that counts its wakes and unparks the polling thread.
struct CountingWaker {
    wakes: AtomicUsize,
    thread: std::thread::Thread,
}

impl Wake for CountingWaker {
    fn wake(self: Arc<Self>) {
        self.wakes.fetch_add(1, Ordering::SeqCst);
        self.thread.unpark();
    }
}

/// Polls `future` until it is ready, parking between polls; returns its output and how many
/// times it was polled while pending. Every pending poll must be followed by a wake: the thread
/// parks without a deadline, so a missing wake hangs the test (caught by the outer timeout).
fn poll_to_end<F: Future + Unpin>(mut future: F) -> (F::Output, usize, usize) {
    let waker = Arc::new(CountingWaker {
        wakes: AtomicUsize::new(0),
        thread: std::thread::current(),
    });
    let as_waker = Waker::from(waker.clone());
    let mut context = Context::from_waker(&as_waker);
    let mut pending = 0;
    loop {
        if let Poll::Ready(output) = Pin::new(&mut future).poll(&mut context) {
            return (output, pending, waker.wakes.load(Ordering::SeqCst));
        }
        pending += 1;
        std::thread::park_timeout(Duration::from_secs(10));
    }
}

fn single_node(dir: &std::path::Path, lease: bool) -> Node {
    let members = members(1, false);
    let mut cfg = config(1, &members, dir, 1_000_000);
    if lease {
        cfg.raft.read_mode = ReadMode::Lease {
            clock_drift_ticks: 5,
        };
    }
    Node::start(cfg, Kv::default()).unwrap()
}

/// Waits through the node's subscription until it leads.
fn until_leader(node: &Node) {
    let mut events = node.subscribe();
    let deadline = Instant::now() + Duration::from_secs(10);
    while events.current().role != Role::Leader {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "no leader: {:?}", events.current());
        events.wait_changed_timeout(left);
    }
}

#[test]
fn receipts_polled_as_futures_wake_their_task_and_answer() {
    let dir = tempfile::tempdir().unwrap();
    let node = single_node(dir.path(), false);
    until_leader(&node);
    let (applied, pending, wakes) = poll_to_end(node.propose(Bytes::from_static(b"a=1")));
    let applied = applied.unwrap();
    assert!(
        wakes >= pending.min(1),
        "pending {pending} times, woken {wakes}"
    );
    let (batch, _, _) = poll_to_end(
        node.propose_batch(vec![Bytes::from_static(b"b=2"), Bytes::from_static(b"c=3")]),
    );
    let batch = batch.unwrap();
    assert_eq!(batch.first, applied.index.next());
    let (index, _, _) = poll_to_end(node.read_index());
    assert!(
        index.unwrap() >= batch.first.next(),
        "read index below a committed write"
    );
    let (read, _, _) = poll_to_end(node.read_linearizable(Bytes::from_static(b"c")));
    assert_eq!(read.unwrap().result, Bytes::from_static(b"3"));
    node.shutdown().unwrap();
}

#[test]
fn a_dropped_receipt_does_not_withdraw_its_proposal() {
    let dir = tempfile::tempdir().unwrap();
    let node = single_node(dir.path(), false);
    until_leader(&node);
    drop(node.propose(Bytes::from_static(b"kept=yes")));
    let read = node
        .read_linearizable(Bytes::from_static(b"kept"))
        .wait_timeout(Duration::from_secs(10))
        .unwrap();
    assert_eq!(read.result, Bytes::from_static(b"yes"));
    node.shutdown().unwrap();
}

#[test]
fn lease_reads_are_refused_unless_the_node_runs_with_leases() {
    let dir = tempfile::tempdir().unwrap();
    let node = single_node(dir.path(), false);
    until_leader(&node);
    node.propose(Bytes::from_static(b"k=v")).wait().unwrap();
    assert_eq!(
        node.read_lease(Bytes::from_static(b"k")).wait(),
        Err(NodeError::Refused(Refusal::LeaseReadsOff))
    );
    let local = node.read_local(Bytes::from_static(b"k")).wait().unwrap();
    assert_eq!(local.result, Bytes::from_static(b"v"));
    node.shutdown().unwrap();

    let dir = tempfile::tempdir().unwrap();
    let node = single_node(dir.path(), true);
    until_leader(&node);
    let written = node.propose(Bytes::from_static(b"k=w")).wait().unwrap();
    let read = node
        .read_lease(Bytes::from_static(b"k"))
        .wait_timeout(Duration::from_secs(10))
        .unwrap();
    assert_eq!(read.result, Bytes::from_static(b"w"));
    assert!(read.index >= written.index);
    node.shutdown().unwrap();
}

#[test]
fn subscribers_see_the_leader_and_then_the_stop() {
    let dir = tempfile::tempdir().unwrap();
    let node = single_node(dir.path(), false);
    let mut events = node.subscribe();
    until_leader(&node);
    let now = node.leadership();
    assert_eq!(
        (now.role, now.leader),
        (Role::Leader, Some(lockstep::types::NodeId(1)))
    );
    assert!(now.term.get() >= 1);
    // The change to leader is pending for a subscription made before it.
    let seen = events.try_changed().expect("a change since subscribing");
    assert_eq!(seen.role, Role::Leader);
    node.shutdown().unwrap();
    let stopped = events
        .wait_changed_timeout(Duration::from_secs(10))
        .expect("the stop is a change");
    assert_eq!((stopped.role, stopped.leader), (Role::Stopped, None));
}

/// [`Kv`], recording the runs it is given to apply in one call.
struct RecordsRuns {
    kv: Kv,
    runs: Arc<std::sync::Mutex<Vec<(LogIndex, usize)>>>,
}

impl StateMachine for RecordsRuns {
    fn apply(&mut self, index: LogIndex, command: &[u8]) -> Bytes {
        self.kv.apply(index, command)
    }

    fn apply_batch(&mut self, first: LogIndex, commands: &[&[u8]], replies: &mut Vec<Bytes>) {
        self.runs.lock().unwrap().push((first, commands.len()));
        for (offset, command) in commands.iter().enumerate() {
            replies.push(self.kv.apply(first.plus(offset as u64), command));
        }
    }

    fn query(&self, query: &[u8]) -> Bytes {
        self.kv.query(query)
    }

    fn snapshot(&self, out: &mut Vec<u8>) {
        self.kv.snapshot(out)
    }

    fn restore(&mut self, snapshot: &[u8]) -> Result<(), RestoreError> {
        self.kv.restore(snapshot)
    }
}

#[test]
fn a_committed_batch_reaches_the_state_machine_in_one_call() {
    let dir = tempfile::tempdir().unwrap();
    let runs = Arc::default();
    let machine = RecordsRuns {
        kv: Kv::default(),
        runs: Arc::clone(&runs),
    };
    let node = Node::start(
        config(1, &members(1, false), dir.path(), 1_000_000),
        machine,
    )
    .unwrap();
    until_leader(&node);
    let commands: Vec<Bytes> = (0..100)
        .map(|i| Bytes::from(format!("k{i}=v{i}")))
        .collect();
    let applied = node.propose_batch(commands).wait().unwrap();
    assert_eq!(applied.results.len(), 100);
    let runs = runs.lock().unwrap().clone();
    let covering: Vec<_> = runs
        .iter()
        .filter(|(first, len)| {
            first.get() + *len as u64 > applied.first.get()
                && first.get() < applied.first.get() + 100
        })
        .collect();
    assert!(
        covering.len() <= 2 && covering.iter().map(|(_, len)| len).sum::<usize>() == 100,
        "the 100 commands of one proposal came in runs {covering:?} (every run: {runs:?})"
    );
    let read = node
        .read_linearizable(Bytes::from_static(b"k99"))
        .wait()
        .unwrap();
    assert_eq!(read.result, Bytes::from_static(b"v99"));
    node.shutdown().unwrap();
}
