//! `lockstep-bench`: lockstep's benchmark tool.
//!
//! With no subcommand it runs the cluster benchmark (`--mode log` or `kv`, see [`cluster`]); `disk` and
//! `core` measure the durable log and the consensus core alone. The hidden `node` subcommand is
//! how the cluster benchmark starts its node processes: it re-executes this binary.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod baseline;
mod cluster;
mod core;
mod disk;
mod interrupt;
mod report;
mod resp;

#[derive(Parser)]
#[command(
    name = "lockstep-bench",
    version,
    about = "Benchmarks lockstep. With no subcommand: a local 3-node cluster, durable, \
             16-byte entries, closed loop (see the options)",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    cluster: cluster::args::Args,
}

#[derive(Subcommand)]
enum Command {
    /// Durable log throughput and latency against a raw pwrite+fdatasync baseline.
    Disk(disk::Args),
    /// A 3-node cluster of consensus cores in one thread, no I/O.
    Core(core::Args),
    /// Runs one node of the cluster benchmark's local cluster until SIGTERM.
    #[command(hide = true)]
    Node {
        /// The node's server configuration (TOML).
        #[arg(long)]
        config: PathBuf,
        /// `--embedded`: also run the load of each round the bench publishes in this directory
        /// through the embedding API, and leave the results there.
        #[arg(long)]
        embedded: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Disk(args)) => disk::run(args),
        Some(Command::Core(args)) => core::run(args),
        Some(Command::Node { config, embedded }) => run_node(&config, embedded.as_deref()),
        None => cluster::run(cli.cluster),
    }
}

/// Loads the configuration and serves until SIGINT/SIGTERM (`lockstep_server::run` prints
/// the ready line the bench waits for); with `embedded`, drives the embedded load meanwhile.
fn run_node(config: &Path, embedded: Option<&Path>) -> ExitCode {
    // Warnings and errors (refused handshakes, a failed sync) go to stderr, which the bench
    // keeps with the node's output; `LOCKSTEP_LOG` filters as for `lockstep serve`.
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("LOCKSTEP_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();
    let outcome = lockstep_server::ServerConfig::load(config).and_then(|config| {
        let id = config.id;
        lockstep_server::run_with(config, |node, ending| {
            if let Some(dir) = embedded {
                cluster::embedded::driver::serve(node, id, dir, ending);
            }
        })
    });
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("lockstep-bench node: {}", error);
            ExitCode::FAILURE
        }
    }
}
