//! The little-endian building blocks every app encoding uses (commands, envelopes, snapshots):
//! a byte string is a `u32` LE length then the bytes; numbers are fixed-width LE. Decoding is
//! bounds-checked and returns an error naming the field that is wrong, never panics.

use std::fmt;

/// Why bytes do not decode as an app's command, envelope or snapshot: the field at fault and
/// what is wrong with it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum DecodeError {
    /// A length prefix is cut short.
    LengthCut {
        /// The field.
        field: &'static str,
    },
    /// A byte string announces more bytes than are left.
    Announced {
        /// The field.
        field: &'static str,
        /// Bytes announced.
        announced: usize,
        /// Bytes present.
        present: usize,
    },
    /// A list announces more items than the bytes left can hold.
    Items {
        /// The field.
        field: &'static str,
        /// Items announced.
        count: usize,
        /// Bytes left.
        left: usize,
    },
    /// A fixed-width field is cut short.
    Short {
        /// The field.
        field: &'static str,
        /// Its width.
        expected: usize,
        /// Bytes left.
        left: usize,
    },
    /// Bytes follow the last field.
    Trailing(usize),
    /// A command shorter than its version and op bytes.
    CommandTooShort(usize),
    /// A command version this code does not read.
    CommandVersion {
        /// The version found.
        found: u8,
        /// The version read.
        expected: u8,
    },
    /// An op this app does not know.
    UnknownOp(u8),
    /// A snapshot version this code does not read.
    SnapshotVersion {
        /// The version found.
        found: u8,
        /// The current version.
        expected: u8,
        /// An older version also read, if any.
        older: Option<u8>,
    },
    /// A key, lock or account listed out of order in a snapshot.
    OutOfOrder {
        /// What is listed (`key`, `lock`, `account`).
        what: &'static str,
        /// Its position.
        position: u64,
    },
    /// Set flags with unknown bits.
    UnknownSetFlags(u8),
    /// Set flags that ask for both NX and XX.
    ConflictingSetFlags,
    /// A put of many pairs announces more than the bytes left can hold.
    Pairs {
        /// Pairs announced.
        count: usize,
        /// Bytes left.
        left: usize,
    },
    /// A lock whose token is outside `1..=last_token`.
    LockToken {
        /// The lock's position.
        position: u64,
        /// Its token.
        token: u64,
        /// The last token handed out.
        last_token: u64,
    },
    /// An account with a negative balance.
    NegativeBalance {
        /// The account's position.
        position: u64,
        /// Its balance.
        balance: i64,
    },
    /// The bank's total overflows at an account.
    TotalOverflow {
        /// The account's position.
        position: u64,
    },
    /// An envelope shorter than its header.
    EnvelopeHeader {
        /// Bytes found.
        found: usize,
    },
    /// A session envelope without its client id and sequence.
    SessionEnvelope {
        /// Bytes found after the header.
        found: usize,
    },
    /// An open-session envelope with a body.
    OpenSessionBody {
        /// Bytes of the body.
        found: usize,
    },
    /// An envelope kind this code does not know.
    UnknownEnvelope(u8),
    /// More sessions than this node keeps.
    TooManySessions {
        /// Sessions in the snapshot.
        count: usize,
        /// Sessions this node keeps at most.
        capacity: usize,
    },
    /// A session listed out of order.
    SessionOrder {
        /// Its position.
        position: usize,
        /// Its id.
        id: u64,
    },
    /// Two sessions last used at the same log index.
    SessionUse {
        /// The index.
        used_at: u64,
    },
    /// A journal digest of the wrong length.
    DigestLength(usize),
    /// The app's part of a machine snapshot is not the length announced.
    AppLength {
        /// Length announced.
        announced: u64,
        /// Bytes that follow.
        present: usize,
    },
    /// A snapshot too short to hold its checksum.
    SnapshotTooShort(usize),
    /// A snapshot whose checksum does not match.
    SnapshotChecksum {
        /// The checksum stored.
        stored: u32,
        /// The checksum of the contents.
        computed: u32,
    },
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            DecodeError::LengthCut { field } => write!(f, "{field}: length prefix cut short"),
            DecodeError::Announced {
                field,
                announced,
                present,
            } => write!(f, "{field}: {announced} bytes announced, {present} present"),
            DecodeError::Items { field, count, left } => {
                write!(
                    f,
                    "{field}: {count} items announced, only {left} bytes left"
                )
            }
            DecodeError::Short {
                field,
                expected,
                left,
            } => write!(f, "{field}: {expected} bytes expected, {left} left"),
            DecodeError::Trailing(bytes) => {
                write!(f, "{bytes} unexpected bytes after the last field")
            }
            DecodeError::CommandTooShort(len) => {
                write!(f, "a command needs at least 2 bytes, found {len}")
            }
            DecodeError::CommandVersion { found, expected } => write!(
                f,
                "command version {found} is not supported (expected {expected})"
            ),
            DecodeError::UnknownOp(op) => write!(f, "unknown op {op}"),
            DecodeError::SnapshotVersion {
                found,
                expected,
                older,
            } => match older {
                None => write!(f, "version {found} is not supported (expected {expected})"),
                Some(older) => write!(
                    f,
                    "version {found} is not supported (expected {older} or {expected})"
                ),
            },
            DecodeError::OutOfOrder { what, position } => {
                write!(f, "{what} {position} is out of order")
            }
            DecodeError::UnknownSetFlags(flags) => write!(f, "unknown set flags {flags:#04x}"),
            DecodeError::ConflictingSetFlags => f.write_str("set flags ask for both NX and XX"),
            DecodeError::Pairs { count, left } => {
                write!(f, "pairs: {count} announced, only {left} bytes left")
            }
            DecodeError::LockToken {
                position,
                token,
                last_token,
            } => write!(
                f,
                "lock {position} has token {token}, outside 1..={last_token}"
            ),
            DecodeError::NegativeBalance { position, balance } => {
                write!(f, "account {position} has a negative balance {balance}")
            }
            DecodeError::TotalOverflow { position } => {
                write!(f, "the total overflows at account {position}")
            }
            DecodeError::EnvelopeHeader { found } => write!(
                f,
                "envelope header needs {} bytes, found {found}",
                super::envelope::HEADER_BYTES
            ),
            DecodeError::SessionEnvelope { found } => write!(
                f,
                "session envelope needs 16 bytes of client id and sequence, found {found}"
            ),
            DecodeError::OpenSessionBody { found } => write!(
                f,
                "an open-session envelope takes no body, found {found} bytes"
            ),
            DecodeError::UnknownEnvelope(kind) => write!(f, "unknown envelope kind {kind}"),
            DecodeError::TooManySessions { count, capacity } => write!(
                f,
                "{count} sessions, but this node keeps at most {capacity}"
            ),
            DecodeError::SessionOrder { position, id } => {
                write!(f, "session {position} (id {id}) is out of order")
            }
            DecodeError::SessionUse { used_at } => {
                write!(f, "two sessions were last used at index {used_at}")
            }
            DecodeError::DigestLength(len) => write!(
                f,
                "a journal digest takes {} bytes, found {len}",
                super::journal::JOURNAL_DIGEST_BYTES
            ),
            DecodeError::AppLength { announced, present } => write!(
                f,
                "app snapshot length {announced} but {present} bytes follow"
            ),
            DecodeError::SnapshotTooShort(len) => write!(f, "{len} bytes is too short"),
            DecodeError::SnapshotChecksum { stored, computed } => write!(
                f,
                "checksum {stored:#010x} stored, {computed:#010x} computed"
            ),
        }
    }
}

impl std::error::Error for DecodeError {}

/// Appends a length-prefixed byte string.
///
/// # Panics
/// If `value` is longer than `u32::MAX` bytes (no command or snapshot field can be: frames and
/// entries are far smaller).
pub(crate) fn put_bytes(out: &mut Vec<u8>, value: &[u8]) {
    let len = u32::try_from(value.len()).expect("app field longer than u32::MAX bytes");
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(value);
}

/// Appends a count-prefixed list of byte strings.
pub(crate) fn put_list(out: &mut Vec<u8>, values: &[&[u8]]) {
    let count = u32::try_from(values.len()).expect("app list longer than u32::MAX items");
    out.extend_from_slice(&count.to_le_bytes());
    for value in values {
        put_bytes(out, value);
    }
}

/// Reads the fields of an encoding, front to back.
pub(crate) struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    /// A reader over `bytes`.
    pub(crate) fn new(bytes: &'a [u8]) -> Reader<'a> {
        Reader { rest: bytes }
    }

    /// Bytes not read yet.
    pub(crate) fn remaining(&self) -> usize {
        self.rest.len()
    }

    /// A length-prefixed byte string.
    pub(crate) fn bytes(&mut self, what: &'static str) -> Result<&'a [u8], DecodeError> {
        let Some((len, rest)) = self.rest.split_first_chunk::<4>() else {
            return Err(DecodeError::LengthCut { field: what });
        };
        let len = u32::from_le_bytes(*len) as usize;
        if rest.len() < len {
            return Err(DecodeError::Announced {
                field: what,
                announced: len,
                present: rest.len(),
            });
        }
        let (value, rest) = rest.split_at(len);
        self.rest = rest;
        Ok(value)
    }

    /// A count-prefixed list of byte strings. The count is checked against the bytes left
    /// before anything is allocated.
    pub(crate) fn list(&mut self, what: &'static str) -> Result<Vec<&'a [u8]>, DecodeError> {
        let count = self.u32(what)? as usize;
        if count > self.rest.len() / 4 {
            return Err(DecodeError::Items {
                field: what,
                count,
                left: self.rest.len(),
            });
        }
        (0..count).map(|_| self.bytes(what)).collect()
    }

    /// The rest of the input, whatever it holds.
    pub(crate) fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.rest)
    }

    fn chunk<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], DecodeError> {
        let Some((raw, rest)) = self.rest.split_first_chunk::<N>() else {
            return Err(DecodeError::Short {
                field: what,
                expected: N,
                left: self.rest.len(),
            });
        };
        self.rest = rest;
        Ok(*raw)
    }

    /// One byte.
    pub(crate) fn u8(&mut self, what: &'static str) -> Result<u8, DecodeError> {
        Ok(self.chunk::<1>(what)?[0])
    }

    /// A `u32`, LE.
    pub(crate) fn u32(&mut self, what: &'static str) -> Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(self.chunk(what)?))
    }

    /// A `u64`, LE.
    pub(crate) fn u64(&mut self, what: &'static str) -> Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(self.chunk(what)?))
    }

    /// An `i64`, LE.
    pub(crate) fn i64(&mut self, what: &'static str) -> Result<i64, DecodeError> {
        Ok(i64::from_le_bytes(self.chunk(what)?))
    }

    /// Checks that nothing is left and returns `value`.
    pub(crate) fn finish<T>(self, value: T) -> Result<T, DecodeError> {
        if self.rest.is_empty() {
            Ok(value)
        } else {
            Err(DecodeError::Trailing(self.rest.len()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_round_trip_and_short_input_is_refused() {
        let mut out = Vec::new();
        put_bytes(&mut out, b"key");
        put_list(&mut out, &[b"a", b"", b"ccc"]);
        out.extend_from_slice(&7u64.to_le_bytes());
        let mut reader = Reader::new(&out);
        assert_eq!(reader.bytes("k"), Ok(&b"key"[..]));
        assert_eq!(reader.list("l"), Ok(vec![&b"a"[..], b"", b"ccc"]));
        assert_eq!(reader.u64("n"), Ok(7));
        assert_eq!(reader.finish(()), Ok(()));
        for cut in 0..out.len() {
            let mut reader = Reader::new(&out[..cut]);
            let whole = reader
                .bytes("k")
                .and_then(|_| reader.list("l"))
                .and_then(|_| reader.u64("n"));
            assert!(whole.is_err(), "cut at {cut} decoded");
        }
        let huge_count = [0xff, 0xff, 0xff, 0xff];
        let err = Reader::new(&huge_count).list("l").unwrap_err();
        assert_eq!(
            err,
            DecodeError::Items {
                field: "l",
                count: u32::MAX as usize,
                left: 0
            }
        );
        assert_eq!(
            err.to_string(),
            "l: 4294967295 items announced, only 0 bytes left"
        );
        let err = Reader::new(&[1, 2]).u64("n").unwrap_err();
        assert_eq!(err.to_string(), "n: 8 bytes expected, 2 left");
    }
}
