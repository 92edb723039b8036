//! `lockstep`: the command-line tool: run a node (`serve`), a local cluster (`cluster`), ask a node for its status (`status`),
//! change a running cluster's membership (`member`), inspect logs (`log`), replay simulator
//! seeds (`sim`), fault-test a cluster (`chaos`), run a power-cut filesystem (`powerfs`).

use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use lockstep_server::LogFormat;

mod chaos;
mod cluster_cmd;
mod log_cmd;
mod member_cmd;
mod powerfs;
mod powerfs_cmd;
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
    /// Start a local cluster of N nodes in one command; stop it with Ctrl-C or SIGTERM.
    Cluster(cluster_cmd::Args),
    /// Show a running node's role, term, leader, commit/applied index and peer progress.
    Status(status_cmd::Args),
    /// Add, promote or remove a member of a running cluster.
    Member(member_cmd::Args),
    /// Inspect and verify log directories.
    Log(log_cmd::Args),
    /// Replay one seed of the deterministic consensus simulator.
    Sim(sim_cmd::Args),
    /// Fault-test a real cluster (kill, pause, partition, corrupt, power cut) and check its history.
    Chaos(chaos::Args),
    /// A FUSE filesystem that forgets what was never synced when its power is cut.
    Powerfs(powerfs_cmd::Args),
}

/// Environment variable holding the log filter (`info`, `debug`, `lockstep=debug,warn`, ...).
pub const LOG_ENV: &str = "LOCKSTEP_LOG";

/// Environment variable holding the log format (`text` or `json`).
pub const LOG_FORMAT_ENV: &str = "LOCKSTEP_LOG_FORMAT";

/// The value of environment variable `name`, if set and not blank.
pub fn env_setting(name: &str) -> Option<String> {
    std::env::var(name)
        .ok()
        .filter(|value| !value.trim().is_empty())
}

/// Sets up the process's logger: events passing `filter` (tracing's `EnvFilter` syntax) go to
/// stderr as text lines or JSON objects. The error says what is wrong with the filter.
pub fn init_logging(filter: &str, format: LogFormat) -> Result<(), String> {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .map_err(|e| format!("{filter:?} is not a log filter: {e}"))?
        // The FUSE library logs every mount and unmount (`powerfs`, the power nemesis).
        .add_directive("fuser=warn".parse().expect("a valid directive"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
        LogFormat::Json => builder.json().with_current_span(false).init(),
    }
    Ok(())
}

fn main() -> ExitCode {
    let command = Cli::command().mut_subcommand("serve", serve_cmd::with_defaults_in_help);
    let cli = Cli::from_arg_matches(&command.get_matches()).unwrap_or_else(|error| error.exit());
    if let Command::Serve(args) = cli.command {
        // Its configuration may set the level and format, so it sets up logging itself.
        return serve_cmd::run(*args);
    }
    let format = env_setting(LOG_FORMAT_ENV)
        .and_then(|name| LogFormat::from_name(&name).ok())
        .unwrap_or(LogFormat::Text);
    let filter = env_setting(LOG_ENV).unwrap_or_else(|| "info".to_string());
    if init_logging(&filter, format).is_err() {
        // A bad LOCKSTEP_LOG must not stop an inspection tool: fall back to the default.
        drop(init_logging("info", format));
        tracing::warn!("{LOG_ENV}={filter:?} is not a log filter; logging at info");
    }
    match cli.command {
        Command::Serve(_) => unreachable!("serve returned above"),
        Command::Cluster(args) => cluster_cmd::run(args),
        Command::Status(args) => status_cmd::run(args),
        Command::Member(args) => member_cmd::run(args),
        Command::Log(args) => log_cmd::run(args),
        Command::Sim(args) => sim_cmd::run(args),
        Command::Chaos(args) => chaos::run(args),
        Command::Powerfs(args) => powerfs_cmd::run(args),
    }
}

/// Parses one subcommand's flags as the command line would (for the subcommands' unit tests);
/// the error is clap's message.
#[cfg(test)]
fn parse_flags<A: clap::Args + clap::FromArgMatches>(
    command: &'static str,
    flags: &[&str],
) -> Result<A, String> {
    let matches = A::augment_args(clap::Command::new(command))
        .try_get_matches_from(std::iter::once(command).chain(flags.iter().copied()))
        .map_err(|e| e.to_string())?;
    A::from_arg_matches(&matches).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_filters_are_refused_with_the_reason() {
        let error = init_logging("lockstep=loudest", LogFormat::Text).unwrap_err();
        assert!(
            error.contains("\"lockstep=loudest\" is not a log filter"),
            "{error}"
        );
    }
}
