//! Runs `lockstep-bench --embedded` for real (3 node processes, each driving the load through
//! the embedding API, fsync) for a second or two, and checks its report and what it leaves
//! behind.
//!
//! No speed is asserted (the machine is shared and noisy): only that the run commits entries,
//! reports no problem, says it was embedded, and that nodes, data and the exchange directory
//! are gone afterwards.

use std::process::Command;

fn bench() -> Command {
    Command::new(env!("CARGO_BIN_EXE_lockstep-bench"))
}

/// Runs the bench with `args` in a fresh `--dir` and returns its JSON report and stdout.
fn run(args: &[&str]) -> (serde_json::Value, String) {
    let parent = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let json_path = out.path().join("run.json");
    let output = bench()
        .arg("--embedded")
        .args(args)
        .arg("--dir")
        .arg(parent.path())
        .arg("--json")
        .arg(&json_path)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "bench failed: {stderr}\n{stdout}");
    assert!(!stdout.contains("PROBLEM"), "{stdout}");
    assert_eq!(
        std::fs::read_dir(parent.path()).unwrap().count(),
        0,
        "data or the exchange directory was left behind"
    );
    let text = std::fs::read_to_string(&json_path).unwrap();
    (serde_json::from_str(&text).unwrap(), stdout)
}

/// Checks one run's figures (a report, or one point of a sweep).
fn check_figures(results: &serde_json::Value, seconds: usize) {
    let committed = results["committed"].as_u64().unwrap();
    assert!(committed > 0, "{results}");
    assert!(results["throughput_per_sec"].as_f64().unwrap() > 0.0);
    assert_eq!(results["latency_us"]["count"].as_u64(), Some(committed));
    assert!(results["latency_us"]["p50"].as_f64().unwrap() > 0.0);
    let per_second = results["per_second"].as_array().unwrap();
    assert_eq!(per_second.len(), seconds, "{per_second:?}");
    let clients = &results["clients"];
    assert!(clients["sent"].as_u64().unwrap() >= committed, "{clients}");
    assert_eq!(clients["failed"], 0, "{clients}");
    assert!(
        clients["errors"].as_array().unwrap().is_empty(),
        "{clients}"
    );
}

#[test]
fn an_embedded_three_node_run_commits_and_reports_like_a_client_run() {
    let (report, stdout) = run(&[
        "--seconds",
        "1.5",
        "--warmup",
        "0.3",
        "--clients",
        "2",
        "--depth",
        "32",
    ]);
    assert!(stdout.contains("log (embedded)"), "{stdout}");
    assert!(stdout.contains("proposer threads per node"), "{stdout}");
    check_figures(&report, 2);
    assert_eq!(report["bench"], "log (embedded)");
    assert_eq!(report["config"]["embedded"], true);
    assert_eq!(report["config"]["batch"], 32);
    assert_eq!(report["config"]["target"]["local"]["nodes"], 3);
    assert_eq!(report["leader_changes"], 0);
    assert!(report["grouping"]["commit_index_per_sec"].as_f64().unwrap() > 0.0);
    assert_eq!(report["memory"]["nodes"].as_array().unwrap().len(), 3);
    let exits = report["node_exits"].as_array().unwrap();
    assert_eq!(exits.len(), 3);
    assert!(exits.iter().all(|exit| exit["clean"] == true), "{exits:?}");
}

/// Each point is a round of its own; batch 1 proposes one entry at a time (`propose`).
#[test]
fn an_embedded_sweep_runs_one_round_per_point() {
    let (report, _) = run(&[
        "--seconds",
        "0.5",
        "--warmup",
        "0.2",
        "--clients",
        "1",
        "--depth",
        "8",
        "--sweep",
        "batch=1,8",
    ]);
    let points = report["points"].as_array().unwrap();
    assert_eq!(points.len(), 2);
    for point in points {
        check_figures(point, 1);
    }
}

#[test]
fn embedded_refuses_what_it_does_not_drive() {
    for (args, option) in [
        (&["--mode", "kv"][..], "--mode kv"),
        (&["--connect", "127.0.0.1:1"][..], "--connect"),
        (&["--rate", "100"][..], "--rate"),
    ] {
        let output = bench().arg("--embedded").args(args).output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(option), "{args:?}: {stderr}");
    }
}
