//! `lockstep powerfs`: run a power-cut filesystem (`serve`) and command it (`cut`, `on`,
//! `status`) through its control socket. See docs/CHAOS.md, "Power cuts".

use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::powerfs::{control, CutMode, PowerDisk};

/// Arguments of `lockstep powerfs`.
#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    command: PowerfsCommand,
}

#[derive(clap::Subcommand, Debug)]
enum PowerfsCommand {
    /// Mount a power-cut filesystem and serve it until SIGINT/SIGTERM (needs /dev/fuse, root).
    Serve(ServeArgs),
    /// Cut the power: forget what was never synced; I/O fails until `on`.
    Cut(CutArgs),
    /// Power on again: mount the durable state afresh.
    On(ControlArgs),
    /// Print whether the power is on, and counters of writes, syncs and cuts (JSON).
    Status(ControlArgs),
}

#[derive(clap::Args, Debug)]
struct ServeArgs {
    /// Directory that keeps what was made durable (created when missing).
    #[arg(long, value_name = "DIR")]
    backing: PathBuf,
    /// Where to mount (an existing directory).
    #[arg(long, value_name = "DIR")]
    mount: PathBuf,
    /// Control socket (default: BACKING/control.sock).
    #[arg(long, value_name = "PATH")]
    control: Option<PathBuf>,
}

#[derive(clap::Args, Debug)]
struct ControlArgs {
    /// The filesystem's control socket.
    #[arg(long, value_name = "PATH")]
    control: PathBuf,
}

#[derive(clap::Args, Debug)]
struct CutArgs {
    #[command(flatten)]
    control: ControlArgs,
    /// What survives: `forget` (nothing unsynced), `torn` (a prefix of each file's unsynced
    /// writes, the last torn at a sector boundary) or `subset` (random sectors and directories).
    #[arg(long, default_value = "forget", value_parser = CutMode::parse)]
    mode: CutMode,
    /// Seed of the cut's random choices.
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

/// Runs `lockstep powerfs`: exit 0 on success, 2 with the reason on stderr otherwise.
pub fn run(args: Args) -> ExitCode {
    let result = match args.command {
        PowerfsCommand::Serve(args) => serve(&args),
        PowerfsCommand::Cut(args) => print_answer(
            &args.control.control,
            &format!("cut {} {}", args.mode, args.seed),
        ),
        PowerfsCommand::On(args) => print_answer(&args.control, "on"),
        PowerfsCommand::Status(args) => print_answer(&args.control, "status"),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("lockstep powerfs: {err}");
            ExitCode::from(2)
        }
    }
}

fn print_answer(socket: &Path, command: &str) -> Result<(), String> {
    let answer = control::send(socket, command)?;
    println!("{answer}");
    Ok(())
}

fn serve(args: &ServeArgs) -> Result<(), String> {
    let socket = args
        .control
        .clone()
        .unwrap_or_else(|| args.backing.join("control.sock"));
    let disk = PowerDisk::mount(&args.backing, &args.mount)?;
    match std::fs::remove_file(&socket) {
        Ok(()) => {}
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
        Err(err) => return Err(format!("remove the old {}: {err}", socket.display())),
    }
    let listener =
        UnixListener::bind(&socket).map_err(|err| format!("bind {}: {err}", socket.display()))?;
    let disk = Arc::new(Mutex::new(disk));
    let served = Arc::clone(&disk);
    std::thread::spawn(move || control::serve(listener, served));
    println!(
        "powerfs ready: {} over {}, control {}",
        args.mount.display(),
        args.backing.display(),
        socket.display()
    );
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, Arc::clone(&stop))
            .map_err(|err| format!("install a signal handler: {err}"))?;
    }
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = std::fs::remove_file(&socket);
    disk.lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .unmount();
    Ok(())
}
