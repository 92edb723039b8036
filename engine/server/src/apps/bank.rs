//! The bank ledger example: named accounts holding integer balances, with deposits, withdrawals
//! and atomic transfers. [`Bank`] is the complete state machine (the [`Ledger`] inside a
//! [`Machine`]: log clock and client sessions).
//!
//! Guarantees: no balance is ever negative; a transfer moves money between two existing accounts
//! or changes nothing; the ledger's total (the sum of all balances) changes only by opening
//! balances, deposits and withdrawals, never by transfers, and always fits an `i64` (a deposit
//! that would overflow it is refused).
//!
//! # Command encoding, version 1
//! `[version: u8 = 1][op: u8][arguments]`, byte strings and numbers as in the kv encoding (see
//! `docs/FORMATS.md`, "App commands"):
//!
//! | op | command | arguments | reply |
//! |----|---------|-----------|-------|
//! | 1 | `Open` | account, initial balance (i64 >= 0) | `Ok`; `Error` if it exists |
//! | 2 | `Deposit` | account, amount (i64 > 0) | `Int(new balance)` |
//! | 3 | `Withdraw` | account, amount (i64 > 0) | `Int(new balance)`; `Error` if insufficient |
//! | 4 | `Transfer` | from, to, amount (i64 > 0) | `Ok`; `Error` if insufficient or missing |
//! | 16 | `Balance` | account | `Int(balance)`, `Nil` for no such account |
//! | 17 | `Total` | none | `Array[Int(total), Int(account count)]` |
//!
//! # Snapshot encoding, version 1
//! `[version: u8 = 1][account count: u64 LE]` then per account in ascending name order
//! `[name: u32 length + bytes][balance: i64 LE]`.

use std::collections::BTreeMap;

use bytes::Bytes;

use super::codec::{put_bytes, DecodeError, Reader};
use super::machine::{App, Machine};
use super::reply::Reply;

/// The command encoding version this code writes and reads.
pub const BANK_COMMAND_VERSION: u8 = 1;

/// The snapshot encoding version this code writes and reads.
pub const BANK_SNAPSHOT_VERSION: u8 = 1;

const OP_OPEN: u8 = 1;
const OP_DEPOSIT: u8 = 2;
const OP_WITHDRAW: u8 = 3;
const OP_TRANSFER: u8 = 4;
const OP_BALANCE: u8 = 16;
const OP_TOTAL: u8 = 17;

/// The bank state machine: the ledger with the log clock and client sessions.
pub type Bank = Machine<Ledger>;

/// One bank command, borrowing its arguments from the encoded bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BankCommand<'a> {
    /// Opens `account` holding `initial`.
    Open {
        /// The account name.
        account: &'a [u8],
        /// The opening balance (>= 0).
        initial: i64,
    },
    /// Adds `amount` to `account`.
    Deposit {
        /// The account name.
        account: &'a [u8],
        /// How much (> 0).
        amount: i64,
    },
    /// Takes `amount` from `account`, refused when the balance is smaller.
    Withdraw {
        /// The account name.
        account: &'a [u8],
        /// How much (> 0).
        amount: i64,
    },
    /// Moves `amount` from `from` to `to`, atomically.
    Transfer {
        /// The paying account.
        from: &'a [u8],
        /// The receiving account.
        to: &'a [u8],
        /// How much (> 0).
        amount: i64,
    },
    /// The balance of `account`.
    Balance {
        /// The account name.
        account: &'a [u8],
    },
    /// The sum of all balances and the number of accounts.
    Total,
}

impl<'a> BankCommand<'a> {
    /// Appends the version-1 encoding to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.push(BANK_COMMAND_VERSION);
        match *self {
            BankCommand::Open { account, initial } => {
                out.push(OP_OPEN);
                put_bytes(out, account);
                out.extend_from_slice(&initial.to_le_bytes());
            }
            BankCommand::Deposit { account, amount } => {
                out.push(OP_DEPOSIT);
                put_bytes(out, account);
                out.extend_from_slice(&amount.to_le_bytes());
            }
            BankCommand::Withdraw { account, amount } => {
                out.push(OP_WITHDRAW);
                put_bytes(out, account);
                out.extend_from_slice(&amount.to_le_bytes());
            }
            BankCommand::Transfer { from, to, amount } => {
                out.push(OP_TRANSFER);
                put_bytes(out, from);
                put_bytes(out, to);
                out.extend_from_slice(&amount.to_le_bytes());
            }
            BankCommand::Balance { account } => {
                out.push(OP_BALANCE);
                put_bytes(out, account);
            }
            BankCommand::Total => out.push(OP_TOTAL),
        }
    }

    /// The encoding as a new buffer.
    pub fn to_bytes(&self) -> Bytes {
        let mut out = Vec::new();
        self.encode(&mut out);
        Bytes::from(out)
    }

    /// Decodes a command; the error says what is wrong.
    pub fn decode(bytes: &'a [u8]) -> Result<BankCommand<'a>, DecodeError> {
        let [version, op, rest @ ..] = bytes else {
            return Err(DecodeError::CommandTooShort(bytes.len()));
        };
        if *version != BANK_COMMAND_VERSION {
            return Err(DecodeError::CommandVersion {
                found: *version,
                expected: BANK_COMMAND_VERSION,
            });
        }
        let mut args = Reader::new(rest);
        let command = match *op {
            OP_OPEN => BankCommand::Open {
                account: args.bytes("account")?,
                initial: args.i64("initial balance")?,
            },
            OP_DEPOSIT => BankCommand::Deposit {
                account: args.bytes("account")?,
                amount: args.i64("amount")?,
            },
            OP_WITHDRAW => BankCommand::Withdraw {
                account: args.bytes("account")?,
                amount: args.i64("amount")?,
            },
            OP_TRANSFER => BankCommand::Transfer {
                from: args.bytes("from")?,
                to: args.bytes("to")?,
                amount: args.i64("amount")?,
            },
            OP_BALANCE => BankCommand::Balance {
                account: args.bytes("account")?,
            },
            OP_TOTAL => BankCommand::Total,
            other => return Err(DecodeError::UnknownOp(other)),
        };
        args.finish(command)
    }

    /// Whether the command only reads.
    pub fn is_read(&self) -> bool {
        matches!(self, BankCommand::Balance { .. } | BankCommand::Total)
    }
}

/// The accounts and their balances: the [`App`] inside [`Bank`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Ledger {
    accounts: BTreeMap<Vec<u8>, i64>,
    /// The sum of all balances.
    total: i64,
}

fn show(name: &[u8]) -> String {
    String::from_utf8_lossy(name).into_owned()
}

fn positive(amount: i64) -> Result<(), Bytes> {
    if amount > 0 {
        Ok(())
    } else {
        Err(Reply::error_bytes(&format!(
            "ERR amount must be a positive integer, got {amount}"
        )))
    }
}

impl Ledger {
    /// The balance of `account`, if it exists.
    pub fn balance(&self, account: &[u8]) -> Option<i64> {
        self.accounts.get(account).copied()
    }

    /// The sum of all balances.
    pub fn total(&self) -> i64 {
        self.total
    }

    /// How many accounts exist.
    pub fn account_count(&self) -> usize {
        self.accounts.len()
    }

    fn existing(&self, account: &[u8]) -> Result<i64, Bytes> {
        self.balance(account)
            .ok_or_else(|| Reply::error_bytes(&format!("ERR no such account '{}'", show(account))))
    }

    fn write(&mut self, command: BankCommand<'_>) -> Result<Bytes, Bytes> {
        match command {
            BankCommand::Open { account, initial } => {
                if initial < 0 {
                    return Err(Reply::error_bytes(&format!(
                        "ERR an opening balance cannot be negative, got {initial}"
                    )));
                }
                if self.accounts.contains_key(account) {
                    return Err(Reply::error_bytes(&format!(
                        "ERR account '{}' exists",
                        show(account)
                    )));
                }
                self.total = self.grown_total(initial)?;
                self.accounts.insert(account.to_vec(), initial);
                Ok(Reply::ok_bytes())
            }
            BankCommand::Deposit { account, amount } => {
                positive(amount)?;
                let balance = self.existing(account)?;
                // Every balance is at most the total, so a total that fits keeps it fitting.
                self.total = self.grown_total(amount)?;
                let balance = balance + amount;
                self.accounts.insert(account.to_vec(), balance);
                Ok(Reply::int_bytes(balance))
            }
            BankCommand::Withdraw { account, amount } => {
                positive(amount)?;
                let balance = self.existing(account)?;
                let balance = self.debited(account, balance, amount)?;
                self.accounts.insert(account.to_vec(), balance);
                self.total -= amount;
                Ok(Reply::int_bytes(balance))
            }
            BankCommand::Transfer { from, to, amount } => {
                positive(amount)?;
                if from == to {
                    return Err(Reply::error_bytes(&format!(
                        "ERR cannot transfer from account '{}' to itself",
                        show(from)
                    )));
                }
                let from_balance = self.existing(from)?;
                let to_balance = self.existing(to)?;
                let from_balance = self.debited(from, from_balance, amount)?;
                self.accounts.insert(from.to_vec(), from_balance);
                self.accounts.insert(to.to_vec(), to_balance + amount);
                Ok(Reply::ok_bytes())
            }
            read => Ok(self.read(read)),
        }
    }

    fn grown_total(&self, amount: i64) -> Result<i64, Bytes> {
        self.total.checked_add(amount).ok_or_else(|| {
            Reply::error_bytes(&format!(
                "ERR the ledger total {} cannot grow by {amount}",
                self.total
            ))
        })
    }

    fn debited(&self, account: &[u8], balance: i64, amount: i64) -> Result<i64, Bytes> {
        if balance < amount {
            return Err(Reply::error_bytes(&format!(
                "ERR insufficient funds: account '{}' holds {balance}, {amount} asked",
                show(account)
            )));
        }
        Ok(balance - amount)
    }

    fn read(&self, command: BankCommand<'_>) -> Bytes {
        match command {
            BankCommand::Balance { account } => match self.balance(account) {
                Some(balance) => Reply::int_bytes(balance),
                None => Reply::nil_bytes(),
            },
            BankCommand::Total => Reply::Array(vec![
                Reply::Int(self.total),
                Reply::Int(self.accounts.len() as i64),
            ])
            .encode(),
            write => Reply::error_bytes(&format!("ERR {write:?} is not a read")),
        }
    }
}

impl App for Ledger {
    const NAME: &'static str = "bank";

    fn empty() -> Ledger {
        Ledger::default()
    }

    fn apply(&mut self, command: &[u8], _now_ms: u64) -> Bytes {
        let reply = match BankCommand::decode(command) {
            Ok(command) => self.write(command).unwrap_or_else(|error| error),
            Err(reason) => Reply::error_bytes(&format!("ERR bad bank command: {reason}")),
        };
        debug_assert_eq!(self.total, self.accounts.values().sum::<i64>());
        reply
    }

    fn query(&self, query: &[u8], _now_ms: u64) -> Bytes {
        match BankCommand::decode(query) {
            Ok(command) => self.read(command),
            Err(reason) => Reply::error_bytes(&format!("ERR bad bank query: {reason}")),
        }
    }

    fn snapshot(&self, out: &mut Vec<u8>) {
        out.push(BANK_SNAPSHOT_VERSION);
        out.extend_from_slice(&(self.accounts.len() as u64).to_le_bytes());
        for (name, balance) in &self.accounts {
            put_bytes(out, name);
            out.extend_from_slice(&balance.to_le_bytes());
        }
    }

    fn restore(snapshot: &[u8]) -> Result<Ledger, DecodeError> {
        let mut reader = Reader::new(snapshot);
        let version = reader.u8("version")?;
        if version != BANK_SNAPSHOT_VERSION {
            return Err(DecodeError::SnapshotVersion {
                found: version,
                expected: BANK_SNAPSHOT_VERSION,
                older: None,
            });
        }
        let count = reader.u64("account count")?;
        let mut ledger = Ledger::default();
        for position in 0..count {
            let name = reader.bytes("account name")?;
            let balance = reader.i64("balance")?;
            if balance < 0 {
                return Err(DecodeError::NegativeBalance { position, balance });
            }
            if ledger
                .accounts
                .last_key_value()
                .is_some_and(|(last, _)| name <= last.as_slice())
            {
                return Err(DecodeError::OutOfOrder {
                    what: "account",
                    position,
                });
            }
            ledger.total = ledger
                .total
                .checked_add(balance)
                .ok_or(DecodeError::TotalOverflow { position })?;
            ledger.accounts.insert(name.to_vec(), balance);
        }
        reader.finish(ledger)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apply::StateMachine;
    use crate::types::LogIndex;
    use proptest::prelude::*;

    fn apply(ledger: &mut Ledger, command: BankCommand<'_>) -> Reply {
        Reply::decode(&ledger.apply(&command.to_bytes(), 0)).unwrap()
    }

    fn query(ledger: &Ledger, command: BankCommand<'_>) -> Reply {
        Reply::decode(&ledger.query(&command.to_bytes(), 0)).unwrap()
    }

    fn is_error(reply: &Reply, text: &str) -> bool {
        matches!(reply, Reply::Error(message) if message.starts_with("ERR") && message.contains(text))
    }

    proptest! {
        #[test]
        fn every_command_round_trips_its_encoding(
            op in 0usize..6,
            a in proptest::collection::vec(any::<u8>(), 0..6),
            b in proptest::collection::vec(any::<u8>(), 0..6),
            amount in any::<i64>(),
        ) {
            let command = match op {
                0 => BankCommand::Open { account: &a, initial: amount },
                1 => BankCommand::Deposit { account: &a, amount },
                2 => BankCommand::Withdraw { account: &a, amount },
                3 => BankCommand::Transfer { from: &a, to: &b, amount },
                4 => BankCommand::Balance { account: &a },
                _ => BankCommand::Total,
            };
            let bytes = command.to_bytes();
            prop_assert_eq!(BankCommand::decode(&bytes), Ok(command));
            for cut in 0..bytes.len() {
                prop_assert!(BankCommand::decode(&bytes[..cut]).is_err());
            }
        }

        /// Random operations never break the invariants, and the total moves only by what
        /// opens, deposits and withdrawals said they moved.
        #[test]
        fn the_total_is_conserved_by_transfers(ops in proptest::collection::vec((0usize..4, 0u8..4, 0u8..4, -5i64..60), 0..60)) {
            let mut ledger = Ledger::default();
            let mut expected_total = 0i64;
            for (op, a, b, amount) in ops {
                let (a, b) = ([b'a' + a], [b'a' + b]);
                let command = match op {
                    0 => BankCommand::Open { account: &a, initial: amount },
                    1 => BankCommand::Deposit { account: &a, amount },
                    2 => BankCommand::Withdraw { account: &a, amount },
                    _ => BankCommand::Transfer { from: &a, to: &b, amount },
                };
                let reply = apply(&mut ledger, command);
                if !matches!(reply, Reply::Error(_)) {
                    match command {
                        BankCommand::Open { initial, .. } => expected_total += initial,
                        BankCommand::Deposit { amount, .. } => expected_total += amount,
                        BankCommand::Withdraw { amount, .. } => expected_total -= amount,
                        _ => {}
                    }
                }
                prop_assert_eq!(ledger.total(), expected_total);
                prop_assert!(ledger.accounts.values().all(|balance| *balance >= 0));
            }
        }
    }

    #[test]
    fn accounts_deposits_withdrawals_and_transfers() {
        let mut ledger = Ledger::default();
        assert_eq!(
            apply(
                &mut ledger,
                BankCommand::Open {
                    account: b"a",
                    initial: 100
                }
            ),
            Reply::Ok
        );
        assert!(is_error(
            &apply(
                &mut ledger,
                BankCommand::Open {
                    account: b"a",
                    initial: 0
                }
            ),
            "exists"
        ));
        assert!(is_error(
            &apply(
                &mut ledger,
                BankCommand::Open {
                    account: b"n",
                    initial: -1
                }
            ),
            "negative"
        ));
        assert_eq!(
            apply(
                &mut ledger,
                BankCommand::Open {
                    account: b"b",
                    initial: 0
                }
            ),
            Reply::Ok
        );
        assert_eq!(
            apply(
                &mut ledger,
                BankCommand::Deposit {
                    account: b"b",
                    amount: 5
                }
            ),
            Reply::Int(5)
        );
        assert!(is_error(
            &apply(
                &mut ledger,
                BankCommand::Deposit {
                    account: b"b",
                    amount: 0
                }
            ),
            "positive"
        ));
        assert!(is_error(
            &apply(
                &mut ledger,
                BankCommand::Deposit {
                    account: b"z",
                    amount: 1
                }
            ),
            "no such account"
        ));
        assert!(is_error(
            &apply(
                &mut ledger,
                BankCommand::Withdraw {
                    account: b"b",
                    amount: 6
                }
            ),
            "insufficient"
        ));
        assert_eq!(
            apply(
                &mut ledger,
                BankCommand::Withdraw {
                    account: b"b",
                    amount: 5
                }
            ),
            Reply::Int(0)
        );
        assert_eq!(
            apply(
                &mut ledger,
                BankCommand::Transfer {
                    from: b"a",
                    to: b"b",
                    amount: 30
                }
            ),
            Reply::Ok
        );
        assert!(is_error(
            &apply(
                &mut ledger,
                BankCommand::Transfer {
                    from: b"a",
                    to: b"b",
                    amount: 71
                }
            ),
            "insufficient"
        ));
        assert!(is_error(
            &apply(
                &mut ledger,
                BankCommand::Transfer {
                    from: b"a",
                    to: b"z",
                    amount: 1
                }
            ),
            "no such account"
        ));
        assert!(is_error(
            &apply(
                &mut ledger,
                BankCommand::Transfer {
                    from: b"a",
                    to: b"a",
                    amount: 1
                }
            ),
            "itself"
        ));
        assert_eq!(
            query(&ledger, BankCommand::Balance { account: b"a" }),
            Reply::Int(70)
        );
        assert_eq!(
            query(&ledger, BankCommand::Balance { account: b"b" }),
            Reply::Int(30)
        );
        assert_eq!(
            query(&ledger, BankCommand::Balance { account: b"z" }),
            Reply::Nil
        );
        assert_eq!(
            query(&ledger, BankCommand::Total),
            Reply::Array(vec![Reply::Int(100), Reply::Int(2)])
        );
        assert!(is_error(
            &apply(
                &mut ledger,
                BankCommand::Deposit {
                    account: b"a",
                    amount: i64::MAX
                }
            ),
            "cannot grow"
        ));
        assert!(is_error(
            &query(
                &ledger,
                BankCommand::Deposit {
                    account: b"a",
                    amount: 1
                }
            ),
            "not a read"
        ));
        assert!(is_error(
            &Reply::decode(&ledger.apply(&[1, 99], 0)).unwrap(),
            "unknown op"
        ));
        assert_eq!(ledger.total(), 100);
    }

    #[test]
    fn snapshot_round_trips_and_refuses_garbage() {
        let mut bank = Bank::new();
        for (n, name) in ["x", "y", "z"].iter().enumerate() {
            let open = BankCommand::Open {
                account: name.as_bytes(),
                initial: n as i64 * 10,
            };
            bank.apply(LogIndex(n as u64 + 1), &open.to_bytes());
        }
        let mut snapshot = Vec::new();
        bank.snapshot(&mut snapshot);
        let mut restored = Bank::new();
        restored.restore(&snapshot).unwrap();
        assert_eq!(restored, bank);
        assert_eq!(restored.app().total(), 30);
        for cut in 0..snapshot.len() {
            assert!(
                Bank::new().restore(&snapshot[..cut]).is_err(),
                "cut at {cut}"
            );
        }
        let mut negative = vec![BANK_SNAPSHOT_VERSION];
        negative.extend_from_slice(&1u64.to_le_bytes());
        put_bytes(&mut negative, b"a");
        negative.extend_from_slice(&(-1i64).to_le_bytes());
        let err = Ledger::restore(&negative).unwrap_err();
        assert_eq!(
            err,
            DecodeError::NegativeBalance {
                position: 0,
                balance: -1
            }
        );
        assert_eq!(err.to_string(), "account 0 has a negative balance -1");
    }
}
