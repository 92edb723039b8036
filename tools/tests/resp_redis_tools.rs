//! `redis-cli` and `redis-benchmark` against a real 3-node kv cluster of `lockstep serve`
//! processes, 1,000 concurrent RESP connections each doing a request, and the refusal of
//! transactions. The redis tools tests fail when the tools are not installed (`.ci/run`
//! installs them).

mod common;

use std::io::{BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::Duration;

use common::Cluster;
use lockstep::resp::parser::encode_request;
use lockstep::resp::Value;

/// Runs `program` with `args` and returns what it printed; fails the test if it is missing.
fn run_tool(program: &str, args: &[&str]) -> String {
    match Command::new(program).args(args).output() {
        Ok(output) => {
            assert!(
                output.status.success(),
                "{program} {args:?} failed: {}",
                String::from_utf8_lossy(&output.stderr)
            );
            let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
            text.push_str(&String::from_utf8_lossy(&output.stderr));
            text
        }
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            panic!(
                "{program} is not installed and this test needs it (apt-get install redis-tools)"
            )
        }
        Err(err) => panic!("cannot run {program}: {err}"),
    }
}

fn cli(addr: SocketAddr, words: &[&str]) -> String {
    let port = addr.port().to_string();
    let mut args = vec!["--no-raw", "-h", "127.0.0.1", "-p", &port];
    args.extend_from_slice(words);
    run_tool("redis-cli", &args).trim_end().to_string()
}

#[test]
fn redis_cli_and_redis_benchmark_work_against_a_cluster() {
    let cluster = Cluster::start(3, "kv", &[]);
    let leader = cluster.wait_leader(Duration::from_secs(20));
    let leader_addr = cluster.client_addr(leader);
    assert_eq!(cli(leader_addr, &["PING"]), "PONG");
    assert_eq!(cli(leader_addr, &["SET", "greeting", "hello"]), "OK");
    assert_eq!(cli(leader_addr, &["GET", "greeting"]), "\"hello\"");
    let unknown = cli(leader_addr, &["NOSUCHCOMMAND"]);
    assert!(
        unknown.starts_with("(error) ERR unknown command"),
        "{unknown}"
    );
    let follower = cluster.ids().into_iter().find(|id| *id != leader).unwrap();
    let redirect = cli(cluster.client_addr(follower), &["SET", "greeting", "x"]);
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
    let out = run_tool("redis-benchmark", &args);
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

/// Sends `commands` pipelined on one connection and reads one reply per command.
fn pipelined(addr: SocketAddr, commands: &[&[&str]]) -> Vec<Value> {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut wire = Vec::new();
    for words in commands {
        let args: Vec<&[u8]> = words.iter().map(|word| word.as_bytes()).collect();
        encode_request(&args, &mut wire);
    }
    stream.write_all(&wire).unwrap();
    let mut reader = BufReader::new(stream);
    commands
        .iter()
        .map(|words| {
            Value::read_from(&mut reader, 1024).unwrap_or_else(|err| panic!("{words:?}: {err}"))
        })
        .collect()
}

fn is_error(value: &Value, code: &str) -> bool {
    matches!(value, Value::Error(text) if text.starts_with(&format!("{code} ")))
}

#[test]
fn a_refused_multi_applies_nothing_up_to_its_exec_or_discard() {
    let cluster = Cluster::start(1, "kv", &[]);
    cluster.wait_leader(Duration::from_secs(20));
    let addr = cluster.client_addr(1);
    for end in ["EXEC", "DISCARD"] {
        let replies = pipelined(
            addr,
            &[
                &["SET", "n", "1"],
                &["MULTI"],
                &["SET", "n", "5"],
                &["INCR", "n"],
                &[end],
                &["GET", "n"],
                &["INCR", "n"],
                &["SET", "n", "1"],
            ],
        );
        assert_eq!(replies[0], Value::ok(), "{replies:?}");
        assert!(is_error(&replies[1], "ERR"), "{replies:?}");
        assert!(
            format!("{:?}", replies[1]).contains("does not support transactions"),
            "{replies:?}"
        );
        for refused in &replies[2..5] {
            assert!(is_error(refused, "EXECABORT"), "{end}: {replies:?}");
        }
        // Neither the SET nor the INCR after MULTI was applied; the connection serves again.
        assert_eq!(replies[5], Value::Bulk("1".into()), "{end}: {replies:?}");
        assert_eq!(replies[6], Value::Int(2), "{end}: {replies:?}");
    }
    for words in [&["EXEC"][..], &["DISCARD"], &["WATCH", "n"]] {
        let replies = pipelined(addr, &[words, &["GET", "n"]]);
        assert!(is_error(&replies[0], "ERR"), "{words:?}: {replies:?}");
        assert_eq!(replies[1], Value::Bulk("1".into()), "{replies:?}");
    }
    let refused = cli(addr, &["MULTI"]);
    assert!(
        refused.starts_with("(error) ERR MULTI is refused") && refused.contains("transactions"),
        "{refused}"
    );
}
