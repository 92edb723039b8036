//! The filesystem's state: a directory tree of inodes whose files and directory entries each
//! have a durable version (in the backing directory) and a current version (durable plus every
//! change not yet made durable, kept in memory), and the power cut that throws the difference
//! away. No FUSE here: [`super::fuse`] maps kernel requests onto these methods, and the unit
//! tests below drive them directly.
//!
//! Durability follows POSIX, strictly:
//! - a file's contents and size become durable when the file is synced (`fsync`/`fdatasync`,
//!   or `msync` of a mapping, which the kernel turns into an `fsync`);
//! - a directory's entries (creates, unlinks, renames into or out of it) become durable when
//!   the directory is synced. Syncing a file does not make its name durable.
//!
//! Backing directory layout: `powerfs.meta` (the durable tree, see [`encode_meta`]) and
//! `data/<inode>` (the durable contents of each file that was ever synced).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use lockstep::sim::SimRng;
use serde_json::{json, Map, Value};

#[cfg(test)]
use super::cut::SECTOR;
use super::cut::{survivors, written_bytes, Pending};
pub use super::cut::{CutMode, CutReport};

/// Inode number of the root directory (FUSE's).
pub const ROOT: u64 = 1;

/// Version of `powerfs.meta`.
const META_VERSION: u64 = 1;

/// First line of `powerfs.meta`.
const META_MAGIC: &str = "lockstep-powerfs";

/// Longest file name.
pub const NAME_MAX: usize = 255;

/// Why an operation failed; maps onto an errno.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsError {
    /// The power is cut: every operation fails until the filesystem is powered on again.
    PoweredOff,
    /// No such inode or entry.
    NotFound,
    /// The name exists already.
    Exists,
    /// A directory where a file is needed.
    IsDir,
    /// A file where a directory is needed.
    NotDir,
    /// The directory is not empty.
    NotEmpty,
    /// The name is too long or not UTF-8.
    BadName,
    /// An operation this filesystem does not offer (hard links, symlinks, special files,
    /// fallocate modes other than plain allocation).
    Unsupported,
    /// The backing directory failed.
    Io,
}

impl FsError {
    /// The errno the kernel gets.
    pub fn errno(self) -> i32 {
        match self {
            FsError::PoweredOff | FsError::Io => libc::EIO,
            FsError::NotFound => libc::ENOENT,
            FsError::Exists => libc::EEXIST,
            FsError::IsDir => libc::EISDIR,
            FsError::NotDir => libc::ENOTDIR,
            FsError::NotEmpty => libc::ENOTEMPTY,
            FsError::BadName => libc::EINVAL,
            FsError::Unsupported => libc::EOPNOTSUPP,
        }
    }
}

/// Result of a filesystem operation.
pub type FsResult<T> = Result<T, FsError>;

/// A file or a directory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A regular file.
    File,
    /// A directory.
    Dir,
}

/// What `getattr` reports.
#[derive(Clone, Copy, Debug)]
pub struct Attr {
    /// Inode number.
    pub ino: u64,
    /// File or directory.
    pub kind: Kind,
    /// Current size in bytes (files).
    pub size: u64,
    /// Permission bits.
    pub perm: u16,
    /// Current links (names in the current tree).
    pub nlink: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Last change of contents or attributes.
    pub mtime: SystemTime,
}

/// One inode.
#[derive(Debug)]
struct Inode {
    kind: Kind,
    perm: u16,
    uid: u32,
    gid: u32,
    mtime: SystemTime,
    /// Names of this inode in the current tree.
    links: u32,
    /// Open handles (and mappings) the kernel holds.
    open: u32,
    /// Directories: the current entries.
    entries: BTreeMap<String, u64>,
    /// Directories: the durable entries.
    durable_entries: BTreeMap<String, u64>,
    /// Files: current size.
    len: u64,
    /// Files: size of the durable contents (`data/<ino>`).
    durable_len: u64,
    /// Files: changes since the last sync, oldest first.
    pending: Vec<Pending>,
}

impl Inode {
    fn new(kind: Kind, perm: u16, uid: u32, gid: u32) -> Inode {
        Inode {
            kind,
            perm,
            uid,
            gid,
            mtime: SystemTime::now(),
            links: 0,
            open: 0,
            entries: BTreeMap::new(),
            durable_entries: BTreeMap::new(),
            len: 0,
            durable_len: 0,
            pending: Vec::new(),
        }
    }
}

/// Counters of what the filesystem did, for reports.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Write requests.
    pub writes: u64,
    /// File syncs.
    pub file_syncs: u64,
    /// Directory syncs.
    pub dir_syncs: u64,
    /// Power cuts.
    pub cuts: u64,
}

/// The whole filesystem.
pub struct Model {
    backing: PathBuf,
    inodes: HashMap<u64, Inode>,
    next_ino: u64,
    powered: bool,
    stats: Stats,
}

impl Model {
    /// Opens the filesystem kept in `backing` (created when missing, with an empty root):
    /// the durable tree of its last sync, with nothing pending. Data files that no durable
    /// entry names are deleted. The error says what is wrong with the backing directory.
    pub fn load(backing: &Path) -> Result<Model, String> {
        std::fs::create_dir_all(backing.join("data"))
            .map_err(|err| format!("create {}: {err}", backing.join("data").display()))?;
        let meta_path = backing.join("powerfs.meta");
        let mut model = Model {
            backing: backing.to_path_buf(),
            inodes: HashMap::new(),
            next_ino: ROOT + 1,
            powered: true,
            stats: Stats::default(),
        };
        match std::fs::read(&meta_path) {
            Ok(bytes) => model
                .load_meta(&bytes)
                .map_err(|err| format!("{}: {err}", meta_path.display()))?,
            Err(err) if err.kind() == io::ErrorKind::NotFound => {
                let mut root = Inode::new(Kind::Dir, 0o755, 0, 0);
                root.links = 1;
                model.inodes.insert(ROOT, root);
                model
                    .persist_meta()
                    .map_err(|err| format!("write {}: {err}", meta_path.display()))?;
            }
            Err(err) => return Err(format!("read {}: {err}", meta_path.display())),
        }
        model
            .remove_orphan_data()
            .map_err(|err| format!("{}: {err}", backing.display()))?;
        model.check();
        Ok(model)
    }

    /// Counters so far.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// Whether the power is on.
    pub fn powered(&self) -> bool {
        self.powered
    }

    /// Powers the filesystem on again after a cut (the caller remounts, so the kernel holds
    /// nothing from before the cut).
    pub fn power_on(&mut self) {
        self.powered = true;
    }

    fn live(&self) -> FsResult<()> {
        if self.powered {
            Ok(())
        } else {
            Err(FsError::PoweredOff)
        }
    }

    fn inode(&self, ino: u64) -> FsResult<&Inode> {
        self.inodes.get(&ino).ok_or(FsError::NotFound)
    }

    fn inode_mut(&mut self, ino: u64) -> FsResult<&mut Inode> {
        self.inodes.get_mut(&ino).ok_or(FsError::NotFound)
    }

    fn dir(&self, ino: u64) -> FsResult<&Inode> {
        let inode = self.inode(ino)?;
        if inode.kind == Kind::Dir {
            Ok(inode)
        } else {
            Err(FsError::NotDir)
        }
    }

    fn file_mut(&mut self, ino: u64) -> FsResult<&mut Inode> {
        let inode = self.inode_mut(ino)?;
        if inode.kind == Kind::File {
            Ok(inode)
        } else {
            Err(FsError::IsDir)
        }
    }

    /// The attributes of `ino`.
    pub fn getattr(&self, ino: u64) -> FsResult<Attr> {
        self.live()?;
        let inode = self.inode(ino)?;
        Ok(Attr {
            ino,
            kind: inode.kind,
            size: if inode.kind == Kind::File {
                inode.len
            } else {
                0
            },
            perm: inode.perm,
            nlink: inode.links.max(u32::from(inode.kind == Kind::Dir) * 2),
            uid: inode.uid,
            gid: inode.gid,
            mtime: inode.mtime,
        })
    }

    /// The inode the entry `name` of directory `parent` names.
    fn child(&self, parent: u64, name: &str) -> FsResult<u64> {
        self.dir(parent)?
            .entries
            .get(name)
            .copied()
            .ok_or(FsError::NotFound)
    }

    /// The entry `name` of directory `parent`.
    pub fn lookup(&self, parent: u64, name: &str) -> FsResult<Attr> {
        self.live()?;
        let ino = self.child(parent, name)?;
        self.getattr(ino)
    }

    /// The entries of directory `ino`, in name order.
    pub fn readdir(&self, ino: u64) -> FsResult<Vec<(String, u64, Kind)>> {
        self.live()?;
        let dir = self.dir(ino)?;
        Ok(dir
            .entries
            .iter()
            .map(|(name, child)| (name.clone(), *child, self.inodes[child].kind))
            .collect())
    }

    /// Creates `name` in `parent` (a file, or a directory).
    pub fn create(
        &mut self,
        parent: u64,
        name: &str,
        kind: Kind,
        perm: u16,
        owner: (u32, u32),
    ) -> FsResult<Attr> {
        self.live()?;
        check_name(name)?;
        if self.dir(parent)?.entries.contains_key(name) {
            return Err(FsError::Exists);
        }
        let ino = self.next_ino;
        self.next_ino += 1;
        let mut inode = Inode::new(kind, perm, owner.0, owner.1);
        inode.links = 1;
        self.inodes.insert(ino, inode);
        let dir = self.inode_mut(parent)?;
        dir.entries.insert(name.to_string(), ino);
        dir.mtime = SystemTime::now();
        self.getattr(ino)
    }

    /// Removes the entry `name` from `parent`: a file (`kind` File) or an empty directory.
    pub fn remove(&mut self, parent: u64, name: &str, kind: Kind) -> FsResult<()> {
        self.live()?;
        let ino = self.child(parent, name)?;
        check_replaceable(kind, self.inode(ino)?)?;
        let dir = self.inode_mut(parent)?;
        dir.entries.remove(name);
        dir.mtime = SystemTime::now();
        self.unlinked(ino);
        Ok(())
    }

    /// Renames `parent/name` to `new_parent/new_name`, replacing a target of the same kind
    /// (an empty directory for a directory). `no_replace`: fail if the target exists.
    pub fn rename(
        &mut self,
        (parent, name): (u64, &str),
        (new_parent, new_name): (u64, &str),
        no_replace: bool,
    ) -> FsResult<()> {
        self.live()?;
        check_name(new_name)?;
        let ino = self.child(parent, name)?;
        let kind = self.inode(ino)?.kind;
        if let Some(&old) = self.dir(new_parent)?.entries.get(new_name) {
            if old == ino {
                return Ok(());
            }
            if no_replace {
                return Err(FsError::Exists);
            }
            check_replaceable(kind, self.inode(old)?)?;
        }
        let now = SystemTime::now();
        let dir = self.inode_mut(parent)?;
        dir.entries.remove(name);
        dir.mtime = now;
        let target_dir = self.inode_mut(new_parent)?;
        let replaced = target_dir.entries.insert(new_name.to_string(), ino);
        target_dir.mtime = now;
        if let Some(old) = replaced {
            self.unlinked(old);
        }
        Ok(())
    }

    /// `ino` lost a name in the current tree; forgets it if nothing refers to it any more.
    fn unlinked(&mut self, ino: u64) {
        let inode = self
            .inodes
            .get_mut(&ino)
            .expect("an entry names a live inode");
        assert!(
            inode.links > 0,
            "inode {ino} unlinked more often than linked"
        );
        inode.links -= 1;
        self.maybe_forget(ino);
    }

    /// Forgets `ino` when no current name, no durable name and no open handle refers to it.
    fn maybe_forget(&mut self, ino: u64) {
        let inode = &self.inodes[&ino];
        if ino == ROOT || inode.links > 0 || inode.open > 0 {
            return;
        }
        let durably_named = self
            .inodes
            .values()
            .any(|dir| dir.durable_entries.values().any(|&child| child == ino));
        if !durably_named {
            self.inodes.remove(&ino);
            // Best effort: a leftover data file is removed at the next load.
            let _ = std::fs::remove_file(self.data_path(ino));
        }
    }

    /// The kernel opened `ino` (a handle or a mapping).
    pub fn open(&mut self, ino: u64) -> FsResult<()> {
        self.live()?;
        self.inode_mut(ino)?.open += 1;
        Ok(())
    }

    /// The kernel released a handle of `ino`.
    pub fn release(&mut self, ino: u64) {
        if let Some(inode) = self.inodes.get_mut(&ino) {
            inode.open = inode.open.saturating_sub(1);
            self.maybe_forget(ino);
        }
    }

    /// Sets permission bits and/or the size.
    pub fn setattr(&mut self, ino: u64, perm: Option<u16>, size: Option<u64>) -> FsResult<Attr> {
        self.live()?;
        if let Some(size) = size {
            let file = self.file_mut(ino)?;
            file.pending.push(Pending::SetLen(size));
            file.len = size;
        }
        let inode = self.inode_mut(ino)?;
        if let Some(perm) = perm {
            inode.perm = perm;
        }
        inode.mtime = SystemTime::now();
        self.getattr(ino)
    }

    /// Writes `data` at `offset` of file `ino` (volatile until the file is synced).
    pub fn write(&mut self, ino: u64, offset: u64, data: &[u8]) -> FsResult<()> {
        self.live()?;
        self.stats.writes += 1;
        let file = self.file_mut(ino)?;
        file.len = file.len.max(offset + data.len() as u64);
        file.mtime = SystemTime::now();
        // Appends right after the previous write extend it (a log's writes mostly do).
        if let Some(Pending::Write {
            offset: last_offset,
            data: last,
        }) = file.pending.last_mut()
        {
            if *last_offset + last.len() as u64 == offset {
                last.extend_from_slice(data);
                return Ok(());
            }
        }
        file.pending.push(Pending::Write {
            offset,
            data: data.to_vec(),
        });
        Ok(())
    }

    /// Grows file `ino` to at least `offset + len` bytes (plain `fallocate`).
    pub fn allocate(&mut self, ino: u64, offset: u64, len: u64) -> FsResult<()> {
        self.live()?;
        let file = self.file_mut(ino)?;
        if offset + len > file.len {
            file.len = offset + len;
            file.pending.push(Pending::SetLen(offset + len));
        }
        Ok(())
    }

    /// Reads up to `size` bytes at `offset` of file `ino`: the durable contents with the
    /// pending changes applied.
    pub fn read(&self, ino: u64, offset: u64, size: u32) -> FsResult<Vec<u8>> {
        self.live()?;
        let inode = self.inode(ino)?;
        if inode.kind != Kind::File {
            return Err(FsError::IsDir);
        }
        let end = inode.len.min(offset.saturating_add(u64::from(size)));
        if offset >= end {
            return Ok(Vec::new());
        }
        let mut buf = vec![0u8; (end - offset) as usize];
        let durable_end = inode.durable_len.min(end);
        if offset < durable_end {
            let file = File::open(self.data_path(ino)).map_err(|_| FsError::Io)?;
            file.read_exact_at(&mut buf[..(durable_end - offset) as usize], offset)
                .map_err(|_| FsError::Io)?;
        }
        for change in &inode.pending {
            match change {
                Pending::Write { offset: at, data } => {
                    let from = offset.max(*at);
                    let to = end.min(at + data.len() as u64);
                    if from < to {
                        buf[(from - offset) as usize..(to - offset) as usize]
                            .copy_from_slice(&data[(from - at) as usize..(to - at) as usize]);
                    }
                }
                Pending::SetLen(len) => {
                    if *len < end {
                        let from = offset.max(*len);
                        buf[(from - offset) as usize..].fill(0);
                    }
                }
            }
        }
        Ok(buf)
    }

    /// Makes file `ino`'s contents and size durable (`fsync`, `fdatasync`, `msync`).
    pub fn sync_file(&mut self, ino: u64) -> FsResult<()> {
        self.live()?;
        self.stats.file_syncs += 1;
        let path = self.data_path(ino);
        let file = self.file_mut(ino)?;
        let pending = std::mem::take(&mut file.pending);
        let len = file.len;
        apply(&path, &pending).map_err(|_| FsError::Io)?;
        let file = self.file_mut(ino)?;
        file.durable_len = len;
        Ok(())
    }

    /// Makes directory `ino`'s entries durable (`fsync` of the directory).
    pub fn sync_dir(&mut self, ino: u64) -> FsResult<()> {
        self.live()?;
        self.stats.dir_syncs += 1;
        let dir = self.inodes.get_mut(&ino).ok_or(FsError::NotFound)?;
        if dir.kind != Kind::Dir {
            return Err(FsError::NotDir);
        }
        if dir.entries == dir.durable_entries {
            return Ok(());
        }
        let dropped: Vec<u64> = dir
            .durable_entries
            .values()
            .filter(|child| !dir.entries.values().any(|c| c == *child))
            .copied()
            .collect();
        dir.durable_entries = dir.entries.clone();
        for child in dropped {
            if self.inodes.contains_key(&child) {
                self.maybe_forget(child);
            }
        }
        self.persist_meta().map_err(|_| FsError::Io)
    }

    /// Cuts the power: what was never synced is lost as `mode` says (random choices from
    /// `seed`), and every operation fails with EIO until [`Model::power_on`].
    pub fn cut(&mut self, mode: CutMode, seed: u64) -> Result<CutReport, String> {
        let mut rng = SimRng::new(seed);
        let mut report = CutReport::default();
        self.powered = false;
        self.stats.cuts += 1;
        let mut inos: Vec<u64> = self.inodes.keys().copied().collect();
        inos.sort_unstable();
        for &ino in &inos {
            let path = self.data_path(ino);
            let inode = self.inodes.get_mut(&ino).expect("listed above");
            inode.open = 0;
            match inode.kind {
                Kind::Dir => cut_dir(inode, mode, &mut rng, &mut report),
                Kind::File => cut_file(inode, &path, mode, &mut rng, &mut report)?,
            }
        }
        self.relink_after_cut();
        self.persist_meta()
            .map_err(|err| format!("{}: {err}", self.meta_path().display()))?;
        self.remove_orphan_data()
            .map_err(|err| format!("{}: {err}", self.backing.display()))?;
        self.check();
        for inode in self.inodes.values() {
            assert!(
                inode.pending.is_empty() && inode.len == inode.durable_len,
                "a cut leaves only durable state"
            );
            assert_eq!(
                inode.entries, inode.durable_entries,
                "a cut leaves only durable state"
            );
        }
        Ok(report)
    }

    /// After a cut the current tree is the durable tree: recounts links and forgets inodes the
    /// durable tree does not reach.
    fn relink_after_cut(&mut self) {
        let reachable = self.durably_reachable();
        self.inodes.retain(|ino, _| reachable.contains(ino));
        for inode in self.inodes.values_mut() {
            inode.links = 0;
        }
        self.inodes.get_mut(&ROOT).expect("the root").links = 1;
        let children: Vec<u64> = self
            .inodes
            .values()
            .flat_map(|dir| dir.entries.values().copied())
            .collect();
        for child in children {
            self.inodes.get_mut(&child).expect("reachable").links += 1;
        }
    }

    /// Inodes reachable from the root through durable entries.
    fn durably_reachable(&self) -> HashSet<u64> {
        let mut seen = HashSet::from([ROOT]);
        let mut stack = vec![ROOT];
        while let Some(ino) = stack.pop() {
            if let Some(inode) = self.inodes.get(&ino) {
                for &child in inode.durable_entries.values() {
                    if self.inodes.contains_key(&child) && seen.insert(child) {
                        stack.push(child);
                    }
                }
            }
        }
        seen
    }

    /// Asserts the invariants of the tree.
    fn check(&self) {
        assert!(
            self.inodes
                .get(&ROOT)
                .is_some_and(|root| root.kind == Kind::Dir),
            "the root is a directory"
        );
        for (ino, inode) in &self.inodes {
            assert!(*ino < self.next_ino, "inode {ino} beyond next_ino");
            for child in inode.entries.values() {
                assert!(self.inodes.contains_key(child), "entry names no inode");
            }
            if inode.kind == Kind::File {
                assert!(inode.entries.is_empty() && inode.durable_entries.is_empty());
            }
        }
    }

    fn data_path(&self, ino: u64) -> PathBuf {
        self.backing.join("data").join(ino.to_string())
    }

    fn meta_path(&self) -> PathBuf {
        self.backing.join("powerfs.meta")
    }

    /// Writes the durable tree to `powerfs.meta` (through a temporary file and a rename).
    fn persist_meta(&self) -> io::Result<()> {
        let tmp = self.backing.join("powerfs.meta.tmp");
        std::fs::write(&tmp, encode_meta(self))?;
        std::fs::rename(&tmp, self.meta_path())
    }

    fn load_meta(&mut self, bytes: &[u8]) -> Result<(), String> {
        let value: Value =
            serde_json::from_str(meta_body(bytes)?).map_err(|err| format!("body: {err}"))?;
        self.next_ino = value["next_ino"].as_u64().ok_or("no next_ino")?;
        let inodes = value["inodes"].as_object().ok_or("no inodes")?;
        for (key, entry) in inodes {
            let ino: u64 = key
                .parse()
                .ok()
                .filter(|ino| (ROOT..self.next_ino).contains(ino))
                .ok_or_else(|| format!("bad inode number {key:?} (next_ino {})", self.next_ino))?;
            let inode = self.decode_inode(ino, entry)?;
            self.inodes.insert(ino, inode);
        }
        if self
            .inodes
            .get(&ROOT)
            .is_none_or(|root| root.kind != Kind::Dir)
        {
            return Err("no root directory".into());
        }
        for inode in self.inodes.values() {
            for (name, child) in &inode.entries {
                if !self.inodes.contains_key(child) {
                    return Err(format!("entry {name:?} names missing inode {child}"));
                }
            }
        }
        self.relink_after_cut();
        Ok(())
    }

    /// Inode `ino` as `powerfs.meta` describes it (`entry`), with its durable size.
    fn decode_inode(&self, ino: u64, entry: &Value) -> Result<Inode, String> {
        let kind = match entry["kind"].as_str() {
            Some("dir") => Kind::Dir,
            Some("file") => Kind::File,
            other => return Err(format!("inode {ino}: bad kind {other:?}")),
        };
        let number = |field: &str| {
            entry[field]
                .as_u64()
                .ok_or_else(|| format!("inode {ino}: no {field}"))
        };
        let mut inode = Inode::new(
            kind,
            number("perm")? as u16,
            number("uid")? as u32,
            number("gid")? as u32,
        );
        if kind == Kind::Dir {
            let entries = entry["entries"]
                .as_object()
                .ok_or_else(|| format!("inode {ino}: no entries"))?;
            for (name, child) in entries {
                let child = child
                    .as_u64()
                    .ok_or_else(|| format!("inode {ino}: bad entry {name:?}"))?;
                inode.entries.insert(name.clone(), child);
            }
            inode.durable_entries = inode.entries.clone();
        } else {
            inode.durable_len = match std::fs::metadata(self.data_path(ino)) {
                Ok(meta) => meta.len(),
                Err(err) if err.kind() == io::ErrorKind::NotFound => 0,
                Err(err) => return Err(format!("inode {ino}: {err}")),
            };
            inode.len = inode.durable_len;
        }
        Ok(inode)
    }

    /// Deletes data files of inodes the filesystem no longer has.
    fn remove_orphan_data(&self) -> io::Result<()> {
        for entry in std::fs::read_dir(self.backing.join("data"))? {
            let entry = entry?;
            let known = entry
                .file_name()
                .to_str()
                .and_then(|name| name.parse::<u64>().ok())
                .is_some_and(|ino| self.inodes.contains_key(&ino));
            if !known {
                std::fs::remove_file(entry.path())?;
            }
        }
        Ok(())
    }
}

/// The JSON body of `powerfs.meta` once its header line checks (magic, version, CRC).
fn meta_body(bytes: &[u8]) -> Result<&str, String> {
    let text = std::str::from_utf8(bytes).map_err(|_| "not UTF-8".to_string())?;
    let (header, body) = text.split_once('\n').ok_or("no header line")?;
    let fields: Vec<&str> = header.split(' ').collect();
    let [magic, version, crc] = fields[..] else {
        return Err(format!("bad header line {header:?}"));
    };
    if magic != META_MAGIC {
        return Err(format!("not a powerfs meta file (starts with {magic:?})"));
    }
    if version != format!("v{META_VERSION}") {
        return Err(format!(
            "unknown version {version:?} (this build reads v{META_VERSION})"
        ));
    }
    let want = format!("crc32={:08x}", crc32fast::hash(body.as_bytes()));
    if crc != want {
        return Err(format!(
            "checksum mismatch ({crc}, contents give {want}): damaged"
        ));
    }
    Ok(body)
}

/// `powerfs.meta`: a header line `lockstep-powerfs v1 crc32=XXXXXXXX` (CRC32 of the rest, in
/// hex), then a JSON object: `next_ino` and `inodes`, each inode (by number) with `kind`
/// (`dir`/`file`), `perm`, `uid`, `gid` and, for directories, `entries` (name to inode number).
/// Only inodes the durable tree reaches are written; file contents are `data/<inode>`.
fn encode_meta(model: &Model) -> String {
    let mut inodes = Map::new();
    for ino in model.durably_reachable() {
        let inode = &model.inodes[&ino];
        let mut entry = json!({
            "kind": if inode.kind == Kind::Dir { "dir" } else { "file" },
            "perm": inode.perm,
            "uid": inode.uid,
            "gid": inode.gid,
        });
        if inode.kind == Kind::Dir {
            entry["entries"] = json!(inode.durable_entries);
        }
        inodes.insert(ino.to_string(), entry);
    }
    let body = json!({ "next_ino": model.next_ino, "inodes": inodes }).to_string();
    format!(
        "{META_MAGIC} v{META_VERSION} crc32={:08x}\n{body}",
        crc32fast::hash(body.as_bytes())
    )
}

/// Whether an entry of `kind` may take the place of `target` (removed, or replaced by a
/// rename): a file of a file, an empty directory of a directory.
fn check_replaceable(kind: Kind, target: &Inode) -> FsResult<()> {
    match (kind, target.kind) {
        (Kind::File, Kind::Dir) => Err(FsError::IsDir),
        (Kind::Dir, Kind::File) => Err(FsError::NotDir),
        (Kind::Dir, Kind::Dir) if !target.entries.is_empty() => Err(FsError::NotEmpty),
        _ => Ok(()),
    }
}

fn check_name(name: &str) -> FsResult<()> {
    if name.is_empty() || name.len() > NAME_MAX || name.contains('/') {
        Err(FsError::BadName)
    } else {
        Ok(())
    }
}

/// A power cut in `mode` of directory `dir`: its unsynced entries are forgotten (or, in subset
/// mode, kept half of the time, as if a journal had committed them).
fn cut_dir(dir: &mut Inode, mode: CutMode, rng: &mut SimRng, report: &mut CutReport) {
    if dir.entries == dir.durable_entries {
        return;
    }
    if mode == CutMode::Subset && rng.chance(500) {
        dir.durable_entries = dir.entries.clone();
    } else {
        dir.entries = dir.durable_entries.clone();
        report.dirs_reverted += 1;
    }
}

/// A power cut in `mode` of `file`, whose durable contents are at `path`: what survives of its
/// unsynced changes is written there, the rest is forgotten.
fn cut_file(
    file: &mut Inode,
    path: &Path,
    mode: CutMode,
    rng: &mut SimRng,
    report: &mut CutReport,
) -> Result<(), String> {
    if file.pending.is_empty() {
        return Ok(());
    }
    report.files_with_unsynced_changes += 1;
    let pending = std::mem::take(&mut file.pending);
    let written: u64 = pending.iter().map(written_bytes).sum();
    let kept = survivors(&pending, mode, rng);
    let kept_bytes: u64 = kept.iter().map(written_bytes).sum();
    report.bytes_kept += kept_bytes;
    report.bytes_forgotten += written - kept_bytes;
    if !kept.is_empty() {
        apply(path, &kept).map_err(|err| format!("{}: {err}", path.display()))?;
        file.durable_len = std::fs::metadata(path)
            .map_err(|err| format!("{}: {err}", path.display()))?
            .len();
    }
    file.len = file.durable_len;
    Ok(())
}

/// Applies `changes` in order to the data file at `path` (created when missing).
fn apply(path: &Path, changes: &[Pending]) -> io::Result<()> {
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(path)?;
    for change in changes {
        match change {
            Pending::Write { offset, data } => file.write_all_at(data, *offset)?,
            Pending::SetLen(len) => file.set_len(*len)?,
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const OWNER: (u32, u32) = (0, 0);

    fn fresh() -> (tempfile::TempDir, Model) {
        let dir = tempfile::tempdir().unwrap();
        let model = Model::load(dir.path()).unwrap();
        (dir, model)
    }

    fn file(model: &mut Model, parent: u64, name: &str) -> u64 {
        model
            .create(parent, name, Kind::File, 0o644, OWNER)
            .unwrap()
            .ino
    }

    fn contents(model: &Model, ino: u64) -> Vec<u8> {
        model.read(ino, 0, u32::MAX).unwrap()
    }

    fn cut_and_power_on(model: &mut Model, mode: CutMode, seed: u64) -> CutReport {
        let report = model.cut(mode, seed).unwrap();
        assert_eq!(model.getattr(ROOT).unwrap_err(), FsError::PoweredOff);
        model.power_on();
        report
    }

    #[test]
    fn an_unsynced_write_is_gone_after_a_cut() {
        let (_dir, mut model) = fresh();
        let ino = file(&mut model, ROOT, "f");
        model.sync_dir(ROOT).unwrap();
        model.write(ino, 0, b"hello").unwrap();
        assert_eq!(contents(&model, ino), b"hello");
        let report = cut_and_power_on(&mut model, CutMode::Forget, 1);
        assert_eq!(report.bytes_forgotten, 5);
        assert_eq!(model.lookup(ROOT, "f").unwrap().size, 0);
        assert!(contents(&model, ino).is_empty());
    }

    #[test]
    fn a_synced_write_survives_a_cut_and_a_reopen() {
        let (dir, mut model) = fresh();
        let ino = file(&mut model, ROOT, "f");
        model.write(ino, 0, b"hello").unwrap();
        model.sync_file(ino).unwrap();
        model.sync_dir(ROOT).unwrap();
        model.write(ino, 5, b" world").unwrap();
        cut_and_power_on(&mut model, CutMode::Forget, 1);
        assert_eq!(contents(&model, ino), b"hello");
        drop(model);
        let model = Model::load(dir.path()).unwrap();
        let ino = model.lookup(ROOT, "f").unwrap().ino;
        assert_eq!(contents(&model, ino), b"hello");
    }

    #[test]
    fn a_synced_file_without_a_synced_directory_loses_its_name() {
        let (dir, mut model) = fresh();
        let ino = file(&mut model, ROOT, "f");
        model.write(ino, 0, b"data").unwrap();
        model.sync_file(ino).unwrap();
        cut_and_power_on(&mut model, CutMode::Forget, 1);
        assert_eq!(model.lookup(ROOT, "f").unwrap_err(), FsError::NotFound);
        assert_eq!(
            std::fs::read_dir(dir.path().join("data")).unwrap().count(),
            0
        );
    }

    #[test]
    fn a_rename_without_a_directory_sync_is_undone_by_a_cut() {
        let (_dir, mut model) = fresh();
        let old = file(&mut model, ROOT, "state");
        model.write(old, 0, b"old").unwrap();
        model.sync_file(old).unwrap();
        let new = file(&mut model, ROOT, "state.tmp");
        model.write(new, 0, b"new").unwrap();
        model.sync_file(new).unwrap();
        model.sync_dir(ROOT).unwrap();
        model
            .rename((ROOT, "state.tmp"), (ROOT, "state"), false)
            .unwrap();
        assert_eq!(
            contents(&model, model.lookup(ROOT, "state").unwrap().ino),
            b"new"
        );
        cut_and_power_on(&mut model, CutMode::Forget, 1);
        assert_eq!(
            contents(&model, model.lookup(ROOT, "state").unwrap().ino),
            b"old"
        );
        assert_eq!(
            contents(&model, model.lookup(ROOT, "state.tmp").unwrap().ino),
            b"new"
        );
        // The same rename with the directory synced stays.
        model
            .rename((ROOT, "state.tmp"), (ROOT, "state"), false)
            .unwrap();
        model.sync_dir(ROOT).unwrap();
        cut_and_power_on(&mut model, CutMode::Forget, 1);
        assert_eq!(
            contents(&model, model.lookup(ROOT, "state").unwrap().ino),
            b"new"
        );
        assert_eq!(
            model.lookup(ROOT, "state.tmp").unwrap_err(),
            FsError::NotFound
        );
    }

    #[test]
    fn a_torn_cut_keeps_a_prefix_of_the_writes_cut_at_a_sector_boundary() {
        for seed in 0..64 {
            let (_dir, mut model) = fresh();
            let ino = file(&mut model, ROOT, "log");
            model.sync_dir(ROOT).unwrap();
            // Two writes that do not merge: the first at 4096, the second at 0.
            model.write(ino, 4096, &[2u8; 3000]).unwrap();
            model.write(ino, 0, &[1u8; 3000]).unwrap();
            cut_and_power_on(&mut model, CutMode::Torn, seed);
            let bytes = contents(&model, ino);
            let second_kept = bytes.len() > 4096;
            let first: Vec<u8> = bytes.iter().take(3000).copied().collect();
            let kept_first = first.iter().take_while(|&&b| b == 1).count();
            assert!(
                kept_first == 3000 || kept_first as u64 % SECTOR == 0,
                "seed {seed}: torn inside a sector"
            );
            if kept_first > 0 {
                assert!(
                    second_kept,
                    "seed {seed}: a later write kept before an earlier one"
                );
            }
            if second_kept {
                let tail = &bytes[4096..];
                assert!(
                    tail.len() == 3000 || tail.len() as u64 % SECTOR == 0,
                    "seed {seed}"
                );
                assert!(tail.iter().all(|&b| b == 2), "seed {seed}");
            }
        }
    }

    #[test]
    fn a_subset_cut_keeps_whole_sectors_only() {
        let (_dir, mut model) = fresh();
        let ino = file(&mut model, ROOT, "f");
        model.sync_dir(ROOT).unwrap();
        model.write(ino, 0, &[7u8; 8192]).unwrap();
        let report = cut_and_power_on(&mut model, CutMode::Subset, 9);
        assert_eq!(report.bytes_kept + report.bytes_forgotten, 8192);
        let bytes = contents(&model, ino);
        for sector in bytes.chunks(SECTOR as usize) {
            assert!(
                sector.iter().all(|&b| b == 7) || sector.iter().all(|&b| b == 0),
                "a sector was kept in part"
            );
        }
    }

    #[test]
    fn reads_see_writes_and_truncations_in_order() {
        let (_dir, mut model) = fresh();
        let ino = file(&mut model, ROOT, "f");
        model.sync_dir(ROOT).unwrap();
        model.write(ino, 0, b"abcdefgh").unwrap();
        model.sync_file(ino).unwrap();
        model.setattr(ino, None, Some(3)).unwrap();
        model.write(ino, 5, b"XY").unwrap();
        assert_eq!(contents(&model, ino), b"abc\0\0XY");
        assert_eq!(model.read(ino, 4, 2).unwrap(), b"\0X");
        model.sync_file(ino).unwrap();
        cut_and_power_on(&mut model, CutMode::Forget, 3);
        assert_eq!(contents(&model, ino), b"abc\0\0XY");
    }

    #[test]
    fn directories_nest_and_refuse_what_posix_refuses() {
        let (_dir, mut model) = fresh();
        let sub = model
            .create(ROOT, "d", Kind::Dir, 0o755, OWNER)
            .unwrap()
            .ino;
        let ino = file(&mut model, sub, "f");
        assert_eq!(model.remove(ROOT, "d", Kind::Dir), Err(FsError::NotEmpty));
        assert_eq!(model.remove(ROOT, "d", Kind::File), Err(FsError::IsDir));
        assert_eq!(
            model
                .create(sub, "f", Kind::File, 0o644, OWNER)
                .unwrap_err(),
            FsError::Exists
        );
        assert_eq!(
            model
                .create(sub, "a/b", Kind::File, 0o644, OWNER)
                .unwrap_err(),
            FsError::BadName
        );
        model.write(ino, 0, b"x").unwrap();
        model.sync_file(ino).unwrap();
        model.sync_dir(sub).unwrap();
        // The subdirectory's own name was never synced: the cut takes it and its file.
        cut_and_power_on(&mut model, CutMode::Forget, 1);
        assert_eq!(model.lookup(ROOT, "d").unwrap_err(), FsError::NotFound);
        assert!(model.readdir(ROOT).unwrap().is_empty());
    }

    #[test]
    fn an_unlinked_open_file_stays_readable_until_released() {
        let (_dir, mut model) = fresh();
        let ino = file(&mut model, ROOT, "f");
        model.open(ino).unwrap();
        model.write(ino, 0, b"still here").unwrap();
        model.remove(ROOT, "f", Kind::File).unwrap();
        assert_eq!(contents(&model, ino), b"still here");
        model.release(ino);
        assert_eq!(model.read(ino, 0, 10).unwrap_err(), FsError::NotFound);
    }

    #[test]
    fn a_meta_file_naming_impossible_inodes_is_refused_with_the_reason() {
        let (dir, model) = fresh();
        drop(model);
        let body = r#"{"next_ino":2,"inodes":{"1":{"kind":"dir","perm":493,"uid":0,"gid":0,"entries":{"f":7}},"7":{"kind":"file","perm":420,"uid":0,"gid":0}}}"#;
        let meta = format!(
            "{META_MAGIC} v{META_VERSION} crc32={:08x}\n{body}",
            crc32fast::hash(body.as_bytes())
        );
        std::fs::write(dir.path().join("powerfs.meta"), meta).unwrap();
        let err = Model::load(dir.path()).err().unwrap();
        assert!(err.contains("bad inode number \"7\" (next_ino 2)"), "{err}");
    }

    #[test]
    fn a_damaged_meta_file_is_refused_with_the_reason() {
        let (dir, mut model) = fresh();
        file(&mut model, ROOT, "f");
        model.sync_dir(ROOT).unwrap();
        drop(model);
        let path = dir.path().join("powerfs.meta");
        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 3;
        bytes[last] ^= 1;
        std::fs::write(&path, bytes).unwrap();
        let err = Model::load(dir.path()).err().unwrap();
        assert!(err.contains("checksum mismatch"), "{err}");
    }
}
