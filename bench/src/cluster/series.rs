//! The per-second series of a run (committed count and p99 latency of each second of the
//! window), shared by every client thread, in memory that does not grow with the client count
//! or, while every thread makes progress, with the run's length.
//!
//! Each thread records the second it is in into its own histogram and, when it moves on, adds
//! that second into the shared slot ([`Series::flush`]). A second that every thread has moved
//! past is closed: its p99 is computed and its histogram freed. So at any moment only the
//! seconds between the slowest and the fastest thread hold a histogram (a thread that has not
//! recorded anything yet holds the series at its start until it does, or finishes).

use std::sync::Mutex;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// One second's latencies in one thread, or merged.
#[derive(Clone, Debug)]
pub struct SecondTally {
    /// Entries committed (replied) in this second.
    pub committed: u64,
    /// Their latencies, microseconds.
    pub latency_us: Histogram<u64>,
}

impl SecondTally {
    /// An empty second.
    pub fn new() -> SecondTally {
        SecondTally {
            committed: 0,
            latency_us: second_histogram_us(),
        }
    }

    /// Empties it for another second (keeping its memory).
    pub fn clear(&mut self) {
        self.committed = 0;
        self.latency_us.reset();
    }
}

/// A histogram for one second's latencies: 1 µs to 100 s, 2 significant digits.
fn second_histogram_us() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 100_000_000, 2).expect("valid histogram bounds")
}

/// The figures of one second of the window.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecondCount {
    /// Entries committed in it.
    pub committed: u64,
    /// Their 99th percentile latency, µs (0 when none).
    pub p99_us: u64,
}

#[derive(Debug)]
struct Slot {
    committed: u64,
    /// Until the second is closed (allocated by the first flush into it).
    latency_us: Option<Histogram<u64>>,
    p99_us: u64,
}

#[derive(Debug)]
struct Inner {
    slots: Vec<Slot>,
    /// Per thread: the first second it may still add to (`usize::MAX` once it finished).
    positions: Vec<usize>,
    /// Seconds below this are closed.
    closed_below: usize,
}

/// The series of a window of `seconds` seconds filled by `threads` threads.
#[derive(Debug)]
pub struct Series {
    inner: Mutex<Inner>,
}

impl Series {
    /// An empty series.
    pub fn new(seconds: usize, threads: usize) -> Series {
        Series {
            inner: Mutex::new(Inner {
                slots: (0..seconds)
                    .map(|_| Slot {
                        committed: 0,
                        latency_us: None,
                        p99_us: 0,
                    })
                    .collect(),
                positions: vec![0; threads],
                closed_below: 0,
            }),
        }
    }

    /// Adds `tally`, thread `thread`'s figures of second `second` (if any), and records that
    /// the thread will add nothing before second `next` again (`usize::MAX`: nothing at all).
    pub fn flush(&self, thread: usize, second: Option<(usize, &SecondTally)>, next: usize) {
        let mut inner = self
            .inner
            .lock()
            .expect("the series lock is never poisoned");
        if let Some((second, tally)) = second {
            assert!(
                second >= inner.closed_below && second < next,
                "thread {thread} added second {second} (closed below {}, next {next})",
                inner.closed_below
            );
            let slot = &mut inner.slots[second];
            slot.committed += tally.committed;
            slot.latency_us
                .get_or_insert_with(second_histogram_us)
                .add(&tally.latency_us)
                .expect("same histogram bounds");
        }
        assert!(
            next >= inner.positions[thread],
            "thread {thread} went back from second {} to {next}",
            inner.positions[thread]
        );
        inner.positions[thread] = next;
        let passed = inner.positions.iter().copied().min().unwrap_or(usize::MAX);
        let end = passed.min(inner.slots.len());
        for index in inner.closed_below..end {
            close(&mut inner.slots[index]);
        }
        inner.closed_below = inner.closed_below.max(end);
    }

    /// Every second's figures (closing what is still open, e.g. after a thread panicked).
    pub fn counts(&self) -> Vec<SecondCount> {
        let mut inner = self
            .inner
            .lock()
            .expect("the series lock is never poisoned");
        inner
            .slots
            .iter_mut()
            .map(|slot| {
                close(slot);
                SecondCount {
                    committed: slot.committed,
                    p99_us: slot.p99_us,
                }
            })
            .collect()
    }

    /// Seconds that still hold a histogram.
    #[cfg(test)]
    fn open(&self) -> usize {
        let inner = self.inner.lock().unwrap();
        inner
            .slots
            .iter()
            .filter(|slot| slot.latency_us.is_some())
            .count()
    }
}

fn close(slot: &mut Slot) {
    if let Some(histogram) = slot.latency_us.take() {
        if !histogram.is_empty() {
            slot.p99_us = histogram.value_at_quantile(0.99);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn second(committed: u64, latency_us: u64) -> SecondTally {
        let mut tally = SecondTally::new();
        tally.committed = committed;
        tally.latency_us.record_n(latency_us, committed).unwrap();
        tally
    }

    #[test]
    fn seconds_merge_across_threads_and_close_once_all_passed() {
        let series = Series::new(3, 2);
        series.flush(0, Some((0, &second(10, 100))), 1);
        assert_eq!(series.open(), 1, "thread 1 may still add to second 0");
        series.flush(1, Some((0, &second(990, 300))), 2);
        // Both passed second 0: closed; thread 1 skipped second 1 (it recorded nothing).
        assert_eq!(series.open(), 0);
        series.flush(0, Some((1, &second(5, 50))), 2);
        series.flush(0, None, usize::MAX);
        assert_eq!(series.open(), 0);
        series.flush(1, Some((2, &second(7, 70))), usize::MAX);
        let counts = series.counts();
        assert_eq!(counts[0].committed, 1000);
        assert!((299..=301).contains(&counts[0].p99_us), "{counts:?}");
        assert_eq!(counts[1].committed, 5);
        assert_eq!(counts[2].committed, 7);
        assert!((69..=71).contains(&counts[2].p99_us), "{counts:?}");
    }

    #[test]
    fn a_long_run_keeps_only_the_seconds_in_progress() {
        let series = Series::new(1000, 4);
        for at in 0..1000 {
            for thread in 0..4 {
                series.flush(thread, Some((at, &second(1, 10))), at + 1);
            }
            assert!(series.open() <= 1, "second {at}: {} open", series.open());
        }
        assert!(series.counts().iter().all(|count| count.committed == 4));
    }

    #[test]
    fn a_silent_thread_holds_seconds_open_until_the_end() {
        let series = Series::new(3, 2);
        series.flush(0, Some((0, &second(1, 10))), 1);
        series.flush(0, Some((1, &second(1, 10))), 2);
        assert_eq!(series.open(), 2);
        assert_eq!(series.counts()[1].committed, 1);
        assert_eq!(series.open(), 0);
    }

    #[test]
    #[should_panic(expected = "closed below")]
    fn a_closed_second_takes_no_more() {
        let series = Series::new(2, 1);
        series.flush(0, None, 2);
        series.flush(0, Some((0, &second(1, 10))), 2);
    }
}
