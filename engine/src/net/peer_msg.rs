//! The peer protocol's messages: the handshake and the encoding of consensus messages (appends
//! carry each batch as its log record's wire head + payload, the bytes the leader's log holds).

use super::CodecError;
use crate::types::NodeId;

/// The first frame on a peer connection, sent by both ends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerHello {
    /// Peer protocol version.
    pub version: u16,
    /// The sender's cluster.
    pub cluster_id: u64,
    /// The sender.
    pub node_id: NodeId,
}

impl PeerHello {
    /// Appends the encoded hello (a frame body) to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let _ = out;
        todo!("net helper")
    }

    /// Decodes a hello frame body.
    pub fn decode(body: &[u8]) -> Result<PeerHello, CodecError> {
        let _ = body;
        todo!("net helper")
    }
}
