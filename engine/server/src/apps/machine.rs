//! [`Machine`]: the [`StateMachine`] every example service runs as. It unwraps the envelope of
//! each command (see `envelope`), keeps the log clock and the client sessions, and hands the
//! app command to the [`App`] with the time it must use.
//!
//! Guarantees:
//! - the log clock is `max(previous clock, time in the command)`: it never goes back, even when
//!   a new leader's wall clock is behind the old one's, and it is equal on every replica after
//!   the same entries;
//! - a session command with an already applied `(client, seq)` returns the remembered reply and
//!   does not reach the app;
//! - a query runs at `max(log clock, time in the query)`, so a read never sees alive what an
//!   applied write already saw expired.
//!
//! # Snapshot encoding, version 1
//! `[tag: u8 = 0xE1][version: u8 = 1][clock_ms: u64 LE][sessions][app snapshot length: u64 LE]
//! [app snapshot][crc32 of everything before: u32 LE]`, the sessions as written by
//! `Sessions::snapshot`. A snapshot that does not start with 0xE1 is a bare app snapshot (what
//! earlier versions of the kv store wrote) and restores with clock 0 and no sessions.

use bytes::Bytes;

use crate::apply::StateMachine;
use crate::types::LogIndex;

use super::codec::{DecodeError, Reader};
use super::envelope::{Envelope, ENVELOPE_TAG};
use super::reply::Reply;
use super::sessions::{SessionCheck, Sessions, SESSIONS_MAX};

/// The machine snapshot version this code writes and reads.
pub const MACHINE_SNAPSHOT_VERSION: u8 = 1;

/// The deterministic core of one example service, below the envelope and the sessions.
pub trait App: Send + 'static {
    /// The app's name in messages (`kv`, `bank`, `lock`).
    const NAME: &'static str;

    /// An empty state.
    fn empty() -> Self;

    /// Applies a committed app command at log time `now_ms` (monotonic) and returns the encoded
    /// [`Reply`]. Bad input gets an `Error` reply and changes nothing; never panics.
    fn apply(&mut self, command: &[u8], now_ms: u64) -> Bytes;

    /// Answers a read-only app query at time `now_ms`.
    fn query(&self, query: &[u8], now_ms: u64) -> Bytes;

    /// Appends the app's versioned state encoding to `out`.
    fn snapshot(&self, out: &mut Vec<u8>);

    /// Decodes what [`App::snapshot`] wrote; the error says what is wrong.
    fn restore(snapshot: &[u8]) -> Result<Self, DecodeError>
    where
        Self: Sized;
}

/// An [`App`] with the log clock and client sessions: a complete [`StateMachine`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Machine<A> {
    app: A,
    clock_ms: u64,
    sessions: Sessions,
}

impl<A: App> Default for Machine<A> {
    fn default() -> Self {
        Machine::new()
    }
}

impl<A: App> Machine<A> {
    /// An empty machine keeping up to [`SESSIONS_MAX`] sessions.
    pub fn new() -> Machine<A> {
        Machine::with_session_capacity(SESSIONS_MAX)
    }

    /// An empty machine keeping up to `capacity` sessions.
    pub fn with_session_capacity(capacity: usize) -> Machine<A> {
        Machine {
            app: A::empty(),
            clock_ms: 0,
            sessions: Sessions::new(capacity),
        }
    }

    /// The app state.
    pub fn app(&self) -> &A {
        &self.app
    }

    /// The log clock: the latest time any applied command carried, ms since the Unix epoch.
    pub fn clock_ms(&self) -> u64 {
        self.clock_ms
    }

    /// How many client sessions are kept.
    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }

    fn advance_clock(&mut self, envelope: &Envelope<'_>) -> u64 {
        if let Some(now_ms) = envelope.now_ms() {
            self.clock_ms = self.clock_ms.max(now_ms);
        }
        self.clock_ms
    }
}

impl<A: App> StateMachine for Machine<A> {
    fn apply(&mut self, index: LogIndex, command: &[u8]) -> Bytes {
        let envelope = match Envelope::decode(command) {
            Ok(envelope) => envelope,
            Err(reason) => return Reply::error_bytes(&format!("ERR bad envelope: {reason}")),
        };
        let now_ms = self.advance_clock(&envelope);
        match envelope {
            Envelope::Bare(command) | Envelope::Timed { command, .. } => {
                self.app.apply(command, now_ms)
            }
            Envelope::OpenSession { .. } => {
                let id = self.sessions.open(index.get());
                Reply::int_bytes(id as i64)
            }
            Envelope::Session {
                client,
                seq,
                command,
                ..
            } => match self.sessions.check(client, seq, index.get()) {
                SessionCheck::Apply => {
                    let reply = self.app.apply(command, now_ms);
                    self.sessions
                        .record(client, seq, reply.clone(), index.get());
                    reply
                }
                SessionCheck::Remembered(reply) | SessionCheck::Refused(reply) => reply,
            },
        }
    }

    fn query(&self, query: &[u8]) -> Bytes {
        match Envelope::decode(query) {
            Ok(Envelope::Bare(query)) => self.app.query(query, self.clock_ms),
            Ok(Envelope::Timed { now_ms, command }) => {
                self.app.query(command, self.clock_ms.max(now_ms))
            }
            Ok(_) => {
                Reply::error_bytes("ERR sessions are for writes; send the query bare or timed")
            }
            Err(reason) => Reply::error_bytes(&format!("ERR bad envelope: {reason}")),
        }
    }

    fn snapshot(&self, out: &mut Vec<u8>) {
        let start = out.len();
        out.push(ENVELOPE_TAG);
        out.push(MACHINE_SNAPSHOT_VERSION);
        out.extend_from_slice(&self.clock_ms.to_le_bytes());
        self.sessions.snapshot(out);
        let length_at = out.len();
        out.extend_from_slice(&0u64.to_le_bytes());
        self.app.snapshot(out);
        let app_len = (out.len() - length_at - 8) as u64;
        out[length_at..length_at + 8].copy_from_slice(&app_len.to_le_bytes());
        let crc = crc32fast::hash(&out[start..]);
        out.extend_from_slice(&crc.to_le_bytes());
    }

    fn restore(&mut self, snapshot: &[u8]) -> Result<(), crate::apply::RestoreError> {
        let name = A::NAME;
        if snapshot.first() != Some(&ENVELOPE_TAG) {
            let app = A::restore(snapshot).map_err(|e| format!("{name} snapshot: {e}"))?;
            *self = Machine {
                app,
                clock_ms: 0,
                sessions: Sessions::new(self.sessions_capacity()),
            };
            return Ok(());
        }
        let Some((body, crc)) = snapshot.split_last_chunk::<4>() else {
            return Err(format!(
                "{name} snapshot: {}",
                DecodeError::SnapshotTooShort(snapshot.len())
            )
            .into());
        };
        let stored = u32::from_le_bytes(*crc);
        let computed = crc32fast::hash(body);
        if stored != computed {
            return Err(format!(
                "{name} snapshot: {}",
                DecodeError::SnapshotChecksum { stored, computed }
            )
            .into());
        }
        let decode = || -> Result<Machine<A>, DecodeError> {
            let mut reader = Reader::new(&body[1..]);
            let version = reader.u8("version")?;
            if version != MACHINE_SNAPSHOT_VERSION {
                return Err(DecodeError::SnapshotVersion {
                    found: version,
                    expected: MACHINE_SNAPSHOT_VERSION,
                    older: None,
                });
            }
            let clock_ms = reader.u64("clock")?;
            let sessions = Sessions::restore(&mut reader, self.sessions_capacity())?;
            let app_len = reader.u64("app snapshot length")?;
            if app_len != reader.remaining() as u64 {
                return Err(DecodeError::AppLength {
                    announced: app_len,
                    present: reader.remaining(),
                });
            }
            let app = A::restore(reader.rest())?;
            Ok(Machine {
                app,
                clock_ms,
                sessions,
            })
        };
        *self = decode().map_err(|e| format!("{name} snapshot: {e}"))?;
        Ok(())
    }
}

impl<A> Machine<A> {
    fn sessions_capacity(&self) -> usize {
        self.sessions.capacity()
    }
}
