//! Leadership events: a node's role, term and known leader, published by the consensus stage
//! whenever one of them changes, and watched by any number of [`Subscription`]s.
//!
//! A subscription sees the latest value, not every step: a waiter that is slow to look may
//! miss an intermediate state (a candidate's term that lasted a millisecond) but never the
//! current one, and nothing queues up behind a subscriber that stopped looking.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::thread::Thread;
use std::time::{Duration, Instant};

use crate::raft;
use crate::types::{NodeId, Term};

/// A node's role.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// Leads its term: it accepts proposals and linearizable reads.
    Leader,
    /// Follows a leader, or waits for one (learners are followers that never campaign).
    Follower,
    /// Runs a pre-vote round (its term unchanged).
    PreCandidate,
    /// Campaigns in its term.
    Candidate,
    /// The node has stopped (shut down or failed).
    Stopped,
}

impl Role {
    /// The role's name as the status shows it: "leader", "follower", "pre-candidate",
    /// "candidate", "stopped".
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Leader => "leader",
            Role::Follower => "follower",
            Role::PreCandidate => "pre-candidate",
            Role::Candidate => "candidate",
            Role::Stopped => "stopped",
        }
    }
}

impl From<raft::Role> for Role {
    fn from(role: raft::Role) -> Role {
        match role {
            raft::Role::Leader => Role::Leader,
            raft::Role::Follower => Role::Follower,
            raft::Role::PreCandidate => Role::PreCandidate,
            raft::Role::Candidate => Role::Candidate,
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who leads, as one node sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Leadership {
    /// This node's role.
    pub role: Role,
    /// This node's current term.
    pub term: Term,
    /// The leader it knows of in that term (itself when it leads).
    pub leader: Option<NodeId>,
}

enum Waiter {
    Thread(Thread),
    Task(Waker),
}

struct State {
    /// Bumped at every change.
    version: u64,
    value: Leadership,
    waiters: Vec<Waiter>,
}

/// The published value (one per node).
pub(crate) struct Watch {
    state: Mutex<State>,
}

impl Watch {
    pub(crate) fn new(value: Leadership) -> Arc<Watch> {
        Arc::new(Watch {
            state: Mutex::new(State {
                version: 0,
                value,
                waiters: Vec::new(),
            }),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().expect("leadership watch lock")
    }

    /// Publishes `value` if it differs from the current one, waking every waiter.
    pub(crate) fn publish(&self, value: Leadership) {
        let waiters = {
            let mut state = self.lock();
            if state.value == value {
                return;
            }
            state.value = value;
            state.version += 1;
            std::mem::take(&mut state.waiters)
        };
        for waiter in waiters {
            match waiter {
                Waiter::Thread(thread) => thread.unpark(),
                Waiter::Task(waker) => waker.wake(),
            }
        }
    }

    /// The current value.
    pub(crate) fn current(&self) -> Leadership {
        self.lock().value
    }
}

/// Watches one node's [`Leadership`] (from [`super::Node::subscribe`]): [`Subscription::wait_changed`]
/// blocks until it changes, [`Subscription::changed`] is the same as a future.
pub struct Subscription {
    watch: Arc<Watch>,
    /// The version this subscription last returned.
    seen: u64,
}

impl Subscription {
    pub(crate) fn new(watch: Arc<Watch>) -> Subscription {
        let seen = watch.lock().version;
        Subscription { watch, seen }
    }

    /// The leadership now (does not count as seen).
    pub fn current(&self) -> Leadership {
        self.watch.current()
    }

    /// The new value if it changed since this subscription last returned one; else registers
    /// `waiter` (when given).
    fn take(&mut self, waiter: impl FnOnce() -> Option<Waiter>) -> Option<Leadership> {
        let mut state = self.watch.lock();
        if state.version != self.seen {
            self.seen = state.version;
            return Some(state.value);
        }
        if let Some(waiter) = waiter() {
            state.waiters.push(waiter);
        }
        None
    }

    /// Blocks until the leadership changes (since this subscription was made or last returned a
    /// change), and returns the latest value. A stopped node reports [`Role::Stopped`] once.
    pub fn wait_changed(&mut self) -> Leadership {
        loop {
            if let Some(value) = self.take(|| Some(Waiter::Thread(std::thread::current()))) {
                return value;
            }
            std::thread::park();
        }
    }

    /// As [`Subscription::wait_changed`], but waits at most `timeout` (`None`: no change meanwhile).
    pub fn wait_changed_timeout(&mut self, timeout: Duration) -> Option<Leadership> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(value) = self.take(|| Some(Waiter::Thread(std::thread::current()))) {
                return Some(value);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            std::thread::park_timeout(left);
        }
    }

    /// The change since the last one returned, if any, without blocking.
    pub fn try_changed(&mut self) -> Option<Leadership> {
        self.take(|| None)
    }

    /// A future of the next change (as [`Subscription::wait_changed`]), for any async runtime.
    pub fn changed(&mut self) -> Changed<'_> {
        Changed { subscription: self }
    }
}

/// The future of [`Subscription::changed`].
#[must_use = "a future does nothing unless awaited"]
pub struct Changed<'a> {
    subscription: &'a mut Subscription,
}

impl Future for Changed<'_> {
    type Output = Leadership;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Leadership> {
        let waker = cx.waker().clone();
        match self.subscription.take(|| Some(Waiter::Task(waker))) {
            Some(value) => Poll::Ready(value),
            None => Poll::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leadership(role: Role, term: u64, leader: Option<u64>) -> Leadership {
        Leadership {
            role,
            term: Term(term),
            leader: leader.map(NodeId),
        }
    }

    #[test]
    fn a_subscription_sees_the_latest_change_once() {
        let watch = Watch::new(leadership(Role::Follower, 1, None));
        let mut events = Subscription::new(watch.clone());
        assert_eq!(events.try_changed(), None);
        watch.publish(leadership(Role::Candidate, 2, None));
        watch.publish(leadership(Role::Leader, 2, Some(1)));
        assert_eq!(
            events.try_changed(),
            Some(leadership(Role::Leader, 2, Some(1)))
        );
        assert_eq!(events.try_changed(), None);
        // Publishing the same value is no change.
        watch.publish(leadership(Role::Leader, 2, Some(1)));
        assert_eq!(events.wait_changed_timeout(Duration::from_millis(1)), None);
    }

    #[test]
    fn a_blocked_waiter_wakes_on_a_change_from_another_thread() {
        let watch = Watch::new(leadership(Role::Follower, 1, None));
        let mut events = Subscription::new(watch.clone());
        let publisher = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            watch.publish(leadership(Role::Follower, 3, Some(2)));
        });
        assert_eq!(
            events.wait_changed(),
            leadership(Role::Follower, 3, Some(2))
        );
        publisher.join().unwrap();
    }
}
