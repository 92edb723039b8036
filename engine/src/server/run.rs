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
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        // Registered first: when `stop` is already set, a repeated signal exits.
        signal_hook::flag::register_conditional_shutdown(signal, 1, Arc::clone(&stop)).map_err(
            |e| {
                ServerError(format!(
                    "cannot install the handler for signal {signal}: {e}"
                ))
            },
        )?;
        signal_hook::flag::register(signal, Arc::clone(&stop)).map_err(|e| {
            ServerError(format!(
                "cannot install the handler for signal {signal}: {e}"
            ))
        })?;
    }
    run_until(config, &stop)
}

/// Starts the node, prints the ready line, and serves until `stop` becomes true; then shuts the
/// node down (syncing and sealing its log) and returns. Installs no signal handler. A node that
/// fails on its own (see [`Node::failure`]) ends the run with an error naming the cause.
pub fn run_until(config: ServerConfig, stop: &AtomicBool) -> Result<(), ServerError> {
    let mut node_config = config.node_config()?;
    node_config.frontend = config.app.frontend();
    let node = match config.app {
        AppKind::Kv => Node::start(node_config, KvStore::new()),
        AppKind::Bank => Node::start(node_config, Bank::new()),
        AppKind::Lock => Node::start(node_config, LockService::new()),
        AppKind::Journal => Node::start(node_config, Journal::new()),
    }
    .map_err(|e| ServerError(format!("node {} failed to start: {e}", config.id)))?;
    let line = ready_line(config.id, node.peer_addr(), node.client_addr());
    tracing::info!(app = config.app.name(), "{line}");
    {
        let mut stdout = std::io::stdout().lock();
        writeln!(stdout, "{line}")
            .and_then(|()| stdout.flush())
            .map_err(|e| ServerError(format!("cannot write the ready line to stdout: {e}")))?;
    }
    while !stop.load(Ordering::Relaxed) {
        if let Some(failure) = node.failure() {
            // The node already stopped itself; shutting down only joins its threads.
            drop(node.shutdown());
            return Err(ServerError(format!("node {} failed: {failure}", config.id)));
        }
        std::thread::sleep(STOP_POLL);
    }
    tracing::info!(id = config.id, "stopping: shutting the node down");
    node.shutdown().map_err(|e| {
        ServerError(format!(
            "node {} failed to shut down cleanly: {e}",
            config.id
        ))
    })?;
    tracing::info!(id = config.id, "stopped");
    Ok(())
}
