//! Benchmark reports shared by every `lockstep-bench` mode.
//!
//! Owns three things, so that every figure lockstep publishes carries its context:
//! - [`Machine`]: what the numbers were measured on (CPU, cores, memory, kernel, the filesystem
//!   of the data directory, the git commit of the source tree);
//! - [`LatencyUs`]: a fixed set of percentiles of an HdrHistogram recorded in nanoseconds,
//!   reported in microseconds;
//! - [`Report`]: machine + configuration + results, written as JSON (results flattened to the
//!   top level so scripts read `report["entries_per_sec"]`) or printed as aligned text.
//!
//! Describing the machine never fails: a fact that cannot be read is reported as `"unknown"`.

use std::ffi::CStr;
use std::fmt::Write as _;
use std::io;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use hdrhistogram::Histogram;
use serde::Serialize;

/// Environment variable that, when set, overrides the git commit reported for the tree (for
/// builds made outside a git checkout).
pub const GIT_COMMIT_ENV: &str = "LOCKSTEP_GIT_COMMIT";

const UNKNOWN: &str = "unknown";

/// Labelled values for the human-readable form of a report section, in print order.
pub trait Describe {
    /// `(label, value)` pairs, values already formatted with their unit.
    fn rows(&self) -> Vec<(String, String)>;
}

/// The machine a benchmark ran on.
#[derive(Clone, Debug, Serialize)]
pub struct Machine {
    /// `model name` of the first CPU in `/proc/cpuinfo`.
    pub cpu_model: String,
    /// CPUs this process may run on.
    pub cores: usize,
    /// `MemTotal` from `/proc/meminfo`, in bytes (0 when unreadable).
    pub memory_bytes: u64,
    /// Kernel name and release, from `uname`.
    pub kernel: String,
    /// The directory the benchmark wrote to.
    pub data_dir: String,
    /// Filesystem type of `data_dir`, from `statfs` (e.g. `ext4`, or the magic number in hex).
    pub data_dir_filesystem: String,
    /// Device and mount options of the mount holding `data_dir`, from `/proc/self/mounts`.
    pub data_dir_mount: String,
    /// `git rev-parse --short HEAD` of the source tree when this binary was built (suffixed
    /// `-dirty` when tracked files differed from it), or [`GIT_COMMIT_ENV`] when set.
    pub git_commit: String,
}

impl Machine {
    /// Describes this machine, with `data_dir` as the directory whose filesystem matters.
    pub fn describe(data_dir: &Path) -> Machine {
        Machine {
            cpu_model: cpu_model().unwrap_or_else(|| UNKNOWN.to_string()),
            cores: std::thread::available_parallelism().map_or(0, |n| n.get()),
            memory_bytes: memory_bytes().unwrap_or(0),
            kernel: kernel().unwrap_or_else(|| UNKNOWN.to_string()),
            data_dir: data_dir.display().to_string(),
            data_dir_filesystem: filesystem_type(data_dir).unwrap_or_else(|| UNKNOWN.to_string()),
            data_dir_mount: mount_of(data_dir).unwrap_or_else(|| UNKNOWN.to_string()),
            git_commit: git_commit().unwrap_or_else(|| UNKNOWN.to_string()),
        }
    }
}

impl Describe for Machine {
    fn rows(&self) -> Vec<(String, String)> {
        vec![
            ("cpu".into(), self.cpu_model.clone()),
            ("cores".into(), self.cores.to_string()),
            (
                "memory".into(),
                format!("{:.1} GiB", self.memory_bytes as f64 / (1u64 << 30) as f64),
            ),
            ("kernel".into(), self.kernel.clone()),
            (
                "data dir".into(),
                format!("{} ({})", self.data_dir, self.data_dir_filesystem),
            ),
            ("mount".into(), self.data_dir_mount.clone()),
            ("git commit".into(), self.git_commit.clone()),
        ]
    }
}

fn cpu_model() -> Option<String> {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    cpuinfo
        .lines()
        .filter_map(|line| line.split_once(':'))
        .find(|(key, _)| key.trim() == "model name")
        .map(|(_, value)| value.trim().to_string())
}

fn memory_bytes() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = meminfo.lines().find(|line| line.starts_with("MemTotal:"))?;
    // "MemTotal:       24606148 kB"
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

fn kernel() -> Option<String> {
    // SAFETY: `utsname` is plain old data, so all-zero bytes are a valid value.
    let mut name: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: `name` is a valid, writable `utsname`.
    if unsafe { libc::uname(&mut name) } != 0 {
        return None;
    }
    // SAFETY: uname NUL-terminates every field it fills.
    let field = |chars: &[libc::c_char]| {
        unsafe { CStr::from_ptr(chars.as_ptr()) }
            .to_string_lossy()
            .into_owned()
    };
    Some(format!(
        "{} {}",
        field(&name.sysname[..]),
        field(&name.release[..])
    ))
}

/// The filesystem type holding `path`, by name for the common ones, else as its magic number.
pub fn filesystem_type(path: &Path) -> Option<String> {
    use std::os::unix::ffi::OsStrExt;
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    // SAFETY: `statfs` is plain old data, so all-zero bytes are a valid value.
    let mut stats: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c_path` is NUL-terminated and `stats` is a valid, writable `statfs`.
    if unsafe { libc::statfs(c_path.as_ptr(), &mut stats) } != 0 {
        return None;
    }
    // f_type's integer type differs between libc targets; the magic numbers fit in 32 bits.
    #[allow(clippy::unnecessary_cast)]
    let magic = stats.f_type as u64 as u32;
    let name = match magic {
        0xEF53 => "ext4",
        0x5846_5342 => "xfs",
        0x9123_683E => "btrfs",
        0xF2F5_2010 => "f2fs",
        0x2FC1_2FC1 => "zfs",
        0x0102_1994 => "tmpfs",
        0x8584_58F6 => "ramfs",
        0x794C_7630 => "overlayfs",
        0x6969 => "nfs",
        0x6573_5546 => "fuse",
        _ => return Some(format!("0x{magic:x}")),
    };
    Some(name.to_string())
}

/// Why syncs cost nothing on the filesystem holding `path` (so durable figures measured there
/// would not mean what they say), or `None` when they are real as far as can be told: a
/// memory filesystem (`tmpfs`, `ramfs`) or a mount without write barriers.
pub fn syncs_are_free(path: &Path) -> Option<String> {
    let filesystem = filesystem_type(path)?;
    if filesystem == "tmpfs" || filesystem == "ramfs" {
        return Some(format!(
            "{} is on {filesystem}, where fdatasync does nothing",
            path.display()
        ));
    }
    let mount = mount_of(path)?;
    ["nobarrier", "barrier=0"]
        .iter()
        .any(|option| mount.contains(option))
        .then(|| {
            format!(
                "{} is on a mount without write barriers: {mount}",
                path.display()
            )
        })
}

/// Warns on stderr, as `program`, when syncs are free where the benchmark writes (see
/// [`syncs_are_free`]).
pub fn warn_if_syncs_are_free(program: &str, path: &Path) {
    if let Some(why) = syncs_are_free(path) {
        eprintln!(
            "{program}: warning: {why}; the durable figures would not measure a disk. Give \
             --dir a directory on the disk you mean to measure"
        );
    }
}

/// `"DEVICE on MOUNTPOINT (OPTIONS)"` for the mount holding `path` (the longest mount point
/// that is a prefix of its canonical form).
fn mount_of(path: &Path) -> Option<String> {
    let path = path.canonicalize().ok()?;
    let mounts = std::fs::read_to_string("/proc/self/mounts").ok()?;
    mounts
        .lines()
        .filter_map(|line| {
            // "DEVICE MOUNTPOINT TYPE OPTIONS DUMP PASS"
            let fields: Vec<&str> = line.split_whitespace().collect();
            (fields.len() >= 4 && path.starts_with(fields[1])).then_some(fields)
        })
        .max_by_key(|fields| fields[1].len())
        .map(|fields| format!("{} on {} ({})", fields[0], fields[1], fields[3]))
}

fn git_commit() -> Option<String> {
    if let Ok(commit) = std::env::var(GIT_COMMIT_ENV) {
        if !commit.is_empty() {
            return Some(commit);
        }
    }
    // Recorded by build.rs when this binary was built.
    let commit = env!("LOCKSTEP_BUILD_COMMIT");
    (!commit.is_empty()).then(|| commit.to_string())
}

/// Percentiles of a latency histogram, in microseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct LatencyUs {
    /// Number of samples.
    pub count: u64,
    /// Smallest sample.
    pub min: f64,
    /// Mean of the samples.
    pub mean: f64,
    /// 50th percentile.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// 99.99th percentile.
    pub p9999: f64,
    /// Largest sample.
    pub max: f64,
}

impl LatencyUs {
    /// Summarizes a histogram whose samples are nanoseconds. An empty histogram gives all zeros.
    pub fn from_histogram_ns(histogram: &Histogram<u64>) -> LatencyUs {
        if histogram.is_empty() {
            return LatencyUs::default();
        }
        let us = |ns: u64| round_to(ns as f64 / 1000.0, 1);
        LatencyUs {
            count: histogram.len(),
            min: us(histogram.min()),
            mean: round_to(histogram.mean() / 1000.0, 1),
            p50: us(histogram.value_at_quantile(0.50)),
            p90: us(histogram.value_at_quantile(0.90)),
            p99: us(histogram.value_at_quantile(0.99)),
            p999: us(histogram.value_at_quantile(0.999)),
            p9999: us(histogram.value_at_quantile(0.9999)),
            max: us(histogram.max()),
        }
    }

    /// One line: `p50 … p99 … p99.9 … max … µs (n samples)`.
    pub fn summary(&self) -> String {
        format!(
            "p50 {} p90 {} p99 {} p99.9 {} p99.99 {} max {} µs ({} samples)",
            self.p50, self.p90, self.p99, self.p999, self.p9999, self.max, self.count
        )
    }
}

/// A histogram for latencies in nanoseconds from 1 ns to one hour, 3 significant digits.
pub fn latency_histogram_ns() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000_000, 3).expect("valid histogram bounds")
}

/// Rounds `value` to `decimals` decimal places (for readable JSON).
pub fn round_to(value: f64, decimals: i32) -> f64 {
    let scale = 10f64.powi(decimals);
    (value * scale).round() / scale
}

/// The median of `values` (mean of the two middle ones for an even count); 0 when empty.
pub fn median(values: &[f64]) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let middle = sorted.len() / 2;
    if sorted.len() % 2 == 1 {
        sorted[middle]
    } else {
        (sorted[middle - 1] + sorted[middle]) / 2.0
    }
}

/// A complete benchmark report: what ran, where, how, and what came out.
#[derive(Debug, Serialize)]
pub struct Report<C, R> {
    /// The benchmark mode (e.g. `"disk"`).
    pub bench: String,
    /// When the run started, UTC, `YYYY-MM-DDTHH:MM:SSZ`.
    pub started_utc: String,
    /// The machine.
    pub machine: Machine,
    /// Said first, in capitals, in the text and present in the JSON only when set: what makes
    /// these figures unlike the others (e.g. a run without durability).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub warning: Option<String>,
    /// The configuration the mode ran with.
    pub config: C,
    /// The mode's figures, flattened into the top level of the JSON.
    #[serde(flatten)]
    pub results: R,
}

impl<C: Serialize + Describe, R: Serialize + Describe> Report<C, R> {
    /// The report as pretty-printed JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("benchmark reports always serialize")
    }

    /// Writes the JSON form to `path`.
    pub fn write_json(&self, path: &Path) -> io::Result<()> {
        std::fs::write(path, self.to_json() + "\n")
    }

    /// The human-readable form: results first, then configuration and machine.
    pub fn to_text(&self) -> String {
        let mut text = String::new();
        writeln!(text, "lockstep-bench {} ({})", self.bench, self.started_utc).unwrap();
        if let Some(warning) = &self.warning {
            writeln!(text, "WARNING: {warning}").unwrap();
        }
        section(&mut text, "results", &self.results.rows());
        section(&mut text, "config", &self.config.rows());
        section(&mut text, "machine", &self.machine.rows());
        text
    }
}

fn section(text: &mut String, title: &str, rows: &[(String, String)]) {
    let width = rows.iter().map(|(label, _)| label.len()).max().unwrap_or(0);
    writeln!(text, "{title}:").unwrap();
    for (label, value) in rows {
        writeln!(text, "  {label:<width$}  {value}").unwrap();
    }
}

/// The current time as `YYYY-MM-DDTHH:MM:SSZ`.
pub fn now_utc() -> String {
    let seconds = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_secs());
    format_utc(seconds)
}

/// Formats seconds since the Unix epoch as `YYYY-MM-DDTHH:MM:SSZ` (proleptic Gregorian).
pub fn format_utc(unix_seconds: u64) -> String {
    let days = unix_seconds / 86_400;
    let second_of_day = unix_seconds % 86_400;
    let (year, month, day) = civil_date(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        second_of_day / 3600,
        second_of_day / 60 % 60,
        second_of_day % 60
    )
}

/// Year, month (1-12) and day (1-31) of the day `days` after 1970-01-01.
///
/// Counts in 400-year eras of 146 097 days that start on a March 1st, so that the leap day is
/// the last day of each era-year. Example: day 0 is 1970-01-01, day 19 723 is 2024-01-01.
fn civil_date(days: u64) -> (u64, u64, u64) {
    // Shift the origin to 0000-03-01: 719 468 days before 1970-01-01.
    let shifted = days + 719_468;
    let era = shifted / 146_097;
    let day_of_era = shifted % 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    // Months counted from March = 0; 153 days per 5 months.
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_from_march + 2) / 5 + 1;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    };
    let year = era * 400 + year_of_era + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_format_as_utc() {
        assert_eq!(format_utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(format_utc(19_723 * 86_400), "2024-01-01T00:00:00Z");
        // 2024-02-29 (a leap day), 12:34:56.
        assert_eq!(
            format_utc(19_782 * 86_400 + 12 * 3600 + 34 * 60 + 56),
            "2024-02-29T12:34:56Z"
        );
        assert_eq!(format_utc(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(format_utc(4_102_444_799), "2099-12-31T23:59:59Z");
    }

    #[test]
    fn latency_summary_is_in_microseconds() {
        let mut histogram = latency_histogram_ns();
        for us in 1..=1000u64 {
            histogram.record(us * 1000).unwrap();
        }
        let summary = LatencyUs::from_histogram_ns(&histogram);
        assert_eq!(summary.count, 1000);
        assert_eq!(summary.min, 1.0);
        assert!((499.0..=501.0).contains(&summary.p50), "{summary:?}");
        assert!((989.0..=991.0).contains(&summary.p99), "{summary:?}");
        assert!((999.0..=1001.0).contains(&summary.max), "{summary:?}");
        assert_eq!(
            LatencyUs::from_histogram_ns(&latency_histogram_ns()),
            LatencyUs::default()
        );
    }

    #[test]
    fn medians() {
        assert_eq!(median(&[]), 0.0);
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), 2.5);
    }

    #[test]
    fn syncs_are_free_on_memory_filesystems_only() {
        let shm = Path::new("/dev/shm");
        assert_eq!(
            filesystem_type(shm).as_deref(),
            Some("tmpfs"),
            "the test needs /dev/shm"
        );
        let why = syncs_are_free(shm).expect("tmpfs makes syncs free");
        assert!(why.contains("tmpfs"), "{why}");
        let on_disk = tempfile::tempdir_in(env!("CARGO_MANIFEST_DIR")).unwrap();
        if filesystem_type(on_disk.path()).as_deref() != Some("tmpfs") {
            assert_eq!(syncs_are_free(on_disk.path()), None);
        }
    }

    #[test]
    fn machine_description_reads_this_machine() {
        let dir = tempfile::tempdir().unwrap();
        let machine = Machine::describe(dir.path());
        assert!(machine.cores >= 1);
        assert!(machine.memory_bytes > 0);
        assert!(machine.kernel.starts_with("Linux"), "{}", machine.kernel);
        assert_ne!(machine.data_dir_filesystem, UNKNOWN);
        assert_ne!(machine.data_dir_mount, UNKNOWN);
        let rows = machine.rows();
        assert!(rows.iter().any(|(label, _)| label == "kernel"));
    }
}
