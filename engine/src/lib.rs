//! # lockstep
//!
//! A state machine replication engine: a Raft-style leader orders batched commands, every replica
//! makes them durable in preallocated, mmap'd log segments synced through io_uring, and an apply
//! stage runs a deterministic state machine over the committed order.
//!
//! Layers (each its own module, each documented where it lives):
//! - [`types`] and [`batch`]: identifiers and the batch of entries shared by every layer;
//! - [`log`]: the durable log on disk (segments, records, recovery, group commit);
//! - [`raft`]: the consensus core, pure and deterministic, plus its fault simulator;
//! - [`net`]: framed TCP for peers and clients (mio);
//! - [`node`]: the thread-per-core runtime and the embedding API ([`Node`]);
//! - [`apply`]: the execution stage and the [`StateMachine`] trait;
//! - [`apps`]: example state machines; [`server`]: the server binary's core; [`client`]: a Rust
//!   client for the native protocol.

#![warn(missing_docs)]

pub mod apply;
pub mod apps;
pub mod batch;
pub mod client;
pub mod log;
pub mod net;
pub mod node;
pub mod raft;
pub mod server;
pub mod sim;
pub mod types;

pub use self::apply::StateMachine;
pub use self::node::{Applied, Node, NodeConfig, NodeError, NodeStatus, Receipt};
