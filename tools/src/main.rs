//! `lockstep`: the command-line tool: run a node (`serve`), ask a node for its status (`status`),
//! inspect logs (`log`), replay simulator seeds (`sim`).

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod chaos;
mod log_cmd;
mod serve_cmd;
mod sim_cmd;
mod status_cmd;

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
    /// Run one node of a cluster until SIGINT/SIGTERM.
    Serve(Box<serve_cmd::Args>),
    /// Show a running node's role, term, leader, commit/applied index and peer progress.
    Status(status_cmd::Args),
    /// Inspect and verify log directories.
    Log(log_cmd::Args),
    /// Replay one seed of the deterministic consensus simulator.
    Sim(sim_cmd::Args),
    /// Fault-test a real cluster (kill, pause, partition, corrupt) and check its history.
    Chaos(chaos::Args),
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("LOCKSTEP_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match Cli::parse().command {
        Command::Serve(args) => serve_cmd::run(*args),
        Command::Status(args) => status_cmd::run(args),
        Command::Log(args) => log_cmd::run(args),
        Command::Sim(args) => sim_cmd::run(args),
        Command::Chaos(args) => chaos::run(args),
    }
}
