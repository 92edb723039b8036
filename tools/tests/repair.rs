//! Protocol-aware recovery on real processes: a bit flipped in a committed record of a stopped
//! node's log, before its tail.
//!
//! - In a 3-node cluster the damaged follower restarts, cuts the damage, fetches the lost range
//!   from the leader, drops its repair marker once caught up, and votes again (the test kills the
//!   leader and the repaired node must help elect the next one); no acknowledged put is lost.
//! - A single-node cluster has nobody to fetch from: it refuses to start, naming the file, the
//!   offset, the lost index range and what the operator can do, and leaves the log untouched.
//! - When every copy is damaged, every node starts repairing and none votes: the cluster stays
//!   without a leader (unavailable rather than wrong), and each node's log says why.

mod common;

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{Cluster, BIN, CLIENT_TIMEOUT};
use lockstep::client::{Client, ClusterClient};
use lockstep::log::inspect::inspect;
use lockstep::log::repair::REPAIR_FILE;
use lockstep_server::apps::{KvCommand, Reply};
use lockstep_testkit::process::{Launch, NotReady, Output};
use lockstep_testkit::serve::ServeFlags;

fn key_value(n: u64) -> (String, String) {
    (format!("key-{n}"), format!("value-{n}-{}", n * 7))
}

/// Puts keys `from..to` one by one through the cluster; every one must be acknowledged.
fn put_range(cluster: &Cluster, from: u64, to: u64) {
    let mut client = ClusterClient::new(cluster.client_addrs(), cluster.cluster_id, CLIENT_TIMEOUT)
        .with_retry_for(Duration::from_secs(10));
    let mut command = Vec::new();
    for n in from..to {
        let (key, value) = key_value(n);
        command.clear();
        KvCommand::Put {
            key: key.as_bytes(),
            value: value.as_bytes(),
        }
        .encode(&mut command);
        let applied = client
            .propose_idempotent(&command)
            .unwrap_or_else(|err| panic!("put {key}: {err}\n{}", cluster.all_logs()));
        assert_eq!(Reply::decode(&applied.result), Ok(Reply::Ok), "put {key}");
    }
}

/// Reads keys `0..to` from node `id`'s local state: every acknowledged put must be there.
fn check_replica(cluster: &Cluster, id: u64, to: u64) {
    let mut client = Client::connect(cluster.client_addr(id), cluster.cluster_id, CLIENT_TIMEOUT)
        .expect("connect for the check");
    let mut query = Vec::new();
    for n in 0..to {
        let (key, value) = key_value(n);
        query.clear();
        KvCommand::Get {
            key: key.as_bytes(),
        }
        .encode(&mut query);
        let answer = client.read(&query, false).expect("local read");
        assert_eq!(
            Reply::decode(&answer.result),
            Ok(Reply::Value(Bytes::copy_from_slice(value.as_bytes()))),
            "node {id} lost acknowledged key {key}"
        );
    }
}

/// Where the damage went: the segment file, the record's offset, its first index, and the last
/// index the log held.
struct Damaged {
    file: PathBuf,
    offset: u64,
    first_index: u64,
    last_index: u64,
}

/// Flips one bit in the payload of the record holding `index` in the stopped node's log.
fn damage_record_of(log_dir: &Path, index: u64) -> Damaged {
    let inspection = inspect(log_dir).expect("inspect the stopped node's log");
    let listed = inspection
        .batches(index, index)
        .next()
        .expect("a record holds the index");
    let offset = listed.span.offset as u64;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(listed.path)
        .expect("open the segment");
    let at = offset + 64 + 5;
    let mut byte = [0u8];
    file.read_exact_at(&mut byte, at).unwrap();
    byte[0] ^= 0x08;
    file.write_all_at(&byte, at).unwrap();
    Damaged {
        file: listed.path.to_path_buf(),
        offset,
        first_index: listed.span.first_index.get(),
        last_index: inspection.recovered.next_index.get() - 1,
    }
}

fn wait_for(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn node_log(cluster: &Cluster, id: u64) -> String {
    std::fs::read_to_string(cluster.dir.path().join(format!("node-{id}.log"))).unwrap_or_default()
}

#[test]
fn a_follower_with_a_damaged_log_repairs_from_the_leader_and_votes_again() {
    let mut cluster = Cluster::start(3, "kv", &["--segment-bytes", "65536"]);
    let leader = cluster.wait_leader(Duration::from_secs(10));
    put_range(&cluster, 0, 300);
    let follower = cluster.ids().into_iter().find(|&id| id != leader).unwrap();
    cluster.wait_converged(Duration::from_secs(10));
    cluster.kill9(follower);
    let log_dir = cluster.data_dir(follower).join("log");
    let damaged = damage_record_of(&log_dir, 50);
    assert!(
        inspect(&log_dir).is_err(),
        "the damage must be before the tail"
    );
    // The cluster moves on while the follower is down.
    put_range(&cluster, 300, 400);
    cluster.restart(follower);
    put_range(&cluster, 400, 450);
    cluster.wait_converged(Duration::from_secs(20));
    wait_for("the repair marker to go", Duration::from_secs(10), || {
        !log_dir.join(REPAIR_FILE).exists()
    });
    let text = node_log(&cluster, follower);
    assert!(
        text.contains("repairing the log from peers") && text.contains("repair complete"),
        "node {follower} log:\n{text}"
    );
    assert!(
        text.contains(&damaged.file.display().to_string()),
        "the log names the damaged file {}:\n{text}",
        damaged.file.display()
    );
    check_replica(&cluster, follower, 450);

    // The repaired node votes again: with the leader gone, it and the third node elect one.
    cluster.kill9(leader);
    let new_leader = cluster.wait_leader(Duration::from_secs(10));
    assert_ne!(new_leader, leader);
    put_range(&cluster, 450, 470);
    // The reads below are local: a follower applies the last puts only once it hears they
    // committed (with the leader's next append or heartbeat).
    cluster.wait_converged(Duration::from_secs(10));
    for id in cluster.ids().into_iter().filter(|&id| id != leader) {
        check_replica(&cluster, id, 470);
    }
}

#[test]
fn a_single_node_with_a_damaged_log_refuses_to_start_and_says_why() {
    let mut cluster = Cluster::start(1, "kv", &[]);
    cluster.wait_leader(Duration::from_secs(10));
    put_range(&cluster, 0, 100);
    cluster.stop(1);
    let log_dir = cluster.data_dir(1).join("log");
    let damaged = damage_record_of(&log_dir, 20);

    let stderr = refused_start(&cluster);
    for needle in [
        damaged.file.display().to_string(),
        format!("byte offset {}", damaged.offset),
        format!("entries {}..={}", damaged.first_index, damaged.last_index),
        "only voter".to_string(),
        "Restore the data directory".to_string(),
    ] {
        assert!(
            stderr.contains(&needle),
            "{needle:?} missing from:\n{stderr}"
        );
    }
    // Nothing was cut: the damage is still there for the operator.
    assert!(inspect(&log_dir).is_err());
    assert!(!log_dir.join(REPAIR_FILE).exists());
}

/// Starts node 1 of `cluster` (a single voter) and returns what it printed before it exited;
/// panics if it starts serving instead.
fn refused_start(cluster: &Cluster) -> String {
    let flags = ServeFlags {
        id: 1,
        cluster_id: cluster.cluster_id,
        data_dir: &cluster.data_dir(1),
        app: "kv",
        members: &cluster.members[..1],
        join: false,
    };
    let log = cluster.dir.path().join("refused-start.log");
    let mut node = Launch::new(1, BIN, &log, Output::StderrAppended)
        .args(flags.to_args())
        .spawn()
        .expect("spawn lockstep serve");
    match node.wait_ready(Duration::from_secs(20)) {
        Err(NotReady::Exited { status, .. }) => {
            let stderr = std::fs::read_to_string(&log).expect("read its stderr");
            assert!(!status.success(), "{stderr}");
            stderr
        }
        Ok(_) => panic!("a single node with a damaged log started serving"),
        Err(error) => {
            panic!("a single node with a damaged log neither started nor exited: {error:?}")
        }
    }
}

#[test]
fn a_single_node_whose_newest_segment_was_deleted_refuses_to_start_naming_it() {
    // Small segments so the log spans several; the newest one goes.
    let mut cluster = Cluster::start(1, "kv", &["--segment-bytes", "65536"]);
    cluster.wait_leader(Duration::from_secs(10));
    put_range(&cluster, 0, 2000);
    cluster.stop(1);
    let log_dir = cluster.data_dir(1).join("log");
    let newest = inspect(&log_dir)
        .unwrap()
        .segments
        .last()
        .unwrap()
        .path
        .clone();
    std::fs::remove_file(&newest).unwrap();
    let stderr = refused_start(&cluster);
    for needle in [
        newest.display().to_string(),
        "how many is unknown".to_string(),
        "only voter".to_string(),
        "Restore the data directory".to_string(),
    ] {
        assert!(
            stderr.contains(&needle),
            "{needle:?} missing from:\n{stderr}"
        );
    }
    assert!(inspect(&log_dir).is_err());
    assert!(!log_dir.join(REPAIR_FILE).exists());
}

#[test]
fn when_every_copy_is_damaged_no_node_votes_and_each_says_why() {
    let mut cluster = Cluster::start(3, "kv", &[]);
    cluster.wait_leader(Duration::from_secs(10));
    put_range(&cluster, 0, 100);
    cluster.wait_converged(Duration::from_secs(10));
    for id in cluster.ids() {
        cluster.kill9(id);
        damage_record_of(&cluster.data_dir(id).join("log"), 30);
    }
    for id in cluster.ids() {
        cluster.restart(id);
    }
    // Several election timeouts: nobody may win, since nobody holds what it acknowledged.
    std::thread::sleep(Duration::from_secs(2));
    for id in cluster.ids() {
        let status = cluster.status(id).expect("status");
        assert_eq!(status["role"], "follower", "node {id}: {status}");
        assert!(status["leader"].is_null(), "node {id}: {status}");
        let text = node_log(&cluster, id);
        assert!(
            text.contains("will not vote or campaign"),
            "node {id} log:\n{text}"
        );
        assert!(cluster.data_dir(id).join("log").join(REPAIR_FILE).exists());
    }
}
