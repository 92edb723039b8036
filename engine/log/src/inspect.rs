//! Read-only inspection of a log directory (for `lockstep log verify` and `dump`): runs the same
//! recovery scan as [`Log::open`](crate::Log::open) without changing any file.

use std::fs::File;
use std::path::{Path, PathBuf};

use memmap2::Mmap;

use crate::error::LogError;
use crate::hard_state::{read_file, HardState, HARD_STATE_FILE};
use crate::head;
use crate::record::RECORD_HEADER_BYTES;
use crate::recovery::{recover_files, RecordSpan, Recovered};
use crate::repair::DamageReport;
use crate::segment::{check_segment_len, keeps_head, parse_live_name, parse_spare_name};

/// A live segment file as found.
pub struct InspectedSegment {
    /// Its path.
    pub path: PathBuf,
    /// Seq of its first record (from the name).
    pub first_seq: u64,
    map: Mmap,
}

impl InspectedSegment {
    /// Bytes in the file.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether the file is empty.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

/// What a directory holds.
pub struct Inspection {
    /// Live segments in order.
    pub segments: Vec<InspectedSegment>,
    /// Spare files (ready or being created).
    pub spares: usize,
    /// The scan's result.
    pub recovered: Recovered,
    /// The hard state, when the file exists.
    pub hard_state: Option<HardState>,
    /// Damage before the tail, when scanned by [`inspect_for_repair`] (`recovered` is then the
    /// log as a repair would cut it).
    pub damage: Option<DamageReport>,
}

/// One batch record as listed by [`Inspection::batches`].
pub struct ListedBatch<'a> {
    /// Where and what.
    pub span: RecordSpan,
    /// The segment file.
    pub path: &'a Path,
    /// The stored payload (all entries of the record, also those voided by a truncation).
    pub payload: &'a [u8],
}

/// Scans `dir` read-only. Corruption before the tail is returned as [`LogError::Corrupt`].
pub fn inspect(dir: &Path) -> Result<Inspection, LogError> {
    inspect_with(dir, false)
}

/// Scans `dir` read-only as [`Log::open_for_repair`](crate::Log::open_for_repair) would:
/// damage before the tail is reported in [`Inspection::damage`] (with the index range it
/// loses) instead of failing. Damaged segment headers still fail.
pub fn inspect_for_repair(dir: &Path) -> Result<Inspection, LogError> {
    inspect_with(dir, true)
}

fn inspect_with(dir: &Path, repair: bool) -> Result<Inspection, LogError> {
    let listing = std::fs::read_dir(dir)
        .map_err(|err| LogError::io(format!("list {}", dir.display()), err))?;
    let mut segments = Vec::new();
    let mut spares = 0;
    for entry in listing {
        let entry = entry.map_err(|err| LogError::io(format!("list {}", dir.display()), err))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(first_seq) = parse_live_name(name) {
            let path = entry.path();
            let file = File::open(&path)
                .map_err(|err| LogError::io(format!("open {}", path.display()), err))?;
            let len = file
                .metadata()
                .map_err(|err| LogError::io(format!("stat {}", path.display()), err))?
                .len();
            check_segment_len(&path, len)?;
            // SAFETY: read-only mapping; a concurrent writer could change bytes under us, which
            // the scan tolerates (it never panics on any bytes).
            let map = unsafe { Mmap::map(&file) }
                .map_err(|err| LogError::io(format!("map {}", path.display()), err))?;
            segments.push(InspectedSegment {
                path,
                first_seq,
                map,
            });
        } else if parse_spare_name(name).is_some() {
            spares += 1;
        }
    }
    segments.sort_by_key(|segment| segment.first_seq);
    let (recovered, damage) = recover_files(
        segments
            .iter()
            .map(|segment| (segment.path.as_path(), segment.first_seq, &segment.map[..])),
        repair,
    )?;
    let damage = damage.map(|damage| {
        let file = segments[damage.at.segment].path.clone();
        DamageReport::new(damage, file)
    });
    let live: Vec<(u64, bool)> = segments
        .iter()
        .map(|segment| (segment.first_seq, keeps_head(&segment.map)))
        .collect();
    let (damage, _) = head::judge(dir, &live, &recovered, damage, repair)?;
    let hard_state = read_file(&dir.join(HARD_STATE_FILE))?;
    Ok(Inspection {
        segments,
        spares,
        recovered,
        hard_state,
        damage,
    })
}

impl Inspection {
    /// The live batch records overlapping `from..=to`, in order.
    pub fn batches(&self, from: u64, to: u64) -> impl Iterator<Item = ListedBatch<'_>> {
        self.recovered
            .spans
            .iter()
            .filter(move |span| span.last_index.get() >= from && span.first_index.get() <= to)
            .map(|span| {
                let segment = self
                    .segments
                    .iter()
                    .find(|segment| segment.first_seq == span.segment)
                    .expect("span in a scanned segment");
                let start = span.offset as usize + RECORD_HEADER_BYTES;
                ListedBatch {
                    span: *span,
                    path: &segment.path,
                    payload: &segment.map[start..start + span.payload_bytes as usize],
                }
            })
    }
}
