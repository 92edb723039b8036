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
use std::path::Path;

use bytes::Bytes;

use crate::net::frame::FrameError;
use crate::net::{read_password_file, PasswordFileError, DEFAULT_USER};
use crate::types::NodeId;

/// A user name and password, for a node that requires clients to authenticate (sent in the
/// hello; see `docs/SECURITY.md`). Its `Debug` output hides the password.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// `default` (reads and writes) or `reader` (reads only).
    pub user: String,
    /// The user's password.
    pub password: Bytes,
}

impl Credentials {
    /// The default (read-write) user with `password`.
    pub fn new(password: impl Into<Bytes>) -> Credentials {
        Credentials::for_user(DEFAULT_USER, password)
    }

    /// `user` with `password`.
    pub fn for_user(user: &str, password: impl Into<Bytes>) -> Credentials {
        Credentials {
            user: user.to_string(),
            password: password.into(),
        }
    }

    /// The default user with the password in the file at `path` (one line; see
    /// [`read_password_file`]). The error names the file, never the password.
    pub fn from_password_file(path: &Path) -> Result<Credentials, PasswordFileError> {
        read_password_file(path).map(Credentials::new)
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Credentials {{ user: {:?}, password: <hidden> }}",
            self.user
        )
    }
}

/// Why a client call failed.
#[derive(Debug)]
pub enum ClientError {
    /// The connection failed, closed or timed out.
    Io(io::Error),
    /// The node refused the handshake (wrong cluster id or version, or no room for another
    /// client): its message.
    Refused(String),
    /// The node refused the handshake's credentials: none given where a password is required
    /// (`NOAUTH ...`), or a wrong user name or password (`WRONGPASS ...`).
    Auth(String),
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
    /// The request cannot be sent as asked (nothing was sent): why.
    Invalid(String),
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
            ClientError::Auth(message) => {
                write!(f, "authentication refused by the node: {message}")
            }
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
            ClientError::Invalid(message) => write!(f, "invalid request: {message}"),
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
