//! What the log does to read what the disk holds and to create directories that stay.
//!
//! - [`sync_and_drop_cached`]: after a failed `fsync`, Linux may keep the pages it could not
//!   write in the page cache, marked clean, and reports the error once per open file
//!   description, to the process that had the file open. A later process that opens the file
//!   sees its own sync succeed and would read the cached bytes, which the disk never got, and
//!   count them durable. So at open the log syncs every file it is about to read and trust
//!   (pages a process that died before its sync left dirty become durable now, or the sync
//!   fails), then drops the file's cached pages (`posix_fadvise(POSIX_FADV_DONTNEED)`, which
//!   drops clean pages no one has mapped), so what it reads next comes from the disk. A page
//!   another process keeps mapped at that moment stays cached: run no other program on a log
//!   directory while a node opens it.
//! - [`create_dir_all_synced`]: a directory created at start is synced into its parent (and
//!   so is every ancestor created with it), so a power loss cannot take away a directory
//!   whose files were synced.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::path::Path;

/// Syncs `file` (`fdatasync`), then drops its cached pages, so the next read of it comes from
/// the disk (module docs).
pub fn sync_and_drop_cached(file: &File) -> io::Result<()> {
    #[cfg(any(test, feature = "test-hooks"))]
    tests::record_reread(file);
    file.sync_data()?;
    // SAFETY: fadvise on a descriptor borrowed for the call; no memory is passed.
    let error = unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    if error != 0 {
        return Err(io::Error::from_raw_os_error(error));
    }
    Ok(())
}

/// Creates `dir` and any missing ancestors, each synced into its parent before this returns.
pub fn create_dir_all_synced(dir: &Path) -> io::Result<()> {
    let mut missing = Vec::new();
    let mut at = Some(dir);
    while let Some(path) = at.filter(|path| !path.as_os_str().is_empty() && !path.exists()) {
        missing.push(path);
        at = path.parent();
    }
    std::fs::create_dir_all(dir)?;
    // Deepest first: each directory's parent exists, and is synced in its turn.
    for created in missing {
        let parent = match created.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent,
            _ => Path::new("."),
        };
        sync_dir_path(parent)?;
    }
    Ok(())
}

/// Syncs the directory at `dir` (its entries become durable).
pub fn sync_dir_path(dir: &Path) -> io::Result<()> {
    #[cfg(any(test, feature = "test-hooks"))]
    tests::DIRS_SYNCED.with(|synced| synced.borrow_mut().push(dir.to_path_buf()));
    File::open(dir)?.sync_all()
}

/// Test hooks: which files and directories this thread synced (feature `test-hooks`, for the
/// tests of the crates above the log).
#[cfg(any(test, feature = "test-hooks"))]
pub mod tests {
    use std::cell::RefCell;
    use std::path::PathBuf;

    use super::*;

    thread_local! {
        /// Directories synced through [`sync_dir_path`] on this thread, in order: a test cannot
        /// see a directory sync on the disk (a power loss cannot be staged without a special
        /// block device), so it checks that the sync was asked for.
        pub(super) static DIRS_SYNCED: RefCell<Vec<PathBuf>> = const { RefCell::new(Vec::new()) };
        /// Files (device, inode) passed to [`sync_and_drop_cached`] on this thread, in order.
        static FILES_REREAD: RefCell<Vec<(u64, u64)>> = const { RefCell::new(Vec::new()) };
    }

    fn file_id(metadata: &std::fs::Metadata) -> (u64, u64) {
        use std::os::unix::fs::MetadataExt;
        (metadata.dev(), metadata.ino())
    }

    pub(super) fn record_reread(file: &File) {
        let id = file_id(&file.metadata().expect("stat a file being reread"));
        FILES_REREAD.with(|files| files.borrow_mut().push(id));
    }

    /// Whether the file at `path` went through [`sync_and_drop_cached`] on this thread since
    /// the last [`forget_files_reread`].
    pub fn was_reread(path: &Path) -> bool {
        let id = file_id(&std::fs::metadata(path).expect("stat"));
        FILES_REREAD.with(|files| files.borrow().contains(&id))
    }

    /// Forgets the files recorded by [`sync_and_drop_cached`] on this thread.
    pub fn forget_files_reread() {
        FILES_REREAD.with(|files| files.take());
    }

    /// The directories synced on this thread since the last call.
    pub fn take_dirs_synced() -> Vec<PathBuf> {
        DIRS_SYNCED.with(|synced| synced.take())
    }

    /// Pages of `file` (of `len` bytes) now in the page cache, per `mincore` over a fresh
    /// mapping (mapping faults nothing in; `mincore` reports the file's cached pages).
    pub fn cached_pages(file: &File, len: usize) -> usize {
        // SAFETY: a private read-only mapping of a file this test owns; unmapped below.
        let map = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                0,
            )
        };
        assert_ne!(map, libc::MAP_FAILED, "{}", io::Error::last_os_error());
        let mut resident = vec![0u8; len.div_ceil(4096)];
        // SAFETY: `map` is a live mapping of `len` bytes and `resident` has a byte per page.
        let rc = unsafe { libc::mincore(map, len, resident.as_mut_ptr()) };
        assert_eq!(rc, 0, "{}", io::Error::last_os_error());
        // SAFETY: unmaps exactly the mapping made above.
        unsafe { libc::munmap(map, len) };
        resident.iter().filter(|&&page| page & 1 == 1).count()
    }

    #[test]
    fn sync_and_drop_cached_leaves_no_page_of_the_file_cached() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, vec![7u8; 64 << 10]).unwrap();
        let file = File::open(&path).unwrap();
        assert_eq!(std::fs::read(&path).unwrap().len(), 64 << 10);
        assert_eq!(
            cached_pages(&file, 64 << 10),
            16,
            "just written and read: cached"
        );
        sync_and_drop_cached(&file).unwrap();
        assert_eq!(cached_pages(&file, 64 << 10), 0);
    }

    #[test]
    fn every_directory_created_is_synced_into_its_parent() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("a/b/c");
        std::fs::create_dir(root.path().join("a")).unwrap();
        take_dirs_synced();
        create_dir_all_synced(&dir).unwrap();
        assert!(dir.is_dir());
        assert_eq!(
            take_dirs_synced(),
            vec![root.path().join("a/b"), root.path().join("a")]
        );
        create_dir_all_synced(&dir).unwrap();
        assert_eq!(take_dirs_synced(), Vec::<PathBuf>::new(), "nothing created");
    }
}
