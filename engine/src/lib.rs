//! # lockstep
//!
//! A state machine replication engine: a Raft-style leader orders batched commands, every replica
//! makes them durable in preallocated, mmap'd log segments synced through io_uring, and an apply
//! stage runs a deterministic state machine over the committed order.
//!
//! Layers (each its own module, each documented where it lives):
//! - [`types`] and [`batch`]: identifiers and the batch of entries shared by every layer;
//! - [`log`]: the durable log on disk (segments, records, recovery, group commit);
//! - [`raft`]: the consensus core, pure and deterministic, plus its fault simulator.

#![warn(missing_docs)]

pub mod batch;
pub mod log;
pub mod raft;
pub mod sim;
pub mod types;
