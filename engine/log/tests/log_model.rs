//! Property test: random sequences of append / truncate / compact / sync / close-and-reopen on
//! a real log (small segments, real files, real syncs) against a plain in-memory model. After
//! every step, every entry the log holds reads back exactly as the model says.
//!
//! `LOCKSTEP_LOG_CASES` sets the number of cases (default 24).

use lockstep_log::batch::{BatchBuilder, BatchKind};
use lockstep_log::types::{LogIndex, Term};
use lockstep_log::{AppendMode, Log, LogOptions, SyncMode};
use proptest::prelude::*;

#[derive(Clone, Debug)]
enum Op {
    Append {
        count: u8,
        size: u8,
    },
    Truncate {
        back: u8,
    },
    Compact {
        permille: u16,
    },
    Sync,
    /// Start a round without waiting, and reap whatever completed.
    RequestSync,
    /// Start a round as an idle caller (synced inline when none runs), and reap.
    RequestSyncIdle,
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (1u8..6, 0u8..200).prop_map(|(count, size)| Op::Append { count, size }),
        1 => (0u8..12).prop_map(|back| Op::Truncate { back }),
        1 => (0u16..1000).prop_map(|permille| Op::Compact { permille }),
        2 => Just(Op::Sync),
        2 => Just(Op::RequestSync),
        1 => Just(Op::RequestSyncIdle),
        1 => Just(Op::Reopen),
    ]
}

fn cases() -> u32 {
    std::env::var("LOCKSTEP_LOG_CASES")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(24)
}

/// The model: every entry ever appended at each index (index 1 at position 0), with its term.
struct Model {
    entries: Vec<(Term, Vec<u8>)>,
    /// Everything up to here may have been compacted away.
    compacted_to: u64,
    term: u64,
}

fn entry_bytes(index: u64, term: u64, size: u8) -> Vec<u8> {
    let mut entry = Vec::with_capacity(size as usize);
    for n in 0..size as u64 {
        entry.push((index * 31 + term * 7 + n) as u8);
    }
    entry
}

fn check(log: &Log, model: &Model) -> Result<(), TestCaseError> {
    let last = model.entries.len() as u64;
    prop_assert_eq!(log.last_index(), LogIndex(last));
    let first = log.first_index().get();
    prop_assert!(
        first >= 1 && first <= model.compacted_to + 1,
        "first {first}"
    );
    if first > last {
        return Ok(());
    }
    let mut expected = first;
    for (index, entry) in log.entries(LogIndex(first), LogIndex(last)).unwrap() {
        let (term, bytes) = &model.entries[(index.get() - 1) as usize];
        prop_assert_eq!(index.get(), expected);
        prop_assert_eq!(entry, bytes.as_slice(), "entry {}", index);
        prop_assert_eq!(log.term_at(index), Some(*term));
        expected += 1;
    }
    prop_assert_eq!(expected, last + 1);
    Ok(())
}

fn run(ops: Vec<Op>, mode: SyncMode, append_mode: AppendMode) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().unwrap();
    let options = LogOptions {
        segment_bytes: 8192,
        spare_segments: 1,
        sync_mode: mode,
        append_mode,
        // 1 (one round at a time) to 4 rounds in flight.
        syncs_in_flight: 1 + ops.len() % 4,
        sync_inline_when_idle: ops.len() % 3 != 0,
    };
    let (mut log, _) = Log::open(dir.path(), options.clone()).unwrap();
    let mut model = Model {
        entries: Vec::new(),
        compacted_to: 0,
        term: 1,
    };
    for op in ops {
        match op {
            Op::Append { count, size } => {
                let first = model.entries.len() as u64 + 1;
                let mut builder = BatchBuilder::default();
                for index in first..first + count as u64 {
                    let entry = entry_bytes(index, model.term, size);
                    builder.push(&entry);
                    model.entries.push((Term(model.term), entry));
                }
                let batch = builder.finish(Term(model.term), LogIndex(first), BatchKind::Normal);
                log.append(&batch).unwrap();
            }
            Op::Truncate { back } => {
                let last = model.entries.len() as u64;
                let from = last
                    .saturating_sub(back as u64)
                    .max(log.first_index().get());
                if from == 0 || from > last + 1 {
                    continue;
                }
                log.truncate_from(LogIndex(from)).unwrap();
                model.entries.truncate(from as usize - 1);
                model.term += 1;
            }
            Op::Compact { permille } => {
                let last = model.entries.len() as u64;
                let up_to = last * permille as u64 / 1000;
                log.compact_to(LogIndex(up_to)).unwrap();
                model.compacted_to = model.compacted_to.max(up_to);
            }
            Op::Sync => {
                let durable = log.wait_durable().unwrap();
                prop_assert_eq!(durable, LogIndex(model.entries.len() as u64));
            }
            Op::RequestSync | Op::RequestSyncIdle => {
                let before = log.durable_index();
                let inline = matches!(op, Op::RequestSyncIdle)
                    && options.sync_inline_when_idle
                    && append_mode == AppendMode::Pwrite
                    && log.syncs_in_flight() == 0;
                if matches!(op, Op::RequestSync) {
                    log.request_sync().unwrap();
                } else {
                    log.request_sync_idle().unwrap();
                }
                let polled = log.poll_durable().unwrap();
                if inline {
                    // Synced on this thread: everything appended is durable already.
                    prop_assert_eq!(log.durable_index(), LogIndex(model.entries.len() as u64));
                }
                prop_assert!(log.syncs_in_flight() <= options.syncs_in_flight);
                if let Some(durable) = polled {
                    prop_assert!(
                        durable >= before,
                        "durable {} fell below {}",
                        durable,
                        before
                    );
                }
                prop_assert!(log.durable_index() <= LogIndex(model.entries.len() as u64));
            }
            Op::Reopen => {
                drop(log);
                let (reopened, report) = Log::open(dir.path(), options.clone()).unwrap();
                prop_assert!(report.torn_tail.is_none(), "{:?}", report.torn_tail);
                log = reopened;
            }
        }
        check(&log, &model)?;
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    #[test]
    fn log_matches_the_model(ops in proptest::collection::vec(op(), 1..60)) {
        run(ops, SyncMode::IoUring, AppendMode::Mmap)?;
    }

    #[test]
    fn log_matches_the_model_with_pwrite_appends(ops in proptest::collection::vec(op(), 1..40)) {
        run(ops, SyncMode::IoUring, AppendMode::Pwrite)?;
    }

    #[test]
    fn log_matches_the_model_with_the_fallback_syncer(ops in proptest::collection::vec(op(), 1..40)) {
        run(ops, SyncMode::Fdatasync, AppendMode::Mmap)?;
    }
}
