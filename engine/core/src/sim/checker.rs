//! The safety checker: global knowledge about a run, and the invariants checked after every step.
//!
//! The cluster driver reports facts as they happen (a role, a write, a commit, an apply, a read, a
//! vote grant leaving a node); each report is checked at once against everything seen before, so
//! a violation is caught at the step that causes it. Checks (names as printed):
//! - `election-safety`: at most one leader per term;
//! - `leader-append-only`: a leader never truncates its log or installs a snapshot over it;
//! - `log-matching`: an (index, term) pair always names the same entry with the same predecessor
//!   term, which by induction makes two logs that share an (index, term) equal up to it;
//! - `leader-completeness`: a leader holds every entry committed before it was elected, and every
//!   entry of a lower term committed while it leads;
//! - `state-machine-safety`: every committed (and so applied) index holds one entry cluster-wide,
//!   a snapshot's state equals the applied prefix it claims, and no node truncates a committed
//!   entry;
//! - `commit-monotonic` and `commit-durable`: a node's commit index never decreases within one
//!   incarnation nor restarts below its durable value, and every commit index a node reports is
//!   held durably by a quorum of voters;
//! - `term-vote-monotonic` and `single-vote`: hard state never goes back (term down, or vote
//!   changed within a term), including across restarts, and no node grants two votes in one term;
//! - `linearizable-read`: a read is served at an index covering every write committed before the
//!   read was issued;
//! - `liveness` (checked by the cluster at the end of a run), `core-contract` (a write that does
//!   not fit the log, a gap in committed batches, a restored state the core refuses) and
//!   `no-panic` (an assertion fired inside a core or the simulator).

use std::collections::BTreeMap;
use std::fmt;

use crate::batch::Batch;
use crate::types::{LogIndex, NodeId, Term};

use super::disk::{Holding, StoredState};

/// Which invariant broke.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Invariant {
    /// Two leaders in one term.
    ElectionSafety,
    /// A leader removed entries from its own log.
    LeaderAppendOnly,
    /// Two logs disagree on an (index, term) pair.
    LogMatching,
    /// A leader lacks a committed entry.
    LeaderCompleteness,
    /// Applied prefixes disagree, or a committed entry was removed.
    StateMachineSafety,
    /// A commit index went down.
    CommitMonotonic,
    /// A commit index is not durable on a quorum.
    CommitDurable,
    /// Term or vote went back.
    TermVoteMonotonic,
    /// A node granted two votes in one term.
    SingleVote,
    /// A read missed a write committed before it.
    LinearizableRead,
    /// The cluster did not recover after the faults stopped.
    Liveness,
    /// The core broke its interface contract (e.g. a write that does not fit the log).
    CoreContract,
    /// A core (or the simulator) panicked.
    NoPanic,
}

impl fmt::Display for Invariant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Invariant::ElectionSafety => "election-safety",
            Invariant::LeaderAppendOnly => "leader-append-only",
            Invariant::LogMatching => "log-matching",
            Invariant::LeaderCompleteness => "leader-completeness",
            Invariant::StateMachineSafety => "state-machine-safety",
            Invariant::CommitMonotonic => "commit-monotonic",
            Invariant::CommitDurable => "commit-durable",
            Invariant::TermVoteMonotonic => "term-vote-monotonic",
            Invariant::SingleVote => "single-vote",
            Invariant::LinearizableRead => "linearizable-read",
            Invariant::Liveness => "liveness",
            Invariant::CoreContract => "core-contract",
            Invariant::NoPanic => "no-panic",
        })
    }
}

/// A broken invariant and what broke it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// The invariant.
    pub invariant: Invariant,
    /// The offending values.
    pub detail: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.invariant, self.detail)
    }
}

/// Result of a check.
pub type Checked = Result<(), Violation>;

fn violation(invariant: Invariant, detail: String) -> Checked {
    Err(Violation { invariant, detail })
}

/// 64-bit FNV-1a of `bytes`, seeded with `seed` (used for entry and state hashes).
pub fn fnv(seed: u64, bytes: &[u8]) -> u64 {
    let mut hash = seed ^ 0xCBF2_9CE4_8422_2325;
    for byte in bytes {
        hash = (hash ^ u64::from(*byte)).wrapping_mul(0x0000_0100_0000_01B3);
    }
    hash
}

/// A committed entry as the checker remembers it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CommittedEntry {
    /// Its term.
    pub term: Term,
    /// Hash of its kind and bytes.
    pub hash: u64,
    /// Hash of the state after applying every entry up to it (see [`StateDigest`]).
    pub state: u64,
}

/// A state machine's state: entries applied and a running hash of them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StateDigest {
    /// Index of the last applied entry.
    pub applied: LogIndex,
    /// Term of the last applied entry.
    pub applied_term: Term,
    /// Running hash over every applied entry.
    pub hash: u64,
}

impl StateDigest {
    /// The state after applying an entry with `entry_hash` at `index`.
    pub fn advance(self, index: LogIndex, term: Term, entry_hash: u64) -> StateDigest {
        StateDigest {
            applied: index,
            applied_term: term,
            hash: fnv(self.hash, &entry_hash.to_le_bytes()),
        }
    }

    /// Snapshot bytes: applied index, term and hash, little-endian.
    pub fn encode(&self) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(24);
        bytes.extend_from_slice(&self.applied.get().to_le_bytes());
        bytes.extend_from_slice(&self.applied_term.get().to_le_bytes());
        bytes.extend_from_slice(&self.hash.to_le_bytes());
        bytes
    }

    /// Reads [`StateDigest::encode`]'s bytes.
    pub fn decode(bytes: &[u8]) -> Option<StateDigest> {
        if bytes.len() != 24 {
            return None;
        }
        let word = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"));
        Some(StateDigest {
            applied: LogIndex(word(0)),
            applied_term: Term(word(8)),
            hash: word(16),
        })
    }
}

/// Hash identifying one entry of a batch (kind + bytes).
pub fn entry_hash(batch: &Batch, entry: &[u8]) -> u64 {
    fnv(batch.kind() as u64, entry)
}

/// Global knowledge of a run.
#[derive(Debug, Default)]
pub struct Checker {
    leaders: BTreeMap<Term, NodeId>,
    /// (index, term) -> (entry hash, term of the entry before it).
    entries: BTreeMap<(LogIndex, Term), (u64, Term)>,
    /// Committed entries, position `i` holds index `i + 1`.
    committed: Vec<CommittedEntry>,
    /// (node, term) -> the candidate it granted its vote to.
    votes: BTreeMap<(NodeId, Term), NodeId>,
    /// Highest commit index any node reported.
    commit_max: LogIndex,
    /// Position `i` (index `i + 1`): the lowest term of a leader that reported it committed
    /// (`Term::ZERO` while no leader did).
    commit_terms: Vec<Term>,
}

impl Checker {
    /// A checker that has seen nothing.
    pub fn new() -> Checker {
        Checker::default()
    }

    /// Highest commit index any node has reported so far.
    pub fn commit_max(&self) -> LogIndex {
        self.commit_max
    }

    /// Number of entries known committed (applied somewhere).
    pub fn committed_len(&self) -> u64 {
        self.committed.len() as u64
    }

    /// The committed entry at `index`, if one was applied somewhere.
    pub fn committed_at(&self, index: LogIndex) -> Option<&CommittedEntry> {
        index
            .get()
            .checked_sub(1)
            .and_then(|at| self.committed.get(at as usize))
    }

    /// `node` is leader of `term`.
    pub fn on_leader(&mut self, node: NodeId, term: Term, log: &StoredState) -> Checked {
        match self.leaders.get(&term) {
            Some(&other) if other != node => {
                return violation(
                    Invariant::ElectionSafety,
                    format!("{node} and {other} are both leader of {term}"),
                );
            }
            Some(_) => return Ok(()),
            None => {
                self.leaders.insert(term, node);
            }
        }
        // A new leader must hold every entry committed in an earlier term.
        let end = LogIndex(self.commit_terms.len() as u64);
        self.check_leader_holds(node, term, log, LogIndex(1), end)
    }

    /// The leader of `term` reports `from ..= to` committed: records the commit term of each.
    pub fn on_leader_commit(&mut self, term: Term, from: LogIndex, to: LogIndex) {
        if self.commit_terms.len() < to.get() as usize {
            self.commit_terms.resize(to.get() as usize, Term::ZERO);
        }
        for at in from.get().max(1) - 1..to.get() {
            let known = &mut self.commit_terms[at as usize];
            if *known == Term::ZERO || term < *known {
                *known = term;
            }
        }
    }

    /// Checks that `node`, leader of `term`, holds every entry of `from ..= to` that was
    /// committed in a term below `term` (Leader Completeness; leaders of lower terms may lack
    /// what a later term committed).
    pub fn check_leader_holds(
        &self,
        node: NodeId,
        term: Term,
        log: &StoredState,
        from: LogIndex,
        to: LogIndex,
    ) -> Checked {
        let start = from.get().max(log.snapshot_index().get() + 1);
        let end = to.get().min(self.commit_terms.len() as u64);
        for index in start..=end {
            let commit_term = self.commit_terms[index as usize - 1];
            if commit_term == Term::ZERO || commit_term >= term {
                continue;
            }
            let Some(&entry) = self.committed.get(index as usize - 1) else {
                continue;
            };
            match log.holding(LogIndex(index)) {
                Holding::Compacted => {}
                Holding::Entry(held) if held == entry.term => {}
                holding => {
                    return violation(
                        Invariant::LeaderCompleteness,
                        format!(
                            "{node}, leader of {term}, holds {holding:?} at i{index} where \
                             an entry of {} was committed in {commit_term}",
                            entry.term
                        ),
                    );
                }
            }
        }
        Ok(())
    }

    /// `node` persists (or at least starts writing) `hard_state` after `previous`.
    pub fn on_hard_state(
        &self,
        node: NodeId,
        previous: (Term, Option<NodeId>),
        next: (Term, Option<NodeId>),
    ) -> Checked {
        let backwards = next.0 < previous.0
            || (next.0 == previous.0 && previous.1.is_some() && next.1 != previous.1);
        if backwards {
            return violation(
                Invariant::TermVoteMonotonic,
                format!(
                    "{node} hard state goes from {} vote {:?} to {} vote {:?}",
                    previous.0, previous.1, next.0, next.1
                ),
            );
        }
        Ok(())
    }

    /// A vote grant from `node` to `candidate` in `term` left `node`.
    pub fn on_vote_granted(&mut self, node: NodeId, term: Term, candidate: NodeId) -> Checked {
        match self.votes.insert((node, term), candidate) {
            Some(earlier) if earlier != candidate => violation(
                Invariant::SingleVote,
                format!("{node} granted its {term} vote to {earlier} and then to {candidate}"),
            ),
            _ => Ok(()),
        }
    }

    /// `node` appends `batch`, whose predecessor entry has `prev_term`.
    pub fn on_append(&mut self, node: NodeId, batch: &Batch, prev_term: Term) -> Checked {
        let mut prev_term = prev_term;
        for (offset, entry) in batch.entries().enumerate() {
            let index = batch.first_index().plus(offset as u64);
            let hash = entry_hash(batch, entry);
            let known = *self
                .entries
                .entry((index, batch.term()))
                .or_insert((hash, prev_term));
            if known != (hash, prev_term) {
                return violation(
                    Invariant::LogMatching,
                    format!(
                        "{node} appends at {index} {} an entry (hash {hash:x}, previous term {prev_term}) \
                         that differs from an earlier one (hash {:x}, previous term {})",
                        batch.term(),
                        known.0,
                        known.1
                    ),
                );
            }
            prev_term = batch.term();
        }
        Ok(())
    }

    /// `node` truncates its log (`log`, before the truncation) from `from`; `is_leader` says
    /// whether it currently leads.
    pub fn on_truncate(
        &self,
        node: NodeId,
        is_leader: bool,
        log: &StoredState,
        from: LogIndex,
    ) -> Checked {
        if is_leader && from <= log.last_index() {
            return violation(
                Invariant::LeaderAppendOnly,
                format!(
                    "leader {node} truncates its log from {from} (last {})",
                    log.last_index()
                ),
            );
        }
        let end = log.last_index().get().min(self.committed.len() as u64);
        for index in from.get().max(1)..=end {
            let entry = self.committed[index as usize - 1];
            if log.holding(LogIndex(index)) == Holding::Entry(entry.term) {
                return violation(
                    Invariant::StateMachineSafety,
                    format!(
                        "{node} truncates from {from}, removing the committed entry at i{index} {}",
                        entry.term
                    ),
                );
            }
        }
        Ok(())
    }

    /// `node` reports commit index `commit`, having reported `previous` before in this
    /// incarnation; `durable_voters` tells, for each voter, whether it durably holds the entry
    /// at `commit` with term `term`; `quorum` is the number of voters needed.
    pub fn on_commit(
        &mut self,
        node: NodeId,
        previous: LogIndex,
        commit: LogIndex,
        durable_voters: &[(NodeId, bool)],
        quorum: usize,
    ) -> Checked {
        if commit < previous {
            return violation(
                Invariant::CommitMonotonic,
                format!("{node} commit index goes down from {previous} to {commit}"),
            );
        }
        let holders = durable_voters.iter().filter(|(_, held)| *held).count();
        if commit.get() > 0 && holders < quorum {
            return violation(
                Invariant::CommitDurable,
                format!(
                    "{node} reports commit {commit} but only {holders} of the voters hold it \
                     durably (need {quorum}): {durable_voters:?}"
                ),
            );
        }
        self.commit_max = self.commit_max.max(commit);
        Ok(())
    }

    /// `node` applies the committed entry (`term`, `hash`) at `index`, reaching `state`.
    pub fn on_apply(
        &mut self,
        node: NodeId,
        index: LogIndex,
        term: Term,
        hash: u64,
        state: u64,
    ) -> Checked {
        let entry = CommittedEntry { term, hash, state };
        let at = index.get() as usize - 1;
        match self.committed.get(at) {
            Some(known) if *known != entry => violation(
                Invariant::StateMachineSafety,
                format!(
                    "{node} applies at {index} {term} (hash {hash:x}) but {} (hash {:x}) was \
                     applied there before",
                    known.term, known.hash
                ),
            ),
            Some(_) => Ok(()),
            None if at == self.committed.len() => {
                self.committed.push(entry);
                Ok(())
            }
            None => violation(
                Invariant::CoreContract,
                format!(
                    "{node} applies {index} but only {} entries are known committed: a gap",
                    self.committed.len()
                ),
            ),
        }
    }

    /// `node` installs a snapshot whose state is `digest`.
    pub fn on_snapshot_state(&self, node: NodeId, digest: &StateDigest) -> Checked {
        if digest.applied.get() == 0 {
            return Ok(());
        }
        match self.committed_at(digest.applied) {
            Some(entry) if entry.state == digest.hash && entry.term == digest.applied_term => {
                Ok(())
            }
            Some(entry) => violation(
                Invariant::StateMachineSafety,
                format!(
                    "{node} installs a snapshot at {} {} with state {:x}, but the applied \
                     prefix there is {} with state {:x}",
                    digest.applied, digest.applied_term, digest.hash, entry.term, entry.state
                ),
            ),
            None => violation(
                Invariant::StateMachineSafety,
                format!(
                    "{node} installs a snapshot at {} which was never applied anywhere",
                    digest.applied
                ),
            ),
        }
    }

    /// A read issued when the highest reported commit was `commit_at_issue` is served by
    /// `node` at `read_index`.
    pub fn on_read_served(
        &self,
        node: NodeId,
        read: u64,
        commit_at_issue: LogIndex,
        read_index: LogIndex,
    ) -> Checked {
        if read_index < commit_at_issue {
            return violation(
                Invariant::LinearizableRead,
                format!(
                    "{node} serves read {read} at {read_index}, but {commit_at_issue} was \
                     committed before the read was issued"
                ),
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::BatchKind;

    #[test]
    fn two_leaders_in_a_term_are_caught() {
        let mut checker = Checker::new();
        let log = StoredState::new(crate::raft::HardState::default());
        assert_eq!(checker.on_leader(NodeId(1), Term(2), &log), Ok(()));
        assert_eq!(checker.on_leader(NodeId(1), Term(2), &log), Ok(()));
        let err = checker.on_leader(NodeId(2), Term(2), &log).unwrap_err();
        assert_eq!(err.invariant, Invariant::ElectionSafety);
    }

    #[test]
    fn conflicting_entries_are_caught() {
        let mut checker = Checker::new();
        let a = Batch::single(Term(1), LogIndex(1), BatchKind::Normal, b"a");
        let b = Batch::single(Term(1), LogIndex(1), BatchKind::Normal, b"b");
        assert_eq!(checker.on_append(NodeId(1), &a, Term(0)), Ok(()));
        assert_eq!(checker.on_append(NodeId(2), &a, Term(0)), Ok(()));
        let err = checker.on_append(NodeId(3), &b, Term(0)).unwrap_err();
        assert_eq!(err.invariant, Invariant::LogMatching);
        assert_eq!(
            checker.on_apply(NodeId(1), LogIndex(1), Term(1), 5, 6),
            Ok(())
        );
        let err = checker
            .on_apply(NodeId(2), LogIndex(1), Term(1), 7, 8)
            .unwrap_err();
        assert_eq!(err.invariant, Invariant::StateMachineSafety);
    }

    #[test]
    fn votes_and_commits_are_checked() {
        let mut checker = Checker::new();
        assert_eq!(
            checker.on_vote_granted(NodeId(1), Term(3), NodeId(2)),
            Ok(())
        );
        assert_eq!(
            checker.on_vote_granted(NodeId(1), Term(3), NodeId(2)),
            Ok(())
        );
        let err = checker
            .on_vote_granted(NodeId(1), Term(3), NodeId(3))
            .unwrap_err();
        assert_eq!(err.invariant, Invariant::SingleVote);
        let held = [(NodeId(1), true), (NodeId(2), false), (NodeId(3), false)];
        let err = checker
            .on_commit(NodeId(1), LogIndex(0), LogIndex(4), &held, 2)
            .unwrap_err();
        assert_eq!(err.invariant, Invariant::CommitDurable);
        let err = checker
            .on_commit(NodeId(1), LogIndex(5), LogIndex(4), &held, 1)
            .unwrap_err();
        assert_eq!(err.invariant, Invariant::CommitMonotonic);
    }

    /// A log holding one entry per element of `terms`, in order.
    fn log_of(terms: &[u64]) -> StoredState {
        let mut writes = super::super::disk::Disk::new(
            crate::raft::HardState::default(),
            super::super::disk::DiskLatency {
                sync_min: 1,
                sync_max: 1,
                slow_sync_max: 1,
            },
        );
        let mut rng = super::super::rng::SimRng::new(0);
        for (offset, term) in terms.iter().enumerate() {
            let batch = Batch::single(
                Term(*term),
                LogIndex(offset as u64 + 1),
                BatchKind::Normal,
                b"e",
            );
            let write = super::super::disk::DiskWrite {
                id: offset as u64 + 1,
                hard_state: None,
                snapshot: None,
                truncate_from: None,
                batches: vec![batch],
            };
            writes.submit(write, 0, &mut rng).expect("contiguous");
        }
        writes.written().clone()
    }

    #[test]
    fn leader_completeness_uses_the_commit_term() {
        let mut checker = Checker::new();
        // Index 1 (an entry of t1) and index 2 (t2) committed by the leader of t2.
        checker
            .on_apply(NodeId(1), LogIndex(1), Term(1), 1, 1)
            .unwrap();
        checker
            .on_apply(NodeId(1), LogIndex(2), Term(2), 2, 2)
            .unwrap();
        checker.on_leader_commit(Term(2), LogIndex(1), LogIndex(2));
        // A leader of t3 lacking index 2 breaks Leader Completeness...
        let short = log_of(&[1]);
        let err = checker.on_leader(NodeId(2), Term(3), &short).unwrap_err();
        assert_eq!(err.invariant, Invariant::LeaderCompleteness);
        // ... a stale leader of t2 elected late does not (t2 committed it, not an earlier term),
        // and one holding both entries is fine.
        let mut other = Checker::new();
        other
            .on_apply(NodeId(1), LogIndex(1), Term(1), 1, 1)
            .unwrap();
        other.on_leader_commit(Term(2), LogIndex(1), LogIndex(1));
        assert_eq!(other.on_leader(NodeId(3), Term(2), &log_of(&[2])), Ok(()));
        assert_eq!(
            checker.on_leader(NodeId(3), Term(4), &log_of(&[1, 2])),
            Ok(())
        );
    }

    #[test]
    fn truncating_a_committed_entry_and_stale_reads_are_caught() {
        let mut checker = Checker::new();
        checker
            .on_apply(NodeId(1), LogIndex(1), Term(1), 1, 1)
            .unwrap();
        checker
            .on_apply(NodeId(1), LogIndex(2), Term(1), 2, 2)
            .unwrap();
        let log = log_of(&[1, 1, 1]);
        assert_eq!(
            checker.on_truncate(NodeId(2), false, &log, LogIndex(3)),
            Ok(())
        );
        let err = checker
            .on_truncate(NodeId(2), false, &log, LogIndex(2))
            .unwrap_err();
        assert_eq!(err.invariant, Invariant::StateMachineSafety);
        let err = checker
            .on_truncate(NodeId(2), true, &log, LogIndex(3))
            .unwrap_err();
        assert_eq!(err.invariant, Invariant::LeaderAppendOnly);
        assert_eq!(
            checker.on_read_served(NodeId(1), 1, LogIndex(2), LogIndex(2)),
            Ok(())
        );
        let err = checker
            .on_read_served(NodeId(1), 2, LogIndex(2), LogIndex(1))
            .unwrap_err();
        assert_eq!(err.invariant, Invariant::LinearizableRead);
        let wrong = StateDigest {
            applied: LogIndex(2),
            applied_term: Term(1),
            hash: 99,
        };
        let err = checker.on_snapshot_state(NodeId(3), &wrong).unwrap_err();
        assert_eq!(err.invariant, Invariant::StateMachineSafety);
    }

    #[test]
    fn digest_roundtrips() {
        let digest = StateDigest::default().advance(LogIndex(1), Term(1), 42);
        assert_eq!(StateDigest::decode(&digest.encode()), Some(digest));
    }
}
