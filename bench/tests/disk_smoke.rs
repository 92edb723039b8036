//! Runs `lockstep-bench disk` for a fraction of a second so the benchmark never rots.
//!
//! No timing is asserted (the machine is shared and noisy): only that the run succeeds, prints
//! its report, writes JSON with every documented key holding sane values, and leaves a log in
//! `--dir` that opens cleanly (full verification) and holds what was appended.

use std::process::Command;

use lockstep::log::{Log, LogOptions};

#[test]
fn disk_bench_runs_and_reports() {
    let dir = tempfile::tempdir().unwrap();
    let log_dir = dir.path().join("log");
    let json_path = dir.path().join("disk.json");
    let segment_bytes = 1u64 << 20;
    let output = Command::new(env!("CARGO_BIN_EXE_lockstep-bench"))
        .args(["disk", "--seconds", "0.2", "--rounds", "2"])
        .args(["--entry-bytes", "16", "--batch-bytes", "4096"])
        .args(["--window-bytes", "262144"])
        .args(["--segment-bytes", &segment_bytes.to_string()])
        .arg("--dir")
        .arg(&log_dir)
        .arg("--json")
        .arg(&json_path)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "bench failed: {}\n{stdout}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("ratio to baseline"), "{stdout}");

    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json_path).unwrap()).unwrap();
    for key in [
        "entries_per_sec",
        "mb_per_sec",
        "syncs_per_sec",
        "entries_per_sync",
        "baseline_mb_per_sec",
        "ratio_to_baseline",
        "baseline_grouped_mb_per_sec",
    ] {
        let value = report[key]
            .as_f64()
            .unwrap_or_else(|| panic!("{key} missing"));
        assert!(value.is_finite() && value > 0.0, "{key} = {value}");
    }
    for key in ["p50", "p99", "p999"] {
        let value = report["latency_us"][key].as_f64().unwrap();
        assert!(value > 0.0, "latency_us.{key} = {value}");
    }
    assert!(report["latency_us"]["p50"].as_f64() <= report["latency_us"]["p999"].as_f64());
    assert_eq!(report["config"]["entries_per_batch"], 204);
    assert_eq!(report["rounds"].as_array().unwrap().len(), 2);
    assert!(report["machine"]["cores"].as_u64().unwrap() >= 1);
    assert!(!report["machine"]["kernel"].as_str().unwrap().is_empty());

    // The log is left in --dir, the baseline's scratch file is not, and the log verifies.
    assert!(!log_dir.join("bench-baseline.dat").exists());
    let options = LogOptions {
        segment_bytes,
        ..LogOptions::default()
    };
    let (log, open) = Log::open(&log_dir, options).unwrap();
    assert!(open.torn_tail.is_none(), "{open:?}");
    assert!(log.last_index().get() > 0);
    assert!(log.durable_index() == log.last_index());
}
