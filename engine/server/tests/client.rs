//! The client against real in-process nodes (real TCP, real files, real fsync): the handshake
//! and its refusal, blocking calls, pipelining, and the cluster client's redirects and failover.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;

use lockstep::client::{Client, ClientError, ClusterClient};
use lockstep::net::{ClientReply, ClientRequest};
use lockstep::node::Node;
use lockstep::raft::{MemberAddr, MembershipChange};
use lockstep::types::NodeId;
use lockstep_server::apps::{AppKind, KvCommand, KvStore, Reply};
use lockstep_server::{ServerConfig, Tuning};
use lockstep_testkit::ports::{
    free_loopback_addrs, loopback_members, mentions_address_in_use, retry_when_port_taken,
    StartFailure,
};

const CLUSTER_ID: u64 = 77;
const TIMEOUT: Duration = Duration::from_secs(5);

fn free_addrs(n: usize) -> Vec<SocketAddr> {
    free_loopback_addrs(n).unwrap()
}

/// Starts `n` in-process nodes on free ports. A port picked free can be taken (e.g. as the
/// local port of another test's outgoing connection) before the node binds it: then the nodes
/// started so far are dropped and the cluster starts again on other ports, in a fresh directory.
fn start_cluster(n: usize, dir: &std::path::Path) -> (Vec<Node>, Vec<SocketAddr>) {
    let started = retry_when_port_taken(|attempt| {
        try_start_cluster(n, &dir.join(format!("attempt-{attempt}"))).map_err(|error| {
            match mentions_address_in_use(&error) {
                true => StartFailure::PortTaken(error),
                false => StartFailure::Failed(error),
            }
        })
    });
    match started {
        Ok(started) => started,
        Err(StartFailure::PortTaken(error) | StartFailure::Failed(error)) => {
            panic!("cannot start the cluster: {error}")
        }
    }
}

fn try_start_cluster(
    n: usize,
    dir: &std::path::Path,
) -> Result<(Vec<Node>, Vec<SocketAddr>), String> {
    let members = loopback_members(1..=n as u64).unwrap();
    let nodes = members
        .iter()
        .map(|member| {
            let config = ServerConfig {
                id: member.id,
                cluster_id: CLUSTER_ID,
                data_dir: dir.join(format!("node-{}", member.id)),
                app: AppKind::Kv,
                metrics_addr: None,
                log_level: None,
                log_format: None,
                members: members.clone(),
                join: false,
                tuning: Tuning {
                    segment_bytes: 1 << 20,
                    ..Tuning::default()
                },
                security: Default::default(),
                limits: Default::default(),
            };
            Node::start(config.node_config().unwrap(), KvStore::new()).map_err(|e| e.to_string())
        })
        .collect::<Result<Vec<Node>, String>>()?;
    let client_addrs = members.iter().map(|member| member.client_addr).collect();
    Ok((nodes, client_addrs))
}

fn put(key: &str, value: &str) -> Bytes {
    KvCommand::Put {
        key: key.as_bytes(),
        value: value.as_bytes(),
    }
    .to_bytes()
}

fn get(key: &str) -> Bytes {
    KvCommand::Get {
        key: key.as_bytes(),
    }
    .to_bytes()
}

/// Proposes through `client` until the single node has elected itself.
fn propose_when_leader(client: &mut Client, command: &[u8]) -> lockstep::node::Applied {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        match client.propose(command) {
            Err(ClientError::NotLeader { .. }) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10))
            }
            other => return other.unwrap(),
        }
    }
}

#[test]
fn one_node_serves_blocking_and_pipelined_requests() {
    let dir = tempfile::tempdir().unwrap();
    let (nodes, addrs) = start_cluster(1, dir.path());

    match Client::connect(addrs[0], CLUSTER_ID + 1, TIMEOUT) {
        Err(ClientError::Refused(message)) => assert!(message.contains("78"), "{message}"),
        other => panic!("expected a refusal, got {:?}", other.map(|_| ())),
    }

    let mut client = Client::connect(addrs[0], CLUSTER_ID, TIMEOUT).unwrap();
    let first = propose_when_leader(&mut client, &put("a", "1"));
    assert_eq!(Reply::decode(&first.result), Ok(Reply::Ok));
    for linearizable in [true, false] {
        let read = client.read(&get("a"), linearizable).unwrap();
        assert_eq!(
            Reply::decode(&read.result),
            Ok(Reply::Value(Bytes::from_static(b"1")))
        );
        assert!(read.index >= first.index);
    }
    let status: serde_json::Value = serde_json::from_str(&client.status().unwrap()).unwrap();
    assert_eq!(status["role"], "leader");

    // Pipelined: many requests queued, one flush, replies matched by id.
    let count = 2000;
    let first_req = client.next_req();
    for n in 0..count {
        let req = if n == 0 { first_req } else { client.next_req() };
        let command = put(&format!("k{n}"), &format!("v{n}"));
        client
            .send(&ClientRequest::Propose { req, command })
            .unwrap();
    }
    client.flush().unwrap();
    assert_eq!(client.pending(), count);
    let mut seen = vec![false; count];
    for _ in 0..count {
        match client.recv().unwrap() {
            ClientReply::Applied { req, result, .. } => {
                assert_eq!(Reply::decode(&result), Ok(Reply::Ok));
                let slot = (req - first_req) as usize;
                assert!(!seen[slot], "request {req} answered twice");
                seen[slot] = true;
            }
            other => panic!("unexpected reply {other:?}"),
        }
    }
    assert_eq!(client.pending(), 0);
    let count_reply = client.read(&KvCommand::Count.to_bytes(), true).unwrap();
    assert_eq!(
        Reply::decode(&count_reply.result),
        Ok(Reply::Int(count as i64 + 1))
    );
    for node in nodes {
        node.shutdown().unwrap();
    }
}

#[test]
fn cluster_client_follows_redirects_and_fails_over() {
    let dir = tempfile::tempdir().unwrap();
    let (mut nodes, addrs) = start_cluster(3, dir.path());
    let mut client = ClusterClient::new(addrs.clone(), CLUSTER_ID, TIMEOUT);
    client.propose(&put("x", "1")).unwrap();
    let leader_addr = client.current_addr();

    // Start at every member in turn: followers redirect to the leader.
    for start in 0..addrs.len() {
        let mut rotated = addrs.clone();
        rotated.rotate_left(start);
        let mut client = ClusterClient::new(rotated, CLUSTER_ID, TIMEOUT);
        let applied = client.propose(&put("y", &start.to_string())).unwrap();
        assert_eq!(Reply::decode(&applied.result), Ok(Reply::Ok));
        assert_eq!(client.current_addr(), leader_addr);
    }

    // Stop the leader: the client's connection breaks, so a plain proposal's outcome is
    // unknown and it is not retried; the idempotent form moves on to the new leader.
    let position = addrs.iter().position(|addr| *addr == leader_addr).unwrap();
    nodes.remove(position).shutdown().unwrap();
    assert!(matches!(
        client.propose(&put("z", "after")),
        Err(ClientError::Io(_))
    ));
    client.propose_idempotent(&put("z", "after")).unwrap();
    assert_ne!(client.current_addr(), leader_addr);
    let read = client.read(&get("x")).unwrap();
    assert_eq!(
        Reply::decode(&read.result),
        Ok(Reply::Value(Bytes::from_static(b"1")))
    );
    for node in nodes {
        node.shutdown().unwrap();
    }
}

#[test]
fn membership_changes_go_to_the_leader_and_refusals_carry_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let (nodes, addrs) = start_cluster(3, dir.path());
    let mut client = ClusterClient::new(addrs.clone(), CLUSTER_ID, TIMEOUT);
    client.propose(&put("x", "1")).unwrap();
    let leader_addr = client.current_addr();

    // Given only a follower's address, the client follows its redirect to the leader.
    let follower = *addrs.iter().find(|addr| **addr != leader_addr).unwrap();
    let mut client = ClusterClient::new(vec![follower], CLUSTER_ID, TIMEOUT);
    let spare = free_addrs(2);
    let add = MembershipChange::AddLearner(
        NodeId(4),
        Some(MemberAddr {
            peer_addr: spare[0],
            client_addr: Some(spare[1]),
        }),
    );
    let added = client.change_membership(add).unwrap();
    assert_eq!(client.current_addr(), leader_addr);

    for (change, reason) in [
        (add, "n4 is already a member"),
        (MembershipChange::Promote(NodeId(2)), "n2 is not a learner"),
        (MembershipChange::Remove(NodeId(9)), "n9 is not a member"),
    ] {
        match client.change_membership(change) {
            Err(ClientError::Server(message)) => {
                assert!(message.starts_with("refused: "), "{message}");
                assert!(message.contains(reason), "{message} lacks {reason:?}");
            }
            other => panic!("{change:?} got {other:?}"),
        }
    }
    match client.change_membership(MembershipChange::AddLearner(NodeId(5), None)) {
        Err(ClientError::Invalid(message)) => {
            assert!(message.contains("peer address"), "{message}")
        }
        other => panic!("an add without an address got {other:?}"),
    }

    // The learner (never started) leaves again; the cluster still commits.
    let removed = client
        .change_membership(MembershipChange::Remove(NodeId(4)))
        .unwrap();
    assert!(removed > added, "{removed} after {added}");
    let applied = client.propose(&put("y", "2")).unwrap();
    assert!(applied.index > removed);
    for node in nodes {
        node.shutdown().unwrap();
    }
}

fn incr(key: &str) -> Bytes {
    KvCommand::Incr {
        key: key.as_bytes(),
        delta: 1,
    }
    .to_bytes()
}

#[test]
fn batch_proposals_commit_consecutively_with_one_result_each() {
    let dir = tempfile::tempdir().unwrap();
    let (nodes, mut addrs) = start_cluster(3, dir.path());
    // Start at a follower (if the first member leads, the rotation makes no difference).
    addrs.rotate_left(1);
    let mut client = ClusterClient::new(addrs.clone(), CLUSTER_ID, TIMEOUT);
    let commands: Vec<Bytes> = (0..5).map(|_| incr("n")).collect();
    let batch = client.propose_batch(&commands).unwrap();
    let values: Vec<_> = batch.results.iter().map(Reply::decode).collect();
    assert_eq!(
        values,
        (1..=5).map(|n| Ok(Reply::Int(n))).collect::<Vec<_>>()
    );

    // A second batch follows the first, and its indexes are consecutive after it.
    let single = client.propose(&put("solo", "1")).unwrap();
    assert!(single.index > batch.first.plus(4), "{single:?} {batch:?}");
    let next = client.propose_batch(&[incr("n"), put("m", "2")]).unwrap();
    assert!(next.first > single.index);
    assert_eq!(Reply::decode(&next.results[0]), Ok(Reply::Int(6)));
    let read = client.read(&get("m")).unwrap();
    assert!(read.index >= next.first.plus(1));
    assert_eq!(
        Reply::decode(&read.result),
        Ok(Reply::Value(Bytes::from_static(b"2")))
    );

    // An empty batch is refused with a message, and the connection keeps serving.
    match client.propose_batch(&[]) {
        Err(ClientError::Server(message)) => {
            assert!(message.contains("at least one command"), "{message}")
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    client.propose(&incr("n")).unwrap();

    // Pipelined batches on one connection, with plain proposals between them.
    let mut raw = Client::connect(client.current_addr(), CLUSTER_ID, TIMEOUT).unwrap();
    let mut expected_results = 0;
    for round in 0..50 {
        let req = raw.next_req();
        let commands = (0..round % 7 + 1).map(|_| incr("p")).collect::<Vec<_>>();
        expected_results += commands.len();
        raw.send(&ClientRequest::ProposeBatch { req, commands })
            .unwrap();
        let req = raw.next_req();
        raw.send(&ClientRequest::Propose {
            req,
            command: incr("p"),
        })
        .unwrap();
        expected_results += 1;
    }
    raw.flush().unwrap();
    let mut results = Vec::new();
    while raw.pending() > 0 {
        match raw.recv().unwrap() {
            ClientReply::AppliedBatch {
                first, results: r, ..
            } => results.extend(
                r.iter()
                    .enumerate()
                    .map(|(i, r)| (first.plus(i as u64), r.clone())),
            ),
            ClientReply::Applied { index, result, .. } => results.push((index, result)),
            other => panic!("unexpected reply {other:?}"),
        }
    }
    assert_eq!(results.len(), expected_results);
    // In index order the counter counts up by one: every command applied once, in log order.
    results.sort_by_key(|(index, _)| *index);
    for (n, (_, result)) in results.iter().enumerate() {
        assert_eq!(Reply::decode(result), Ok(Reply::Int(n as i64 + 1)));
    }
    for node in nodes {
        node.shutdown().unwrap();
    }
}
