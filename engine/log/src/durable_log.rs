//! [`Log`]: the durable log a single storage thread owns.
//!
//! It owns the live segments (mapped), the in-memory index of records, the sync engine, the
//! spare preparer and the hard-state file. Appends copy a record into the mapping and return;
//! [`Log::request_sync`] starts a sync round covering everything appended since the previous one,
//! unless [`LogOptions::syncs_in_flight`] rounds are already in flight (group commit: then the
//! next round starts when one completes), and [`Log::poll_durable`] / [`Log::wait_durable`] reap
//! them. Rounds may complete in any order; the durable point only advances over a prefix of
//! completed rounds. A failed sync, in whichever round, poisons the log for good. See the module docs of [`crate::log`] for the
//! big picture and `docs/FORMATS.md` for the bytes.
//!
//! Overlapping rounds: all rounds sync a segment through the one open file description of it,
//! and Linux reports a writeback error once per description, to whichever sync checks first.
//! Round k's pages may fail while round k+1 runs: round k+1 then reports the error and round k
//! succeeds. So round k counts durable only once it and every round submitted before its
//! completion was seen have succeeded (oldest first, as always). A round submitted later cannot
//! have taken round k's error: round k's own sync checked for it after its pages were written
//! back. Under load this holds a completed round back until the rounds beside it complete (at
//! most [`LogOptions::syncs_in_flight`] − 1 of them), never longer.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::batch::{entry_offset, Batch, BatchKind, Entries};
use crate::disk;
use crate::doorbell::Doorbell;
use crate::error::{BadLogOption, LogError};
use crate::hard_state::{HardState, HardStateFile};
use crate::head::{self, Head, HeadFound};
use crate::preparer::{Preparer, Spare};
use crate::record::{
    batch_header, stored_bytes, truncate_header, verify_wire_record, write_header, ChainFields,
    RecordHeader, RecordKind, Seal, RECORD_ALIGN, RECORD_HEADER_BYTES,
};
use crate::recovery::{highest_seq, recover_files, void_from, RecordSpan};
use crate::repair::{self, DamageReport, RepairState};
use crate::segment::{
    check_segment_len, cut_short, flag_keeps_head, is_current, keeps_head, live_name, map_segment,
    parse_live_name, parse_spare_name, prefault, renew_header, segment_seal, spare_name, sync_dir,
    Prefault, Segment, SEGMENT_BYTES_MIN, SEGMENT_HEADER_BYTES,
};
use crate::suspect;
use crate::sync::{SyncMode, SyncTarget, Syncer, MAX_SYNCS_IN_FLIGHT};
use crate::types::{LogIndex, Term};

/// Name of the lock file that keeps two `Log`s off one directory.
const LOCK_FILE: &str = "lock";

/// How a log is laid out and made durable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogOptions {
    /// Size of each segment file (default 64 MiB; at least 4 KiB, a multiple of 4 KiB).
    pub segment_bytes: u64,
    /// Spare segments kept ready ahead of need (default 1, at least 1).
    pub spare_segments: usize,
    /// How syncs are issued (default io_uring, falling back to fdatasync).
    pub sync_mode: SyncMode,
    /// How records reach the segment (default: `pwritev`; see [`AppendMode`]).
    pub append_mode: AppendMode,
    /// Sync rounds allowed in flight at once (default 4; 1..=64). 1 means a record appended
    /// while a round runs waits for it to finish before its own round starts; more lets a new
    /// round start at once, which pays off on disks that serve concurrent flushes in parallel
    /// (`docs/LOG.md`, "Choices").
    pub syncs_in_flight: usize,
    /// Sync a round on the storage thread itself when no other round is running (default true;
    /// pwrite append mode only: there a whole-file `fdatasync` writes just the appended pages).
    /// Saves the hand-offs to and from the kernel's sync worker when commits come one at a
    /// time; under load a round is nearly always running and rounds overlap as before
    /// (`docs/LOG.md`, "Inline syncs").
    pub sync_inline_when_idle: bool,
}

/// Zeros written after each record in [`AppendMode::Pwrite`]: its padding plus one header.
static TAIL_ZEROS: [u8; RECORD_ALIGN + RECORD_HEADER_BYTES] =
    [0; RECORD_ALIGN + RECORD_HEADER_BYTES];

/// How appended records reach the segment file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum AppendMode {
    /// Copy into the shared mapping (the design card's plan). Pages are pre-faulted writable by
    /// the preparer, so appends take no page fault; but writeback of mapped pages costs the
    /// kernel a write-protect and TLB shootdown per page, which made each sync about 4x slower
    /// than [`AppendMode::Pwrite`] on the development VM (`docs/LOG.md`, "Append mode").
    Mmap,
    /// `pwritev` of header and payload into the page cache; the mapping is only read. Same
    /// format, same durability; no faults and no shootdowns, one syscall per record. The default.
    #[default]
    Pwrite,
}

impl Default for LogOptions {
    fn default() -> LogOptions {
        LogOptions {
            segment_bytes: 64 << 20,
            spare_segments: 1,
            sync_mode: SyncMode::IoUring,
            append_mode: AppendMode::Pwrite,
            syncs_in_flight: 4,
            sync_inline_when_idle: true,
        }
    }
}

/// Counters since open.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LogStats {
    /// Batch records appended (both paths).
    pub appends: u64,
    /// Entries appended.
    pub entries_appended: u64,
    /// Record bytes appended (headers and payloads).
    pub bytes_appended: u64,
    /// Sync rounds completed.
    pub syncs: u64,
    /// Entries made durable by those rounds.
    pub entries_synced: u64,
    /// Record bytes made durable by those rounds.
    pub bytes_synced: u64,
    /// Spare segments turned live.
    pub segments_activated: u64,
    /// Compacted segments recycled into spares (or deleted when enough spares exist).
    pub segments_recycled: u64,
    /// Truncation markers written.
    pub truncations: u64,
    /// Witness records written by [`Log::seal`].
    pub seals: u64,
}

impl LogStats {
    /// Mean entries per completed sync round (0 before the first).
    pub fn entries_per_sync(&self) -> f64 {
        self.entries_synced as f64 / self.syncs.max(1) as f64
    }

    /// Mean record bytes per completed sync round (0 before the first).
    pub fn bytes_per_sync(&self) -> f64 {
        self.bytes_synced as f64 / self.syncs.max(1) as f64
    }
}

/// A torn tail that open cut off.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TornTailReport {
    /// The segment file.
    pub file: PathBuf,
    /// Where the log now ends.
    pub offset: u64,
    /// The index the next entry gets.
    pub index: LogIndex,
    /// What was found there.
    pub reason: String,
    /// Valid but never-durable records found past the cut and discarded.
    pub newer_records_discarded: u64,
}

/// What [`Log::open`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpenReport {
    /// First index held (equals `last_index + 1` when empty).
    pub first_index: LogIndex,
    /// Last index held (0 when the log never held anything).
    pub last_index: LogIndex,
    /// Records verified (batches and truncation markers).
    pub records: u64,
    /// Set when a torn tail was cut.
    pub torn_tail: Option<TornTailReport>,
    /// Segments past the tail that held nothing durable and were recycled.
    pub segments_discarded: usize,
    /// `"io_uring"` or `"fdatasync"`.
    pub sync_mechanism: &'static str,
    /// The term and vote read from the hard-state file.
    pub hard_state: HardState,
    /// Damage before the tail that [`Log::open_for_repair`] cut off (never set by
    /// [`Log::open`], which refuses it).
    pub damage: Option<DamageReport>,
    /// The repair in progress (this open's damage, an earlier one's marker, or both), while the
    /// log does not yet durably cover its `until`.
    pub repair: Option<RepairState>,
    /// Set while the log is suspect: a tail was cut after an unclean stop (by this open or an
    /// earlier one) and the log holds no durable entry of a term above this one since
    /// (`docs/RAFT.md`, "Suspect tail").
    pub suspect: Option<Term>,
}

/// A batch (or the part of one inside a requested range) borrowed from the log's mapping.
#[derive(Clone, Copy, Debug)]
pub struct BatchView<'a> {
    /// Term of the entries.
    pub term: Term,
    /// Kind of the batch.
    pub kind: BatchKind,
    /// Index of the first entry in this view.
    pub first_index: LogIndex,
    /// Entries in this view.
    pub entry_count: u32,
    /// The entries, encoded as in a [`Batch`] payload.
    pub payload: &'a [u8],
    /// The whole stored record (header and payload) when this view covers all of it: the bytes
    /// to send to a follower, which verifies them with [`Log::append_record`].
    pub record: Option<&'a [u8]>,
}

impl<'a> BatchView<'a> {
    /// Index of the last entry in this view.
    pub fn last_index(&self) -> LogIndex {
        self.first_index.plus(self.entry_count as u64 - 1)
    }

    /// The entries as borrowed slices.
    pub fn entries(&self) -> impl ExactSizeIterator<Item = &'a [u8]> {
        Entries::new(self.payload, self.entry_count)
    }

    /// Copies the view into an owned batch.
    pub fn to_batch(&self) -> Batch {
        Batch::new(
            self.term,
            self.first_index,
            self.kind,
            self.entry_count,
            bytes::Bytes::copy_from_slice(self.payload),
        )
        .expect("a verified record holds a valid batch")
    }
}

/// Bytes of one segment written since the last sync round was submitted.
struct DirtyRange {
    file: Arc<File>,
    start: usize,
    end: usize,
}

/// A sync round in flight: what it will make durable.
struct Round {
    /// The syncer's id for it.
    id: u64,
    /// Completed, but some earlier round has not yet, or a round that overlapped it.
    done: bool,
    /// Id of the newest round submitted when this one's completion was seen: the rounds that
    /// may have taken this round's writeback error (module docs, "Overlapping rounds").
    overlapped_through: u64,
    index: LogIndex,
    seq: u64,
    entries: u64,
    bytes: u64,
}

/// The durable log. Owned and driven by one thread.
pub struct Log {
    dir: PathBuf,
    dir_file: Arc<File>,
    options: LogOptions,
    segments: VecDeque<Segment>,
    spans: VecDeque<RecordSpan>,
    next_index: LogIndex,
    last_term: Term,
    write_offset: usize,
    next_seq: u64,
    /// `header_crc` of the last record: what the next one links to (every segment written is
    /// keyed, see [`Seal::link`]).
    last_header_crc: u32,
    durable_index: LogIndex,
    durable_seq: u64,
    syncer: Syncer,
    /// Rounds submitted and not yet counted durable, oldest first (seqs strictly increasing).
    in_flight: VecDeque<Round>,
    sync_wanted: bool,
    dirty: Vec<DirtyRange>,
    unsynced_entries: u64,
    unsynced_bytes: u64,
    poisoned: Option<i32>,
    /// Seq of the last witness written while every record before it was durable (see
    /// [`Log::seal`]).
    sealed_seq: Option<u64>,
    preparer: Preparer,
    hard_state: HardStateFile,
    /// What the head file on disk says.
    head: Head,
    /// The repair marker on disk, until the log is durable up to its `until`.
    repair: Option<RepairState>,
    /// The suspect marker on disk, until the durable log holds an entry of a higher term.
    suspect: Option<Term>,
    stats: LogStats,
    /// Held until everything else (the preparer and sync threads included) is gone: fields drop
    /// in declaration order.
    _lock: File,
}

fn lock_dir(dir: &Path) -> Result<File, LogError> {
    let path = dir.join(LOCK_FILE);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|err| LogError::io(format!("open {}", path.display()), err))?;
    // SAFETY: flock on a descriptor we own; no memory is passed.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let err = io::Error::last_os_error();
        if err.kind() == io::ErrorKind::WouldBlock {
            return Err(LogError::Locked {
                dir: dir.to_path_buf(),
            });
        }
        return Err(LogError::io(format!("lock {}", path.display()), err));
    }
    Ok(file)
}

fn check_options(options: &LogOptions) -> Result<(), LogError> {
    if options.segment_bytes < SEGMENT_BYTES_MIN
        || options.segment_bytes % 4096 != 0
        || options.segment_bytes > u32::MAX as u64
    {
        return Err(LogError::BadOptions(BadLogOption::SegmentBytes(
            options.segment_bytes,
        )));
    }
    if !(1..=MAX_SYNCS_IN_FLIGHT).contains(&options.syncs_in_flight) {
        return Err(LogError::BadOptions(BadLogOption::SyncsInFlight(
            options.syncs_in_flight,
        )));
    }
    if options.spare_segments == 0 {
        return Err(LogError::BadOptions(BadLogOption::SpareSegments));
    }
    Ok(())
}

/// A live segment file found shorter than its header declares (under repair).
struct Cut {
    /// Its position among the live segments.
    segment: usize,
    /// The length found.
    len: u64,
    /// Its bytes, zero-filled to the declared length (what recovery scans).
    padded: Vec<u8>,
}

impl Cut {
    /// The damage to repair: the scan's, widened to an unknown extent when a file was cut
    /// (records past the cut may have been durable; how many is unknown).
    fn report(
        cuts: &[Cut],
        segments: &VecDeque<Segment>,
        recovered: &crate::recovery::Recovered,
        damage: Option<DamageReport>,
    ) -> Option<DamageReport> {
        let Some(first) = cuts.first() else {
            return damage;
        };
        let file = &segments[first.segment].path;
        let reason = format!(
            "segment file cut to {} bytes (its header says {})",
            first.len,
            first.padded.len()
        );
        Some(match damage {
            Some(mut damage) => {
                damage.reason = format!("{}; and {reason}", damage.reason);
                damage.extent_unknown = true;
                damage
            }
            None => DamageReport {
                file: file.clone(),
                offset: first.len,
                index: recovered.next_index,
                reason,
                last_index_claimed: recovered.next_index.prev(),
                extent_unknown: true,
            },
        })
    }
}

/// Opens and maps a segment found at open, its bytes read from the disk, not from pages a
/// failed sync left cached (`log::disk`).
fn open_mapped(path: &Path) -> Result<(Arc<File>, memmap2::MmapMut), LogError> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(|err| LogError::io(format!("open {}", path.display()), err))?;
    disk::sync_and_drop_cached(&file)
        .map_err(|err| LogError::io(format!("sync and reread {}", path.display()), err))?;
    let map =
        map_segment(&file).map_err(|err| LogError::io(format!("map {}", path.display()), err))?;
    Ok((Arc::new(file), map))
}

/// Writes `parts` back to back at `offset`, retrying short writes.
fn pwrite_all<const N: usize>(
    file: &File,
    mut parts: [&[u8]; N],
    mut offset: u64,
) -> io::Result<()> {
    // Index of the first part with bytes left; the iovecs live on the stack (no allocation
    // per record).
    let mut first = 0;
    loop {
        while first < N && parts[first].is_empty() {
            first += 1;
        }
        if first == N {
            return Ok(());
        }
        let iovecs: [libc::iovec; N] = std::array::from_fn(|i| libc::iovec {
            iov_base: parts[i].as_ptr() as *mut libc::c_void,
            iov_len: parts[i].len(),
        });
        // SAFETY: every iovec points into a live borrowed slice of the stated length, and the
        // kernel only reads them.
        let written = unsafe {
            libc::pwritev(
                file.as_raw_fd(),
                iovecs[first..].as_ptr(),
                (N - first) as libc::c_int,
                offset as libc::off_t,
            )
        };
        if written < 0 {
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(err);
        }
        let mut written = written as usize;
        offset += written as u64;
        for part in parts[first..].iter_mut() {
            let taken = written.min(part.len());
            *part = &part[taken..];
            written -= taken;
        }
    }
}

fn prepare_error(err: io::Error, segment_bytes: u64) -> LogError {
    if err.raw_os_error() == Some(libc::ENOSPC) {
        LogError::NoSpace { segment_bytes }
    } else {
        LogError::io("prepare a segment", err)
    }
}

impl Log {
    /// Opens (or creates) the log in `dir`: verifies every record, cuts a torn tail, refuses
    /// corruption before the tail with [`LogError::Corrupt`], and makes what it found durable
    /// before reporting it durable.
    pub fn open(dir: &Path, options: LogOptions) -> Result<(Log, OpenReport), LogError> {
        Log::open_with(dir, options, false)
    }

    /// Opens the log like [`Log::open`], except that damage before the tail is cut off instead
    /// of refused (protocol-aware recovery; see [`crate::recovery::recover_for_repair`]):
    /// the log keeps the good prefix, and a repair marker recording the lost range is written
    /// and synced *before* anything is cut. [`OpenReport::damage`] describes what was cut and
    /// [`OpenReport::repair`] what must be fetched back from peers. Only a runtime that can
    /// fetch entries from peers, and refrains from voting until then, may call this.
    pub fn open_for_repair(dir: &Path, options: LogOptions) -> Result<(Log, OpenReport), LogError> {
        Log::open_with(dir, options, true)
    }

    fn open_with(
        dir: &Path,
        options: LogOptions,
        repair_damage: bool,
    ) -> Result<(Log, OpenReport), LogError> {
        check_options(&options)?;
        disk::create_dir_all_synced(dir)
            .map_err(|err| LogError::io(format!("create {}", dir.display()), err))?;
        let lock = lock_dir(dir)?;
        let dir_file = Arc::new(
            File::open(dir).map_err(|err| LogError::io(format!("open {}", dir.display()), err))?,
        );
        let mut live: Vec<(u64, PathBuf)> = Vec::new();
        let mut spares: Vec<(u64, PathBuf)> = Vec::new();
        let mut spare_id_next = 0u64;
        let listing =
            std::fs::read_dir(dir).map_err(|err| LogError::io("list the log directory", err))?;
        for entry in listing {
            let entry = entry.map_err(|err| LogError::io("list the log directory", err))?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if let Some(first_seq) = parse_live_name(name) {
                live.push((first_seq, entry.path()));
            } else if let Some((id, temporary)) = parse_spare_name(name) {
                spare_id_next = spare_id_next.max(id + 1);
                if temporary {
                    std::fs::remove_file(entry.path())
                        .map_err(|err| LogError::io(format!("remove {name}"), err))?;
                } else {
                    spares.push((id, entry.path()));
                }
            }
        }
        live.sort();
        spares.sort();
        // A log that ever held a segment has a hard state: a missing one was deleted.
        let log_existed =
            !live.is_empty() || !spares.is_empty() || dir.join(head::HEAD_FILE).exists();

        let mut segments = VecDeque::new();
        // Under repair, a segment file cut short after the fact is scanned as if zero-filled
        // to its declared length (what was cut is lost: `cuts` reports it as damage), and is
        // extended on disk only once the repair marker is durable.
        let mut cuts: Vec<Cut> = Vec::new();
        for (first_seq, path) in live {
            let len = std::fs::metadata(&path)
                .map_err(|err| LogError::io(format!("stat {}", path.display()), err))?
                .len();
            check_segment_len(&path, len)?;
            let (file, map) = open_mapped(&path)?;
            if let Some(declared) = cut_short(&map).filter(|_| repair_damage) {
                let mut padded = map.to_vec();
                padded.resize(declared as usize, 0);
                cuts.push(Cut {
                    segment: segments.len(),
                    len,
                    padded,
                });
            }
            segments.push_back(Segment {
                first_seq,
                seal: segment_seal(&map),
                path,
                file,
                map,
            });
        }
        let (recovered, damage) = recover_files(
            segments.iter().enumerate().map(|(at, segment)| {
                let bytes = match cuts.iter().find(|cut| cut.segment == at) {
                    Some(cut) => &cut.padded[..],
                    None => &segment.map[..],
                };
                (segment.path.as_path(), segment.first_seq, bytes)
            }),
            repair_damage,
        )?;
        let damage = damage.map(|damage| {
            let file = segments[damage.at.segment].path.clone();
            DamageReport::new(damage, file)
        });
        let damage = Cut::report(&cuts, &segments, &recovered, damage);
        let live: Vec<(u64, bool)> = segments
            .iter()
            .map(|segment| (segment.first_seq, keeps_head(&segment.map)))
            .collect();
        let (damage, upgrade) = head::judge(dir, &live, &recovered, damage, repair_damage)?;
        let hard_state = HardStateFile::open(dir, &dir_file, log_existed)?;
        let mut repair_state = repair::read(dir)?;
        if let Some(damage) = &damage {
            // Every entry the node may have acknowledged has a term no higher than its current
            // term, which is never below its log's.
            let term = hard_state.get().term.max(recovered.last_term);
            let found = RepairState {
                first_lost: damage.index,
                until: damage.last_index_claimed,
                above_term: damage.extent_unknown.then_some(term),
            };
            let state = repair_state.map_or(found, |earlier| earlier.merge(found));
            tracing::warn!(
                file = %damage.file.display(),
                offset = damage.offset,
                first_lost = state.first_lost.get(),
                until = state.until.get(),
                reason = %damage.reason,
                "log: damage before the tail; cutting it and repairing from peers"
            );
            // Before anything is cut: the damaged records are the only evidence of `until`.
            repair::write(dir, &dir_file, state)?;
            repair_state = Some(state);
        }
        // Before anything is appended over the cut, which would erase the evidence.
        let suspect_term = suspect::mark_if_cut(
            dir,
            &dir_file,
            recovered.torn.is_some(),
            hard_state.get().term.max(recovered.last_term),
        )?;
        for cut in &cuts {
            let segment = &mut segments[cut.segment];
            let extended = segment
                .file
                .set_len(cut.padded.len() as u64)
                .and_then(|()| segment.file.sync_data());
            extended.map_err(|err| {
                LogError::io(format!("extend the cut {}", segment.path.display()), err)
            })?;
            (segment.file, segment.map) = open_mapped(&segment.path)?;
        }

        let torn_tail = recovered.torn.as_ref().map(|torn| TornTailReport {
            file: segments[torn.segment].path.clone(),
            offset: torn.offset as u64,
            index: torn.index,
            reason: torn.reason.clone(),
            newer_records_discarded: torn.newer_records_discarded,
        });
        if let Some(torn) = &torn_tail {
            tracing::warn!(
                file = %torn.file.display(),
                offset = torn.offset,
                index = torn.index.get(),
                reason = %torn.reason,
                discarded = torn.newer_records_discarded,
                "log: cut a torn tail"
            );
        }

        // Segments past the tail hold nothing durable (or lost it, the repair marker says what):
        // they become spares, once the head no longer names one of them.
        let keep = recovered.tail.map_or(0, |(segment, _)| segment + 1);
        if upgrade {
            tracing::info!(dir = %dir.display(), "log: written before the log head existed; writing it");
        }
        let (head, seq_floor) =
            Log::rewrite_head_if_needed(dir, &dir_file, &segments, keep, &recovered)?;
        Log::flag_old_segments(segments.range(..keep))?;
        let discarded: Vec<Segment> = segments.drain(keep..).collect();
        let segments_discarded = discarded.len();
        let mut existing_spares = Vec::new();
        for segment in discarded {
            let path = dir.join(spare_name(spare_id_next));
            spare_id_next += 1;
            std::fs::rename(&segment.path, &path)
                .map_err(|err| LogError::io(format!("recycle {}", segment.path.display()), err))?;
            existing_spares.push(Spare {
                path,
                file: segment.file,
                map: segment.map,
            });
        }
        for (_, path) in spares {
            let (file, map) = open_mapped(&path)?;
            existing_spares.push(Spare { path, file, map });
        }
        // A log that keeps no segment starts its seqs over: above every seq the head named and
        // every seq a spare still holds (a segment discarded at an earlier open, past its tail,
        // may hold seqs above the head's).
        let seq_floor = if keep == 0 {
            existing_spares
                .iter()
                .map(|spare| highest_seq(&spare.map[..]) + 1)
                .fold(seq_floor, u64::max)
        } else {
            seq_floor
        };

        // What was found may sit only in the page cache (the previous process may have died
        // before syncing): make it durable before calling it durable.
        for segment in &segments {
            segment.file.sync_data().map_err(|err| LogError::Poisoned {
                errno: err.raw_os_error().unwrap_or(libc::EIO),
            })?;
        }
        sync_dir(&dir_file).map_err(|err| LogError::io("sync the log directory", err))?;

        let inline = options.sync_inline_when_idle && options.append_mode == AppendMode::Pwrite;
        let syncer = Syncer::new(options.sync_mode, options.syncs_in_flight, inline)
            .map_err(|err| LogError::io("create the sync doorbell (an eventfd)", err))?;
        let prefault_mode = match (options.append_mode, syncer.syncs_ranges()) {
            (AppendMode::Pwrite, _) => Prefault::Skip,
            (AppendMode::Mmap, true) => Prefault::Write,
            (AppendMode::Mmap, false) => Prefault::Read,
        };
        let preparer = Preparer::start(
            dir.to_path_buf(),
            options.segment_bytes,
            options.spare_segments,
            existing_spares,
            spare_id_next,
            prefault_mode,
        );
        let write_offset = Log::tail_write_offset(&mut segments, &recovered)?;
        if let Some(tail) = segments.back() {
            prefault(&tail.map, write_offset, prefault_mode);
        }
        let last_index = recovered.next_index.prev();
        // Seqs between the last record found and the floor were given to records that were
        // lost (a tail that never became durable): no record holds them, so every seq below
        // the next one is as durable as the records found, which were synced above.
        let next_seq = recovered.next_seq.max(seq_floor);
        let mut log = Log {
            dir: dir.to_path_buf(),
            dir_file,
            _lock: lock,
            options,
            segments,
            spans: recovered.spans,
            next_index: recovered.next_index,
            last_term: recovered.last_term,
            write_offset,
            next_seq,
            last_header_crc: recovered.last_header_crc,
            durable_index: last_index,
            durable_seq: next_seq - 1,
            syncer,
            in_flight: VecDeque::new(),
            sync_wanted: false,
            dirty: Vec::new(),
            unsynced_entries: 0,
            unsynced_bytes: 0,
            poisoned: None,
            sealed_seq: None,
            preparer,
            hard_state,
            head,
            repair: repair_state,
            suspect: suspect_term,
            stats: LogStats::default(),
        };
        if log.segments.is_empty() {
            log.activate_spare()?;
        }
        if damage.is_some() {
            // A record chained to the good prefix, right at the cut, with a seq above every
            // record left after it: from now on those are stale, and a plain open finds this
            // log clean (the marker keeps the repair).
            log.seal()?;
            log.wait_durable()?;
        }
        log.finish_markers_if_covered()?;
        let report = OpenReport {
            first_index: log.first_index(),
            last_index: log.last_index(),
            records: recovered.records,
            torn_tail,
            segments_discarded,
            sync_mechanism: log.syncer.mechanism(),
            hard_state: log.hard_state.get(),
            damage,
            repair: log.repair,
            suspect: log.suspect,
        };
        Ok((log, report))
    }

    /// The log directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The options the log was opened with.
    pub fn options(&self) -> &LogOptions {
        &self.options
    }

    /// `"io_uring"` or `"fdatasync"` (the fallback).
    pub fn sync_mechanism(&self) -> &'static str {
        self.syncer.mechanism()
    }

    /// Counters since open.
    pub fn stats(&self) -> LogStats {
        self.stats
    }

    /// First index held; `last_index() + 1` when the log holds nothing.
    pub fn first_index(&self) -> LogIndex {
        self.spans
            .front()
            .map_or(self.next_index, |span| span.first_index)
    }

    /// Last index held (0 for a log that never held anything).
    pub fn last_index(&self) -> LogIndex {
        self.next_index.prev()
    }

    /// Term of the last entry (0 when the log holds nothing).
    pub fn last_term(&self) -> Term {
        self.last_term
    }

    /// Highest index known durable.
    pub fn durable_index(&self) -> LogIndex {
        self.durable_index
    }

    /// Term of the entry at `index`, if the log holds it.
    pub fn term_at(&self, index: LogIndex) -> Option<Term> {
        self.span_position(index).map(|at| self.spans[at].term)
    }

    fn span_position(&self, index: LogIndex) -> Option<usize> {
        if index < self.first_index() || index > self.last_index() {
            return None;
        }
        let at = self.spans.partition_point(|span| span.last_index < index);
        debug_assert!(self.spans[at].first_index <= index);
        Some(at)
    }

    fn check_usable(&self) -> Result<(), LogError> {
        match self.poisoned {
            Some(errno) => Err(LogError::Poisoned { errno }),
            None => Ok(()),
        }
    }

    /// Appends `batch` (copied into the current segment; not yet durable). Returns its last
    /// index. The batch must start at `last_index() + 1` with a term no lower than the last.
    pub fn append(&mut self, batch: &Batch) -> Result<LogIndex, LogError> {
        self.check_usable()?;
        self.check_next(batch.first_index(), batch.term())?;
        let header = batch_header(batch, Default::default());
        self.write_record(header, batch.payload())?;
        Ok(batch.last_index())
    }

    /// Appends a record received from a peer (header and payload as sent, e.g. a
    /// [`BatchView::record`]) after verifying its checksum and framing; the payload is copied
    /// as is, never re-encoded. Returns its last index.
    pub fn append_record(&mut self, record: &[u8]) -> Result<LogIndex, LogError> {
        self.check_usable()?;
        let view = verify_wire_record(record).map_err(LogError::BadRecord)?;
        if view.bytes.len() != record.len() {
            return Err(LogError::BadRecord(crate::record::RecordError::BadShape {
                what: "bytes after the record",
            }));
        }
        let header = view.header;
        if header.kind == RecordKind::Truncate {
            return Err(LogError::BadRecord(crate::record::RecordError::BadShape {
                what: "a truncation marker cannot be appended",
            }));
        }
        self.check_next(header.first_index, header.term)?;
        self.write_record(header, view.payload)?;
        Ok(header.last_index())
    }

    fn check_next(&self, first_index: LogIndex, term: Term) -> Result<(), LogError> {
        if first_index != self.next_index {
            return Err(LogError::NotContiguous {
                expected: self.next_index,
                found: first_index,
            });
        }
        if term < self.last_term {
            return Err(LogError::TermRegression {
                last: self.last_term,
                found: term,
            });
        }
        Ok(())
    }

    /// Copies a record into the current segment (switching segments when it does not fit),
    /// filling in the chain fields, and updates the index.
    fn write_record(&mut self, mut header: RecordHeader, payload: &[u8]) -> Result<(), LogError> {
        let stored = stored_bytes(payload.len());
        let offset = self.reserve(stored)?;
        header.prev_crc = self.last_header_crc;
        header.seq = self.next_seq;
        header.synced_seq = self.durable_seq;
        let segment = self.segments.back_mut().expect("a current segment");
        assert!(
            matches!(segment.seal, Seal::Keyed(_)),
            "record seq {} would go into the unkeyed segment {}",
            header.seq,
            segment.path.display()
        );
        let header_crc = match self.options.append_mode {
            AppendMode::Mmap => {
                let dst = &mut segment.map[offset..offset + RECORD_HEADER_BYTES + payload.len()];
                dst[RECORD_HEADER_BYTES..].copy_from_slice(payload);
                write_header(dst, &header, segment.seal)
            }
            AppendMode::Pwrite => {
                let mut head = [0u8; RECORD_HEADER_BYTES];
                let header_crc = write_header(&mut head, &header, segment.seal);
                // The padding and a zeroed header's worth after the record: a recycled segment
                // is not re-zeroed in this mode, and recovery must find zeros (not the middle
                // of a stale record) where the log ends. The next record overwrites them.
                let end = (offset + stored + RECORD_HEADER_BYTES).min(segment.map.len());
                let zeros = &TAIL_ZEROS[..end - (offset + RECORD_HEADER_BYTES + payload.len())];
                pwrite_all(&segment.file, [&head, payload, zeros], offset as u64).map_err(
                    |err| LogError::io(format!("write {}", segment.path.display()), err),
                )?;
                header_crc
            }
        };
        let dirty_end = match self.options.append_mode {
            AppendMode::Mmap => offset + stored,
            AppendMode::Pwrite => (offset + stored + RECORD_HEADER_BYTES).min(segment.map.len()),
        };
        match self.dirty.last_mut() {
            Some(range) if Arc::ptr_eq(&range.file, &segment.file) => range.end = dirty_end,
            _ => self.dirty.push(DirtyRange {
                file: segment.file.clone(),
                start: offset,
                end: dirty_end,
            }),
        }
        let segment_seq = segment.first_seq;
        self.write_offset = offset + stored;
        // `write_header` checked the seq against `SEQ_MAX`, far below `u64::MAX`.
        self.next_seq = self.next_seq.checked_add(1).expect("seq at most SEQ_MAX");
        self.last_header_crc = header_crc;
        self.unsynced_bytes += stored as u64;
        self.stats.bytes_appended += stored as u64;
        match header.kind {
            RecordKind::Batch(kind) => {
                self.spans.push_back(RecordSpan {
                    first_index: header.first_index,
                    last_index: header.last_index(),
                    term: header.term,
                    kind,
                    segment: segment_seq,
                    offset: offset as u32,
                    entry_count: header.entry_count,
                    payload_bytes: header.payload_bytes,
                });
                self.next_index = header.last_index().next();
                self.last_term = header.term;
                self.unsynced_entries += header.entry_count as u64;
                self.stats.appends += 1;
                self.stats.entries_appended += header.entry_count as u64;
            }
            RecordKind::Truncate => {}
        }
        Ok(())
    }

    /// Returns the offset where a record of `stored` bytes goes, activating a spare segment when
    /// the current one cannot hold it.
    fn reserve(&mut self, stored: usize) -> Result<usize, LogError> {
        let current_len = self.segments.back().map_or(0, Segment::size_bytes);
        if self.write_offset + stored <= current_len {
            return Ok(self.write_offset);
        }
        let capacity = self.options.segment_bytes as usize - SEGMENT_HEADER_BYTES;
        if stored > capacity {
            return Err(LogError::RecordTooLarge {
                record_bytes: stored,
                segment_capacity: capacity,
            });
        }
        self.activate_spare()?;
        let len = self.segments.back().expect("just activated").size_bytes();
        if SEGMENT_HEADER_BYTES + stored > len {
            return Err(LogError::RecordTooLarge {
                record_bytes: stored,
                segment_capacity: len - SEGMENT_HEADER_BYTES,
            });
        }
        Ok(self.write_offset)
    }

    /// Where the next record goes in the tail segment open keeps. A tail of the previous segment
    /// version takes no more records, since they would be unkeyed: one that holds none gets a
    /// current header in place; otherwise the offset returned is its end, so the next record
    /// starts a new segment, which is current (and chains to the tail's last record).
    fn tail_write_offset(
        segments: &mut VecDeque<Segment>,
        recovered: &crate::recovery::Recovered,
    ) -> Result<usize, LogError> {
        let offset = recovered
            .tail
            .map_or(SEGMENT_HEADER_BYTES, |(_, offset)| offset);
        let Some(tail) = segments
            .back_mut()
            .filter(|tail| tail.seal == Seal::Unkeyed)
        else {
            return Ok(offset);
        };
        if recovered.records > 0 {
            tracing::info!(
                file = %tail.path.display(),
                "log: the newest segment is of the previous version; new records start a new one"
            );
            return Ok(tail.size_bytes());
        }
        renew_header(&tail.file, &tail.map).map_err(|err| {
            LogError::io(format!("renew the header of {}", tail.path.display()), err)
        })?;
        tail.seal = segment_seal(&tail.map);
        Ok(offset)
    }

    /// Writes the head at open when what it names differs from what open keeps: the newest
    /// kept segment (none when every segment is discarded; the next activation names one), and
    /// a synced seq no higher than the last record found (which this open makes durable).
    /// Returns the head and the lowest seq the log may use next as far as the head tells. Seqs
    /// are never reused in a directory: spares keep the records of the segments they were, and
    /// recovery tells those stale records by their lower seqs. When open keeps no segment
    /// (every one was lost: deleted, or discarded as damage), the log would otherwise restart
    /// its seqs below those of the records its spares still hold; the floor is then above
    /// every seq the head found here named (and open raises it above the spares' records).
    /// With a segment kept, the chain found gives the next seq (and a kept segment without a
    /// record yet must get its named seq). The head's seq floor is part of that lowest seq;
    /// when open discards segments, the head is written with it raised above every seq the
    /// scan found (in the discarded segments too) before they become spares, so a crash right
    /// after this open cannot bring those seqs back into use.
    fn rewrite_head_if_needed(
        dir: &Path,
        dir_file: &File,
        segments: &VecDeque<Segment>,
        keep: usize,
        recovered: &crate::recovery::Recovered,
    ) -> Result<(Head, u64), LogError> {
        let found = head::read(dir)?;
        let (lost_floor, found_floor) = match &found {
            HeadFound::Valid(head) if keep == 0 => (
                head.newest_seq.max(head.synced_seq).saturating_add(1),
                head.seq_floor,
            ),
            HeadFound::Valid(head) => (0, head.seq_floor),
            HeadFound::Absent | HeadFound::Damaged(_) => (0, 0),
        };
        let seq_floor = if keep < segments.len() {
            found_floor.max(recovered.next_seq)
        } else {
            found_floor
        };
        let newest_seq = keep.checked_sub(1).map_or(0, |at| segments[at].first_seq);
        let oldest_seq = if keep == 0 { 0 } else { segments[0].first_seq };
        let (newest_first_index, synced_seq) = match &found {
            HeadFound::Valid(head) if head.newest_seq == newest_seq => (
                head.newest_first_index,
                head.synced_seq.min(recovered.last_seq),
            ),
            HeadFound::Valid(head) => (
                recovered
                    .spans
                    .iter()
                    .find(|span| span.segment == newest_seq)
                    .map_or(recovered.next_index, |span| span.first_index),
                head.synced_seq.min(recovered.last_seq),
            ),
            HeadFound::Absent | HeadFound::Damaged(_) => (recovered.next_index, 0),
        };
        let wanted = Head {
            newest_seq,
            newest_first_index,
            synced_seq,
            oldest_seq,
            seq_floor,
        };
        let fresh = segments.is_empty() && found == HeadFound::Absent;
        if found != HeadFound::Valid(wanted) && !fresh {
            head::write(dir, dir_file, wanted)?;
        }
        Ok((wanted, seq_floor.max(lost_floor)))
    }

    /// Gives every segment open keeps that lacks it the "keeps a head" flag, each synced. Called
    /// once the head is durable: a log written before the head existed gets the flag in all its
    /// live segments at the upgrade, so from then on a deleted head (even with some of the
    /// segments) cannot pass for an old log. Head first, then flags: a crash between leaves a
    /// valid head and unflagged segments, which the next open finishes flagging here; the
    /// other order would leave flagged segments without a head, which open must refuse as a
    /// deleted head.
    fn flag_old_segments<'a>(segments: impl Iterator<Item = &'a Segment>) -> Result<(), LogError> {
        let mut flagged = 0;
        for segment in segments.filter(|segment| !keeps_head(&segment.map)) {
            flag_keeps_head(&segment.file, &segment.map)
                .map_err(|err| LogError::io(format!("flag {}", segment.path.display()), err))?;
            flagged += 1;
        }
        if flagged > 0 {
            tracing::info!(
                segments = flagged,
                "log: flagged the segments of a log written before the log head existed"
            );
        }
        Ok(())
    }

    /// Takes a ready spare; one from an older version first gets a current header (the "keeps a
    /// head" flag, so the log never holds a live segment that would let a deleted head pass for
    /// an old log, and a nonce, so its records are keyed), synced.
    fn take_spare(&mut self) -> Result<Spare, LogError> {
        let spare = self
            .preparer
            .take()
            .map_err(|err| prepare_error(err, self.options.segment_bytes))?;
        if !is_current(&spare.map) {
            if let Err(err) = renew_header(&spare.file, &spare.map) {
                let context = format!("renew the header of {}", spare.path.display());
                self.preparer.give_back(spare);
                return Err(LogError::io(context, err));
            }
        }
        Ok(spare)
    }

    /// Turns a ready spare into the current segment, named after the next record's seq, and
    /// names it in the head: the rename is made durable first (so the head never names a
    /// segment a crash could lose), then the head, before any record goes into the segment (so
    /// no record in it is reported durable while the head does not name it). Once per segment;
    /// a failure poisons the log, like a failed sync.
    fn activate_spare(&mut self) -> Result<(), LogError> {
        let spare = self.take_spare()?;
        let path = self.dir.join(live_name(self.next_seq));
        if let Err(err) = std::fs::rename(&spare.path, &path) {
            let context = format!("activate {}", spare.path.display());
            self.preparer.give_back(spare);
            return Err(LogError::io(context, err));
        }
        self.segments.push_back(Segment {
            first_seq: self.next_seq,
            seal: segment_seal(&spare.map),
            path,
            file: spare.file,
            map: spare.map,
        });
        self.write_offset = SEGMENT_HEADER_BYTES;
        self.stats.segments_activated += 1;
        let head = Head {
            newest_seq: self.next_seq,
            newest_first_index: self.next_index,
            synced_seq: self.durable_seq,
            oldest_seq: self.segments[0].first_seq,
            seq_floor: self.head.seq_floor.max(self.next_seq),
        };
        let named = sync_dir(&self.dir_file)
            .map_err(|err| LogError::io("sync the log directory", err))
            .and_then(|()| head::write(&self.dir, &self.dir_file, head));
        if let Err(err) = named {
            let errno = match &err {
                LogError::Io { source, .. } => source.raw_os_error().unwrap_or(libc::EIO),
                _ => libc::EIO,
            };
            tracing::error!(error = %err, "log: could not name the new segment in the log head");
            return Err(self.poison(errno));
        }
        self.head = head;
        Ok(())
    }

    /// Removes entries `from..=last_index()` (conflict resolution). Appends a truncation
    /// marker record, so nothing durable is overwritten; the durable index drops to at most
    /// `from - 1` until a later sync. `from` must lie in `first_index()..=last_index() + 1`.
    pub fn truncate_from(&mut self, from: LogIndex) -> Result<(), LogError> {
        self.check_usable()?;
        if from == self.next_index {
            return Ok(());
        }
        if from < self.first_index() || from > self.next_index || from.get() == 0 {
            return Err(LogError::OutOfRange {
                index: from,
                first: self.first_index(),
                last: self.last_index(),
            });
        }
        let header = truncate_header(from, Default::default());
        self.write_record(header, &[])?;
        self.stats.truncations += 1;
        void_from(&mut self.spans, from);
        self.next_index = from;
        self.last_term = self.spans.back().map_or(Term::ZERO, |span| span.term);
        self.durable_index = self.durable_index.min(from.prev());
        for round in &mut self.in_flight {
            round.index = round.index.min(from.prev());
        }
        Ok(())
    }

    /// Appends a witness: an empty truncation marker (voiding nothing) whose `synced_seq`
    /// vouches that every record up to the last completed sync was durable. Recovery can then
    /// tell damage to those records from a torn tail even when nothing else is appended after
    /// them (see `docs/FORMATS.md`). Call it when the log goes idle after a sync completed, then
    /// request a sync; [`Log::close`] does both. A no-op when the last record is already a
    /// witness of the current durable state.
    pub fn seal(&mut self) -> Result<(), LogError> {
        self.check_usable()?;
        if self.sealed_seq == Some(self.next_seq - 1) {
            return Ok(());
        }
        let vouches_for_all = self.durable_seq == self.next_seq - 1;
        let header = truncate_header(self.next_index, Default::default());
        self.write_record(header, &[])?;
        if vouches_for_all {
            self.sealed_seq = Some(self.next_seq - 1);
        }
        self.stats.seals += 1;
        Ok(())
    }

    /// Closes the log cleanly: makes everything durable, appends a witness and makes it durable
    /// too, so no durable record is left unprotected. Returns the durable index.
    pub fn close(mut self) -> Result<LogIndex, LogError> {
        self.wait_durable()?;
        self.seal()?;
        self.wait_durable()
    }

    /// Drops entries up to `up_to` from the front. Whole records go; a segment is recycled (made
    /// a spare) once it holds no live record and the first record after it is durable, so the
    /// first index may stay below `up_to + 1`, and after a reopen may be lower again.
    pub fn compact_to(&mut self, up_to: LogIndex) -> Result<(), LogError> {
        self.check_usable()?;
        while self
            .spans
            .front()
            .is_some_and(|span| span.last_index <= up_to)
        {
            self.spans.pop_front();
        }
        let mut removable = 0;
        while removable + 1 < self.segments.len() {
            let front_seq = self.segments[removable].first_seq;
            let next_seq = self.segments[removable + 1].first_seq;
            if self
                .spans
                .front()
                .is_some_and(|span| span.segment == front_seq)
                || next_seq > self.durable_seq
            {
                break;
            }
            removable += 1;
        }
        if removable == 0 {
            return Ok(());
        }
        // The head names the new oldest segment first, so a removed one never looks lost.
        let head = Head {
            oldest_seq: self.segments[removable].first_seq,
            ..self.head
        };
        head::write(&self.dir, &self.dir_file, head)?;
        self.head = head;
        for _ in 0..removable {
            let segment = self.segments.pop_front().expect("front segment");
            self.recycle(segment)?;
        }
        Ok(())
    }

    fn recycle(&mut self, segment: Segment) -> Result<(), LogError> {
        let path = self.dir.join(spare_name(self.preparer.allocate_id()));
        let keep = self.preparer.wants_spare();
        let outcome = if keep {
            std::fs::rename(&segment.path, &path)
        } else {
            std::fs::remove_file(&segment.path)
        };
        outcome
            .and_then(|()| sync_dir(&self.dir_file))
            .map_err(|err| LogError::io(format!("recycle {}", segment.path.display()), err))?;
        if keep {
            self.preparer.give_back(Spare {
                path,
                file: segment.file,
                map: segment.map,
            });
        }
        self.stats.segments_recycled += 1;
        Ok(())
    }

    /// Drops the whole log and restarts it empty just after `after` (a snapshot installed from
    /// a leader, or found at start, covers everything up to there): the next append must start
    /// at `after + 1` with a term of at least `term`.
    ///
    /// Crash safety, step by step: (1) everything appended so far is made durable; (2) a spare
    /// gets, as its first record, a truncation marker from `after + 1` with the next seq and a
    /// `prev_crc` of 0 (deliberately not chained to the old log), and is synced while it still
    /// has a spare's name; (3) it is renamed to its live name and the directory synced; (4) the
    /// old segments are removed newest first, the directory synced after each. A crash before
    /// (4) ends leaves a prefix of the old log followed by the new segment, whose unchained first
    /// record ends the log there like a torn tail (its `synced_seq` is 0: it vouches for nothing), so recovery
    /// finds the old prefix and the runtime's start-up check resets again; after (4) recovery
    /// finds only the new segment, starting at `after + 1`. Seqs keep growing throughout, so no
    /// stale record can ever pass for a newer one.
    pub fn reset_after(&mut self, after: LogIndex, term: Term) -> Result<(), LogError> {
        self.check_usable()?;
        self.wait_durable()?;
        assert!(
            self.in_flight.is_empty() && self.dirty.is_empty(),
            "reset_after({after}): a sync round is still pending after wait_durable"
        );
        // A segment that holds no record yet (a log that never held one) is named after the seq
        // its first record would take: the new segment must not take that name, or its rename
        // would replace the old segment and step (4) would remove the new one. Seqs may skip.
        if self.segments.back().map(|segment| segment.first_seq) == Some(self.next_seq) {
            self.next_seq += 1;
        }
        let mut spare = self.take_spare()?;
        let chain = ChainFields {
            prev_crc: 0,
            seq: self.next_seq,
            // Claims nothing: were the old log's newest segments removed and the oldest kept
            // by a crash, a claim about their seqs would make recovery call them corrupt.
            synced_seq: 0,
        };
        let header = truncate_header(after.next(), chain);
        let end = SEGMENT_HEADER_BYTES + RECORD_HEADER_BYTES;
        let seal = segment_seal(&spare.map);
        let header_crc = write_header(&mut spare.map[SEGMENT_HEADER_BYTES..end], &header, seal);
        if let Err(err) = spare.file.sync_data() {
            return Err(self.poison(err.raw_os_error().unwrap_or(libc::EIO)));
        }
        let path = self.dir.join(live_name(self.next_seq));
        if let Err(err) = std::fs::rename(&spare.path, &path) {
            let context = format!("activate {}", spare.path.display());
            self.preparer.give_back(spare);
            return Err(LogError::io(context, err));
        }
        sync_dir(&self.dir_file).map_err(|err| LogError::io("sync the log directory", err))?;
        // Synced seq 0: while old segments remain, recovery may still follow their chain.
        let head = Head {
            newest_seq: self.next_seq,
            newest_first_index: after.next(),
            synced_seq: 0,
            oldest_seq: self.next_seq,
            seq_floor: self.head.seq_floor.max(self.next_seq + 1),
        };
        head::write(&self.dir, &self.dir_file, head)?;
        self.head = head;
        while let Some(segment) = self.segments.pop_back() {
            self.recycle(segment)?;
        }
        self.segments.push_back(Segment {
            first_seq: self.next_seq,
            seal,
            path,
            file: spare.file,
            map: spare.map,
        });
        self.write_offset = SEGMENT_HEADER_BYTES + stored_bytes(0);
        self.next_seq += 1;
        self.last_header_crc = header_crc;
        self.durable_seq = header.seq;
        self.spans.clear();
        self.next_index = after.next();
        self.last_term = term;
        self.durable_index = after;
        self.sealed_seq = None;
        self.finish_markers_if_covered()?;
        self.stats.segments_activated += 1;
        self.stats.truncations += 1;
        Ok(())
    }

    /// Seq of the last record appended (batches and markers; 0 before the first). Together with
    /// [`Log::durable_seq`] it tells a runtime whether everything it appended so far is durable,
    /// truncation markers included.
    pub fn last_seq(&self) -> u64 {
        self.next_seq - 1
    }

    /// Seq of the last record known durable.
    pub fn durable_seq(&self) -> u64 {
        self.durable_seq
    }

    /// The repair in progress: set from [`Log::open_for_repair`] (or a marker an earlier open
    /// left) until the log is durable up to its `until`, when the marker is removed.
    pub fn repair(&self) -> Option<RepairState> {
        self.repair
    }

    /// Term of the entry at the durable index (the last term when everything is durable).
    fn durable_term(&self) -> Term {
        if self.durable_index >= self.last_index() {
            self.last_term
        } else {
            self.term_at(self.durable_index).unwrap_or(Term::ZERO)
        }
    }

    /// The suspect term: set while the log's tail was cut after an unclean stop and the durable
    /// log holds no entry of a higher term since (see [`suspect`]).
    pub fn suspect(&self) -> Option<Term> {
        self.suspect
    }

    /// Removes the repair and suspect markers once the durable log covers what they wait for.
    fn finish_markers_if_covered(&mut self) -> Result<(), LogError> {
        self.finish_repair_if_covered()?;
        let Some(term) = self.suspect else {
            return Ok(());
        };
        if self.durable_term() <= term {
            return Ok(());
        }
        suspect::remove(&self.dir, &self.dir_file)?;
        tracing::info!(
            dir = %self.dir.display(),
            term = term.get(),
            "log: no longer suspect, the durable log holds an entry of a newer term"
        );
        self.suspect = None;
        Ok(())
    }

    /// Removes the repair marker once the log durably covers the range it records.
    fn finish_repair_if_covered(&mut self) -> Result<(), LogError> {
        let Some(state) = self.repair else {
            return Ok(());
        };
        if !state.is_covered(self.durable_index, self.durable_term()) {
            return Ok(());
        }
        repair::remove(&self.dir, &self.dir_file)?;
        tracing::info!(
            dir = %self.dir.display(),
            until = state.until.get(),
            "log: repair complete, the log is durable up to the index it held before the damage"
        );
        self.repair = None;
        Ok(())
    }

    /// Reads entries `from..=to` as views borrowed from the mapping, one per stored batch (the
    /// first and last clipped to the range). `from` and `to` must lie within the log.
    pub fn read(&self, from: LogIndex, to: LogIndex) -> Result<Read<'_>, LogError> {
        self.check_usable()?;
        let out_of_range = |index| LogError::OutOfRange {
            index,
            first: self.first_index(),
            last: self.last_index(),
        };
        let at = self.span_position(from).ok_or_else(|| out_of_range(from))?;
        if to < from || to > self.last_index() {
            return Err(out_of_range(to));
        }
        Ok(Read {
            log: self,
            at,
            next: from,
            to,
        })
    }

    /// The entries `from..=to` as `(index, bytes)` pairs borrowed from the mapping.
    pub fn entries(
        &self,
        from: LogIndex,
        to: LogIndex,
    ) -> Result<impl Iterator<Item = (LogIndex, &[u8])>, LogError> {
        Ok(self.read(from, to)?.flat_map(|view| {
            let first = view.first_index.get();
            view.entries()
                .enumerate()
                .map(move |(n, entry)| (LogIndex(first + n as u64), entry))
        }))
    }

    fn view_of(&self, span: &RecordSpan, from: LogIndex, to: LogIndex) -> BatchView<'_> {
        let at = self
            .segments
            .binary_search_by_key(&span.segment, |segment| segment.first_seq)
            .expect("a live span lives in a live segment");
        let start = span.offset as usize;
        let map = &self.segments[at].map;
        let payload_bytes = span.payload_bytes as usize;
        let record = &map[start..start + RECORD_HEADER_BYTES + payload_bytes];
        let payload = &record[RECORD_HEADER_BYTES..];
        let stored_last = span.first_index.plus(span.entry_count as u64 - 1);
        let lo = from.max(span.first_index);
        let hi = to.min(span.last_index);
        if lo == span.first_index && hi == stored_last {
            return BatchView {
                term: span.term,
                kind: span.kind,
                first_index: lo,
                entry_count: span.entry_count,
                payload,
                record: Some(record),
            };
        }
        let skip = (lo.get() - span.first_index.get()) as u32;
        let take = (hi.get() - lo.get() + 1) as u32;
        let begin = entry_offset(payload, skip);
        let len = entry_offset(&payload[begin..], take);
        BatchView {
            term: span.term,
            kind: span.kind,
            first_index: lo,
            entry_count: take,
            payload: &payload[begin..begin + len],
            record: None,
        }
    }

    /// Starts a sync round covering everything appended since the previous round, unless
    /// [`LogOptions::syncs_in_flight`] rounds are in flight (then the next round starts when one
    /// completes) or nothing new was appended. Never blocks.
    pub fn request_sync(&mut self) -> Result<(), LogError> {
        self.start_sync(false)
    }

    /// [`Log::request_sync`] for a caller with nothing else to do until the round completes:
    /// when no other round is running (and [`LogOptions::sync_inline_when_idle`] allows it) the
    /// round is synced on this thread, so it has completed when this returns (blocking for one
    /// flush); otherwise it runs in the background as with `request_sync`.
    pub fn request_sync_idle(&mut self) -> Result<(), LogError> {
        self.start_sync(true)
    }

    fn start_sync(&mut self, idle: bool) -> Result<(), LogError> {
        self.check_usable()?;
        let covered = self
            .in_flight
            .back()
            .map_or(self.durable_seq, |round| round.seq);
        if self.next_seq - 1 <= covered || self.dirty.is_empty() {
            return Ok(());
        }
        // Rounds completed behind a running one still count: at most `syncs_in_flight` rounds
        // are ever not yet durable.
        if self.in_flight.len() >= self.options.syncs_in_flight {
            self.sync_wanted = true;
            return Ok(());
        }
        self.submit_round(idle)
    }

    fn submit_round(&mut self, idle: bool) -> Result<(), LogError> {
        let round: Vec<SyncTarget> = self
            .dirty
            .drain(..)
            .map(|range| SyncTarget {
                file: range.file,
                datasync: true,
                range: Some((range.start as u64, (range.end - range.start) as u32)),
            })
            .collect();
        let seq = self.next_seq - 1;
        let covered = self
            .in_flight
            .back()
            .map_or(self.durable_seq, |round| round.seq);
        assert!(
            seq > covered,
            "sync round up to seq {seq} submitted behind one covering seq {covered}"
        );
        self.sync_wanted = false;
        let id = match self.syncer.submit(round, idle) {
            Ok(id) => id,
            Err(errno) => return Err(self.poison(errno)),
        };
        self.in_flight.push_back(Round {
            id,
            done: false,
            overlapped_through: id,
            index: self.last_index(),
            seq,
            entries: std::mem::take(&mut self.unsynced_entries),
            bytes: std::mem::take(&mut self.unsynced_bytes),
        });
        Ok(())
    }

    fn poison(&mut self, errno: i32) -> LogError {
        tracing::error!(
            dir = %self.dir.display(),
            error = %io::Error::from_raw_os_error(errno),
            "log sync failed; the log is poisoned and refuses all further work"
        );
        self.poisoned = Some(errno);
        self.in_flight.clear();
        LogError::Poisoned { errno }
    }

    /// Reaps completed rounds (blocking for one when `wait` and one is in flight), advances the
    /// durable point over the prefix of completed rounds and submits a wanted round if there is
    /// room; returns whether the durable point advanced.
    fn reap(&mut self, wait: bool) -> Result<bool, LogError> {
        let mut block = wait;
        while let Some((id, outcome)) = self.syncer.poll(block) {
            block = false;
            self.complete(id, outcome)?;
        }
        let advanced = self.advance();
        if advanced {
            self.finish_markers_if_covered()?;
        }
        if self.sync_wanted {
            self.request_sync()?;
        }
        Ok(advanced)
    }

    /// Marks round `id` completed; a failed round poisons the log, whichever it is.
    fn complete(&mut self, id: u64, outcome: Result<(), i32>) -> Result<(), LogError> {
        if let Err(errno) = outcome {
            return Err(self.poison(errno));
        }
        let newest = self.in_flight.back().map_or(id, |round| round.id);
        let round = self
            .in_flight
            .iter_mut()
            .find(|round| round.id == id)
            .unwrap_or_else(|| panic!("completion of round {id}, which is not in flight"));
        assert!(!round.done, "round {id} completed twice");
        assert!(
            newest >= id,
            "round {id} completed behind newest round {newest}"
        );
        round.done = true;
        round.overlapped_through = newest;
        Ok(())
    }

    /// Whether the oldest round in flight may count durable: it completed, and so did every
    /// round that overlapped it (one of those may have reported its pages' writeback error;
    /// a failed one poisons the log before this is asked).
    fn front_releasable(&self) -> bool {
        let Some(front) = self.in_flight.front() else {
            return false;
        };
        front.done
            && self
                .in_flight
                .iter()
                .take_while(|round| round.id <= front.overlapped_through)
                .all(|round| round.done)
    }

    /// Counts durable, oldest first, every round that is releasable (see
    /// [`Log::front_releasable`]).
    fn advance(&mut self) -> bool {
        let mut advanced = false;
        while self.front_releasable() {
            let round = self.in_flight.pop_front().expect("front round");
            assert!(
                round.seq > self.durable_seq,
                "round {} up to seq {} completed behind durable seq {}",
                round.id,
                round.seq,
                self.durable_seq
            );
            self.durable_index = self.durable_index.max(round.index);
            self.durable_seq = round.seq;
            self.stats.syncs += 1;
            self.stats.entries_synced += round.entries;
            self.stats.bytes_synced += round.bytes;
            advanced = true;
        }
        advanced
    }

    /// Non-blocking: reaps completed sync rounds and returns the new durable index, or `None`
    /// when the durable point did not advance since the last call (a round that completed
    /// before an earlier one counts once that one completes too).
    pub fn poll_durable(&mut self) -> Result<Option<LogIndex>, LogError> {
        self.check_usable()?;
        Ok(self.reap(false)?.then_some(self.durable_index))
    }

    /// Blocks until everything appended before the call is durable; returns the durable index.
    pub fn wait_durable(&mut self) -> Result<LogIndex, LogError> {
        self.check_usable()?;
        let target = self.next_seq - 1;
        // The caller waits anyway: a round with none running may as well run on this thread.
        self.start_sync(true)?;
        while self.durable_seq < target && (!self.in_flight.is_empty() || !self.dirty.is_empty()) {
            if self.in_flight.is_empty() {
                self.submit_round(true)?;
            }
            self.reap(true)?;
        }
        Ok(self.durable_index)
    }

    /// Blocks until the preparer has [`LogOptions::spare_segments`] spares ready (or failed to
    /// make one, e.g. disk full); returns how many are ready. Useful before a measurement, so the
    /// zero-filling of new segments does not compete with the appends being measured.
    pub fn wait_spares_ready(&self) -> usize {
        self.preparer.wait_all_ready()
    }

    /// Blocks until some sync round in flight (if any) completes, without starting one for
    /// appends made since (when a round was requested meanwhile, it is submitted once there is
    /// room, as in [`Log::poll_durable`]); returns the durable index, which advances only if
    /// that round, every earlier one and every one that overlapped it completed.
    pub fn wait_in_flight(&mut self) -> Result<LogIndex, LogError> {
        self.check_usable()?;
        if !self.in_flight.is_empty() {
            self.reap(true)?;
        }
        Ok(self.durable_index)
    }

    /// Whether a sync round is in flight.
    pub fn sync_in_flight(&self) -> bool {
        !self.in_flight.is_empty()
    }

    /// Sync rounds in flight (submitted, not yet counted durable).
    pub fn syncs_in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// Rung whenever a sync round may have completed (by the kernel itself with io_uring), so
    /// a thread can block on "new work or a completion" in one place — producers of its work
    /// ring the same doorbell ([`Doorbell::ring_if_sleeping`]) — and then call
    /// [`Log::poll_durable`]. Spurious rings are possible; a completion that happens after the
    /// last reap always rings it, except that of a round [`Log::request_sync_idle`] synced
    /// inline (complete when it returns: poll before sleeping).
    pub fn doorbell(&self) -> &Arc<Doorbell> {
        self.syncer.doorbell()
    }

    /// The term and vote last saved.
    pub fn hard_state(&self) -> HardState {
        self.hard_state.get()
    }

    /// Saves term and vote durably (blocking: write one slot, fdatasync). A failed sync poisons
    /// the log.
    pub fn save_hard_state(&mut self, state: HardState) -> Result<(), LogError> {
        self.check_usable()?;
        match self.hard_state.save(state) {
            Err(LogError::Poisoned { errno }) => Err(self.poison(errno)),
            other => other,
        }
    }
}

/// Iterator over [`BatchView`]s of a range; see [`Log::read`].
pub struct Read<'a> {
    log: &'a Log,
    at: usize,
    next: LogIndex,
    to: LogIndex,
}

impl<'a> Iterator for Read<'a> {
    type Item = BatchView<'a>;

    fn next(&mut self) -> Option<BatchView<'a>> {
        if self.next > self.to {
            return None;
        }
        let span = self.log.spans.get(self.at)?;
        let view = self.log.view_of(span, self.next, self.to);
        self.at += 1;
        self.next = view.last_index().next();
        Some(view)
    }
}

#[cfg(test)]
mod tests {
    //! Out-of-order completion: real rounds on real files (io_uring when available), whose
    //! completions are then handed to the log in an order chosen by the test.

    use super::*;
    use crate::batch::BatchBuilder;

    fn append_one(log: &mut Log) {
        let mut builder = BatchBuilder::default();
        builder.push(&[7u8; 64]);
        let batch = builder.finish(Term(1), log.last_index().next(), BatchKind::Normal);
        log.append(&batch).unwrap();
    }

    /// Appends and submits `rounds` rounds of one record each, then lets the real syncer finish
    /// all of them without telling the log; returns the completions by submission order.
    fn rounds_completed_unseen(log: &mut Log, rounds: usize) -> Vec<(u64, Result<(), i32>)> {
        for _ in 0..rounds {
            append_one(log);
            log.request_sync().unwrap();
        }
        assert_eq!(
            log.syncs_in_flight(),
            rounds,
            "every round submitted at once"
        );
        let mut done = Vec::new();
        while let Some(completion) = log.syncer.poll(true) {
            done.push(completion);
        }
        done.sort_by_key(|&(id, _)| id);
        assert_eq!(done.len(), rounds);
        done
    }

    fn open(dir: &Path, syncs_in_flight: usize) -> Log {
        let options = LogOptions {
            segment_bytes: 16 << 10,
            syncs_in_flight,
            ..LogOptions::default()
        };
        Log::open(dir, options).unwrap().0
    }

    #[test]
    fn durable_advances_only_over_a_prefix_of_completed_rounds() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = open(dir.path(), 3);
        let base = log.durable_seq();
        let done = rounds_completed_unseen(&mut log, 3);
        let seqs: Vec<u64> = log.in_flight.iter().map(|round| round.seq).collect();
        assert_eq!(seqs, vec![base + 1, base + 2, base + 3]);

        // The last round completes first, then the middle one: nothing is durable yet, and a
        // record written now vouches only for what was durable before.
        for &(id, outcome) in [done[2], done[1]].iter() {
            log.complete(id, outcome).unwrap();
            assert!(!log.advance());
            assert_eq!(log.durable_seq(), base);
            assert_eq!(log.durable_index(), LogIndex(0));
        }
        // The first completes: all three become durable together.
        log.complete(done[0].0, done[0].1).unwrap();
        assert!(log.advance());
        assert_eq!(log.durable_seq(), base + 3);
        assert_eq!(log.durable_index(), LogIndex(3));
        assert_eq!(log.stats().syncs, 3);
        assert!(!log.sync_in_flight());
        assert_eq!(log.wait_durable().unwrap(), LogIndex(3));
    }

    #[test]
    fn a_failed_later_round_poisons_even_with_earlier_rounds_running() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = open(dir.path(), 2);
        let base = log.durable_seq();
        let done = rounds_completed_unseen(&mut log, 2);
        let error = log.complete(done[1].0, Err(libc::EIO)).unwrap_err();
        assert!(
            matches!(error, LogError::Poisoned { errno: libc::EIO }),
            "{error}"
        );
        assert_eq!(log.durable_seq(), base);
        assert!(matches!(
            log.poll_durable(),
            Err(LogError::Poisoned { errno: libc::EIO })
        ));
        assert!(log.request_sync().is_err());
    }

    /// After a failed sync, pages the disk never got may stay cached and clean, and the next
    /// process's sync succeeds: open must read what it trusts from the disk. A test cannot make
    /// the cache and the disk differ (that takes a failing block device), nor watch the order
    /// of page-cache reads inside open. So `disk::sync_and_drop_cached` is shown to leave no
    /// page cached (its own test, with `mincore`), and this test checks that open passes every
    /// file it reads to it: the segment (before it is mapped) and the hard state.
    #[test]
    fn open_rereads_every_file_it_trusts_from_the_disk() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = open(dir.path(), 1);
        append_one(&mut log);
        log.wait_durable().unwrap();
        let segment = log.segments[0].path.clone();
        drop(log);
        disk::tests::forget_files_reread();
        let log = open(dir.path(), 1);
        assert_eq!(log.last_index(), LogIndex(1));
        assert!(
            disk::tests::was_reread(&segment),
            "segment read from the cache"
        );
        assert!(
            disk::tests::was_reread(&dir.path().join(crate::hard_state::HARD_STATE_FILE)),
            "hard state read from the cache"
        );
    }

    #[test]
    fn open_syncs_the_directories_it_creates_into_their_parents() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("data/log");
        disk::tests::take_dirs_synced();
        drop(open(&dir, 1));
        let synced = disk::tests::take_dirs_synced();
        assert_eq!(
            synced[..2],
            [root.path().join("data"), root.path().to_path_buf()],
            "{synced:?}"
        );
    }

    /// Rounds share one file description per segment, and Linux reports a writeback error once
    /// per description: round k+1's sync may report the failure of round k's pages while round
    /// k's own sync returns success. Round k is released only once every round that was in
    /// flight beside it has succeeded too.
    #[test]
    fn a_round_is_released_only_after_every_overlapping_round_succeeded() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = open(dir.path(), 2);
        let base = log.durable_seq();
        let done = rounds_completed_unseen(&mut log, 2);
        log.complete(done[0].0, done[0].1).unwrap();
        assert!(!log.advance(), "round k released while round k+1 runs");
        assert_eq!(log.durable_seq(), base);
        assert_eq!(log.durable_index(), LogIndex(0));
        let error = log.complete(done[1].0, Err(libc::EIO)).unwrap_err();
        assert!(
            matches!(error, LogError::Poisoned { errno: libc::EIO }),
            "{error}"
        );
        assert_eq!(log.durable_seq(), base, "nothing of round k released");
        assert_eq!(log.durable_index(), LogIndex(0));
        assert!(log.poll_durable().is_err());
    }

    /// A round submitted after round k's completion was seen cannot have taken round k's error
    /// (round k's own sync checked for errors first): it does not hold round k back.
    #[test]
    fn a_round_submitted_after_a_completion_does_not_hold_it_back() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = open(dir.path(), 3);
        let done = rounds_completed_unseen(&mut log, 2);
        log.complete(done[0].0, done[0].1).unwrap();
        append_one(&mut log);
        log.request_sync().unwrap();
        assert_eq!(log.syncs_in_flight(), 3);
        log.complete(done[1].0, done[1].1).unwrap();
        assert!(log.advance());
        assert_eq!(
            log.durable_index(),
            LogIndex(1),
            "round k+1 waits for round k+2"
        );
        assert_eq!(log.wait_durable().unwrap(), LogIndex(3));
    }

    #[test]
    fn a_full_window_queues_the_next_round_until_one_completes() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = open(dir.path(), 2);
        let done = rounds_completed_unseen(&mut log, 2);
        append_one(&mut log);
        log.request_sync().unwrap();
        assert_eq!(log.syncs_in_flight(), 2, "no room for a third round");
        assert!(log.sync_wanted);
        // The second round completes first: room for the wanted round, nothing durable yet.
        log.complete(done[1].0, done[1].1).unwrap();
        assert!(log.in_flight.front().is_some_and(|round| !round.done));
        log.complete(done[0].0, done[0].1).unwrap();
        assert!(log.advance());
        assert_eq!(log.durable_index(), LogIndex(2));
        log.request_sync().unwrap();
        assert_eq!(log.syncs_in_flight(), 1);
        assert_eq!(log.wait_durable().unwrap(), LogIndex(3));
        assert_eq!(log.close().unwrap(), LogIndex(3));
    }
}
