//! The sync engine: makes a set of files durable without blocking the caller.
//!
//! One sync *round* is in flight at a time: a set of `fsync`/`fdatasync` operations (the segment
//! files written since the previous round, and the directory when a segment was renamed). With
//! io_uring they are submitted as `IORING_OP_FSYNC` entries and reaped from the completion queue;
//! where io_uring cannot be set up (or the fallback is forced) a helper thread runs plain
//! `fdatasync`/`fsync` calls, so the caller never blocks in either mode unless it asks to wait.
//!
//! A round succeeds only when every operation of it succeeded; otherwise it reports the first
//! errno and the caller must treat the log as poisoned (never retried).

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, Sender};
use io_uring::{opcode, types, IoUring};

/// How the log makes its writes durable.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum SyncMode {
    /// io_uring `fsync(DATASYNC)`; falls back to [`SyncMode::Fdatasync`] (with one warning) when
    /// io_uring cannot be set up, e.g. under `kernel.io_uring_disabled`.
    #[default]
    IoUring,
    /// Plain `fdatasync` on a helper thread (the fallback, forced).
    Fdatasync,
}

/// One file to sync in a round.
pub(crate) struct SyncTarget {
    pub file: Arc<File>,
    /// `fdatasync` (true) or full `fsync` (false, for directories).
    pub datasync: bool,
    /// The byte range written since the last round, `(offset, len)`. io_uring syncs only this
    /// range (`vfs_fsync_range`), so dirty pages outside it (pre-faulted pages ahead of the
    /// write cursor) are not written back; the fallback syncs the whole file.
    pub range: Option<(u64, u32)>,
}

enum Backend {
    Uring {
        ring: Box<IoUring>,
        pending: usize,
        first_errno: Option<i32>,
        /// Keeps the descriptors open while the kernel works on them.
        targets: Vec<SyncTarget>,
    },
    Thread {
        jobs: Option<Sender<Vec<SyncTarget>>>,
        done: Receiver<Result<(), i32>>,
        thread: Option<JoinHandle<()>>,
        busy: bool,
    },
}

/// Runs sync rounds, one at a time.
pub(crate) struct Syncer {
    backend: Backend,
}

impl Syncer {
    pub fn new(mode: SyncMode) -> Syncer {
        if mode == SyncMode::IoUring {
            match IoUring::new(16) {
                Ok(ring) => {
                    return Syncer {
                        backend: Backend::Uring {
                            ring: Box::new(ring),
                            pending: 0,
                            first_errno: None,
                            targets: Vec::new(),
                        },
                    }
                }
                Err(err) => tracing::warn!(
                    error = %err,
                    "io_uring is unavailable; the log falls back to fdatasync on a helper thread"
                ),
            }
        }
        let (jobs, job_rx) = crossbeam_channel::bounded::<Vec<SyncTarget>>(1);
        let (done_tx, done) = crossbeam_channel::bounded(1);
        let thread = std::thread::Builder::new()
            .name("lockstep-log-sync".to_string())
            .spawn(move || {
                for round in job_rx {
                    let result = round.iter().try_for_each(|target| {
                        let outcome = if target.datasync {
                            target.file.sync_data()
                        } else {
                            target.file.sync_all()
                        };
                        outcome.map_err(|err| err.raw_os_error().unwrap_or(libc::EIO))
                    });
                    if done_tx.send(result).is_err() {
                        return;
                    }
                }
            })
            .expect("spawn the log sync thread");
        Syncer {
            backend: Backend::Thread {
                jobs: Some(jobs),
                done,
                thread: Some(thread),
                busy: false,
            },
        }
    }

    /// Whether rounds sync only the given ranges (io_uring) rather than whole files.
    pub fn syncs_ranges(&self) -> bool {
        matches!(self.backend, Backend::Uring { .. })
    }

    /// Which mechanism is in use: `"io_uring"` or `"fdatasync"`.
    pub fn mechanism(&self) -> &'static str {
        match self.backend {
            Backend::Uring { .. } => "io_uring",
            Backend::Thread { .. } => "fdatasync",
        }
    }

    /// Starts a round. Must not be called while one is in flight.
    pub fn submit(&mut self, round: Vec<SyncTarget>) -> Result<(), i32> {
        assert!(!round.is_empty(), "empty sync round");
        match &mut self.backend {
            Backend::Uring {
                ring,
                pending,
                first_errno,
                targets,
            } => {
                assert_eq!(*pending, 0, "sync round submitted while one is in flight");
                *first_errno = None;
                for (slot, target) in round.iter().enumerate() {
                    let flags = if target.datasync {
                        types::FsyncFlags::DATASYNC
                    } else {
                        types::FsyncFlags::empty()
                    };
                    let (offset, len) = target.range.unwrap_or((0, 0));
                    let entry = opcode::Fsync::new(types::Fd(target.file.as_raw_fd()))
                        .flags(flags)
                        .offset(offset)
                        .len(len)
                        .build()
                        .user_data(slot as u64);
                    // SAFETY: the descriptor stays open until the round completes (kept in
                    // `targets`), and the entry references no other memory.
                    unsafe { ring.submission().push(&entry) }
                        .expect("sync round larger than the ring");
                }
                *pending = round.len();
                *targets = round;
                loop {
                    match ring.submit() {
                        Ok(_) => return Ok(()),
                        Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                        Err(err) => {
                            // Nothing will complete: the caller poisons the log.
                            *pending = 0;
                            return Err(err.raw_os_error().unwrap_or(libc::EIO));
                        }
                    }
                }
            }
            Backend::Thread { jobs, busy, .. } => {
                assert!(!*busy, "sync round submitted while one is in flight");
                *busy = true;
                jobs.as_ref()
                    .expect("sync thread running")
                    .send(round)
                    .map_err(|_| libc::EIO)
            }
        }
    }

    /// Whether a round is in flight.
    pub fn busy(&self) -> bool {
        match &self.backend {
            Backend::Uring { pending, .. } => *pending > 0,
            Backend::Thread { busy, .. } => *busy,
        }
    }

    /// Reaps the round in flight: `Some(result)` once it completed, `None` while it runs (or
    /// when none is in flight). With `wait`, blocks until it completes.
    pub fn poll(&mut self, wait: bool) -> Option<Result<(), i32>> {
        if !self.busy() {
            return None;
        }
        match &mut self.backend {
            Backend::Uring {
                ring,
                pending,
                first_errno,
                targets,
            } => {
                loop {
                    for cqe in ring.completion() {
                        assert!(
                            (cqe.user_data() as usize) < targets.len(),
                            "unknown completion {}",
                            cqe.user_data()
                        );
                        *pending -= 1;
                        if cqe.result() < 0 && first_errno.is_none() {
                            *first_errno = Some(-cqe.result());
                        }
                    }
                    if *pending == 0 {
                        targets.clear();
                        return Some(first_errno.map_or(Ok(()), Err));
                    }
                    if !wait {
                        return None;
                    }
                    match ring.submit_and_wait(1) {
                        Ok(_) => {}
                        Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                        Err(err) => {
                            // The ring itself failed; the round's outcome is unknown.
                            *pending = 0;
                            targets.clear();
                            return Some(Err(err.raw_os_error().unwrap_or(libc::EIO)));
                        }
                    }
                }
            }
            Backend::Thread { done, busy, .. } => {
                let result = if wait {
                    done.recv().map_err(|_| libc::EIO)
                } else {
                    match done.try_recv() {
                        Ok(result) => Ok(result),
                        Err(crossbeam_channel::TryRecvError::Empty) => return None,
                        Err(crossbeam_channel::TryRecvError::Disconnected) => Err(libc::EIO),
                    }
                };
                *busy = false;
                Some(result.and_then(|outcome| outcome))
            }
        }
    }
}

impl Drop for Syncer {
    fn drop(&mut self) {
        // Let a round in flight finish so no descriptor is closed under the kernel's feet.
        if self.busy() {
            let _ = self.poll(true);
        }
        if let Backend::Thread { jobs, thread, .. } = &mut self.backend {
            jobs.take();
            if let Some(thread) = thread.take() {
                let _ = thread.join();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(mode: SyncMode) -> &'static str {
        let dir = tempfile::tempdir().unwrap();
        let file = Arc::new(File::create(dir.path().join("f")).unwrap());
        let mut syncer = Syncer::new(mode);
        assert_eq!(syncer.poll(false), None);
        syncer
            .submit(vec![
                SyncTarget {
                    file: file.clone(),
                    datasync: true,
                    range: Some((0, 4096)),
                },
                SyncTarget {
                    file: Arc::new(File::open(dir.path()).unwrap()),
                    datasync: false,
                    range: None,
                },
            ])
            .unwrap();
        assert!(syncer.busy());
        assert_eq!(syncer.poll(true), Some(Ok(())));
        assert!(!syncer.busy());
        syncer.mechanism()
    }

    #[test]
    fn both_mechanisms_complete_rounds() {
        assert_eq!(round_trip(SyncMode::Fdatasync), "fdatasync");
        let uring = round_trip(SyncMode::IoUring);
        assert!(uring == "io_uring" || uring == "fdatasync");
    }

    #[test]
    fn a_failing_sync_reports_its_errno() {
        // fsync on a pipe fails with EINVAL in both mechanisms.
        let mut fds = [0; 2];
        // SAFETY: `fds` has room for the two descriptors pipe() writes.
        assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
        // SAFETY: both descriptors were just created and are owned here.
        let (read, write) = unsafe {
            use std::os::fd::FromRawFd;
            (File::from_raw_fd(fds[0]), File::from_raw_fd(fds[1]))
        };
        let read = Arc::new(read);
        for mode in [SyncMode::Fdatasync, SyncMode::IoUring] {
            let mut syncer = Syncer::new(mode);
            syncer
                .submit(vec![SyncTarget {
                    file: read.clone(),
                    datasync: true,
                    range: None,
                }])
                .unwrap();
            assert_eq!(syncer.poll(true), Some(Err(libc::EINVAL)), "{mode:?}");
        }
        drop(write);
    }
}
