//! `lockstep chaos`: Jepsen-style fault testing of real `lockstep serve` processes. A run starts
//! a cluster of the running binary, drives it with concurrent recording clients while a seeded
//! nemesis kills, pauses, partitions, corrupts and power-cuts it, heals it, and then checks the
//! history (linearizability per key, no lost or invented values), that the replicas converged to the
//! same state and that the cluster serves again within a bound. `lockstep chaos failover`
//! measures the unavailability window after kill -9 of the leader. See docs/CHAOS.md.

mod bank;
mod cluster;
mod failover;
mod history;
mod kv;
mod linearizable;
mod lock;
mod nemesis;
mod netns;
mod run;
mod values;
mod workload;

use std::path::PathBuf;
use std::process::ExitCode;

/// Arguments of `lockstep chaos`.
#[derive(clap::Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
pub struct Args {
    /// A measurement mode instead of a fault run.
    #[command(subcommand)]
    mode: Option<Mode>,
    #[command(flatten)]
    run: run::RunArgs,
}

#[derive(clap::Subcommand, Debug)]
enum Mode {
    /// Measure the unavailability window after kill -9 of the leader, over many kills.
    Failover(failover::FailoverArgs),
}

/// Runs `lockstep chaos`: exit 0 when every check passed, 1 when one failed, 2 when the run
/// could not be carried out.
pub fn run(args: Args) -> ExitCode {
    match args.mode {
        Some(Mode::Failover(failover)) => failover::run(failover),
        None => run::run(args.run),
    }
}

/// The directory a run works in: `dir` when given (kept), else a fresh one under the system's
/// temporary directory (removed after a passing run).
fn work_dir(dir: Option<PathBuf>, what: &str, seed: u64) -> Result<(PathBuf, bool), String> {
    let (path, keep) = match dir {
        Some(dir) => (dir, true),
        None => (
            std::env::temp_dir().join(format!("lockstep-{what}-{seed}-{}", std::process::id())),
            false,
        ),
    };
    std::fs::create_dir_all(&path).map_err(|err| format!("create {}: {err}", path.display()))?;
    Ok((path, keep))
}
