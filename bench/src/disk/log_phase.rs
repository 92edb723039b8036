//! The log phase: one writer appending batches to a `lockstep::log::Log` with durability on.
//!
//! Group commit, as a replica's storage stage would drive it: the writer appends batch after
//! batch; whenever appended bytes are not yet durable and no sync is in flight it asks the log
//! for one; while the sync is in flight it keeps appending; when the sync completes, every batch
//! it covered gets its append-to-durable latency recorded. The writer never holds more than
//! `window_bytes` appended-but-not-durable bytes: at the limit it waits for the sync in flight,
//! so latency measures the disk, not an unbounded queue.
//!
//! The log is compacted behind the durable index as it goes, so its segments are recycled and
//! the run exercises the steady state (no zero-filling on the hot path, bounded disk use).

use std::collections::VecDeque;
use std::path::Path;
use std::time::{Duration, Instant};

use lockstep::batch::{BatchBuilder, BatchKind, ENTRY_PREFIX_BYTES};
use lockstep::log::record::stored_bytes;
use lockstep::log::{AppendMode, Log, LogOptions, LogStats};
use lockstep::types::{LogIndex, Term};

use super::phase::PhaseResult;

/// The shape of the load.
#[derive(Clone, Copy, Debug)]
pub struct LogBenchConfig {
    /// Bytes of each entry.
    pub entry_bytes: usize,
    /// Entries in each batch.
    pub entries_per_batch: u32,
    /// Most bytes appended but not yet durable.
    pub window_bytes: u64,
    /// Bytes of each segment file.
    pub segment_bytes: u64,
    /// How the log writes records into segments.
    pub append_mode: AppendMode,
}

/// A batch appended but not yet durable.
struct Pending {
    last_index: LogIndex,
    appended_at: Instant,
}

/// An open log plus the writer's state, kept across phases.
pub struct LogBench {
    log: Log,
    config: LogBenchConfig,
    builder: BatchBuilder,
    entry: Vec<u8>,
    term: Term,
    record_bytes: u64,
    /// Batches appended and not yet durable, oldest first.
    pending: VecDeque<Pending>,
}

impl LogBench {
    /// Opens (creating if needed) the log in `dir`; the writer continues after its last entry.
    pub fn open(dir: &Path, config: LogBenchConfig) -> Result<LogBench, String> {
        let options = LogOptions {
            segment_bytes: config.segment_bytes,
            append_mode: config.append_mode,
            ..LogOptions::default()
        };
        let (log, _report) = Log::open(dir, options)
            .map_err(|error| format!("opening the log in {}: {error}", dir.display()))?;
        let payload_bytes =
            config.entries_per_batch as usize * (ENTRY_PREFIX_BYTES + config.entry_bytes);
        Ok(LogBench {
            record_bytes: stored_bytes(payload_bytes) as u64,
            builder: BatchBuilder::with_capacity(payload_bytes),
            entry: (0..config.entry_bytes)
                .map(|i| (i % 251) as u8 + 1)
                .collect(),
            term: Term(log.last_term().get().max(1)),
            pending: VecDeque::new(),
            log,
            config,
        })
    }

    /// Bytes of one batch's record in a segment (header + payload + padding).
    pub fn record_bytes_per_batch(&self) -> usize {
        self.record_bytes as usize
    }

    /// How the log makes appends durable (`"io_uring"` or the `"fdatasync"` fallback).
    pub fn sync_mechanism(&self) -> &'static str {
        self.log.sync_mechanism()
    }

    /// The log's counters since open.
    pub fn stats(&self) -> LogStats {
        self.log.stats()
    }

    /// Runs the writer untimed until the log has recycled a few compacted segments (or ten
    /// seconds passed), so timed phases see the steady state rather than first-time
    /// zero-filling.
    pub fn warm_up(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.log.stats().segments_recycled < 3 && Instant::now() < deadline {
            self.run(Duration::from_millis(100))?;
        }
        Ok(())
    }

    /// Appends for `duration`, then waits until everything appended is durable and the log's
    /// spare segments are ready again.
    ///
    /// The phase's time runs until then, so a phase never leaves work for the next one to pay
    /// for.
    pub fn run(&mut self, duration: Duration) -> Result<PhaseResult, String> {
        assert!(
            self.pending.is_empty(),
            "phase started with batches pending"
        );
        let mut result = PhaseResult::new();
        let syncs_before = self.log.stats().syncs;
        let start = Instant::now();
        let deadline = start + duration;
        loop {
            let appending = Instant::now() < deadline;
            if !appending && self.pending.is_empty() {
                break;
            }
            let pending_bytes = self.pending.len() as u64 * self.record_bytes;
            if appending && pending_bytes + self.record_bytes <= self.config.window_bytes {
                self.append_one()?;
                self.reap(&mut result, false)?;
            } else {
                // At the window (or draining): nothing to do until the sync in flight completes.
                self.reap(&mut result, true)?;
            }
        }
        // The log's background work (zero-filling or pre-faulting spare segments) belongs to
        // this phase: finish it inside the timed span so it neither slows the baseline phases
        // that follow nor goes unpaid.
        self.log.wait_spares_ready();
        result.elapsed = start.elapsed();
        result.syncs = self.log.stats().syncs - syncs_before;
        Ok(result)
    }

    /// Builds one batch entry by entry (the per-entry cost a real proposer pays), appends it
    /// and asks for a sync (a no-op while one is in flight: the log then starts the next round
    /// as soon as the current one completes).
    fn append_one(&mut self) -> Result<(), String> {
        for _ in 0..self.config.entries_per_batch {
            self.builder.push(&self.entry);
        }
        let first_index = self.log.last_index().next();
        let batch = self
            .builder
            .finish(self.term, first_index, BatchKind::Normal);
        let appended_at = Instant::now();
        let last_index = self
            .log
            .append(&batch)
            .map_err(|error| format!("append at {first_index}: {error}"))?;
        self.request_sync()?;
        self.pending.push_back(Pending {
            last_index,
            appended_at,
        });
        Ok(())
    }

    /// Counts the batches a completed sync made durable, and compacts the log behind them so
    /// its segments are recycled. With `wait`, first blocks until the sync in flight completes.
    fn reap(&mut self, result: &mut PhaseResult, wait: bool) -> Result<(), String> {
        let sync_error = |error| format!("sync: {error}");
        let durable = if wait && self.log.sync_in_flight() {
            self.log.wait_in_flight().map_err(sync_error)?
        } else {
            match self.log.poll_durable().map_err(sync_error)? {
                Some(durable) => durable,
                None if wait => {
                    // Nothing in flight although batches wait: make sure a round starts.
                    self.request_sync()?;
                    return Ok(());
                }
                None => return Ok(()),
            }
        };
        let now = Instant::now();
        let mut newly_durable = false;
        while self
            .pending
            .front()
            .is_some_and(|pending| pending.last_index <= durable)
        {
            let pending = self.pending.pop_front().expect("front exists");
            result.record_durable(
                u64::from(self.config.entries_per_batch),
                self.record_bytes,
                now - pending.appended_at,
            );
            newly_durable = true;
        }
        if !self.pending.is_empty() {
            self.request_sync()?;
        }
        if newly_durable {
            self.log
                .compact_to(durable)
                .map_err(|error| format!("compact to {durable}: {error}"))?;
        }
        Ok(())
    }

    fn request_sync(&mut self) -> Result<(), String> {
        self.log
            .request_sync()
            .map_err(|error| format!("request a sync: {error}"))
    }

    /// Closes the log cleanly (everything durable, sealed by a witness record).
    pub fn close(self) -> Result<(), String> {
        self.log
            .close()
            .map_err(|error| format!("closing the log: {error}"))?;
        Ok(())
    }
}
