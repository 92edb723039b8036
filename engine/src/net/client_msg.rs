//! The client protocol's messages and their encoding (frame bodies; the frame itself is the
//! transport's). Pure functions over bytes.

use bytes::Bytes;

use crate::types::{LogIndex, NodeId};

/// Why bytes could not be decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CodecError(pub String);

/// The first frame a client sends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientHello {
    /// Client protocol version.
    pub version: u16,
    /// The cluster the client expects.
    pub cluster_id: u64,
}

/// A client's request. `req` is chosen by the client and echoed in the reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientRequest {
    /// Append a command; replied to once committed and applied.
    Propose {
        /// Request id.
        req: u64,
        /// The command for the state machine.
        command: Bytes,
    },
    /// Run a read-only query.
    Read {
        /// Request id.
        req: u64,
        /// The query for the state machine.
        query: Bytes,
        /// Linearizable (through the leader, read-index) or local (this node's applied state,
        /// possibly stale, served by any node).
        linearizable: bool,
    },
    /// Ask for the node's status (answered as JSON).
    Status {
        /// Request id.
        req: u64,
    },
    /// Ask the leader to hand leadership to `to`.
    TransferLeader {
        /// Request id.
        req: u64,
        /// The node to take over.
        to: NodeId,
    },
}

/// The node's answer to one request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientReply {
    /// The command committed at `index` and the state machine answered `result`.
    Applied {
        /// Request id.
        req: u64,
        /// Log index of the command.
        index: LogIndex,
        /// The state machine's reply.
        result: Bytes,
    },
    /// The query's answer, reflecting everything applied up to `index`.
    ReadOk {
        /// Request id.
        req: u64,
        /// Applied index the answer reflects.
        index: LogIndex,
        /// The state machine's answer.
        result: Bytes,
    },
    /// This node is not the leader; retry at the leader if one is known.
    NotLeader {
        /// Request id.
        req: u64,
        /// The leader, if known.
        leader: Option<NodeId>,
        /// The leader's client address, if known.
        leader_addr: Option<String>,
    },
    /// The node's status as JSON.
    Status {
        /// Request id.
        req: u64,
        /// JSON text.
        json: String,
    },
    /// Done (for requests with nothing to return).
    Ok {
        /// Request id.
        req: u64,
    },
    /// The request failed; `message` says why. For a proposal the outcome may be unknown (it may
    /// still commit): the message says so.
    Error {
        /// Request id.
        req: u64,
        /// What went wrong.
        message: String,
    },
}

impl ClientHello {
    /// Appends the encoded hello to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let _ = out;
        todo!("net helper")
    }

    /// Decodes a hello frame body.
    pub fn decode(body: &[u8]) -> Result<ClientHello, CodecError> {
        let _ = body;
        todo!("net helper")
    }
}

impl ClientRequest {
    /// Appends the encoded request (a frame body) to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let _ = out;
        todo!("net helper")
    }

    /// Decodes a request frame body.
    pub fn decode(body: &[u8]) -> Result<ClientRequest, CodecError> {
        let _ = body;
        todo!("net helper")
    }
}

impl ClientReply {
    /// Appends the encoded reply (a frame body) to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let _ = out;
        todo!("net helper")
    }

    /// Decodes a reply frame body.
    pub fn decode(body: &[u8]) -> Result<ClientReply, CodecError> {
        let _ = body;
        todo!("net helper")
    }
}
