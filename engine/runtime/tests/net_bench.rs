//! Speed of the network stage alone, over real TCP on 127.0.0.1 (no log, no consensus):
//! - pipelined appends from node 1 to nodes 2 and 3, each follower acknowledging every append,
//!   the leader keeping at most `WINDOW` appends in flight per follower; prints entries/s;
//! - a single in-flight heartbeat round trip 1 -> 2 -> 1; prints the median and p99.
//!
//! Small by default so it runs with the normal tests; `LOCKSTEP_NET_BENCH_APPENDS=20000` (and
//! `--nocapture`) for a real measurement.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;
use lockstep::batch::{BatchBuilder, BatchKind};
use lockstep::net::{NetConfig, NetEvent, NetHandle, Transport};
use lockstep::raft::{Message, MessageBody};
use lockstep::types::{LogIndex, NodeId, Term};

const CLUSTER: u64 = 0xBE;
const ENTRIES_PER_APPEND: usize = 1024;
const ENTRY_BYTES: usize = 16;
const WINDOW: u64 = 16;

fn start(id: u64, peers: &[(u64, SocketAddr)]) -> (Transport, Receiver<NetEvent>) {
    let mut config = NetConfig::new(CLUSTER, NodeId(id), "127.0.0.1:0".parse().unwrap());
    config.peers = peers.iter().map(|&(id, addr)| (NodeId(id), addr)).collect();
    let (tx, rx) = crossbeam_channel::bounded(256);
    (Transport::start(config, tx).unwrap(), rx)
}

fn wait_connected(transport: &Transport, links: u64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while transport.stats().peer_connects < links {
        assert!(Instant::now() < deadline, "peers did not connect");
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn message(from: u64, to: u64, body: MessageBody) -> Message {
    Message {
        from: NodeId(from),
        to: NodeId(to),
        term: Term(1),
        body,
    }
}

/// A follower: acknowledges every append with its last index, answers heartbeats.
fn follower(id: u64, events: Receiver<NetEvent>, handle: NetHandle) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        while let Ok(event) = events.recv() {
            let NetEvent::Peer(messages) = event else {
                continue;
            };
            let mut replies = Vec::with_capacity(messages.len());
            for m in messages {
                match m.body {
                    MessageBody::Append { batches, .. } => {
                        let last = batches.last().expect("bench appends carry a batch");
                        replies.push(message(
                            id,
                            1,
                            MessageBody::AppendResponse {
                                success: true,
                                index: last.last_index(),
                                hint_index: LogIndex(0),
                                hint_term: Term(0),
                            },
                        ));
                    }
                    MessageBody::Heartbeat { read_round, .. } => replies.push(message(
                        id,
                        1,
                        MessageBody::HeartbeatResponse { read_round },
                    )),
                    _ => {}
                }
            }
            handle.send(replies);
        }
    })
}

#[test]
fn net_bench() {
    let appends: u64 = std::env::var("LOCKSTEP_NET_BENCH_APPENDS")
        .ok()
        .map_or(300, |v| {
            v.parse().expect("LOCKSTEP_NET_BENCH_APPENDS is a number")
        });
    let placeholder: SocketAddr = "127.0.0.1:9".parse().unwrap();
    let (t3, e3) = start(3, &[(1, placeholder), (2, placeholder)]);
    let (t2, e2) = start(2, &[(1, placeholder), (3, t3.peer_addr())]);
    let (t1, e1) = start(1, &[(2, t2.peer_addr()), (3, t3.peer_addr())]);
    wait_connected(&t1, 2);
    wait_connected(&t2, 2);
    let f2 = follower(2, e2, t2.handle());
    let f3 = follower(3, e3, t3.handle());
    let leader = t1.handle();

    // Pipelined appends: the same batch bytes go to both followers (shared, never copied).
    let entry = [0x5Au8; ENTRY_BYTES];
    let started = Instant::now();
    let mut sent = 0u64; // appends sent to each follower
    let mut acked = [0u64; 2];
    while acked.iter().any(|&a| a < appends) {
        while sent < appends && sent < acked[0].min(acked[1]) + WINDOW {
            let first = sent * ENTRIES_PER_APPEND as u64 + 1;
            let mut builder = BatchBuilder::with_capacity(ENTRIES_PER_APPEND * (ENTRY_BYTES + 4));
            for _ in 0..ENTRIES_PER_APPEND {
                builder.push(&entry);
            }
            let batch = builder.finish(Term(1), LogIndex(first), BatchKind::Normal);
            let body = |to| {
                message(
                    1,
                    to,
                    MessageBody::Append {
                        prev_index: LogIndex(first - 1),
                        prev_term: Term(1),
                        batches: vec![batch.clone()],
                        commit: LogIndex(first - 1),
                    },
                )
            };
            leader.send(vec![body(2), body(3)]);
            sent += 1;
        }
        let NetEvent::Peer(replies) = e1.recv_timeout(Duration::from_secs(10)).unwrap() else {
            panic!("unexpected event");
        };
        for reply in replies {
            if let MessageBody::AppendResponse { index, .. } = reply.body {
                let slot = &mut acked[reply.from.get() as usize - 2];
                *slot = (*slot).max(index.get() / ENTRIES_PER_APPEND as u64);
            }
        }
    }
    let elapsed = started.elapsed();
    let entries = appends * ENTRIES_PER_APPEND as u64;
    let stats = t1.stats();
    println!(
        "net_bench appends: {appends} x {ENTRIES_PER_APPEND} entries of {ENTRY_BYTES} B to 2 \
         followers, window {WINDOW}: {:.0} entries/s replicated to both, {:.1} MB/s out, \
         {} B/write, {} dropped",
        entries as f64 / elapsed.as_secs_f64(),
        stats.bytes_out as f64 / elapsed.as_secs_f64() / 1e6,
        stats.bytes_out / stats.writes.max(1),
        stats.messages_dropped
    );
    assert_eq!(stats.messages_dropped, 0);

    // Single in-flight round trips.
    let rounds = (appends * 3).min(20_000);
    let mut rtts_us = Vec::with_capacity(rounds as usize);
    for round in 0..rounds {
        let at = Instant::now();
        leader.send(vec![message(
            1,
            2,
            MessageBody::Heartbeat {
                commit: LogIndex(0),
                read_round: round,
            },
        )]);
        loop {
            let NetEvent::Peer(replies) = e1.recv_timeout(Duration::from_secs(10)).unwrap() else {
                panic!("unexpected event");
            };
            let answered = |m: &Message| match m.body {
                MessageBody::HeartbeatResponse { read_round } => read_round == round,
                _ => false,
            };
            if replies.iter().any(answered) {
                break;
            }
        }
        rtts_us.push(at.elapsed().as_secs_f64() * 1e6);
    }
    rtts_us.sort_by(f64::total_cmp);
    println!(
        "net_bench round trip 1 -> 2 -> 1 ({rounds} rounds): median {:.0} us, p99 {:.0} us",
        rtts_us[rtts_us.len() / 2],
        rtts_us[rtts_us.len() * 99 / 100]
    );

    t1.shutdown();
    t2.shutdown();
    t3.shutdown();
    f2.join().unwrap();
    f3.join().unwrap();
}
