//! The event queue: events ordered by virtual time, ties broken by insertion order.
//!
//! Ordering by `(time, sequence number)` makes the pop order a pure function of the pushes, which
//! is what makes a seed reproducible.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

struct Scheduled<E> {
    time: u64,
    sequence: u64,
    event: E,
}

impl<E> PartialEq for Scheduled<E> {
    fn eq(&self, other: &Self) -> bool {
        (self.time, self.sequence) == (other.time, other.sequence)
    }
}

impl<E> Eq for Scheduled<E> {}

impl<E> PartialOrd for Scheduled<E> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl<E> Ord for Scheduled<E> {
    // Reversed: `BinaryHeap` is a max-heap and we want the earliest event first.
    fn cmp(&self, other: &Self) -> Ordering {
        (other.time, other.sequence).cmp(&(self.time, self.sequence))
    }
}

/// A deterministic priority queue of events in virtual time.
pub struct EventQueue<E> {
    heap: BinaryHeap<Scheduled<E>>,
    next_sequence: u64,
    now: u64,
}

impl<E> EventQueue<E> {
    /// An empty queue at time 0.
    pub fn new() -> EventQueue<E> {
        EventQueue {
            heap: BinaryHeap::new(),
            next_sequence: 0,
            now: 0,
        }
    }

    /// The time of the event popped last.
    pub fn now(&self) -> u64 {
        self.now
    }

    /// Schedules `event` at `time`, which must not be in the past.
    pub fn push(&mut self, time: u64, event: E) {
        assert!(
            time >= self.now,
            "event scheduled in the past: {time} < {}",
            self.now
        );
        self.heap.push(Scheduled {
            time,
            sequence: self.next_sequence,
            event,
        });
        self.next_sequence += 1;
    }

    /// Time of the earliest event, if any.
    pub fn next_time(&self) -> Option<u64> {
        self.heap.peek().map(|scheduled| scheduled.time)
    }

    /// Removes the earliest event and advances the clock to its time.
    pub fn pop(&mut self) -> Option<E> {
        let scheduled = self.heap.pop()?;
        self.now = scheduled.time;
        Some(scheduled.event)
    }
}

impl<E> Default for EventQueue<E> {
    fn default() -> Self {
        EventQueue::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pops_by_time_then_insertion_order() {
        let mut queue = EventQueue::new();
        queue.push(5, "c");
        queue.push(1, "a");
        queue.push(5, "d");
        queue.push(3, "b");
        let order: Vec<_> = std::iter::from_fn(|| queue.pop()).collect();
        assert_eq!(order, vec!["a", "b", "c", "d"]);
        assert_eq!(queue.now(), 5);
        assert_eq!(queue.next_time(), None);
        queue.push(7, "e");
        assert_eq!(queue.next_time(), Some(7));
    }
}
