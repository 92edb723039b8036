//! The event trace of a run: a 64-bit FNV-1a hash over every event line, optionally printed.
//!
//! Two runs of the same seed must produce the same hash (the determinism test compares them); with
//! printing on, `lockstep sim --trace` shows each line as it happens.

use std::fmt::Write as _;

const FNV_OFFSET: u64 = 0xCBF2_9CE4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01B3;

/// Hashes (and optionally prints) the lines of a run's trace.
#[derive(Debug)]
pub struct Trace {
    hash: u64,
    print: bool,
    line: String,
}

impl Trace {
    /// An empty trace; with `print`, every line is also written to stdout.
    pub fn new(print: bool) -> Trace {
        Trace {
            hash: FNV_OFFSET,
            print,
            line: String::new(),
        }
    }

    /// Records one event at virtual time `now`.
    pub fn record(&mut self, now: u64, event: std::fmt::Arguments<'_>) {
        self.line.clear();
        write!(self.line, "{now:>9} {event}").expect("writing to a String");
        for byte in self.line.as_bytes().iter().chain(b"\n") {
            self.hash = (self.hash ^ u64::from(*byte)).wrapping_mul(FNV_PRIME);
        }
        if self.print {
            println!("{}", self.line);
        }
    }

    /// Whether lines are printed (callers skip formatting detail-only lines otherwise).
    pub fn printing(&self) -> bool {
        self.print
    }

    /// The hash of every line recorded so far.
    pub fn hash(&self) -> u64 {
        self.hash
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_depends_on_content_and_order() {
        let mut a = Trace::new(false);
        a.record(1, format_args!("x"));
        a.record(2, format_args!("y"));
        let mut b = Trace::new(false);
        b.record(1, format_args!("x"));
        b.record(2, format_args!("y"));
        let mut c = Trace::new(false);
        c.record(2, format_args!("y"));
        c.record(1, format_args!("x"));
        assert_eq!(a.hash(), b.hash());
        assert_ne!(a.hash(), c.hash());
    }
}
