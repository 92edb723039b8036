//! Log records: encoding, decoding and verification, as pure functions over byte slices.
//!
//! A record is a 64-byte header followed by a payload, padded with unspecified bytes to a multiple
//! of [`RECORD_ALIGN`]. Every byte is described in `docs/FORMATS.md`; in short:
//!
//! ```text
//! 0..4    magic "LSR1"           \
//! 4       format version (1)      |
//! 5       kind (0 normal, 1 noop, |  the "wire head": identical on every replica,
//!         2 membership, 0x80      |  covered by `crc` together with the payload
//!         truncate marker)        |
//! 6..8    reserved, zero          |
//! 8..16   term                    |
//! 16..24  first index             |
//! 24..28  entry count             |
//! 28..32  payload bytes          /
//! 32..36  crc: CRC32 of bytes 0..32, then of the payload
//! 36..40  prev_crc: the link to the previous record of this replica's log (the chain)
//! 40..48  seq: this replica's record sequence number (+1 per record, never reused)
//! 48..56  synced_seq: highest seq known durable when this record was written (a witness)
//! 56..60  seal: CRC32 of bytes 0..56 xor the nonce's high half (zero in a version 1 segment)
//! 60..64  header_crc: CRC32 of bytes 0..56 xor the nonce's low half (in a version 1 segment:
//!         CRC32 of bytes 0..60)
//! ```
//!
//! Bytes `0..36` plus the payload are what the network carries: a follower verifies `crc` and
//! writes the same bytes, filling in its own chain fields (`prev_crc`, `seq`, `synced_seq`,
//! `seal`, `header_crc`), which costs a CRC over the header instead of a pass over the
//! payload.
//!
//! **Binding to the log.** Bytes 36..64 depend on the segment holding the record ([`Seal`],
//! from the segment header): in a version 2 segment, `seal` and `header_crc` are the CRC32 of
//! the header's first 56 bytes masked with the two halves of the segment's secret random
//! nonce, and `prev_crc` is the previous record's `header_crc`, which covers its seq. A record can then
//! only be written by this log: a client that stores bytes forming a record cannot compute
//! them (the nonce never leaves the segment file), so such bytes, left in a recycled segment,
//! never pass for a record; and a stale record whose predecessor was identical on the wire to
//! a new record does not chain onto the new one. Version 1 segments (older logs) are still
//! read: plain CRC32 as `header_crc`, zero `seal`, and `prev_crc` the previous record's `crc`.
//!
//! All integers are little-endian. Nothing here does I/O or allocates (except the test helper
//! [`encode_record`]).

use std::fmt;

use crate::batch::{count_entries, Batch, BatchError, BatchKind};
use crate::types::{LogIndex, Term};

/// The record magic, `"LSR1"` as little-endian bytes.
pub const RECORD_MAGIC: u32 = u32::from_le_bytes(*b"LSR1");
/// The record format version (of the wire head; the local half follows the segment's version,
/// see [`Seal`]).
pub const RECORD_VERSION: u8 = 1;
/// The highest seq a record may carry: above it, a header is malformed. It leaves room for
/// `seq + 1` (and far more) without overflow, so no bytes found on disk can make a log's seqs
/// wrap.
pub const SEQ_MAX: u64 = u64::MAX >> 1;
/// Bytes of a record header.
pub const RECORD_HEADER_BYTES: usize = 64;
/// Bytes of the part of the header that travels on the wire and is covered by `crc`.
pub const WIRE_HEAD_BYTES: usize = 36;
/// Records start at multiples of this many bytes within a segment.
pub const RECORD_ALIGN: usize = 8;
/// The kind byte of a truncation marker.
pub const KIND_TRUNCATE: u8 = 0x80;

/// What a record holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RecordKind {
    /// A batch of entries.
    Batch(BatchKind),
    /// A truncation marker: entries at and after `first_index` written before it are void, and
    /// the next record starts at `first_index`. Holds no entries and no payload.
    Truncate,
}

impl RecordKind {
    /// The kind byte.
    pub fn to_u8(self) -> u8 {
        match self {
            RecordKind::Batch(kind) => kind as u8,
            RecordKind::Truncate => KIND_TRUNCATE,
        }
    }

    /// Decodes a kind byte.
    pub fn from_u8(value: u8) -> Option<RecordKind> {
        if value == KIND_TRUNCATE {
            return Some(RecordKind::Truncate);
        }
        BatchKind::from_u8(value).map(RecordKind::Batch)
    }
}

/// A decoded record header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordHeader {
    /// What the record holds.
    pub kind: RecordKind,
    /// Term of the entries (0 for a truncation marker).
    pub term: Term,
    /// Index of the first entry (for a marker: the first voided index).
    pub first_index: LogIndex,
    /// Number of entries (0 only for a marker).
    pub entry_count: u32,
    /// Bytes of payload after the header.
    pub payload_bytes: u32,
    /// CRC32 of the wire head (bytes 0..32) and the payload.
    pub crc: u32,
    /// The link to the previous record in this log ([`Seal::link`]; 0 before the first record
    /// ever written).
    pub prev_crc: u32,
    /// Record sequence number in this log.
    pub seq: u64,
    /// Highest record seq known durable when this record was written.
    pub synced_seq: u64,
}

impl RecordHeader {
    /// Total bytes the record occupies in a segment, padding included.
    #[inline]
    pub fn stored_bytes(&self) -> usize {
        stored_bytes(self.payload_bytes as usize)
    }

    /// Last index covered (for a marker, `first_index - 1`).
    #[inline]
    pub fn last_index(&self) -> LogIndex {
        LogIndex(self.first_index.get() + self.entry_count as u64 - 1)
    }
}

/// How the local half of a record header (bytes 36..64) is sealed; a property of the segment
/// holding the record, read from its header (`crate::segment::segment_seal`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Seal {
    /// A version 1 segment: `header_crc` is a plain CRC32 of bytes 0..60, bytes 56..60 are
    /// zero, and `prev_crc` is the previous record's `crc`.
    Unkeyed,
    /// A version 2 segment with this secret nonce: `seal` (56..60) is the CRC32 of bytes 0..56
    /// xor the nonce's high half, `header_crc` (60..64) the same CRC xor its low half, and
    /// `prev_crc` is the previous record's `header_crc`.
    Keyed(u64),
}

impl Seal {
    /// The value a record in a segment of this kind carries as `prev_crc`, given the previous
    /// record's `crc` and `header_crc`.
    #[inline]
    pub fn link(self, prev_crc: u32, prev_header_crc: u32) -> u32 {
        match self {
            Seal::Unkeyed => prev_crc,
            Seal::Keyed(_) => prev_header_crc,
        }
    }

    /// `(seal, header_crc)`, the fields at bytes 56..60 and 60..64, of a header whose first
    /// 56 bytes are `bytes[..56]` (and, unkeyed, whose bytes 56..60 are zero). Keyed, both are
    /// the CRC32 of bytes 0..56 masked with one half of the nonce each: one CRC per header,
    /// and a writer must know all 64 bits of the nonce.
    #[inline]
    fn checksums(self, bytes: &[u8]) -> (u32, u32) {
        match self {
            Seal::Unkeyed => (0, crc32fast::hash(&bytes[..60])),
            Seal::Keyed(nonce) => {
                let crc = crc32fast::hash(&bytes[..56]);
                (crc ^ (nonce >> 32) as u32, crc ^ nonce as u32)
            }
        }
    }
}

/// The chain fields a replica fills in when it stores a record.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct ChainFields {
    /// The link to the previous record ([`Seal::link`]).
    pub prev_crc: u32,
    /// Sequence number of this record.
    pub seq: u64,
    /// Highest seq durable at write time.
    pub synced_seq: u64,
}

/// Why bytes are not a valid record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RecordError {
    /// Fewer bytes than a header.
    TooShort {
        /// Bytes available.
        available: usize,
    },
    /// The magic does not match (zeros here usually mean "end of the written part").
    BadMagic {
        /// The magic found.
        found: u32,
    },
    /// An unknown format version.
    BadVersion {
        /// The version found.
        found: u8,
    },
    /// The header checksum does not match.
    BadHeaderCrc {
        /// CRC stored.
        stored: u32,
        /// CRC computed.
        computed: u32,
    },
    /// An unknown kind byte.
    BadKind {
        /// The kind byte.
        found: u8,
    },
    /// Reserved bytes are not zero, or counts contradict the kind.
    BadShape {
        /// What is inconsistent.
        what: &'static str,
    },
    /// The payload runs past the available bytes.
    PayloadOutOfBounds {
        /// Bytes the header claims.
        payload_bytes: u32,
        /// Bytes available after the header.
        available: usize,
    },
    /// The payload checksum does not match.
    BadCrc {
        /// CRC stored.
        stored: u32,
        /// CRC computed.
        computed: u32,
    },
    /// The payload is not `entry_count` well-formed entries.
    BadEntries(BatchError),
}

impl fmt::Display for RecordError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RecordError::TooShort { available } => {
                write!(f, "only {available} bytes left, less than a record header")
            }
            RecordError::BadMagic { found } => write!(f, "bad record magic {found:#010x}"),
            RecordError::BadVersion { found } => write!(f, "unknown record version {found}"),
            RecordError::BadHeaderCrc { stored, computed } => write!(
                f,
                "header checksum mismatch (stored {stored:#010x}, computed {computed:#010x})"
            ),
            RecordError::BadKind { found } => write!(f, "unknown record kind {found:#04x}"),
            RecordError::BadShape { what } => write!(f, "malformed header: {what}"),
            RecordError::PayloadOutOfBounds {
                payload_bytes,
                available,
            } => write!(
                f,
                "payload of {payload_bytes} bytes runs past the {available} bytes available"
            ),
            RecordError::BadCrc { stored, computed } => write!(
                f,
                "record checksum mismatch (stored {stored:#010x}, computed {computed:#010x})"
            ),
            RecordError::BadEntries(err) => write!(f, "malformed entries: {err}"),
        }
    }
}

impl std::error::Error for RecordError {}

/// Bytes a record with `payload_bytes` of payload occupies, padding included.
#[inline]
pub fn stored_bytes(payload_bytes: usize) -> usize {
    (RECORD_HEADER_BYTES + payload_bytes).next_multiple_of(RECORD_ALIGN)
}

#[inline]
fn u32_at(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"))
}

#[inline]
fn u64_at(bytes: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"))
}

/// Encodes the 32 bytes of the wire head that precede `crc`.
fn wire_head(
    kind: RecordKind,
    term: Term,
    first_index: LogIndex,
    entry_count: u32,
    payload_bytes: u32,
) -> [u8; 32] {
    let mut head = [0u8; 32];
    head[0..4].copy_from_slice(&RECORD_MAGIC.to_le_bytes());
    head[4] = RECORD_VERSION;
    head[5] = kind.to_u8();
    head[8..16].copy_from_slice(&term.get().to_le_bytes());
    head[16..24].copy_from_slice(&first_index.get().to_le_bytes());
    head[24..28].copy_from_slice(&entry_count.to_le_bytes());
    head[28..32].copy_from_slice(&payload_bytes.to_le_bytes());
    head
}

/// CRC32 of a wire head followed by a payload.
#[inline]
fn crc_of(head: &[u8], payload: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&head[..32]);
    hasher.update(payload);
    hasher.finalize()
}

/// Computes `crc` and returns the complete header for `batch` with the given chain fields.
pub fn batch_header(batch: &Batch, chain: ChainFields) -> RecordHeader {
    let payload = batch.payload();
    let kind = RecordKind::Batch(batch.kind());
    let head = wire_head(
        kind,
        batch.term(),
        batch.first_index(),
        batch.entry_count(),
        payload_len_u32(payload.len()),
    );
    RecordHeader {
        kind,
        term: batch.term(),
        first_index: batch.first_index(),
        entry_count: batch.entry_count(),
        payload_bytes: payload.len() as u32,
        crc: crc_of(&head, payload),
        prev_crc: chain.prev_crc,
        seq: chain.seq,
        synced_seq: chain.synced_seq,
    }
}

/// The header of a truncation marker voiding entries from `first_index` on.
pub fn truncate_header(first_index: LogIndex, chain: ChainFields) -> RecordHeader {
    let head = wire_head(RecordKind::Truncate, Term::ZERO, first_index, 0, 0);
    RecordHeader {
        kind: RecordKind::Truncate,
        term: Term::ZERO,
        first_index,
        entry_count: 0,
        payload_bytes: 0,
        crc: crc_of(&head, &[]),
        prev_crc: chain.prev_crc,
        seq: chain.seq,
        synced_seq: chain.synced_seq,
    }
}

fn payload_len_u32(len: usize) -> u32 {
    u32::try_from(len).unwrap_or_else(|_| panic!("payload of {len} bytes exceeds u32"))
}

/// The wire head of `header` (bytes `0..36`): what a leader sends for a record.
pub fn encode_wire_head(header: &RecordHeader) -> [u8; WIRE_HEAD_BYTES] {
    let mut bytes = [0u8; WIRE_HEAD_BYTES];
    bytes[0..32].copy_from_slice(&wire_head(
        header.kind,
        header.term,
        header.first_index,
        header.entry_count,
        header.payload_bytes,
    ));
    bytes[32..36].copy_from_slice(&header.crc.to_le_bytes());
    bytes
}

/// Writes `header` into the first [`RECORD_HEADER_BYTES`] of `dst`, sealed as `seal` says, and
/// returns its `header_crc` (the next record's link, see [`Seal::link`]).
pub fn write_header(dst: &mut [u8], header: &RecordHeader, seal: Seal) -> u32 {
    assert!(
        dst.len() >= RECORD_HEADER_BYTES,
        "header needs {RECORD_HEADER_BYTES} bytes, got {}",
        dst.len()
    );
    assert!(
        header.synced_seq < header.seq && header.seq <= SEQ_MAX,
        "record seq {} (synced_seq {}) outside 1..={SEQ_MAX} or not above its synced_seq",
        header.seq,
        header.synced_seq
    );
    let mut bytes = [0u8; RECORD_HEADER_BYTES];
    bytes[0..36].copy_from_slice(&encode_wire_head(header));
    bytes[36..40].copy_from_slice(&header.prev_crc.to_le_bytes());
    bytes[40..48].copy_from_slice(&header.seq.to_le_bytes());
    bytes[48..56].copy_from_slice(&header.synced_seq.to_le_bytes());
    let (seal_crc, header_crc) = seal.checksums(&bytes);
    bytes[56..60].copy_from_slice(&seal_crc.to_le_bytes());
    bytes[60..64].copy_from_slice(&header_crc.to_le_bytes());
    dst[..RECORD_HEADER_BYTES].copy_from_slice(&bytes);
    header_crc
}

/// Decodes the wire head (bytes `0..36`): magic, version, kind, shape. Chain fields are zero in
/// the result; the payload is not checked.
fn decode_wire_head(bytes: &[u8]) -> Result<RecordHeader, RecordError> {
    if bytes.len() < RECORD_HEADER_BYTES {
        return Err(RecordError::TooShort {
            available: bytes.len(),
        });
    }
    let magic = u32_at(bytes, 0);
    if magic != RECORD_MAGIC {
        return Err(RecordError::BadMagic { found: magic });
    }
    if bytes[4] != RECORD_VERSION {
        return Err(RecordError::BadVersion { found: bytes[4] });
    }
    let kind = RecordKind::from_u8(bytes[5]).ok_or(RecordError::BadKind { found: bytes[5] })?;
    if bytes[6] != 0 || bytes[7] != 0 {
        return Err(RecordError::BadShape {
            what: "reserved bytes 6..8 are not zero",
        });
    }
    let header = RecordHeader {
        kind,
        term: Term(u64_at(bytes, 8)),
        first_index: LogIndex(u64_at(bytes, 16)),
        entry_count: u32_at(bytes, 24),
        payload_bytes: u32_at(bytes, 28),
        crc: u32_at(bytes, 32),
        prev_crc: 0,
        seq: 0,
        synced_seq: 0,
    };
    if header.first_index.get() == 0 {
        return Err(RecordError::BadShape {
            what: "first index is 0",
        });
    }
    if header
        .first_index
        .get()
        .checked_add(u64::from(header.entry_count))
        .is_none()
    {
        return Err(RecordError::BadShape {
            what: "entries run past the last index",
        });
    }
    match kind {
        RecordKind::Truncate if header.entry_count != 0 || header.payload_bytes != 0 => {
            Err(RecordError::BadShape {
                what: "truncation marker with entries",
            })
        }
        RecordKind::Batch(_) if header.entry_count == 0 => Err(RecordError::BadShape {
            what: "batch record without entries",
        }),
        _ => Ok(header),
    }
}

/// Decodes and checks a stored header (magic, version, kind, shape, header checksum and seal,
/// as `seal` says: the segment's). The payload is not checked; see [`verify_record`].
pub fn decode_header(bytes: &[u8], seal: Seal) -> Result<RecordHeader, RecordError> {
    let mut header = decode_wire_head(bytes)?;
    let (seal_crc, header_crc) = seal.checksums(bytes);
    for (stored, computed) in [
        (u32_at(bytes, 60), header_crc),
        (u32_at(bytes, 56), seal_crc),
    ] {
        if stored != computed {
            return Err(RecordError::BadHeaderCrc { stored, computed });
        }
    }
    header.prev_crc = u32_at(bytes, 36);
    header.seq = u64_at(bytes, 40);
    header.synced_seq = u64_at(bytes, 48);
    if header.seq > SEQ_MAX {
        return Err(RecordError::BadShape {
            what: "seq beyond the highest seq a log uses",
        });
    }
    if header.synced_seq >= header.seq {
        return Err(RecordError::BadShape {
            what: "synced_seq not below the record's own seq",
        });
    }
    Ok(header)
}

/// A verified record borrowed from the bytes it was decoded from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordView<'a> {
    /// The decoded header.
    pub header: RecordHeader,
    /// The payload (exactly `payload_bytes`).
    pub payload: &'a [u8],
    /// Header and payload, without padding: the bytes to send to a peer.
    pub bytes: &'a [u8],
    /// The stored `header_crc` (the next record's link in a version 2 segment, see
    /// [`Seal::link`]); 0 for a record verified as received from a peer.
    pub header_crc: u32,
}

fn check_payload<'a>(
    header: &RecordHeader,
    bytes: &'a [u8],
) -> Result<RecordView<'a>, RecordError> {
    let available = bytes.len() - RECORD_HEADER_BYTES;
    let payload_bytes = header.payload_bytes as usize;
    if payload_bytes > available {
        return Err(RecordError::PayloadOutOfBounds {
            payload_bytes: header.payload_bytes,
            available,
        });
    }
    let payload = &bytes[RECORD_HEADER_BYTES..RECORD_HEADER_BYTES + payload_bytes];
    let computed = crc_of(bytes, payload);
    if computed != header.crc {
        return Err(RecordError::BadCrc {
            stored: header.crc,
            computed,
        });
    }
    if let RecordKind::Batch(_) = header.kind {
        let found = count_entries(payload).map_err(RecordError::BadEntries)?;
        if found != header.entry_count {
            return Err(RecordError::BadEntries(BatchError::CountMismatch {
                expected: header.entry_count,
                found,
            }));
        }
    }
    Ok(RecordView {
        header: *header,
        payload,
        bytes: &bytes[..RECORD_HEADER_BYTES + payload_bytes],
        header_crc: 0,
    })
}

/// Verifies a stored record at the start of `bytes` (which may continue past it) of a segment
/// sealed as `seal`: header, header checksum and seal, payload bounds, payload checksum and
/// entry framing.
pub fn verify_record(bytes: &[u8], seal: Seal) -> Result<RecordView<'_>, RecordError> {
    let header = decode_header(bytes, seal)?;
    let view = check_payload(&header, bytes)?;
    Ok(RecordView {
        header_crc: u32_at(bytes, 60),
        ..view
    })
}

/// Verifies a record received from a peer: only the wire head and `crc` count (the chain fields
/// are the sender's and are ignored; they come back as zero in the view's header).
pub fn verify_wire_record(bytes: &[u8]) -> Result<RecordView<'_>, RecordError> {
    let header = decode_wire_head(bytes)?;
    check_payload(&header, bytes)
}

/// Encodes `batch` as a complete record (header and payload, no padding), sealed as `seal`,
/// appended to `out`. The log itself writes straight into its segments; this is for tools and
/// tests.
pub fn encode_record(batch: &Batch, chain: ChainFields, seal: Seal, out: &mut Vec<u8>) {
    let header = batch_header(batch, chain);
    let start = out.len();
    out.resize(start + RECORD_HEADER_BYTES, 0);
    write_header(&mut out[start..], &header, seal);
    out.extend_from_slice(batch.payload());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::BatchBuilder;
    use proptest::prelude::*;

    fn batch(entries: &[&[u8]], first: u64) -> Batch {
        let mut builder = BatchBuilder::default();
        for entry in entries {
            builder.push(entry);
        }
        builder.finish(Term(3), LogIndex(first), BatchKind::Normal)
    }

    const CHAIN: ChainFields = ChainFields {
        prev_crc: 0xdead_beef,
        seq: 7,
        synced_seq: 5,
    };

    const SEAL: Seal = Seal::Keyed(0x0123_4567_89ab_cdef);

    #[test]
    fn roundtrip_and_documented_layout() {
        let b = batch(&[b"ab", b""], 10);
        let mut out = Vec::new();
        encode_record(&b, CHAIN, SEAL, &mut out);
        assert_eq!(out.len(), RECORD_HEADER_BYTES + 10);
        assert_eq!(&out[0..4], b"LSR1");
        assert_eq!(out[4], 1);
        assert_eq!(out[5], 0);
        assert_eq!(u64_at(&out, 8), 3);
        assert_eq!(u64_at(&out, 16), 10);
        assert_eq!(u32_at(&out, 24), 2);
        assert_eq!(u32_at(&out, 28), 10);
        assert_eq!(u32_at(&out, 36), 0xdead_beef);
        assert_eq!(u64_at(&out, 40), 7);
        assert_eq!(u64_at(&out, 48), 5);
        let crc = crc32fast::hash(&out[..56]);
        assert_eq!(u32_at(&out, 56), crc ^ 0x0123_4567);
        assert_eq!(u32_at(&out, 60), crc ^ 0x89ab_cdef);
        let view = verify_record(&out, SEAL).unwrap();
        assert_eq!(view.payload, &b.payload()[..]);
        assert_eq!(view.header.seq, 7);
        assert_eq!(view.header.last_index(), LogIndex(11));
        assert_eq!(stored_bytes(10), 80);
    }

    #[test]
    fn wire_verification_ignores_chain_fields() {
        let b = batch(&[b"xyz"], 1);
        let mut out = Vec::new();
        encode_record(&b, CHAIN, SEAL, &mut out);
        out[40] ^= 0x01; // the sender's seq: irrelevant on the wire
        assert!(matches!(
            verify_record(&out, SEAL),
            Err(RecordError::BadHeaderCrc { .. })
        ));
        let view = verify_wire_record(&out).unwrap();
        assert_eq!(view.header.seq, 0);
        assert_eq!(view.header.crc, batch_header(&b, CHAIN).crc);
        out[RECORD_HEADER_BYTES] ^= 1;
        assert!(matches!(
            verify_wire_record(&out),
            Err(RecordError::BadCrc { .. })
        ));
    }

    #[test]
    fn a_record_verifies_only_under_the_nonce_it_was_sealed_with() {
        let b = batch(&[b"value"], 1);
        let mut keyed = Vec::new();
        encode_record(&b, CHAIN, SEAL, &mut keyed);
        assert!(verify_record(&keyed, SEAL).is_ok());
        for other in [
            Seal::Unkeyed,
            Seal::Keyed(0x0123_4567_89ab_cdee),
            Seal::Keyed(1 << 32),
        ] {
            assert!(
                matches!(
                    verify_record(&keyed, other),
                    Err(RecordError::BadHeaderCrc { .. })
                ),
                "verified under {other:?}"
            );
        }
        // The link to a record covers its seq: the same batch under another seq links
        // differently in a version 2 segment, not in a version 1 one.
        let mut again = Vec::new();
        let chain = ChainFields { seq: 8, ..CHAIN };
        encode_record(&b, chain, SEAL, &mut again);
        let (first, second) = (
            verify_record(&keyed, SEAL).unwrap(),
            verify_record(&again, SEAL).unwrap(),
        );
        assert_ne!(
            SEAL.link(first.header.crc, first.header_crc),
            SEAL.link(second.header.crc, second.header_crc)
        );
        assert_eq!(
            Seal::Unkeyed.link(first.header.crc, first.header_crc),
            Seal::Unkeyed.link(second.header.crc, second.header_crc)
        );
    }

    #[test]
    fn version_1_records_have_a_plain_header_crc_and_a_zero_seal() {
        let b = batch(&[b"ab"], 4);
        let mut out = Vec::new();
        encode_record(&b, CHAIN, Seal::Unkeyed, &mut out);
        assert_eq!(u32_at(&out, 56), 0);
        assert_eq!(u32_at(&out, 60), crc32fast::hash(&out[..60]));
        assert_eq!(verify_record(&out, Seal::Unkeyed).unwrap().header.seq, 7);
    }

    #[test]
    fn seqs_beyond_the_seq_space_and_impossible_witnesses_are_malformed() {
        let b = batch(&[b"ab"], 4);
        for (seq, synced_seq) in [(u64::MAX, 0u64), (SEQ_MAX + 1, 5), (7, 7), (7, 9)] {
            let mut out = Vec::new();
            encode_record(&b, CHAIN, SEAL, &mut out);
            out[40..48].copy_from_slice(&seq.to_le_bytes());
            out[48..56].copy_from_slice(&synced_seq.to_le_bytes());
            let (seal_crc, header_crc) = SEAL.checksums(&out);
            out[56..60].copy_from_slice(&seal_crc.to_le_bytes());
            out[60..64].copy_from_slice(&header_crc.to_le_bytes());
            assert!(
                matches!(verify_record(&out, SEAL), Err(RecordError::BadShape { .. })),
                "seq {seq} synced_seq {synced_seq} accepted"
            );
        }
    }

    #[test]
    fn markers_and_zeros() {
        let header = truncate_header(LogIndex(4), CHAIN);
        let mut bytes = [0u8; 64];
        write_header(&mut bytes, &header, SEAL);
        let view = verify_record(&bytes, SEAL).unwrap();
        assert_eq!(view.header.kind, RecordKind::Truncate);
        assert_eq!(view.header.last_index(), LogIndex(3));
        assert_eq!(
            verify_record(&[0u8; 64], SEAL),
            Err(RecordError::BadMagic { found: 0 })
        );
        assert_eq!(
            verify_record(&[0u8; 10], SEAL),
            Err(RecordError::TooShort { available: 10 })
        );
    }

    proptest! {
        #[test]
        fn any_single_bit_flip_is_detected(
            entries in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..30), 1..8),
            bit in any::<usize>(),
        ) {
            let refs: Vec<&[u8]> = entries.iter().map(|e| e.as_slice()).collect();
            let b = batch(&refs, 3);
            let mut out = Vec::new();
            encode_record(&b, CHAIN, SEAL, &mut out);
            let bit = bit % (out.len() * 8);
            out[bit / 8] ^= 1 << (bit % 8);
            prop_assert!(verify_record(&out, SEAL).is_err());
        }

        #[test]
        fn a_record_never_verifies_under_another_nonce(
            nonce in any::<u64>(),
            other in any::<u64>(),
            seq in 1..=SEQ_MAX,
            entry in proptest::collection::vec(any::<u8>(), 0..40),
        ) {
            prop_assume!(nonce != other);
            let chain = ChainFields { prev_crc: 0, seq, synced_seq: seq - 1 };
            let mut out = Vec::new();
            encode_record(&batch(&[&entry], 9), chain, Seal::Keyed(nonce), &mut out);
            prop_assert!(verify_record(&out, Seal::Keyed(nonce)).is_ok());
            prop_assert!(verify_record(&out, Seal::Keyed(other)).is_err());
            prop_assert!(verify_record(&out, Seal::Unkeyed).is_err());
        }

        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = verify_record(&bytes, SEAL);
            let _ = verify_wire_record(&bytes);
        }
    }
}
