//! `lockstep member`: change a running cluster's membership through any member's client port.
//!
//! - `add ID --peer-addr A [--client-addr B] [--learner]` proposes adding node ID as a learner
//!   (with its addresses, which every member learns from the log), then, unless `--learner`,
//!   waits until the leader reports the learner's log caught up and proposes its promotion to
//!   voter. The new node must already run (`lockstep serve --join`, `docs/OPERATIONS.md`).
//! - `promote ID` proposes promoting a learner (the leader refuses one that is behind).
//! - `remove ID` proposes removing a voter or learner; removing the leader itself is allowed
//!   (it commits the change, then steps down).
//!
//! Requests go to the leader: a member that does not lead redirects, and the tool follows. A
//! leader just elected refuses membership changes until it has committed an entry of its term;
//! the tool retries then (within `--timeout-ms`). It prints each change's log index on stdout and
//! exits 0, or prints why it failed on stderr and exits 1 (the leader's refusal verbatim; for `add`, a node that was added but did not catch
//! up in time stays a learner, and the message says so).

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use lockstep::client::{ClientError, ClusterClient, Credentials};
use lockstep::net::ClientTls;
use lockstep::raft::{MemberAddr, MembershipChange, TERM_NOT_COMMITTED_TEXT};
use lockstep::types::{LogIndex, NodeId};
use lockstep_server::DEFAULT_CLUSTER_ID;
use serde_json::Value;

/// Longest wait for one connect, read or write (less if `--timeout-ms` is shorter).
const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// Pause between two looks at the leader's status while a learner catches up.
const CATCH_UP_POLL: Duration = Duration::from_millis(100);

/// Arguments of `lockstep member`.
#[derive(clap::Args, Debug)]
#[command(
    after_help = "Adding a node: start it first with `lockstep serve --join` and --member flags \
naming the current members and itself, then run `lockstep member add`. See docs/OPERATIONS.md \
(\"Adding and removing nodes\")."
)]
pub struct Args {
    #[command(subcommand)]
    action: Action,
}

#[derive(clap::Subcommand, Debug)]
enum Action {
    /// Add a running node as a learner, then (unless --learner) promote it to voter once its log
    /// has caught up with the leader's.
    Add(AddArgs),
    /// Promote a caught-up learner to voter.
    Promote(IdArgs),
    /// Remove a voter or a learner (the leader included: it steps down once the change commits).
    Remove(IdArgs),
}

/// How to reach the cluster (the same meaning as `lockstep status`'s flags).
#[derive(clap::Args, Debug)]
struct ConnectArgs {
    /// A member's client address, HOST:PORT; repeat it or separate addresses with commas to
    /// give several (they are tried in turn; a member that does not lead redirects).
    #[arg(long, value_name = "HOST:PORT", required = true, value_delimiter = ',')]
    connect: Vec<String>,
    /// The cluster id (the handshake is refused otherwise).
    #[arg(long, value_name = "N", default_value_t = DEFAULT_CLUSTER_ID)]
    cluster_id: u64,
    /// File holding the client password, for a cluster that requires one (the default user: the
    /// read-only user may not change the membership).
    #[arg(long, value_name = "FILE")]
    password_file: Option<PathBuf>,
    /// Connect with TLS, trusting the CA certificate(s) of this PEM file.
    #[arg(long, value_name = "FILE")]
    tls_ca_file: Option<PathBuf>,
    /// Give up after this many milliseconds: finding the leader, the change committing and,
    /// for `add`, the new node catching up.
    #[arg(long, value_name = "MS", default_value_t = 60_000, value_parser = clap::value_parser!(u64).range(1..))]
    timeout_ms: u64,
}

#[derive(clap::Args, Debug)]
struct AddArgs {
    /// The new node's id (not a member yet; not 0).
    #[arg(value_name = "ID", value_parser = clap::value_parser!(u64).range(1..))]
    id: u64,
    /// The new node's replication (peer) address, HOST:PORT, as the members should dial it.
    #[arg(long, value_name = "HOST:PORT")]
    peer_addr: String,
    /// The new node's client address, HOST:PORT (for redirects to it once it leads).
    #[arg(long, value_name = "HOST:PORT")]
    client_addr: Option<String>,
    /// Leave the node a learner (it replicates but does not vote); promote it later with
    /// `lockstep member promote`.
    #[arg(long)]
    learner: bool,
    #[command(flatten)]
    connect: ConnectArgs,
}

#[derive(clap::Args, Debug)]
struct IdArgs {
    /// The node's id.
    #[arg(value_name = "ID", value_parser = clap::value_parser!(u64).range(1..))]
    id: u64,
    #[command(flatten)]
    connect: ConnectArgs,
}

/// `flag`'s HOST:PORT resolved to its first address.
fn resolve(flag: &str, addr: &str) -> Result<SocketAddr, String> {
    addr.to_socket_addrs()
        .map_err(|e| format!("{flag} {addr:?}: {e}"))?
        .next()
        .ok_or_else(|| format!("{flag} {addr:?}: no address"))
}

/// A client for the members given, and the moment the whole command gives up.
fn connect(args: &ConnectArgs) -> Result<(ClusterClient, Instant), String> {
    let addrs = args
        .connect
        .iter()
        .map(|addr| resolve("--connect", addr.trim()))
        .collect::<Result<Vec<_>, _>>()?;
    let timeout = Duration::from_millis(args.timeout_ms);
    let mut client =
        ClusterClient::new(addrs, args.cluster_id, IO_TIMEOUT.min(timeout)).with_retry_for(timeout);
    if let Some(path) = &args.password_file {
        let credentials = Credentials::from_password_file(path)
            .map_err(|why| format!("--password-file: {why}"))?;
        client = client.with_credentials(credentials);
    }
    if let Some(path) = &args.tls_ca_file {
        let tls = ClientTls::from_ca_file(path).map_err(|e| format!("--tls-ca-file: {e}"))?;
        client = client.with_tls(tls);
    }
    Ok((client, Instant::now() + timeout))
}

/// The message for a failed call, with a hint where one helps.
fn explain(error: &ClientError, args: &ConnectArgs) -> String {
    let hint = match error {
        ClientError::Refused(_) => " (is --cluster-id the cluster's id?)",
        ClientError::Auth(_) if args.password_file.is_none() => " (pass --password-file)",
        ClientError::Io(io)
            if matches!(
                io.kind(),
                std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::ConnectionReset
            ) =>
        {
            " (the node closed the connection: a node older than this tool does not know \
             membership requests; otherwise the outcome is unknown, check `lockstep status`)"
        }
        ClientError::Io(io) if io.kind() == std::io::ErrorKind::ConnectionRefused => {
            " (no member answers at the --connect addresses)"
        }
        ClientError::Io(_) => {
            " (if the request went out, its outcome is unknown: check `lockstep status`)"
        }
        _ => "",
    };
    format!("{error}{hint}")
}

/// Whether the leader's refusal only means "not yet": a leader accepts membership changes once
/// it has committed an entry of its term, moments after its election.
fn refused_for_now(message: &str) -> bool {
    message.contains(TERM_NOT_COMMITTED_TEXT)
}

/// Proposes `change` at the leader, retrying while the leader refuses it only for now (until
/// `deadline`); returns its index.
fn propose(
    client: &mut ClusterClient,
    change: MembershipChange,
    deadline: Instant,
    args: &ConnectArgs,
) -> Result<LogIndex, String> {
    loop {
        match client.change_membership(change) {
            Ok(index) => return Ok(index),
            Err(ClientError::Server(message))
                if refused_for_now(&message) && Instant::now() < deadline =>
            {
                std::thread::sleep(CATCH_UP_POLL);
            }
            Err(ClientError::Server(message)) => {
                return Err(format!("the leader refused the change: {message}"))
            }
            Err(other) => return Err(explain(&other, args)),
        }
    }
}

/// What the leader's status says about learner `id`: `Some(true)` once its log is caught up
/// (durable on it up to what the leader had committed at the previous look, `commit_before`,
/// or now), `Some(false)` while not, `None` when the status is not a leader's. Updates
/// `commit_before`.
pub(crate) fn caught_up(
    status: &Value,
    id: NodeId,
    commit_before: &mut Option<u64>,
) -> Option<bool> {
    if status.get("role").and_then(Value::as_str) != Some("leader") {
        *commit_before = None;
        return None;
    }
    let commit = status.get("commit").and_then(Value::as_u64)?;
    let matched = status
        .get("peers")
        .and_then(Value::as_array)?
        .iter()
        .find(|peer| peer.get("id").and_then(Value::as_u64) == Some(id.get()))
        .and_then(|peer| peer.get("matched").and_then(Value::as_u64))
        .unwrap_or(0);
    let target = commit_before.map_or(commit, |before| before.min(commit));
    *commit_before = Some(commit);
    Some(matched >= target)
}

/// Waits until learner `id` has caught up, then promotes it; returns the promotion's index.
fn promote_when_caught_up(
    client: &mut ClusterClient,
    id: NodeId,
    deadline: Instant,
    args: &ConnectArgs,
) -> Result<LogIndex, String> {
    let mut commit_before = None;
    let mut last_refusal = None;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            let why = last_refusal.map_or(String::new(), |why| format!(" (last refusal: {why})"));
            return Err(format!(
                "node {n} did not catch up within {} ms: it stays a learner; promote it later \
                 with `lockstep member promote {n}`{why}",
                args.timeout_ms,
                n = id.get()
            ));
        }
        let status = client
            .status()
            .map_err(|e| explain(&e, args))
            .and_then(|json| {
                serde_json::from_str::<Value>(&json)
                    .map_err(|e| format!("the node sent status that is not JSON ({e})"))
            })?;
        // A follower's status says nothing of the learner: ask for the promotion there and
        // follow the redirect (the new leader refuses it if the learner is behind).
        if caught_up(&status, id, &mut commit_before) != Some(false) {
            match client.change_membership(MembershipChange::Promote(id)) {
                Ok(index) => return Ok(index),
                Err(ClientError::Server(message))
                    if message.contains("not caught up") || refused_for_now(&message) =>
                {
                    last_refusal = Some(message);
                }
                Err(other @ ClientError::NotLeader { .. }) => {
                    last_refusal = Some(other.to_string());
                }
                Err(ClientError::Server(message)) => {
                    return Err(format!(
                        "node {} was added as a learner, but the leader refused its promotion: \
                         {message}",
                        id.get()
                    ));
                }
                Err(other) => {
                    return Err(format!(
                        "node {} was added as a learner; its promotion failed: {}",
                        id.get(),
                        explain(&other, args)
                    ))
                }
            }
        }
        std::thread::sleep(CATCH_UP_POLL.min(left));
    }
}

fn add(args: &AddArgs) -> Result<(), String> {
    let id = NodeId(args.id);
    let number = args.id;
    let peer_addr = resolve("--peer-addr", &args.peer_addr)?;
    let client_addr = args
        .client_addr
        .as_deref()
        .map(|addr| resolve("--client-addr", addr))
        .transpose()?;
    let (mut client, deadline) = connect(&args.connect)?;
    let addr = MemberAddr {
        peer_addr,
        client_addr,
    };
    let index = propose(
        &mut client,
        MembershipChange::AddLearner(id, Some(addr)),
        deadline,
        &args.connect,
    )?;
    let client_text = client_addr.map_or("none".to_string(), |addr| addr.to_string());
    println!(
        "added node {number} as a learner at index {} (peer {peer_addr}, client {client_text})",
        index.get()
    );
    if args.learner {
        return Ok(());
    }
    println!("waiting for node {number} to catch up with the leader");
    let index = promote_when_caught_up(&mut client, id, deadline, &args.connect)?;
    println!("promoted node {number} to voter at index {}", index.get());
    Ok(())
}

fn promote(args: &IdArgs) -> Result<(), String> {
    let index = connect_and_propose(&args.connect, MembershipChange::Promote(NodeId(args.id)))?;
    println!(
        "promoted node {} to voter at index {}",
        args.id,
        index.get()
    );
    Ok(())
}

fn remove(args: &IdArgs) -> Result<(), String> {
    let index = connect_and_propose(&args.connect, MembershipChange::Remove(NodeId(args.id)))?;
    println!("removed node {} at index {}", args.id, index.get());
    Ok(())
}

/// Connects to the cluster and [`propose`]s `change`: the index it committed at.
fn connect_and_propose(
    connect_args: &ConnectArgs,
    change: MembershipChange,
) -> Result<LogIndex, String> {
    let (mut client, deadline) = connect(connect_args)?;
    propose(&mut client, change, deadline, connect_args)
}

/// Runs the subcommand.
pub fn run(args: Args) -> ExitCode {
    let outcome = match &args.action {
        Action::Add(add_args) => add(add_args),
        Action::Promote(id_args) => promote(id_args),
        Action::Remove(id_args) => remove(id_args),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("lockstep member: {message}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(line: &[&str]) -> Result<Args, String> {
        crate::parse_flags("member", line)
    }

    #[test]
    fn flags_parse_and_bad_ones_are_named() {
        let args = parse(&[
            "add",
            "4",
            "--peer-addr",
            "127.0.0.1:7004",
            "--connect",
            "127.0.0.1:6381,127.0.0.1:6382",
            "--connect",
            "127.0.0.1:6383",
            "--cluster-id",
            "9",
        ])
        .unwrap();
        let Action::Add(add) = args.action else {
            panic!("not an add")
        };
        assert_eq!((add.id, add.learner, add.client_addr), (4, false, None));
        assert_eq!(add.connect.connect.len(), 3);
        assert_eq!(
            (add.connect.cluster_id, add.connect.timeout_ms),
            (9, 60_000)
        );
        let args = parse(&["remove", "1", "--connect", "h:1", "--timeout-ms", "5"]).unwrap();
        assert!(matches!(args.action, Action::Remove(IdArgs { id: 1, .. })));
        for (line, named) in [
            (&["add", "4", "--connect", "h:1"][..], "--peer-addr"),
            (&["promote", "4"][..], "--connect"),
            (&["remove", "0", "--connect", "h:1"][..], "0"),
            (&["remove", "x", "--connect", "h:1"][..], "x"),
            (
                &["promote", "4", "--connect", "h:1", "--timeout-ms", "0"][..],
                "--timeout-ms",
            ),
            (&["join", "4"][..], "join"),
        ] {
            let error = parse(line).unwrap_err();
            assert!(
                error.contains(named),
                "{line:?}: {named:?} missing from {error}"
            );
        }
    }

    #[test]
    fn a_leader_that_has_not_committed_in_its_term_is_asked_again() {
        let refusal = lockstep::raft::ProposeError::TermNotCommitted {
            term: lockstep::types::Term(7),
        };
        // As the node sends it: its refusal's text behind a prefix.
        assert!(refused_for_now(&format!("refused: {refusal}")));
        let other = lockstep::raft::ProposeError::MembershipChangePending { index: LogIndex(3) };
        assert!(!refused_for_now(&format!("refused: {other}")));
    }

    #[test]
    fn a_learner_is_caught_up_once_it_holds_what_was_committed_a_look_earlier() {
        let status = |role: &str, commit: u64, matched: u64| -> Value {
            serde_json::from_str(&format!(
                r#"{{"role":"{role}","commit":{commit},"peers":[{{"id":2,"matched":9}},
                    {{"id":4,"matched":{matched}}}]}}"#
            ))
            .unwrap()
        };
        let id = NodeId(4);
        let mut before = None;
        assert_eq!(
            caught_up(&status("leader", 10, 3), id, &mut before),
            Some(false)
        );
        // Commit moved on to 20, but the learner holds what was committed at the last look.
        assert_eq!(
            caught_up(&status("leader", 20, 12), id, &mut before),
            Some(true)
        );
        assert_eq!(
            caught_up(&status("leader", 30, 25), id, &mut before),
            Some(true)
        );
        assert_eq!(
            caught_up(&status("leader", 40, 25), id, &mut before),
            Some(false)
        );
        // A follower's status knows nothing of the learner; the next leader look starts over.
        assert_eq!(caught_up(&status("follower", 50, 0), id, &mut before), None);
        assert_eq!(before, None);
        assert_eq!(
            caught_up(&status("leader", 50, 49), id, &mut before),
            Some(false)
        );
        // A learner the leader does not list yet holds nothing.
        assert_eq!(
            caught_up(&status("leader", 1, 0), NodeId(7), &mut before),
            Some(false)
        );
    }
}
