//! What one timed phase of the disk benchmark measured, whichever writer ran it.
//!
//! Both the log phase and the baseline phases fill a [`PhaseResult`], so the figures they are
//! compared on (MB/s of bytes written, syncs, latency from write to durable) are computed the
//! same way.

use std::time::Duration;

use hdrhistogram::Histogram;

use crate::report::latency_histogram_ns;

/// Counters and latencies of one timed phase.
pub struct PhaseResult {
    /// Wall time from the first write to the last durable completion counted.
    pub elapsed: Duration,
    /// Batches made durable.
    pub batches: u64,
    /// Entries made durable.
    pub entries: u64,
    /// Bytes written and made durable (record header + payload per batch).
    pub bytes: u64,
    /// fdatasync calls completed.
    pub syncs: u64,
    /// Per batch: nanoseconds from the start of its write to the end of the sync that covered it.
    pub latency_ns: Histogram<u64>,
}

impl PhaseResult {
    /// An empty result, ready to count into.
    pub fn new() -> PhaseResult {
        PhaseResult {
            elapsed: Duration::ZERO,
            batches: 0,
            entries: 0,
            bytes: 0,
            syncs: 0,
            latency_ns: latency_histogram_ns(),
        }
    }

    /// Records that one batch of `entries` entries and `bytes` bytes became durable
    /// `latency` after its write started.
    #[inline]
    pub fn record_durable(&mut self, entries: u64, bytes: u64, latency: Duration) {
        self.batches += 1;
        self.entries += entries;
        self.bytes += bytes;
        self.latency_ns
            .saturating_record(u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX).max(1));
    }

    fn seconds(&self) -> f64 {
        assert!(!self.elapsed.is_zero(), "phase has no elapsed time");
        self.elapsed.as_secs_f64()
    }

    /// Durable entries per second.
    pub fn entries_per_sec(&self) -> f64 {
        self.entries as f64 / self.seconds()
    }

    /// Durable megabytes (10^6 bytes) per second.
    pub fn mb_per_sec(&self) -> f64 {
        self.bytes as f64 / 1e6 / self.seconds()
    }

    /// Completed syncs per second.
    pub fn syncs_per_sec(&self) -> f64 {
        self.syncs as f64 / self.seconds()
    }

    /// Entries made durable per sync.
    pub fn entries_per_sync(&self) -> f64 {
        self.entries as f64 / self.syncs.max(1) as f64
    }

    /// Bytes made durable per sync.
    pub fn bytes_per_sync(&self) -> f64 {
        self.bytes as f64 / self.syncs.max(1) as f64
    }
}
