//! `Log::open_for_repair` on real files: a log damaged before its tail is cut at the damage,
//! the repair marker is written before anything is cut and survives reopening (a crash during
//! the repair), and it goes away once the log is durable up to the index it held.

use std::os::unix::fs::FileExt;
use std::path::Path;

use lockstep::batch::{Batch, BatchBuilder, BatchKind};
use lockstep::log::inspect::inspect;
use lockstep::log::repair::{RepairState, REPAIR_FILE};
use lockstep::log::{Log, LogError, LogOptions};
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
        segment_bytes: 16 << 10,
        ..LogOptions::default()
    }
}

/// Flips one bit inside the payload of the record holding `index`.
fn damage_record_of(dir: &Path, index: u64) {
    let inspection = inspect(dir).unwrap();
    let listed = inspection
        .batches(index, index)
        .next()
        .expect("a record holds the index");
    let at = listed.span.offset as u64 + 64 + 6;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(listed.path)
        .unwrap();
    let mut byte = [0u8];
    file.read_exact_at(&mut byte, at).unwrap();
    byte[0] ^= 0x20;
    file.write_all_at(&byte, at).unwrap();
}

#[test]
fn repair_open_cuts_the_damage_keeps_the_marker_until_the_range_is_durable_again() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = Log::open(dir.path(), options()).unwrap();
    // 40 records of 10 entries across several segments, each synced (so each is witnessed).
    for record in 0..40 {
        log.append(&batch(1, 1 + record * 10, 10)).unwrap();
        log.wait_durable().unwrap();
    }
    log.close().unwrap();
    damage_record_of(dir.path(), 105);

    // The ordinary open refuses, naming the file, the offset and the first lost index.
    let refused = Log::open(dir.path(), options()).err().expect("refused");
    match &refused {
        LogError::Corrupt { index, .. } => assert_eq!(*index, LogIndex(101)),
        other => panic!("expected Corrupt, got {other}"),
    }

    let (log, report) = Log::open_for_repair(dir.path(), options()).unwrap();
    let damage = report.damage.clone().expect("damage reported");
    assert_eq!(
        (damage.index, damage.last_index_claimed),
        (LogIndex(101), LogIndex(400))
    );
    assert!(damage.to_string().contains("101..=400"), "{damage}");
    let expected = RepairState {
        first_lost: LogIndex(101),
        until: LogIndex(400),
        above_term: None,
    };
    assert_eq!(report.repair, Some(expected));
    assert_eq!(log.last_index(), LogIndex(100));
    assert!(dir.path().join(REPAIR_FILE).exists());
    drop(log);

    // A crash before any repair: the marker remembers the range although the evidence (the
    // records after the damage) is gone and the log now opens clean.
    let (mut log, report) = Log::open(dir.path(), options()).unwrap();
    assert_eq!((report.damage, report.repair), (None, Some(expected)));
    assert_eq!(log.last_index(), LogIndex(100));
    // Entries come back (from a leader, in a node) in another term; up to 399 is not enough.
    log.append(&batch(2, 101, 299)).unwrap();
    log.wait_durable().unwrap();
    assert_eq!(log.repair(), Some(expected));
    log.append(&batch(2, 400, 5)).unwrap();
    log.wait_durable().unwrap();
    assert_eq!(log.repair(), None);
    assert!(!dir.path().join(REPAIR_FILE).exists());
    log.close().unwrap();

    let (log, report) = Log::open(dir.path(), options()).unwrap();
    assert_eq!((report.repair, log.last_index()), (None, LogIndex(404)));
    let (index, bytes) = log
        .entries(LogIndex(250), LogIndex(250))
        .unwrap()
        .next()
        .unwrap();
    assert_eq!((index, bytes), (LogIndex(250), &b"entry 250"[..]));
    assert_eq!(log.term_at(LogIndex(100)), Some(Term(1)));
}

#[test]
fn repair_open_of_a_damaged_first_record_restarts_the_log_empty() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = Log::open(dir.path(), options()).unwrap();
    for record in 0..5 {
        log.append(&batch(1, 1 + record * 3, 3)).unwrap();
        log.wait_durable().unwrap();
    }
    log.close().unwrap();
    damage_record_of(dir.path(), 1);
    let (mut log, report) = Log::open_for_repair(dir.path(), options()).unwrap();
    assert_eq!(
        report.repair,
        Some(RepairState {
            first_lost: LogIndex(1),
            until: LogIndex(15),
            above_term: None,
        })
    );
    assert_eq!(
        (log.first_index(), log.last_index()),
        (LogIndex(1), LogIndex(0))
    );
    log.append(&batch(3, 1, 20)).unwrap();
    log.close().unwrap();
    let (log, report) = Log::open(dir.path(), options()).unwrap();
    assert_eq!((report.repair, report.torn_tail), (None, None));
    assert_eq!(log.last_index(), LogIndex(20));
}
