//! Peer authentication between real `lockstep serve` processes sharing a secret
//! (`--peer-secret-file`): the members commit; processes with the wrong secret or none, and raw
//! connections claiming the node's own id, or a member's or an unlisted id without proving the
//! secret, are refused at the handshake (counted by reason in the status JSON) and cannot move the term, change the leader or stop commits; a
//! handshake captured from a real dialer and replayed to a member is refused.

mod common;

use std::fs::OpenOptions;
use std::io::{ErrorKind, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{run_bin, Cluster, BIN, CLIENT_TIMEOUT};
use lockstep::client::ClusterClient;
use lockstep::net::frame::{encode_frame, read_frame, FrameError, FrameType};
use lockstep::net::{PeerHello, PeerProof, PeerSecret, Role, Transcript, PEER_PROTOCOL_VERSION};
use lockstep::types::NodeId;
use lockstep_server::MemberConfig;
use lockstep_testkit::ports::loopback_members;
use lockstep_testkit::process::{Launch, NodeProcess, Output};
use lockstep_testkit::serve::ServeFlags;
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(20);
const GOOD_SECRET: &str = "correct horse battery staple, 32+ bytes of it";
const WRONG_SECRET: &str = "a guess at the secret that is long enough to pass";

/// Writes `text` (plus a newline) to `dir/name`, readable by its owner only.
fn secret_file(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .expect("create secret file");
    writeln!(file, "{text}").expect("write secret file");
    path
}

fn fresh_member(id: u64) -> MemberConfig {
    loopback_members(id..=id).expect("free ports").remove(0)
}

/// A `lockstep serve` process that is not one of the cluster's, killed on drop.
struct Outsider {
    _process: NodeProcess,
    log: PathBuf,
}

impl Outsider {
    /// Node `members[0].id` of `cluster_id` with `members` (itself first) and `secret` if
    /// any; its data and log go under `dir`, named after `name`.
    fn spawn(
        dir: &Path,
        name: &str,
        cluster_id: u64,
        members: &[MemberConfig],
        secret: Option<&Path>,
    ) -> Outsider {
        let id = members[0].id;
        let log = dir.join(format!("{name}.log"));
        let flags = ServeFlags {
            id,
            cluster_id,
            data_dir: &dir.join(name),
            app: "journal",
            members,
            join: false,
        };
        let mut launch = Launch::new(id, BIN, &log, Output::StderrAppended)
            .args(flags.to_args())
            .env("LOCKSTEP_LOG", "info");
        if let Some(secret) = secret {
            launch = launch.arg("--peer-secret-file").arg(secret);
        }
        let process = launch.spawn().expect("spawn an outsider");
        Outsider {
            _process: process,
            log,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

fn refusals(cluster: &Cluster, id: u64, reason: &str) -> u64 {
    let status = cluster.status(id).expect("status");
    status["net"]["peer_refusals"][reason]
        .as_u64()
        .unwrap_or_else(|| panic!("no net.peer_refusals.{reason} in {status}"))
}

fn wait_for(what: &str, cluster: &Cluster, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !check() {
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}\n{}",
            cluster.all_logs()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn commits(client: &mut ClusterClient, count: usize, what: &str) {
    for n in 0..count {
        if let Err(err) = client.propose(format!("{what}-{n}").as_bytes()) {
            panic!("the cluster stopped committing during {what}: {err}");
        }
    }
}

/// The leader and its term, once all members agree.
fn leader_and_term(cluster: &Cluster) -> (u64, u64) {
    let leader = cluster.wait_leader(WAIT);
    let status: Value = cluster.status(leader).expect("leader status");
    (leader, status["term"].as_u64().expect("term"))
}

fn frame(ty: FrameType, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    encode_frame(ty, body, &mut out);
    out
}

/// Reads one frame of type `expected` and returns its body.
fn expect_frame(stream: &mut TcpStream, expected: FrameType, what: &str) -> Vec<u8> {
    let mut body = Vec::new();
    let ty = read_frame(stream, 1 << 20, &mut body).unwrap_or_else(|err| panic!("{what}: {err}"));
    assert_eq!(ty, expected, "{what}");
    body
}

/// Asserts that the other end closes `stream` (whatever frames it sends first).
fn assert_closed(stream: &mut TcpStream, what: &str) {
    stream.set_read_timeout(Some(WAIT)).expect("timeout");
    let mut body = Vec::new();
    loop {
        match read_frame(stream, 1 << 20, &mut body) {
            Ok(_) => continue,
            Err(FrameError::Io(err))
                if matches!(err.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) =>
            {
                panic!("{what}: the node did not close the connection")
            }
            Err(_) => return,
        }
    }
}

/// The first connection to `listener` within [`WAIT`].
fn accept_within(listener: &TcpListener) -> TcpStream {
    listener.set_nonblocking(true).expect("nonblocking");
    let deadline = Instant::now() + WAIT;
    loop {
        match listener.accept() {
            Ok((stream, _)) => {
                stream.set_nonblocking(false).expect("blocking");
                stream.set_read_timeout(Some(WAIT)).expect("timeout");
                return stream;
            }
            Err(err) if err.kind() == ErrorKind::WouldBlock => {
                assert!(Instant::now() < deadline, "nobody dialed {listener:?}");
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(err) => panic!("accept: {err}"),
        }
    }
}

fn connect(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect_timeout(&addr, CLIENT_TIMEOUT).expect("connect");
    stream.set_read_timeout(Some(WAIT)).expect("timeout");
    stream
}

#[test]
fn members_commit_and_nodes_without_the_secret_can_neither_join_nor_disrupt() {
    let secrets = tempfile::tempdir().expect("temp dir");
    let good = secret_file(secrets.path(), "good", GOOD_SECRET);
    let wrong = secret_file(secrets.path(), "wrong", WRONG_SECRET);
    let cluster = Cluster::start(
        3,
        "journal",
        &["--peer-secret-file", good.to_str().expect("utf-8 path")],
    );
    let mut client = ClusterClient::new(cluster.client_addrs(), cluster.cluster_id, CLIENT_TIMEOUT);
    commits(&mut client, 50, "start");
    let (leader, term) = leader_and_term(&cluster);
    for id in cluster.ids() {
        for reason in ["bad_proof", "no_proof", "unknown_node"] {
            assert_eq!(refusals(&cluster, id, reason), 0, "node {id} {reason}");
        }
    }

    // Processes claiming to be node 1 dial nodes 2 and 3: first with the wrong secret, then
    // with none. Each keeps campaigning on its own (elections every 100..200 ms) and re-dialing.
    let outsiders = [
        (
            "wrong-secret",
            Some(wrong.as_path()),
            "bad_proof",
            "does not verify",
        ),
        (
            "no-secret",
            None,
            "no_proof",
            "authenticates with a peer secret, and this node has none",
        ),
    ];
    for (name, secret, reason, outsider_says) in outsiders {
        let members = [
            fresh_member(1),
            cluster.members[1].clone(),
            cluster.members[2].clone(),
        ];
        let outsider = Outsider::spawn(
            cluster.dir.path(),
            name,
            cluster.cluster_id,
            &members,
            secret,
        );
        wait_for(
            &format!("{reason} refusals on nodes 2 and 3"),
            &cluster,
            || refusals(&cluster, 2, reason) >= 2 && refusals(&cluster, 3, reason) >= 2,
        );
        commits(&mut client, 50, reason);
        assert_eq!(leader_and_term(&cluster), (leader, term), "after {reason}");
        let log = outsider.log();
        assert!(log.contains(outsider_says), "the outsider's log:\n{log}");
    }

    // Raw connections to node 3: claiming node 3's own id (refused as such), then an id
    // outside its peer list and a member's id, each with a made-up proof: an unlisted id is
    // accepted as a peer only like a listed one, by proving the secret.
    let peer3 = cluster.peer_addr(3);
    let hello = |id: u64, nonce: u8| {
        let mut body = Vec::new();
        PeerHello::new(cluster.cluster_id, NodeId(id), true, [nonce; 32]).encode(&mut body);
        frame(FrameType::PeerHello, &body)
    };
    let mut own = connect(peer3);
    own.write_all(&hello(3, 1)).expect("send");
    assert_closed(&mut own, "node 3's own id");
    wait_for("the unknown_node refusal", &cluster, || {
        refusals(&cluster, 3, "unknown_node") == 1
    });
    for (claimed, nonce) in [(9, 2), (1, 3)] {
        let before = refusals(&cluster, 3, "bad_proof");
        let mut forged = connect(peer3);
        let mut frames = hello(claimed, nonce);
        frames.extend(frame(FrameType::PeerProof, &[0xAB; 32]));
        forged.write_all(&frames).expect("send");
        assert_closed(&mut forged, "made-up proof");
        wait_for("the made-up proof's refusal", &cluster, || {
            refusals(&cluster, 3, "bad_proof") == before + 1
        });
    }

    commits(&mut client, 50, "after the raw connections");
    assert_eq!(leader_and_term(&cluster), (leader, term));
    cluster.wait_converged(WAIT);
    let logs = cluster.all_logs();
    assert!(
        logs.contains("the proof of node n1 does not verify") && logs.contains("bad_proof"),
        "the members' logs:\n{logs}"
    );
    assert!(
        !logs.contains(GOOD_SECRET) && !logs.contains(WRONG_SECRET),
        "{logs}"
    );
}

#[test]
fn a_handshake_captured_from_a_real_dialer_and_replayed_is_refused() {
    let secrets = tempfile::tempdir().expect("temp dir");
    let good = secret_file(secrets.path(), "good", GOOD_SECRET);
    let cluster = Cluster::start(
        3,
        "journal",
        &["--peer-secret-file", good.to_str().expect("utf-8 path")],
    );
    let mut client = ClusterClient::new(cluster.client_addrs(), cluster.cluster_id, CLIENT_TIMEOUT);
    commits(&mut client, 20, "start");
    let (leader, term) = leader_and_term(&cluster);

    // A real node 2 holding the secret, whose node 3 is our listener: it dials us.
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let relay_member = MemberConfig {
        id: 3,
        peer_addr: listener.local_addr().expect("addr"),
        client_addr: fresh_member(3).client_addr,
    };
    let dialer = Outsider::spawn(
        cluster.dir.path(),
        "dialer",
        cluster.cluster_id,
        &[fresh_member(2), relay_member],
        Some(&good),
    );
    let mut from_dialer = accept_within(&listener);
    drop(listener);

    // Relay its hello to the real node 3 and node 3's hello back, and capture the dialer's proof
    // (without passing it on).
    let dialer_hello = expect_frame(&mut from_dialer, FrameType::PeerHello, "dialer hello");
    let mut to_member = connect(cluster.peer_addr(3));
    to_member
        .write_all(&frame(FrameType::PeerHello, &dialer_hello))
        .expect("relay hello");
    let member_hello = expect_frame(&mut to_member, FrameType::PeerHello, "member hello");
    from_dialer
        .write_all(&frame(FrameType::PeerHello, &member_hello))
        .expect("relay hello back");
    let dialer_proof = expect_frame(&mut from_dialer, FrameType::PeerProof, "dialer proof");
    drop(to_member);
    drop(from_dialer);
    drop(dialer);

    // The capture is a valid handshake for the connection it was made on...
    let dialer_hello_parsed = PeerHello::decode(&dialer_hello).expect("dialer hello");
    let member_hello_parsed = PeerHello::decode(&member_hello).expect("member hello");
    assert!(dialer_hello_parsed.authenticates && member_hello_parsed.authenticates);
    let transcript = Transcript {
        version: PEER_PROTOCOL_VERSION,
        cluster_id: cluster.cluster_id,
        dialer: NodeId(2),
        acceptor: NodeId(3),
        dialer_nonce: dialer_hello_parsed.nonce,
        acceptor_nonce: member_hello_parsed.nonce,
    };
    let secret = PeerSecret::new(GOOD_SECRET.as_bytes().to_vec()).expect("secret");
    let proof = PeerProof::decode(&dialer_proof).expect("proof");
    assert!(transcript.verify(&secret, Role::Dialer, &proof.proof));

    // ...and refused when replayed: node 3 sends a fresh nonce the old proof does not cover.
    let before = refusals(&cluster, 3, "bad_proof");
    let mut replay = connect(cluster.peer_addr(3));
    let mut replayed = frame(FrameType::PeerHello, &dialer_hello);
    replayed.extend(frame(FrameType::PeerProof, &dialer_proof));
    replay.write_all(&replayed).expect("replay");
    let fresh_hello = expect_frame(&mut replay, FrameType::PeerHello, "member hello on replay");
    let fresh = PeerHello::decode(&fresh_hello).expect("member hello");
    assert_ne!(
        fresh.nonce, member_hello_parsed.nonce,
        "node 3 reused a nonce"
    );
    assert_closed(&mut replay, "replayed handshake");
    wait_for("the replay's refusal", &cluster, || {
        refusals(&cluster, 3, "bad_proof") == before + 1
    });

    commits(&mut client, 20, "after the replay");
    assert_eq!(leader_and_term(&cluster), (leader, term));
}

#[test]
fn a_bad_secret_file_stops_serve_naming_the_option_and_the_file() {
    let dir = tempfile::tempdir().expect("temp dir");
    let short = secret_file(dir.path(), "short", "only 31 bytes, a secret too sho");
    let missing = dir.path().join("missing");
    let member = fresh_member(1);
    let data = dir.path().join("data");
    for (file, why) in [(&short, "31 bytes"), (&missing, "cannot open")] {
        let (status, stderr) = run_bin(&[
            "serve",
            "--id",
            "1",
            "--cluster-id",
            "5",
            "--app",
            "kv",
            "--data-dir",
            data.to_str().expect("utf-8"),
            "--member",
            &member.to_string(),
            "--peer-secret-file",
            file.to_str().expect("utf-8"),
        ]);
        assert_eq!(status.code(), Some(1), "{stderr}");
        for expected in [
            "security.peer_secret_file",
            "--peer-secret-file",
            file.to_str().expect("utf-8"),
            why,
        ] {
            assert!(
                stderr.contains(expected),
                "{expected:?} missing from: {stderr}"
            );
        }
        assert!(!stderr.contains("a secret too sh"), "{stderr}");
    }
}
