//! `lockstep status`: ask one node for its status over the client protocol and print it, as a
//! short table or (`--json`) as the node's JSON. Exit 1 when the node cannot be reached or
//! refuses the handshake.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use lockstep::client::{Client, ClientError, Credentials};
use lockstep::net::ClientTls;
use lockstep::node::LatencySnapshot;
use lockstep_server::DEFAULT_CLUSTER_ID;
use serde_json::Value;

/// Arguments of `lockstep status`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The node's client address, HOST:PORT.
    #[arg(long, value_name = "HOST:PORT")]
    addr: String,
    /// The cluster id the node belongs to (the handshake is refused otherwise).
    #[arg(long, value_name = "N", default_value_t = DEFAULT_CLUSTER_ID)]
    cluster_id: u64,
    /// Print the node's JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// Give up after this many milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 2000)]
    timeout_ms: u64,
    /// File holding the client password, for a node that requires one (the default user).
    #[arg(long, value_name = "FILE")]
    password_file: Option<PathBuf>,
    /// Connect with TLS, trusting the CA certificate(s) of this PEM file (the node's certificate
    /// must be valid for the IP address dialed).
    #[arg(long, value_name = "FILE")]
    tls_ca_file: Option<PathBuf>,
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
    let credentials = args
        .password_file
        .as_deref()
        .map(Credentials::from_password_file)
        .transpose()
        .map_err(|why| format!("--password-file: {why}"))?;
    let tls = args
        .tls_ca_file
        .as_deref()
        .map(ClientTls::from_ca_file)
        .transpose()
        .map_err(|e| format!("--tls-ca-file: {e}"))?;
    let cluster_id = args.cluster_id;
    let connected = Client::connect_with(
        addr,
        cluster_id,
        timeout,
        credentials.as_ref(),
        tls.as_ref(),
    );
    let mut client = connected.map_err(|e| {
        let hint = match (&e, &credentials) {
            (ClientError::Refused(_), _) => " (is --cluster-id the cluster's id?)",
            (ClientError::Auth(_), None) => " (pass --password-file)",
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

/// A number field of `object` (0 when missing).
fn number(object: &Value, name: &str) -> f64 {
    object.get(name).and_then(Value::as_f64).unwrap_or(0.0)
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
    if let Some(until) = status.get("repair_until").and_then(Value::as_u64) {
        out.push_str(&format!(
            "repair   lost log entries up to {until}: no votes or campaigns until durable \
             reaches it\n"
        ));
    }
    if status.get("suspect").and_then(Value::as_bool) == Some(true) {
        out.push_str(
            "suspect  log tail cut after an unclean stop: votes only for candidates its peers \
             show are up to date enough\n",
        );
    }
    if let Some(Value::Array(members)) = status.get("members") {
        let listed: Vec<String> = members
            .iter()
            .map(|member| {
                format!(
                    "{} {} ({} / {})",
                    field(member, "id"),
                    field(member, "role"),
                    field(member, "peer_addr"),
                    field(member, "client_addr")
                )
            })
            .collect();
        let pending = if status.get("members_committed") == Some(&Value::Bool(false)) {
            " [change not yet committed]"
        } else {
            ""
        };
        out.push_str(&format!("members  {}{pending}\n", listed.join(", ")));
    }
    if let Some(runtime) = status.get("runtime") {
        out.push_str(&render_runtime(status, runtime));
    }
    if let Some(Value::Array(peers)) = status.get("peers") {
        if !peers.is_empty() {
            out.push_str(&format!(
                "{:<6} {:>12} {:>12}  {:<10} {:>10} {:>14}\n",
                "peer", "matched", "next", "state", "in flight", "in-flight bytes"
            ));
            for peer in peers {
                out.push_str(&format!(
                    "{:<6} {:>12} {:>12}  {:<10} {:>10} {:>14}\n",
                    field(peer, "id"),
                    field(peer, "matched"),
                    field(peer, "next"),
                    field(peer, "state"),
                    field(peer, "inflight_messages"),
                    field(peer, "inflight_bytes")
                ));
            }
        }
    }
    out
}

/// Rates, sync sizes and latency, and queue depths (the status's `runtime` and `log` parts).
fn render_runtime(status: &Value, runtime: &Value) -> String {
    let mut out = String::new();
    let null = Value::Null;
    let rates = runtime.get("rates").unwrap_or(&null);
    out.push_str(&format!(
        "rates    {:.0} commits/s, {:.0} applied/s, {:.1} syncs/s, {:.0} entries synced/s (over {} ms)\n",
        number(rates, "commits_per_s"),
        number(rates, "applied_per_s"),
        number(rates, "syncs_per_s"),
        number(rates, "entries_synced_per_s"),
        field(rates, "window_ms")
    ));
    let log = status.get("log").unwrap_or(&null);
    let syncs = number(log, "syncs").max(1.0);
    let batches = number(log, "batches_appended").max(1.0);
    out.push_str(&format!(
        "syncs    {} done, {:.1} entries and {:.0} bytes each; {:.1} entries per batch\n",
        field(log, "syncs"),
        number(log, "entries_synced") / syncs,
        number(log, "bytes_synced") / syncs,
        number(log, "entries_appended") / batches
    ));
    if let Ok(latency) = serde_json::from_value::<LatencySnapshot>(
        runtime.get("sync_latency").cloned().unwrap_or(Value::Null),
    ) {
        let show = |q: f64| match latency.quantile_upper_us(q) {
            Some(us) => format!("<= {us} us"),
            None if latency.count == 0 => "-".to_string(),
            None => format!("> {} us", latency.bounds_us.last().copied().unwrap_or(0)),
        };
        out.push_str(&format!(
            "sync lat p50 {}, p99 {} ({} syncs timed)\n",
            show(0.5),
            show(0.99),
            latency.count
        ));
    }
    let queues = runtime.get("queues").unwrap_or(&null);
    out.push_str(&format!(
        "queues   requests {} net {} feedback {} storage {} apply {} (capacity {})\n",
        field(queues, "requests"),
        field(queues, "net_events"),
        field(queues, "feedback"),
        field(queues, "storage"),
        field(queues, "apply"),
        field(queues, "capacity")
    ));
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
        let with_runtime: Value = serde_json::from_str(
            r#"{"id":1,"role":"leader","log":{"syncs":4,"entries_synced":400,"bytes_synced":8000,
                "entries_appended":400,"batches_appended":8},
               "runtime":{"rates":{"window_ms":1000,"syncs_per_s":4.0,"entries_synced_per_s":400.0,
                 "commits_per_s":400.0,"applied_per_s":399.0},
                 "queues":{"requests":0,"net_events":2,"feedback":0,"storage":5,"apply":1,"capacity":1024},
                 "sync_latency":{"bounds_us":[100,1000],"counts":[1,3,0],"sum_us":2000,"count":4}},
               "peers":[{"id":2,"matched":10,"next":11,"state":"replicate","inflight_messages":3,
                 "inflight_bytes":4096}]}"#,
        )
        .unwrap();
        let text = render(&with_runtime);
        for expected in [
            "rates    400 commits/s, 399 applied/s, 4.0 syncs/s",
            "100.0 entries and 2000 bytes each; 50.0 entries per batch",
            "sync lat p50 <= 1000 us, p99 <= 1000 us (4 syncs timed)",
            "queues   requests 0 net 2 feedback 0 storage 5 apply 1 (capacity 1024)",
            "4096",
        ] {
            assert!(
                text.contains(expected),
                "{expected:?} missing from:\n{text}"
            );
        }
        let members: Value = serde_json::from_str(
            r#"{"id":1,"members_committed":false,"members":[
                {"id":1,"role":"voter","peer_addr":"10.0.0.1:7001","client_addr":"10.0.0.1:6380"},
                {"id":4,"role":"learner","peer_addr":"10.0.0.4:7001","client_addr":null}]}"#,
        )
        .unwrap();
        assert!(render(&members).contains(
            "members  1 voter (10.0.0.1:7001 / 10.0.0.1:6380), 4 learner (10.0.0.4:7001 / -) \
             [change not yet committed]"
        ));
        let follower: Value = serde_json::from_str(r#"{"id":2,"leader":null,"peers":[]}"#).unwrap();
        assert!(render(&follower).contains("leader   -"));
        assert!(!render(&follower).contains("repair"));
        let repairing: Value =
            serde_json::from_str(r#"{"id":3,"durable":40,"repair_until":100}"#).unwrap();
        assert!(render(&repairing).contains("repair   lost log entries up to 100"));
        assert!(!render(&follower).contains("suspect"));
        let suspect: Value = serde_json::from_str(r#"{"id":3,"suspect":true}"#).unwrap();
        assert!(render(&suspect).contains("suspect  log tail cut after an unclean stop"));
    }
}
