//! A power-cut filesystem: a FUSE filesystem over a backing directory that keeps every change
//! not yet made durable (by `fsync`/`fdatasync`/`msync` of the file, or `fsync` of the directory
//! for creates, renames and deletes) in memory, and on command cuts the power: the unsynced
//! changes are forgotten ([`CutMode`]: all of them, a torn prefix, or a random subset of
//! sectors), every operation fails with EIO, and the disk stays dark until it is powered on,
//! which mounts it anew so the kernel's page cache holds nothing from before the cut.
//!
//! Used in-process by `lockstep chaos --nemesis power` ([`PowerDisk`]) and standalone by
//! `lockstep powerfs` (a control socket, [`control`]). See docs/CHAOS.md, "Power cuts".

pub mod control;
mod cut;
mod fuse;
pub mod model;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use fuser::{BackgroundSession, Config, MountOption};

use model::Model;
pub use model::{CutMode, CutReport, Stats};

/// One disk: a backing directory mounted at a mount point.
pub struct PowerDisk {
    model: Arc<Mutex<Model>>,
    mountpoint: PathBuf,
    session: Option<Mounted>,
}

/// One mount of the disk.
struct Mounted {
    session: BackgroundSession,
    /// Set when the mount is retired: its requests fail from then on.
    retired: Arc<AtomicBool>,
    /// The FUSE connection's number (the minor of the mount's device), for `fusectl`.
    connection: u32,
}

impl PowerDisk {
    /// Mounts the filesystem kept in `backing` (created when missing) at `mountpoint` (an
    /// existing directory). Needs /dev/fuse and root (or a FUSE-permitted user with
    /// `fusermount3`). The error says what failed.
    pub fn mount(backing: &Path, mountpoint: &Path) -> Result<PowerDisk, String> {
        let model = Model::load(backing)?;
        let mut disk = PowerDisk {
            model: Arc::new(Mutex::new(model)),
            mountpoint: mountpoint.to_path_buf(),
            session: None,
        };
        disk.attach()?;
        Ok(disk)
    }

    fn attach(&mut self) -> Result<(), String> {
        assert!(self.session.is_none(), "the disk is mounted already");
        let retired = Arc::new(AtomicBool::new(false));
        let adapter = fuse::Adapter::new(Arc::clone(&self.model), Arc::clone(&retired));
        let mut config = Config::default();
        config.mount_options = vec![
            MountOption::FSName("lockstep-powerfs".into()),
            MountOption::Subtype("powerfs".into()),
        ];
        let session = fuser::spawn_mount(adapter, &self.mountpoint, &config).map_err(|err| {
            format!(
                "mount a FUSE filesystem at {} (needs /dev/fuse and root): {err}",
                self.mountpoint.display()
            )
        })?;
        // Asked now, while the filesystem answers: a dark one cannot be asked.
        let dev = std::fs::metadata(&self.mountpoint)
            .map_err(|err| format!("stat the new mount {}: {err}", self.mountpoint.display()))?;
        self.session = Some(Mounted {
            session,
            retired,
            connection: libc::minor(std::os::unix::fs::MetadataExt::dev(&dev)),
        });
        Ok(())
    }

    /// Retires the current mount (its requests fail from now on), aborts its FUSE connection
    /// and unmounts it; a mount still in use is detached. Aborting ends the connection even
    /// where a copy of the mount lives on in another mount namespace, which would otherwise keep
    /// it (and this call, waiting for the session to end) alive.
    pub fn unmount(&mut self) {
        let Some(mounted) = self.session.take() else {
            return;
        };
        mounted.retired.store(true, Ordering::Release);
        if let Err(err) = abort_connection(mounted.connection) {
            tracing::warn!(mount = %self.mountpoint.display(), "cannot abort the FUSE connection: {err}");
        }
        if mounted.session.umount_and_join().is_err() {
            let path = std::ffi::CString::new(self.mountpoint.as_os_str().as_encoded_bytes())
                .expect("a path holds no NUL");
            // SAFETY: a plain system call on a NUL-terminated path that outlives it.
            unsafe { libc::umount2(path.as_ptr(), libc::MNT_DETACH) };
        }
    }

    fn model(&self) -> std::sync::MutexGuard<'_, Model> {
        self.model
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Cuts the power: unsynced changes are lost as `mode` says (its random choices drawn from
    /// `seed`) and every operation fails with EIO until [`PowerDisk::power_on`]. Processes
    /// using the disk should be killed before the power comes back.
    pub fn cut(&self, mode: CutMode, seed: u64) -> Result<CutReport, String> {
        self.model().cut(mode, seed)
    }

    /// Powers the disk on: unmounts the dark mount (whatever the kernel still writes back from
    /// before the cut is refused) and mounts the durable state afresh.
    pub fn power_on(&mut self) -> Result<(), String> {
        self.unmount();
        self.model().power_on();
        self.attach()
    }

    /// Whether the power is on.
    pub fn powered(&self) -> bool {
        self.model().powered()
    }

    /// Counters of writes, syncs and cuts.
    pub fn stats(&self) -> Stats {
        self.model().stats()
    }
}

impl Drop for PowerDisk {
    fn drop(&mut self) {
        self.unmount();
    }
}

/// Where the kernel lists FUSE connections (the `fusectl` filesystem).
const FUSE_CONNECTIONS: &std::ffi::CStr = c"/sys/fs/fuse/connections";

/// Aborts FUSE connection number `connection` through `fusectl` (mounted first when it is
/// not): every request in flight or to come fails, and the session serving it ends.
fn abort_connection(connection: u32) -> std::io::Result<()> {
    let connections = Path::new(FUSE_CONNECTIONS.to_str().expect("an ASCII path"));
    let connection = connections.join(connection.to_string());
    if !fusectl_mounted()? {
        // SAFETY: mount(2) with NUL-terminated strings that outlive the call and no data.
        let rc = unsafe {
            libc::mount(
                c"fusectl".as_ptr(),
                FUSE_CONNECTIONS.as_ptr(),
                c"fusectl".as_ptr(),
                0,
                std::ptr::null(),
            )
        };
        if rc != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    std::fs::write(connection.join("abort"), "1")
}

/// Whether `fusectl` is mounted at [`FUSE_CONNECTIONS`].
fn fusectl_mounted() -> std::io::Result<bool> {
    /// `FUSECTL_SUPER_MAGIC` of the kernel.
    const FUSECTL_MAGIC: libc::c_long = 0x6573_5543;
    // SAFETY: an all-zero statfs is a valid value for statfs(2) to fill.
    let mut stat: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: a NUL-terminated path and a struct the call fills.
    if unsafe { libc::statfs(FUSE_CONNECTIONS.as_ptr(), &mut stat) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(stat.f_type == FUSECTL_MAGIC)
}
