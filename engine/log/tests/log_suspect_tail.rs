//! A tail cut after an unclean stop makes the log suspect, durably: the `suspect` marker is
//! written while the log opens, survives a second crash after the evidence was overwritten,
//! and goes once the durable log holds an entry of a newer term (`docs/RAFT.md`, "Suspect
//! tail").

use std::path::Path;

use lockstep_log::batch::{Batch, BatchBuilder, BatchKind};
use lockstep_log::inspect::inspect;
use lockstep_log::suspect::SUSPECT_FILE;
use lockstep_log::types::{LogIndex, Term};
use lockstep_log::{AppendMode, Log, LogOptions, SyncMode};

fn options() -> LogOptions {
    LogOptions {
        segment_bytes: 8192,
        spare_segments: 1,
        sync_mode: SyncMode::IoUring,
        append_mode: AppendMode::Pwrite,
        syncs_in_flight: 2,
        sync_inline_when_idle: true,
    }
}

fn batch(index: u64, term: u64) -> Batch {
    let mut builder = BatchBuilder::default();
    builder.push(&[index as u8; 100]);
    builder.finish(Term(term), LogIndex(index), BatchKind::Normal)
}

/// Appends `batches` and waits until they are durable; the log is then dropped without
/// [`Log::close`] (an unclean stop: no witness after the last records).
fn append_durably(dir: &Path, batches: &[Batch]) {
    let (mut log, _) = Log::open(dir, options()).unwrap();
    for batch in batches {
        log.append(batch).unwrap();
    }
    log.wait_durable().unwrap();
}

/// Flips a payload byte of the last record: damage that nothing after it witnesses.
fn damage_last_record(dir: &Path) {
    let inspection = inspect(dir).unwrap();
    let last = *inspection.recovered.spans.back().unwrap();
    let path = inspection.segments.last().unwrap().path.clone();
    drop(inspection);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[last.offset as usize + 64 + 20] ^= 1;
    std::fs::write(&path, &bytes).unwrap();
}

#[test]
fn suspect_a_tail_cut_after_an_unclean_stop_is_reported_and_marked_durably() {
    let dir = tempfile::tempdir().unwrap();
    append_durably(dir.path(), &[batch(1, 1), batch(2, 1)]);
    damage_last_record(dir.path());

    // The durable entry 2 is cut as a torn tail: reported, and the log is marked suspect.
    let (mut log, report) = Log::open(dir.path(), options()).unwrap();
    assert_eq!(
        report.torn_tail.as_ref().map(|torn| torn.index),
        Some(LogIndex(2))
    );
    assert_eq!(
        (report.last_index, report.suspect),
        (LogIndex(1), Some(Term(1)))
    );
    assert!(dir.path().join(SUSPECT_FILE).exists());
    // Appending over the cut erases the evidence; a second crash still finds the marker.
    log.append(&batch(2, 1)).unwrap();
    log.wait_durable().unwrap();
    drop(log);
    let (mut log, report) = Log::open(dir.path(), options()).unwrap();
    assert_eq!((report.torn_tail, report.suspect), (None, Some(Term(1))));
    // An entry of the same term does not lift it; one of a newer term does, durably.
    log.append(&batch(3, 1)).unwrap();
    log.wait_durable().unwrap();
    assert_eq!(log.suspect(), Some(Term(1)));
    log.append(&batch(4, 2)).unwrap();
    log.wait_durable().unwrap();
    assert_eq!(log.suspect(), None);
    assert!(!dir.path().join(SUSPECT_FILE).exists());
    drop(log);
    let (_, report) = Log::open(dir.path(), options()).unwrap();
    assert_eq!(report.suspect, None);
}

#[test]
fn suspect_a_clean_open_marks_nothing() {
    let dir = tempfile::tempdir().unwrap();
    append_durably(dir.path(), &[batch(1, 1), batch(2, 1)]);
    let (log, report) = Log::open(dir.path(), options()).unwrap();
    assert_eq!((report.torn_tail, report.suspect), (None, None));
    assert_eq!(log.close().unwrap(), LogIndex(2));
    assert!(!dir.path().join(SUSPECT_FILE).exists());
}
