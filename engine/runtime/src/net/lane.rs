//! Direct sends: a stage thread (storage with a follower's acks, consensus with a leader's
//! appends, apply with a client's replies) writes a frame straight into the socket, instead of
//! queueing it for the network thread and waking it, whenever nothing for that connection is
//! queued ahead of it. On a small machine every wake-up of a sleeping thread costs tens of
//! microseconds, and a commit crosses three such hand-offs to the network thread
//! (`docs/BENCHMARKS.md`).
//!
//! One [`Lane`] per configured peer, and one per greeted native-protocol client connection,
//! holds a duplicate of the connection's socket (plain TCP only: a TLS connection's state
//! belongs to the network thread; RESP clients keep their replies in the loop, which orders them
//! with its own) and what decides whether a direct write keeps the connection's order:
//! - `ahead`: messages for the peer routed through the handles' channel and not yet queued by
//!   the loop;
//! - `loop_queued`: the loop's output queue for the connection holds bytes (or a spill does).
//!
//! A sender writes directly only when both say nothing is ahead, under the lane's lock, which
//! the loop also takes to queue a frame for the peer; so frames to one peer leave in the order
//! they were sent, whichever path each took, and two writers never interleave bytes. A direct
//! write that the socket takes only in part leaves its tail in `spill` (and `loop_queued` set):
//! the loop moves it to the front of its queue before anything else and writes it when the
//! socket is writable again.

use std::collections::HashMap;
use std::io::{self, IoSlice, Write};
use std::net::TcpStream;
use std::os::fd::{AsRawFd, FromRawFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use mio::Token;

use super::client_msg::ClientReply;
use super::frame::{frame_header, FrameType, FRAME_HEADER_BYTES};
use super::peer_msg::{encode_message_parts, BodyPart};
use super::ConnId;
use crate::raft::Message;
use crate::types::NodeId;

/// Every peer's and native client's lane, shared by the handles and the loop.
#[derive(Default)]
pub(super) struct Lanes {
    by_peer: RwLock<HashMap<NodeId, Arc<Lane>>>,
    /// Greeted plain-TCP native clients, by connection token.
    by_client: RwLock<HashMap<Token, Arc<Lane>>>,
    /// Set when a direct write left a tail in some lane's spill (the loop looks).
    pub(super) spilled: AtomicBool,
    /// Frames, bytes and write calls of direct sends (added to the loop's counters).
    pub(super) frames: AtomicU64,
    pub(super) bytes: AtomicU64,
    pub(super) writes: AtomicU64,
}

/// One connection's lane.
#[derive(Default)]
pub(super) struct Lane {
    state: Mutex<LaneState>,
    /// A client lane's replies written directly, not yet taken off the loop's count of replies
    /// the client awaits.
    answered: AtomicU64,
}

/// See the module header.
#[derive(Default)]
pub(super) struct LaneState {
    /// The established connection's token and a duplicate of its socket.
    socket: Option<(Token, TcpStream)>,
    ahead: usize,
    pub(super) loop_queued: bool,
    pub(super) spill: Vec<u8>,
}

/// What [`Lanes::route`] did with a message.
enum Route {
    /// Written to the socket (or its tail spilled for the loop): nothing more to do, except
    /// waking the loop when `spilled`.
    Direct { spilled: bool },
    /// The caller must queue it through the channel (counted as ahead).
    Channel,
}

impl Lanes {
    /// Lanes for `peers` (none connected yet).
    pub(super) fn new(peers: impl IntoIterator<Item = NodeId>) -> Lanes {
        let lanes = Lanes::default();
        for peer in peers {
            lanes.add(peer);
        }
        lanes
    }

    /// A lane for a peer added at run time.
    pub(super) fn add(&self, peer: NodeId) {
        self.by_peer
            .write()
            .expect("lanes lock")
            .entry(peer)
            .or_default();
    }

    /// Drops a removed peer's lane.
    pub(super) fn remove(&self, peer: NodeId) {
        self.by_peer.write().expect("lanes lock").remove(&peer);
    }

    /// `peer`'s lane.
    pub(super) fn get(&self, peer: NodeId) -> Option<Arc<Lane>> {
        self.by_peer.read().expect("lanes lock").get(&peer).cloned()
    }

    /// Every lane, for the loop's spill check.
    pub(super) fn all(&self) -> Vec<Arc<Lane>> {
        let peers = self.by_peer.read().expect("lanes lock");
        let clients = self.by_client.read().expect("lanes lock");
        peers.values().chain(clients.values()).cloned().collect()
    }

    /// Gives the greeted native client `token` a lane on its (plain TCP) socket.
    pub(super) fn attach_client(&self, token: Token, socket: &mio::net::TcpStream, queued: bool) {
        let lane = Arc::new(Lane::default());
        lane.lock().attach(token, socket, queued);
        self.by_client
            .write()
            .expect("lanes lock")
            .insert(token, lane);
    }

    /// The client connection `token` closed: its lane goes (and with it the socket duplicate).
    pub(super) fn detach_client(&self, token: Token) {
        let lane = self.by_client.write().expect("lanes lock").remove(&token);
        if let Some(lane) = lane {
            lane.lock().detach(token);
        }
    }

    /// The lane of client connection `token`, if it has one.
    pub(super) fn client(&self, token: Token) -> Option<Arc<Lane>> {
        self.by_client
            .read()
            .expect("lanes lock")
            .get(&token)
            .cloned()
    }

    /// Routes each of `messages` (see [`Lanes::route`]). Returns those the caller must queue
    /// for the loop, in their order, and whether a direct write spilled (the loop must look).
    pub(super) fn route_messages(
        &self,
        messages: Vec<Message>,
        max_frame_bytes: u32,
    ) -> (Vec<Message>, bool) {
        let mut queued = Vec::new();
        let mut spilled_any = false;
        for message in messages {
            match self.route(&message, max_frame_bytes) {
                Route::Direct { spilled } => spilled_any |= spilled,
                Route::Channel => queued.push(message),
            }
        }
        (queued, spilled_any)
    }

    /// Routes replies to client connections, grouped per connection in their order (one write
    /// per connection; see [`Lanes::route_replies`]). Direct only when they are all for one
    /// connection: with several, the loop writes them while the caller (apply) goes on, which
    /// measured faster (`docs/BENCHMARKS.md`, session 6). Returns the replies the caller must
    /// queue for the loop, and whether a direct write spilled.
    pub(super) fn route_reply_batch(
        &self,
        replies: Vec<(ConnId, ClientReply)>,
        max_frame_bytes: u32,
    ) -> (Vec<(ConnId, ClientReply)>, bool) {
        let mut by_conn: Vec<(ConnId, Vec<ClientReply>)> = Vec::new();
        let mut group_of: HashMap<ConnId, usize> = HashMap::new();
        for (conn, reply) in replies {
            let at = *group_of.entry(conn).or_insert_with(|| {
                by_conn.push((conn, Vec::new()));
                by_conn.len() - 1
            });
            by_conn[at].1.push(reply);
        }
        let direct = by_conn.len() == 1;
        let mut queued = Vec::new();
        let mut spilled_any = false;
        for (conn, group) in by_conn {
            let token = Token(conn.0 as usize);
            match self.route_replies(token, &group, direct, max_frame_bytes) {
                Route::Direct { spilled } => spilled_any |= spilled,
                Route::Channel => queued.extend(group.into_iter().map(|reply| (conn, reply))),
            }
        }
        (queued, spilled_any)
    }

    /// Writes `message` straight into its peer's socket when nothing is ahead of it there;
    /// otherwise counts it as ahead and says to queue it. Frames above `max_frame_bytes` go
    /// to the loop, which drops them with a warning.
    fn route(&self, message: &Message, max_frame_bytes: u32) -> Route {
        let Some(lane) = self.get(message.to) else {
            return Route::Channel;
        };
        let mut state = lane.lock();
        if !state.free() {
            state.ahead += 1;
            return Route::Channel;
        }
        let mut scratch = Vec::new();
        let mut parts = Vec::new();
        encode_message_parts(message, &mut scratch, &mut parts);
        let slices: Vec<&[u8]> = parts
            .iter()
            .map(|part| match part {
                BodyPart::Inline(range) => &scratch[range.clone()],
                BodyPart::Shared(bytes) => &bytes[..],
            })
            .collect();
        let body: usize = slices.iter().map(|slice| slice.len()).sum();
        if body + FRAME_HEADER_BYTES > max_frame_bytes as usize {
            state.ahead += 1;
            return Route::Channel;
        }
        let header = frame_header(FrameType::Raft, slices.iter().copied());
        let mut pieces = Vec::with_capacity(slices.len() + 1);
        pieces.push(&header[..]);
        pieces.extend(slices);
        self.write_frames(&mut state, &pieces, 1)
    }

    /// [`Lanes::route`] for replies to one native client connection: all written straight into
    /// its socket, in one write, when `direct` allows it, the connection has a lane and nothing
    /// is ahead of them there; otherwise all counted ahead, to be queued.
    fn route_replies(
        &self,
        token: Token,
        replies: &[ClientReply],
        direct: bool,
        max_frame_bytes: u32,
    ) -> Route {
        let Some(lane) = self.client(token) else {
            return Route::Channel;
        };
        let mut state = lane.lock();
        if !direct || !state.free() {
            state.ahead += replies.len();
            return Route::Channel;
        }
        let mut frames = Vec::new();
        let mut body = Vec::new();
        for reply in replies {
            body.clear();
            reply.encode(&mut body);
            if body.len() + FRAME_HEADER_BYTES > max_frame_bytes as usize {
                // The loop drops it with a warning; it and the rest go through the channel.
                state.ahead += replies.len();
                return Route::Channel;
            }
            frames.extend_from_slice(&frame_header(FrameType::ClientReply, [&body[..]]));
            frames.extend_from_slice(&body);
        }
        lane.answered
            .fetch_add(replies.len() as u64, Ordering::Relaxed);
        self.write_frames(&mut state, &[&frames], replies.len() as u64)
    }

    /// Writes `pieces` (`frames` whole frames) through `state`'s socket, flagging a spill for
    /// the loop.
    fn write_frames(&self, state: &mut LaneState, pieces: &[&[u8]], frames: u64) -> Route {
        let spilled = state.write(pieces, self);
        if spilled {
            self.spilled.store(true, Ordering::Release);
        }
        self.frames.fetch_add(frames, Ordering::Relaxed);
        Route::Direct { spilled }
    }
}

impl Lane {
    pub(super) fn lock(&self) -> MutexGuard<'_, LaneState> {
        self.state.lock().expect("lane lock")
    }

    /// Replies written directly since the last call (a client lane).
    pub(super) fn take_answered(&self) -> u64 {
        self.answered.swap(0, Ordering::Relaxed)
    }
}

impl LaneState {
    /// Whether a direct write now keeps the connection's order.
    fn free(&self) -> bool {
        self.socket.is_some() && !self.loop_queued && self.ahead == 0
    }

    /// The connection the lane writes to, if attached.
    pub(super) fn token(&self) -> Option<Token> {
        self.socket.as_ref().map(|(token, _)| *token)
    }

    /// The loop established `token` as the connection to this peer (`queued`: whether its
    /// output queue holds bytes). Only plain TCP connections get a socket here.
    pub(super) fn attach(&mut self, token: Token, socket: &mio::net::TcpStream, queued: bool) {
        // SAFETY: `dup` of a live descriptor; the duplicate is owned by the `TcpStream` below
        // and closed with it (or when the loop detaches it).
        let fd = unsafe { libc::dup(socket.as_raw_fd()) };
        self.socket = (fd >= 0).then(|| (token, unsafe { TcpStream::from_raw_fd(fd) }));
        self.loop_queued = queued;
        self.spill.clear();
    }

    /// The loop closed `token`: no more direct writes through it.
    pub(super) fn detach(&mut self, token: Token) {
        if self.socket.as_ref().is_some_and(|(at, _)| *at == token) {
            self.socket = None;
            self.loop_queued = false;
            self.spill.clear();
        }
    }

    /// The loop takes a message routed through the channel off the count.
    pub(super) fn taken_from_channel(&mut self) {
        self.ahead = self.ahead.saturating_sub(1);
    }

    /// Writes `pieces` (one frame) to the socket; a tail the socket does not take goes to
    /// `spill` (returns true). A failed write leaves the connection to the loop, which sees it
    /// fail too.
    fn write(&mut self, pieces: &[&[u8]], lanes: &Lanes) -> bool {
        let Some((_, socket)) = self.socket.as_mut() else {
            return false;
        };
        let total: usize = pieces.iter().map(|piece| piece.len()).sum();
        let mut written = 0;
        while written < total {
            let mut skip = written;
            let slices: Vec<IoSlice<'_>> = pieces
                .iter()
                .filter_map(|piece| {
                    if skip >= piece.len() {
                        skip -= piece.len();
                        None
                    } else {
                        let slice = IoSlice::new(&piece[skip..]);
                        skip = 0;
                        Some(slice)
                    }
                })
                .collect();
            match socket.write_vectored(&slices) {
                Ok(0) => break,
                Ok(n) => {
                    written += n;
                    lanes.writes.fetch_add(1, Ordering::Relaxed);
                    lanes.bytes.fetch_add(n as u64, Ordering::Relaxed);
                }
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => break,
                Err(_) => {
                    self.socket = None;
                    return false;
                }
            }
        }
        if written == total {
            return false;
        }
        let mut skip = written;
        for piece in pieces {
            if skip >= piece.len() {
                skip -= piece.len();
            } else {
                self.spill.extend_from_slice(&piece[skip..]);
                skip = 0;
            }
        }
        self.loop_queued = true;
        true
    }
}
