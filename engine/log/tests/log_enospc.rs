//! Disk full while preparing a segment: appends fail with `LogError::NoSpace`, everything
//! durable stays readable (also after a reopen), and appends resume once compaction frees a
//! segment. Runs on a small tmpfs it mounts itself, so it needs root; it says so and passes
//! when it cannot mount.

use std::path::{Path, PathBuf};
use std::process::Command;

use lockstep_log::batch::{BatchBuilder, BatchKind};
use lockstep_log::types::{LogIndex, Term};
use lockstep_log::{Log, LogError, LogOptions, SyncMode};

struct Mounted(PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

fn mount_small_tmpfs(at: &Path, bytes: u64) -> Option<Mounted> {
    std::fs::create_dir_all(at).ok()?;
    let status = Command::new("mount")
        .args(["-t", "tmpfs", "-o", &format!("size={bytes}"), "tmpfs"])
        .arg(at)
        .status()
        .ok()?;
    status.success().then(|| Mounted(at.to_path_buf()))
}

fn append(log: &mut Log, index: u64) -> Result<LogIndex, LogError> {
    let mut builder = BatchBuilder::default();
    builder.push(&[index as u8; 3000]);
    log.append(&builder.finish(Term(1), LogIndex(index), BatchKind::Normal))
}

#[test]
fn disk_full_is_a_clear_error_and_durable_data_stays_readable() {
    let base = tempfile::tempdir().unwrap();
    let Some(mounted) = mount_small_tmpfs(&base.path().join("small"), 400 << 10) else {
        eprintln!("skipped: cannot mount a small tmpfs here (needs root)");
        return;
    };
    let dir = mounted.0.join("log");
    let options = LogOptions {
        segment_bytes: 64 << 10,
        spare_segments: 1,
        sync_mode: SyncMode::IoUring,
        ..LogOptions::default()
    };
    let (mut log, _) = Log::open(&dir, options.clone()).unwrap();
    let mut next = 1;
    let full = loop {
        assert!(next < 1000, "the small filesystem never filled up");
        match append(&mut log, next) {
            Ok(_) => {
                log.wait_durable().unwrap();
                next += 1;
            }
            Err(err) => break err,
        }
    };
    assert!(
        matches!(full, LogError::NoSpace { segment_bytes } if segment_bytes == 64 << 10),
        "{full}"
    );
    assert!(
        full.to_string().contains("durable data is intact"),
        "{full}"
    );
    let durable = log.durable_index().get();
    assert_eq!(durable, next - 1);
    for (index, entry) in log.entries(LogIndex(1), LogIndex(durable)).unwrap() {
        assert_eq!(entry, &[index.get() as u8; 3000][..]);
    }
    drop(log);

    let (mut log, report) = Log::open(&dir, options).unwrap();
    assert_eq!(report.last_index, LogIndex(durable));
    for (index, entry) in log.entries(LogIndex(1), LogIndex(durable)).unwrap() {
        assert_eq!(entry, &[index.get() as u8; 3000][..]);
    }
    // Compaction recycles full segments into spares: appends resume without new space.
    log.compact_to(LogIndex(durable)).unwrap();
    assert!(log.stats().segments_recycled >= 1, "{:?}", log.stats());
    for index in durable + 1..durable + 40 {
        append(&mut log, index).unwrap();
        log.wait_durable().unwrap();
    }
}
