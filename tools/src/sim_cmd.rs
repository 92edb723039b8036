//! `lockstep sim`: replays seeds of the deterministic consensus simulator.
//!
//! Exit status: 0 when every run held every invariant, 1 on a violation, 2 on bad arguments.
//! `--bug NAME` re-inserts a known bug in the cores; it needs the tool built with the
//! `inject-bugs` feature (`cargo run --release -p lockstep-tools --features inject-bugs -- sim
//! ...`), which forwards to the engine's feature of the same name, so normal builds never carry
//! the switch.

use std::process::ExitCode;

use lockstep::sim::{run as run_sim, SimOptions};

/// Arguments of `lockstep sim`.
#[derive(clap::Args)]
pub struct Args {
    /// The seed to run (the first one with --count).
    #[arg(long)]
    seed: u64,
    /// Cluster size (1 to 7 nodes).
    #[arg(long, default_value_t = 3)]
    nodes: usize,
    /// Events processed under faults before the quiet period.
    #[arg(long, default_value_t = 10_000)]
    steps: u64,
    /// Print every event.
    #[arg(long)]
    trace: bool,
    /// Run this many consecutive seeds, stopping at the first violation.
    #[arg(long, default_value_t = 1)]
    count: u64,
    /// Re-insert a known bug into every core, to watch the checker catch it (needs the tool
    /// built with the `inject-bugs` feature, whose help lists the bugs).
    #[arg(long, value_name = "NAME")]
    #[cfg_attr(
        feature = "inject-bugs",
        arg(value_parser = clap::builder::PossibleValuesParser::new(
            lockstep::raft::InjectedBug::ALL.map(lockstep::raft::InjectedBug::name)
        ))
    )]
    bug: Option<String>,
}

/// Runs the subcommand.
pub fn run(args: Args) -> ExitCode {
    if !(1..=7).contains(&args.nodes) {
        eprintln!("lockstep sim: --nodes must be 1 to 7, not {}", args.nodes);
        return ExitCode::from(2);
    }
    if args.count == 0 {
        eprintln!("lockstep sim: --count must be at least 1");
        return ExitCode::from(2);
    }
    let template = match options(&args) {
        Ok(options) => options,
        Err(message) => {
            eprintln!("lockstep sim: {message}");
            return ExitCode::from(2);
        }
    };
    for seed in args.seed..args.seed.saturating_add(args.count) {
        let options = SimOptions {
            seed,
            ..template.clone()
        };
        let report = run_sim(options);
        println!("{report}");
        if report.violation.is_some() {
            return ExitCode::from(1);
        }
    }
    ExitCode::SUCCESS
}

#[cfg(feature = "inject-bugs")]
fn options(args: &Args) -> Result<SimOptions, String> {
    let mut options = SimOptions::new(args.seed, args.nodes, args.steps);
    options.trace = args.trace;
    if let Some(name) = &args.bug {
        use lockstep::raft::InjectedBug;
        options.bug =
            Some(InjectedBug::from_name(name).ok_or_else(|| {
                format!("unknown --bug {name:?} (known: {})", InjectedBug::names())
            })?);
    }
    Ok(options)
}

#[cfg(not(feature = "inject-bugs"))]
fn options(args: &Args) -> Result<SimOptions, String> {
    if let Some(name) = &args.bug {
        return Err(format!(
            "--bug {name} needs the bug switch: build with \
             `cargo run --release -p lockstep-tools --features inject-bugs -- sim ...`"
        ));
    }
    let mut options = SimOptions::new(args.seed, args.nodes, args.steps);
    options.trace = args.trace;
    Ok(options)
}

#[cfg(all(test, feature = "inject-bugs"))]
mod tests {
    use super::*;
    use clap::CommandFactory as _;

    #[derive(clap::Parser)]
    struct Wrapper {
        #[command(flatten)]
        args: Args,
    }

    #[test]
    fn help_lists_every_injectable_bug_and_each_parses() {
        let help = Wrapper::command().render_long_help().to_string();
        for bug in lockstep::raft::InjectedBug::ALL {
            assert!(
                help.contains(bug.name()),
                "{} missing from:\n{help}",
                bug.name()
            );
            let args: Args = crate::parse_flags("sim", &["--seed", "1", "--bug", bug.name()])
                .expect("a known bug parses");
            assert_eq!(options(&args).expect("valid").bug, Some(bug));
        }
        let error = crate::parse_flags::<Args>("sim", &["--seed", "1", "--bug", "nope"])
            .err()
            .expect("an unknown bug is refused");
        assert!(error.contains("read-without-confirmation"), "{error}");
    }
}
