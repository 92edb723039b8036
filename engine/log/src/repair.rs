//! The repair marker: the one fact a node whose log lost durable entries must not forget until
//! it has fetched them back from its peers.
//!
//! When [`Log::open_for_repair`](crate::Log::open_for_repair) cuts a log before damaged
//! records, the entries from the damage up to the highest index the log is known to have held
//! (`until`) are gone, and some of them may have been acknowledged to a leader. Until the log
//! durably covers `until` again, the node must not vote or campaign (see `docs/RAFT.md`,
//! "Repair"). That fact lives in this small file, written and synced *before* anything is cut,
//! so a crash during the repair finds it again even though the damaged records (the evidence)
//! may be gone by then. It is removed once the log is durable up to `until`.
//!
//! File `repair` in the log directory, 64 bytes, little-endian (`docs/FORMATS.md`), version 2:
//! `0..4` magic `"LSRP"`, `4` version 2, `5` flags (bit 0: `above_term` set), `6..8` zero,
//! `8..16` first lost index (0 = unknown), `16..24` until (the highest index the log is known to
//! have held), `24..32` above_term, `32..36` CRC32 of bytes `0..32`, `36..64` zero. Version 1
//! (no flags or term, CRC32 of `0..24` at `24..28`) is still read. Replaced atomically
//! ([`small_file`]).

use std::fs::File;
use std::path::{Path, PathBuf};

use crate::error::LogError;
use crate::recovery::Damage;
use crate::segment::sync_dir;
use crate::small_file::{self, SmallFileError};
use crate::types::{LogIndex, Term};

/// The file name inside the log directory.
pub const REPAIR_FILE: &str = "repair";
const REPAIR_TMP: &str = "repair.tmp";
const MAGIC: u32 = u32::from_le_bytes(*b"LSRP");
const VERSION: u8 = 2;
/// Bytes of the file.
pub const REPAIR_FILE_BYTES: usize = 64;

/// A repair in progress: entries from `first_lost` on were lost and must be fetched back.
///
/// When the log knows how far it reached (damage inside a segment, witnessed by later records),
/// `until` says it and `above_term` is `None`. When it does not (a whole segment, or the end of
/// one, is gone: nothing left on disk says how many records it held), `above_term` is the
/// highest term the node had reached: every entry it could have acknowledged has a term no
/// higher, so once its log durably holds an entry of a higher term (which only a leader elected
/// without this node's vote can have written, and whose log holds every committed entry of the
/// earlier terms), it holds all of them again (`docs/RAFT.md`, "Repair").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RepairState {
    /// The first index that could not be read (0 when unknown, e.g. the first record of a
    /// compacted log).
    pub first_lost: LogIndex,
    /// The highest index the log is known to have held before the damage.
    pub until: LogIndex,
    /// Set when the log may have held more than `until`: the repair also waits for a durable
    /// entry of a term above this one.
    pub above_term: Option<Term>,
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
            above_term: self.above_term.max(other.above_term),
        }
    }

    /// Whether a log durable up to `durable`, whose entry there has term `durable_term`, holds
    /// everything this repair waits for.
    pub fn is_covered(&self, durable: LogIndex, durable_term: Term) -> bool {
        durable >= self.until && self.above_term.is_none_or(|term| durable_term > term)
    }
}

/// Damage that [`Log::open_for_repair`](crate::Log::open_for_repair) cut off.
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
    /// Set when the log may have held more than `last_index_claimed` (a lost or cut segment).
    pub extent_unknown: bool,
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
            extent_unknown: damage.extent_unknown,
        }
    }
}

impl std::fmt::Display for DamageReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "log damaged in {} at byte offset {}: ",
            self.file.display(),
            self.offset
        )?;
        match (self.index.get(), self.extent_unknown) {
            (0, false) => write!(
                f,
                "entries up to {} are lost",
                self.last_index_claimed.get()
            )?,
            (first, false) => write!(
                f,
                "entries {first}..={} are lost",
                self.last_index_claimed.get()
            )?,
            (0, true) => write!(f, "entries are lost (how many is unknown)")?,
            (first, true) => write!(f, "entries from {first} on are lost (how many is unknown)")?,
        }
        write!(f, " ({})", self.reason)
    }
}

/// Encodes the file's bytes (version 2).
pub fn encode(state: RepairState) -> [u8; REPAIR_FILE_BYTES] {
    let mut bytes = [0u8; REPAIR_FILE_BYTES];
    bytes[0..4].copy_from_slice(&MAGIC.to_le_bytes());
    bytes[4] = VERSION;
    bytes[5] = u8::from(state.above_term.is_some());
    bytes[8..16].copy_from_slice(&state.first_lost.get().to_le_bytes());
    bytes[16..24].copy_from_slice(&state.until.get().to_le_bytes());
    let term = state.above_term.unwrap_or(Term::ZERO);
    bytes[24..32].copy_from_slice(&term.get().to_le_bytes());
    let crc = crc32fast::hash(&bytes[..32]);
    bytes[32..36].copy_from_slice(&crc.to_le_bytes());
    bytes
}

/// Decodes the file's bytes (version 2, or version 1 as written before the term bound
/// existed), or says what is wrong with them.
pub fn decode(bytes: &[u8]) -> Result<RepairState, SmallFileError> {
    crate::small_file::check_length_and_magic(bytes, REPAIR_FILE_BYTES, MAGIC)?;
    let u64_at = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8"));
    let covered = match bytes[4] {
        1 => 24,
        VERSION => 32,
        other => {
            return Err(SmallFileError::Version {
                found: other,
                expected: VERSION,
                older: Some(1),
            })
        }
    };
    let crc = u32::from_le_bytes(bytes[covered..covered + 4].try_into().expect("4"));
    let computed = crc32fast::hash(&bytes[..covered]);
    if crc != computed {
        return Err(SmallFileError::Crc {
            stored: crc,
            computed,
        });
    }
    let above_term = match (bytes[4], bytes[5]) {
        (1, _) | (_, 0) => None,
        (_, 1) => Some(Term(u64_at(24))),
        (_, flags) => return Err(SmallFileError::UnknownFlags(flags)),
    };
    Ok(RepairState {
        first_lost: LogIndex(u64_at(8)),
        until: LogIndex(u64_at(16)),
        above_term,
    })
}

/// Reads the repair marker of the log in `dir` (`Ok(None)` when there is none). A damaged
/// marker is refused: it was written whole and synced before it was renamed into place.
pub(crate) fn read(dir: &Path) -> Result<Option<RepairState>, LogError> {
    let Some(bytes) = small_file::read(dir, REPAIR_FILE)? else {
        return Ok(None);
    };
    decode(&bytes)
        .map(Some)
        .map_err(|reason| LogError::Corrupt {
            file: dir.join(REPAIR_FILE),
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
    small_file::replace(
        dir,
        dir_file,
        REPAIR_FILE,
        REPAIR_TMP,
        &encode(state),
        "the repair marker",
    )
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

    fn state(first_lost: u64, until: u64, above_term: Option<u64>) -> RepairState {
        RepairState {
            first_lost: LogIndex(first_lost),
            until: LogIndex(until),
            above_term: above_term.map(Term),
        }
    }

    #[test]
    fn round_trip_and_every_damage_is_refused() {
        for state in [state(7, 42, None), state(7, 6, Some(3))] {
            let bytes = encode(state);
            assert_eq!(decode(&bytes), Ok(state));
            for at in 0..36 {
                let mut damaged = bytes;
                damaged[at] ^= 0x10;
                assert!(decode(&damaged).is_err(), "flip at byte {at} accepted");
            }
            assert_eq!(
                decode(&bytes[..63]),
                Err(SmallFileError::Length {
                    found: 63,
                    expected: REPAIR_FILE_BYTES
                })
            );
        }
        let mut version_3 = encode(state(7, 42, None));
        version_3[4] = 3;
        let err = decode(&version_3).unwrap_err();
        assert_eq!(err.to_string(), "version 3, expected 1 or 2");
    }

    #[test]
    fn version_1_is_still_read() {
        let mut bytes = [0u8; REPAIR_FILE_BYTES];
        bytes[0..4].copy_from_slice(b"LSRP");
        bytes[4] = 1;
        bytes[8] = 101;
        bytes[16..18].copy_from_slice(&400u16.to_le_bytes());
        let crc = crc32fast::hash(&bytes[..24]);
        bytes[24..28].copy_from_slice(&crc.to_le_bytes());
        assert_eq!(decode(&bytes), Ok(state(101, 400, None)));
    }

    #[test]
    fn merge_keeps_the_wider_range_and_the_higher_term() {
        assert_eq!(
            state(5, 9, None).merge(state(3, 7, None)),
            state(3, 9, None)
        );
        assert_eq!(
            state(5, 9, None).merge(state(0, 2, None)).first_lost,
            LogIndex::ZERO
        );
        assert_eq!(
            state(5, 9, Some(2)).merge(state(6, 5, Some(4))),
            state(5, 9, Some(4))
        );
        assert_eq!(
            state(5, 9, None).merge(state(6, 5, Some(1))).above_term,
            Some(Term(1))
        );
    }

    #[test]
    fn covered_needs_the_index_and_a_newer_term() {
        let known = state(5, 9, None);
        assert!(!known.is_covered(LogIndex(8), Term(7)));
        assert!(known.is_covered(LogIndex(9), Term(1)));
        let unknown = state(5, 4, Some(3));
        assert!(!unknown.is_covered(LogIndex(50), Term(3)));
        assert!(unknown.is_covered(LogIndex(5), Term(4)));
        assert!(!unknown.is_covered(LogIndex(3), Term(4)));
    }

    #[test]
    fn marker_survives_on_disk_and_is_removed() {
        let dir = tempfile::tempdir().unwrap();
        let dir_file = File::open(dir.path()).unwrap();
        assert_eq!(read(dir.path()).unwrap(), None);
        let state = state(1, 3, Some(2));
        write(dir.path(), &dir_file, state).unwrap();
        assert_eq!(read(dir.path()).unwrap(), Some(state));
        remove(dir.path(), &dir_file).unwrap();
        assert_eq!(read(dir.path()).unwrap(), None);
    }
}
