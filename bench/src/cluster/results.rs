//! The figures of a cluster run and of a sweep, as JSON and as text.
//!
//! Owns the arithmetic from raw measurements (a merged [`Tally`], status samples, memory
//! readings, how the nodes ended) to reported figures: throughput over the exact window length,
//! MB/s of entry payload (10^6 bytes), latency percentiles, the per-second series (the last,
//! possibly partial, second scaled by its true length), the per-command figures of a kv run, and
//! the sweep table. Every reply that was not a success is a PROBLEM line of the report.

use serde::Serialize;

use super::args::KnobValue;
use super::kv_load::{ErrorCounts, KvTally, OpTally};
use super::load::Tally;
use super::series::SecondCount;
use super::status::Grouping;
use super::supervisor::NodeExit;
use crate::report::{round_to, Describe, LatencyUs};

/// Everything one measured run produced.
#[derive(Clone, Debug, Serialize)]
pub struct RunResults {
    /// Entries committed (replied to) per second of the window.
    pub throughput_per_sec: f64,
    /// Entry payload committed per second, in 10^6 bytes.
    pub mb_per_sec: f64,
    /// Entries committed in the window.
    pub committed: u64,
    /// Commit latency (send, or intended send in open loop, to `Applied` reply).
    pub latency_us: LatencyUs,
    /// The latency percentile curve, from the median to 99.999 (10 points per decade of
    /// 1 - quantile).
    pub latency_curve: Vec<CurvePoint>,
    /// Open loop: the offered rate, entries/s.
    pub offered_per_sec: Option<f64>,
    /// How the leader grouped work (from the nodes' status counters).
    pub grouping: Grouping,
    /// Leader changes seen during the window.
    pub leader_changes: u64,
    /// Client-side trouble.
    pub clients: ClientTrouble,
    /// One row per second of the window.
    pub per_second: Vec<SecondRow>,
    /// Peak resident memory.
    pub memory: Memory,
    /// CPU used during the window.
    pub cpu: Cpu,
    /// How each local node ended (empty with `--connect`, or before the cluster stopped).
    pub node_exits: Vec<NodeExitRow>,
    /// "One fsync plus one round trip" measured after the run (`None` in sweeps or when the
    /// probe failed).
    pub yardstick: Option<crate::baseline::Yardstick>,
    /// `--mode kv`: SET and GET apart, and the error replies. (In kv mode the figures above
    /// count commands, their latency is the client round trip and MB/s counts value bytes.)
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kv: Option<KvResults>,
}

/// The per-command figures of a kv run.
#[derive(Clone, Debug, Serialize)]
pub struct KvResults {
    /// SET commands.
    pub set: OpResults,
    /// GET commands.
    pub get: OpResults,
    /// GETs in the window answered nil (a key not set yet); they count as done.
    pub get_misses: u64,
    /// Error replies (other than `-NOTLEADER` redirects), by text.
    pub errors: ErrorCounts,
}

/// One command kind's figures.
#[derive(Clone, Debug, Serialize)]
pub struct OpResults {
    /// Successful replies per second of the window.
    pub throughput_per_sec: f64,
    /// Value bytes written (SET) or read (GET hits) per second, in 10^6 bytes.
    pub mb_per_sec: f64,
    /// Successful replies in the window.
    pub done: u64,
    /// Client round trip (write of the command to read of its reply).
    pub latency_us: LatencyUs,
    /// Sent, warm-up included.
    pub sent: u64,
    /// Answered with an error, warm-up included.
    pub failed: u64,
    /// In flight on a connection that was given up.
    pub abandoned: u64,
}

impl OpResults {
    fn new(tally: &OpTally, window_sec: f64, value_bytes: u64) -> OpResults {
        OpResults {
            throughput_per_sec: round_to(tally.done as f64 / window_sec, 0),
            mb_per_sec: round_to(value_bytes as f64 / window_sec / 1e6, 4),
            done: tally.done,
            latency_us: LatencyUs::from_histogram_ns(&tally.latency_ns),
            sent: tally.sent,
            failed: tally.failed,
            abandoned: tally.abandoned,
        }
    }

    fn summary(&self) -> String {
        format!(
            "{} ops/s, {} MB/s; {} ({} failed, {} abandoned)",
            self.throughput_per_sec,
            self.mb_per_sec,
            self.latency_us.summary(),
            self.failed,
            self.abandoned
        )
    }
}

/// One point of the latency percentile curve.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct CurvePoint {
    /// The percentile (e.g. 99.9).
    pub percentile: f64,
    /// The latency at it, µs.
    pub latency_us: f64,
}

/// Decades of `1 - quantile` the curve covers past the median (50 % -> 99.999 %).
const CURVE_DECADES: u32 = 5;

/// Points per decade of the curve.
const CURVE_POINTS_PER_DECADE: u32 = 10;

/// The percentile curve of a histogram of nanoseconds (empty for an empty histogram).
fn latency_curve(histogram: &hdrhistogram::Histogram<u64>) -> Vec<CurvePoint> {
    if histogram.is_empty() {
        return Vec::new();
    }
    // 1 - quantile goes from 0.5 down to 0.5 * 10^-CURVE_DECADES in equal steps of its log.
    (0..=CURVE_DECADES * CURVE_POINTS_PER_DECADE)
        .map(|step| {
            let tail = 0.5 * 10f64.powf(-f64::from(step) / f64::from(CURVE_POINTS_PER_DECADE));
            let quantile = 1.0 - tail;
            CurvePoint {
                percentile: round_to(quantile * 100.0, 4),
                latency_us: round_to(histogram.value_at_quantile(quantile) as f64 / 1000.0, 1),
            }
        })
        .collect()
}

/// Requests that did not simply commit.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ClientTrouble {
    /// Proposals sent, warm-up included.
    pub sent: u64,
    /// `NotLeader` replies.
    pub not_leader: u64,
    /// `Error` replies.
    pub failed: u64,
    /// In flight on a connection that was given up.
    pub abandoned: u64,
    /// Reconnections.
    pub reconnects: u64,
    /// Why client threads stopped early.
    pub errors: Vec<String>,
}

/// One second of the window.
#[derive(Clone, Debug, Serialize)]
pub struct SecondRow {
    /// Seconds since the window started (0-based).
    pub second: usize,
    /// Entries committed per second during it.
    pub throughput_per_sec: f64,
    /// 99th percentile commit latency of its entries, µs (0 when none).
    pub p99_us: f64,
}

/// Peak resident memory, bytes.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Memory {
    /// The bench process (all client threads): VmHWM.
    pub bench_peak_rss_bytes: Option<u64>,
    /// Each local node process.
    pub nodes: Vec<NodeMemory>,
}

/// CPU used during the measured window, in cores (CPU seconds per second; 2 = two cores busy).
#[derive(Clone, Debug, Default, Serialize)]
pub struct Cpu {
    /// The bench process (all client threads).
    pub bench_cores: Option<f64>,
    /// Each local node process.
    pub nodes: Vec<NodeCpu>,
}

/// One node's CPU use.
#[derive(Clone, Debug, Serialize)]
pub struct NodeCpu {
    /// The node.
    pub id: u64,
    /// Cores used (`None` when unreadable).
    pub cores: Option<f64>,
}

/// One node's peak resident memory.
#[derive(Clone, Debug, Serialize)]
pub struct NodeMemory {
    /// The node.
    pub id: u64,
    /// VmHWM (anonymous memory and the touched pages of mapped log segments), read just
    /// before the node was stopped (`None` when unreadable).
    pub peak_rss_bytes: Option<u64>,
    /// The largest RssAnon (heap and stacks, without mapped files) of the once-a-second
    /// samples of the measured window.
    pub peak_anon_rss_bytes: Option<u64>,
}

/// How one node ended.
#[derive(Clone, Debug, Serialize)]
pub struct NodeExitRow {
    /// The node.
    pub id: u64,
    /// Its exit status.
    pub status: String,
    /// Exit 0 after SIGTERM.
    pub clean: bool,
}

impl From<&NodeExit> for NodeExitRow {
    fn from(exit: &NodeExit) -> NodeExitRow {
        NodeExitRow {
            id: exit.id,
            status: exit.status.clone(),
            clean: exit.clean,
        }
    }
}

impl RunResults {
    /// The figures of `tally` over a window of `window_sec` seconds of `entry_bytes` entries.
    pub fn from_tally(
        tally: &Tally,
        seconds: &[SecondCount],
        window_sec: f64,
        entry_bytes: usize,
    ) -> RunResults {
        assert!(window_sec > 0.0, "an empty window: {window_sec} s");
        let throughput = tally.committed as f64 / window_sec;
        let per_second = seconds
            .iter()
            .enumerate()
            .map(|(second, count)| {
                // The last second may be cut short by the window's end.
                let length = (window_sec - second as f64).clamp(f64::MIN_POSITIVE, 1.0);
                SecondRow {
                    second,
                    throughput_per_sec: round_to(count.committed as f64 / length, 0),
                    p99_us: count.p99_us as f64,
                }
            })
            .collect();
        RunResults {
            throughput_per_sec: round_to(throughput, 0),
            mb_per_sec: round_to(throughput * entry_bytes as f64 / 1e6, 4),
            committed: tally.committed,
            latency_us: LatencyUs::from_histogram_ns(&tally.latency_ns),
            latency_curve: latency_curve(&tally.latency_ns),
            offered_per_sec: None,
            grouping: Grouping::default(),
            leader_changes: 0,
            clients: ClientTrouble {
                sent: tally.sent,
                not_leader: tally.not_leader,
                failed: tally.failed,
                abandoned: tally.abandoned,
                reconnects: tally.reconnects,
                errors: tally.errors.clone(),
            },
            per_second,
            memory: Memory::default(),
            cpu: Cpu::default(),
            node_exits: Vec::new(),
            yardstick: None,
            kv: None,
        }
    }

    /// The figures of a kv run's `tally` over a window of `window_sec` seconds of
    /// `value_bytes` values: commands as entries, plus SET and GET apart.
    pub fn from_kv_tally(
        tally: &KvTally,
        seconds: &[SecondCount],
        window_sec: f64,
        value_bytes: usize,
    ) -> RunResults {
        let mut results = RunResults::from_tally(&tally.all, seconds, window_sec, value_bytes);
        let value_bytes = value_bytes as u64;
        let set_bytes = tally.set.done * value_bytes;
        let get_bytes = (tally.get.done - tally.get_misses) * value_bytes;
        results.mb_per_sec = round_to((set_bytes + get_bytes) as f64 / window_sec / 1e6, 4);
        results.kv = Some(KvResults {
            set: OpResults::new(&tally.set, window_sec, set_bytes),
            get: OpResults::new(&tally.get, window_sec, get_bytes),
            get_misses: tally.get_misses,
            errors: tally.errors.clone(),
        });
        results
    }

    /// Problems that make the figures doubtful, one line each (empty when the run was clean).
    pub fn problems(&self) -> Vec<String> {
        let mut problems: Vec<String> = self.clients.errors.clone();
        for exit in self.node_exits.iter().filter(|exit| !exit.clean) {
            problems.push(format!(
                "node {} did not shut down cleanly: {}",
                exit.id, exit.status
            ));
        }
        if self.committed == 0 {
            problems.push("nothing committed in the measured window".to_string());
        }
        match &self.kv {
            Some(kv) if kv.errors.total > 0 => {
                problems.push(format!(
                    "SERVER ERRORS: {} replies were errors ({} to SET, {} to GET)",
                    kv.errors.total, kv.set.failed, kv.get.failed
                ));
                for text in &kv.errors.texts {
                    problems.push(format!("  {} x -{}", text.count, text.text));
                }
                if kv.errors.other > 0 {
                    problems.push(format!("  {} x other error texts", kv.errors.other));
                }
            }
            Some(_) => {}
            None if self.clients.failed > 0 => problems.push(format!(
                "SERVER ERRORS: {} entries were answered with Error replies (outcome unknown)",
                self.clients.failed
            )),
            None => {}
        }
        problems
    }
}

fn optional(value: Option<f64>, unit: &str) -> String {
    value.map_or_else(|| "n/a".to_string(), |value| format!("{value}{unit}"))
}

/// `value` with three significant digits and a k or M suffix (`153`, `12.3k`, `2.05M`).
fn human(value: f64) -> String {
    let (scaled, suffix) = if value >= 1e6 {
        (value / 1e6, "M")
    } else if value >= 1e3 {
        (value / 1e3, "k")
    } else {
        (value, "")
    };
    let decimals = if scaled >= 100.0 {
        0
    } else if scaled >= 10.0 {
        1
    } else {
        2
    };
    if suffix.is_empty() {
        format!("{}", value.round())
    } else {
        format!("{scaled:.decimals$}{suffix}")
    }
}

fn mib(bytes: Option<u64>) -> String {
    bytes.map_or_else(
        || "n/a".to_string(),
        |bytes| format!("{:.1} MiB", bytes as f64 / (1u64 << 20) as f64),
    )
}

impl Describe for RunResults {
    fn rows(&self) -> Vec<(String, String)> {
        let latency = &self.latency_us;
        let grouping = &self.grouping;
        let (unit, done, latency_label) = match self.kv {
            None => ("entries", "committed", "commit latency"),
            Some(_) => ("commands", "done", "round trip"),
        };
        let mut rows = vec![
            (
                "throughput".into(),
                format!(
                    "{} {unit}/s, {} MB/s ({} {unit} {done})",
                    self.throughput_per_sec, self.mb_per_sec, self.committed
                ),
            ),
            (
                latency_label.into(),
                format!(
                    "min {} mean {} µs; {}",
                    latency.min,
                    latency.mean,
                    latency.summary()
                ),
            ),
        ];
        if let Some(yardstick) = &self.yardstick {
            rows.push(("latency yardstick".into(), yardstick.describe()));
        }
        if let Some(kv) = &self.kv {
            rows.push(("SET".into(), kv.set.summary()));
            rows.push((
                "GET".into(),
                format!("{}; {} misses (nil)", kv.get.summary(), kv.get_misses),
            ));
        }
        if let Some(offered) = self.offered_per_sec {
            rows.push(("offered".into(), format!("{offered} {unit}/s (open loop)")));
        }
        rows.push((
            "grouping".into(),
            format!(
                "{} entries/batch, {} entries/sync, {} syncs/s, {} B/network write",
                optional(grouping.entries_per_batch, ""),
                optional(grouping.entries_per_sync, ""),
                optional(grouping.syncs_per_sec, ""),
                optional(grouping.bytes_per_network_write, ""),
            ),
        ));
        rows.push((
            "leader commit index".into(),
            optional(grouping.commit_index_per_sec, " entries/s"),
        ));
        if !grouping.missing.is_empty() {
            rows.push(("not reported by nodes".into(), grouping.missing.join(", ")));
        }
        rows.push(("leader changes".into(), self.leader_changes.to_string()));
        let clients = &self.clients;
        rows.push((
            "requests".into(),
            format!(
                "{} sent, {} not-leader, {} failed, {} abandoned, {} reconnects",
                clients.sent,
                clients.not_leader,
                clients.failed,
                clients.abandoned,
                clients.reconnects
            ),
        ));
        let mut memory = format!("bench {}", mib(self.memory.bench_peak_rss_bytes));
        for node in &self.memory.nodes {
            memory.push_str(&format!(
                ", node {} {} ({} anonymous)",
                node.id,
                mib(node.peak_rss_bytes),
                mib(node.peak_anon_rss_bytes)
            ));
        }
        rows.push(("peak RSS".into(), memory));
        let cores = |value: Option<f64>| optional(value, " cores");
        let mut cpu = format!("bench {}", cores(self.cpu.bench_cores));
        for node in &self.cpu.nodes {
            cpu.push_str(&format!(", node {} {}", node.id, cores(node.cores)));
        }
        rows.push(("CPU in window".into(), cpu));
        let series: Vec<String> = self
            .per_second
            .iter()
            .map(|row| format!("{}/{}µs", human(row.throughput_per_sec), row.p99_us))
            .collect();
        for (chunk_index, chunk) in series.chunks(5).enumerate() {
            let label = if chunk_index == 0 {
                "per second (tput/p99)".to_string()
            } else {
                String::new()
            };
            rows.push((label, chunk.join("  ")));
        }
        for problem in self.problems() {
            rows.push(("PROBLEM".into(), problem));
        }
        rows
    }
}

/// A sweep: one run per value of one knob.
#[derive(Clone, Debug, Serialize)]
pub struct SweepResults {
    /// The knob varied (`clients`, `depth`, `entry-bytes`).
    pub knob: String,
    /// One point per value, in run order.
    pub points: Vec<SweepPoint>,
}

/// One run of a sweep.
#[derive(Clone, Debug, Serialize)]
pub struct SweepPoint {
    /// The knob's value.
    pub value: KnobValue,
    /// The run's figures.
    #[serde(flatten)]
    pub results: RunResults,
}

impl Describe for SweepResults {
    fn rows(&self) -> Vec<(String, String)> {
        let kv = self.points.iter().any(|point| point.results.kv.is_some());
        let mut header = format!(
            "{:>12} {:>9} {:>9} {:>9} {:>9} {:>9}",
            if kv { "commands/s" } else { "entries/s" },
            "MB/s",
            "p50 µs",
            "p99 µs",
            "p99.9 µs",
            "max µs"
        );
        if kv {
            header.push_str(&format!(
                " {:>10} {:>10} {:>11} {:>11}",
                "SET/s", "GET/s", "SET p50 µs", "GET p50 µs"
            ));
        }
        let mut rows = vec![(self.knob.clone(), header)];
        for point in &self.points {
            let results = &point.results;
            let latency = &results.latency_us;
            let mut row = format!(
                "{:>12} {:>9} {:>9} {:>9} {:>9} {:>9}",
                results.throughput_per_sec,
                results.mb_per_sec,
                latency.p50,
                latency.p99,
                latency.p999,
                latency.max
            );
            if let Some(kv) = &results.kv {
                row.push_str(&format!(
                    " {:>10} {:>10} {:>11} {:>11}",
                    kv.set.throughput_per_sec,
                    kv.get.throughput_per_sec,
                    kv.set.latency_us.p50,
                    kv.get.latency_us.p50
                ));
            }
            rows.push((point.value.to_string(), row));
            for problem in results.problems() {
                rows.push(("PROBLEM".into(), problem));
            }
        }
        rows
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    use std::sync::Arc;

    use crate::cluster::load::LoadPlan;
    use crate::cluster::series::Series;

    #[test]
    fn figures_follow_from_the_tally() {
        let start = Instant::now();
        let plan = LoadPlan {
            clients: 1,
            depth: 1,
            batch: 1,
            entry_bytes: 100,
            rate_per_sec: None,
            cluster_id: 7,
            members: Vec::new(),
            load_start: start,
            measure_start: start,
            measure_end: start + Duration::from_millis(1500),
            series: Arc::new(Series::new(2, 1)),
        };
        let mut tally = Tally::new(Some(0));
        // 1000 entries in second 0 at 100 µs, 500 in the half second 1 at 300 µs.
        for (count, second_ms, latency_us) in [(1000u64, 0u64, 100u64), (500, 1000, 300)] {
            for _ in 0..count {
                let at = start + Duration::from_millis(second_ms + 400);
                tally.record(&plan, at - Duration::from_micros(latency_us), at, 1);
            }
        }
        tally.finish(&plan);
        let seconds = plan.series.counts();
        let results = RunResults::from_tally(&tally, &seconds, 1.5, plan.entry_bytes);
        assert_eq!(results.throughput_per_sec, 1000.0);
        assert_eq!(results.mb_per_sec, 0.1);
        assert_eq!(results.per_second.len(), 2);
        assert_eq!(results.per_second[0].throughput_per_sec, 1000.0);
        // Half a second with 500 entries is 1000 entries/s.
        assert_eq!(results.per_second[1].throughput_per_sec, 1000.0);
        assert!((299.0..=303.0).contains(&results.per_second[1].p99_us));
        assert!((99.0..=101.0).contains(&results.latency_us.p50));
        let curve = &results.latency_curve;
        assert_eq!(curve.len(), 51);
        assert_eq!(curve[0].percentile, 50.0);
        assert_eq!(curve[10].percentile, 95.0);
        assert_eq!(curve[50].percentile, 99.9995);
        assert!(curve
            .windows(2)
            .all(|pair| pair[0].latency_us <= pair[1].latency_us));
        assert!((299.0..=301.0).contains(&curve[50].latency_us), "{curve:?}");
        assert!(results.problems().is_empty());
        let json = serde_json::to_value(&results).unwrap();
        for key in [
            "throughput_per_sec",
            "mb_per_sec",
            "committed",
            "leader_changes",
        ] {
            assert!(json[key].is_number(), "{key}: {json}");
        }
        for key in ["p50", "p99", "p999", "max"] {
            assert!(json["latency_us"][key].is_number(), "{key}: {json}");
        }
        assert!(json["per_second"].is_array());
        assert!(json["grouping"].is_object());
        assert!(json["memory"]["nodes"].is_array());
    }

    #[test]
    fn large_numbers_are_shortened() {
        assert_eq!(human(153.0), "153");
        assert_eq!(human(12_345.0), "12.3k");
        assert_eq!(human(2_054_000.0), "2.05M");
        assert_eq!(human(312_000.0), "312k");
    }

    #[test]
    fn an_empty_run_is_a_problem() {
        let seconds = [SecondCount {
            committed: 0,
            p99_us: 0,
        }];
        let results = RunResults::from_tally(&Tally::new(None), &seconds, 1.0, 16);
        assert_eq!(results.latency_us, LatencyUs::default());
        assert!(results.latency_curve.is_empty());
        assert_eq!(
            results.problems(),
            vec!["nothing committed in the measured window".to_string()]
        );
    }
}
