//! The deterministic fault simulator for the consensus core.
//!
//! Real [`crate::raft::Raft`] cores run as a cluster inside one thread, driven by a seeded event
//! queue in virtual time: ticks of drifting (bounded) clocks, message deliveries through a faulty network (drop, delay,
//! reorder, duplicate, symmetric and one-way partitions), disk syncs completing after random
//! latencies (with a slow-disk mode), crashes that lose unsynced writes (keeping a random,
//! possibly torn, prefix), restarts from the durable state, client proposals and linearizable
//! reads, leadership transfers, snapshots and membership changes. After every step the checker verifies Raft's safety
//! properties; at the end of a run a quiet period checks liveness. The seed alone determines the
//! run: `lockstep sim --seed S` replays it. See `docs/SIMULATION.md`.

mod checker;
mod cluster;
mod disk;
mod network;
mod profile;
mod queue;
mod rng;
mod trace;

#[cfg(test)]
mod scenarios;
#[cfg(test)]
mod tests;

pub use self::checker::{Invariant, Violation};
pub use self::cluster::{run, SimOptions, SimReport, SimStats, ELECTION_TICKS, LIVENESS_TICKS};
pub use self::profile::TICK;
pub use self::rng::SimRng;
