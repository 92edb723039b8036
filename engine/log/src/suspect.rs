//! The suspect marker: the fact that recovery cut this log's tail after an unclean stop, kept
//! until the log durably holds an entry of a newer term.
//!
//! Damage to the last durable records, with nothing written after them to witness that they
//! were durable, looks exactly like a torn write, and recovery cuts it. The records cut may
//! have been acknowledged to a leader, so the consensus core must not let its shortened log
//! decide an election until it has learned from its peers what it may have acknowledged
//! (`docs/RAFT.md`, "Suspect tail"). This file keeps that fact across a second crash, which
//! would otherwise find a clean log (the next appends overwrite the evidence). It is written
//! and synced while the log opens, before anything can be appended over the cut; the log
//! removes it once its durable log holds an entry of a term above `term`, which only a leader
//! of a newer term can have written and whose log holds every entry committed before it.
//!
//! File `suspect` in the log directory, 64 bytes, little-endian (`docs/FORMATS.md`), version 1:
//! `0..4` magic `"LSSU"`, `4` version 1, `5..8` zero, `8..16` term (no entry the node may have
//! acknowledged before the cut has a higher one), `16..20` CRC32 of bytes `0..16`, `20..64`
//! zero. Replaced atomically ([`small_file`]).

use std::fs::File;
use std::path::Path;

use crate::error::LogError;
use crate::segment::sync_dir;
use crate::small_file::{self, SmallFileError};
use crate::types::{LogIndex, Term};

/// The file name inside the log directory.
pub const SUSPECT_FILE: &str = "suspect";
const SUSPECT_TMP: &str = "suspect.tmp";
const MAGIC: u32 = u32::from_le_bytes(*b"LSSU");
const VERSION: u8 = 1;
/// Bytes of the file.
pub const SUSPECT_FILE_BYTES: usize = 64;

/// Encodes the file's bytes.
pub fn encode(term: Term) -> [u8; SUSPECT_FILE_BYTES] {
    let mut bytes = [0u8; SUSPECT_FILE_BYTES];
    bytes[0..4].copy_from_slice(&MAGIC.to_le_bytes());
    bytes[4] = VERSION;
    bytes[8..16].copy_from_slice(&term.get().to_le_bytes());
    let crc = crc32fast::hash(&bytes[..16]);
    bytes[16..20].copy_from_slice(&crc.to_le_bytes());
    bytes
}

/// Decodes the file's bytes, or says what is wrong with them.
pub fn decode(bytes: &[u8]) -> Result<Term, SmallFileError> {
    crate::small_file::check_length_and_magic(bytes, SUSPECT_FILE_BYTES, MAGIC)?;
    if bytes[4] != VERSION {
        return Err(SmallFileError::Version {
            found: bytes[4],
            expected: VERSION,
            older: None,
        });
    }
    let crc = u32::from_le_bytes(bytes[16..20].try_into().expect("4"));
    let computed = crc32fast::hash(&bytes[..16]);
    if crc != computed {
        return Err(SmallFileError::Crc {
            stored: crc,
            computed,
        });
    }
    Ok(Term(u64::from_le_bytes(
        bytes[8..16].try_into().expect("8"),
    )))
}

/// Reads the suspect marker of the log in `dir` (`Ok(None)` when there is none). A damaged
/// marker is refused: it was written whole and synced before it was renamed into place.
pub(crate) fn read(dir: &Path) -> Result<Option<Term>, LogError> {
    let Some(bytes) = small_file::read(dir, SUSPECT_FILE)? else {
        return Ok(None);
    };
    decode(&bytes)
        .map(Some)
        .map_err(|reason| LogError::Corrupt {
            file: dir.join(SUSPECT_FILE),
            offset: 0,
            index: LogIndex::ZERO,
            reason: format!("suspect marker: {reason}"),
        })
}

/// Writes and syncs the suspect marker (atomically replacing any earlier one).
pub(crate) fn write(dir: &Path, dir_file: &File, term: Term) -> Result<(), LogError> {
    small_file::replace(
        dir,
        dir_file,
        SUSPECT_FILE,
        SUSPECT_TMP,
        &encode(term),
        "the suspect marker",
    )
}

/// The suspect term of the log in `dir` after an open that cut its tail (`cut`) or not: a cut
/// writes the marker (raising an earlier one's term to `term`, the node's current term, which
/// bounds every entry it may have acknowledged); otherwise an earlier marker stays as it is.
pub(crate) fn mark_if_cut(
    dir: &Path,
    dir_file: &File,
    cut: bool,
    term: Term,
) -> Result<Option<Term>, LogError> {
    let earlier = read(dir)?;
    if !cut {
        return Ok(earlier);
    }
    let term = earlier.map_or(term, |earlier| earlier.max(term));
    write(dir, dir_file, term)?;
    Ok(Some(term))
}

/// Removes the suspect marker and syncs the directory.
pub(crate) fn remove(dir: &Path, dir_file: &File) -> Result<(), LogError> {
    let path = dir.join(SUSPECT_FILE);
    std::fs::remove_file(&path)
        .and_then(|()| sync_dir(dir_file))
        .map_err(|err| LogError::io(format!("remove the suspect marker {}", path.display()), err))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suspect_marker_round_trips_and_refuses_damage() {
        let bytes = encode(Term(7));
        assert_eq!(decode(&bytes), Ok(Term(7)));
        for at in 0..20 {
            let mut damaged = bytes;
            damaged[at] ^= 0x10;
            assert!(decode(&damaged).is_err(), "flip at {at} accepted");
        }
        assert!(decode(&bytes[..63]).is_err());
    }
}
