//! A suspect log: one whose tail recovery cut after an unclean stop. The cut records may have
//! been durable (damage to the last records looks exactly like a torn write), so this node may
//! have acknowledged entries it no longer holds, and its own log is no evidence for a vote.
//!
//! Until the suspicion is lifted the node grants no (pre-)vote on the strength of its own log
//! and does not count its own vote when it campaigns. It learns instead: every vote request
//! carries the sender's log end, and a request whose sender is at a term above `term_bound`
//! (every entry this node may have acknowledged has a term no higher) reports a log that holds
//! every such entry the sender ever acknowledged, since it no longer acknowledges appends of
//! those terms. Once it has such reports from a quorum of the other voters, it grants votes
//! only to candidates at least as up to date as the most up-to-date of them. Lifted when the
//! durable log holds an entry of a term above `term_bound` (written by a leader of a newer
//! term, whose log holds every committed entry) or reaches the learned floor. The argument,
//! including the whole-cluster power cut, is in `docs/RAFT.md`, "Suspect tail".

use std::collections::BTreeMap;

use super::Raft;
use crate::types::{LogIndex, NodeId, Term};

/// What a suspect node knows. See the module docs.
#[derive(Debug, Default)]
pub(super) struct Suspect {
    /// Every entry this node may have acknowledged before the cut has a term no higher.
    pub(super) term_bound: Term,
    /// Log ends `(last term, last index)` of peers, each reported at a term above `term_bound`.
    heard: BTreeMap<NodeId, (Term, LogIndex)>,
}

impl Suspect {
    pub(super) fn new(term_bound: Term) -> Suspect {
        Suspect {
            term_bound,
            heard: BTreeMap::new(),
        }
    }
}

impl Raft {
    /// A vote request from `from`, sent while it was at `sender_term`, says its log ends at
    /// `(last_term, last_index)`: a suspect node keeps it when `sender_term` is above its bound.
    pub(super) fn note_log_end(
        &mut self,
        from: NodeId,
        sender_term: Term,
        last_term: Term,
        last_index: LogIndex,
    ) {
        let Some(suspect) = &mut self.suspect else {
            return;
        };
        if from == self.id || sender_term <= suspect.term_bound {
            return;
        }
        let end = suspect.heard.entry(from).or_default();
        *end = (*end).max((last_term, last_index));
        self.lift_suspicion_if_learned();
    }

    /// While suspect: the most up-to-date log end reported by a quorum of the other voters
    /// (`None` until it heard from that many; all of them when fewer than a quorum exist, so a
    /// single voter lifts its suspicion at once: nobody else can hold what it lost).
    /// Counting `quorum` voters other than itself (not `voters - quorum + 1`) keeps the
    /// intersection even when the lost tail held one membership change this node no longer
    /// knows (`docs/RAFT.md`, "Suspect tail").
    pub(super) fn suspect_floor(&self) -> Option<(Term, LogIndex)> {
        let suspect = self.suspect.as_ref()?;
        let membership = self.membership();
        let mut reporters = 0;
        let mut floor = (Term::ZERO, LogIndex::ZERO);
        for (id, &end) in &suspect.heard {
            if *id != self.id && membership.is_voter(*id) {
                reporters += 1;
                floor = floor.max(end);
            }
        }
        // No voter known (a joining node whose cut took its membership): nobody to learn from.
        if membership.voters.is_empty() {
            return None;
        }
        let others = membership.voters.len() - usize::from(membership.is_voter(self.id));
        (reporters >= membership.quorum().min(others)).then_some(floor)
    }

    /// Whether a suspect node may grant a (pre-)vote to a candidate whose log ends at
    /// `(last_term, last_index)`: only once it learned a floor, and only at or above it.
    /// Always true for a node that is not suspect.
    pub(super) fn suspect_allows_vote(&self, last_index: LogIndex, last_term: Term) -> bool {
        if self.suspect.is_none() {
            return true;
        }
        self.suspect_floor()
            .is_some_and(|floor| (last_term, last_index) >= floor)
    }

    /// Lifts the suspicion when the durable log holds an entry of a term above the bound, or
    /// reaches the learned floor: it then holds every entry it may have acknowledged.
    pub(super) fn lift_suspicion_if_learned(&mut self) {
        let Some(suspect) = &self.suspect else {
            return;
        };
        let durable_term = self.log.term_at(self.durable).unwrap_or(Term::ZERO);
        let newer_term = durable_term > suspect.term_bound;
        let at_floor = self
            .suspect_floor()
            .is_some_and(|floor| (durable_term, self.durable) >= floor);
        if newer_term || at_floor {
            self.suspect = None;
            self.stats.suspicions_lifted += 1;
        }
    }
}
