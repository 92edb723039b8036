//! `lockstep log`: verify and dump log directories, read-only.
//!
//! `DIR` is a log directory (segment files `<seq>.seg`, `spare-<n>.seg`, `hard_state`) or a
//! node's data directory, whose log is `DIR/log`. A directory holding neither is refused (exit 1)
//! rather than reported as an empty, sound log.
//!
//! `verify DIR` runs the same scan as opening the log: exit 0 when sound (a torn tail, which open
//! would cut, is reported but is not an error), exit 1 printing file, offset, index and what is
//! wrong otherwise. `dump DIR [--from I] [--to J]` lists the live batch records.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Subcommand;
use lockstep::log::inspect::{inspect, Inspection};
use lockstep::log::LogError;

/// Arguments of `lockstep log`.
#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: LogCommand,
}

#[derive(Subcommand)]
enum LogCommand {
    /// Check every record of a log; exit 1 on corruption or when DIR holds no log.
    Verify {
        /// The log directory, or a node's data directory (its log is DIR/log).
        dir: PathBuf,
    },
    /// Print the batch records of a log; exit 1 when DIR holds no log.
    Dump {
        /// The log directory, or a node's data directory (its log is DIR/log).
        dir: PathBuf,
        /// First index to show.
        #[arg(long, value_name = "INDEX", default_value_t = 0)]
        from: u64,
        /// Last index to show [default: the last entry].
        #[arg(long, value_name = "INDEX")]
        to: Option<u64>,
    },
}

/// Runs the subcommand.
pub fn run(args: Args) -> ExitCode {
    match args.command {
        LogCommand::Verify { dir } => verify(&dir),
        LogCommand::Dump { dir, from, to } => dump(&dir, from, to.unwrap_or(u64::MAX)),
    }
}

/// Whether `dir` holds any file of a log (a segment, a spare or the hard state).
fn holds_a_log(dir: &Path) -> bool {
    let Ok(listing) = std::fs::read_dir(dir) else {
        return false;
    };
    listing.flatten().any(|entry| {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        name.ends_with(".seg") || name == lockstep::log::hard_state::HARD_STATE_FILE
    })
}

/// The log directory `dir` names: `dir` itself when it holds a log, else a node's data
/// directory's `dir/log`. The error says what was expected where.
fn find_log(dir: &Path) -> Result<PathBuf, String> {
    if !dir.is_dir() {
        return Err(format!("{} is not a directory", dir.display()));
    }
    let in_data_dir = lockstep::node::start::log_dir(dir);
    if holds_a_log(dir) {
        Ok(dir.to_path_buf())
    } else if holds_a_log(&in_data_dir) {
        Ok(in_data_dir)
    } else {
        Err(format!(
            "{} holds no log: expected segment files (`<seq>.seg`, `spare-<n>.seg`) or \
             `hard_state` in it, or in {} (a node's data directory)",
            dir.display(),
            in_data_dir.display()
        ))
    }
}

/// Finds and scans the log `dir` names; prints why when it cannot.
fn open(dir: &Path) -> Result<(PathBuf, Inspection), ExitCode> {
    let log_dir = find_log(dir).map_err(|why| {
        eprintln!("lockstep log: {why}");
        ExitCode::FAILURE
    })?;
    let inspection = inspect(&log_dir).map_err(|err| report_error(&err))?;
    Ok((log_dir, inspection))
}

fn report_error(err: &LogError) -> ExitCode {
    match err {
        LogError::Corrupt {
            file,
            offset,
            index,
            reason,
        } => {
            println!("CORRUPT");
            println!("  file:   {}", file.display());
            println!("  offset: {offset}");
            println!("  index:  {}", index.get());
            println!("  what:   {reason}");
        }
        other => println!("ERROR: {other}"),
    }
    ExitCode::FAILURE
}

fn verify(dir: &Path) -> ExitCode {
    let (dir, inspection) = match open(dir) {
        Ok(opened) => opened,
        Err(code) => return code,
    };
    let recovered = &inspection.recovered;
    let first = recovered
        .spans
        .front()
        .map_or(recovered.next_index, |span| span.first_index);
    println!("OK {}", dir.display());
    println!(
        "  segments: {} live, {} spare",
        inspection.segments.len(),
        inspection.spares
    );
    println!("  records:  {} verified", recovered.records);
    println!(
        "  entries:  {}..={} (last term {})",
        first.get(),
        recovered.next_index.get() - 1,
        recovered.last_term.get()
    );
    if let Some(state) = inspection.hard_state {
        println!(
            "  hard state: term {} vote {}",
            state.term.get(),
            state.vote.get()
        );
    }
    if let Some(torn) = &recovered.torn {
        println!(
            "  torn tail (cut on next open): {} offset {} index {}: {} ({} newer unsynced records)",
            inspection.segments[torn.segment].path.display(),
            torn.offset,
            torn.index.get(),
            torn.reason,
            torn.newer_records_discarded
        );
    }
    ExitCode::SUCCESS
}

fn dump(dir: &Path, from: u64, to: u64) -> ExitCode {
    let (_, inspection) = match open(dir) {
        Ok(opened) => opened,
        Err(code) => return code,
    };
    let mut out = std::io::stdout().lock();
    // A closed pipe (e.g. `| head`) ends the listing quietly.
    let _ = write_listing(&mut out, &inspection, from, to);
    ExitCode::SUCCESS
}

fn write_listing(
    out: &mut impl Write,
    inspection: &Inspection,
    from: u64,
    to: u64,
) -> std::io::Result<()> {
    writeln!(
        out,
        "# first..last  term  kind  entries  file@offset  entry sizes"
    )?;
    for listed in inspection.batches(from, to) {
        let span = listed.span;
        let mut sizes = Vec::with_capacity(span.entry_count as usize);
        let mut at = 0usize;
        while at + 4 <= listed.payload.len() {
            let len = u32::from_le_bytes(listed.payload[at..at + 4].try_into().expect("4 bytes"));
            sizes.push(len.to_string());
            at += 4 + len as usize;
        }
        let live = span.last_index.get() - span.first_index.get() + 1;
        let truncated = if live < span.entry_count as u64 {
            format!(" (only the first {live} live after a truncation)")
        } else {
            String::new()
        };
        let shown: Vec<&str> = sizes.iter().take(16).map(String::as_str).collect();
        let more = if sizes.len() > 16 { " ..." } else { "" };
        writeln!(
            out,
            "{}..{}  t{}  {:?}  {}{}  {}@{}  [{}{}]",
            span.first_index.get(),
            span.last_index.get(),
            span.term.get(),
            span.kind,
            span.entry_count,
            truncated,
            listed
                .path
                .file_name()
                .map_or_else(String::new, |name| name.to_string_lossy().into_owned()),
            span.offset,
            shown.join(" "),
            more
        )?;
    }
    if let Some(torn) = &inspection.recovered.torn {
        writeln!(
            out,
            "# torn tail at {} offset {}: {}",
            inspection.segments[torn.segment].path.display(),
            torn.offset,
            torn.reason
        )?;
    }
    Ok(())
}
