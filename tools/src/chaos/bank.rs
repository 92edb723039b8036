//! The bank workload: transfers between a few accounts and reads of balances and of the
//! ledger's total, on the bank app, checked for the ledger's invariants.
//!
//! Checks: every total read (during the run and after) equals the opening total with all
//! accounts present; no balance read is negative or missing; every transfer applied at most
//! once and every acknowledged one applied: each account's final balance lies within what the
//! acknowledged transfers put there, give or take the transfers of unknown outcome (a transfer
//! applied twice, or an acknowledged one lost, moves a balance out of that range unless unknown
//! transfers of the same account happen to cover it); the final balances add up to the total.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use lockstep::client::{Client, ClusterClient};
use lockstep::sim::SimRng;
use lockstep_server::apps::{BankCommand, Reply};

use super::cluster::CLUSTER_ID;
use super::history::NEVER_NS;
use super::workload::{
    count_outcomes, fold_hash, write_recorded, AddressBook, Checked, OutcomeCounts, Recorded,
    Settled, Workload, HASH_START,
};

/// Accounts the transfers move money between.
const ACCOUNTS: usize = 5;

/// Opening balance of every account.
const OPENING_BALANCE: i64 = 100;

/// Per-request timeout of workload clients.
const CLIENT_TIMEOUT: Duration = Duration::from_millis(1000);

/// How long one workload call keeps following redirects and failing over.
const CLIENT_RETRY_FOR: Duration = Duration::from_millis(1500);

/// What a bank operation asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BankOpKind {
    /// Move `amount` from account `from` to account `to` (indexes).
    Transfer {
        /// Paying account.
        from: usize,
        /// Receiving account.
        to: usize,
        /// How much.
        amount: i64,
    },
    /// Read the ledger's total and account count.
    Total,
    /// Read one account's balance.
    Balance(usize),
}

/// How a bank operation ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BankOutcome {
    /// A transfer was applied.
    Transferred,
    /// A transfer was refused by the ledger (insufficient funds): applied nothing.
    Refused,
    /// A total read: (total, account count).
    Total(i64, i64),
    /// A balance read (`None`: no such account).
    Balance(Option<i64>),
    /// Surely no effect.
    Fail,
    /// Maybe applied.
    Unknown,
}

/// One bank operation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BankOp {
    /// The client thread.
    pub process: u32,
    /// What it asked for.
    pub kind: BankOpKind,
    /// Sent, ns since the run started.
    pub invoke_ns: u64,
    /// Answered, ns since the run started ([`NEVER_NS`] when unknown).
    pub complete_ns: u64,
    /// How it ended.
    pub outcome: BankOutcome,
}

impl Recorded for BankOp {
    fn settled(&self) -> Settled {
        match self.outcome {
            BankOutcome::Fail => Settled::Fail,
            BankOutcome::Unknown => Settled::Unknown,
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

impl BankOp {
    fn to_json(&self) -> serde_json::Value {
        let (op, args) = match self.kind {
            BankOpKind::Transfer { from, to, amount } => (
                "transfer",
                serde_json::json!([account(from), account(to), amount]),
            ),
            BankOpKind::Total => ("total", serde_json::json!([])),
            BankOpKind::Balance(which) => ("balance", serde_json::json!([account(which)])),
        };
        let (outcome, value) = match self.outcome {
            BankOutcome::Transferred => ("ok", serde_json::Value::Null),
            BankOutcome::Refused => ("refused", serde_json::Value::Null),
            BankOutcome::Total(total, count) => ("ok", serde_json::json!([total, count])),
            BankOutcome::Balance(balance) => ("ok", serde_json::json!(balance)),
            BankOutcome::Fail => ("fail", serde_json::Value::Null),
            BankOutcome::Unknown => ("unknown", serde_json::Value::Null),
        };
        serde_json::json!({
            "process": self.process,
            "op": op,
            "args": args,
            "invoke_ns": self.invoke_ns,
            "complete_ns": (self.complete_ns != NEVER_NS).then_some(self.complete_ns),
            "outcome": outcome,
            "value": value,
        })
    }
}

/// The name of account `index`.
fn account(index: usize) -> String {
    format!("acct{index}")
}

/// The bank workload's shared state.
pub struct BankWorkload {
    start: Instant,
    addrs: AddressBook,
    history: Mutex<Vec<BankOp>>,
    /// Replies of the wrong shape for their command (failures).
    bad_replies: Mutex<Vec<String>>,
}

impl BankWorkload {
    /// A workload against the members in `addrs`.
    pub fn new(addrs: AddressBook) -> BankWorkload {
        BankWorkload {
            start: Instant::now(),
            addrs,
            history: Mutex::new(Vec::new()),
            bad_replies: Mutex::new(Vec::new()),
        }
    }

    fn cluster_client(&self) -> ClusterClient {
        ClusterClient::new(self.addrs.addrs(), CLUSTER_ID, CLIENT_TIMEOUT)
            .with_retry_for(CLIENT_RETRY_FOR)
    }

    fn now_ns(&self) -> u64 {
        self.start.elapsed().as_nanos() as u64
    }

    /// Runs one operation and returns it, recorded.
    fn run_op(&self, client: &mut ClusterClient, process: u32, kind: BankOpKind) -> BankOp {
        let names: Vec<String> = (0..ACCOUNTS).map(account).collect();
        let command = match kind {
            BankOpKind::Transfer { from, to, amount } => BankCommand::Transfer {
                from: names[from].as_bytes(),
                to: names[to].as_bytes(),
                amount,
            },
            BankOpKind::Total => BankCommand::Total,
            BankOpKind::Balance(which) => BankCommand::Balance {
                account: names[which].as_bytes(),
            },
        }
        .to_bytes();
        let invoke_ns = self.now_ns();
        let result = match kind {
            BankOpKind::Transfer { .. } => client.propose(&command),
            BankOpKind::Total | BankOpKind::Balance(_) => client.read(&command),
        };
        if let (BankOpKind::Transfer { .. }, Ok(applied)) = (kind, &result) {
            self.addrs.note_acked(applied.index.get());
        }
        let complete_ns = self.now_ns();
        let outcome = match (kind, result) {
            (BankOpKind::Transfer { .. }, Err(err)) if err.surely_not_applied() => {
                BankOutcome::Fail
            }
            (BankOpKind::Transfer { .. }, Err(_)) => BankOutcome::Unknown,
            (_, Err(_)) => BankOutcome::Fail,
            (kind, Ok(applied)) => match (kind, Reply::decode(&applied.result)) {
                (BankOpKind::Transfer { .. }, Ok(Reply::Ok)) => BankOutcome::Transferred,
                (BankOpKind::Transfer { .. }, Ok(Reply::Error(message)))
                    if message.contains("insufficient") =>
                {
                    BankOutcome::Refused
                }
                (BankOpKind::Total, Ok(Reply::Array(items))) => match items[..] {
                    [Reply::Int(total), Reply::Int(count)] => BankOutcome::Total(total, count),
                    _ => BankOutcome::Unknown,
                },
                (BankOpKind::Balance(_), Ok(Reply::Int(balance))) => {
                    BankOutcome::Balance(Some(balance))
                }
                (BankOpKind::Balance(_), Ok(Reply::Nil)) => BankOutcome::Balance(None),
                // A reply of the wrong shape: a failure; the op counts as unknown.
                (kind, other) => {
                    self.bad_replies
                        .lock()
                        .expect("bad replies lock")
                        .push(format!("bad reply to {kind:?}: {other:?}"));
                    BankOutcome::Unknown
                }
            },
        };
        BankOp {
            process,
            kind,
            invoke_ns,
            complete_ns: if outcome == BankOutcome::Unknown {
                NEVER_NS
            } else {
                complete_ns
            },
            outcome,
        }
    }
}

/// Checks a bank history whose last reads (after healing) are `final_balances` and
/// `final_total`.
pub fn check_bank(ops: &[BankOp], final_balances: &[Option<i64>], final_total: i64) -> Vec<String> {
    let mut problems = Vec::new();
    let expected_total = OPENING_BALANCE * ACCOUNTS as i64;
    for op in ops {
        match op.outcome {
            BankOutcome::Total(total, count)
                if total != expected_total || count != ACCOUNTS as i64 =>
            {
                problems.push(format!(
                    "total read {total} over {count} accounts, expected {expected_total} over \
                     {ACCOUNTS}: {op:?}"
                ))
            }
            BankOutcome::Balance(None) => problems.push(format!("an account vanished: {op:?}")),
            BankOutcome::Balance(Some(balance)) if balance < 0 => {
                problems.push(format!("negative balance: {op:?}"))
            }
            _ => {}
        }
    }
    if final_total != expected_total {
        problems.push(format!(
            "final total {final_total}, expected {expected_total}"
        ));
    }
    let mut sum = 0;
    for (which, balance) in final_balances.iter().enumerate() {
        let Some(balance) = *balance else {
            problems.push(format!("account {} missing at the end", account(which)));
            continue;
        };
        sum += balance;
        let (mut low, mut high) = (OPENING_BALANCE, OPENING_BALANCE);
        for op in ops {
            let BankOpKind::Transfer { from, to, amount } = op.kind else {
                continue;
            };
            let delta = if from == which {
                -amount
            } else if to == which {
                amount
            } else {
                continue;
            };
            match op.outcome {
                BankOutcome::Transferred => {
                    low += delta;
                    high += delta;
                }
                BankOutcome::Unknown if delta < 0 => low += delta,
                BankOutcome::Unknown => high += delta,
                _ => {}
            }
        }
        if balance < low || balance > high {
            problems.push(format!(
                "account {} ends at {balance}, outside [{low}, {high}] (acknowledged transfers \
                 plus or minus those of unknown outcome): a transfer applied twice or lost",
                account(which)
            ));
        }
        if balance < 0 {
            problems.push(format!(
                "account {} ends negative: {balance}",
                account(which)
            ));
        }
    }
    if sum != final_total {
        problems.push(format!(
            "final balances add up to {sum}, the total says {final_total}"
        ));
    }
    problems
}

impl Workload for BankWorkload {
    fn setup(&self, _addrs: &[SocketAddr]) -> Result<(), String> {
        let mut client = self
            .cluster_client()
            .with_retry_for(Duration::from_secs(10));
        for which in 0..ACCOUNTS {
            let name = account(which);
            let command = BankCommand::Open {
                account: name.as_bytes(),
                initial: OPENING_BALANCE,
            }
            .to_bytes();
            // Opening again after an unknown outcome is refused ("exists"), which is fine.
            let applied = client
                .propose_idempotent(&command)
                .map_err(|err| format!("open account {name}: {err}"))?;
            match Reply::decode(&applied.result) {
                Ok(Reply::Ok) => {}
                Ok(Reply::Error(message)) if message.contains("exist") => {}
                other => return Err(format!("open account {name}: {other:?}")),
            }
        }
        Ok(())
    }

    fn client(&self, process: u32, seed: u64, stop: &AtomicBool) {
        let mut rng = SimRng::new(seed ^ (u64::from(process) << 40) ^ 0xBA4C);
        let mut client = self.addrs.cluster_client(CLIENT_TIMEOUT, CLIENT_RETRY_FOR);
        while !stop.load(Ordering::Relaxed) {
            let kind = match rng.below(10) {
                0..=5 => {
                    let from = rng.below(ACCOUNTS as u64) as usize;
                    let to = (from + 1 + rng.below(ACCOUNTS as u64 - 1) as usize) % ACCOUNTS;
                    BankOpKind::Transfer {
                        from,
                        to,
                        amount: rng.between(1, 20) as i64,
                    }
                }
                6 | 7 => BankOpKind::Total,
                _ => BankOpKind::Balance(rng.below(ACCOUNTS as u64) as usize),
            };
            let op = self.run_op(client.get(), process, kind);
            if matches!(op.outcome, BankOutcome::Fail | BankOutcome::Unknown) {
                std::thread::sleep(Duration::from_millis(10));
            }
            self.history.lock().expect("history lock").push(op);
        }
    }

    fn probe_command(&self) -> Vec<u8> {
        BankCommand::Total.to_bytes().to_vec()
    }

    fn finish(&self, _addrs: &[SocketAddr], final_process: u32) -> Checked {
        let mut checked = Checked::default();
        let mut client = self
            .cluster_client()
            .with_retry_for(Duration::from_secs(10));
        let mut finals = Vec::new();
        for kind in (0..ACCOUNTS)
            .map(BankOpKind::Balance)
            .chain([BankOpKind::Total])
        {
            let op = self.run_op(&mut client, final_process, kind);
            finals.push(op);
        }
        let final_balances: Vec<Option<i64>> = finals[..ACCOUNTS]
            .iter()
            .map(|op| match op.outcome {
                BankOutcome::Balance(balance) => balance,
                _ => None,
            })
            .collect();
        checked
            .failures
            .extend(self.bad_replies.lock().expect("bad replies lock").drain(..));
        let mut history = self.history.lock().expect("history lock");
        match finals[ACCOUNTS].outcome {
            BankOutcome::Total(total, _) => {
                checked
                    .failures
                    .extend(check_bank(&history, &final_balances, total));
            }
            other => checked
                .failures
                .push(format!("final total read failed after healing: {other:?}")),
        }
        history.extend(finals);
        checked
    }

    fn state_hash(&self, client: &mut Client) -> Result<u64, String> {
        let mut hash = HASH_START;
        let names = (0..ACCOUNTS).map(account);
        for name in names {
            let query = BankCommand::Balance {
                account: name.as_bytes(),
            }
            .to_bytes();
            let answer = client.read(&query, false).map_err(|err| err.to_string())?;
            fold_hash(&mut hash, &answer.result);
        }
        let answer = client
            .read(&BankCommand::Total.to_bytes(), false)
            .map_err(|err| err.to_string())?;
        fold_hash(&mut hash, &answer.result);
        Ok(hash)
    }

    fn counts(&self) -> OutcomeCounts {
        count_outcomes(self.history.lock().expect("history lock").iter())
    }

    fn write_history(&self, path: &Path, seed: u64) -> Result<(), String> {
        write_recorded(
            path,
            seed,
            "bank",
            self.history.lock().expect("history lock").iter(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn transfer(from: usize, to: usize, amount: i64, outcome: BankOutcome) -> BankOp {
        BankOp {
            process: 0,
            kind: BankOpKind::Transfer { from, to, amount },
            invoke_ns: 0,
            complete_ns: 1,
            outcome,
        }
    }

    fn read(kind: BankOpKind, outcome: BankOutcome) -> BankOp {
        BankOp {
            process: 1,
            kind,
            invoke_ns: 2,
            complete_ns: 3,
            outcome,
        }
    }

    const TOTAL: i64 = OPENING_BALANCE * ACCOUNTS as i64;

    #[test]
    fn consistent_ledger_passes() {
        let ops = [
            transfer(0, 1, 10, BankOutcome::Transferred),
            transfer(1, 2, 5, BankOutcome::Unknown),
            transfer(3, 4, 500, BankOutcome::Refused),
            read(
                BankOpKind::Total,
                BankOutcome::Total(TOTAL, ACCOUNTS as i64),
            ),
            read(BankOpKind::Balance(0), BankOutcome::Balance(Some(90))),
        ];
        // The unknown transfer applied.
        let finals = [Some(90), Some(105), Some(105), Some(100), Some(100)];
        assert_eq!(check_bank(&ops, &finals, TOTAL), Vec::<String>::new());
        // Or it did not.
        let finals = [Some(90), Some(110), Some(100), Some(100), Some(100)];
        assert_eq!(check_bank(&ops, &finals, TOTAL), Vec::<String>::new());
    }

    #[test]
    fn transfer_applied_twice_is_caught() {
        let ops = [transfer(0, 1, 10, BankOutcome::Transferred)];
        let finals = [Some(80), Some(120), Some(100), Some(100), Some(100)];
        let problems = check_bank(&ops, &finals, TOTAL);
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems[0].contains("applied twice or lost"));
    }

    #[test]
    fn lost_transfer_changed_total_and_negative_balance_are_caught() {
        let ops = [
            transfer(0, 1, 10, BankOutcome::Transferred),
            read(
                BankOpKind::Total,
                BankOutcome::Total(TOTAL - 1, ACCOUNTS as i64),
            ),
            read(BankOpKind::Balance(2), BankOutcome::Balance(Some(-3))),
            read(BankOpKind::Balance(3), BankOutcome::Balance(None)),
        ];
        let finals = [Some(100), Some(100), Some(100), Some(100), Some(100)];
        let problems = check_bank(&ops, &finals, TOTAL);
        assert!(
            problems.iter().any(|p| p.contains("total read")),
            "{problems:?}"
        );
        assert!(problems.iter().any(|p| p.contains("negative balance")));
        assert!(problems.iter().any(|p| p.contains("vanished")));
        assert_eq!(
            problems
                .iter()
                .filter(|p| p.contains("applied twice or lost"))
                .count(),
            2
        );
    }
}
