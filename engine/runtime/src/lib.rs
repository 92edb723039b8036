//! # lockstep
//!
//! A state machine replication engine: a Raft-style leader orders batched commands, every replica
//! makes them durable in preallocated, mmap'd log segments synced through io_uring, and an apply
//! stage runs a deterministic state machine over the committed order.
//!
//! This crate is the runtime and the embedding API; the lower layers are their own crates,
//! re-exported here:
//! - [`types`] and [`batch`]: identifiers and the batch of entries shared by every layer
//!   (`lockstep-core`);
//! - [`raft`] and [`sim`]: the consensus core, pure and deterministic, and its fault simulator
//!   (`lockstep-core`);
//! - [`log`]: the durable log on disk (segments, records, recovery, group commit)
//!   (`lockstep-log`);
//! - [`net`]: framed TCP for peers and clients (mio), TLS with the `tls` feature;
//! - [`node`]: the thread-per-core runtime and the embedding API ([`Node`]);
//! - [`apply`]: the execution stage and the [`StateMachine`] trait;
//! - [`resp`]: RESP2 sessions for a command set ([`resp::Frontend`]); [`client`]: a Rust client
//!   for the native protocol.
//!
//! The server (configuration file, the kv / bank / lock apps, metrics) is the `lockstep-server`
//! crate.
//!
//! Embedding, in short (a one-member cluster; `engine/runtime/examples/embed.rs` runs three
//! members, `embed_async.rs` does it from async code, and `docs/EMBEDDING.md` is the guide):
//! ```no_run
//! use std::collections::BTreeMap;
//! use bytes::Bytes;
//! use lockstep::node::PeerConfig;
//! use lockstep::types::{LogIndex, NodeId};
//! use lockstep::{Node, NodeConfig, Role, StateMachine};
//!
//! #[derive(Default)]
//! struct Count(u64);
//!
//! impl StateMachine for Count {
//!     fn apply(&mut self, _index: LogIndex, _command: &[u8]) -> Bytes {
//!         self.0 += 1;
//!         Bytes::from(self.0.to_string())
//!     }
//!     fn query(&self, _query: &[u8]) -> Bytes {
//!         Bytes::from(self.0.to_string())
//!     }
//!     fn snapshot(&self, out: &mut Vec<u8>) {
//!         out.extend_from_slice(&self.0.to_le_bytes());
//!     }
//!     fn restore(&mut self, data: &[u8]) -> Result<(), lockstep::apply::RestoreError> {
//!         self.0 = u64::from_le_bytes(data.try_into().map_err(|_| "8 bytes expected")?);
//!         Ok(())
//!     }
//! }
//!
//! let peer = PeerConfig { peer_addr: "127.0.0.1:7001".parse()?, client_addr: None };
//! let members = BTreeMap::from([(NodeId(1), peer)]);
//! let node = Node::start(NodeConfig::new(NodeId(1), 1, members, "/tmp/count".into()), Count(0))?;
//! // Wait until it leads; proposals before get `NodeError::NotLeader`.
//! let mut events = node.subscribe();
//! while node.leadership().role != Role::Leader {
//!     events.wait_changed();
//! }
//! let applied = node.propose(Bytes::from_static(b"+1")).wait()?;
//! println!("committed at {}: {:?}", applied.index, applied.result);
//! node.shutdown()?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![deny(missing_docs)]

pub mod apply;
pub mod client;
pub mod net;
pub mod node;
pub mod resp;
mod stage;

pub use lockstep_core::{batch, raft, sim, types};
pub use lockstep_log as log;

pub use self::apply::StateMachine;
pub use self::node::{
    Applied, AppliedBatch, ConfigError, LeaderHint, Leadership, Node, NodeConfig, NodeError,
    NodeStatus, Receipt, Refusal, Role, Subscription,
};
pub use self::stage::STAGE_PANIC_EXIT_STATUS;
/// Test hooks (feature `test-hooks`): the variables that make a stage of a child process panic.
#[cfg(feature = "test-hooks")]
pub use self::stage::{CHILD_MODE_VAR, PANIC_STAGE_VAR};
