//! Operations against real `lockstep serve` processes: the Prometheus endpoint is scraped over
//! HTTP and its counters move with writes; JSON logs are JSON; `lockstep status` shows rates,
//! sync sizes and queue depths; a bad `--metrics-addr` or `--log-level` stops the server with a
//! message naming the option.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{free_ports, run_bin, Cluster, BIN, CLIENT_TIMEOUT};
use lockstep::client::Client;
use lockstep_server::apps::KvCommand;
use serde_json::Value;

/// One HTTP/1.1 GET with std's TcpStream: status code, headers (lower-case names), body.
fn http_get(addr: SocketAddr, path: &str) -> (u16, Vec<(String, String)>, String) {
    let mut stream = TcpStream::connect_timeout(&addr, CLIENT_TIMEOUT).expect("connect");
    stream.set_read_timeout(Some(CLIENT_TIMEOUT)).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read response");
    let (head, body) = response
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no header end in {response:?}"));
    let mut lines = head.lines();
    let code = lines
        .next()
        .and_then(|line| line.split_whitespace().nth(1))
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("bad status line in {head:?}"));
    let headers = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_lowercase(), value.trim().to_string()))
        .collect();
    (code, headers, body.to_string())
}

/// The value of the sample line `series` (e.g. `lockstep_term` or `x{k="v"}`).
fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|line| {
            let (name, value) = line.rsplit_once(' ')?;
            (name == series)
                .then(|| value.parse::<f64>().ok())
                .flatten()
        })
        .unwrap_or_else(|| panic!("no sample {series:?} in:\n{text}"))
}

fn scrape(addr: SocketAddr) -> String {
    let (code, headers, body) = http_get(addr, "/metrics");
    assert_eq!(code, 200, "{body}");
    let content_type = headers
        .iter()
        .find(|(name, _)| name == "content-type")
        .map(|(_, value)| value.as_str());
    assert_eq!(
        content_type,
        Some(lockstep_server::metrics::CONTENT_TYPE),
        "{headers:?}"
    );
    body
}

#[test]
fn metrics_are_scraped_over_http_and_counters_move_with_writes() {
    let metrics_port = free_ports(1)[0];
    let metrics_flag = format!("127.0.0.1:{metrics_port}");
    let cluster = Cluster::start(
        1,
        "kv",
        &["--metrics-addr", &metrics_flag, "--log-format", "json"],
    );
    let metrics_addr: SocketAddr = metrics_flag.parse().unwrap();
    cluster.wait_leader(Duration::from_secs(10));

    let before = scrape(metrics_addr);
    for family in [
        "# TYPE lockstep_role gauge",
        "# TYPE lockstep_term gauge",
        "# TYPE lockstep_commit_index gauge",
        "# TYPE lockstep_applied_index gauge",
        "# TYPE lockstep_committed_entries counter",
        "# TYPE lockstep_leader_changes counter",
        "# TYPE lockstep_log_appended_entries counter",
        "# TYPE lockstep_log_appended_batches counter",
        "# TYPE lockstep_log_synced_entries counter",
        "# TYPE lockstep_log_synced_bytes counter",
        "# TYPE lockstep_log_sync_latency_seconds histogram",
        "# TYPE lockstep_queue_depth gauge",
        "# TYPE lockstep_peer_inflight_bytes gauge",
        "# TYPE lockstep_net_rejected_frames counter",
        "# TYPE lockstep_net_rejected_handshakes counter",
        "# TYPE lockstep_client_errors counter",
        "# TYPE lockstep_consensus_turns counter",
    ] {
        assert!(
            before.contains(family),
            "{family:?} missing from:\n{before}"
        );
    }
    assert_eq!(sample(&before, "lockstep_role{role=\"leader\"}"), 1.0);
    assert!(sample(&before, "lockstep_leader_changes_total") >= 1.0);

    let mut client = Client::connect(cluster.client_addr(1), cluster.cluster_id, CLIENT_TIMEOUT)
        .expect("connect to the leader");
    let writes = 50;
    let mut command = Vec::new();
    for i in 0..writes {
        command.clear();
        let key = format!("key-{i}");
        KvCommand::Put {
            key: key.as_bytes(),
            value: b"value",
        }
        .encode(&mut command);
        client.propose(&command).expect("put");
    }
    let after = scrape(metrics_addr);
    for (series, at_least) in [
        ("lockstep_committed_entries_total", writes as f64),
        ("lockstep_applied_index", writes as f64),
        ("lockstep_log_appended_entries_total", writes as f64),
        ("lockstep_log_syncs_total", 1.0),
        ("lockstep_log_sync_latency_seconds_count", 1.0),
    ] {
        let (was, now) = (sample(&before, series), sample(&after, series));
        assert!(now - was >= at_least, "{series}: {was} -> {now}");
    }
    assert!(sample(&after, "lockstep_log_sync_latency_seconds_sum") > 0.0);

    let (code, _, body) = http_get(metrics_addr, "/nothing");
    assert_eq!(code, 404, "{body}");
    assert!(body.contains("/metrics"), "{body}");

    let output = Command::new(BIN)
        .args(["status", "--addr", &cluster.client_addr(1).to_string()])
        .args(["--cluster-id", &cluster.cluster_id.to_string()])
        .stdin(Stdio::null())
        .output()
        .expect("run lockstep status");
    let table = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{table}");
    for expected in [
        "commits/s",
        "syncs/s",
        "entries per batch",
        "queues   requests",
    ] {
        assert!(
            table.contains(expected),
            "{expected:?} missing from:\n{table}"
        );
    }

    let logs = cluster.log_tail(1);
    let mut json_lines = 0;
    for line in logs.lines().filter(|line| line.starts_with('{')) {
        let event: Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("log line is not JSON ({e}): {line}"));
        assert!(event.get("level").is_some(), "{line}");
        json_lines += 1;
    }
    assert!(json_lines > 0, "no JSON log line in:\n{logs}");
}

#[test]
fn a_bad_metrics_addr_or_log_level_stops_the_server_naming_the_option() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let taken_addr = taken.local_addr().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let ports = free_ports(2);
    let member = format!("1=127.0.0.1:{}/127.0.0.1:{}", ports[0], ports[1]);
    let data = dir.path().join("data");
    let base = [
        "serve",
        "--id",
        "1",
        "--cluster-id",
        "7",
        "--app",
        "kv",
        "--member",
        &member,
        "--data-dir",
        data.to_str().unwrap(),
    ];
    let run = |extra: &[&str]| {
        let args: Vec<&str> = base.iter().chain(extra).copied().collect();
        let (status, stderr) = run_bin(&args);
        assert!(!status.success(), "{extra:?} was accepted");
        stderr
    };
    let stderr = run(&["--metrics-addr", &taken_addr]);
    assert!(
        stderr.contains("option `metrics_addr` (flag --metrics-addr): cannot listen on"),
        "{stderr}"
    );
    assert!(
        !data.exists(),
        "the data directory was touched before the metrics address was checked"
    );
    let stderr = run(&["--metrics-addr", "localhost-ish"]);
    assert!(stderr.contains("--metrics-addr"), "{stderr}");
    let own_client = format!("127.0.0.1:{}", ports[1]);
    let stderr = run(&["--metrics-addr", &own_client]);
    assert!(
        stderr.contains("option `metrics_addr` (flag --metrics-addr)"),
        "{stderr}"
    );
    let stderr = run(&["--log-level", "lockstep=loudest"]);
    assert!(
        stderr.contains("option `log_level` (flag --log-level)") && stderr.contains("--log-level"),
        "{stderr}"
    );
    let stderr = run(&["--log-format", "xml"]);
    assert!(
        stderr.contains("option `log_format` (flag --log-format)"),
        "{stderr}"
    );
    drop(taken);
}
