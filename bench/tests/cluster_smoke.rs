//! Runs the cluster benchmark for real (3 node processes, TCP, fsync) for a few seconds, and
//! checks what it reports and what it leaves behind.
//!
//! No speed is asserted (the machine is shared and noisy): only that a run succeeds, its JSON has
//! every documented key with sane values, and that the nodes and their data are gone afterwards,
//! also when the bench is interrupted with SIGINT in the middle of a run.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use lockstep_testkit::process::children_of;

fn bench() -> Command {
    Command::new(env!("CARGO_BIN_EXE_lockstep-bench"))
}

fn entries(dir: &Path) -> usize {
    std::fs::read_dir(dir).unwrap().count()
}

#[test]
fn a_short_three_node_run_reports_sane_figures_and_cleans_up() {
    let parent = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let json_path = out.path().join("run.json");
    let output = bench()
        .args([
            "--seconds",
            "2",
            "--warmup",
            "0.5",
            "--clients",
            "2",
            "--depth",
            "32",
        ])
        .arg("--dir")
        .arg(parent.path())
        .arg("--json")
        .arg(&json_path)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "bench failed: {stderr}\n{stdout}");
    assert!(stdout.contains("throughput"), "{stdout}");
    assert_eq!(
        entries(parent.path()),
        0,
        "the data directory was left behind"
    );

    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json_path).unwrap()).unwrap();
    for key in ["throughput_per_sec", "mb_per_sec"] {
        let value = report[key]
            .as_f64()
            .unwrap_or_else(|| panic!("{key} missing"));
        assert!(value.is_finite() && value > 0.0, "{key} = {value}");
    }
    let latency = &report["latency_us"];
    let p = |key: &str| {
        latency[key]
            .as_f64()
            .unwrap_or_else(|| panic!("latency {key}"))
    };
    assert!(p("min") > 0.0);
    assert!(p("min") <= p("p50") && p("p50") <= p("p99"), "{latency}");
    assert!(p("p99") <= p("p999") && p("p999") <= p("max"), "{latency}");
    let committed = report["committed"].as_u64().unwrap();
    assert_eq!(latency["count"].as_u64(), Some(committed));
    let seconds = report["per_second"].as_array().unwrap();
    assert_eq!(seconds.len(), 2);
    assert_eq!(report["config"]["target"]["local"]["nodes"], 3);
    assert_eq!(report["config"]["clients"], 2);
    assert_eq!(report["config"]["durability"], "fsync");
    assert!(report["machine"]["cores"].as_u64().unwrap() >= 1);
    assert!(report["machine"]["git_commit"].is_string());
    let nodes = report["memory"]["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 3);
    for node in nodes {
        let peak = node["peak_rss_bytes"].as_u64().unwrap();
        let anon = node["peak_anon_rss_bytes"].as_u64().unwrap();
        assert!(peak > 1 << 20 && anon > 0, "{node}");
    }
    assert!(report["memory"]["bench_peak_rss_bytes"].as_u64().unwrap() > 0);
    let exits = report["node_exits"].as_array().unwrap();
    assert_eq!(exits.len(), 3);
    assert!(exits.iter().all(|exit| exit["clean"] == true), "{exits:?}");
    assert_eq!(report["leader_changes"], 0);
    assert!(report["grouping"]["commit_index_per_sec"].as_f64().unwrap() > 0.0);
}

#[test]
fn sigint_in_the_middle_of_a_run_stops_the_nodes_and_removes_their_data() {
    let parent = tempfile::tempdir().unwrap();
    let child = bench()
        .args([
            "--seconds",
            "60",
            "--warmup",
            "0",
            "--clients",
            "1",
            "--depth",
            "8",
        ])
        .arg("--dir")
        .arg(parent.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let bench_pid = child.id();
    // Wait until the three nodes run and have written data.
    let deadline = Instant::now() + Duration::from_secs(30);
    let nodes = loop {
        let nodes = children_of(bench_pid);
        let data_written = std::fs::read_dir(parent.path())
            .unwrap()
            .flatten()
            .any(|dir| dir.path().join("node-1").exists());
        if nodes.len() == 3 && data_written {
            break nodes;
        }
        assert!(Instant::now() < deadline, "the nodes did not start");
        std::thread::sleep(Duration::from_millis(50));
    };
    std::thread::sleep(Duration::from_millis(1500));
    // SAFETY: plain system call on our own child.
    unsafe {
        libc::kill(bench_pid as i32, libc::SIGINT);
    }
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(130), "{stderr}");
    assert!(stderr.contains("interrupted"), "{stderr}");
    for pid in nodes {
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists(),
            "node {pid} still runs"
        );
    }
    assert_eq!(
        entries(parent.path()),
        0,
        "the data directory was left behind"
    );
}

#[test]
fn bad_options_exit_2_naming_the_option() {
    for (args, option) in [
        (&["--nodes", "2"][..], "--nodes"),
        (
            &["--durability", "none", "--connect", "127.0.0.1:1"][..],
            "--durability",
        ),
        (&["--sweep", "threads=1"][..], "--sweep"),
    ] {
        let output = bench().args(args).output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(option), "{args:?}: {stderr}");
    }
}

/// Also: batch requests in an open loop, and a run without durability that says so.
#[test]
fn an_open_loop_run_offers_its_rate() {
    let parent = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let json_path = out.path().join("open.json");
    let output = bench()
        .args([
            "--nodes",
            "1",
            "--rate",
            "2000",
            "--clients",
            "2",
            "--depth",
            "256",
            "--batch",
            "4",
            "--durability",
            "none",
        ])
        .args(["--seconds", "2", "--warmup", "0.5"])
        .arg("--dir")
        .arg(parent.path())
        .arg("--json")
        .arg(&json_path)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "bench failed: {stderr}");
    assert!(
        stdout.contains("WARNING: DURABILITY NONE") && stdout.contains("NOT durable"),
        "{stdout}"
    );
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json_path).unwrap()).unwrap();
    assert!(report["warning"]
        .as_str()
        .unwrap()
        .contains("DURABILITY NONE"));
    assert_eq!(report["config"]["durability"], "none");
    assert_eq!(report["config"]["tuning"]["sync"], "none");
    assert_eq!(report["config"]["batch"], 4);
    assert_eq!(report["config"]["load_loop"], "open");
    assert_eq!(report["offered_per_sec"], 2000.0);
    // The schedule, not the cluster, sets the pace: the committed rate is the offered one
    // (a wide margin: the machine is shared, and a slow second delays rather than drops).
    let throughput = report["throughput_per_sec"].as_f64().unwrap();
    assert!((1500.0..=2500.0).contains(&throughput), "{throughput}");
    assert_eq!(entries(parent.path()), 0);
}

#[test]
fn a_sweep_reports_one_point_per_value_in_one_table() {
    let parent = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let json_path = out.path().join("sweep.json");
    let output = bench()
        .args(["--nodes", "1", "--sweep", "batch=1,4", "--depth", "8"])
        .args(["--seconds", "1", "--warmup", "0.2"])
        .arg("--dir")
        .arg(parent.path())
        .arg("--json")
        .arg(&json_path)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "bench failed: {stderr}\n{stdout}");
    assert!(
        stdout.contains("entries/s") && stdout.contains("batch=1,4"),
        "{stdout}"
    );
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json_path).unwrap()).unwrap();
    assert_eq!(report["knob"], "batch");
    let points = report["points"].as_array().unwrap();
    assert_eq!(points.len(), 2);
    for (point, batch) in points.iter().zip([1, 4]) {
        assert_eq!(point["value"], batch);
        assert!(
            point["throughput_per_sec"].as_f64().unwrap() > 0.0,
            "{point}"
        );
        assert!(
            point["latency_us"]["p50"].as_f64().unwrap() > 0.0,
            "{point}"
        );
    }
    assert_eq!(entries(parent.path()), 0);
}
