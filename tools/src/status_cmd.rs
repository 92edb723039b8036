//! `lockstep status`: ask one node for its status over the client protocol and print it, as a
//! short table or (`--json`) as the node's JSON. Exit 1 when the node cannot be reached or
//! refuses the handshake.

use std::net::{SocketAddr, ToSocketAddrs};
use std::process::ExitCode;
use std::time::Duration;

use lockstep::client::{Client, ClientError};
use serde_json::Value;

/// Arguments of `lockstep status`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The node's client address, HOST:PORT.
    #[arg(long, value_name = "HOST:PORT")]
    addr: String,
    /// The cluster id the node belongs to (the handshake is refused otherwise) [default: 0].
    #[arg(long, value_name = "N")]
    cluster_id: Option<u64>,
    /// Print the node's JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// Give up after this many milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 2000)]
    timeout_ms: u64,
}

fn resolve(addr: &str) -> Result<SocketAddr, String> {
    addr.to_socket_addrs()
        .map_err(|e| format!("--addr {addr:?}: {e}"))?
        .next()
        .ok_or_else(|| format!("--addr {addr:?}: no address"))
}

fn fetch(args: &Args) -> Result<String, String> {
    let addr = resolve(&args.addr)?;
    let timeout = Duration::from_millis(args.timeout_ms);
    let mut client = Client::connect(addr, args.cluster_id.unwrap_or(0), timeout).map_err(|e| {
        let hint = match (&e, args.cluster_id) {
            (ClientError::Refused(_), None) => " (pass the cluster's --cluster-id)",
            _ => "",
        };
        format!("cannot connect to {addr}: {e}{hint}")
    })?;
    client.status().map_err(|e| format!("{addr}: {e}"))
}

fn field(status: &Value, name: &str) -> String {
    match status.get(name) {
        None | Some(Value::Null) => "-".to_string(),
        Some(Value::String(text)) => text.clone(),
        Some(other) => other.to_string(),
    }
}

/// The human-readable rendering of a status JSON object.
fn render(status: &Value) -> String {
    let mut out = String::new();
    for (label, name) in [
        ("node", "id"),
        ("role", "role"),
        ("term", "term"),
        ("leader", "leader"),
        ("commit", "commit"),
        ("applied", "applied"),
        ("durable", "durable"),
    ] {
        out.push_str(&format!("{label:<8} {}\n", field(status, name)));
    }
    if let Some(Value::Array(peers)) = status.get("peers") {
        if !peers.is_empty() {
            out.push_str(&format!(
                "{:<6} {:>12} {:>12}  {}\n",
                "peer", "matched", "next", "state"
            ));
            for peer in peers {
                out.push_str(&format!(
                    "{:<6} {:>12} {:>12}  {}\n",
                    field(peer, "id"),
                    field(peer, "matched"),
                    field(peer, "next"),
                    field(peer, "state")
                ));
            }
        }
    }
    out
}

/// Runs the subcommand.
pub fn run(args: Args) -> ExitCode {
    let json = match fetch(&args) {
        Ok(json) => json,
        Err(message) => {
            eprintln!("lockstep status: {message}");
            return ExitCode::FAILURE;
        }
    };
    if args.json {
        println!("{json}");
        return ExitCode::SUCCESS;
    }
    match serde_json::from_str::<Value>(&json) {
        Ok(status) => {
            print!("{}", render(&status));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("lockstep status: the node sent status that is not JSON ({e}): {json}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_shows_every_field_and_peer() {
        let status: Value = serde_json::from_str(
            r#"{"id":1,"role":"leader","term":3,"leader":1,"commit":10,"applied":9,"durable":10,
               "peers":[{"id":2,"matched":10,"next":11,"state":"replicate"}]}"#,
        )
        .unwrap();
        let text = render(&status);
        for expected in ["role     leader", "term     3", "applied  9", "replicate"] {
            assert!(
                text.contains(expected),
                "{expected:?} missing from:\n{text}"
            );
        }
        let follower: Value = serde_json::from_str(r#"{"id":2,"leader":null,"peers":[]}"#).unwrap();
        assert!(render(&follower).contains("leader   -"));
    }
}
