//! Client sessions for exactly-once writes: per session, the last sequence number applied and
//! its reply, so a retried command returns the remembered reply instead of applying again.
//!
//! Guarantees (every replica computes the same table, it depends only on the log):
//! - a session id is the log index of the entry that opened it, so ids are unique for the life
//!   of the cluster and an unknown id is always a session that was evicted (or never existed);
//! - at most `capacity` sessions are kept; opening one more evicts the session least recently
//!   used, by log index of its last command;
//! - the table is part of the machine's snapshot.

use std::collections::BTreeMap;

use bytes::Bytes;

use super::codec::{put_bytes, DecodeError, Reader};
use super::reply::Reply;

/// Sessions a machine keeps unless told otherwise.
pub const SESSIONS_MAX: usize = 65_536;

/// One session's memory.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Session {
    /// The highest sequence number applied (0 before the first command).
    last_seq: u64,
    /// The reply to `last_seq`.
    reply: Bytes,
    /// The log index of the session's last command (or of its opening).
    used_at: u64,
}

/// What to do with a command of a session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SessionCheck {
    /// A new sequence number: apply the command, then [`Sessions::record`] its reply.
    Apply,
    /// Already applied (a retry): answer with these reply bytes, apply nothing.
    Remembered(Bytes),
    /// Refused (unknown session, stale sequence): answer with these reply bytes.
    Refused(Bytes),
}

/// The session table of one machine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sessions {
    sessions: BTreeMap<u64, Session>,
    /// `used_at` → session id, for eviction in log order (each log index is used once).
    by_use: BTreeMap<u64, u64>,
    capacity: usize,
}

impl Sessions {
    /// An empty table holding at most `capacity` sessions.
    pub fn new(capacity: usize) -> Sessions {
        assert!(capacity > 0, "a session table needs room for one session");
        Sessions {
            sessions: BTreeMap::new(),
            by_use: BTreeMap::new(),
            capacity,
        }
    }

    /// How many sessions are kept.
    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    /// The most sessions kept.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Whether no session is kept.
    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }

    /// Opens a session with the id `index` (the log index of the opening entry), evicting the
    /// least recently used one when full. Returns the id.
    pub fn open(&mut self, index: u64) -> u64 {
        assert!(
            !self.sessions.contains_key(&index) && !self.by_use.contains_key(&index),
            "log index {index} opens a session twice"
        );
        if self.sessions.len() == self.capacity {
            let (_, evicted) = self.by_use.pop_first().expect("a full table is not empty");
            self.sessions.remove(&evicted);
        }
        self.sessions.insert(
            index,
            Session {
                last_seq: 0,
                reply: Bytes::new(),
                used_at: index,
            },
        );
        self.by_use.insert(index, index);
        assert!(self.sessions.len() <= self.capacity && self.by_use.len() == self.sessions.len());
        index
    }

    /// Decides what to do with sequence number `seq` of session `client`, at log `index`. A
    /// retry refreshes the session's place in the eviction order.
    pub fn check(&mut self, client: u64, seq: u64, index: u64) -> SessionCheck {
        let Some(session) = self.sessions.get_mut(&client) else {
            return SessionCheck::Refused(Reply::error_bytes(&format!(
                "NOSESSION session {client} is unknown or expired; open a new one with SESSION.OPEN"
            )));
        };
        if seq == 0 || seq < session.last_seq {
            return SessionCheck::Refused(Reply::error_bytes(&format!(
                "ERR sequence {seq} of session {client} is stale: {} was applied already",
                session.last_seq
            )));
        }
        if seq == session.last_seq {
            let reply = session.reply.clone();
            Self::touch(&mut self.by_use, session, client, index);
            return SessionCheck::Remembered(reply);
        }
        SessionCheck::Apply
    }

    /// Remembers `reply` as the answer to `seq` of session `client`, applied at log `index`
    /// (after [`Sessions::check`] said [`SessionCheck::Apply`]).
    pub fn record(&mut self, client: u64, seq: u64, reply: Bytes, index: u64) {
        let session = self
            .sessions
            .get_mut(&client)
            .expect("record follows a check that found the session");
        assert!(
            seq > session.last_seq,
            "session {client}: recording seq {seq} after {}",
            session.last_seq
        );
        session.last_seq = seq;
        session.reply = reply;
        Self::touch(&mut self.by_use, session, client, index);
    }

    fn touch(by_use: &mut BTreeMap<u64, u64>, session: &mut Session, client: u64, index: u64) {
        assert!(
            index > session.used_at,
            "session {client} used at {index} after {}",
            session.used_at
        );
        by_use.remove(&session.used_at);
        by_use.insert(index, client);
        session.used_at = index;
    }

    /// Appends `[count: u32 LE]` then per session, by id,
    /// `[id: u64][last seq: u64][used at: u64][reply: u32 length + bytes]`.
    pub fn snapshot(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&(self.sessions.len() as u32).to_le_bytes());
        for (id, session) in &self.sessions {
            out.extend_from_slice(&id.to_le_bytes());
            out.extend_from_slice(&session.last_seq.to_le_bytes());
            out.extend_from_slice(&session.used_at.to_le_bytes());
            put_bytes(out, &session.reply);
        }
    }

    /// Reads what [`Sessions::snapshot`] wrote, into a table of `capacity`.
    pub(crate) fn restore(
        reader: &mut Reader<'_>,
        capacity: usize,
    ) -> Result<Sessions, DecodeError> {
        let count = reader.u32("session count")? as usize;
        if count > capacity {
            return Err(DecodeError::TooManySessions { count, capacity });
        }
        let mut table = Sessions::new(capacity);
        for position in 0..count {
            let id = reader.u64("session id")?;
            let last_seq = reader.u64("session sequence")?;
            let used_at = reader.u64("session use")?;
            let reply = Bytes::copy_from_slice(reader.bytes("session reply")?);
            if table
                .sessions
                .last_key_value()
                .is_some_and(|(last, _)| *last >= id)
            {
                return Err(DecodeError::SessionOrder { position, id });
            }
            if table.by_use.insert(used_at, id).is_some() {
                return Err(DecodeError::SessionUse { used_at });
            }
            table.sessions.insert(
                id,
                Session {
                    last_seq,
                    reply,
                    used_at,
                },
            );
        }
        Ok(table)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_are_remembered_and_stale_or_unknown_are_refused() {
        let mut table = Sessions::new(4);
        let id = table.open(10);
        assert_eq!(id, 10);
        assert_eq!(table.check(id, 1, 11), SessionCheck::Apply);
        table.record(id, 1, Reply::int_bytes(5), 11);
        assert_eq!(
            table.check(id, 1, 12),
            SessionCheck::Remembered(Reply::int_bytes(5))
        );
        assert_eq!(table.check(id, 3, 13), SessionCheck::Apply);
        table.record(id, 3, Reply::ok_bytes(), 13);
        assert!(matches!(table.check(id, 2, 14), SessionCheck::Refused(_)));
        assert!(matches!(table.check(id, 0, 15), SessionCheck::Refused(_)));
        let SessionCheck::Refused(unknown) = table.check(99, 1, 16) else {
            panic!("unknown session accepted");
        };
        assert_eq!(
            Reply::decode(&unknown)
                .map(|r| matches!(r, Reply::Error(m) if m.starts_with("NOSESSION"))),
            Ok(true)
        );
    }

    #[test]
    fn the_least_recently_used_session_is_evicted() {
        let mut table = Sessions::new(2);
        let a = table.open(1);
        let b = table.open(2);
        assert_eq!(table.check(a, 1, 3), SessionCheck::Apply);
        table.record(a, 1, Reply::ok_bytes(), 3);
        let c = table.open(4);
        assert_eq!(table.len(), 2);
        assert!(matches!(table.check(b, 1, 5), SessionCheck::Refused(_)));
        assert_eq!(table.check(c, 1, 6), SessionCheck::Apply);
        assert_eq!(
            table.check(a, 1, 7),
            SessionCheck::Remembered(Reply::ok_bytes())
        );
    }

    #[test]
    fn snapshot_round_trips_and_refuses_bad_tables() {
        let mut table = Sessions::new(8);
        for index in 1..=3 {
            table.open(index);
        }
        table.check(2, 1, 4);
        table.record(2, 1, Reply::int_bytes(9), 4);
        let mut out = Vec::new();
        table.snapshot(&mut out);
        let restored = Sessions::restore(&mut Reader::new(&out), 8).unwrap();
        assert_eq!(restored, table);
        assert!(Sessions::restore(&mut Reader::new(&out), 2).is_err());
        for cut in 0..out.len() {
            assert!(Sessions::restore(&mut Reader::new(&out[..cut]), 8).is_err());
        }
    }
}
