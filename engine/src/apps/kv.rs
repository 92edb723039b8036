//! The key-value example: a [`StateMachine`] over an ordered map of byte-string keys to
//! byte-string values, and its versioned binary command encoding.
//!
//! # Command encoding, version 1
//! `[version: u8 = 1][op: u8][arguments]`. A byte-string argument is a little-endian `u32`
//! length followed by that many bytes; a number is an `i64`, little-endian, 8 bytes. Nothing may
//! follow the last argument.
//!
//! | op | command | arguments | reply ([`Reply`]) |
//! |----|---------|-----------|-------------------|
//! | 1 | `Put` | key, value | `Ok` |
//! | 2 | `PutIfAbsent` | key, value | `Int(1)` stored, `Int(0)` key existed |
//! | 3 | `PutIfPresent` | key, value | `Int(1)` stored, `Int(0)` no such key |
//! | 4 | `Delete` | key | `Int(1)` deleted, `Int(0)` no such key |
//! | 5 | `Incr` | key, delta (i64) | `Int(new)`; `Error` if the value is not a decimal i64 or overflows |
//! | 6 | `Append` | key, value | `Int(new length)` |
//! | 16 | `Get` | key | `Value` or `Nil` |
//! | 17 | `Exists` | key | `Int(0 or 1)` |
//! | 18 | `Count` | none | `Int(number of keys)` |
//! | 19 | `Len` | key | `Int(value length)`, 0 for no key |
//!
//! Ops 1..=6 change the state and are valid only as proposals; ops 16..=19 are reads, valid as
//! queries and also as proposals (a read ordered through the log). A command that does not decode,
//! or a write sent as a query, gets an `Error` reply and changes nothing. Numbers are stored as
//! decimal ASCII text, as Redis does, so `Incr` and `Get` agree with a RESP front end.
//!
//! # Snapshot encoding, version 1
//! `[version: u8 = 1][key count: u64 LE]` then for each key in ascending order
//! `[key length: u32 LE][key][value length: u32 LE][value]`.

use std::collections::BTreeMap;

use bytes::Bytes;

use crate::apply::StateMachine;
use crate::types::LogIndex;

use super::reply::Reply;

/// The command encoding version this code writes and reads.
pub const KV_COMMAND_VERSION: u8 = 1;

/// The snapshot encoding version this code writes and reads.
pub const KV_SNAPSHOT_VERSION: u8 = 1;

const OP_PUT: u8 = 1;
const OP_PUT_IF_ABSENT: u8 = 2;
const OP_PUT_IF_PRESENT: u8 = 3;
const OP_DELETE: u8 = 4;
const OP_INCR: u8 = 5;
const OP_APPEND: u8 = 6;
const OP_GET: u8 = 16;
const OP_EXISTS: u8 = 17;
const OP_COUNT: u8 = 18;
const OP_LEN: u8 = 19;

/// One key-value command, borrowing its arguments from the encoded bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KvCommand<'a> {
    /// Sets `key` to `value`.
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
}

/// Reads the arguments of an encoded command, front to back.
struct ArgReader<'a> {
    rest: &'a [u8],
}

impl<'a> ArgReader<'a> {
    fn bytes(&mut self, what: &str) -> Result<&'a [u8], String> {
        let Some((len, rest)) = self.rest.split_first_chunk::<4>() else {
            return Err(format!("{what}: length prefix cut short"));
        };
        let len = u32::from_le_bytes(*len) as usize;
        if rest.len() < len {
            return Err(format!(
                "{what}: {len} bytes announced, {} present",
                rest.len()
            ));
        }
        let (value, rest) = rest.split_at(len);
        self.rest = rest;
        Ok(value)
    }

    fn i64(&mut self, what: &str) -> Result<i64, String> {
        let Some((raw, rest)) = self.rest.split_first_chunk::<8>() else {
            return Err(format!("{what}: 8 bytes expected"));
        };
        self.rest = rest;
        Ok(i64::from_le_bytes(*raw))
    }

    fn finish<T>(self, value: T) -> Result<T, String> {
        if self.rest.is_empty() {
            Ok(value)
        } else {
            Err(format!(
                "{} unexpected bytes after the arguments",
                self.rest.len()
            ))
        }
    }
}

fn put_bytes(out: &mut Vec<u8>, value: &[u8]) {
    let len = u32::try_from(value.len()).expect("kv argument longer than u32::MAX bytes");
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(value);
}

impl<'a> KvCommand<'a> {
    /// Appends the version-1 encoding of this command to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.push(KV_COMMAND_VERSION);
        match *self {
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
        }
    }

    /// The encoding as a new buffer.
    pub fn to_bytes(&self) -> Bytes {
        let mut out = Vec::new();
        self.encode(&mut out);
        Bytes::from(out)
    }

    /// Decodes a command; the error says what is wrong.
    pub fn decode(bytes: &'a [u8]) -> Result<KvCommand<'a>, String> {
        let [version, op, rest @ ..] = bytes else {
            return Err(format!(
                "a command needs at least 2 bytes, found {}",
                bytes.len()
            ));
        };
        if *version != KV_COMMAND_VERSION {
            return Err(format!(
                "command version {version} is not supported (expected {KV_COMMAND_VERSION})"
            ));
        }
        let mut args = ArgReader { rest };
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
            other => return Err(format!("unknown op {other}")),
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
        )
    }
}

/// The key-value state machine.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KvStore {
    entries: BTreeMap<Vec<u8>, Vec<u8>>,
}

impl KvStore {
    /// An empty store.
    pub fn new() -> KvStore {
        KvStore::default()
    }

    /// The value at `key`, if any.
    pub fn get(&self, key: &[u8]) -> Option<&[u8]> {
        self.entries.get(key).map(Vec::as_slice)
    }

    /// How many keys exist.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the store is empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn read(&self, command: KvCommand<'_>) -> Bytes {
        match command {
            KvCommand::Get { key } => match self.entries.get(key) {
                Some(value) => Reply::value_bytes(value),
                None => Reply::nil_bytes(),
            },
            KvCommand::Exists { key } => Reply::int_bytes(self.entries.contains_key(key) as i64),
            KvCommand::Count => Reply::int_bytes(self.entries.len() as i64),
            KvCommand::Len { key } => {
                Reply::int_bytes(self.entries.get(key).map_or(0, |value| value.len()) as i64)
            }
            write => Reply::error_bytes(&format!("{write:?} is not a read")),
        }
    }

    fn write(&mut self, command: KvCommand<'_>) -> Bytes {
        match command {
            KvCommand::Put { key, value } => {
                self.set(key, value);
                Reply::ok_bytes()
            }
            KvCommand::PutIfAbsent { key, value } => {
                if self.entries.contains_key(key) {
                    return Reply::int_bytes(0);
                }
                self.entries.insert(key.to_vec(), value.to_vec());
                Reply::int_bytes(1)
            }
            KvCommand::PutIfPresent { key, value } => match self.entries.get_mut(key) {
                Some(existing) => {
                    existing.clear();
                    existing.extend_from_slice(value);
                    Reply::int_bytes(1)
                }
                None => Reply::int_bytes(0),
            },
            KvCommand::Delete { key } => {
                Reply::int_bytes(self.entries.remove(key).is_some() as i64)
            }
            KvCommand::Incr { key, delta } => {
                let current = match self.entries.get(key) {
                    None => 0,
                    Some(value) => match std::str::from_utf8(value)
                        .ok()
                        .and_then(|text| text.parse::<i64>().ok())
                    {
                        Some(number) => number,
                        None => return Reply::error_bytes("value is not an integer"),
                    },
                };
                let Some(next) = current.checked_add(delta) else {
                    return Reply::error_bytes("increment would overflow");
                };
                self.set(key, next.to_string().as_bytes());
                Reply::int_bytes(next)
            }
            KvCommand::Append { key, value } => {
                let existing = self.entries.entry(key.to_vec()).or_default();
                existing.extend_from_slice(value);
                Reply::int_bytes(existing.len() as i64)
            }
            read => self.read(read),
        }
    }

    fn set(&mut self, key: &[u8], value: &[u8]) {
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
}

impl StateMachine for KvStore {
    fn apply(&mut self, _index: LogIndex, command: &[u8]) -> Bytes {
        match KvCommand::decode(command) {
            Ok(command) => self.write(command),
            Err(reason) => Reply::error_bytes(&reason),
        }
    }

    fn query(&self, query: &[u8]) -> Bytes {
        match KvCommand::decode(query) {
            Ok(command) => self.read(command),
            Err(reason) => Reply::error_bytes(&reason),
        }
    }

    fn snapshot(&self, out: &mut Vec<u8>) {
        out.push(KV_SNAPSHOT_VERSION);
        out.extend_from_slice(&(self.entries.len() as u64).to_le_bytes());
        for (key, value) in &self.entries {
            put_bytes(out, key);
            put_bytes(out, value);
        }
    }

    fn restore(&mut self, snapshot: &[u8]) -> Result<(), String> {
        let Some((&version, rest)) = snapshot.split_first() else {
            return Err("kv snapshot is empty".to_string());
        };
        if version != KV_SNAPSHOT_VERSION {
            return Err(format!(
                "kv snapshot version {version} is not supported (expected {KV_SNAPSHOT_VERSION})"
            ));
        }
        let mut reader = ArgReader { rest };
        let count = reader.i64("key count")? as u64;
        let mut entries: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
        for position in 0..count {
            let key = reader.bytes("key")?;
            let value = reader.bytes("value")?;
            if let Some((last, _)) = entries.last_key_value() {
                if key <= last.as_slice() {
                    return Err(format!("kv snapshot: key {position} is out of order"));
                }
            }
            entries.insert(key.to_vec(), value.to_vec());
        }
        let entries = reader
            .finish(entries)
            .map_err(|e| format!("kv snapshot: {e}"))?;
        self.entries = entries;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn apply(store: &mut KvStore, command: KvCommand<'_>) -> Reply {
        Reply::decode(&store.apply(LogIndex(1), &command.to_bytes())).unwrap()
    }

    fn query(store: &KvStore, command: KvCommand<'_>) -> Reply {
        Reply::decode(&store.query(&command.to_bytes())).unwrap()
    }

    #[test]
    fn every_command_round_trips_its_encoding() {
        let commands = [
            KvCommand::Put {
                key: b"k",
                value: b"v",
            },
            KvCommand::PutIfAbsent {
                key: b"",
                value: b"v",
            },
            KvCommand::PutIfPresent {
                key: b"k",
                value: b"",
            },
            KvCommand::Delete { key: b"k" },
            KvCommand::Incr {
                key: b"n",
                delta: -3,
            },
            KvCommand::Append {
                key: b"k",
                value: b"tail",
            },
            KvCommand::Get { key: b"k" },
            KvCommand::Exists { key: b"k" },
            KvCommand::Count,
            KvCommand::Len { key: b"k" },
        ];
        for command in commands {
            let bytes = command.to_bytes();
            assert_eq!(KvCommand::decode(&bytes), Ok(command));
        }
    }

    #[test]
    fn writes_and_reads_behave_like_a_map() {
        let mut store = KvStore::new();
        assert_eq!(query(&store, KvCommand::Get { key: b"a" }), Reply::Nil);
        assert_eq!(
            apply(
                &mut store,
                KvCommand::Put {
                    key: b"a",
                    value: b"1"
                }
            ),
            Reply::Ok
        );
        assert_eq!(
            query(&store, KvCommand::Get { key: b"a" }),
            Reply::Value(Bytes::from_static(b"1"))
        );
        assert_eq!(
            apply(
                &mut store,
                KvCommand::PutIfAbsent {
                    key: b"a",
                    value: b"2"
                }
            ),
            Reply::Int(0)
        );
        assert_eq!(
            apply(
                &mut store,
                KvCommand::PutIfPresent {
                    key: b"b",
                    value: b"2"
                }
            ),
            Reply::Int(0)
        );
        assert_eq!(
            apply(
                &mut store,
                KvCommand::Incr {
                    key: b"a",
                    delta: 41
                }
            ),
            Reply::Int(42)
        );
        assert_eq!(
            apply(
                &mut store,
                KvCommand::Append {
                    key: b"a",
                    value: b"!"
                }
            ),
            Reply::Int(3)
        );
        assert_eq!(
            apply(
                &mut store,
                KvCommand::Incr {
                    key: b"a",
                    delta: 1
                }
            ),
            Reply::Error("value is not an integer".to_string())
        );
        assert_eq!(query(&store, KvCommand::Len { key: b"a" }), Reply::Int(3));
        assert_eq!(query(&store, KvCommand::Count), Reply::Int(1));
        assert_eq!(
            apply(&mut store, KvCommand::Delete { key: b"a" }),
            Reply::Int(1)
        );
        assert_eq!(
            apply(&mut store, KvCommand::Delete { key: b"a" }),
            Reply::Int(0)
        );
        assert_eq!(
            query(&store, KvCommand::Exists { key: b"a" }),
            Reply::Int(0)
        );
        assert_eq!(
            apply(
                &mut store,
                KvCommand::Incr {
                    key: b"n",
                    delta: i64::MAX
                }
            ),
            Reply::Int(i64::MAX)
        );
        assert_eq!(
            apply(
                &mut store,
                KvCommand::Incr {
                    key: b"n",
                    delta: 1
                }
            ),
            Reply::Error("increment would overflow".to_string())
        );
    }

    #[test]
    fn malformed_commands_get_an_error_and_change_nothing() {
        let mut store = KvStore::new();
        store.apply(
            LogIndex(1),
            &KvCommand::Put {
                key: b"k",
                value: b"v",
            }
            .to_bytes(),
        );
        let before = store.clone();
        let mut trailing = KvCommand::Delete { key: b"k" }.to_bytes().to_vec();
        trailing.push(0);
        let bad: [&[u8]; 6] = [
            b"",
            &[1],
            &[2, OP_PUT],
            &[1, 99],
            &[1, OP_PUT, 9, 0, 0, 0],
            &trailing,
        ];
        for command in bad {
            let reply = Reply::decode(&store.apply(LogIndex(2), command)).unwrap();
            assert!(
                matches!(reply, Reply::Error(_)),
                "{command:?} gave {reply:?}"
            );
            let reply = Reply::decode(&store.query(command)).unwrap();
            assert!(
                matches!(reply, Reply::Error(_)),
                "{command:?} gave {reply:?}"
            );
        }
        let write = KvCommand::Delete { key: b"k" }.to_bytes();
        assert!(matches!(
            Reply::decode(&store.query(&write)).unwrap(),
            Reply::Error(_)
        ));
        assert_eq!(store, before);
    }

    #[test]
    fn snapshot_restores_the_same_state_and_refuses_garbage() {
        let mut store = KvStore::new();
        for n in 0..100u32 {
            let key = format!("key-{n}");
            store.apply(
                LogIndex(n as u64 + 1),
                &KvCommand::Put {
                    key: key.as_bytes(),
                    value: &n.to_le_bytes(),
                }
                .to_bytes(),
            );
        }
        let mut snapshot = Vec::new();
        store.snapshot(&mut snapshot);
        let mut restored = KvStore::new();
        restored.restore(&snapshot).unwrap();
        assert_eq!(restored, store);

        for cut in [0, 1, 5, snapshot.len() - 1] {
            let mut target = KvStore::new();
            assert!(target.restore(&snapshot[..cut]).is_err(), "cut at {cut}");
            assert!(
                target.is_empty(),
                "a failed restore must leave the state alone"
            );
        }
        let mut longer = snapshot.clone();
        longer.push(0);
        assert!(KvStore::new().restore(&longer).is_err());
        let mut wrong_version = snapshot;
        wrong_version[0] = 9;
        assert!(KvStore::new().restore(&wrong_version).is_err());
    }
}
