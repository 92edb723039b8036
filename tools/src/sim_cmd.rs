//! `lockstep sim` (being built).

use std::process::ExitCode;

/// Arguments of `lockstep sim`.
#[derive(clap::Args)]
pub struct Args {}

/// Runs the subcommand.
pub fn run(_args: Args) -> ExitCode {
    eprintln!("lockstep sim: not built yet");
    ExitCode::FAILURE
}
