//! The cluster under test: real `lockstep serve` processes of the running binary, each with its
//! own data directory under the run directory and its stderr appended to `node-<id>.log`
//! there, on loopback or (with partitions) each in its own network namespace. It can kill -9,
//! pause (SIGSTOP), resume (SIGCONT) and restart nodes and ask them for their status. Every
//! child is killed when the [`Cluster`] drops.
//!
//! The members change over a run when the `member` nemesis replaces a node: the harness keeps
//! every node it ever started (by id; ids are never reused) and, apart from them, the ids of
//! the current members, which it updates once a change is known to be committed. A node is
//! always restarted with the `--member` flags it first started with (the original members for
//! the first nodes): a restarted node must take the members from its log, not from its flags.
//! The client addresses of the current members are published in an [`AddressBook`] that the
//! workload's clients follow.
//!
//! With power-cut disks (the `power` nemesis), each node's data directory is the mount point of
//! its own [`PowerDisk`], kept in `disk-<id>` under the run directory: a power cut forgets what
//! the node never synced, kills it, and powers the disk on again before the node restarts.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use lockstep_server::MemberConfig;
use lockstep_testkit::ports::loopback_members;
use lockstep_testkit::process::{self, Launch, NodeProcess, NotReady, Output};
use lockstep_testkit::serve::{ServeFlags, StatusQuery};
use serde_json::Value;

use super::netns::Netns;
use super::workload::AddressBook;
use crate::powerfs::{CutMode, CutReport, PowerDisk};

/// How long a node may take to print its ready line.
const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// Timeout of the harness's own status queries.
const STATUS_TIMEOUT: Duration = Duration::from_millis(500);

/// Peer and client ports of a node in its own namespace.
const NETNS_PEER_PORT: u16 = 7000;
const NETNS_CLIENT_PORT: u16 = 7001;

/// The cluster id every chaos cluster uses.
pub const CLUSTER_ID: u64 = 7007;

/// One node the harness started at some point of the run.
struct Node {
    /// Its id and addresses.
    config: MemberConfig,
    /// The `--member` flags it is (re)started with: the members when it first started, and
    /// itself.
    member_flags: Vec<MemberConfig>,
    /// Started with `--join` (a replacement; ignored by the node once its log holds anything).
    join: bool,
    process: Option<NodeProcess>,
    paused: bool,
}

/// A running (or partly running) cluster. Dropping it kills every node (SIGKILL) before the
/// namespaces and disks go: the field order says so.
pub struct Cluster {
    dir: PathBuf,
    app: String,
    extra_args: Vec<String>,
    /// Every node started in the run, current members or not.
    nodes: BTreeMap<u64, Node>,
    /// The current members (voters and learners), in id order.
    members: Vec<u64>,
    /// The client addresses of the current members, for the workload's clients.
    addresses: AddressBook,
    netns: Option<Netns>,
    /// Each node's power-cut disk, when the cluster runs on them (dropped, so unmounted, after
    /// every child was killed).
    disks: Option<BTreeMap<u64, PowerDisk>>,
}

/// Members `ids` on free loopback ports, outside the kernel's ephemeral range, so that a killed
/// node's port is not taken by some connection before it restarts on it.
fn loopback(ids: std::ops::RangeInclusive<u64>) -> Result<Vec<MemberConfig>, String> {
    loopback_members(ids).map_err(|err| format!("cannot bind a loopback port: {err}"))
}

impl Cluster {
    /// Starts `nodes` nodes running `app` with `extra_args` under `dir`, in network namespaces
    /// when `netns` is given, on power-cut disks when `power_disks`, and waits until each is
    /// ready.
    pub fn start(
        nodes: u64,
        app: &str,
        dir: &Path,
        extra_args: Vec<String>,
        netns: Option<Netns>,
        power_disks: bool,
    ) -> Result<Cluster, String> {
        let configs: Vec<MemberConfig> = match &netns {
            Some(netns) => (1..=nodes).map(|id| netns_member(netns, id)).collect(),
            None => loopback(1..=nodes)?,
        };
        let mut cluster = Cluster {
            dir: dir.to_path_buf(),
            app: app.to_string(),
            extra_args,
            nodes: configs
                .iter()
                .map(|config| {
                    let node = Node {
                        config: config.clone(),
                        member_flags: configs.clone(),
                        join: false,
                        process: None,
                        paused: false,
                    };
                    (config.id, node)
                })
                .collect(),
            members: (1..=nodes).collect(),
            addresses: AddressBook::new(configs.iter().map(|c| c.client_addr).collect()),
            netns,
            disks: power_disks.then(BTreeMap::new),
        };
        for id in cluster.ids() {
            cluster.start_node(id)?;
        }
        Ok(cluster)
    }

    /// Ids of the current members.
    pub fn ids(&self) -> Vec<u64> {
        self.members.clone()
    }

    /// The network namespaces, when the cluster runs in them.
    pub fn netns(&self) -> Option<&Netns> {
        self.netns.as_ref()
    }

    /// Client addresses of the current members, in id order.
    pub fn client_addrs(&self) -> Vec<SocketAddr> {
        self.members
            .iter()
            .map(|id| self.client_addr(*id))
            .collect()
    }

    /// The address book the workload's clients follow (updated with the members).
    pub fn address_book(&self) -> AddressBook {
        self.addresses.clone()
    }

    /// Node `id`'s addresses (any node started in the run).
    pub fn member_config(&self, id: u64) -> &MemberConfig {
        &self.node(id).config
    }

    /// Node `id`'s client address.
    pub fn client_addr(&self, id: u64) -> SocketAddr {
        self.node(id).config.client_addr
    }

    fn node(&self, id: u64) -> &Node {
        self.nodes
            .get(&id)
            .unwrap_or_else(|| panic!("node {id} was never started"))
    }

    fn node_mut(&mut self, id: u64) -> &mut Node {
        self.nodes
            .get_mut(&id)
            .unwrap_or_else(|| panic!("node {id} was never started"))
    }

    /// Node `id`'s data directory.
    pub fn data_dir(&self, id: u64) -> PathBuf {
        self.dir.join(format!("node-{id}"))
    }

    fn log_path(&self, id: u64) -> PathBuf {
        self.dir.join(format!("node-{id}.log"))
    }

    /// Whether node `id`'s process runs (possibly paused).
    pub fn is_up(&self, id: u64) -> bool {
        self.node(id).process.is_some()
    }

    /// Whether node `id` is paused.
    pub fn is_paused(&self, id: u64) -> bool {
        self.node(id).paused
    }

    /// Sets the current members (once the harness knows a change committed) and publishes
    /// their client addresses to the workload's clients.
    pub fn set_members(&mut self, mut ids: Vec<u64>) {
        ids.sort_unstable();
        ids.dedup();
        for id in &ids {
            assert!(self.nodes.contains_key(id), "member {id} was never started");
        }
        self.members = ids;
        self.addresses.set(self.client_addrs());
    }

    /// Creates a new node with an id never used in the run and fresh addresses (a new machine),
    /// and starts it with `--join` on an empty data directory, its `--member` flags naming the
    /// current members and itself. It is not a member until the leader adds it.
    pub fn start_joining_node(&mut self) -> Result<u64, String> {
        let id = self.nodes.keys().next_back().copied().unwrap_or(0) + 1;
        let config = match &mut self.netns {
            Some(netns) => {
                netns.add_node(id)?;
                netns_member(netns, id)
            }
            None => loopback(id..=id)?.remove(0),
        };
        let mut member_flags: Vec<MemberConfig> = self
            .members
            .iter()
            .map(|member| self.member_config(*member).clone())
            .collect();
        member_flags.push(config.clone());
        let data_dir = self.data_dir(id);
        if data_dir.exists() {
            return Err(format!("{} exists already", data_dir.display()));
        }
        self.nodes.insert(
            id,
            Node {
                config,
                member_flags,
                join: true,
                process: None,
                paused: false,
            },
        );
        self.start_node(id)?;
        Ok(id)
    }

    /// Mounts node `id`'s power-cut disk at its data directory, when the cluster runs on them
    /// and it is not mounted yet.
    fn mount_disk(&mut self, id: u64) -> Result<(), String> {
        let data_dir = self.data_dir(id);
        let backing = self.dir.join(format!("disk-{id}"));
        let Some(disks) = self.disks.as_mut() else {
            return Ok(());
        };
        if disks.contains_key(&id) {
            return Ok(());
        }
        std::fs::create_dir_all(&data_dir)
            .map_err(|err| format!("create {}: {err}", data_dir.display()))?;
        disks.insert(id, PowerDisk::mount(&backing, &data_dir)?);
        Ok(())
    }

    /// Cuts the power of the nodes `ids` at once: each disk forgets what its node never synced
    /// as `mode` says (random choices from `seed`), then the nodes are killed. Returns the cuts'
    /// reports added up. Each node stays down until [`Cluster::power_on`].
    pub fn power_cut(
        &mut self,
        ids: &[u64],
        mode: CutMode,
        seed: u64,
    ) -> Result<CutReport, String> {
        let disks = self
            .disks
            .as_ref()
            .expect("a power cut needs power-cut disks");
        let mut total = CutReport::default();
        for (i, id) in ids.iter().enumerate() {
            let disk = disks
                .get(id)
                .unwrap_or_else(|| panic!("node {id} has no power-cut disk"));
            let report = disk.cut(mode, seed.wrapping_add(i as u64))?;
            total.files_with_unsynced_changes += report.files_with_unsynced_changes;
            total.bytes_forgotten += report.bytes_forgotten;
            total.bytes_kept += report.bytes_kept;
            total.dirs_reverted += report.dirs_reverted;
        }
        for &id in ids {
            if self.is_up(id) {
                self.kill9(id);
            }
        }
        Ok(total)
    }

    /// Powers node `id`'s disk on again after a cut and restarts the node on it.
    pub fn power_on(&mut self, id: u64) -> Result<(), String> {
        let disks = self.disks.as_mut().expect("power-cut disks");
        disks
            .get_mut(&id)
            .unwrap_or_else(|| panic!("node {id} has no power-cut disk"))
            .power_on()?;
        self.start_node(id)
    }

    /// Kills node `id` (if up) and deletes its data directory: a machine taken away.
    pub fn wipe(&mut self, id: u64) -> Result<(), String> {
        if self.is_up(id) {
            self.kill9(id);
        }
        if let Some(disk) = self.disks.as_mut().and_then(|disks| disks.remove(&id)) {
            drop(disk);
            let backing = self.dir.join(format!("disk-{id}"));
            std::fs::remove_dir_all(&backing)
                .map_err(|err| format!("wipe {}: {err}", backing.display()))?;
        }
        let data_dir = self.data_dir(id);
        std::fs::remove_dir_all(&data_dir)
            .map_err(|err| format!("wipe {}: {err}", data_dir.display()))
    }

    /// Starts node `id` and waits for its ready line; on failure (it exited or stayed silent)
    /// the error holds the tail of its log.
    pub fn start_node(&mut self, id: u64) -> Result<(), String> {
        assert!(!self.is_up(id), "node {id} is already running");
        self.mount_disk(id)?;
        let node = self.node(id);
        let exe = std::env::current_exe().map_err(|err| format!("own binary: {err}"))?;
        let flags = ServeFlags {
            id,
            cluster_id: CLUSTER_ID,
            data_dir: &self.data_dir(id),
            app: &self.app,
            members: &node.member_flags,
            join: node.join,
        };
        let mut launch = Launch::new(id, exe, self.log_path(id), Output::StderrAppended)
            .args(flags.to_args())
            .args(&self.extra_args)
            .env("LOCKSTEP_LOG", "info");
        if let Some(netns) = &self.netns {
            // SAFETY: the hook only makes the async-signal-safe setns(2) call
            // (`Netns::enter_hook`).
            launch = unsafe { launch.pre_exec(netns.enter_hook(id)) };
        }
        let mut process = launch
            .spawn()
            .map_err(|err| format!("spawn node {id}: {err}"))?;
        match process.wait_ready(READY_TIMEOUT) {
            Ok(_) => {
                let node = self.node_mut(id);
                node.process = Some(process);
                node.paused = false;
                Ok(())
            }
            Err(NotReady::Exited { status, .. }) => Err(format!(
                "node {id} exited ({status}) before it was ready: {}",
                self.why_failed(id)
            )),
            // Dropping the process kills it.
            Err(NotReady::TimedOut { .. } | NotReady::Stopped) => Err(format!(
                "node {id} not ready within {READY_TIMEOUT:?}: {}",
                self.why_failed(id)
            )),
            Err(NotReady::Unwatchable { error, .. }) => Err(format!("wait for node {id}: {error}")),
        }
    }

    /// Kills node `id` with SIGKILL (paused or not) and reaps it.
    pub fn kill9(&mut self, id: u64) {
        let node = self.node_mut(id);
        let mut process = node
            .process
            .take()
            .unwrap_or_else(|| panic!("kill -9 of node {id}, which is not running"));
        node.paused = false;
        process.kill().expect("SIGKILL and reap a child we own");
    }

    fn signal(&self, id: u64, signal: libc::c_int) {
        let process = self
            .node(id)
            .process
            .as_ref()
            .unwrap_or_else(|| panic!("signal {signal} to node {id}, which is not running"));
        if let Err(err) = process.signal(signal) {
            panic!("signal {signal} to node {id} failed: {err}");
        }
    }

    /// Stops node `id` with SIGSTOP.
    pub fn pause(&mut self, id: u64) {
        assert!(!self.is_paused(id), "node {id} is already paused");
        self.signal(id, libc::SIGSTOP);
        self.node_mut(id).paused = true;
    }

    /// Resumes a paused node `id` with SIGCONT.
    pub fn resume(&mut self, id: u64) {
        assert!(self.is_paused(id), "node {id} is not paused");
        self.signal(id, libc::SIGCONT);
        self.node_mut(id).paused = false;
    }

    /// Node `id`'s status JSON.
    pub fn status(&self, id: u64) -> Result<Value, String> {
        let addr = self.client_addr(id);
        let query = StatusQuery {
            cluster_id: CLUSTER_ID,
            timeout: STATUS_TIMEOUT,
            credentials: None,
            tls: None,
        };
        query
            .status(addr)
            .map_err(|err| format!("node {id} at {addr}: {err}"))
    }

    /// The status JSON of the leader among the current members (see [`Cluster::leader`]).
    pub fn leader_status(&self) -> Option<Value> {
        self.ids()
            .into_iter()
            .filter(|id| self.is_up(*id) && !self.is_paused(*id))
            .filter_map(|id| self.status(id).ok())
            .filter(|status| status["role"] == "leader")
            .max_by_key(|status| status["term"].as_u64())
    }

    /// The leader as the running, unpaused members report it: the node that says it leads in
    /// the highest term.
    pub fn leader(&self) -> Option<u64> {
        self.leader_status()
            .and_then(|status| status["id"].as_u64())
    }

    /// Waits up to `timeout` for a leader.
    pub fn wait_leader(&self, timeout: Duration) -> Option<u64> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(leader) = self.leader() {
                return Some(leader);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Reaps nodes whose process ended on its own (a crash: the harness never does that);
    /// returns each with its exit status and the log lines that say why. Covers every node
    /// started in the run, members or not.
    pub fn reap_exited(&mut self) -> Vec<(u64, String)> {
        let mut exited = Vec::new();
        let ids: Vec<u64> = self.nodes.keys().copied().collect();
        for id in ids {
            let node = self.node_mut(id);
            let Some(process) = node.process.as_mut() else {
                continue;
            };
            if let Ok(Some(status)) = process.try_exit() {
                node.process = None;
                node.paused = false;
                exited.push((id, format!("{status}: {}", self.why_failed(id))));
            }
        }
        exited
    }

    /// The last few lines of node `id`'s log that report a failure or a panic.
    pub fn why_failed(&self, id: u64) -> String {
        let tail = self.log_tail(id, 200);
        let lines: Vec<&str> = tail
            .lines()
            .filter(|line| {
                line.contains("panicked") || line.contains("ERROR") || line.contains("failed")
            })
            .collect();
        let next_lines: Vec<String> = tail
            .lines()
            .zip(tail.lines().skip(1))
            .filter(|(line, _)| line.contains("panicked"))
            .map(|(_, next)| next.to_string())
            .collect();
        let mut why: Vec<String> = lines[lines.len().saturating_sub(4)..]
            .iter()
            .map(|line| line.to_string())
            .collect();
        why.extend(next_lines);
        why.join(" | ")
    }

    /// The last `lines` lines of node `id`'s log.
    pub fn log_tail(&self, id: u64, lines: usize) -> String {
        process::log_tail(&self.log_path(id), lines)
    }
}

/// Node `id`'s addresses in its own network namespace.
fn netns_member(netns: &Netns, id: u64) -> MemberConfig {
    MemberConfig {
        id,
        peer_addr: SocketAddr::new(netns.addr(id), NETNS_PEER_PORT),
        client_addr: SocketAddr::new(netns.addr(id), NETNS_CLIENT_PORT),
    }
}
