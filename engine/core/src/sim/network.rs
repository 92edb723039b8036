//! The simulated network: decides the fate of every message (delivered when, dropped, duplicated)
//! and holds the partitions.
//!
//! Reordering comes from independent random delays: a message may overtake an earlier one on the
//! same link. A partition is a set of cut directed links, so both symmetric splits and one-way cuts
//! are expressed the same way; a message is dropped if its link is cut when it is sent or when it
//! would arrive.

use std::collections::BTreeSet;

use crate::types::NodeId;

use super::rng::SimRng;

/// The network's fault knobs (probabilities in per mille, delays in time units).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetworkFaults {
    /// Chance a message is lost.
    pub drop_per_mille: u32,
    /// Chance a message is delivered twice.
    pub duplicate_per_mille: u32,
    /// Chance a message takes a long delay (and so is likely reordered).
    pub long_delay_per_mille: u32,
    /// Shortest delivery delay.
    pub delay_min: u64,
    /// Longest ordinary delivery delay.
    pub delay_max: u64,
    /// Longest delay of a "long delay" message.
    pub long_delay_max: u64,
}

impl NetworkFaults {
    /// A clean network: no loss, no duplicates, short delays.
    pub fn quiet(delay_min: u64, delay_max: u64) -> NetworkFaults {
        NetworkFaults {
            drop_per_mille: 0,
            duplicate_per_mille: 0,
            long_delay_per_mille: 0,
            delay_min,
            delay_max,
            long_delay_max: delay_max,
        }
    }
}

/// Link state and message fate.
#[derive(Debug)]
pub struct Network {
    faults: NetworkFaults,
    cut: BTreeSet<(NodeId, NodeId)>,
}

impl Network {
    /// A fully connected network with the given fault knobs.
    pub fn new(faults: NetworkFaults) -> Network {
        assert!(faults.delay_min >= 1 && faults.delay_min <= faults.delay_max);
        assert!(faults.delay_max <= faults.long_delay_max);
        Network {
            faults,
            cut: BTreeSet::new(),
        }
    }

    /// Replaces the fault knobs (the quiet period at the end of a run uses this).
    pub fn set_faults(&mut self, faults: NetworkFaults) {
        self.faults = faults;
    }

    /// Whether `from -> to` currently carries messages.
    pub fn connected(&self, from: NodeId, to: NodeId) -> bool {
        !self.cut.contains(&(from, to))
    }

    /// Cuts every link between `side` and `rest`, both ways.
    pub fn partition(&mut self, side: &[NodeId], rest: &[NodeId]) {
        for &a in side {
            for &b in rest {
                self.cut.insert((a, b));
                self.cut.insert((b, a));
            }
        }
    }

    /// Cuts `from -> to` only.
    pub fn cut_one_way(&mut self, from: NodeId, to: NodeId) {
        self.cut.insert((from, to));
    }

    /// Restores every link.
    pub fn heal(&mut self) {
        self.cut.clear();
    }

    /// The delivery delays of one message sent now on `from -> to`: empty if it is lost, two
    /// entries if it is duplicated.
    pub fn route(&self, rng: &mut SimRng, from: NodeId, to: NodeId) -> Vec<u64> {
        if !self.connected(from, to) || rng.chance(self.faults.drop_per_mille) {
            return Vec::new();
        }
        let copies = if rng.chance(self.faults.duplicate_per_mille) {
            2
        } else {
            1
        };
        (0..copies).map(|_| self.delay(rng)).collect()
    }

    fn delay(&self, rng: &mut SimRng) -> u64 {
        if rng.chance(self.faults.long_delay_per_mille) {
            rng.between(self.faults.delay_min, self.faults.long_delay_max)
        } else {
            rng.between(self.faults.delay_min, self.faults.delay_max)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_cut_links_and_heal_restores_them() {
        let mut network = Network::new(NetworkFaults::quiet(1, 5));
        let (a, b, c) = (NodeId(1), NodeId(2), NodeId(3));
        network.partition(&[a], &[b, c]);
        assert!(!network.connected(a, b) && !network.connected(c, a));
        assert!(network.connected(b, c));
        network.heal();
        network.cut_one_way(a, b);
        assert!(!network.connected(a, b) && network.connected(b, a));
        let mut rng = SimRng::new(3);
        assert!(network.route(&mut rng, a, b).is_empty());
        let delays = network.route(&mut rng, b, a);
        assert_eq!(delays.len(), 1);
        assert!((1..=5).contains(&delays[0]));
    }
}
