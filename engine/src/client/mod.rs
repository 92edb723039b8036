//! A blocking Rust client for the native client protocol (see `docs/FORMATS.md`, "Wire
//! protocol"): pipelined requests on one connection ([`Client`]), and a client that follows
//! leader redirects and fails over between members ([`ClusterClient`]). Used by tests,
//! `lockstep status` and `lockstep-bench`.

mod cluster;
mod connection;

pub use self::cluster::ClusterClient;
pub use self::connection::Client;

use std::fmt;
use std::io;

use crate::net::frame::FrameError;
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

impl ClientError {
    /// Whether the request surely had no effect, so it can be sent again anywhere: the node was
    /// not the leader or refused the connection. Connection failures are not, for a proposal:
    /// it may have committed before the connection broke.
    pub fn surely_not_applied(&self) -> bool {
        matches!(
            self,
            ClientError::NotLeader { .. } | ClientError::Refused(_)
        )
    }
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientError::Io(err) => write!(f, "connection error: {err}"),
            ClientError::Refused(message) => write!(f, "refused by the node: {message}"),
            ClientError::NotLeader {
                leader,
                leader_addr,
            } => {
                write!(f, "not the leader")?;
                match (leader, leader_addr) {
                    (Some(id), Some(addr)) => write!(f, " (leader is {id} at {addr})"),
                    (Some(id), None) => write!(f, " (leader is {id})"),
                    _ => write!(f, " (no leader known)"),
                }
            }
            ClientError::Server(message) => write!(f, "node error: {message}"),
            ClientError::Protocol(message) => write!(f, "protocol error: {message}"),
        }
    }
}

impl std::error::Error for ClientError {}

impl From<io::Error> for ClientError {
    fn from(err: io::Error) -> ClientError {
        ClientError::Io(err)
    }
}

impl From<FrameError> for ClientError {
    fn from(err: FrameError) -> ClientError {
        match err {
            FrameError::Io(err) => ClientError::Io(err),
            other => ClientError::Protocol(other.to_string()),
        }
    }
}

#[cfg(test)]
mod tests;
