//! The mio event loop: listeners, peer connections (one per pair, re-established with backoff),
//! client connections, and coalesced vectored writes.

use std::io;
use std::net::SocketAddr;

use crossbeam_channel::Sender;

use super::{ClientReply, ConnId, NetConfig, NetEvent};
use crate::raft::Message;

/// Counters of the network stage (monotonic since start).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct NetStats {
    /// Frames received (all connections).
    pub frames_in: u64,
    /// Frames sent.
    pub frames_out: u64,
    /// Bytes received.
    pub bytes_in: u64,
    /// Bytes sent.
    pub bytes_out: u64,
    /// Write system calls (bytes_out / writes = bytes per network write).
    pub writes: u64,
    /// Connections closed for a malformed, oversized or checksum-failing frame.
    pub bad_frames: u64,
    /// Handshakes refused (wrong version, cluster id, or unknown node).
    pub handshakes_refused: u64,
    /// Peer connections established.
    pub peer_connects: u64,
    /// Peer connections lost.
    pub peer_disconnects: u64,
    /// Client connections accepted.
    pub client_connects: u64,
}

/// Sends to the network stage from any thread; cheap to clone.
#[derive(Clone)]
pub struct NetHandle {}

impl NetHandle {
    /// Queues consensus messages for their peers (dropped if a peer is unreachable: Raft retries).
    pub fn send(&self, messages: Vec<Message>) {
        let _ = messages;
        todo!("net helper")
    }

    /// Queues replies to client connections (dropped for connections that are gone).
    pub fn reply(&self, replies: Vec<(ConnId, ClientReply)>) {
        let _ = replies;
        todo!("net helper")
    }
}

/// The running network stage (its thread stops on [`Transport::shutdown`] or drop).
pub struct Transport {}

impl Transport {
    /// Binds the listeners, starts the event-loop thread, and dials the peers.
    pub fn start(config: NetConfig, events: Sender<NetEvent>) -> io::Result<Transport> {
        let _ = (config, events);
        todo!("net helper")
    }

    /// A handle for sending.
    pub fn handle(&self) -> NetHandle {
        todo!("net helper")
    }

    /// The bound peer address.
    pub fn peer_addr(&self) -> SocketAddr {
        todo!("net helper")
    }

    /// The bound client address, if a client port is configured.
    pub fn client_addr(&self) -> Option<SocketAddr> {
        todo!("net helper")
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> NetStats {
        todo!("net helper")
    }

    /// Flushes what is queued (best effort), closes every connection and joins the thread.
    pub fn shutdown(self) {
        todo!("net helper")
    }
}
