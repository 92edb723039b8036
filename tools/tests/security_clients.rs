//! Client authentication and client limits against real `lockstep serve` processes: AUTH and
//! HELLO AUTH over raw RESP, the redis crate and redis-cli; the read-only user; the native
//! client's hello password (and `lockstep status --password-file`); a flood of connections past
//! `max_clients` and oversized requests while another client keeps committing; the idle and
//! slow-client timeouts. The redis-cli checks fail when it is not installed (`.ci/run`
//! installs it).

mod common;

use std::io::{BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{run_bin, Cluster, CLIENT_TIMEOUT};
use lockstep::client::{Client, ClientError, ClusterClient, Credentials};
use lockstep::raft::MembershipChange;
use lockstep::resp::parser::encode_request;
use lockstep::resp::Value;
use lockstep::types::NodeId;
use serde_json::Value as Json;

const PASSWORD: &str = "correct horse";
const READER_PASSWORD: &str = "battery staple";

/// Writes the two password files into `dir`; returns the serve flags naming them.
fn password_flags(dir: &Path) -> (PathBuf, Vec<String>) {
    let default = dir.join("client.pw");
    let reader = dir.join("reader.pw");
    std::fs::write(&default, format!("{PASSWORD}\n")).unwrap();
    std::fs::write(&reader, format!("{READER_PASSWORD}\n")).unwrap();
    let flags = vec![
        "--client-password-file".to_string(),
        default.display().to_string(),
        "--readonly-password-file".to_string(),
        reader.display().to_string(),
    ];
    (default, flags)
}

fn strs(flags: &[String]) -> Vec<&str> {
    flags.iter().map(String::as_str).collect()
}

/// A raw RESP connection.
struct Resp {
    writer: TcpStream,
    reader: BufReader<TcpStream>,
}

impl Resp {
    fn connect(addr: SocketAddr) -> Resp {
        let stream = TcpStream::connect(addr).unwrap();
        stream.set_read_timeout(Some(CLIENT_TIMEOUT)).unwrap();
        Resp {
            reader: BufReader::new(stream.try_clone().unwrap()),
            writer: stream,
        }
    }

    fn send(&mut self, words: &[&[u8]]) {
        let mut out = Vec::new();
        encode_request(words, &mut out);
        self.writer.write_all(&out).unwrap();
    }

    fn read(&mut self) -> Value {
        Value::read_from(&mut self.reader, 1 << 24).unwrap()
    }

    fn call(&mut self, words: &[&str]) -> Value {
        let words: Vec<&[u8]> = words.iter().map(|word| word.as_bytes()).collect();
        self.send(&words);
        self.read()
    }

    /// Whether the server closed the connection (reads to the end, within the timeout).
    fn closed(&mut self) -> bool {
        let mut sink = Vec::new();
        match self.reader.read_to_end(&mut sink) {
            Ok(_) => true,
            Err(err) => err.kind() == std::io::ErrorKind::ConnectionReset,
        }
    }
}

fn error_code(value: &Value) -> String {
    match value {
        Value::Error(text) => text.split(' ').next().unwrap().to_string(),
        other => panic!("expected an error, got {other:?}"),
    }
}

fn bulk(text: &str) -> Value {
    Value::Bulk(bytes::Bytes::copy_from_slice(text.as_bytes()))
}

/// A client for `cluster` that authenticates as the default user; waits until a write commits.
fn writer(cluster: &Cluster) -> ClusterClient {
    let mut client = ClusterClient::new(cluster.client_addrs(), cluster.cluster_id, CLIENT_TIMEOUT)
        .with_retry_for(Duration::from_secs(20))
        .with_credentials(Credentials::new(PASSWORD));
    commit(&mut client, "warmup", "1");
    client
}

/// Puts `key` = `value` (idempotent), retrying through leader changes (a loaded machine may
/// see elections) for up to 20 s; panics if it never commits.
fn commit(client: &mut ClusterClient, key: &str, value: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match client.propose_idempotent(&set_command(key, value)) {
            Ok(_) => return,
            Err(err @ (ClientError::Auth(_) | ClientError::Refused(_))) => {
                panic!("put {key}: {err}")
            }
            Err(err) => assert!(
                Instant::now() < deadline,
                "put {key} never committed: {err}"
            ),
        }
    }
}

/// A kv put in the app's binary encoding (what native clients propose).
fn set_command(key: &str, value: &str) -> Vec<u8> {
    let mut command = Vec::new();
    lockstep_server::apps::KvCommand::Put {
        key: key.as_bytes(),
        value: value.as_bytes(),
    }
    .encode(&mut command);
    command
}

/// The leader's status JSON, through an authenticated native client.
fn status(addr: SocketAddr, cluster_id: u64) -> Json {
    let credentials = Credentials::new(PASSWORD);
    let mut client =
        Client::connect_with(addr, cluster_id, CLIENT_TIMEOUT, Some(&credentials), None)
            .expect("authenticated status connection");
    serde_json::from_str(&client.status().unwrap()).unwrap()
}

fn net_counter(status: &Json, name: &str) -> u64 {
    status["net"][name]
        .as_u64()
        .unwrap_or_else(|| panic!("no net.{name} in {status}"))
}

/// The node the writer reached (it follows redirects to the leader).
fn leader_addr(client: &ClusterClient) -> SocketAddr {
    client.current_addr()
}

#[test]
fn resp_clients_authenticate_and_the_reader_only_reads() {
    let dir = tempfile::tempdir().unwrap();
    let (_, flags) = password_flags(dir.path());
    let cluster = Cluster::start(1, "kv", &strs(&flags));
    let addr = leader_addr(&writer(&cluster));

    let mut resp = Resp::connect(addr);
    assert_eq!(error_code(&resp.call(&["GET", "k"])), "NOAUTH");
    assert_eq!(error_code(&resp.call(&["SET", "k", "v"])), "NOAUTH");
    assert_eq!(resp.call(&["PING"]), Value::Simple("PONG".into()));
    assert_eq!(
        resp.call(&["AUTH", "wrong"]),
        Value::Error("WRONGPASS invalid username-password pair or user is disabled.".into())
    );
    assert_eq!(
        error_code(&resp.call(&["AUTH", "reader", PASSWORD])),
        "WRONGPASS"
    );
    assert_eq!(resp.call(&["AUTH", PASSWORD]), Value::ok());
    assert_eq!(resp.call(&["SET", "k", "v"]), Value::ok());
    assert_eq!(resp.call(&["GET", "k"]), bulk("v"));

    assert_eq!(resp.call(&["AUTH", "reader", READER_PASSWORD]), Value::ok());
    assert_eq!(resp.call(&["GET", "k"]), bulk("v"));
    assert_eq!(resp.call(&["EXISTS", "k"]), Value::Int(1));
    assert_eq!(
        resp.call(&["SET", "k", "w"]),
        Value::Error("NOPERM User reader has no permissions to run the 'set' command".into())
    );
    assert_eq!(error_code(&resp.call(&["DEL", "k"])), "NOPERM");
    assert_eq!(
        resp.call(&["GET", "k"]),
        bulk("v"),
        "a refused write changed nothing"
    );

    assert_eq!(resp.call(&["RESET"]), Value::Simple("RESET".into()));
    assert_eq!(error_code(&resp.call(&["GET", "k"])), "NOAUTH");
    assert_eq!(error_code(&resp.call(&["HELLO", "2"])), "NOAUTH");
    let hello = resp.call(&["HELLO", "2", "AUTH", "default", PASSWORD]);
    assert!(matches!(hello, Value::Array(_)), "{hello:?}");
    assert_eq!(resp.call(&["SET", "k", "x"]), Value::ok());

    // The redis crate authenticates from the URL (AUTH user password).
    let port = addr.port();
    let url = format!(
        "redis://default:{}@127.0.0.1:{port}/",
        PASSWORD.replace(' ', "%20")
    );
    let mut con = redis::Client::open(url).unwrap().get_connection().unwrap();
    let _: () = redis::cmd("SET")
        .arg("crate")
        .arg("yes")
        .query(&mut con)
        .unwrap();
    let got: String = redis::cmd("GET").arg("crate").query(&mut con).unwrap();
    assert_eq!(got, "yes");
    let url = format!("redis://127.0.0.1:{port}/");
    let mut anonymous = redis::Client::open(url).unwrap().get_connection().unwrap();
    let refused = redis::cmd("GET")
        .arg("crate")
        .query::<Option<String>>(&mut anonymous)
        .unwrap_err();
    assert_eq!(refused.code(), Some("NOAUTH"), "{refused}");

    redis_cli_authenticates(addr);

    let failures = net_counter(&status(addr, cluster.cluster_id), "client_auth_failures");
    assert!(failures >= 2, "{failures} failed AUTHs counted");
    let log = cluster.log_tail(1);
    assert!(log.contains("client authentication failed"), "{log}");
    assert!(
        !log.contains(PASSWORD) && !log.contains(READER_PASSWORD),
        "{log}"
    );
}

/// redis-cli with `-a` and with `--user`/`--pass`.
fn redis_cli_authenticates(addr: SocketAddr) {
    let port = addr.port().to_string();
    let cli = |auth: &[&str], words: &[&str]| -> String {
        let mut args = vec!["--no-auth-warning", "-h", "127.0.0.1", "-p", &port];
        args.extend_from_slice(auth);
        args.extend_from_slice(words);
        match Command::new("redis-cli").args(&args).output() {
            Ok(output) => String::from_utf8_lossy(&output.stdout).trim().to_string(),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                panic!("redis-cli is not installed and this test needs it (apt-get install redis-tools)")
            }
            Err(err) => panic!("cannot run redis-cli: {err}"),
        }
    };
    assert_eq!(cli(&["-a", PASSWORD], &["SET", "cli", "1"]), "OK");
    let reader = ["--user", "reader", "--pass", READER_PASSWORD];
    assert_eq!(cli(&reader, &["GET", "cli"]), "1");
    let refused = cli(&reader, &["SET", "cli", "2"]);
    assert!(refused.contains("NOPERM"), "{refused}");
    let anonymous = cli(&[], &["GET", "cli"]);
    assert!(anonymous.contains("NOAUTH"), "{anonymous}");
}

#[test]
fn native_clients_authenticate_in_their_hello() {
    let dir = tempfile::tempdir().unwrap();
    let (password_file, flags) = password_flags(dir.path());
    let cluster = Cluster::start(1, "kv", &strs(&flags));
    let addr = leader_addr(&writer(&cluster));
    let id = cluster.cluster_id;

    match Client::connect(addr, id, CLIENT_TIMEOUT) {
        Err(ClientError::Auth(message)) => assert!(message.starts_with("NOAUTH "), "{message}"),
        other => panic!("a client without a password got {:?}", other.map(|_| ())),
    }
    let wrong = Credentials::new("nope");
    match Client::connect_with(addr, id, CLIENT_TIMEOUT, Some(&wrong), None) {
        Err(err @ ClientError::Auth(_)) => {
            assert!(err.to_string().contains("WRONGPASS"), "{err}");
        }
        other => panic!("a wrong password got {:?}", other.map(|_| ())),
    }
    let right = Credentials::new(PASSWORD);
    let mut client = Client::connect_with(addr, id, CLIENT_TIMEOUT, Some(&right), None).unwrap();
    client.propose(&set_command("native", "1")).unwrap();

    let reader = Credentials::for_user("reader", READER_PASSWORD);
    let mut reader = Client::connect_with(addr, id, CLIENT_TIMEOUT, Some(&reader), None).unwrap();
    reader.status().unwrap();
    match reader.propose(&set_command("native", "2")) {
        Err(ClientError::Server(message)) => assert!(message.starts_with("NOPERM "), "{message}"),
        other => panic!("a reader's proposal got {other:?}"),
    }
    match reader.change_membership(MembershipChange::Remove(NodeId(1))) {
        Err(ClientError::Server(message)) => assert!(message.starts_with("NOPERM "), "{message}"),
        other => panic!("a reader's membership change got {other:?}"),
    }
    // The connection stays usable after a refused write.
    reader.status().unwrap();

    let addr_text = addr.to_string();
    let id_text = id.to_string();
    let base = ["status", "--addr", &addr_text, "--cluster-id", &id_text];
    let (exit, output) = run_bin(&base);
    assert!(!exit.success() && output.contains("NOAUTH"), "{output}");
    assert!(output.contains("--password-file"), "{output}");
    let mut with_file = base.to_vec();
    let file = password_file.display().to_string();
    with_file.extend(["--password-file", &file]);
    let (exit, output) = run_bin(&with_file);
    assert!(exit.success(), "{output}");
}

#[test]
fn a_flood_of_connections_and_oversized_requests_do_not_stop_commits() {
    let dir = tempfile::tempdir().unwrap();
    let (_, mut flags) = password_flags(dir.path());
    flags.extend(
        [
            "--max-clients",
            "64",
            "--max-request-bytes",
            "4096",
            "--max-pipelined-bytes",
            "8192",
        ]
        .map(String::from),
    );
    let cluster = Cluster::start(3, "kv", &strs(&flags));
    let mut client = writer(&cluster);
    let addr = leader_addr(&client);

    let flood: usize = std::env::var("LOCKSTEP_FLOOD_CONNECTIONS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(1200);
    let mut open = Vec::with_capacity(flood);
    let mut committed = 0;
    let mut refused_line = None;
    for i in 0..flood {
        match TcpStream::connect(addr) {
            Ok(stream) => open.push(stream),
            Err(err) => panic!("connect {i} of the flood failed: {err}"),
        }
        if i % 100 == 0 {
            commit(&mut client, "during-flood", &i.to_string());
            committed += 1;
        }
    }
    // Connections past max_clients were told why before the close.
    for stream in open.iter_mut().rev().take(50) {
        stream.set_read_timeout(Some(CLIENT_TIMEOUT)).unwrap();
        let mut text = String::new();
        let _ = stream.read_to_string(&mut text);
        if !text.is_empty() {
            refused_line = Some(text);
            break;
        }
    }
    assert_eq!(
        refused_line.as_deref(),
        Some("-ERR max number of clients reached\r\n")
    );

    // Oversized requests: a RESP command and a native frame over 4096 bytes.
    let big = "x".repeat(8192);
    drop(open); // Room for the next connections.
    std::thread::sleep(Duration::from_millis(200));
    let mut resp = Resp::connect(addr);
    assert_eq!(resp.call(&["AUTH", PASSWORD]), Value::ok());
    let Value::Error(error) = resp.call(&["SET", "big", &big]) else {
        panic!("an oversized request was not refused")
    };
    assert!(error.starts_with("ERR Protocol error: "), "{error}");
    assert!(
        resp.closed(),
        "the connection closes after the protocol error"
    );
    // A pipeline far over max_pipelined_bytes is read in steps (back-pressure), all answered.
    let mut pipelined = Resp::connect(addr);
    assert_eq!(pipelined.call(&["AUTH", PASSWORD]), Value::ok());
    let mut pipeline = Vec::new();
    let value = "p".repeat(1000);
    for i in 0..300 {
        let key = format!("pipelined-{i}");
        encode_request(&[b"SET", key.as_bytes(), value.as_bytes()], &mut pipeline);
    }
    pipelined.writer.write_all(&pipeline).unwrap();
    for _ in 0..300 {
        match pipelined.read() {
            Value::Error(text) if text.starts_with("NOTLEADER ") => {} // An election happened.
            other => assert_eq!(other, Value::ok()),
        }
    }
    let credentials = Credentials::new(PASSWORD);
    let mut native = Client::connect_with(
        addr,
        cluster.cluster_id,
        CLIENT_TIMEOUT,
        Some(&credentials),
        None,
    )
    .unwrap();
    let err = native.propose(&set_command("big", &big)).unwrap_err();
    assert!(err.to_string().contains("max_request_bytes"), "{err}");

    for i in 0..20 {
        commit(&mut client, "after-flood", &i.to_string());
        committed += 1;
    }
    let status = status(addr, cluster.cluster_id);
    assert!(net_counter(&status, "clients_refused_max") > 0, "{status}");
    assert!(
        net_counter(&status, "clients_closed_request_bytes") >= 1,
        "{status}"
    );
    assert!(
        net_counter(&status, "client_reads_paused_pipelined") >= 1,
        "{status}"
    );
    assert!(committed > 20);
}

#[test]
fn idle_and_slow_clients_are_disconnected_while_others_are_served() {
    let dir = tempfile::tempdir().unwrap();
    let (_, mut flags) = password_flags(dir.path());
    flags.extend(
        [
            "--idle-timeout-ms",
            "400",
            "--slow-client-timeout-ms",
            "600",
            "--socket-buffer-bytes",
            "65536",
        ]
        .map(String::from),
    );
    let cluster = Cluster::start(1, "kv", &strs(&flags));
    let addr = leader_addr(&writer(&cluster));

    let mut idle = Resp::connect(addr);
    assert_eq!(idle.call(&["AUTH", PASSWORD]), Value::ok());
    let started = Instant::now();
    assert!(idle.closed(), "an idle connection is closed");
    let waited = started.elapsed();
    assert!(waited < CLIENT_TIMEOUT, "closed after {waited:?}");

    // A slow client: huge pipelined GET replies that it never reads (all sent in one write, so
    // no stall of this test makes it idle first).
    let mut slow = Resp::connect(addr);
    let value = "v".repeat(100_000);
    let mut pipeline = Vec::new();
    encode_request(&[b"AUTH", PASSWORD.as_bytes()], &mut pipeline);
    encode_request(&[b"SET", b"big", value.as_bytes()], &mut pipeline);
    for _ in 0..1500 {
        encode_request(&[b"GET", b"big"], &mut pipeline);
    }
    slow.writer.write_all(&pipeline).unwrap();

    // Meanwhile other clients are served (each a fresh connection that sends everything at
    // once, for the same reason).
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut served = 0;
    loop {
        let mut other = Resp::connect(addr);
        let text = served.to_string();
        let mut requests = Vec::new();
        encode_request(&[b"AUTH", PASSWORD.as_bytes()], &mut requests);
        encode_request(&[b"SET", b"other", text.as_bytes()], &mut requests);
        encode_request(&[b"GET", b"other"], &mut requests);
        other.writer.write_all(&requests).unwrap();
        assert_eq!(other.read(), Value::ok());
        assert_eq!(other.read(), Value::ok());
        assert_eq!(other.read(), bulk(&text));
        served += 1;
        let status = status(addr, cluster.cluster_id);
        if net_counter(&status, "clients_closed_slow") >= 1 {
            assert!(net_counter(&status, "clients_closed_idle") >= 1, "{status}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the slow client was not closed: {status}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(served > 0);
    assert!(slow.closed(), "the slow client's connection ends");
    let log = cluster.log_tail(1);
    assert!(log.contains("slow client"), "{log}");
}
