//! A single-member node on real files: proposals, reads, snapshots, restart recovery, and the
//! refusal to start on a corrupt snapshot.

use std::time::Duration;

use bytes::Bytes;
use lockstep::{Node, NodeError, Refusal};
use lockstep_testkit::cluster::{config, members, wait_leader, Kv};

#[test]
fn single_node_proposes_reads_snapshots_and_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let members = members(1, false);
    let cfg = config(1, &members, dir.path(), 300);
    let node = Node::start(cfg.clone(), Kv::default()).unwrap();
    let nodes = [Some(node)];
    wait_leader(&nodes);
    let [Some(node)] = nodes else { unreachable!() };

    let receipts: Vec<_> = (0..1000)
        .map(|i| node.propose(Bytes::from(format!("k{}=v{i}", i % 100))))
        .collect();
    let mut last = 0;
    for (i, receipt) in receipts.into_iter().enumerate() {
        let applied = receipt.wait_timeout(Duration::from_secs(10)).unwrap();
        assert!(applied.index.get() > last, "indexes ascend");
        last = applied.index.get();
        let expected = if i < 100 {
            String::new()
        } else {
            format!("v{}", i - 100)
        };
        assert_eq!(applied.result, Bytes::from(expected));
    }
    let read = node
        .read_linearizable(Bytes::from_static(b"k7"))
        .wait()
        .unwrap();
    assert_eq!(read.result, Bytes::from_static(b"v907"));
    assert!(read.index.get() >= last);
    let status = node.status();
    assert_eq!((status.role.as_str(), status.applied), ("leader", last));
    let hash = node
        .read_linearizable(Bytes::from_static(b"#hash"))
        .wait()
        .unwrap()
        .result;
    node.shutdown().unwrap();

    let snapshots: Vec<_> = std::fs::read_dir(dir.path().join("snapshots"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(snapshots.len(), 1, "one snapshot kept: {snapshots:?}");

    // Restart: state comes back from the snapshot plus the log after it.
    let node = Node::start(cfg.clone(), Kv::default()).unwrap();
    let nodes = [Some(node)];
    wait_leader(&nodes);
    let [Some(node)] = nodes else { unreachable!() };
    let again = node
        .read_linearizable(Bytes::from_static(b"#hash"))
        .wait()
        .unwrap();
    assert_eq!(again.result, hash);
    let applied = node
        .propose(Bytes::from_static(b"after=restart"))
        .wait()
        .unwrap();
    assert!(
        applied.index.get() > last + 1,
        "new term's noop then the entry"
    );
    node.shutdown().unwrap();

    // A corrupt newest snapshot refuses the start, naming the file.
    let snapshot = std::fs::read_dir(dir.path().join("snapshots"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .max()
        .unwrap();
    let mut bytes = std::fs::read(&snapshot).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&snapshot, bytes).unwrap();
    let name = snapshot.file_name().unwrap().to_str().unwrap().to_string();
    match Node::start(cfg, Kv::default()) {
        Err(NodeError::Storage {
            kind: std::io::ErrorKind::InvalidData,
            detail,
        }) => assert!(detail.contains(&name), "{detail}"),
        Err(other) => panic!("unexpected error {other:?}"),
        Ok(_) => panic!("started on a corrupt snapshot"),
    }
}

#[test]
fn dropping_a_node_shuts_it_down_and_frees_its_directory() {
    let dir = tempfile::tempdir().unwrap();
    let members = members(1, false);
    let cfg = config(1, &members, dir.path(), 1000);
    for round in 0..2u64 {
        let node = Node::start(cfg.clone(), Kv::default()).unwrap();
        let nodes = [Some(node)];
        wait_leader(&nodes);
        let [Some(node)] = nodes else { unreachable!() };
        let read = node
            .read_linearizable(Bytes::from_static(b"a"))
            .wait()
            .unwrap();
        let expected = if round == 0 { "" } else { "0" };
        assert_eq!(read.result, Bytes::from(expected));
        node.propose(Bytes::from(format!("a={round}")))
            .wait()
            .unwrap();
        drop(node);
    }
}

#[test]
fn pinned_stages_run_the_same() {
    let dir = tempfile::tempdir().unwrap();
    let members = members(1, false);
    let mut cfg = config(1, &members, dir.path(), 1000);
    cfg.cpu_affinity = Some(vec![0, 1]);
    let node = Node::start(cfg, Kv::default()).unwrap();
    let nodes = [Some(node)];
    wait_leader(&nodes);
    let [Some(node)] = nodes else { unreachable!() };
    let applied = node
        .propose(Bytes::from_static(b"pinned=yes"))
        .wait()
        .unwrap();
    let read = node
        .read_local(Bytes::from_static(b"pinned"))
        .wait()
        .unwrap();
    assert_eq!(
        (read.index, read.result),
        (applied.index, Bytes::from_static(b"yes"))
    );
    node.shutdown().unwrap();
}

#[test]
fn a_failed_snapshot_write_stops_the_node_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let members = members(1, false);
    let node = Node::start(config(1, &members, dir.path(), 50), Kv::default()).unwrap();
    let nodes = [Some(node)];
    wait_leader(&nodes);
    let [Some(node)] = nodes else { unreachable!() };
    // A file where the snapshot directory should be: the first snapshot cannot be written.
    std::fs::write(dir.path().join("snapshots"), b"in the way").unwrap();
    let receipts: Vec<_> = (0..200)
        .map(|i| node.propose(Bytes::from(format!("k={i}"))))
        .collect();
    for receipt in receipts {
        drop(receipt.wait_timeout(Duration::from_secs(10)));
    }
    lockstep_testkit::cluster::wait_for("the node to stop", Duration::from_secs(10), || {
        node.status().role == lockstep::Role::Stopped
    });
    let failure = node.failure().expect("a failed node reports its failure");
    match &failure {
        NodeError::Storage { detail, .. } => assert!(detail.contains("snapshots"), "{detail}"),
        other => panic!("a snapshot write failure is a storage failure, not {other:?}"),
    }
    assert!(failure.is_fatal());
    assert_eq!(
        node.propose(Bytes::from_static(b"after=failure")).wait(),
        Err(failure.clone()),
        "a failed node answers every request with its failure"
    );
    assert_eq!(node.shutdown(), Err(failure), "shutdown of a failed node");
}

#[test]
fn batch_proposals_are_all_or_nothing_at_consecutive_indexes() {
    let dir = tempfile::tempdir().unwrap();
    let members = members(1, false);
    let cfg = config(1, &members, dir.path(), 100_000);
    let node = Node::start(cfg, Kv::default()).unwrap();
    let nodes = [Some(node)];
    wait_leader(&nodes);
    let [Some(node)] = nodes else { unreachable!() };

    let commands = [&b"b=1"[..], b"b=2", b"b=3"]
        .map(Bytes::from_static)
        .to_vec();
    let batch = node.propose_batch(commands).wait().unwrap();
    assert_eq!(
        batch.results,
        [&b""[..], b"1", b"2"].map(Bytes::from_static).to_vec()
    );
    let read = node.read_local(Bytes::from_static(b"b")).wait().unwrap();
    assert_eq!(read.index, batch.first.plus(2));
    assert_eq!(read.result, Bytes::from_static(b"3"));

    // Larger than one leader batch (4096 entries): split in the log, still consecutive.
    let commands: Vec<Bytes> = (0..5000).map(|i| Bytes::from(format!("c=v{i}"))).collect();
    let big = node.propose_batch(commands).wait().unwrap();
    assert_eq!(big.first, read.index.next());
    assert_eq!(big.results.len(), 5000);
    assert_eq!(big.results[4999], Bytes::from_static(b"v4998"));

    // One oversized command refuses the whole batch: nothing is appended.
    let applied = big.first.get() + 4999;
    let oversized = Bytes::from(vec![b'x'; lockstep::batch::ENTRY_BYTES_MAX + 1]);
    let refused = node
        .propose_batch(vec![Bytes::from_static(b"d=1"), oversized])
        .wait();
    match refused {
        Err(NodeError::Refused(Refusal::BatchCommandTooLarge { at: 1, bytes })) => {
            assert_eq!(bytes, lockstep::batch::ENTRY_BYTES_MAX + 1)
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert_eq!(
        node.propose_batch(Vec::new()).wait(),
        Err(NodeError::Refused(Refusal::EmptyBatch))
    );
    let after = node.propose(Bytes::from_static(b"d=2")).wait().unwrap();
    assert_eq!(
        after.index.get(),
        applied + 1,
        "the refused batch took no index"
    );
    assert_eq!(
        after.result,
        Bytes::new(),
        "d was never set by the refused batch"
    );
    node.shutdown().unwrap();
}
