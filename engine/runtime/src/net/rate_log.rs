//! A warning that may fire in floods (refused peer handshakes, refused or failing clients): at
//! most [`RateLimitedLog::LINES_PER_SECOND`] lines a second; the next line logged says how many
//! were suppressed. One instance per kind of warning, owned by the network loop.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tracing::warn;

/// The rate limit on one kind of warning.
#[derive(Debug)]
pub(crate) struct RateLimitedLog {
    what: &'static str,
    window: Instant,
    lines: u32,
    suppressed: u64,
}

impl RateLimitedLog {
    /// Lines logged per second at most.
    pub(crate) const LINES_PER_SECOND: u32 = 5;

    /// A limiter for warnings about `what` (plural: "refused connections").
    pub(crate) fn new(what: &'static str) -> RateLimitedLog {
        RateLimitedLog {
            what,
            window: Instant::now(),
            lines: 0,
            suppressed: 0,
        }
    }

    /// Whether one more line may be logged now: `Some(n)` where `n` lines were suppressed since
    /// the last one logged (reset to 0), or `None` (this one is counted as suppressed).
    pub(crate) fn admit(&mut self) -> Option<u64> {
        let now = Instant::now();
        if now.duration_since(self.window) >= Duration::from_secs(1) {
            self.window = now;
            self.lines = 0;
        }
        if self.lines >= Self::LINES_PER_SECOND {
            self.suppressed += 1;
            return None;
        }
        self.lines += 1;
        Some(std::mem::take(&mut self.suppressed))
    }

    /// Logs `message` about the remote end `addr` unless the rate is exceeded. Returns whether
    /// it logged.
    pub(crate) fn warn(&mut self, addr: SocketAddr, message: &str) -> bool {
        let Some(suppressed) = self.admit() else {
            return false;
        };
        if suppressed > 0 {
            warn!(remote = %addr, "{message} ({suppressed} more {} not logged)", self.what);
        } else {
            warn!(remote = %addr, "{message}");
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flood_of_warnings_is_cut_to_a_few_lines_a_second() {
        let mut log = RateLimitedLog::new("refusals");
        let addr = "127.0.0.1:1".parse().unwrap();
        let logged = (0..100).filter(|_| log.warn(addr, "refused")).count();
        assert_eq!(logged, RateLimitedLog::LINES_PER_SECOND as usize);
        assert_eq!(log.suppressed, 100 - logged as u64);
        assert_eq!(log.admit(), None);
    }
}
