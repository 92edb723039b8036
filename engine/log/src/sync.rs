//! The sync engine: makes a set of files durable without blocking the caller.
//!
//! Up to a fixed number of sync *rounds* may be in flight at once (`LogOptions::syncs_in_flight`).
//! A round is a set of `fsync`/`fdatasync` operations (the segment byte ranges written since the
//! previous round, and the directory when a segment was renamed). With io_uring they are
//! submitted as `IORING_OP_FSYNC` entries tagged with the round's id and reaped from the
//! completion queue; where io_uring cannot be set up (or the fallback is forced) a pool of helper
//! threads, one per round in flight, runs plain `fdatasync`/`fsync` calls. The caller never
//! blocks in either mode unless it asks to wait, and can block on the syncer's [`Doorbell`]
//! (rung by the kernel itself for io_uring completions: its eventfd is registered with the
//! ring; by the helper threads in the fallback) to learn that a round may have completed.
//!
//! A caller with nothing else to do may ask for a round to be synced *inline*, on its own
//! thread, before `submit` returns, when no other round is running and the syncer allows it
//! (`inline_when_idle`): one thread hand-off less on each side of the sync (to the io_uring
//! worker or helper thread that runs it, and back to the caller when it completes), which is most
//! of what a sync costs beyond the disk's own flush when commits come one at a time. A busy
//! caller keeps submitting rounds that run while it writes. An inline sync is a whole-file
//! `fdatasync`: only right where no pages outside the written ranges are dirty (the log allows it
//! in pwrite append mode only).
//!
//! Rounds may complete in any order: this layer reports each round's outcome under its id and
//! leaves ordering to the log (durable only over a prefix of completed rounds, each after every
//! round that overlapped it: a writeback error is reported once per file description, maybe to
//! another round's sync, see `durable_log`, "Overlapping rounds"). A round succeeds
//! only when every operation of it succeeded; otherwise it reports the first errno and the caller
//! must treat the log as poisoned (never retried).

use std::collections::VecDeque;
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, Sender, TryRecvError};
use io_uring::{opcode, types, IoUring};

use crate::doorbell::Doorbell;

/// How the log makes its writes durable.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum SyncMode {
    /// io_uring `fsync(DATASYNC)`; falls back to [`SyncMode::Fdatasync`] (with one warning) when
    /// io_uring cannot be set up, e.g. under `kernel.io_uring_disabled`.
    #[default]
    IoUring,
    /// Plain `fdatasync` on a helper thread (the fallback, forced).
    Fdatasync,
    /// No sync at all: a round "completes" as soon as it is submitted. NOT DURABLE: a crash of
    /// the machine (not just of the process) loses acknowledged writes. For benchmarks that
    /// isolate everything but the disk, never for data anyone keeps.
    None,
}

impl SyncMode {
    /// The mechanism's name, as [`crate::Log::sync_mechanism`] reports the one in use.
    pub const fn name(self) -> &'static str {
        match self {
            SyncMode::IoUring => "io_uring",
            SyncMode::Fdatasync => "fdatasync",
            SyncMode::None => "none",
        }
    }
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

/// A round in flight on the ring.
struct UringRound {
    id: u64,
    pending: usize,
    first_errno: Option<i32>,
    /// Keeps the descriptors open while the kernel works on them.
    _targets: Vec<SyncTarget>,
}

enum Backend {
    /// [`SyncMode::None`]: rounds complete at once.
    Skip,
    Uring {
        ring: Box<IoUring>,
        rounds: Vec<UringRound>,
    },
    Thread {
        jobs: Option<Sender<(u64, Vec<SyncTarget>)>>,
        done: Receiver<(u64, Result<(), i32>)>,
        threads: Vec<JoinHandle<()>>,
        busy: usize,
    },
}

/// Most rounds a log may keep in flight.
pub const MAX_SYNCS_IN_FLIGHT: usize = 64;

/// Runs sync rounds, up to `max_in_flight` at a time.
pub(crate) struct Syncer {
    backend: Backend,
    max_in_flight: usize,
    /// Sync a round on the caller's thread when no other round is running.
    inline_when_idle: bool,
    next_id: u64,
    /// Completed rounds reaped from the ring but not yet handed out.
    ready: VecDeque<(u64, Result<(), i32>)>,
    doorbell: Arc<Doorbell>,
}

impl Syncer {
    /// A syncer in `mode`; with `inline_when_idle`, [`Syncer::submit`] may sync a round on the
    /// caller's thread (module docs). Fails only when its doorbell (an eventfd) cannot be
    /// created.
    pub fn new(mode: SyncMode, max_in_flight: usize, inline_when_idle: bool) -> io::Result<Syncer> {
        assert!(
            (1..=MAX_SYNCS_IN_FLIGHT).contains(&max_in_flight),
            "syncs in flight {max_in_flight} outside 1..={MAX_SYNCS_IN_FLIGHT}"
        );
        let doorbell = Arc::new(Doorbell::new()?);
        let syncer = |backend| Syncer {
            backend,
            max_in_flight,
            inline_when_idle,
            next_id: 1,
            ready: VecDeque::new(),
            doorbell: doorbell.clone(),
        };
        if mode == SyncMode::None {
            tracing::warn!(
                "log sync mode none: nothing is fsynced, a crash loses acknowledged writes"
            );
            return Ok(syncer(Backend::Skip));
        }
        if mode == SyncMode::IoUring {
            let entries = (4 * max_in_flight).next_power_of_two().max(16) as u32;
            let started = IoUring::new(entries).and_then(|ring| {
                ring.submitter().register_eventfd(doorbell.raw_fd())?;
                Ok(ring)
            });
            match started {
                Ok(ring) => {
                    return Ok(syncer(Backend::Uring {
                        ring: Box::new(ring),
                        rounds: Vec::with_capacity(max_in_flight),
                    }));
                }
                Err(err) => tracing::warn!(
                    error = %err,
                    "io_uring is unavailable; the log falls back to fdatasync on helper threads"
                ),
            }
        }
        let (jobs, job_rx) = crossbeam_channel::bounded::<(u64, Vec<SyncTarget>)>(max_in_flight);
        let (done_tx, done) = crossbeam_channel::bounded(max_in_flight);
        let threads = (0..max_in_flight)
            .map(|_| {
                let (job_rx, done_tx, doorbell) =
                    (job_rx.clone(), done_tx.clone(), doorbell.clone());
                std::thread::Builder::new()
                    .name("lockstep-log-sync".to_string())
                    .spawn(move || {
                        for (id, round) in job_rx {
                            let result = sync_now(&round);
                            drop(round);
                            if done_tx.send((id, result)).is_err() {
                                return;
                            }
                            doorbell.ring();
                        }
                    })
                    .expect("spawn a log sync thread")
            })
            .collect();
        Ok(syncer(Backend::Thread {
            jobs: Some(jobs),
            done,
            threads,
            busy: 0,
        }))
    }

    /// Whether rounds sync only the given ranges (io_uring) rather than whole files.
    pub fn syncs_ranges(&self) -> bool {
        matches!(self.backend, Backend::Uring { .. })
    }

    /// Which mechanism is in use: `"io_uring"`, `"fdatasync"` or `"none"`.
    pub fn mechanism(&self) -> &'static str {
        let mode = match self.backend {
            Backend::Skip => SyncMode::None,
            Backend::Uring { .. } => SyncMode::IoUring,
            Backend::Thread { .. } => SyncMode::Fdatasync,
        };
        mode.name()
    }

    /// Rung whenever a round may have completed (spuriously too; a completion after the last
    /// [`Syncer::poll`] always rings it, except that of a round synced inline, which has
    /// completed when [`Syncer::submit`] returns).
    pub fn doorbell(&self) -> &Arc<Doorbell> {
        &self.doorbell
    }

    /// Rounds submitted and not yet handed out by [`Syncer::poll`].
    pub fn in_flight(&self) -> usize {
        self.ready.len()
            + match &self.backend {
                Backend::Skip => 0,
                Backend::Uring { rounds, .. } => rounds.len(),
                Backend::Thread { busy, .. } => *busy,
            }
    }

    /// Whether another round may be submitted now.
    pub fn has_room(&self) -> bool {
        self.in_flight() < self.max_in_flight
    }

    /// Starts a round and returns its id (ids grow by one per round). With `idle` (the caller
    /// has nothing else to do), no other round running and inline syncs allowed, the round is
    /// synced on this thread and has completed when this returns. Must not be called without
    /// room (see [`Syncer::has_room`]).
    pub fn submit(&mut self, round: Vec<SyncTarget>, idle: bool) -> Result<u64, i32> {
        assert!(!round.is_empty(), "empty sync round");
        assert!(
            self.has_room(),
            "sync round submitted with {} of {} in flight",
            self.in_flight(),
            self.max_in_flight
        );
        let id = self.next_id;
        self.next_id += 1;
        let running = self.in_flight() - self.ready.len();
        match &mut self.backend {
            Backend::Skip => {
                drop(round);
                self.ready.push_back((id, Ok(())));
                self.doorbell.ring();
                Ok(id)
            }
            _ if idle && self.inline_when_idle && running == 0 => {
                // No ring: the caller learns of it at its next poll, which it makes before it
                // sleeps (it asked for this round knowing it had nothing else to do).
                let outcome = sync_now(&round);
                self.ready.push_back((id, outcome));
                Ok(id)
            }
            Backend::Uring { ring, rounds, .. } => {
                for target in &round {
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
                        .user_data(id);
                    // A round may touch more segments than the submission queue holds: hand
                    // the queued entries to the kernel to make room.
                    // SAFETY: the descriptor stays open until the round completes (kept in
                    // `rounds`), and the entry references no other memory.
                    while unsafe { ring.submission().push(&entry) }.is_err() {
                        if let Err(err) = ring.submit() {
                            if err.kind() != io::ErrorKind::Interrupted {
                                return Err(err.raw_os_error().unwrap_or(libc::EIO));
                            }
                        }
                    }
                }
                rounds.push(UringRound {
                    id,
                    pending: round.len(),
                    first_errno: None,
                    _targets: round,
                });
                loop {
                    match ring.submit() {
                        Ok(_) => return Ok(id),
                        Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                        // Nothing may complete: the caller poisons the log.
                        Err(err) => return Err(err.raw_os_error().unwrap_or(libc::EIO)),
                    }
                }
            }
            Backend::Thread { jobs, busy, .. } => {
                *busy += 1;
                jobs.as_ref()
                    .expect("sync threads running")
                    .send((id, round))
                    .map_err(|_| libc::EIO)?;
                Ok(id)
            }
        }
    }

    /// Hands out one completed round as `(id, outcome)`, in completion order (not submission
    /// order). `None` when none completed (or none is in flight); with `wait`, blocks until one
    /// completes unless none is in flight.
    pub fn poll(&mut self, wait: bool) -> Option<(u64, Result<(), i32>)> {
        if let Some(done) = self.ready.pop_front() {
            return Some(done);
        }
        match &mut self.backend {
            Backend::Skip => None,
            Backend::Uring { ring, rounds, .. } => loop {
                if rounds.is_empty() {
                    return None;
                }
                for cqe in ring.completion() {
                    let at = rounds
                        .iter()
                        .position(|round| round.id == cqe.user_data())
                        .unwrap_or_else(|| {
                            panic!("completion of unknown round {}", cqe.user_data())
                        });
                    let round = &mut rounds[at];
                    round.pending -= 1;
                    if cqe.result() < 0 && round.first_errno.is_none() {
                        round.first_errno = Some(-cqe.result());
                    }
                    if round.pending == 0 {
                        let round = rounds.remove(at);
                        self.ready
                            .push_back((round.id, round.first_errno.map_or(Ok(()), Err)));
                    }
                }
                if let Some(done) = self.ready.pop_front() {
                    return Some(done);
                }
                if !wait {
                    return None;
                }
                match ring.submit_and_wait(1) {
                    Ok(_) => {}
                    Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                    Err(err) => {
                        // The ring itself failed: every round's outcome is unknown.
                        let errno = err.raw_os_error().unwrap_or(libc::EIO);
                        for round in rounds.drain(..) {
                            self.ready.push_back((round.id, Err(errno)));
                        }
                    }
                }
            },
            Backend::Thread { done, busy, .. } => {
                if *busy == 0 {
                    return None;
                }
                let (id, result) = if wait {
                    done.recv().unwrap_or((0, Err(libc::EIO)))
                } else {
                    match done.try_recv() {
                        Ok(done) => done,
                        Err(TryRecvError::Empty) => return None,
                        Err(TryRecvError::Disconnected) => (0, Err(libc::EIO)),
                    }
                };
                *busy -= 1;
                Some((id, result))
            }
        }
    }
}

/// Syncs every target of a round on this thread; the first errno if one fails (the rest still
/// run: the caller poisons the log either way).
fn sync_now(round: &[SyncTarget]) -> Result<(), i32> {
    let mut first = Ok(());
    for target in round {
        let outcome = if target.datasync {
            target.file.sync_data()
        } else {
            target.file.sync_all()
        };
        if let (Ok(()), Err(err)) = (&first, outcome) {
            first = Err(err.raw_os_error().unwrap_or(libc::EIO));
        }
    }
    first
}

impl Drop for Syncer {
    fn drop(&mut self) {
        // Let rounds in flight finish so no descriptor is closed under the kernel's feet.
        while self.poll(true).is_some() {}
        if let Backend::Thread { jobs, threads, .. } = &mut self.backend {
            jobs.take();
            for thread in threads.drain(..) {
                let _ = thread.join();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::FromRawFd;

    fn pipe_end() -> Arc<File> {
        let mut fds = [0; 2];
        // SAFETY: `fds` has room for the two descriptors pipe() writes.
        assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
        // SAFETY: both descriptors were just created and are owned here; the write end is
        // closed at once (fsync on the read end fails with EINVAL either way).
        let (read, _write) = unsafe { (File::from_raw_fd(fds[0]), File::from_raw_fd(fds[1])) };
        Arc::new(read)
    }

    fn target(file: &Arc<File>, datasync: bool, range: Option<(u64, u32)>) -> SyncTarget {
        SyncTarget {
            file: file.clone(),
            datasync,
            range,
        }
    }

    fn round_trip(mode: SyncMode) -> &'static str {
        let dir = tempfile::tempdir().unwrap();
        let file = Arc::new(File::create(dir.path().join("f")).unwrap());
        let dir_file = Arc::new(File::open(dir.path()).unwrap());
        let mut syncer = Syncer::new(mode, 1, false).unwrap();
        assert_eq!(syncer.poll(false), None);
        let id = syncer
            .submit(
                vec![
                    target(&file, true, Some((0, 4096))),
                    target(&dir_file, false, None),
                ],
                false,
            )
            .unwrap();
        assert!(!syncer.has_room());
        assert_eq!(syncer.poll(true), Some((id, Ok(()))));
        assert_eq!(syncer.in_flight(), 0);
        assert!(
            syncer
                .doorbell()
                .wait(Some(std::time::Duration::from_secs(5)), || false),
            "a completion rings the doorbell"
        );
        syncer.mechanism()
    }

    #[test]
    fn every_mechanism_completes_rounds() {
        assert_eq!(round_trip(SyncMode::None), "none");
        assert_eq!(round_trip(SyncMode::Fdatasync), "fdatasync");
        let uring = round_trip(SyncMode::IoUring);
        assert!(uring == "io_uring" || uring == "fdatasync");
    }

    #[test]
    fn a_round_larger_than_the_submission_queue_completes() {
        let dir = tempfile::tempdir().unwrap();
        let files: Vec<Arc<File>> = (0..40)
            .map(|i| Arc::new(File::create(dir.path().join(format!("f{i}"))).unwrap()))
            .collect();
        for mode in [SyncMode::Fdatasync, SyncMode::IoUring] {
            let mut syncer = Syncer::new(mode, 1, false).unwrap();
            let round = files.iter().map(|f| target(f, true, None)).collect();
            let id = syncer.submit(round, false).unwrap();
            assert_eq!(syncer.poll(true), Some((id, Ok(()))), "{mode:?}");
        }
    }

    #[test]
    fn a_failing_sync_reports_its_errno() {
        // fsync on a pipe fails with EINVAL in both mechanisms.
        let read = pipe_end();
        for mode in [SyncMode::Fdatasync, SyncMode::IoUring] {
            let mut syncer = Syncer::new(mode, 1, false).unwrap();
            let id = syncer
                .submit(vec![target(&read, true, None)], false)
                .unwrap();
            assert_eq!(syncer.poll(true), Some((id, Err(libc::EINVAL))), "{mode:?}");
        }
    }

    #[test]
    fn several_rounds_in_flight_each_report_their_own_outcome() {
        let dir = tempfile::tempdir().unwrap();
        let file = Arc::new(File::create(dir.path().join("f")).unwrap());
        file.set_len(1 << 20).unwrap();
        let bad = pipe_end();
        for mode in [SyncMode::Fdatasync, SyncMode::IoUring] {
            let mut syncer = Syncer::new(mode, 4, false).unwrap();
            let mut expected = Vec::new();
            for round in 0..4u64 {
                let targets = if round == 2 {
                    vec![
                        target(&file, true, Some((8192, 4096))),
                        target(&bad, true, None),
                    ]
                } else {
                    vec![target(&file, true, Some((round * 4096, 4096)))]
                };
                let id = syncer.submit(targets, false).unwrap();
                let outcome = if round == 2 {
                    Err(libc::EINVAL)
                } else {
                    Ok(())
                };
                expected.push((id, outcome));
            }
            assert!(!syncer.has_room(), "{mode:?}");
            let mut seen = Vec::new();
            while let Some(done) = syncer.poll(true) {
                seen.push(done);
            }
            seen.sort_by_key(|&(id, _)| id);
            assert_eq!(seen, expected, "{mode:?}");
            assert_eq!(syncer.in_flight(), 0);
            assert!(syncer.has_room());
        }
    }

    #[test]
    fn an_idle_round_is_synced_inline_and_a_busy_one_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let file = Arc::new(File::create(dir.path().join("f")).unwrap());
        let bad = pipe_end();
        for mode in [SyncMode::Fdatasync, SyncMode::IoUring] {
            let mut syncer = Syncer::new(mode, 2, true).unwrap();
            // Idle: complete before submit returns, errors included; no doorbell ring (the
            // caller polls before it sleeps).
            for (targets, outcome) in [
                (vec![target(&file, true, Some((0, 4096)))], Ok(())),
                (vec![target(&bad, true, None)], Err(libc::EINVAL)),
            ] {
                let id = syncer.submit(targets, true).unwrap();
                assert!(
                    !syncer
                        .doorbell()
                        .wait(Some(std::time::Duration::ZERO), || false),
                    "{mode:?}"
                );
                assert_eq!(syncer.poll(false), Some((id, outcome)), "{mode:?}");
            }
            // Not idle: runs in the background; with one running, an idle round does too.
            let first = syncer
                .submit(vec![target(&file, true, None)], false)
                .unwrap();
            let second = syncer
                .submit(vec![target(&file, true, None)], true)
                .unwrap();
            let mut seen = vec![syncer.poll(true), syncer.poll(true)];
            seen.sort();
            assert_eq!(
                seen,
                vec![Some((first, Ok(()))), Some((second, Ok(())))],
                "{mode:?}"
            );
            assert_eq!(syncer.in_flight(), 0);
        }
        // Without inline syncs allowed, an idle round runs in the background too.
        let mut syncer = Syncer::new(SyncMode::IoUring, 1, false).unwrap();
        let id = syncer
            .submit(vec![target(&file, true, None)], true)
            .unwrap();
        assert_eq!(syncer.in_flight(), 1);
        assert_eq!(syncer.poll(true), Some((id, Ok(()))));
    }
}
