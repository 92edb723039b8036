//! `lockstep cluster` as a user runs it: a real 3-node cluster started in one command, written
//! and read through redis-cli (or the `redis` crate when redis-cli is not installed), then stopped
//! with SIGTERM: exit 0, no node left running, temp dir removed. Also: a taken port is refused.

mod common;

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::BIN;
use lockstep_testkit::ports::free_port_run;
use lockstep_testkit::process::children_of;

/// The running command and the file its stderr goes to; kills the command (and so, through the
/// parent-death signal, its nodes) if a test fails.
struct Guard(Child, tempfile::NamedTempFile);

impl Guard {
    fn stderr(&self) -> String {
        std::fs::read_to_string(self.1.path()).unwrap_or_default()
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs `lockstep cluster` with `args`; returns it and its stdout lines up to `stop: Ctrl-C`.
fn start(args: &[String]) -> (Guard, Vec<String>) {
    let stderr = tempfile::NamedTempFile::new().expect("stderr file");
    let mut child = Command::new(BIN)
        .arg("cluster")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(stderr.reopen().expect("reopen stderr file"))
        .spawn()
        .expect("spawn lockstep cluster");
    let stdout = child.stdout.take().expect("piped");
    let guard = Guard(child, stderr);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let done = line == "stop: Ctrl-C";
            if tx.send(line).is_err() || done {
                break;
            }
        }
    });
    let mut lines = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while lines.last().map(String::as_str) != Some("stop: Ctrl-C") {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => lines.push(line),
            Err(err) => panic!(
                "no table ({err:?}); stdout so far {lines:?}; stderr:\n{}",
                guard.stderr()
            ),
        }
    }
    (guard, lines)
}

/// Runs redis-cli against `port`, or `None` when it is not installed.
fn redis_cli(port: u16, words: &[&str]) -> Option<String> {
    let output = Command::new("redis-cli")
        .args(["-p", &port.to_string()])
        .args(words)
        .output()
        .ok()?;
    assert!(output.status.success(), "redis-cli {words:?}: {output:?}");
    Some(
        String::from_utf8_lossy(&output.stdout)
            .trim_end()
            .to_string(),
    )
}

/// SET then GET on the node at `port`, through redis-cli or else the `redis` crate.
fn set_and_get(port: u16) {
    if let Some(reply) = redis_cli(port, &["SET", "greeting", "hello"]) {
        assert_eq!(reply, "OK");
        assert_eq!(redis_cli(port, &["GET", "greeting"]).unwrap(), "hello");
        return;
    }
    let url = format!("redis://127.0.0.1:{port}/");
    let mut con = redis::Client::open(url.as_str())
        .and_then(|client| client.get_connection())
        .expect("connect");
    let reply: String = redis::cmd("SET")
        .arg("greeting")
        .arg("hello")
        .query(&mut con)
        .expect("SET");
    assert_eq!(reply, "OK");
    let value: String = redis::cmd("GET")
        .arg("greeting")
        .query(&mut con)
        .expect("GET");
    assert_eq!(value, "hello");
}

#[test]
fn cluster_starts_serves_and_stops_cleanly_on_sigterm() {
    let client_port = free_port_run(6).expect("free ports");
    let peer_port = client_port + 3;
    let args: Vec<String> = ["--nodes", "3", "--client-port", &client_port.to_string()]
        .into_iter()
        .chain(["--peer-port", &peer_port.to_string()])
        .map(String::from)
        .collect();
    let (mut guard, lines) = start(&args);
    let table = lines.join("\n");
    let dir = lines
        .iter()
        .find_map(|line| line.strip_prefix("data: "))
        .and_then(|rest| rest.strip_suffix(" (removed at exit)"))
        .map(PathBuf::from)
        .unwrap_or_else(|| panic!("no temp data dir in:\n{table}"));
    assert!(dir.join("node-1.log").exists(), "{table}");
    let leader_rows: Vec<&String> = lines
        .iter()
        .filter(|line| line.ends_with(" leader"))
        .collect();
    assert_eq!(leader_rows.len(), 1, "one leader row expected:\n{table}");
    for id in 1..=3u16 {
        let row = format!("127.0.0.1:{}", client_port + id - 1);
        assert!(table.contains(&row), "{row} missing:\n{table}");
    }
    let leader_port: u16 = leader_rows[0]
        .split_whitespace()
        .nth(1)
        .and_then(|addr| addr.rsplit(':').next())
        .and_then(|port| port.parse().ok())
        .unwrap_or_else(|| panic!("bad leader row in:\n{table}"));
    assert!(
        table.contains(&format!("try:  redis-cli -p {leader_port}")),
        "{table}"
    );
    set_and_get(leader_port);

    let command_pid = guard.0.id();
    let nodes = children_of(command_pid);
    assert_eq!(nodes.len(), 3, "node pids {nodes:?}");
    let status = Command::new("kill")
        .args(["-TERM", &command_pid.to_string()])
        .status()
        .expect("run kill");
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(15);
    let exit = loop {
        if let Some(exit) = guard.0.try_wait().expect("try_wait") {
            break exit;
        }
        assert!(
            Instant::now() < deadline,
            "lockstep cluster did not exit after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(exit.success(), "exit status {exit}:\n{}", guard.stderr());
    for pid in nodes {
        assert!(
            !PathBuf::from(format!("/proc/{pid}")).exists(),
            "node pid {pid} outlived the command"
        );
    }
    assert!(!dir.exists(), "{} was not removed", dir.display());
}

#[test]
fn a_taken_port_is_refused_naming_the_option_and_port() {
    let first = free_port_run(6).expect("free ports");
    let taken = TcpListener::bind(("127.0.0.1", first + 4)).expect("bind");
    let (status, stderr) = common::run_bin(&[
        "cluster",
        "--client-port",
        &first.to_string(),
        "--peer-port",
        &(first + 3).to_string(),
    ]);
    drop(taken);
    assert_eq!(status.code(), Some(1), "{stderr}");
    let expected = format!(
        "port {} on 127.0.0.1 (node 2's peer port, from --peer-port {}) is not free",
        first + 4,
        first + 3
    );
    assert!(stderr.contains(&expected), "{stderr}");
}
