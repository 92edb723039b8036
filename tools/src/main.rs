//! `lockstep`: the command-line tool (log inspection, simulation replay; the server comes later).

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod log_cmd;
mod sim_cmd;

#[derive(Parser)]
#[command(
    name = "lockstep",
    version,
    about = "lockstep: state machine replication engine"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Inspect and verify log directories.
    Log(log_cmd::Args),
    /// Replay one seed of the deterministic consensus simulator.
    Sim(sim_cmd::Args),
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("LOCKSTEP_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse().command {
        Command::Log(args) => log_cmd::run(args),
        Command::Sim(args) => sim_cmd::run(args),
    }
}
