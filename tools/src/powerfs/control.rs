//! The control socket of a standalone power-cut filesystem (`lockstep powerfs serve`): a Unix
//! socket taking one command line per connection and answering one JSON line.
//!
//! - `cut MODE SEED` (MODE `forget`, `torn` or `subset`): cut the power; the answer holds the
//!   cut's report (`files_with_unsynced_changes`, `bytes_forgotten`, `bytes_kept`,
//!   `dirs_reverted`).
//! - `on`: power on (mount afresh).
//! - `status`: `powered` and the counters (`writes`, `file_syncs`, `dir_syncs`, `cuts`).
//!
//! Every answer has `ok` (true or false) and, when false, `error`.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::{Arc, Mutex};

use serde_json::{json, Value};

use super::{CutMode, PowerDisk};

/// Longest command line taken.
const MAX_LINE: u64 = 256;

/// Serves commands for `disk` on `listener` until the process ends (one thread).
pub fn serve(listener: UnixListener, disk: Arc<Mutex<PowerDisk>>) {
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        let answer = match read_line(&stream) {
            Ok(line) => execute(&line, &disk),
            Err(err) => json!({ "ok": false, "error": err }),
        };
        let mut stream = stream;
        let _ = writeln!(stream, "{answer}");
    }
}

fn read_line(stream: &UnixStream) -> Result<String, String> {
    let mut line = String::new();
    BufReader::new(std::io::Read::take(stream, MAX_LINE))
        .read_line(&mut line)
        .map_err(|err| format!("read the command: {err}"))?;
    Ok(line.trim().to_string())
}

/// Carries out one command line.
fn execute(line: &str, disk: &Mutex<PowerDisk>) -> Value {
    let mut disk = disk.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let words: Vec<&str> = line.split_whitespace().collect();
    let result = match words[..] {
        ["cut", mode, seed] => CutMode::parse(mode).and_then(|mode| {
            let seed: u64 = seed
                .parse()
                .map_err(|_| format!("seed {seed:?} is not a number"))?;
            let report = disk.cut(mode, seed)?;
            Ok(json!({
                "files_with_unsynced_changes": report.files_with_unsynced_changes,
                "bytes_forgotten": report.bytes_forgotten,
                "bytes_kept": report.bytes_kept,
                "dirs_reverted": report.dirs_reverted,
            }))
        }),
        ["on"] => disk.power_on().map(|()| json!({})),
        ["status"] => {
            let stats = disk.stats();
            Ok(json!({
                "powered": disk.powered(),
                "writes": stats.writes,
                "file_syncs": stats.file_syncs,
                "dir_syncs": stats.dir_syncs,
                "cuts": stats.cuts,
            }))
        }
        _ => Err(format!(
            "unknown command {line:?} (cut MODE SEED, on, status)"
        )),
    };
    match result {
        Ok(mut value) => {
            value["ok"] = json!(true);
            value
        }
        Err(err) => json!({ "ok": false, "error": err }),
    }
}

/// Sends `command` to the socket at `path`; returns the answer, or the error it holds.
pub fn send(path: &Path, command: &str) -> Result<Value, String> {
    let mut stream =
        UnixStream::connect(path).map_err(|err| format!("connect to {}: {err}", path.display()))?;
    writeln!(stream, "{command}").map_err(|err| format!("send to {}: {err}", path.display()))?;
    let mut line = String::new();
    BufReader::new(stream)
        .read_line(&mut line)
        .map_err(|err| format!("read from {}: {err}", path.display()))?;
    let answer: Value = serde_json::from_str(&line)
        .map_err(|err| format!("{}: not an answer ({err}): {line:?}", path.display()))?;
    if answer["ok"] == json!(true) {
        Ok(answer)
    } else {
        Err(answer["error"].as_str().unwrap_or("failed").to_string())
    }
}
