//! The repair marker: the one fact a node whose log lost durable entries must not forget until
//! it has fetched them back from its peers.
//!
//! When [`Log::open_for_repair`](crate::log::Log::open_for_repair) cuts a log before damaged
//! records, the entries from the damage up to the highest index the log is known to have held
//! (`until`) are gone, and some of them may have been acknowledged to a leader. Until the log
//! durably covers `until` again, the node must not vote or campaign (see `docs/RAFT.md`,
//! "Repair"). That fact lives in this small file, written and synced *before* anything is cut,
//! so a crash during the repair finds it again even though the damaged records (the evidence)
//! may be gone by then. It is removed once the log is durable up to `until`.
//!
//! File `repair` in the log directory, 64 bytes, little-endian (`docs/FORMATS.md`):
//! `0..4` magic `"LSRP"`, `4` version 1, `5..8` zero, `8..16` first lost index (0 = unknown),
//! `16..24` until (the highest index the log held), `24..28` CRC32 of bytes `0..24`, `28..64`
//! zero. It is written as `repair.tmp`, synced, renamed, and the directory synced.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::log::error::LogError;
use crate::log::recovery::Damage;
use crate::log::segment::sync_dir;
use crate::types::LogIndex;

/// The file name inside the log directory.
pub const REPAIR_FILE: &str = "repair";
const REPAIR_TMP: &str = "repair.tmp";
const MAGIC: u32 = u32::from_le_bytes(*b"LSRP");
const VERSION: u8 = 1;
/// Bytes of the file.
pub const REPAIR_FILE_BYTES: usize = 64;

/// A repair in progress: entries `first_lost..=until` were lost and must be fetched back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RepairState {
    /// The first index that could not be read (0 when unknown, e.g. the first record of a
    /// compacted log).
    pub first_lost: LogIndex,
    /// The highest index the log is known to have held before the damage.
    pub until: LogIndex,
}

impl RepairState {
    /// Both repairs at once (a second damage found while the first was being repaired).
    pub fn merge(self, other: RepairState) -> RepairState {
        let first_lost = match (self.first_lost.get(), other.first_lost.get()) {
            (0, _) | (_, 0) => LogIndex::ZERO,
            (a, b) => LogIndex(a.min(b)),
        };
        RepairState {
            first_lost,
            until: self.until.max(other.until),
        }
    }
}

/// Damage that [`Log::open_for_repair`](crate::log::Log::open_for_repair) cut off.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DamageReport {
    /// The segment file holding the damage.
    pub file: PathBuf,
    /// Byte offset of the damaged or missing record in it.
    pub offset: u64,
    /// The first index that could not be read (0 when unknown).
    pub index: LogIndex,
    /// What is wrong.
    pub reason: String,
    /// The highest index the log is known to have held.
    pub last_index_claimed: LogIndex,
}

impl DamageReport {
    /// The scan's damage, found in `file`.
    pub(crate) fn new(damage: Damage, file: PathBuf) -> DamageReport {
        DamageReport {
            file,
            offset: damage.at.offset as u64,
            index: damage.at.index,
            reason: damage.at.reason,
            last_index_claimed: damage.last_index_claimed,
        }
    }
}

impl std::fmt::Display for DamageReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "log damaged in {} at byte offset {}: entries {}..={} are lost ({})",
            self.file.display(),
            self.offset,
            self.index.get(),
            self.last_index_claimed.get(),
            self.reason
        )
    }
}

/// Encodes the file's bytes.
pub fn encode(state: RepairState) -> [u8; REPAIR_FILE_BYTES] {
    let mut bytes = [0u8; REPAIR_FILE_BYTES];
    bytes[0..4].copy_from_slice(&MAGIC.to_le_bytes());
    bytes[4] = VERSION;
    bytes[8..16].copy_from_slice(&state.first_lost.get().to_le_bytes());
    bytes[16..24].copy_from_slice(&state.until.get().to_le_bytes());
    let crc = crc32fast::hash(&bytes[..24]);
    bytes[24..28].copy_from_slice(&crc.to_le_bytes());
    bytes
}

/// Decodes the file's bytes, or says what is wrong with them.
pub fn decode(bytes: &[u8]) -> Result<RepairState, String> {
    if bytes.len() != REPAIR_FILE_BYTES {
        return Err(format!(
            "{} bytes, expected {REPAIR_FILE_BYTES}",
            bytes.len()
        ));
    }
    let u64_at = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8"));
    let magic = u32::from_le_bytes(bytes[0..4].try_into().expect("4"));
    if magic != MAGIC {
        return Err(format!("bad magic {magic:#010x}"));
    }
    if bytes[4] != VERSION {
        return Err(format!("version {}, expected {VERSION}", bytes[4]));
    }
    let crc = u32::from_le_bytes(bytes[24..28].try_into().expect("4"));
    let computed = crc32fast::hash(&bytes[..24]);
    if crc != computed {
        return Err(format!(
            "crc {crc:#010x} does not match the contents ({computed:#010x})"
        ));
    }
    Ok(RepairState {
        first_lost: LogIndex(u64_at(8)),
        until: LogIndex(u64_at(16)),
    })
}

/// Reads the repair marker of the log in `dir` (`Ok(None)` when there is none). A damaged
/// marker is refused: it was written whole and synced before it was renamed into place.
pub(crate) fn read(dir: &Path) -> Result<Option<RepairState>, LogError> {
    let path = dir.join(REPAIR_FILE);
    let bytes = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(err) => return Err(LogError::io(format!("read {}", path.display()), err)),
    };
    decode(&bytes)
        .map(Some)
        .map_err(|reason| LogError::Corrupt {
            file: path,
            offset: 0,
            index: LogIndex::ZERO,
            reason: format!("repair marker: {reason}"),
        })
}

/// Writes and syncs the repair marker (atomically replacing any earlier one).
pub(crate) fn write(dir: &Path, dir_file: &File, state: RepairState) -> Result<(), LogError> {
    assert!(
        state.first_lost <= state.until.next(),
        "repair marker from {} beyond until {}",
        state.first_lost,
        state.until
    );
    let tmp = dir.join(REPAIR_TMP);
    let path = dir.join(REPAIR_FILE);
    let context = |what: &str| format!("{what} the repair marker {}", path.display());
    let mut file = File::create(&tmp).map_err(|err| LogError::io(context("create"), err))?;
    file.write_all(&encode(state))
        .and_then(|()| file.sync_all())
        .map_err(|err| LogError::io(context("write"), err))?;
    std::fs::rename(&tmp, &path)
        .and_then(|()| sync_dir(dir_file))
        .map_err(|err| LogError::io(context("install"), err))
}

/// Removes the repair marker and syncs the directory.
pub(crate) fn remove(dir: &Path, dir_file: &File) -> Result<(), LogError> {
    let path = dir.join(REPAIR_FILE);
    std::fs::remove_file(&path)
        .and_then(|()| sync_dir(dir_file))
        .map_err(|err| LogError::io(format!("remove the repair marker {}", path.display()), err))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_every_damage_is_refused() {
        let state = RepairState {
            first_lost: LogIndex(7),
            until: LogIndex(42),
        };
        let bytes = encode(state);
        assert_eq!(decode(&bytes), Ok(state));
        for at in 0..28 {
            let mut damaged = bytes;
            damaged[at] ^= 0x10;
            assert!(decode(&damaged).is_err(), "flip at byte {at} accepted");
        }
        assert!(decode(&bytes[..63]).is_err());
    }

    #[test]
    fn merge_keeps_the_wider_range() {
        let a = RepairState {
            first_lost: LogIndex(5),
            until: LogIndex(9),
        };
        let b = RepairState {
            first_lost: LogIndex(3),
            until: LogIndex(7),
        };
        assert_eq!(
            a.merge(b),
            RepairState {
                first_lost: LogIndex(3),
                until: LogIndex(9)
            }
        );
        let unknown = RepairState {
            first_lost: LogIndex::ZERO,
            until: LogIndex(2),
        };
        assert_eq!(a.merge(unknown).first_lost, LogIndex::ZERO);
    }

    #[test]
    fn marker_survives_on_disk_and_is_removed() {
        let dir = tempfile::tempdir().unwrap();
        let dir_file = File::open(dir.path()).unwrap();
        assert_eq!(read(dir.path()).unwrap(), None);
        let state = RepairState {
            first_lost: LogIndex(1),
            until: LogIndex(3),
        };
        write(dir.path(), &dir_file, state).unwrap();
        assert_eq!(read(dir.path()).unwrap(), Some(state));
        remove(dir.path(), &dir_file).unwrap();
        assert_eq!(read(dir.path()).unwrap(), None);
    }
}
