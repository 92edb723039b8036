//! A batch: consecutive log entries of one term, carried as the exact bytes the log stores.
//!
//! The batch is lockstep's unit of work everywhere: the leader gathers proposals into one, the log
//! writes one record per batch, the network sends batches, and followers append them without
//! re-encoding. Per-entry work is a copy into the payload, never an allocation or a message.
//!
//! # Payload encoding (also in `docs/FORMATS.md`)
//! The payload is the entries back to back, each as a little-endian `u32` length followed by that
//! many bytes. A batch of entries `b"ab"` and `b""` is the 10 bytes
//! `02 00 00 00 61 62 00 00 00 00`.
//!
//! Invariants of a `Batch` (checked by [`Batch::new`]): `entry_count >= 1`, and the payload
//! holds exactly `entry_count` well-formed entries with nothing left over.

use std::fmt;

use bytes::{BufMut, Bytes, BytesMut};

use crate::types::{LogIndex, Term};

/// Bytes of the length prefix in front of each entry.
pub const ENTRY_PREFIX_BYTES: usize = 4;

/// The largest single entry lockstep accepts (16 MiB).
pub const ENTRY_BYTES_MAX: usize = 16 << 20;

/// What a batch holds, so the apply stage knows how to treat its entries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum BatchKind {
    /// Client commands for the state machine.
    Normal = 0,
    /// One empty entry a new leader appends to commit entries of earlier terms.
    Noop = 1,
    /// One entry holding an encoded cluster membership (see `raft::membership`).
    Membership = 2,
}

impl BatchKind {
    /// Decodes the on-disk / on-wire byte.
    pub fn from_u8(value: u8) -> Option<BatchKind> {
        match value {
            0 => Some(BatchKind::Normal),
            1 => Some(BatchKind::Noop),
            2 => Some(BatchKind::Membership),
            _ => None,
        }
    }
}

/// Why a payload is not a valid batch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BatchError {
    /// A batch must hold at least one entry.
    Empty,
    /// An entry's length prefix runs past the end of the payload (at payload byte `offset`).
    Truncated {
        /// Payload byte offset of the entry.
        offset: usize,
    },
    /// An entry is larger than [`ENTRY_BYTES_MAX`].
    EntryTooLarge {
        /// Payload byte offset of the entry.
        offset: usize,
        /// Its length prefix.
        entry_bytes: usize,
    },
    /// The payload holds a different number of entries than the header says.
    CountMismatch {
        /// Entries the header claims.
        expected: u32,
        /// Entries the payload holds.
        found: u32,
    },
}

impl fmt::Display for BatchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BatchError::Empty => write!(f, "batch holds no entries"),
            BatchError::Truncated { offset } => {
                write!(f, "entry at payload offset {offset} runs past the payload")
            }
            BatchError::EntryTooLarge {
                offset,
                entry_bytes,
            } => write!(
                f,
                "entry at payload offset {offset} is {entry_bytes} bytes (max {ENTRY_BYTES_MAX})"
            ),
            BatchError::CountMismatch { expected, found } => {
                write!(f, "header says {expected} entries, payload holds {found}")
            }
        }
    }
}

impl std::error::Error for BatchError {}

/// Consecutive entries `first_index ..= last_index()` of one term.
///
/// Cloning is cheap: the payload is reference counted.
#[derive(Clone, PartialEq, Eq)]
pub struct Batch {
    term: Term,
    first_index: LogIndex,
    kind: BatchKind,
    entry_count: u32,
    payload: Bytes,
}

impl fmt::Debug for Batch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Batch({:?} {}..={} {} {}B)",
            self.kind,
            self.first_index,
            self.last_index(),
            self.term,
            self.payload.len()
        )
    }
}

impl Batch {
    /// Builds a batch from an encoded payload, verifying that it holds exactly `entry_count`
    /// entries. Use this for bytes from outside (disk, network).
    pub fn new(
        term: Term,
        first_index: LogIndex,
        kind: BatchKind,
        entry_count: u32,
        payload: Bytes,
    ) -> Result<Batch, BatchError> {
        let found = count_entries(&payload)?;
        if found == 0 {
            return Err(BatchError::Empty);
        }
        if found != entry_count {
            return Err(BatchError::CountMismatch {
                expected: entry_count,
                found,
            });
        }
        assert!(first_index.get() >= 1, "batch starts at index 0");
        Ok(Batch {
            term,
            first_index,
            kind,
            entry_count,
            payload,
        })
    }

    /// Builds a batch of one entry.
    pub fn single(term: Term, index: LogIndex, kind: BatchKind, entry: &[u8]) -> Batch {
        let mut builder = BatchBuilder::with_capacity(ENTRY_PREFIX_BYTES + entry.len());
        builder.push(entry);
        builder.finish(term, index, kind)
    }

    /// The term every entry of the batch was created in.
    #[inline]
    pub fn term(&self) -> Term {
        self.term
    }

    /// What the entries are.
    #[inline]
    pub fn kind(&self) -> BatchKind {
        self.kind
    }

    /// Index of the first entry.
    #[inline]
    pub fn first_index(&self) -> LogIndex {
        self.first_index
    }

    /// Index of the last entry.
    #[inline]
    pub fn last_index(&self) -> LogIndex {
        self.first_index.plus(self.entry_count as u64 - 1)
    }

    /// Number of entries (at least 1).
    #[inline]
    pub fn entry_count(&self) -> u32 {
        self.entry_count
    }

    /// The encoded entries (see the module docs).
    #[inline]
    pub fn payload(&self) -> &Bytes {
        &self.payload
    }

    /// Whether `index` falls within this batch.
    #[inline]
    pub fn contains(&self, index: LogIndex) -> bool {
        self.first_index <= index && index <= self.last_index()
    }

    /// The entries in order, as borrowed slices.
    pub fn entries(&self) -> Entries<'_> {
        Entries::new(&self.payload, self.entry_count)
    }

    /// The entries `from ..= last_index()` as a new batch sharing this one's memory.
    ///
    /// Example: a batch of indexes 10..=14 sliced from 12 gives 12..=14 (3 entries).
    pub fn suffix_from(&self, from: LogIndex) -> Batch {
        assert!(self.contains(from), "suffix_from {from} outside {:?}", self);
        let skip = (from.get() - self.first_index.get()) as u32;
        let offset = self.byte_offset_of(skip);
        Batch {
            term: self.term,
            first_index: from,
            kind: self.kind,
            entry_count: self.entry_count - skip,
            payload: self.payload.slice(offset..),
        }
    }

    /// The entries `first_index() ..= to` as a new batch sharing this one's memory.
    ///
    /// Example: a batch of indexes 10..=14 cut at 11 gives 10..=11 (2 entries).
    pub fn prefix_to(&self, to: LogIndex) -> Batch {
        assert!(self.contains(to), "prefix_to {to} outside {:?}", self);
        let keep = (to.get() - self.first_index.get() + 1) as u32;
        let offset = self.byte_offset_of(keep);
        Batch {
            term: self.term,
            first_index: self.first_index,
            kind: self.kind,
            entry_count: keep,
            payload: self.payload.slice(..offset),
        }
    }

    /// Byte offset in the payload where entry number `n` (0-based) starts; `n == entry_count`
    /// gives the payload length.
    fn byte_offset_of(&self, n: u32) -> usize {
        entry_offset(&self.payload, n)
    }
}

/// Byte offset where entry number `n` (0-based) starts in an encoded payload that holds at least
/// `n` entries; `n` equal to the entry count gives the payload length.
pub fn entry_offset(payload: &[u8], n: u32) -> usize {
    let mut offset = 0usize;
    for _ in 0..n {
        offset += ENTRY_PREFIX_BYTES + read_len(payload, offset);
    }
    offset
}

#[inline]
fn read_len(payload: &[u8], offset: usize) -> usize {
    let bytes: [u8; 4] = payload[offset..offset + ENTRY_PREFIX_BYTES]
        .try_into()
        .expect("slice of 4");
    u32::from_le_bytes(bytes) as usize
}

/// Counts the entries of an encoded payload, checking every length prefix.
pub fn count_entries(payload: &[u8]) -> Result<u32, BatchError> {
    let mut offset = 0usize;
    let mut count = 0u32;
    while offset < payload.len() {
        if payload.len() - offset < ENTRY_PREFIX_BYTES {
            return Err(BatchError::Truncated { offset });
        }
        let len = read_len(payload, offset);
        if len > ENTRY_BYTES_MAX {
            return Err(BatchError::EntryTooLarge {
                offset,
                entry_bytes: len,
            });
        }
        if payload.len() - offset - ENTRY_PREFIX_BYTES < len {
            return Err(BatchError::Truncated { offset });
        }
        offset += ENTRY_PREFIX_BYTES + len;
        count += 1;
    }
    Ok(count)
}

/// Iterator over the entries of a batch.
pub struct Entries<'a> {
    rest: &'a [u8],
    remaining: u32,
}

impl<'a> Entries<'a> {
    /// Iterates the first `entry_count` entries of an encoded payload that was already verified
    /// (by [`Batch::new`] or a record checksum); a payload holding fewer entries panics.
    pub fn new(payload: &'a [u8], entry_count: u32) -> Entries<'a> {
        Entries {
            rest: payload,
            remaining: entry_count,
        }
    }
}

impl<'a> Iterator for Entries<'a> {
    type Item = &'a [u8];

    #[inline]
    fn next(&mut self) -> Option<&'a [u8]> {
        if self.remaining == 0 {
            return None;
        }
        let len = read_len(self.rest, 0);
        let entry = &self.rest[ENTRY_PREFIX_BYTES..ENTRY_PREFIX_BYTES + len];
        self.rest = &self.rest[ENTRY_PREFIX_BYTES + len..];
        self.remaining -= 1;
        Some(entry)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.remaining as usize, Some(self.remaining as usize))
    }
}

impl ExactSizeIterator for Entries<'_> {}

/// Gathers entries into a payload; [`BatchBuilder::finish`] turns it into a [`Batch`].
#[derive(Default)]
pub struct BatchBuilder {
    buffer: BytesMut,
    entry_count: u32,
}

impl BatchBuilder {
    /// A builder whose buffer holds `payload_bytes` before it grows.
    pub fn with_capacity(payload_bytes: usize) -> BatchBuilder {
        BatchBuilder {
            buffer: BytesMut::with_capacity(payload_bytes),
            entry_count: 0,
        }
    }

    /// Appends one entry (a copy).
    #[inline]
    pub fn push(&mut self, entry: &[u8]) {
        assert!(
            entry.len() <= ENTRY_BYTES_MAX,
            "entry of {} bytes exceeds ENTRY_BYTES_MAX",
            entry.len()
        );
        self.buffer.put_u32_le(entry.len() as u32);
        self.buffer.extend_from_slice(entry);
        self.entry_count += 1;
    }

    /// Appends already-encoded entries (a payload as described in the module docs).
    pub fn push_encoded(&mut self, payload: &[u8], entry_count: u32) {
        debug_assert_eq!(count_entries(payload), Ok(entry_count));
        self.buffer.extend_from_slice(payload);
        self.entry_count += entry_count;
    }

    /// Entries gathered so far.
    #[inline]
    pub fn entry_count(&self) -> u32 {
        self.entry_count
    }

    /// Payload bytes gathered so far.
    #[inline]
    pub fn payload_bytes(&self) -> usize {
        self.buffer.len()
    }

    /// Bytes the buffer holds before it must grow.
    #[inline]
    pub fn capacity(&self) -> usize {
        self.buffer.capacity()
    }

    /// Whether nothing has been pushed.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.entry_count == 0
    }

    /// Seals the gathered entries into a batch starting at `first_index`, leaving the builder
    /// empty. A payload that fills at least half the buffer takes the buffer (no copy; the
    /// builder keeps only the spare capacity after it); a smaller one is copied into an
    /// allocation of its own size and the builder keeps its whole buffer for the next batch.
    /// Batches live in the in-memory log until a snapshot, so a 20-byte batch must not pin a
    /// buffer of several KiB.
    pub fn finish(&mut self, term: Term, first_index: LogIndex, kind: BatchKind) -> Batch {
        assert!(self.entry_count > 0, "finish on an empty BatchBuilder");
        assert!(first_index.get() >= 1, "batch starts at index 0");
        let payload = if self.buffer.len() * 2 < self.buffer.capacity() {
            let payload = Bytes::copy_from_slice(&self.buffer);
            self.buffer.clear();
            payload
        } else {
            self.buffer.split().freeze()
        };
        let entry_count = std::mem::take(&mut self.entry_count);
        Batch {
            term,
            first_index,
            kind,
            entry_count,
            payload,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_small_batch_gets_its_own_allocation_and_the_builder_keeps_its_buffer() {
        let mut builder = BatchBuilder::with_capacity(4096);
        builder.push(b"tiny");
        let small = builder.finish(Term(1), LogIndex(1), BatchKind::Normal);
        assert_eq!(small.entries().collect::<Vec<_>>(), vec![&b"tiny"[..]]);
        assert!(
            builder.capacity() >= 4096,
            "the buffer stays for the next batch"
        );
        assert!(builder.is_empty());

        // A batch that fills its buffer takes it (no copy).
        let mut builder = BatchBuilder::with_capacity(64);
        builder.push(&[1u8; 40]);
        let start = builder.buffer.as_ptr();
        let full = builder.finish(Term(1), LogIndex(2), BatchKind::Normal);
        assert_eq!(full.payload().as_ptr(), start);
        assert_eq!(full.entries().next(), Some(&[1u8; 40][..]));
    }

    fn batch_of(entries: &[&[u8]], first: u64) -> Batch {
        let mut builder = BatchBuilder::default();
        for entry in entries {
            builder.push(entry);
        }
        builder.finish(Term(2), LogIndex(first), BatchKind::Normal)
    }

    #[test]
    fn encoding_matches_the_documented_bytes() {
        let batch = batch_of(&[b"ab", b""], 1);
        assert_eq!(&batch.payload()[..], &[2, 0, 0, 0, b'a', b'b', 0, 0, 0, 0]);
        assert_eq!(batch.last_index(), LogIndex(2));
    }

    #[test]
    fn slicing_keeps_the_right_entries() {
        let batch = batch_of(&[b"a", b"bb", b"ccc", b"dddd", b"e"], 10);
        let suffix = batch.suffix_from(LogIndex(12));
        assert_eq!(suffix.first_index(), LogIndex(12));
        assert_eq!(
            suffix.entries().collect::<Vec<_>>(),
            vec![&b"ccc"[..], b"dddd", b"e"]
        );
        let prefix = batch.prefix_to(LogIndex(11));
        assert_eq!(prefix.last_index(), LogIndex(11));
        assert_eq!(prefix.entries().collect::<Vec<_>>(), vec![&b"a"[..], b"bb"]);
    }

    #[test]
    fn malformed_payloads_are_refused() {
        assert_eq!(
            Batch::new(Term(1), LogIndex(1), BatchKind::Normal, 0, Bytes::new()),
            Err(BatchError::Empty)
        );
        assert_eq!(
            count_entries(&[5, 0, 0, 0, 1]),
            Err(BatchError::Truncated { offset: 0 })
        );
        assert_eq!(
            count_entries(&[0, 0, 0]),
            Err(BatchError::Truncated { offset: 0 })
        );
        let ok = batch_of(&[b"x"], 1);
        assert_eq!(
            Batch::new(
                Term(1),
                LogIndex(1),
                BatchKind::Normal,
                2,
                ok.payload().clone()
            ),
            Err(BatchError::CountMismatch {
                expected: 2,
                found: 1
            })
        );
    }

    proptest! {
        #[test]
        fn roundtrip(entries in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..40), 1..20), cut in 0usize..20) {
            let refs: Vec<&[u8]> = entries.iter().map(|e| e.as_slice()).collect();
            let batch = batch_of(&refs, 5);
            let again = Batch::new(batch.term(), batch.first_index(), batch.kind(), batch.entry_count(), batch.payload().clone()).unwrap();
            prop_assert_eq!(&again, &batch);
            prop_assert_eq!(batch.entries().collect::<Vec<_>>(), refs.clone());
            let at = LogIndex(5 + (cut % entries.len()) as u64);
            let prefix = batch.prefix_to(at);
            let suffix_start = at.next();
            let suffix = batch.contains(suffix_start).then(|| batch.suffix_from(suffix_start));
            let mut joined: Vec<&[u8]> = prefix.entries().collect();
            if let Some(suffix) = &suffix {
                joined.extend(suffix.entries());
            }
            prop_assert_eq!(joined, refs);
        }
    }
}
