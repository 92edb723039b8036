//! The Raft core (being filled in).

use bytes::Bytes;

use crate::types::LogIndex;

use super::config::{Config, ConfigError};
use super::membership::MembershipChange;
use super::message::Message;
use super::ready::{ReadId, Ready, Restored, SnapshotMeta, WriteId};
use super::status::{ProposeError, Status};

/// One node's consensus core.
pub struct Raft {
    config: Config,
}

impl Raft {
    /// Starts a core from its config and what the runtime restored from disk.
    pub fn new(config: Config, restored: Restored) -> Result<Raft, ConfigError> {
        config.validate()?;
        let _ = restored;
        Ok(Raft { config })
    }

    /// One unit of logical time.
    pub fn tick(&mut self) {
        unimplemented!("{:?}", self.config.id)
    }

    /// Handles a message from a peer.
    pub fn step(&mut self, message: Message) {
        unimplemented!("{message:?}")
    }

    /// Copies `command` into the pending batch; returns the index it will have.
    pub fn propose(&mut self, command: &[u8]) -> Result<LogIndex, ProposeError> {
        unimplemented!("{}", command.len())
    }

    /// Proposes one membership change.
    pub fn propose_membership(
        &mut self,
        change: MembershipChange,
    ) -> Result<LogIndex, ProposeError> {
        unimplemented!("{change:?}")
    }

    /// Starts a linearizable read.
    pub fn read_index(&mut self, id: ReadId) -> Result<(), ProposeError> {
        unimplemented!("{id:?}")
    }

    /// Hands leadership to `to`.
    pub fn transfer_leadership(&mut self, to: crate::types::NodeId) -> Result<(), ProposeError> {
        unimplemented!("{to:?}")
    }

    /// Every write with id <= `write` is durable.
    pub fn on_durable(&mut self, write: WriteId) {
        unimplemented!("{write:?}")
    }

    /// The state machine applied everything up to `index`.
    pub fn on_applied(&mut self, index: LogIndex) {
        unimplemented!("{index:?}")
    }

    /// The runtime took a snapshot up to `meta.index`.
    pub fn compact(&mut self, meta: SnapshotMeta, data: Bytes) {
        unimplemented!("{meta:?} {}", data.len())
    }

    /// Whether `ready` would return anything.
    pub fn has_ready(&self) -> bool {
        unimplemented!()
    }

    /// Takes the outputs.
    pub fn ready(&mut self) -> Ready {
        unimplemented!()
    }

    /// A snapshot of the core's state.
    pub fn status(&self) -> Status {
        unimplemented!()
    }
}
