//! Crash and corruption tests on real files: build a log with real syncs, damage its files the
//! way a crash can (lose any unsynced bytes, in any order, or a segment rename that was never
//! synced) or the way a disk can (flip a bit anywhere, cut a file, lose a middle segment), then
//! reopen. Reopening must either give a log that holds everything that was reported durable and
//! nothing but the bytes that were written, or (for disk damage only) refuse with
//! `LogError::Corrupt`. Never wrong data, never a panic.
//!
//! `LOCKSTEP_LOG_CASES` sets the number of cases per test (default 24).

use std::fs::OpenOptions;
use std::path::{Path, PathBuf};

use lockstep_log::batch::{BatchBuilder, BatchKind};
use lockstep_log::inspect::inspect;
use lockstep_log::record::stored_bytes;
use lockstep_log::segment::live_segment_paths;
use lockstep_log::types::{LogIndex, Term};
use lockstep_log::{AppendMode, Log, LogError, LogOptions, SyncMode};
use proptest::prelude::*;

const SEGMENT_BYTES: u64 = 8192;

fn options() -> LogOptions {
    LogOptions {
        segment_bytes: SEGMENT_BYTES,
        spare_segments: 1,
        sync_mode: SyncMode::IoUring,
        append_mode: AppendMode::Mmap,
        syncs_in_flight: 4,
        sync_inline_when_idle: true,
    }
}

fn cases() -> u32 {
    std::env::var("LOCKSTEP_LOG_CASES")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(24)
}

fn entry_bytes(index: u64, size: u8) -> Vec<u8> {
    (0..size as u64).map(|n| (index * 13 + n) as u8).collect()
}

/// A log on disk and what was written to it.
struct Built {
    dir: tempfile::TempDir,
    /// Entry `i` (1-based) at position `i - 1`.
    entries: Vec<Vec<u8>>,
    /// Everything up to here was reported durable.
    durable: u64,
}

/// Appends `batches` (entry count, entry size, sync after?), syncs, then appends `tail` more
/// batches that are never synced, and closes the log.
fn build(batches: &[(u8, u8, bool)], tail: &[(u8, u8)]) -> Built {
    let dir = tempfile::tempdir().unwrap();
    // Both append paths write the same bytes; alternate between them.
    let append_mode = if batches.len() % 2 == 0 {
        AppendMode::Mmap
    } else {
        AppendMode::Pwrite
    };
    let (mut log, _) = Log::open(
        dir.path(),
        LogOptions {
            append_mode,
            // From one round at a time to four in flight.
            syncs_in_flight: 1 + batches.len() % 4,
            ..options()
        },
    )
    .unwrap();
    let mut entries = Vec::new();
    let mut append = |log: &mut Log, count: u8, size: u8| {
        let first = entries.len() as u64 + 1;
        let mut builder = BatchBuilder::default();
        for index in first..first + count as u64 {
            let entry = entry_bytes(index, size);
            builder.push(&entry);
            entries.push(entry);
        }
        log.append(&builder.finish(Term(1), LogIndex(first), BatchKind::Normal))
            .unwrap();
    };
    for &(count, size, sync) in batches {
        append(&mut log, count, size);
        if sync {
            log.wait_durable().unwrap();
        } else {
            log.request_sync().unwrap();
        }
    }
    let durable = log.wait_durable().unwrap().get();
    for &(count, size) in tail {
        append(&mut log, count, size);
    }
    drop(log);
    Built {
        dir,
        entries,
        durable,
    }
}

fn live_segments(dir: &Path) -> Vec<PathBuf> {
    live_segment_paths(dir).unwrap()
}

/// (position of the segment among the live ones, byte offset) where the durable part ends.
fn durable_end(built: &Built) -> (usize, u64) {
    if built.durable == 0 {
        return (0, 64);
    }
    let inspection = inspect(built.dir.path()).unwrap();
    let span = inspection
        .recovered
        .spans
        .iter()
        .find(|span| {
            span.first_index.get() <= built.durable && built.durable <= span.last_index.get()
        })
        .expect("the durable index is in the log");
    let position = inspection
        .segments
        .iter()
        .position(|segment| segment.first_seq == span.segment)
        .unwrap();
    (
        position,
        span.offset as u64 + stored_bytes(span.payload_bytes as usize) as u64,
    )
}

/// Reopens and checks the outcome. `may_refuse`: disk damage (true) may be refused as corrupt.
fn reopen_and_check(built: &Built, may_refuse: bool, what: &str) -> Result<(), TestCaseError> {
    match Log::open(built.dir.path(), options()) {
        Ok((log, _)) => {
            let last = log.last_index().get();
            prop_assert!(
                last >= built.durable,
                "{what}: reopened to {last}, but {} was durable",
                built.durable
            );
            prop_assert!(
                last as usize <= built.entries.len(),
                "{what}: {last} entries"
            );
            prop_assert_eq!(log.first_index(), LogIndex(1), "{}", what);
            if last > 0 {
                for (index, entry) in log.entries(LogIndex(1), LogIndex(last)).unwrap() {
                    let expected = &built.entries[(index.get() - 1) as usize];
                    prop_assert_eq!(entry, expected.as_slice(), "{}: entry {}", what, index);
                }
            }
            // The reopened log holds nothing it has not made durable, and takes appends after
            // what it kept.
            let mut log = log;
            prop_assert_eq!(
                log.durable_seq(),
                log.last_seq(),
                "{}: reopened with records it does not call durable",
                what
            );
            let mut builder = BatchBuilder::default();
            builder.push(b"after the crash");
            log.append(&builder.finish(Term(1), LogIndex(last + 1), BatchKind::Normal))
                .unwrap();
            prop_assert_eq!(log.wait_durable().unwrap(), LogIndex(last + 1), "{}", what);
        }
        Err(LogError::Corrupt { .. }) if may_refuse => {}
        Err(err) => prop_assert!(false, "{what}: open failed: {err}"),
    }
    Ok(())
}

fn batches() -> impl Strategy<Value = Vec<(u8, u8, bool)>> {
    proptest::collection::vec((1u8..6, 0u8..250, proptest::bool::weighted(0.3)), 1..40)
}

fn tail() -> impl Strategy<Value = Vec<(u8, u8)>> {
    proptest::collection::vec((1u8..6, 0u8..250), 1..6)
}

#[derive(Clone, Debug)]
enum Loss {
    /// Lose everything from a point on in one segment.
    ToEnd,
    /// Lose one range (pages written back out of order).
    Range(u16),
    /// Replace a range with garbage (a torn write of random bytes).
    Garbage(u16, u64),
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    /// A crash loses only bytes written after the last completed sync (in any order): reopening
    /// must give back everything durable. (A lost rename of a newly activated segment is no
    /// longer a reachable crash state: activation makes the rename durable before the log head
    /// names the segment and before any record goes into it; a crash before that leaves an
    /// empty spare, which `log_head_repair.rs` covers with the head's cases.)
    #[test]
    fn crash_losing_unsynced_bytes_keeps_everything_durable(
        batches in batches(),
        tail in tail(),
        segment_pick in any::<usize>(),
        offset_pick in any::<u64>(),
        loss in prop_oneof![
            Just(Loss::ToEnd),
            (1u16..3000).prop_map(Loss::Range),
            ((1u16..3000), any::<u64>()).prop_map(|(len, seed)| Loss::Garbage(len, seed)),
        ],
    ) {
        let built = build(&batches, &tail);
        let (durable_segment, durable_offset) = durable_end(&built);
        let segments = live_segments(built.dir.path());
        let position = durable_segment + segment_pick % (segments.len() - durable_segment);
        let start = if position == durable_segment {
            durable_offset + offset_pick % (SEGMENT_BYTES - durable_offset + 1)
        } else {
            64 + offset_pick % (SEGMENT_BYTES - 64)
        };
        let mut bytes = std::fs::read(&segments[position]).unwrap();
        let end = match loss {
            Loss::ToEnd => SEGMENT_BYTES,
            Loss::Range(len) | Loss::Garbage(len, _) => (start + len as u64).min(SEGMENT_BYTES),
        } as usize;
        let mut state = match loss { Loss::Garbage(_, seed) => seed | 1, _ => 0 };
        for byte in &mut bytes[start as usize..end] {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            *byte = state as u8;
        }
        std::fs::write(&segments[position], &bytes).unwrap();
        reopen_and_check(&built, false, &format!("crash {loss:?} seg {position} at {start}"))?;
    }

    /// A flipped bit anywhere in any live segment: reopen gives everything durable, or refuses.
    #[test]
    fn bit_flips_are_detected_or_harmless(
        batches in batches(),
        tail in tail(),
        segment_pick in any::<usize>(),
        offset_pick in any::<u64>(),
        bit in 0u8..8,
    ) {
        let built = build(&batches, &tail);
        let segments = live_segments(built.dir.path());
        let path = &segments[segment_pick % segments.len()];
        let offset = offset_pick % SEGMENT_BYTES;
        let mut bytes = std::fs::read(path).unwrap();
        bytes[offset as usize] ^= 1 << bit;
        std::fs::write(path, &bytes).unwrap();
        reopen_and_check(&built, true, &format!("flip {} at {offset} bit {bit}", path.display()))?;
    }

    /// A file cut short, or a middle segment gone: refused (or, if nothing durable is
    /// affected, a log holding everything durable).
    #[test]
    fn cut_files_and_missing_segments_are_refused(
        batches in batches(),
        tail in tail(),
        segment_pick in any::<usize>(),
        length_pick in any::<u64>(),
        delete in any::<bool>(),
    ) {
        let built = build(&batches, &tail);
        let segments = live_segments(built.dir.path());
        let position = segment_pick % segments.len();
        let what = if delete && segments.len() >= 3 {
            let position = position % (segments.len() - 2) + 1;
            std::fs::remove_file(&segments[position]).unwrap();
            format!("deleted segment {position}")
        } else {
            let len = length_pick % SEGMENT_BYTES;
            OpenOptions::new().write(true).open(&segments[position]).unwrap().set_len(len).unwrap();
            format!("cut segment {position} to {len}")
        };
        reopen_and_check(&built, true, &what)?;
    }
}

#[test]
fn a_flip_in_a_durable_record_is_refused_with_file_offset_and_index() {
    let built = build(&[(3, 40, true), (3, 40, true), (3, 40, false)], &[(1, 8)]);
    let inspection = inspect(built.dir.path()).unwrap();
    let second = inspection.recovered.spans[1];
    let path = inspection.segments[0].path.clone();
    drop(inspection);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[second.offset as usize + 70] ^= 0x10;
    std::fs::write(&path, &bytes).unwrap();
    match Log::open(built.dir.path(), options()) {
        Err(LogError::Corrupt {
            file,
            offset,
            index,
            reason,
        }) => {
            assert_eq!(file, path);
            assert_eq!(offset, second.offset as u64);
            assert_eq!(index, LogIndex(4));
            assert!(reason.contains("checksum"), "{reason}");
        }
        Err(other) => panic!("expected corruption, got {other}"),
        Ok(_) => panic!("expected corruption, the log opened"),
    }
}

#[test]
fn after_a_clean_close_damage_to_the_last_record_is_refused_not_cut() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = Log::open(dir.path(), options()).unwrap();
    let mut builder = BatchBuilder::default();
    builder.push(&[7u8; 100]);
    log.append(&builder.finish(Term(1), LogIndex(1), BatchKind::Normal))
        .unwrap();
    assert_eq!(log.close().unwrap(), LogIndex(1));
    let inspection = inspect(dir.path()).unwrap();
    assert_eq!(inspection.recovered.torn, None);
    let last = *inspection.recovered.spans.back().unwrap();
    let path = inspection.segments[0].path.clone();
    drop(inspection);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[last.offset as usize + 64 + 50] ^= 1;
    std::fs::write(&path, &bytes).unwrap();
    match Log::open(dir.path(), options()) {
        Err(LogError::Corrupt { index, .. }) => assert_eq!(index, LogIndex(1)),
        Err(other) => panic!("expected corruption, got {other}"),
        Ok(_) => panic!("the only durable entry was silently cut"),
    }
}
