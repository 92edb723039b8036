//! What the nodes say about themselves: finding the leader, and a once-a-second poll of every
//! node's status during the run.
//!
//! Owns the reading of the status JSON (`lockstep::node::NodeStatus`, fetched with
//! `Client::status`) into the run's cluster-side figures: leader changes in the measured window,
//! and how the leader grouped its work (entries per batch, entries per sync, syncs per second,
//! bytes per network write), from differences of its counters between the window's first and
//! last sample. A counter the node does not report makes that figure `None` and is named in
//! [`Grouping::missing`]; the bench never guesses a figure.

use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use lockstep::client::{Client, ClientError, Credentials};
use lockstep::net::{ClientReply, ClientRequest, ClientTls};
use serde::Serialize;
use serde_json::Value;

use super::supervisor::anon_rss_bytes;
use crate::interrupt::Interrupt;

/// The request id of the node's answer to the client hello.
pub const HANDSHAKE_REQ: u64 = 0;

/// Timeout of one status query.
const STATUS_TIMEOUT: Duration = Duration::from_secs(1);

/// TLS for every connection the bench opens (`--tls-ca-file`), set once before any.
static CLIENT_TLS: OnceLock<ClientTls> = OnceLock::new();

/// Makes every later [`connect`] use TLS (called once, at start).
pub fn use_tls(tls: ClientTls) {
    assert!(CLIENT_TLS.set(tls).is_ok(), "the bench's TLS was set twice");
}

/// The leader as one node reported it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Leader {
    /// Its client address.
    pub addr: SocketAddr,
    /// Its node id.
    pub id: u64,
    /// Its term.
    pub term: u64,
}

/// The client credentials from `--password-file`, set once before any connection.
static CREDENTIALS: OnceLock<Credentials> = OnceLock::new();

/// Makes every later [`connect`] authenticate with `credentials`.
pub fn set_credentials(credentials: Credentials) {
    assert!(
        CREDENTIALS.set(credentials).is_ok(),
        "client credentials set twice"
    );
}

/// Connects to the node at `addr`, authenticating when `--password-file` was given, over TLS
/// after [`use_tls`].
pub fn connect(
    addr: SocketAddr,
    cluster_id: u64,
    timeout: Duration,
) -> Result<Client, ClientError> {
    Client::connect_with(
        addr,
        cluster_id,
        timeout,
        CREDENTIALS.get(),
        CLIENT_TLS.get(),
    )
}

/// One node's status as JSON, or why it could not be had.
fn status_of(addr: SocketAddr, cluster_id: u64) -> Result<Value, String> {
    let mut client =
        connect(addr, cluster_id, STATUS_TIMEOUT).map_err(|error| format!("{addr}: {error}"))?;
    status_json(&mut client).map_err(|error| format!("{addr}: {error}"))
}

/// Asks for the status on `client` (pipelined, so that the handshake's `Ok {req: 0}`, which the
/// node sends ahead of every reply, is skipped whether or not `Client` consumes it).
fn status_json(client: &mut Client) -> Result<Value, String> {
    let req = client.next_req();
    client
        .send(&ClientRequest::Status { req })
        .map_err(|error| error.to_string())?;
    loop {
        match client.recv().map_err(|error| error.to_string())? {
            ClientReply::Status {
                req: answered,
                json,
            } if answered == req => {
                return serde_json::from_str(&json)
                    .map_err(|error| format!("status is not JSON ({error}): {json}"))
            }
            ClientReply::Ok { req: HANDSHAKE_REQ } => {}
            other => return Err(format!("unexpected reply to a status request: {other:?}")),
        }
    }
}

/// Asks every member until one says it is the leader, retrying until `deadline`.
pub fn find_leader(
    members: &[SocketAddr],
    cluster_id: u64,
    deadline: Instant,
    interrupt: &Interrupt,
) -> Result<Leader, String> {
    let mut last_errors = Vec::new();
    loop {
        last_errors.clear();
        for &addr in members {
            match status_of(addr, cluster_id) {
                Ok(status) if status["role"] == "leader" => {
                    return Ok(Leader {
                        addr,
                        id: status["id"].as_u64().unwrap_or(0),
                        term: status["term"].as_u64().unwrap_or(0),
                    })
                }
                Ok(_) => {}
                Err(error) => last_errors.push(error),
            }
        }
        if interrupt.is_set() {
            return Err("interrupted while looking for the leader".to_string());
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "no member reported itself leader in time{}",
                if last_errors.is_empty() {
                    String::new()
                } else {
                    format!(" (errors: {})", last_errors.join("; "))
                }
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Every node's status at one moment of the run.
#[derive(Clone, Debug)]
pub struct Sample {
    /// Seconds since the measured window started.
    pub at_sec: f64,
    /// Each member's status, in member order (`None`: it did not answer).
    pub nodes: Vec<Option<Value>>,
    /// CPU seconds used so far by each process of `pids` (see [`poll`]), in that order.
    pub cpu_sec: Vec<Option<f64>>,
    /// Anonymous resident bytes of each process of `pids` at this moment.
    pub anon_rss_bytes: Vec<Option<u64>>,
}

/// Polls every member's status at each of `at` (instants in order), keeping one connection per
/// member (reopened when lost), and reads the CPU time of the processes `pids` (numbers, or
/// `self`) at the same moments. Stops early when `interrupt` is set.
pub fn poll(
    members: &[SocketAddr],
    cluster_id: u64,
    pids: &[String],
    origin: Instant,
    at: &[Instant],
    interrupt: &Interrupt,
) -> Vec<Sample> {
    let mut clients: Vec<Option<Client>> = members.iter().map(|_| None).collect();
    let mut samples = Vec::with_capacity(at.len());
    for &when in at {
        while Instant::now() < when {
            if interrupt.is_set() {
                return samples;
            }
            std::thread::sleep((when - Instant::now()).min(Duration::from_millis(20)));
        }
        let nodes = members
            .iter()
            .zip(clients.iter_mut())
            .map(|(&addr, client)| {
                if client.is_none() {
                    *client = connect(addr, cluster_id, STATUS_TIMEOUT).ok();
                }
                let status = status_json(client.as_mut()?).ok();
                if status.is_none() {
                    *client = None;
                }
                status
            })
            .collect();
        let at_sec = if when >= origin {
            (when - origin).as_secs_f64()
        } else {
            -(origin - when).as_secs_f64()
        };
        let cpu_sec = pids.iter().map(|pid| cpu_seconds(pid)).collect();
        let anon_rss_bytes = pids.iter().map(|pid| anon_rss_bytes(pid)).collect();
        samples.push(Sample {
            at_sec,
            nodes,
            cpu_sec,
            anon_rss_bytes,
        });
    }
    samples
}

/// User + system CPU seconds used by process `pid` (a number or `self`), all its threads.
pub fn cpu_seconds(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "PID (COMM) STATE PPID ..." - COMM may hold spaces, so count fields after its ')'.
    // utime and stime are fields 14 and 15, i.e. the 12th and 13th after the ')'.
    let after_comm = &stat[stat.rfind(')')? + 1..];
    let mut fields = after_comm.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let ticks_per_sec = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    (ticks_per_sec > 0).then(|| (utime + stime) as f64 / ticks_per_sec as f64)
}

/// The largest anonymous resident size each process had in any sample, in `pids` order.
pub fn peak_anon_rss_bytes(samples: &[Sample]) -> Vec<Option<u64>> {
    let processes = samples
        .first()
        .map_or(0, |sample| sample.anon_rss_bytes.len());
    (0..processes)
        .map(|process| {
            samples
                .iter()
                .filter_map(|sample| sample.anon_rss_bytes.get(process).copied().flatten())
                .max()
        })
        .collect()
}

/// Cores used by each process over the samples (CPU seconds between the first and last sample
/// per second between them), in `pids` order.
pub fn cores_used(samples: &[Sample]) -> Vec<Option<f64>> {
    let (Some(first), Some(last)) = (samples.first(), samples.last()) else {
        return Vec::new();
    };
    let seconds = last.at_sec - first.at_sec;
    first
        .cpu_sec
        .iter()
        .zip(&last.cpu_sec)
        .map(|(start, end)| match (start, end) {
            (Some(start), Some(end)) if seconds > 0.0 => {
                Some(crate::report::round_to((end - start) / seconds, 2))
            }
            _ => None,
        })
        .collect()
}

/// The (term, leader id) the samples agree on at each sample: the highest term reported by a
/// node that says it leads.
fn leaders(samples: &[Sample]) -> Vec<Option<(u64, u64)>> {
    samples
        .iter()
        .map(|sample| {
            sample
                .nodes
                .iter()
                .flatten()
                .filter(|status| status["role"] == "leader")
                .filter_map(|status| Some((status["term"].as_u64()?, status["id"].as_u64()?)))
                .max()
        })
        .collect()
}

/// Times the leader (term and id) differed from the previous sample's, over samples taken in
/// the window; a sample with no leader counts as a change when a leader appears again.
pub fn leader_changes(samples: &[Sample]) -> u64 {
    let mut changes = 0;
    let mut previous: Option<(u64, u64)> = None;
    for leader in leaders(samples).into_iter().flatten() {
        if previous.is_some_and(|previous| previous != leader) {
            changes += 1;
        }
        previous = Some(leader);
    }
    changes
}

/// How the leader grouped its work over the window.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Grouping {
    /// Entries per batch the leader appended (each batch is one log record and one unit sent).
    pub entries_per_batch: Option<f64>,
    /// Entries the leader's syncs made durable, per sync.
    pub entries_per_sync: Option<f64>,
    /// Syncs per second.
    pub syncs_per_sec: Option<f64>,
    /// Bytes per network write system call (all connections).
    pub bytes_per_network_write: Option<f64>,
    /// Entries committed per second by the leader's commit index (counts entries of every
    /// client, also those whose replies arrived after the window).
    pub commit_index_per_sec: Option<f64>,
    /// Counters the nodes' status does not offer (so the figures built on them are missing).
    pub missing: Vec<String>,
}

/// Where a node may report each counter in its status JSON, first the name `NodeStatus` uses
/// now, then names it may use later; a counter is missing when none of them holds a number.
const ENTRIES: &[&[&str]] = &[
    &["log", "entries_appended"],
    &["counters", "entries_proposed"],
];
const BATCHES: &[&[&str]] = &[
    &["log", "batches_appended"],
    &["counters", "batches_sealed"],
];
const SYNCS: &[&[&str]] = &[&["log", "syncs"]];
const ENTRIES_SYNCED: &[&[&str]] = &[&["log", "entries_synced"]];
const NET_WRITES: &[&[&str]] = &[&["net", "writes"]];
const NET_BYTES_OUT: &[&[&str]] = &[&["net", "bytes_out"]];
const COMMIT: &[&[&str]] = &[&["commit"]];

/// The number at the first of `paths` that holds one.
fn counter(status: &Value, paths: &[&[&str]]) -> Option<u64> {
    paths.iter().find_map(|path| {
        path.iter()
            .try_fold(status, |value, key| value.get(key))
            .and_then(Value::as_u64)
    })
}

/// Grouping over `samples` taken inside the window (the first at its start, the last at its
/// end), from the node that led throughout (by the last sample's leader).
pub fn grouping(samples: &[Sample]) -> Grouping {
    let mut grouping = Grouping::default();
    let leader = leaders(samples).last().copied().flatten();
    let (Some((_, leader_id)), Some(first), Some(last)) = (leader, samples.first(), samples.last())
    else {
        grouping
            .missing
            .push("a leader in the status samples".to_string());
        return grouping;
    };
    let of = |sample: &Sample| {
        sample
            .nodes
            .iter()
            .flatten()
            .find(|status| status["id"].as_u64() == Some(leader_id))
            .cloned()
    };
    let (Some(start), Some(end)) = (of(first), of(last)) else {
        grouping
            .missing
            .push("the leader's status at both ends of the window".to_string());
        return grouping;
    };
    let seconds = last.at_sec - first.at_sec;
    let mut delta = |paths: &[&[&str]]| {
        let value = counter(&end, paths)
            .zip(counter(&start, paths))
            .map(|(end, start)| end.saturating_sub(start) as f64);
        if value.is_none() {
            grouping.missing.push(paths[0].join("."));
        }
        value
    };
    let entries = delta(ENTRIES);
    let batches = delta(BATCHES);
    let syncs = delta(SYNCS);
    let synced = delta(ENTRIES_SYNCED);
    let writes = delta(NET_WRITES);
    let bytes_out = delta(NET_BYTES_OUT);
    let commits = delta(COMMIT);
    let ratio = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => Some(crate::report::round_to(a / b, 1)),
        _ => None,
    };
    grouping.entries_per_batch = ratio(entries, batches);
    grouping.entries_per_sync = ratio(synced, syncs);
    grouping.syncs_per_sec = ratio(syncs, Some(seconds));
    grouping.bytes_per_network_write = ratio(bytes_out, writes);
    grouping.commit_index_per_sec = ratio(commits, Some(seconds));
    grouping
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sample(at_sec: f64, nodes: Vec<Option<Value>>) -> Sample {
        Sample {
            at_sec,
            nodes,
            cpu_sec: Vec::new(),
            anon_rss_bytes: Vec::new(),
        }
    }

    #[test]
    fn cpu_time_is_read_and_turned_into_cores() {
        let start = cpu_seconds("self").unwrap();
        let spin = Instant::now();
        while spin.elapsed() < Duration::from_millis(50) {
            std::hint::black_box(0);
        }
        let end = cpu_seconds("self").unwrap();
        assert!(end >= start, "{start} {end}");
        assert_eq!(cpu_seconds("0"), None);
        let samples = [
            Sample {
                at_sec: 0.0,
                nodes: Vec::new(),
                cpu_sec: vec![Some(1.0), None],
                anon_rss_bytes: vec![Some(10), None],
            },
            Sample {
                at_sec: 2.0,
                nodes: Vec::new(),
                cpu_sec: vec![Some(4.0), Some(1.0)],
                anon_rss_bytes: vec![Some(5), Some(7)],
            },
        ];
        assert_eq!(cores_used(&samples), vec![Some(1.5), None]);
        assert_eq!(peak_anon_rss_bytes(&samples), vec![Some(10), Some(7)]);
        assert!(peak_anon_rss_bytes(&[]).is_empty());
        assert!(cores_used(&[]).is_empty());
    }

    fn node(id: u64, role: &str, term: u64, commit: u64) -> Option<Value> {
        Some(json!({"id": id, "role": role, "term": term, "leader": 1, "commit": commit}))
    }

    #[test]
    fn leader_changes_count_new_terms_and_leaders() {
        let samples = vec![
            sample(
                0.0,
                vec![node(1, "leader", 2, 0), node(2, "follower", 2, 0)],
            ),
            sample(1.0, vec![node(1, "leader", 2, 10), None]),
            // An election in progress: nobody leads.
            sample(
                2.0,
                vec![node(1, "candidate", 3, 10), node(2, "candidate", 3, 10)],
            ),
            sample(
                3.0,
                vec![node(1, "follower", 3, 20), node(2, "leader", 3, 20)],
            ),
            // A deposed leader that has not noticed yet loses to the higher term.
            sample(
                4.0,
                vec![node(1, "leader", 2, 20), node(2, "leader", 3, 30)],
            ),
        ];
        assert_eq!(leader_changes(&samples), 1);
        assert_eq!(leader_changes(&samples[..2]), 0);
        assert_eq!(leader_changes(&[]), 0);
    }

    #[test]
    fn grouping_uses_the_leaders_counter_differences() {
        let leader = |commit: u64, entries: u64, batches: u64, syncs: u64, writes: u64| {
            Some(json!({
                "id": 1, "role": "leader", "term": 2, "commit": commit,
                "counters": {"storage_writes": 1},
                "log": {"entries_appended": entries, "batches_appended": batches,
                        "syncs": syncs, "entries_synced": entries},
                "net": {"writes": writes, "bytes_out": writes * 1000},
            }))
        };
        let samples = vec![
            sample(
                0.0,
                vec![leader(100, 100, 10, 5, 50), node(2, "follower", 2, 100)],
            ),
            sample(1.0, vec![leader(600, 600, 20, 10, 60), None]),
            sample(
                2.0,
                vec![
                    leader(2100, 2100, 40, 15, 100),
                    node(2, "follower", 2, 2000),
                ],
            ),
        ];
        let grouping = grouping(&samples);
        assert_eq!(grouping.entries_per_batch, Some(66.7));
        assert_eq!(grouping.entries_per_sync, Some(200.0));
        assert_eq!(grouping.syncs_per_sec, Some(5.0));
        assert_eq!(grouping.bytes_per_network_write, Some(1000.0));
        assert_eq!(grouping.commit_index_per_sec, Some(1000.0));
        assert!(grouping.missing.is_empty(), "{:?}", grouping.missing);
    }

    #[test]
    fn missing_counters_are_named_not_guessed() {
        let samples = vec![
            sample(0.0, vec![node(1, "leader", 2, 0)]),
            sample(2.0, vec![node(1, "leader", 2, 500)]),
        ];
        let grouping = grouping(&samples);
        assert_eq!(grouping.entries_per_batch, None);
        assert_eq!(grouping.syncs_per_sec, None);
        assert_eq!(grouping.commit_index_per_sec, Some(250.0));
        for name in [
            "log.entries_appended",
            "log.batches_appended",
            "log.syncs",
            "log.entries_synced",
            "net.writes",
            "net.bytes_out",
        ] {
            assert!(
                grouping.missing.contains(&name.to_string()),
                "{:?}",
                grouping.missing
            );
        }
        let no_leader = grouping_of_no_leader();
        assert_eq!(
            no_leader.missing,
            vec!["a leader in the status samples".to_string()]
        );
    }

    fn grouping_of_no_leader() -> Grouping {
        grouping(&[sample(0.0, vec![node(1, "follower", 2, 0)])])
    }
}
