//! The lock service example: named locks held by an owner for a lease, with fencing tokens.
//! [`LockService`] is the complete state machine (the [`LockTable`] inside a [`Machine`]: log
//! clock and client sessions).
//!
//! Guarantees:
//! - fencing tokens come from one counter for the whole table: every grant of a lock to a new
//!   holder takes the next number, so tokens strictly increase per lock and across locks, also
//!   across leader changes and restarts (the counter is replicated state, kept in snapshots);
//! - a renewal (acquire by the current holder before its lease ends) extends the lease and keeps
//!   the token;
//! - a lease ends at `acquire time + lease_ms`, both on the log clock (monotonic, equal on all
//!   replicas); a lock is held while `now < lease end`, and the first command applied at or after
//!   its end removes it.
//!
//! # Command encoding, version 1
//! `[version: u8 = 1][op: u8][arguments]`, byte strings and numbers as in the kv encoding:
//!
//! | op | command | arguments | reply |
//! |----|---------|-----------|-------|
//! | 1 | `Acquire` | name, owner, lease_ms (u64 >= 1) | `Int(token)`; `Error` `LOCKED ...` if held by another owner |
//! | 2 | `Release` | name, owner | `Int(1)` released, `Int(0)` not held by that owner |
//! | 16 | `Owner` | name | `Array[Value(owner), Int(token), Int(lease end ms)]`, or `Nil` when free |
//!
//! # Snapshot encoding, version 1
//! `[version: u8 = 1][last token: u64 LE][lock count: u64 LE]` then per lock in ascending name
//! order `[name: u32 length + bytes][owner: u32 length + bytes][token: u64 LE][lease end: u64 LE]`.

use std::collections::BTreeMap;

use bytes::Bytes;

use super::codec::{put_bytes, DecodeError, Reader};
use super::deadlines::Deadlines;
use super::machine::{App, Machine};
use super::reply::Reply;

/// The command encoding version this code writes and reads.
pub const LOCK_COMMAND_VERSION: u8 = 1;

/// The snapshot encoding version this code writes and reads.
pub const LOCK_SNAPSHOT_VERSION: u8 = 1;

const OP_ACQUIRE: u8 = 1;
const OP_RELEASE: u8 = 2;
const OP_OWNER: u8 = 16;

/// The lock service state machine: the table with the log clock and client sessions.
pub type LockService = Machine<LockTable>;

/// One lock command, borrowing its arguments from the encoded bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LockCommand<'a> {
    /// Takes or renews lock `name` for `owner` for `lease_ms` from the command's log time.
    Acquire {
        /// The lock.
        name: &'a [u8],
        /// Who takes it.
        owner: &'a [u8],
        /// The lease, ms (>= 1).
        lease_ms: u64,
    },
    /// Gives lock `name` up if `owner` holds it.
    Release {
        /// The lock.
        name: &'a [u8],
        /// Who gives it up.
        owner: &'a [u8],
    },
    /// Who holds lock `name`.
    Owner {
        /// The lock.
        name: &'a [u8],
    },
}

impl<'a> LockCommand<'a> {
    /// Appends the version-1 encoding to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.push(LOCK_COMMAND_VERSION);
        match *self {
            LockCommand::Acquire {
                name,
                owner,
                lease_ms,
            } => {
                out.push(OP_ACQUIRE);
                put_bytes(out, name);
                put_bytes(out, owner);
                out.extend_from_slice(&lease_ms.to_le_bytes());
            }
            LockCommand::Release { name, owner } => {
                out.push(OP_RELEASE);
                put_bytes(out, name);
                put_bytes(out, owner);
            }
            LockCommand::Owner { name } => {
                out.push(OP_OWNER);
                put_bytes(out, name);
            }
        }
    }

    /// The encoding as a new buffer.
    pub fn to_bytes(&self) -> Bytes {
        let mut out = Vec::new();
        self.encode(&mut out);
        Bytes::from(out)
    }

    /// Decodes a command; the error says what is wrong.
    pub fn decode(bytes: &'a [u8]) -> Result<LockCommand<'a>, DecodeError> {
        let [version, op, rest @ ..] = bytes else {
            return Err(DecodeError::CommandTooShort(bytes.len()));
        };
        if *version != LOCK_COMMAND_VERSION {
            return Err(DecodeError::CommandVersion {
                found: *version,
                expected: LOCK_COMMAND_VERSION,
            });
        }
        let mut args = Reader::new(rest);
        let command = match *op {
            OP_ACQUIRE => LockCommand::Acquire {
                name: args.bytes("name")?,
                owner: args.bytes("owner")?,
                lease_ms: args.u64("lease")?,
            },
            OP_RELEASE => LockCommand::Release {
                name: args.bytes("name")?,
                owner: args.bytes("owner")?,
            },
            OP_OWNER => LockCommand::Owner {
                name: args.bytes("name")?,
            },
            other => return Err(DecodeError::UnknownOp(other)),
        };
        args.finish(command)
    }

    /// Whether the command only reads.
    pub fn is_read(&self) -> bool {
        matches!(self, LockCommand::Owner { .. })
    }
}

/// A held lock.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Held {
    owner: Vec<u8>,
    token: u64,
    lease_end_ms: u64,
}

/// The locks and the token counter: the [`App`] inside [`LockService`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LockTable {
    locks: BTreeMap<Vec<u8>, Held>,
    /// Lease ends, the same as in `locks`, ordered by time.
    leases: Deadlines,
    /// The last fencing token granted (0 before the first).
    last_token: u64,
}

impl LockTable {
    /// The holder of lock `name` at `now_ms`: owner, token and lease end.
    pub fn owner(&self, name: &[u8], now_ms: u64) -> Option<(&[u8], u64, u64)> {
        self.locks
            .get(name)
            .filter(|held| now_ms < held.lease_end_ms)
            .map(|held| (held.owner.as_slice(), held.token, held.lease_end_ms))
    }

    /// The last fencing token granted.
    pub fn last_token(&self) -> u64 {
        self.last_token
    }

    fn write(&mut self, command: LockCommand<'_>, now_ms: u64) -> Bytes {
        match command {
            LockCommand::Acquire {
                name,
                owner,
                lease_ms,
            } => {
                if lease_ms == 0 {
                    return Reply::error_bytes("ERR a lease must be at least 1 ms");
                }
                let lease_end_ms = now_ms.saturating_add(lease_ms);
                let token = match self.locks.get_mut(name) {
                    Some(held) if held.owner != owner => {
                        return Reply::error_bytes(&format!(
                            "LOCKED lock '{}' is held by another owner for {} ms more",
                            String::from_utf8_lossy(name),
                            held.lease_end_ms - now_ms
                        ));
                    }
                    Some(held) => {
                        held.lease_end_ms = lease_end_ms;
                        held.token
                    }
                    None => {
                        self.last_token += 1;
                        self.locks.insert(
                            name.to_vec(),
                            Held {
                                owner: owner.to_vec(),
                                token: self.last_token,
                                lease_end_ms,
                            },
                        );
                        self.last_token
                    }
                };
                self.leases.set(name, lease_end_ms);
                Reply::int_bytes(token as i64)
            }
            LockCommand::Release { name, owner } => {
                let held_by_owner = self.locks.get(name).is_some_and(|held| held.owner == owner);
                if held_by_owner {
                    self.locks.remove(name);
                    self.leases.clear(name);
                }
                Reply::int_bytes(held_by_owner as i64)
            }
            read => self.read(read, now_ms),
        }
    }

    fn read(&self, command: LockCommand<'_>, now_ms: u64) -> Bytes {
        match command {
            LockCommand::Owner { name } => match self.owner(name, now_ms) {
                Some((owner, token, lease_end_ms)) => Reply::Array(vec![
                    Reply::Value(Bytes::copy_from_slice(owner)),
                    Reply::Int(token as i64),
                    Reply::Int(lease_end_ms as i64),
                ])
                .encode(),
                None => Reply::nil_bytes(),
            },
            write => Reply::error_bytes(&format!("ERR {write:?} is not a read")),
        }
    }

    /// Removes every lock whose lease ended at or before `now_ms`.
    fn expire(&mut self, now_ms: u64) {
        while let Some(name) = self.leases.pop_due(now_ms) {
            let removed = self.locks.remove(&name);
            assert!(removed.is_some(), "a lease outlived its lock {name:?}");
        }
    }
}

impl App for LockTable {
    const NAME: &'static str = "lock";

    fn empty() -> LockTable {
        LockTable::default()
    }

    fn apply(&mut self, command: &[u8], now_ms: u64) -> Bytes {
        self.expire(now_ms);
        match LockCommand::decode(command) {
            Ok(command) => self.write(command, now_ms),
            Err(reason) => Reply::error_bytes(&format!("ERR bad lock command: {reason}")),
        }
    }

    fn query(&self, query: &[u8], now_ms: u64) -> Bytes {
        match LockCommand::decode(query) {
            Ok(command) => self.read(command, now_ms),
            Err(reason) => Reply::error_bytes(&format!("ERR bad lock query: {reason}")),
        }
    }

    fn snapshot(&self, out: &mut Vec<u8>) {
        out.push(LOCK_SNAPSHOT_VERSION);
        out.extend_from_slice(&self.last_token.to_le_bytes());
        out.extend_from_slice(&(self.locks.len() as u64).to_le_bytes());
        for (name, held) in &self.locks {
            put_bytes(out, name);
            put_bytes(out, &held.owner);
            out.extend_from_slice(&held.token.to_le_bytes());
            out.extend_from_slice(&held.lease_end_ms.to_le_bytes());
        }
    }

    fn restore(snapshot: &[u8]) -> Result<LockTable, DecodeError> {
        let mut reader = Reader::new(snapshot);
        let version = reader.u8("version")?;
        if version != LOCK_SNAPSHOT_VERSION {
            return Err(DecodeError::SnapshotVersion {
                found: version,
                expected: LOCK_SNAPSHOT_VERSION,
                older: None,
            });
        }
        let mut table = LockTable {
            last_token: reader.u64("last token")?,
            ..LockTable::default()
        };
        let count = reader.u64("lock count")?;
        for position in 0..count {
            let name = reader.bytes("lock name")?;
            let owner = reader.bytes("owner")?.to_vec();
            let token = reader.u64("token")?;
            let lease_end_ms = reader.u64("lease end")?;
            if token == 0 || token > table.last_token {
                return Err(DecodeError::LockToken {
                    position,
                    token,
                    last_token: table.last_token,
                });
            }
            if table
                .locks
                .last_key_value()
                .is_some_and(|(last, _)| name <= last.as_slice())
            {
                return Err(DecodeError::OutOfOrder {
                    what: "lock",
                    position,
                });
            }
            table.leases.set(name, lease_end_ms);
            table.locks.insert(
                name.to_vec(),
                Held {
                    owner,
                    token,
                    lease_end_ms,
                },
            );
        }
        reader.finish(table)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apply::StateMachine;
    use crate::apps::envelope::Envelope;
    use crate::types::LogIndex;
    use proptest::prelude::*;

    fn acquire(table: &mut LockTable, name: &str, owner: &str, lease_ms: u64, now: u64) -> Reply {
        let command = LockCommand::Acquire {
            name: name.as_bytes(),
            owner: owner.as_bytes(),
            lease_ms,
        };
        Reply::decode(&table.apply(&command.to_bytes(), now)).unwrap()
    }

    fn release(table: &mut LockTable, name: &str, owner: &str, now: u64) -> Reply {
        let command = LockCommand::Release {
            name: name.as_bytes(),
            owner: owner.as_bytes(),
        };
        Reply::decode(&table.apply(&command.to_bytes(), now)).unwrap()
    }

    proptest! {
        #[test]
        fn every_command_round_trips_its_encoding(
            op in 0usize..3,
            a in proptest::collection::vec(any::<u8>(), 0..6),
            b in proptest::collection::vec(any::<u8>(), 0..6),
            lease_ms in any::<u64>(),
        ) {
            let command = match op {
                0 => LockCommand::Acquire { name: &a, owner: &b, lease_ms },
                1 => LockCommand::Release { name: &a, owner: &b },
                _ => LockCommand::Owner { name: &a },
            };
            let bytes = command.to_bytes();
            prop_assert_eq!(LockCommand::decode(&bytes), Ok(command));
            for cut in 0..bytes.len() {
                prop_assert!(LockCommand::decode(&bytes[..cut]).is_err());
            }
        }

        /// Whatever the interleaving, a granted token is never reused or smaller than an
        /// earlier grant, and a lock never has two holders.
        #[test]
        fn tokens_only_grow(ops in proptest::collection::vec((any::<bool>(), 0u8..2, 0u8..3, 1u64..50, 0u64..30), 0..80)) {
            let mut table = LockTable::default();
            let mut now = 1_000;
            let mut last_grant = 0;
            for (is_acquire, name, owner, lease, step) in ops {
                now += step;
                let (name, owner) = (format!("l{name}"), format!("o{owner}"));
                if is_acquire {
                    let before = table.owner(name.as_bytes(), now).map(|(_, token, _)| token);
                    if let Reply::Int(token) = acquire(&mut table, &name, &owner, lease, now) {
                        let token = token as u64;
                        if before == Some(token) {
                            continue;
                        }
                        prop_assert!(token > last_grant, "token {} after {}", token, last_grant);
                        last_grant = token;
                    }
                } else {
                    release(&mut table, &name, &owner, now);
                }
            }
        }
    }

    #[test]
    fn acquire_renew_release_and_lease_expiry() {
        let mut table = LockTable::default();
        assert_eq!(acquire(&mut table, "l", "a", 100, 1_000), Reply::Int(1));
        let Reply::Error(message) = acquire(&mut table, "l", "b", 100, 1_050) else {
            panic!("a held lock was granted");
        };
        assert!(
            message.starts_with("LOCKED") && message.contains("50 ms"),
            "{message}"
        );
        // Renewal keeps the token and moves the lease end.
        assert_eq!(acquire(&mut table, "l", "a", 100, 1_090), Reply::Int(1));
        assert_eq!(table.owner(b"l", 1_150), Some((&b"a"[..], 1, 1_190)));
        assert_eq!(table.owner(b"l", 1_190), None);
        // Once the lease ended, another owner gets a larger token.
        assert_eq!(acquire(&mut table, "l", "b", 100, 1_190), Reply::Int(2));
        assert_eq!(release(&mut table, "l", "a", 1_200), Reply::Int(0));
        assert_eq!(release(&mut table, "l", "b", 1_200), Reply::Int(1));
        assert_eq!(acquire(&mut table, "l", "a", 10, 1_200), Reply::Int(3));
        assert_eq!(acquire(&mut table, "other", "a", 10, 1_200), Reply::Int(4));
        assert!(matches!(
            acquire(&mut table, "x", "a", 0, 1_200),
            Reply::Error(_)
        ));
        let owner = LockCommand::Owner { name: b"l" }.to_bytes();
        assert_eq!(
            Reply::decode(&table.query(&owner, 1_205)).unwrap(),
            Reply::Array(vec![
                Reply::Value(Bytes::from_static(b"a")),
                Reply::Int(3),
                Reply::Int(1_210)
            ])
        );
        assert_eq!(
            Reply::decode(&table.query(&owner, 1_210)).unwrap(),
            Reply::Nil
        );
        // The first command at or after the lease ends removes expired locks.
        release(&mut table, "none", "none", 1_210);
        assert!(table.locks.is_empty() && table.leases == Deadlines::default());
    }

    #[test]
    fn the_log_clock_never_goes_back_for_leases() {
        let mut service = LockService::new();
        let acquire = |now_ms, owner: &[u8]| {
            let command = LockCommand::Acquire {
                name: b"l",
                owner,
                lease_ms: 100,
            }
            .to_bytes();
            Envelope::Timed {
                now_ms,
                command: &command,
            }
            .to_vec()
        };
        service.apply(LogIndex(1), &acquire(10_000, b"a"));
        // A new leader whose clock is 5 s behind: the lease still ends at 10_100.
        let reply = service.apply(LogIndex(2), &acquire(5_000, b"b"));
        assert!(matches!(Reply::decode(&reply).unwrap(), Reply::Error(_)));
        assert_eq!(service.clock_ms(), 10_000);
        assert_eq!(
            service.app().owner(b"l", 10_000),
            Some((&b"a"[..], 1, 10_100))
        );
    }

    #[test]
    fn snapshot_round_trips_and_refuses_garbage() {
        let mut table = LockTable::default();
        acquire(&mut table, "a", "x", 100, 10);
        acquire(&mut table, "b", "y", 100, 10);
        release(&mut table, "a", "x", 20);
        let mut snapshot = Vec::new();
        table.snapshot(&mut snapshot);
        assert_eq!(LockTable::restore(&snapshot), Ok(table.clone()));
        for cut in 0..snapshot.len() {
            assert!(
                LockTable::restore(&snapshot[..cut]).is_err(),
                "cut at {cut}"
            );
        }
        let mut bad_token = snapshot.clone();
        bad_token[1] = 0; // last token 0 but a lock holds token 2
        assert!(
            matches!(
                LockTable::restore(&bad_token),
                Err(DecodeError::LockToken { last_token: 0, .. })
            ),
            "a token above the last one was accepted"
        );
    }
}
