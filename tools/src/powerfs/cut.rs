//! What a power cut keeps of the changes that were never synced: the cut modes, and the
//! choice of surviving writes and size changes for one file. The model applies the choice
//! ([`super::model::Model::cut`]).

use std::fmt;

use lockstep::sim::SimRng;

/// Granularity of torn and partial writes at a power cut: a sector is written whole or not at
/// all, as on real disks.
pub const SECTOR: u64 = 512;

/// What a power cut keeps of the writes and directory changes that were never synced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CutMode {
    /// Nothing: every unsynced write and directory change is forgotten.
    Forget,
    /// Each file keeps a random prefix of its unsynced writes, in the order they were made; the
    /// last one kept is torn at a random sector boundary. Directory changes are forgotten.
    Torn,
    /// Each unsynced sector written, size change, and each directory's unsynced entries are
    /// kept or forgotten at random, independently (a disk that reorders its writes, a journal
    /// that committed some directories).
    Subset,
}

impl CutMode {
    /// Every mode.
    pub const ALL: [CutMode; 3] = [CutMode::Forget, CutMode::Torn, CutMode::Subset];

    /// The name used on the command line and the control socket.
    pub fn name(self) -> &'static str {
        match self {
            CutMode::Forget => "forget",
            CutMode::Torn => "torn",
            CutMode::Subset => "subset",
        }
    }

    /// Parses [`CutMode::name`].
    pub fn parse(text: &str) -> Result<CutMode, String> {
        CutMode::ALL
            .into_iter()
            .find(|mode| mode.name() == text)
            .ok_or_else(|| format!("unknown cut mode {text:?} (forget, torn, subset)"))
    }
}

impl fmt::Display for CutMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A change to a file not yet made durable.
#[derive(Clone, Debug)]
pub(super) enum Pending {
    /// `data` written at `offset`.
    Write { offset: u64, data: Vec<u8> },
    /// The size set.
    SetLen(u64),
}

/// What one power cut did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CutReport {
    /// Files that had unsynced changes.
    pub files_with_unsynced_changes: u64,
    /// Unsynced bytes written that were forgotten.
    pub bytes_forgotten: u64,
    /// Unsynced bytes written that were kept (torn and subset modes).
    pub bytes_kept: u64,
    /// Directories whose unsynced entries were forgotten.
    pub dirs_reverted: u64,
}

/// Bytes written by `change`.
pub(super) fn written_bytes(change: &Pending) -> u64 {
    match change {
        Pending::Write { data, .. } => data.len() as u64,
        Pending::SetLen(_) => 0,
    }
}

/// What a power cut in `mode` keeps of a file's unsynced changes, in order.
pub(super) fn survivors(pending: &[Pending], mode: CutMode, rng: &mut SimRng) -> Vec<Pending> {
    match mode {
        CutMode::Forget => Vec::new(),
        CutMode::Torn => {
            let whole = rng.below(pending.len() as u64 + 1) as usize;
            let mut kept = pending[..whole].to_vec();
            if let Some(Pending::Write { offset, data }) = pending.get(whole) {
                // Sector boundaries strictly inside the write; a write within one sector is
                // atomic and was lost whole.
                let first = (offset / SECTOR + 1) * SECTOR;
                let end = offset + data.len() as u64;
                if first < end {
                    let boundaries = (end - 1 - first) / SECTOR + 1;
                    let cut = first + rng.below(boundaries) * SECTOR;
                    kept.push(Pending::Write {
                        offset: *offset,
                        data: data[..(cut - offset) as usize].to_vec(),
                    });
                }
            }
            kept
        }
        CutMode::Subset => {
            let mut kept = Vec::new();
            for change in pending {
                match change {
                    Pending::SetLen(_) => {
                        if rng.chance(500) {
                            kept.push(change.clone());
                        }
                    }
                    Pending::Write { offset, data } => {
                        let end = offset + data.len() as u64;
                        let mut from = *offset;
                        while from < end {
                            let to = ((from / SECTOR + 1) * SECTOR).min(end);
                            if rng.chance(500) {
                                kept.push(Pending::Write {
                                    offset: from,
                                    data: data[(from - offset) as usize..(to - offset) as usize]
                                        .to_vec(),
                                });
                            }
                            from = to;
                        }
                    }
                }
            }
            kept
        }
    }
}
