//! The lock workload: clients acquire, renew and release a few named locks with short leases on
//! the lock app, each command stamped with the client's clock as a front end would (the leader
//! time that drives lease expiry in the log), and the checks of fencing tokens.
//!
//! Checks: no fencing token is granted to two different (lock, owner) pairs (no two owners at
//! the same token); tokens strictly increase in real time: a grant to a new holder sent after
//! another grant was answered carries a larger token (the app's counter is global, so this
//! holds across locks too). A renewal by the same holder keeps its token, so grants that are or
//! may be renewals (the client's previous op on that lock was a grant of the same token, or of
//! unknown outcome) are not held to the increase.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use lockstep::client::{Client, ClusterClient};
use lockstep::sim::SimRng;
use lockstep_server::apps::{Envelope, LockCommand, Reply};

use super::history::NEVER_NS;
use super::workload::{
    count_outcomes, fold_hash, write_recorded, AddressBook, Checked, OutcomeCounts, Recorded,
    Settled, Workload, HASH_START,
};

/// Locks the clients compete for.
const LOCKS: usize = 3;

/// Per-request timeout of workload clients.
const CLIENT_TIMEOUT: Duration = Duration::from_millis(1000);

/// How long one workload call keeps following redirects and failing over.
const CLIENT_RETRY_FOR: Duration = Duration::from_millis(1500);

/// What a lock operation asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LockOpKind {
    /// Take or renew lock `lock` for a lease of `lease_ms`.
    Acquire {
        /// The lock (index).
        lock: usize,
        /// The lease.
        lease_ms: u64,
    },
    /// Give lock `lock` up.
    Release {
        /// The lock (index).
        lock: usize,
    },
}

/// How a lock operation ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LockOutcome {
    /// Granted (or renewed) with this fencing token.
    Granted(i64),
    /// Held by another owner: nothing changed.
    Locked,
    /// Released (`true`) or not held by this owner (`false`).
    Released(bool),
    /// Surely no effect.
    Fail,
    /// Maybe applied.
    Unknown,
}

/// One lock operation; the owner is the process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LockOp {
    /// The client thread, also the owner name `p<process>`.
    pub process: u32,
    /// What it asked for.
    pub kind: LockOpKind,
    /// Sent, ns since the run started.
    pub invoke_ns: u64,
    /// Answered, ns since the run started ([`NEVER_NS`] when unknown).
    pub complete_ns: u64,
    /// How it ended.
    pub outcome: LockOutcome,
}

impl Recorded for LockOp {
    fn settled(&self) -> Settled {
        match self.outcome {
            LockOutcome::Fail => Settled::Fail,
            LockOutcome::Unknown => Settled::Unknown,
            _ => Settled::Ok,
        }
    }

    fn order(&self) -> (u64, u32) {
        (self.invoke_ns, self.process)
    }

    fn history_line(&self) -> serde_json::Value {
        self.to_json()
    }
}

impl LockOp {
    fn lock(&self) -> usize {
        match self.kind {
            LockOpKind::Acquire { lock, .. } | LockOpKind::Release { lock } => lock,
        }
    }

    fn to_json(&self) -> serde_json::Value {
        let (op, lease_ms) = match self.kind {
            LockOpKind::Acquire { lease_ms, .. } => ("acquire", Some(lease_ms)),
            LockOpKind::Release { .. } => ("release", None),
        };
        let (outcome, value) = match self.outcome {
            LockOutcome::Granted(token) => ("ok", serde_json::json!(token)),
            LockOutcome::Locked => ("locked", serde_json::Value::Null),
            LockOutcome::Released(released) => ("ok", serde_json::json!(released)),
            LockOutcome::Fail => ("fail", serde_json::Value::Null),
            LockOutcome::Unknown => ("unknown", serde_json::Value::Null),
        };
        serde_json::json!({
            "process": self.process,
            "op": op,
            "lock": lock_name(self.lock()),
            "owner": owner_name(self.process),
            "lease_ms": lease_ms,
            "invoke_ns": self.invoke_ns,
            "complete_ns": (self.complete_ns != NEVER_NS).then_some(self.complete_ns),
            "outcome": outcome,
            "value": value,
        })
    }
}

fn lock_name(lock: usize) -> String {
    format!("lock{lock}")
}

fn owner_name(process: u32) -> String {
    format!("p{process}")
}

/// Checks the fencing tokens of a lock history.
pub fn check_locks(ops: &[LockOp]) -> Vec<String> {
    let mut problems = Vec::new();
    let grants: Vec<(&LockOp, i64)> = ops
        .iter()
        .filter_map(|op| match op.outcome {
            LockOutcome::Granted(token) => Some((op, token)),
            _ => None,
        })
        .collect();
    let mut holder_of: BTreeMap<i64, (usize, u32)> = BTreeMap::new();
    for (op, token) in &grants {
        let holder = (op.lock(), op.process);
        match holder_of.get(token) {
            Some(first) if *first != holder => problems.push(format!(
                "token {token} granted to {} on {} and to {} on {}",
                owner_name(first.1),
                lock_name(first.0),
                owner_name(holder.1),
                lock_name(holder.0)
            )),
            Some(_) => {}
            None => {
                holder_of.insert(*token, holder);
            }
        }
    }
    // Which grants are to a new holder: a client runs one op at a time, so the op before a
    // grant on the same lock by the same client tells. After a grant of the same token it is a
    // renewal; after an op of unknown outcome it may be one (the earlier grant or release may
    // or may not have applied); otherwise the lock was not held by this client.
    let mut in_order: Vec<&LockOp> = ops.iter().collect();
    in_order.sort_by_key(|op| op.invoke_ns);
    let mut previous: BTreeMap<(u32, usize), LockOutcome> = BTreeMap::new();
    let mut new_grants: Vec<(&LockOp, i64)> = Vec::new();
    for op in in_order {
        let before = previous.insert((op.process, op.lock()), op.outcome);
        if let LockOutcome::Granted(token) = op.outcome {
            let maybe_renewal = matches!(before, Some(LockOutcome::Unknown))
                || before == Some(LockOutcome::Granted(token));
            if !maybe_renewal {
                new_grants.push((op, token));
            }
        }
    }
    // Sweep: new grants in invocation order against the largest token of every grant answered
    // before that invocation.
    let mut by_complete: Vec<&(&LockOp, i64)> = grants.iter().collect();
    by_complete.sort_by_key(|(op, _)| op.complete_ns);
    let mut answered = 0;
    let mut newest: Option<(i64, &LockOp)> = None;
    for (op, token) in new_grants {
        while answered < by_complete.len() && by_complete[answered].0.complete_ns < op.invoke_ns {
            let (earlier, earlier_token) = by_complete[answered];
            if newest.is_none_or(|(max, _)| *earlier_token > max) {
                newest = Some((*earlier_token, earlier));
            }
            answered += 1;
        }
        let Some((max, earlier)) = newest else {
            continue;
        };
        if token <= max {
            problems.push(format!(
                "token went backwards: {} got {token} on {} after {} had been granted {max} on {}",
                owner_name(op.process),
                lock_name(op.lock()),
                owner_name(earlier.process),
                lock_name(earlier.lock())
            ));
        }
    }
    problems
}

/// The lock workload's shared state.
pub struct LockWorkload {
    start: Instant,
    addrs: AddressBook,
    history: Mutex<Vec<LockOp>>,
    /// Replies of the wrong shape for their command (failures).
    bad_replies: Mutex<Vec<String>>,
}

/// The client's clock, ms since the Unix epoch (stamped into commands, as a front end does).
fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_millis() as u64)
}

impl LockWorkload {
    /// A workload against the members in `addrs`.
    pub fn new(addrs: AddressBook) -> LockWorkload {
        LockWorkload {
            start: Instant::now(),
            addrs,
            history: Mutex::new(Vec::new()),
            bad_replies: Mutex::new(Vec::new()),
        }
    }

    fn now_ns(&self) -> u64 {
        self.start.elapsed().as_nanos() as u64
    }

    fn run_op(&self, client: &mut ClusterClient, process: u32, kind: LockOpKind) -> LockOp {
        let name = lock_name(match kind {
            LockOpKind::Acquire { lock, .. } | LockOpKind::Release { lock } => lock,
        });
        let owner = owner_name(process);
        let command = match kind {
            LockOpKind::Acquire { lease_ms, .. } => LockCommand::Acquire {
                name: name.as_bytes(),
                owner: owner.as_bytes(),
                lease_ms,
            },
            LockOpKind::Release { .. } => LockCommand::Release {
                name: name.as_bytes(),
                owner: owner.as_bytes(),
            },
        }
        .to_bytes();
        let mut envelope = Vec::new();
        Envelope::Timed {
            now_ms: now_ms(),
            command: &command,
        }
        .encode(&mut envelope);
        let invoke_ns = self.now_ns();
        let result = client.propose(&envelope);
        if let Ok(applied) = &result {
            self.addrs.note_acked(applied.index.get());
        }
        let complete_ns = self.now_ns();
        let outcome = match result {
            Err(err) if err.surely_not_applied() => LockOutcome::Fail,
            Err(_) => LockOutcome::Unknown,
            Ok(applied) => match (kind, Reply::decode(&applied.result)) {
                (LockOpKind::Acquire { .. }, Ok(Reply::Int(token))) => LockOutcome::Granted(token),
                (LockOpKind::Acquire { .. }, Ok(Reply::Error(message)))
                    if message.starts_with("LOCKED") =>
                {
                    LockOutcome::Locked
                }
                (LockOpKind::Release { .. }, Ok(Reply::Int(flag))) => {
                    LockOutcome::Released(flag == 1)
                }
                (kind, other) => {
                    self.bad_replies
                        .lock()
                        .expect("bad replies lock")
                        .push(format!("bad reply to {kind:?}: {other:?}"));
                    LockOutcome::Unknown
                }
            },
        };
        LockOp {
            process,
            kind,
            invoke_ns,
            complete_ns: if outcome == LockOutcome::Unknown {
                NEVER_NS
            } else {
                complete_ns
            },
            outcome,
        }
    }
}

impl Workload for LockWorkload {
    fn setup(&self, _addrs: &[SocketAddr]) -> Result<(), String> {
        Ok(())
    }

    fn client(&self, process: u32, seed: u64, stop: &AtomicBool) {
        let mut rng = SimRng::new(seed ^ (u64::from(process) << 40) ^ 0x10C4);
        let mut client = self.addrs.cluster_client(CLIENT_TIMEOUT, CLIENT_RETRY_FOR);
        while !stop.load(Ordering::Relaxed) {
            let lock = rng.below(LOCKS as u64) as usize;
            let kind = if rng.chance(700) {
                LockOpKind::Acquire {
                    lock,
                    lease_ms: rng.between(20, 300),
                }
            } else {
                LockOpKind::Release { lock }
            };
            let op = self.run_op(client.get(), process, kind);
            if matches!(op.outcome, LockOutcome::Fail | LockOutcome::Unknown) {
                std::thread::sleep(Duration::from_millis(10));
            }
            self.history.lock().expect("history lock").push(op);
        }
    }

    fn probe_command(&self) -> Vec<u8> {
        let name = lock_name(0);
        LockCommand::Owner {
            name: name.as_bytes(),
        }
        .to_bytes()
        .to_vec()
    }

    fn finish(&self, _addrs: &[SocketAddr], _final_process: u32) -> Checked {
        let mut checked = Checked::default();
        checked
            .failures
            .extend(self.bad_replies.lock().expect("bad replies lock").drain(..));
        checked
            .failures
            .extend(check_locks(&self.history.lock().expect("history lock")));
        checked
    }

    fn state_hash(&self, client: &mut Client) -> Result<u64, String> {
        let mut hash = HASH_START;
        for lock in 0..LOCKS {
            let name = lock_name(lock);
            let query = LockCommand::Owner {
                name: name.as_bytes(),
            }
            .to_bytes();
            let answer = client.read(&query, false).map_err(|err| err.to_string())?;
            fold_hash(&mut hash, &answer.result);
        }
        Ok(hash)
    }

    fn counts(&self) -> OutcomeCounts {
        count_outcomes(self.history.lock().expect("history lock").iter())
    }

    fn write_history(&self, path: &Path, seed: u64) -> Result<(), String> {
        write_recorded(
            path,
            seed,
            "lock",
            self.history.lock().expect("history lock").iter(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(process: u32, lock: usize, token: i64, invoke_ns: u64, complete_ns: u64) -> LockOp {
        LockOp {
            process,
            kind: LockOpKind::Acquire {
                lock,
                lease_ms: 100,
            },
            invoke_ns,
            complete_ns,
            outcome: LockOutcome::Granted(token),
        }
    }

    #[test]
    fn increasing_tokens_and_renewals_pass() {
        let mut unknown = grant(4, 2, 0, 1, NEVER_NS);
        unknown.outcome = LockOutcome::Unknown;
        let ops = [
            grant(0, 0, 1, 0, 1),
            unknown,               // really granted token 2
            grant(1, 1, 3, 4, 5),  // another lock, the next token
            grant(0, 0, 1, 6, 7),  // renewal keeps the token
            grant(2, 0, 5, 8, 20), // concurrent grants may finish in any order
            grant(3, 1, 4, 9, 10),
            grant(4, 2, 2, 21, 22), // renews the grant of unknown outcome
        ];
        assert_eq!(check_locks(&ops), Vec::<String>::new());
    }

    #[test]
    fn two_owners_at_one_token_are_caught() {
        let ops = [grant(0, 0, 5, 0, 1), grant(1, 0, 5, 0, 1)];
        let problems = check_locks(&ops);
        assert!(
            problems[0].contains("token 5 granted to p0"),
            "{problems:?}"
        );
    }

    #[test]
    fn a_token_going_backwards_is_caught() {
        let ops = [grant(0, 0, 7, 0, 1), grant(1, 0, 6, 2, 3)];
        let problems = check_locks(&ops);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].contains("went backwards"));
        // Equal token to a different holder later is also wrong.
        let ops = [grant(0, 0, 7, 0, 1), grant(1, 1, 7, 2, 3)];
        assert_eq!(check_locks(&ops).len(), 2);
        // A client's new grant after it released is not a renewal.
        let mut release = grant(0, 0, 0, 2, 3);
        release.kind = LockOpKind::Release { lock: 0 };
        release.outcome = LockOutcome::Released(true);
        let ops = [grant(1, 1, 9, 0, 1), release, grant(0, 0, 8, 4, 5)];
        assert_eq!(check_locks(&ops).len(), 1);
    }
}
