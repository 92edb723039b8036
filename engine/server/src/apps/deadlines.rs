//! Deadlines of expiring keys (kv expiry, lock leases), ordered by time so everything due by a
//! given log time can be found without scanning the rest. A key with deadline `at` is alive
//! while `now < at` and expired from `now >= at` on.

use std::collections::{BTreeMap, BTreeSet};

/// The deadline of each expiring key, indexed both ways.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Deadlines {
    by_key: BTreeMap<Vec<u8>, u64>,
    by_time: BTreeSet<(u64, Vec<u8>)>,
}

impl Deadlines {
    /// The deadline of `key`, if it has one.
    pub(crate) fn get(&self, key: &[u8]) -> Option<u64> {
        self.by_key.get(key).copied()
    }

    /// Whether `key` has a deadline at or before `now`.
    pub(crate) fn is_expired(&self, key: &[u8], now_ms: u64) -> bool {
        self.get(key).is_some_and(|at| at <= now_ms)
    }

    /// Gives `key` the deadline `at_ms` (replacing any earlier one).
    pub(crate) fn set(&mut self, key: &[u8], at_ms: u64) {
        self.clear(key);
        self.by_key.insert(key.to_vec(), at_ms);
        self.by_time.insert((at_ms, key.to_vec()));
        assert_eq!(
            self.by_key.len(),
            self.by_time.len(),
            "deadline indexes disagree"
        );
    }

    /// Removes `key`'s deadline, if any.
    pub(crate) fn clear(&mut self, key: &[u8]) {
        if let Some(at) = self.by_key.remove(key) {
            let removed = self.by_time.remove(&(at, key.to_vec()));
            assert!(
                removed,
                "deadline {at} of a key missing from the time index"
            );
        }
    }

    /// Removes and returns one key whose deadline is at or before `now_ms` (the earliest).
    pub(crate) fn pop_due(&mut self, now_ms: u64) -> Option<Vec<u8>> {
        let (at, _) = self.by_time.first()?;
        if *at > now_ms {
            return None;
        }
        let (_, key) = self.by_time.pop_first().expect("first exists");
        self.by_key.remove(&key);
        Some(key)
    }

    /// How many keys are due at `now_ms`.
    pub(crate) fn count_due(&self, now_ms: u64) -> usize {
        self.by_time
            .iter()
            .take_while(|(at, _)| *at <= now_ms)
            .count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn due_keys_come_out_in_time_order() {
        let mut deadlines = Deadlines::default();
        deadlines.set(b"b", 20);
        deadlines.set(b"a", 10);
        deadlines.set(b"c", 30);
        deadlines.set(b"c", 5);
        deadlines.clear(b"b");
        assert_eq!(deadlines.count_due(10), 2);
        assert!(deadlines.is_expired(b"a", 10) && !deadlines.is_expired(b"a", 9));
        assert_eq!(deadlines.pop_due(10), Some(b"c".to_vec()));
        assert_eq!(deadlines.pop_due(10), Some(b"a".to_vec()));
        assert_eq!(deadlines.pop_due(10), None);
        assert_eq!(deadlines, Deadlines::default());
    }
}
