//! The journal example: treats every command as an opaque entry, counts the entries and folds
//! them into an order-sensitive 64-bit hash. This is the benchmark app: applying an entry costs a
//! few multiplications per 8 bytes and allocates nothing.
//!
//! - `apply` accepts any bytes and replies [`Reply::Ok`] (static bytes).
//! - `query` with an empty query replies `Value` holding the [`JournalDigest`] (count then hash,
//!   each `u64` LE); any other query gets an `Error`.
//! - Snapshot: `[version: u8 = 1][count: u64 LE][hash: u64 LE]`.
//!
//! Two replicas that applied the same entries in the same order have equal digests; swapping two
//! different entries changes the hash (with overwhelming probability), so comparing digests across
//! replicas checks both content and order.

use bytes::Bytes;

use crate::apply::StateMachine;
use crate::types::LogIndex;

use super::codec::DecodeError;
use super::reply::Reply;

/// The snapshot encoding version this code writes and reads.
pub const JOURNAL_SNAPSHOT_VERSION: u8 = 1;

/// Bytes of an encoded [`JournalDigest`].
pub const JOURNAL_DIGEST_BYTES: usize = 16;

/// How many entries were applied, and the hash of all of them in order.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct JournalDigest {
    /// Entries applied.
    pub count: u64,
    /// The order-sensitive hash of every entry applied (0 before the first).
    pub hash: u64,
}

/// One mixing round: a multiply, a rotate and a second multiply, so every input bit reaches
/// every output bit.
#[inline]
fn mix(value: u64) -> u64 {
    let value = value.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    (value ^ value.rotate_right(29)).wrapping_mul(0xBF58_476D_1CE4_E5B9)
}

impl JournalDigest {
    /// Folds one more entry into the digest: its length first (so entry boundaries count), then
    /// its bytes in 8-byte little-endian words, the last one zero-padded.
    #[inline]
    pub fn absorb(&mut self, entry: &[u8]) {
        let mut hash = mix(self.hash ^ entry.len() as u64);
        let mut words = entry.chunks_exact(8);
        for word in &mut words {
            let word = u64::from_le_bytes(word.try_into().expect("chunks_exact(8)"));
            hash = mix(hash ^ word);
        }
        let tail = words.remainder();
        if !tail.is_empty() {
            let mut padded = [0u8; 8];
            padded[..tail.len()].copy_from_slice(tail);
            hash = mix(hash ^ u64::from_le_bytes(padded));
        }
        self.hash = hash;
        self.count += 1;
    }

    /// The 16-byte encoding: count then hash, each `u64` LE.
    pub fn to_bytes(&self) -> [u8; JOURNAL_DIGEST_BYTES] {
        let mut out = [0u8; JOURNAL_DIGEST_BYTES];
        out[..8].copy_from_slice(&self.count.to_le_bytes());
        out[8..].copy_from_slice(&self.hash.to_le_bytes());
        out
    }

    /// Decodes the 16-byte encoding.
    pub fn from_bytes(bytes: &[u8]) -> Result<JournalDigest, DecodeError> {
        let raw: [u8; JOURNAL_DIGEST_BYTES] = bytes
            .try_into()
            .map_err(|_| DecodeError::DigestLength(bytes.len()))?;
        let (count, hash) = raw.split_at(8);
        Ok(JournalDigest {
            count: u64::from_le_bytes(count.try_into().expect("8 bytes")),
            hash: u64::from_le_bytes(hash.try_into().expect("8 bytes")),
        })
    }
}

/// The journal state machine.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Journal {
    digest: JournalDigest,
}

impl Journal {
    /// An empty journal.
    pub fn new() -> Journal {
        Journal::default()
    }

    /// The current digest.
    pub fn digest(&self) -> JournalDigest {
        self.digest
    }
}

impl StateMachine for Journal {
    fn apply(&mut self, _index: LogIndex, command: &[u8]) -> Bytes {
        self.digest.absorb(command);
        Reply::ok_bytes()
    }

    fn query(&self, query: &[u8]) -> Bytes {
        if query.is_empty() {
            Reply::value_bytes(&self.digest.to_bytes())
        } else {
            Reply::error_bytes("the journal answers only the empty query (its digest)")
        }
    }

    fn snapshot(&self, out: &mut Vec<u8>) {
        out.push(JOURNAL_SNAPSHOT_VERSION);
        out.extend_from_slice(&self.digest.to_bytes());
    }

    fn restore(&mut self, snapshot: &[u8]) -> Result<(), crate::apply::RestoreError> {
        match snapshot.split_first() {
            Some((&JOURNAL_SNAPSHOT_VERSION, digest)) => {
                self.digest = JournalDigest::from_bytes(digest)
                    .map_err(|reason| format!("journal snapshot: {reason}"))?;
                Ok(())
            }
            Some((version, _)) => Err(format!(
                "journal snapshot version {version} is not supported (expected {JOURNAL_SNAPSHOT_VERSION})"
            )
            .into()),
            None => Err("journal snapshot is empty".into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest_of(entries: &[&[u8]]) -> JournalDigest {
        let mut journal = Journal::new();
        for (position, entry) in entries.iter().enumerate() {
            assert_eq!(
                journal.apply(LogIndex(position as u64 + 1), entry),
                Reply::ok_bytes()
            );
        }
        journal.digest()
    }

    #[test]
    fn the_digest_depends_on_order_content_and_boundaries() {
        let base = digest_of(&[b"alpha", b"beta-entry-longer-than-8"]);
        assert_eq!(base.count, 2);
        assert_eq!(base, digest_of(&[b"alpha", b"beta-entry-longer-than-8"]));
        assert_ne!(base, digest_of(&[b"beta-entry-longer-than-8", b"alpha"]));
        assert_ne!(base, digest_of(&[b"alpha", b"beta-entry-longer-than-9"]));
        assert_ne!(digest_of(&[b"ab", b"c"]), digest_of(&[b"a", b"bc"]));
        assert_ne!(digest_of(&[b""]), digest_of(&[b"\0"]));
        assert_ne!(digest_of(&[b""]), JournalDigest::default());
    }

    #[test]
    fn query_returns_the_digest_and_refuses_other_queries() {
        let mut journal = Journal::new();
        journal.apply(LogIndex(1), b"x");
        let Reply::Value(bytes) = Reply::decode(&journal.query(b"")).unwrap() else {
            panic!("expected a value");
        };
        assert_eq!(JournalDigest::from_bytes(&bytes), Ok(journal.digest()));
        assert!(matches!(
            Reply::decode(&journal.query(b"?")).unwrap(),
            Reply::Error(_)
        ));
    }

    #[test]
    fn snapshot_round_trips_and_refuses_garbage() {
        let mut journal = Journal::new();
        journal.apply(LogIndex(1), b"entry");
        let mut snapshot = Vec::new();
        journal.snapshot(&mut snapshot);
        let mut restored = Journal::new();
        restored.restore(&snapshot).unwrap();
        assert_eq!(restored, journal);
        assert!(restored.restore(&snapshot[..5]).is_err());
        assert!(restored.restore(&[]).is_err());
        assert!(restored.restore(&[2; 17]).is_err());
        assert_eq!(
            restored, journal,
            "a failed restore must leave the state alone"
        );
    }
}
