//! The network stage over real TCP on 127.0.0.1: peers exchanging consensus messages (large
//! appends intact and in order), refused handshakes, unlisted nodes accepted, the larger id
//! dialing a smaller one that does not know it, duplicate connections resolved, bad input on
//! peer and client ports, a restarted peer being re-dialed, inbound back-pressure, and the
//! client protocol end to end.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use crossbeam_channel::{Receiver, Sender};
use lockstep::batch::{Batch, BatchBuilder, BatchKind};
use lockstep::net::frame::{encode_frame, read_frame, FrameType};
use lockstep::net::{
    ClientHello, ClientReply, ClientRequest, InlineTurn, NetConfig, NetEvent, NetSink, NetStats,
    PeerSecret, Transport,
};
use lockstep::raft::{Message, MessageBody};
use lockstep::types::{LogIndex, NodeId, Term};

const CLUSTER: u64 = 0xC1;
const WAIT: Duration = Duration::from_secs(10);

fn local() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

/// A config for `id`; `peers` lists every other node, with a placeholder address for the ones
/// the test has this node not dial (a larger id dials a smaller one only once they have gone
/// `reverse_dial_after`, 3 s, without a connection; a dial of the placeholder fails).
fn config(id: u64, cluster: u64, peers: &[(u64, SocketAddr)]) -> NetConfig {
    let mut config = NetConfig::new(cluster, NodeId(id), local());
    config.peers = peers.iter().map(|&(id, addr)| (NodeId(id), addr)).collect();
    config.reconnect_min = Duration::from_millis(5);
    config.reconnect_max = Duration::from_millis(100);
    config.max_frame_bytes = 4 << 20;
    config.socket_buffer_bytes = 1 << 20;
    config
}

struct Node {
    transport: Transport,
    events: Receiver<NetEvent>,
}

fn start(config: NetConfig, capacity: usize) -> Node {
    let (tx, rx): (Sender<NetEvent>, Receiver<NetEvent>) = crossbeam_channel::bounded(capacity);
    Node {
        transport: Transport::start(config, tx).unwrap(),
        events: rx,
    }
}

fn wait_for(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn stats(node: &Node) -> NetStats {
    node.transport.stats()
}

/// A batch of `entries` entries of 16 bytes, tagged with `seed`, starting at `first`.
fn batch(term: u64, first: u64, entries: usize, seed: u8) -> Batch {
    let mut builder = BatchBuilder::with_capacity(entries * 20);
    for i in 0..entries {
        let mut entry = [seed; 16];
        entry[..8].copy_from_slice(&(first + i as u64).to_le_bytes());
        builder.push(&entry);
    }
    builder.finish(Term(term), LogIndex(first), BatchKind::Normal)
}

fn append(from: u64, to: u64, prev: u64, batches: Vec<Batch>) -> Message {
    Message {
        from: NodeId(from),
        to: NodeId(to),
        term: Term(3),
        body: MessageBody::Append {
            prev_index: LogIndex(prev),
            prev_term: Term(3),
            batches,
            commit: LogIndex(prev),
        },
    }
}

fn heartbeat(from: u64, to: u64, round: u64) -> Message {
    Message {
        from: NodeId(from),
        to: NodeId(to),
        term: Term(3),
        body: MessageBody::Heartbeat {
            commit: LogIndex(0),
            read_round: round,
        },
    }
}

/// Appends 1 -> `to` covering indexes 1..: message k carries 1 or 2 batches, some large
/// (sent without copying), some small (packed).
fn append_stream(to: u64, count: usize) -> Vec<Message> {
    let mut next = 1u64;
    (0..count)
        .map(|k| {
            let sizes: &[usize] = if k % 3 == 0 { &[1000, 7] } else { &[3] };
            let batches: Vec<Batch> = sizes
                .iter()
                .map(|&entries| {
                    let b = batch(3, next, entries, k as u8);
                    next += entries as u64;
                    b
                })
                .collect();
            let prev = batches[0].first_index().get() - 1;
            append(1, to, prev, batches)
        })
        .collect()
}

/// Collects `count` consensus messages from `node`.
fn collect_messages(node: &Node, count: usize) -> Vec<Message> {
    let mut got = Vec::new();
    let deadline = Instant::now() + WAIT;
    while got.len() < count {
        let left = deadline.saturating_duration_since(Instant::now());
        match node.events.recv_timeout(left) {
            Ok(NetEvent::Peer(messages)) => got.extend(messages),
            Ok(other) => panic!("unexpected event {other:?}"),
            Err(err) => panic!("got {} of {count} messages: {err}", got.len()),
        }
    }
    assert_eq!(got.len(), count);
    got
}

/// Three nodes: 1 dials 2 and 3, 2 dials 3. Returns them connected.
fn three_nodes() -> (Node, Node, Node) {
    let placeholder: SocketAddr = "127.0.0.1:9".parse().unwrap();
    let n3 = start(
        config(3, CLUSTER, &[(1, placeholder), (2, placeholder)]),
        64,
    );
    let a3 = n3.transport.peer_addr();
    let n2 = start(config(2, CLUSTER, &[(1, placeholder), (3, a3)]), 64);
    let a2 = n2.transport.peer_addr();
    let n1 = start(config(1, CLUSTER, &[(2, a2), (3, a3)]), 64);
    wait_for("the three links", || {
        stats(&n1).peer_connects == 2
            && stats(&n2).peer_connects == 2
            && stats(&n3).peer_connects == 2
    });
    (n1, n2, n3)
}

#[test]
fn three_transports_exchange_large_appends_in_order() {
    let (n1, n2, n3) = three_nodes();
    let to2 = append_stream(2, 300);
    let to3 = append_stream(3, 300);
    let handle = n1.transport.handle();
    // Interleave, several messages per send call.
    for (a, b) in to2.chunks(4).zip(to3.chunks(4)) {
        handle.send(a.iter().chain(b).cloned().collect());
    }
    assert_eq!(collect_messages(&n2, to2.len()), to2);
    assert_eq!(collect_messages(&n3, to3.len()), to3);

    // And back, between the other pairs.
    n2.transport
        .handle()
        .send(vec![heartbeat(2, 1, 7), heartbeat(2, 3, 8)]);
    n3.transport.handle().send(vec![heartbeat(3, 1, 9)]);
    let mut at1 = collect_messages(&n1, 2);
    at1.sort_by_key(|m| m.from);
    assert_eq!(at1, vec![heartbeat(2, 1, 7), heartbeat(3, 1, 9)]);
    assert_eq!(collect_messages(&n3, 1), vec![heartbeat(2, 3, 8)]);

    wait_for("the sender's counters", || stats(&n1).frames_out >= 600);
    let s1 = stats(&n1);
    assert!(
        s1.writes > 0 && s1.bytes_out > 0 && s1.frames_out >= 600,
        "{s1:?}"
    );
    assert_eq!(s1.messages_dropped, 0, "{s1:?}");
    assert_eq!(stats(&n2).bad_frames, 0);
    for node in [n1, n2, n3] {
        node.transport.shutdown();
    }
}

#[test]
fn full_events_channel_pauses_reading_without_loss() {
    let placeholder: SocketAddr = "127.0.0.1:9".parse().unwrap();
    // Node 2 delivers into a channel of one event and is not read for a while.
    let n2 = start(config(2, CLUSTER, &[(1, placeholder)]), 1);
    let n1 = start(config(1, CLUSTER, &[(2, n2.transport.peer_addr())]), 64);
    wait_for("the link", || stats(&n2).peer_connects == 1);
    let stream = append_stream(2, 200);
    for message in &stream {
        n1.transport.handle().send(vec![message.clone()]);
    }
    wait_for("back-pressure", || stats(&n2).events_blocked > 0);
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(collect_messages(&n2, stream.len()), stream);
    assert_eq!(stats(&n1).messages_dropped, 0);
}

/// Node 1 (an events channel of `capacity`) linked to node 2, both with 4 KiB socket buffers,
/// node 2 with an events channel of one: node 2 stalls until read, so node 1's writes spill.
fn spilling_pair(capacity: usize) -> (Node, Node) {
    let placeholder: SocketAddr = "127.0.0.1:9".parse().unwrap();
    let mut c2 = config(2, CLUSTER, &[(1, placeholder)]);
    c2.socket_buffer_bytes = 4096;
    let n2 = start(c2, 1);
    let mut c1 = config(1, CLUSTER, &[(2, n2.transport.peer_addr())]);
    c1.socket_buffer_bytes = 4096;
    let n1 = start(c1, capacity);
    wait_for("the link", || stats(&n2).peer_connects == 1);
    (n1, n2)
}

/// Two threads send to one peer at once, each mixing direct writes into the socket and queued
/// frames (small socket buffers and a receiver that stalls make writes spill): every message
/// arrives intact, and each thread's messages in the order it sent them.
#[test]
fn concurrent_senders_keep_their_order_through_spills() {
    let (n1, n2) = spilling_pair(64);
    let appends = append_stream(2, 300);
    let beats: Vec<Message> = (0..300).map(|round| heartbeat(1, 2, round)).collect();
    let senders: Vec<_> = [appends.clone(), beats.clone()]
        .into_iter()
        .map(|messages| {
            let handle = n1.transport.handle();
            std::thread::spawn(move || {
                for chunk in messages.chunks(3) {
                    handle.send(chunk.to_vec());
                }
            })
        })
        .collect();
    for sender in senders {
        sender.join().unwrap();
    }
    let got = collect_messages(&n2, appends.len() + beats.len());
    let (got_appends, got_beats): (Vec<Message>, Vec<Message>) = got
        .into_iter()
        .partition(|message| matches!(message.body, MessageBody::Append { .. }));
    assert_eq!(got_appends, appends);
    assert_eq!(got_beats, beats);
    assert_eq!(stats(&n1).messages_dropped, 0);
    assert_eq!(stats(&n2).bad_frames, 0);
}

/// An inline turn that takes every other event it is offered and answers each it takes with an
/// append and a heartbeat numbered from `sequence`, which a handle's sender shares.
struct Alternate {
    take: bool,
    sequence: Arc<Mutex<u64>>,
    taken: Sender<Vec<Message>>,
}

impl InlineTurn for Alternate {
    fn offer(&mut self, event: NetEvent, net: &mut dyn NetSink) -> Option<NetEvent> {
        self.take = !self.take;
        if !self.take {
            return Some(event);
        }
        let NetEvent::Peer(messages) = event else {
            panic!("unexpected event {event:?}");
        };
        let mut next = self.sequence.lock().unwrap();
        net.send(vec![
            append(1, 2, 0, vec![batch(3, 1, 100, 1)]),
            heartbeat(1, 2, *next),
        ]);
        *next += 1;
        drop(next);
        self.taken.send(messages).unwrap();
        None
    }
}

/// The network thread's inline turn and another thread both send to one peer, through small
/// socket buffers to a receiver that stalls (so writes spill and queue): the peer gets every
/// message, in the order the two handed them over. The events the turn gives back come out of
/// the events channel, and with the ones it took they are every event, in order.
#[test]
fn an_inline_turn_keeps_order_with_the_handle_and_gives_events_back() {
    let (n1, n2) = spilling_pair(1024);
    let sequence = Arc::new(Mutex::new(0));
    let (taken_tx, taken) = crossbeam_channel::unbounded();
    n1.transport.set_inline_turn(Box::new(Alternate {
        take: false,
        sequence: Arc::clone(&sequence),
        taken: taken_tx,
    }));
    const ROUNDS: u64 = 200;
    let handle = n1.transport.handle();
    let shared = Arc::clone(&sequence);
    let sender = std::thread::spawn(move || {
        for _ in 0..ROUNDS {
            let mut next = shared.lock().unwrap();
            handle.send(vec![
                append(1, 2, 0, vec![batch(3, 1, 100, 2)]),
                heartbeat(1, 2, *next),
            ]);
            *next += 1;
        }
    });
    // Node 2 sends numbered heartbeats to node 1, whose inline turn sees them first.
    let beats = n2.transport.handle();
    for round in 0..ROUNDS {
        beats.send(vec![heartbeat(2, 1, round)]);
        if round % 8 == 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    sender.join().unwrap();
    let rounds_of = |messages: &[Message]| -> Vec<u64> {
        messages
            .iter()
            .map(|message| match message.body {
                MessageBody::Heartbeat { read_round, .. } => read_round,
                ref other => panic!("unexpected message {other:?}"),
            })
            .collect()
    };
    let mut given_back = Vec::new();
    let mut took = Vec::new();
    let mut took_events = 0;
    wait_for("every heartbeat at node 1", || {
        given_back.extend(n1.events.try_iter().flat_map(|event| match event {
            NetEvent::Peer(messages) => rounds_of(&messages),
            other => panic!("unexpected event {other:?}"),
        }));
        for messages in taken.try_iter() {
            took_events += 1;
            took.extend(rounds_of(&messages));
        }
        given_back.len() + took.len() == ROUNDS as usize
    });
    assert!(
        !took.is_empty() && !given_back.is_empty(),
        "{took:?} {given_back:?}"
    );
    for rounds in [&took, &given_back] {
        assert!(
            rounds.windows(2).all(|pair| pair[0] < pair[1]),
            "{rounds:?}"
        );
    }
    let mut all: Vec<u64> = took.iter().chain(&given_back).copied().collect();
    all.sort_unstable();
    assert_eq!(all, (0..ROUNDS).collect::<Vec<_>>());
    // Node 2 gets every append and heartbeat node 1 sent, the heartbeats in sequence order.
    let sent = ROUNDS as usize + took_events;
    let got = collect_messages(&n2, 2 * sent);
    let numbers: Vec<u64> = got
        .iter()
        .filter_map(|message| match message.body {
            MessageBody::Heartbeat { read_round, .. } => Some(read_round),
            _ => None,
        })
        .collect();
    assert_eq!(numbers, (0..sent as u64).collect::<Vec<_>>());
    assert_eq!(stats(&n1).messages_dropped, 0);
    assert_eq!(stats(&n2).bad_frames, 0);
}

#[test]
fn wrong_cluster_id_is_refused_on_both_sides() {
    let n2 = start(config(2, 8, &[(1, "127.0.0.1:9".parse().unwrap())]), 8);
    let n1 = start(config(1, 7, &[(2, n2.transport.peer_addr())]), 8);
    wait_for("refusals on both sides", || {
        stats(&n1).handshakes_refused >= 1 && stats(&n2).handshakes_refused >= 1
    });
    assert_eq!(stats(&n1).peer_connects, 0);
    assert_eq!(stats(&n2).peer_connects, 0);
    // Messages to a peer that is not connected are dropped and counted.
    n1.transport.handle().send(vec![heartbeat(1, 2, 1)]);
    wait_for("the drop", || stats(&n1).messages_dropped == 1);
}

/// A raw peer connection to `addr` that has sent a hello claiming `id` (no secret).
fn raw_peer(addr: SocketAddr, id: u64) -> TcpStream {
    let mut raw = TcpStream::connect(addr).unwrap();
    raw.set_read_timeout(Some(WAIT)).unwrap();
    let mut body = Vec::new();
    lockstep::net::PeerHello::new(CLUSTER, NodeId(id), false, [0; 32]).encode(&mut body);
    send_frame(&mut raw, FrameType::PeerHello, &body);
    raw
}

/// Reads the next frame on a raw peer connection, which must be of type `ty`.
fn read_peer_frame(raw: &mut TcpStream, ty: FrameType) -> Vec<u8> {
    let mut body = Vec::new();
    assert_eq!(read_frame(raw, 4 << 20, &mut body).unwrap(), ty);
    body
}

#[test]
fn own_and_reserved_node_ids_are_refused() {
    let n2 = start(
        config(2, CLUSTER, &[(1, "127.0.0.1:9".parse().unwrap())]),
        8,
    );
    let n1 = start(config(1, CLUSTER, &[(2, n2.transport.peer_addr())]), 8);
    for claimed in [2, 0] {
        let mut raw = raw_peer(n2.transport.peer_addr(), claimed);
        assert_closed_after_hello(&mut raw);
    }
    wait_for("the refusals", || {
        stats(&n2).peer_refusals.unknown_node == 2
    });
    // The legitimate node 1 still connects.
    wait_for("node 1", || stats(&n1).peer_connects == 1);
    assert_eq!(stats(&n2).handshakes_refused, 2);
}

#[test]
fn an_unlisted_node_is_accepted_answered_and_forgotten_when_it_disconnects() {
    // Node 5 is not in node 2's peer list.
    let n2 = start(
        config(2, CLUSTER, &[(1, "127.0.0.1:9".parse().unwrap())]),
        8,
    );
    for round in 0..2 {
        let mut raw = raw_peer(n2.transport.peer_addr(), 5);
        let hello =
            lockstep::net::PeerHello::decode(&read_peer_frame(&mut raw, FrameType::PeerHello))
                .unwrap();
        assert_eq!(hello.node_id, NodeId(2));
        let mut body = Vec::new();
        lockstep::net::encode_message(&heartbeat(5, 2, round), &mut body);
        send_frame(&mut raw, FrameType::Raft, &body);
        assert_eq!(collect_messages(&n2, 1), vec![heartbeat(5, 2, round)]);
        n2.transport
            .handle()
            .send(vec![heartbeat(2, 5, round + 10)]);
        let body = read_peer_frame(&mut raw, FrameType::Raft);
        let reply = lockstep::net::decode_message(&Bytes::from(body)).unwrap();
        assert_eq!(reply, heartbeat(2, 5, round + 10));
        drop(raw);
        wait_for("the loss", || stats(&n2).peer_disconnects == round + 1);
        // Forgotten: nothing is sent to node 5 any more, and nothing dials it.
        let dropped = stats(&n2).messages_dropped;
        n2.transport
            .handle()
            .send(vec![heartbeat(2, 5, round + 20)]);
        wait_for("the drop", || stats(&n2).messages_dropped == dropped + 1);
    }
    let s2 = stats(&n2);
    assert_eq!((s2.peer_connects, s2.handshakes_refused), (2, 0), "{s2:?}");
}

/// Node 1 does not know node 2; node 2 knows node 1 and dials it once they have gone
/// `reverse_dial_after` without a connection. Messages then flow both ways.
#[test]
fn a_larger_id_dials_a_smaller_one_that_does_not_know_it() {
    let n1 = start(config(1, CLUSTER, &[]), 8);
    let mut c2 = config(2, CLUSTER, &[(1, n1.transport.peer_addr())]);
    c2.reverse_dial_after = Duration::from_millis(200);
    let started = Instant::now();
    let n2 = start(c2, 8);
    wait_for("the reverse dial", || {
        stats(&n1).peer_connects == 1 && stats(&n2).peer_connects == 1
    });
    assert!(started.elapsed() >= Duration::from_millis(200));
    n2.transport.handle().send(vec![heartbeat(2, 1, 1)]);
    assert_eq!(collect_messages(&n1, 1), vec![heartbeat(2, 1, 1)]);
    let stream = append_stream(2, 50)
        .into_iter()
        .map(|mut message| {
            message.from = NodeId(1);
            message
        })
        .collect::<Vec<_>>();
    n1.transport.handle().send(stream.clone());
    assert_eq!(collect_messages(&n2, stream.len()), stream);
    for node in [&n1, &n2] {
        let s = stats(node);
        assert_eq!((s.handshakes_refused, s.messages_dropped), (0, 0), "{s:?}");
    }
}

/// Node 2 reverse-dials node 1 while node 1's own dial hangs (a relay the test holds back);
/// once the relay lets it through, both ends keep that connection (the smaller id dialed it),
/// close node 2's, and messages keep flowing in order.
#[test]
fn when_both_ends_dial_the_connection_the_smaller_id_dialed_stays() {
    let relay = std::net::TcpListener::bind(local()).unwrap();
    let n1 = start(config(1, CLUSTER, &[(2, relay.local_addr().unwrap())]), 64);
    let mut c2 = config(2, CLUSTER, &[(1, n1.transport.peer_addr())]);
    c2.reverse_dial_after = Duration::from_millis(50);
    let n2 = start(c2, 64);
    let (held, _) = relay.accept().unwrap();
    wait_for("node 2's dial", || {
        stats(&n1).peer_connects == 1 && stats(&n2).peer_connects == 1
    });
    n2.transport.handle().send(vec![heartbeat(2, 1, 1)]);
    assert_eq!(collect_messages(&n1, 1), vec![heartbeat(2, 1, 1)]);

    // Let node 1's dial through to node 2.
    let upstream = TcpStream::connect(n2.transport.peer_addr()).unwrap();
    let relays: Vec<_> = [
        (held.try_clone().unwrap(), upstream.try_clone().unwrap()),
        (upstream, held),
    ]
    .into_iter()
    .map(|(mut from, mut to)| {
        std::thread::spawn(move || {
            let _ = std::io::copy(&mut from, &mut to);
            let _ = to.shutdown(std::net::Shutdown::Write);
        })
    })
    .collect();
    wait_for("one connection left at both ends", || {
        [&n1, &n2].iter().all(|node| {
            let s = stats(node);
            s.peer_connects == 2 && s.peer_disconnects == 1
        })
    });
    let to2: Vec<Message> = append_stream(2, 100);
    let to1: Vec<Message> = (0..100).map(|round| heartbeat(2, 1, round)).collect();
    for (a, b) in to2.chunks(7).zip(to1.chunks(7)) {
        n1.transport.handle().send(a.to_vec());
        n2.transport.handle().send(b.to_vec());
    }
    assert_eq!(collect_messages(&n2, to2.len()), to2);
    assert_eq!(collect_messages(&n1, to1.len()), to1);
    for node in [&n1, &n2] {
        let s = stats(node);
        assert_eq!((s.peer_connects, s.peer_disconnects), (2, 1), "{s:?}");
        assert_eq!((s.handshakes_refused, s.messages_dropped), (0, 0), "{s:?}");
    }
    // The relayed connection is the one kept (still open); stopping node 2 ends it.
    assert!(relays.iter().all(|relay| !relay.is_finished()));
    n2.transport.shutdown();
    for relay in relays {
        relay.join().unwrap();
    }
}

fn secret(byte: u8) -> PeerSecret {
    PeerSecret::new(vec![byte; 32]).unwrap()
}

/// Nodes 1 and 2 with the given secrets; node 1 dials node 2.
fn pair_with_secrets(secret1: Option<PeerSecret>, secret2: Option<PeerSecret>) -> (Node, Node) {
    let mut config2 = config(2, CLUSTER, &[(1, "127.0.0.1:9".parse().unwrap())]);
    config2.peer_secret = secret2;
    let n2 = start(config2, 8);
    let mut config1 = config(1, CLUSTER, &[(2, n2.transport.peer_addr())]);
    config1.peer_secret = secret1;
    (start(config1, 8), n2)
}

#[test]
fn peers_sharing_a_secret_connect_and_exchange_messages() {
    let (n1, n2) = pair_with_secrets(Some(secret(1)), Some(secret(1)));
    wait_for("both ends connected", || {
        stats(&n1).peer_connects == 1 && stats(&n2).peer_connects == 1
    });
    n1.transport.handle().send(vec![heartbeat(1, 2, 1)]);
    assert_eq!(collect_messages(&n2, 1), vec![heartbeat(1, 2, 1)]);
    assert_eq!(stats(&n1).handshakes_refused, 0);
    assert_eq!(stats(&n2).handshakes_refused, 0);
}

#[test]
fn another_secret_is_refused_on_both_sides() {
    let (n1, n2) = pair_with_secrets(Some(secret(1)), Some(secret(2)));
    wait_for("bad proofs on both sides", || {
        stats(&n1).peer_refusals.bad_proof >= 1 && stats(&n2).peer_refusals.bad_proof >= 1
    });
    // Node 1 saw a valid hello, then the close; it backs off instead of hammering node 2.
    std::thread::sleep(Duration::from_millis(100));
    let dials = stats(&n2).handshakes_refused;
    assert!(
        dials <= 7,
        "{dials} dials in ~100 ms with backoff 5..100 ms"
    );
    assert_eq!(stats(&n1).peer_connects, 0);
    assert_eq!(stats(&n2).peer_connects, 0);
}

#[test]
fn an_unlisted_node_must_still_prove_the_secret() {
    // Node 1 is not in node 2's peer list; its proof (another secret) is refused all the same.
    let mut config2 = config(2, CLUSTER, &[]);
    config2.peer_secret = Some(secret(2));
    let n2 = start(config2, 8);
    let mut config1 = config(1, CLUSTER, &[(2, n2.transport.peer_addr())]);
    config1.peer_secret = Some(secret(1));
    let n1 = start(config1, 8);
    wait_for("bad proofs on both sides", || {
        stats(&n1).peer_refusals.bad_proof >= 1 && stats(&n2).peer_refusals.bad_proof >= 1
    });
    assert_eq!(stats(&n2).peer_connects, 0);
    assert_eq!(stats(&n2).peer_refusals.unknown_node, 0);
}

#[test]
fn a_secret_on_one_side_only_is_refused_on_both_sides() {
    for (secret1, secret2) in [(Some(secret(1)), None), (None, Some(secret(1)))] {
        let with_secret_dials = secret1.is_some();
        let (n1, n2) = pair_with_secrets(secret1, secret2);
        let (with, without) = if with_secret_dials {
            (&n1, &n2)
        } else {
            (&n2, &n1)
        };
        wait_for("refusals on both sides", || {
            stats(with).peer_refusals.no_proof >= 1 && stats(without).peer_refusals.no_secret >= 1
        });
        assert_eq!(stats(&n1).peer_connects, 0);
        assert_eq!(stats(&n2).peer_connects, 0);
    }
}

#[test]
fn a_consensus_message_in_place_of_the_proof_is_refused_unread() {
    // Node 2 requires a secret; a raw dialer claiming to be node 1 sends a valid hello and then
    // a heartbeat instead of its proof: refused, and the heartbeat never reaches the events.
    let mut config2 = config(2, CLUSTER, &[(1, "127.0.0.1:9".parse().unwrap())]);
    config2.peer_secret = Some(secret(1));
    let n2 = start(config2, 8);
    let mut raw = TcpStream::connect(n2.transport.peer_addr()).unwrap();
    let mut body = Vec::new();
    lockstep::net::PeerHello::new(CLUSTER, NodeId(1), true, [7; 32]).encode(&mut body);
    let mut frames = Vec::new();
    encode_frame(FrameType::PeerHello, &body, &mut frames);
    let mut message = Vec::new();
    lockstep::net::encode_message(&heartbeat(1, 2, 1), &mut message);
    encode_frame(FrameType::Raft, &message, &mut frames);
    raw.write_all(&frames).unwrap();
    assert_closed_after_hello(&mut raw);
    wait_for("the refusal", || stats(&n2).peer_refusals.no_proof == 1);
    assert_eq!(stats(&n2).peer_connects, 0);
    assert!(n2.events.try_recv().is_err(), "a message was delivered");
}

/// Reads until the other end closes; a hello frame may come first.
fn assert_closed_after_hello(stream: &mut TcpStream) {
    stream.set_read_timeout(Some(WAIT)).unwrap();
    let mut sink = [0u8; 4096];
    loop {
        match stream.read(&mut sink) {
            Ok(0) => return,
            Ok(_) => continue,
            Err(err) if err.kind() == std::io::ErrorKind::ConnectionReset => return,
            Err(err) => panic!("connection not closed: {err}"),
        }
    }
}

/// Three kinds of bad input, as raw bytes.
fn bad_inputs() -> Vec<(&'static str, Vec<u8>)> {
    let mut bad_crc = Vec::new();
    encode_frame(FrameType::PeerHello, b"0123456789abcdefgh", &mut bad_crc);
    let last = bad_crc.len() - 1;
    bad_crc[last] ^= 0xFF;
    let mut oversized = Vec::new();
    encode_frame(FrameType::Raft, b"x", &mut oversized);
    oversized[4..8].copy_from_slice(&(1u32 << 30).to_le_bytes());
    vec![
        // Not a frame on the peer port; malformed RESP on the client port.
        (
            "garbage",
            b"*3\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
        ),
        ("oversized", oversized),
        ("bad crc", bad_crc),
    ]
}

#[test]
fn bad_input_closes_only_that_connection() {
    let (n1, n2, n3) = three_nodes();
    let mut client_config = config(9, CLUSTER, &[]);
    client_config.client_listen = Some(local());
    let server = start(client_config, 8);
    let client_addr = server.transport.client_addr().unwrap();

    for (round, (what, bytes)) in bad_inputs().into_iter().enumerate() {
        let before = stats(&n2).bad_frames;
        let mut raw = TcpStream::connect(n2.transport.peer_addr()).unwrap();
        raw.write_all(&bytes).unwrap();
        assert_closed_after_hello(&mut raw);
        wait_for(what, || stats(&n2).bad_frames == before + 1);

        let before = stats(&server).bad_frames;
        let mut raw = TcpStream::connect(client_addr).unwrap();
        raw.write_all(&bytes).unwrap();
        assert_closed_after_hello(&mut raw);
        wait_for(what, || stats(&server).bad_frames == before + 1);

        // The peers keep exchanging messages.
        n1.transport
            .handle()
            .send(vec![heartbeat(1, 2, round as u64)]);
        assert_eq!(
            collect_messages(&n2, 1),
            vec![heartbeat(1, 2, round as u64)]
        );
        n3.transport
            .handle()
            .send(vec![heartbeat(3, 2, round as u64)]);
        assert_eq!(
            collect_messages(&n2, 1),
            vec![heartbeat(3, 2, round as u64)]
        );
    }
    assert_eq!(stats(&n2).peer_disconnects, 0);
    assert!(
        server.events.try_recv().is_err(),
        "bad clients produce no events"
    );
}

#[test]
fn restarted_peer_is_redialed() {
    let n2 = start(
        config(2, CLUSTER, &[(1, "127.0.0.1:9".parse().unwrap())]),
        8,
    );
    let a2 = n2.transport.peer_addr();
    let n1 = start(config(1, CLUSTER, &[(2, a2)]), 8);
    wait_for("first link", || stats(&n1).peer_connects == 1);
    n2.transport.shutdown();
    wait_for("the loss", || stats(&n1).peer_disconnects == 1);

    let mut again = config(2, CLUSTER, &[(1, "127.0.0.1:9".parse().unwrap())]);
    again.peer_listen = a2;
    let n2 = start(again, 8);
    wait_for("the re-dial", || stats(&n1).peer_connects == 2);
    n1.transport.handle().send(vec![heartbeat(1, 2, 42)]);
    assert_eq!(collect_messages(&n2, 1), vec![heartbeat(1, 2, 42)]);
}

fn send_frame(stream: &mut TcpStream, ty: FrameType, body: &[u8]) {
    let mut frame = Vec::new();
    encode_frame(ty, body, &mut frame);
    stream.write_all(&frame).unwrap();
}

fn read_reply(stream: &mut TcpStream) -> ClientReply {
    let mut body = Vec::new();
    let ty = read_frame(stream, 1 << 20, &mut body).unwrap();
    assert_eq!(ty, FrameType::ClientReply);
    ClientReply::decode(&body).unwrap()
}

/// Two threads reply at once to one native client (as apply and consensus do), with small
/// socket buffers and a client that reads only after they finished, so direct writes spill:
/// every reply arrives whole, each thread's in the order it sent them. A client whose replies
/// all went out directly then counts as idle (it awaits nothing) and the idle timeout closes it.
#[test]
fn concurrent_repliers_keep_their_order_and_the_client_then_counts_as_idle() {
    let mut server_config = config(1, CLUSTER, &[]);
    server_config.client_listen = Some(local());
    server_config.socket_buffer_bytes = 4096;
    server_config.client_limits.idle_timeout = Some(Duration::from_millis(300));
    let server = start(server_config, 8);
    let mut client = TcpStream::connect(server.transport.client_addr().unwrap()).unwrap();
    client.set_read_timeout(Some(WAIT)).unwrap();
    let mut body = Vec::new();
    ClientHello::new(CLUSTER).encode(&mut body);
    send_frame(&mut client, FrameType::ClientHello, &body);
    assert_eq!(read_reply(&mut client), ClientReply::Ok { req: 0 });
    const PER_THREAD: u64 = 200;
    let mut wire = Vec::new();
    for req in 0..2 * PER_THREAD {
        let mut body = Vec::new();
        ClientRequest::Status { req }.encode(&mut body);
        encode_frame(FrameType::ClientRequest, &body, &mut wire);
    }
    client.write_all(&wire).unwrap();
    let mut conn = None;
    let mut requests = 0;
    while requests < 2 * PER_THREAD {
        match server.events.recv_timeout(WAIT).unwrap() {
            NetEvent::Client {
                conn: c,
                requests: got,
            } => {
                conn = Some(c);
                requests += got.len() as u64;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    let conn = conn.unwrap();
    let reply = |req: u64| ClientReply::Applied {
        req,
        index: LogIndex(req),
        result: Bytes::from(vec![req as u8; 1500]),
    };
    let repliers: Vec<_> = [0, 1]
        .into_iter()
        .map(|parity| {
            let handle = server.transport.handle();
            std::thread::spawn(move || {
                let mine: Vec<u64> = (0..2 * PER_THREAD).filter(|r| r % 2 == parity).collect();
                for chunk in mine.chunks(3) {
                    handle.reply(chunk.iter().map(|&req| (conn, reply(req))).collect());
                }
            })
        })
        .collect();
    for replier in repliers {
        replier.join().unwrap();
    }
    let mut seen = [Vec::new(), Vec::new()];
    for _ in 0..2 * PER_THREAD {
        let got = read_reply(&mut client);
        let ClientReply::Applied { req, .. } = got else {
            panic!("unexpected {got:?}")
        };
        assert_eq!(got, reply(req), "reply {req} intact");
        seen[(req % 2) as usize].push(req);
    }
    for (parity, seen) in seen.iter().enumerate() {
        let sent: Vec<u64> = (0..2 * PER_THREAD)
            .filter(|r| r % 2 == parity as u64)
            .collect();
        assert_eq!(seen, &sent, "replier {parity} out of order");
    }
    wait_for("the idle client to be closed", || {
        stats(&server).clients_closed_idle == 1
    });
}

#[test]
fn client_hello_request_reply_round_trip() {
    let mut server_config = config(1, CLUSTER, &[]);
    server_config.client_listen = Some(local());
    let server = start(server_config, 8);
    let addr = server.transport.client_addr().unwrap();

    let mut client = TcpStream::connect(addr).unwrap();
    client.set_read_timeout(Some(WAIT)).unwrap();
    let mut body = Vec::new();
    ClientHello::new(CLUSTER).encode(&mut body);
    send_frame(&mut client, FrameType::ClientHello, &body);
    assert_eq!(read_reply(&mut client), ClientReply::Ok { req: 0 });

    // Three requests in one write.
    let requests = vec![
        ClientRequest::Propose {
            req: 1,
            command: Bytes::from_static(b"set x 1"),
        },
        ClientRequest::Read {
            req: 2,
            query: Bytes::from_static(b"get x"),
            linearizable: true,
        },
        ClientRequest::Status { req: 3 },
    ];
    let mut wire = Vec::new();
    for request in &requests {
        let mut body = Vec::new();
        request.encode(&mut body);
        encode_frame(FrameType::ClientRequest, &body, &mut wire);
    }
    client.write_all(&wire).unwrap();
    let mut got = Vec::new();
    let mut conn = None;
    while got.len() < requests.len() {
        match server.events.recv_timeout(WAIT).unwrap() {
            NetEvent::Client { conn: c, requests } => {
                if let Some(seen) = conn {
                    assert_eq!(seen, c);
                }
                conn = Some(c);
                got.extend(requests);
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(got, requests);
    let conn = conn.unwrap();

    let replies = [
        ClientReply::Applied {
            req: 1,
            index: LogIndex(5),
            result: Bytes::from_static(b"ok"),
        },
        ClientReply::NotLeader {
            req: 2,
            leader: Some(NodeId(2)),
            leader_addr: Some("127.0.0.1:7000".to_owned()),
        },
    ];
    server
        .transport
        .handle()
        .reply(replies.iter().map(|r| (conn, r.clone())).collect());
    assert_eq!(read_reply(&mut client), replies[0]);
    assert_eq!(read_reply(&mut client), replies[1]);

    drop(client);
    match server.events.recv_timeout(WAIT).unwrap() {
        NetEvent::ClientGone(gone) => assert_eq!(gone, conn),
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(stats(&server).client_connects, 1);

    // A client of another cluster gets an error reply, then the connection closes.
    let mut stranger = TcpStream::connect(addr).unwrap();
    stranger.set_read_timeout(Some(WAIT)).unwrap();
    let mut body = Vec::new();
    ClientHello::new(CLUSTER + 1).encode(&mut body);
    send_frame(&mut stranger, FrameType::ClientHello, &body);
    match read_reply(&mut stranger) {
        ClientReply::Error { req: 0, message } => {
            assert!(message.contains("cluster id"), "{message}")
        }
        other => panic!("unexpected {other:?}"),
    }
    assert_closed_after_hello(&mut stranger);
    wait_for("the refusal count", || {
        stats(&server).handshakes_refused == 1
    });
}

#[test]
fn silent_connections_time_out() {
    let mut server_config = config(2, CLUSTER, &[(1, "127.0.0.1:9".parse().unwrap())]);
    server_config.client_listen = Some(local());
    server_config.handshake_timeout = Duration::from_millis(100);
    let server = start(server_config, 8);
    let started = Instant::now();
    let mut silent_client = TcpStream::connect(server.transport.client_addr().unwrap()).unwrap();
    let mut silent_peer = TcpStream::connect(server.transport.peer_addr()).unwrap();
    assert_closed_after_hello(&mut silent_client);
    assert_closed_after_hello(&mut silent_peer);
    assert!(started.elapsed() >= Duration::from_millis(100));
    assert_eq!(stats(&server).bad_frames, 0);
}

#[test]
fn peers_can_be_added_and_removed() {
    // Node 2 starts knowing nobody: node 1 dials it and is accepted unlisted.
    let n2 = start(config(2, CLUSTER, &[]), 8);
    let n1 = start(config(1, CLUSTER, &[(2, n2.transport.peer_addr())]), 8);
    wait_for("the link", || stats(&n2).peer_connects == 1);
    // Listing node 1 keeps that connection (at an address node 2 never needs to dial).
    n2.transport
        .handle()
        .add_peer(NodeId(1), "127.0.0.1:9".parse().unwrap());
    n2.transport.handle().send(vec![heartbeat(2, 1, 5)]);
    assert_eq!(collect_messages(&n1, 1), vec![heartbeat(2, 1, 5)]);
    assert_eq!(stats(&n2).peer_connects, 1);

    // Removing it closes the connection; node 1 dials again and is accepted unlisted again.
    n2.transport.handle().remove_peer(NodeId(1));
    wait_for("the loss", || stats(&n1).peer_disconnects == 1);
    wait_for("the new link", || stats(&n2).peer_connects == 2);
    n2.transport.handle().send(vec![heartbeat(2, 1, 6)]);
    assert_eq!(collect_messages(&n1, 1), vec![heartbeat(2, 1, 6)]);
    assert_eq!(stats(&n2).handshakes_refused, 0);
}

#[test]
fn max_clients_and_oversized_sends_are_bounded() {
    let placeholder: SocketAddr = "127.0.0.1:9".parse().unwrap();
    let mut server_config = config(2, CLUSTER, &[(1, placeholder)]);
    server_config.client_listen = Some(local());
    server_config.max_clients = 1;
    let n2 = start(server_config, 8);
    let client_addr = n2.transport.client_addr().unwrap();
    let _first = TcpStream::connect(client_addr).unwrap();
    wait_for("the first client", || stats(&n2).client_connects == 1);
    let mut second = TcpStream::connect(client_addr).unwrap();
    assert_closed_after_hello(&mut second);
    assert_eq!(stats(&n2).client_connects, 1);

    // A message larger than max_frame_bytes (4 MiB here) is dropped at the sender, and the
    // connection stays up.
    let n1 = start(config(1, CLUSTER, &[(2, n2.transport.peer_addr())]), 8);
    wait_for("the link", || stats(&n1).peer_connects == 1);
    let huge = append(1, 2, 0, vec![batch(3, 1, 300_000, 1)]);
    n1.transport.handle().send(vec![huge, heartbeat(1, 2, 1)]);
    assert_eq!(collect_messages(&n2, 1), vec![heartbeat(1, 2, 1)]);
    wait_for("the drop", || stats(&n1).messages_dropped == 1);
    assert_eq!(stats(&n2).bad_frames, 0);

    // What is queued before shutdown is flushed.
    n1.transport.handle().send(vec![heartbeat(1, 2, 2)]);
    n1.transport.shutdown();
    assert_eq!(collect_messages(&n2, 1), vec![heartbeat(1, 2, 2)]);
}
