//! `lockstep-bench disk` (being built).

use std::process::ExitCode;

/// Arguments of `lockstep-bench disk`.
#[derive(clap::Args)]
pub struct Args {}

/// Runs the benchmark.
pub fn run(_args: Args) -> ExitCode {
    eprintln!("lockstep-bench disk: not built yet");
    ExitCode::FAILURE
}
