//! The key-value example: an [`App`] over an ordered map of byte-string keys to byte-string
//! values with optional expiry, and its versioned binary command encoding. [`KvStore`] is the
//! complete state machine (the map inside a [`Machine`]: log clock and client sessions).
//!
//! # Command encoding, version 1
//! `[version: u8 = 1][op: u8][arguments]`. A byte string is a little-endian `u32` length then
//! the bytes; a list is a `u32` LE count then that many byte strings; a number is 8 bytes LE.
//! Nothing may follow the last argument. The table is in `docs/FORMATS.md` ("App commands");
//! ops 7..=9 and 20..=22 were added after the first release without changing the version: every
//! earlier encoding still decodes to the same command.
//!
//! Ops 1..=9 change the state and are valid only as proposals; ops 16..=22 are reads, valid as
//! queries and also as proposals (a read ordered through the log). A command that does not
//! decode, or a write sent as a query, gets an `Error` reply and changes nothing. Numbers are
//! stored as decimal ASCII text, as Redis does, so `Incr` and `Get` agree with a RESP front end.
//!
//! # Expiry
//! A key may carry a deadline (ms since the Unix epoch, computed from the log time of the
//! command that set it). It is alive while `now < deadline`; from then on every command and
//! query treats it as absent, and the first write applied at or after the deadline removes it
//! (so the state, and every snapshot, is the same on all replicas).
//!
//! # Snapshot encoding, version 2
//! `[version: u8 = 2][key count: u64 LE]` then for each key in ascending order
//! `[key: u32 length + bytes][value: u32 length + bytes][deadline: u64 LE, 0 = none]`.
//! Version 1 (the same without deadlines) is still read.

use std::collections::BTreeMap;

use bytes::Bytes;

use super::codec::{put_bytes, put_list, DecodeError, Reader};
use super::deadlines::Deadlines;
use super::machine::{App, Machine};
use super::reply::Reply;

/// The command encoding version this code writes and reads.
pub const KV_COMMAND_VERSION: u8 = 1;

/// The snapshot encoding version this code writes (it also reads version 1).
pub const KV_SNAPSHOT_VERSION: u8 = 2;

const OP_PUT: u8 = 1;
const OP_PUT_IF_ABSENT: u8 = 2;
const OP_PUT_IF_PRESENT: u8 = 3;
const OP_DELETE: u8 = 4;
const OP_INCR: u8 = 5;
const OP_APPEND: u8 = 6;
const OP_SET: u8 = 7;
const OP_DELETE_MANY: u8 = 8;
const OP_PUT_MANY: u8 = 9;
const OP_GET: u8 = 16;
const OP_EXISTS: u8 = 17;
const OP_COUNT: u8 = 18;
const OP_LEN: u8 = 19;
const OP_EXISTS_MANY: u8 = 20;
const OP_GET_MANY: u8 = 21;
const OP_PTTL: u8 = 22;

const SET_IF_ABSENT: u8 = 1;
const SET_IF_PRESENT: u8 = 2;
const SET_WITH_TTL: u8 = 4;

/// The key-value state machine: the map with the log clock and client sessions.
pub type KvStore = Machine<KvMap>;

/// When a [`KvCommand::Set`] stores its value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SetCondition {
    /// Always.
    Always,
    /// Only if the key does not exist (`NX`).
    IfAbsent,
    /// Only if the key exists (`XX`).
    IfPresent,
}

/// One key-value command, borrowing its arguments from the encoded bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KvCommand<'a> {
    /// Sets `key` to `value` (and clears its expiry).
    Put {
        /// The key.
        key: &'a [u8],
        /// The new value.
        value: &'a [u8],
    },
    /// Sets `key` to `value` only if the key does not exist.
    PutIfAbsent {
        /// The key.
        key: &'a [u8],
        /// The new value.
        value: &'a [u8],
    },
    /// Sets `key` to `value` only if the key exists.
    PutIfPresent {
        /// The key.
        key: &'a [u8],
        /// The new value.
        value: &'a [u8],
    },
    /// Removes `key`.
    Delete {
        /// The key.
        key: &'a [u8],
    },
    /// Adds `delta` to the decimal number stored at `key` (a missing key counts as 0).
    Incr {
        /// The key.
        key: &'a [u8],
        /// What to add.
        delta: i64,
    },
    /// Appends `value` to the value at `key` (a missing key counts as empty).
    Append {
        /// The key.
        key: &'a [u8],
        /// What to append.
        value: &'a [u8],
    },
    /// Redis `SET`: stores `value` under `condition`, with an expiry `ttl_ms` from the command's
    /// log time (none clears any earlier expiry). Replies `Ok`, or `Nil` when the condition
    /// failed.
    Set {
        /// The key.
        key: &'a [u8],
        /// The new value.
        value: &'a [u8],
        /// When to store.
        condition: SetCondition,
        /// Time to live in ms (at least 1), if any.
        ttl_ms: Option<u64>,
    },
    /// Removes every key listed; replies how many existed.
    DeleteMany {
        /// The keys.
        keys: Vec<&'a [u8]>,
    },
    /// Sets every key to its value in one step (clearing their expiries).
    PutMany {
        /// `(key, value)` pairs, applied in order.
        pairs: Vec<(&'a [u8], &'a [u8])>,
    },
    /// Reads the value at `key`.
    Get {
        /// The key.
        key: &'a [u8],
    },
    /// Whether `key` exists.
    Exists {
        /// The key.
        key: &'a [u8],
    },
    /// How many keys exist.
    Count,
    /// The length of the value at `key`.
    Len {
        /// The key.
        key: &'a [u8],
    },
    /// How many of the listed keys exist (a key listed twice counts twice).
    ExistsMany {
        /// The keys.
        keys: Vec<&'a [u8]>,
    },
    /// The values of the listed keys (an `Array` of `Value` or `Nil`).
    GetMany {
        /// The keys.
        keys: Vec<&'a [u8]>,
    },
    /// Milliseconds until `key` expires: -1 if it never does, -2 if it does not exist.
    Pttl {
        /// The key.
        key: &'a [u8],
    },
}

impl<'a> KvCommand<'a> {
    /// Appends the version-1 encoding of this command to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.push(KV_COMMAND_VERSION);
        match self {
            KvCommand::Put { key, value } => {
                out.push(OP_PUT);
                put_bytes(out, key);
                put_bytes(out, value);
            }
            KvCommand::PutIfAbsent { key, value } => {
                out.push(OP_PUT_IF_ABSENT);
                put_bytes(out, key);
                put_bytes(out, value);
            }
            KvCommand::PutIfPresent { key, value } => {
                out.push(OP_PUT_IF_PRESENT);
                put_bytes(out, key);
                put_bytes(out, value);
            }
            KvCommand::Delete { key } => {
                out.push(OP_DELETE);
                put_bytes(out, key);
            }
            KvCommand::Incr { key, delta } => {
                out.push(OP_INCR);
                put_bytes(out, key);
                out.extend_from_slice(&delta.to_le_bytes());
            }
            KvCommand::Append { key, value } => {
                out.push(OP_APPEND);
                put_bytes(out, key);
                put_bytes(out, value);
            }
            KvCommand::Set {
                key,
                value,
                condition,
                ttl_ms,
            } => {
                out.push(OP_SET);
                put_bytes(out, key);
                put_bytes(out, value);
                let mut flags = match condition {
                    SetCondition::Always => 0,
                    SetCondition::IfAbsent => SET_IF_ABSENT,
                    SetCondition::IfPresent => SET_IF_PRESENT,
                };
                if ttl_ms.is_some() {
                    flags |= SET_WITH_TTL;
                }
                out.push(flags);
                if let Some(ttl_ms) = ttl_ms {
                    out.extend_from_slice(&ttl_ms.to_le_bytes());
                }
            }
            KvCommand::DeleteMany { keys } => {
                out.push(OP_DELETE_MANY);
                put_list(out, keys);
            }
            KvCommand::PutMany { pairs } => {
                out.push(OP_PUT_MANY);
                let count = u32::try_from(pairs.len()).expect("more than u32::MAX pairs");
                out.extend_from_slice(&count.to_le_bytes());
                for (key, value) in pairs {
                    put_bytes(out, key);
                    put_bytes(out, value);
                }
            }
            KvCommand::Get { key } => {
                out.push(OP_GET);
                put_bytes(out, key);
            }
            KvCommand::Exists { key } => {
                out.push(OP_EXISTS);
                put_bytes(out, key);
            }
            KvCommand::Count => out.push(OP_COUNT),
            KvCommand::Len { key } => {
                out.push(OP_LEN);
                put_bytes(out, key);
            }
            KvCommand::ExistsMany { keys } => {
                out.push(OP_EXISTS_MANY);
                put_list(out, keys);
            }
            KvCommand::GetMany { keys } => {
                out.push(OP_GET_MANY);
                put_list(out, keys);
            }
            KvCommand::Pttl { key } => {
                out.push(OP_PTTL);
                put_bytes(out, key);
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
    pub fn decode(bytes: &'a [u8]) -> Result<KvCommand<'a>, DecodeError> {
        let [version, op, rest @ ..] = bytes else {
            return Err(DecodeError::CommandTooShort(bytes.len()));
        };
        if *version != KV_COMMAND_VERSION {
            return Err(DecodeError::CommandVersion {
                found: *version,
                expected: KV_COMMAND_VERSION,
            });
        }
        let mut args = Reader::new(rest);
        let command = match *op {
            OP_PUT => KvCommand::Put {
                key: args.bytes("key")?,
                value: args.bytes("value")?,
            },
            OP_PUT_IF_ABSENT => KvCommand::PutIfAbsent {
                key: args.bytes("key")?,
                value: args.bytes("value")?,
            },
            OP_PUT_IF_PRESENT => KvCommand::PutIfPresent {
                key: args.bytes("key")?,
                value: args.bytes("value")?,
            },
            OP_DELETE => KvCommand::Delete {
                key: args.bytes("key")?,
            },
            OP_INCR => KvCommand::Incr {
                key: args.bytes("key")?,
                delta: args.i64("delta")?,
            },
            OP_APPEND => KvCommand::Append {
                key: args.bytes("key")?,
                value: args.bytes("value")?,
            },
            OP_SET => {
                let key = args.bytes("key")?;
                let value = args.bytes("value")?;
                let flags = args.u8("flags")?;
                if flags & !(SET_IF_ABSENT | SET_IF_PRESENT | SET_WITH_TTL) != 0 {
                    return Err(DecodeError::UnknownSetFlags(flags));
                }
                let condition = match flags & (SET_IF_ABSENT | SET_IF_PRESENT) {
                    0 => SetCondition::Always,
                    SET_IF_ABSENT => SetCondition::IfAbsent,
                    SET_IF_PRESENT => SetCondition::IfPresent,
                    _ => return Err(DecodeError::ConflictingSetFlags),
                };
                let ttl_ms = if flags & SET_WITH_TTL != 0 {
                    Some(args.u64("ttl")?)
                } else {
                    None
                };
                KvCommand::Set {
                    key,
                    value,
                    condition,
                    ttl_ms,
                }
            }
            OP_DELETE_MANY => KvCommand::DeleteMany {
                keys: args.list("keys")?,
            },
            OP_PUT_MANY => {
                let count = args.u32("pair count")? as usize;
                if count > args.remaining() / 8 {
                    return Err(DecodeError::Pairs {
                        count,
                        left: args.remaining(),
                    });
                }
                let pairs = (0..count)
                    .map(|_| Ok((args.bytes("key")?, args.bytes("value")?)))
                    .collect::<Result<_, DecodeError>>()?;
                KvCommand::PutMany { pairs }
            }
            OP_GET => KvCommand::Get {
                key: args.bytes("key")?,
            },
            OP_EXISTS => KvCommand::Exists {
                key: args.bytes("key")?,
            },
            OP_COUNT => KvCommand::Count,
            OP_LEN => KvCommand::Len {
                key: args.bytes("key")?,
            },
            OP_EXISTS_MANY => KvCommand::ExistsMany {
                keys: args.list("keys")?,
            },
            OP_GET_MANY => KvCommand::GetMany {
                keys: args.list("keys")?,
            },
            OP_PTTL => KvCommand::Pttl {
                key: args.bytes("key")?,
            },
            other => return Err(DecodeError::UnknownOp(other)),
        };
        args.finish(command)
    }

    /// Whether the command only reads.
    pub fn is_read(&self) -> bool {
        matches!(
            self,
            KvCommand::Get { .. }
                | KvCommand::Exists { .. }
                | KvCommand::Count
                | KvCommand::Len { .. }
                | KvCommand::ExistsMany { .. }
                | KvCommand::GetMany { .. }
                | KvCommand::Pttl { .. }
        )
    }
}

/// The key-value map with expiry: the [`App`] inside [`KvStore`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KvMap {
    entries: BTreeMap<Vec<u8>, Vec<u8>>,
    deadlines: Deadlines,
}

impl KvMap {
    /// The value at `key` at time `now_ms`, if any.
    pub fn get(&self, key: &[u8], now_ms: u64) -> Option<&[u8]> {
        if self.deadlines.is_expired(key, now_ms) {
            return None;
        }
        self.entries.get(key).map(Vec::as_slice)
    }

    /// How many keys are alive at `now_ms`.
    pub fn len(&self, now_ms: u64) -> usize {
        self.entries.len() - self.deadlines.count_due(now_ms)
    }

    /// Whether no key is stored (alive or not yet removed).
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn read(&self, command: KvCommand<'_>, now_ms: u64) -> Bytes {
        match command {
            KvCommand::Get { key } => match self.get(key, now_ms) {
                Some(value) => Reply::value_bytes(value),
                None => Reply::nil_bytes(),
            },
            KvCommand::Exists { key } => Reply::int_bytes(self.get(key, now_ms).is_some() as i64),
            KvCommand::Count => Reply::int_bytes(self.len(now_ms) as i64),
            KvCommand::Len { key } => {
                Reply::int_bytes(self.get(key, now_ms).map_or(0, <[u8]>::len) as i64)
            }
            KvCommand::ExistsMany { keys } => {
                let found = keys
                    .iter()
                    .filter(|key| self.get(key, now_ms).is_some())
                    .count();
                Reply::int_bytes(found as i64)
            }
            KvCommand::GetMany { keys } => {
                let values: Vec<Bytes> = keys
                    .iter()
                    .map(|key| match self.get(key, now_ms) {
                        Some(value) => Reply::value_bytes(value),
                        None => Reply::nil_bytes(),
                    })
                    .collect();
                Reply::array_bytes(values.iter().map(|value| &value[..]))
            }
            KvCommand::Pttl { key } => {
                let ttl = match (self.get(key, now_ms), self.deadlines.get(key)) {
                    (None, _) => -2,
                    (Some(_), None) => -1,
                    (Some(_), Some(at)) => (at - now_ms).min(i64::MAX as u64) as i64,
                };
                Reply::int_bytes(ttl)
            }
            write => Reply::error_bytes(&format!("ERR {write:?} is not a read")),
        }
    }

    fn write(&mut self, command: KvCommand<'_>, now_ms: u64) -> Bytes {
        match command {
            KvCommand::Put { key, value } => {
                self.set(key, value, None);
                Reply::ok_bytes()
            }
            KvCommand::PutIfAbsent { key, value } => {
                if self.entries.contains_key(key) {
                    return Reply::int_bytes(0);
                }
                self.set(key, value, None);
                Reply::int_bytes(1)
            }
            KvCommand::PutIfPresent { key, value } => {
                if !self.entries.contains_key(key) {
                    return Reply::int_bytes(0);
                }
                self.set(key, value, None);
                Reply::int_bytes(1)
            }
            KvCommand::Set {
                key,
                value,
                condition,
                ttl_ms,
            } => {
                let deadline = match ttl_ms {
                    None => None,
                    Some(0) => {
                        return Reply::error_bytes("ERR invalid expire time in 'set' command")
                    }
                    Some(ttl) => Some(now_ms.saturating_add(ttl)),
                };
                let exists = self.entries.contains_key(key);
                let allowed = match condition {
                    SetCondition::Always => true,
                    SetCondition::IfAbsent => !exists,
                    SetCondition::IfPresent => exists,
                };
                if !allowed {
                    return Reply::nil_bytes();
                }
                self.set(key, value, deadline);
                Reply::ok_bytes()
            }
            KvCommand::Delete { key } => Reply::int_bytes(self.remove(key) as i64),
            KvCommand::DeleteMany { keys } => {
                let removed = keys.iter().filter(|key| self.remove(key)).count();
                Reply::int_bytes(removed as i64)
            }
            KvCommand::PutMany { pairs } => {
                for (key, value) in pairs {
                    self.set(key, value, None);
                }
                Reply::ok_bytes()
            }
            KvCommand::Incr { key, delta } => {
                let current = match self.entries.get(key) {
                    None => 0,
                    Some(value) => match std::str::from_utf8(value)
                        .ok()
                        .and_then(|text| text.parse::<i64>().ok())
                    {
                        Some(number) => number,
                        None => {
                            return Reply::error_bytes(
                                "ERR value is not an integer or out of range",
                            )
                        }
                    },
                };
                let Some(next) = current.checked_add(delta) else {
                    return Reply::error_bytes("ERR increment or decrement would overflow");
                };
                self.replace_value(key, next.to_string().as_bytes());
                Reply::int_bytes(next)
            }
            KvCommand::Append { key, value } => {
                let existing = self.entries.entry(key.to_vec()).or_default();
                existing.extend_from_slice(value);
                Reply::int_bytes(existing.len() as i64)
            }
            read => self.read(read, now_ms),
        }
    }

    /// Stores `value` at `key` with the given deadline (none clears an earlier one).
    fn set(&mut self, key: &[u8], value: &[u8], deadline_ms: Option<u64>) {
        self.replace_value(key, value);
        match deadline_ms {
            Some(at) => self.deadlines.set(key, at),
            None => self.deadlines.clear(key),
        }
    }

    /// Replaces the value at `key`, keeping its deadline.
    fn replace_value(&mut self, key: &[u8], value: &[u8]) {
        match self.entries.get_mut(key) {
            Some(existing) => {
                existing.clear();
                existing.extend_from_slice(value);
            }
            None => {
                self.entries.insert(key.to_vec(), value.to_vec());
            }
        }
    }

    fn remove(&mut self, key: &[u8]) -> bool {
        self.deadlines.clear(key);
        self.entries.remove(key).is_some()
    }

    /// Removes every key due at `now_ms`.
    fn expire(&mut self, now_ms: u64) {
        while let Some(key) = self.deadlines.pop_due(now_ms) {
            let removed = self.entries.remove(&key);
            assert!(removed.is_some(), "a deadline outlived its key {key:?}");
        }
    }
}

impl App for KvMap {
    const NAME: &'static str = "kv";

    fn empty() -> KvMap {
        KvMap::default()
    }

    fn apply(&mut self, command: &[u8], now_ms: u64) -> Bytes {
        self.expire(now_ms);
        match KvCommand::decode(command) {
            Ok(command) => self.write(command, now_ms),
            Err(reason) => Reply::error_bytes(&format!("ERR bad kv command: {reason}")),
        }
    }

    fn query(&self, query: &[u8], now_ms: u64) -> Bytes {
        match KvCommand::decode(query) {
            Ok(command) => self.read(command, now_ms),
            Err(reason) => Reply::error_bytes(&format!("ERR bad kv query: {reason}")),
        }
    }

    fn snapshot(&self, out: &mut Vec<u8>) {
        out.push(KV_SNAPSHOT_VERSION);
        out.extend_from_slice(&(self.entries.len() as u64).to_le_bytes());
        for (key, value) in &self.entries {
            put_bytes(out, key);
            put_bytes(out, value);
            out.extend_from_slice(&self.deadlines.get(key).unwrap_or(0).to_le_bytes());
        }
    }

    fn restore(snapshot: &[u8]) -> Result<KvMap, DecodeError> {
        let mut reader = Reader::new(snapshot);
        let version = reader.u8("version")?;
        if version != 1 && version != KV_SNAPSHOT_VERSION {
            return Err(DecodeError::SnapshotVersion {
                found: version,
                expected: KV_SNAPSHOT_VERSION,
                older: Some(1),
            });
        }
        let count = reader.u64("key count")?;
        let mut map = KvMap::default();
        for position in 0..count {
            let key = reader.bytes("key")?;
            let value = reader.bytes("value")?;
            let deadline = if version == 1 {
                0
            } else {
                reader.u64("deadline")?
            };
            if map
                .entries
                .last_key_value()
                .is_some_and(|(last, _)| key <= last.as_slice())
            {
                return Err(DecodeError::OutOfOrder {
                    what: "key",
                    position,
                });
            }
            map.entries.insert(key.to_vec(), value.to_vec());
            if deadline != 0 {
                map.deadlines.set(key, deadline);
            }
        }
        reader.finish(map)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apply::StateMachine;
    use crate::apps::envelope::Envelope;
    use crate::types::LogIndex;
    use proptest::prelude::*;

    fn apply(store: &mut KvMap, command: KvCommand<'_>, now_ms: u64) -> Reply {
        Reply::decode(&store.apply(&command.to_bytes(), now_ms)).unwrap()
    }

    fn query(store: &KvMap, command: KvCommand<'_>, now_ms: u64) -> Reply {
        Reply::decode(&store.query(&command.to_bytes(), now_ms)).unwrap()
    }

    fn value(bytes: &'static [u8]) -> Reply {
        Reply::Value(Bytes::from_static(bytes))
    }

    fn key_strategy() -> impl Strategy<Value = Vec<u8>> {
        proptest::collection::vec(any::<u8>(), 0..6)
    }

    proptest! {
        #[test]
        fn every_command_round_trips_its_encoding(
            op in 0usize..16,
            a in key_strategy(),
            b in key_strategy(),
            keys in proptest::collection::vec(key_strategy(), 0..4),
            number in any::<i64>(),
            flags in 0u8..3,
            ttl in proptest::option::of(any::<u64>()),
        ) {
            let keys: Vec<&[u8]> = keys.iter().map(Vec::as_slice).collect();
            let condition = [SetCondition::Always, SetCondition::IfAbsent, SetCondition::IfPresent][flags as usize];
            let command = match op {
                0 => KvCommand::Put { key: &a, value: &b },
                1 => KvCommand::PutIfAbsent { key: &a, value: &b },
                2 => KvCommand::PutIfPresent { key: &a, value: &b },
                3 => KvCommand::Delete { key: &a },
                4 => KvCommand::Incr { key: &a, delta: number },
                5 => KvCommand::Append { key: &a, value: &b },
                6 => KvCommand::Set { key: &a, value: &b, condition, ttl_ms: ttl },
                7 => KvCommand::DeleteMany { keys: keys.clone() },
                8 => KvCommand::PutMany { pairs: keys.iter().map(|key| (*key, &b[..])).collect() },
                9 => KvCommand::Get { key: &a },
                10 => KvCommand::Exists { key: &a },
                11 => KvCommand::Count,
                12 => KvCommand::Len { key: &a },
                13 => KvCommand::ExistsMany { keys: keys.clone() },
                14 => KvCommand::GetMany { keys: keys.clone() },
                _ => KvCommand::Pttl { key: &a },
            };
            let bytes = command.to_bytes();
            prop_assert_eq!(KvCommand::decode(&bytes), Ok(command));
            for cut in 0..bytes.len() {
                prop_assert!(KvCommand::decode(&bytes[..cut]).is_err());
            }
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..48)) {
            let mut map = KvMap::default();
            let _ = map.apply(&bytes, 5);
            let _ = map.query(&bytes, 5);
        }
    }

    #[test]
    fn writes_and_reads_behave_like_redis_strings() {
        let mut map = KvMap::default();
        let now = 1_000;
        assert_eq!(query(&map, KvCommand::Get { key: b"a" }, now), Reply::Nil);
        assert_eq!(
            apply(
                &mut map,
                KvCommand::Put {
                    key: b"a",
                    value: b"1"
                },
                now
            ),
            Reply::Ok
        );
        assert_eq!(query(&map, KvCommand::Get { key: b"a" }, now), value(b"1"));
        assert_eq!(
            apply(
                &mut map,
                KvCommand::PutIfAbsent {
                    key: b"a",
                    value: b"2"
                },
                now
            ),
            Reply::Int(0)
        );
        assert_eq!(
            apply(
                &mut map,
                KvCommand::PutIfPresent {
                    key: b"b",
                    value: b"2"
                },
                now
            ),
            Reply::Int(0)
        );
        assert_eq!(
            apply(
                &mut map,
                KvCommand::Incr {
                    key: b"a",
                    delta: 41
                },
                now
            ),
            Reply::Int(42)
        );
        assert_eq!(
            apply(
                &mut map,
                KvCommand::Append {
                    key: b"a",
                    value: b"!"
                },
                now
            ),
            Reply::Int(3)
        );
        assert_eq!(
            apply(
                &mut map,
                KvCommand::Incr {
                    key: b"a",
                    delta: 1
                },
                now
            ),
            Reply::Error("ERR value is not an integer or out of range".to_string())
        );
        assert_eq!(
            query(&map, KvCommand::Len { key: b"a" }, now),
            Reply::Int(3)
        );
        assert_eq!(query(&map, KvCommand::Count, now), Reply::Int(1));
        let pairs = vec![(&b"x"[..], &b"1"[..]), (b"y", b"2"), (b"x", b"3")];
        assert_eq!(
            apply(&mut map, KvCommand::PutMany { pairs }, now),
            Reply::Ok
        );
        assert_eq!(
            query(
                &map,
                KvCommand::GetMany {
                    keys: vec![b"x", b"nope", b"y"]
                },
                now
            ),
            Reply::Array(vec![value(b"3"), Reply::Nil, value(b"2")])
        );
        assert_eq!(
            query(
                &map,
                KvCommand::ExistsMany {
                    keys: vec![b"x", b"x", b"nope"]
                },
                now
            ),
            Reply::Int(2)
        );
        assert_eq!(
            apply(
                &mut map,
                KvCommand::DeleteMany {
                    keys: vec![b"x", b"y", b"nope"]
                },
                now
            ),
            Reply::Int(2)
        );
        assert_eq!(
            apply(&mut map, KvCommand::Delete { key: b"a" }, now),
            Reply::Int(1)
        );
        assert_eq!(
            apply(&mut map, KvCommand::Delete { key: b"a" }, now),
            Reply::Int(0)
        );
        assert_eq!(
            apply(
                &mut map,
                KvCommand::Incr {
                    key: b"n",
                    delta: i64::MAX
                },
                now
            ),
            Reply::Int(i64::MAX)
        );
        assert_eq!(
            apply(
                &mut map,
                KvCommand::Incr {
                    key: b"n",
                    delta: 1
                },
                now
            ),
            Reply::Error("ERR increment or decrement would overflow".to_string())
        );
    }

    #[test]
    fn set_conditions_and_expiry_follow_the_log_time() {
        let mut map = KvMap::default();
        let set = |condition, ttl_ms| KvCommand::Set {
            key: b"k",
            value: b"v",
            condition,
            ttl_ms,
        };
        assert_eq!(
            apply(&mut map, set(SetCondition::IfPresent, None), 100),
            Reply::Nil
        );
        assert_eq!(
            apply(&mut map, set(SetCondition::IfAbsent, Some(50)), 100),
            Reply::Ok
        );
        assert_eq!(
            apply(&mut map, set(SetCondition::IfAbsent, None), 120),
            Reply::Nil
        );
        assert_eq!(
            query(&map, KvCommand::Pttl { key: b"k" }, 120),
            Reply::Int(30)
        );
        assert_eq!(query(&map, KvCommand::Get { key: b"k" }, 149), value(b"v"));
        // Alive while now < deadline: at 150 the key is gone for reads...
        assert_eq!(query(&map, KvCommand::Get { key: b"k" }, 150), Reply::Nil);
        assert_eq!(query(&map, KvCommand::Count, 150), Reply::Int(0));
        assert_eq!(
            query(&map, KvCommand::Pttl { key: b"k" }, 150),
            Reply::Int(-2)
        );
        // ...and the first write at or after it removes it, so NX succeeds.
        assert_eq!(
            apply(&mut map, set(SetCondition::IfAbsent, None), 150),
            Reply::Ok
        );
        assert_eq!(
            query(&map, KvCommand::Pttl { key: b"k" }, 10_000),
            Reply::Int(-1)
        );
        assert_eq!(
            apply(&mut map, set(SetCondition::Always, Some(0)), 200),
            Reply::Error("ERR invalid expire time in 'set' command".to_string())
        );
        // INCR keeps the expiry, a plain put clears it.
        apply(
            &mut map,
            KvCommand::Set {
                key: b"n",
                value: b"1",
                condition: SetCondition::Always,
                ttl_ms: Some(100),
            },
            200,
        );
        apply(
            &mut map,
            KvCommand::Incr {
                key: b"n",
                delta: 1,
            },
            210,
        );
        assert_eq!(
            query(&map, KvCommand::Pttl { key: b"n" }, 210),
            Reply::Int(90)
        );
        apply(
            &mut map,
            KvCommand::Put {
                key: b"n",
                value: b"5",
            },
            220,
        );
        assert_eq!(
            query(&map, KvCommand::Pttl { key: b"n" }, 400),
            Reply::Int(-1)
        );
    }

    #[test]
    fn malformed_commands_get_an_error_and_change_nothing() {
        let mut map = KvMap::default();
        apply(
            &mut map,
            KvCommand::Put {
                key: b"k",
                value: b"v",
            },
            1,
        );
        let before = map.clone();
        let mut trailing = KvCommand::Delete { key: b"k" }.to_bytes().to_vec();
        trailing.push(0);
        let bad: [&[u8]; 7] = [
            b"",
            &[1],
            &[2, OP_PUT],
            &[1, 99],
            &[1, OP_PUT, 9, 0, 0, 0],
            &[1, OP_DELETE_MANY, 255, 255, 255, 255],
            &trailing,
        ];
        for command in bad {
            for reply in [map.clone().apply(command, 1), map.query(command, 1)] {
                let reply = Reply::decode(&reply).unwrap();
                assert!(
                    matches!(reply, Reply::Error(_)),
                    "{command:?} gave {reply:?}"
                );
            }
        }
        let write = KvCommand::Delete { key: b"k" }.to_bytes();
        assert!(matches!(
            Reply::decode(&map.query(&write, 1)).unwrap(),
            Reply::Error(_)
        ));
        assert_eq!(map, before);
    }

    #[test]
    fn snapshot_restores_the_same_state_reads_version_1_and_refuses_garbage() {
        let mut store = KvStore::new();
        for n in 0..100u32 {
            let key = format!("key-{n}");
            let command = KvCommand::Set {
                key: key.as_bytes(),
                value: &n.to_le_bytes(),
                condition: SetCondition::Always,
                ttl_ms: (n % 3 == 0).then_some(1_000),
            }
            .to_bytes();
            let timed = Envelope::Timed {
                now_ms: 5_000 + n as u64,
                command: &command,
            }
            .to_vec();
            store.apply(LogIndex(n as u64 + 1), &timed);
        }
        let mut snapshot = Vec::new();
        store.snapshot(&mut snapshot);
        let mut restored = KvStore::new();
        restored.restore(&snapshot).unwrap();
        assert_eq!(restored, store);
        assert_eq!(restored.clock_ms(), 5_099);

        for cut in [0, 1, 5, snapshot.len() / 2, snapshot.len() - 1] {
            let mut target = KvStore::new();
            assert!(target.restore(&snapshot[..cut]).is_err(), "cut at {cut}");
            assert!(
                target.app().is_empty(),
                "a failed restore must leave the state alone"
            );
        }
        for at in [1, 3, snapshot.len() / 2] {
            let mut flipped = snapshot.clone();
            flipped[at] ^= 0x10;
            assert!(KvStore::new().restore(&flipped).is_err(), "flip at {at}");
        }

        // A bare version-1 snapshot (what earlier builds wrote) still restores.
        let mut v1 = vec![1u8];
        v1.extend_from_slice(&1u64.to_le_bytes());
        put_bytes(&mut v1, b"old");
        put_bytes(&mut v1, b"value");
        let mut old = KvStore::new();
        old.restore(&v1).unwrap();
        assert_eq!(old.app().get(b"old", u64::MAX), Some(&b"value"[..]));
        v1.push(0);
        assert!(KvStore::new().restore(&v1).is_err());
    }
}
