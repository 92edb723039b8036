//! The recovery scan: a pure function from the bytes of the live segments to the records they
//! hold, where the log ends, and whether the end is a torn tail or corruption.
//!
//! The scan follows the chain: each record must verify under its segment's seal (the nonce in
//! the segment header, so bytes a client stored cannot pass for a record), carry a `seq` above
//! the previous one's (the first record of a segment carries exactly the seq in the segment's
//! name), link to the previous record (its `header_crc`, which covers its seq; its `crc` in a
//! version 1 segment), the expected first index and a term no lower than the last. Where the chain stops
//! (zeros, garbage, a record that fails a check, a stale record from a recycled segment or from
//! before a truncation), the next segment may continue it; otherwise the log ends there.
//!
//! Torn tail or corruption? Every record carries `synced_seq`, the highest seq known durable when
//! it was written. After the stop, the scan looks at every 8-aligned position of the rest of the
//! log for valid records newer than the last good one (seq above it, and below the next
//! segment's name, as every record of a segment that is not the newest has). If any of them says that a
//! seq above the last good one was already durable, the stop lies inside data that was once
//! durable: that is corruption, and the scan fails naming the position and index. Otherwise
//! nothing past the stop was ever reported durable (a crash loses only unsynced writes, in any
//! order), so it is a torn tail and is cut. Stale records (seq not above the last good one) are
//! never taken as evidence, so recycled segments and truncated suffixes are harmless. Limit:
//! damage to durable records that no later record witnesses (the last ones written before the
//! log went idle) looks exactly like a torn write and is cut, unless `Log::seal` wrote a witness
//! after them; see `docs/FORMATS.md`.
//!
//! Repair: [`recover_for_repair`] runs the same scan but returns damage before the tail beside
//! the log cut right before it (instead of refusing), with the highest index any record shows
//! the log held, so a node can fetch the lost range back from its peers.

use std::collections::VecDeque;
use std::path::Path;

use crate::batch::BatchKind;
use crate::error::LogError;
use crate::record::{verify_record, RecordError, RecordKind, RecordView, Seal, RECORD_ALIGN};
use crate::record::{RECORD_HEADER_BYTES, RECORD_MAGIC};
use crate::segment::{check_segment_header, segment_seal, SEGMENT_HEADER_BYTES};
use crate::types::{LogIndex, Term};

/// One live segment handed to the scan.
#[derive(Clone, Copy, Debug)]
pub struct SegmentBytes<'a> {
    /// Seq of the first record, from the file name.
    pub first_seq: u64,
    /// The whole file.
    pub bytes: &'a [u8],
}

/// Where one stored batch record lives and which of its entries are still part of the log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordSpan {
    /// Index of the record's first entry.
    pub first_index: LogIndex,
    /// Last entry still in the log (below the record's own last after a truncation inside it).
    pub last_index: LogIndex,
    /// Term of the entries.
    pub term: Term,
    /// Kind of the batch.
    pub kind: BatchKind,
    /// `first_seq` of the segment holding the record.
    pub segment: u64,
    /// Byte offset of the record header in that segment.
    pub offset: u32,
    /// Entries stored in the record.
    pub entry_count: u32,
    /// Payload bytes stored in the record.
    pub payload_bytes: u32,
}

/// Removes entries `from..` from the index of spans (a truncation marker's effect).
pub fn void_from(spans: &mut VecDeque<RecordSpan>, from: LogIndex) {
    while let Some(last) = spans.back_mut() {
        if last.first_index >= from {
            spans.pop_back();
        } else {
            if last.last_index >= from {
                last.last_index = from.prev();
            }
            break;
        }
    }
}

/// A torn tail found (and to be cut) by the scan.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TornTail {
    /// Position of the segment in the input.
    pub segment: usize,
    /// Byte offset where the log ends.
    pub offset: usize,
    /// The index the next record would have had.
    pub index: LogIndex,
    /// Why the chain stopped there.
    pub reason: String,
    /// Valid records newer than the cut that are discarded (written, never durable).
    pub newer_records_discarded: u64,
}

/// Damage before the tail: the scan refuses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CorruptAt {
    /// Position of the segment in the input.
    pub segment: usize,
    /// Byte offset of the damaged or missing record.
    pub offset: usize,
    /// Index of the first entry that cannot be read.
    pub index: LogIndex,
    /// What is wrong.
    pub reason: String,
}

/// What the scan found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recovered {
    /// Live batch records in log order.
    pub spans: VecDeque<RecordSpan>,
    /// Index the next appended entry must have.
    pub next_index: LogIndex,
    /// Term of the last record appended (0 when none).
    pub last_term: Term,
    /// Seq for the next record (above every valid seq seen anywhere, so never reused).
    pub next_seq: u64,
    /// Seq of the last good record (the first segment's seq - 1 when none).
    pub last_seq: u64,
    /// `header_crc` of the last good record (0 when none): what the next record links to.
    pub last_header_crc: u32,
    /// Segment (position in the input) and offset where the next record goes; `None` when the
    /// input is empty. Segments after it hold nothing of the log.
    pub tail: Option<(usize, usize)>,
    /// Set when the end of the log was torn.
    pub torn: Option<TornTail>,
    /// Records (batches and markers) verified.
    pub records: u64,
}

struct Chain {
    /// The index reported for damage before the first record: 1 for a log that starts at the
    /// very first record ever written, unknown (0) after compaction.
    start_index: LogIndex,
    /// `(crc, header_crc)` of the last record followed, once there is one.
    prev: Option<(u32, u32)>,
    next_index: Option<LogIndex>,
    last_term: Term,
    last_seq: u64,
    spans: VecDeque<RecordSpan>,
    records: u64,
}

enum Step<'a> {
    Next(RecordView<'a>),
    /// The chain stops here; `true` when the bytes there are damaged (not zeros, not a clean
    /// end, not a valid stale record).
    Stop(String, bool),
    Fatal(String),
}

impl Chain {
    /// Index the next appended entry must have: after the chain's last entry, 1 when none.
    fn index_to_append(&self) -> LogIndex {
        self.next_index.unwrap_or(LogIndex(1))
    }

    /// The scan's result: the chain followed so far, with what the rest of the scan decided.
    fn into_recovered(
        self,
        next_seq: u64,
        tail: Option<(usize, usize)>,
        torn: Option<TornTail>,
    ) -> Recovered {
        let next_index = self.index_to_append();
        Recovered {
            spans: self.spans,
            next_index,
            last_term: self.last_term,
            next_seq,
            last_seq: self.last_seq,
            last_header_crc: self.prev.map_or(0, |(_, header_crc)| header_crc),
            tail,
            torn,
            records: self.records,
        }
    }

    /// Checks the record at `offset` of `segment` against the chain. `exact_seq` is the
    /// segment's name when `offset` is its first record.
    fn step<'a>(
        &self,
        segment: &Scanned<'a>,
        offset: usize,
        exact_seq: Option<u64>,
        seq_limit: Option<u64>,
    ) -> Step<'a> {
        let bytes = segment.bytes;
        if offset + RECORD_HEADER_BYTES > bytes.len() {
            return Step::Stop("end of segment".to_string(), false);
        }
        let view = match verify_record(&bytes[offset..], segment.seal) {
            Ok(view) => view,
            Err(err) => {
                let damaged = !matches!(
                    err,
                    RecordError::BadMagic { found: 0 } | RecordError::TooShort { .. }
                );
                return Step::Stop(err.to_string(), damaged);
            }
        };
        let h = view.header;
        if let Some(exact) = exact_seq {
            if h.seq != exact {
                return Step::Stop(
                    format!(
                        "first record has seq {} but the segment name says {exact}",
                        h.seq
                    ),
                    false,
                );
            }
        }
        if h.seq <= self.last_seq {
            return Step::Stop(
                format!(
                    "stale record: seq {} is not above the previous seq {}",
                    h.seq, self.last_seq
                ),
                false,
            );
        }
        if let Some((crc, header_crc)) = self.prev {
            let link = segment.seal.link(crc, header_crc);
            if h.prev_crc != link {
                return Step::Stop(
                    format!(
                        "chain break: prev_crc {:#010x}, previous record's link {link:#010x}",
                        h.prev_crc
                    ),
                    false,
                );
            }
        }
        if seq_limit.is_some_and(|limit| h.seq >= limit) {
            return Step::Stop(
                format!("record seq {} belongs to the next segment", h.seq),
                false,
            );
        }
        if let Some(next) = self.next_index {
            match h.kind {
                RecordKind::Batch(_) if h.first_index != next => {
                    return Step::Fatal(format!(
                        "record starts at index {} where {next} was expected",
                        h.first_index
                    ))
                }
                // A marker may void from below the first record read: compaction can recycle
                // the segments before records that a later marker voided.
                RecordKind::Truncate if h.first_index > next => {
                    return Step::Fatal(format!(
                        "truncation from {} beyond the end of the log ({next})",
                        h.first_index
                    ))
                }
                _ => {}
            }
        }
        if matches!(h.kind, RecordKind::Batch(_)) && h.term < self.last_term {
            return Step::Fatal(format!(
                "term {} lower than the previous record's {}",
                h.term, self.last_term
            ));
        }
        Step::Next(view)
    }

    fn apply(&mut self, view: &RecordView<'_>, segment: u64, offset: usize) {
        let h = view.header;
        match h.kind {
            RecordKind::Batch(kind) => {
                self.spans.push_back(RecordSpan {
                    first_index: h.first_index,
                    last_index: h.last_index(),
                    term: h.term,
                    kind,
                    segment,
                    offset: offset as u32,
                    entry_count: h.entry_count,
                    payload_bytes: h.payload_bytes,
                });
                self.next_index = Some(h.last_index().next());
                self.last_term = h.term;
            }
            RecordKind::Truncate => {
                void_from(&mut self.spans, h.first_index);
                self.next_index = Some(h.first_index);
                self.last_term = self.spans.back().map_or(Term::ZERO, |span| span.term);
            }
        }
        self.prev = Some((h.crc, view.header_crc));
        self.last_seq = h.seq;
        self.records += 1;
    }
}

/// The newest evidence found past a stop.
#[derive(Default)]
struct Witness {
    /// (synced_seq, seq, segment, offset) of the record claiming the most durability.
    best: Option<(u64, u64, usize, usize)>,
    max_seq: u64,
    newer_records: u64,
    /// The highest last index any newer record implies the log held: a batch's own last index,
    /// or for a marker voiding from `i`, `i - 1`.
    last_index_claimed: LogIndex,
}

fn scan_witnesses(segments: &[Scanned<'_>], from: (usize, usize), min_seq: u64) -> Witness {
    let mut witness = Witness::default();
    for (position, segment) in segments.iter().enumerate().skip(from.0) {
        let start = if position == from.0 {
            from.1
        } else {
            SEGMENT_HEADER_BYTES
        };
        // Every record of a segment that is not the newest has a seq below the next one's name
        // (its stale records, lower still): a higher one was never written by this log.
        let seq_limit = segments
            .get(position + 1)
            .map_or(u64::MAX, |next| next.first_seq);
        for (offset, view) in valid_records(segment.bytes, start, segment.seal) {
            let h = view.header;
            if h.seq >= min_seq && h.seq < seq_limit {
                witness.max_seq = witness.max_seq.max(h.seq);
                witness.newer_records += 1;
                let implied = match h.kind {
                    RecordKind::Batch(_) => h.last_index(),
                    RecordKind::Truncate => h.first_index.prev(),
                };
                witness.last_index_claimed = witness.last_index_claimed.max(implied);
                if witness.best.is_none_or(|best| h.synced_seq > best.0) {
                    witness.best = Some((h.synced_seq, h.seq, position, offset));
                }
            }
        }
    }
    witness
}

/// Every valid record in `bytes` (a segment file sealed as `seal`) at or after `start`, found
/// at each record alignment whether or not it chains: `(offset, record)`.
fn valid_records(
    bytes: &[u8],
    start: usize,
    seal: Seal,
) -> impl Iterator<Item = (usize, RecordView<'_>)> {
    (start..bytes.len().saturating_sub(RECORD_HEADER_BYTES - 1))
        .step_by(RECORD_ALIGN)
        .filter(move |&offset| {
            u32::from_le_bytes(bytes[offset..offset + 4].try_into().expect("4")) == RECORD_MAGIC
        })
        .filter_map(move |offset| {
            verify_record(&bytes[offset..], seal)
                .ok()
                .map(|view| (offset, view))
        })
}

/// The highest seq of any valid record in `bytes` (a spare segment file, holding what it held
/// as a live segment), or 0 (also when its header is not valid).
pub(crate) fn highest_seq(bytes: &[u8]) -> u64 {
    if check_segment_header(bytes).is_err() {
        return 0;
    }
    valid_records(bytes, SEGMENT_HEADER_BYTES, segment_seal(bytes))
        .map(|(_, view)| view.header.seq)
        .max()
        .unwrap_or(0)
}

/// A live segment as the scan reads it: its bytes and how its records are sealed.
struct Scanned<'a> {
    first_seq: u64,
    bytes: &'a [u8],
    seal: Seal,
}

/// Damage before the tail, as [`recover_for_repair`] reports it: where it is, and how far the
/// log is known to have reached.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Damage {
    /// Where the damage is; `at.index` is the first entry that cannot be read.
    pub at: CorruptAt,
    /// The highest index the log is known to have held: the last index of the good prefix or
    /// the last index any valid record found after the damage implies, whichever is higher.
    /// Entries up to it may have been durable, hence acknowledged to a leader.
    pub last_index_claimed: LogIndex,
    /// Set when the log may have held entries beyond `last_index_claimed` that nothing left
    /// on disk shows (a lost or cut segment): the repair then also waits for a newer term.
    pub extent_unknown: bool,
}

/// [`recover`] (or, with `repair`, [`recover_for_repair`]) over named segment files in
/// sequence order: `(path, first_seq, bytes)` each. A corruption that is refused becomes
/// [`LogError::Corrupt`] naming the file.
pub(crate) fn recover_files<'a>(
    files: impl Iterator<Item = (&'a Path, u64, &'a [u8])>,
    repair: bool,
) -> Result<(Recovered, Option<Damage>), LogError> {
    let mut paths = Vec::new();
    let mut inputs = Vec::new();
    for (path, first_seq, bytes) in files {
        paths.push(path);
        inputs.push(SegmentBytes { first_seq, bytes });
    }
    let outcome = if repair {
        recover_for_repair(&inputs)
    } else {
        recover(&inputs).map(|recovered| (recovered, None))
    };
    outcome.map_err(|corrupt| LogError::Corrupt {
        file: paths[corrupt.segment].to_path_buf(),
        offset: corrupt.offset as u64,
        index: corrupt.index,
        reason: corrupt.reason,
    })
}

/// Scans the live segments (in name order) and returns the log they hold, or where it is
/// corrupt. Never panics on any input bytes.
pub fn recover(segments: &[SegmentBytes<'_>]) -> Result<Recovered, CorruptAt> {
    match scan(segments)? {
        (recovered, None) => Ok(recovered),
        (_, Some(damage)) => Err(damage.at),
    }
}

/// Like [`recover`], except that damage to records before the tail (a record that fails its
/// checks where a later record witnesses it was durable, a missing middle segment, an
/// unreadable first record of a compacted log) does not refuse: the log is cut right before the
/// damage, like a torn tail, and the damage is returned beside it so the caller can fetch the
/// lost range from peers (protocol-aware recovery). Intact records after the damage are dropped
/// too: without the entries before them they cannot be part of the log (log matching), but
/// they count towards [`Damage::last_index_claimed`]. When nothing before the damage survives,
/// the log restarts empty (`tail` is `None`, every segment is discarded). Damaged segment
/// headers and names are still refused (nothing of such a file can be trusted).
pub fn recover_for_repair(
    segments: &[SegmentBytes<'_>],
) -> Result<(Recovered, Option<Damage>), CorruptAt> {
    scan(segments)
}

/// The scan behind [`recover`] and [`recover_for_repair`]: the log cut at the first stop, and
/// the damage when the stop is not a torn tail. Errors only for damaged segment headers.
fn scan(input: &[SegmentBytes<'_>]) -> Result<(Recovered, Option<Damage>), CorruptAt> {
    if input.is_empty() {
        let empty = Recovered {
            spans: VecDeque::new(),
            next_index: LogIndex(1),
            last_term: Term::ZERO,
            next_seq: 1,
            last_seq: 0,
            last_header_crc: 0,
            tail: None,
            torn: None,
            records: 0,
        };
        return Ok((empty, None));
    }
    for (position, segment) in input.iter().enumerate() {
        if let Err(err) = check_segment_header(segment.bytes) {
            return Err(CorruptAt {
                segment: position,
                offset: 0,
                index: LogIndex::ZERO,
                reason: err.to_string(),
            });
        }
        if position > 0 && segment.first_seq <= input[position - 1].first_seq {
            return Err(CorruptAt {
                segment: position,
                offset: 0,
                index: LogIndex::ZERO,
                reason: "segment names are not increasing".to_string(),
            });
        }
    }
    let segments: Vec<Scanned<'_>> = input
        .iter()
        .map(|segment| Scanned {
            first_seq: segment.first_seq,
            bytes: segment.bytes,
            seal: segment_seal(segment.bytes),
        })
        .collect();
    let segments = &segments[..];
    let first = &segments[0];
    let mut chain = Chain {
        start_index: LogIndex(u64::from(first.first_seq == 1)),
        prev: None,
        next_index: None,
        last_term: Term::ZERO,
        last_seq: first.first_seq.saturating_sub(1),
        spans: VecDeque::new(),
        records: 0,
    };
    let mut position = 0usize;
    let mut offset = SEGMENT_HEADER_BYTES;
    // (segment, offset, reason) of the first record that is missing or bad, and where a record
    // that chains but is impossible (wrong index or term) sits, if that is why the chain ended.
    let (stop, fatal_at): ((usize, usize, String), Option<(usize, usize)>) = loop {
        let segment = &segments[position];
        let next = segments.get(position + 1);
        let exact = (offset == SEGMENT_HEADER_BYTES).then_some(segment.first_seq);
        let step = chain.step(segment, offset, exact, next.map(|n| n.first_seq));
        let (reason, damaged) = match step {
            Step::Next(view) => {
                chain.apply(&view, segment.first_seq, offset);
                offset += view.header.stored_bytes();
                continue;
            }
            Step::Fatal(reason) => break ((position, offset, reason), Some((position, offset))),
            Step::Stop(reason, damaged) => (reason, damaged),
        };
        let Some(next) = next.filter(|_| chain.prev.is_some()) else {
            // No next segment, or no record yet to chain it to (a segment is only ever started
            // after its predecessor holds a record, so a later segment cannot begin the log).
            break ((position, offset, reason), None);
        };
        let limit = segments.get(position + 2).map(|n| n.first_seq);
        match chain.step(next, SEGMENT_HEADER_BYTES, Some(next.first_seq), limit) {
            Step::Next(view) => {
                position += 1;
                chain.apply(&view, next.first_seq, SEGMENT_HEADER_BYTES);
                offset = SEGMENT_HEADER_BYTES + view.header.stored_bytes();
            }
            Step::Fatal(reason) => {
                break (
                    (position, offset, reason),
                    Some((position + 1, SEGMENT_HEADER_BYTES)),
                )
            }
            Step::Stop(next_reason, _) if damaged => {
                break (
                    (
                        position,
                        offset,
                        format!("{reason} (and the next segment does not continue: {next_reason})"),
                    ),
                    None,
                )
            }
            Step::Stop(next_reason, _) => {
                break (
                    (
                        position + 1,
                        SEGMENT_HEADER_BYTES,
                        format!(
                            "{next_reason} (first record of the next segment; a segment may be \
                             missing before it)"
                        ),
                    ),
                    None,
                )
            }
        }
    };
    let (stop_segment, stop_offset, reason) = stop;
    let witness = scan_witnesses(
        segments,
        // From the stop itself: a valid record there that merely fails the chain (the first
        // record of a segment after a missing one) is evidence too.
        (stop_segment, stop_offset),
        chain.last_seq + 1,
    );
    let damage = if let Some((segment, offset)) = fatal_at {
        Some(corrupt(&chain, segment, offset, reason.clone()))
    } else if let Some((synced_seq, seq, w_segment, w_offset)) =
        witness.best.filter(|best| best.0 > chain.last_seq)
    {
        Some(corrupt(
            &chain,
            stop_segment,
            stop_offset,
            format!(
                "{reason}; yet record seq {seq} (segment #{w_segment} offset {w_offset}) \
                 says seq {synced_seq} was durable: records after seq {} had been synced",
                chain.last_seq
            ),
        ))
    } else if chain.records == 0 && first.first_seq > 1 {
        Some(corrupt(
            &chain,
            0,
            SEGMENT_HEADER_BYTES,
            format!("{reason}; the first record of a compacted log is unreadable"),
        ))
    } else {
        None
    };
    // The tail is always in the segment whose chain we followed; segments after it (when the
    // stop was the first record of the next segment) are discarded whole.
    let (tail_segment, tail_offset) = if stop_segment > position {
        (position, offset)
    } else {
        (stop_segment, stop_offset)
    };
    let next_index = chain.index_to_append();
    // Every seq read was checked to be at most `SEQ_MAX`, far below `u64::MAX`.
    let next_seq = chain
        .last_seq
        .max(witness.max_seq)
        .checked_add(1)
        .expect("seqs read are at most SEQ_MAX");
    if let Some(at) = damage {
        let damage = Damage {
            last_index_claimed: next_index.prev().max(witness.last_index_claimed),
            extent_unknown: false,
            at,
        };
        // With nothing before the damage, no record could chain to the next one at the start
        // of a segment named after an older seq: the log restarts in a fresh segment.
        let tail = (chain.records > 0).then_some((tail_segment, tail_offset));
        return Ok((chain.into_recovered(next_seq, tail, None), Some(damage)));
    }
    // Clean: nothing newer anywhere, and the tail position holds zeros or a stale record.
    let at_tail = &segments[tail_segment].bytes[tail_offset..];
    let tail_is_clean = witness.newer_records == 0
        && segments[tail_segment + 1..].is_empty()
        && (at_tail.iter().take(RECORD_HEADER_BYTES).all(|&b| b == 0)
            || verify_record(at_tail, segments[tail_segment].seal)
                .is_ok_and(|view| view.header.seq <= chain.last_seq));
    let torn = (!tail_is_clean).then_some(TornTail {
        segment: tail_segment,
        offset: tail_offset,
        index: next_index,
        reason,
        newer_records_discarded: witness.newer_records,
    });
    let recovered = chain.into_recovered(next_seq, Some((tail_segment, tail_offset)), torn);
    Ok((recovered, None))
}

fn corrupt(chain: &Chain, segment: usize, offset: usize, reason: String) -> CorruptAt {
    CorruptAt {
        segment,
        offset,
        index: chain.next_index.unwrap_or(chain.start_index),
        reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::{Batch, BatchBuilder};
    use crate::record::{batch_header, encode_record, stored_bytes, truncate_header};
    use crate::record::{write_header, ChainFields, RecordHeader};
    use crate::segment::encode_segment_header;

    const SEGMENT: usize = 1024;

    /// Builds segments by hand the way the writer does.
    struct Writer {
        segments: Vec<(u64, Vec<u8>)>,
        offset: usize,
        seq: u64,
        /// `(crc, header_crc)` of the previous record.
        prev: (u32, u32),
        synced_seq: u64,
        /// How new segments seal their records.
        seal: Seal,
    }

    impl Writer {
        fn new() -> Writer {
            Writer::sealed(Seal::Keyed(0x5eed_0000_0000_0001))
        }

        fn sealed(seal: Seal) -> Writer {
            let mut writer = Writer {
                segments: Vec::new(),
                offset: 0,
                seq: 1,
                prev: (0, 0),
                synced_seq: 0,
                seal,
            };
            writer.new_segment();
            writer
        }

        fn new_segment(&mut self) {
            let mut bytes = vec![0u8; SEGMENT];
            let nonce = match self.seal {
                Seal::Keyed(nonce) => nonce,
                Seal::Unkeyed => 0,
            };
            bytes[..64].copy_from_slice(&encode_segment_header(SEGMENT as u64, nonce));
            if self.seal == Seal::Unkeyed {
                // A version 1 header: no nonce.
                bytes[4] = 1;
                let crc = crc32fast::hash(&bytes[..60]);
                bytes[60..64].copy_from_slice(&crc.to_le_bytes());
            }
            self.segments.push((self.seq, bytes));
            self.offset = SEGMENT_HEADER_BYTES;
        }

        /// Reserves `stored` bytes (in a new segment when they do not fit) and returns where,
        /// and the chain fields of the record going there.
        fn place(&mut self, stored: usize) -> (usize, ChainFields) {
            if self.offset + stored > SEGMENT {
                self.new_segment();
            }
            let at = self.offset;
            self.offset += stored;
            let seal = segment_seal(&self.segments.last().unwrap().1);
            let chain = ChainFields {
                prev_crc: seal.link(self.prev.0, self.prev.1),
                seq: self.seq,
                synced_seq: self.synced_seq,
            };
            self.seq += 1;
            (at, chain)
        }

        /// Writes `header` (and `payload`) at `at` of the newest segment.
        fn write(&mut self, at: usize, header: &RecordHeader, payload: &[u8]) {
            let bytes = &mut self.segments.last_mut().unwrap().1;
            let seal = segment_seal(bytes);
            let header_crc = write_header(&mut bytes[at..], header, seal);
            bytes[at + 64..at + 64 + payload.len()].copy_from_slice(payload);
            self.prev = (header.crc, header_crc);
        }

        fn append(&mut self, batch: &Batch) -> (usize, usize) {
            let (at, chain) = self.place(stored_bytes(batch.payload().len()));
            self.write(at, &batch_header(batch, chain), batch.payload());
            (self.segments.len() - 1, at)
        }

        fn truncate(&mut self, from: u64) {
            let (at, chain) = self.place(stored_bytes(0));
            self.write(at, &truncate_header(LogIndex(from), chain), &[]);
        }

        fn input(&self) -> Vec<SegmentBytes<'_>> {
            self.segments
                .iter()
                .map(|(seq, bytes)| SegmentBytes {
                    first_seq: *seq,
                    bytes,
                })
                .collect()
        }
    }

    fn batch(first: u64, count: usize, term: u64) -> Batch {
        let mut builder = BatchBuilder::default();
        for i in 0..count {
            builder.push(&[i as u8; 50]);
        }
        builder.finish(Term(term), LogIndex(first), BatchKind::Normal)
    }

    #[test]
    fn clean_log_across_segments() {
        let mut w = Writer::new();
        for i in 0..20 {
            w.append(&batch(1 + i * 2, 2, 1));
        }
        assert!(w.segments.len() > 3);
        let rec = recover(&w.input()).unwrap();
        assert_eq!(rec.next_index, LogIndex(41));
        assert_eq!(rec.records, 20);
        assert_eq!(rec.torn, None);
        assert_eq!(rec.next_seq, 21);
        assert_eq!(rec.tail.unwrap().0, w.segments.len() - 1);
    }

    #[test]
    fn truncation_markers_void_entries() {
        let mut w = Writer::new();
        w.append(&batch(1, 3, 1));
        w.append(&batch(4, 3, 1));
        w.truncate(3);
        w.append(&batch(3, 1, 2));
        let rec = recover(&w.input()).unwrap();
        assert_eq!(rec.next_index, LogIndex(4));
        assert_eq!(rec.spans.len(), 2);
        assert_eq!(rec.spans[0].last_index, LogIndex(2));
        assert_eq!(rec.spans[1].term, Term(2));
    }

    #[test]
    fn unwitnessed_damage_is_a_torn_tail_and_witnessed_damage_is_corruption() {
        let mut w = Writer::new();
        w.append(&batch(1, 2, 1));
        let (_, second) = w.append(&batch(3, 2, 1));
        w.append(&batch(5, 2, 1));
        // Nothing synced: damage in the middle is a torn tail at the second record.
        let mut torn = Writer { ..w_clone(&w) };
        torn.segments[0].1[second + 70] ^= 4;
        let rec = recover(&torn.input()).unwrap();
        assert_eq!(rec.next_index, LogIndex(3));
        let cut = rec.torn.unwrap();
        assert_eq!(
            (cut.segment, cut.offset, cut.newer_records_discarded),
            (0, second, 1)
        );
        assert_eq!(rec.next_seq, 4, "seqs past the cut are never reused");
        // A later record that says seq 3 was durable makes the same damage corruption.
        w.synced_seq = 3;
        w.append(&batch(7, 1, 1));
        w.segments[0].1[second + 70] ^= 4;
        let err = recover(&w.input()).unwrap_err();
        assert_eq!(
            (err.segment, err.offset, err.index),
            (0, second, LogIndex(3))
        );
        assert!(err.reason.contains("durable"), "{}", err.reason);
    }

    fn w_clone(w: &Writer) -> Writer {
        Writer {
            segments: w.segments.clone(),
            offset: w.offset,
            seq: w.seq,
            prev: w.prev,
            synced_seq: w.synced_seq,
            seal: w.seal,
        }
    }

    #[test]
    fn missing_middle_segment_with_durable_data_after_is_refused() {
        let mut w = Writer::new();
        for i in 0..12 {
            w.synced_seq = i;
            w.append(&batch(1 + i * 2, 2, 1));
        }
        assert!(w.segments.len() >= 3);
        w.segments.remove(1);
        let err = recover(&w.input()).unwrap_err();
        assert_eq!((err.segment, err.offset), (1, SEGMENT_HEADER_BYTES));
        assert!(err.reason.contains("missing"), "{}", err.reason);
    }

    #[test]
    fn stale_records_after_a_cut_and_rewrite_are_ignored() {
        // Life 1: A B C, with B torn; recovery cuts after A and continues with seq 4.
        let mut w = Writer::new();
        w.append(&batch(1, 2, 1));
        let (_, b_at) = w.append(&batch(3, 2, 1));
        w.append(&batch(5, 2, 1));
        w.segments[0].1[b_at + 80] ^= 1;
        let rec = recover(&w.input()).unwrap();
        assert_eq!((rec.next_index, rec.next_seq), (LogIndex(3), 4));
        // Life 2 writes a shorter D at B's place; C (seq 3) still lies further on.
        w.offset = b_at;
        w.seq = 4;
        w.prev.1 = rec.last_header_crc;
        w.append(&batch(3, 1, 2));
        let rec = recover(&w.input()).unwrap();
        assert_eq!(rec.next_index, LogIndex(4));
        assert_eq!(rec.spans.len(), 2);
        assert_eq!(rec.torn.unwrap().newer_records_discarded, 0);
    }

    /// A spare reused under a lower seq than its stale records carry (what reused seqs allowed)
    /// starts with a record identical on the wire to the stale one at the same place; the stale
    /// record after it names the stale one as its predecessor, and must not pass for a successor
    /// of the new one: the chain link covers the predecessor's seq, not only its payload.
    #[test]
    fn a_stale_record_never_chains_onto_an_identical_new_record() {
        // The old life of the segment, named 7: X (seq 7), then Y (seq 9).
        let mut old = Writer::new();
        old.seq = 7;
        old.segments[0].0 = 7;
        let x = batch(1, 2, 1);
        old.append(&x);
        old.seq = 9;
        old.append(&batch(3, 2, 1));
        // The new life, named 8: the same batch X at the same place, with seq 8.
        let mut new = w_clone(&old);
        new.segments[0].0 = 8;
        new.offset = SEGMENT_HEADER_BYTES;
        new.seq = 8;
        new.prev = (0, 0);
        new.append(&x);
        let rec = recover(&new.input()).unwrap();
        assert_eq!(rec.records, 1, "the stale record was chained: {rec:?}");
        assert_eq!(rec.next_index, LogIndex(3));
    }

    /// Bytes `seq`, `synced_seq` that form a record sealed as `seal` (not chained to anything).
    fn foreign_record(seq: u64, synced_seq: u64, seal: Seal) -> Vec<u8> {
        let chain = ChainFields {
            prev_crc: 0,
            seq,
            synced_seq,
        };
        let mut out = Vec::new();
        encode_record(&batch(1, 1, 1), chain, seal, &mut out);
        out
    }

    #[test]
    fn a_record_sealed_under_another_nonce_is_never_a_witness() {
        let mut w = Writer::new();
        w.append(&batch(1, 2, 1));
        w.append(&batch(3, 2, 1));
        let at = w.offset + 64;
        for (seq, seal) in [
            (u64::MAX >> 1, Seal::Unkeyed),
            (1000, Seal::Keyed(7 << 32 | 7)),
        ] {
            let forged = foreign_record(seq, seq - 1, seal);
            w.segments[0].1[at..at + forged.len()].copy_from_slice(&forged);
            let rec = recover(&w.input()).unwrap();
            assert_eq!((rec.records, rec.next_seq, rec.torn), (2, 3, None));
        }
    }

    /// In a segment that is not the newest, a record with a seq at or above the next
    /// segment's name cannot be this log's: not a witness, even where records are unkeyed.
    #[test]
    fn a_witness_beyond_the_next_segments_name_is_ignored() {
        let mut w = Writer::sealed(Seal::Unkeyed);
        let (_, second) = w.append(&batch(1, 2, 1));
        let (_, third) = w.append(&batch(3, 2, 1));
        w.new_segment();
        w.append(&batch(5, 2, 1));
        let next_name = w.segments[1].0;
        // Damage before the tail, after which a forged record claims durability.
        w.segments[0].1[third + 70] ^= 4;
        let at = w.segments[0].1.len() - 128;
        let forged = foreign_record(next_name + 5, next_name + 4, Seal::Unkeyed);
        w.segments[0].1[at..at + forged.len()].copy_from_slice(&forged);
        let rec = recover(&w.input()).unwrap();
        let cut = rec.torn.unwrap();
        assert_eq!((cut.segment, cut.offset), (0, third));
        assert_eq!((rec.records, rec.next_seq), (1, next_name + 1));
        assert!(second < third);
    }

    /// A log of version 1 segments goes on in a version 2 segment: its first record links to
    /// the last unkeyed record's `header_crc`.
    #[test]
    fn an_unkeyed_segment_chains_into_a_keyed_one() {
        let mut w = Writer::sealed(Seal::Unkeyed);
        for i in 0..8 {
            w.append(&batch(1 + i * 2, 2, 1));
        }
        w.seal = Seal::Keyed(0x0bad_cafe_0bad_cafe);
        w.new_segment();
        for i in 8..16 {
            w.append(&batch(1 + i * 2, 2, 1));
        }
        let rec = recover(&w.input()).unwrap();
        assert_eq!(
            (rec.records, rec.torn, rec.next_index),
            (16, None, LogIndex(33))
        );
        assert_eq!(rec.tail.unwrap().0, w.segments.len() - 1);
    }

    #[test]
    fn a_marker_may_void_from_below_the_first_record_left_by_compaction() {
        let mut w = Writer::new();
        w.append(&batch(1, 3, 1));
        w.new_segment();
        w.append(&batch(4, 3, 1));
        w.truncate(2);
        w.append(&batch(2, 2, 2));
        // Compaction recycled the first segment: the log now starts at the voided record 4..6.
        let rec = recover(&w.input()[1..]).unwrap();
        assert_eq!(rec.next_index, LogIndex(4));
        assert_eq!(rec.spans.len(), 1);
        assert_eq!(rec.spans[0].first_index, LogIndex(2));
        assert_eq!(rec.torn, None);
    }

    #[test]
    fn repair_cuts_before_witnessed_damage_and_remembers_the_highest_index() {
        let mut w = Writer::new();
        w.append(&batch(1, 2, 1));
        let (_, second) = w.append(&batch(3, 2, 1));
        w.synced_seq = 2;
        w.append(&batch(5, 2, 1));
        w.synced_seq = 3;
        w.append(&batch(7, 3, 2));
        w.segments[0].1[second + 70] ^= 4;
        assert!(recover(&w.input()).is_err());
        let (rec, damage) = recover_for_repair(&w.input()).unwrap();
        let damage = damage.expect("damage reported");
        assert_eq!(
            (damage.at.segment, damage.at.offset, damage.at.index),
            (0, second, LogIndex(3))
        );
        assert_eq!(damage.last_index_claimed, LogIndex(9));
        // The good prefix stays, the rest is cut like a torn tail, seqs continue above all.
        assert_eq!(rec.next_index, LogIndex(3));
        assert_eq!(rec.tail, Some((0, second)));
        assert_eq!((rec.torn, rec.next_seq), (None, 5));
        // A clean log reports no damage in repair mode either.
        let clean = Writer::new();
        let (_, none) = recover_for_repair(&clean.input()).unwrap();
        assert_eq!(none, None);
    }

    #[test]
    fn repair_with_nothing_before_the_damage_restarts_empty() {
        let mut w = Writer::new();
        w.append(&batch(1, 2, 1));
        w.synced_seq = 1;
        w.append(&batch(3, 2, 1));
        w.segments[0].1[SEGMENT_HEADER_BYTES + 8] ^= 1;
        let (rec, damage) = recover_for_repair(&w.input()).unwrap();
        let damage = damage.expect("damage reported");
        assert_eq!(
            (damage.at.index, damage.last_index_claimed),
            (LogIndex(1), LogIndex(4))
        );
        assert_eq!(
            (rec.tail, rec.records, rec.next_index),
            (None, 0, LogIndex(1))
        );
        assert_eq!(rec.next_seq, 3);
    }

    #[test]
    fn repair_after_a_missing_middle_segment_counts_the_later_records() {
        let mut w = Writer::new();
        for i in 0..12 {
            w.synced_seq = i;
            w.append(&batch(1 + i * 2, 2, 1));
        }
        let segments = w.segments.len();
        assert!(segments >= 3);
        w.segments.remove(1);
        let (rec, damage) = recover_for_repair(&w.input()).unwrap();
        let damage = damage.expect("damage reported");
        assert_eq!(damage.last_index_claimed, LogIndex(24));
        assert_eq!(rec.tail.unwrap().0, 0, "the log ends in the first segment");
        assert_eq!(damage.at.index, rec.next_index);
    }

    #[test]
    fn a_seal_marker_after_the_damage_claims_the_index_before_it() {
        let mut w = Writer::new();
        w.append(&batch(1, 2, 1));
        let (_, second) = w.append(&batch(3, 4, 1));
        w.synced_seq = 2;
        w.truncate(7);
        w.segments[0].1[second + 70] ^= 4;
        let (_, damage) = recover_for_repair(&w.input()).unwrap();
        assert_eq!(damage.unwrap().last_index_claimed, LogIndex(6));
    }

    #[test]
    fn wrong_size_and_bad_header_are_corruption() {
        let w = Writer::new();
        let short = &w.segments[0].1[..512];
        let err = recover(&[SegmentBytes {
            first_seq: 1,
            bytes: short,
        }])
        .unwrap_err();
        assert_eq!(err.offset, 0);
    }
}
