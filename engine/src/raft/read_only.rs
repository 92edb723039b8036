//! Linearizable reads on the leader: read-index rounds and the lease.
//!
//! A read registered at commit index `c` joins the next heartbeat round `r`; once a quorum of
//! voters has answered a round `>= r`, the leader was still the leader after the read arrived,
//! so the read is safe once the state machine has applied `c`. Reads that arrive before the
//! leader has committed an entry of its own term wait (the commit index may be stale until
//! then). For the lease, the tick at which each round was sent is remembered: the quorum-acked
//! round's send tick bounds how recently a quorum promised not to elect anyone else.

use std::collections::VecDeque;

use crate::types::LogIndex;

use super::ready::{ReadId, ReadReady};

/// Most round send-ticks remembered; older ones are dropped (the lease then just lapses).
const ROUND_TICKS_MAX: usize = 1024;

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
    /// (round, tick it was sent), ascending.
    round_ticks: VecDeque<(u64, u64)>,
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

    /// Starts a new round at `tick`; returns its number.
    pub(crate) fn start_round(&mut self, tick: u64) -> u64 {
        self.round += 1;
        self.round_due = false;
        if self.round_ticks.len() == ROUND_TICKS_MAX {
            self.round_ticks.pop_front();
        }
        self.round_ticks.push_back((self.round, tick));
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
    /// and forget send ticks of older rounds.
    pub(crate) fn confirm(&mut self, quorum_round: u64, out: &mut Vec<ReadReady>) {
        while let Some(&(id, index, round)) = self.pending.front() {
            if round > quorum_round {
                break;
            }
            self.pending.pop_front();
            out.push(ReadReady { id, index });
        }
        while self.round_ticks.len() > 1 && self.round_ticks[1].0 <= quorum_round {
            self.round_ticks.pop_front();
        }
    }

    /// The tick round `round` was sent at, if remembered.
    pub(crate) fn sent_tick(&self, round: u64) -> Option<u64> {
        self.round_ticks
            .iter()
            .find(|&&(r, _)| r == round)
            .map(|&(_, tick)| tick)
    }

    /// Leadership lost: every waiting read fails (into `out`); rounds restart.
    pub(crate) fn fail_all(&mut self, out: &mut Vec<ReadId>) {
        out.append(&mut self.waiting_commit);
        out.extend(self.pending.drain(..).map(|(id, _, _)| id));
        self.round_due = false;
        self.round_ticks.clear();
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
        assert_eq!(queue.start_round(10), 1);
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
        assert_eq!(queue.start_round(11), 2);
        assert_eq!(queue.sent_tick(2), Some(11));
        queue.confirm(2, &mut ready);
        assert_eq!(ready.len(), 2);
        assert_eq!(queue.sent_tick(1), None, "older rounds forgotten");
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
