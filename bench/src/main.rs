//! `lockstep-bench`: lockstep's benchmark tool.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod core;
mod disk;
mod report;

#[derive(Parser)]
#[command(name = "lockstep-bench", version, about = "Benchmarks lockstep")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Durable log throughput and latency against a raw pwrite+fdatasync baseline.
    Disk(disk::Args),
    /// A 3-node cluster of consensus cores in one thread, no I/O.
    Core(core::Args),
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Some(Command::Disk(args)) => disk::run(args),
        Some(Command::Core(args)) => core::run(args),
        None => {
            eprintln!("lockstep-bench: the zero-argument cluster run is not built yet; try `disk` or `core`");
            ExitCode::FAILURE
        }
    }
}
