//! The kernel's side: FUSE requests mapped onto [`Model`]. Entries and attributes are never
//! cached by the kernel (zero TTLs) and files are opened without `keep_cache`, so what the
//! kernel shows is what the model holds. Writes reach the model as they are made (no writeback
//! cache); pages written through a shared mapping reach it when the kernel writes them back,
//! and an `msync`/`fsync` writes them back before it syncs.
//!
//! One adapter serves one mount. When the power comes back the disk is mounted anew with a new
//! adapter and the old one is retired: whatever the old mount still sends (the kernel writing
//! back pages dirtied before the cut) fails with EIO and changes nothing.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, LockOwner,
    OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyEmpty,
    ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, ReplyXattr, Request, TimeOrNow, WriteFlags,
};

use super::model::{Attr, FsError, FsResult, Kind, Model, NAME_MAX, ROOT};

/// Kernel caching of entries and attributes: none.
const TTL: Duration = Duration::ZERO;

/// One mount's request handler.
pub struct Adapter {
    model: Arc<Mutex<Model>>,
    retired: Arc<AtomicBool>,
}

impl Adapter {
    /// An adapter over `model` that serves until `retired` is set.
    pub fn new(model: Arc<Mutex<Model>>, retired: Arc<AtomicBool>) -> Adapter {
        Adapter { model, retired }
    }

    fn model(&self) -> FsResult<MutexGuard<'_, Model>> {
        if self.retired.load(Ordering::Acquire) {
            return Err(FsError::PoweredOff);
        }
        // A panic while holding the lock is a bug that already ended a request; the model's
        // state stays consistent between operations, so the lock is taken back.
        Ok(self
            .model
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()))
    }
}

fn errno(err: FsError) -> Errno {
    Errno::from_i32(err.errno())
}

fn name_of(name: &OsStr) -> FsResult<&str> {
    if name.as_bytes().len() > NAME_MAX {
        return Err(FsError::BadName);
    }
    name.to_str().ok_or(FsError::BadName)
}

fn file_type(kind: Kind) -> FileType {
    match kind {
        Kind::File => FileType::RegularFile,
        Kind::Dir => FileType::Directory,
    }
}

fn file_attr(attr: Attr) -> FileAttr {
    FileAttr {
        ino: INodeNo(attr.ino),
        size: attr.size,
        blocks: attr.size.div_ceil(512),
        atime: attr.mtime,
        mtime: attr.mtime,
        ctime: attr.mtime,
        crtime: attr.mtime,
        kind: file_type(attr.kind),
        perm: attr.perm,
        nlink: attr.nlink,
        uid: attr.uid,
        gid: attr.gid,
        rdev: 0,
        blksize: 4096,
        flags: 0,
    }
}

fn reply_entry(result: FsResult<Attr>, reply: ReplyEntry) {
    match result {
        Ok(attr) => reply.entry(&TTL, &file_attr(attr), Generation(0)),
        Err(err) => reply.error(errno(err)),
    }
}

fn reply_attr(result: FsResult<Attr>, reply: ReplyAttr) {
    match result {
        Ok(attr) => reply.attr(&TTL, &file_attr(attr)),
        Err(err) => reply.error(errno(err)),
    }
}

fn reply_empty(result: FsResult<()>, reply: ReplyEmpty) {
    match result {
        Ok(()) => reply.ok(),
        Err(err) => reply.error(errno(err)),
    }
}

fn perm_of(mode: u32, umask: u32) -> u16 {
    ((mode & !umask) & 0o7777) as u16
}

impl Filesystem for Adapter {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        reply_entry(
            name_of(name).and_then(|name| self.model()?.lookup(parent.0, name)),
            reply,
        );
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        reply_attr(self.model().and_then(|model| model.getattr(ino.0)), reply);
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<TimeOrNow>,
        _mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let perm = mode.map(|mode| (mode & 0o7777) as u16);
        reply_attr(
            self.model()
                .and_then(|mut model| model.setattr(ino.0, perm, size)),
            reply,
        );
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        let result = name_of(name).and_then(|name| {
            self.model()?.create(
                parent.0,
                name,
                Kind::Dir,
                perm_of(mode, umask),
                (req.uid(), req.gid()),
            )
        });
        reply_entry(result, reply);
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let result =
            name_of(name).and_then(|name| self.model()?.remove(parent.0, name, Kind::File));
        reply_empty(result, reply);
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let result = name_of(name).and_then(|name| self.model()?.remove(parent.0, name, Kind::Dir));
        reply_empty(result, reply);
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let result =
            if flags.intersects(RenameFlags::RENAME_EXCHANGE | RenameFlags::RENAME_WHITEOUT) {
                Err(FsError::Unsupported)
            } else {
                name_of(name).and_then(|name| {
                    let newname = name_of(newname)?;
                    self.model()?.rename(
                        (parent.0, name),
                        (newparent.0, newname),
                        flags.contains(RenameFlags::RENAME_NOREPLACE),
                    )
                })
            };
        reply_empty(result, reply);
    }

    fn open(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.model().and_then(|mut model| model.open(ino.0)) {
            Ok(()) => reply.opened(FileHandle(0), FopenFlags::empty()),
            Err(err) => reply.error(errno(err)),
        }
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        _flags: i32,
        reply: ReplyCreate,
    ) {
        let result = name_of(name).and_then(|name| {
            let mut model = self.model()?;
            let attr = model.create(
                parent.0,
                name,
                Kind::File,
                perm_of(mode, umask),
                (req.uid(), req.gid()),
            )?;
            model.open(attr.ino)?;
            Ok(attr)
        });
        match result {
            Ok(attr) => reply.created(
                &TTL,
                &file_attr(attr),
                Generation(0),
                FileHandle(0),
                FopenFlags::empty(),
            ),
            Err(err) => reply.error(errno(err)),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        match self
            .model()
            .and_then(|model| model.read(ino.0, offset, size))
        {
            Ok(data) => reply.data(&data),
            Err(err) => reply.error(errno(err)),
        }
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        match self
            .model()
            .and_then(|mut model| model.write(ino.0, offset, data))
        {
            Ok(()) => reply.written(data.len() as u32),
            Err(err) => reply.error(errno(err)),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        // Closing a file makes nothing durable.
        reply_empty(self.model().map(drop), reply);
    }

    fn release(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        if let Ok(mut model) = self.model() {
            model.release(ino.0);
        }
        reply.ok();
    }

    fn fsync(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        reply_empty(
            self.model().and_then(|mut model| model.sync_file(ino.0)),
            reply,
        );
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let entries = match self.model().and_then(|model| model.readdir(ino.0)) {
            Ok(entries) => entries,
            Err(err) => return reply.error(errno(err)),
        };
        let dots = [
            (".".to_string(), ino.0, Kind::Dir),
            ("..".to_string(), ROOT, Kind::Dir),
        ];
        for (index, (name, child, kind)) in dots.into_iter().chain(entries).enumerate() {
            if (index as u64) < offset {
                continue;
            }
            if reply.add(INodeNo(child), index as u64 + 1, file_type(kind), &name) {
                break;
            }
        }
        reply.ok();
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        reply_empty(
            self.model().and_then(|mut model| model.sync_dir(ino.0)),
            reply,
        );
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        // A roomy disk: the backing directory's free space is not this filesystem's concern.
        const BLOCKS: u64 = 1 << 28;
        reply.statfs(
            BLOCKS,
            BLOCKS,
            BLOCKS,
            1 << 20,
            1 << 20,
            4096,
            NAME_MAX as u32,
            4096,
        );
    }

    fn getxattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _name: &OsStr,
        _size: u32,
        reply: ReplyXattr,
    ) {
        // No extended attributes: ENOSYS tells the kernel not to ask again.
        reply.error(Errno::ENOSYS);
    }

    fn listxattr(&self, _req: &Request, _ino: INodeNo, _size: u32, reply: ReplyXattr) {
        reply.error(Errno::ENOSYS);
    }

    fn access(&self, _req: &Request, _ino: INodeNo, _mask: fuser::AccessFlags, reply: ReplyEmpty) {
        reply_empty(self.model().map(drop), reply);
    }

    fn fallocate(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        let result = if mode == 0 || mode == libc::FALLOC_FL_KEEP_SIZE {
            self.model().and_then(|mut model| {
                if mode == 0 {
                    model.allocate(ino.0, offset, length)
                } else {
                    Ok(())
                }
            })
        } else {
            Err(FsError::Unsupported)
        };
        reply_empty(result, reply);
    }
}
