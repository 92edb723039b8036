//! Spin-before-block: an idle stage may poll its inputs for a short while before it blocks, so
//! that an input arriving within that time is taken without the sender having to wake a sleeping
//! thread (a futex wake plus a scheduler hand-off, ~20-35 µs each on a small VM, paid at every
//! hop of a commit).
//!
//! Off by default (`spin = 0`): on a machine whose cores are shared (three nodes of four
//! threads on two vCPUs here) a spinning thread takes CPU from the thread it waits for. Between
//! polls the spinner yields the CPU (`sched_yield`), so a runnable thread on the same core still
//! gets it; the spin never lasts longer than the budget, and the caller blocks as before once it
//! runs out. The budget is a [`Spin`], set by `tuning.spin_us` (`docs/TUNING.md`).

use std::time::{Duration, Instant};

/// Longest spin a configuration may ask for: beyond a few fsync times a spin only burns CPU.
pub const SPIN_MAX: Duration = Duration::from_millis(10);

/// How long an idle stage polls before it blocks (zero: never spins).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Spin(Duration);

impl Spin {
    /// A budget of `budget` (at most [`SPIN_MAX`]).
    pub fn new(budget: Duration) -> Spin {
        assert!(
            budget <= SPIN_MAX,
            "spin budget {budget:?} above {SPIN_MAX:?}"
        );
        Spin(budget)
    }

    /// The budget.
    pub fn budget(self) -> Duration {
        self.0
    }

    /// Calls `ready` until it returns true or the budget (capped at `limit`) runs out, yielding
    /// the CPU between calls; returns whether `ready` returned true. With a zero budget it
    /// returns false without calling `ready`.
    pub fn until(self, limit: Duration, mut ready: impl FnMut() -> bool) -> bool {
        let budget = self.0.min(limit);
        if budget.is_zero() {
            return false;
        }
        let start = Instant::now();
        loop {
            if ready() {
                return true;
            }
            if start.elapsed() >= budget {
                return false;
            }
            std::thread::yield_now();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_zero_budget_never_polls() {
        let mut polled = false;
        assert!(!Spin::default().until(Duration::MAX, || {
            polled = true;
            true
        }));
        assert!(!polled);
    }

    #[test]
    fn a_spin_stops_at_the_first_ready_poll() {
        let mut polls = 0;
        let spin = Spin::new(SPIN_MAX);
        assert!(spin.until(Duration::MAX, || {
            polls += 1;
            polls == 3
        }));
        assert_eq!(polls, 3);
    }

    #[test]
    fn a_spin_gives_up_after_its_budget_or_the_limit() {
        let spin = Spin::new(Duration::from_millis(2));
        let start = Instant::now();
        assert!(!spin.until(Duration::MAX, || false));
        assert!(start.elapsed() >= Duration::from_millis(2));
        let start = Instant::now();
        assert!(!spin.until(Duration::ZERO, || false));
        assert!(start.elapsed() < Duration::from_millis(2));
    }

    #[test]
    #[should_panic(expected = "spin budget")]
    fn a_budget_above_the_maximum_is_refused() {
        Spin::new(SPIN_MAX + Duration::from_micros(1));
    }
}
