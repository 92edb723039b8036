//! `lockstep-bench core` (being built).

use std::process::ExitCode;

/// Arguments of `lockstep-bench core`.
#[derive(clap::Args)]
pub struct Args {}

/// Runs the benchmark.
pub fn run(_args: Args) -> ExitCode {
    eprintln!("lockstep-bench core: not built yet");
    ExitCode::FAILURE
}
