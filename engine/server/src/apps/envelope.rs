//! The envelope around an app command: the leader's time and, for exactly-once writes, the
//! client session and sequence number. Front ends wrap every command they route in one; a bare
//! app command (what native clients send) is still accepted and runs at the replica's log clock.
//!
//! # Encoding, version 1
//! `[tag: u8 = 0xE1][kind: u8][now_ms: u64 LE]` then, by kind:
//!
//! | kind | meaning | rest |
//! |------|---------|------|
//! | 0 | `Timed` | the app command |
//! | 1 | `Session` | `[client: u64 LE][seq: u64 LE]` then the app command |
//! | 2 | `OpenSession` | nothing |
//!
//! The tag 0xE1 is never the first byte of an app command (app command versions stay below
//! 0x80), so a decoder tells an envelope from a bare command by its first byte alone. `now_ms`
//! is the routing node's wall clock in milliseconds since the Unix epoch, chosen once, before
//! the command enters the log: every replica reads the same value.

use super::codec::DecodeError;

/// First byte of every envelope (and of every machine snapshot, see `machine`).
pub const ENVELOPE_TAG: u8 = 0xE1;

const KIND_TIMED: u8 = 0;
const KIND_SESSION: u8 = 1;
const KIND_OPEN_SESSION: u8 = 2;

/// Bytes of the fixed envelope header (tag, kind, time).
pub(crate) const HEADER_BYTES: usize = 10;

/// A decoded envelope, borrowing the app command from the input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Envelope<'a> {
    /// An app command without envelope: runs at the replica's log clock, outside any session.
    Bare(&'a [u8]),
    /// An app command stamped with the leader's time.
    Timed {
        /// The routing node's clock, ms since the Unix epoch.
        now_ms: u64,
        /// The app command.
        command: &'a [u8],
    },
    /// An app command inside a client session: applied at most once per `(client, seq)`.
    Session {
        /// The routing node's clock, ms since the Unix epoch.
        now_ms: u64,
        /// The session id (from [`Envelope::OpenSession`]'s reply).
        client: u64,
        /// The client's sequence number for this command, from 1 up.
        seq: u64,
        /// The app command.
        command: &'a [u8],
    },
    /// Opens a client session; the reply is its id.
    OpenSession {
        /// The routing node's clock, ms since the Unix epoch.
        now_ms: u64,
    },
}

impl<'a> Envelope<'a> {
    /// Appends the encoding to `out` (a `Bare` envelope is the command itself).
    pub fn encode(&self, out: &mut Vec<u8>) {
        let (kind, now_ms) = match *self {
            Envelope::Bare(command) => {
                out.extend_from_slice(command);
                return;
            }
            Envelope::Timed { now_ms, .. } => (KIND_TIMED, now_ms),
            Envelope::Session { now_ms, .. } => (KIND_SESSION, now_ms),
            Envelope::OpenSession { now_ms } => (KIND_OPEN_SESSION, now_ms),
        };
        out.push(ENVELOPE_TAG);
        out.push(kind);
        out.extend_from_slice(&now_ms.to_le_bytes());
        match *self {
            Envelope::Timed { command, .. } => out.extend_from_slice(command),
            Envelope::Session {
                client,
                seq,
                command,
                ..
            } => {
                out.extend_from_slice(&client.to_le_bytes());
                out.extend_from_slice(&seq.to_le_bytes());
                out.extend_from_slice(command);
            }
            Envelope::Bare(_) | Envelope::OpenSession { .. } => {}
        }
    }

    /// The encoding as a new buffer.
    pub fn to_vec(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode(&mut out);
        out
    }

    /// Decodes an envelope, or takes `bytes` as a bare command when they do not start with
    /// [`ENVELOPE_TAG`]. The error says what is wrong.
    pub fn decode(bytes: &'a [u8]) -> Result<Envelope<'a>, DecodeError> {
        if bytes.first() != Some(&ENVELOPE_TAG) {
            return Ok(Envelope::Bare(bytes));
        }
        if bytes.len() < HEADER_BYTES {
            return Err(DecodeError::EnvelopeHeader { found: bytes.len() });
        }
        let kind = bytes[1];
        let now_ms = u64::from_le_bytes(bytes[2..10].try_into().expect("8 bytes"));
        let rest = &bytes[HEADER_BYTES..];
        match kind {
            KIND_TIMED => Ok(Envelope::Timed {
                now_ms,
                command: rest,
            }),
            KIND_SESSION => {
                let Some((ids, command)) = rest.split_first_chunk::<16>() else {
                    return Err(DecodeError::SessionEnvelope { found: rest.len() });
                };
                let (client, seq) = ids.split_at(8);
                Ok(Envelope::Session {
                    now_ms,
                    client: u64::from_le_bytes(client.try_into().expect("8 bytes")),
                    seq: u64::from_le_bytes(seq.try_into().expect("8 bytes")),
                    command,
                })
            }
            KIND_OPEN_SESSION if rest.is_empty() => Ok(Envelope::OpenSession { now_ms }),
            KIND_OPEN_SESSION => Err(DecodeError::OpenSessionBody { found: rest.len() }),
            other => Err(DecodeError::UnknownEnvelope(other)),
        }
    }

    /// The time the envelope carries, if any.
    pub fn now_ms(&self) -> Option<u64> {
        match *self {
            Envelope::Bare(_) => None,
            Envelope::Timed { now_ms, .. }
            | Envelope::Session { now_ms, .. }
            | Envelope::OpenSession { now_ms } => Some(now_ms),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn envelope_strategy() -> impl Strategy<Value = (u8, u64, u64, u64, Vec<u8>)> {
        (
            0u8..3,
            any::<u64>(),
            any::<u64>(),
            any::<u64>(),
            proptest::collection::vec(any::<u8>(), 0..40),
        )
    }

    proptest! {
        #[test]
        fn every_envelope_round_trips((kind, now_ms, client, seq, command) in envelope_strategy()) {
            let envelope = match kind {
                0 => Envelope::Timed { now_ms, command: &command },
                1 => Envelope::Session { now_ms, client, seq, command: &command },
                _ => Envelope::OpenSession { now_ms },
            };
            let bytes = envelope.to_vec();
            prop_assert_eq!(Envelope::decode(&bytes), Ok(envelope));
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..40)) {
            let _ = Envelope::decode(&bytes);
        }
    }

    #[test]
    fn bare_commands_pass_through_and_bad_envelopes_are_refused() {
        assert_eq!(Envelope::decode(&[1, 2, 3]), Ok(Envelope::Bare(&[1, 2, 3])));
        assert_eq!(Envelope::decode(&[]), Ok(Envelope::Bare(&[])));
        assert!(Envelope::decode(&[ENVELOPE_TAG, 0, 1]).is_err());
        let mut unknown = Envelope::OpenSession { now_ms: 1 }.to_vec();
        unknown[1] = 9;
        assert_eq!(
            Envelope::decode(&unknown),
            Err(DecodeError::UnknownEnvelope(9))
        );
        let mut long_open = Envelope::OpenSession { now_ms: 1 }.to_vec();
        long_open.push(0);
        assert!(Envelope::decode(&long_open).is_err());
        let mut short_session = Envelope::Timed {
            now_ms: 1,
            command: &[0; 15],
        }
        .to_vec();
        short_session[1] = KIND_SESSION;
        assert!(Envelope::decode(&short_session).is_err());
    }
}
