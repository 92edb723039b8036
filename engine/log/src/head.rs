//! The log head: what must exist on disk, recorded outside the segments, so that a lost segment
//! (above all the newest one, whose loss leaves no trace inside the others) is noticed.
//!
//! File `head` in the log directory, 64 bytes, little-endian (`docs/FORMATS.md`, "Log head
//! file"): `0..4` magic `"LSHD"`, `4` version 2, `5..8` zero, `8..16` newest seq (the first seq
//! of the newest live segment, 0 = none required), `16..24` that segment's first index
//! (informational), `24..32` synced seq (every record up to this seq was durable when the file
//! was written), `32..40` oldest seq (the first seq of the oldest live segment), `40..48` seq
//! floor (the log's next seq is at least this: it covers records in segments open discarded),
//! `48..52` CRC32 of bytes `0..48`, `52..64` zero. Version 1 (no seq floor; CRC32 of bytes
//! `0..40` at `40..44`) is still read, as a floor of 0. Replaced atomically ([`small_file`]) when a segment is
//! activated (after its rename is durable and before any record goes into it), before
//! compaction removes segments from the front, when the log is reset after a snapshot, and
//! when open discards segments. Segment switches happen once per segment (64 MiB by default), so the three syncs
//! this costs stay off the per-record path.
//!
//! What [`check`] finds on open, given the live segments and the recovery scan:
//! - the oldest live segment is newer than the head's oldest: damage (compaction writes the
//!   head before it removes anything, so the segment was lost, not compacted);
//! - the newest segment named by the head is missing: damage (its records may have been
//!   durable, and nothing says how many there were);
//! - the log found ends before the head's synced seq: damage (durable records are gone);
//! - no head, no segments: a new log; no head, and no live segment header carries the "keeps a
//!   head" flag: a log written before the head existed (it is written from what is found); no
//!   head but a flagged segment, or a head that fails its checks: damage (the head was deleted
//!   or damaged; it was complete and synced before it got its name).
//!
//! Upgrading a log written before the head existed: open writes the head from what it found,
//! and then sets the flag in the header of every live segment it keeps, each synced (later
//! segments come from spares, which get the flag before they become live). From then on, a
//! head deleted alone or with some of the segments is noticed at once, not only after the
//! next segment switch. Head first, then flags: a crash between leaves a valid head over
//! segments without the flag, which passes the checks, and every open flags the kept segments
//! that lack it, so the next one finishes the upgrade. The other order would leave flagged
//! segments and no head, which cannot be told from a deleted head: open would refuse it, and
//! only a repair would bring the node back. What stays unnoticed: a head lost after such a crash
//! and before the next open, while no segment had its flag yet; the log then upgrades again
//! from what is found, as it would have before.
//!
//! A missing middle segment leaves a chain break that later records witness (`docs/FORMATS.md`,
//! "Missing segment in the middle"), or, unwitnessed, a log that ends before the head's newest
//! segment or synced seq.

use std::fs::File;
use std::path::Path;

use crate::error::LogError;
use crate::record::SEQ_MAX;
use crate::recovery::Recovered;
use crate::repair::DamageReport;
use crate::segment::live_name;
use crate::small_file::{self, SmallFileError};
use crate::types::LogIndex;

/// The file name inside the log directory.
pub const HEAD_FILE: &str = "head";
const HEAD_TMP: &str = "head.tmp";
const MAGIC: u32 = u32::from_le_bytes(*b"LSHD");
const VERSION: u8 = 2;
/// The version before the seq floor, still read.
const VERSION_WITHOUT_FLOOR: u8 = 1;
/// Bytes of the file.
pub const HEAD_FILE_BYTES: usize = 64;

/// The contents of the head file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Head {
    /// First seq of the newest live segment (its name); 0 when no segment is required.
    pub newest_seq: u64,
    /// Index of the first entry written into that segment (for messages).
    pub newest_first_index: LogIndex,
    /// Every record up to this seq was durable when the head was written.
    pub synced_seq: u64,
    /// First seq of the oldest live segment; 0 when no segment is required.
    pub oldest_seq: u64,
    /// The log's next seq is at least this (0 in a version 1 file). Raised, before open turns
    /// the segments past a cut into spares, above every seq they hold: records of those spares
    /// then never carry a seq the log uses again, even when nothing of them is scanned again.
    pub seq_floor: u64,
}

/// The head as found on open.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HeadFound {
    /// No head file.
    Absent,
    /// A valid head.
    Valid(Head),
    /// A head file that fails its checks (the reason).
    Damaged(SmallFileError),
}

/// A lost segment (or head) that the head reveals.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeadDamage {
    /// The file that is missing or damaged (a name inside the log directory).
    pub file: String,
    /// What is wrong.
    pub reason: String,
}

/// Encodes the file's bytes.
pub fn encode(head: Head) -> [u8; HEAD_FILE_BYTES] {
    let mut bytes = [0u8; HEAD_FILE_BYTES];
    bytes[0..4].copy_from_slice(&MAGIC.to_le_bytes());
    bytes[4] = VERSION;
    bytes[8..16].copy_from_slice(&head.newest_seq.to_le_bytes());
    bytes[16..24].copy_from_slice(&head.newest_first_index.get().to_le_bytes());
    bytes[24..32].copy_from_slice(&head.synced_seq.to_le_bytes());
    bytes[32..40].copy_from_slice(&head.oldest_seq.to_le_bytes());
    bytes[40..48].copy_from_slice(&head.seq_floor.to_le_bytes());
    let crc = crc32fast::hash(&bytes[..48]);
    bytes[48..52].copy_from_slice(&crc.to_le_bytes());
    bytes
}

/// Decodes the file's bytes, or says what is wrong with them.
pub fn decode(bytes: &[u8]) -> Result<Head, SmallFileError> {
    crate::small_file::check_length_and_magic(bytes, HEAD_FILE_BYTES, MAGIC)?;
    let u64_at = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8"));
    let covered = match bytes[4] {
        VERSION => 48,
        VERSION_WITHOUT_FLOOR => 40,
        other => {
            return Err(SmallFileError::Version {
                found: other,
                expected: VERSION,
                older: None,
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
    let seq_floor = if covered == 48 { u64_at(40) } else { 0 };
    if seq_floor > SEQ_MAX + 1 {
        return Err(SmallFileError::SeqFloor(seq_floor));
    }
    Ok(Head {
        newest_seq: u64_at(8),
        newest_first_index: LogIndex(u64_at(16)),
        synced_seq: u64_at(24),
        oldest_seq: u64_at(32),
        seq_floor,
    })
}

/// Reads the head of the log in `dir`.
pub fn read(dir: &Path) -> Result<HeadFound, LogError> {
    Ok(match small_file::read(dir, HEAD_FILE)? {
        None => HeadFound::Absent,
        Some(bytes) => match decode(&bytes) {
            Ok(head) => HeadFound::Valid(head),
            Err(reason) => HeadFound::Damaged(reason),
        },
    })
}

/// Writes the head durably (atomically replacing the previous one).
pub(crate) fn write(dir: &Path, dir_file: &File, head: Head) -> Result<(), LogError> {
    small_file::replace(
        dir,
        dir_file,
        HEAD_FILE,
        HEAD_TMP,
        &encode(head),
        "the log head",
    )
}

/// Checks what was found against the head. `live` lists the live segments as `(first seq,
/// header carries the "keeps a head" flag)`, in order; `last_seq` is the seq of the last record
/// the recovery scan followed. `Ok(true)` when the head must be written from what was found (a
/// log from before the head existed), `Ok(false)` when all is well, `Err` on damage.
pub fn check(found: &HeadFound, live: &[(u64, bool)], last_seq: u64) -> Result<bool, HeadDamage> {
    let head = match found {
        HeadFound::Valid(head) => head,
        HeadFound::Absent if live.is_empty() => return Ok(false),
        HeadFound::Absent => {
            return match live.iter().find(|(_, keeps_head)| *keeps_head) {
                None => Ok(true),
                Some(&(seq, _)) => Err(HeadDamage {
                    file: HEAD_FILE.to_string(),
                    reason: format!(
                        "the log head file is missing, but segment {} was written by a version \
                         that keeps one: it was deleted, and with it the record of which \
                         segments must exist",
                        live_name(seq)
                    ),
                }),
            };
        }
        HeadFound::Damaged(reason) => {
            return Err(HeadDamage {
                file: HEAD_FILE.to_string(),
                reason: format!("the log head file is damaged ({reason})"),
            })
        }
    };
    if head.oldest_seq != 0 && live.first().is_none_or(|&(seq, _)| seq > head.oldest_seq) {
        return Err(HeadDamage {
            file: live_name(head.oldest_seq),
            reason: format!(
                "segment {} is missing: the log head says it is the oldest live segment \
                 (compaction names the next one there before it removes any)",
                live_name(head.oldest_seq)
            ),
        });
    }
    if head.newest_seq != 0 && !live.iter().any(|&(seq, _)| seq == head.newest_seq) {
        return Err(HeadDamage {
            file: live_name(head.newest_seq),
            reason: format!(
                "segment {} (entries from {} on) is missing: the log head says it is the \
                 newest segment, so its records may have been durable",
                live_name(head.newest_seq),
                head.newest_first_index.get()
            ),
        });
    }
    if last_seq < head.synced_seq {
        let file = live
            .iter()
            .rev()
            .find(|&&(seq, _)| seq <= last_seq.max(1))
            .map_or_else(|| live_name(head.newest_seq), |&(seq, _)| live_name(seq));
        return Err(HeadDamage {
            file,
            reason: format!(
                "the log ends at record seq {last_seq}, but the log head says records up to seq \
                 {} were durable",
                head.synced_seq
            ),
        });
    }
    Ok(false)
}

/// What open (or a read-only inspection) makes of the head, after the recovery scan:
/// `(damage, upgrade)`. `damage` is the scan's (in repair mode) with a lost segment folded in:
/// `extent_unknown` set, since nothing says how far the lost records reached. Without `repair`,
/// damage the head reveals is refused as [`LogError::Corrupt`]. `upgrade` is set for a log
/// written before the head existed (no head, no flagged segment): the head must be written,
/// then the kept segments flagged.
pub(crate) fn judge(
    dir: &Path,
    live: &[(u64, bool)],
    recovered: &Recovered,
    damage: Option<DamageReport>,
    repair: bool,
) -> Result<(Option<DamageReport>, bool), LogError> {
    let found = read(dir)?;
    // With damage cut before the tail, records after it (the witnesses) still count as seen.
    let seen = match damage {
        Some(_) => recovered.next_seq - 1,
        None => recovered.last_seq,
    };
    let lost = match check(&found, live, seen) {
        Ok(upgrade) => return Ok((damage, upgrade)),
        Err(lost) => lost,
    };
    if !repair {
        return Err(LogError::Corrupt {
            file: dir.join(&lost.file),
            offset: 0,
            index: recovered.next_index,
            reason: lost.reason,
        });
    }
    let damage = match damage {
        Some(mut damage) => {
            damage.reason = format!("{}; and {}", damage.reason, lost.reason);
            damage.extent_unknown = true;
            damage
        }
        None => DamageReport {
            file: dir.join(&lost.file),
            offset: 0,
            index: recovered.next_index,
            reason: lost.reason,
            last_index_claimed: recovered.next_index.prev(),
            extent_unknown: true,
        },
    };
    Ok((Some(damage), false))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(newest_seq: u64, synced_seq: u64) -> Head {
        Head {
            newest_seq,
            newest_first_index: LogIndex(newest_seq * 10),
            synced_seq,
            oldest_seq: newest_seq.min(1),
            seq_floor: newest_seq + 3,
        }
    }

    #[test]
    fn round_trip_and_every_damage_is_refused() {
        let h = head(7, 6);
        let bytes = encode(h);
        assert_eq!(decode(&bytes), Ok(h));
        for at in 0..52 {
            let mut damaged = bytes;
            damaged[at] ^= 0x04;
            assert!(decode(&damaged).is_err(), "flip at byte {at} accepted");
        }
        assert!(decode(&bytes[..60]).is_err());
    }

    #[test]
    fn a_version_1_head_reads_with_a_zero_seq_floor() {
        let mut old = [0u8; HEAD_FILE_BYTES];
        old[0..4].copy_from_slice(b"LSHD");
        old[4] = 1;
        old[8..16].copy_from_slice(&7u64.to_le_bytes());
        old[16..24].copy_from_slice(&70u64.to_le_bytes());
        old[24..32].copy_from_slice(&6u64.to_le_bytes());
        old[32..40].copy_from_slice(&1u64.to_le_bytes());
        let crc = crc32fast::hash(&old[..40]);
        old[40..44].copy_from_slice(&crc.to_le_bytes());
        assert_eq!(
            decode(&old),
            Ok(Head {
                seq_floor: 0,
                ..head(7, 6)
            })
        );
        old[41] ^= 1;
        assert!(decode(&old).is_err());
    }

    #[test]
    fn file_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let dir_file = File::open(dir.path()).unwrap();
        assert_eq!(read(dir.path()).unwrap(), HeadFound::Absent);
        write(dir.path(), &dir_file, head(3, 2)).unwrap();
        write(dir.path(), &dir_file, head(9, 8)).unwrap();
        assert_eq!(read(dir.path()).unwrap(), HeadFound::Valid(head(9, 8)));
        std::fs::write(dir.path().join(HEAD_FILE), [1u8; 64]).unwrap();
        assert!(matches!(read(dir.path()).unwrap(), HeadFound::Damaged(_)));
    }

    #[test]
    fn every_case_of_the_check() {
        let valid = HeadFound::Valid(head(5, 4));
        // All there: newest present, the chain reaches past the synced seq.
        assert_eq!(check(&valid, &[(1, true), (5, true)], 6), Ok(false));
        // A segment newer than the head (activated, head not yet rewritten) is fine.
        assert_eq!(
            check(&valid, &[(1, true), (5, true), (9, true)], 9),
            Ok(false)
        );
        // The oldest removed by compaction is fine once the head names the next one.
        let compacted = HeadFound::Valid(Head {
            oldest_seq: 5,
            ..head(5, 4)
        });
        assert_eq!(check(&compacted, &[(5, true)], 6), Ok(false));
        // A crash between that head and the removal leaves an older segment: fine.
        assert_eq!(check(&compacted, &[(1, true), (5, true)], 6), Ok(false));
        // The oldest deleted.
        let err = check(&valid, &[(5, true)], 6).unwrap_err();
        assert_eq!(err.file, live_name(1));
        // Newest deleted.
        let err = check(&valid, &[(1, true)], 4).unwrap_err();
        assert_eq!(err.file, live_name(5));
        assert!(err.reason.contains("missing"), "{}", err.reason);
        // Every segment deleted.
        assert!(check(&valid, &[], 0).is_err());
        // The chain ends before the synced seq (a middle segment gone, nothing witnessing).
        let err = check(&valid, &[(1, true), (5, true)], 2).unwrap_err();
        assert!(err.reason.contains("seq 4"), "{}", err.reason);
        // No segment required (written before every segment was discarded).
        assert_eq!(check(&HeadFound::Valid(head(0, 0)), &[], 0), Ok(false));
        // No head: new log, old version (upgrade), deleted head.
        assert_eq!(check(&HeadFound::Absent, &[], 0), Ok(false));
        assert_eq!(check(&HeadFound::Absent, &[(1, false)], 3), Ok(true));
        let err = check(&HeadFound::Absent, &[(1, false), (4, true)], 5).unwrap_err();
        assert_eq!(err.file, HEAD_FILE);
        // Damaged head.
        let damaged = HeadFound::Damaged(SmallFileError::BadMagic(0));
        assert!(check(&damaged, &[(1, true)], 3).is_err());
    }
}
