//! The mio event loop (one thread): accepts and dials connections, runs the handshakes, decodes
//! inbound frames into [`NetEvent`]s, and encodes outbound messages and replies into
//! per-connection queues flushed with vectored writes.
//!
//! Loop turn: announce sleep, drain the handles' channel, flush, publish counters, poll; then
//! handle poll events, retry undelivered events, expire handshakes, dial due peers, and do one
//! read per readable connection (edge-triggered: a connection stays listed until a read would
//! block; none is read while an event waits for room in the channel).
//!
//! A connection's bytes go through `conn_stream::ConnStream`: plain TCP, or TLS when the port is
//! configured for it (the TLS handshake runs before the hellos; a failed one is a refused
//! handshake).

mod client_sweep;
mod handshake;
mod resp_conn;

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use crossbeam_channel::{Receiver, Sender, TryRecvError, TrySendError};
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use tracing::{debug, warn};

use self::handshake::{detect_client, PeerHandshake};
use self::resp_conn::RespConn;
use super::auth::Refusal;
use super::conn_stream::ConnStream;
use super::frame::{FrameDecoder, FrameError, FrameType, ReadOutcome, FRAME_HEADER_BYTES};
use super::lane::Lanes;
use super::out_queue::OutQueue;
use super::peer_msg::{decode_message, encode_message_parts, BodyPart};
use super::rate_log::RateLimitedLog;
use super::transport::{set_buffer_sizes, Outbound, Wake};
use super::{
    ClientReply, ClientRequest, ConnId, InlineTurn, NetConfig, NetEvent, NetSink, NetStats,
};
use crate::raft::Message;
use crate::resp::parser::RespLimits;
use crate::types::NodeId;

/// Most bytes queued for one peer; messages beyond are dropped (Raft retransmits).
pub const PEER_QUEUE_BYTES_MAX: usize = 64 << 20;
/// Most bytes of replies queued for one client; a client that does not read is disconnected.
pub const CLIENT_QUEUE_BYTES_MAX: usize = 64 << 20;
pub use self::resp_conn::{RESP_IN_FLIGHT_MAX, RESP_OUT_PAUSE_BYTES};
/// Hashes the tokens this loop hands out itself (sequential, never chosen by a peer) with one
/// multiply instead of SipHash: the connection map is looked up for every frame in and out, and
/// SipHash was ~18% of the loop's CPU under a pipelined client load.
#[derive(Default)]
struct TokenHasher(u64);

impl Hasher for TokenHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(byte)).wrapping_mul(GOLDEN);
        }
    }

    fn write_usize(&mut self, n: usize) {
        self.0 = (n as u64).wrapping_mul(GOLDEN);
    }
}

/// 2^64 / phi, odd: multiplying by it is a bijection that spreads sequential keys.
const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;

/// The live connections by token.
type ConnMap = HashMap<Token, Conn, BuildHasherDefault<TokenHasher>>;

/// Poll timeout while the events channel is full.
const BLOCKED_POLL: Duration = Duration::from_millis(1);

pub(super) const WAKER: Token = Token(0);
pub(super) const PEER_LISTENER: Token = Token(1);
pub(super) const CLIENT_LISTENER: Token = Token(2);
const FIRST_CONN: usize = 3;

/// What connects the loop to the rest of the stage.
pub(super) struct LoopLinks {
    /// Where inbound events go (bounded).
    pub(super) events_tx: Sender<NetEvent>,
    /// What handles queue.
    pub(super) outbound_rx: Receiver<Outbound>,
    /// The wake-up and stop flags.
    pub(super) wake: Arc<Wake>,
    /// Where counters are published.
    pub(super) stats: Arc<Mutex<NetStats>>,
    /// Direct sends to peers, which the loop keeps in order with its own.
    pub(super) lanes: Arc<Lanes>,
}

/// What the loop knows about one peer: a listed one (`NetConfig::peers`, `add_peer`), or an
/// unlisted one that dialed in (kept only while its connection lasts).
struct PeerSlot {
    /// Where to dial it; `None`: unlisted (never dialed; the slot goes with its connection).
    addr: Option<SocketAddr>,
    /// The established connection.
    conn: Option<Token>,
    /// A dial in progress (connecting or handshaking).
    dialing: Option<Token>,
    /// The next reconnect delay.
    backoff: Duration,
    /// When to dial next.
    redial_at: Option<Instant>,
    /// Since when the pair has had no connection (the slot's creation, or its connection's
    /// loss): the larger id dials only `reverse_dial_after` past it.
    unconnected_since: Instant,
}

enum PeerState {
    /// Waiting for the other end's hello, then (with a secret) its proof.
    Handshake(Box<PeerHandshake>),
    /// Hello (and proof) checked: this is the connection to `NodeId`.
    Established(NodeId),
}

/// The protocol a client speaks, told from its first byte (`handshake::detect_client`).
enum ClientProtocol {
    /// No byte received yet.
    Undetected,
    /// Framed protocol: `greeted` once its hello was accepted.
    Native { greeted: bool },
    /// RESP2 (any first byte other than the frame magic).
    Resp(Box<RespConn>),
}

enum ConnKind {
    Peer(PeerState),
    Client(ClientProtocol),
}

struct Conn {
    stream: ConnStream,
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
    /// This end dialed the connection (a peer connection; which end dialed decides which of
    /// two connections between a pair stays).
    dialed: bool,
    /// When bytes last arrived (the idle timeout's clock).
    last_read: Instant,
    /// Since when queued output has waited with none of it written (the slow-client clock);
    /// `None` while the queue is empty.
    stalled_since: Option<Instant>,
    /// A native client's requests sent to consensus and not yet answered.
    native_awaiting: usize,
    /// A native client that authenticated as the read-only user: its proposals are refused.
    read_only: bool,
}

pub(super) struct EventLoop {
    config: NetConfig,
    poll: Poll,
    peer_listener: TcpListener,
    client_listener: Option<TcpListener>,
    events_tx: Sender<NetEvent>,
    outbound_rx: Receiver<Outbound>,
    /// What inline turns sent that could not be written directly, behind what the handles had
    /// queued on `outbound_rx` by then (taken before the channel by `drain_outbound`).
    outbound_held: VecDeque<Outbound>,
    /// The turn events are offered to before they are queued (`Transport::set_inline_turn`).
    inline: Option<Box<dyn InlineTurn>>,
    wake: Arc<Wake>,
    stats_shared: Arc<Mutex<NetStats>>,
    stats: NetStats,
    lanes: Arc<Lanes>,
    conns: ConnMap,
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
    /// The rate limit on warnings about refused peer handshakes.
    peer_refusal_log: RateLimitedLog,
    /// Where TLS reads put ciphertext before decrypting it (one buffer for every connection;
    /// empty when no port speaks TLS).
    tls_scratch: Vec<u8>,
    /// The RESP request limits, the request size capped to a frame (a command must fit in the
    /// frames that replicate it).
    resp_limits: RespLimits,
    /// Failed client authentications (logged rate-limited: a guessing client floods).
    auth_log: RateLimitedLog,
    /// Connections refused at `max_clients` (likewise).
    refusal_log: RateLimitedLog,
    /// When to look for idle and slow clients next (none: neither timeout is set).
    next_sweep: Option<Instant>,
}

/// The loop's own [`NetSink`], for inline turns. It writes directly where the lanes allow (as
/// a handle would) and holds the rest in `outbound_held`, behind everything the handles had
/// queued by then: connection state is never touched in the middle of a read, and each peer and
/// client sees frames in the order they were handed over, whichever thread handed them.
struct LoopSink<'a> {
    held: &'a mut VecDeque<Outbound>,
    outbound_rx: &'a Receiver<Outbound>,
    lanes: &'a Lanes,
    max_frame_bytes: u32,
}

impl LoopSink<'_> {
    /// Holds `item` after what the handles queued so far (moved to the held queue first).
    fn hold(&mut self, item: Outbound) {
        self.held.extend(self.outbound_rx.try_iter());
        self.held.push_back(item);
    }
}

impl NetSink for LoopSink<'_> {
    fn send(&mut self, messages: Vec<Message>) {
        // A spill sets the lanes' flag, which the loop checks at the top of every turn.
        let (queued, _) = self.lanes.route_messages(messages, self.max_frame_bytes);
        if !queued.is_empty() {
            self.hold(Outbound::Messages(queued));
        }
    }

    fn reply(&mut self, replies: Vec<(ConnId, ClientReply)>) {
        let (queued, _) = self.lanes.route_reply_batch(replies, self.max_frame_bytes);
        if !queued.is_empty() {
            self.hold(Outbound::Replies(queued));
        }
    }

    fn add_peer(&mut self, id: NodeId, addr: SocketAddr) {
        self.hold(Outbound::AddPeer(id, addr));
    }

    fn remove_peer(&mut self, id: NodeId) {
        self.hold(Outbound::RemovePeer(id));
    }
}

/// What the next frame on a connection must be.
enum Stage {
    /// A peer's hello or proof.
    PeerHandshake,
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
    /// A refused peer handshake: counted in `handshakes_refused` and by reason.
    Refused(Refusal, String),
}

impl EventLoop {
    /// A loop over bound listeners (already registered with `poll`); dials start at once.
    pub(super) fn new(
        config: NetConfig,
        poll: Poll,
        peer_listener: TcpListener,
        client_listener: Option<TcpListener>,
        links: LoopLinks,
    ) -> EventLoop {
        let now = Instant::now();
        let peers = config.peers.clone();
        let mut event_loop = EventLoop {
            poll,
            peer_listener,
            client_listener,
            events_tx: links.events_tx,
            outbound_rx: links.outbound_rx,
            outbound_held: VecDeque::new(),
            inline: None,
            wake: links.wake,
            stats_shared: links.stats,
            stats: NetStats::default(),
            lanes: links.lanes,
            conns: ConnMap::default(),
            next_token: FIRST_CONN,
            peers: HashMap::new(),
            clients: 0,
            pending_events: VecDeque::new(),
            read_ready: Vec::new(),
            dirty: Vec::new(),
            handshake_deadlines: VecDeque::new(),
            scratch: Vec::new(),
            parts: Vec::new(),
            peer_refusal_log: RateLimitedLog::new("refused peer handshakes"),
            tls_scratch: vec![0; config.tls.read_scratch_bytes()],
            resp_limits: RespLimits {
                request_bytes_max: config
                    .resp_limits
                    .request_bytes_max
                    .min(config.max_frame_bytes as usize),
                ..config.resp_limits
            },
            auth_log: RateLimitedLog::new("failed authentications"),
            refusal_log: RateLimitedLog::new("refused connections"),
            next_sweep: config
                .client_limits
                .sweep_interval()
                .map(|interval| now + interval),
            config,
        };
        for (id, addr) in peers {
            event_loop.add_peer(id, addr);
        }
        event_loop
    }

    /// Runs until the stop flag is set (or poll fails).
    pub(super) fn run(mut self) {
        let mut events = Events::with_capacity(1024);
        // Spin-before-block (`NetConfig::spin`): until `spin_until`, the loop polls without
        // sleeping and stays "awake", so handles queue without waking it (each turn drains
        // their channel); the sleep protocol below resumes once the spin runs out.
        let mut spin_until: Option<Instant> = None;
        loop {
            let spinning = spin_until.is_some_and(|until| Instant::now() < until);
            if !spinning {
                // Announce the coming sleep, then pick up anything queued before the
                // announcement.
                self.wake.awake.store(false, Ordering::SeqCst);
            }
            let drained = self.drain_outbound();
            self.take_spills();
            self.flush_dirty();
            // Counters are current whenever the loop sleeps.
            self.publish_stats();
            let timeout = if spinning {
                Some(Duration::ZERO)
            } else {
                self.poll_timeout()
            };
            if let Err(err) = self.poll.poll(&mut events, timeout) {
                if err.kind() != io::ErrorKind::Interrupted {
                    warn!("network poll failed, stopping: {err}");
                    return;
                }
            }
            self.wake.awake.store(true, Ordering::SeqCst);
            if drained || !events.is_empty() {
                spin_until =
                    Some(Instant::now() + self.config.spin).filter(|_| !self.config.spin.is_zero());
            } else if spinning {
                std::thread::yield_now();
            }
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
            self.sweep_clients();
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
            .chain(self.next_sweep)
            .min()
            .map(|at| at.saturating_duration_since(now))
    }

    fn publish_stats(&mut self) {
        self.stats.frames_out += self.lanes.frames.swap(0, Ordering::Relaxed);
        self.stats.bytes_out += self.lanes.bytes.swap(0, Ordering::Relaxed);
        self.stats.writes += self.lanes.writes.swap(0, Ordering::Relaxed);
        *self.stats_shared.lock().expect("net stats lock") = self.stats;
    }

    /// Moves what direct writes left unwritten into the connections' queues (in front of
    /// anything else: nothing was queued when they wrote) and lists them for flushing.
    fn take_spills(&mut self) {
        if !self.lanes.spilled.swap(false, Ordering::AcqRel) {
            return;
        }
        for lane in self.lanes.all() {
            let mut state = lane.lock();
            if state.spill.is_empty() {
                continue;
            }
            let Some(token) = state.token() else {
                continue;
            };
            let Some(conn) = self.conns.get_mut(&token) else {
                continue;
            };
            assert!(
                conn.out.is_empty(),
                "a direct write spilled to {} while {} bytes were queued ahead of it",
                conn.addr,
                conn.out.queued_bytes
            );
            conn.out.push_raw(&state.spill);
            state.spill.clear();
            drop(state);
            self.mark_dirty(token);
        }
    }

    fn new_token(&mut self) -> Token {
        let token = Token(self.next_token);
        self.next_token += 1;
        token
    }

    fn add_conn(
        &mut self,
        mut stream: ConnStream,
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
        let frame_bytes_max = match kind {
            ConnKind::Peer(_) => self.config.max_frame_bytes,
            // A client's frame carries one request: the request limit (capped to a frame).
            ConnKind::Client(_) => {
                let request_frame = self.resp_limits.request_bytes_max + FRAME_HEADER_BYTES;
                u32::try_from(request_frame).map_or(self.config.max_frame_bytes, |bytes| {
                    bytes.min(self.config.max_frame_bytes)
                })
            }
        };
        let dialed = match &kind {
            ConnKind::Peer(PeerState::Handshake(handshake)) => handshake.dialed().is_some(),
            ConnKind::Peer(PeerState::Established(_)) | ConnKind::Client(_) => false,
        };
        let conn = Conn {
            stream,
            addr,
            kind,
            decoder: FrameDecoder::new(frame_bytes_max),
            out: OutQueue::new(),
            connected,
            writable: connected,
            in_read_ready: false,
            in_dirty: false,
            carried: false,
            closing: false,
            dialed,
            last_read: Instant::now(),
            stalled_since: None,
            native_awaiting: 0,
            read_only: false,
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
                    let stream = match self.config.tls.accept_peer(stream) {
                        Ok(stream) => stream,
                        Err(err) => {
                            warn!(peer = %addr, "cannot start TLS on a peer connection: {err}");
                            continue;
                        }
                    };
                    let kind = ConnKind::Peer(PeerState::Handshake(PeerHandshake::new(None)));
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
                        self.refuse_client(stream, addr);
                        continue;
                    }
                    self.configure(&stream);
                    let stream = match self.config.tls.accept_client(stream) {
                        Ok(stream) => stream,
                        Err(err) => {
                            warn!(client = %addr, "cannot start TLS on a client connection: {err}");
                            continue;
                        }
                    };
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
            let addr = slot.addr.expect("only a listed peer is dialed");
            let stream = match TcpStream::connect(addr) {
                Ok(stream) => stream,
                Err(err) => {
                    debug!(peer = %addr, "dial of node {id} failed: {err}");
                    self.schedule_redial(id);
                    continue;
                }
            };
            self.configure(&stream);
            let stream = match self.config.tls.dial_peer(stream, addr) {
                Ok(stream) => stream,
                Err(err) => {
                    warn!(peer = %addr, "cannot start TLS to node {id}: {err}");
                    self.schedule_redial(id);
                    continue;
                }
            };
            let kind = ConnKind::Peer(PeerState::Handshake(PeerHandshake::new(Some(id))));
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

    /// Schedules the next dial of the listed peer `id` while the pair has no connection: the
    /// smaller id of the pair after the backoff, the larger one too but not before the pair has
    /// gone `reverse_dial_after` without a connection (the smaller id normally dials sooner; it
    /// may not know this node at all).
    fn schedule_redial(&mut self, id: NodeId) {
        let max = self.config.reconnect_max;
        let not_before = self.dial_not_before(id, self.peers[&id].unconnected_since);
        let slot = self.peers.get_mut(&id).expect("known peer");
        if slot.addr.is_none() || slot.conn.is_some() || slot.dialing.is_some() {
            return;
        }
        slot.redial_at = Some((Instant::now() + slot.backoff).max(not_before));
        slot.backoff = (slot.backoff * 2).min(max);
    }

    /// The earliest this end dials `id` when the pair has had no connection since
    /// `unconnected_since` (see [`EventLoop::schedule_redial`]).
    fn dial_not_before(&self, id: NodeId, unconnected_since: Instant) -> Instant {
        if self.config.node_id < id {
            unconnected_since
        } else {
            unconnected_since + self.config.reverse_dial_after
        }
    }

    /// Queues the whole of `scratch` as one frame on `token`.
    fn queue_scratch(&mut self, token: Token, ty: FrameType) {
        self.queue_scratch_after(token, ty, false);
    }

    /// [`EventLoop::queue_scratch`]; `from_channel`: the frame is a reply a handle routed
    /// through the channel (counted ahead in the client's lane). A client with a lane has its
    /// lane locked until the frame is queued, so no direct write slips in between (`net/lane.rs`).
    fn queue_scratch_after(&mut self, token: Token, ty: FrameType, from_channel: bool) {
        let lane = self.lanes.client(token);
        let mut lane_state = lane.as_ref().map(|lane| lane.lock());
        if let Some(state) = lane_state.as_mut() {
            if from_channel {
                state.taken_from_channel();
            }
            if !state.spill.is_empty() {
                let conn = self.conns.get_mut(&token).expect("live connection");
                conn.out.push_raw(&state.spill);
                state.spill.clear();
            }
        }
        self.parts.clear();
        self.parts.push(BodyPart::Inline(0..self.scratch.len()));
        self.queue_parts(token, ty);
        if let Some(state) = lane_state.as_mut() {
            state.loop_queued = true;
        }
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

    /// Lists `token` for flushing if it has output queued.
    fn mark_dirty(&mut self, token: Token) {
        let Some(conn) = self.conns.get_mut(&token) else {
            return;
        };
        if !conn.in_dirty && !conn.out.is_empty() {
            conn.in_dirty = true;
            self.dirty.push(token);
        }
    }

    fn on_conn_event(&mut self, token: Token, event: &mio::event::Event) {
        let Some(conn) = self.conns.get_mut(&token) else {
            return;
        };
        if !conn.connected {
            let failure = match conn.stream.tcp().take_error() {
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
            if event.is_writable() && conn.stream.tcp().peer_addr().is_ok() {
                conn.connected = true;
            }
        }
        if event.is_writable() && conn.connected {
            conn.writable = true;
            if !conn.in_dirty && (!conn.out.is_empty() || conn.stream.wants_write()) {
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
        if let ConnKind::Client(ClientProtocol::Resp(resp)) = &conn.kind {
            if resp.paused {
                // Resumed (and listed again) by `resp_resume` once under its limits.
                return false;
            }
        }
        let outcome = conn
            .stream
            .read_into(&mut conn.decoder, &mut self.tls_scratch);
        if conn.stream.wants_write() && conn.connected {
            // The read moved a TLS handshake on (or made an alert): its records go out with
            // the next flush. A write refused while the handshake was unfinished looked like a
            // full socket, so the socket is tried again (at worst one write that would block).
            conn.writable = true;
            if !conn.in_dirty {
                conn.in_dirty = true;
                self.dirty.push(token);
            }
        }
        match outcome {
            Ok(ReadOutcome::Data(n)) => {
                conn.last_read = Instant::now();
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
            Err(err) if err.kind() == io::ErrorKind::InvalidData => {
                // A TLS failure: in the handshake (a plaintext client, an unknown certificate)
                // it is a refused handshake, later a bad record.
                let reason = if !conn.stream.is_handshaking() {
                    CloseReason::BadFrame(err.to_string())
                } else if let ConnKind::Peer(_) = conn.kind {
                    CloseReason::Refused(Refusal::Tls, format!("TLS handshake: {err}"))
                } else {
                    CloseReason::BadFrame(err.to_string())
                };
                self.close(token, reason);
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
            let users = &self.config.client_users;
            let pipelined = self.config.client_limits.max_pipelined_bytes;
            if let Err(reason) = detect_client(conn, token, self.resp_limits, users, pipelined) {
                self.close(token, CloseReason::BadFrame(reason.to_string()));
                return false;
            }
        }
        if let ConnKind::Client(ClientProtocol::Resp(_)) = conn.kind {
            return self.handle_resp(token);
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
                Err(FrameError::TooLarge { len, max })
                    if matches!(conn.kind, ConnKind::Client(_)) =>
                {
                    self.refuse_oversized_frame(token, len, max);
                    break;
                }
                Err(err) => {
                    self.close(token, CloseReason::BadFrame(err.to_string()));
                    return false;
                }
            };
            self.stats.frames_in += 1;
            let stage = match &conn.kind {
                ConnKind::Peer(PeerState::Handshake(_)) => Stage::PeerHandshake,
                ConnKind::Peer(PeerState::Established(peer)) => Stage::Peer(*peer),
                ConnKind::Client(ClientProtocol::Native { greeted: false }) => Stage::ClientHello,
                ConnKind::Client(ClientProtocol::Native { greeted: true }) => Stage::Client,
                ConnKind::Client(ClientProtocol::Undetected | ClientProtocol::Resp(_)) => {
                    unreachable!("a frame on a client connection that does not speak frames")
                }
            };
            let handled = match stage {
                Stage::PeerHandshake => self.on_peer_handshake_frame(token, ty, &body),
                Stage::Peer(peer) => self
                    .on_peer_frame(token, peer, ty, &body)
                    .map(|message| messages.push(message)),
                Stage::ClientHello => self.on_client_hello(token, ty, &body),
                Stage::Client if ty == FrameType::ClientRequest => {
                    ClientRequest::decode_shared(&body)
                        .map(|request| self.native_request(token, request, &mut requests))
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
            if self.conns.get(&token).is_none_or(|conn| conn.closing) {
                break;
            }
        }
        if !messages.is_empty() {
            self.emit(NetEvent::Peer(messages));
        }
        if !requests.is_empty() {
            if let Some(conn) = self.conns.get_mut(&token) {
                conn.native_awaiting += requests.len();
            }
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

    /// Delivers an event: to the inline turn if it takes it, else on the channel, or keeps it
    /// (and stops reading) while the channel is full. Counters are published first, so a
    /// consumer that sees the event sees counts at least as new.
    fn emit(&mut self, event: NetEvent) {
        self.publish_stats();
        if !self.pending_events.is_empty() {
            self.pending_events.push_back(event);
            return;
        }
        let event = match self.inline.as_mut() {
            Some(turn) => {
                let mut sink = LoopSink {
                    held: &mut self.outbound_held,
                    outbound_rx: &self.outbound_rx,
                    lanes: &self.lanes,
                    max_frame_bytes: self.config.max_frame_bytes,
                };
                match turn.offer(event, &mut sink) {
                    Some(event) => event,
                    None => return,
                }
            }
            None => event,
        };
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

    /// Queues what inline turns held, then what the handles sent; returns whether there was
    /// anything.
    fn drain_outbound(&mut self) -> bool {
        let mut drained = false;
        while let Some(item) = self.outbound_held.pop_front() {
            drained = true;
            self.take_outbound(item);
        }
        loop {
            match self.outbound_rx.try_recv() {
                Ok(item) => {
                    drained = true;
                    self.take_outbound(item);
                }
                Err(TryRecvError::Empty | TryRecvError::Disconnected) => return drained,
            }
        }
    }

    fn take_outbound(&mut self, item: Outbound) {
        match item {
            Outbound::Messages(messages) => {
                for message in &messages {
                    self.queue_message(message);
                }
            }
            Outbound::Replies(replies) => {
                for (conn, reply) in &replies {
                    self.queue_reply(*conn, reply);
                }
            }
            Outbound::AddPeer(id, addr) => self.add_peer(id, addr),
            Outbound::RemovePeer(id) => self.remove_peer(id),
            Outbound::Inline(turn) => self.inline = Some(turn),
        }
    }

    fn add_peer(&mut self, id: NodeId, addr: SocketAddr) {
        if id == self.config.node_id || id == NodeId(0) {
            warn!("ignoring add_peer of node id {id} (self or reserved)");
            return;
        }
        if let Some(slot) = self.peers.get_mut(&id) {
            // A listed peer moves; an unlisted one (connected) becomes listed and stays.
            slot.addr = Some(addr);
            return;
        }
        let mut slot = self.new_slot(Some(addr));
        // No backoff before the first dial.
        slot.redial_at = Some(self.dial_not_before(id, slot.unconnected_since));
        self.peers.insert(id, slot);
        self.lanes.add(id);
    }

    /// A slot with no connection yet, at `addr` (`None`: unlisted).
    fn new_slot(&self, addr: Option<SocketAddr>) -> PeerSlot {
        PeerSlot {
            addr,
            conn: None,
            dialing: None,
            backoff: self.config.reconnect_min,
            redial_at: None,
            unconnected_since: Instant::now(),
        }
    }

    fn remove_peer(&mut self, id: NodeId) {
        let Some(slot) = self.peers.remove(&id) else {
            return;
        };
        self.lanes.remove(id);
        for token in [slot.conn, slot.dialing].into_iter().flatten() {
            self.close(token, CloseReason::Gone(format!("node {id} was removed")));
        }
    }

    fn queue_message(&mut self, message: &Message) {
        // Held until the frame is queued, so no direct write slips in between (`net/lane.rs`).
        let lane = self.lanes.get(message.to);
        let mut lane_state = lane.as_ref().map(|lane| lane.lock());
        if let Some(state) = lane_state.as_mut() {
            state.taken_from_channel();
        }
        let Some(token) = self.peers.get(&message.to).and_then(|slot| slot.conn) else {
            self.stats.messages_dropped += 1;
            return;
        };
        if let Some(state) = lane_state.as_mut() {
            if !state.spill.is_empty() {
                let conn = self.conns.get_mut(&token).expect("peer connection");
                conn.out.push_raw(&state.spill);
                state.spill.clear();
            }
        }
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
        let frame_bytes = body_bytes + FRAME_HEADER_BYTES;
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
        if let Some(state) = lane_state.as_mut() {
            state.loop_queued = true;
        }
    }

    fn queue_reply(&mut self, conn_id: ConnId, reply: &ClientReply) {
        let token = Token(conn_id.0 as usize);
        let Some(conn) = self.conns.get(&token) else {
            return;
        };
        if conn.closing {
            self.channel_reply_dropped(token);
            return;
        }
        match conn.kind {
            ConnKind::Client(ClientProtocol::Native { greeted: true }) => {}
            ConnKind::Client(ClientProtocol::Resp(_)) => return self.resp_reply(token, reply),
            _ => return,
        }
        let conn = self.conns.get_mut(&token).expect("live connection");
        conn.native_awaiting = conn.native_awaiting.saturating_sub(1);
        if conn.out.queued_bytes > CLIENT_QUEUE_BYTES_MAX {
            let reason = format!(
                "{} bytes of replies unread (max {CLIENT_QUEUE_BYTES_MAX})",
                conn.out.queued_bytes
            );
            self.channel_reply_dropped(token);
            self.close(token, CloseReason::Gone(reason));
            return;
        }
        self.scratch.clear();
        reply.encode(&mut self.scratch);
        self.queue_scratch_after(token, FrameType::ClientReply, true);
    }

    /// A reply a handle routed through the channel is dropped, not queued: it is no longer
    /// ahead of later direct writes on the client's lane.
    fn channel_reply_dropped(&self, token: Token) {
        if let Some(lane) = self.lanes.client(token) {
            lane.lock().taken_from_channel();
        }
    }

    fn flush_dirty(&mut self) {
        let dirty = std::mem::take(&mut self.dirty);
        for &token in &dirty {
            let Some(conn) = self.conns.get_mut(&token) else {
                continue;
            };
            if !conn.connected || !conn.writable {
                // Stays queued; the writable event (or a TLS read) lists it again.
                conn.in_dirty = false;
                continue;
            }
            conn.in_dirty = false;
            let queued = conn.out.queued_bytes;
            match conn.out.write_to(&mut conn.stream, &mut self.stats) {
                Ok(would_block) => {
                    conn.writable = !would_block;
                    if conn.out.is_empty() {
                        let lane = match conn.kind {
                            ConnKind::Peer(PeerState::Established(id)) => self.lanes.get(id),
                            // Only greeted native clients have lanes (`net/lane.rs`).
                            ConnKind::Client(ClientProtocol::Native { greeted: true }) => {
                                self.lanes.client(token)
                            }
                            ConnKind::Client(_) | ConnKind::Peer(_) => None,
                        };
                        if let Some(lane) = lane {
                            let mut state = lane.lock();
                            // A spill not yet taken keeps later direct writes behind it.
                            state.loop_queued = !state.spill.is_empty();
                        }
                    }
                    conn.stalled_since = match conn.stalled_since {
                        _ if conn.out.is_empty() => None,
                        Some(since) if conn.out.queued_bytes == queued => Some(since),
                        _ => Some(Instant::now()),
                    };
                    if conn.closing && !would_block && conn.out.is_empty() {
                        self.close(
                            token,
                            CloseReason::Gone("closed after its last reply".to_owned()),
                        );
                    } else if let ConnKind::Client(ClientProtocol::Resp(_)) = conn.kind {
                        self.resp_resume(token);
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
        conn.stream.close_notify();
        let _ = self.poll.registry().deregister(&mut conn.stream);
        match &conn.kind {
            ConnKind::Peer(PeerState::Established(id)) => {
                if let Some(lane) = self.lanes.get(*id) {
                    lane.lock().detach(token);
                }
            }
            ConnKind::Client(_) => self.lanes.detach_client(token),
            ConnKind::Peer(_) => {}
        }
        let (what, peer_id) = match &conn.kind {
            ConnKind::Peer(PeerState::Established(id)) => ("peer", Some(*id)),
            ConnKind::Peer(PeerState::Handshake(handshake)) => ("peer", handshake.dialed()),
            ConnKind::Client(_) => ("client", None),
        };
        match &reason {
            CloseReason::Gone(why) => debug!(addr = %conn.addr, "{what} connection closed: {why}"),
            CloseReason::BadFrame(why) => {
                self.stats.bad_frames += 1;
                warn!(addr = %conn.addr, "closing {what} connection on bad input: {why}");
            }
            CloseReason::Refused(refusal, why) => {
                self.refused_peer(conn.addr, peer_id, *refusal, why);
            }
        }
        match conn.kind {
            ConnKind::Client(protocol) => {
                self.clients -= 1;
                let known = match &protocol {
                    ClientProtocol::Native { greeted } => *greeted,
                    ClientProtocol::Resp(resp) => resp.sent_any,
                    ClientProtocol::Undetected => false,
                };
                if known {
                    self.emit(NetEvent::ClientGone(ConnId(token.0 as u64)));
                }
            }
            ConnKind::Peer(state) => {
                let Some(id) = peer_id else { return };
                if let PeerState::Established(_) = state {
                    self.stats.peer_disconnects += 1;
                }
                let Some(slot) = self.peers.get_mut(&id) else {
                    return;
                };
                if slot.conn == Some(token) {
                    slot.conn = None;
                    slot.unconnected_since = Instant::now();
                    if !conn.carried && matches!(reason, CloseReason::Gone(_)) {
                        warn!(
                            addr = %conn.addr,
                            "connection to node {id} closed before carrying any message: \
                             refused by the peer? (does it have the same cluster id and peer secret?)"
                        );
                    }
                    if slot.addr.is_none() {
                        // An unlisted peer is known only through its connection.
                        self.peers.remove(&id);
                        self.lanes.remove(id);
                        return;
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
