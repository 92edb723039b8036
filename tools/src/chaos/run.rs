//! One chaos run: start, load, break, heal, check, report.
//!
//! Phases: start the cluster and wait for a leader; start the clients; inject faults until the
//! time is up; heal everything and time how long until a write succeeds again (must be within
//! `--recovery-bound-s`); let the clients run a little longer, stop them; read every key once
//! more through the leader (the final reads, part of the history); wait until every replica
//! applied the leader's commit index and compare a hash of each replica's local state; run the
//! checkers. The replicas are the current members (the `member` nemesis replaces nodes): a
//! removed node's data is gone, and every acknowledged write must be found on the members. Writes `summary.json` and `history.jsonl` into the run directory and prints a
//! summary; the exit status says whether every check passed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use lockstep::client::{Client, ClusterClient};

use super::bank::BankWorkload;
use super::cluster::{Cluster, CLUSTER_ID};
use super::kv::{ClientBug, KvWorkload};
use super::lock::LockWorkload;
use super::nemesis::{leader_members, FaultKind, Nemesis};
use super::netns::{self, Netns};
use super::workload::{AddressBook, OutcomeCounts, Workload};

/// Failures printed (all are in `summary.json`).
const FAILURES_PRINTED: usize = 20;

/// Version of `summary.json`.
const SUMMARY_VERSION: u32 = 2;

/// Operations per key before a slot moves on to a fresh key.
const OPS_PER_KEY: u64 = 120;

/// Key slots (half registers, half counters).
const SLOTS: usize = 8;

/// How long after healing the clients keep running before the final reads.
const AFTER_HEAL: Duration = Duration::from_secs(1);

/// Bound on the wait for every replica to apply the leader's commit index.
const CONVERGE_TIMEOUT: Duration = Duration::from_secs(30);

/// Server flags of a chaos cluster: small segments and frequent snapshots, so faults meet
/// segment rollover, compaction and snapshot installs.
const NODE_ARGS: [&str; 4] = ["--segment-bytes", "1048576", "--snapshot-entries", "4000"];

/// Arguments of a chaos run.
#[derive(clap::Args, Debug)]
pub struct RunArgs {
    /// Cluster size.
    #[arg(long, default_value_t = 3)]
    nodes: u64,
    /// How long to inject faults, seconds.
    #[arg(long, default_value_t = 30)]
    seconds: u64,
    /// Seed of the fault schedule and of the clients' choices.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Workload: `kv` (registers and counters), `bank` (transfers), `lock` (leases, fencing).
    #[arg(long, value_enum, default_value_t = WorkloadKind::Kv)]
    workload: WorkloadKind,
    /// Fault kinds, comma-separated: kill, pause, partition, storage, member, power (power cuts
    /// on FUSE disks that forget unsynced writes; needs /dev/fuse and root).
    #[arg(long, default_value = "kill,pause,storage")]
    nemesis: String,
    /// How the nodes make their logs durable (`serve --sync`): `none` makes them never sync,
    /// which the power nemesis must catch (a negative control).
    #[arg(long, value_name = "MODE")]
    sync: Option<String>,
    /// Run directory (kept); default: a temporary one, removed when the run passes.
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
    /// Run each node in its own network namespace (needed for `partition`; root, ip, nft).
    #[arg(long)]
    netns: bool,
    /// Concurrent client threads.
    #[arg(long, default_value_t = 8)]
    clients: u32,
    /// Re-insert a known bug on the client side, to show the checkers catch it.
    #[arg(long, value_enum)]
    bug: Option<ClientBug>,
    /// After healing, a write must succeed within this many seconds.
    #[arg(long, default_value_t = 10)]
    recovery_bound_s: u64,
    /// Extra `lockstep serve` flags for every node (after `--`), e.g. `-- --append-mode mmap`.
    #[arg(last = true, value_name = "SERVE FLAGS")]
    serve_args: Vec<String>,
}

/// The workloads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum WorkloadKind {
    /// Registers and counters on the kv app.
    Kv,
    /// Transfers between accounts on the bank app.
    Bank,
    /// Lock acquisitions and releases on the lock app.
    Lock,
}

impl WorkloadKind {
    /// The app the cluster runs.
    fn app(self) -> &'static str {
        match self {
            WorkloadKind::Kv => "kv",
            WorkloadKind::Bank => "bank",
            WorkloadKind::Lock => "lock",
        }
    }
}

/// What a run found.
#[derive(Default)]
struct Findings {
    failures: Vec<String>,
    undecided: Vec<String>,
}

/// Runs one chaos run and reports it.
pub fn run(args: RunArgs) -> ExitCode {
    match execute(&args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(err) => {
            eprintln!("lockstep chaos: {err}");
            ExitCode::from(2)
        }
    }
}

/// Validates the arguments; returns the fault kinds to use and the network namespaces.
fn prepare(args: &RunArgs) -> Result<(Vec<FaultKind>, Option<Netns>), String> {
    if args.nodes < 3 || args.nodes % 2 == 0 || args.nodes > 9 {
        return Err(format!(
            "--nodes {}: use an odd size from 3 to 9",
            args.nodes
        ));
    }
    if args.bug.is_some() && args.workload != WorkloadKind::Kv {
        return Err("--bug: the re-inserted bugs live in the kv workload".to_string());
    }
    if args.clients == 0 {
        return Err("--clients 0: at least one client is needed".to_string());
    }
    let mut kinds = FaultKind::parse_list(&args.nemesis)?;
    let mut netns = None;
    if args.netns {
        match netns::unavailable() {
            Some(reason) => eprintln!("chaos: network namespaces unavailable: {reason}"),
            None => netns = Some(Netns::create(args.nodes)?),
        }
    }
    if kinds.contains(&FaultKind::Partition) && netns.is_none() {
        eprintln!(
            "chaos: skipping the partition nemesis: it needs --netns and working network namespaces"
        );
        kinds.retain(|kind| *kind != FaultKind::Partition);
    }
    if kinds.is_empty() {
        return Err("--nemesis: no fault kind left to inject".to_string());
    }
    Ok((kinds, netns))
}

/// The workload `args` ask for.
fn workload(args: &RunArgs, addrs: AddressBook) -> Box<dyn Workload> {
    match args.workload {
        WorkloadKind::Kv => Box::new(KvWorkload::new(addrs, SLOTS, OPS_PER_KEY, args.bug)),
        WorkloadKind::Bank => Box::new(BankWorkload::new(addrs)),
        WorkloadKind::Lock => Box::new(LockWorkload::new(addrs)),
    }
}

fn execute(args: &RunArgs) -> Result<bool, String> {
    let (kinds, netns) = prepare(args)?;
    let (dir, keep_dir) = super::work_dir(args.dir.clone(), "chaos", args.seed)?;
    let mut node_args: Vec<String> = NODE_ARGS.iter().map(|arg| arg.to_string()).collect();
    if let Some(sync) = &args.sync {
        node_args.extend(["--sync".to_string(), sync.clone()]);
    }
    node_args.extend(args.serve_args.iter().cloned());
    let app = args.workload.app();
    let power_disks = kinds.contains(&FaultKind::Power);
    let mut cluster = Cluster::start(args.nodes, app, &dir, node_args, netns, power_disks)?;
    cluster
        .wait_leader(Duration::from_secs(20))
        .ok_or("no leader within 20 s of the start")?;
    eprintln!(
        "chaos: {} nodes{} in {}, seed {}, workload {app}, faults {:?}, {} s",
        args.nodes,
        if cluster.netns().is_some() {
            " (network namespaces)"
        } else {
            ""
        },
        dir.display(),
        args.seed,
        kinds.iter().map(|kind| kind.name()).collect::<Vec<_>>(),
        args.seconds
    );

    let workload: Arc<dyn Workload> = Arc::from(workload(args, cluster.address_book()));
    workload.setup(&cluster.client_addrs())?;
    let started = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..args.clients)
        .map(|process| {
            let (workload, stop, seed) = (workload.clone(), stop.clone(), args.seed);
            std::thread::spawn(move || workload.client(process, seed, &stop))
        })
        .collect();

    let mut findings = Findings::default();
    let mut nemesis = Nemesis::new(args.seed, kinds);
    let deadline = Instant::now() + Duration::from_secs(args.seconds);
    while Instant::now() < deadline {
        std::thread::sleep(nemesis.quiet());
        // A node that crashed during the quiet interval is reported, not mistaken for a fault.
        if !restart_crashed(&mut cluster, &mut findings) {
            break;
        }
        let now_ms = started.elapsed().as_millis() as u64;
        if let Err(err) = nemesis.inject_one(&mut cluster, now_ms) {
            findings.failures.push(format!("nemesis: {err}"));
            break;
        }
        if !restart_crashed(&mut cluster, &mut findings) {
            break;
        }
    }
    let recovery_ms = heal_and_time(&mut cluster, args, &workload.probe_command(), &mut findings);
    std::thread::sleep(AFTER_HEAL);
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        client.join().expect("a client thread panicked");
    }
    let checked = workload.finish(&cluster.client_addrs(), args.clients);
    findings.failures.extend(checked.failures);
    findings.undecided.extend(checked.undecided);
    restart_crashed(&mut cluster, &mut findings);
    let applied = check_convergence(&cluster, workload.as_ref(), &mut findings);

    let history_path = dir.join("history.jsonl");
    workload.write_history(&history_path, args.seed)?;
    let passed = findings.failures.is_empty();
    let counts = workload.counts();
    let summary = summary_json(
        args,
        &nemesis,
        counts,
        &findings,
        recovery_ms,
        applied,
        &cluster.ids(),
    );
    let summary_path = dir.join("summary.json");
    std::fs::write(&summary_path, format!("{summary:#}\n"))
        .map_err(|err| format!("write {}: {err}", summary_path.display()))?;
    print_summary(&nemesis, counts, &findings, recovery_ms, &dir, passed);
    drop(cluster);
    if passed && !keep_dir {
        let _ = std::fs::remove_dir_all(&dir);
    }
    Ok(passed)
}

/// Records every node that crashed on its own as a failure and restarts it; false when one
/// cannot restart.
fn restart_crashed(cluster: &mut Cluster, findings: &mut Findings) -> bool {
    for (id, why) in cluster.reap_exited() {
        findings
            .failures
            .push(format!("node {id} exited on its own: {why}"));
        if let Err(err) = cluster.start_node(id) {
            findings
                .failures
                .push(format!("restart of crashed node {id}: {err}"));
            return false;
        }
    }
    true
}

/// Heals every fault and returns how long until a proposal of `probe` succeeded, in ms.
fn heal_and_time(
    cluster: &mut Cluster,
    args: &RunArgs,
    probe: &[u8],
    findings: &mut Findings,
) -> Option<u64> {
    restart_crashed(cluster, findings);
    for id in cluster.ids() {
        if cluster.is_paused(id) {
            cluster.resume(id);
        }
        if !cluster.is_up(id) {
            if let Err(err) = cluster.start_node(id) {
                findings
                    .failures
                    .push(format!("restart after the faults: {err}"));
            }
        }
    }
    if let Some(netns) = cluster.netns() {
        if let Err(err) = netns.heal() {
            findings.failures.push(format!("heal the network: {err}"));
        }
    }
    let healed = Instant::now();
    let bound = Duration::from_secs(args.recovery_bound_s);
    let mut client = ClusterClient::new(cluster.client_addrs(), CLUSTER_ID, Duration::from_secs(1))
        .with_retry_for(bound);
    loop {
        match client.propose_idempotent(probe) {
            Ok(_) => return Some(healed.elapsed().as_millis() as u64),
            Err(err) if healed.elapsed() >= bound => {
                findings.failures.push(format!(
                    "no write succeeded within {bound:?} after healing: {err}"
                ));
                return None;
            }
            Err(_) => std::thread::sleep(Duration::from_millis(10)),
        }
    }
}

/// Waits until every replica (every current member) applied the leader's commit index, checks
/// that the leader's committed membership is the one the harness expects (all voters), then
/// compares the workload's hash of each replica's local state. Returns the common applied index.
fn check_convergence(
    cluster: &Cluster,
    workload: &dyn Workload,
    findings: &mut Findings,
) -> Option<u64> {
    let ids = cluster.ids();
    let deadline = Instant::now() + CONVERGE_TIMEOUT;
    let (applied, leader_status) = loop {
        let statuses: Vec<_> = ids.iter().map(|id| cluster.status(*id)).collect();
        let applied: Vec<Option<u64>> = statuses
            .iter()
            .map(|status| status.as_ref().ok().and_then(|s| s["applied"].as_u64()))
            .collect();
        let leader_status = statuses
            .iter()
            .filter_map(|status| status.as_ref().ok())
            .find(|status| status["role"] == "leader");
        let leader_commit = leader_status.and_then(|status| status["commit"].as_u64());
        if leader_commit.is_some() && applied.iter().all(|index| *index == leader_commit) {
            break (leader_commit, leader_status.cloned());
        }
        if Instant::now() > deadline {
            let crashed: Vec<String> = ids
                .iter()
                .zip(&applied)
                .filter(|(_, applied)| applied.is_none())
                .map(|(id, _)| format!("node {id}: {}", cluster.why_failed(*id)))
                .collect();
            let applied: Vec<(u64, Option<u64>)> = ids.iter().copied().zip(applied).collect();
            findings.failures.push(format!(
                "replicas did not converge (silent: {crashed:?}) within {CONVERGE_TIMEOUT:?}: \
                 applied (node, index) {applied:?}, leader commit {leader_commit:?}"
            ));
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let expected: Vec<(u64, bool)> = ids.iter().map(|id| (*id, true)).collect();
    match leader_status.as_ref().and_then(leader_members) {
        Some((members, true)) if members == expected => {}
        other => findings.failures.push(format!(
            "the leader's membership (id, voter; committed) is {other:?}, expected the voters \
             {ids:?}"
        )),
    }
    let mut hashes = Vec::new();
    for &id in &ids {
        let hash = Client::connect(cluster.client_addr(id), CLUSTER_ID, Duration::from_secs(2))
            .map_err(|err| err.to_string())
            .and_then(|mut client| workload.state_hash(&mut client));
        match hash {
            Ok(hash) => hashes.push((id, hash)),
            Err(err) => findings.failures.push(format!("state of node {id}: {err}")),
        }
    }
    if hashes.iter().any(|(_, hash)| *hash != hashes[0].1) {
        findings.failures.push(format!(
            "replicas hold different states (node, hash): {hashes:x?}"
        ));
    }
    applied
}

fn summary_json(
    args: &RunArgs,
    nemesis: &Nemesis,
    counts: OutcomeCounts,
    findings: &Findings,
    recovery_ms: Option<u64>,
    applied: Option<u64>,
    members: &[u64],
) -> serde_json::Value {
    let mut faults_by_kind: BTreeMap<&str, usize> = BTreeMap::new();
    for fault in &nemesis.faults {
        *faults_by_kind.entry(fault.kind.name()).or_default() += 1;
    }
    serde_json::json!({
        "format": "lockstep-chaos-summary",
        "version": SUMMARY_VERSION,
        "result": if findings.failures.is_empty() { "pass" } else { "fail" },
        "seed": args.seed,
        "nodes": args.nodes,
        "seconds": args.seconds,
        "workload": args.workload.app(),
        "bug": args.bug.map(|bug| format!("{bug:?}")),
        "faults": nemesis.faults.len(),
        "faults_by_kind": faults_by_kind,
        "fault_log": nemesis.faults.iter().map(|fault| format!("{} ms: {}", fault.at_ms, fault.what)).collect::<Vec<_>>(),
        "power_cuts_by_scope": nemesis.power_cuts,
        "power_cuts_by_mode": nemesis.power_cut_modes,
        "nodes_power_cut": nemesis.nodes_power_cut,
        "sync": args.sync,
        "serve_args": args.serve_args,
        "refused_start_count": nemesis.refused_starts.len(),
        "refused_starts": nemesis.refused_starts,
        "ops": counts.total(),
        "ops_ok": counts.ok,
        "ops_fail": counts.fail,
        "ops_unknown": counts.unknown,
        "recovery_ms": recovery_ms,
        "applied": applied,
        "members": members,
        "failure_count": findings.failures.len(),
        "failures": findings.failures,
        "undecided": findings.undecided,
    })
}

fn print_summary(
    nemesis: &Nemesis,
    counts: OutcomeCounts,
    findings: &Findings,
    recovery_ms: Option<u64>,
    dir: &Path,
    passed: bool,
) {
    for fault in &nemesis.faults {
        eprintln!("chaos: {:>7} ms  {}", fault.at_ms, fault.what);
    }
    for refusal in &nemesis.refused_starts {
        eprintln!("chaos: node refused to start on a damaged log: {refusal}");
    }
    for undecided in &findings.undecided {
        eprintln!("chaos: {undecided}");
    }
    for failure in findings.failures.iter().take(FAILURES_PRINTED) {
        eprintln!("chaos: FAILURE: {failure}");
    }
    if findings.failures.len() > FAILURES_PRINTED {
        eprintln!(
            "chaos: ... {} more failures in summary.json",
            findings.failures.len() - FAILURES_PRINTED
        );
    }
    let OutcomeCounts { ok, fail, unknown } = counts;
    println!(
        "{} faults: {}, ops: {} (ok {ok}, fail {fail}, unknown {unknown}), storage refusals: {}, \
         recovery: {}, failures: {}",
        if passed { "PASS" } else { "FAIL" },
        nemesis.faults.len(),
        counts.total(),
        nemesis.refused_starts.len(),
        recovery_ms.map_or("none".to_string(), |ms| format!("{ms} ms")),
        findings.failures.len()
    );
    if !passed {
        println!(
            "history: {}  summary: {}",
            dir.join("history.jsonl").display(),
            dir.join("summary.json").display()
        );
    }
}
