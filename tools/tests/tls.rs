//! TLS on real `lockstep serve` processes: a 3-node cluster with TLS on both ports commits;
//! `redis-cli --tls` and `lockstep status --tls-ca-file` reach it; a plaintext client of the TLS
//! client port is refused while the others are served; a node whose certificate comes from
//! another CA cannot join; a bad TLS file stops `lockstep serve` with a message naming it.
//! Certificates are made in the test with the engine's throwaway CA (`lockstep::net::dev_pki`).

mod common;

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{run_bin, Cluster, BIN};
use lockstep::client::{Client, ClientError};
use lockstep::net::ClientTls;
use lockstep_server::apps::kv::KvCommand;
use lockstep_server::pki::DevPki;
use lockstep_testkit::process::{Launch, Output};
use lockstep_testkit::serve::ServeFlags;

const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// A CA and one certificate for 127.0.0.1 (every test node listens there, so they share it).
struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    fn new(name: &str) -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let pki = DevPki::new(name).unwrap();
        pki.write_ca(dir.path()).unwrap();
        pki.write_node(dir.path(), "node", &[LOCALHOST]).unwrap();
        Pki { dir }
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }

    fn ca(&self) -> String {
        self.path("ca.pem")
    }

    /// The `lockstep serve` flags for TLS on both ports.
    fn serve_args(&self) -> Vec<String> {
        vec![
            "--tls-cert-file".into(),
            self.path("node.pem"),
            "--tls-key-file".into(),
            self.path("node-key.pem"),
            "--tls-ca-file".into(),
            self.ca(),
        ]
    }

    fn client_tls(&self) -> ClientTls {
        ClientTls::from_ca_file(Path::new(&self.ca())).unwrap()
    }
}

/// The kv app's encoding of a put.
fn put(key: &[u8], value: &[u8]) -> Vec<u8> {
    let mut command = Vec::new();
    KvCommand::Put { key, value }.encode(&mut command);
    command
}

fn start_tls_cluster(pki: &Pki) -> (Cluster, u64) {
    let args = pki.serve_args();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut cluster = Cluster::start(3, "kv", &args);
    cluster.client_tls = Some(pki.client_tls());
    let leader = cluster.wait_leader(Duration::from_secs(20));
    (cluster, leader)
}

/// `redis-cli --tls` with `words`; fails the test when redis-cli is missing.
fn redis_cli_tls(ca: &str, port: u16, words: &[&str]) -> String {
    let port = port.to_string();
    let mut args = vec!["--tls", "--cacert", ca, "-h", "127.0.0.1", "-p", &port];
    args.extend_from_slice(words);
    match Command::new("redis-cli").args(&args).output() {
        Ok(output) => {
            let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
            text.push_str(&String::from_utf8_lossy(&output.stderr));
            text.trim_end().to_owned()
        }
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            panic!(
                "redis-cli is not installed and this test needs it (apt-get install redis-tools)"
            )
        }
        Err(err) => panic!("cannot run redis-cli: {err}"),
    }
}

#[test]
fn a_tls_cluster_commits_and_serves_tls_clients_only() {
    let pki = Pki::new("lockstep test CA");
    let (cluster, leader) = start_tls_cluster(&pki);
    let leader_addr = cluster.client_addr(leader);

    // The native client over TLS: writes commit on all three nodes.
    let tls = pki.client_tls();
    let mut client = Client::connect_with(
        leader_addr,
        cluster.cluster_id,
        common::CLIENT_TIMEOUT,
        None,
        Some(&tls),
    )
    .unwrap();
    for i in 0..50u32 {
        let command = put(format!("k{i}").as_bytes(), b"v");
        client.propose(&command).unwrap();
    }
    let applied = cluster.wait_converged(Duration::from_secs(20));
    assert!(applied >= 50, "applied {applied}");

    // redis-cli --tls round trip.
    let reply = redis_cli_tls(&pki.ca(), leader_addr.port(), &["SET", "tls", "works"]);
    assert_eq!(reply, "OK");
    let got = redis_cli_tls(&pki.ca(), leader_addr.port(), &["GET", "tls"]);
    assert_eq!(got, "works");

    // lockstep status over TLS (and, without the CA, a clear failure).
    let addr = leader_addr.to_string();
    let cluster_id = cluster.cluster_id.to_string();
    let ca = pki.ca();
    let flags = ["status", "--addr", &addr, "--cluster-id", &cluster_id];
    let (status, _) = run_bin(&[&flags[..], &["--json", "--tls-ca-file", &ca]].concat());
    assert!(status.success());
    let (status, stderr) = run_bin(&[&flags[..], &["--timeout-ms", "1000"]].concat());
    assert!(!status.success(), "a plaintext status got through");
    assert!(stderr.contains("cannot connect"), "{stderr}");

    // A plaintext RESP client is refused: no reply, the connection closes.
    let mut plain = TcpStream::connect(leader_addr).unwrap();
    plain
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    plain.write_all(b"*1\r\n$4\r\nPING\r\n").unwrap();
    let mut answer = Vec::new();
    let _ = plain.read_to_end(&mut answer);
    assert!(
        !answer.windows(4).any(|window| window == b"PONG"),
        "a plaintext client was answered: {answer:?}"
    );
    // The TLS client on the same node goes on as if nothing happened.
    let command = put(b"after", b"refusal");
    client.propose(&command).unwrap();
    let log = cluster.log_tail(leader);
    assert!(log.contains("TLS"), "no refusal logged:\n{log}");
}

#[test]
fn a_node_with_a_certificate_from_another_ca_cannot_join() {
    let pki = Pki::new("lockstep test CA");
    let (mut cluster, _) = start_tls_cluster(&pki);
    // Node 3 is replaced by an impostor with the right id and addresses but another CA's
    // certificate (and a fresh data directory).
    cluster.kill9(3);
    let stranger = Pki::new("another CA");
    let data_dir = cluster.dir.path().join("impostor");
    let flags = ServeFlags {
        id: 3,
        cluster_id: cluster.cluster_id,
        data_dir: &data_dir,
        app: "kv",
        members: &cluster.members,
        join: false,
    };
    let log = cluster.dir.path().join("impostor.log");
    let mut impostor = Launch::new(3, BIN, log, Output::StderrAppended)
        .args(flags.to_args())
        .args(stranger.serve_args())
        .env("LOCKSTEP_LOG", "info")
        .spawn()
        .unwrap();
    let impostor_addr = cluster.client_addr(3);

    // The members keep committing; the impostor learns nothing.
    let leader = cluster.wait_leader(Duration::from_secs(20));
    let tls = pki.client_tls();
    let mut client = Client::connect_with(
        cluster.client_addr(leader),
        cluster.cluster_id,
        common::CLIENT_TIMEOUT,
        None,
        Some(&tls),
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut commits = 0;
    while Instant::now() < deadline {
        client.propose(&put(b"k", b"v")).unwrap();
        commits += 1;
    }
    let stranger_tls = stranger.client_tls();
    let status = Client::connect_with(
        impostor_addr,
        cluster.cluster_id,
        common::CLIENT_TIMEOUT,
        None,
        Some(&stranger_tls),
    )
    .and_then(|mut client| client.status())
    .unwrap();
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert_eq!(
        status["commit"], 0,
        "the impostor learned commits: {status}"
    );
    assert!(commits > 0);
    // Our CA does not vouch for the impostor's client port either.
    let refused = Client::connect_with(
        impostor_addr,
        cluster.cluster_id,
        common::CLIENT_TIMEOUT,
        None,
        Some(&tls),
    );
    assert!(
        matches!(refused, Err(ClientError::Io(_))),
        "{:?}",
        refused.err()
    );
    let logs = cluster.log_tail(1) + &cluster.log_tail(2);
    assert!(
        logs.contains("refusing peer handshake") && logs.contains("certificate"),
        "no refused certificate logged:\n{logs}"
    );
    impostor.kill().unwrap();
}

#[test]
fn a_bad_tls_file_stops_the_server_naming_it() {
    let pki = Pki::new("lockstep test CA");
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().display().to_string();
    let missing = pki.path("missing-key.pem");
    let args = pki.serve_args();
    // `lockstep serve` of a one-node kv cluster with the given TLS flags.
    let serve = |tls: &[&str]| {
        let mut all = vec![
            "serve",
            "--id",
            "1",
            "--cluster-id",
            "1",
            "--data-dir",
            &data_dir,
            "--app",
            "kv",
            "--member",
            "1=127.0.0.1:1/127.0.0.1:2",
        ];
        all.extend_from_slice(tls);
        run_bin(&all)
    };
    let (status, stderr) = serve(&[
        &args[0],
        &args[1],
        "--tls-key-file",
        &missing,
        &args[4],
        &args[5],
    ]);
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("option `security.tls.key_file` (flag --tls-key-file)")
            && stderr.contains("missing-key.pem: not found"),
        "{stderr}"
    );
    let (status, stderr) = serve(&[&args[0], &args[1]]);
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("`security.tls.key_file` (flag --tls-key-file): is not set"),
        "{stderr}"
    );
}
