//! The kv workload: client threads running single-key operations against the cluster through
//! the native cluster client and recording each in the history; checked per key for
//! linearizability ([`super::linearizable`]) and values ([`super::values`]).
//!
//! Keys come in two families. Register keys `r<slot>-<generation>` see reads and writes of
//! values unique to the run (`process * 2^32 + sequence`), so every value names its write.
//! Counter keys `c<slot>-<generation>` see reads and increments by 1. A slot moves to a fresh
//! generation after [`KvWorkload::ops_per_key`] operations, which keeps every key's history
//! small enough for the linearizability search.
//!
//! With [`ClientBug::StaleReads`] the clients re-create a classic bug on purpose: reads are
//! answered from the local state of whichever node the client picked (a follower, or a
//! deposed leader), without a read index. The checkers must then fail the run; that is how the
//! harness shows it can fail.
//!
//! Outcomes: an answer is `Ok`; a write refused before it could apply (the cluster client's
//! `surely_not_applied`) is `Fail`; any other write error is `Unknown`; a read that failed
//! observed nothing and is recorded as `Fail`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use lockstep::client::{Client, ClusterClient};
use lockstep::sim::SimRng;
use lockstep_server::apps::{KvCommand, Reply, ReplyError};

use super::cluster::CLUSTER_ID;
use super::history::{Op, OpKind, Outcome, NEVER_NS};
use super::linearizable::{check_key, Verdict};
use super::values::check_values;
use super::workload::{
    count_outcomes, fold_hash, write_recorded, AddressBook, Checked, OutcomeCounts, Recorded,
    Settled, Workload, HASH_START,
};

/// Search steps the linearizability checker may spend on one key.
const STEP_BUDGET_PER_KEY: u64 = 2_000_000;

/// The key the recovery probe writes.
const PROBE_KEY: &[u8] = b"probe";

/// Per-request timeout of workload clients.
const CLIENT_TIMEOUT: Duration = Duration::from_millis(1000);

/// How long one workload call keeps following redirects and failing over.
const CLIENT_RETRY_FOR: Duration = Duration::from_millis(1500);

/// A bug the clients re-insert on request, to show the checkers catch it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ClientBug {
    /// Reads served from a random node's local state (no read index, no leader check).
    StaleReads,
}

/// The shared state of the workload's clients.
pub struct KvWorkload {
    bug: Option<ClientBug>,
    start: Instant,
    addrs: AddressBook,
    /// Operations begun per slot (slot `s` is a register when even, a counter when odd).
    begun_per_slot: Vec<AtomicU64>,
    ops_per_key: u64,
    history: Mutex<Vec<Op>>,
    /// The final reads, by key.
    final_reads: Mutex<BTreeMap<String, Op>>,
    /// Replies that make no sense for the command (a bug, reported as a failure).
    bad_replies: Mutex<Vec<String>>,
}

/// The value a decoded read reply holds: the number, or `None` for no such key.
fn read_value(reply: Result<Reply, ReplyError>) -> Result<Option<i64>, String> {
    match reply {
        Ok(Reply::Nil) => Ok(None),
        Ok(Reply::Value(bytes)) => std::str::from_utf8(&bytes)
            .ok()
            .and_then(|text| text.parse::<i64>().ok())
            .map(Some)
            .ok_or_else(|| format!("value {bytes:?} is not a decimal number")),
        other => Err(format!("unexpected read reply {other:?}")),
    }
}

impl KvWorkload {
    /// A workload over `slots` key slots against the members in `addrs`.
    pub fn new(
        addrs: AddressBook,
        slots: usize,
        ops_per_key: u64,
        bug: Option<ClientBug>,
    ) -> KvWorkload {
        assert!(
            slots >= 2 && ops_per_key > 0,
            "slots {slots}, ops_per_key {ops_per_key}"
        );
        KvWorkload {
            bug,
            start: Instant::now(),
            addrs,
            begun_per_slot: (0..slots).map(|_| AtomicU64::new(0)).collect(),
            ops_per_key,
            history: Mutex::new(Vec::new()),
            final_reads: Mutex::new(BTreeMap::new()),
            bad_replies: Mutex::new(Vec::new()),
        }
    }

    /// Nanoseconds since the workload started.
    fn now_ns(&self) -> u64 {
        self.start.elapsed().as_nanos() as u64
    }

    fn key(slot: usize, generation: u64) -> String {
        let family = if slot % 2 == 0 { 'r' } else { 'c' };
        format!("{family}{slot}-{generation}")
    }

    /// Every key used so far.
    fn keys(&self) -> Vec<String> {
        let mut keys = Vec::new();
        for (slot, begun) in self.begun_per_slot.iter().enumerate() {
            let begun = begun.load(Ordering::Relaxed);
            for generation in 0..begun.div_ceil(self.ops_per_key) {
                keys.push(KvWorkload::key(slot, generation));
            }
        }
        keys
    }

    /// Runs one client thread's loop until `stop`.
    fn run_client(&self, process: u32, seed: u64, stop: &AtomicBool) {
        let mut rng = SimRng::new(seed ^ (u64::from(process) << 40));
        let mut client = self.addrs.cluster_client(CLIENT_TIMEOUT, CLIENT_RETRY_FOR);
        let mut sequence: u64 = 0;
        while !stop.load(Ordering::Relaxed) {
            let slot = rng.below(self.begun_per_slot.len() as u64) as usize;
            let begun = self.begun_per_slot[slot].fetch_add(1, Ordering::Relaxed);
            let key = KvWorkload::key(slot, begun / self.ops_per_key);
            let kind = if rng.chance(500) {
                OpKind::Read
            } else if slot % 2 == 0 {
                sequence += 1;
                OpKind::Write(((process as i64) << 32) + sequence as i64)
            } else {
                OpKind::Incr(1)
            };
            let op = match (self.bug, kind) {
                (Some(ClientBug::StaleReads), OpKind::Read) => {
                    let addr = *rng.pick(&self.addrs.addrs());
                    self.local_read(addr, process, key)
                }
                _ => self.run_op(client.get(), process, key, kind),
            };
            if op.outcome == Outcome::Unknown || op.outcome == Outcome::Fail {
                // Give a recovering cluster room instead of hammering it.
                std::thread::sleep(Duration::from_millis(10));
            }
            self.history.lock().expect("history lock").push(op);
        }
    }

    /// Runs one operation and returns it, recorded.
    fn run_op(&self, client: &mut ClusterClient, process: u32, key: String, kind: OpKind) -> Op {
        let mut command = Vec::new();
        let value_text;
        match kind {
            OpKind::Read => KvCommand::Get {
                key: key.as_bytes(),
            }
            .encode(&mut command),
            OpKind::Write(value) => {
                value_text = value.to_string();
                KvCommand::Put {
                    key: key.as_bytes(),
                    value: value_text.as_bytes(),
                }
                .encode(&mut command)
            }
            OpKind::Incr(delta) => KvCommand::Incr {
                key: key.as_bytes(),
                delta,
            }
            .encode(&mut command),
        }
        let invoke_ns = self.now_ns();
        let result = match kind {
            OpKind::Read => client.read(&command),
            OpKind::Write(_) | OpKind::Incr(_) => client.propose(&command),
        };
        if let (OpKind::Write(_) | OpKind::Incr(_), Ok(applied)) = (kind, &result) {
            self.addrs.note_acked(applied.index.get());
        }
        let complete_ns = self.now_ns();
        let outcome = match (kind, result) {
            (OpKind::Read, Ok(applied)) => match read_value(Reply::decode(&applied.result)) {
                Ok(value) => Outcome::Ok(value),
                Err(err) => self.bad_reply(&key, kind, err),
            },
            (OpKind::Read, Err(_)) => Outcome::Fail,
            (_, Err(err)) if err.surely_not_applied() => Outcome::Fail,
            (_, Err(_)) => Outcome::Unknown,
            (OpKind::Write(_), Ok(applied)) => match Reply::decode(&applied.result) {
                Ok(Reply::Ok) => Outcome::Ok(None),
                other => self.bad_reply(&key, kind, format!("write answered {other:?}")),
            },
            (OpKind::Incr(_), Ok(applied)) => match Reply::decode(&applied.result) {
                Ok(Reply::Int(new)) => Outcome::Ok(Some(new)),
                other => self.bad_reply(&key, kind, format!("incr answered {other:?}")),
            },
        };
        Op {
            process,
            key,
            kind,
            invoke_ns,
            complete_ns: if outcome == Outcome::Unknown {
                NEVER_NS
            } else {
                complete_ns
            },
            outcome,
        }
    }

    /// The stale-reads bug: reads `key` from the local state of the node at `addr`.
    fn local_read(&self, addr: SocketAddr, process: u32, key: String) -> Op {
        let mut query = Vec::new();
        KvCommand::Get {
            key: key.as_bytes(),
        }
        .encode(&mut query);
        let invoke_ns = self.now_ns();
        let result = Client::connect(addr, CLUSTER_ID, CLIENT_TIMEOUT)
            .and_then(|mut client| client.read(&query, false));
        let complete_ns = self.now_ns();
        let outcome = match result {
            Ok(applied) => match read_value(Reply::decode(&applied.result)) {
                Ok(value) => Outcome::Ok(value),
                Err(err) => self.bad_reply(&key, OpKind::Read, err),
            },
            Err(_) => Outcome::Fail,
        };
        Op {
            process,
            key,
            kind: OpKind::Read,
            invoke_ns,
            complete_ns,
            outcome,
        }
    }

    /// Records a reply that makes no sense; the op counts as `Unknown` (it may have applied).
    fn bad_reply(&self, key: &str, kind: OpKind, message: String) -> Outcome {
        self.bad_replies
            .lock()
            .expect("bad replies lock")
            .push(format!("{key} {kind:?}: {message}"));
        Outcome::Unknown
    }

    /// Runs the checkers on every key's history (with its final read).
    fn check_history(&self, checked: &mut Checked) {
        let history = self.history.lock().expect("history lock");
        let final_reads = self.final_reads.lock().expect("final reads lock");
        let mut by_key: BTreeMap<&str, Vec<&Op>> = BTreeMap::new();
        for op in history.iter() {
            by_key.entry(op.key.as_str()).or_default().push(op);
        }
        for (key, ops) in &by_key {
            let final_read = final_reads.get(*key);
            checked.failures.extend(check_values(key, ops, final_read));
            let mut with_final = ops.clone();
            with_final.extend(final_read);
            match check_key(&with_final, STEP_BUDGET_PER_KEY) {
                Verdict::Linearizable => {}
                Verdict::NotLinearizable { stuck_at, prefix } => checked.failures.push(format!(
                    "{key}: not linearizable ({} ops): after {prefix} ops no order explains \
                     {stuck_at}",
                    with_final.len()
                )),
                Verdict::Undecided { steps } => checked.undecided.push(format!(
                    "{key}: undecided after {steps} steps ({} ops)",
                    with_final.len()
                )),
            }
        }
    }
}

impl Recorded for Op {
    fn settled(&self) -> Settled {
        match self.outcome {
            Outcome::Ok(_) => Settled::Ok,
            Outcome::Fail => Settled::Fail,
            Outcome::Unknown => Settled::Unknown,
        }
    }

    fn order(&self) -> (u64, u32) {
        (self.invoke_ns, self.process)
    }

    fn history_line(&self) -> serde_json::Value {
        self.to_json()
    }
}

impl Workload for KvWorkload {
    fn setup(&self, _addrs: &[SocketAddr]) -> Result<(), String> {
        Ok(())
    }

    fn client(&self, process: u32, seed: u64, stop: &AtomicBool) {
        self.run_client(process, seed, stop);
    }

    fn probe_command(&self) -> Vec<u8> {
        let mut command = Vec::new();
        KvCommand::Put {
            key: PROBE_KEY,
            value: b"0",
        }
        .encode(&mut command);
        command
    }

    fn finish(&self, addrs: &[SocketAddr], final_process: u32) -> Checked {
        let mut checked = Checked::default();
        let mut client = ClusterClient::new(addrs.to_vec(), CLUSTER_ID, Duration::from_secs(1))
            .with_retry_for(Duration::from_secs(10));
        let keys = self.keys();
        for (read, key) in keys.iter().enumerate() {
            let op = self.run_op(&mut client, final_process, key.clone(), OpKind::Read);
            if !matches!(op.outcome, Outcome::Ok(_)) {
                // Each read retries for 10 s: a cluster that does not answer would hold the
                // run for that long per key, so the reads stop at the first one that fails.
                checked.failures.push(format!(
                    "final read of {key} failed after healing; the {} keys after it were not read",
                    keys.len() - read - 1
                ));
                break;
            }
            self.final_reads
                .lock()
                .expect("final reads lock")
                .insert(key.clone(), op);
        }
        checked.failures.extend(
            self.bad_replies
                .lock()
                .expect("bad replies lock")
                .iter()
                .map(|bad| format!("bad reply: {bad}")),
        );
        self.check_history(&mut checked);
        checked
    }

    fn state_hash(&self, client: &mut Client) -> Result<u64, String> {
        let mut hash = HASH_START;
        let mut query = Vec::new();
        let keys = self.keys();
        for key in keys.iter().map(String::as_bytes).chain([PROBE_KEY]) {
            query.clear();
            KvCommand::Get { key }.encode(&mut query);
            let answer = client.read(&query, false).map_err(|err| err.to_string())?;
            fold_hash(&mut hash, key);
            fold_hash(&mut hash, &answer.result);
        }
        query.clear();
        KvCommand::Count.encode(&mut query);
        let count = client.read(&query, false).map_err(|err| err.to_string())?;
        match Reply::decode(&count.result) {
            Ok(Reply::Int(_)) => fold_hash(&mut hash, &count.result),
            other => return Err(format!("key count answered {other:?}")),
        }
        Ok(hash)
    }

    fn counts(&self) -> OutcomeCounts {
        let history = self.history.lock().expect("history lock");
        let final_reads = self.final_reads.lock().expect("final reads lock");
        count_outcomes(history.iter().chain(final_reads.values()))
    }

    fn write_history(&self, path: &Path, seed: u64) -> Result<(), String> {
        let history = self.history.lock().expect("history lock");
        let final_reads = self.final_reads.lock().expect("final reads lock");
        write_recorded(path, seed, "kv", history.iter().chain(final_reads.values()))
    }
}
