//! The bench side of `--embedded`: the exchange directory, each round's plan, and the nodes'
//! results merged into one tally and one per-second series.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use super::{add_seconds, plan_path, read_json, results_path, write_json, NodeRun, Plan};
use crate::cluster::load::{LoadPlan, Tally};
use crate::cluster::series::SecondCount;
use crate::interrupt::Interrupt;

/// How long after the window's end every node has to write its results.
const RESULTS_TIMEOUT: Duration = Duration::from_secs(10);

/// How often the bench looks for the nodes' results.
const RESULTS_POLL: Duration = Duration::from_millis(20);

/// The directory the bench and its nodes exchange plans and results in; dropping it removes it.
pub struct Exchange {
    dir: TempDir,
    /// Rounds published so far.
    rounds: u64,
}

impl Exchange {
    /// A new, empty exchange directory under `parent` (default: the system's temp dir).
    pub fn create(parent: Option<&Path>) -> Result<Exchange, String> {
        let mut builder = tempfile::Builder::new();
        builder.prefix("lockstep-bench-embedded-");
        match parent {
            Some(parent) => builder.tempdir_in(parent),
            None => builder.tempdir(),
        }
        .map(|dir| Exchange { dir, rounds: 0 })
        .map_err(|error| format!("creating the embedded load's exchange directory: {error}"))
    }

    /// The directory (for the nodes' command line).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Hands `load` to every node as the next round.
    pub fn publish(&mut self, load: &LoadPlan) -> Result<(), String> {
        let round = self.rounds + 1;
        write_json(&plan_path(self.dir(), round), &Plan::of(load))?;
        self.rounds = round;
        Ok(())
    }

    /// Waits for the end of `load`'s window (the last round published), then for that round's
    /// results from each node of `ids`, and merges them. A node that wrote none in time (or an unreadable file) is an
    /// error in the tally, as a client thread that stopped early is. Returns early, with what
    /// is there, when `interrupt` is set.
    pub fn collect(
        &self,
        load: &LoadPlan,
        ids: &[u64],
        interrupt: &Interrupt,
    ) -> (Tally, Vec<SecondCount>) {
        let mut tally = Tally::new(None);
        let mut seconds = vec![
            SecondCount {
                committed: 0,
                p99_us: 0
            };
            load.window_seconds()
        ];
        let paths: Vec<(u64, PathBuf)> = ids
            .iter()
            .map(|&id| (id, results_path(self.dir(), id, self.rounds)))
            .collect();
        let deadline = load.measure_end + RESULTS_TIMEOUT;
        while !paths.iter().all(|(_, path)| path.exists())
            && Instant::now() < deadline
            && !interrupt.is_set()
        {
            std::thread::sleep(RESULTS_POLL);
        }
        for (id, path) in &paths {
            match read_json::<NodeRun>(path) {
                Ok(run) => {
                    tally.merge(&run.tally());
                    add_seconds(&mut seconds, &run.per_second);
                }
                Err(error) => tally.errors.push(format!(
                    "node {id} wrote no results of the embedded load in time ({error})"
                )),
            }
        }
        (tally, seconds)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::embedded::NodeRun;
    use crate::cluster::series::Series;
    use std::sync::Arc;

    #[test]
    fn rounds_are_published_and_results_merged_naming_a_silent_node() {
        let parent = tempfile::tempdir().unwrap();
        let mut exchange = Exchange::create(Some(parent.path())).unwrap();
        let start = Instant::now() - Duration::from_secs(2);
        let mut load = LoadPlan {
            clients: 1,
            depth: 8,
            batch: 8,
            entry_bytes: 16,
            rate_per_sec: None,
            cluster_id: 0,
            members: Vec::new(),
            load_start: start,
            measure_start: start,
            measure_end: start + Duration::from_secs(1),
            series: Arc::new(Series::new(1, 1)),
        };
        exchange.publish(&load).unwrap();
        exchange.publish(&load).unwrap();
        let plan: Plan = read_json(&plan_path(exchange.dir(), 2)).unwrap();
        assert_eq!((plan.clients, plan.depth, plan.batch), (1, 8, 8));
        assert!(!plan_path(exchange.dir(), 3).exists());
        // Node 1 committed 8 entries in round 2; node 2 wrote nothing.
        let mut tally = Tally::new(Some(0));
        let at = start + Duration::from_millis(500);
        tally.record(&load, at - Duration::from_micros(300), at, 8);
        tally.finish(&load);
        let run = NodeRun::new(&tally, load.series.counts());
        write_json(&results_path(exchange.dir(), 1, 2), &run).unwrap();
        // Interrupted: no waiting for node 2.
        let interrupt = Interrupt::default();
        interrupt.set();
        load.series = Arc::new(Series::new(0, 0));
        let (total, seconds) = exchange.collect(&load, &[1, 2], &interrupt);
        assert_eq!(total.committed, 8);
        assert_eq!(seconds.len(), 1);
        assert_eq!(seconds[0].committed, 8);
        assert_eq!(total.errors.len(), 1, "{:?}", total.errors);
        assert!(total.errors[0].starts_with("node 2 wrote no results"));
        let dir = exchange.dir().to_path_buf();
        drop(exchange);
        assert!(!dir.exists(), "the exchange directory outlived the run");
    }
}
