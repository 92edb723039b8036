//! Membership changes on a running cluster of the real binary, through `lockstep member`:
//!
//! 1. three nodes, some keys written;
//! 2. a fourth node starts with `--join` (empty data dir, `--member` flags naming nodes 1-3 and
//!    itself) and `lockstep member add 4` makes it a learner, waits for it to catch up and
//!    promotes it: it ends up a follower that applied everything and holds the keys;
//! 3. `lockstep member remove 1`, then node 1 is killed: {2, 3, 4} still commits;
//! 4. every node stops; node 2 restarts with its ORIGINAL flags (members 1-3 only) and node 4
//!    with its own; with 1 and 3 down, {2, 4} is a majority only of the replicated membership
//!    {2, 3, 4}, and node 2 can only reach node 4 at the address the log gave it, so a leader
//!    elected and a write committed prove both come from the log, not from the configuration.
//!    Node 3 then restarts (original flags) and catches up.

mod common;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{Cluster, BIN, CLIENT_TIMEOUT};
use lockstep::client::{Client, ClusterClient};
use lockstep_server::apps::{KvCommand, Reply};
use lockstep_server::MemberConfig;
use lockstep_testkit::ports::loopback_members;
use lockstep_testkit::process::{self, Launch, NodeProcess, NotReady, Output};
use lockstep_testkit::serve::ServeFlags;
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(30);

/// A node started outside the harness: node 4, whose flags differ from the others'.
struct Extra {
    member: MemberConfig,
    data_dir: PathBuf,
    log: PathBuf,
    /// Killed when dropped.
    process: Option<NodeProcess>,
}

impl Extra {
    /// Starts the node with `members` (and `--join` if `join`) and waits up to 20 s for its
    /// ready line.
    fn spawn(
        &mut self,
        cluster: &Cluster,
        members: &[MemberConfig],
        join: bool,
    ) -> Result<String, NotReady> {
        assert!(
            self.process.is_none(),
            "node {} runs already",
            self.member.id
        );
        let flags = ServeFlags {
            id: self.member.id,
            cluster_id: cluster.cluster_id,
            data_dir: &self.data_dir,
            app: "kv",
            members,
            join,
        };
        let process = Launch::new(self.member.id, BIN, &self.log, Output::StderrAppended)
            .args(flags.to_args())
            .env("LOCKSTEP_LOG", "info")
            .spawn()
            .expect("spawn lockstep serve");
        self.process
            .insert(process)
            .wait_ready(Duration::from_secs(20))
    }

    fn log_tail(&self) -> String {
        process::log_tail(&self.log, 40)
    }

    /// Panics with the node's log if its process has exited.
    fn assert_running(&mut self, when: &str) {
        let process = self.process.as_mut().expect("node 4 was started");
        if let Some(status) = process.try_exit().expect("try_wait") {
            panic!(
                "node 4 exited ({status}) {when}; its log:\n{}",
                self.log_tail()
            );
        }
    }

    fn kill(&mut self) {
        if let Some(mut process) = self.process.take() {
            process.kill().expect("kill -9");
        }
    }
}

fn put(key: &str, value: &str) -> Vec<u8> {
    let mut command = Vec::new();
    KvCommand::Put {
        key: key.as_bytes(),
        value: value.as_bytes(),
    }
    .encode(&mut command);
    command
}

fn get(key: &str) -> Vec<u8> {
    let mut query = Vec::new();
    KvCommand::Get {
        key: key.as_bytes(),
    }
    .encode(&mut query);
    query
}

/// Writes `key_{from..to}` through the members at `addrs`.
fn write_keys(
    addrs: &[SocketAddr],
    cluster_id: u64,
    key: &str,
    range: std::ops::Range<u32>,
) -> u64 {
    let mut last = 0;
    let mut client =
        ClusterClient::new(addrs.to_vec(), cluster_id, CLIENT_TIMEOUT).with_retry_for(WAIT);
    for i in range {
        // A put of a fresh key is idempotent: retrying after an unknown outcome is safe.
        let applied = client
            .propose_idempotent(&put(&format!("{key}{i}"), &format!("v{i}")))
            .unwrap_or_else(|e| panic!("put {key}{i} through {addrs:?}: {e}"));
        assert_eq!(Reply::decode(&applied.result), Ok(Reply::Ok));
        last = applied.index.get();
    }
    last
}

/// Checks that the node at `addr` holds `key_{range}`, reading its local state once it has
/// applied `written` (the index of the last write; a follower applies behind the leader).
fn check_keys(
    addr: SocketAddr,
    cluster_id: u64,
    key: &str,
    range: std::ops::Range<u32>,
    written: u64,
) {
    let deadline = Instant::now() + WAIT;
    while status(addr, cluster_id)
        .and_then(|status| status["applied"].as_u64())
        .is_none_or(|applied| applied < written)
    {
        assert!(Instant::now() < deadline, "{addr} never applied {written}");
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut client = Client::connect(addr, cluster_id, CLIENT_TIMEOUT).expect("connect");
    for i in range {
        let read = client
            .read(&get(&format!("{key}{i}")), false)
            .expect("local read");
        assert_eq!(
            Reply::decode(&read.result),
            Ok(Reply::Value(Bytes::from(format!("v{i}")))),
            "{key}{i} on {addr}"
        );
    }
}

/// The status JSON of the node at `addr`.
fn status(addr: SocketAddr, cluster_id: u64) -> Option<Value> {
    let mut client = Client::connect(addr, cluster_id, CLIENT_TIMEOUT).ok()?;
    serde_json::from_str(&client.status().ok()?).ok()
}

/// Waits until one of `addrs` leads and the others follow it; returns the leader's status.
fn wait_leader(addrs: &[SocketAddr], cluster_id: u64, logs: &dyn Fn() -> String) -> Value {
    let deadline = Instant::now() + WAIT;
    loop {
        let statuses: Vec<Option<Value>> = addrs.iter().map(|a| status(*a, cluster_id)).collect();
        let leader = statuses
            .iter()
            .flatten()
            .find(|s| s["role"] == "leader")
            .cloned();
        if let Some(leader) = leader {
            let id = leader["id"].as_u64();
            if statuses
                .iter()
                .all(|s| s.as_ref().is_some_and(|s| s["leader"].as_u64() == id))
            {
                return leader;
            }
        }
        assert!(
            Instant::now() < deadline,
            "no agreed leader among {addrs:?}: {statuses:?}\n{}",
            logs()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Every node's log tail, node 4's included.
fn logs(cluster: &Cluster, node4: &Extra) -> String {
    format!(
        "{}\n--- node 4 ---\n{}",
        cluster.all_logs(),
        node4.log_tail()
    )
}

/// Runs `lockstep member ARGS`; returns (success, stdout, stderr).
fn member(args: &[&str]) -> (bool, String, String) {
    let output = Command::new(BIN)
        .arg("member")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run lockstep member");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn add_a_node_remove_one_and_restart_from_the_replicated_membership() {
    let mut cluster = Cluster::start(3, "kv", &[]);
    let id = cluster.cluster_id;
    let id_text = id.to_string();
    let original = cluster.client_addrs();
    cluster.wait_leader(WAIT);
    let before = write_keys(&original, id, "before", 0..50);

    // Node 4 joins: empty data dir, the current members and itself.
    let four = loopback_members(4..=4).expect("free ports").remove(0);
    let mut node4 = Extra {
        member: four.clone(),
        data_dir: cluster.dir.path().join("node-4"),
        log: cluster.dir.path().join("node-4.log"),
        process: None,
    };
    let mut members4 = cluster.members.clone();
    members4.push(four.clone());
    match node4.spawn(&cluster, &members4, true) {
        Ok(line) => assert!(
            line.starts_with(&format!("lockstep node 4 ready: peer {}", four.peer_addr)),
            "unexpected ready line {line:?}"
        ),
        // A joining node might announce itself only once added: go on and add it.
        Err(NotReady::TimedOut { .. }) => node4.assert_running("while joining"),
        Err(error) => panic!(
            "node 4 did not become ready ({error:?}):\n{}",
            node4.log_tail()
        ),
    }

    let connect1 = cluster.client_addr(1).to_string();
    let (peer4, client4) = (four.peer_addr.to_string(), four.client_addr.to_string());
    let (ok, stdout, stderr) = member(&[
        "add",
        "4",
        "--peer-addr",
        &peer4,
        "--client-addr",
        &client4,
        "--connect",
        &connect1,
        "--cluster-id",
        &id_text,
        "--timeout-ms",
        "60000",
    ]);
    assert!(
        ok && stdout.contains("added node 4 as a learner at index")
            && stdout.contains("promoted node 4 to voter at index"),
        "member add failed:\nstdout: {stdout}\nstderr: {stderr}\n{}",
        logs(&cluster, &node4)
    );
    node4.assert_running("after it was added");
    let after_add = write_keys(&original, id, "after-add", 0..20);

    // Node 4 follows and has applied all the leader committed.
    let deadline = Instant::now() + WAIT;
    loop {
        let leader = wait_leader(&original, id, &|| logs(&cluster, &node4));
        let mine = status(four.client_addr, id);
        let done = mine.as_ref().is_some_and(|mine| {
            mine["role"] == "follower"
                && mine["leader"] == leader["id"]
                && mine["applied"] == leader["commit"]
        }) && leader["peers"]
            .as_array()
            .is_some_and(|peers| peers.iter().any(|peer| peer["id"] == 4));
        if done {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "node 4 did not catch up: {mine:?} vs leader {leader}\n{}",
            logs(&cluster, &node4)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    check_keys(four.client_addr, id, "before", 0..50, before);
    check_keys(four.client_addr, id, "after-add", 0..20, after_add);

    // Node 1 leaves (it may be the leader: it commits its removal, then steps down).
    let mut all: Vec<SocketAddr> = original.clone();
    all.push(four.client_addr);
    let connect_all = all
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",");
    let (ok, stdout, stderr) = member(&[
        "remove",
        "1",
        "--connect",
        &connect_all,
        "--cluster-id",
        &id_text,
    ]);
    assert!(
        ok && stdout.contains("removed node 1 at index"),
        "member remove failed:\nstdout: {stdout}\nstderr: {stderr}\n{}",
        logs(&cluster, &node4)
    );
    cluster.kill9(1);
    let rest = vec![
        cluster.client_addr(2),
        cluster.client_addr(3),
        four.client_addr,
    ];
    wait_leader(&rest, id, &|| logs(&cluster, &node4));
    let after_remove = write_keys(&rest, id, "after-remove", 0..20);
    check_keys(four.client_addr, id, "after-remove", 0..20, after_remove);

    // Everyone stops. Node 2 comes back with its original flags (members 1-3), node 4 with its
    // own (without --join: it is a member now); 1 and 3 stay down.
    cluster.stop(2);
    cluster.stop(3);
    node4.kill();
    cluster.restart(2);
    if let Err(error) = node4.spawn(&cluster, &members4, false) {
        panic!(
            "node 4 printed no ready line at its restart ({error:?}):\n{}",
            logs(&cluster, &node4)
        );
    }
    let pair = vec![cluster.client_addr(2), four.client_addr];
    wait_leader(&pair, id, &|| logs(&cluster, &node4));
    let after_restart = write_keys(&pair, id, "after-restart", 0..10);
    check_keys(four.client_addr, id, "after-restart", 0..10, after_restart);

    // Node 3 (original flags too) rejoins and catches up.
    cluster.restart(3);
    let deadline = Instant::now() + WAIT;
    loop {
        let leader = wait_leader(&rest, id, &|| logs(&cluster, &node4));
        let three = status(cluster.client_addr(3), id);
        if three
            .as_ref()
            .is_some_and(|three| three["applied"] == leader["commit"])
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "node 3 did not catch up: {three:?} vs leader {leader}\n{}",
            logs(&cluster, &node4)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    check_keys(
        cluster.client_addr(3),
        id,
        "after-restart",
        0..10,
        after_restart,
    );
}
