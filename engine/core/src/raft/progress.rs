//! A leader's replication state for one follower: where to send next, what it holds durably,
//! and the pipelining window of Append messages in flight (bounded by messages and bytes).
//!
//! Modes: `Probe` sends one Append and waits for its answer; `Replicate` sends optimistically
//! while the window has room and frees it as acks arrive; `Snapshot` sends snapshot chunks one
//! at a time. Guarantees: `match_index < next_index`; the window never holds more than
//! `inflight_messages_max` messages, nor more than `inflight_bytes_max` bytes unless it holds a
//! single message (one message may always go, so a batch larger than the window still moves).

use std::collections::VecDeque;

use crate::types::LogIndex;

use super::status::ProgressState;

/// Replication state of one peer.
#[derive(Debug)]
pub(crate) struct Progress {
    /// Highest index the peer holds durably (acknowledged).
    pub(crate) match_index: LogIndex,
    /// Next index to send.
    pub(crate) next_index: LogIndex,
    /// Mode.
    pub(crate) state: ProgressState,
    /// Whether it votes.
    pub(crate) voter: bool,
    /// Probe mode: an Append is outstanding.
    probe_sent: bool,
    /// Replicate mode: last index and payload bytes of each Append in flight, oldest first.
    inflight: VecDeque<(LogIndex, u64)>,
    inflight_bytes: u64,
    /// Heartbeat answers seen while `match_index` did not move and entries were outstanding.
    pub(crate) stalled_heartbeats: u32,
    /// Heard from since the last check-quorum period.
    pub(crate) recent_active: bool,
    /// Highest heartbeat round it answered.
    pub(crate) acked_round: u64,
    /// Snapshot mode: index of the snapshot being sent.
    pub(crate) snapshot_index: LogIndex,
    /// Snapshot mode: byte offset the peer last said it expects.
    pub(crate) snapshot_acked: u64,
    /// Snapshot mode: end offset of the last chunk sent.
    pub(crate) snapshot_sent_end: u64,
    /// Snapshot mode: an answer moved the transfer since the last heartbeat answer.
    pub(crate) snapshot_progressed: bool,
}

impl Progress {
    /// A peer in probe mode, to be sent `next_index` first.
    pub(crate) fn new(next_index: LogIndex, voter: bool) -> Progress {
        Progress {
            match_index: LogIndex::ZERO,
            next_index,
            state: ProgressState::Probe,
            voter,
            probe_sent: false,
            inflight: VecDeque::new(),
            inflight_bytes: 0,
            stalled_heartbeats: 0,
            recent_active: false,
            acked_round: 0,
            snapshot_index: LogIndex::ZERO,
            snapshot_acked: 0,
            snapshot_sent_end: 0,
            snapshot_progressed: false,
        }
    }

    /// Append messages in flight.
    pub(crate) fn inflight_messages(&self) -> u32 {
        self.inflight.len() as u32
    }

    /// Payload bytes in flight.
    pub(crate) fn inflight_bytes(&self) -> u64 {
        self.inflight_bytes
    }

    /// Whether an Append may be sent now (the caller also checks there is something to send
    /// in replicate mode).
    pub(crate) fn can_send(&self, messages_max: u32, bytes_max: u64) -> bool {
        match self.state {
            ProgressState::Probe => !self.probe_sent,
            ProgressState::Replicate => {
                self.inflight.is_empty()
                    || (self.inflight.len() < messages_max as usize
                        && self.inflight_bytes < bytes_max)
            }
            ProgressState::Snapshot => false,
        }
    }

    /// Records an Append sent, covering up to `last_index` with `bytes` of payload.
    pub(crate) fn on_sent(&mut self, last_index: LogIndex, bytes: u64) {
        match self.state {
            ProgressState::Probe => self.probe_sent = true,
            ProgressState::Replicate => {
                assert!(
                    last_index >= self.next_index,
                    "replicate send up to {last_index} below next {}",
                    self.next_index
                );
                self.inflight.push_back((last_index, bytes));
                self.inflight_bytes += bytes;
                self.next_index = last_index.next();
            }
            ProgressState::Snapshot => unreachable!("append sent in snapshot mode"),
        }
    }

    /// The peer holds `index` durably. Returns whether `match_index` moved.
    pub(crate) fn on_ack(&mut self, index: LogIndex) -> bool {
        if index <= self.match_index {
            return false;
        }
        self.match_index = index;
        self.next_index = self.next_index.max(index.next());
        self.stalled_heartbeats = 0;
        while let Some(&(last, bytes)) = self.inflight.front() {
            if last > index {
                break;
            }
            self.inflight.pop_front();
            self.inflight_bytes -= bytes;
        }
        match self.state {
            ProgressState::Probe => self.become_replicate(),
            ProgressState::Snapshot if index >= self.snapshot_index => self.become_replicate(),
            _ => {}
        }
        true
    }

    /// Probe mode: the answer to the outstanding probe is lost or overdue; allow another.
    pub(crate) fn unpause_probe(&mut self) {
        self.probe_sent = false;
    }

    /// Back to probing from `next_index`.
    pub(crate) fn become_probe(&mut self, next_index: LogIndex) {
        assert!(
            next_index > self.match_index,
            "probe from {next_index} at or below match {}",
            self.match_index
        );
        self.state = ProgressState::Probe;
        self.next_index = next_index;
        self.probe_sent = false;
        self.clear_inflight();
    }

    /// The peer says its log ends at `last_index`, below its match: it lost entries it had
    /// acknowledged (a damaged log cut at its restart, now being repaired; or this is a stale
    /// answer). Its log up to `last_index` is unchanged since it acknowledged more in this term,
    /// so it still holds our entries up to there; probe from just after.
    pub(crate) fn on_lost_entries(&mut self, last_index: LogIndex) {
        assert!(
            last_index < self.match_index,
            "lost entries down to {last_index} but match is only {}",
            self.match_index
        );
        self.match_index = last_index;
        self.become_probe(last_index.next());
    }

    /// Optimistic sending from just after the match.
    pub(crate) fn become_replicate(&mut self) {
        self.state = ProgressState::Replicate;
        self.next_index = self.match_index.next();
        self.clear_inflight();
    }

    /// Sending snapshot `index` from its start.
    pub(crate) fn become_snapshot(&mut self, index: LogIndex) {
        self.state = ProgressState::Snapshot;
        self.snapshot_index = index;
        self.snapshot_acked = 0;
        self.snapshot_sent_end = 0;
        self.snapshot_progressed = false;
        self.clear_inflight();
    }

    fn clear_inflight(&mut self) {
        self.inflight.clear();
        self.inflight_bytes = 0;
        self.stalled_heartbeats = 0;
    }

    /// Asserts the module's invariants against the leader's last index.
    pub(crate) fn check(&self, last_index: LogIndex) {
        assert!(
            self.match_index < self.next_index,
            "progress match {} not below next {}",
            self.match_index,
            self.next_index
        );
        assert!(
            self.match_index <= last_index,
            "progress match {} past the leader's last index {last_index}",
            self.match_index
        );
        let bytes: u64 = self.inflight.iter().map(|&(_, b)| b).sum();
        assert_eq!(bytes, self.inflight_bytes, "inflight byte count drifted");
        if self.state != ProgressState::Replicate {
            assert!(self.inflight.is_empty(), "inflight outside replicate mode");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_bounds_messages_and_bytes() {
        let mut progress = Progress::new(LogIndex(1), true);
        assert!(progress.can_send(2, 100));
        progress.on_sent(LogIndex(5), 10);
        assert!(!progress.can_send(2, 100), "probe waits for its answer");
        assert!(progress.on_ack(LogIndex(5)));
        assert_eq!(progress.state, ProgressState::Replicate);
        assert_eq!(progress.next_index, LogIndex(6));
        progress.on_sent(LogIndex(8), 60);
        assert!(progress.can_send(2, 100));
        progress.on_sent(LogIndex(9), 60);
        assert!(!progress.can_send(2, 100), "message bound");
        progress.on_ack(LogIndex(8));
        assert_eq!(progress.inflight_messages(), 1);
        assert!(progress.can_send(2, 100));
        progress.on_sent(LogIndex(10), 50);
        assert!(!progress.can_send(3, 100), "byte bound: 110 in flight");
        progress.check(LogIndex(10));
        progress.on_ack(LogIndex(10));
        assert_eq!(progress.inflight_bytes(), 0);
    }

    #[test]
    fn a_single_large_message_may_go() {
        let mut progress = Progress::new(LogIndex(1), true);
        progress.become_replicate();
        assert!(progress.can_send(4, 10));
        progress.on_sent(LogIndex(3), 1000);
        assert!(!progress.can_send(4, 10));
    }

    #[test]
    fn stale_acks_do_not_move_match() {
        let mut progress = Progress::new(LogIndex(1), true);
        assert!(progress.on_ack(LogIndex(4)));
        assert!(!progress.on_ack(LogIndex(3)));
        assert_eq!(progress.match_index, LogIndex(4));
        progress.become_snapshot(LogIndex(10));
        assert!(!progress.can_send(4, 10));
        progress.on_ack(LogIndex(10));
        assert_eq!(progress.state, ProgressState::Replicate);
        assert_eq!(progress.next_index, LogIndex(11));
    }
}
