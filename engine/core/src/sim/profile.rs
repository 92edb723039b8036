//! The fault and workload mix of one run, drawn from its seed.
//!
//! Seeds differ in how hostile they are: some run a clean network with rare crashes (so long
//! stretches of progress happen and bugs that need commits show up), others drop, duplicate and
//! reorder heavily while partitioning and crashing often. The mix is a pure function of the seed.

use super::disk::DiskLatency;
use super::network::NetworkFaults;
use super::rng::SimRng;

/// Virtual time units per core tick.
pub const TICK: u64 = 100;

/// How a run behaves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Profile {
    /// Network fault knobs.
    pub network: NetworkFaults,
    /// Disk latency knobs.
    pub disk: DiskLatency,
    /// Most time between two nemesis actions.
    pub nemesis_gap_max: u64,
    /// Relative weights of the nemesis actions, in [`NemesisAction`] order.
    pub weights: [u32; NEMESIS_ACTIONS],
    /// Most time a crashed node stays down.
    pub downtime_max: u64,
    /// Most time between two client proposal bursts.
    pub propose_gap_max: u64,
    /// Most proposals per burst.
    pub propose_burst_max: u64,
    /// Most time between two client reads (0: no reads).
    pub read_gap_max: u64,
    /// Lease reads instead of read-index.
    pub lease_reads: bool,
    /// Membership changes happen (the cluster gets one spare node to add).
    pub membership_changes: bool,
    /// Compact after this many applied entries past the last snapshot (0: never).
    pub compact_every: u64,
    /// Core ceilings: entries per batch, payload bytes per Append, Appends in flight, snapshot
    /// chunk bytes.
    pub batch_entries_max: u32,
    /// See `batch_entries_max`.
    pub append_bytes_max: u32,
    /// See `batch_entries_max`.
    pub inflight_messages_max: u32,
    /// See `batch_entries_max`.
    pub snapshot_chunk_bytes: u32,
    /// Chance (per mille) that a node restarting after a crash finds a suffix of its durable
    /// log gone (a lost or cut segment file) and restarts in repair. At most one node at a time
    /// is damaged and not yet repaired (a second one at once is beyond a single fault).
    pub damaged_restart_per_mille: u32,
}

/// Number of kinds of nemesis action.
pub const NEMESIS_ACTIONS: usize = 8;

/// What the nemesis can do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NemesisAction {
    /// Crash a running node (it restarts after a random downtime).
    Crash,
    /// Split the nodes in two groups, both ways.
    Partition,
    /// Cut one direction of one link.
    CutOneWay,
    /// Restore every link.
    Heal,
    /// Turn a node's slow-disk mode on or off.
    ToggleSlowDisk,
    /// Ask the leader to hand leadership to another voter.
    TransferLeadership,
    /// Crash the current leader (the most interesting crash).
    CrashLeader,
    /// Ask the leader to add a learner, promote one, or remove a member.
    ChangeMembership,
}

impl NemesisAction {
    /// Every action, in weight order.
    pub const ALL: [NemesisAction; NEMESIS_ACTIONS] = [
        NemesisAction::Crash,
        NemesisAction::Partition,
        NemesisAction::CutOneWay,
        NemesisAction::Heal,
        NemesisAction::ToggleSlowDisk,
        NemesisAction::TransferLeadership,
        NemesisAction::CrashLeader,
        NemesisAction::ChangeMembership,
    ];
}

impl Profile {
    /// The mix of `seed` (drawn from its own generator, so it does not shift the run's stream).
    pub fn for_seed(seed: u64) -> Profile {
        let mut rng = SimRng::new(seed ^ 0xA5A5_5A5A_0F0F_F0F0);
        let hostile = rng.chance(500);
        let network = NetworkFaults {
            drop_per_mille: if hostile {
                rng.between(0, 80) as u32
            } else {
                0
            },
            duplicate_per_mille: if hostile {
                rng.between(0, 40) as u32
            } else {
                0
            },
            long_delay_per_mille: rng.between(0, 100) as u32,
            delay_min: 1,
            delay_max: rng.between(5, 60),
            long_delay_max: rng.between(100, 8 * TICK),
        };
        let disk = DiskLatency {
            sync_min: 1,
            sync_max: rng.between(5, 80),
            slow_sync_max: rng.between(2 * TICK, 25 * TICK),
        };
        let mut weights = [0u32; NEMESIS_ACTIONS];
        for weight in weights.iter_mut() {
            *weight = rng.below(10) as u32;
        }
        // Heal must be possible so partitions do not pile up forever.
        weights[NemesisAction::Heal as usize] += 3;
        if rng.chance(300) {
            weights[NemesisAction::TransferLeadership as usize] = 0;
        }
        let lease_reads = rng.chance(250);
        let membership_changes = rng.chance(400);
        if !membership_changes {
            weights[NemesisAction::ChangeMembership as usize] = 0;
        }
        Profile {
            network,
            disk,
            nemesis_gap_max: rng.between(3, 40) * TICK,
            weights,
            downtime_max: rng.between(2, 40) * TICK,
            propose_gap_max: rng.between(5, 3 * TICK),
            propose_burst_max: rng.between(1, 16),
            read_gap_max: if rng.chance(800) {
                rng.between(20, 4 * TICK)
            } else {
                0
            },
            lease_reads,
            membership_changes,
            compact_every: if rng.chance(400) {
                rng.between(5, 200)
            } else {
                0
            },
            batch_entries_max: *rng.pick(&[1, 3, 64, 4096]),
            append_bytes_max: *rng.pick(&[20, 100, 1000, 1 << 20]),
            inflight_messages_max: *rng.pick(&[1, 4, 8, 64]),
            snapshot_chunk_bytes: *rng.pick(&[7, 24, 1 << 20]),
            // Drawn last: the draws above (and so every earlier seed's mix) stay as they were.
            damaged_restart_per_mille: if rng.chance(300) {
                rng.between(100, 500) as u32
            } else {
                0
            },
        }
    }

    /// A random nemesis action according to the weights (`None` if all weights are 0).
    pub fn pick_action(&self, rng: &mut SimRng) -> Option<NemesisAction> {
        let total: u32 = self.weights.iter().sum();
        if total == 0 {
            return None;
        }
        let mut roll = rng.below(total as u64) as u32;
        for (action, weight) in NemesisAction::ALL.iter().zip(self.weights) {
            if roll < weight {
                return Some(*action);
            }
            roll -= weight;
        }
        unreachable!("roll below the total weight")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profiles_are_a_function_of_the_seed_and_vary() {
        assert_eq!(Profile::for_seed(9), Profile::for_seed(9));
        let distinct: std::collections::BTreeSet<_> = (0..50)
            .map(|seed| format!("{:?}", Profile::for_seed(seed)))
            .collect();
        assert!(distinct.len() > 40);
        let lease = (0..200)
            .filter(|&s| Profile::for_seed(s).lease_reads)
            .count();
        assert!(
            lease > 10 && lease < 190,
            "{lease} of 200 seeds use lease reads"
        );
    }
}
