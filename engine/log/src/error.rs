//! The log's error type: every way an operation on the log can fail, as values.

use std::fmt;
use std::io;
use std::path::PathBuf;

use crate::batch::BatchError;
use crate::record::RecordError;
use crate::segment::SEGMENT_BYTES_MIN;
use crate::sync::MAX_SYNCS_IN_FLIGHT;
use crate::types::{LogIndex, Term};

/// Why a log operation failed.
#[derive(Debug)]
pub enum LogError {
    /// An I/O error outside the sync path (open, create, rename, map).
    Io {
        /// What the log was doing.
        context: String,
        /// The error.
        source: io::Error,
    },
    /// A sync failed earlier; the log refuses all further work. The kernel may already have
    /// dropped the unsynced pages, so a retry could report success for lost data.
    Poisoned {
        /// The errno of the failed sync.
        errno: i32,
    },
    /// Damage before the tail: [`Log::open`](crate::Log::open) refuses it;
    /// [`Log::open_for_repair`](crate::Log::open_for_repair) cuts it instead, for a node
    /// that fetches the lost range from its peers.
    Corrupt {
        /// The file holding the damage.
        file: PathBuf,
        /// Byte offset of the damaged or missing record.
        offset: u64,
        /// First log index that cannot be read (0 when unknown).
        index: LogIndex,
        /// What is wrong.
        reason: String,
    },
    /// The disk is full: no new segment could be prepared. Everything already durable stays
    /// readable; appends can resume once space is freed (e.g. by compaction).
    NoSpace {
        /// The segment size that could not be allocated.
        segment_bytes: u64,
    },
    /// Another process (or another `Log`) holds the directory.
    Locked {
        /// The log directory.
        dir: PathBuf,
    },
    /// An append does not start right after the last index.
    NotContiguous {
        /// Index the log expects next.
        expected: LogIndex,
        /// Index offered.
        found: LogIndex,
    },
    /// An append carries a term below the last entry's term.
    TermRegression {
        /// Term of the last entry.
        last: Term,
        /// Term offered.
        found: Term,
    },
    /// An index outside what the log holds was asked for.
    OutOfRange {
        /// The index asked for.
        index: LogIndex,
        /// First index held.
        first: LogIndex,
        /// Last index held.
        last: LogIndex,
    },
    /// A record does not fit in one segment.
    RecordTooLarge {
        /// Bytes the record needs.
        record_bytes: usize,
        /// Bytes a segment offers to records.
        segment_capacity: usize,
    },
    /// Bytes from a peer are not a valid record.
    BadRecord(RecordError),
    /// A batch is malformed.
    BadBatch(BatchError),
    /// The hard-state file holds no slot that can be trusted.
    HardStateCorrupt {
        /// The file.
        file: PathBuf,
        /// What is wrong with its slots.
        reason: &'static str,
    },
    /// The hard-state file is missing from a log that has held segments: the node has run
    /// before and may have voted in a term it would no longer know.
    HardStateMissing {
        /// Where the file should be.
        file: PathBuf,
    },
    /// Options are out of range.
    BadOptions(BadLogOption),
}

/// A [`crate::LogOptions`] value out of range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BadLogOption {
    /// `segment_bytes` is not a multiple of 4096 in `SEGMENT_BYTES_MIN..=4 GiB`.
    SegmentBytes(u64),
    /// `syncs_in_flight` is not in `1..=MAX_SYNCS_IN_FLIGHT`.
    SyncsInFlight(usize),
    /// `spare_segments` is 0.
    SpareSegments,
}

impl fmt::Display for BadLogOption {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            BadLogOption::SegmentBytes(bytes) => write!(
                f,
                "segment_bytes {bytes} must be a multiple of 4096 in {SEGMENT_BYTES_MIN}..=4 GiB"
            ),
            BadLogOption::SyncsInFlight(syncs) => write!(
                f,
                "syncs_in_flight {syncs} must be in 1..={MAX_SYNCS_IN_FLIGHT}"
            ),
            BadLogOption::SpareSegments => f.write_str("spare_segments must be at least 1"),
        }
    }
}

impl LogError {
    /// An I/O error, with what the log was doing when it happened.
    pub fn io(context: impl Into<String>, source: io::Error) -> LogError {
        LogError::Io {
            context: context.into(),
            source,
        }
    }
}

impl fmt::Display for LogError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LogError::Io { context, source } => write!(f, "{context}: {source}"),
            LogError::Poisoned { errno } => write!(
                f,
                "log is poisoned: an earlier sync failed ({})",
                io::Error::from_raw_os_error(*errno)
            ),
            LogError::Corrupt {
                file,
                offset,
                index,
                reason,
            } => write!(
                f,
                "log corrupt in {} at byte offset {offset} (log index {}): {reason}",
                file.display(),
                index.get()
            ),
            LogError::NoSpace { segment_bytes } => write!(
                f,
                "no space left to prepare a {segment_bytes}-byte segment (durable data is intact)"
            ),
            LogError::Locked { dir } => {
                write!(
                    f,
                    "log directory {} is in use by another log",
                    dir.display()
                )
            }
            LogError::NotContiguous { expected, found } => {
                write!(f, "append at index {found}, expected {expected}")
            }
            LogError::TermRegression { last, found } => {
                write!(f, "append with term {found} below the last term {last}")
            }
            LogError::OutOfRange { index, first, last } => {
                write!(f, "index {index} outside the log {first}..={last}")
            }
            LogError::RecordTooLarge {
                record_bytes,
                segment_capacity,
            } => write!(
                f,
                "record of {record_bytes} bytes exceeds the {segment_capacity} bytes of a segment"
            ),
            LogError::BadRecord(err) => write!(f, "bad record: {err}"),
            LogError::BadBatch(err) => write!(f, "bad batch: {err}"),
            LogError::HardStateCorrupt { file, reason } => write!(
                f,
                "hard state file {} has no valid slot ({reason}): the term and vote this node \
                 last saved are unknown",
                file.display()
            ),
            LogError::HardStateMissing { file } => write!(
                f,
                "hard state file {} is missing, but the log has held segments: this node has \
                 run before and may have voted in a term it would no longer know",
                file.display()
            ),
            LogError::BadOptions(what) => write!(f, "bad log options: {what}"),
        }
    }
}

impl std::error::Error for LogError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            LogError::Io { source, .. } => Some(source),
            LogError::BadRecord(err) => Some(err),
            LogError::BadBatch(err) => Some(err),
            _ => None,
        }
    }
}
