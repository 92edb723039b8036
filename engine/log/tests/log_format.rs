//! The record format's defences on real files: a record is bound to the segment file that holds
//! it (client bytes that happen to form a record, left in a recycled segment, are never taken
//! for part of the log), and seqs are never reused, not even after an open that cut a tail and
//! a crash right after it.

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use lockstep_log::batch::{Batch, BatchBuilder, BatchKind};
use lockstep_log::record::{encode_record, stored_bytes, ChainFields, Seal, RECORD_HEADER_BYTES};
use lockstep_log::segment::{live_segment_paths, SEGMENT_HEADER_BYTES};
use lockstep_log::types::{LogIndex, Term};
use lockstep_log::{AppendMode, Log, LogOptions};

const SEGMENT_BYTES: u64 = 8 << 10;

fn options() -> LogOptions {
    LogOptions {
        segment_bytes: SEGMENT_BYTES,
        append_mode: AppendMode::Pwrite,
        ..LogOptions::default()
    }
}

fn batch(first: u64, entry: &[u8]) -> Batch {
    let mut builder = BatchBuilder::default();
    builder.push(entry);
    builder.finish(Term(1), LogIndex(first), BatchKind::Normal)
}

fn live_segments(dir: &Path) -> Vec<PathBuf> {
    live_segment_paths(dir).unwrap()
}

/// A client value holding a complete record that claims `seq` and `synced_seq`, placed so
/// that the record lands on an 8-byte boundary of the segment: the value starts 4 bytes
/// (its length prefix) after an aligned payload, so 4 bytes of filler come first. The client
/// does not know the segments' nonces: it seals as the previous version did (or guesses).
fn forged_value(seq: u64, synced_seq: u64, seal: Seal) -> Vec<u8> {
    let chain = ChainFields {
        prev_crc: 0,
        seq: 1,
        synced_seq: 0,
    };
    let mut value = vec![0u8; 4];
    encode_record(&batch(1, b"forged!!"), chain, seal, &mut value);
    // Any seq: the header checksums are computed by hand, as a client would.
    let header = &mut value[4..4 + RECORD_HEADER_BYTES];
    header[40..48].copy_from_slice(&seq.to_le_bytes());
    header[48..56].copy_from_slice(&synced_seq.to_le_bytes());
    let (seal_crc, header_crc) = match seal {
        Seal::Unkeyed => (0, crc32fast::hash(&header[..60])),
        Seal::Keyed(nonce) => {
            let crc = crc32fast::hash(&header[..56]);
            (crc ^ (nonce >> 32) as u32, crc ^ nonce as u32)
        }
    };
    header[56..60].copy_from_slice(&seal_crc.to_le_bytes());
    header[60..64].copy_from_slice(&header_crc.to_le_bytes());
    value
}

/// A client stores values that each hold a well-formed record with seq `u64::MAX` (or a
/// `synced_seq` claiming a million durable records). Compaction recycles the segments that
/// hold them, and in the default pwrite mode a recycled segment is not re-zeroed, so the values
/// lie in the stale space past the tail of the newest segment, where the recovery scan looks
/// for witnesses. Opening must ignore them: the seqs go on from the log's own, and nothing is
/// reported torn or corrupt.
#[test]
fn a_record_forged_in_client_values_is_never_taken_for_part_of_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let values = [
        forged_value(u64::MAX, 0, Seal::Unkeyed),
        forged_value(u64::MAX, 0, Seal::Keyed(0x0123_4567_89ab_cdef)),
        forged_value(1 << 20, (1 << 20) - 1, Seal::Unkeyed),
    ];
    let stored = stored_bytes(4 + values[0].len()) as u64;
    let per_segment = (SEGMENT_BYTES - SEGMENT_HEADER_BYTES as u64) / stored;
    let (mut log, _) = Log::open(dir.path(), options()).unwrap();
    // Enough segment switches for every live segment to be a recycled one, then a few records
    // into the last.
    let records = per_segment * 8 + 3;
    for i in 0..records {
        let first = i + 1;
        log.append(&batch(first, &values[i as usize % values.len()]))
            .unwrap();
        log.wait_durable().unwrap();
        log.compact_to(LogIndex(first.saturating_sub(per_segment)))
            .unwrap();
    }
    let last_seq = log.last_seq();
    log.close().unwrap();
    // The stale space after the tail holds the old values, forged records included.
    let newest = live_segments(dir.path()).pop().unwrap();
    let file = std::fs::File::open(&newest).unwrap();
    let mut stale = [0u8; 4];
    let forged_at = SEGMENT_HEADER_BYTES as u64 + 10 * stored + RECORD_HEADER_BYTES as u64 + 8;
    file.read_exact_at(&mut stale, forged_at).unwrap();
    assert_eq!(
        &stale, b"LSR1",
        "no forged record in the stale space of {newest:?}"
    );

    let (log, report) = Log::open(dir.path(), options()).unwrap();
    assert!(report.torn_tail.is_none(), "{report:?}");
    assert!(report.damage.is_none(), "{report:?}");
    assert_eq!(report.last_index, LogIndex(records));
    assert!(
        (last_seq..last_seq + 4).contains(&log.last_seq()),
        "seqs jumped from {last_seq} to {}",
        log.last_seq()
    );
}

/// Records 1..n (never synced) fill two segments; record 3 is damaged. The first open cuts the
/// tail at record 3 and turns the second segment, which holds seqs up to n, into a spare; a
/// crash follows at once. The second open finds the same cut, but only the first segment's
/// records past it: it must still number new records above n, or the spare's stale records
/// would carry seqs the log uses again.
#[test]
fn a_crash_right_after_an_open_that_cut_the_tail_never_reuses_seqs() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = Log::open(dir.path(), options()).unwrap();
    let value = [7u8; 100];
    let mut first = 1;
    while live_segments(dir.path()).len() < 2 || log.last_seq() < 60 {
        log.append(&batch(first, &value)).unwrap();
        first += 1;
    }
    let written = log.last_seq();
    drop(log);
    let stored = stored_bytes(4 + value.len()) as u64;
    let segments = live_segments(dir.path());
    let third_payload = SEGMENT_HEADER_BYTES as u64 + 2 * stored + RECORD_HEADER_BYTES as u64;
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&segments[0])
        .unwrap();
    file.write_all_at(&[0xee], third_payload + 10).unwrap();
    drop(file);

    let (log, report) = Log::open(dir.path(), options()).unwrap();
    assert_eq!(report.last_index, LogIndex(2), "{report:?}");
    assert!(report.segments_discarded >= 1, "{report:?}");
    assert!(log.last_seq() >= written, "{} < {written}", log.last_seq());
    drop(log); // a crash: nothing appended

    let (log, report) = Log::open(dir.path(), options()).unwrap();
    assert_eq!(report.last_index, LogIndex(2), "{report:?}");
    assert!(
        log.last_seq() >= written,
        "seqs {} ..= {written} would be used again",
        log.last_seq() + 1
    );
}

/// Writes, as the previous format did, segment `00000000000000000001.seg` holding `entries`
/// records of one entry each (every one durable), and a version 1 head naming it: version 1
/// segment header (no nonce), records with a plain `header_crc`, each linked to the previous
/// record's `crc`.
fn write_version_1_log(dir: &Path, entries: u64) {
    let mut segment = vec![0u8; SEGMENT_BYTES as usize];
    segment[0..4].copy_from_slice(b"LSSG");
    segment[4] = 1;
    segment[5] = 1; // keeps a head
    segment[8..16].copy_from_slice(&SEGMENT_BYTES.to_le_bytes());
    let crc = crc32fast::hash(&segment[..60]);
    segment[60..64].copy_from_slice(&crc.to_le_bytes());
    let mut offset = SEGMENT_HEADER_BYTES;
    let mut prev_crc = 0;
    for index in 1..=entries {
        let chain = ChainFields {
            prev_crc,
            seq: index,
            synced_seq: index - 1,
        };
        let mut record = Vec::new();
        encode_record(
            &batch(index, &entry(index)),
            chain,
            Seal::Unkeyed,
            &mut record,
        );
        segment[offset..offset + record.len()].copy_from_slice(&record);
        prev_crc = u32::from_le_bytes(record[32..36].try_into().unwrap());
        offset += stored_bytes(record.len() - RECORD_HEADER_BYTES);
    }
    std::fs::write(dir.join("00000000000000000001.seg"), &segment).unwrap();
    let mut head = [0u8; 64];
    head[0..4].copy_from_slice(b"LSHD");
    head[4] = 1;
    head[8..16].copy_from_slice(&1u64.to_le_bytes()); // newest seq
    head[16..24].copy_from_slice(&1u64.to_le_bytes()); // its first index
    head[24..32].copy_from_slice(&entries.to_le_bytes()); // synced seq
    head[32..40].copy_from_slice(&1u64.to_le_bytes()); // oldest seq
    let crc = crc32fast::hash(&head[..40]);
    head[40..44].copy_from_slice(&crc.to_le_bytes());
    std::fs::write(dir.join("head"), head).unwrap();
    // The previous format created its hard state as two blank 4 KiB slots.
    std::fs::write(dir.join("hard_state"), vec![0u8; 8192]).unwrap();
}

fn entry(index: u64) -> Vec<u8> {
    format!("entry {index}").into_bytes()
}

fn assert_entries(log: &Log, last: u64) {
    let found: Vec<Vec<u8>> = log
        .entries(LogIndex(1), LogIndex(last))
        .unwrap()
        .map(|(_, bytes)| bytes.to_vec())
        .collect();
    let expected: Vec<Vec<u8>> = (1..=last).map(entry).collect();
    assert_eq!(found, expected);
}

/// A log written by the previous format opens in place: its records read as they were, and
/// new records (keyed) go into a new segment of the current version that continues the chain;
/// the old segment is never written again.
#[test]
fn a_log_of_the_previous_format_is_read_and_continued_in_a_new_segment() {
    let dir = tempfile::tempdir().unwrap();
    write_version_1_log(dir.path(), 10);
    let (mut log, report) = Log::open(dir.path(), options()).unwrap();
    assert_eq!(report.last_index, LogIndex(10), "{report:?}");
    assert!(
        report.torn_tail.is_none() && report.damage.is_none(),
        "{report:?}"
    );
    assert_entries(&log, 10);
    for index in 11..=15 {
        log.append(&batch(index, &entry(index))).unwrap();
    }
    log.close().unwrap();
    let live = live_segments(dir.path());
    assert_eq!(live.len(), 2, "{live:?}");
    let versions: Vec<u8> = live
        .iter()
        .map(|path| std::fs::read(path).unwrap()[4])
        .collect();
    assert_eq!(versions, [1, 2]);
    assert!(live[1].ends_with("00000000000000000011.seg"), "{live:?}");

    let (log, report) = Log::open(dir.path(), options()).unwrap();
    assert_eq!(report.last_index, LogIndex(15), "{report:?}");
    assert!(
        report.torn_tail.is_none() && report.damage.is_none(),
        "{report:?}"
    );
    assert_entries(&log, 15);
}

/// A log of the previous format that holds no record gets a current header in place.
#[test]
fn an_empty_log_of_the_previous_format_is_renewed_in_place() {
    let dir = tempfile::tempdir().unwrap();
    write_version_1_log(dir.path(), 0);
    let (mut log, report) = Log::open(dir.path(), options()).unwrap();
    assert_eq!(report.last_index, LogIndex(0), "{report:?}");
    for index in 1..=3 {
        log.append(&batch(index, &entry(index))).unwrap();
    }
    log.close().unwrap();
    let live = live_segments(dir.path());
    assert_eq!(live.len(), 1, "{live:?}");
    assert_eq!(std::fs::read(&live[0]).unwrap()[4], 2);
    let (log, report) = Log::open(dir.path(), options()).unwrap();
    assert_eq!(report.last_index, LogIndex(3), "{report:?}");
    assert!(report.torn_tail.is_none(), "{report:?}");
    assert_entries(&log, 3);
}
