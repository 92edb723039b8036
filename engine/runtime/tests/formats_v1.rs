//! Compatibility fixtures: bytes written by the first released formats, stored in
//! `tests/fixtures/v1/`, that every later build must still read.
//!
//! - `data/`: a single node's data directory (log segments, log head, hard state, a snapshot)
//!   after 400 proposals (more than one segment) with a snapshot every 50; `state.txt` holds what its state machine must
//!   answer once it has started from it.
//! - `frames.hex`: one frame per line (`name hex`), header included, of every peer message and
//!   client request and reply kind.
//!
//! A format change that older bytes no longer fit must come with a new version number, a
//! `fixtures/v2` written by that build, and these tests kept (or the refusal of v1 documented
//! and tested). `cargo test -p lockstep --test formats_v1 -- --ignored write_fixtures` writes a
//! fixture set anew (do that only for a new version, into a new directory).

use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use lockstep::batch::{BatchBuilder, BatchKind};
use lockstep::net::frame::{encode_frame, FrameDecoder, FrameType};
use lockstep::net::{
    decode_message, encode_message, ClientHello, ClientReply, ClientRequest, PeerHello,
};
use lockstep::raft::{
    MemberAddr, Membership, MembershipChange, Message, MessageBody, SnapshotMeta,
};
use lockstep::types::{LogIndex, NodeId, Term};
use lockstep::{Node, Role};
use lockstep_testkit::cluster::{config, members, Kv};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/v1")
}

const PROPOSALS: u64 = 400;
const SNAPSHOT_EVERY: u64 = 50;
const SEGMENT_BYTES: u64 = 16 << 10;

fn node_config(dir: &Path) -> lockstep::NodeConfig {
    let mut config = config(1, &members(1, false), dir, SNAPSHOT_EVERY);
    config.log.segment_bytes = SEGMENT_BYTES;
    config
}

fn wait_leader(node: &Node) {
    let mut events = node.subscribe();
    while events.current().role != Role::Leader {
        assert!(
            events
                .wait_changed_timeout(Duration::from_secs(10))
                .is_some(),
            "no leader"
        );
    }
}

fn query(node: &Node, key: &str) -> String {
    let answer = node
        .read_local(Bytes::from(key.to_string()))
        .wait()
        .unwrap();
    String::from_utf8(answer.result.to_vec()).unwrap()
}

/// The keys the fixture's proposals set, and the state hash query.
fn probes() -> Vec<String> {
    let mut keys: Vec<String> = (0..10).map(|key| format!("k{key}")).collect();
    keys.push("#hash".to_string());
    keys
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

#[test]
fn a_v1_data_directory_starts_with_its_state_and_keeps_committing() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    copy_dir(&fixtures().join("data"), &data);
    let expected = std::fs::read_to_string(fixtures().join("state.txt")).unwrap();
    let node = Node::start(node_config(&data), Kv::default()).expect("a v1 directory opens");
    wait_leader(&node);
    let mut lines = expected.lines();
    let applied: u64 = lines.next().unwrap().parse().unwrap();
    // Once a read index is applied, so is everything the v1 log committed.
    let index = node.read_index().wait().unwrap();
    assert!(
        index.get() >= applied,
        "the v1 log is recovered (read index {index})"
    );
    for (key, line) in probes().iter().zip(lines) {
        assert_eq!(format!("{key} {}", query(&node, key)), line);
    }
    let next = node
        .propose(Bytes::from_static(b"after=v1"))
        .wait()
        .unwrap();
    assert!(next.index.get() > applied);
    node.shutdown().unwrap();
}

/// One sample of every frame kind, with the values the fixture's bytes must decode to.
fn samples() -> Vec<(&'static str, FrameType, Vec<u8>)> {
    let batch = {
        let mut builder = BatchBuilder::default();
        builder.push(b"k1=v1");
        builder.push(b"k2=v2");
        builder.finish(Term(3), LogIndex(8), BatchKind::Normal)
    };
    let membership = Membership::with_voters([NodeId(1), NodeId(2), NodeId(3)]);
    let message = |body| Message {
        from: NodeId(1),
        to: NodeId(2),
        term: Term(3),
        body,
    };
    let raft = [
        MessageBody::PreVote {
            last_index: LogIndex(7),
            last_term: Term(2),
        },
        MessageBody::PreVoteResponse { granted: true },
        MessageBody::Vote {
            last_index: LogIndex(7),
            last_term: Term(2),
            leadership_transfer: false,
        },
        MessageBody::VoteResponse { granted: false },
        MessageBody::Append {
            prev_index: LogIndex(7),
            prev_term: Term(2),
            batches: vec![batch],
            commit: LogIndex(6),
        },
        MessageBody::AppendResponse {
            success: true,
            index: LogIndex(9),
            hint_index: LogIndex(0),
            hint_term: Term(0),
        },
        MessageBody::Heartbeat {
            commit: LogIndex(9),
            read_round: 4,
        },
        MessageBody::HeartbeatResponse { read_round: 4 },
        MessageBody::Snapshot {
            meta: SnapshotMeta {
                index: LogIndex(50),
                term: Term(2),
                membership,
            },
            offset: 0,
            data: Bytes::from_static(b"snapshot bytes"),
            done: true,
        },
        MessageBody::SnapshotResponse {
            index: LogIndex(50),
            next_offset: 14,
            done: true,
        },
        MessageBody::TimeoutNow,
    ];
    let mut out = Vec::new();
    let mut hello = Vec::new();
    PeerHello::new(7, NodeId(1), true, [9; 32]).encode(&mut hello);
    out.push(("peer-hello", FrameType::PeerHello, hello));
    for (at, body) in raft.into_iter().enumerate() {
        let mut bytes = Vec::new();
        encode_message(&message(body), &mut bytes);
        out.push((RAFT_NAMES[at], FrameType::Raft, bytes));
    }
    let mut hello = Vec::new();
    ClientHello::new(7).encode(&mut hello);
    out.push(("client-hello", FrameType::ClientHello, hello));
    for (name, request) in requests() {
        let mut bytes = Vec::new();
        request.encode(&mut bytes);
        out.push((name, FrameType::ClientRequest, bytes));
    }
    for (name, reply) in replies() {
        let mut bytes = Vec::new();
        reply.encode(&mut bytes);
        out.push((name, FrameType::ClientReply, bytes));
    }
    out
}

const RAFT_NAMES: [&str; 11] = [
    "pre-vote",
    "pre-vote-response",
    "vote",
    "vote-response",
    "append",
    "append-response",
    "heartbeat",
    "heartbeat-response",
    "snapshot",
    "snapshot-response",
    "timeout-now",
];

fn requests() -> Vec<(&'static str, ClientRequest)> {
    let addr = MemberAddr {
        peer_addr: "127.0.0.1:7004".parse().unwrap(),
        client_addr: Some("127.0.0.1:8004".parse().unwrap()),
    };
    vec![
        (
            "propose",
            ClientRequest::Propose {
                req: 1,
                command: Bytes::from_static(b"k=v"),
            },
        ),
        (
            "propose-batch",
            ClientRequest::ProposeBatch {
                req: 2,
                commands: vec![Bytes::from_static(b"a=1"), Bytes::from_static(b"b=2")],
            },
        ),
        (
            "read",
            ClientRequest::Read {
                req: 3,
                query: Bytes::from_static(b"k"),
                linearizable: true,
            },
        ),
        ("status", ClientRequest::Status { req: 4 }),
        (
            "transfer-leader",
            ClientRequest::TransferLeader {
                req: 5,
                to: NodeId(2),
            },
        ),
        (
            "change-membership",
            ClientRequest::ChangeMembership {
                req: 6,
                change: MembershipChange::AddLearner(NodeId(4), Some(addr)),
            },
        ),
    ]
}

fn replies() -> Vec<(&'static str, ClientReply)> {
    vec![
        (
            "applied",
            ClientReply::Applied {
                req: 1,
                index: LogIndex(9),
                result: Bytes::from_static(b"old"),
            },
        ),
        (
            "applied-batch",
            ClientReply::AppliedBatch {
                req: 2,
                first: LogIndex(10),
                results: vec![Bytes::new(), Bytes::from_static(b"x")],
            },
        ),
        (
            "read-ok",
            ClientReply::ReadOk {
                req: 3,
                index: LogIndex(11),
                result: Bytes::from_static(b"v"),
            },
        ),
        (
            "not-leader",
            ClientReply::NotLeader {
                req: 4,
                leader: Some(NodeId(2)),
                leader_addr: Some("127.0.0.1:8002".to_string()),
            },
        ),
        (
            "status-reply",
            ClientReply::Status {
                req: 5,
                json: "{\"id\":1}".to_string(),
            },
        ),
        ("ok", ClientReply::Ok { req: 6 }),
        (
            "error",
            ClientReply::Error {
                req: 7,
                message: "refused: a reason".to_string(),
            },
        ),
    ]
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

fn unhex(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|at| u8::from_str_radix(&text[at..at + 2], 16).unwrap())
        .collect()
}

/// The body of the one frame in `frame`, checked (header, checksum, type).
fn body_of(name: &str, frame: &[u8], expected: FrameType) -> Bytes {
    let mut decoder = FrameDecoder::new(1 << 20);
    decoder.extend(frame);
    let (ty, body) = decoder
        .next_frame()
        .unwrap_or_else(|error| panic!("{name}: {error}"))
        .unwrap_or_else(|| panic!("{name}: not one whole frame"));
    assert_eq!(ty, expected, "{name}: frame type");
    assert_eq!(decoder.buffered(), 0, "{name}: bytes after the frame");
    body
}

#[test]
fn v1_frames_decode_to_the_same_values_and_are_still_encoded_alike() {
    let text = std::fs::read_to_string(fixtures().join("frames.hex")).unwrap();
    let stored: Vec<(&str, &str)> = text
        .lines()
        .map(|line| line.split_once(' ').expect("name hex"))
        .collect();
    let samples = samples();
    assert_eq!(stored.len(), samples.len(), "one stored frame per sample");
    for ((name, hex_frame), (sample_name, ty, sample_body)) in stored.into_iter().zip(samples) {
        assert_eq!(name, sample_name);
        let body = body_of(name, &unhex(hex_frame), ty);
        match ty {
            FrameType::PeerHello => assert_eq!(
                PeerHello::decode(&body).unwrap(),
                PeerHello::decode(&sample_body).unwrap(),
                "{name}"
            ),
            FrameType::Raft => assert_eq!(
                decode_message(&body).unwrap(),
                decode_message(&Bytes::from(sample_body.clone())).unwrap(),
                "{name}"
            ),
            FrameType::ClientHello => assert_eq!(
                ClientHello::decode(&body).unwrap(),
                ClientHello::decode(&sample_body).unwrap(),
                "{name}"
            ),
            FrameType::ClientRequest => assert_eq!(
                ClientRequest::decode(&body).unwrap(),
                ClientRequest::decode(&sample_body).unwrap(),
                "{name}"
            ),
            FrameType::ClientReply => assert_eq!(
                ClientReply::decode(&body).unwrap(),
                ClientReply::decode(&sample_body).unwrap(),
                "{name}"
            ),
            FrameType::PeerProof => unreachable!("no proof sample"),
        }
        assert_eq!(
            hex(&body),
            hex(&sample_body),
            "{name}: this build encodes it differently; a changed encoding needs a new \
             protocol version and fixtures (see the module docs)"
        );
    }
}

/// Writes a fixture set into `LOCKSTEP_FIXTURES_OUT` (a new directory, for a new version).
#[test]
#[ignore = "writes fixtures; run by hand for a new format version"]
fn write_fixtures() {
    let out = PathBuf::from(std::env::var("LOCKSTEP_FIXTURES_OUT").expect("LOCKSTEP_FIXTURES_OUT"));
    assert!(
        !out.exists(),
        "{} exists: fixtures are never overwritten",
        out.display()
    );
    let data = out.join("data");
    let node = Node::start(node_config(&data), Kv::default()).unwrap();
    wait_leader(&node);
    let mut last = LogIndex::ZERO;
    for i in 0..PROPOSALS {
        last = node
            .propose(Bytes::from(format!("k{}=v{i}", i % 10)))
            .wait()
            .unwrap()
            .index;
    }
    let mut state = format!("{}\n", last.get());
    for key in probes() {
        state.push_str(&format!("{key} {}\n", query(&node, &key)));
    }
    node.shutdown().unwrap();
    std::fs::write(out.join("state.txt"), state).unwrap();
    let mut frames = String::new();
    for (name, ty, body) in samples() {
        let mut frame = Vec::new();
        encode_frame(ty, &body, &mut frame);
        frames.push_str(&format!("{name} {}\n", hex(&frame)));
    }
    std::fs::write(out.join("frames.hex"), frames).unwrap();
}
