//! The bank app with exactly-once sessions on three in-process nodes (real TCP and files): a
//! node that missed a compacted stretch of the log catches up by installing the leader's
//! snapshot, ends with the same ledger, and — once leader — answers a session retry with the
//! reply remembered in that snapshot instead of applying the transfer again.

use std::time::Duration;

use bytes::Bytes;
use lockstep::types::NodeId;
use lockstep::{Node, NodeError};
use lockstep_server::apps::{Bank, BankCommand, Envelope, Reply};
use lockstep_testkit::cluster::{wait_for, wait_leader, TestCluster};

const ACCOUNTS: usize = 4;

fn account(n: usize) -> Vec<u8> {
    format!("acct-{n}").into_bytes()
}

/// Proposes `command` at whichever node leads, retrying while leadership moves.
fn propose(nodes: &[Option<Node>], command: &[u8]) -> Reply {
    loop {
        let leader = wait_leader(nodes);
        let receipt = nodes[leader]
            .as_ref()
            .expect("leader runs")
            .propose(Bytes::copy_from_slice(command));
        match receipt.wait_timeout(Duration::from_secs(10)) {
            Ok(applied) => return Reply::decode(&applied.result).expect("a reply"),
            Err(NodeError::NotLeader { .. }) => {}
            Err(other) => panic!("proposal failed: {other:?}"),
        }
    }
}

fn in_session(client: u64, seq: u64, command: &BankCommand<'_>) -> Vec<u8> {
    Envelope::Session {
        now_ms: 1_000 + seq,
        client,
        seq,
        command: &command.to_bytes(),
    }
    .to_vec()
}

/// Every account's balance and the total, as node `at` sees them locally.
fn ledger_of(node: &Node) -> Vec<Reply> {
    let mut queries: Vec<Bytes> = (0..ACCOUNTS)
        .map(|n| {
            BankCommand::Balance {
                account: &account(n),
            }
            .to_bytes()
        })
        .collect();
    queries.push(BankCommand::Total.to_bytes());
    queries
        .into_iter()
        .map(|query| Reply::decode(&node.read_local(query).wait().expect("local read").result))
        .collect::<Result<_, _>>()
        .expect("replies decode")
}

#[test]
fn a_snapshot_carries_the_ledger_and_the_sessions_to_a_lagging_node() {
    let mut cluster = TestCluster::start(
        3,
        false,
        50,
        |_| {},
        |config| Node::start(config, Bank::new()),
    );
    for n in 0..ACCOUNTS {
        let open = BankCommand::Open {
            account: &account(n),
            initial: 1_000,
        };
        assert_eq!(propose(&cluster.nodes, &open.to_bytes()), Reply::Ok);
    }
    let Reply::Int(session) = propose(
        &cluster.nodes,
        &Envelope::OpenSession { now_ms: 1_000 }.to_vec(),
    ) else {
        panic!("no session id");
    };
    let session = session as u64;

    let lagging = (wait_leader(&cluster.nodes) + 1) % 3;
    cluster.nodes[lagging]
        .take()
        .expect("runs")
        .shutdown()
        .expect("clean stop");
    let mut last = (0, Reply::Ok);
    for seq in 1..=300u64 {
        let from = account(seq as usize % ACCOUNTS);
        let to = account((seq as usize + 1) % ACCOUNTS);
        let transfer = BankCommand::Transfer {
            from: &from,
            to: &to,
            amount: (seq % 7 + 1) as i64,
        };
        last = (
            seq,
            propose(&cluster.nodes, &in_session(session, seq, &transfer)),
        );
    }
    cluster.restart(lagging);
    let reference = ledger_of(cluster.nodes[wait_leader(&cluster.nodes)].as_ref().unwrap());
    assert_eq!(
        reference[ACCOUNTS],
        Reply::Array(vec![Reply::Int(4_000), Reply::Int(4)])
    );
    wait_for(
        "the lagging node to catch up",
        Duration::from_secs(20),
        || ledger_of(cluster.nodes[lagging].as_ref().unwrap()) == reference,
    );
    let installed = cluster.nodes[lagging]
        .as_ref()
        .unwrap()
        .status()
        .counters
        .snapshots_installed;
    assert_eq!(installed, 1, "the lagging node caught up by snapshot");

    // The lagging node leads; the retry of the last transfer gets the remembered reply.
    let target = NodeId(lagging as u64 + 1);
    wait_for("leadership to move", Duration::from_secs(20), || {
        let leader = wait_leader(&cluster.nodes);
        if leader == lagging {
            return true;
        }
        drop(
            cluster.nodes[leader]
                .as_ref()
                .unwrap()
                .transfer_leadership(target),
        );
        std::thread::sleep(Duration::from_millis(50));
        false
    });
    let (seq, reply) = last;
    let from = account(seq as usize % ACCOUNTS);
    let to = account((seq as usize + 1) % ACCOUNTS);
    let transfer = BankCommand::Transfer {
        from: &from,
        to: &to,
        amount: (seq % 7 + 1) as i64,
    };
    let retried = cluster.nodes[lagging]
        .as_ref()
        .unwrap()
        .propose(Bytes::from(in_session(session, seq, &transfer)))
        .wait_timeout(Duration::from_secs(10))
        .expect("retry at the new leader");
    assert_eq!(Reply::decode(&retried.result), Ok(reply));
    assert_eq!(
        ledger_of(cluster.nodes[lagging].as_ref().unwrap()),
        reference,
        "the retry applied nothing"
    );
    for node in cluster.nodes.into_iter().flatten() {
        node.shutdown().expect("clean stop");
    }
}
