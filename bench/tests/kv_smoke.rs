//! Runs the kv benchmark (`--mode kv`) for real: 3 node processes of the kv app, RESP over TCP,
//! fsync, for a few seconds, and checks what it reports; and against a node whose app has no
//! RESP commands, where every reply is an error and the run must say so and fail.
//!
//! No speed is asserted (the machine is shared and noisy): only sane, complete figures.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use lockstep_server::apps::AppKind;
use lockstep_server::ServerConfig;
use lockstep_testkit::ports::loopback_members;
use lockstep_testkit::process::{Launch, NodeProcess, Output};

fn bench() -> Command {
    Command::new(env!("CARGO_BIN_EXE_lockstep-bench"))
}

#[test]
fn a_short_kv_run_reports_set_and_get_apart() {
    let parent = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let json_path = out.path().join("kv.json");
    let output = bench()
        .args(["--mode", "kv", "--read-ratio", "0.5", "--keys", "1000"])
        .args(["--clients", "2", "--depth", "32", "--value-bytes", "100"])
        .args(["--seconds", "2", "--warmup", "0.5"])
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
        stdout.contains("SET ") && stdout.contains("GET ") && stdout.contains("round trip"),
        "{stdout}"
    );
    assert!(!stdout.contains("PROBLEM"), "{stdout}");
    assert_eq!(std::fs::read_dir(parent.path()).unwrap().count(), 0);

    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json_path).unwrap()).unwrap();
    assert_eq!(report["bench"], "kv");
    assert_eq!(report["config"]["app"], "kv");
    assert_eq!(report["config"]["kv"]["read_ratio"], 0.5);
    assert_eq!(report["config"]["kv"]["read_mode"], "index");
    for key in ["throughput_per_sec", "mb_per_sec"] {
        let value = report[key].as_f64().unwrap();
        assert!(value.is_finite() && value > 0.0, "{key} = {value}");
    }
    assert!(report["machine"]["cores"].as_u64().unwrap() >= 1);
    let kv = &report["kv"];
    let set = kv["set"]["done"].as_u64().unwrap();
    let get = kv["get"]["done"].as_u64().unwrap();
    assert!(set > 0 && get > 0, "{kv}");
    assert_eq!(report["committed"].as_u64(), Some(set + get));
    assert_eq!(report["latency_us"]["count"].as_u64(), Some(set + get));
    for op in ["set", "get"] {
        let latency = &kv[op]["latency_us"];
        let p = |key: &str| latency[key].as_f64().unwrap();
        assert!(p("min") > 0.0, "{op}: {latency}");
        assert!(
            p("p50") <= p("p99") && p("p99") <= p("max"),
            "{op}: {latency}"
        );
        assert_eq!(kv[op]["failed"], 0, "{op}");
        assert!(kv[op]["throughput_per_sec"].as_f64().unwrap() > 0.0);
    }
    // The mix is about even (a loose bound: a few thousand samples of a fair coin).
    let share = get as f64 / (set + get) as f64;
    assert!((0.35..=0.65).contains(&share), "GET share {share}");
    // The keys were set before the run: every GET found a value.
    assert_eq!(kv["get_misses"], 0, "{kv}");
    assert_eq!(kv["errors"]["total"], 0, "{kv}");
    assert_eq!(report["clients"]["failed"], 0);
    assert_eq!(report["clients"]["errors"].as_array().unwrap().len(), 0);
    let exits = report["node_exits"].as_array().unwrap();
    assert!(exits.iter().all(|exit| exit["clean"] == true), "{exits:?}");
}

/// One `journal` node (no RESP command set) started as the bench starts its nodes; killed on
/// drop.
struct JournalNode {
    _process: NodeProcess,
    client_addr: SocketAddr,
}

impl JournalNode {
    fn start(dir: &Path) -> JournalNode {
        let member = loopback_members(1..=1).unwrap().remove(0);
        let config = ServerConfig {
            id: 1,
            cluster_id: 7,
            data_dir: dir.join("node-1"),
            app: AppKind::Journal,
            metrics_addr: None,
            log_level: None,
            log_format: None,
            members: vec![member.clone()],
            join: false,
            tuning: Default::default(),
            security: Default::default(),
            limits: Default::default(),
        };
        let config_path = dir.join("node-1.toml");
        std::fs::write(&config_path, toml::to_string(&config).unwrap()).unwrap();
        let mut process = Launch::new(
            1,
            env!("CARGO_BIN_EXE_lockstep-bench"),
            dir.join("node-1.out"),
            Output::BothCopied,
        )
        .args(["node", "--config"])
        .arg(&config_path)
        .spawn()
        .unwrap();
        if let Err(error) = process.wait_ready(Duration::from_secs(20)) {
            panic!(
                "the journal node did not start ({error:?}):\n{}",
                process.log_tail(20)
            );
        }
        JournalNode {
            _process: process,
            client_addr: member.client_addr,
        }
    }
}

#[test]
fn error_replies_are_counted_shown_and_fail_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let node = JournalNode::start(dir.path());
    let json_path = dir.path().join("errors.json");
    let output = bench()
        .args(["--mode", "kv", "--read-ratio", "0", "--clients", "1"])
        .args(["--depth", "4", "--seconds", "1", "--warmup", "0"])
        .arg("--connect")
        .arg(node.client_addr.to_string())
        .arg("--json")
        .arg(&json_path)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}\n{stdout}");
    assert!(stderr.contains("the run had problems"), "{stderr}");
    assert!(
        stdout.contains("PROBLEM") && stdout.contains("SERVER ERRORS"),
        "{stdout}"
    );
    assert!(stdout.contains("no RESP command set"), "{stdout}");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json_path).unwrap()).unwrap();
    let errors = &report["kv"]["errors"];
    let total = errors["total"].as_u64().unwrap();
    assert!(total > 0, "{errors}");
    assert_eq!(report["kv"]["set"]["failed"].as_u64(), Some(total));
    assert_eq!(
        errors["texts"][0]["count"].as_u64(),
        Some(total),
        "{errors}"
    );

    // With reads, the keys are set first: that fails at once, saying why.
    let output = bench()
        .args(["--mode", "kv", "--read-ratio", "0.5", "--seconds", "1"])
        .arg("--connect")
        .arg(node.client_addr.to_string())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("preloading 100000 keys") && stderr.contains("no RESP command set"),
        "{stderr}"
    );
}

#[test]
fn bad_kv_options_exit_2_naming_the_option() {
    for (args, option) in [
        (&["--read-ratio", "0.5"][..], "--read-ratio"),
        (&["--mode", "kv", "--read-ratio", "2"][..], "--read-ratio"),
        (&["--mode", "kv", "--batch", "4"][..], "--batch"),
        (&["--mode", "kv", "--zipf", "1.5"][..], "--zipf"),
        (&["--mode", "kv", "--keys", "0"][..], "--keys"),
    ] {
        let output = bench().args(args).output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(option), "{args:?}: {stderr}");
    }
}
