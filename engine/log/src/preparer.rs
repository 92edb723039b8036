//! The spare preparer: a small background thread that keeps zero-filled, mapped segments ready,
//! so the storage thread never zero-fills, creates or maps a file on its hot path.
//!
//! The thread keeps `spares` spares ready, each pre-faulted (see [`prefault`]) so appends into it
//! take no page faults. Recycled segments (handed back after compaction) are pre-faulted again
//! and count as spares, so in a steady state nothing new is ever zero-filled. A failure to create a
//! spare (typically ENOSPC) is kept and handed to the next taker as an error; the next request
//! after that tries again.

use std::collections::VecDeque;
use std::fs::File;
use std::io;
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;

use memmap2::MmapMut;

use crate::segment::{
    create_zeroed, map_segment, prefault, rezero, spare_name, Prefault, SEGMENT_HEADER_BYTES,
};

/// A ready spare segment file, mapped.
pub(crate) struct Spare {
    pub path: PathBuf,
    pub file: Arc<File>,
    pub map: MmapMut,
}

struct State {
    ready: VecDeque<Spare>,
    /// Spares handed back or found on open, not yet pre-faulted.
    unfaulted: VecDeque<Spare>,
    failure: Option<io::Error>,
    shutdown: bool,
    next_id: u64,
}

struct Shared {
    state: Mutex<State>,
    changed: Condvar,
    dir: PathBuf,
    segment_bytes: u64,
    spares: usize,
    prefault: Prefault,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().expect("preparer state poisoned")
    }
}

/// Handle on the preparer thread; dropping it stops the thread.
pub(crate) struct Preparer {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl Preparer {
    /// Starts the thread with the spares found on open; new ones get ids from `next_id`.
    /// `prefault` says how spares are readied.
    pub fn start(
        dir: PathBuf,
        segment_bytes: u64,
        spares: usize,
        existing: Vec<Spare>,
        next_id: u64,
        prefault: Prefault,
    ) -> Preparer {
        assert!(spares >= 1, "at least one spare must be kept ready");
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                ready: VecDeque::new(),
                unfaulted: existing.into(),
                failure: None,
                shutdown: false,
                next_id,
            }),
            changed: Condvar::new(),
            dir,
            segment_bytes,
            spares,
            prefault,
        });
        let worker = shared.clone();
        let thread = std::thread::Builder::new()
            .name("lockstep-log-prep".to_string())
            .spawn(move || prepare_loop(&worker))
            .expect("spawn the segment preparer thread");
        Preparer {
            shared,
            thread: Some(thread),
        }
    }

    /// Takes a ready spare, waiting for one if none is ready yet.
    pub fn take(&self) -> io::Result<Spare> {
        let mut state = self.shared.lock();
        loop {
            if let Some(spare) = state.ready.pop_front() {
                self.shared.changed.notify_all();
                return Ok(spare);
            }
            if let Some(err) = state.failure.take() {
                self.shared.changed.notify_all();
                return Err(err);
            }
            state = self
                .shared
                .changed
                .wait(state)
                .expect("preparer state poisoned");
        }
    }

    /// Blocks until `spares` spares are ready or preparing one failed; returns how many are
    /// ready.
    pub fn wait_all_ready(&self) -> usize {
        let mut state = self.shared.lock();
        while state.ready.len() < self.shared.spares && state.failure.is_none() {
            state = self
                .shared
                .changed
                .wait(state)
                .expect("preparer state poisoned");
        }
        state.ready.len()
    }

    /// A fresh id for a spare name (used when recycling a segment).
    pub fn allocate_id(&self) -> u64 {
        let mut state = self.shared.lock();
        state.next_id += 1;
        state.next_id - 1
    }

    /// Whether a recycled segment should be kept as a spare (rather than deleted). One more
    /// than `spares` is kept: the preparer replaces a taken spare at once, before the segment
    /// that compaction will free is free, and deleting that one would make every activation
    /// cost a zero-fill. With one extra, the steady state reuses segments only.
    pub fn wants_spare(&self) -> bool {
        let state = self.shared.lock();
        state.ready.len() + state.unfaulted.len() <= self.shared.spares
    }

    /// Hands back a recycled segment, already renamed to a spare name.
    pub fn give_back(&self, spare: Spare) {
        self.shared.lock().unfaulted.push_back(spare);
        self.shared.changed.notify_all();
    }
}

impl Drop for Preparer {
    fn drop(&mut self) {
        self.shared.lock().shutdown = true;
        self.shared.changed.notify_all();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn prepare_loop(shared: &Shared) {
    loop {
        let id = {
            let mut state = shared.lock();
            loop {
                if state.shutdown {
                    return;
                }
                if let Some(spare) = state.unfaulted.pop_front() {
                    drop(state);
                    refresh(shared, &spare);
                    state = shared.lock();
                    state.ready.push_back(spare);
                    shared.changed.notify_all();
                    continue;
                }
                let spares = state.ready.len() + state.unfaulted.len();
                if spares < shared.spares && state.failure.is_none() {
                    break;
                }
                state = shared.changed.wait(state).expect("preparer state poisoned");
            }
            state.next_id += 1;
            state.next_id - 1
        };
        let outcome = prepare_one(shared, id);
        let mut state = shared.lock();
        match outcome {
            Ok(spare) => state.ready.push_back(spare),
            Err(err) => {
                tracing::warn!(error = %err, dir = %shared.dir.display(), "cannot prepare a log segment");
                state.failure = Some(err);
            }
        }
        shared.changed.notify_all();
    }
}

/// Readies a recycled (or found) spare: re-zeroed through the page cache, then pre-faulted.
fn refresh(shared: &Shared, spare: &Spare) {
    if shared.prefault == Prefault::Write {
        // Best effort: if this fails, appends into the spare merely take page faults.
        let _ = rezero(
            &spare.file,
            SEGMENT_HEADER_BYTES as u64,
            spare.map.len() as u64,
        );
    }
    prefault(&spare.map, SEGMENT_HEADER_BYTES, shared.prefault);
}

fn prepare_one(shared: &Shared, id: u64) -> io::Result<Spare> {
    let temporary = shared.dir.join(format!("spare-{id}.tmp"));
    let file = match create_zeroed(&temporary, shared.segment_bytes) {
        Ok(file) => file,
        Err(err) => {
            let _ = std::fs::remove_file(&temporary);
            return Err(err);
        }
    };
    let path = shared.dir.join(spare_name(id));
    std::fs::rename(&temporary, &path)?;
    let map = map_segment(&file)?;
    prefault(&map, SEGMENT_HEADER_BYTES, shared.prefault);
    Ok(Spare {
        path,
        file: Arc::new(file),
        map,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recycled_spares_are_handed_out_again() {
        let dir = tempfile::tempdir().unwrap();
        let preparer = Preparer::start(
            dir.path().to_path_buf(),
            8192,
            1,
            Vec::new(),
            0,
            Prefault::Write,
        );
        let fresh = preparer.take().unwrap();
        assert!(fresh.map[SEGMENT_HEADER_BYTES..].iter().all(|&b| b == 0));
        let recycled_path = dir.path().join(spare_name(77));
        std::fs::rename(&fresh.path, &recycled_path).unwrap();
        let mut map = fresh.map;
        map[100] = 9; // a stale byte, cleared when the spare is readied again
        preparer.give_back(Spare {
            path: recycled_path.clone(),
            file: fresh.file,
            map,
        });
        let taken = [preparer.take().unwrap(), preparer.take().unwrap()];
        let again = taken
            .iter()
            .find(|spare| spare.path == recycled_path)
            .expect("the recycled spare comes back");
        assert_eq!(again.map[100], 0);
    }
}
