//! The hard state (current term and vote) in its own small file with two checksummed slots.
//!
//! The file `hard_state` is 8 KiB: slot 0 at byte 0, slot 1 at byte 4096, so a write to one slot
//! never touches the block of the other. An update writes the slot *not* holding the current
//! value, with a generation one higher, then fdatasyncs; reading takes the valid slot with the
//! highest generation. A torn update leaves a slot that fails its checksum, and the other slot
//! still holds the previous value. Slot layout (40 bytes, little-endian):
//! `0..4` magic `"LSHS"`, `4` version 1, `5..8` zero, `8..16` generation, `16..24` term,
//! `24..32` vote (node id, 0 = none), `32..36` CRC32 of bytes `0..32`, `36..40` zero.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::log::error::LogError;
use crate::types::{NodeId, Term};

/// The file name inside the log directory.
pub const HARD_STATE_FILE: &str = "hard_state";
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

/// Picks the current value from the two raw slots; `None` when neither is valid although one
/// holds something (both damaged: a crash can damage only the one being written).
pub fn choose(slots: [[u8; SLOT_BYTES]; 2]) -> Option<(u64, HardState)> {
    let decoded = slots.map(|slot| decode_slot(&slot));
    match decoded {
        [Some(a), Some(b)] => Some(if a.0 >= b.0 { a } else { b }),
        [Some(one), None] | [None, Some(one)] => Some(one),
        [None, None] => {
            // A never-written file, or a first write torn: nothing was ever durable.
            let blank = slots
                .iter()
                .filter(|slot| slot.iter().all(|&b| b == 0))
                .count();
            (blank >= 1).then_some((0, HardState::default()))
        }
    }
}

/// Reads the hard state of `path` without opening it for writing (`Ok(None)` when missing).
pub fn read_file(path: &Path) -> Result<Option<HardState>, LogError> {
    let file = match File::open(path) {
        Ok(file) => file,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(err) => return Err(LogError::io(format!("open {}", path.display()), err)),
    };
    let mut slots = [[0u8; SLOT_BYTES]; 2];
    for (number, slot) in slots.iter_mut().enumerate() {
        let _ = file.read_at(slot, number as u64 * SLOT_STRIDE);
    }
    choose(slots)
        .map(|(_, state)| Some(state))
        .ok_or_else(|| LogError::HardStateCorrupt {
            file: path.to_path_buf(),
        })
}

/// The open hard-state file.
pub(crate) struct HardStateFile {
    path: PathBuf,
    file: File,
    generation: u64,
    current: HardState,
}

impl HardStateFile {
    /// Opens (creating a blank one if missing) and reads the current value.
    pub fn open(dir: &Path, dir_file: &File) -> Result<HardStateFile, LogError> {
        let path = dir.join(HARD_STATE_FILE);
        let existed = path.exists();
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|err| LogError::io(format!("open {}", path.display()), err))?;
        if !existed {
            file.set_len(2 * SLOT_STRIDE)
                .and_then(|()| file.sync_all())
                .and_then(|()| dir_file.sync_all())
                .map_err(|err| LogError::io(format!("create {}", path.display()), err))?;
        }
        let mut slots = [[0u8; SLOT_BYTES]; 2];
        for (number, slot) in slots.iter_mut().enumerate() {
            // A short file reads as zeros past its end: treat missing bytes as blank.
            let _ = file.read_at(slot, number as u64 * SLOT_STRIDE);
        }
        let (generation, current) =
            choose(slots).ok_or_else(|| LogError::HardStateCorrupt { file: path.clone() })?;
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
        assert_eq!(choose([a, b]), Some((5, state(3, 2))));
        let mut torn = b;
        torn[20] ^= 1;
        assert_eq!(choose([a, torn]), Some((4, state(2, 1))));
        assert_eq!(choose([[0; 40], [0; 40]]), Some((0, HardState::default())));
        assert_eq!(choose([torn, [0; 40]]), Some((0, HardState::default())));
        let mut torn_a = a;
        torn_a[9] ^= 1;
        assert_eq!(choose([torn_a, torn]), None);
    }

    #[test]
    fn saves_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let dir_file = File::open(dir.path()).unwrap();
        let mut file = HardStateFile::open(dir.path(), &dir_file).unwrap();
        assert_eq!(file.get(), HardState::default());
        file.save(state(1, 1)).unwrap();
        file.save(state(2, 3)).unwrap();
        drop(file);
        let file = HardStateFile::open(dir.path(), &dir_file).unwrap();
        assert_eq!(file.get(), state(2, 3));
    }
}
