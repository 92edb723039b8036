//! A local cluster of node processes that never outlives the bench.
//!
//! Owns the node processes and their temporary directory (configs, data, output logs). It
//! guarantees:
//! - every started process is stopped (SIGTERM, then SIGKILL after [`STOP_GRACE`]) and reaped
//!   when the [`LocalCluster`] (or, during start-up, the half-started node) is dropped, whether
//!   the run ended, failed, panicked or was interrupted; the temporary directory is removed
//!   after the processes are gone;
//! - the nodes run in their own process group, so a terminal's Ctrl-C reaches only the bench,
//!   which then stops them in order; and each asks the kernel to SIGKILL it should the bench
//!   die without cleaning up (`PR_SET_PDEATHSIG`);
//! - [`LocalCluster::start`] returns only once every node printed its ready line
//!   (`lockstep node <id> ready: ...`, on stdout or stderr); a node that exits or stays silent
//!   past the timeout fails the start with the tail of its output in the error.

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use lockstep_server::apps::AppKind;
use lockstep_server::{MemberConfig, ServerConfig, Tuning};
use lockstep_testkit::ports::loopback_members;
use lockstep_testkit::process::{self, Launch, NodeProcess, NotReady, Output, SpawnError};
use tempfile::TempDir;

use crate::interrupt::Interrupt;

/// How long a node may take to exit after SIGTERM before it is killed.
pub use lockstep_testkit::process::STOP_GRACE;

/// Lines of a node's output quoted in an error.
const TAIL_LINES: usize = 20;

/// How a node process is started: `program args... CONFIG_FILE`.
#[derive(Clone, Debug)]
pub struct NodeCommand {
    /// The executable.
    pub program: PathBuf,
    /// Arguments before the config file's path.
    pub args: Vec<String>,
}

impl NodeCommand {
    /// This executable, re-run as `lockstep-bench node --config FILE`.
    pub fn this_executable() -> io::Result<NodeCommand> {
        Ok(NodeCommand {
            program: std::env::current_exe()?,
            args: vec!["node".to_string(), "--config".to_string()],
        })
    }
}

/// What a local cluster is made of.
#[derive(Clone, Debug)]
pub struct ClusterSpec {
    /// Number of nodes (ids 1..=nodes).
    pub nodes: usize,
    /// The cluster id.
    pub cluster_id: u64,
    /// The state machine every node runs.
    pub app: AppKind,
    /// Every node's tuning.
    pub tuning: Tuning,
    /// Where to create the temporary directory (default: the system's temp dir).
    pub parent_dir: Option<PathBuf>,
    /// How long to wait for every node's ready line.
    pub ready_timeout: Duration,
}

/// A running local cluster. Dropping it stops the nodes and removes its directory.
pub struct LocalCluster {
    // Field order matters: the nodes are dropped (stopped) before the directory is removed.
    nodes: Vec<NodeProcess>,
    members: Vec<MemberConfig>,
    dir: TempDir,
}

/// How one node ended when the cluster was stopped.
#[derive(Clone, Debug)]
pub struct NodeExit {
    /// The node.
    pub id: u64,
    /// Its exit status, as text (`exit status: 0`, `signal: 9 (SIGKILL)`).
    pub status: String,
    /// Whether it exited 0 after SIGTERM (a clean shutdown).
    pub clean: bool,
}

impl LocalCluster {
    /// Starts `spec.nodes` processes with `command` and waits until each is ready.
    pub fn start(
        spec: &ClusterSpec,
        command: &NodeCommand,
        interrupt: &Interrupt,
    ) -> Result<LocalCluster, String> {
        assert!(spec.nodes >= 1, "a cluster needs a node, spec {spec:?}");
        let dir = match &spec.parent_dir {
            Some(parent) => tempfile::Builder::new()
                .prefix("lockstep-bench-")
                .tempdir_in(parent),
            None => tempfile::Builder::new().prefix("lockstep-bench-").tempdir(),
        }
        .map_err(|error| format!("creating the cluster's temporary directory: {error}"))?;
        let members = loopback_members(1..=spec.nodes as u64)
            .map_err(|error| format!("finding free loopback ports: {error}"))?;
        let mut nodes = Vec::with_capacity(spec.nodes);
        for member in &members {
            let config = ServerConfig {
                id: member.id,
                cluster_id: spec.cluster_id,
                data_dir: dir.path().join(format!("node-{}", member.id)),
                app: spec.app,
                metrics_addr: None,
                log_level: None,
                log_format: None,
                members: members.clone(),
                join: false,
                tuning: spec.tuning.clone(),
                security: Default::default(),
                limits: Default::default(),
            };
            nodes.push(spawn(&config, dir.path(), command)?);
        }
        wait_ready(&mut nodes, spec.ready_timeout, interrupt)?;
        Ok(LocalCluster {
            nodes,
            members,
            dir,
        })
    }

    /// The members (ids and addresses).
    pub fn members(&self) -> &[MemberConfig] {
        &self.members
    }

    /// The temporary directory holding configs, data and output logs.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Peak resident memory (VmHWM) of each node process so far, by id; `None` when unreadable.
    pub fn peak_rss_bytes(&self) -> Vec<(u64, Option<u64>)> {
        self.nodes
            .iter()
            .map(|node| (node.id(), peak_rss_bytes(&node.pid().to_string())))
            .collect()
    }

    /// Each node's id and process id.
    pub fn pids(&self) -> Vec<(u64, u32)> {
        self.nodes
            .iter()
            .map(|node| (node.id(), node.pid()))
            .collect()
    }

    /// Node ids whose process has exited, with the status.
    pub fn exited(&mut self) -> Vec<(u64, String)> {
        self.nodes
            .iter_mut()
            .filter_map(|node| match node.try_exit() {
                Ok(Some(status)) => Some((node.id(), status.to_string())),
                _ => None,
            })
            .collect()
    }

    /// The last lines of node `id`'s output.
    pub fn output_tail(&self, id: u64) -> String {
        self.nodes
            .iter()
            .find(|node| node.id() == id)
            .map_or_else(String::new, |node| node.log_tail(TAIL_LINES))
    }

    /// Stops every node (SIGTERM to all, then each gets the rest of [`STOP_GRACE`] before
    /// SIGKILL), removes the directory, and says how each node ended.
    pub fn stop(mut self) -> Vec<NodeExit> {
        process::stop_all(&mut self.nodes, STOP_GRACE)
            .into_iter()
            .map(|(id, stopped)| NodeExit {
                id,
                clean: stopped
                    .as_ref()
                    .is_ok_and(|stopped| stopped.status.success()),
                status: stopped.map_or_else(|_| "unknown".to_string(), |s| s.status.to_string()),
            })
            .collect()
        // `self` drops here: the processes are reaped, so only the directory goes.
    }
}

/// Writes node `config.id`'s config into `dir` and starts it as `command CONFIG_FILE`, its
/// stdout and stderr copied into `dir/node-<id>.out`. Dropping the node stops it (SIGTERM, then
/// SIGKILL after [`STOP_GRACE`]).
fn spawn(config: &ServerConfig, dir: &Path, command: &NodeCommand) -> Result<NodeProcess, String> {
    let id = config.id;
    let config_path = dir.join(format!("node-{id}.toml"));
    let text =
        toml::to_string(config).map_err(|error| format!("encoding node {id}'s config: {error}"))?;
    std::fs::write(&config_path, text)
        .map_err(|error| format!("writing {}: {error}", config_path.display()))?;
    let output_path = dir.join(format!("node-{id}.out"));
    Launch::new(id, &command.program, output_path, Output::BothCopied)
        .args(&command.args)
        .arg(&config_path)
        .tied_to_supervisor()
        .stop_on_drop(STOP_GRACE)
        .spawn()
        .map_err(|error| match error {
            SpawnError::Log { path, source } => format!("creating {}: {source}", path.display()),
            SpawnError::Program(error) => format!(
                "starting node {id} ({}): {error}",
                command.program.display()
            ),
        })
}

/// Waits until every node printed its ready line; an error names the node that exited or
/// stayed silent, with the tail of its output.
fn wait_ready(
    nodes: &mut [NodeProcess],
    timeout: Duration,
    interrupt: &Interrupt,
) -> Result<(), String> {
    let tail = |nodes: &[NodeProcess], id: u64| {
        nodes
            .iter()
            .find(|node| node.id() == id)
            .map_or_else(String::new, |node| node.log_tail(TAIL_LINES))
    };
    process::wait_all_ready(nodes, timeout, &|| interrupt.is_set()).map_err(|error| match error {
        NotReady::Stopped => "interrupted while the nodes were starting".to_string(),
        NotReady::Exited { id, status } => format!(
            "node {id} exited ({status}) before it was ready; its last output:\n{}",
            tail(nodes, id)
        ),
        NotReady::TimedOut { id, after } => format!(
            "node {id} printed no ready line within {after:?}; its last output:\n{}",
            tail(nodes, id)
        ),
        NotReady::Unwatchable { id, error } => format!("node {id} cannot be watched: {error}"),
    })
}

/// Peak resident memory (VmHWM) of process `pid` (a number or `self`), in bytes: anonymous
/// memory and the pages of mapped files (such as log segments) alike.
pub fn peak_rss_bytes(pid: &str) -> Option<u64> {
    proc_status_bytes(pid, "VmHWM:")
}

/// Anonymous resident memory (RssAnon) of process `pid` now, in bytes: the heap and stacks,
/// without the pages of mapped files.
pub fn anon_rss_bytes(pid: &str) -> Option<u64> {
    proc_status_bytes(pid, "RssAnon:")
}

/// A `KEY: N kB` line of `/proc/PID/status`, in bytes.
fn proc_status_bytes(pid: &str, key: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    // "VmHWM:	    1234 kB"
    let line = status.lines().find(|line| line.starts_with(key))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    fn spec(nodes: usize, parent: &Path, ready_timeout: Duration) -> ClusterSpec {
        ClusterSpec {
            nodes,
            cluster_id: 7,
            app: AppKind::Journal,
            tuning: Tuning::default(),
            parent_dir: Some(parent.to_path_buf()),
            ready_timeout,
        }
    }

    /// A fake node: a shell script given the config path as `$1`. It writes its pid to
    /// `pid_dir/ID`; nodes 1 and 2 print their ready line and sleep, node 3 first runs
    /// `last_node_script`.
    fn fake_node(pid_dir: &Path, last_node_script: &str) -> NodeCommand {
        let script = format!(
            r#"id=$(grep -m1 '^id = ' "$1" | cut -d' ' -f3); echo $$ > {pids}/$id;
               if [ "$id" = 3 ]; then {last_node_script}; fi;
               echo "lockstep node $id ready: peer x client y"; exec sleep 60"#,
            pids = pid_dir.display()
        );
        NodeCommand {
            program: "/bin/sh".into(),
            args: vec!["-c".to_string(), script, "fake-node".to_string()],
        }
    }

    /// The pids the fake nodes wrote.
    fn fake_pids(pid_dir: &Path) -> Vec<i32> {
        std::fs::read_dir(pid_dir)
            .unwrap()
            .map(|entry| {
                let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
                text.trim().parse().unwrap()
            })
            .collect()
    }

    fn alive(pid: i32) -> bool {
        // SAFETY: signal 0 only checks that the process exists.
        unsafe { libc::kill(pid, 0) == 0 }
    }

    #[test]
    fn a_started_cluster_is_stopped_and_its_directory_removed() {
        let parent = tempfile::tempdir().unwrap();
        let pid_dir = tempfile::tempdir().unwrap();
        let cluster = LocalCluster::start(
            &spec(3, parent.path(), Duration::from_secs(10)),
            &fake_node(pid_dir.path(), "true"),
            &Interrupt::default(),
        )
        .unwrap();
        assert_eq!(cluster.members().len(), 3);
        let config = std::fs::read_to_string(cluster.dir().join("node-2.toml")).unwrap();
        let parsed: ServerConfig = toml::from_str(&config).unwrap();
        assert_eq!(parsed.id, 2);
        assert_eq!(parsed.members, cluster.members());
        assert!(cluster
            .peak_rss_bytes()
            .iter()
            .all(|(_, rss)| rss.is_some()));
        let pids = fake_pids(pid_dir.path());
        assert_eq!(pids.len(), 3);
        assert!(pids.iter().all(|&pid| alive(pid)));
        let exits = cluster.stop();
        // `sleep` dies of SIGTERM: not a clean exit, but stopped well within the grace time.
        assert_eq!(exits.len(), 3);
        assert!(exits.iter().all(|exit| !exit.clean), "{exits:?}");
        assert!(pids.iter().all(|&pid| !alive(pid)));
        assert_eq!(std::fs::read_dir(parent.path()).unwrap().count(), 0);
    }

    #[test]
    fn a_node_that_dies_at_start_fails_the_start_and_everything_is_cleaned_up() {
        let parent = tempfile::tempdir().unwrap();
        let pid_dir = tempfile::tempdir().unwrap();
        // Node 3 dies once nodes 1 and 2 run (wrote their pids).
        let dies = format!(
            "while [ ! -s {pids}/1 ] || [ ! -s {pids}/2 ]; do sleep 0.01; done; \
             echo 'cannot bind: address in use' >&2; exit 3",
            pids = pid_dir.path().display()
        );
        let error = LocalCluster::start(
            &spec(3, parent.path(), Duration::from_secs(10)),
            &fake_node(pid_dir.path(), &dies),
            &Interrupt::default(),
        )
        .err()
        .unwrap();
        assert!(error.contains("node 3 exited"), "{error}");
        assert!(error.contains("address in use"), "{error}");
        // Nodes 1 and 2 had started: they are gone too.
        let pids = fake_pids(pid_dir.path());
        assert_eq!(pids.len(), 3);
        assert!(pids.iter().all(|&pid| !alive(pid)));
        assert_eq!(std::fs::read_dir(parent.path()).unwrap().count(), 0);
    }

    #[test]
    fn a_silent_node_times_out_and_everything_is_cleaned_up() {
        let parent = tempfile::tempdir().unwrap();
        let pid_dir = tempfile::tempdir().unwrap();
        let start = Instant::now();
        let error = LocalCluster::start(
            &spec(3, parent.path(), Duration::from_millis(500)),
            &fake_node(pid_dir.path(), "exec sleep 60"),
            &Interrupt::default(),
        )
        .err()
        .unwrap();
        assert!(error.contains("node 3 printed no ready line"), "{error}");
        // SIGTERM ended the sleeps at once: no grace period was waited out.
        assert!(start.elapsed() < STOP_GRACE, "{:?}", start.elapsed());
        assert!(fake_pids(pid_dir.path()).iter().all(|&pid| !alive(pid)));
        assert_eq!(std::fs::read_dir(parent.path()).unwrap().count(), 0);
    }

    #[test]
    fn a_panic_while_the_cluster_runs_still_stops_it() {
        let parent = tempfile::tempdir().unwrap();
        let pid_dir = tempfile::tempdir().unwrap();
        // Caught on this same thread, so it is the guard's Drop that stops the nodes (not the
        // parent-death signal, which fires when the spawning thread ends).
        let outcome = std::panic::catch_unwind(|| {
            let _cluster = LocalCluster::start(
                &spec(3, parent.path(), Duration::from_secs(10)),
                &fake_node(pid_dir.path(), "true"),
                &Interrupt::default(),
            )
            .unwrap();
            panic!("the bench failed mid-run");
        });
        assert!(outcome.is_err());
        let pids = fake_pids(pid_dir.path());
        assert_eq!(pids.len(), 3);
        assert!(pids.iter().all(|&pid| !alive(pid)));
        assert_eq!(std::fs::read_dir(parent.path()).unwrap().count(), 0);
    }

    #[test]
    fn an_interrupt_during_start_cleans_up() {
        let parent = tempfile::tempdir().unwrap();
        let pid_dir = tempfile::tempdir().unwrap();
        let interrupt = Interrupt::default();
        interrupt.set();
        let error = LocalCluster::start(
            &spec(1, parent.path(), Duration::from_secs(10)),
            &fake_node(pid_dir.path(), "true"),
            &interrupt,
        )
        .err()
        .unwrap();
        assert!(error.contains("interrupted"), "{error}");
        assert!(fake_pids(pid_dir.path()).iter().all(|&pid| !alive(pid)));
        assert_eq!(std::fs::read_dir(parent.path()).unwrap().count(), 0);
    }

    #[test]
    fn peak_rss_of_this_process_is_readable() {
        let peak = peak_rss_bytes("self").unwrap();
        let anon = anon_rss_bytes("self").unwrap();
        assert!(anon > 0 && anon <= peak, "anon {anon} peak {peak}");
        assert_eq!(peak_rss_bytes("0"), None);
    }
}
