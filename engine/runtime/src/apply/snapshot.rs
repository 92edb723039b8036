//! Snapshot files: one file per snapshot in the node's snapshot directory, named after the last
//! index it covers, written atomically (temp file, fsync, rename, directory fsync) and checked
//! end to end by a CRC when read back. Layout in `docs/FORMATS.md` ("Snapshot files").
//!
//! Guarantees: a file with a final name was complete and durable before it got that name;
//! [`latest`] returns the newest such file or refuses to start with an error naming the file
//! when its bytes do not check out; older files and leftover temp files are removed only after a
//! newer snapshot is durable.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use bytes::Bytes;

use crate::log::disk;
use crate::raft::{Membership, SnapshotMeta};
use crate::types::{LogIndex, Term};

/// First bytes of every snapshot file.
pub const SNAPSHOT_MAGIC: [u8; 8] = *b"LSSNAP\0\x01";
/// The format version this code writes and reads.
pub const SNAPSHOT_VERSION: u32 = 1;
/// Bytes before the membership: magic, version, index, term, membership length.
const HEADER_BYTES: usize = 8 + 4 + 8 + 8 + 4;
/// Suffix of a final snapshot file name.
const SUFFIX: &str = ".snap";
/// Suffix of a snapshot being written.
const TEMP_SUFFIX: &str = ".snap.tmp";

/// Why a snapshot file could not be written or read.
#[derive(Debug)]
pub enum SnapshotError {
    /// A file system operation failed.
    Io {
        /// What was being done, with the path.
        context: String,
        /// The error.
        source: io::Error,
    },
    /// The file's bytes are not a valid snapshot.
    Corrupt {
        /// The file.
        file: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

impl std::fmt::Display for SnapshotError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SnapshotError::Io { context, source } => write!(f, "{context}: {source}"),
            SnapshotError::Corrupt { file, reason } => {
                write!(f, "corrupt snapshot file {}: {reason}", file.display())
            }
        }
    }
}

impl std::error::Error for SnapshotError {}

fn io_error(context: String) -> impl FnOnce(io::Error) -> SnapshotError {
    move |source| SnapshotError::Io { context, source }
}

/// The final name of the snapshot covering up to `index`.
pub fn file_name(index: LogIndex) -> String {
    format!("snapshot-{:020}{SUFFIX}", index.get())
}

fn parse_name(name: &str) -> Option<(LogIndex, bool)> {
    let rest = name.strip_prefix("snapshot-")?;
    let (digits, temporary) = if let Some(digits) = rest.strip_suffix(TEMP_SUFFIX) {
        (digits, true)
    } else {
        (rest.strip_suffix(SUFFIX)?, false)
    };
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((LogIndex(digits.parse().ok()?), temporary))
}

/// Encodes a snapshot file's bytes (see `docs/FORMATS.md`).
pub fn encode(meta: &SnapshotMeta, data: &[u8]) -> Vec<u8> {
    let membership = meta.membership.encode();
    let mut out = Vec::with_capacity(HEADER_BYTES + membership.len() + 8 + data.len() + 4);
    out.extend_from_slice(&SNAPSHOT_MAGIC);
    out.extend_from_slice(&SNAPSHOT_VERSION.to_le_bytes());
    out.extend_from_slice(&meta.index.get().to_le_bytes());
    out.extend_from_slice(&meta.term.get().to_le_bytes());
    out.extend_from_slice(&(membership.len() as u32).to_le_bytes());
    out.extend_from_slice(&membership);
    out.extend_from_slice(&(data.len() as u64).to_le_bytes());
    out.extend_from_slice(data);
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// Decodes and verifies a snapshot file's bytes; the error string says what is wrong.
pub fn decode(bytes: &[u8]) -> Result<(SnapshotMeta, Bytes), String> {
    if bytes.len() < HEADER_BYTES + 8 + 4 {
        return Err(format!(
            "{} bytes is shorter than any snapshot",
            bytes.len()
        ));
    }
    let (body, crc_bytes) = bytes.split_at(bytes.len() - 4);
    let stored = u32::from_le_bytes(crc_bytes.try_into().expect("4 bytes"));
    let computed = crc32fast::hash(body);
    if stored != computed {
        return Err(format!(
            "checksum {stored:#010x} stored, {computed:#010x} computed"
        ));
    }
    if body[..8] != SNAPSHOT_MAGIC {
        return Err(format!("bad magic {:02x?}", &body[..8]));
    }
    let u32_at = |at: usize| u32::from_le_bytes(body[at..at + 4].try_into().expect("4 bytes"));
    let u64_at = |at: usize| u64::from_le_bytes(body[at..at + 8].try_into().expect("8 bytes"));
    let version = u32_at(8);
    if version != SNAPSHOT_VERSION {
        return Err(format!(
            "version {version}, this build reads {SNAPSHOT_VERSION}"
        ));
    }
    let index = LogIndex(u64_at(12));
    let term = Term(u64_at(20));
    let membership_len = u32_at(28) as usize;
    let data_len_at = HEADER_BYTES + membership_len;
    if data_len_at + 8 > body.len() {
        return Err(format!(
            "membership length {membership_len} runs past the end"
        ));
    }
    let membership = Membership::decode(&body[HEADER_BYTES..data_len_at])
        .map_err(|err| format!("membership: {err}"))?;
    let data_len = u64_at(data_len_at);
    let data_at = data_len_at + 8;
    if data_len != (body.len() - data_at) as u64 {
        return Err(format!(
            "data length {data_len} but {} bytes follow",
            body.len() - data_at
        ));
    }
    let meta = SnapshotMeta {
        index,
        term,
        membership,
    };
    Ok((meta, Bytes::copy_from_slice(&body[data_at..])))
}

fn sync_dir(dir: &Path) -> Result<(), SnapshotError> {
    disk::sync_dir_path(dir).map_err(io_error(format!("sync directory {}", dir.display())))
}

/// Writes the snapshot durably into `dir` (created if missing): temp file, fsync, rename,
/// directory fsync. Returns the final path. Older snapshots are left for [`remove_older`].
pub fn write(dir: &Path, meta: &SnapshotMeta, data: &[u8]) -> Result<PathBuf, SnapshotError> {
    disk::create_dir_all_synced(dir).map_err(io_error(format!("create {}", dir.display())))?;
    let name = file_name(meta.index);
    let path = dir.join(&name);
    let temp = dir.join(format!("{}{TEMP_SUFFIX}", name.trim_end_matches(SUFFIX)));
    let bytes = encode(meta, data);
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&temp)
        .map_err(io_error(format!("create {}", temp.display())))?;
    file.write_all(&bytes)
        .and_then(|()| file.sync_all())
        .map_err(io_error(format!("write {}", temp.display())))?;
    drop(file);
    fs::rename(&temp, &path).map_err(io_error(format!("rename {}", temp.display())))?;
    sync_dir(dir)?;
    Ok(path)
}

/// Reads and verifies one snapshot file.
pub fn read(path: &Path) -> Result<(SnapshotMeta, Bytes), SnapshotError> {
    let bytes = fs::read(path).map_err(io_error(format!("read {}", path.display())))?;
    let (meta, data) = decode(&bytes).map_err(|reason| SnapshotError::Corrupt {
        file: path.to_path_buf(),
        reason,
    })?;
    let named = path
        .file_name()
        .and_then(|name| name.to_str())
        .and_then(parse_name);
    if named.map(|(index, _)| index) != Some(meta.index) {
        return Err(SnapshotError::Corrupt {
            file: path.to_path_buf(),
            reason: format!("holds index {} but is named otherwise", meta.index),
        });
    }
    Ok((meta, data))
}

/// Lists the final snapshot files in `dir` (none if it does not exist), newest first.
fn list(dir: &Path) -> Result<Vec<(LogIndex, PathBuf, bool)>, SnapshotError> {
    let listing = match fs::read_dir(dir) {
        Ok(listing) => listing,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(err) => return Err(io_error(format!("list {}", dir.display()))(err)),
    };
    let mut found = Vec::new();
    for entry in listing {
        let entry = entry.map_err(io_error(format!("list {}", dir.display())))?;
        let name = entry.file_name();
        if let Some((index, temporary)) = name.to_str().and_then(parse_name) {
            found.push((index, entry.path(), temporary));
        }
    }
    found.sort_by(|a, b| b.0.cmp(&a.0).then(a.2.cmp(&b.2)));
    Ok(found)
}

/// The newest snapshot in `dir`, verified, or `None`. A newest file that does not verify is an
/// error naming it (the node refuses to start rather than silently going back to an older
/// state). Leftover temp files and older snapshots are removed. The directory is synced before
/// the snapshot is returned: a process that died between the rename and its directory sync
/// leaves a name a power loss could still take away, after the node has compacted its log
/// behind the snapshot.
pub fn latest(dir: &Path) -> Result<Option<(SnapshotMeta, Bytes)>, SnapshotError> {
    let found = list(dir)?;
    let mut newest = None;
    for (_, path, temporary) in &found {
        if *temporary {
            fs::remove_file(path).map_err(io_error(format!("remove {}", path.display())))?;
        } else if newest.is_none() {
            newest = Some(read(path)?);
        }
    }
    if let Some((meta, _)) = &newest {
        sync_dir(dir)?;
        remove_older(dir, meta.index)?;
    }
    Ok(newest)
}

/// Removes the final snapshot files older than `index` (call once the one at `index` is
/// durable).
pub fn remove_older(dir: &Path, index: LogIndex) -> Result<(), SnapshotError> {
    let mut removed = false;
    for (older, path, temporary) in list(dir)? {
        if !temporary && older < index {
            fs::remove_file(&path).map_err(io_error(format!("remove {}", path.display())))?;
            removed = true;
        }
    }
    if removed {
        sync_dir(dir)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::NodeId;

    fn meta(index: u64) -> SnapshotMeta {
        SnapshotMeta {
            index: LogIndex(index),
            term: Term(3),
            membership: Membership::with_voters([NodeId(1), NodeId(2)]),
        }
    }

    #[test]
    fn round_trip_and_every_flipped_byte_is_caught() {
        let bytes = encode(&meta(7), b"state");
        let (decoded, data) = decode(&bytes).expect("valid");
        assert_eq!(decoded, meta(7));
        assert_eq!(&data[..], b"state");
        for at in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[at] ^= 0x40;
            assert!(decode(&bad).is_err(), "flip at {at} not caught");
        }
        assert!(decode(&bytes[..bytes.len() - 1]).is_err());
    }

    /// A process may die between the rename and its directory sync: the snapshot found at
    /// start is synced into its directory before the node trusts it (and compacts its log).
    #[test]
    fn the_snapshot_trusted_at_start_is_synced_into_its_directory() {
        let dir = tempfile::tempdir().expect("tempdir");
        let snapshots = dir.path().join("snapshots");
        write(&snapshots, &meta(5), b"five").expect("write 5");
        disk::tests::take_dirs_synced();
        let (found, _) = latest(&snapshots).expect("read").expect("one");
        assert_eq!(found.index, LogIndex(5));
        assert_eq!(disk::tests::take_dirs_synced(), vec![snapshots]);
    }

    #[test]
    fn writing_the_first_snapshot_syncs_the_directory_it_creates() {
        let dir = tempfile::tempdir().expect("tempdir");
        let snapshots = dir.path().join("snapshots");
        disk::tests::take_dirs_synced();
        write(&snapshots, &meta(5), b"five").expect("write 5");
        assert_eq!(
            disk::tests::take_dirs_synced(),
            vec![dir.path().to_path_buf(), snapshots]
        );
    }

    #[test]
    fn latest_picks_newest_removes_older_and_names_a_corrupt_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(latest(dir.path()).expect("empty").is_none());
        write(dir.path(), &meta(5), b"five").expect("write 5");
        write(dir.path(), &meta(9), b"nine").expect("write 9");
        fs::write(
            dir.path().join("snapshot-00000000000000000011.snap.tmp"),
            b"x",
        )
        .expect("tmp");
        let (found, data) = latest(dir.path()).expect("read").expect("one");
        assert_eq!((found.index, &data[..]), (LogIndex(9), &b"nine"[..]));
        let names: Vec<_> = fs::read_dir(dir.path())
            .expect("list")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(
            names,
            vec![std::ffi::OsString::from(file_name(LogIndex(9)))]
        );
        let path = dir.path().join(file_name(LogIndex(9)));
        let mut bytes = fs::read(&path).expect("read");
        bytes[40] ^= 1;
        fs::write(&path, bytes).expect("corrupt");
        let err = latest(dir.path()).expect_err("corrupt");
        assert!(err.to_string().contains(&file_name(LogIndex(9))), "{err}");
    }
}
