//! `--embedded`: the same closed-loop load as `--mode log`, driven inside each node process
//! through the embedding API (`lockstep::Node::propose` / `propose_batch` and their receipts)
//! instead of over the client protocol.
//!
//! The bench still starts the node processes, finds the leader and polls every node's status
//! over the client port; only the load moves. The two sides talk through files in an exchange
//! directory the bench creates (its path is on each node's command line, `node --embedded DIR`):
//! - for each measurement (round `n`, from 1) the bench writes `plan-n.json`, a [`Plan`]: the
//!   load's shape and its window as wall-clock times (the processes share no `Instant`);
//! - each node waits for it ([`driver`]), runs `clients` proposer threads while it leads, and
//!   after the window writes `node-ID-round-n.json`, a [`NodeRun`];
//! - the bench waits for the window's end, reads every node's file and merges them into one
//!   tally and one per-second series ([`exchange`]), from which the report is built as for a
//!   run over the client protocol.
//!
//! Files appear whole (written to a temporary name, then renamed), so a reader never sees half
//! of one.

pub mod driver;
pub mod exchange;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{de::DeserializeOwned, Deserialize, Serialize};

use super::load::{LoadPlan, Tally};
use super::series::{SecondCount, Series};

/// The load of one round, as the bench hands it to every node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    /// Proposer threads per node.
    pub clients: usize,
    /// Entries in flight per thread.
    pub depth: usize,
    /// Entries per request (1: `propose`, more: `propose_batch`).
    pub batch: usize,
    /// Bytes per entry.
    pub entry_bytes: usize,
    /// When load starts, nanoseconds since the UNIX epoch.
    pub load_start_unix_ns: u64,
    /// When the measured window starts.
    pub measure_start_unix_ns: u64,
    /// When it ends (load stops).
    pub measure_end_unix_ns: u64,
}

impl Plan {
    /// The plan of `load` (its instants as wall-clock times).
    pub fn of(load: &LoadPlan) -> Plan {
        Plan {
            clients: load.clients,
            depth: load.depth,
            batch: load.batch,
            entry_bytes: load.entry_bytes,
            load_start_unix_ns: unix_ns(load.load_start),
            measure_start_unix_ns: unix_ns(load.measure_start),
            measure_end_unix_ns: unix_ns(load.measure_end),
        }
    }

    /// The load plan of this process (instants of its clock, a fresh series, closed loop).
    pub fn load_plan(&self) -> LoadPlan {
        let mut load = LoadPlan {
            clients: self.clients,
            depth: self.depth,
            batch: self.batch,
            entry_bytes: self.entry_bytes,
            rate_per_sec: None,
            cluster_id: 0,
            members: Vec::new(),
            load_start: instant(self.load_start_unix_ns),
            measure_start: instant(self.measure_start_unix_ns),
            measure_end: instant(self.measure_end_unix_ns),
            series: Arc::new(Series::new(0, 0)),
        };
        load.series = Arc::new(Series::new(load.window_seconds(), load.clients));
        load
    }
}

/// What one node measured in one round.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NodeRun {
    /// Entries committed in the window.
    pub committed: u64,
    /// Entries proposed, warm-up included.
    pub sent: u64,
    /// `NotLeader` answers.
    pub not_leader: u64,
    /// Entries refused or timed out (their outcome is unknown).
    pub failed: u64,
    /// Entries in flight when leadership was lost (outcome unknown).
    pub abandoned: u64,
    /// Why proposer threads stopped before the end of the window, if any did.
    pub errors: Vec<String>,
    /// Commit latency: `(nanoseconds, entries)` per histogram bucket.
    pub latency_ns: Vec<(u64, u64)>,
    /// One row per second of the window.
    pub per_second: Vec<SecondCount>,
}

impl NodeRun {
    /// The file form of a node's merged `tally` and its `per_second` counts.
    pub fn new(tally: &Tally, per_second: Vec<SecondCount>) -> NodeRun {
        NodeRun {
            committed: tally.committed,
            sent: tally.sent,
            not_leader: tally.not_leader,
            failed: tally.failed,
            abandoned: tally.abandoned,
            errors: tally.errors.clone(),
            latency_ns: tally
                .latency_ns
                .iter_recorded()
                .map(|bucket| (bucket.value_iterated_to(), bucket.count_at_value()))
                .collect(),
            per_second,
        }
    }

    /// Back to a (merged) tally.
    pub fn tally(&self) -> Tally {
        let mut tally = Tally::new(None);
        tally.committed = self.committed;
        tally.sent = self.sent;
        tally.not_leader = self.not_leader;
        tally.failed = self.failed;
        tally.abandoned = self.abandoned;
        tally.errors = self.errors.clone();
        for &(nanos, count) in &self.latency_ns {
            tally.latency_ns.saturating_record_n(nanos, count);
        }
        tally
    }
}

/// Adds `other` into `total`, second by second. A second in which several nodes committed
/// (leadership moved) gets the largest of their p99s: an upper bound, not a merged percentile.
pub fn add_seconds(total: &mut [SecondCount], other: &[SecondCount]) {
    for (sum, second) in total.iter_mut().zip(other) {
        sum.committed += second.committed;
        if second.committed > 0 {
            sum.p99_us = sum.p99_us.max(second.p99_us);
        }
    }
}

/// Round `round`'s plan in the exchange directory `dir`.
pub fn plan_path(dir: &Path, round: u64) -> PathBuf {
    dir.join(format!("plan-{round}.json"))
}

/// Node `id`'s results of round `round` in the exchange directory `dir`.
pub fn results_path(dir: &Path, id: u64, round: u64) -> PathBuf {
    dir.join(format!("node-{id}-round-{round}.json"))
}

/// Writes `value` as JSON to `path`, whole: to a temporary name first, then renamed.
pub fn write_json(path: &Path, value: &impl Serialize) -> Result<(), String> {
    let text = serde_json::to_string(value).map_err(|error| error.to_string())?;
    let temporary = path.with_extension("json.tmp");
    std::fs::write(&temporary, text)
        .and_then(|()| std::fs::rename(&temporary, path))
        .map_err(|error| format!("writing {}: {error}", path.display()))
}

/// Reads the JSON file at `path`.
pub fn read_json<T: DeserializeOwned>(path: &Path) -> Result<T, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|error| format!("reading {}: {error}", path.display()))?;
    serde_json::from_str(&text).map_err(|error| format!("parsing {}: {error}", path.display()))
}

/// `at` as nanoseconds since the UNIX epoch, by this process's clocks.
fn unix_ns(at: Instant) -> u64 {
    let (now, wall) = (Instant::now(), SystemTime::now());
    let then = if at >= now {
        wall + (at - now)
    } else {
        wall - (now - at)
    };
    let since_epoch = then.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
    u64::try_from(since_epoch.as_nanos()).unwrap_or(u64::MAX)
}

/// The instant of this process's clock at `unix_ns` nanoseconds since the UNIX epoch.
fn instant(unix_ns: u64) -> Instant {
    let (now, wall) = (Instant::now(), SystemTime::now());
    let then = UNIX_EPOCH + Duration::from_nanos(unix_ns);
    match then.duration_since(wall) {
        Ok(ahead) => now + ahead,
        Err(behind) => now.checked_sub(behind.duration()).unwrap_or(now),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A plan whose window started a second ago and lasts 1.5 s.
    fn load() -> LoadPlan {
        Plan {
            clients: 2,
            depth: 64,
            batch: 16,
            entry_bytes: 16,
            load_start_unix_ns: 0,
            measure_start_unix_ns: 0,
            measure_end_unix_ns: 0,
        }
        .load_plan()
        .with_window(
            Instant::now() - Duration::from_secs(1),
            Duration::from_millis(1500),
        )
    }

    impl LoadPlan {
        fn with_window(mut self, start: Instant, length: Duration) -> LoadPlan {
            (self.load_start, self.measure_start) = (start, start);
            self.measure_end = start + length;
            self.series = Arc::new(Series::new(self.window_seconds(), self.clients));
            self
        }
    }

    #[test]
    fn plans_cross_processes_as_wall_clock_times() {
        let load = load();
        let plan = Plan::of(&load);
        let text = serde_json::to_string(&plan).unwrap();
        let back: Plan = serde_json::from_str(&text).unwrap();
        assert_eq!(back, plan);
        let again = back.load_plan();
        assert_eq!((again.clients, again.depth, again.batch), (2, 64, 16));
        assert_eq!((again.entry_bytes, again.rate_per_sec), (16, None));
        assert_eq!(again.window_seconds(), 2);
        for (a, b) in [
            (again.load_start, load.load_start),
            (again.measure_start, load.measure_start),
            (again.measure_end, load.measure_end),
        ] {
            let apart = if a > b { a - b } else { b - a };
            assert!(apart < Duration::from_millis(1), "{apart:?}");
        }
    }

    /// Thread `thread` of `load` committing `entries` entries of latency `micros` at `at` after
    /// the window's start, finished.
    fn tally(load: &LoadPlan, thread: usize, entries: u64, micros: u64, at: Duration) -> Tally {
        let mut tally = Tally::new(Some(thread));
        let now = load.measure_start + at;
        tally.record(load, now - Duration::from_micros(micros), now, entries);
        tally.finish(load);
        tally
    }

    #[test]
    fn a_node_run_keeps_the_tally_through_its_file() {
        let load = load();
        let mut total = Tally::new(None);
        total.merge(&tally(&load, 0, 100, 250, Duration::from_millis(100)));
        total.merge(&tally(&load, 1, 1, 9000, Duration::from_millis(1200)));
        (total.sent, total.not_leader, total.failed, total.abandoned) = (200, 1, 2, 3);
        total.errors.push("proposer: gone".to_string());
        let run = NodeRun::new(&total, load.series.counts());
        let text = serde_json::to_string(&run).unwrap();
        let back: NodeRun = serde_json::from_str(&text).unwrap();
        assert_eq!(back, run);
        let again = back.tally();
        assert_eq!(again.committed, 101);
        assert_eq!((again.sent, again.not_leader), (200, 1));
        assert_eq!((again.failed, again.abandoned), (2, 3));
        assert_eq!(again.errors, total.errors);
        assert_eq!(again.latency_ns.len(), total.latency_ns.len());
        for quantile in [0.0, 0.5, 0.99, 1.0] {
            assert_eq!(
                again.latency_ns.value_at_quantile(quantile),
                total.latency_ns.value_at_quantile(quantile),
                "{quantile}"
            );
        }
        let committed: Vec<u64> = back.per_second.iter().map(|s| s.committed).collect();
        assert_eq!(committed, [100, 1]);
    }

    #[test]
    fn seconds_add_up_and_keep_the_worse_p99() {
        let second = |committed, p99_us| SecondCount { committed, p99_us };
        let mut total = vec![second(10, 500), second(0, 0), second(5, 100)];
        add_seconds(&mut total, &[second(0, 0), second(7, 300), second(1, 900)]);
        assert_eq!(total, [second(10, 500), second(7, 300), second(6, 900)]);
    }
}
