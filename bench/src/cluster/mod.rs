//! The cluster benchmark, `lockstep-bench` with no subcommand: starts a local cluster of node
//! processes (or uses one given with `--connect`), waits for a leader, drives load — opaque
//! entries over the native client protocol (`--mode log`, [`load`]) or RESP SET/GET commands to
//! the kv app (`--mode kv`, [`kv_load`]), or proposals through the embedding API inside each
//! node (`--embedded`, [`embedded`]) — and reports throughput, latency, grouping, leader
//! changes, a per-second series and peak memory.
//!
//! Owns the order of a run and its cleanup: the cluster ([`supervisor::LocalCluster`]) is a
//! guard, so its processes are stopped and its temporary directory removed on every path out
//! of [`run`] — success, error, panic or Ctrl-C (which only sets a flag that every wait polls).

pub mod args;
pub mod embedded;
pub mod in_flight;
pub mod keys;
pub mod kv_load;
pub mod load;
pub mod plot;
pub mod progress;
pub mod results;
pub mod series;
pub mod status;
pub mod supervisor;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use lockstep_server::apps::AppKind;

use crate::interrupt::{Interrupt, EXIT_INTERRUPTED};
use crate::report::{self, now_utc, Machine, Report};
use args::{Args, RunConfig, Sweep, Target};
use embedded::exchange::Exchange;
use keys::Workload;
use kv_load::KvPlan;
use load::LoadPlan;
use progress::Progress;
use results::{
    Cpu, Memory, NodeCpu, NodeExitRow, NodeMemory, RunResults, SweepPoint, SweepResults,
};
use series::Series;
use supervisor::{ClusterSpec, LocalCluster, NodeCommand};

/// How long the nodes may take to print their ready lines.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// How long to wait for the first leader.
const ELECTION_TIMEOUT: Duration = Duration::from_secs(30);

/// `--embedded`: how far ahead of its start the load's plan is handed to the nodes (they look
/// for it every 20 ms).
const EMBEDDED_LEAD: Duration = Duration::from_millis(200);

/// The report of one run.
pub type RunReport = Report<RunConfig, RunResults>;

/// The report of a sweep.
pub type SweepReport = Report<RunConfig, SweepResults>;

/// Runs the benchmark described by `args`; prints the report (and writes `--json`).
pub fn run(args: Args) -> ExitCode {
    if let Some(path) = &args.password_file {
        match lockstep::client::Credentials::from_password_file(path) {
            Ok(credentials) => status::set_credentials(credentials),
            Err(error) => {
                eprintln!("lockstep-bench: --password-file: {error}");
                return ExitCode::from(2);
            }
        }
    }
    if let Some(path) = &args.tls_ca_file {
        match lockstep::net::ClientTls::from_ca_file(path) {
            Ok(tls) => status::use_tls(tls),
            Err(error) => {
                eprintln!("lockstep-bench: --tls-ca-file: {error}");
                return ExitCode::from(2);
            }
        }
    }
    let (config, sweep) = match args.validate() {
        Ok(validated) => validated,
        Err(error) => {
            eprintln!("lockstep-bench: {error}");
            return ExitCode::from(2);
        }
    };
    let interrupt = match Interrupt::install() {
        Ok(interrupt) => interrupt,
        Err(error) => {
            eprintln!("lockstep-bench: installing signal handlers: {error}");
            return ExitCode::FAILURE;
        }
    };
    let mut plotted = None;
    let mut title = String::new();
    let outcome = match &sweep {
        None => run_once(&config, &interrupt).map(|report| {
            let clean = report.results.problems().is_empty();
            let shape = match &config.kv {
                None if config.embedded => format!("{} B entries, embedded", config.entry_bytes),
                None => format!("{} B entries", config.entry_bytes),
                Some(kv) => format!(
                    "RESP {} % GET, {} B values",
                    report::round_to(kv.read_ratio * 100.0, 1),
                    config.entry_bytes
                ),
            };
            title = format!(
                "lockstep {} nodes, {shape}, {} clients x {} in flight, {} per request{} \
                 ({}, commit {})",
                config.nodes_label(),
                config.clients,
                config.depth,
                config.batch,
                match config.durability {
                    args::Durability::Fsync => "",
                    args::Durability::None => ", NO DURABILITY",
                },
                report.started_utc,
                report.machine.git_commit
            );
            plotted = Some(report.results.clone());
            (report.to_text(), report.to_json(), clean)
        }),
        Some(sweep) => run_sweep(&config, sweep, &interrupt).map(|report| {
            let clean = report
                .results
                .points
                .iter()
                .all(|point| point.results.problems().is_empty());
            (report.to_text(), report.to_json(), clean)
        }),
    };
    match outcome {
        Ok((text, json, clean)) => {
            print!("{text}");
            if let (Some(path), Some(results)) = (&args.plot, &plotted) {
                if let Err(error) = plot::draw(path, &title, results) {
                    eprintln!("lockstep-bench: {error}");
                    return ExitCode::FAILURE;
                }
            }
            if let Some(path) = &args.json {
                if let Err(error) = std::fs::write(path, json + "\n") {
                    eprintln!("lockstep-bench: writing {}: {error}", path.display());
                    return ExitCode::FAILURE;
                }
            }
            if clean {
                ExitCode::SUCCESS
            } else {
                eprintln!("lockstep-bench: the run had problems (see PROBLEM lines)");
                ExitCode::FAILURE
            }
        }
        Err(error) if interrupt.is_set() => {
            let cleaned = match config.target {
                Target::Local { .. } => "; nodes stopped, data removed",
                Target::Connect { .. } => "",
            };
            eprintln!("lockstep-bench: interrupted ({error}){cleaned}");
            ExitCode::from(EXIT_INTERRUPTED as u8)
        }
        Err(error) => {
            eprintln!("lockstep-bench: {error}");
            ExitCode::FAILURE
        }
    }
}

/// The cluster under test for the length of a run or sweep.
struct Session {
    /// The local cluster, if the bench started one (a guard: dropping it cleans up).
    local: Option<LocalCluster>,
    /// Every member's client address.
    members: Vec<SocketAddr>,
    /// The directory whose filesystem the report describes.
    data_dir: PathBuf,
    /// Whether the kv keys were set (once per session: a sweep's later points find them set).
    preloaded: bool,
    /// `--embedded`: where the nodes find each measurement's plan and leave their results.
    exchange: Option<Exchange>,
}

impl Session {
    fn open(config: &RunConfig, interrupt: &Interrupt) -> Result<Session, String> {
        match &config.target {
            Target::Local { nodes } => {
                let spec = ClusterSpec {
                    nodes: *nodes,
                    cluster_id: config.cluster_id,
                    app: if config.kv.is_some() {
                        AppKind::Kv
                    } else {
                        AppKind::Journal
                    },
                    tuning: config.tuning.clone(),
                    parent_dir: config.dir.clone(),
                    ready_timeout: READY_TIMEOUT,
                };
                if config.durability == args::Durability::Fsync {
                    let parent = config.dir.clone().unwrap_or_else(std::env::temp_dir);
                    report::warn_if_syncs_are_free("lockstep-bench", &parent);
                }
                let mut command = NodeCommand::this_executable()
                    .map_err(|error| format!("finding this executable: {error}"))?;
                let exchange = config
                    .embedded
                    .then(|| Exchange::create(config.dir.as_deref()))
                    .transpose()?;
                if let Some(exchange) = &exchange {
                    // Right after the subcommand: `node --embedded DIR --config FILE`.
                    let dir = exchange.dir().display().to_string();
                    command.args.splice(1..1, ["--embedded".to_string(), dir]);
                }
                let cluster = LocalCluster::start(&spec, &command, interrupt)?;
                Ok(Session {
                    members: cluster.members().iter().map(|m| m.client_addr).collect(),
                    data_dir: cluster.dir().to_path_buf(),
                    local: Some(cluster),
                    preloaded: false,
                    exchange,
                })
            }
            Target::Connect { addrs } => {
                check_reachable(addrs)?;
                let listed: Vec<String> = addrs.iter().map(ToString::to_string).collect();
                eprintln!(
                    "lockstep-bench: using the running cluster at {} (no node is started or \
                     stopped)",
                    listed.join(", ")
                );
                Ok(Session {
                    local: None,
                    members: addrs.clone(),
                    data_dir: config.dir.clone().unwrap_or_else(std::env::temp_dir),
                    preloaded: false,
                    exchange: None,
                })
            }
        }
    }

    /// One measurement: leader, warm-up, window, figures.
    fn measure(&mut self, config: &RunConfig, interrupt: &Interrupt) -> Result<RunResults, String> {
        // Before the clock starts: a Zipf key space sums over every key once.
        let workload = config
            .kv
            .as_ref()
            .map(|kv| Workload::new(kv.keys, kv.read_ratio, kv.zipf));
        let leader = status::find_leader(
            &self.members,
            config.cluster_id,
            Instant::now() + ELECTION_TIMEOUT,
            interrupt,
        )
        .map_err(|error| self.with_node_output(format!("waiting for a leader: {error}")))?;
        if let (Some(workload), Some(kv)) = (&workload, &config.kv) {
            if kv.read_ratio > 0.0 && !self.preloaded {
                eprintln!("lockstep-bench: setting the {} keys once", kv.keys);
                kv_load::preload(leader.addr, workload, config.entry_bytes, interrupt)?;
                self.preloaded = true;
            }
        }
        let lead = if self.exchange.is_some() {
            EMBEDDED_LEAD
        } else {
            Duration::ZERO
        };
        let load_start = Instant::now() + lead;
        let measure_start = load_start + Duration::from_secs_f64(config.warmup_sec);
        let mut plan = LoadPlan {
            clients: config.clients,
            depth: config.depth,
            batch: config.batch,
            entry_bytes: config.entry_bytes,
            rate_per_sec: config.rate_per_sec,
            cluster_id: config.cluster_id,
            members: self.members.clone(),
            load_start,
            measure_start,
            measure_end: measure_start + Duration::from_secs_f64(config.seconds),
            series: Arc::new(Series::new(0, 0)),
        };
        plan.series = Arc::new(Series::new(plan.window_seconds(), plan.clients));
        if let Some(exchange) = &mut self.exchange {
            exchange.publish(&plan)?;
        }
        // Status samples at the window's start, each whole second, and its end.
        let mut sample_at: Vec<Instant> = (0..plan.window_seconds())
            .map(|second| measure_start + Duration::from_secs(second as u64))
            .collect();
        sample_at.push(plan.measure_end);
        // CPU time of the bench, then of each local node.
        let mut pids = vec!["self".to_string()];
        if let Some(cluster) = &self.local {
            pids.extend(cluster.pids().into_iter().map(|(_, pid)| pid.to_string()));
        }
        let poller = {
            let members = self.members.clone();
            let pids = pids.clone();
            let interrupt = interrupt.clone();
            let cluster_id = config.cluster_id;
            std::thread::Builder::new()
                .name("status-poll".to_string())
                .spawn(move || {
                    status::poll(
                        &members,
                        cluster_id,
                        &pids,
                        measure_start,
                        &sample_at,
                        &interrupt,
                    )
                })
                .map_err(|error| format!("spawning the status poller: {error}"))?
        };
        let progress = Progress::start(
            format!("{} clients x {}", config.clients, config.depth),
            load_start,
            plan.measure_start,
            plan.measure_end,
            interrupt,
        );
        let mut results = self.drive(config, plan, workload, leader.addr, interrupt);
        drop(progress);
        let samples = poller
            .join()
            .map_err(|_| "the status poller panicked".to_string())?;
        if interrupt.is_set() {
            return Err("interrupted during the run".to_string());
        }
        results.offered_per_sec = config.rate_per_sec;
        results.grouping = status::grouping(&samples);
        results.leader_changes = status::leader_changes(&samples);
        results.memory = Memory {
            bench_peak_rss_bytes: supervisor::peak_rss_bytes("self"),
            nodes: self.local.as_ref().map_or_else(Vec::new, |cluster| {
                let anon = status::peak_anon_rss_bytes(&samples);
                cluster
                    .peak_rss_bytes()
                    .into_iter()
                    .enumerate()
                    .map(|(index, (id, peak_rss_bytes))| NodeMemory {
                        id,
                        peak_rss_bytes,
                        // Sample processes are the bench, then the nodes in order.
                        peak_anon_rss_bytes: anon.get(index + 1).copied().flatten(),
                    })
                    .collect()
            }),
        };
        let mut cores = status::cores_used(&samples).into_iter();
        results.cpu = Cpu {
            bench_cores: cores.next().flatten(),
            nodes: self.local.as_ref().map_or_else(Vec::new, |cluster| {
                cluster
                    .pids()
                    .into_iter()
                    .zip(cores)
                    .map(|((id, _), cores)| NodeCpu { id, cores })
                    .collect()
            }),
        };
        if let Some(cluster) = &mut self.local {
            for (id, status) in cluster.exited() {
                results.clients.errors.push(format!(
                    "node {id} died during the run ({status}); its last output:\n{}",
                    cluster.output_tail(id)
                ));
            }
        }
        Ok(results)
    }

    /// Drives the load of `plan` (over the client protocol to `leader`, or inside the nodes with
    /// `--embedded`) until its window ends, and returns its figures.
    fn drive(
        &self,
        config: &RunConfig,
        plan: LoadPlan,
        workload: Option<Workload>,
        leader: SocketAddr,
        interrupt: &Interrupt,
    ) -> RunResults {
        let (window, bytes) = (config.seconds, config.entry_bytes);
        match (workload, &self.exchange) {
            (Some(workload), _) => {
                let plan = KvPlan {
                    load: plan,
                    workload,
                };
                let tally = kv_load::run(&plan, leader, interrupt);
                RunResults::from_kv_tally(&tally, &plan.load.series.counts(), window, bytes)
            }
            (None, Some(exchange)) => {
                let ids: Vec<u64> = self.local.as_ref().map_or_else(Vec::new, |cluster| {
                    cluster.members().iter().map(|member| member.id).collect()
                });
                let (tally, seconds) = exchange.collect(&plan, &ids, interrupt);
                RunResults::from_tally(&tally, &seconds, window, bytes)
            }
            (None, None) => {
                let tally = load::run(&plan, leader, interrupt);
                RunResults::from_tally(&tally, &plan.series.counts(), window, bytes)
            }
        }
    }

    /// `message`, followed by every local node's last output lines (to explain a failure).
    fn with_node_output(&self, mut message: String) -> String {
        if let Some(cluster) = &self.local {
            for member in cluster.members() {
                message.push_str(&format!(
                    "\nnode {} output:\n{}",
                    member.id,
                    cluster.output_tail(member.id)
                ));
            }
        }
        message
    }

    /// Stops the local cluster (if any) and says how its nodes ended.
    fn close(self) -> Vec<NodeExitRow> {
        self.local.map_or_else(Vec::new, |cluster| {
            cluster.stop().iter().map(NodeExitRow::from).collect()
        })
    }
}

/// How long a `--connect` address may take to accept a connection before it counts as down.
const CONNECT_CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// Checks that the `--connect` addresses accept connections before any load is planned: none
/// answering is an error naming each address and why; some not answering is a warning.
fn check_reachable(addrs: &[SocketAddr]) -> Result<(), String> {
    let down: Vec<String> = addrs
        .iter()
        .filter_map(|addr| {
            std::net::TcpStream::connect_timeout(addr, CONNECT_CHECK_TIMEOUT)
                .err()
                .map(|error| format!("{addr} ({error})"))
        })
        .collect();
    if down.len() == addrs.len() {
        return Err(format!(
            "no node answers at --connect {}: start the cluster first (e.g. `lockstep cluster \
             --nodes 3`) or correct the addresses",
            down.join(", ")
        ));
    }
    if !down.is_empty() {
        eprintln!(
            "lockstep-bench: warning: no answer from {}; benchmarking the members that answer",
            down.join(", ")
        );
    }
    Ok(())
}

/// Describes the machine the session's data directory is on.
fn describe_machine(session: &Session) -> Machine {
    Machine::describe(&session.data_dir)
}

fn run_once(config: &RunConfig, interrupt: &Interrupt) -> Result<RunReport, String> {
    let started_utc = now_utc();
    let mut session = Session::open(config, interrupt)?;
    let machine = describe_machine(&session);
    let mut results = session.measure(config, interrupt)?;
    let local_nodes = match config.target {
        Target::Local { nodes } => Some(nodes),
        Target::Connect { .. } => None,
    };
    match crate::baseline::Yardstick::measure(
        &session.data_dir,
        results.latency_us.p50,
        local_nodes,
    ) {
        Ok(yardstick) => results.yardstick = Some(yardstick),
        Err(error) => eprintln!("lockstep-bench: the latency yardstick failed: {error}"),
    }
    results.node_exits = session.close();
    Ok(Report {
        bench: mode_name(config).to_string(),
        started_utc,
        machine,
        warning: config.durability.warning(),
        config: config.clone(),
        results,
    })
}

fn run_sweep(
    config: &RunConfig,
    sweep: &Sweep,
    interrupt: &Interrupt,
) -> Result<SweepReport, String> {
    let started_utc = now_utc();
    let mut session = Session::open(config, interrupt)?;
    let machine = describe_machine(&session);
    let mut points = Vec::with_capacity(sweep.values.len());
    for &value in &sweep.values {
        let point_config = config.with(sweep.knob, value)?;
        eprintln!("lockstep-bench: sweep {}={value}", sweep.knob_name());
        let results = session.measure(&point_config, interrupt)?;
        points.push(SweepPoint { value, results });
    }
    let exits = session.close();
    if let Some(last) = points.last_mut() {
        last.results.node_exits = exits;
    }
    Ok(Report {
        bench: format!("{} sweep of {}", mode_name(config), sweep.knob_name()),
        started_utc,
        machine,
        warning: config.durability.warning(),
        config: config.clone(),
        results: SweepResults {
            knob: sweep.knob_name().to_string(),
            points,
        },
    })
}

/// `log`, `log (embedded)` or `kv`.
fn mode_name(config: &RunConfig) -> &'static str {
    match config.mode {
        args::Mode::Log if config.embedded => "log (embedded)",
        args::Mode::Log => "log",
        args::Mode::Kv => "kv",
    }
}
