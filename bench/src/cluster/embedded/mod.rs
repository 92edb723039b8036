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
