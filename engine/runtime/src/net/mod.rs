//! The network stage: framed, checksummed TCP between peers (consensus messages) and from clients
//! (proposals, reads, status), driven by one mio event loop on its own thread.
//!
//! Contract with the runtime (`crate::node`):
//! - [`Transport::start`] binds the peer port (and the client port, if configured), dials the
//!   peers (`transport.rs` says who dials whom), and delivers what arrives as [`NetEvent`]s on a bounded crossbeam channel, in batches
//!   (one `Vec` per socket read, never one channel message per entry).
//! - Other stages send through a cloneable [`NetHandle`]; it queues and wakes the loop, which
//!   coalesces queued frames into vectored writes.
//! - Bad input (failed handshake, wrong cluster id or version, malformed, oversized or
//!   checksum-failing frames) closes that one connection, is logged with both values, and is
//!   counted in [`NetStats`]; every other connection keeps being served.
//! - Optional TLS per port ([`TlsSettings`], module [`tls`]): the same frames inside rustls.
//!   Only with the crate's `tls` feature (on by default); without it every port is plain TCP
//!   and asking for TLS fails with [`TlsError::NotCompiledIn`].
//! - Inline turns ([`Transport::set_inline_turn`]): the loop may hand an event straight to an
//!   [`InlineTurn`] on its own thread instead of queueing it; what that turn sends goes through
//!   the loop's own [`NetSink`], which keeps the order the handles' senders see (direct writes
//!   where nothing is ahead, otherwise held behind what the handles queued).
//!
//! Wire formats are documented in `docs/FORMATS.md` ("Wire protocol").

mod auth;
mod client_auth;
mod client_limits;
mod client_msg;
mod conn_stream;
// The server crate's throwaway CA, compiled here for the TLS tests only.
#[cfg(all(test, feature = "tls"))]
#[path = "../../../server/src/pki.rs"]
mod dev_pki;
mod event_loop;
pub mod frame;
mod lane;
mod out_queue;
mod peer_msg;
mod ports;
mod rate_log;
#[cfg(feature = "tls")]
pub mod tls;
#[cfg(not(feature = "tls"))]
#[path = "tls_off.rs"]
pub mod tls;
mod tls_types;
mod transport;
mod wire;

pub use self::auth::{
    fresh_nonce, Nonce, PeerRefusals, PeerSecret, Proof, Refusal, Role, SecretTooShort, Transcript,
    NONCE_BYTES, PEER_SECRET_BYTES_MIN, PROOF_BYTES,
};
pub use self::client_auth::{
    read_password_file, ClientRole, ClientUsers, PasswordFileError, DEFAULT_USER, READONLY_USER,
};
pub use self::client_limits::ClientLimits;
pub(crate) use self::client_msg::is_auth_refusal;
pub use self::client_msg::{
    BatchWireError, ClientHello, ClientReply, ClientRequest, CodecError, CLIENT_PROTOCOL_VERSION,
};
pub use self::event_loop::{
    CLIENT_QUEUE_BYTES_MAX, PEER_QUEUE_BYTES_MAX, RESP_IN_FLIGHT_MAX, RESP_OUT_PAUSE_BYTES,
};
pub use self::peer_msg::{
    decode_message, encode_message, PeerHello, PeerProof, PEER_PROTOCOL_VERSION,
};
pub use self::ports::free_loopback_addrs;
pub use self::tls::{ClientTls, TlsError, TlsFile, TlsFileProblem, TlsPorts, TlsSettings};
pub use self::transport::{NetHandle, NetStats, Transport};

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::raft::Message;
use crate::resp::parser::RespLimits;
use crate::resp::Frontend;
use crate::types::NodeId;

/// Identifies one client connection of one transport (never reused while the transport runs).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ConnId(pub u64);

/// What the network stage hands to the consensus stage.
#[derive(Debug)]
pub enum NetEvent {
    /// Consensus messages from peers, in arrival order per peer.
    Peer(Vec<Message>),
    /// Requests read from one client connection, in order.
    Client {
        /// The connection; replies go back to it through [`NetHandle::reply`].
        conn: ConnId,
        /// The requests.
        requests: Vec<ClientRequest>,
    },
    /// A client connection closed; pending replies to it may be dropped.
    ClientGone(ConnId),
}

/// Where a stage's output for the network goes: a [`NetHandle`] (any thread), or the loop's
/// own sink during an inline turn. Either way: per peer and per client connection, frames leave
/// in the order they were handed over; nothing blocks on a slow socket.
pub trait NetSink {
    /// Consensus messages for their peers (see [`NetHandle::send`]).
    fn send(&mut self, messages: Vec<Message>);
    /// Replies to client connections (see [`NetHandle::reply`]).
    fn reply(&mut self, replies: Vec<(ConnId, ClientReply)>);
    /// Adds a peer or changes its address (see [`NetHandle::add_peer`]).
    fn add_peer(&mut self, id: NodeId, addr: SocketAddr);
    /// Forgets a peer (see [`NetHandle::remove_peer`]).
    fn remove_peer(&mut self, id: NodeId);
}

/// Work the network thread may do itself with an event it read, instead of queueing it for
/// the consensus thread and waking it (a wake-up costs tens of microseconds on a small
/// machine, and a commit waits for several). The turn must not block (it runs on the thread
/// that serves every connection) and must keep the order of events: it either takes the event,
/// after everything queued on the events channel before it, or gives it back untouched.
pub trait InlineTurn: Send {
    /// Handles `event`, sending its outputs through `net`; or returns it, and the loop queues
    /// it on the events channel as usual.
    fn offer(&mut self, event: NetEvent, net: &mut dyn NetSink) -> Option<NetEvent>;
}

/// A sink for a node without a network: everything is dropped.
pub struct NoNet;

impl NetSink for NoNet {
    fn send(&mut self, _messages: Vec<Message>) {}
    fn reply(&mut self, _replies: Vec<(ConnId, ClientReply)>) {}
    fn add_peer(&mut self, _id: NodeId, _addr: SocketAddr) {}
    fn remove_peer(&mut self, _id: NodeId) {}
}

/// Settings of the network stage.
#[derive(Clone, Debug)]
pub struct NetConfig {
    /// The cluster's id: peers and clients presenting another one are refused.
    pub cluster_id: u64,
    /// This node.
    pub node_id: NodeId,
    /// Where to accept peer connections (port 0 picks a free port; see
    /// [`Transport::peer_addr`]).
    pub peer_listen: SocketAddr,
    /// The other nodes and their peer addresses.
    pub peers: Vec<(NodeId, SocketAddr)>,
    /// Where to accept client connections, if anywhere.
    pub client_listen: Option<SocketAddr>,
    /// Largest frame accepted or sent, in bytes (header included).
    pub max_frame_bytes: u32,
    /// SO_SNDBUF / SO_RCVBUF requested for every socket.
    pub socket_buffer_bytes: usize,
    /// First reconnect delay after a lost or refused peer connection.
    pub reconnect_min: Duration,
    /// Reconnect delays double up to this.
    pub reconnect_max: Duration,
    /// Of two peers, the smaller id dials the larger; the larger id dials the smaller too once
    /// the pair has had no connection for this long (the smaller may not know the larger: it
    /// missed the membership change that added it). If both connections come up, the one the
    /// smaller id dialed stays.
    pub reverse_dial_after: Duration,
    /// Most concurrent client connections; more are accepted and closed at once.
    pub max_clients: usize,
    /// A connection whose hello has not arrived (and been accepted) this long after it opened
    /// is closed (a dial is then retried).
    pub handshake_timeout: Duration,
    /// The command set RESP clients on the client port talk to; `None`: RESP clients get
    /// connection-level commands only, and an error for every other command.
    pub frontend: Option<Arc<dyn Frontend>>,
    /// Size limits of one RESP request (the request size is further capped at
    /// `max_frame_bytes`).
    pub resp_limits: RespLimits,
    /// The cluster's shared secret: with it, a peer connection carries consensus messages only
    /// after both ends proved they know it (and a peer without one is refused); `None`: peers
    /// are not authenticated (and a peer that authenticates is refused).
    pub peer_secret: Option<PeerSecret>,
    /// Client passwords; [`ClientUsers::open`]: clients need none.
    pub client_users: Arc<ClientUsers>,
    /// Per-connection client limits (pipelined bytes, idle and slow-client timeouts).
    pub client_limits: ClientLimits,
    /// TLS on the client and peer ports (default: plain TCP on both).
    pub tls: TlsSettings,
    /// Spin-before-block: after handling something, the loop polls without sleeping for this
    /// long before it blocks in `poll` again (zero, the default: never spins).
    pub spin: Duration,
    /// The core the network thread is pinned to (none, the default: not pinned).
    pub core: Option<usize>,
}

impl NetConfig {
    /// Defaults: 64 MiB frames, 4 MiB socket buffers, reconnect backoff 10 ms .. 1 s, reverse
    /// dial after 3 s, 4096 clients, 10 s handshake timeout, no client port, default [`RespLimits`], no peer secret,
    /// no client passwords, default [`ClientLimits`], no TLS, no spinning, no pinning.
    pub fn new(cluster_id: u64, node_id: NodeId, peer_listen: SocketAddr) -> NetConfig {
        NetConfig {
            cluster_id,
            node_id,
            peer_listen,
            peers: Vec::new(),
            client_listen: None,
            max_frame_bytes: 64 << 20,
            socket_buffer_bytes: 4 << 20,
            reconnect_min: Duration::from_millis(10),
            reconnect_max: Duration::from_secs(1),
            reverse_dial_after: Duration::from_secs(3),
            max_clients: 4096,
            handshake_timeout: Duration::from_secs(10),
            frontend: None,
            resp_limits: RespLimits::default(),
            peer_secret: None,
            client_users: Arc::new(ClientUsers::open()),
            client_limits: ClientLimits::default(),
            tls: TlsSettings::default(),
            spin: Duration::ZERO,
            core: None,
        }
    }
}
