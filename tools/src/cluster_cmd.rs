//! `lockstep cluster`: run a local cluster of `lockstep serve` processes in one command.
//!
//! Owns the node processes it starts (re-runs of this executable) and their data directory. It
//! guarantees:
//! - nothing starts unless every port is free: a taken port is refused naming the option and port;
//! - it prints the node table only once every node printed its ready line and a leader is agreed
//!   on; a node that exits or stays silent fails the start with the tail of its log;
//! - a node exiting while the cluster runs is reported with its log tail, the others are stopped
//!   and the command exits 1;
//! - on SIGINT or SIGTERM every node gets SIGTERM, then SIGKILL after [`STOP_GRACE`]; the command
//!   exits 0. Nodes never outlive the command: the stop also runs from a `Drop` guard (panics),
//!   and each node asks the kernel to kill it should the command die (`PR_SET_PDEATHSIG`);
//! - the data directory is a temp dir removed at exit, unless `--keep` or `--dir` is given;
//! - the nodes authenticate each other with a secret in `<dir>/peer-secret` (64 hex digits from
//!   the OS random source, mode 0600; an existing file is reused), unless `--no-peer-secret` is
//!   given or the serve flags after `--` name their own `--peer-secret-file`.
//! - with `--tls`, a throwaway CA and one certificate for `--host` are generated into
//!   `<dir>/tls/` (`ca.pem`, `node.pem`, `node-key.pem`) and every node serves TLS on both ports.

use std::fs::OpenOptions;
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{ExitCode, ExitStatus};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use lockstep::client::Credentials;
use lockstep::net::ClientTls;
use lockstep_server::apps::AppKind;
use lockstep_server::pki::DevPki;
use lockstep_server::{ready_line, MemberConfig, DEFAULT_CLUSTER_ID};
use lockstep_testkit::process::{self, Launch, NodeProcess, NotReady, Output, STOP_GRACE};
use lockstep_testkit::serve::{agreed_leader, ServeFlags, StatusQuery};

use crate::serve_cmd::parse_app;

/// How long the nodes may take to print their ready lines, and then to agree on a leader.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// How often the supervisor looks at the nodes and the signal flag.
const POLL: Duration = Duration::from_millis(50);

/// Lines of a node's log quoted in an error.
const TAIL_LINES: usize = 20;

/// Arguments of `lockstep cluster`.
#[derive(clap::Args, Debug)]
#[command(
    after_help = "Example: `lockstep cluster --nodes 3`, then `redis-cli -p 6380`. \
Arguments after `--` are passed to every `lockstep serve`, e.g. `-- --tick-ms 2`. Each node's \
log goes to <dir>/node-<id>.log and its data to <dir>/node-<id>/."
)]
pub struct Args {
    /// Number of nodes, 1..=9 (ids 1..=N).
    #[arg(long, value_name = "N", default_value_t = 3,
          value_parser = clap::value_parser!(u16).range(1..=9))]
    nodes: u16,
    /// Directory for the nodes' data and logs (created if missing, kept at exit)
    /// [default: a temp dir, removed at exit].
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
    /// Keep the temp dir at exit (its path is printed).
    #[arg(long)]
    keep: bool,
    /// Client port of node 1; node i answers on this + i - 1.
    #[arg(long, value_name = "PORT", default_value_t = 6380)]
    client_port: u16,
    /// Peer port of node 1; node i listens for peers on this + i - 1.
    #[arg(long, value_name = "PORT", default_value_t = 7380)]
    peer_port: u16,
    /// State machine: `kv`, `bank`, `lock` or `journal`.
    #[arg(long, value_name = "APP", default_value = "kv", value_parser = parse_app)]
    app: AppKind,
    /// The cluster id (`lockstep status` and `lockstep-bench --connect` use the same default).
    #[arg(long, value_name = "N", default_value_t = DEFAULT_CLUSTER_ID)]
    cluster_id: u64,
    /// Address every node binds and advertises.
    #[arg(long, value_name = "IP", default_value_t = IpAddr::V4(Ipv4Addr::LOCALHOST))]
    host: IpAddr,
    /// Do not generate a peer secret: the nodes do not authenticate each other.
    #[arg(long)]
    no_peer_secret: bool,
    /// File holding the client password of the `default` user, for every node (and used by
    /// this command's own status checks) [default: none].
    #[arg(long, value_name = "FILE")]
    client_password_file: Option<PathBuf>,
    /// File holding the password of the read-only client user `reader`, for every node
    /// [default: none].
    #[arg(long, value_name = "FILE")]
    readonly_password_file: Option<PathBuf>,
    /// TLS on the client and peer ports, with a throwaway CA and certificate generated into
    /// <dir>/tls/ (try `redis-cli --tls --cacert <dir>/tls/ca.pem -p 6380`).
    #[arg(long)]
    tls: bool,
    /// Extra `lockstep serve` flags for every node (after `--`).
    #[arg(last = true, value_name = "SERVE FLAGS")]
    serve_args: Vec<String>,
}

/// Runs the subcommand.
pub fn run(args: Args) -> ExitCode {
    match run_cluster(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            report(&err);
            ExitCode::FAILURE
        }
    }
}

/// Writes `message` to stderr; a closed stderr (e.g. the reader of a pipe is gone) must not
/// turn a clean stop into a panic, so write errors are ignored.
fn report(message: &str) {
    drop(writeln!(std::io::stderr(), "lockstep cluster: {message}"));
}

/// The members: node i (from 1) on `peer_port + i - 1` and `client_port + i - 1`. Refuses ports
/// past 65535, ranges that overlap, and ports already in use.
fn members(args: &Args) -> Result<Vec<MemberConfig>, String> {
    let n = args.nodes;
    let last = |option: &str, first: u16| {
        first
            .checked_add(n - 1)
            .filter(|_| first != 0)
            .ok_or_else(|| {
                format!("--{option} {first}: {n} consecutive ports from it do not fit in 1..=65535")
            })
    };
    let (client_last, peer_last) = (
        last("client-port", args.client_port)?,
        last("peer-port", args.peer_port)?,
    );
    if args.client_port <= peer_last && args.peer_port <= client_last {
        return Err(format!(
            "client ports {}..={client_last} (--client-port) overlap peer ports {}..={peer_last} \
             (--peer-port)",
            args.client_port, args.peer_port
        ));
    }
    let members: Vec<MemberConfig> = (0..n)
        .map(|i| MemberConfig {
            id: u64::from(i) + 1,
            peer_addr: SocketAddr::new(args.host, args.peer_port + i),
            client_addr: SocketAddr::new(args.host, args.client_port + i),
        })
        .collect();
    for member in &members {
        for (addr, option, first, role) in [
            (
                member.client_addr,
                "--client-port",
                args.client_port,
                "client",
            ),
            (member.peer_addr, "--peer-port", args.peer_port, "peer"),
        ] {
            TcpListener::bind(addr).map_err(|e| {
                format!(
                    "port {} on {} (node {}'s {role} port, from {option} {first}) is not free: {e}; \
                     pick other ports with {option}",
                    addr.port(),
                    addr.ip(),
                    member.id,
                )
            })?;
        }
    }
    Ok(members)
}

/// Where the nodes' data and logs go: an explicit `--dir` (kept), or a temp dir (removed when the
/// returned guard drops, unless `--keep`).
fn data_dir(args: &Args) -> Result<(PathBuf, Option<tempfile::TempDir>), String> {
    if let Some(dir) = &args.dir {
        std::fs::create_dir_all(dir).map_err(|e| format!("--dir {}: {e}", dir.display()))?;
        return Ok((dir.clone(), None));
    }
    let temp = tempfile::Builder::new()
        .prefix("lockstep-cluster-")
        .tempdir()
        .map_err(|e| format!("cannot create a temp dir: {e}"))?;
    if args.keep {
        let path = temp.keep();
        return Ok((path, None));
    }
    Ok((temp.path().to_path_buf(), Some(temp)))
}

fn run_cluster(args: &Args) -> Result<(), String> {
    let members = members(args)?;
    let credentials = args
        .client_password_file
        .as_deref()
        .map(Credentials::from_password_file)
        .transpose()
        .map_err(|why| format!("--client-password-file: {why}"))?;
    // Registered before any node starts, so a signal during the start is a clean stop too.
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, Arc::clone(&stop))
            .map_err(|e| format!("cannot handle signal {signal}: {e}"))?;
    }
    // Declared before the nodes so that it is removed only after they are stopped.
    let (dir, temp_guard) = data_dir(args)?;
    let secret = peer_secret(args, &dir)?;
    let tls = if args.tls {
        Some(ClusterTls::generate(&dir, args.host)?)
    } else {
        None
    };
    let mut nodes = Nodes {
        nodes: Vec::new(),
        tls,
    };
    for member in &members {
        nodes.spawn(args, &members, member.id, &dir, secret.as_deref())?;
    }
    // `None`: a signal came during the start.
    let leader = match nodes.wait_ready(&members, &stop)? {
        true => nodes.wait_leader(args.cluster_id, credentials.as_ref(), &members, &stop)?,
        false => None,
    };
    if let Some(leader) = leader {
        let ca_file = nodes.tls.as_ref().map(|tls| tls.ca_file.as_path());
        print_table(
            args,
            &members,
            leader,
            &dir,
            temp_guard.is_some(),
            secret.as_deref(),
            ca_file,
        );
        while !stop.load(Ordering::Relaxed) {
            nodes.check_running()?;
            std::thread::sleep(POLL);
        }
    }
    interrupted(nodes, temp_guard);
    Ok(())
}

/// The file of the secret the nodes share: `<dir>/peer-secret`, created if missing, unless
/// `--no-peer-secret` or the serve flags name their own (then `None`).
fn peer_secret(args: &Args, dir: &Path) -> Result<Option<PathBuf>, String> {
    let own = args
        .serve_args
        .iter()
        .any(|arg| arg == "--peer-secret-file" || arg.starts_with("--peer-secret-file="));
    if args.no_peer_secret || own {
        return Ok(None);
    }
    let path = dir.join("peer-secret");
    if path.exists() {
        return Ok(Some(path));
    }
    let hex: String = lockstep::net::fresh_nonce()
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect();
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .and_then(|mut file| writeln!(file, "{hex}"))
        .map_err(|e| format!("cannot write the peer secret {}: {e}", path.display()))?;
    Ok(Some(path))
}

/// Stops the nodes after a signal, reporting the ones that did not exit cleanly.
fn interrupted(nodes: Nodes, temp_guard: Option<tempfile::TempDir>) {
    report("stopping");
    for (id, status) in nodes.stop() {
        if !status.success() {
            report(&format!("node {id} stopped with {status}"));
        }
    }
    drop(temp_guard);
}

fn print_table(
    args: &Args,
    members: &[MemberConfig],
    leader: u64,
    dir: &Path,
    removed: bool,
    secret: Option<&Path>,
    ca_file: Option<&Path>,
) {
    let mut out = String::new();
    out.push_str(&format!(
        "lockstep cluster: {} node(s) running {}, cluster id {}\n",
        members.len(),
        args.app.name(),
        args.cluster_id
    ));
    let kept = if removed { "removed at exit" } else { "kept" };
    out.push_str(&format!("data: {} ({kept})\n", dir.display()));
    match secret {
        Some(path) => out.push_str(&format!("peer secret: {}\n", path.display())),
        None if args.no_peer_secret => out.push_str("peer secret: none (--no-peer-secret)\n"),
        None => out.push_str("peer secret: as given after --\n"),
    }
    out.push_str(&format!(
        "{:<5} {:<22} {:<22} {}\n",
        "node", "client", "peer", "role"
    ));
    for member in members {
        let role = if member.id == leader {
            "leader"
        } else {
            "follower"
        };
        out.push_str(&format!(
            "{:<5} {:<22} {:<22} {role}\n",
            member.id,
            member.client_addr.to_string(),
            member.peer_addr.to_string()
        ));
    }
    let leader_addr = members[leader as usize - 1].client_addr;
    let host = match leader_addr.ip() {
        IpAddr::V4(ip) if ip == Ipv4Addr::LOCALHOST => String::new(),
        ip => format!("-h {ip} "),
    };
    let host = match ca_file {
        Some(ca_file) => format!("--tls --cacert {} {host}", ca_file.display()),
        None => host,
    };
    let auth = match &args.client_password_file {
        Some(file) => format!(" -a \"$(cat {})\"", file.display()),
        None => String::new(),
    };
    out.push_str(&format!(
        "try:  redis-cli {host}-p {}{auth} (the leader; followers redirect writes to it)\n",
        leader_addr.port()
    ));
    out.push_str("stop: Ctrl-C\n");
    let mut stdout = std::io::stdout().lock();
    // A closed stdout must not stop the cluster.
    drop(
        stdout
            .write_all(out.as_bytes())
            .and_then(|()| stdout.flush()),
    );
}

/// The running nodes; stopped when dropped.
struct Nodes {
    /// Node i (from 1) at position i - 1.
    nodes: Vec<NodeProcess>,
    /// The TLS files every node uses (`--tls`).
    tls: Option<ClusterTls>,
}

/// The files of `--tls`, and the client side for the supervisor's own status queries.
struct ClusterTls {
    ca_file: PathBuf,
    cert_file: PathBuf,
    key_file: PathBuf,
    client: ClientTls,
}

impl ClusterTls {
    /// A fresh CA and one certificate for `host` (every node binds it) in `<dir>/tls/`.
    fn generate(dir: &Path, host: IpAddr) -> Result<ClusterTls, String> {
        let tls_dir = dir.join("tls");
        let failed = |e: std::io::Error| format!("--tls: {}: {e}", tls_dir.display());
        std::fs::create_dir_all(&tls_dir).map_err(failed)?;
        let pki = DevPki::new("lockstep cluster CA").map_err(failed)?;
        let ca_file = pki.write_ca(&tls_dir).map_err(failed)?;
        let node = pki.write_node(&tls_dir, "node", &[host]).map_err(failed)?;
        let client = ClientTls::from_ca_file(&ca_file).map_err(|e| format!("--tls: {e}"))?;
        Ok(ClusterTls {
            ca_file,
            cert_file: node.cert_file,
            key_file: node.key_file,
            client,
        })
    }
}

impl Nodes {
    fn spawn(
        &mut self,
        args: &Args,
        members: &[MemberConfig],
        id: u64,
        dir: &Path,
        secret: Option<&Path>,
    ) -> Result<(), String> {
        let exe = std::env::current_exe().map_err(|e| format!("cannot find this program: {e}"))?;
        let flags = ServeFlags {
            id,
            cluster_id: args.cluster_id,
            data_dir: &dir.join(format!("node-{id}")),
            app: args.app.name(),
            members,
            join: false,
        };
        let mut launch = Launch::new(
            id,
            exe,
            dir.join(format!("node-{id}.log")),
            Output::StderrAppended,
        )
        .args(flags.to_args());
        if let Some(secret) = secret {
            launch = launch.arg("--peer-secret-file").arg(secret);
        }
        for (flag, file) in [
            ("--client-password-file", &args.client_password_file),
            ("--readonly-password-file", &args.readonly_password_file),
        ] {
            if let Some(file) = file {
                launch = launch.arg(flag).arg(file);
            }
        }
        if let Some(tls) = &self.tls {
            launch = launch
                .arg("--tls-cert-file")
                .arg(&tls.cert_file)
                .arg("--tls-key-file")
                .arg(&tls.key_file)
                .arg("--tls-ca-file")
                .arg(&tls.ca_file);
        }
        let node = launch
            .args(&args.serve_args)
            .tied_to_supervisor()
            .spawn()
            .map_err(|e| match e {
                process::SpawnError::Log { path, source } => {
                    format!("cannot open {}: {source}", path.display())
                }
                process::SpawnError::Program(e) => format!("cannot start node {id}: {e}"),
            })?;
        assert_eq!(
            node.id(),
            self.nodes.len() as u64 + 1,
            "nodes start in id order"
        );
        self.nodes.push(node);
        Ok(())
    }

    /// Waits until every node printed its ready line; false when a signal came first.
    fn wait_ready(&mut self, members: &[MemberConfig], stop: &AtomicBool) -> Result<bool, String> {
        let waited = process::wait_all_ready(&mut self.nodes, START_TIMEOUT, &|| {
            stop.load(Ordering::Relaxed)
        });
        match waited {
            Ok(()) => {}
            Err(NotReady::Stopped) => return Ok(false),
            Err(NotReady::Exited { id, status }) => {
                return Err(self.failure(id, &format!("exited unexpectedly ({status})")))
            }
            Err(NotReady::TimedOut { id, after }) => {
                return Err(self.failure(
                    id,
                    &format!("did not print its ready line within {after:?}"),
                ))
            }
            Err(NotReady::Unwatchable { id, error }) => {
                return Err(self.failure(id, &format!("cannot be watched: {error}")))
            }
        }
        for (node, member) in self.nodes.iter().zip(members) {
            let expected = ready_line(member.id, member.peer_addr, Some(member.client_addr));
            let line = node.ready_line().expect("every node is ready");
            if !line.starts_with(&expected) {
                return Err(self.failure(
                    member.id,
                    &format!("printed {line:?}, not its ready line {expected:?}"),
                ));
            }
        }
        Ok(true)
    }

    /// Waits until one node is leader and every node names it; `None` when a signal came first.
    fn wait_leader(
        &mut self,
        cluster_id: u64,
        credentials: Option<&Credentials>,
        members: &[MemberConfig],
        stop: &AtomicBool,
    ) -> Result<Option<u64>, String> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if stop.load(Ordering::Relaxed) {
                return Ok(None);
            }
            self.check_running()?;
            let query = StatusQuery {
                cluster_id,
                timeout: Duration::from_secs(1),
                credentials,
                tls: self.tls.as_ref().map(|tls| &tls.client),
            };
            let statuses: Vec<_> = members
                .iter()
                .map(|member| query.status(member.client_addr).ok())
                .collect();
            if let Some(leader) = agreed_leader(&statuses) {
                return Ok(Some(leader));
            }
            if Instant::now() > deadline {
                let leaders: Vec<Option<u64>> = statuses
                    .iter()
                    .map(|status| status.as_ref().and_then(|status| status["leader"].as_u64()))
                    .collect();
                return Err(format!(
                    "the nodes did not agree on a leader within {START_TIMEOUT:?} (each \
                     node's leader: {leaders:?}); logs in {}",
                    self.nodes[0]
                        .log_path()
                        .parent()
                        .unwrap_or(Path::new("."))
                        .display()
                ));
            }
            std::thread::sleep(POLL);
        }
    }

    /// An error when a node has exited: its status and its log tail.
    fn check_running(&mut self) -> Result<(), String> {
        for index in 0..self.nodes.len() {
            let node = &mut self.nodes[index];
            let id = node.id();
            match node.try_exit() {
                Ok(None) => {}
                Ok(Some(status)) => {
                    return Err(self.failure(id, &format!("exited unexpectedly ({status})")))
                }
                Err(e) => return Err(self.failure(id, &format!("cannot be watched: {e}"))),
            }
        }
        Ok(())
    }

    /// The message for node `id` failing with `what`, with the tail of its log.
    fn failure(&self, id: u64, what: &str) -> String {
        let node = &self.nodes[id as usize - 1];
        format!(
            "node {id} {what}; the others are stopped. Last lines of {}:\n{}",
            node.log_path().display(),
            node.log_tail(TAIL_LINES)
        )
    }

    /// SIGTERM to every node, then SIGKILL to those still running after [`STOP_GRACE`]; returns
    /// how each exited.
    fn stop(mut self) -> Vec<(u64, ExitStatus)> {
        self.stop_all()
    }

    fn stop_all(&mut self) -> Vec<(u64, ExitStatus)> {
        process::stop_all(&mut self.nodes, STOP_GRACE)
            .into_iter()
            .filter_map(|(id, stopped)| Some((id, stopped.ok()?.status)))
            .collect()
    }
}

impl Drop for Nodes {
    fn drop(&mut self) {
        self.stop_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(flags: &[&str]) -> Result<Args, String> {
        crate::parse_flags("cluster", flags)
    }

    #[test]
    fn node_counts_and_apps_outside_the_range_are_refused() {
        for bad in [&["--nodes", "0"][..], &["--nodes", "10"], &["--app", "sql"]] {
            let error = parse(bad).err().unwrap_or_default();
            assert!(error.contains(bad[1]), "{bad:?}: {error}");
        }
        let args = parse(&["--nodes", "4", "--", "--tick-ms", "2"]).unwrap();
        assert_eq!(args.nodes, 4);
        assert_eq!(args.serve_args, ["--tick-ms", "2"]);
    }

    #[test]
    fn ports_that_overflow_or_overlap_are_refused() {
        let args = parse(&["--nodes", "3", "--client-port", "65534"]).unwrap();
        let error = members(&args).unwrap_err();
        assert!(error.contains("--client-port 65534"), "{error}");
        let args = parse(&["--client-port", "7000", "--peer-port", "7002"]).unwrap();
        let error = members(&args).unwrap_err();
        assert!(error.contains("overlap"), "{error}");
    }
}
