//! The network stage's public face: [`Transport`] (binds the listeners, owns the event-loop
//! thread, stops it on shutdown or drop), [`NetHandle`] (queues outbound work and wakes the loop
//! at most once per sleep) and [`NetStats`]. The loop itself is in `event_loop`.
//!
//! Guarantees of the stage as a whole:
//! - One connection per peer pair. The node with the smaller id dials; the larger dials too once
//!   the pair has gone [`super::NetConfig::reverse_dial_after`] without a connection (the
//!   smaller may not know it). If both connections come up, both ends keep the one the smaller
//!   id dialed and close the other; its frames not yet begun move to the one kept. Both ends
//!   send a [`super::PeerHello`] first and check the other's; a mismatch (version, cluster id,
//!   own or reserved node id, not the node dialed) is logged naming both values, counted, and
//!   the connection closed without an error frame (the other end sees its own check fail or the
//!   close). A hello from a node not in the peer list is accepted: the node can be answered
//!   over that connection, which is forgotten when it closes (unless `add_peer` listed the node
//!   meanwhile). With a peer secret ([`super::NetConfig::peer_secret`]) both ends then exchange
//!   proofs ([`super::PeerProof`]) and no consensus message is read before the other's verified.
//!   A lost or refused dial is retried after `reconnect_min`, doubling to `reconnect_max`.
//! - Per connection, frames leave in the order they were queued; per peer, messages arrive in
//!   the order they were sent on that connection. A message to a peer that is not connected, or
//!   whose queue holds [`super::PEER_QUEUE_BYTES_MAX`], is dropped and counted (Raft retransmits).
//! - Memory is bounded: inbound events go through the caller's bounded channel and, when it is
//!   full, sockets are not read until it drains; outbound queues are capped per connection.
//! - Bad input closes only the connection it came on, with a `warn!` naming address and reason.
//! - With [`super::TlsSettings`] for a port, its connections speak TLS (mutual on the peer port):
//!   a failed TLS handshake (plaintext, unknown certificate) is logged and counted like a refused
//!   hello, and closes only that connection.

use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use crossbeam_channel::Sender;
use mio::net::TcpListener;
use mio::{Interest, Poll, Waker};
use tracing::{debug, warn};

use super::event_loop::{EventLoop, LoopLinks, CLIENT_LISTENER, PEER_LISTENER, WAKER};
use super::lane::Lanes;
use super::{ClientReply, ConnId, InlineTurn, NetConfig, NetEvent, NetSink, PeerRefusals};
use crate::raft::Message;
use crate::types::NodeId;
/// Capacity (in batches of messages) of the channel from [`NetHandle`] to the loop.
const OUTBOUND_CHANNEL_CAPACITY: usize = 1024;

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
    /// Handshakes refused (peers: any [`PeerRefusals`] reason; native clients: wrong version
    /// or cluster id).
    pub handshakes_refused: u64,
    /// Refused peer handshakes by reason.
    pub peer_refusals: PeerRefusals,
    /// Peer connections established.
    pub peer_connects: u64,
    /// Established peer connections closed (lost, removed, or the one of two connections to
    /// the same peer that was not kept).
    pub peer_disconnects: u64,
    /// Client connections accepted.
    pub client_connects: u64,
    /// Consensus messages dropped: peer not connected, its queue full, or the message larger
    /// than a frame.
    pub messages_dropped: u64,
    /// Times a full events channel stopped socket reads (inbound back-pressure).
    pub events_blocked: u64,
    /// Failed client authentications (AUTH, HELLO AUTH, a native hello's password).
    pub client_auth_failures: u64,
    /// Client connections refused because `max_clients` were open.
    pub clients_refused_max: u64,
    /// Client connections closed for a request over the request size limit.
    pub clients_closed_request_bytes: u64,
    /// Times a RESP connection stopped being read at `max_pipelined_bytes` (back-pressure).
    pub client_reads_paused_pipelined: u64,
    /// Client connections closed by the idle timeout.
    pub clients_closed_idle: u64,
    /// Client connections closed by the slow-client timeout (replies left unread).
    pub clients_closed_slow: u64,
}

/// The wake-up protocol between senders and the loop: a sender wakes the loop only when it may
/// be asleep in `poll` (one syscall per sleep, not per send).
pub(super) struct Wake {
    waker: Waker,
    /// True while the loop is running (not sleeping in `poll`), or a wake is already pending.
    pub(super) awake: AtomicBool,
    /// Set by [`Transport::shutdown`] / drop.
    pub(super) stop: AtomicBool,
}

impl Wake {
    fn notify(&self) {
        if !self.awake.swap(true, Ordering::SeqCst) {
            // A failed wake means the poll instance is gone: the loop has stopped.
            let _ = self.waker.wake();
        }
    }
}

/// What handles send to the loop.
pub(super) enum Outbound {
    Messages(Vec<Message>),
    Replies(Vec<(ConnId, ClientReply)>),
    AddPeer(NodeId, SocketAddr),
    RemovePeer(NodeId),
    /// Installs the turn the loop runs for events it would queue (`Transport::set_inline_turn`).
    Inline(Box<dyn InlineTurn>),
}

/// Sends to the network stage from any thread; cheap to clone.
#[derive(Clone)]
pub struct NetHandle {
    outbound: Sender<Outbound>,
    wake: Arc<Wake>,
    /// Direct sends to peers (`net/lane.rs`).
    lanes: Arc<Lanes>,
    max_frame_bytes: u32,
}

impl NetHandle {
    /// Sends consensus messages to their peers (dropped if a peer is unreachable: Raft
    /// retries): straight into the peer's socket from this thread when nothing for that peer is
    /// queued ahead (`net/lane.rs`), otherwise queued for the loop. Blocks only while the
    /// loop's inbound channel from handles is full.
    pub fn send(&self, messages: Vec<Message>) {
        let (queued, spilled) = self.lanes.route_messages(messages, self.max_frame_bytes);
        let sent = !queued.is_empty() && self.outbound.send(Outbound::Messages(queued)).is_ok();
        if spilled || sent {
            self.wake.notify();
        }
    }

    /// Sends replies to client connections (dropped for connections that are gone): when they
    /// are all for one native plain-TCP client, straight into its socket from this thread if
    /// nothing for it is queued ahead (`net/lane.rs`); otherwise queued for the loop.
    pub fn reply(&self, replies: Vec<(ConnId, ClientReply)>) {
        let (queued, spilled) = self.lanes.route_reply_batch(replies, self.max_frame_bytes);
        let sent = !queued.is_empty() && self.outbound.send(Outbound::Replies(queued)).is_ok();
        if spilled || sent {
            self.wake.notify();
        }
    }

    /// Adds a peer (e.g. a node joining through a membership change) or changes its address
    /// (used from the next dial on). This node dials it at once if its own id is smaller, else
    /// once they have gone `reverse_dial_after` without a connection. A node connected without
    /// being listed stays connected and is listed from then on. Ignored for this node's own id
    /// and for id 0.
    pub fn add_peer(&self, id: NodeId, addr: SocketAddr) {
        if self.outbound.send(Outbound::AddPeer(id, addr)).is_ok() {
            self.wake.notify();
        }
    }

    /// Forgets a peer (a node removed from the cluster): its connection is closed and it is no
    /// longer dialed. If it dials in again it is accepted like any unlisted node (its messages
    /// are the consensus core's to judge).
    pub fn remove_peer(&self, id: NodeId) {
        if self.outbound.send(Outbound::RemovePeer(id)).is_ok() {
            self.wake.notify();
        }
    }
}

impl NetSink for NetHandle {
    fn send(&mut self, messages: Vec<Message>) {
        NetHandle::send(self, messages);
    }

    fn reply(&mut self, replies: Vec<(ConnId, ClientReply)>) {
        NetHandle::reply(self, replies);
    }

    fn add_peer(&mut self, id: NodeId, addr: SocketAddr) {
        NetHandle::add_peer(self, id, addr);
    }

    fn remove_peer(&mut self, id: NodeId) {
        NetHandle::remove_peer(self, id);
    }
}

/// The running network stage (its thread stops on [`Transport::shutdown`] or drop).
pub struct Transport {
    handle: NetHandle,
    peer_addr: SocketAddr,
    client_addr: Option<SocketAddr>,
    stats: Arc<Mutex<NetStats>>,
    thread: Option<JoinHandle<()>>,
}

impl Transport {
    /// Binds the listeners, starts the event-loop thread, and dials the peers.
    pub fn start(config: NetConfig, events: Sender<NetEvent>) -> io::Result<Transport> {
        if config.node_id == NodeId(0) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "node id 0 is reserved",
            ));
        }
        if let Some((id, _)) = config
            .peers
            .iter()
            .find(|(id, _)| *id == config.node_id || *id == NodeId(0))
        {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("peer list holds node id {id} (self or reserved)"),
            ));
        }
        let mut ids: Vec<NodeId> = config.peers.iter().map(|(id, _)| *id).collect();
        ids.sort_unstable();
        if let Some(pair) = ids.windows(2).find(|pair| pair[0] == pair[1]) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("peer list names node {} twice", pair[0]),
            ));
        }
        if config.max_frame_bytes < 1024 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("max_frame_bytes {} is below 1024", config.max_frame_bytes),
            ));
        }
        if config.client_listen.is_some() {
            raise_fd_limit(config.max_clients);
        }
        let poll = Poll::new()?;
        let waker = Waker::new(poll.registry(), WAKER)?;
        let mut peer_listener = bind("peer", config.peer_listen)?;
        set_buffer_sizes(peer_listener.as_raw_fd(), config.socket_buffer_bytes);
        poll.registry()
            .register(&mut peer_listener, PEER_LISTENER, Interest::READABLE)?;
        let peer_addr = peer_listener.local_addr()?;
        let client_listener = match config.client_listen {
            Some(addr) => {
                let mut listener = bind("client", addr)?;
                poll.registry()
                    .register(&mut listener, CLIENT_LISTENER, Interest::READABLE)?;
                Some(listener)
            }
            None => None,
        };
        let client_addr = match &client_listener {
            Some(listener) => Some(listener.local_addr()?),
            None => None,
        };
        let wake = Arc::new(Wake {
            waker,
            awake: AtomicBool::new(true),
            stop: AtomicBool::new(false),
        });
        let (outbound_tx, outbound_rx) = crossbeam_channel::bounded(OUTBOUND_CHANNEL_CAPACITY);
        let stats = Arc::new(Mutex::new(NetStats::default()));
        let lanes = Arc::new(Lanes::new(config.peers.iter().map(|(id, _)| *id)));
        let max_frame_bytes = config.max_frame_bytes;
        let links = LoopLinks {
            events_tx: events,
            outbound_rx,
            wake: Arc::clone(&wake),
            stats: Arc::clone(&stats),
            lanes: Arc::clone(&lanes),
        };
        let core = config.core;
        let event_loop = EventLoop::new(config, poll, peer_listener, client_listener, links);
        let thread = std::thread::Builder::new()
            .name("lockstep-net".to_owned())
            .spawn(move || {
                crate::stage::run_stage("network", || {
                    if let Some(id) = core {
                        if !core_affinity::set_for_current(core_affinity::CoreId { id }) {
                            warn!(core = id, "could not pin the network thread");
                        }
                    }
                    event_loop.run()
                })
            })?;
        Ok(Transport {
            handle: NetHandle {
                outbound: outbound_tx,
                wake,
                lanes,
                max_frame_bytes,
            },
            peer_addr,
            client_addr,
            stats,
            thread: Some(thread),
        })
    }

    /// Lets the network thread run `turn` for the events it delivers (see [`InlineTurn`]):
    /// from the next event on, each is offered to it before it is queued on the events
    /// channel. Replaces any turn set before.
    pub fn set_inline_turn(&self, turn: Box<dyn InlineTurn>) {
        if self.handle.outbound.send(Outbound::Inline(turn)).is_ok() {
            self.handle.wake.notify();
        }
    }

    /// A handle for sending.
    pub fn handle(&self) -> NetHandle {
        self.handle.clone()
    }

    /// The bound peer address.
    pub fn peer_addr(&self) -> SocketAddr {
        self.peer_addr
    }

    /// The bound client address, if a client port is configured.
    pub fn client_addr(&self) -> Option<SocketAddr> {
        self.client_addr
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> NetStats {
        *self.stats.lock().expect("net stats lock")
    }

    /// Flushes what is queued (best effort), closes every connection and joins the thread.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        if let Some(thread) = self.thread.take() {
            self.handle.wake.stop.store(true, Ordering::SeqCst);
            let _ = self.handle.wake.waker.wake();
            // A panic on the network thread ends the process (`crate::stage`).
            thread
                .join()
                .expect("a network thread that panicked has ended the process");
        }
    }
}

impl Drop for Transport {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Requests SO_SNDBUF and SO_RCVBUF of `bytes` (the kernel may clamp; failure is only logged).
pub(super) fn set_buffer_sizes(fd: std::os::fd::RawFd, bytes: usize) {
    let value = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
    for option in [libc::SO_SNDBUF, libc::SO_RCVBUF] {
        // SAFETY: `fd` is an open socket owned by the caller for the duration of the call, and
        // the option value points at a live c_int whose size is passed alongside.
        let rc = unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                option,
                (&value as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            debug!(
                "setsockopt({option}, {bytes}) failed: {}",
                io::Error::last_os_error()
            );
        }
    }
}

/// A listener on `addr`; the error names which port (`role`: "peer" or "client") and address
/// could not be bound, keeping the OS error's kind.
fn bind(role: &str, addr: SocketAddr) -> io::Result<TcpListener> {
    TcpListener::bind(addr)
        .map_err(|error| io::Error::new(error.kind(), format!("{role} address {addr}: {error}")))
}

/// Raises the soft limit on open files to the hard limit, so that `max_clients` connections (and
/// the log's files and peer sockets) fit; warns if even the hard limit is too low.
fn raise_fd_limit(max_clients: usize) {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `limit` is a live rlimit the call fills in.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        debug!("getrlimit(NOFILE) failed: {}", io::Error::last_os_error());
        return;
    }
    if limit.rlim_cur < limit.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: limit.rlim_max,
            rlim_max: limit.rlim_max,
        };
        // SAFETY: `raised` is a live rlimit read by the call.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            debug!(
                "raised the open-file limit from {} to {}",
                limit.rlim_cur, limit.rlim_max
            );
            limit.rlim_cur = limit.rlim_max;
        } else {
            debug!("setrlimit(NOFILE) failed: {}", io::Error::last_os_error());
        }
    }
    // Room for the clients plus the log's files, peer sockets and the poll instance.
    let wanted = max_clients as libc::rlim_t + 256;
    if limit.rlim_cur < wanted {
        warn!(
            "the open-file limit is {} but max_clients {max_clients} needs about {wanted}: \
             raise it (ulimit -n) or lower max_clients",
            limit.rlim_cur
        );
    }
}
