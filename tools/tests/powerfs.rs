//! The power-cut filesystem (`lockstep powerfs`) through a real FUSE mount: what was never
//! synced is gone after a cut, what was synced stays, a rename needs its directory synced,
//! writes through a shared mapping count once `msync`ed, and nothing gets through while the
//! power is off. Needs /dev/fuse and root: without them these tests fail (CI has both).

mod common;

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use common::BIN;

/// A `lockstep powerfs serve` process and its mount; stopped (and unmounted) when dropped.
struct Disk {
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl Disk {
    fn start() -> Disk {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::create_dir(dir.path().join("mnt")).unwrap();
        let mut disk = Disk { dir, child: None };
        disk.serve();
        disk
    }

    fn backing(&self) -> PathBuf {
        self.dir.path().join("backing")
    }

    fn mnt(&self) -> PathBuf {
        self.dir.path().join("mnt")
    }

    fn path(&self, name: &str) -> PathBuf {
        self.mnt().join(name)
    }

    fn socket(&self) -> PathBuf {
        self.backing().join("control.sock")
    }

    /// Starts the filesystem process and waits for its ready line.
    fn serve(&mut self) {
        let mut child = Command::new(BIN)
            .args(["powerfs", "serve", "--backing"])
            .arg(self.backing())
            .arg("--mount")
            .arg(self.mnt())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn lockstep powerfs serve");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert!(
            line.starts_with("powerfs ready"),
            "lockstep powerfs serve did not start (needs /dev/fuse and root): {line:?}"
        );
        self.child = Some(child);
    }

    /// Stops the filesystem process (SIGTERM: it unmounts).
    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: kill(2) on the pid of a child this test spawned and has not reaped.
            unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
            child.wait().unwrap();
        }
    }

    fn control(&self, command: &[&str]) -> String {
        let output = Command::new(BIN)
            .arg("powerfs")
            .args(command)
            .arg("--control")
            .arg(self.socket())
            .output()
            .expect("run lockstep powerfs");
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        assert!(
            output.status.success(),
            "lockstep powerfs {command:?}: {stdout}{}",
            String::from_utf8_lossy(&output.stderr)
        );
        stdout
    }

    fn cut(&self, mode: &str) -> String {
        self.control(&["cut", "--mode", mode, "--seed", "5"])
    }

    fn power_on(&self) {
        self.control(&["on"]);
    }

    fn cut_and_power_on(&self) -> String {
        let report = self.cut("forget");
        self.power_on();
        report
    }
}

impl Drop for Disk {
    fn drop(&mut self) {
        self.stop();
    }
}

fn sync_dir(path: &Path) {
    File::open(path).unwrap().sync_all().unwrap();
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|err| panic!("read {}: {err}", path.display()))
}

#[test]
fn an_unsynced_write_is_gone_after_a_power_cut() {
    let disk = Disk::start();
    let mut file = File::create(disk.path("f")).unwrap();
    sync_dir(&disk.mnt());
    file.write_all(b"never synced").unwrap();
    assert_eq!(read(&disk.path("f")), b"never synced");
    let report = disk.cut_and_power_on();
    assert!(report.contains("\"bytes_forgotten\":12"), "{report}");
    assert_eq!(read(&disk.path("f")), b"");
}

#[test]
fn a_synced_write_survives_a_power_cut_and_a_restart_of_the_filesystem() {
    let mut disk = Disk::start();
    let mut file = File::create(disk.path("f")).unwrap();
    file.write_all(b"synced").unwrap();
    file.sync_data().unwrap();
    sync_dir(&disk.mnt());
    file.write_all(b" and then not").unwrap();
    drop(file);
    disk.cut_and_power_on();
    assert_eq!(read(&disk.path("f")), b"synced");
    disk.stop();
    disk.serve();
    assert_eq!(read(&disk.path("f")), b"synced");
}

#[test]
fn a_rename_without_a_directory_sync_is_undone_by_a_power_cut() {
    let disk = Disk::start();
    for (name, contents) in [("state", "old"), ("state.tmp", "new")] {
        let mut file = File::create(disk.path(name)).unwrap();
        file.write_all(contents.as_bytes()).unwrap();
        file.sync_all().unwrap();
    }
    sync_dir(&disk.mnt());
    std::fs::rename(disk.path("state.tmp"), disk.path("state")).unwrap();
    assert_eq!(read(&disk.path("state")), b"new");
    disk.cut_and_power_on();
    assert_eq!(read(&disk.path("state")), b"old", "the old name is back");
    assert_eq!(read(&disk.path("state.tmp")), b"new");

    std::fs::rename(disk.path("state.tmp"), disk.path("state")).unwrap();
    sync_dir(&disk.mnt());
    disk.cut_and_power_on();
    assert_eq!(read(&disk.path("state")), b"new");
    assert!(!disk.path("state.tmp").exists());
}

#[test]
fn writes_through_a_shared_mapping_count_once_msynced() {
    let disk = Disk::start();
    let path = disk.path("mapped");
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)
        .unwrap();
    file.set_len(8192).unwrap();
    file.sync_all().unwrap();
    sync_dir(&disk.mnt());
    let map = |bytes: &[u8], offset: usize, msync: bool| {
        // SAFETY: a shared mapping of the whole 8192-byte file, unmapped below.
        let addr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                8192,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                std::os::fd::AsRawFd::as_raw_fd(&file),
                0,
            )
        };
        assert_ne!(
            addr,
            libc::MAP_FAILED,
            "{}",
            std::io::Error::last_os_error()
        );
        // SAFETY: `offset + bytes.len()` lies within the 8192 mapped bytes.
        unsafe {
            std::ptr::copy_nonoverlapping(
                bytes.as_ptr(),
                addr.cast::<u8>().add(offset),
                bytes.len(),
            );
            if msync {
                assert_eq!(libc::msync(addr, 8192, libc::MS_SYNC), 0);
            }
            libc::munmap(addr, 8192);
        }
    };
    map(b"msynced", 0, true);
    map(b"only mapped", 4096, false);
    drop(file);
    disk.cut_and_power_on();
    let bytes = read(&path);
    assert_eq!(bytes.len(), 8192);
    assert_eq!(&bytes[..7], b"msynced");
    assert!(
        bytes[4096..].iter().all(|&b| b == 0),
        "an unsynced mapped write survived"
    );
}

#[test]
fn nothing_gets_through_while_the_power_is_off() {
    let disk = Disk::start();
    let file = File::create(disk.path("f")).unwrap();
    file.sync_all().unwrap();
    sync_dir(&disk.mnt());
    disk.cut("forget");
    let write = file.write_all_at(b"x", 0).unwrap_err();
    assert_eq!(write.raw_os_error(), Some(libc::EIO), "{write}");
    let sync = file.sync_all().unwrap_err();
    assert_eq!(sync.raw_os_error(), Some(libc::EIO), "{sync}");
    let open = File::open(disk.path("f")).unwrap_err();
    assert_eq!(open.raw_os_error(), Some(libc::EIO), "{open}");
    drop(file);
    disk.power_on();
    let mut text = String::new();
    File::open(disk.path("f"))
        .unwrap()
        .read_to_string(&mut text)
        .unwrap();
    assert_eq!(text, "");
    let status = disk.control(&["status"]);
    assert!(
        status.contains("\"powered\":true") && status.contains("\"cuts\":1"),
        "{status}"
    );
}

#[test]
fn a_torn_cut_keeps_whole_sectors_of_the_writes_in_order() {
    let disk = Disk::start();
    let mut file = File::create(disk.path("log")).unwrap();
    sync_dir(&disk.mnt());
    let record = vec![0xabu8; 4000];
    file.write_all(&record).unwrap();
    file.write_all(&record).unwrap();
    let report = disk.cut("torn");
    disk.power_on();
    let bytes = read(&disk.path("log"));
    assert!(
        bytes.len() == 8000 || bytes.len() % 512 == 0,
        "torn inside a sector: {} bytes ({report})",
        bytes.len()
    );
    assert!(bytes.iter().all(|&b| b == 0xab));
}

#[test]
fn bad_commands_are_refused_with_the_reason() {
    let disk = Disk::start();
    let output = Command::new(BIN)
        .args(["powerfs", "cut", "--mode", "gentle", "--control"])
        .arg(disk.socket())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("unknown cut mode \"gentle\""), "{stderr}");
    let output = Command::new(BIN)
        .args(["powerfs", "on", "--control"])
        .arg(disk.dir.path().join("nowhere.sock"))
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("nowhere.sock"), "{stderr}");
}
