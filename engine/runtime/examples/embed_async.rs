//! Embedding lockstep from async code: three replicas of a small key-value store in one process,
//! driven by `async fn`s. No async runtime is needed: a receipt is a `Future` that any executor
//! can poll (tokio, async-std, smol, or the dozen-line `block_on` below).
//!
//! Shows: waiting for a leader through the leadership subscription, a thousand proposals in
//! flight at once, a batch proposal, the `NotLeader` error naming the leader and its address,
//! and a linearizable read of state the caller owns (`read_index`, then a read of the caller's
//! own view of the store).
//!
//! Run: `cargo run --release -p lockstep --example embed_async`

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};

use bytes::Bytes;
use lockstep::node::PeerConfig;
use lockstep::types::{LogIndex, NodeId};
use lockstep::{Node, NodeConfig, NodeError, StateMachine};

/// The store every replica applies to; the application keeps a handle on it and reads it
/// directly (after `read_index`, for a linearizable read).
type Shared = Arc<Mutex<BTreeMap<String, String>>>;

/// The state machine: `key=value` commands into the shared map.
struct Store(Shared);

impl StateMachine for Store {
    fn apply(&mut self, _index: LogIndex, command: &[u8]) -> Bytes {
        let text = String::from_utf8_lossy(command);
        let Some((key, value)) = text.split_once('=') else {
            return Bytes::from_static(b"error: expected key=value");
        };
        let mut map = self.0.lock().expect("store lock");
        Bytes::from(map.insert(key.into(), value.into()).unwrap_or_default())
    }

    fn query(&self, query: &[u8]) -> Bytes {
        let map = self.0.lock().expect("store lock");
        let key = String::from_utf8_lossy(query);
        Bytes::from(map.get(key.as_ref()).cloned().unwrap_or_default())
    }

    fn snapshot(&self, out: &mut Vec<u8>) {
        for (key, value) in self.0.lock().expect("store lock").iter() {
            out.extend_from_slice(format!("{key}={value}\n").as_bytes());
        }
    }

    fn restore(&mut self, snapshot: &[u8]) -> Result<(), lockstep::apply::RestoreError> {
        let text = std::str::from_utf8(snapshot).map_err(|err| err.to_string())?;
        let mut map = self.0.lock().expect("store lock");
        map.clear();
        for line in text.lines() {
            let (key, value) = line
                .split_once('=')
                .ok_or_else(|| format!("bad snapshot line {line:?}"))?;
            map.insert(key.into(), value.into());
        }
        Ok(())
    }
}

/// Runs `future` to completion on this thread: the waker unparks the thread.
fn block_on<F: Future>(future: F) -> F::Output {
    struct Unpark(std::thread::Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut context = Context::from_waker(&waker);
    let mut future = std::pin::pin!(future);
    loop {
        if let Poll::Ready(output) = future.as_mut().poll(&mut context) {
            return output;
        }
        std::thread::park();
    }
}

/// Waits (asynchronously) until `node` knows a leader, and returns its id.
async fn leader_seen_by(node: &Node) -> NodeId {
    let mut events = node.subscribe();
    loop {
        if let Some(leader) = events.current().leader {
            return leader;
        }
        events.changed().await;
    }
}

async fn run(nodes: &[Node], stores: &[Shared]) -> Result<(), NodeError> {
    let leader_id = leader_seen_by(&nodes[0]).await;
    // Node ids are 1..=3, in the order of `nodes`.
    let at = leader_id.get() as usize - 1;
    let leader = &nodes[at];
    println!("{leader_id} leads (role {})", leader.leadership().role);

    // Every receipt is in flight from the moment `propose` returns: await them in any order.
    let receipts: Vec<_> = (0..1000)
        .map(|i| leader.propose(Bytes::from(format!("key{}={i}", i % 10))))
        .collect();
    let mut last = LogIndex::ZERO;
    for receipt in receipts {
        last = receipt.await?.index;
    }
    println!("1000 proposals committed, the last at {last}");

    let batch = leader
        .propose_batch(vec![
            Bytes::from_static(b"color=blue"),
            Bytes::from_static(b"shape=round"),
        ])
        .await?;
    println!("a batch of 2 committed from {}", batch.first);

    // A follower refuses, naming the leader and where to reach it.
    let follower = &nodes[(at + 1) % nodes.len()];
    match follower.propose(Bytes::from_static(b"x=1")).await {
        Err(NodeError::NotLeader { leader: Some(hint) }) => {
            println!("a follower says: ask {} at {:?}", hint.id, hint.peer_addr)
        }
        other => println!("unexpected answer from a follower: {other:?}"),
    }

    // Linearizable read of the caller's own view: every write committed before `read_index`
    // is applied to the leader's store once it completes.
    let index = leader.read_index().await?;
    let color = stores[at].lock().expect("store lock").get("color").cloned();
    println!("read at index {index}: color = {color:?}");
    assert_eq!(color.as_deref(), Some("blue"));
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = tempfile::tempdir()?;
    // Loopback ports free now, none picked twice.
    let peer_addrs = lockstep::net::free_loopback_addrs(3)?;
    let members: BTreeMap<NodeId, PeerConfig> = (1..=3)
        .zip(peer_addrs)
        .map(|(id, peer_addr)| {
            let client_addr = None;
            (
                NodeId(id),
                PeerConfig {
                    peer_addr,
                    client_addr,
                },
            )
        })
        .collect();
    let stores: Vec<Shared> = (0..3).map(|_| Shared::default()).collect();
    let nodes = (1..=3)
        .map(|id| {
            let dir = root.path().join(format!("node-{id}"));
            let config = NodeConfig::new(NodeId(id), 1, members.clone(), dir);
            Node::start(config, Store(stores[id as usize - 1].clone()))
        })
        .collect::<Result<Vec<_>, _>>()?;
    block_on(run(&nodes, &stores))?;
    for node in nodes {
        node.shutdown()?;
    }
    println!("all nodes shut down cleanly");
    Ok(())
}
