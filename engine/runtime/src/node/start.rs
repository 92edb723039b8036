//! Start-up: recovery from the data directory, and the spawning of the stage threads.
//!
//! Recovery: the newest snapshot file (verified; a corrupt one refuses the start, naming the
//! file), the log (verified by `Log::open`), and the reconciliation of the two: a log that holds the snapshot's index with its term keeps the
//! entries after it; a log that starts right after the snapshot is kept whole; any other log
//! (older than the snapshot, or a remnant of an interrupted snapshot install) is reset to start
//! after the snapshot. A log that starts after the snapshot with a gap is refused.
//!
//! Damage before the log's tail (protocol-aware recovery, `docs/RAFT.md` "Repair"): when the
//! node has at least one other voter (per the snapshot's membership, else the configured
//! members), the log is reopened with `Log::open_for_repair`, which keeps the good prefix, cuts
//! the rest and records the highest index the log held; the core then starts repairing: it
//! fetches the lost range from the leader through the ordinary append / snapshot path and
//! neither votes nor campaigns until its log durably reaches that index again. A node that is
//! the only voter has nobody to fetch from and refuses to start, naming the file, the offset,
//! the lost index range and what the operator can do; nothing is cut then.
//!
//! The first membership: a new data directory (no log directory yet, no snapshot) starts its
//! log with a membership batch of the configured members and their addresses at index 1, term 0
//! (every member writes the same one; no leader ever writes term 0, so it cannot be mistaken
//! for a leader's entry). From then on the membership comes from the node's own log, snapshot
//! or leader, never again from its configuration. A data directory started with
//! `NodeConfig::join` gets no such batch and a marker file, `join`, written before the log
//! exists, so that the node starts with an empty membership (no campaigns, no votes) on this and
//! every later start, until the leader's log or snapshot names its members. A log made before
//! the first batch existed (or cut short by a crash before it was durable) falls back to the
//! configured members as the membership before its first membership batch, as before.
//!
//! Layout of the data directory: `log/` (segments and hard state, see `docs/LOG.md`),
//! `snapshots/` (see [`crate::apply::snapshot`]) and, on a node that joined, `join`.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

use crate::apply::snapshot;
use crate::batch::{Batch, BatchKind};
use crate::log::disk;
use crate::log::inspect::inspect_for_repair;
use crate::log::small_file;
use crate::log::{Log, LogError, OpenReport};
use crate::raft::{HardState, Membership, Restored, SnapshotMeta};
use crate::types::{LogIndex, NodeId, Term};

/// The marker of a data directory started to join an existing cluster, and its only content.
const JOIN_MARKER: &str = "join";
const JOIN_MARKER_BYTES: &[u8] =
    b"lockstep join marker, format 1: this node joined an existing cluster\n";

use super::{NodeConfig, NodeError};

/// The log directory inside a data directory.
pub fn log_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("log")
}

/// The snapshot directory inside a data directory.
pub fn snapshot_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("snapshots")
}

/// What the data directory holds cannot be started from: `what` says why and where.
fn refuse(what: impl std::fmt::Display) -> NodeError {
    NodeError::storage(io::ErrorKind::InvalidData, REFUSING, what)
}

/// The log could not be opened, read or written at start.
fn refuse_log(error: LogError) -> NodeError {
    NodeError::from_log(REFUSING, &error)
}

const REFUSING: &str = "refusing to start";

/// Opens the log and the newest snapshot and turns them into what the core restarts from.
pub(crate) fn recover(config: &NodeConfig) -> Result<(Log, Restored), NodeError> {
    let snapshot_dir = snapshot_dir(&config.data_dir);
    let snapshot = snapshot::latest(&snapshot_dir).map_err(NodeError::from_snapshot)?;
    let log_dir = log_dir(&config.data_dir);
    let new_directory = snapshot.is_none() && !log_dir.exists();
    if new_directory && config.join {
        write_join_marker(&config.data_dir)?;
    } else if config.join {
        tracing::info!(
            data_dir = %config.data_dir.display(),
            "`join` ignored: the data directory already holds a log or a snapshot"
        );
    }
    let joined = read_join_marker(&config.data_dir)?;
    let voters = match &snapshot {
        Some((meta, _)) => meta.membership.voters.clone(),
        None => config.members.keys().copied().collect(),
    };
    let (mut log, report) = open_log(config, &log_dir, &voters)?;
    if let Some(torn) = &report.torn_tail {
        tracing::warn!(file = %torn.file.display(), index = torn.index.get(), "cut a torn log tail");
    }
    if let Some((meta, _)) = &snapshot {
        reconcile(&mut log, meta, &log_dir)?;
    }
    let configured =
        Membership::with_voter_addrs(config.members.iter().map(|(&id, &addr)| (id, addr)));
    if new_directory && !joined {
        bootstrap(&mut log, &configured)?;
    }
    let from = match &snapshot {
        Some((meta, _)) => meta.index.next().max(log.first_index()),
        None => log.first_index(),
    };
    let batches = read_batches(&log, from)?;
    let stored = log.hard_state();
    let hard_state = HardState {
        term: stored.term,
        vote: (stored.vote != NodeId::ZERO).then_some(stored.vote),
    };
    let restored = Restored {
        hard_state,
        snapshot,
        batches,
        initial_membership: if joined {
            Membership::default()
        } else {
            configured
        },
        repair_until: log.repair().map(|repair| repair.until),
        repair_above_term: log.repair().and_then(|repair| repair.above_term),
        suspect_term: log.suspect(),
    };
    Ok((log, restored))
}

/// Writes the join marker durably (see the module docs), creating the data directory.
fn write_join_marker(data_dir: &Path) -> Result<(), NodeError> {
    let context = |error: io::Error| {
        let what = format!(
            "cannot create the data directory {}: {error}",
            data_dir.display()
        );
        NodeError::storage(error.kind(), REFUSING, what)
    };
    disk::create_dir_all_synced(data_dir).map_err(context)?;
    let dir = File::open(data_dir).map_err(context)?;
    small_file::replace(
        data_dir,
        &dir,
        JOIN_MARKER,
        "join.tmp",
        JOIN_MARKER_BYTES,
        "join marker",
    )
    .map_err(refuse_log)
}

/// Whether the data directory holds the join marker; any other content is refused.
fn read_join_marker(data_dir: &Path) -> Result<bool, NodeError> {
    match small_file::read(data_dir, JOIN_MARKER).map_err(refuse_log)? {
        None => Ok(false),
        Some(bytes) if bytes == JOIN_MARKER_BYTES => Ok(true),
        Some(_) => Err(refuse(format!(
            "{} is not a lockstep join marker (its content was changed); it should read: {}",
            data_dir.join(JOIN_MARKER).display(),
            String::from_utf8_lossy(JOIN_MARKER_BYTES).trim_end()
        ))),
    }
}

/// Starts a new log with the configured membership at index 1, term 0 (see the module docs).
fn bootstrap(log: &mut Log, membership: &Membership) -> Result<(), NodeError> {
    assert_eq!(
        (log.first_index(), log.last_index()),
        (LogIndex(1), LogIndex::ZERO),
        "only an empty log is bootstrapped"
    );
    let batch = Batch::single(
        Term::ZERO,
        LogIndex(1),
        BatchKind::Membership,
        &membership.encode(),
    );
    log.append(&batch).map_err(refuse_log)?;
    log.wait_durable().map_err(refuse_log)?;
    tracing::info!(
        voters = ?membership.voters.iter().map(|id| id.get()).collect::<Vec<_>>(),
        "new data directory: the log starts with the configured members"
    );
    Ok(())
}

/// Opens the log; damage before its tail is cut and repaired from peers when some other voter
/// can send the lost entries, and refused otherwise (see the module docs).
fn open_log(
    config: &NodeConfig,
    log_dir: &Path,
    voters: &std::collections::BTreeSet<NodeId>,
) -> Result<(Log, OpenReport), NodeError> {
    match Log::open(log_dir, config.log.clone()) {
        Err(LogError::Corrupt { .. }) => {}
        opened => return opened.map_err(refuse_log),
    }
    if voters.iter().all(|&voter| voter == config.id) {
        // Read-only, so the log is left exactly as found for the operator.
        let inspection = inspect_for_repair(log_dir).map_err(refuse_log)?;
        let Some(damage) = inspection.damage else {
            return Log::open(log_dir, config.log.clone()).map_err(refuse_log);
        };
        return Err(refuse(format!(
            "{damage}. Node {} is the only voter, so no peer holds a copy to repair them from, \
             and serving without them could lose acknowledged writes. Restore the data \
             directory {} from a backup or a copy of a replica; `lockstep log verify {}` shows \
             the damage",
            config.id,
            config.data_dir.display(),
            log_dir.display()
        )));
    }
    let (log, report) = Log::open_for_repair(log_dir, config.log.clone()).map_err(refuse_log)?;
    if let Some(repair) = report.repair {
        tracing::warn!(
            node = config.id.get(),
            first_lost = repair.first_lost.get(),
            until = repair.until.get(),
            "repairing the log from peers: this node will not vote or campaign until its log \
             is durable up to {} again (if no peer holds those entries, e.g. every copy is \
             damaged, it cannot serve: restore its data directory from a backup)",
            repair.until
        );
    }
    Ok((log, report))
}

/// Makes the log continue the snapshot (see the module docs).
fn reconcile(log: &mut Log, meta: &SnapshotMeta, log_dir: &Path) -> Result<(), NodeError> {
    let after = meta.index.next();
    let holds_entries = log.last_index() >= log.first_index();
    if log.term_at(meta.index) == Some(meta.term) {
        log.compact_to(meta.index).map_err(refuse_log)
    } else if log.first_index() == after {
        Ok(())
    } else if holds_entries && log.first_index() > after {
        Err(refuse(format!(
            "the log in {} starts at {} but the newest snapshot ends at {}",
            log_dir.display(),
            log.first_index(),
            meta.index
        )))
    } else {
        tracing::info!(
            snapshot = meta.index.get(),
            log_first = log.first_index().get(),
            log_last = log.last_index().get(),
            "the log does not continue the snapshot: restarting it after the snapshot"
        );
        log.reset_after(meta.index, meta.term).map_err(refuse_log)
    }
}

/// Copies the log from `from` to its end into batches for the core.
fn read_batches(log: &Log, from: LogIndex) -> Result<Vec<Batch>, NodeError> {
    let mut batches = Vec::new();
    if from <= log.last_index() {
        for view in log.read(from, log.last_index()).map_err(refuse_log)? {
            batches.push(view.to_batch());
        }
    }
    Ok(batches)
}
