//! Small files replaced atomically: the repair marker and the log head.
//!
//! A new version is written whole under a temporary name, `fsync`ed, renamed over the final
//! name, and the directory is `fsync`ed; so the final name always denotes a complete, synced
//! file (a crash leaves the old version or the new one, and at worst a stale temporary, which
//! the next write replaces). Damage to a file under its final name is therefore disk damage,
//! never a torn write.

use std::fs::File;
use std::io::Write;
use std::path::Path;

use crate::error::LogError;
use crate::segment::sync_dir;

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
