//! `redis-cli` and `redis-benchmark` against a real 3-node kv cluster of `lockstep serve`
//! processes, and 1,000 concurrent RESP connections each doing a request. The redis tools
//! tests are skipped, with a message, when the tools are not installed (`.ci/run` installs them).

mod common;

use std::io::{BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::Duration;

use common::Cluster;
use lockstep::resp::parser::encode_request;
use lockstep::resp::Value;

/// Runs `program` with `args`; `None` (and a message) if it is not installed.
fn run_tool(program: &str, args: &[&str]) -> Option<String> {
    match Command::new(program).args(args).output() {
        Ok(output) => {
            assert!(
                output.status.success(),
                "{program} {args:?} failed: {}",
                String::from_utf8_lossy(&output.stderr)
            );
            let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
            text.push_str(&String::from_utf8_lossy(&output.stderr));
            Some(text)
        }
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            eprintln!("SKIPPED: {program} is not installed (apt-get install redis-tools)");
            None
        }
        Err(err) => panic!("cannot run {program}: {err}"),
    }
}

fn cli(addr: SocketAddr, words: &[&str]) -> Option<String> {
    let port = addr.port().to_string();
    let mut args = vec!["--no-raw", "-h", "127.0.0.1", "-p", &port];
    args.extend_from_slice(words);
    run_tool("redis-cli", &args).map(|out| out.trim_end().to_string())
}

#[test]
fn redis_cli_and_redis_benchmark_work_against_a_cluster() {
    let cluster = Cluster::start(3, "kv", &[]);
    let leader = cluster.wait_leader(Duration::from_secs(20));
    let leader_addr = cluster.client_addr(leader);
    let Some(pong) = cli(leader_addr, &["PING"]) else {
        return;
    };
    assert_eq!(pong, "PONG");
    assert_eq!(
        cli(leader_addr, &["SET", "greeting", "hello"]).unwrap(),
        "OK"
    );
    assert_eq!(cli(leader_addr, &["GET", "greeting"]).unwrap(), "\"hello\"");
    let unknown = cli(leader_addr, &["NOSUCHCOMMAND"]).unwrap();
    assert!(
        unknown.starts_with("(error) ERR unknown command"),
        "{unknown}"
    );
    let follower = cluster.ids().into_iter().find(|id| *id != leader).unwrap();
    let redirect = cli(cluster.client_addr(follower), &["SET", "greeting", "x"]).unwrap();
    assert_eq!(
        redirect,
        format!("(error) NOTLEADER {leader_addr} {leader}"),
        "a follower's redirect names the leader"
    );

    let port = leader_addr.port().to_string();
    let args = [
        "-h",
        "127.0.0.1",
        "-p",
        &port,
        "-q",
        "-t",
        "set,get",
        "-n",
        "20000",
        "-P",
        "16",
        "-c",
        "20",
    ];
    let out = run_tool("redis-benchmark", &args).unwrap();
    let lower = out.to_lowercase();
    assert!(
        !lower.contains("error") && out.contains("SET: ") && out.contains("GET: "),
        "redis-benchmark output:\n{out}\n{}",
        cluster.all_logs()
    );
}

#[test]
fn a_thousand_connections_each_do_a_request() {
    let cluster = Cluster::start(1, "kv", &[]);
    cluster.wait_leader(Duration::from_secs(20));
    let addr = cluster.client_addr(1);
    let mut conns: Vec<TcpStream> = (0..1000)
        .map(|at| {
            let stream = TcpStream::connect(addr)
                .unwrap_or_else(|err| panic!("connection {at} refused: {err}"));
            stream
                .set_read_timeout(Some(Duration::from_secs(20)))
                .unwrap();
            stream
        })
        .collect();
    // Every connection sends before any reads: all 1,000 are open and waiting at once.
    for (at, conn) in conns.iter_mut().enumerate() {
        let key = format!("key{at}");
        let mut wire = Vec::new();
        encode_request(&[b"SET", key.as_bytes(), b"v"], &mut wire);
        conn.write_all(&wire).unwrap();
    }
    for (at, conn) in conns.iter().enumerate() {
        let reply = Value::read_from(&mut BufReader::new(conn), 1024)
            .unwrap_or_else(|err| panic!("connection {at}: {err}"));
        assert_eq!(reply, Value::ok(), "connection {at}");
    }
    let status = cluster.status(1).unwrap();
    assert!(status["applied"].as_u64().unwrap() >= 1000, "{status}");
}
