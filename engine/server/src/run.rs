//! Running a server: start the node with the configured app, print the ready line, serve until a
//! stop flag is raised (by SIGINT/SIGTERM in [`run`]), then shut the node down cleanly.
//!
//! The ready line goes to **stdout**, flushed, exactly once, after both ports are bound:
//! `lockstep node <id> ready: peer <addr> client <addr>`. Logs go to stderr, so a supervisor or
//! test can wait for the line on stdout alone.

use std::io::Write;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::apps::{AppKind, Bank, Journal, KvStore, LockService};
use crate::node::Node;

use super::config::{ServerConfig, ServerError};
use super::metrics::MetricsServer;

/// The words that start every ready line (followed by the node id).
pub const READY_MARKER: &str = "lockstep node ";

/// How often the serving loop looks at the stop flag and at the node's health.
const STOP_POLL: Duration = Duration::from_millis(20);

/// The line printed once the node serves: `lockstep node <id> ready: peer <addr> client <addr>`.
pub fn ready_line(id: u64, peer: SocketAddr, client: Option<SocketAddr>) -> String {
    let client = client.map_or_else(|| "none".to_string(), |addr| addr.to_string());
    format!("{READY_MARKER}{id} ready: peer {peer} client {client}")
}

/// Starts the node and serves until SIGINT or SIGTERM, then shuts down cleanly. A second signal
/// while shutting down ends the process at once (exit status 1).
pub fn run(config: ServerConfig) -> Result<(), ServerError> {
    run_with(config, |_, _| {})
}

/// As [`run`], and runs `alongside` as [`run_until_with`] does.
pub fn run_with(
    config: ServerConfig,
    alongside: impl FnOnce(&Node, &AtomicBool) + Send,
) -> Result<(), ServerError> {
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        // Registered first: when `stop` is already set, a repeated signal exits.
        let failed = |source| ServerError::Signal { signal, source };
        signal_hook::flag::register_conditional_shutdown(signal, 1, Arc::clone(&stop))
            .map_err(failed)?;
        signal_hook::flag::register(signal, Arc::clone(&stop)).map_err(failed)?;
    }
    run_until_with(config, &stop, alongside)
}

/// Starts the node, prints the ready line, and serves until `stop` becomes true; then shuts the
/// node down (syncing and sealing its log) and returns. Installs no signal handler. A node that
/// fails on its own (see [`Node::failure`]) ends the run with an error naming the cause and,
/// where one is known, what the operator should do about it.
///
/// With `metrics_addr`, the endpoint is bound before the node starts (a bad address stops
/// the server before it touches the data directory) and stopped before the node shuts down.
pub fn run_until(config: ServerConfig, stop: &AtomicBool) -> Result<(), ServerError> {
    run_until_with(config, stop, |_, _| {})
}

/// As [`run_until`], and once the ready line is out runs `alongside(node, ending)` on a thread
/// of its own (an embedder's work next to the served node, e.g. a load driver). `ending` becomes
/// true when `stop` does or the node fails; `alongside` must return promptly then, since the node
/// shuts down only after it returned.
pub fn run_until_with(
    config: ServerConfig,
    stop: &AtomicBool,
    alongside: impl FnOnce(&Node, &AtomicBool) + Send,
) -> Result<(), ServerError> {
    let mut node_config = config.node_config()?;
    preflight(&config).map_err(|error| ServerError::Preflight {
        id: config.id,
        error: Box::new(error),
    })?;
    node_config.frontend = config.app.frontend();
    let mut metrics = config
        .metrics_addr
        .map(MetricsServer::bind)
        .transpose()
        .map_err(|err| ServerError::option_caused("metrics_addr", err.to_string(), err))?;
    let node = match config.app {
        AppKind::Kv => Node::start(node_config, KvStore::new()),
        AppKind::Bank => Node::start(node_config, Bank::new()),
        AppKind::Lock => Node::start(node_config, LockService::new()),
        AppKind::Journal => Node::start(node_config, Journal::new()),
    }
    .map_err(|source| {
        fatal(ServerError::Start {
            id: config.id,
            source,
            hint: None,
        })
    })?;
    let node = Arc::new(node);
    let served = metrics
        .as_mut()
        .map_or(Ok(()), |server| server.serve(Arc::clone(&node)));
    if let Err(err) = served {
        drop(metrics);
        drop(shut_down(node, &config));
        return Err(ServerError::option_caused(
            "metrics_addr",
            err.to_string(),
            err,
        ));
    }
    let line = ready_line(config.id, node.peer_addr(), node.client_addr());
    tracing::info!(app = config.app.name(), "{line}");
    {
        let mut stdout = std::io::stdout().lock();
        writeln!(stdout, "{line}")
            .and_then(|()| stdout.flush())
            .map_err(ServerError::ReadyLine)?;
    }
    let ending = AtomicBool::new(false);
    let failure = std::thread::scope(|scope| {
        scope.spawn(|| alongside(&node, &ending));
        let failure = serve(&node, stop);
        ending.store(true, Ordering::Relaxed);
        failure
    });
    drop(metrics);
    if let Some(failure) = failure {
        // The node already stopped itself; shutting down only joins its threads.
        drop(shut_down(node, &config));
        return Err(fatal(ServerError::Failed {
            id: config.id,
            failure,
            hint: None,
        }));
    }
    tracing::info!(id = config.id, "stopping: shutting the node down");
    shut_down(node, &config)?;
    tracing::info!(id = config.id, "stopped");
    Ok(())
}

/// Waits until `stop` becomes true (`None`) or the node fails (its failure).
fn serve(node: &Node, stop: &AtomicBool) -> Option<crate::node::NodeError> {
    while !stop.load(Ordering::Relaxed) {
        if let Some(failure) = node.failure() {
            return Some(failure);
        }
        std::thread::sleep(STOP_POLL);
    }
    None
}

/// Checks what would otherwise fail only after the log preallocated its segments: the data
/// directory (and its `log` and `snapshots`) must be directories or missing, and this node's
/// peer and client addresses must be free. The error names the option, the path or the port,
/// and what to do.
fn preflight(config: &ServerConfig) -> Result<(), ServerError> {
    let data_dir = &config.data_dir;
    let paths = [
        data_dir.clone(),
        crate::node::start::log_dir(data_dir),
        crate::node::start::snapshot_dir(data_dir),
    ];
    if let Some(path) = paths.iter().find(|path| path.exists() && !path.is_dir()) {
        return Err(ServerError::option(
            "data_dir",
            format!(
                "{} is a file, not a directory. What to do: give `data_dir` a directory (it \
                 is created if missing), or move that file out of the way",
                path.display()
            ),
        ));
    }
    let Some(own) = config.own_member() else {
        return Ok(()); // validation names it
    };
    for (role, addr) in [("peer", own.peer_addr), ("client", own.client_addr)] {
        if let Err(error) = std::net::TcpListener::bind(addr) {
            return Err(ServerError::option(
                "members",
                format!(
                    "cannot listen on node {}'s {role} address {addr}: {error}. What to do: \
                     {}",
                    config.id,
                    operator_hint(&error.to_string())
                        .unwrap_or("check this node's entry in `members`")
                ),
            ));
        }
    }
    Ok(())
}

/// Shuts the node down once the metrics thread (the only other holder) has let go of it.
fn shut_down(node: Arc<Node>, config: &ServerConfig) -> Result<(), ServerError> {
    let node = Arc::try_unwrap(node).unwrap_or_else(|node| {
        panic!(
            "node {} is still shared ({} references) after the metrics server stopped",
            config.id,
            Arc::strong_count(&node)
        )
    });
    node.shutdown().map_err(|source| {
        fatal(ServerError::Shutdown {
            id: config.id,
            source,
            hint: None,
        })
    })
}

/// A fatal error of the node, given what the operator should do when the cause is a known one;
/// logged (so structured logs carry it too) and returned.
fn fatal(mut error: ServerError) -> ServerError {
    let message = error.to_string();
    let known = operator_hint(&message);
    match known {
        Some(hint) => tracing::error!(error = %message, hint, "fatal"),
        None => tracing::error!(error = %message, "fatal"),
    }
    match &mut error {
        ServerError::Start { hint, .. }
        | ServerError::Failed { hint, .. }
        | ServerError::Shutdown { hint, .. } => *hint = known,
        other => unreachable!("not an error of the node: {other:?}"),
    }
    error
}

/// Known causes of fatal errors, recognised by the (lower-case) words their messages (built by the log, the
/// network and the node start-up) contain, and what the operator should do about each.
/// `docs/OPERATIONS.md` ("When a node stops") explains each in more depth.
const HINTS: [(&str, &str); 11] = [
    (
        "is in use by another log",
        "another lockstep process uses this data directory; stop it, or give this node its own \
         `data_dir`",
    ),
    (
        "address already in use",
        "another process listens on that address; stop it, or change this node's addresses in \
         `members` (every node must list the same members)",
    ),
    (
        "cannot assign requested address",
        "that address does not belong to this machine; check this node's entry in `members`",
    ),
    (
        "permission denied",
        "the user running lockstep may not use that file, directory or port; fix ownership or \
         mode, or use a port above 1023",
    ),
    (
        "no space left",
        "the disk is full; free space (the log needs room for one more `segment_bytes` \
         segment) and restart: everything already durable is intact",
    ),
    (
        "log is poisoned",
        "the disk refused a sync; check the kernel log (dmesg) for I/O errors, then restart the \
         node: syncs are never retried, the log is verified on start and peers resend the rest",
    ),
    (
        "log corrupt",
        "the named file is damaged before its tail; keep it for diagnosis (`lockstep log \
         verify`), and see docs/OPERATIONS.md (\"A corrupt log\") before removing anything",
    ),
    (
        "has no valid slot",
        "the hard-state file is damaged; keep it for diagnosis and see docs/OPERATIONS.md \
         (\"A corrupt log\")",
    ),
    (
        "but the log has held segments",
        "the hard-state file was deleted (a node that forgot its vote could vote twice in one \
         term); restore it from a backup of this data directory, or rebuild the node from the \
         others as docs/OPERATIONS.md (\"A corrupt log\") says",
    ),
    (
        "not a directory",
        "a file is where the node keeps a directory (`data_dir`, or its `log` or `snapshots`); \
         move it out of the way, or give `data_dir` a directory of its own",
    ),
    (
        "rejected the snapshot",
        "the snapshot was written by another app; run this data directory with the `app` that \
         wrote it",
    ),
];

/// What the operator should do about a fatal error, when its cause is a known one (the words
/// of [`HINTS`] are lower case and matched regardless of case).
fn operator_hint(message: &str) -> Option<&'static str> {
    let message = message.to_lowercase();
    HINTS
        .iter()
        .find(|(words, _)| message.contains(words))
        .map(|&(_, hint)| hint)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::LogError;

    #[test]
    fn the_hints_match_the_messages_the_causes_really_produce() {
        let os = |errno: i32| LogError::io("opening", std::io::Error::from_raw_os_error(errno));
        let messages = [
            LogError::Locked {
                dir: "/d/log".into(),
            }
            .to_string(),
            std::io::Error::from_raw_os_error(libc::EADDRINUSE).to_string(),
            std::io::Error::from_raw_os_error(libc::EADDRNOTAVAIL).to_string(),
            os(libc::EACCES).to_string(),
            LogError::NoSpace { segment_bytes: 1 }.to_string(),
            LogError::Poisoned { errno: libc::EIO }.to_string(),
            LogError::Corrupt {
                file: "/d/log/x".into(),
                offset: 0,
                index: crate::types::LogIndex(3),
                reason: "crc".into(),
            }
            .to_string(),
            LogError::HardStateCorrupt {
                file: "/d/log/hs".into(),
                reason: "both slots fail their checksums",
            }
            .to_string(),
            LogError::HardStateMissing {
                file: "/d/log/hs".into(),
            }
            .to_string(),
            LogError::io(
                "list /d/snapshots",
                std::io::Error::from_raw_os_error(libc::ENOTDIR),
            )
            .to_string(),
            "refusing to start: the state machine rejected the snapshot at 4: bad".to_string(),
        ];
        for (message, (words, hint)) in messages.iter().zip(HINTS) {
            assert_eq!(
                operator_hint(message),
                Some(hint),
                "{message:?} should match {words:?}"
            );
        }
        assert_eq!(operator_hint("something new"), None);
        let error = fatal(ServerError::Failed {
            id: 1,
            failure: crate::node::NodeError::Storage {
                kind: std::io::ErrorKind::ResourceBusy,
                detail: messages[0].to_string(),
            },
            hint: None,
        });
        assert!(
            matches!(error, ServerError::Failed { hint: Some(_), .. }),
            "{error:?}"
        );
        assert!(
            error
                .to_string()
                .contains("What to do: another lockstep process"),
            "{error}"
        );
    }
}
