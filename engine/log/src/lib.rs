//! # lockstep-log
//!
//! The durable log: preallocated, mmap'd segment files of CRC-chained records, made durable by
//! io_uring fdatasync with group commit.
//!
//! - [`record`]: one record per [`Batch`](crate::batch::Batch); pure encode / decode / verify.
//! - [`recovery`]: the pure scan that turns segment bytes into the log, a torn tail to cut, or a
//!   corruption error naming file, offset and index (or, for a repair, the damage to cut).
//! - [`segment`]: segment files (zero-filled, full size before they get a name) and their names.
//! - `preparer`: a background thread keeping one (or more) spare segments ready, zero-filled and
//!   mapped, and reusing compacted segments.
//! - [`doorbell`]: the eventfd a thread blocks on for "a sync completed or work arrived".
//! - `sync`: sync rounds, several in flight, through io_uring (or fdatasync on helper threads as
//!   the fallback).
//! - [`hard_state`]: term and vote in a two-slot checksummed file.
//! - `disk`: reading what the disk holds at open (sync, then drop cached pages) and creating
//!   directories durably.
//! - [`repair`]: the marker a log cut before damaged records keeps until the lost range is
//!   fetched back from peers.
//! - [`suspect`]: the marker a log whose tail was cut after an unclean stop keeps until it
//!   durably holds an entry of a newer term.
//! - [`head`]: the small file naming the newest segment, so a lost segment is noticed.
//! - [`Log`] (in `durable_log`): the type the storage thread owns.
//! - [`inspect`]: read-only verification and listing, for `lockstep log`.
//!
//! Usage, in short:
//! ```no_run
//! use lockstep_log::batch::{BatchBuilder, BatchKind};
//! use lockstep_log::{Log, LogOptions};
//! use lockstep_log::types::{LogIndex, Term};
//!
//! let (mut log, report) = Log::open("/tmp/lockstep-log".as_ref(), LogOptions::default())?;
//! let mut builder = BatchBuilder::default();
//! builder.push(b"hello");
//! let batch = builder.finish(Term(1), report.last_index.next(), BatchKind::Normal);
//! log.append(&batch)?;          // copied into the mapping, not yet durable
//! log.request_sync()?;          // starts a sync round (group commit) without blocking
//! while log.poll_durable()?.is_none() { /* do other work */ }
//! for (index, entry) in log.entries(batch.first_index(), batch.last_index())? {
//!     println!("{index}: {entry:?}");
//! }
//! # Ok::<(), lockstep_log::LogError>(())
//! ```
//!
//! Byte layouts, kernel and filesystem assumptions and the crash analysis: `docs/FORMATS.md`.

#![deny(missing_docs)]

pub use lockstep_core::{batch, types};

pub mod disk;
pub mod doorbell;
mod durable_log;
mod error;
pub mod hard_state;
pub mod head;
pub mod inspect;
mod preparer;
pub mod record;
pub mod recovery;
pub mod repair;
pub mod segment;
pub mod small_file;
pub mod suspect;
mod sync;

pub use doorbell::Doorbell;
pub use durable_log::{
    AppendMode, BatchView, Log, LogOptions, LogStats, OpenReport, Read, TornTailReport,
};
pub use error::{BadLogOption, LogError};
pub use hard_state::HardState;
pub use sync::SyncMode;
pub use sync::MAX_SYNCS_IN_FLIGHT;
