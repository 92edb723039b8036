//! `lockstep log` (being built).

use std::process::ExitCode;

/// Arguments of `lockstep log`.
#[derive(clap::Args)]
pub struct Args {}

/// Runs the subcommand.
pub fn run(_args: Args) -> ExitCode {
    eprintln!("lockstep log: not built yet");
    ExitCode::FAILURE
}
