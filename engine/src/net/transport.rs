//! The mio event loop: listeners, peer connections (one per pair, re-established with backoff),
//! client connections, and coalesced vectored writes.
//!
//! Owns every socket of the node and the thread that drives them. Guarantees:
//! - One connection per peer pair: the node with the smaller id dials, the larger accepts. Both
//!   ends send a [`PeerHello`] first and check the other's; a mismatch (version, cluster id,
//!   unknown / self / wrong-direction node id) is logged naming both values, counted, and the
//!   connection closed without an error frame (the other end sees its own check fail or the
//!   close). A lost or refused dial is retried after `reconnect_min`, doubling to `reconnect_max`.
//! - Per connection, frames leave in the order they were queued; per peer, messages arrive in
//!   the order they were sent on that connection. A message to a peer that is not connected, or
//!   whose queue holds [`PEER_QUEUE_BYTES_MAX`], is dropped and counted (Raft retransmits).
//! - Memory is bounded: inbound events go through the caller's bounded channel and, when it is
//!   full, sockets are not read until it drains; outbound queues are capped per connection.
//! - Bad input closes only the connection it came on, with a `warn!` naming address and reason.

use std::collections::{HashMap, VecDeque};
use std::io::{self, IoSlice, Write};
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use crossbeam_channel::{Receiver, Sender, TryRecvError, TrySendError};
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token, Waker};
use tracing::{debug, warn};

use super::client_msg::CLIENT_PROTOCOL_VERSION;
use super::frame::{frame_header, FrameDecoder, FrameError, FrameType, ReadOutcome, FRAME_MAGIC};
use super::peer_msg::{decode_message, encode_message_parts, BodyPart, PEER_PROTOCOL_VERSION};
use super::{ClientHello, ClientReply, ClientRequest, ConnId, NetConfig, NetEvent, PeerHello};
use crate::raft::Message;
use crate::types::NodeId;

/// Most bytes queued for one peer; messages beyond are dropped (Raft retransmits).
pub const PEER_QUEUE_BYTES_MAX: usize = 64 << 20;
/// Most bytes of replies queued for one client; a client that does not read is disconnected.
pub const CLIENT_QUEUE_BYTES_MAX: usize = 64 << 20;
/// Capacity (in batches of messages) of the channel from [`NetHandle`] to the loop.
const OUTBOUND_CHANNEL_CAPACITY: usize = 1024;
/// Poll timeout while the events channel is full.
const BLOCKED_POLL: Duration = Duration::from_millis(1);
/// Buffers handed to one `write_vectored`.
const IOVECS_PER_WRITE: usize = 128;

const WAKER: Token = Token(0);
const PEER_LISTENER: Token = Token(1);
const CLIENT_LISTENER: Token = Token(2);
const FIRST_CONN: usize = 3;

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
    /// Consensus messages dropped: peer not connected, its queue full, or the message larger
    /// than a frame.
    pub messages_dropped: u64,
    /// Times a full events channel stopped socket reads (inbound back-pressure).
    pub events_blocked: u64,
}

/// The wake-up protocol between senders and the loop: a sender wakes the loop only when it may
/// be asleep in `poll` (one syscall per sleep, not per send).
struct Wake {
    waker: Waker,
    /// True while the loop is running (not sleeping in `poll`), or a wake is already pending.
    awake: AtomicBool,
    stop: AtomicBool,
}

impl Wake {
    fn notify(&self) {
        if !self.awake.swap(true, Ordering::SeqCst) {
            // A failed wake means the poll instance is gone: the loop has stopped.
            let _ = self.waker.wake();
        }
    }
}

enum Outbound {
    Messages(Vec<Message>),
    Replies(Vec<(ConnId, ClientReply)>),
    AddPeer(NodeId, SocketAddr),
    RemovePeer(NodeId),
}

/// Sends to the network stage from any thread; cheap to clone.
#[derive(Clone)]
pub struct NetHandle {
    outbound: Sender<Outbound>,
    wake: Arc<Wake>,
}

impl NetHandle {
    /// Queues consensus messages for their peers (dropped if a peer is unreachable: Raft retries).
    /// Blocks only while the loop's inbound channel from handles is full.
    pub fn send(&self, messages: Vec<Message>) {
        if messages.is_empty() {
            return;
        }
        if self.outbound.send(Outbound::Messages(messages)).is_ok() {
            self.wake.notify();
        }
    }

    /// Queues replies to client connections (dropped for connections that are gone).
    pub fn reply(&self, replies: Vec<(ConnId, ClientReply)>) {
        if replies.is_empty() {
            return;
        }
        if self.outbound.send(Outbound::Replies(replies)).is_ok() {
            self.wake.notify();
        }
    }

    /// Adds a peer (e.g. a node joining through a membership change) or changes its address
    /// (used from the next dial on). Handshakes from `id` are accepted from then on; a node
    /// dials it if its own id is smaller. Ignored for this node's own id and for id 0.
    pub fn add_peer(&self, id: NodeId, addr: SocketAddr) {
        if self.outbound.send(Outbound::AddPeer(id, addr)).is_ok() {
            self.wake.notify();
        }
    }

    /// Forgets a peer (a node removed from the cluster): its connection is closed, it is no
    /// longer dialed, and its handshakes are refused.
    pub fn remove_peer(&self, id: NodeId) {
        if self.outbound.send(Outbound::RemovePeer(id)).is_ok() {
            self.wake.notify();
        }
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
        let poll = Poll::new()?;
        let waker = Waker::new(poll.registry(), WAKER)?;
        let mut peer_listener = TcpListener::bind(config.peer_listen)?;
        set_buffer_sizes(peer_listener.as_raw_fd(), config.socket_buffer_bytes);
        poll.registry()
            .register(&mut peer_listener, PEER_LISTENER, Interest::READABLE)?;
        let peer_addr = peer_listener.local_addr()?;
        let client_listener = match config.client_listen {
            Some(addr) => {
                let mut listener = TcpListener::bind(addr)?;
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
        let now = Instant::now();
        let peers = config
            .peers
            .iter()
            .map(|&(id, addr)| {
                let slot = PeerSlot {
                    addr,
                    conn: None,
                    dialing: None,
                    backoff: config.reconnect_min,
                    // Only the smaller id dials; the first dial is immediate.
                    redial_at: (config.node_id < id).then_some(now),
                };
                (id, slot)
            })
            .collect();
        let event_loop = EventLoop {
            poll,
            peer_listener,
            client_listener,
            events_tx: events,
            outbound_rx,
            wake: Arc::clone(&wake),
            stats_shared: Arc::clone(&stats),
            stats: NetStats::default(),
            conns: HashMap::new(),
            next_token: FIRST_CONN,
            peers,
            clients: 0,
            pending_events: VecDeque::new(),
            read_ready: Vec::new(),
            dirty: Vec::new(),
            handshake_deadlines: VecDeque::new(),
            scratch: Vec::new(),
            parts: Vec::new(),
            config,
        };
        let thread = std::thread::Builder::new()
            .name("lockstep-net".to_owned())
            .spawn(move || event_loop.run())?;
        Ok(Transport {
            handle: NetHandle {
                outbound: outbound_tx,
                wake,
            },
            peer_addr,
            client_addr,
            stats,
            thread: Some(thread),
        })
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
            if thread.join().is_err() {
                warn!("network thread panicked");
            }
        }
    }
}

impl Drop for Transport {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Requests SO_SNDBUF and SO_RCVBUF of `bytes` (the kernel may clamp; failure is only logged).
fn set_buffer_sizes(fd: std::os::fd::RawFd, bytes: usize) {
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

/// What the loop knows about one configured peer.
struct PeerSlot {
    addr: SocketAddr,
    /// The established connection.
    conn: Option<Token>,
    /// A dial in progress (connecting or handshaking).
    dialing: Option<Token>,
    /// The next reconnect delay.
    backoff: Duration,
    /// When to dial next (dialing side only).
    redial_at: Option<Instant>,
}

enum PeerState {
    /// Waiting for the other end's hello; `expected` is the node dialed (None when accepted).
    Handshake { expected: Option<NodeId> },
    /// Hello checked: this is the connection to `NodeId`.
    Established(NodeId),
}

/// The protocol a client speaks, told from its first bytes. Only the native framed protocol
/// exists today; another (e.g. RESP) would be recognised in [`EventLoop::detect_client`].
enum ClientProtocol {
    /// No byte received yet.
    Undetected,
    /// Framed protocol: `greeted` once its hello was accepted.
    Native { greeted: bool },
}

enum ConnKind {
    Peer(PeerState),
    Client(ClientProtocol),
}

/// Frames queued for one connection: small frames are packed into `staging`, large payloads are
/// queued as their own `Bytes` so they are written without being copied.
struct OutQueue {
    chunks: VecDeque<Bytes>,
    staging: BytesMut,
    queued_bytes: usize,
}

impl OutQueue {
    fn new() -> OutQueue {
        OutQueue {
            chunks: VecDeque::new(),
            staging: BytesMut::new(),
            queued_bytes: 0,
        }
    }

    fn is_empty(&self) -> bool {
        self.queued_bytes == 0
    }

    fn seal(&mut self) {
        if !self.staging.is_empty() {
            self.chunks.push_back(self.staging.split().freeze());
        }
    }

    /// Queues a frame whose body is `parts` (ranges of `scratch` and shared buffers).
    fn push_frame(&mut self, ty: FrameType, scratch: &[u8], parts: &[BodyPart]) -> usize {
        let slices = parts.iter().map(|part| match part {
            BodyPart::Inline(range) => &scratch[range.clone()],
            BodyPart::Shared(bytes) => &bytes[..],
        });
        let header = frame_header(ty, slices.clone());
        self.staging.extend_from_slice(&header);
        let mut total = header.len();
        for part in parts {
            match part {
                BodyPart::Inline(range) => self.staging.extend_from_slice(&scratch[range.clone()]),
                BodyPart::Shared(bytes) => {
                    self.seal();
                    self.chunks.push_back(bytes.clone());
                }
            }
        }
        total += slices.map(<[u8]>::len).sum::<usize>();
        self.queued_bytes += total;
        total
    }

    /// Writes as much as the socket takes. Returns whether the socket would block (output left).
    fn write_to(&mut self, stream: &mut TcpStream, stats: &mut NetStats) -> io::Result<bool> {
        self.seal();
        while !self.chunks.is_empty() {
            let mut slices = [IoSlice::new(&[]); IOVECS_PER_WRITE];
            let mut used = 0;
            for (slot, chunk) in slices.iter_mut().zip(&self.chunks) {
                *slot = IoSlice::new(chunk);
                used += 1;
            }
            let written = match stream.write_vectored(&slices[..used]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => n,
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => return Ok(true),
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                Err(err) => return Err(err),
            };
            stats.writes += 1;
            stats.bytes_out += written as u64;
            self.queued_bytes -= written;
            let mut left = written;
            while left > 0 {
                let front = self.chunks.front_mut().expect("written bytes were queued");
                if front.len() <= left {
                    left -= front.len();
                    self.chunks.pop_front();
                } else {
                    bytes::Buf::advance(front, left);
                    left = 0;
                }
            }
        }
        Ok(false)
    }
}

struct Conn {
    stream: TcpStream,
    addr: SocketAddr,
    kind: ConnKind,
    decoder: FrameDecoder,
    out: OutQueue,
    /// False while an outgoing connect is in progress.
    connected: bool,
    /// The socket accepted the last write without blocking (or signalled writable since).
    writable: bool,
    /// Listed in `read_ready` / `dirty`.
    in_read_ready: bool,
    in_dirty: bool,
    /// A peer connection has carried a consensus message in (proof the other end accepted it).
    carried: bool,
    /// Close once the queue is flushed (a refused client's error reply).
    closing: bool,
}

struct EventLoop {
    config: NetConfig,
    poll: Poll,
    peer_listener: TcpListener,
    client_listener: Option<TcpListener>,
    events_tx: Sender<NetEvent>,
    outbound_rx: Receiver<Outbound>,
    wake: Arc<Wake>,
    stats_shared: Arc<Mutex<NetStats>>,
    stats: NetStats,
    conns: HashMap<Token, Conn>,
    next_token: usize,
    peers: HashMap<NodeId, PeerSlot>,
    clients: usize,
    /// Events the channel had no room for; sockets are not read while any wait here.
    pending_events: VecDeque<NetEvent>,
    /// Connections that may have bytes to read (edge-triggered: until a read would block).
    read_ready: Vec<Token>,
    /// Connections with queued output to write.
    dirty: Vec<Token>,
    /// Handshake deadlines of connections, in opening order (so in deadline order).
    handshake_deadlines: VecDeque<(Instant, Token)>,
    scratch: Vec<u8>,
    parts: Vec<BodyPart>,
}

/// What the next frame on a connection must be.
enum Stage {
    /// A peer hello (from the node dialed, if any).
    PeerHello(Option<NodeId>),
    /// A consensus message from this peer.
    Peer(NodeId),
    /// A client hello.
    ClientHello,
    /// A client request.
    Client,
}

/// Why a connection is being closed.
enum CloseReason {
    /// Orderly close, I/O error, or shutdown: not counted as bad input.
    Gone(String),
    /// A bad frame or message: counted in `bad_frames`.
    BadFrame(String),
    /// A refused handshake: counted in `handshakes_refused`.
    Refused(String),
}

impl EventLoop {
    fn run(mut self) {
        let mut events = Events::with_capacity(1024);
        loop {
            // Announce the coming sleep, then pick up anything queued before the announcement.
            self.wake.awake.store(false, Ordering::SeqCst);
            self.drain_outbound();
            self.flush_dirty();
            // Counters are current whenever the loop sleeps.
            self.publish_stats();
            let timeout = self.poll_timeout();
            if let Err(err) = self.poll.poll(&mut events, timeout) {
                if err.kind() != io::ErrorKind::Interrupted {
                    warn!("network poll failed, stopping: {err}");
                    return;
                }
            }
            self.wake.awake.store(true, Ordering::SeqCst);
            if self.wake.stop.load(Ordering::SeqCst) {
                self.drain_outbound();
                self.flush_dirty();
                self.publish_stats();
                return;
            }
            for event in events.iter() {
                match event.token() {
                    WAKER => {}
                    PEER_LISTENER => self.accept_peers(),
                    CLIENT_LISTENER => self.accept_clients(),
                    token => self.on_conn_event(token, event),
                }
            }
            self.retry_pending_events();
            self.expire_handshakes();
            self.dial_due_peers();
            self.read_ready_conns();
        }
    }

    fn poll_timeout(&self) -> Option<Duration> {
        if !self.pending_events.is_empty() {
            return Some(BLOCKED_POLL);
        }
        if !self.read_ready.is_empty() {
            return Some(Duration::ZERO);
        }
        let now = Instant::now();
        let handshake = self.handshake_deadlines.front().map(|(at, _)| *at);
        self.peers
            .values()
            .filter_map(|slot| slot.redial_at)
            .chain(handshake)
            .min()
            .map(|at| at.saturating_duration_since(now))
    }

    /// Closes connections still waiting for (or refusing) a hello past their deadline.
    fn expire_handshakes(&mut self) {
        let now = Instant::now();
        while let Some(&(deadline, token)) = self.handshake_deadlines.front() {
            if deadline > now {
                return;
            }
            self.handshake_deadlines.pop_front();
            let Some(conn) = self.conns.get(&token) else {
                continue;
            };
            let waiting = matches!(
                conn.kind,
                ConnKind::Peer(PeerState::Handshake { .. })
                    | ConnKind::Client(ClientProtocol::Undetected)
                    | ConnKind::Client(ClientProtocol::Native { greeted: false })
            );
            if waiting {
                warn!(
                    addr = %conn.addr,
                    "closing a connection: no accepted hello within {:?}",
                    self.config.handshake_timeout
                );
                self.close(token, CloseReason::Gone("handshake timeout".to_owned()));
            }
        }
    }

    fn publish_stats(&self) {
        *self.stats_shared.lock().expect("net stats lock") = self.stats;
    }

    fn new_token(&mut self) -> Token {
        let token = Token(self.next_token);
        self.next_token += 1;
        token
    }

    fn add_conn(
        &mut self,
        mut stream: TcpStream,
        addr: SocketAddr,
        kind: ConnKind,
        connected: bool,
    ) -> io::Result<Token> {
        let token = self.new_token();
        self.poll.registry().register(
            &mut stream,
            token,
            Interest::READABLE | Interest::WRITABLE,
        )?;
        let conn = Conn {
            stream,
            addr,
            kind,
            decoder: FrameDecoder::new(self.config.max_frame_bytes),
            out: OutQueue::new(),
            connected,
            writable: connected,
            in_read_ready: false,
            in_dirty: false,
            carried: false,
            closing: false,
        };
        self.conns.insert(token, conn);
        let deadline = Instant::now() + self.config.handshake_timeout;
        self.handshake_deadlines.push_back((deadline, token));
        Ok(token)
    }

    fn configure(&self, stream: &TcpStream) {
        if let Err(err) = stream.set_nodelay(true) {
            debug!("TCP_NODELAY failed: {err}");
        }
        set_buffer_sizes(stream.as_raw_fd(), self.config.socket_buffer_bytes);
    }

    fn accept_peers(&mut self) {
        loop {
            match self.peer_listener.accept() {
                Ok((stream, addr)) => {
                    self.configure(&stream);
                    let kind = ConnKind::Peer(PeerState::Handshake { expected: None });
                    match self.add_conn(stream, addr, kind, true) {
                        Ok(token) => self.queue_peer_hello(token),
                        Err(err) => warn!(peer = %addr, "cannot register peer connection: {err}"),
                    }
                }
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => return,
                Err(err) => {
                    warn!("peer accept failed: {err}");
                    return;
                }
            }
        }
    }

    fn accept_clients(&mut self) {
        loop {
            let Some(listener) = &self.client_listener else {
                return;
            };
            match listener.accept() {
                Ok((stream, addr)) => {
                    if self.clients >= self.config.max_clients {
                        warn!(
                            client = %addr,
                            "refusing client: {} connections already (max_clients)",
                            self.clients
                        );
                        continue;
                    }
                    self.configure(&stream);
                    let kind = ConnKind::Client(ClientProtocol::Undetected);
                    match self.add_conn(stream, addr, kind, true) {
                        Ok(_) => {
                            self.clients += 1;
                            self.stats.client_connects += 1;
                        }
                        Err(err) => warn!(client = %addr, "cannot register client: {err}"),
                    }
                }
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => return,
                Err(err) => {
                    warn!("client accept failed: {err}");
                    return;
                }
            }
        }
    }

    fn dial_due_peers(&mut self) {
        let now = Instant::now();
        let due: Vec<NodeId> = self
            .peers
            .iter()
            .filter(|(_, slot)| slot.redial_at.is_some_and(|at| at <= now))
            .map(|(id, _)| *id)
            .collect();
        for id in due {
            let slot = self.peers.get_mut(&id).expect("due peer");
            slot.redial_at = None;
            let addr = slot.addr;
            let stream = match TcpStream::connect(addr) {
                Ok(stream) => stream,
                Err(err) => {
                    debug!(peer = %addr, "dial of node {id} failed: {err}");
                    self.schedule_redial(id);
                    continue;
                }
            };
            self.configure(&stream);
            let kind = ConnKind::Peer(PeerState::Handshake { expected: Some(id) });
            match self.add_conn(stream, addr, kind, false) {
                Ok(token) => {
                    self.peers.get_mut(&id).expect("peer").dialing = Some(token);
                    self.queue_peer_hello(token);
                }
                Err(err) => {
                    warn!(peer = %addr, "cannot register dial to node {id}: {err}");
                    self.schedule_redial(id);
                }
            }
        }
    }

    fn schedule_redial(&mut self, id: NodeId) {
        let max = self.config.reconnect_max;
        let slot = self.peers.get_mut(&id).expect("configured peer");
        if self.config.node_id > id || slot.conn.is_some() || slot.dialing.is_some() {
            return;
        }
        slot.redial_at = Some(Instant::now() + slot.backoff);
        slot.backoff = (slot.backoff * 2).min(max);
    }

    fn queue_peer_hello(&mut self, token: Token) {
        self.scratch.clear();
        PeerHello::new(self.config.cluster_id, self.config.node_id).encode(&mut self.scratch);
        self.queue_scratch(token, FrameType::PeerHello);
    }

    /// Queues the whole of `scratch` as one frame on `token`.
    fn queue_scratch(&mut self, token: Token, ty: FrameType) {
        self.parts.clear();
        self.parts.push(BodyPart::Inline(0..self.scratch.len()));
        self.queue_parts(token, ty);
    }

    fn queue_parts(&mut self, token: Token, ty: FrameType) {
        let conn = self
            .conns
            .get_mut(&token)
            .expect("queue on a live connection");
        conn.out.push_frame(ty, &self.scratch, &self.parts);
        self.stats.frames_out += 1;
        if !conn.in_dirty {
            conn.in_dirty = true;
            self.dirty.push(token);
        }
    }

    fn on_conn_event(&mut self, token: Token, event: &mio::event::Event) {
        let Some(conn) = self.conns.get_mut(&token) else {
            return;
        };
        if !conn.connected {
            let failure = match conn.stream.take_error() {
                Ok(Some(err)) | Err(err) => Some(format!("connect failed: {err}")),
                Ok(None) if event.is_error() || event.is_write_closed() => {
                    Some("connect failed".to_owned())
                }
                Ok(None) => None,
            };
            if let Some(reason) = failure {
                self.close(token, CloseReason::Gone(reason));
                return;
            }
            if event.is_writable() && conn.stream.peer_addr().is_ok() {
                conn.connected = true;
            }
        }
        if event.is_writable() && conn.connected {
            conn.writable = true;
            if !conn.in_dirty && !conn.out.is_empty() {
                conn.in_dirty = true;
                self.dirty.push(token);
            }
        }
        if (event.is_readable() || event.is_read_closed() || event.is_error())
            && !conn.in_read_ready
        {
            conn.in_read_ready = true;
            self.read_ready.push(token);
        }
    }

    /// One read per ready connection per turn, for fairness; a connection stays ready until a
    /// read would block. Stops as soon as an event cannot be delivered.
    fn read_ready_conns(&mut self) {
        // Reading never lists new connections (only poll events do), so the list is compacted
        // in place: no allocation per turn.
        let mut ready = std::mem::take(&mut self.read_ready);
        let mut kept = 0;
        for at in 0..ready.len() {
            let token = ready[at];
            if !self.pending_events.is_empty() {
                let left = ready.len() - at;
                ready.copy_within(at.., kept);
                kept += left;
                break;
            }
            if self.read_once(token) {
                ready[kept] = token;
                kept += 1;
            } else if let Some(conn) = self.conns.get_mut(&token) {
                conn.in_read_ready = false;
            }
        }
        ready.truncate(kept);
        assert!(
            self.read_ready.is_empty(),
            "{} connections listed as readable while reading",
            self.read_ready.len()
        );
        self.read_ready = ready;
    }

    /// Reads once from `token` and handles the complete frames. Returns whether the connection
    /// may have more to read.
    fn read_once(&mut self, token: Token) -> bool {
        let Some(conn) = self.conns.get_mut(&token) else {
            return false;
        };
        if conn.closing {
            return false;
        }
        let outcome = conn.decoder.read_from(&conn.stream);
        match outcome {
            Ok(ReadOutcome::Data(n)) => {
                self.stats.bytes_in += n as u64;
                self.handle_frames(token)
            }
            Ok(ReadOutcome::WouldBlock) => false,
            Ok(ReadOutcome::Closed) => {
                self.close(
                    token,
                    CloseReason::Gone("closed by the other end".to_owned()),
                );
                false
            }
            Err(err) => {
                self.close(token, CloseReason::Gone(format!("read failed: {err}")));
                false
            }
        }
    }

    /// Takes every complete frame out of the connection's buffer and delivers one event.
    /// Returns whether the connection is still open.
    fn handle_frames(&mut self, token: Token) -> bool {
        let conn = self.conns.get_mut(&token).expect("live connection");
        if let ConnKind::Client(ClientProtocol::Undetected) = conn.kind {
            if let Err(reason) = detect_client(conn) {
                self.close(token, CloseReason::BadFrame(reason));
                return false;
            }
        }
        let mut messages = Vec::new();
        let mut requests = Vec::new();
        loop {
            let conn = self.conns.get_mut(&token).expect("live connection");
            let (ty, body) = match conn.decoder.next_frame() {
                Ok(Some(frame)) => frame,
                Ok(None) => break,
                Err(FrameError::Io(err)) => {
                    self.close(token, CloseReason::Gone(format!("read failed: {err}")));
                    return false;
                }
                Err(err) => {
                    self.close(token, CloseReason::BadFrame(err.to_string()));
                    return false;
                }
            };
            self.stats.frames_in += 1;
            let stage = match &conn.kind {
                ConnKind::Peer(PeerState::Handshake { expected }) => Stage::PeerHello(*expected),
                ConnKind::Peer(PeerState::Established(peer)) => Stage::Peer(*peer),
                ConnKind::Client(ClientProtocol::Native { greeted: false }) => Stage::ClientHello,
                ConnKind::Client(ClientProtocol::Native { greeted: true }) => Stage::Client,
                ConnKind::Client(ClientProtocol::Undetected) => {
                    unreachable!("a client frame before its protocol was detected")
                }
            };
            let handled = match stage {
                Stage::PeerHello(expected) => self.on_peer_hello(token, expected, ty, &body),
                Stage::Peer(peer) => self
                    .on_peer_frame(token, peer, ty, &body)
                    .map(|message| messages.push(message)),
                Stage::ClientHello => self.on_client_hello(token, ty, &body),
                Stage::Client if ty == FrameType::ClientRequest => {
                    ClientRequest::decode_shared(&body)
                        .map(|request| requests.push(request))
                        .map_err(|err| CloseReason::BadFrame(format!("client request: {err}")))
                }
                Stage::Client => Err(CloseReason::BadFrame(format!(
                    "{ty:?} frame where a client request was expected"
                ))),
            };
            if let Err(reason) = handled {
                self.close(token, reason);
                return false;
            }
            if !self.conns.get(&token).is_some_and(|conn| !conn.closing) {
                break;
            }
        }
        if !messages.is_empty() {
            self.emit(NetEvent::Peer(messages));
        }
        if !requests.is_empty() {
            self.emit(NetEvent::Client {
                conn: ConnId(token.0 as u64),
                requests,
            });
        }
        self.conns.get(&token).is_some_and(|conn| !conn.closing)
    }

    fn on_peer_frame(
        &mut self,
        token: Token,
        peer: NodeId,
        ty: FrameType,
        body: &Bytes,
    ) -> Result<Message, CloseReason> {
        if ty != FrameType::Raft {
            return Err(CloseReason::BadFrame(format!(
                "{ty:?} frame on an established peer connection"
            )));
        }
        let message = decode_message(body)
            .map_err(|err| CloseReason::BadFrame(format!("consensus message: {err}")))?;
        if message.from != peer || message.to != self.config.node_id {
            return Err(CloseReason::BadFrame(format!(
                "message from {} to {} on the connection from {peer} to {}",
                message.from, message.to, self.config.node_id
            )));
        }
        let conn = self.conns.get_mut(&token).expect("live connection");
        if !conn.carried {
            // Only a connection the other end has used counts as healthy for the backoff: a
            // refusal after our hello looks like a handshake followed by a close.
            conn.carried = true;
            if let Some(slot) = self.peers.get_mut(&peer) {
                slot.backoff = self.config.reconnect_min;
            }
        }
        Ok(message)
    }

    fn on_peer_hello(
        &mut self,
        token: Token,
        expected: Option<NodeId>,
        ty: FrameType,
        body: &Bytes,
    ) -> Result<(), CloseReason> {
        if ty != FrameType::PeerHello {
            return Err(CloseReason::BadFrame(format!(
                "{ty:?} frame where a peer hello was expected"
            )));
        }
        let hello = PeerHello::decode(body)
            .map_err(|err| CloseReason::BadFrame(format!("peer hello: {err}")))?;
        let me = self.config.node_id;
        if hello.version != PEER_PROTOCOL_VERSION {
            return Err(CloseReason::Refused(format!(
                "peer protocol version {} (expected {PEER_PROTOCOL_VERSION})",
                hello.version
            )));
        }
        if hello.cluster_id != self.config.cluster_id {
            return Err(CloseReason::Refused(format!(
                "cluster id {} (expected {})",
                hello.cluster_id, self.config.cluster_id
            )));
        }
        let id = hello.node_id;
        if id == me || !self.peers.contains_key(&id) {
            let known: Vec<u64> = self.peers.keys().map(|id| id.get()).collect();
            return Err(CloseReason::Refused(format!(
                "node id {id} (expected one of the peers {known:?}; this node is {me})"
            )));
        }
        match expected {
            Some(expected) if expected != id => {
                return Err(CloseReason::Refused(format!(
                    "node id {id} (expected {expected}, the node dialed)"
                )));
            }
            None if id > me => {
                return Err(CloseReason::Refused(format!(
                    "node id {id} dialed node {me} (expected only smaller ids to dial)"
                )));
            }
            _ => {}
        }
        let slot = self.peers.get_mut(&id).expect("known peer");
        let old = slot.conn.replace(token);
        if slot.dialing == Some(token) {
            slot.dialing = None;
        }
        slot.redial_at = None;
        let conn = self.conns.get_mut(&token).expect("live connection");
        conn.kind = ConnKind::Peer(PeerState::Established(id));
        self.stats.peer_connects += 1;
        debug!(peer = %conn.addr, "connected to node {id}");
        if let Some(old) = old {
            // The peer restarted and dialed again; the old connection is stale.
            self.close(
                old,
                CloseReason::Gone(format!("replaced by a new connection from {id}")),
            );
        }
        Ok(())
    }

    fn on_client_hello(
        &mut self,
        token: Token,
        ty: FrameType,
        body: &Bytes,
    ) -> Result<(), CloseReason> {
        if ty != FrameType::ClientHello {
            return Err(CloseReason::BadFrame(format!(
                "{ty:?} frame where a client hello was expected"
            )));
        }
        let hello = ClientHello::decode(body)
            .map_err(|err| CloseReason::BadFrame(format!("client hello: {err}")))?;
        let refusal = if hello.version != CLIENT_PROTOCOL_VERSION {
            Some(format!(
                "client protocol version {} (expected {CLIENT_PROTOCOL_VERSION})",
                hello.version
            ))
        } else if hello.cluster_id != self.config.cluster_id {
            Some(format!(
                "cluster id {} (expected {})",
                hello.cluster_id, self.config.cluster_id
            ))
        } else {
            None
        };
        let reply = match &refusal {
            None => ClientReply::Ok { req: 0 },
            Some(message) => ClientReply::Error {
                req: 0,
                message: format!("refused: {message}"),
            },
        };
        self.scratch.clear();
        reply.encode(&mut self.scratch);
        self.queue_scratch(token, FrameType::ClientReply);
        let conn = self.conns.get_mut(&token).expect("live connection");
        match refusal {
            None => {
                conn.kind = ConnKind::Client(ClientProtocol::Native { greeted: true });
            }
            Some(message) => {
                warn!(client = %conn.addr, "refusing client handshake: {message}");
                self.stats.handshakes_refused += 1;
                conn.closing = true;
            }
        }
        Ok(())
    }

    /// Delivers an event, or keeps it (and stops reading) while the channel is full. Counters
    /// are published first, so a consumer that sees the event sees counts at least as new.
    fn emit(&mut self, event: NetEvent) {
        self.publish_stats();
        if !self.pending_events.is_empty() {
            self.pending_events.push_back(event);
            return;
        }
        match self.events_tx.try_send(event) {
            Ok(()) => {}
            Err(TrySendError::Full(event)) => {
                self.stats.events_blocked += 1;
                self.pending_events.push_back(event);
            }
            // The consumer is gone (shutting down): nothing to deliver to.
            Err(TrySendError::Disconnected(_)) => {}
        }
    }

    fn retry_pending_events(&mut self) {
        while let Some(event) = self.pending_events.pop_front() {
            match self.events_tx.try_send(event) {
                Ok(()) => {}
                Err(TrySendError::Full(event)) => {
                    self.pending_events.push_front(event);
                    return;
                }
                Err(TrySendError::Disconnected(_)) => {
                    self.pending_events.clear();
                    return;
                }
            }
        }
    }

    fn drain_outbound(&mut self) {
        loop {
            match self.outbound_rx.try_recv() {
                Ok(Outbound::Messages(messages)) => {
                    for message in &messages {
                        self.queue_message(message);
                    }
                }
                Ok(Outbound::Replies(replies)) => {
                    for (conn, reply) in &replies {
                        self.queue_reply(*conn, reply);
                    }
                }
                Ok(Outbound::AddPeer(id, addr)) => self.add_peer(id, addr),
                Ok(Outbound::RemovePeer(id)) => self.remove_peer(id),
                Err(TryRecvError::Empty | TryRecvError::Disconnected) => return,
            }
        }
    }

    fn add_peer(&mut self, id: NodeId, addr: SocketAddr) {
        if id == self.config.node_id || id == NodeId(0) {
            warn!("ignoring add_peer of node id {id} (self or reserved)");
            return;
        }
        if let Some(slot) = self.peers.get_mut(&id) {
            slot.addr = addr;
            return;
        }
        let slot = PeerSlot {
            addr,
            conn: None,
            dialing: None,
            backoff: self.config.reconnect_min,
            redial_at: (self.config.node_id < id).then(Instant::now),
        };
        self.peers.insert(id, slot);
    }

    fn remove_peer(&mut self, id: NodeId) {
        let Some(slot) = self.peers.remove(&id) else {
            return;
        };
        for token in [slot.conn, slot.dialing].into_iter().flatten() {
            self.close(token, CloseReason::Gone(format!("node {id} was removed")));
        }
    }

    fn queue_message(&mut self, message: &Message) {
        let Some(token) = self.peers.get(&message.to).and_then(|slot| slot.conn) else {
            self.stats.messages_dropped += 1;
            return;
        };
        assert_eq!(
            message.from, self.config.node_id,
            "sending a message that is not from this node"
        );
        self.scratch.clear();
        self.parts.clear();
        encode_message_parts(message, &mut self.scratch, &mut self.parts);
        let body_bytes: usize = self
            .parts
            .iter()
            .map(|part| match part {
                BodyPart::Inline(range) => range.len(),
                BodyPart::Shared(bytes) => bytes.len(),
            })
            .sum();
        let frame_bytes = body_bytes + super::frame::FRAME_HEADER_BYTES;
        if frame_bytes > self.config.max_frame_bytes as usize {
            warn!(
                "dropping a message to {} of {frame_bytes} bytes: larger than max_frame_bytes {}",
                message.to, self.config.max_frame_bytes
            );
            self.stats.messages_dropped += 1;
            return;
        }
        let queued = self
            .conns
            .get(&token)
            .expect("peer connection")
            .out
            .queued_bytes;
        if queued > 0 && queued + frame_bytes > PEER_QUEUE_BYTES_MAX {
            self.stats.messages_dropped += 1;
            return;
        }
        self.queue_parts(token, FrameType::Raft);
    }

    fn queue_reply(&mut self, conn_id: ConnId, reply: &ClientReply) {
        let token = Token(conn_id.0 as usize);
        let Some(conn) = self.conns.get(&token) else {
            return;
        };
        if conn.closing
            || !matches!(
                conn.kind,
                ConnKind::Client(ClientProtocol::Native { greeted: true })
            )
        {
            return;
        }
        if conn.out.queued_bytes > CLIENT_QUEUE_BYTES_MAX {
            let reason = format!(
                "{} bytes of replies unread (max {CLIENT_QUEUE_BYTES_MAX})",
                conn.out.queued_bytes
            );
            self.close(token, CloseReason::Gone(reason));
            return;
        }
        self.scratch.clear();
        reply.encode(&mut self.scratch);
        self.queue_scratch(token, FrameType::ClientReply);
    }

    fn flush_dirty(&mut self) {
        let dirty = std::mem::take(&mut self.dirty);
        for &token in &dirty {
            let Some(conn) = self.conns.get_mut(&token) else {
                continue;
            };
            if !conn.connected || !conn.writable {
                // Stays queued; the writable event lists it again.
                conn.in_dirty = false;
                continue;
            }
            conn.in_dirty = false;
            match conn.out.write_to(&mut conn.stream, &mut self.stats) {
                Ok(would_block) => {
                    conn.writable = !would_block;
                    if conn.closing && conn.out.is_empty() {
                        self.close(token, CloseReason::Gone("refused".to_owned()));
                    }
                }
                Err(err) => self.close(token, CloseReason::Gone(format!("write failed: {err}"))),
            }
        }
        let mut dirty = dirty;
        dirty.clear();
        if self.dirty.is_empty() {
            self.dirty = dirty;
        }
    }

    fn close(&mut self, token: Token, reason: CloseReason) {
        let Some(mut conn) = self.conns.remove(&token) else {
            return;
        };
        let _ = self.poll.registry().deregister(&mut conn.stream);
        let (what, peer_id) = match &conn.kind {
            ConnKind::Peer(PeerState::Established(id)) => ("peer", Some(*id)),
            ConnKind::Peer(PeerState::Handshake { expected }) => ("peer", *expected),
            ConnKind::Client(_) => ("client", None),
        };
        match &reason {
            CloseReason::Gone(why) => debug!(addr = %conn.addr, "{what} connection closed: {why}"),
            CloseReason::BadFrame(why) => {
                self.stats.bad_frames += 1;
                warn!(addr = %conn.addr, "closing {what} connection on bad input: {why}");
            }
            CloseReason::Refused(why) => {
                self.stats.handshakes_refused += 1;
                warn!(
                    addr = %conn.addr,
                    "refusing {what} handshake from node {}: {why}",
                    peer_id.map_or("?".to_owned(), |id| id.to_string())
                );
            }
        }
        match conn.kind {
            ConnKind::Client(protocol) => {
                self.clients -= 1;
                if let ClientProtocol::Native { greeted: true } = protocol {
                    self.emit(NetEvent::ClientGone(ConnId(token.0 as u64)));
                }
            }
            ConnKind::Peer(_) => {
                let Some(id) = peer_id else { return };
                let Some(slot) = self.peers.get_mut(&id) else {
                    return;
                };
                if slot.conn == Some(token) {
                    slot.conn = None;
                    self.stats.peer_disconnects += 1;
                    if !conn.carried && matches!(reason, CloseReason::Gone(_)) {
                        warn!(
                            addr = %conn.addr,
                            "connection to node {id} closed before carrying any message: \
                             refused by the peer? (is node {} in its peer list?)",
                            self.config.node_id
                        );
                    }
                }
                if slot.dialing == Some(token) {
                    slot.dialing = None;
                }
                self.schedule_redial(id);
            }
        }
    }
}

/// Tells the client's protocol from its first byte. Today only the framed protocol (first byte
/// [`FRAME_MAGIC`]) is spoken; a text protocol such as RESP would be recognised here.
fn detect_client(conn: &mut Conn) -> Result<(), String> {
    let Some(&first) = conn.decoder.peek().first() else {
        return Ok(());
    };
    if first != FRAME_MAGIC {
        return Err(format!(
            "unknown client protocol (first byte {first:#04x}, expected {FRAME_MAGIC:#04x})"
        ));
    }
    conn.kind = ConnKind::Client(ClientProtocol::Native { greeted: false });
    Ok(())
}
