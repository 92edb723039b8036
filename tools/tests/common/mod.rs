//! Harness for multi-process tests: a cluster of real `lockstep serve` processes on loopback,
//! each with its own data directory under one temp dir, and helpers to kill (-9), stop (SIGTERM),
//! restart and query them. Every child is killed when the [`Cluster`] drops, even when a test
//! panics. Each node's stderr is appended to `<dir>/node-<id>.log`; failures print the tails.

#![allow(dead_code)] // Each test binary uses its own subset of the harness.

pub mod apps;

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use lockstep::client::{Client, ClientError};
use lockstep::net::ClientTls;
use lockstep_server::MemberConfig;
use serde_json::Value;

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_lockstep");

/// How long a node may take to print its ready line.
const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// Client timeout for harness queries.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(5);

/// How many times [`Cluster::start`] picks fresh ports before a port in use fails it.
const START_ATTEMPTS: usize = 5;

/// `n` distinct free loopback ports, outside the kernel's ephemeral range (see
/// `lockstep::net::free_loopback_addrs`; another socket may still take one before a node binds
/// it, which [`Cluster::start`] handles).
pub fn free_ports(n: usize) -> Vec<u16> {
    lockstep::net::free_loopback_addrs(n)
        .expect("free loopback ports")
        .iter()
        .map(std::net::SocketAddr::port)
        .collect()
}

/// Why a node did not print its ready line.
enum NotReady {
    /// It exited because its address was in use (a port picked free was taken meanwhile).
    PortTaken,
    /// Anything else; the message says what and holds the node's log tail.
    Failed(String),
}

/// One `lockstep serve` process.
struct Proc {
    child: Child,
}

/// A cluster of `lockstep serve` processes.
pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub cluster_id: u64,
    pub members: Vec<MemberConfig>,
    app: String,
    extra_args: Vec<String>,
    procs: Vec<Option<Proc>>,
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
        for attempt in 1..=START_ATTEMPTS {
            let mut cluster = Cluster::spawn_all(n, app, extra_args);
            match (1..=n as u64).try_for_each(|id| cluster.try_wait_ready(id)) {
                Ok(()) => return cluster,
                // Dropping the cluster kills the nodes started so far.
                Err(NotReady::PortTaken) if attempt < START_ATTEMPTS => {}
                Err(NotReady::PortTaken) => panic!(
                    "{START_ATTEMPTS} starts failed on a port in use:\n{}",
                    cluster.all_logs()
                ),
                Err(NotReady::Failed(why)) => panic!("{why}"),
            }
        }
        unreachable!("the last attempt returns or panics")
    }

    /// Spawns `n` nodes on fresh ports in a fresh directory, without waiting for them.
    fn spawn_all(n: usize, app: &str, extra_args: &[&str]) -> Cluster {
        let ports = free_ports(2 * n);
        let members = (0..n)
            .map(|i| MemberConfig {
                id: i as u64 + 1,
                peer_addr: SocketAddr::from(([127, 0, 0, 1], ports[2 * i])),
                client_addr: SocketAddr::from(([127, 0, 0, 1], ports[2 * i + 1])),
            })
            .collect();
        let mut cluster = Cluster {
            dir: tempfile::tempdir().expect("temp dir"),
            cluster_id: 4242,
            members,
            app: app.to_string(),
            extra_args: extra_args.iter().map(|arg| arg.to_string()).collect(),
            procs: (0..n).map(|_| None).collect(),
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
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path(id))
            .expect("open node log");
        let mut command = Command::new(BIN);
        command
            .arg("serve")
            .args(["--id", &id.to_string()])
            .args(["--cluster-id", &self.cluster_id.to_string()])
            .arg("--data-dir")
            .arg(self.data_dir(id))
            .args(["--app", &self.app]);
        for member in &self.members {
            command.args(["--member", &member.to_string()]);
        }
        command
            .args(&self.extra_args)
            .env("LOCKSTEP_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log));
        let child = command.spawn().expect("spawn lockstep serve");
        self.procs[id as usize - 1] = Some(Proc { child });
    }

    fn wait_ready(&mut self, id: u64) {
        match self.try_wait_ready(id) {
            Ok(()) => {}
            Err(NotReady::PortTaken) => panic!(
                "node {id} found its address in use; its log:\n{}",
                self.log_tail(id)
            ),
            Err(NotReady::Failed(why)) => panic!("{why}"),
        }
    }

    /// Waits for node `id`'s ready line; a node that exits on an address in use is
    /// [`NotReady::PortTaken`].
    fn try_wait_ready(&mut self, id: u64) -> Result<(), NotReady> {
        let proc = self.procs[id as usize - 1].as_mut().expect("spawned");
        let stdout = proc.child.stdout.take().expect("piped stdout");
        let rx = ready_lines(stdout);
        match rx.recv_timeout(READY_TIMEOUT) {
            Ok(line) => {
                let expected = format!("lockstep node {id} ready: peer {}", self.peer_addr(id));
                assert!(
                    line.starts_with(&expected),
                    "unexpected ready line {line:?}"
                );
                Ok(())
            }
            // Its stdout closed without a ready line: the process is exiting.
            Err(mpsc::RecvTimeoutError::Disconnected)
                if self.log_tail(id).contains("Address already in use") =>
            {
                Err(NotReady::PortTaken)
            }
            Err(err) => Err(NotReady::Failed(format!(
                "node {id} did not become ready ({err:?}); its log:\n{}",
                self.log_tail(id)
            ))),
        }
    }

    /// The last lines of node `id`'s stderr.
    pub fn log_tail(&self, id: u64) -> String {
        let mut text = String::new();
        if let Ok(mut file) = File::open(self.log_path(id)) {
            let _ = file.read_to_string(&mut text);
        }
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
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
        let mut proc = self.procs[id as usize - 1].take().expect("node is running");
        proc.child.kill().expect("kill -9");
        proc.child.wait().expect("reap");
    }

    /// Sends SIGTERM to node `id` and returns its exit status.
    pub fn stop(&mut self, id: u64) -> ExitStatus {
        let mut proc = self.procs[id as usize - 1].take().expect("node is running");
        let status = Command::new("kill")
            .args(["-TERM", &proc.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -TERM failed");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = proc.child.try_wait().expect("try_wait") {
                return status;
            }
            if Instant::now() > deadline {
                let _ = proc.child.kill();
                panic!(
                    "node {id} did not exit after SIGTERM:\n{}",
                    self.log_tail(id)
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Node `id`'s status JSON, or the error.
    pub fn status(&self, id: u64) -> Result<Value, ClientError> {
        let mut client = Client::connect_with(
            self.client_addr(id),
            self.cluster_id,
            CLIENT_TIMEOUT,
            None,
            self.client_tls.as_ref(),
        )?;
        let json = client.status()?;
        Ok(serde_json::from_str(&json).expect("status is JSON"))
    }

    /// Waits until a running node reports itself leader and the others agree; returns its id.
    pub fn wait_leader(&self, timeout: Duration) -> u64 {
        let deadline = Instant::now() + timeout;
        loop {
            let up: Vec<u64> = self
                .ids()
                .into_iter()
                .filter(|id| self.is_up(*id))
                .collect();
            let statuses: Vec<Value> = up.iter().filter_map(|id| self.status(*id).ok()).collect();
            let leader = statuses
                .iter()
                .find(|status| status["role"] == "leader")
                .map(|status| status["id"].as_u64().expect("id"));
            if let Some(leader) = leader {
                let agreed = statuses
                    .iter()
                    .all(|status| status["leader"].as_u64() == Some(leader));
                if agreed && statuses.len() == up.len() {
                    return leader;
                }
            }
            assert!(
                Instant::now() < deadline,
                "no agreed leader within {timeout:?}: {statuses:?}\n{}",
                self.all_logs()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until every node runs and reports the same applied index, equal to the leader's
    /// commit index; returns it.
    pub fn wait_converged(&self, timeout: Duration) -> u64 {
        let deadline = Instant::now() + timeout;
        loop {
            let statuses: Vec<Option<Value>> = self
                .ids()
                .into_iter()
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

impl Drop for Cluster {
    fn drop(&mut self) {
        for proc in self.procs.iter_mut().filter_map(Option::take) {
            let mut child = proc.child;
            let _ = child.kill();
            let _ = child.wait();
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

/// The ready line(s) a `lockstep serve` process prints on `stdout`, as they come.
pub fn ready_lines(stdout: std::process::ChildStdout) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if line.starts_with(lockstep_server::READY_MARKER) && tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
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
