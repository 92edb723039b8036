//! Receipts: the one-shot answer to a request of the embedding API, which the caller can block
//! on ([`Receipt::wait`]) or `.await` ([`Receipt`] is a [`Future`] that needs no particular
//! async runtime: it stores the task's [`Waker`] and the stage that answers wakes it).
//!
//! A stage answers through the [`Completer`] that travels with the request. A completer dropped
//! without an answer (the node stopped or failed before it could answer) completes its receipt
//! with the node's reason ([`NodeError::ShuttingDown`] or the failure).

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::thread::Thread;
use std::time::{Duration, Instant};

use super::pipeline::Shared;
use super::{Applied, NodeError};

/// Who waits for a receipt or a leadership change.
pub(crate) enum Waiter {
    /// A thread blocked in a wait (woken by unparking it).
    Thread(Thread),
    /// An async task that polled (woken through its waker).
    Task(Waker),
}

impl Waiter {
    /// The current thread, about to park.
    pub(crate) fn this_thread() -> Waiter {
        Waiter::Thread(std::thread::current())
    }

    /// Whether waking either wakes the same thread or task.
    pub(crate) fn same_as(&self, other: &Waiter) -> bool {
        match (self, other) {
            (Waiter::Thread(a), Waiter::Thread(b)) => a.id() == b.id(),
            (Waiter::Task(a), Waiter::Task(b)) => a.will_wake(b),
            _ => false,
        }
    }

    pub(crate) fn wake(self) {
        match self {
            Waiter::Thread(thread) => thread.unpark(),
            Waiter::Task(waker) => waker.wake(),
        }
    }
}

enum State<T> {
    /// No outcome yet; the waiter to wake, if any.
    Pending(Option<Waiter>),
    Ready(Result<T, NodeError>),
    /// The completer was dropped without an answer.
    Abandoned,
    /// The caller took the outcome.
    Taken,
}

struct Slot<T> {
    state: Mutex<State<T>>,
}

impl<T> Slot<T> {
    fn lock(&self) -> MutexGuard<'_, State<T>> {
        self.state.lock().expect("receipt lock")
    }

    /// Moves from pending to `next` and wakes the waiter; a no-op once answered.
    fn finish(&self, next: State<T>) {
        let waiter = {
            let mut state = self.lock();
            match std::mem::replace(&mut *state, next) {
                State::Pending(waiter) => waiter,
                previous => {
                    *state = previous;
                    return;
                }
            }
        };
        if let Some(waiter) = waiter {
            waiter.wake();
        }
    }
}

/// The answering side of a [`Receipt`] (held by the stage that answers).
pub(crate) struct Completer<T> {
    slot: Option<Arc<Slot<T>>>,
}

impl<T> Completer<T> {
    /// Answers the receipt (the caller may have dropped it: then nothing happens).
    pub(crate) fn complete(mut self, outcome: Result<T, NodeError>) {
        if let Some(slot) = self.slot.take() {
            slot.finish(State::Ready(outcome));
        }
    }
}

impl<T> Drop for Completer<T> {
    fn drop(&mut self) {
        if let Some(slot) = self.slot.take() {
            slot.finish(State::Abandoned);
        }
    }
}

/// The outcome of a request to a [`super::Node`], once known: an [`super::Applied`] for a
/// proposal or read, an [`super::AppliedBatch`] for [`super::Node::propose_batch`], a
/// [`crate::types::LogIndex`] for [`super::Node::read_index`].
///
/// Block on it with [`Receipt::wait`] / [`Receipt::wait_timeout`] / [`Receipt::wait_for`], or `.await` it from any
/// async runtime. The request is on its way when the call that made the receipt returns, so
/// many can be in flight before the first is waited on. Dropping a receipt does not cancel the
/// request (a proposal may still commit).
///
/// ```no_run
/// use bytes::Bytes;
/// use lockstep::{Applied, Node, NodeError};
///
/// fn blocking(node: &Node) -> Result<(), NodeError> {
///     let receipts: Vec<_> = (0..100)
///         .map(|i| node.propose(Bytes::from(format!("key{i}=value"))))
///         .collect();
///     for receipt in receipts {
///         receipt.wait()?;
///     }
///     Ok(())
/// }
///
/// async fn from_async_code(node: &Node) -> Result<Applied, NodeError> {
///     node.propose(Bytes::from_static(b"color=blue")).await
/// }
/// ```
#[must_use = "a receipt does nothing unless waited on or awaited"]
pub struct Receipt<T = Applied> {
    slot: Arc<Slot<T>>,
    shared: Arc<Shared>,
}

/// A new receipt and the completer that answers it.
pub(crate) fn receipt<T>(shared: &Arc<Shared>) -> (Receipt<T>, Completer<T>) {
    let slot = Arc::new(Slot {
        state: Mutex::new(State::Pending(None)),
    });
    let completer = Completer {
        slot: Some(slot.clone()),
    };
    let receipt = Receipt {
        slot,
        shared: shared.clone(),
    };
    (receipt, completer)
}

impl<T> Receipt<T> {
    /// Takes the outcome if known; else registers `waiter` (when given) and returns `None`.
    fn take(&self, waiter: impl FnOnce() -> Option<Waiter>) -> Option<Result<T, NodeError>> {
        let mut state = self.slot.lock();
        match std::mem::replace(&mut *state, State::Taken) {
            State::Ready(outcome) => Some(outcome),
            State::Abandoned => Some(Err(self.shared.gone())),
            State::Pending(_) => {
                *state = State::Pending(waiter());
                None
            }
            State::Taken => panic!("a receipt's outcome is taken once"),
        }
    }

    /// Blocks until the outcome is known.
    pub fn wait(self) -> Result<T, NodeError> {
        loop {
            if let Some(outcome) = self.take(|| Some(Waiter::this_thread())) {
                return outcome;
            }
            std::thread::park();
        }
    }

    /// Blocks at most `timeout`; [`NodeError::Timeout`] then (the request may still complete).
    pub fn wait_timeout(mut self, timeout: Duration) -> Result<T, NodeError> {
        self.wait_for(timeout).unwrap_or(Err(NodeError::Timeout))
    }

    /// Blocks at most `timeout` for the outcome; `None` if it is not known by then (the receipt
    /// stays usable: wait again, poll it, or drop it).
    pub fn wait_for(&mut self, timeout: Duration) -> Option<Result<T, NodeError>> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(outcome) = self.take(|| Some(Waiter::this_thread())) {
                return Some(outcome);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            std::thread::park_timeout(left);
        }
    }

    /// The outcome if it is known now, without blocking (`None`: not yet; the receipt stays
    /// usable).
    pub fn try_wait(&mut self) -> Option<Result<T, NodeError>> {
        self.take(|| None)
    }
}

impl<T> Future for Receipt<T> {
    type Output = Result<T, NodeError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.take(|| Some(Waiter::Task(cx.waker().clone()))) {
            Some(outcome) => Poll::Ready(outcome),
            None => Poll::Pending,
        }
    }
}

impl<T> std::fmt::Debug for Receipt<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = match &*self.slot.lock() {
            State::Pending(_) => "pending",
            State::Ready(_) => "ready",
            State::Abandoned => "abandoned",
            State::Taken => "taken",
        };
        f.debug_struct("Receipt").field("state", &state).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wait_that_times_out_leaves_the_receipt_usable() {
        let shared = Arc::new(Shared::default());
        let (mut receipt, completer) = receipt::<u32>(&shared);
        assert_eq!(receipt.wait_for(Duration::from_millis(1)), None);
        let answer = std::thread::spawn(move || completer.complete(Ok(7)));
        assert_eq!(receipt.wait_for(Duration::from_secs(10)), Some(Ok(7)));
        answer.join().unwrap();
    }

    #[test]
    fn a_dropped_completer_reports_the_node_gone() {
        let shared = Arc::new(Shared::default());
        let (receipt, completer) = receipt::<u32>(&shared);
        drop(completer);
        assert_eq!(receipt.wait(), Err(NodeError::ShuttingDown));
    }
}
