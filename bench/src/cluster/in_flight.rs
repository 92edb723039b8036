//! The proposals one client connection has in flight, by request id.
//!
//! Owns the map from request id to the instant its latency counts from. Request ids are handed
//! out in sequence and replies mostly come back in order, so the map is a window over the ids
//! from the oldest unanswered one to the newest sent: a deque of slots, O(1) per request, no
//! hashing, no allocation once the window has reached its working size.
//!
//! Guarantees: ids must be inserted in increasing sequence with no gap (asserted); an id is
//! removed at most once; [`InFlight::span`] (the window's width) tells how far the oldest
//! unanswered request lags behind the newest, so a caller can give up on a request that is
//! never answered instead of growing the window forever.

use std::collections::VecDeque;
use std::time::Instant;

/// Requests in flight on one connection.
#[derive(Debug)]
pub struct InFlight {
    /// The id of `slots[0]`.
    first_req: u64,
    /// `Some(since)` for a request in flight, `None` for one answered (only between in-flight
    /// ones: answered slots at the front are dropped at once).
    slots: VecDeque<Option<Instant>>,
    /// Slots that are `Some`.
    count: usize,
}

impl InFlight {
    /// An empty window, with room for `capacity` requests before it allocates again.
    pub fn with_capacity(capacity: usize) -> InFlight {
        InFlight {
            first_req: 0,
            slots: VecDeque::with_capacity(capacity),
            count: 0,
        }
    }

    /// Requests in flight.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Whether nothing is in flight.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Ids from the oldest request in flight to the newest (0 when empty).
    pub fn span(&self) -> usize {
        self.slots.len()
    }

    /// Records that request `req`, the next in sequence, was sent; its latency counts from
    /// `since`.
    pub fn insert(&mut self, req: u64, since: Instant) {
        if self.slots.is_empty() {
            self.first_req = req;
        }
        let expected = self.first_req + self.slots.len() as u64;
        assert_eq!(req, expected, "request ids must be inserted in sequence");
        self.slots.push_back(Some(since));
        self.count += 1;
    }

    /// Takes request `req` out of flight; `None` if it is not in flight.
    pub fn remove(&mut self, req: u64) -> Option<Instant> {
        let offset = usize::try_from(req.checked_sub(self.first_req)?).ok()?;
        let since = self.slots.get_mut(offset)?.take()?;
        self.count -= 1;
        while let Some(None) = self.slots.front() {
            self.slots.pop_front();
            self.first_req += 1;
        }
        Some(since)
    }

    /// Forgets every request (the connection was given up).
    pub fn clear(&mut self) {
        self.slots.clear();
        self.count = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_order_and_out_of_order_replies() {
        let start = Instant::now();
        let mut in_flight = InFlight::with_capacity(4);
        for req in 1..=4 {
            in_flight.insert(req, start);
        }
        assert_eq!((in_flight.len(), in_flight.span()), (4, 4));
        assert_eq!(in_flight.remove(1), Some(start));
        assert_eq!(in_flight.span(), 3);
        // Out of order: 3 before 2; the window keeps 2's slot until 2 is answered.
        assert_eq!(in_flight.remove(3), Some(start));
        assert_eq!((in_flight.len(), in_flight.span()), (2, 3));
        assert_eq!(in_flight.remove(3), None, "answered twice");
        assert_eq!(in_flight.remove(2), Some(start));
        assert_eq!((in_flight.len(), in_flight.span()), (1, 1));
        // Unknown ids: before the window, after it.
        assert_eq!(in_flight.remove(1), None);
        assert_eq!(in_flight.remove(99), None);
        in_flight.insert(5, start);
        assert_eq!(in_flight.remove(4), Some(start));
        assert_eq!(in_flight.remove(5), Some(start));
        assert!(in_flight.is_empty());
        assert_eq!(in_flight.span(), 0);
        // After emptying, the next id starts a new window.
        in_flight.insert(6, start);
        assert_eq!(in_flight.len(), 1);
        in_flight.clear();
        assert!(in_flight.is_empty());
        in_flight.insert(100, start);
        assert_eq!(in_flight.remove(100), Some(start));
    }

    #[test]
    #[should_panic(expected = "in sequence")]
    fn ids_must_be_sequential() {
        let mut in_flight = InFlight::with_capacity(2);
        in_flight.insert(1, Instant::now());
        in_flight.insert(3, Instant::now());
    }
}
