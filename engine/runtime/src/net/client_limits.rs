//! Per-connection limits on clients that the network stage enforces beyond `max_clients` and the
//! request size (both in [`super::NetConfig`]): bytes read and not yet answered, idle time, and
//! time spent not reading replies. `docs/SECURITY.md` ("Limits") says what each one does.

use std::time::Duration;

/// Limits on what one client connection may hold or cost.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientLimits {
    /// Most request bytes a RESP connection may have read and not yet answered; at this many the
    /// connection is not read (back-pressure through TCP) until replies go out.
    pub max_pipelined_bytes: usize,
    /// A client connection with nothing to answer that sent nothing for this long is closed.
    pub idle_timeout: Option<Duration>,
    /// A client connection whose replies wait unwritten (it does not read them) for this long
    /// is closed.
    pub slow_client_timeout: Option<Duration>,
}

impl Default for ClientLimits {
    /// 64 MiB pipelined, no idle timeout, slow clients dropped after 60 s.
    fn default() -> ClientLimits {
        ClientLimits {
            max_pipelined_bytes: 64 << 20,
            idle_timeout: None,
            slow_client_timeout: Some(Duration::from_secs(60)),
        }
    }
}

impl ClientLimits {
    /// How often the loop looks for idle and slow connections: a quarter of the shorter timeout,
    /// between 10 ms and 1 s; `None` when neither timeout is set.
    pub fn sweep_interval(&self) -> Option<Duration> {
        let shortest = self
            .idle_timeout
            .into_iter()
            .chain(self.slow_client_timeout)
            .min()?;
        Some((shortest / 4).clamp(Duration::from_millis(10), Duration::from_secs(1)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sweeps_at_a_quarter_of_the_shortest_timeout() {
        let mut limits = ClientLimits {
            idle_timeout: None,
            slow_client_timeout: None,
            ..ClientLimits::default()
        };
        assert_eq!(limits.sweep_interval(), None);
        limits.idle_timeout = Some(Duration::from_millis(400));
        assert_eq!(limits.sweep_interval(), Some(Duration::from_millis(100)));
        limits.slow_client_timeout = Some(Duration::from_millis(8));
        assert_eq!(limits.sweep_interval(), Some(Duration::from_millis(10)));
        limits.idle_timeout = Some(Duration::from_secs(3600));
        limits.slow_client_timeout = None;
        assert_eq!(limits.sweep_interval(), Some(Duration::from_secs(1)));
    }
}
