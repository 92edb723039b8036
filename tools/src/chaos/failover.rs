//! `lockstep chaos failover`: the unavailability window after kill -9 of the leader, measured
//! on a real cluster with default settings.
//!
//! Writer threads put unique keys without pause, each recording when its writes were sent and
//! answered. Per kill: wait until every replica caught up and writes flow, SIGKILL the leader,
//! and take the first write *sent after the kill* that succeeded; the window runs from the kill
//! to its answer (its request could only reach a live node, so it went through the new
//! leader). The old leader restarts before the next kill. Prints the median and max, and writes
//! them to `failover.json` in the run directory.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lockstep::client::ClusterClient;
use lockstep_server::apps::KvCommand;

use super::cluster::{Cluster, CLUSTER_ID};

/// Writer threads.
const WRITERS: usize = 4;

/// Bound on one kill's wait for a successful write.
const WINDOW_BOUND: Duration = Duration::from_secs(15);

/// Version of `failover.json`.
const FAILOVER_VERSION: u32 = 1;

/// Arguments of `lockstep chaos failover`.
#[derive(clap::Args, Debug)]
pub struct FailoverArgs {
    /// How many times to kill the leader.
    #[arg(long, default_value_t = 20)]
    kills: usize,
    /// Cluster size.
    #[arg(long, default_value_t = 3)]
    nodes: u64,
    /// Run directory (kept); default: a temporary one, removed afterwards.
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
}

/// Successful writes: (sent, answered).
type Successes = Arc<Mutex<Vec<(Instant, Instant)>>>;

fn writer(
    writer: usize,
    cluster_addrs: Vec<std::net::SocketAddr>,
    stop: Arc<AtomicBool>,
    done: Successes,
) {
    let mut client = ClusterClient::new(cluster_addrs, CLUSTER_ID, Duration::from_millis(500))
        .with_retry_for(Duration::from_secs(2));
    let mut command = Vec::new();
    let mut sequence: u64 = 0;
    while !stop.load(Ordering::Relaxed) {
        sequence += 1;
        let key = format!("f{writer}-{sequence}");
        command.clear();
        KvCommand::Put {
            key: key.as_bytes(),
            value: b"1",
        }
        .encode(&mut command);
        let sent = Instant::now();
        if client.propose(&command).is_ok() {
            done.lock()
                .expect("successes lock")
                .push((sent, Instant::now()));
        }
    }
}

/// Runs the measurement.
pub fn run(args: FailoverArgs) -> ExitCode {
    match measure(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("lockstep chaos failover: {err}");
            ExitCode::from(2)
        }
    }
}

/// The value at quantile `q` of sorted `values`.
fn quantile(sorted: &[u64], q: f64) -> u64 {
    assert!(!sorted.is_empty(), "quantile of no values");
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

/// Waits until every node applied the leader's commit index.
fn wait_caught_up(cluster: &Cluster, timeout: Duration) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    loop {
        let statuses: Vec<_> = cluster
            .ids()
            .into_iter()
            .filter_map(|id| cluster.status(id).ok())
            .collect();
        let commit = statuses
            .iter()
            .find(|status| status["role"] == "leader")
            .and_then(|status| status["commit"].as_u64());
        if statuses.len() == cluster.ids().len()
            && commit.is_some()
            && statuses
                .iter()
                .all(|status| status["applied"].as_u64() >= commit.map(|c| c.saturating_sub(64)))
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("replicas did not catch up within {timeout:?}"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn measure(args: &FailoverArgs) -> Result<(), String> {
    if args.kills == 0 || args.nodes < 3 {
        return Err(format!(
            "--kills {} --nodes {}: need at least one kill and 3 nodes",
            args.kills, args.nodes
        ));
    }
    let (dir, keep_dir) = super::work_dir(args.dir.clone(), "failover", 0)?;
    let mut cluster = Cluster::start(args.nodes, "kv", &dir, Vec::new(), None, false)?;
    let stop = Arc::new(AtomicBool::new(false));
    let successes: Successes = Arc::new(Mutex::new(Vec::new()));
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let (addrs, stop, done) = (cluster.client_addrs(), stop.clone(), successes.clone());
            std::thread::spawn(move || writer(w, addrs, stop, done))
        })
        .collect();
    let mut windows_ms = Vec::new();
    let result = (|| -> Result<(), String> {
        for kill in 0..args.kills {
            wait_caught_up(&cluster, Duration::from_secs(30))?;
            let leader = cluster
                .wait_leader(Duration::from_secs(10))
                .ok_or("no leader before a kill")?;
            let before = successes.lock().expect("successes lock").len();
            let deadline = Instant::now() + Duration::from_secs(10);
            while successes.lock().expect("successes lock").len() < before + 50 {
                if Instant::now() > deadline {
                    return Err("writes do not flow before a kill".to_string());
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            let killed_at = Instant::now();
            cluster.kill9(leader);
            let window = loop {
                let first = successes
                    .lock()
                    .expect("successes lock")
                    .iter()
                    .filter(|(sent, _)| *sent >= killed_at)
                    .map(|(_, answered)| *answered)
                    .min();
                if let Some(answered) = first {
                    break answered.duration_since(killed_at);
                }
                if killed_at.elapsed() > WINDOW_BOUND {
                    return Err(format!(
                        "kill {kill}: no write succeeded within {WINDOW_BOUND:?}"
                    ));
                }
                std::thread::sleep(Duration::from_millis(1));
            };
            windows_ms.push(window.as_secs_f64() * 1e3);
            eprintln!(
                "failover: kill {kill}: leader {leader}, unavailable {:.1} ms",
                window.as_secs_f64() * 1e3
            );
            cluster.start_node(leader)?;
        }
        Ok(())
    })();
    stop.store(true, Ordering::Relaxed);
    for writer in writers {
        writer.join().expect("a writer thread panicked");
    }
    result?;
    let mut sorted_us: Vec<u64> = windows_ms.iter().map(|ms| (ms * 1e3) as u64).collect();
    sorted_us.sort_unstable();
    let median_ms = quantile(&sorted_us, 0.5) as f64 / 1e3;
    let max_ms = *sorted_us.last().expect("at least one kill") as f64 / 1e3;
    let report = serde_json::json!({
        "format": "lockstep-chaos-failover",
        "version": FAILOVER_VERSION,
        "nodes": args.nodes,
        "kills": args.kills,
        "median_ms": median_ms,
        "max_ms": max_ms,
        "windows_ms": windows_ms,
    });
    let path = dir.join("failover.json");
    std::fs::write(&path, format!("{report:#}\n"))
        .map_err(|err| format!("write {}: {err}", path.display()))?;
    println!(
        "failover over {} kills of the leader ({} nodes): median {median_ms:.1} ms, max {max_ms:.1} ms (target: median <= 300, max <= 1000)",
        args.kills, args.nodes
    );
    drop(cluster);
    if !keep_dir {
        let _ = std::fs::remove_dir_all(&dir);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::quantile;

    #[test]
    fn quantiles_of_sorted_values() {
        let values = [1, 2, 3, 4, 100];
        assert_eq!(quantile(&values, 0.5), 3);
        assert_eq!(quantile(&values, 1.0), 100);
        assert_eq!(quantile(&[7], 0.5), 7);
    }
}
