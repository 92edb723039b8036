//! `lockstep-bench disk`: the durable log's throughput and append-to-durable latency, against
//! a raw `pwrite` + `fdatasync` baseline measured in the same run.
//!
//! A run opens one log and one preallocated baseline file in the data directory, warms both
//! up (the log until it recycles segments), then runs `--rounds` rounds of three timed phases each, back to back:
//! 1. **log**: one writer appends batches with durability on (see [`log_phase`]);
//! 2. **baseline**: `pwrite` one batch's bytes, `fdatasync`, repeat (what the issue defines as
//!    the raw baseline; `ratio_to_baseline` compares against it);
//! 3. **grouped baseline**: the same, but one `fdatasync` per as many bytes as the log's own
//!    syncs covered on average in this round, i.e. the disk's bandwidth at the log's sync size.
//!
//! Throughputs are the median over rounds; ratios are the median of the per-round ratios (the
//! two phases of a round run seconds apart, so a shared, noisy machine disturbs both alike);
//! latency percentiles are over every batch of every round.

mod baseline;
mod log_phase;
mod phase;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use lockstep::log::AppendMode;
use serde::Serialize;

use crate::report::{median, now_utc, round_to, Describe, LatencyUs, Machine, Report};
use baseline::BaselineFile;
use log_phase::{LogBench, LogBenchConfig};
use phase::PhaseResult;

/// Arguments of `lockstep-bench disk`.
#[derive(clap::Args, Clone, Debug)]
pub struct Args {
    /// Directory for the log (left in place afterwards: inspect it with `lockstep log verify
    /// DIR`) and the baseline's scratch file (removed). Without it a temporary directory is used
    /// and removed.
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Timed seconds of each phase (log, baseline, grouped baseline), split evenly across rounds.
    #[arg(long, default_value_t = 3.0)]
    pub seconds: f64,
    /// Rounds of the three phases; figures are medians over rounds.
    #[arg(long, default_value_t = 3)]
    pub rounds: u32,
    /// Bytes of each entry (plus its 4-byte length prefix in the payload).
    #[arg(long, default_value_t = 16)]
    pub entry_bytes: usize,
    /// Payload bytes per batch: as many entries as fit (at least one) are put in each batch.
    #[arg(long, default_value_t = 64 << 10)]
    pub batch_bytes: usize,
    /// Most bytes appended to the log but not yet durable; the writer waits for a sync to
    /// complete rather than run further ahead. Bounds the append-to-durable latency.
    #[arg(long, default_value_t = 8 << 20)]
    pub window_bytes: u64,
    /// Bytes of each log segment file (and of the baseline file).
    #[arg(long, default_value_t = 64 << 20)]
    pub segment_bytes: u64,
    /// How the log writes appended records into its segments.
    #[arg(long, value_enum, default_value_t = AppendModeArg::Pwrite)]
    pub append_mode: AppendModeArg,
    /// Also write the report as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// `--append-mode`: the log's [`lockstep::log::AppendMode`].
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum AppendModeArg {
    /// Copy into the shared mapping.
    Mmap,
    /// `pwritev` into the page cache; the mapping is only read.
    Pwrite,
}

impl AppendModeArg {
    fn mode(self) -> AppendMode {
        match self {
            AppendModeArg::Mmap => AppendMode::Mmap,
            AppendModeArg::Pwrite => AppendMode::Pwrite,
        }
    }
}

/// Runs the benchmark.
pub fn run(args: Args) -> ExitCode {
    match run_report(&args) {
        Ok(report) => {
            print!("{}", report.to_text());
            if let Some(path) = &args.json {
                if let Err(error) = report.write_json(path) {
                    eprintln!("lockstep-bench disk: writing {}: {error}", path.display());
                    return ExitCode::FAILURE;
                }
            }
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("lockstep-bench disk: {error}");
            ExitCode::FAILURE
        }
    }
}

/// The report of `lockstep-bench disk`.
pub type DiskReport = Report<DiskConfig, DiskResults>;

/// Runs the benchmark described by `args` and returns its report.
pub fn run_report(args: &Args) -> Result<DiskReport, String> {
    let config = DiskConfig::from_args(args)?;
    let started_utc = now_utc();
    match &args.dir {
        Some(dir) => {
            std::fs::create_dir_all(dir)
                .map_err(|error| format!("creating {}: {error}", dir.display()))?;
            run_in(dir, config, started_utc)
        }
        None => {
            let temp = tempfile::Builder::new()
                .prefix("lockstep-bench-disk-")
                .tempdir()
                .map_err(|error| format!("creating a temporary directory: {error}"))?;
            run_in(temp.path(), config, started_utc)
        }
    }
}

/// Name of the baseline's scratch file in the data directory (removed after the run).
const BASELINE_FILE: &str = "bench-baseline.dat";

fn run_in(dir: &Path, mut config: DiskConfig, started_utc: String) -> Result<DiskReport, String> {
    crate::report::warn_if_syncs_are_free("lockstep-bench disk", dir);
    let machine = Machine::describe(dir);
    let baseline_path = dir.join(BASELINE_FILE);
    let baseline = BaselineFile::create(&baseline_path, config.segment_bytes)
        .map_err(|error| format!("creating {}: {error}", baseline_path.display()))?;
    let outcome = run_rounds(dir, &baseline, &mut config);
    drop(baseline);
    std::fs::remove_file(&baseline_path)
        .map_err(|error| format!("removing {}: {error}", baseline_path.display()))?;
    Ok(Report {
        bench: "disk".to_string(),
        started_utc,
        machine,
        warning: None,
        config,
        results: outcome?,
    })
}

fn run_rounds(
    dir: &Path,
    baseline: &BaselineFile,
    config: &mut DiskConfig,
) -> Result<DiskResults, String> {
    let mut log = LogBench::open(
        dir,
        LogBenchConfig {
            entry_bytes: config.entry_bytes,
            entries_per_batch: config.entries_per_batch,
            window_bytes: config.window_bytes,
            segment_bytes: config.segment_bytes,
            append_mode: config.append_mode,
        },
    )?;
    config.record_bytes_per_batch = log.record_bytes_per_batch();
    config.durability = format!("{} fdatasync, group commit", log.sync_mechanism());
    let phase_time = Duration::from_secs_f64(config.seconds_per_phase_per_round);
    let io = |error: std::io::Error| format!("baseline: {error}");
    log.warm_up()?;
    // Untimed, so the baseline file's pages are in the page cache like the log's.
    baseline
        .run(
            config.record_bytes_per_batch,
            1,
            1,
            phase_time.min(Duration::from_millis(200)),
        )
        .map_err(io)?;

    let stats_before = log.stats();
    let mut rounds = Vec::new();
    for _ in 0..config.rounds {
        let log_result = log.run(phase_time)?;
        let baseline_result = baseline
            .run(
                config.record_bytes_per_batch,
                u64::from(config.entries_per_batch),
                1,
                phase_time,
            )
            .map_err(io)?;
        let writes_per_sync = (log_result.bytes_per_sync() / config.record_bytes_per_batch as f64)
            .round()
            .max(1.0) as usize;
        let grouped_result = baseline
            .run(
                config.record_bytes_per_batch,
                u64::from(config.entries_per_batch),
                writes_per_sync,
                phase_time,
            )
            .map_err(io)?;
        rounds.push(Round {
            log: log_result,
            baseline: baseline_result,
            grouped: grouped_result,
            grouped_writes_per_sync: writes_per_sync,
        });
    }
    let stats_after = log.stats();
    log.close()?;
    let mut results = DiskResults::from_rounds(&rounds);
    results.log_segments_activated =
        stats_after.segments_activated - stats_before.segments_activated;
    results.log_segments_recycled = stats_after.segments_recycled - stats_before.segments_recycled;
    Ok(results)
}

/// What one round measured.
struct Round {
    log: PhaseResult,
    baseline: PhaseResult,
    grouped: PhaseResult,
    grouped_writes_per_sync: usize,
}

/// The configuration a disk run used.
#[derive(Clone, Debug, Serialize)]
pub struct DiskConfig {
    /// Bytes of each entry.
    pub entry_bytes: usize,
    /// Entries in each batch.
    pub entries_per_batch: u32,
    /// Payload bytes of each batch (entries with their length prefixes).
    pub batch_payload_bytes: usize,
    /// Bytes of each batch's log record (header + payload); each baseline write is this long.
    pub record_bytes_per_batch: usize,
    /// Most bytes appended but not durable.
    pub window_bytes: u64,
    /// Bytes per log segment and of the baseline file.
    pub segment_bytes: u64,
    /// Rounds of the three phases.
    pub rounds: u32,
    /// Timed seconds of each phase in each round.
    pub seconds_per_phase_per_round: f64,
    /// How the log writes records into segments (`Mmap` or `Pwrite`).
    #[serde(serialize_with = "serialize_debug")]
    pub append_mode: AppendMode,
    /// How the log makes writes durable (as the log reports it).
    pub durability: String,
}

fn serialize_debug<T: std::fmt::Debug, S: serde::Serializer>(
    value: &T,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.collect_str(&format_args!("{value:?}"))
}

impl DiskConfig {
    fn from_args(args: &Args) -> Result<DiskConfig, String> {
        if !(args.seconds.is_finite() && args.seconds > 0.0) {
            return Err(format!("--seconds must be positive, got {}", args.seconds));
        }
        if args.rounds == 0 {
            return Err("--rounds must be at least 1".to_string());
        }
        if args.entry_bytes > lockstep::batch::ENTRY_BYTES_MAX {
            return Err(format!(
                "--entry-bytes {} exceeds the largest entry, {}",
                args.entry_bytes,
                lockstep::batch::ENTRY_BYTES_MAX
            ));
        }
        let encoded_entry_bytes = lockstep::batch::ENTRY_PREFIX_BYTES + args.entry_bytes;
        let entries_per_batch = (args.batch_bytes / encoded_entry_bytes).max(1);
        let entries_per_batch = u32::try_from(entries_per_batch)
            .map_err(|_| format!("--batch-bytes {} holds too many entries", args.batch_bytes))?;
        let batch_payload_bytes = entries_per_batch as usize * encoded_entry_bytes;
        if args.window_bytes < batch_payload_bytes as u64 {
            return Err(format!(
                "--window-bytes {} is smaller than one batch ({batch_payload_bytes} bytes)",
                args.window_bytes
            ));
        }
        Ok(DiskConfig {
            entry_bytes: args.entry_bytes,
            entries_per_batch,
            batch_payload_bytes,
            record_bytes_per_batch: 0,
            window_bytes: args.window_bytes,
            segment_bytes: args.segment_bytes,
            rounds: args.rounds,
            seconds_per_phase_per_round: args.seconds / f64::from(args.rounds),
            append_mode: args.append_mode.mode(),
            durability: String::new(),
        })
    }
}

impl Describe for DiskConfig {
    fn rows(&self) -> Vec<(String, String)> {
        vec![
            (
                "batch".into(),
                format!(
                    "{} entries of {} B = {} B payload, {} B record",
                    self.entries_per_batch,
                    self.entry_bytes,
                    self.batch_payload_bytes,
                    self.record_bytes_per_batch
                ),
            ),
            (
                "window".into(),
                format!("{} B appended, not durable", self.window_bytes),
            ),
            ("segment".into(), format!("{} B", self.segment_bytes)),
            ("append mode".into(), format!("{:?}", self.append_mode)),
            (
                "rounds".into(),
                format!(
                    "{} x (log, baseline, grouped baseline) x {:.2} s",
                    self.rounds, self.seconds_per_phase_per_round
                ),
            ),
            ("durability".into(), self.durability.clone()),
        ]
    }
}

/// One round's headline figures.
#[derive(Clone, Debug, Serialize)]
pub struct RoundFigures {
    /// Log: durable entries per second.
    pub entries_per_sec: f64,
    /// Log: durable MB/s.
    pub mb_per_sec: f64,
    /// Log: syncs per second.
    pub syncs_per_sec: f64,
    /// Baseline: MB/s.
    pub baseline_mb_per_sec: f64,
    /// Grouped baseline: MB/s.
    pub baseline_grouped_mb_per_sec: f64,
    /// Grouped baseline: writes per fdatasync.
    pub baseline_grouped_writes_per_sync: usize,
}

/// The figures of a disk run.
#[derive(Clone, Debug, Serialize)]
pub struct DiskResults {
    /// Durable entries per second through the log (median over rounds).
    pub entries_per_sec: f64,
    /// Durable megabytes (10^6 bytes of records: header + payload) per second through the log.
    pub mb_per_sec: f64,
    /// Log syncs per second.
    pub syncs_per_sec: f64,
    /// Entries made durable per log sync.
    pub entries_per_sync: f64,
    /// Bytes made durable per log sync.
    pub bytes_per_sync: f64,
    /// Log: from the start of a batch's append to the completion of the sync that made it
    /// durable (every batch of every round).
    pub latency_us: LatencyUs,
    /// Baseline MB/s: one `pwrite` of a record's bytes + one `fdatasync`, repeated.
    pub baseline_mb_per_sec: f64,
    /// Baseline syncs per second.
    pub baseline_syncs_per_sec: f64,
    /// Baseline latency: from the start of a `pwrite` to the end of its `fdatasync`.
    pub baseline_latency_us: LatencyUs,
    /// Log MB/s over baseline MB/s (median of the per-round ratios).
    pub ratio_to_baseline: f64,
    /// Grouped baseline MB/s: as many `pwrite`s per `fdatasync` as the log's syncs covered.
    pub baseline_grouped_mb_per_sec: f64,
    /// Log MB/s over grouped baseline MB/s (median of the per-round ratios).
    pub ratio_to_grouped_baseline: f64,
    /// Segments the log started writing during the timed rounds.
    pub log_segments_activated: u64,
    /// Compacted segments the log recycled (or deleted) during the timed rounds.
    pub log_segments_recycled: u64,
    /// Each round's figures, in order.
    pub rounds: Vec<RoundFigures>,
}

impl DiskResults {
    fn from_rounds(rounds: &[Round]) -> DiskResults {
        assert!(!rounds.is_empty(), "no rounds");
        let med = |f: &dyn Fn(&Round) -> f64, decimals| {
            round_to(median(&rounds.iter().map(f).collect::<Vec<_>>()), decimals)
        };
        let mut latency = crate::report::latency_histogram_ns();
        let mut baseline_latency = crate::report::latency_histogram_ns();
        for round in rounds {
            latency
                .add(&round.log.latency_ns)
                .expect("same histogram bounds");
            baseline_latency
                .add(&round.baseline.latency_ns)
                .expect("same histogram bounds");
        }
        DiskResults {
            entries_per_sec: med(&|r| r.log.entries_per_sec(), 0),
            mb_per_sec: med(&|r| r.log.mb_per_sec(), 1),
            syncs_per_sec: med(&|r| r.log.syncs_per_sec(), 1),
            entries_per_sync: med(&|r| r.log.entries_per_sync(), 1),
            bytes_per_sync: med(&|r| r.log.bytes_per_sync(), 0),
            latency_us: LatencyUs::from_histogram_ns(&latency),
            baseline_mb_per_sec: med(&|r| r.baseline.mb_per_sec(), 1),
            baseline_syncs_per_sec: med(&|r| r.baseline.syncs_per_sec(), 1),
            baseline_latency_us: LatencyUs::from_histogram_ns(&baseline_latency),
            ratio_to_baseline: med(&|r| r.log.mb_per_sec() / r.baseline.mb_per_sec(), 3),
            baseline_grouped_mb_per_sec: med(&|r| r.grouped.mb_per_sec(), 1),
            ratio_to_grouped_baseline: med(&|r| r.log.mb_per_sec() / r.grouped.mb_per_sec(), 3),
            rounds: rounds
                .iter()
                .map(|r| RoundFigures {
                    entries_per_sec: round_to(r.log.entries_per_sec(), 0),
                    mb_per_sec: round_to(r.log.mb_per_sec(), 1),
                    syncs_per_sec: round_to(r.log.syncs_per_sec(), 1),
                    baseline_mb_per_sec: round_to(r.baseline.mb_per_sec(), 1),
                    baseline_grouped_mb_per_sec: round_to(r.grouped.mb_per_sec(), 1),
                    baseline_grouped_writes_per_sync: r.grouped_writes_per_sync,
                })
                .collect(),
            log_segments_activated: 0,
            log_segments_recycled: 0,
        }
    }
}

impl Describe for DiskResults {
    fn rows(&self) -> Vec<(String, String)> {
        vec![
            (
                "log".into(),
                format!(
                    "{:.2} M entries/s, {:.1} MB/s, {:.0} syncs/s, {:.0} entries/sync, {:.0} KiB/sync",
                    self.entries_per_sec / 1e6,
                    self.mb_per_sec,
                    self.syncs_per_sec,
                    self.entries_per_sync,
                    self.bytes_per_sync / 1024.0
                ),
            ),
            ("log latency".into(), self.latency_us.summary()),
            (
                "baseline".into(),
                format!(
                    "{:.1} MB/s, {:.0} syncs/s (pwrite + fdatasync per batch)",
                    self.baseline_mb_per_sec, self.baseline_syncs_per_sec
                ),
            ),
            ("baseline latency".into(), self.baseline_latency_us.summary()),
            (
                "log segments".into(),
                format!(
                    "{} activated, {} recycled",
                    self.log_segments_activated, self.log_segments_recycled
                ),
            ),
            ("ratio to baseline".into(), format!("{:.3}", self.ratio_to_baseline)),
            (
                "grouped baseline".into(),
                format!(
                    "{:.1} MB/s (fdatasync per log-sized group), ratio {:.3}",
                    self.baseline_grouped_mb_per_sec, self.ratio_to_grouped_baseline
                ),
            ),
            (
                "rounds (log / base / grouped MB/s)".into(),
                self.rounds
                    .iter()
                    .map(|r| {
                        format!(
                            "{:.0}/{:.0}/{:.0}",
                            r.mb_per_sec, r.baseline_mb_per_sec, r.baseline_grouped_mb_per_sec
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("  "),
            ),
        ]
    }
}
