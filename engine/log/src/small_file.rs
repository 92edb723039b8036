//! Small files replaced atomically: the repair marker and the log head.
//!
//! A new version is written whole under a temporary name, `fsync`ed, renamed over the final
//! name, and the directory is `fsync`ed; so the final name always denotes a complete, synced
//! file (a crash leaves the old version or the new one, and at worst a stale temporary, which
//! the next write replaces). Damage to a file under its final name is therefore disk damage,
//! never a torn write.

use std::fmt;
use std::fs::File;
use std::io::Write;
use std::path::Path;

use crate::error::LogError;
use crate::segment::sync_dir;

/// What is wrong with the bytes of a small file (the log head, the repair or suspect marker).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SmallFileError {
    /// Not the file's size.
    Length {
        /// Bytes found.
        found: usize,
        /// The file's size.
        expected: usize,
    },
    /// Not the file's magic number.
    BadMagic(u32),
    /// A version this code does not read.
    Version {
        /// The version found.
        found: u8,
        /// The current version.
        expected: u8,
        /// An older version also read, if any.
        older: Option<u8>,
    },
    /// The checksum does not match the contents.
    Crc {
        /// The checksum stored.
        stored: u32,
        /// The checksum of the contents.
        computed: u32,
    },
    /// Flag bits this code does not know.
    UnknownFlags(u8),
    /// The log head's seq floor lies beyond the seq space.
    SeqFloor(u64),
}

impl fmt::Display for SmallFileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            SmallFileError::Length { found, expected } => {
                write!(f, "{found} bytes, expected {expected}")
            }
            SmallFileError::BadMagic(magic) => write!(f, "bad magic {magic:#010x}"),
            SmallFileError::Version {
                found,
                expected,
                older: None,
            } => write!(f, "version {found}, expected {expected}"),
            SmallFileError::Version {
                found,
                expected,
                older: Some(older),
            } => write!(f, "version {found}, expected {older} or {expected}"),
            SmallFileError::Crc { stored, computed } => write!(
                f,
                "crc {stored:#010x} does not match the contents ({computed:#010x})"
            ),
            SmallFileError::UnknownFlags(flags) => write!(f, "unknown flags {flags:#04x}"),
            SmallFileError::SeqFloor(floor) => write!(f, "seq floor {floor} beyond the seq space"),
        }
    }
}

impl std::error::Error for SmallFileError {}

/// Checks a small file's length and magic number (its first four bytes, little-endian): the
/// start every small file's decoder shares.
pub fn check_length_and_magic(
    bytes: &[u8],
    expected: usize,
    magic: u32,
) -> Result<(), SmallFileError> {
    if bytes.len() != expected {
        return Err(SmallFileError::Length {
            found: bytes.len(),
            expected,
        });
    }
    let found = u32::from_le_bytes(bytes[0..4].try_into().expect("4 bytes"));
    if found != magic {
        return Err(SmallFileError::BadMagic(found));
    }
    Ok(())
}

/// Replaces `dir/name` with `bytes` (via `dir/tmp`), durably; `what` names the file in errors.
pub fn replace(
    dir: &Path,
    dir_file: &File,
    name: &str,
    tmp: &str,
    bytes: &[u8],
    what: &str,
) -> Result<(), LogError> {
    let tmp = dir.join(tmp);
    let path = dir.join(name);
    let context = |action: &str| format!("{action} {what} {}", path.display());
    let mut file = File::create(&tmp).map_err(|err| LogError::io(context("create"), err))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(|err| LogError::io(context("write"), err))?;
    std::fs::rename(&tmp, &path)
        .and_then(|()| sync_dir(dir_file))
        .map_err(|err| LogError::io(context("install"), err))
}

/// Reads `dir/name` whole (`Ok(None)` when it does not exist).
pub fn read(dir: &Path, name: &str) -> Result<Option<Vec<u8>>, LogError> {
    let path = dir.join(name);
    match std::fs::read(&path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(err) => Err(LogError::io(format!("read {}", path.display()), err)),
    }
}
