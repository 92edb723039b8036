//! Linearizable reads on the leader: read-index rounds and the lease.
//!
//! A read registered at commit index `c` joins the next heartbeat round `r`; once a quorum of
//! voters has answered a round `>= r`, the leader was still the leader after the read arrived,
//! so the read is safe once the state machine has applied `c`. Reads that arrive before the
//! leader has committed an entry of its own term wait (the commit index may be stale until
//! then). For the lease, the time at which each round was sent is remembered (on the clock the
//! runtime passes to the core): the quorum-acked round's send time bounds how recently a quorum
//! promised not to elect anyone else.

use std::collections::VecDeque;
use std::time::Duration;

use crate::types::LogIndex;

use super::ready::{ReadId, ReadReady};

/// Most round send times remembered; older ones are dropped (the lease then just lapses).
const ROUND_SENDS_MAX: usize = 1024;

/// Reads waiting for confirmation, and heartbeat rounds.
#[derive(Debug, Default)]
pub(crate) struct ReadQueue {
    /// Reads waiting for the leader's first commit in its term.
    waiting_commit: Vec<ReadId>,
    /// Reads waiting for round `.2` to be acked by a quorum: (id, index, round).
    pending: VecDeque<(ReadId, LogIndex, u64)>,
    /// The last round started.
    round: u64,
    /// A read needs a round that has not been started yet.
    round_due: bool,
    /// (round, time it was sent), ascending.
    round_sends: VecDeque<(u64, Duration)>,
}

impl ReadQueue {
    /// The last round started.
    pub(crate) fn round(&self) -> u64 {
        self.round
    }

    /// Whether a read waits for a round not started yet.
    pub(crate) fn round_due(&self) -> bool {
        self.round_due
    }

    /// Whether any read waits for anything.
    pub(crate) fn is_empty(&self) -> bool {
        self.waiting_commit.is_empty() && self.pending.is_empty()
    }

    /// Starts a new round sent at `now`; returns its number.
    pub(crate) fn start_round(&mut self, now: Duration) -> u64 {
        if let Some(&(round, sent_at)) = self.round_sends.back() {
            assert!(
                sent_at <= now,
                "round {} at {now:?} before round {round} at {sent_at:?}",
                self.round + 1
            );
        }
        self.round += 1;
        self.round_due = false;
        if self.round_sends.len() == ROUND_SENDS_MAX {
            self.round_sends.pop_front();
        }
        self.round_sends.push_back((self.round, now));
        self.round
    }

    /// A read that must wait until the leader commits in its term.
    pub(crate) fn wait_for_commit(&mut self, id: ReadId) {
        self.waiting_commit.push(id);
    }

    /// A read at `index` joining the next round.
    pub(crate) fn push(&mut self, id: ReadId, index: LogIndex) {
        self.pending.push_back((id, index, self.round + 1));
        self.round_due = true;
    }

    /// The leader committed in its term at `commit`: waiting reads join the next round.
    pub(crate) fn release_waiting(&mut self, commit: LogIndex) {
        for id in std::mem::take(&mut self.waiting_commit) {
            self.push(id, commit);
        }
    }

    /// Rounds up to `quorum_round` are acked by a quorum: confirm their reads into `out`,
    /// and forget the send times of older rounds.
    pub(crate) fn confirm(&mut self, quorum_round: u64, out: &mut Vec<ReadReady>) {
        while let Some(&(id, index, round)) = self.pending.front() {
            if round > quorum_round {
                break;
            }
            self.pending.pop_front();
            out.push(ReadReady { id, index });
        }
        while self.round_sends.len() > 1 && self.round_sends[1].0 <= quorum_round {
            self.round_sends.pop_front();
        }
    }

    /// The time round `round` was sent at, if remembered.
    pub(crate) fn sent_at(&self, round: u64) -> Option<Duration> {
        self.round_sends
            .iter()
            .find(|&&(r, _)| r == round)
            .map(|&(_, sent_at)| sent_at)
    }

    /// Leadership lost: every waiting read fails (into `out`); rounds restart.
    pub(crate) fn fail_all(&mut self, out: &mut Vec<ReadId>) {
        out.append(&mut self.waiting_commit);
        out.extend(self.pending.drain(..).map(|(id, _, _)| id));
        self.round_due = false;
        self.round_sends.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_confirm_by_round() {
        let mut queue = ReadQueue::default();
        queue.push(ReadId(1), LogIndex(5));
        assert!(queue.round_due());
        assert_eq!(queue.start_round(Duration::from_millis(10)), 1);
        queue.push(ReadId(2), LogIndex(6));
        let mut ready = Vec::new();
        queue.confirm(1, &mut ready);
        assert_eq!(
            ready,
            vec![ReadReady {
                id: ReadId(1),
                index: LogIndex(5)
            }]
        );
        assert_eq!(queue.start_round(Duration::from_millis(11)), 2);
        assert_eq!(queue.sent_at(2), Some(Duration::from_millis(11)));
        queue.confirm(2, &mut ready);
        assert_eq!(ready.len(), 2);
        assert_eq!(queue.sent_at(1), None, "older rounds forgotten");
    }

    #[test]
    fn step_down_fails_everything() {
        let mut queue = ReadQueue::default();
        queue.wait_for_commit(ReadId(7));
        queue.push(ReadId(8), LogIndex(1));
        let mut failed = Vec::new();
        queue.fail_all(&mut failed);
        assert_eq!(failed, vec![ReadId(7), ReadId(8)]);
        assert!(queue.is_empty());
    }
}
