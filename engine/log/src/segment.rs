//! Segment files: naming, the 64-byte segment header, zero-filled creation and mapping.
//!
//! A segment is a fixed-size file. It is created under a temporary name, written with zeros
//! (real writes, so every block is allocated *and* initialised: a later fdatasync then has no
//! unwritten extents to convert), synced, and only then renamed to a spare name; so a file with a
//! segment or spare name always has its full size and a valid header. A spare becomes live by
//! being renamed to [`live_name`] of the sequence number of the first record it will hold.
//!
//! Names (all in the log directory):
//! - `NNNNNNNNNNNNNNNNNNNN.seg`: a live segment; the 20-digit number is the `seq` of its first
//!   record;
//! - `spare-N.seg`: a ready spare (fresh zeros, or a recycled segment with stale records);
//! - `spare-N.tmp`: a spare being created; removed on open.
//!
//! The segment header (bytes `0..64`, written once at creation; rewritten only to upgrade a file
//! from an older version: the flags byte of every live segment when open upgrades a log from
//! before the log head, see [`flag_keeps_head`], and the whole header of an old spare before it
//! becomes live, see [`renew_header`]): `0..4` magic `"LSSG"`, `4` version 2, `5` flags (bit 0:
//! [`SEGMENT_FLAG_KEEPS_HEAD`]), `6..8` zero, `8..16` segment bytes (the file size), `16..24`
//! nonce (random, secret: it keys the checksums that bind each record to this file, see
//! [`Seal`]), `24..60` zero, `60..64` CRC32 of bytes `0..60`. Version 1 (no nonce, zero there)
//! is still read: its records are unkeyed ([`Seal::Unkeyed`]). Records start at
//! [`SEGMENT_HEADER_BYTES`].

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use memmap2::{Advice, MmapMut, MmapOptions};

use crate::record::Seal;

/// The segment magic, `"LSSG"` as little-endian bytes.
pub const SEGMENT_MAGIC: u32 = u32::from_le_bytes(*b"LSSG");
/// The segment format version written (with a nonce; its records are keyed).
pub const SEGMENT_VERSION: u8 = 2;
/// The previous segment version, still read (no nonce; its records are unkeyed).
pub const SEGMENT_VERSION_UNKEYED: u8 = 1;
/// Bytes of the segment header; the first record starts here.
pub const SEGMENT_HEADER_BYTES: usize = 64;
/// Header flag (byte 5, bit 0): the segment was created (or reused) by a version that keeps
/// the log head file (`crate::head`), so a log holding it without a head lost its head.
pub const SEGMENT_FLAG_KEEPS_HEAD: u8 = 1;
/// Smallest segment size accepted (tests use small segments).
pub const SEGMENT_BYTES_MIN: u64 = 4096;

/// Refuses a live segment file shorter than [`SEGMENT_BYTES_MIN`]: a segment is created at its
/// full size, so a shorter one was cut after the fact.
pub(crate) fn check_segment_len(path: &Path, len: u64) -> Result<(), crate::error::LogError> {
    if len < SEGMENT_BYTES_MIN {
        return Err(crate::error::LogError::Corrupt {
            file: path.to_path_buf(),
            offset: len,
            index: crate::types::LogIndex::ZERO,
            reason: format!("segment file of {len} bytes is cut short"),
        });
    }
    Ok(())
}

/// The name of the live segment whose first record has sequence number `first_seq`.
pub fn live_name(first_seq: u64) -> String {
    format!("{first_seq:020}.seg")
}

/// Parses a live segment name back into its first record's seq.
pub fn parse_live_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(".seg")?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// The live segment files in `dir`, in seq order.
pub fn live_segment_paths(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let mut live = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if let Some(seq) = entry.file_name().to_str().and_then(parse_live_name) {
            live.push((seq, entry.path()));
        }
    }
    live.sort_unstable();
    Ok(live.into_iter().map(|(_, path)| path).collect())
}

/// The name of spare number `id`.
pub fn spare_name(id: u64) -> String {
    format!("spare-{id}.seg")
}

/// Parses a spare name (`Some((id, is_temporary))`).
pub fn parse_spare_name(name: &str) -> Option<(u64, bool)> {
    let rest = name.strip_prefix("spare-")?;
    if let Some(id) = rest.strip_suffix(".seg") {
        return id.parse().ok().map(|id| (id, false));
    }
    rest.strip_suffix(".tmp")?.parse().ok().map(|id| (id, true))
}

/// A fresh secret nonce for a segment header, from the operating system's random source. Both
/// halves are non-zero (each keys one of a record's two header checksums, see [`Seal`]).
pub fn new_nonce() -> io::Result<u64> {
    loop {
        let mut bytes = [0u8; 8];
        getrandom::fill(&mut bytes).map_err(|err| io::Error::other(err.to_string()))?;
        let nonce = u64::from_le_bytes(bytes);
        if nonce as u32 != 0 && (nonce >> 32) as u32 != 0 {
            return Ok(nonce);
        }
    }
}

/// Encodes the segment header for a file of `segment_bytes` whose records are keyed with
/// `nonce`.
pub fn encode_segment_header(segment_bytes: u64, nonce: u64) -> [u8; SEGMENT_HEADER_BYTES] {
    let mut header = [0u8; SEGMENT_HEADER_BYTES];
    header[0..4].copy_from_slice(&SEGMENT_MAGIC.to_le_bytes());
    header[4] = SEGMENT_VERSION;
    header[5] = SEGMENT_FLAG_KEEPS_HEAD;
    header[8..16].copy_from_slice(&segment_bytes.to_le_bytes());
    header[16..24].copy_from_slice(&nonce.to_le_bytes());
    seal_segment_header(&mut header);
    header
}

/// Writes the checksum of a segment header's bytes `0..60` into `60..64`.
fn seal_segment_header(header: &mut [u8; SEGMENT_HEADER_BYTES]) {
    let crc = crc32fast::hash(&header[..60]);
    header[60..64].copy_from_slice(&crc.to_le_bytes());
}

/// Sets [`SEGMENT_FLAG_KEEPS_HEAD`] in the header of the segment or spare `file`, whose bytes
/// (at least the header) are `bytes`, and syncs it. Every other field is kept and the checksum
/// recomputed; the 64 bytes lie in the file's first sector, so a crash leaves the old header or
/// the new one.
pub(crate) fn flag_keeps_head(file: &File, bytes: &[u8]) -> io::Result<()> {
    let mut header: [u8; SEGMENT_HEADER_BYTES] = bytes[..SEGMENT_HEADER_BYTES]
        .try_into()
        .expect("a segment header");
    header[5] |= SEGMENT_FLAG_KEEPS_HEAD;
    seal_segment_header(&mut header);
    file.write_all_at(&header, 0)?;
    file.sync_data()
}

/// Gives a file that holds no record of the log (a spare, or a live segment without a record)
/// a current header, flag and fresh nonce included, and zeros where its first record goes, and
/// syncs it. For a file from an older version before it takes records: the records it then
/// takes are keyed, and the stale ones it holds no longer verify. Header and zeros lie in the
/// file's first 4 KiB.
pub(crate) fn renew_header(file: &File, bytes: &[u8]) -> io::Result<()> {
    let mut head = [0u8; SEGMENT_HEADER_BYTES + crate::record::RECORD_HEADER_BYTES];
    head[..SEGMENT_HEADER_BYTES]
        .copy_from_slice(&encode_segment_header(bytes.len() as u64, new_nonce()?));
    file.write_all_at(&head, 0)?;
    file.sync_data()
}

/// How the records of a segment (or spare) with a valid header (see
/// [`check_segment_header`]) are sealed.
pub fn segment_seal(bytes: &[u8]) -> Seal {
    match bytes[4] {
        SEGMENT_VERSION_UNKEYED => Seal::Unkeyed,
        _ => Seal::Keyed(u64::from_le_bytes(
            bytes[16..24].try_into().expect("8 bytes"),
        )),
    }
}

/// Whether the header of a segment (or spare) is of the version this code writes, with the
/// "keeps a head" flag.
pub fn is_current(bytes: &[u8]) -> bool {
    bytes.len() > 5 && bytes[4] == SEGMENT_VERSION && keeps_head(bytes)
}

/// Whether a segment's header carries [`SEGMENT_FLAG_KEEPS_HEAD`] (headers written before the
/// flag existed have a zero there).
pub fn keeps_head(bytes: &[u8]) -> bool {
    bytes.len() > 5 && bytes[5] & SEGMENT_FLAG_KEEPS_HEAD != 0
}

/// What is wrong with a segment file's header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SegmentHeaderError {
    /// The file (of this many bytes) is shorter than a header.
    Short(usize),
    /// The magic number or the header's checksum is wrong.
    BadHeader,
    /// A segment version this code does not read.
    Version(u8),
    /// The header declares another length than the file has (cut or extended).
    Length {
        /// The length the header declares.
        declared: u64,
        /// The file's length.
        actual: usize,
    },
}

impl fmt::Display for SegmentHeaderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            SegmentHeaderError::Short(len) => {
                write!(f, "file of {len} bytes is shorter than a segment header")
            }
            SegmentHeaderError::BadHeader => f.write_str("bad segment header (magic or checksum)"),
            SegmentHeaderError::Version(version) => {
                write!(f, "unknown segment version {version}")
            }
            SegmentHeaderError::Length { declared, actual } => write!(
                f,
                "segment header says {declared} bytes but the file has {actual} (cut or extended)"
            ),
        }
    }
}

impl std::error::Error for SegmentHeaderError {}

/// Checks a segment's header against its length; `Err` says what is wrong.
pub fn check_segment_header(bytes: &[u8]) -> Result<(), SegmentHeaderError> {
    let declared = declared_len(bytes)?;
    if declared != bytes.len() as u64 {
        return Err(SegmentHeaderError::Length {
            declared,
            actual: bytes.len(),
        });
    }
    Ok(())
}

/// The length a segment's valid header declares, when `bytes` (the whole file) is shorter:
/// the file was cut after the fact, and its records past `bytes.len()` are lost.
pub fn cut_short(bytes: &[u8]) -> Option<u64> {
    declared_len(bytes)
        .ok()
        .filter(|&declared| declared > bytes.len() as u64)
}

/// The file length a segment's header declares, once magic, checksum and version check out.
fn declared_len(bytes: &[u8]) -> Result<u64, SegmentHeaderError> {
    if bytes.len() < SEGMENT_HEADER_BYTES {
        return Err(SegmentHeaderError::Short(bytes.len()));
    }
    let header = &bytes[..SEGMENT_HEADER_BYTES];
    let stored_crc = u32::from_le_bytes(header[60..64].try_into().expect("4 bytes"));
    if header[0..4] != SEGMENT_MAGIC.to_le_bytes() || stored_crc != crc32fast::hash(&header[..60]) {
        return Err(SegmentHeaderError::BadHeader);
    }
    if header[4] != SEGMENT_VERSION && header[4] != SEGMENT_VERSION_UNKEYED {
        return Err(SegmentHeaderError::Version(header[4]));
    }
    Ok(u64::from_le_bytes(
        header[8..16].try_into().expect("8 bytes"),
    ))
}

/// Creates a zero-filled file of `segment_bytes` with a segment header at `path`, synced.
///
/// The zeros are written back one chunk at a time (`sync_file_range`, waiting for each) rather
/// than left for the final sync: handing the device a whole segment at once queued the live
/// log's syncs behind it, a ~300 ms stall at every new segment in the cluster benchmark, since
/// all replicas reach it together.
pub fn create_zeroed(path: &Path, segment_bytes: u64) -> io::Result<File> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(path)?;
    const CHUNK: usize = 1 << 20;
    let zeros = vec![0u8; CHUNK];
    let mut offset = 0u64;
    while offset < segment_bytes {
        let len = (segment_bytes - offset).min(CHUNK as u64) as usize;
        file.write_all_at(&zeros[..len], offset)?;
        write_back(&file, offset, len as u64)?;
        offset += len as u64;
    }
    file.write_all_at(&encode_segment_header(segment_bytes, new_nonce()?), 0)?;
    file.sync_all()?;
    Ok(file)
}

/// Starts writeback of `offset..offset + len` and waits for it (no device cache flush).
fn write_back(file: &File, offset: u64, len: u64) -> io::Result<()> {
    let flags = libc::SYNC_FILE_RANGE_WAIT_BEFORE
        | libc::SYNC_FILE_RANGE_WRITE
        | libc::SYNC_FILE_RANGE_WAIT_AFTER;
    // SAFETY: a plain system call on a file descriptor this function borrows; no memory is
    // passed.
    let rc = unsafe {
        libc::sync_file_range(
            file.as_raw_fd(),
            offset as libc::off64_t,
            len as libc::off64_t,
            flags,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Overwrites `from..len` of a (spare) file with zeros through the page cache, without syncing.
///
/// Used before pre-faulting a recycled segment: pages that were last written through the mapping
/// and then written back have lost their filesystem bookkeeping (buffer heads on ext4), which
/// makes every first write fault expensive (about 10 µs a page measured here); a buffered write
/// restores it at memcpy cost, and it clears the stale records too. The zeros reach the disk only
/// if the kernel writes them back before appends overwrite them.
pub fn rezero(file: &File, from: u64, len: u64) -> io::Result<()> {
    const CHUNK: u64 = 1 << 20;
    let zeros = vec![0u8; CHUNK as usize];
    let mut offset = from;
    while offset < len {
        let chunk = (len - offset).min(CHUNK);
        file.write_all_at(&zeros[..chunk as usize], offset)?;
        offset += chunk;
    }
    Ok(())
}

/// Fsyncs a directory so that renames and creations in it are durable.
pub fn sync_dir(dir: &File) -> io::Result<()> {
    dir.sync_all()
}

/// Maps a whole segment file read-write (shared).
pub fn map_segment(file: &File) -> io::Result<MmapMut> {
    // SAFETY: the log directory belongs to this process (it holds the lock file); nothing else
    // truncates or writes the file while it is mapped, so the mapping stays valid.
    unsafe { MmapOptions::new().map_mut(file) }
}

/// How spare segments are readied for appends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Prefault {
    /// Fault pages in writable (`MADV_POPULATE_WRITE`), after re-zeroing recycled segments
    /// through the page cache: the filesystem's page_mkwrite work happens off the hot path.
    /// That dirties pages (with zeros), which is harmless only when syncs cover just the
    /// written range.
    Write,
    /// Only bring pages in and map them (`MADV_POPULATE_READ`).
    Read,
    /// Nothing (appends do not go through the mapping).
    Skip,
}

/// Pre-faults `map[from..]` as `mode` says. Best effort: kernels before 5.14 lack the advice,
/// and pages then fault on first touch.
pub fn prefault(map: &MmapMut, from: usize, mode: Prefault) {
    let advice = match mode {
        Prefault::Write => Advice::PopulateWrite,
        Prefault::Read => Advice::PopulateRead,
        Prefault::Skip => return,
    };
    if from < map.len() {
        let _ = map.advise_range(advice, from, map.len() - from);
    }
}

/// A live segment: its file, its mapping and where it sits in the sequence.
pub struct Segment {
    /// Seq of the first record (from the file name).
    pub first_seq: u64,
    /// How its records are sealed (from its header).
    pub seal: Seal,
    /// Path of the file.
    pub path: PathBuf,
    /// The open file, shared with in-flight syncs.
    pub file: Arc<File>,
    /// The shared read-write mapping of the whole file.
    pub map: MmapMut,
}

impl Segment {
    /// Bytes in the file.
    #[inline]
    pub fn size_bytes(&self) -> usize {
        self.map.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_roundtrip() {
        assert_eq!(live_name(42), "00000000000000000042.seg");
        assert_eq!(parse_live_name(&live_name(42)), Some(42));
        assert_eq!(parse_live_name("42.seg"), None);
        assert_eq!(parse_spare_name(&spare_name(3)), Some((3, false)));
        assert_eq!(parse_spare_name("spare-9.tmp"), Some((9, true)));
        assert_eq!(parse_spare_name("hard_state"), None);
    }

    #[test]
    fn created_segment_is_zeroed_with_a_valid_header() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("spare-0.tmp");
        let file = create_zeroed(&path, 8192).unwrap();
        let map = map_segment(&file).unwrap();
        assert_eq!(map.len(), 8192);
        assert_eq!(check_segment_header(&map), Ok(()));
        assert!(map[SEGMENT_HEADER_BYTES..].iter().all(|&b| b == 0));
        let cut = check_segment_header(&map[..4096]).unwrap_err();
        assert_eq!(
            cut,
            SegmentHeaderError::Length {
                declared: 8192,
                actual: 4096
            }
        );
        assert_eq!(
            cut.to_string(),
            "segment header says 8192 bytes but the file has 4096 (cut or extended)"
        );
        assert_eq!(
            check_segment_header(&map[..10]),
            Err(SegmentHeaderError::Short(10))
        );
    }

    #[test]
    fn flagging_an_old_header_keeps_every_other_field() {
        let dir = tempfile::tempdir().unwrap();
        let file = create_zeroed(&dir.path().join("spare-0.tmp"), 8192).unwrap();
        let map = map_segment(&file).unwrap();
        // Without the flag, and with a flag bit this version does not know.
        let mut old = encode_segment_header(8192, 0x1234);
        old[5] = 0x80;
        seal_segment_header(&mut old);
        file.write_all_at(&old, 0).unwrap();
        assert!(!keeps_head(&map));
        flag_keeps_head(&file, &map).unwrap();
        assert!(keeps_head(&map));
        assert_eq!(check_segment_header(&map), Ok(()));
        assert_eq!(map[5], 0x80 | SEGMENT_FLAG_KEEPS_HEAD);
        assert_eq!(map[..5], old[..5]);
        assert_eq!(map[6..60], old[6..60]);
        assert_eq!(segment_seal(&map), Seal::Keyed(0x1234));
    }

    #[test]
    fn a_renewed_old_spare_is_current_with_a_fresh_nonce_and_an_empty_first_record() {
        let dir = tempfile::tempdir().unwrap();
        let file = create_zeroed(&dir.path().join("spare-0.tmp"), 8192).unwrap();
        let map = map_segment(&file).unwrap();
        let created = segment_seal(&map);
        assert!(matches!(created, Seal::Keyed(_)) && is_current(&map));
        // A version 1 header, and a stale record where the first record goes.
        let mut old = [0u8; SEGMENT_HEADER_BYTES];
        old[..16].copy_from_slice(&map[..16]);
        old[4] = SEGMENT_VERSION_UNKEYED;
        seal_segment_header(&mut old);
        file.write_all_at(&old, 0).unwrap();
        file.write_all_at(b"LSR1", SEGMENT_HEADER_BYTES as u64)
            .unwrap();
        assert_eq!(check_segment_header(&map), Ok(()));
        assert_eq!(segment_seal(&map), Seal::Unkeyed);
        assert!(!is_current(&map));
        renew_header(&file, &map).unwrap();
        assert_eq!(check_segment_header(&map), Ok(()));
        assert!(is_current(&map));
        assert!(!matches!(segment_seal(&map), Seal::Unkeyed));
        assert_ne!(segment_seal(&map), created);
        assert!(map[SEGMENT_HEADER_BYTES..128].iter().all(|&b| b == 0));
    }
}
