//! The consensus core: a pure, deterministic Raft with batching and pipelining.
//!
//! [`Raft`] is a sans-I/O state machine: the runtime feeds it ticks, peer messages, proposals,
//! read requests and "durable up to write w" / "applied up to index i", and takes [`Ready`]
//! outputs (messages, one [`StorageWrite`], committed batches, confirmed reads). It never touches
//! a file, socket, clock or thread, and its only randomness is a PRNG seeded from the config, so
//! the same inputs always give the same outputs. The contract is written down in `docs/RAFT.md`.

mod config;
mod core;
pub mod membership;
mod memlog;
mod message;
mod progress;
mod read_only;
mod ready;
mod status;

#[cfg(any(test, feature = "inject-bugs"))]
pub use self::config::InjectedBug;
pub use self::config::{Config, ConfigError, ReadMode};
pub use self::core::Raft;
pub use self::membership::{MemberAddr, Membership, MembershipChange, MembershipError};
pub use self::message::{Message, MessageBody};
pub use self::ready::{
    HardState, ReadId, ReadReady, Ready, Restored, Role, SnapshotMeta, SoftState, StorageWrite,
    WriteId,
};
pub use self::status::{
    PeerStatus, ProgressState, ProposeError, Stats, Status, TERM_NOT_COMMITTED_TEXT,
};

#[cfg(test)]
mod tests;
