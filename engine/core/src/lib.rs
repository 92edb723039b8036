//! # lockstep-core
//!
//! The pure layer of lockstep, with no I/O, no clocks and no threads:
//! - [`types`] and [`batch`]: identifiers and the batch of entries every other layer shares;
//! - [`raft`]: the consensus core, a sans-I/O deterministic Raft (`docs/RAFT.md`);
//! - [`sim`]: the deterministic fault simulator that drives real cores (`docs/SIMULATION.md`).
//!
//! Embedders normally depend on the `lockstep` crate, which re-exports these modules.

#![deny(missing_docs)]

pub mod batch;
pub mod raft;
pub mod sim;
pub mod types;
