//! Runtime statistics for operators (`lockstep status`, the Prometheus endpoint) that neither the
//! consensus core nor the log counts itself: sync latency, leader changes, error replies to
//! clients, inter-stage queue depths and recent rates.
//!
//! Guarantees: the hot path pays at most one `Instant::now()` and a few relaxed atomic adds per
//! sync round ([`SyncTimer`], [`LatencyHistogram`]) and one pass over the replies a consensus
//! turn already built ([`Observed::count_replies`]); no lock is taken outside status requests.
//! Queue depths are sampled (channel lengths read) when a status is asked for, never tracked.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};

use crate::net::{ClientReply, ConnId, NetEvent};

use super::consensus::Request;
use super::pipeline::{ApplyMsg, Feedback, StorageMsg};
use super::LogCounters;

/// Upper bounds (microseconds) of the sync latency buckets; one more bucket counts the rest.
/// From a fast NVMe flush (~50 us) to a disk in trouble (1 s).
pub const SYNC_LATENCY_BOUNDS_US: [u64; 15] = [
    50, 100, 200, 400, 700, 1_000, 2_000, 4_000, 7_000, 10_000, 20_000, 50_000, 100_000, 300_000,
    1_000_000,
];

/// Buckets of a [`LatencyHistogram`]: one per bound plus the overflow bucket.
const LATENCY_BUCKETS: usize = SYNC_LATENCY_BOUNDS_US.len() + 1;

/// Rates are computed over windows of at least this length (shorter ones are too noisy).
const RATE_WINDOW_MIN: Duration = Duration::from_secs(1);

/// A fixed-bucket latency histogram written by one thread and read by any (relaxed atomics).
#[derive(Debug, Default)]
pub(crate) struct LatencyHistogram {
    buckets: [AtomicU64; LATENCY_BUCKETS],
    sum_us: AtomicU64,
}

impl LatencyHistogram {
    /// Counts one observation.
    pub(crate) fn observe(&self, latency: Duration) {
        let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        let bucket = SYNC_LATENCY_BOUNDS_US.partition_point(|&bound| bound < micros);
        assert!(
            bucket < LATENCY_BUCKETS,
            "bucket {bucket} of {micros} us out of {LATENCY_BUCKETS}"
        );
        self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        self.sum_us.fetch_add(micros, Ordering::Relaxed);
    }

    /// The counts so far. The count is the sum of the buckets read, so the snapshot is
    /// self-consistent even while observations land (the sum may lag by one or two of them).
    pub(crate) fn snapshot(&self) -> LatencySnapshot {
        let counts: Vec<u64> = self
            .buckets
            .iter()
            .map(|bucket| bucket.load(Ordering::Relaxed))
            .collect();
        LatencySnapshot {
            bounds_us: SYNC_LATENCY_BOUNDS_US.to_vec(),
            count: counts.iter().sum(),
            counts,
            sum_us: self.sum_us.load(Ordering::Relaxed),
        }
    }
}

/// A histogram's counts at one moment.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LatencySnapshot {
    /// Upper bound of each bucket, microseconds (inclusive).
    pub bounds_us: Vec<u64>,
    /// Observations per bucket (not cumulative); one more than `bounds_us`: the last counts
    /// observations above the largest bound.
    pub counts: Vec<u64>,
    /// Sum of all observations, microseconds.
    pub sum_us: u64,
    /// Number of observations (the sum of `counts`).
    pub count: u64,
}

impl LatencySnapshot {
    /// The upper bound of the bucket holding quantile `q` (0..=1), microseconds: an upper
    /// estimate. `None` without observations or when it falls in the overflow bucket.
    pub fn quantile_upper_us(&self, q: f64) -> Option<u64> {
        assert!((0.0..=1.0).contains(&q), "quantile {q} outside 0..=1");
        if self.count == 0 {
            return None;
        }
        let rank = ((q * self.count as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (bucket, &count) in self.counts.iter().enumerate() {
            seen += count;
            if seen >= rank {
                return self.bounds_us.get(bucket).copied();
            }
        }
        None
    }
}

/// Times sync rounds on the storage thread: from the moment durability of a log position is
/// requested until the storage thread sees the durable point reach it (the wait every write
/// covered by that round has, queueing behind a full window included).
#[derive(Debug, Default)]
pub(crate) struct SyncTimer {
    /// Log seqs whose durability was requested, with when, ascending.
    waiting: VecDeque<(u64, Instant)>,
}

impl SyncTimer {
    /// Durability of everything up to `last_seq` was requested now (a no-op when it was
    /// already requested).
    pub(crate) fn requested(&mut self, last_seq: u64, durable_seq: u64) {
        let covered = self.waiting.back().map_or(durable_seq, |&(seq, _)| seq);
        if last_seq > covered {
            self.waiting.push_back((last_seq, Instant::now()));
        }
    }

    /// The durable point is `durable_seq`: every request it covers is observed into
    /// `histogram`.
    pub(crate) fn durable(&mut self, durable_seq: u64, histogram: &LatencyHistogram) {
        while let Some(&(seq, since)) = self.waiting.front() {
            if seq > durable_seq {
                break;
            }
            histogram.observe(since.elapsed());
            self.waiting.pop_front();
        }
    }
}

/// Depth of each inter-stage channel, in items (batches), sampled when the status was taken.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct QueueDepths {
    /// Embedding-API requests waiting for consensus.
    pub requests: usize,
    /// Network events (peer messages, client requests) waiting for consensus.
    pub net_events: usize,
    /// Durable / applied / snapshot feedback waiting for consensus (unbounded channel).
    pub feedback: usize,
    /// Storage writes waiting for the storage stage.
    pub storage: usize,
    /// Committed batches and reads waiting for the apply stage.
    pub apply: usize,
    /// Bound of each bounded channel (`channel_capacity`).
    pub capacity: usize,
}

/// Receiver clones of the consensus stage's inputs, so their lengths can be read while the
/// stage runs. Owned by the consensus stage, dropped with it: they keep no channel open longer.
pub(crate) struct InboxProbes {
    requests: Receiver<Request>,
    net_events: Receiver<NetEvent>,
    feedback: Receiver<Feedback>,
}

impl InboxProbes {
    /// Probes of the three inputs.
    pub(crate) fn new(
        requests: &Receiver<Request>,
        net_events: &Receiver<NetEvent>,
        feedback: &Receiver<Feedback>,
    ) -> InboxProbes {
        InboxProbes {
            requests: requests.clone(),
            net_events: net_events.clone(),
            feedback: feedback.clone(),
        }
    }
}

/// Recent rates, over the last window of at least one second (since start before that).
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize)]
pub struct Rates {
    /// Length of the window, milliseconds.
    pub window_ms: u64,
    /// Sync rounds completed per second.
    pub syncs_per_s: f64,
    /// Entries made durable per second.
    pub entries_synced_per_s: f64,
    /// Commit index advance per second.
    pub commits_per_s: f64,
    /// Applied index advance per second.
    pub applied_per_s: f64,
}

/// The counters rates are derived from, at one moment.
#[derive(Clone, Copy, Debug)]
struct RateSample {
    at: Instant,
    syncs: u64,
    entries_synced: u64,
    commit: u64,
    applied: u64,
}

impl RateSample {
    fn rates_since(&self, earlier: &RateSample) -> Rates {
        let window = self.at.saturating_duration_since(earlier.at);
        let seconds = window.as_secs_f64().max(1e-9);
        let per_s = |now: u64, then: u64| now.saturating_sub(then) as f64 / seconds;
        Rates {
            window_ms: u64::try_from(window.as_millis()).unwrap_or(u64::MAX),
            syncs_per_s: per_s(self.syncs, earlier.syncs),
            entries_synced_per_s: per_s(self.entries_synced, earlier.entries_synced),
            commits_per_s: per_s(self.commit, earlier.commit),
            applied_per_s: per_s(self.applied, earlier.applied),
        }
    }
}

/// What the consensus stage observes for operators: leader changes, error replies, queue
/// depths and rates. Touched only by the consensus thread.
pub(crate) struct Observed {
    leader_changes: u64,
    not_leader_replies: u64,
    error_replies: u64,
    probes: Option<InboxProbes>,
    /// The start of the current rate window, and the rates of the last complete one.
    window_start: RateSample,
    last_rates: Option<Rates>,
}

/// Counters of the consensus stage and samples for a status (see `Observed`).
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct RuntimeStatus {
    /// Times this node learned of a new leader (an election result, re-elections included).
    pub leader_changes: u64,
    /// Requests answered "not the leader" (with a redirect when the leader is known).
    pub client_not_leader: u64,
    /// Requests answered with any other error (outcome unknown, refused, stopping, failed).
    pub client_errors: u64,
    /// Inter-stage channel depths.
    pub queues: QueueDepths,
    /// Recent rates.
    pub rates: Rates,
    /// Sync latency (request to durable, seen by the storage stage).
    pub sync_latency: LatencySnapshot,
}

impl Observed {
    /// Starts observing a node whose commit and applied indexes are as given.
    pub(crate) fn new(commit: u64, applied: u64) -> Observed {
        Observed {
            leader_changes: 0,
            not_leader_replies: 0,
            error_replies: 0,
            probes: None,
            window_start: RateSample {
                at: Instant::now(),
                syncs: 0,
                entries_synced: 0,
                commit,
                applied,
            },
            last_rates: None,
        }
    }

    /// Gives the probes of the consensus inputs (once the stage runs and holds them).
    pub(crate) fn probe(&mut self, probes: InboxProbes) {
        self.probes = Some(probes);
    }

    /// The known leader changed from `before` to `now`.
    pub(crate) fn leader_seen(
        &mut self,
        before: Option<crate::types::NodeId>,
        now: Option<crate::types::NodeId>,
    ) {
        if now.is_some() && now != before {
            self.leader_changes += 1;
        }
    }

    /// Counts the error replies among those a turn is about to send.
    pub(crate) fn count_replies(&mut self, replies: &[(ConnId, ClientReply)]) {
        for (_, reply) in replies {
            match reply {
                ClientReply::NotLeader { .. } => self.not_leader_replies += 1,
                ClientReply::Error { .. } => self.error_replies += 1,
                _ => {}
            }
        }
    }

    /// The runtime part of a status: counters, sampled queue depths and rates.
    pub(crate) fn status(
        &mut self,
        to_storage: &Sender<StorageMsg>,
        to_apply: &Sender<ApplyMsg>,
        log: &LogCounters,
        commit: u64,
        applied: u64,
        sync_latency: &LatencyHistogram,
    ) -> RuntimeStatus {
        let now = RateSample {
            at: Instant::now(),
            syncs: log.syncs,
            entries_synced: log.entries_synced,
            commit,
            applied,
        };
        let current = now.rates_since(&self.window_start);
        if now.at.saturating_duration_since(self.window_start.at) >= RATE_WINDOW_MIN {
            self.last_rates = Some(current);
            self.window_start = now;
        }
        let queues = QueueDepths {
            requests: self
                .probes
                .as_ref()
                .map_or(0, |probes| probes.requests.len()),
            net_events: self
                .probes
                .as_ref()
                .map_or(0, |probes| probes.net_events.len()),
            feedback: self
                .probes
                .as_ref()
                .map_or(0, |probes| probes.feedback.len()),
            storage: to_storage.len(),
            apply: to_apply.len(),
            capacity: to_storage.capacity().unwrap_or(0),
        };
        RuntimeStatus {
            leader_changes: self.leader_changes,
            client_not_leader: self.not_leader_replies,
            client_errors: self.error_replies,
            queues,
            rates: self.last_rates.unwrap_or(current),
            sync_latency: sync_latency.snapshot(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::NodeId;

    #[test]
    fn observations_land_in_the_bucket_of_their_upper_bound() {
        let histogram = LatencyHistogram::default();
        for micros in [0, 50, 51, 999, 1_000, 2_000_000] {
            histogram.observe(Duration::from_micros(micros));
        }
        let snapshot = histogram.snapshot();
        assert_eq!(snapshot.count, 6);
        assert_eq!(snapshot.counts.len(), SYNC_LATENCY_BOUNDS_US.len() + 1);
        assert_eq!(snapshot.counts[0], 2, "0 and 50 us: {snapshot:?}");
        assert_eq!(snapshot.counts[1], 1, "51 us: {snapshot:?}");
        assert_eq!(snapshot.counts[5], 2, "999 and 1000 us: {snapshot:?}");
        assert_eq!(*snapshot.counts.last().unwrap(), 1, "2 s: {snapshot:?}");
        assert_eq!(snapshot.sum_us, 50 + 51 + 999 + 1_000 + 2_000_000);
        assert_eq!(snapshot.quantile_upper_us(0.5), Some(100));
        assert_eq!(snapshot.quantile_upper_us(0.8), Some(1_000));
        assert_eq!(snapshot.quantile_upper_us(1.0), None, "overflow bucket");
        assert_eq!(LatencySnapshot::default().quantile_upper_us(0.5), None);
    }

    #[test]
    fn the_sync_timer_observes_each_request_once_when_it_is_durable() {
        let histogram = LatencyHistogram::default();
        let mut timer = SyncTimer::default();
        timer.requested(5, 0);
        timer.requested(5, 0);
        timer.requested(9, 0);
        timer.requested(3, 0);
        timer.durable(4, &histogram);
        assert_eq!(histogram.snapshot().count, 0, "seq 5 is not durable yet");
        timer.durable(7, &histogram);
        assert_eq!(histogram.snapshot().count, 1);
        timer.durable(9, &histogram);
        timer.durable(9, &histogram);
        assert_eq!(histogram.snapshot().count, 2);
        timer.requested(9, 9);
        timer.durable(20, &histogram);
        assert_eq!(histogram.snapshot().count, 2, "nothing new was requested");
    }

    #[test]
    fn leader_changes_count_new_leaders_only() {
        let mut observed = Observed::new(0, 0);
        observed.leader_seen(None, None);
        observed.leader_seen(None, Some(NodeId(1)));
        observed.leader_seen(Some(NodeId(1)), Some(NodeId(1)));
        observed.leader_seen(Some(NodeId(1)), None);
        observed.leader_seen(None, Some(NodeId(2)));
        assert_eq!(observed.leader_changes, 2);
    }

    #[test]
    fn error_replies_are_counted_by_kind() {
        let mut observed = Observed::new(0, 0);
        let replies = vec![
            (
                ConnId(1),
                ClientReply::NotLeader {
                    req: 1,
                    leader: None,
                    leader_addr: None,
                },
            ),
            (
                ConnId(1),
                ClientReply::Error {
                    req: 2,
                    message: "refused".to_string(),
                },
            ),
            (ConnId(2), ClientReply::Ok { req: 3 }),
        ];
        observed.count_replies(&replies);
        assert_eq!(
            (observed.not_leader_replies, observed.error_replies),
            (1, 1)
        );
    }

    #[test]
    fn rates_cover_at_least_a_second_once_one_has_passed() {
        let mut observed = Observed::new(10, 10);
        observed.window_start.at -= Duration::from_secs(2);
        let (to_storage, _storage) = crossbeam_channel::bounded(8);
        let (to_apply, _apply) = crossbeam_channel::bounded(8);
        let log = LogCounters {
            syncs: 100,
            entries_synced: 1_000,
            ..LogCounters::default()
        };
        let histogram = LatencyHistogram::default();
        let status = observed.status(&to_storage, &to_apply, &log, 210, 110, &histogram);
        let rates = status.rates;
        assert!(rates.window_ms >= 2_000, "{rates:?}");
        assert!((rates.syncs_per_s - 50.0).abs() < 1.0, "{rates:?}");
        assert!((rates.commits_per_s - 100.0).abs() < 2.0, "{rates:?}");
        // A status right after reports the same complete window, not a tiny new one.
        let again = observed.status(&to_storage, &to_apply, &log, 210, 110, &histogram);
        assert_eq!(again.rates, rates);
        assert_eq!(status.queues.capacity, 8);
    }
}
