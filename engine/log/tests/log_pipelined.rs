//! Several sync rounds in flight on real files with real syncs (io_uring and the fallback):
//! rounds overlap, segments switch and get recycled while rounds run on them, the durable index
//! never goes backwards nor past what was appended, and everything survives a reopen.

use lockstep_log::batch::{BatchBuilder, BatchKind};
use lockstep_log::types::{LogIndex, Term};
use lockstep_log::{BadLogOption, Log, LogError, LogOptions, SyncMode};

fn options(mode: SyncMode, syncs_in_flight: usize) -> LogOptions {
    LogOptions {
        segment_bytes: 16 << 10,
        sync_mode: mode,
        syncs_in_flight,
        ..LogOptions::default()
    }
}

fn entry(index: u64) -> [u8; 200] {
    let mut bytes = [0u8; 200];
    bytes[..8].copy_from_slice(&index.to_le_bytes());
    bytes
}

fn pipelined(mode: SyncMode) {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = Log::open(dir.path(), options(mode, 4)).unwrap();
    // The mode asked for is the one used: io_uring may not silently fall back here.
    assert_eq!(
        log.sync_mechanism(),
        mode.name(),
        "the log syncs with another mechanism"
    );
    let mut next = 1u64;
    let mut durable = LogIndex(0);
    let mut most_in_flight = 0;
    for round in 0..300u64 {
        let mut builder = BatchBuilder::default();
        let count = 1 + round % 5;
        for index in next..next + count {
            builder.push(&entry(index));
        }
        log.append(&builder.finish(Term(1), LogIndex(next), BatchKind::Normal))
            .unwrap();
        next += count;
        log.request_sync().unwrap();
        most_in_flight = most_in_flight.max(log.syncs_in_flight());
        assert!(log.syncs_in_flight() <= 4);
        if let Some(now) = log.poll_durable().unwrap() {
            assert!(now >= durable, "durable fell from {durable} to {now}");
            assert!(now < LogIndex(next));
            durable = now;
        }
        if round % 50 == 49 {
            // Compaction recycles only segments whose successor's first record is durable.
            log.compact_to(durable).unwrap();
        }
    }
    assert!(most_in_flight > 1, "rounds never overlapped ({mode:?})");
    let stats = log.stats();
    assert!(stats.segments_activated > 10, "{stats:?}");
    assert!(stats.segments_recycled > 0, "{stats:?}");
    let first = log.first_index();
    assert_eq!(log.close().unwrap(), LogIndex(next - 1));

    let (log, report) = Log::open(dir.path(), options(mode, 2)).unwrap();
    assert_eq!(report.torn_tail, None);
    assert_eq!(report.last_index, LogIndex(next - 1));
    assert!(log.first_index() <= first);
    for (index, bytes) in log.entries(first, LogIndex(next - 1)).unwrap() {
        assert_eq!(bytes, entry(index.get()));
    }
}

#[test]
fn rounds_overlap_with_io_uring() {
    pipelined(SyncMode::IoUring);
}

#[test]
fn rounds_overlap_with_the_fallback_syncer() {
    pipelined(SyncMode::Fdatasync);
}

#[test]
fn syncs_in_flight_is_checked() {
    let dir = tempfile::tempdir().unwrap();
    for bad in [0, 65] {
        match Log::open(dir.path(), options(SyncMode::IoUring, bad)) {
            Err(LogError::BadOptions(BadLogOption::SyncsInFlight(syncs))) => {
                assert_eq!(syncs, bad);
                let message = LogError::BadOptions(BadLogOption::SyncsInFlight(syncs)).to_string();
                assert!(message.contains("syncs_in_flight"), "{message}");
            }
            other => panic!(
                "syncs_in_flight {bad} accepted: {:?}",
                other.map(|(_, r)| r)
            ),
        }
    }
}
