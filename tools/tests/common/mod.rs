//! Harness for multi-process tests: a cluster of real `lockstep serve` processes on loopback,
//! each with its own data directory under one temp dir, and helpers to kill (-9), stop (SIGTERM),
//! restart and query them. Every child is killed when the [`Cluster`] drops, even when a test
//! panics. Each node's stderr is appended to `<dir>/node-<id>.log`; failures print the tails.

#![allow(dead_code)] // Each test binary uses its own subset of the harness.

pub mod apps;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use lockstep::client::ClientError;
use lockstep::net::ClientTls;
use lockstep_server::MemberConfig;
use lockstep_testkit::ports::{
    loopback_members, mentions_address_in_use, retry_when_port_taken, StartFailure, START_ATTEMPTS,
};
use lockstep_testkit::process::{self, Launch, NodeProcess, Output};
use lockstep_testkit::serve::{agreed_leader, ServeFlags, StatusError, StatusQuery};
use serde_json::Value;

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_lockstep");

/// How long a node may take to print its ready line.
const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// Client timeout for harness queries.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a node may take to exit after SIGTERM in [`Cluster::stop`].
const STOP_TIMEOUT: Duration = Duration::from_secs(20);

/// Lines of a node's log quoted in a failure.
const TAIL_LINES: usize = 40;

/// `n` distinct free loopback ports, outside the kernel's ephemeral range (see
/// `lockstep_testkit::ports`; another socket may still take one before a node binds it, which
/// [`Cluster::start`] handles).
pub fn free_ports(n: usize) -> Vec<u16> {
    lockstep_testkit::ports::free_ports(n).expect("free loopback ports")
}

/// A cluster of `lockstep serve` processes.
pub struct Cluster {
    /// The running nodes (`None` while down), by id - 1; declared first so that they are killed
    /// before their directory goes.
    procs: Vec<Option<NodeProcess>>,
    pub dir: tempfile::TempDir,
    pub cluster_id: u64,
    pub members: Vec<MemberConfig>,
    app: String,
    extra_args: Vec<String>,
    /// How the harness's own queries reach a client port that speaks TLS.
    pub client_tls: Option<ClientTls>,
}

impl Cluster {
    /// Starts `n` nodes running `app`, with `extra_args` (tuning flags) for every node, and waits
    /// until each printed its ready line. A port picked free can be taken (e.g. as the local
    /// port of another test's outgoing connection) before its node binds it: when a node exits
    /// at start because its address is in use, every node is killed and the cluster starts
    /// again on fresh ports in a fresh directory, up to [`START_ATTEMPTS`] times. Any other
    /// start failure fails the test.
    pub fn start(n: usize, app: &str, extra_args: &[&str]) -> Cluster {
        let started = retry_when_port_taken(|_| {
            let mut cluster = Cluster::spawn_all(n, app, extra_args);
            // On failure, dropping the cluster kills the nodes started so far.
            (1..=n as u64).try_for_each(|id| cluster.try_wait_ready(id))?;
            Ok(cluster)
        });
        match started {
            Ok(cluster) => cluster,
            Err(StartFailure::PortTaken(logs)) => {
                panic!("{START_ATTEMPTS} starts failed on a port in use:\n{logs}")
            }
            Err(StartFailure::Failed(why)) => panic!("{why}"),
        }
    }

    /// Spawns `n` nodes on fresh ports in a fresh directory, without waiting for them.
    fn spawn_all(n: usize, app: &str, extra_args: &[&str]) -> Cluster {
        let mut cluster = Cluster {
            procs: (0..n).map(|_| None).collect(),
            dir: tempfile::tempdir().expect("temp dir"),
            cluster_id: 4242,
            members: loopback_members(1..=n as u64).expect("free loopback ports"),
            app: app.to_string(),
            extra_args: extra_args.iter().map(|arg| arg.to_string()).collect(),
            client_tls: None,
        };
        for id in 1..=n as u64 {
            cluster.spawn(id);
        }
        cluster
    }

    /// Ids of all members.
    pub fn ids(&self) -> Vec<u64> {
        self.members.iter().map(|member| member.id).collect()
    }

    /// The data directory of node `id`.
    pub fn data_dir(&self, id: u64) -> PathBuf {
        self.dir.path().join(format!("node-{id}"))
    }

    fn log_path(&self, id: u64) -> PathBuf {
        self.dir.path().join(format!("node-{id}.log"))
    }

    /// Client address of node `id`.
    pub fn client_addr(&self, id: u64) -> SocketAddr {
        self.members[id as usize - 1].client_addr
    }

    /// Peer address of node `id`.
    pub fn peer_addr(&self, id: u64) -> SocketAddr {
        self.members[id as usize - 1].peer_addr
    }

    /// Client addresses of all members.
    pub fn client_addrs(&self) -> Vec<SocketAddr> {
        self.members
            .iter()
            .map(|member| member.client_addr)
            .collect()
    }

    /// Whether node `id` runs.
    pub fn is_up(&self, id: u64) -> bool {
        self.procs[id as usize - 1].is_some()
    }

    /// Starts node `id`'s process and waits for its ready line.
    pub fn restart(&mut self, id: u64) {
        self.spawn(id);
        self.wait_ready(id);
    }

    fn spawn(&mut self, id: u64) {
        assert!(!self.is_up(id), "node {id} is already running");
        let flags = ServeFlags {
            id,
            cluster_id: self.cluster_id,
            data_dir: &self.data_dir(id),
            app: &self.app,
            members: &self.members,
            join: false,
        };
        let node = Launch::new(id, BIN, self.log_path(id), Output::StderrAppended)
            .args(flags.to_args())
            .args(&self.extra_args)
            .env("LOCKSTEP_LOG", "info")
            .spawn()
            .expect("spawn lockstep serve");
        self.procs[id as usize - 1] = Some(node);
    }

    fn wait_ready(&mut self, id: u64) {
        match self.try_wait_ready(id) {
            Ok(()) => {}
            Err(StartFailure::PortTaken(_)) => panic!(
                "node {id} found its address in use; its log:\n{}",
                self.log_tail(id)
            ),
            Err(StartFailure::Failed(why)) => panic!("{why}"),
        }
    }

    /// Waits for node `id`'s ready line. A node that exits on an address in use is
    /// [`StartFailure::PortTaken`], with every node's log tail.
    fn try_wait_ready(&mut self, id: u64) -> Result<(), StartFailure<String>> {
        let node = self.procs[id as usize - 1].as_mut().expect("spawned");
        match node.wait_ready(READY_TIMEOUT) {
            Ok(line) => {
                let expected = format!("lockstep node {id} ready: peer {}", self.peer_addr(id));
                assert!(
                    line.starts_with(&expected),
                    "unexpected ready line {line:?}"
                );
                Ok(())
            }
            Err(process::NotReady::Exited { .. })
                if mentions_address_in_use(&self.log_tail(id)) =>
            {
                Err(StartFailure::PortTaken(self.all_logs()))
            }
            Err(err) => Err(StartFailure::Failed(format!(
                "node {id} did not become ready ({err:?}); its log:\n{}",
                self.log_tail(id)
            ))),
        }
    }

    /// The last lines of node `id`'s stderr.
    pub fn log_tail(&self, id: u64) -> String {
        process::log_tail(&self.log_path(id), TAIL_LINES)
    }

    /// Every node's log tail (for failure messages).
    pub fn all_logs(&self) -> String {
        self.ids()
            .into_iter()
            .map(|id| format!("--- node {id} ---\n{}", self.log_tail(id)))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Kills node `id` with SIGKILL and reaps it.
    pub fn kill9(&mut self, id: u64) {
        let mut node = self.procs[id as usize - 1].take().expect("node is running");
        node.kill().expect("kill -9");
    }

    /// Sends SIGTERM to node `id` and returns its exit status.
    pub fn stop(&mut self, id: u64) -> ExitStatus {
        let mut node = self.procs[id as usize - 1].take().expect("node is running");
        let stopped = node.stop(STOP_TIMEOUT).expect("stop");
        assert!(
            !stopped.killed,
            "node {id} did not exit after SIGTERM:\n{}",
            self.log_tail(id)
        );
        stopped.status
    }

    /// Node `id`'s status JSON, or the error.
    pub fn status(&self, id: u64) -> Result<Value, ClientError> {
        let query = StatusQuery {
            cluster_id: self.cluster_id,
            timeout: CLIENT_TIMEOUT,
            credentials: None,
            tls: self.client_tls.as_ref(),
        };
        match query.status(self.client_addr(id)) {
            Ok(status) => Ok(status),
            Err(StatusError::Client(error)) => Err(error),
            Err(StatusError::NotJson(error)) => panic!("status is not JSON: {error}"),
        }
    }

    /// Waits until a running node reports itself leader and the others agree; returns its id.
    pub fn wait_leader(&self, timeout: Duration) -> u64 {
        let deadline = Instant::now() + timeout;
        loop {
            let statuses: Vec<Option<Value>> = self
                .ids()
                .into_iter()
                .filter(|id| self.is_up(*id))
                .map(|id| self.status(id).ok())
                .collect();
            if let Some(leader) = agreed_leader(&statuses) {
                return leader;
            }
            assert!(
                Instant::now() < deadline,
                "no agreed leader within {timeout:?}: {statuses:?}\n{}",
                self.all_logs()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until every node the harness runs (all but those it killed or stopped) answers and
    /// reports the same applied index, equal to the leader's commit index; returns it.
    pub fn wait_converged(&self, timeout: Duration) -> u64 {
        let deadline = Instant::now() + timeout;
        loop {
            let statuses: Vec<Option<Value>> = self
                .ids()
                .into_iter()
                .filter(|id| self.is_up(*id))
                .map(|id| self.status(id).ok())
                .collect();
            if statuses.iter().all(Option::is_some) {
                let statuses: Vec<Value> = statuses.into_iter().flatten().collect();
                let applied: Vec<u64> = statuses
                    .iter()
                    .map(|status| status["applied"].as_u64().expect("applied"))
                    .collect();
                let leader_commit = statuses
                    .iter()
                    .find(|status| status["role"] == "leader")
                    .map(|status| status["commit"].as_u64().expect("commit"));
                if applied.iter().all(|index| *index == applied[0])
                    && leader_commit == Some(applied[0])
                {
                    return applied[0];
                }
                assert!(
                    Instant::now() < deadline,
                    "replicas did not converge within {timeout:?}: {statuses:?}\n{}",
                    self.all_logs()
                );
            } else {
                assert!(
                    Instant::now() < deadline,
                    "not every node answers: {statuses:?}\n{}",
                    self.all_logs()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// The first index of the oldest log segment in `log_dir` (segment files are named after their
/// first index), or `None` when it holds no segment.
pub fn oldest_segment_index(log_dir: &Path) -> Option<u64> {
    std::fs::read_dir(log_dir)
        .ok()?
        .filter_map(|entry| {
            let name = entry.ok()?.file_name().into_string().ok()?;
            name.strip_suffix(".seg")?.parse::<u64>().ok()
        })
        .min()
}

/// Runs the binary with `args` to completion; returns its status and stderr.
pub fn run_bin(args: &[&str]) -> (ExitStatus, String) {
    let output = Command::new(BIN)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run lockstep");
    (
        output.status,
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}
