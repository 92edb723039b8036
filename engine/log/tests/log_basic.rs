//! End-to-end behaviour of the durable log on real files with real syncs: append, group commit,
//! reads, segment switching, truncation, compaction and recycling, reopen, both sync mechanisms.

use lockstep_log::batch::{Batch, BatchBuilder, BatchKind};
use lockstep_log::types::{LogIndex, NodeId, Term};
use lockstep_log::{AppendMode, HardState, Log, LogError, LogOptions, SyncMode};

fn options(mode: SyncMode) -> LogOptions {
    LogOptions {
        segment_bytes: 16 << 10,
        spare_segments: 1,
        sync_mode: mode,
        ..LogOptions::default()
    }
}

fn batch(first: u64, count: u64, term: u64, size: usize) -> Batch {
    let mut builder = BatchBuilder::default();
    for index in first..first + count {
        let mut entry = vec![0u8; size];
        entry[..8.min(size)].copy_from_slice(&index.to_le_bytes()[..8.min(size)]);
        builder.push(&entry);
    }
    builder.finish(Term(term), LogIndex(first), BatchKind::Normal)
}

fn check_entries(log: &Log, from: u64, to: u64, size: usize) {
    let mut expected = from;
    for (index, entry) in log.entries(LogIndex(from), LogIndex(to)).unwrap() {
        assert_eq!(index, LogIndex(expected));
        assert_eq!(entry.len(), size);
        assert_eq!(&entry[..8], &expected.to_le_bytes());
        expected += 1;
    }
    assert_eq!(expected, to + 1);
}

fn append_sync_reopen(mode: SyncMode) {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, report) = Log::open(dir.path(), options(mode)).unwrap();
    // The mode asked for is the one used: io_uring may not silently fall back here.
    assert_eq!(
        log.sync_mechanism(),
        mode.name(),
        "the log syncs with another mechanism"
    );
    assert_eq!(report.last_index, LogIndex(0));
    assert_eq!(report.torn_tail, None);
    let mut next = 1;
    for round in 0..40u64 {
        let count = 1 + round % 7;
        assert_eq!(
            log.append(&batch(next, count, 1 + round / 10, 100))
                .unwrap(),
            LogIndex(next + count - 1)
        );
        next += count;
        log.request_sync().unwrap();
        let _ = log.poll_durable().unwrap();
    }
    assert_eq!(log.wait_durable().unwrap(), LogIndex(next - 1));
    let stats = log.stats();
    assert!(stats.syncs >= 1 && stats.syncs <= 40, "{stats:?}");
    assert_eq!(stats.entries_synced, next - 1);
    assert!(stats.segments_activated >= 2, "{stats:?}");
    check_entries(&log, 1, next - 1, 100);
    check_entries(&log, 5, 9, 100);
    assert_eq!(log.term_at(LogIndex(1)), Some(Term(1)));
    assert_eq!(log.term_at(LogIndex(next - 1)), Some(Term(4)));
    assert_eq!(log.term_at(LogIndex(next)), None);
    log.save_hard_state(HardState {
        term: Term(4),
        vote: NodeId(2),
    })
    .unwrap();
    drop(log);

    let (log, report) = Log::open(dir.path(), options(mode)).unwrap();
    assert_eq!(report.last_index, LogIndex(next - 1));
    assert_eq!(report.first_index, LogIndex(1));
    assert_eq!(report.torn_tail, None);
    assert_eq!(report.hard_state.vote, NodeId(2));
    assert_eq!(log.durable_index(), LogIndex(next - 1));
    check_entries(&log, 1, next - 1, 100);
}

#[test]
fn append_sync_reopen_io_uring() {
    append_sync_reopen(SyncMode::IoUring);
}

#[test]
fn append_sync_reopen_fdatasync_fallback() {
    append_sync_reopen(SyncMode::Fdatasync);
}

#[test]
fn pwrite_appends_write_the_same_log() {
    let dir = tempfile::tempdir().unwrap();
    let pwrite = LogOptions {
        append_mode: AppendMode::Pwrite,
        ..options(SyncMode::IoUring)
    };
    let (mut log, _) = Log::open(dir.path(), pwrite.clone()).unwrap();
    let mut next = 1;
    for _ in 0..60 {
        log.append(&batch(next, 3, 1, 150)).unwrap();
        next += 3;
    }
    log.wait_durable().unwrap();
    check_entries(&log, 1, next - 1, 150);
    drop(log);
    let (mut log, report) = Log::open(dir.path(), options(SyncMode::IoUring)).unwrap();
    assert_eq!(report.torn_tail, None);
    check_entries(&log, 1, next - 1, 150);
    log.append(&batch(next, 3, 1, 150)).unwrap();
    log.wait_durable().unwrap();
    check_entries(&log, 1, next + 2, 150);
}

#[test]
fn truncate_inside_a_record_then_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = Log::open(dir.path(), options(SyncMode::IoUring)).unwrap();
    log.append(&batch(1, 5, 1, 10)).unwrap();
    log.append(&batch(6, 5, 1, 10)).unwrap();
    log.wait_durable().unwrap();
    log.truncate_from(LogIndex(8)).unwrap();
    assert_eq!(log.last_index(), LogIndex(7));
    assert_eq!(log.durable_index(), LogIndex(7));
    let views: Vec<_> = log.read(LogIndex(1), LogIndex(7)).unwrap().collect();
    assert_eq!(views.len(), 2);
    assert!(views[0].record.is_some());
    assert!(
        views[1].record.is_none(),
        "a clipped view has no whole record"
    );
    assert_eq!(views[1].entry_count, 2);
    assert!(matches!(
        log.append(&batch(9, 1, 2, 10)),
        Err(LogError::NotContiguous { .. })
    ));
    log.append(&batch(8, 3, 2, 10)).unwrap();
    log.wait_durable().unwrap();
    drop(log);
    let (log, report) = Log::open(dir.path(), options(SyncMode::IoUring)).unwrap();
    assert_eq!(report.last_index, LogIndex(10));
    assert_eq!(log.term_at(LogIndex(7)), Some(Term(1)));
    assert_eq!(log.term_at(LogIndex(8)), Some(Term(2)));
    check_entries(&log, 1, 10, 10);
}

#[test]
fn follower_path_appends_verified_records() {
    let dir = tempfile::tempdir().unwrap();
    let (mut leader, _) = Log::open(&dir.path().join("a"), options(SyncMode::IoUring)).unwrap();
    let (mut follower, _) = Log::open(&dir.path().join("b"), options(SyncMode::IoUring)).unwrap();
    leader.append(&batch(1, 3, 1, 30)).unwrap();
    leader.append(&batch(4, 3, 1, 30)).unwrap();
    for view in leader.read(LogIndex(1), LogIndex(6)).unwrap() {
        let record = view.record.unwrap();
        follower.append_record(record).unwrap();
        let mut two = record.to_vec();
        two.extend_from_slice(record);
        assert!(matches!(
            follower.append_record(&two),
            Err(LogError::BadRecord(_))
        ));
        let mut damaged = record.to_vec();
        damaged[70] ^= 1;
        assert!(matches!(
            follower.append_record(&damaged),
            Err(LogError::BadRecord(_))
        ));
    }
    follower.wait_durable().unwrap();
    check_entries(&follower, 1, 6, 30);
}

#[test]
fn compaction_recycles_segments_and_a_second_open_is_locked_out() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = Log::open(dir.path(), options(SyncMode::IoUring)).unwrap();
    assert!(matches!(
        Log::open(dir.path(), options(SyncMode::IoUring)),
        Err(LogError::Locked { .. })
    ));
    let mut next = 1;
    for _ in 0..100 {
        log.append(&batch(next, 4, 1, 200)).unwrap();
        next += 4;
    }
    log.wait_durable().unwrap();
    let activated = log.stats().segments_activated;
    log.compact_to(LogIndex(300)).unwrap();
    assert!(log.first_index() > LogIndex(200), "{}", log.first_index());
    assert!(log.stats().segments_recycled >= 3, "{:?}", log.stats());
    for _ in 0..100 {
        log.append(&batch(next, 4, 1, 200)).unwrap();
        next += 4;
    }
    log.wait_durable().unwrap();
    assert!(log.stats().segments_activated > activated);
    let first = log.first_index().get();
    check_entries(&log, first, next - 1, 200);
    drop(log);
    let (log, report) = Log::open(dir.path(), options(SyncMode::IoUring)).unwrap();
    assert_eq!(report.torn_tail, None);
    assert_eq!(report.last_index, LogIndex(next - 1));
    assert!(report.first_index.get() <= first);
    check_entries(&log, report.first_index.get(), next - 1, 200);
}

#[test]
fn the_log_can_move_to_its_storage_thread() {
    fn assert_send<T: Send>() {}
    assert_send::<Log>();
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = Log::open(dir.path(), options(SyncMode::IoUring)).unwrap();
    let handle = std::thread::spawn(move || {
        let mut log = log;
        log.append(&batch(1, 2, 1, 8)).unwrap();
        log.wait_durable().unwrap()
    });
    assert_eq!(handle.join().unwrap(), LogIndex(2));
}

#[test]
fn seal_writes_one_witness_and_reopens_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = Log::open(dir.path(), options(SyncMode::IoUring)).unwrap();
    log.append(&batch(1, 2, 1, 8)).unwrap();
    log.wait_durable().unwrap();
    log.seal().unwrap();
    log.seal().unwrap();
    assert_eq!(log.stats().seals, 1);
    log.append(&batch(3, 2, 1, 8)).unwrap();
    assert_eq!(log.close().unwrap(), LogIndex(4));
    let (log, report) = Log::open(dir.path(), options(SyncMode::IoUring)).unwrap();
    assert_eq!(report.torn_tail, None);
    assert_eq!(report.last_index, LogIndex(4));
    check_entries(&log, 1, 4, 8);
}

/// A node that forgot its term and vote could vote twice in one term: a hard-state file deleted
/// from a log that has held segments is refused, with a message saying what is wrong, not
/// recreated as term 0. A new log still gets a new file.
#[test]
fn a_deleted_hard_state_is_refused_once_the_log_has_held_segments() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = Log::open(dir.path(), options(SyncMode::Fdatasync)).unwrap();
    log.append(&batch(1, 1, 3, 10)).unwrap();
    log.save_hard_state(HardState {
        term: Term(3),
        vote: NodeId(1),
    })
    .unwrap();
    log.wait_durable().unwrap();
    drop(log);
    let path = dir.path().join("hard_state");
    std::fs::remove_file(&path).unwrap();
    let error = Log::open(dir.path(), options(SyncMode::Fdatasync))
        .err()
        .expect("a deleted hard state must be refused");
    let message = error.to_string();
    assert!(
        matches!(&error, LogError::HardStateMissing { file } if *file == path)
            && message.contains("is missing")
            && message.contains("may have voted"),
        "{message}"
    );
    assert!(!path.exists(), "the refused open created nothing");
}
