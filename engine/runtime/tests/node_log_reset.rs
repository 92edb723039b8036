//! `Log::reset_after`, which the runtime uses to restart the log right after an installed
//! snapshot: what it leaves on disk and what a reopen finds.

use lockstep::batch::{Batch, BatchBuilder, BatchKind};
use lockstep::log::{Log, LogOptions};
use lockstep::types::{LogIndex, Term};

fn batch(term: u64, first: u64, count: u64) -> Batch {
    let mut builder = BatchBuilder::default();
    for i in 0..count {
        builder.push(format!("entry {}", first + i).as_bytes());
    }
    builder.finish(Term(term), LogIndex(first), BatchKind::Normal)
}

fn options() -> LogOptions {
    LogOptions {
        segment_bytes: 64 << 10,
        ..LogOptions::default()
    }
}

#[test]
fn reset_after_restarts_the_log_after_the_snapshot_and_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = Log::open(dir.path(), options()).unwrap();
    // Enough records to span several segments.
    let mut next = 1;
    while next < 3000 {
        log.append(&batch(2, next, 100)).unwrap();
        next += 100;
    }
    log.wait_durable().unwrap();
    log.reset_after(LogIndex(5000), Term(3)).unwrap();
    assert_eq!(log.first_index(), LogIndex(5001));
    assert_eq!(log.last_index(), LogIndex(5000));
    assert_eq!(log.last_term(), Term(3));
    assert_eq!(log.term_at(LogIndex(100)), None);
    assert!(
        log.append(&batch(3, 4000, 1)).is_err(),
        "must continue at 5001"
    );
    assert!(
        log.append(&batch(2, 5001, 1)).is_err(),
        "term may not go below 3"
    );
    log.append(&batch(3, 5001, 10)).unwrap();
    log.close().unwrap();

    let (log, report) = Log::open(dir.path(), options()).unwrap();
    assert!(report.torn_tail.is_none(), "{:?}", report.torn_tail);
    assert_eq!(
        (log.first_index(), log.last_index()),
        (LogIndex(5001), LogIndex(5010))
    );
    let entries: Vec<_> = log
        .entries(LogIndex(5001), LogIndex(5010))
        .unwrap()
        .map(|(index, bytes)| (index.get(), String::from_utf8(bytes.to_vec()).unwrap()))
        .collect();
    assert_eq!(entries[0], (5001, "entry 5001".to_string()));
    assert_eq!(entries.len(), 10);
}

#[test]
fn a_reset_log_with_nothing_appended_reopens_empty_after_the_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = Log::open(dir.path(), options()).unwrap();
    log.append(&batch(1, 1, 10)).unwrap();
    log.reset_after(LogIndex(50), Term(2)).unwrap();
    drop(log);
    // The reset's marker is durable before the old segments go: the reopened log is empty and
    // continues at 51.
    let (mut log, report) = Log::open(dir.path(), options()).unwrap();
    assert!(report.torn_tail.is_none(), "{:?}", report.torn_tail);
    assert_eq!(
        (log.first_index(), log.last_index()),
        (LogIndex(51), LogIndex(50))
    );
    assert_eq!(log.term_at(LogIndex(5)), None);
    log.append(&batch(2, 51, 3)).unwrap();
    log.close().unwrap();
    let (log, _) = Log::open(dir.path(), options()).unwrap();
    assert_eq!(
        (log.first_index(), log.last_index()),
        (LogIndex(51), LogIndex(53))
    );
}

#[test]
fn a_log_that_never_held_a_record_is_reset() {
    // A node that joins a cluster starts with an empty log and may get a snapshot first: the
    // reset's new segment must not take the name of the empty segment it replaces.
    for reopen_first in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _) = Log::open(dir.path(), options()).unwrap();
        if reopen_first {
            drop(log);
            log = Log::open(dir.path(), options()).unwrap().0;
        }
        log.reset_after(LogIndex(50), Term(2)).unwrap();
        log.append(&batch(2, 51, 3)).unwrap();
        log.close().unwrap();
        let (log, report) = Log::open(dir.path(), options()).unwrap();
        assert!(report.torn_tail.is_none(), "{:?}", report.torn_tail);
        assert_eq!(
            (log.first_index(), log.last_index()),
            (LogIndex(51), LogIndex(53))
        );
    }
}

#[test]
fn a_crash_inside_reset_leaves_the_old_prefix() {
    // A crash after the new segment got its live name but before the old segments were all
    // removed: reset, then put the oldest segment back as the crash would have left it.
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = Log::open(dir.path(), options()).unwrap();
    let mut next = 1;
    while next < 2000 {
        log.append(&batch(1, next, 100)).unwrap();
        next += 100;
    }
    log.wait_durable().unwrap();
    let mut old: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    old.sort();
    let first_old = old[0].clone();
    let saved = std::fs::read(&first_old).unwrap();
    log.reset_after(LogIndex(5000), Term(2)).unwrap();
    drop(log);
    std::fs::write(&first_old, saved).unwrap();
    let (log, _) = Log::open(dir.path(), options()).unwrap();
    assert_eq!(
        log.first_index(),
        LogIndex(1),
        "the old prefix is what recovery finds"
    );
    assert!(log.last_index() <= LogIndex(2000), "{:?}", log.last_index());
}
