//! The raw baseline: `pwrite` + `fdatasync` into a preallocated, zero-filled file.
//!
//! This is the fastest a plain program can make the same bytes durable on this disk, written
//! the way lockstep's log writes them: into blocks that already hold data (zero-filled ahead),
//! so the filesystem never converts unwritten extents or grows the file on the hot path. The
//! file is written cyclically, like a log whose segments are recycled.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::{Duration, Instant};

use super::phase::PhaseResult;

/// Bytes written per call while zero-filling.
const FILL_CHUNK_BYTES: usize = 1 << 20;

/// A preallocated, zero-filled file that the baseline loop overwrites in a cycle.
pub struct BaselineFile {
    file: File,
    file_bytes: u64,
}

impl BaselineFile {
    /// Creates (or replaces) `path` as `file_bytes` bytes of zeros, written and made durable.
    pub fn create(path: &Path, file_bytes: u64) -> io::Result<BaselineFile> {
        assert!(file_bytes > 0, "baseline file of 0 bytes");
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)?;
        let zeros = vec![0u8; FILL_CHUNK_BYTES];
        let mut offset = 0u64;
        while offset < file_bytes {
            let len = (file_bytes - offset).min(FILL_CHUNK_BYTES as u64) as usize;
            file.write_all_at(&zeros[..len], offset)?;
            offset += len as u64;
        }
        file.sync_all()?;
        if let Some(parent) = path.parent() {
            File::open(parent)?.sync_all()?;
        }
        Ok(BaselineFile { file, file_bytes })
    }

    /// Writes `write_bytes` per `pwrite`, calls `fdatasync` after every `writes_per_sync`
    /// writes, and stops at the first sync that ends after `duration`.
    ///
    /// Every write counts as one batch of `entries_per_write` entries; its latency runs from
    /// the start of its `pwrite` to the end of the `fdatasync` that covered it.
    pub fn run(
        &self,
        write_bytes: usize,
        entries_per_write: u64,
        writes_per_sync: usize,
        duration: Duration,
    ) -> io::Result<PhaseResult> {
        assert!(
            write_bytes > 0 && write_bytes as u64 <= self.file_bytes,
            "write of {write_bytes} bytes into a file of {}",
            self.file_bytes
        );
        assert!(writes_per_sync >= 1, "writes_per_sync {writes_per_sync}");
        // Non-zero content, so nothing along the way can recognise the writes as zeros.
        let buffer: Vec<u8> = (0..write_bytes).map(|i| (i % 251) as u8 + 1).collect();
        let mut write_started = Vec::with_capacity(writes_per_sync);
        let mut result = PhaseResult::new();
        let mut offset = 0u64;
        let start = Instant::now();
        loop {
            write_started.clear();
            for _ in 0..writes_per_sync {
                if offset + write_bytes as u64 > self.file_bytes {
                    offset = 0;
                }
                write_started.push(Instant::now());
                self.file.write_all_at(&buffer, offset)?;
                offset += write_bytes as u64;
            }
            self.file.sync_data()?;
            let durable = Instant::now();
            result.syncs += 1;
            for started in &write_started {
                result.record_durable(entries_per_write, write_bytes as u64, durable - *started);
            }
            if durable - start >= duration {
                result.elapsed = durable - start;
                return Ok(result);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn baseline_writes_and_syncs() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("baseline");
        let file = BaselineFile::create(&path, 1 << 20).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 1 << 20);
        let result = file.run(300_000, 7, 2, Duration::from_millis(20)).unwrap();
        assert!(result.syncs >= 1);
        assert_eq!(result.batches, result.syncs * 2);
        assert_eq!(result.entries, result.batches * 7);
        assert_eq!(result.bytes, result.batches * 300_000);
        assert!(result.mb_per_sec() > 0.0);
        // Wrapped around: the file did not grow.
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 1 << 20);
    }
}
