//! Configuration of one consensus core: timing in ticks, batching and pipelining ceilings, read
//! mode, and the seed of its election-timeout generator.
//!
//! Every limit is named once here and checked by [`Config::validate`] before a core starts, so the
//! core itself can rely on them (e.g. `heartbeat_ticks < election_ticks`).

use std::fmt;
use std::time::Duration;

use crate::types::NodeId;

use super::membership::MembershipError;

/// How a leader proves a read is linearizable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadMode {
    /// Confirm leadership with a heartbeat round to a quorum for every batch of reads.
    ReadIndex,
    /// Serve at the commit index without a round while the leader heard from a quorum within
    /// `election_ticks - clock_drift_ticks` ticks (needs `check_quorum`; see `docs/RAFT.md`).
    Lease {
        /// How many ticks a follower's clock may run ahead of the leader's over one election
        /// timeout. Must be below `election_ticks`.
        clock_drift_ticks: u32,
    },
}

/// A known bug the test-only switch re-inserts, to prove that the simulator's checker bites.
#[cfg(any(test, feature = "inject-bugs"))]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InjectedBug {
    /// Followers' append acks and vote grants go out at once in `Ready::messages` instead of
    /// waiting in `StorageWrite::after_durable` for their write to be durable.
    AckBeforeDurable,
    /// The leader commits by counting replicas even for entries of earlier terms (the Raft
    /// Figure 8 check is skipped).
    CommitOldTermByCounting,
    /// A leader answers linearizable reads at once from its own state, without confirming with
    /// a quorum that it is still the leader: a deposed leader that has not heard of its
    /// successor (paused, or cut off) serves stale reads.
    ReadWithoutConfirmation,
    /// A leader accepts a membership change before it has committed an entry of its own term:
    /// a change of an earlier leader that it does not hold can then commit at the same index
    /// (the single-server change bug).
    MembershipChangeBeforeTermCommit,
}

#[cfg(any(test, feature = "inject-bugs"))]
impl InjectedBug {
    /// Every injectable bug, in declaration order.
    pub const ALL: [InjectedBug; 4] = [
        InjectedBug::AckBeforeDurable,
        InjectedBug::CommitOldTermByCounting,
        InjectedBug::ReadWithoutConfirmation,
        InjectedBug::MembershipChangeBeforeTermCommit,
    ];

    /// The name `lockstep sim --bug` and `LOCKSTEP_INJECT_BUG` take.
    pub fn name(self) -> &'static str {
        match self {
            InjectedBug::AckBeforeDurable => "ack-before-durable",
            InjectedBug::CommitOldTermByCounting => "commit-old-term-by-counting",
            InjectedBug::ReadWithoutConfirmation => "read-without-confirmation",
            InjectedBug::MembershipChangeBeforeTermCommit => "membership-change-before-term-commit",
        }
    }

    /// The bug called `name` (see [`InjectedBug::name`]).
    pub fn from_name(name: &str) -> Option<InjectedBug> {
        InjectedBug::ALL.into_iter().find(|bug| bug.name() == name)
    }

    /// Every bug's name, comma-separated (for help and error texts).
    pub fn names() -> String {
        InjectedBug::ALL.map(InjectedBug::name).join(", ")
    }
}

/// Settings of one core. [`Config::new`] gives sensible defaults.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// This node's id (not 0).
    pub id: NodeId,
    /// Base election timeout in ticks; each timeout is drawn from
    /// `[election_ticks, 2 * election_ticks)`. Also the check-quorum and transfer-abort period.
    pub election_ticks: u32,
    /// A leader sends heartbeats every `heartbeat_ticks` ticks (below `election_ticks`).
    pub heartbeat_ticks: u32,
    /// Length of one tick on the clock the runtime passes to [`super::Raft::advance`] (the
    /// runtime overwrites it with its own tick length).
    pub tick: Duration,
    /// Run a pre-vote round before bumping the term, so a partitioned node cannot inflate terms.
    pub pre_vote: bool,
    /// A leader steps down when it has not heard from a quorum within an election timeout, and
    /// followers that heard from a live leader within one refuse (pre-)votes.
    pub check_quorum: bool,
    /// How reads are confirmed.
    pub read_mode: ReadMode,
    /// Most proposals sealed into one batch.
    pub batch_entries_max: u32,
    /// Most payload bytes sealed into one batch (a single larger entry gets a batch of its own).
    pub batch_bytes_max: u32,
    /// Most payload bytes per Append message (a single larger batch travels alone).
    pub append_bytes_max: u32,
    /// Per-follower pipelining window: most Append messages in flight.
    pub inflight_messages_max: u32,
    /// Per-follower pipelining window: most payload bytes in flight (one message may always go).
    pub inflight_bytes_max: u64,
    /// Bytes of snapshot data per Snapshot message.
    pub snapshot_chunk_bytes: u32,
    /// A learner is promoted only when its durable match is within this many entries of the
    /// leader's last index.
    pub promote_lag_entries_max: u64,
    /// Seed of the election-timeout generator (mixed with the node id).
    pub seed: u64,
    /// Run the full invariant check ([`super::Raft::invariants`]) after every input in release
    /// builds too (debug builds always do). It walks the log's batches and the peers on every
    /// input, so production leaves it off; the simulator and the core's tests turn it on.
    pub check_invariants: bool,
    /// Test-only: re-inserts a known bug (see [`InjectedBug`]).
    #[cfg(any(test, feature = "inject-bugs"))]
    pub inject_bug: Option<InjectedBug>,
}

impl Config {
    /// Defaults for node `id`: 1 ms ticks, 10-tick elections, 2-tick heartbeats, pre-vote and check-quorum
    /// on, read-index reads, 4096-entry / 256 KiB batches, 1 MiB appends, a window of 64
    /// messages / 16 MiB, 1 MiB snapshot chunks, the full invariant check only in debug builds.
    pub fn new(id: NodeId) -> Config {
        Config {
            id,
            election_ticks: 10,
            heartbeat_ticks: 2,
            tick: Duration::from_millis(1),
            pre_vote: true,
            check_quorum: true,
            read_mode: ReadMode::ReadIndex,
            batch_entries_max: 4096,
            batch_bytes_max: 256 << 10,
            append_bytes_max: 1 << 20,
            inflight_messages_max: 64,
            inflight_bytes_max: 16 << 20,
            snapshot_chunk_bytes: 1 << 20,
            promote_lag_entries_max: 1024,
            seed: 0,
            check_invariants: false,
            #[cfg(any(test, feature = "inject-bugs"))]
            inject_bug: None,
        }
    }

    /// Checks every setting; a core refuses to start with a bad one.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.id == NodeId::ZERO {
            return Err(ConfigError::ZeroNodeId);
        }
        if self.election_ticks < 2 {
            return Err(ConfigError::ElectionTicksTooSmall {
                election_ticks: self.election_ticks,
            });
        }
        if self.heartbeat_ticks == 0 || self.heartbeat_ticks >= self.election_ticks {
            return Err(ConfigError::HeartbeatNotBelowElection {
                heartbeat_ticks: self.heartbeat_ticks,
                election_ticks: self.election_ticks,
            });
        }
        if self.tick.is_zero() {
            return Err(ConfigError::ZeroLimit { name: "tick" });
        }
        let limits: [(&'static str, u64); 6] = [
            ("batch_entries_max", self.batch_entries_max as u64),
            ("batch_bytes_max", self.batch_bytes_max as u64),
            ("append_bytes_max", self.append_bytes_max as u64),
            ("inflight_messages_max", self.inflight_messages_max as u64),
            ("inflight_bytes_max", self.inflight_bytes_max),
            ("snapshot_chunk_bytes", self.snapshot_chunk_bytes as u64),
        ];
        if let Some((name, _)) = limits.iter().find(|(_, value)| *value == 0) {
            return Err(ConfigError::ZeroLimit { name });
        }
        if let ReadMode::Lease { clock_drift_ticks } = self.read_mode {
            if !self.check_quorum {
                return Err(ConfigError::LeaseNeedsCheckQuorum);
            }
            if clock_drift_ticks >= self.election_ticks {
                return Err(ConfigError::LeaseDriftTooLarge {
                    clock_drift_ticks,
                    election_ticks: self.election_ticks,
                });
            }
        }
        Ok(())
    }

    /// Whether the test-only switch re-inserts `bug`.
    #[cfg(any(test, feature = "inject-bugs"))]
    #[inline]
    pub(crate) fn has_bug(&self, bug: InjectedBug) -> bool {
        self.inject_bug == Some(bug)
    }
}

/// Why a core refuses to start: a bad setting or an inconsistent restored state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConfigError {
    /// `id` is 0, which means "no node".
    ZeroNodeId,
    /// `election_ticks` must be at least 2.
    ElectionTicksTooSmall {
        /// The value given.
        election_ticks: u32,
    },
    /// `heartbeat_ticks` must be at least 1 and below `election_ticks`.
    HeartbeatNotBelowElection {
        /// The value given.
        heartbeat_ticks: u32,
        /// The election timeout.
        election_ticks: u32,
    },
    /// A ceiling is 0.
    ZeroLimit {
        /// Which setting.
        name: &'static str,
    },
    /// Lease reads rely on check-quorum.
    LeaseNeedsCheckQuorum,
    /// The lease clock drift must be below the election timeout.
    LeaseDriftTooLarge {
        /// The value given.
        clock_drift_ticks: u32,
        /// The election timeout.
        election_ticks: u32,
    },
    /// The restored log does not start right after the snapshot, or has a gap.
    RestoredLogGap {
        /// The index the next batch had to start at.
        expected: crate::types::LogIndex,
        /// Where it started.
        found: crate::types::LogIndex,
    },
    /// A restored batch (or the snapshot) has a lower term than the one before it, or a term
    /// above the hard state's.
    RestoredTermOrder {
        /// The batch's first index.
        index: crate::types::LogIndex,
        /// Its term.
        term: crate::types::Term,
        /// The bound it broke.
        bound: crate::types::Term,
    },
    /// A restored membership batch does not hold a valid membership.
    RestoredMembership {
        /// The batch's first index.
        index: crate::types::LogIndex,
        /// What is wrong with it.
        error: MembershipError,
    },
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::ZeroNodeId => write!(f, "node id 0 is reserved for \"no node\""),
            ConfigError::ElectionTicksTooSmall { election_ticks } => {
                write!(f, "election_ticks {election_ticks} is below 2")
            }
            ConfigError::HeartbeatNotBelowElection {
                heartbeat_ticks,
                election_ticks,
            } => write!(
                f,
                "heartbeat_ticks {heartbeat_ticks} must be in 1..{election_ticks} (election_ticks)"
            ),
            ConfigError::ZeroLimit { name } => write!(f, "{name} is 0"),
            ConfigError::LeaseNeedsCheckQuorum => {
                write!(f, "lease reads need check_quorum = true")
            }
            ConfigError::LeaseDriftTooLarge {
                clock_drift_ticks,
                election_ticks,
            } => write!(
                f,
                "clock_drift_ticks {clock_drift_ticks} must be below election_ticks {election_ticks}"
            ),
            ConfigError::RestoredLogGap { expected, found } => {
                write!(f, "restored log: batch starts at {found}, expected {expected}")
            }
            ConfigError::RestoredTermOrder { index, term, bound } => write!(
                f,
                "restored log: batch at {index} has term {term}, out of order against {bound}"
            ),
            ConfigError::RestoredMembership { index, error } => {
                write!(f, "restored log: membership batch at {index}: {error}")
            }
        }
    }
}

impl std::error::Error for ConfigError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_injected_bug_is_listed_once_under_its_own_name() {
        for (position, bug) in InjectedBug::ALL.into_iter().enumerate() {
            // Exhaustive: a new bug does not compile until it is given its place in `ALL`.
            let declared = match bug {
                InjectedBug::AckBeforeDurable => 0,
                InjectedBug::CommitOldTermByCounting => 1,
                InjectedBug::ReadWithoutConfirmation => 2,
                InjectedBug::MembershipChangeBeforeTermCommit => 3,
            };
            assert_eq!(position, declared, "{bug:?} out of place in ALL");
            assert_eq!(InjectedBug::from_name(bug.name()), Some(bug));
        }
        assert_eq!(InjectedBug::from_name("no-such-bug"), None);
    }

    #[test]
    fn defaults_are_valid() {
        assert_eq!(Config::new(NodeId(1)).validate(), Ok(()));
    }

    #[test]
    fn bad_settings_are_refused() {
        let mut config = Config::new(NodeId(0));
        assert_eq!(config.validate(), Err(ConfigError::ZeroNodeId));
        config.id = NodeId(1);
        config.heartbeat_ticks = 10;
        assert!(matches!(
            config.validate(),
            Err(ConfigError::HeartbeatNotBelowElection { .. })
        ));
        config.heartbeat_ticks = 1;
        config.inflight_bytes_max = 0;
        assert_eq!(
            config.validate(),
            Err(ConfigError::ZeroLimit {
                name: "inflight_bytes_max"
            })
        );
        config.inflight_bytes_max = 1;
        config.read_mode = ReadMode::Lease {
            clock_drift_ticks: 10,
        };
        assert!(matches!(
            config.validate(),
            Err(ConfigError::LeaseDriftTooLarge { .. })
        ));
        config.check_quorum = false;
        assert_eq!(config.validate(), Err(ConfigError::LeaseNeedsCheckQuorum));
    }
}
