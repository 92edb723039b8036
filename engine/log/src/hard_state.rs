//! The hard state (current term and vote) in its own small file with two checksummed slots.
//!
//! The file `hard_state` is 8 KiB: slot 0 at byte 0, slot 1 at byte 4096, so a write to one slot
//! never touches the block of the other. An update writes the slot *not* holding the current
//! value, with a generation one higher, then fdatasyncs; reading takes the valid slot with the
//! highest generation. A torn update leaves a slot that fails its checksum, and the other slot
//! still holds the previous value. Slot layout (40 bytes, little-endian):
//! `0..4` magic `"LSHS"`, `4` version 1, `5..8` zero, `8..16` generation, `16..24` term,
//! `24..32` vote (node id, 0 = none), `32..36` CRC32 of bytes `0..32`, `36..40` zero.
//!
//! Guarantees at open (crash analysis in `docs/LOG.md`, "Hard state"):
//! - a new file gets its name only once complete and synced, with slot 0 valid (generation 0,
//!   term 0, no vote), so no crash leaves a file with a blank slot and a damaged one; such a
//!   file (or one with two damaged slots) is refused, never read as term 0;
//! - an existing file is synced, and its cached pages dropped, before it is read: what the node
//!   acts on is what the disk holds (a value written by a process that died before its sync,
//!   or whose sync failed, is made durable or is read back as the disk has it);
//! - a missing file is created only for a log that has never held a segment; otherwise it is
//!   refused ([`LogError::HardStateMissing`]): a node that forgot its vote could vote twice in
//!   one term.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::disk;
use crate::error::LogError;
use crate::small_file;
use crate::types::{NodeId, Term};

/// The file name inside the log directory.
pub const HARD_STATE_FILE: &str = "hard_state";
const HARD_STATE_TMP: &str = "hard_state.tmp";
const MAGIC: u32 = u32::from_le_bytes(*b"LSHS");
const SLOT_STRIDE: u64 = 4096;
const SLOT_BYTES: usize = 40;

/// What a node must remember across restarts before it acts on a term or vote.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HardState {
    /// The current term.
    pub term: Term,
    /// Whom this node voted for in `term` (`NodeId(0)` = nobody).
    pub vote: NodeId,
}

/// Decodes one slot: `Some((generation, state))` when valid.
fn decode_slot(bytes: &[u8; SLOT_BYTES]) -> Option<(u64, HardState)> {
    let u64_at = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8"));
    let magic = u32::from_le_bytes(bytes[0..4].try_into().expect("4"));
    let crc = u32::from_le_bytes(bytes[32..36].try_into().expect("4"));
    let valid = magic == MAGIC && bytes[4] == 1 && crc == crc32fast::hash(&bytes[..32]);
    valid.then(|| {
        (
            u64_at(8),
            HardState {
                term: Term(u64_at(16)),
                vote: NodeId(u64_at(24)),
            },
        )
    })
}

fn encode_slot(generation: u64, state: HardState) -> [u8; SLOT_BYTES] {
    let mut bytes = [0u8; SLOT_BYTES];
    bytes[0..4].copy_from_slice(&MAGIC.to_le_bytes());
    bytes[4] = 1;
    bytes[8..16].copy_from_slice(&generation.to_le_bytes());
    bytes[16..24].copy_from_slice(&state.term.get().to_le_bytes());
    bytes[24..32].copy_from_slice(&state.vote.get().to_le_bytes());
    let crc = crc32fast::hash(&bytes[..32]);
    bytes[32..36].copy_from_slice(&crc.to_le_bytes());
    bytes
}

/// Picks the current value from the two raw slots, or says why neither can be trusted.
/// Two blank slots are a file made before new files got a valid slot 0, never saved: term 0.
pub fn choose(slots: [[u8; SLOT_BYTES]; 2]) -> Result<(u64, HardState), &'static str> {
    let decoded = slots.map(|slot| decode_slot(&slot));
    let blank = slots.map(|slot| slot.iter().all(|&b| b == 0));
    match (decoded, blank) {
        ([Some(a), Some(b)], _) => Ok(if a.0 >= b.0 { a } else { b }),
        ([Some(one), None] | [None, Some(one)], _) => Ok(one),
        (_, [true, true]) => Ok((0, HardState::default())),
        // A torn first save of a file made blank, or damage to the only slot ever written: the
        // two cannot be told apart, and the second would forget a vote.
        (_, [true, false] | [false, true]) => {
            Err("one slot is blank and the other fails its checksum")
        }
        _ => Err("both slots fail their checksums"),
    }
}

/// The file operations the hard state needs: [`File`] on a real disk, a model of the page cache
/// and the disk in tests.
pub(crate) trait SlotFile {
    /// Reads up to `buf.len()` bytes at `offset`.
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize>;
    /// Writes all of `buf` at `offset`.
    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()>;
    /// `fdatasync`.
    fn sync_data(&self) -> io::Result<()>;
    /// Syncs, then drops the file's cached pages, so the next read comes from the disk.
    fn sync_and_drop_cached(&self) -> io::Result<()>;
}

impl SlotFile for File {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        FileExt::read_at(self, buf, offset)
    }

    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        FileExt::write_all_at(self, buf, offset)
    }

    fn sync_data(&self) -> io::Result<()> {
        File::sync_data(self)
    }

    fn sync_and_drop_cached(&self) -> io::Result<()> {
        disk::sync_and_drop_cached(self)
    }
}

/// Reads both slots; a short file reads as zeros past its end (missing bytes are blank).
fn read_slots(file: &impl SlotFile) -> [[u8; SLOT_BYTES]; 2] {
    let mut slots = [[0u8; SLOT_BYTES]; 2];
    for (number, slot) in slots.iter_mut().enumerate() {
        let _ = file.read_at(slot, number as u64 * SLOT_STRIDE);
    }
    slots
}

fn corrupt(path: &Path) -> impl FnOnce(&'static str) -> LogError + '_ {
    |reason| LogError::HardStateCorrupt {
        file: path.to_path_buf(),
        reason,
    }
}

/// Reads the hard state of `path` without opening it for writing (`Ok(None)` when missing).
pub fn read_file(path: &Path) -> Result<Option<HardState>, LogError> {
    let file = match File::open(path) {
        Ok(file) => file,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(err) => return Err(LogError::io(format!("open {}", path.display()), err)),
    };
    choose(read_slots(&file))
        .map(|(_, state)| Some(state))
        .map_err(corrupt(path))
}

/// Creates the file durably: complete, with slot 0 valid, before it gets its name.
fn create(dir: &Path, dir_file: &File) -> Result<(), LogError> {
    let mut bytes = vec![0u8; 2 * SLOT_STRIDE as usize];
    bytes[..SLOT_BYTES].copy_from_slice(&encode_slot(0, HardState::default()));
    small_file::replace(
        dir,
        dir_file,
        HARD_STATE_FILE,
        HARD_STATE_TMP,
        &bytes,
        "hard state",
    )
}

/// The open hard-state file.
pub(crate) struct HardStateFile<F: SlotFile = File> {
    path: PathBuf,
    file: F,
    generation: u64,
    current: HardState,
}

impl HardStateFile {
    /// Opens the file in `dir` and reads the current value from the disk (module docs). A
    /// missing file is created when `log_existed` is false and refused otherwise.
    pub fn open(dir: &Path, dir_file: &File, log_existed: bool) -> Result<HardStateFile, LogError> {
        let path = dir.join(HARD_STATE_FILE);
        let open = |path: &Path| OpenOptions::new().read(true).write(true).open(path);
        let file = match open(&path) {
            Err(err) if err.kind() == io::ErrorKind::NotFound && log_existed => {
                return Err(LogError::HardStateMissing { file: path });
            }
            Err(err) if err.kind() == io::ErrorKind::NotFound => {
                create(dir, dir_file)?;
                open(&path)
            }
            opened => opened,
        }
        .map_err(|err| LogError::io(format!("open {}", path.display()), err))?;
        HardStateFile::load(path, file)
    }
}

impl<F: SlotFile> HardStateFile<F> {
    /// Reads the current value of `file` as the disk holds it: synced, cached pages dropped.
    fn load(path: PathBuf, file: F) -> Result<HardStateFile<F>, LogError> {
        file.sync_and_drop_cached()
            .map_err(|err| LogError::io(format!("sync and reread {}", path.display()), err))?;
        let (generation, current) = choose(read_slots(&file)).map_err(corrupt(&path))?;
        Ok(HardStateFile {
            path,
            file,
            generation,
            current,
        })
    }

    /// The current value.
    pub fn get(&self) -> HardState {
        self.current
    }

    /// Writes `state` to the other slot and fdatasyncs; returns once durable.
    pub fn save(&mut self, state: HardState) -> Result<(), LogError> {
        let generation = self.generation + 1;
        let slot = generation % 2;
        self.file
            .write_all_at(&encode_slot(generation, state), slot * SLOT_STRIDE)
            .map_err(|err| LogError::io(format!("write {}", self.path.display()), err))?;
        self.file.sync_data().map_err(|err| LogError::Poisoned {
            errno: err.raw_os_error().unwrap_or(libc::EIO),
        })?;
        self.generation = generation;
        self.current = state;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::cell::{Cell, RefCell};

    use super::*;

    fn state(term: u64, vote: u64) -> HardState {
        HardState {
            term: Term(term),
            vote: NodeId(vote),
        }
    }

    #[test]
    fn newest_valid_slot_wins_and_a_torn_slot_keeps_the_old_value() {
        let a = encode_slot(4, state(2, 1));
        let b = encode_slot(5, state(3, 2));
        assert_eq!(choose([a, b]), Ok((5, state(3, 2))));
        let mut torn = b;
        torn[20] ^= 1;
        assert_eq!(choose([a, torn]), Ok((4, state(2, 1))));
        assert_eq!(choose([[0; 40], [0; 40]]), Ok((0, HardState::default())));
        let mut torn_a = a;
        torn_a[9] ^= 1;
        assert_eq!(
            choose([torn_a, torn]),
            Err("both slots fail their checksums")
        );
    }

    #[test]
    fn saves_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let dir_file = File::open(dir.path()).unwrap();
        let mut file = HardStateFile::open(dir.path(), &dir_file, false).unwrap();
        assert_eq!(file.get(), HardState::default());
        file.save(state(1, 1)).unwrap();
        file.save(state(2, 3)).unwrap();
        drop(file);
        let file = HardStateFile::open(dir.path(), &dir_file, true).unwrap();
        assert_eq!(file.get(), state(2, 3));
    }

    /// A damaged slot beside a blank one may be the only value ever saved (disk damage), not a
    /// torn first save: reading term 0 could forget a vote.
    #[test]
    fn a_blank_slot_beside_a_damaged_one_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let dir_file = File::open(dir.path()).unwrap();
        let mut bytes = vec![0u8; 2 * SLOT_STRIDE as usize];
        let mut damaged = encode_slot(1, state(5, 2));
        damaged[17] ^= 1;
        bytes[SLOT_STRIDE as usize..][..SLOT_BYTES].copy_from_slice(&damaged);
        std::fs::write(dir.path().join(HARD_STATE_FILE), &bytes).unwrap();
        let error = HardStateFile::open(dir.path(), &dir_file, true)
            .err()
            .expect("a blank and a damaged slot must be refused");
        let message = error.to_string();
        assert!(
            matches!(error, LogError::HardStateCorrupt { .. })
                && message.contains("one slot is blank and the other fails its checksum"),
            "{message}"
        );
        assert!(read_file(&dir.path().join(HARD_STATE_FILE)).is_err());
    }

    /// A new file gets slot 0 valid before its name, so a first save torn by a crash leaves one
    /// valid slot (term 0, which is right: that save never completed), never a blank and a
    /// damaged one.
    #[test]
    fn a_new_file_holds_a_valid_slot_so_a_torn_first_save_reads_term_zero() {
        let dir = tempfile::tempdir().unwrap();
        let dir_file = File::open(dir.path()).unwrap();
        drop(HardStateFile::open(dir.path(), &dir_file, false).unwrap());
        let path = dir.path().join(HARD_STATE_FILE);
        let mut bytes = std::fs::read(&path).unwrap();
        assert_eq!(bytes.len(), 2 * SLOT_STRIDE as usize);
        let slot0: [u8; SLOT_BYTES] = bytes[..SLOT_BYTES].try_into().unwrap();
        assert_eq!(decode_slot(&slot0), Some((0, HardState::default())));
        let mut torn = encode_slot(1, state(4, 4));
        torn[30] ^= 1;
        bytes[SLOT_STRIDE as usize..][..SLOT_BYTES].copy_from_slice(&torn);
        std::fs::write(&path, &bytes).unwrap();
        let file = HardStateFile::open(dir.path(), &dir_file, true).unwrap();
        assert_eq!(file.get(), HardState::default());
    }

    #[test]
    fn a_missing_file_is_created_for_a_new_log_and_refused_for_an_old_one() {
        let dir = tempfile::tempdir().unwrap();
        let dir_file = File::open(dir.path()).unwrap();
        let error = HardStateFile::open(dir.path(), &dir_file, true)
            .err()
            .expect("a missing hard state of a log that existed must be refused");
        assert!(
            matches!(error, LogError::HardStateMissing { .. }),
            "{error}"
        );
        assert!(
            !dir.path().join(HARD_STATE_FILE).exists(),
            "nothing created"
        );
        let file = HardStateFile::open(dir.path(), &dir_file, false).unwrap();
        assert_eq!(file.get(), HardState::default());
    }

    /// One file as the kernel keeps it: the page cache (what reads see) and the disk (what a
    /// power loss leaves). A sync writes dirty cached bytes to the disk; a failed sync marks
    /// them clean without writing them, as Linux does, so a later sync succeeds and writes
    /// nothing; dropping the cache makes reads see the disk.
    #[derive(Default)]
    struct ModelFile {
        cache: RefCell<Vec<u8>>,
        disk: RefCell<Vec<u8>>,
        dirty: Cell<bool>,
        fail_next_sync: Cell<bool>,
    }

    impl ModelFile {
        /// A file as [`create`] leaves it, on the disk.
        fn created() -> ModelFile {
            let mut bytes = vec![0u8; 2 * SLOT_STRIDE as usize];
            bytes[..SLOT_BYTES].copy_from_slice(&encode_slot(0, HardState::default()));
            ModelFile {
                cache: RefCell::new(bytes.clone()),
                disk: RefCell::new(bytes),
                ..ModelFile::default()
            }
        }

        fn power_loss(&self) {
            self.cache.replace(self.disk.borrow().clone());
            self.dirty.set(false);
        }
    }

    impl SlotFile for &ModelFile {
        fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
            let cache = self.cache.borrow();
            buf.copy_from_slice(&cache[offset as usize..][..buf.len()]);
            Ok(buf.len())
        }

        fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
            self.cache.borrow_mut()[offset as usize..][..buf.len()].copy_from_slice(buf);
            self.dirty.set(true);
            Ok(())
        }

        fn sync_data(&self) -> io::Result<()> {
            let dirty = self.dirty.replace(false);
            if self.fail_next_sync.replace(false) && dirty {
                return Err(io::Error::from_raw_os_error(libc::EIO));
            }
            if dirty {
                self.disk.replace(self.cache.borrow().clone());
            }
            Ok(())
        }

        fn sync_and_drop_cached(&self) -> io::Result<()> {
            self.sync_data()?;
            self.cache.replace(self.disk.borrow().clone());
            Ok(())
        }
    }

    fn load(file: &ModelFile) -> HardState {
        HardStateFile::load(PathBuf::from("model"), file)
            .unwrap()
            .get()
    }

    /// A process writes a vote and dies before its sync; the restarted node reads the vote and
    /// acts on it (its vote for node 1 in term 2 goes out); a power loss follows. The vote must
    /// survive it, or the node could vote for another candidate in term 2.
    #[test]
    fn a_vote_read_at_open_is_durable_before_the_node_acts_on_it() {
        let file = ModelFile::created();
        assert_eq!(load(&file), HardState::default());
        // The first save writes slot 1, and the process dies before its sync.
        (&file)
            .write_all_at(&encode_slot(1, state(2, 1)), SLOT_STRIDE)
            .unwrap();
        assert_eq!(
            load(&file),
            state(2, 1),
            "the restarted node votes for 1 in term 2"
        );
        file.power_loss();
        assert_eq!(load(&file), state(2, 1), "the vote it acted on was lost");
    }

    /// A save whose sync failed left its bytes cached and clean (the kernel's behaviour after a
    /// writeback error); the restarted node's sync succeeds. It must read what the disk holds.
    #[test]
    fn a_save_whose_sync_failed_is_read_back_as_the_disk_holds_it() {
        let file = ModelFile::created();
        let mut hard_state = HardStateFile::load(PathBuf::from("model"), &file).unwrap();
        hard_state.save(state(1, 1)).unwrap();
        file.fail_next_sync.set(true);
        assert!(matches!(
            hard_state.save(state(2, 3)),
            Err(LogError::Poisoned { errno: libc::EIO })
        ));
        drop(hard_state);
        assert_eq!(load(&file), state(1, 1), "read a vote the disk never got");
        file.power_loss();
        assert_eq!(load(&file), state(1, 1));
    }
}
