//! A blocking Rust client for the native client protocol (see `docs/FORMATS.md`, "Wire
//! protocol"): pipelined requests on one connection, and a cluster client that follows leader
//! redirects. Used by tests, `lockstep status` and `lockstep-bench`.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use crate::net::{ClientReply, ClientRequest};
use crate::node::Applied;
use crate::types::NodeId;

/// Why a client call failed.
#[derive(Debug)]
pub enum ClientError {
    /// The connection failed, closed or timed out.
    Io(io::Error),
    /// The node refused the handshake (wrong cluster id or version): its message.
    Refused(String),
    /// The node is not the leader.
    NotLeader {
        /// The leader it knows of.
        leader: Option<NodeId>,
        /// The leader's client address, if known.
        leader_addr: Option<String>,
    },
    /// The node answered with an error: its message.
    Server(String),
    /// The node sent something this client cannot decode.
    Protocol(String),
}

/// One connection to one node.
pub struct Client {}

impl Client {
    /// Connects to `addr` and performs the handshake for `cluster_id`.
    pub fn connect(
        addr: SocketAddr,
        cluster_id: u64,
        timeout: Duration,
    ) -> Result<Client, ClientError> {
        let _ = (addr, cluster_id, timeout);
        todo!("server helper")
    }

    /// Queues `request` (written on [`Client::flush`] or when the buffer fills).
    pub fn send(&mut self, request: &ClientRequest) -> Result<(), ClientError> {
        let _ = request;
        todo!("server helper")
    }

    /// Writes everything queued.
    pub fn flush(&mut self) -> Result<(), ClientError> {
        todo!("server helper")
    }

    /// Blocks for the next reply (replies come in request order per connection... or not:
    /// match them by `req`).
    pub fn recv(&mut self) -> Result<ClientReply, ClientError> {
        todo!("server helper")
    }

    /// Proposes one command and waits for its outcome.
    pub fn propose(&mut self, command: &[u8]) -> Result<Applied, ClientError> {
        let _ = command;
        todo!("server helper")
    }

    /// Runs one query and waits for the answer.
    pub fn read(&mut self, query: &[u8], linearizable: bool) -> Result<Applied, ClientError> {
        let _ = (query, linearizable);
        todo!("server helper")
    }

    /// The node's status as JSON text.
    pub fn status(&mut self) -> Result<String, ClientError> {
        todo!("server helper")
    }
}
