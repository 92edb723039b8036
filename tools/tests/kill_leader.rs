//! A 3-node cluster of the real binary under a load of unique kv puts from several client
//! threads: the leader is killed with SIGKILL again and again, a new leader takes over, the old
//! one restarts and catches up (every few cycles only after the survivors compacted their logs
//! past its last entry or the new leader marked it as needing a snapshot, so it must catch up
//! by installing one, which its `snapshots_installed` counter must show). At the end every
//! replica, read locally, holds every acknowledged put.
//!
//! `LOCKSTEP_KILL_CYCLES` sets the number of kill cycles (default 20).

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{oldest_segment_index, Cluster, CLIENT_TIMEOUT};
use lockstep::client::{Client, ClusterClient};
use lockstep::net::{ClientReply, ClientRequest};
use lockstep_server::apps::{KvCommand, Reply};

const WRITERS: usize = 4;
const SNAPSHOT_ENTRIES: u64 = 1000;
/// Every this many cycles, the killed node stays down until it can only catch up by snapshot.
const SNAPSHOT_CYCLE_EVERY: usize = 5;

fn key_value(writer: usize, seq: u64) -> (String, String) {
    (
        format!("w{writer}-{seq}"),
        format!("v{writer}-{seq}-{}", seq * 31),
    )
}

/// Writes unique keys until `stop`; returns the acknowledged ones.
fn writer(
    writer: usize,
    addrs: Vec<std::net::SocketAddr>,
    cluster_id: u64,
    stop: Arc<AtomicBool>,
    acked: Arc<AtomicU64>,
    failures: Arc<Mutex<Vec<String>>>,
) -> Vec<u64> {
    let mut client = ClusterClient::new(addrs, cluster_id, Duration::from_secs(2))
        .with_retry_for(Duration::from_secs(2));
    let mut done = Vec::new();
    let mut seq = 0;
    let mut command = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        let (key, value) = key_value(writer, seq);
        command.clear();
        KvCommand::Put {
            key: key.as_bytes(),
            value: value.as_bytes(),
        }
        .encode(&mut command);
        // A put of a unique key is idempotent: retrying after an unknown outcome is safe.
        match client.propose_idempotent(&command) {
            Ok(applied) => {
                if Reply::decode(&applied.result) != Ok(Reply::Ok) {
                    failures
                        .lock()
                        .unwrap()
                        .push(format!("put {key} answered {:?}", applied.result));
                }
                done.push(seq);
                seq += 1;
                acked.fetch_add(1, Ordering::Relaxed);
            }
            Err(_) => std::thread::sleep(Duration::from_millis(5)),
        }
    }
    done
}

/// Waits until `acked` grew by `more` since `from`.
fn wait_progress(cluster: &Cluster, acked: &AtomicU64, from: u64, more: u64, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while acked.load(Ordering::Relaxed) < from + more {
        assert!(
            Instant::now() < deadline,
            "no progress ({what}): {} acks, wanted {}\n{}",
            acked.load(Ordering::Relaxed),
            from + more,
            cluster.all_logs()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The last index in node `id`'s (stopped) log.
fn last_log_index(cluster: &Cluster, id: u64) -> u64 {
    let inspection = lockstep::log::inspect::inspect(&cluster.data_dir(id).join("log"))
        .expect("inspect the dead node's log");
    inspection.recovered.next_index.get() - 1
}

/// Reads every acknowledged key from `id`'s local state (pipelined).
fn check_replica(cluster: &Cluster, id: u64, acked: &[Vec<u64>]) {
    let mut client = Client::connect(cluster.client_addr(id), cluster.cluster_id, CLIENT_TIMEOUT)
        .expect("connect for the final check");
    let expected: Vec<(String, String)> = acked
        .iter()
        .enumerate()
        .flat_map(|(w, seqs)| seqs.iter().map(move |seq| key_value(w, *seq)))
        .collect();
    let mut query = Vec::new();
    for chunk in expected.chunks(2000) {
        let first_req = client.next_req();
        for (position, (key, _)) in chunk.iter().enumerate() {
            query.clear();
            KvCommand::Get {
                key: key.as_bytes(),
            }
            .encode(&mut query);
            let req = if position == 0 {
                first_req
            } else {
                client.next_req()
            };
            client
                .send(&ClientRequest::Read {
                    req,
                    query: Bytes::copy_from_slice(&query),
                    linearizable: false,
                })
                .expect("send read");
        }
        client.flush().expect("flush reads");
        for _ in 0..chunk.len() {
            let reply = client.recv().expect("read reply");
            let ClientReply::ReadOk { req, result, .. } = reply else {
                panic!("node {id}: unexpected reply {reply:?}");
            };
            let (key, value) = &chunk[(req - first_req) as usize];
            assert_eq!(
                Reply::decode(&result),
                Ok(Reply::Value(Bytes::copy_from_slice(value.as_bytes()))),
                "node {id} lost acknowledged key {key}"
            );
        }
    }
}

/// Whether `dead` (whose log ends at `dead_last`) can only catch up by a snapshot: `leader`
/// reports it in snapshot state, or every other node's oldest segment starts past its end.
fn needs_snapshot(cluster: &Cluster, leader: u64, dead: u64, dead_last: u64) -> bool {
    let snapshot_state = cluster.status(leader).is_ok_and(|status| {
        status["peers"].as_array().is_some_and(|peers| {
            peers
                .iter()
                .any(|peer| peer["id"].as_u64() == Some(dead) && peer["state"] == "snapshot")
        })
    });
    snapshot_state
        || cluster
            .ids()
            .into_iter()
            .filter(|id| *id != dead)
            .all(|id| {
                oldest_segment_index(&cluster.data_dir(id).join("log"))
                    .is_some_and(|first| first > dead_last + 1)
            })
}

#[test]
fn killing_the_leader_loses_no_acknowledged_put() {
    let cycles: usize = std::env::var("LOCKSTEP_KILL_CYCLES")
        .ok()
        .map(|text| text.parse().expect("LOCKSTEP_KILL_CYCLES is a number"))
        .unwrap_or(20);
    let snapshot_entries = SNAPSHOT_ENTRIES.to_string();
    let mut cluster = Cluster::start(
        3,
        "kv",
        &[
            "--snapshot-entries",
            &snapshot_entries,
            "--segment-bytes",
            "65536",
        ],
    );
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(AtomicU64::new(0));
    let failures = Arc::new(Mutex::new(Vec::new()));
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let (addrs, id) = (cluster.client_addrs(), cluster.cluster_id);
            let (stop, acked, failures) = (stop.clone(), acked.clone(), failures.clone());
            std::thread::spawn(move || writer(w, addrs, id, stop, acked, failures))
        })
        .collect();

    let mut snapshot_catch_ups = 0;
    for cycle in 0..cycles {
        let leader = cluster.wait_leader(Duration::from_secs(20));
        wait_progress(
            &cluster,
            &acked,
            acked.load(Ordering::Relaxed),
            200,
            "before the kill",
        );
        cluster.kill9(leader);
        let new_leader = cluster.wait_leader(Duration::from_secs(20));
        assert_ne!(new_leader, leader);
        wait_progress(
            &cluster,
            &acked,
            acked.load(Ordering::Relaxed),
            200,
            "after the kill",
        );
        if cycle % SNAPSHOT_CYCLE_EVERY == SNAPSHOT_CYCLE_EVERY - 1 {
            // Keep the node down until the new leader marked it as needing a snapshot, or no
            // survivor holds the entry after the dead node's end any more.
            let dead_last = last_log_index(&cluster, leader);
            let deadline = Instant::now() + Duration::from_secs(60);
            while !needs_snapshot(&cluster, new_leader, leader, dead_last) {
                if Instant::now() >= deadline {
                    let survivors: Vec<String> = cluster
                        .ids()
                        .into_iter()
                        .filter(|id| *id != leader)
                        .map(|id| {
                            let log_dir = cluster.data_dir(id).join("log");
                            format!(
                                "node {id}: oldest segment {:?}, status {:?}",
                                oldest_segment_index(&log_dir),
                                cluster.status(id).ok()
                            )
                        })
                        .collect();
                    panic!(
                        "cycle {cycle}: node {leader} (log ends at {dead_last}) never needed a \
                         snapshot ({} acks): {survivors:#?}\n{}",
                        acked.load(Ordering::Relaxed),
                        cluster.all_logs()
                    );
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            cluster.restart(leader);
            // It can only catch up by installing a snapshot from the leader.
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                let installed = cluster
                    .status(leader)
                    .ok()
                    .and_then(|status| status["counters"]["snapshots_installed"].as_u64());
                if installed.is_some_and(|count| count >= 1) {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "cycle {cycle}: node {leader} installed no snapshot: {installed:?}\n{}",
                    cluster.all_logs()
                );
                std::thread::sleep(Duration::from_millis(20));
            }
            snapshot_catch_ups += 1;
        } else {
            cluster.restart(leader);
        }
    }
    wait_progress(
        &cluster,
        &acked,
        acked.load(Ordering::Relaxed),
        200,
        "at the end",
    );
    stop.store(true, Ordering::Relaxed);
    let acked_seqs: Vec<Vec<u64>> = writers
        .into_iter()
        .map(|handle| handle.join().expect("writer thread"))
        .collect();
    let failures = failures.lock().unwrap();
    assert!(failures.is_empty(), "bad replies: {failures:?}");
    assert_eq!(snapshot_catch_ups, cycles / SNAPSHOT_CYCLE_EVERY);

    let applied = cluster.wait_converged(Duration::from_secs(60));
    let total: usize = acked_seqs.iter().map(Vec::len).sum();
    assert!(
        applied as usize >= total,
        "applied {applied} < {total} acknowledged puts"
    );
    for id in cluster.ids() {
        check_replica(&cluster, id, &acked_seqs);
    }
    for id in cluster.ids() {
        let status = cluster.stop(id);
        assert!(
            status.success(),
            "node {id} exited with {status} after SIGTERM"
        );
    }
    eprintln!("{cycles} kill cycles ({snapshot_catch_ups} via snapshot), {total} acknowledged puts checked on 3 replicas");
}
