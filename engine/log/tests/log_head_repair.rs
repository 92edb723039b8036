//! The log head on real files: every way a segment (or the head itself) can go missing is
//! noticed on open — refused by `Log::open`, repaired by `Log::open_for_repair` with a repair
//! whose extent is unknown (it waits for an entry of a newer term) — while compaction, resets
//! after a snapshot and logs written before the head existed open cleanly.

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use lockstep_log::batch::{Batch, BatchBuilder, BatchKind};
use lockstep_log::head::{read, HeadFound, HEAD_FILE};
use lockstep_log::repair::REPAIR_FILE;
use lockstep_log::segment::{
    live_segment_paths, parse_live_name, parse_spare_name, SEGMENT_HEADER_BYTES,
};
use lockstep_log::types::{LogIndex, NodeId, Term};
use lockstep_log::{HardState, Log, LogError, LogOptions};
use proptest::prelude::*;

fn batch(term: u64, first: u64, count: u64) -> Batch {
    let mut builder = BatchBuilder::default();
    for i in 0..count {
        builder.push(format!("entry {} {}", first + i, "x".repeat(40)).as_bytes());
    }
    builder.finish(Term(term), LogIndex(first), BatchKind::Normal)
}

fn options() -> LogOptions {
    LogOptions {
        segment_bytes: 8 << 10,
        ..LogOptions::default()
    }
}

fn live_segments(dir: &Path) -> Vec<PathBuf> {
    live_segment_paths(dir).unwrap()
}

/// A log of `records` synced records of 5 entries (term 1), left without `close` (a crash
/// after the last sync); returns its last index.
fn write_log(dir: &Path, records: u64) -> LogIndex {
    let (mut log, _) = Log::open(dir, options()).unwrap();
    log.save_hard_state(HardState {
        term: Term(1),
        vote: NodeId(1),
    })
    .unwrap();
    for record in 0..records {
        log.append(&batch(1, 1 + record * 5, 5)).unwrap();
        log.wait_durable().unwrap();
    }
    log.last_index()
}

fn corrupt_file(err: LogError) -> (PathBuf, LogIndex, String) {
    match err {
        LogError::Corrupt {
            file,
            index,
            reason,
            ..
        } => (file, index, reason),
        other => panic!("expected Corrupt, got {other}"),
    }
}

#[test]
fn a_new_log_writes_its_head_and_every_activation_names_the_new_segment() {
    let dir = tempfile::tempdir().unwrap();
    write_log(dir.path(), 60);
    let live = live_segments(dir.path());
    assert!(live.len() >= 3, "{live:?}");
    let HeadFound::Valid(head) = read(dir.path()).unwrap() else {
        panic!("no valid head")
    };
    let newest = live.last().unwrap().file_name().unwrap().to_str().unwrap();
    assert_eq!(Some(head.newest_seq), parse_live_name(newest));
    let (log, report) = Log::open(dir.path(), options()).unwrap();
    assert_eq!((report.last_index, report.repair), (LogIndex(300), None));
    drop(log);
}

#[test]
fn a_deleted_newest_segment_is_refused_and_repaired_until_a_newer_term_is_durable() {
    let dir = tempfile::tempdir().unwrap();
    write_log(dir.path(), 60);
    let newest = live_segments(dir.path()).pop().unwrap();
    std::fs::remove_file(&newest).unwrap();

    let (file, index, reason) = corrupt_file(Log::open(dir.path(), options()).err().unwrap());
    assert_eq!(file, newest);
    assert!(reason.contains("missing"), "{reason}");
    let held = index.prev();
    assert!(held < LogIndex(300), "{index}");

    let (mut log, report) = Log::open_for_repair(dir.path(), options()).unwrap();
    let damage = report.damage.expect("damage reported");
    assert!(damage.extent_unknown);
    assert_eq!(damage.file, newest);
    assert!(
        damage.to_string().contains("how many is unknown"),
        "{damage}"
    );
    let repair = report.repair.expect("a repair");
    assert_eq!((repair.until, repair.above_term), (held, Some(Term(1))));
    assert_eq!(log.last_index(), held);
    assert!(dir.path().join(REPAIR_FILE).exists());
    // Entries of the same term do not end it (the lost ones may reach further).
    log.append(&batch(1, held.get() + 1, 5)).unwrap();
    log.wait_durable().unwrap();
    assert!(log.repair().is_some());
    drop(log);

    // A crash now: the plain open finds a clean log (the head was rewritten), the marker
    // keeps the repair.
    let (mut log, report) = Log::open(dir.path(), options()).unwrap();
    assert_eq!(report.repair, Some(repair));
    // An entry of a newer term, durable, ends it.
    log.append(&batch(2, log.last_index().get() + 1, 1))
        .unwrap();
    log.wait_durable().unwrap();
    assert_eq!(log.repair(), None);
    assert!(!dir.path().join(REPAIR_FILE).exists());
}

#[test]
fn the_only_segment_deleted_restarts_an_empty_log_under_repair() {
    let dir = tempfile::tempdir().unwrap();
    write_log(dir.path(), 3);
    let live = live_segments(dir.path());
    assert_eq!(live.len(), 1);
    std::fs::remove_file(&live[0]).unwrap();
    assert!(Log::open(dir.path(), options()).is_err());
    let (log, report) = Log::open_for_repair(dir.path(), options()).unwrap();
    assert_eq!(report.last_index, LogIndex(0));
    let repair = report.repair.expect("a repair");
    assert_eq!(
        (repair.first_lost, repair.above_term),
        (LogIndex(1), Some(Term(1)))
    );
    drop(log);
    let (_, report) = Log::open(dir.path(), options()).unwrap();
    assert_eq!(report.repair, Some(repair));
}

#[test]
fn a_deleted_middle_segment_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    write_log(dir.path(), 60);
    let live = live_segments(dir.path());
    std::fs::remove_file(&live[1]).unwrap();
    let (_, _, reason) = corrupt_file(Log::open(dir.path(), options()).err().unwrap());
    assert!(
        reason.contains("missing") || reason.contains("durable"),
        "{reason}"
    );
    let (_, report) = Log::open_for_repair(dir.path(), options()).unwrap();
    assert!(report.repair.is_some());
}

#[test]
fn a_deleted_or_damaged_head_is_refused_and_repaired() {
    for damage in ["delete", "corrupt"] {
        let dir = tempfile::tempdir().unwrap();
        write_log(dir.path(), 20);
        let head = dir.path().join(HEAD_FILE);
        match damage {
            "delete" => std::fs::remove_file(&head).unwrap(),
            _ => {
                let file = std::fs::OpenOptions::new().write(true).open(&head).unwrap();
                file.write_all_at(&[0xff], 9).unwrap();
            }
        }
        let (file, _, reason) = corrupt_file(Log::open(dir.path(), options()).err().unwrap());
        assert_eq!(file, head, "{damage}: {reason}");
        let (log, report) = Log::open_for_repair(dir.path(), options()).unwrap();
        assert_eq!(report.last_index, LogIndex(100), "nothing found is cut");
        let repair = report.repair.expect("a repair");
        assert_eq!(repair.above_term, Some(Term(1)), "{damage}");
        drop(log);
        assert!(matches!(read(dir.path()).unwrap(), HeadFound::Valid(_)));
        let (_, report) = Log::open(dir.path(), options()).unwrap();
        assert_eq!(report.repair, Some(repair));
    }
}

/// Whether the header of the segment (or spare) at `path` carries the "keeps a head" flag.
fn flagged(path: &Path) -> bool {
    let mut header = [0u8; 64];
    std::fs::File::open(path)
        .unwrap()
        .read_exact_at(&mut header, 0)
        .unwrap();
    header[5] & 1 != 0
}

/// Clears the "keeps a head" flag in the header at `path`, as a version from before the head
/// wrote it (the checksum recomputed).
fn clear_flag(path: &Path) {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut header = [0u8; 64];
    file.read_exact_at(&mut header, 0).unwrap();
    header[5] = 0;
    let crc = crc32fast::hash(&header[..60]);
    header[60..64].copy_from_slice(&crc.to_le_bytes());
    file.write_all_at(&header, 0).unwrap();
}

/// Turns a log into one written before the head existed: no head, no flag in any header.
fn make_old(dir: &Path) {
    std::fs::remove_file(dir.join(HEAD_FILE)).unwrap();
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name().into_string().unwrap();
        if parse_live_name(&name).is_some() || parse_spare_name(&name).is_some() {
            clear_flag(&entry.path());
        }
    }
}

/// Opens (and so upgrades) an old log, then drops it without appending: no segment switch
/// flags anything.
fn upgrade(dir: &Path) {
    let (log, report) = Log::open(dir, options()).unwrap();
    assert_eq!(report.repair, None);
    drop(log);
}

#[test]
fn a_log_from_before_the_head_opens_and_gets_one() {
    let dir = tempfile::tempdir().unwrap();
    write_log(dir.path(), 60);
    make_old(dir.path());
    let (mut log, report) = Log::open(dir.path(), options()).unwrap();
    assert_eq!((report.last_index, report.repair), (LogIndex(300), None));
    assert!(matches!(read(dir.path()).unwrap(), HeadFound::Valid(_)));
    // Every live segment got the flag at the upgrade, before any segment switch.
    let live = live_segments(dir.path());
    assert!(live.len() >= 3, "{live:?}");
    assert!(live.iter().all(|path| flagged(path)), "{live:?}");
    // Old spares get the flag when they become live.
    for record in 0..20 {
        log.append(&batch(1, 301 + record * 5, 5)).unwrap();
    }
    log.close().unwrap();
    assert!(live_segments(dir.path()).iter().all(|path| flagged(path)));
    std::fs::remove_file(dir.path().join(HEAD_FILE)).unwrap();
    assert!(Log::open(dir.path(), options()).is_err());
}

/// The window an upgrade used to leave open (until the first segment switch, no live segment
/// carried the flag): a head deleted there, alone or with the oldest or the newest segment, is
/// refused and repaired like any deleted head.
#[test]
fn a_head_deleted_right_after_an_upgrade_is_refused_and_repaired() {
    for also_lost in [None, Some(0), Some(usize::MAX)] {
        let dir = tempfile::tempdir().unwrap();
        write_log(dir.path(), 60);
        make_old(dir.path());
        upgrade(dir.path());
        let head = dir.path().join(HEAD_FILE);
        std::fs::remove_file(&head).unwrap();
        if let Some(at) = also_lost {
            let live = live_segments(dir.path());
            std::fs::remove_file(&live[at.min(live.len() - 1)]).unwrap();
        }

        let (file, _, reason) = corrupt_file(Log::open(dir.path(), options()).err().unwrap());
        assert_eq!(file, head, "{also_lost:?}: {reason}");
        assert!(reason.contains("deleted"), "{reason}");

        let (log, report) = Log::open_for_repair(dir.path(), options()).unwrap();
        let repair = report.repair.expect("a repair");
        assert_eq!(repair.above_term, Some(Term(1)), "{also_lost:?}");
        if also_lost.is_none() {
            assert_eq!(report.last_index, LogIndex(300), "nothing found is cut");
        }
        drop(log);
        let (_, report) = Log::open(dir.path(), options()).unwrap();
        assert_eq!(report.repair, Some(repair));
    }
}

/// Open upgrades an old log by writing the head first and then flagging the live segments,
/// oldest first. A crash after the head and `k` flags: the next open finds a valid head, opens
/// cleanly and flags the rest; a head deleted before that open is refused once one segment
/// carries the flag. Only with no flag written yet (a crash right after the head, the head then
/// lost before the next open) does the log still pass for an old one, and upgrade again.
#[test]
fn an_upgrade_cut_by_a_crash_between_the_head_and_the_flags() {
    for k in 0.. {
        let dir = tempfile::tempdir().unwrap();
        write_log(dir.path(), 60);
        make_old(dir.path());
        upgrade(dir.path());
        let live = live_segments(dir.path());
        if k > live.len() {
            break;
        }
        for path in &live[k..] {
            clear_flag(path);
        }
        let head = dir.path().join(HEAD_FILE);
        let head_bytes = std::fs::read(&head).unwrap();

        std::fs::remove_file(&head).unwrap();
        match Log::open(dir.path(), options()) {
            Err(err) => assert_eq!(corrupt_file(err).0, head, "{k} flagged"),
            Ok((_, report)) => {
                assert_eq!(k, 0, "a deleted head passed with {k} segments flagged");
                assert_eq!((report.last_index, report.repair), (LogIndex(300), None));
            }
        }

        std::fs::write(&head, &head_bytes).unwrap();
        let (log, report) = Log::open(dir.path(), options()).unwrap();
        assert_eq!((report.last_index, report.repair), (LogIndex(300), None));
        drop(log);
        assert!(live.iter().all(|path| flagged(path)), "{k} flagged");
        std::fs::remove_file(&head).unwrap();
        assert!(Log::open(dir.path(), options()).is_err(), "{k} flagged");
    }
}

/// The seq in a live segment's name.
fn seq_of(path: &Path) -> u64 {
    parse_live_name(path.file_name().unwrap().to_str().unwrap()).unwrap()
}

/// Every live segment in `dir` is named above `seq` (a restarted log reused no seq up to it).
fn assert_segments_above(dir: &Path, seq: u64) {
    let live = live_segments(dir);
    assert!(
        live.iter().all(|path| seq_of(path) > seq),
        "a segment of the restarted log reuses a seq at or below {seq}: {live:?}"
    );
}

/// Compaction recycled the older segments into spares (which keep their old records until
/// overwritten), then the only live segment is deleted: the log restarted under repair must
/// take seqs above every seq its head named, or a spare reused as its new segment holds stale
/// records that look newer than the new ones, and the next open calls the log corrupt (found by
/// the chaos storage fault: `lockstep chaos --seed 4 --nemesis kill,storage`).
#[test]
fn a_log_restarted_after_losing_every_segment_never_reuses_a_seq() {
    let dir = tempfile::tempdir().unwrap();
    let last = write_log(dir.path(), 60);
    let (mut log, _) = Log::open(dir.path(), options()).unwrap();
    log.compact_to(last).unwrap();
    drop(log);
    let live = live_segments(dir.path());
    assert_eq!(live.len(), 1, "{live:?}");
    // Every record the spares hold is older than the deleted segment's first.
    let deleted_seq = seq_of(&live[0]);
    std::fs::remove_file(&live[0]).unwrap();
    let (mut log, report) = Log::open_for_repair(dir.path(), options()).unwrap();
    assert!(report.repair.is_some(), "{report:?}");
    for record in 0..4 {
        log.append(&batch(2, 1 + record * 5, 5)).unwrap();
        log.wait_durable().unwrap();
    }
    drop(log);
    // As after kill -9: the reopened log is whole, and names no damage.
    let (log, report) = Log::open(dir.path(), options()).unwrap();
    assert_eq!(
        (report.last_index, report.damage.is_none()),
        (LogIndex(20), true),
        "{report:?}"
    );
    assert_segments_above(dir.path(), deleted_seq);
    drop(log);
}

/// The newest segment's first record is damaged, so an open for repair keeps the segment
/// before it and recycles the damaged one, records and all, into a spare: its seqs are above
/// every seq the rewritten head names. If the kept segment is then lost too, the log restarted
/// with no segment must still take seqs above that spare's.
#[test]
fn a_restart_with_no_segment_takes_seqs_above_a_discarded_segment() {
    let dir = tempfile::tempdir().unwrap();
    let last = write_log(dir.path(), 60);
    let (mut log, _) = Log::open(dir.path(), options()).unwrap();
    log.compact_to(LogIndex(last.get() - 200)).unwrap();
    drop(log);
    let live = live_segments(dir.path());
    assert!(live.len() >= 2, "{live:?}");
    let discarded_seq = seq_of(live.last().unwrap());
    let newest = std::fs::OpenOptions::new()
        .write(true)
        .open(live.last().unwrap())
        .unwrap();
    newest
        .write_all_at(&[0xff; 8], SEGMENT_HEADER_BYTES as u64 + 16)
        .unwrap();
    drop(newest);
    let (log, report) = Log::open_for_repair(dir.path(), options()).unwrap();
    assert!(report.segments_discarded >= 1, "{report:?}");
    drop(log);
    for kept in live_segments(dir.path()) {
        std::fs::remove_file(kept).unwrap();
    }
    let (log, report) = Log::open_for_repair(dir.path(), options()).unwrap();
    assert!(report.repair.is_some(), "{report:?}");
    drop(log);
    assert_segments_above(dir.path(), discarded_seq);
    let (_, report) = Log::open(dir.path(), options()).unwrap();
    assert!(report.damage.is_none(), "{report:?}");
}

#[test]
fn compaction_and_reset_never_look_like_a_missing_segment() {
    let dir = tempfile::tempdir().unwrap();
    write_log(dir.path(), 60);
    let (mut log, _) = Log::open(dir.path(), options()).unwrap();
    let before = live_segments(dir.path()).len();
    log.compact_to(LogIndex(250)).unwrap();
    assert!(live_segments(dir.path()).len() < before);
    drop(log);
    let (mut log, report) = Log::open(dir.path(), options()).unwrap();
    assert_eq!((report.last_index, report.repair), (LogIndex(300), None));
    log.reset_after(LogIndex(500), Term(3)).unwrap();
    drop(log);
    let (_, report) = Log::open(dir.path(), options()).unwrap();
    assert_eq!((report.first_index, report.repair), (LogIndex(501), None));
}

/// Opens the damaged log in `dir` for repair: a repair must be recorded, and unless its extent
/// is unknown it must reach `last` (the log held up to there before the damage).
fn repair_never_shortens_silently(dir: &Path, last: LogIndex) -> Result<(), TestCaseError> {
    let (log, report) = Log::open_for_repair(dir, options()).unwrap();
    let repair = report.repair.expect("a repair");
    prop_assert!(
        repair.until >= log.last_index() && (repair.above_term.is_some() || repair.until >= last),
        "{repair:?} with last {last}, log now ends at {}",
        log.last_index()
    );
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("LOCKSTEP_LOG_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(24),
        ..ProptestConfig::default()
    })]

    /// Any live segment deleted from a log whose records were all synced: the plain open
    /// refuses, and the repair open never reports a repair-free log shorter than before.
    #[test]
    fn a_lost_segment_is_never_a_silently_shorter_log(
        records in 1u64..80,
        compact in 0u64..400,
        victim in any::<prop::sample::Index>(),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let last = write_log(dir.path(), records);
        {
            let (mut log, _) = Log::open(dir.path(), options()).unwrap();
            log.compact_to(LogIndex(compact.min(last.get()))).unwrap();
        }
        let live = live_segments(dir.path());
        let gone = &live[victim.index(live.len())];
        std::fs::remove_file(gone).unwrap();
        prop_assert!(Log::open(dir.path(), options()).is_err(), "{} deleted", gone.display());
        repair_never_shortens_silently(dir.path(), last)?;
    }

    /// A log written before the head existed (compacted or not), upgraded by open, that open
    /// possibly cut by a crash after the head and some of the flags, then reopened: a deleted
    /// head, alone or with any live segment, is refused, and the repair open never reports a
    /// repair-free log shorter than before.
    #[test]
    fn an_upgraded_log_never_lets_a_deleted_head_pass(
        records in 1u64..80,
        compact in 0u64..400,
        crash_after in any::<prop::sample::Index>(),
        victim in proptest::option::of(any::<prop::sample::Index>()),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let last = write_log(dir.path(), records);
        {
            let (mut log, _) = Log::open(dir.path(), options()).unwrap();
            log.compact_to(LogIndex(compact.min(last.get()))).unwrap();
        }
        make_old(dir.path());
        upgrade(dir.path());
        let live = live_segments(dir.path());
        for path in &live[crash_after.index(live.len() + 1)..] {
            clear_flag(path);
        }
        upgrade(dir.path());

        std::fs::remove_file(dir.path().join(HEAD_FILE)).unwrap();
        if let Some(victim) = victim.filter(|_| live.len() > 1) {
            std::fs::remove_file(&live[victim.index(live.len())]).unwrap();
        }
        prop_assert!(Log::open(dir.path(), options()).is_err());
        repair_never_shortens_silently(dir.path(), last)?;
    }
}

#[test]
fn a_cut_segment_is_refused_and_repaired_like_a_lost_one() {
    let dir = tempfile::tempdir().unwrap();
    // 70 records: the newest segment holds more than its first 4 KiB.
    let last = write_log(dir.path(), 70);
    let newest = live_segments(dir.path()).pop().unwrap();
    let full = std::fs::metadata(&newest).unwrap().len();
    let cut = 4096 + 100;
    std::fs::OpenOptions::new()
        .write(true)
        .open(&newest)
        .unwrap()
        .set_len(cut)
        .unwrap();

    let (file, _, reason) = corrupt_file(Log::open(dir.path(), options()).err().unwrap());
    assert_eq!(file, newest);
    assert!(reason.contains("cut or extended"), "{reason}");

    let (mut log, report) = Log::open_for_repair(dir.path(), options()).unwrap();
    let damage = report.damage.expect("damage reported");
    assert!(damage.extent_unknown, "{damage}");
    assert_eq!((damage.file.clone(), damage.offset), (newest.clone(), cut));
    assert!(damage.reason.contains("cut to 4196 bytes"), "{damage}");
    let held = log.last_index();
    assert!(held < last, "{held} {last}");
    let repair = report.repair.expect("a repair");
    assert_eq!((repair.until, repair.above_term), (held, Some(Term(1))));
    // The file has its full length again, and the log appends into it.
    assert_eq!(std::fs::metadata(&newest).unwrap().len(), full);
    log.append(&batch(1, held.get() + 1, 5)).unwrap();
    log.wait_durable().unwrap();
    assert!(log.repair().is_some());
    drop(log);

    // A crash now: the plain open finds a whole log, and the marker keeps the repair.
    let (log, report) = Log::open(dir.path(), options()).unwrap();
    assert_eq!(report.repair, Some(repair));
    assert_eq!(log.last_index(), LogIndex(held.get() + 5));
}
