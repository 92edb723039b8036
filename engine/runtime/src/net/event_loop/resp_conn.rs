//! RESP connections in the event loop: requests parsed from the read buffer, numbered in
//! arrival order, answered at once (connection-level commands, routing errors) or sent to the
//! consensus stage (proposals, linearizable reads, the status behind INFO), and replies written
//! strictly in request order.
//!
//! Guarantees:
//! - Request ids on a connection are consecutive from 1; reply `n` is written only after
//!   replies `1..n` (a completed reply waits in its slot for the earlier ones).
//! - Every request read from one socket read goes to consensus in one [`NetEvent`] (pipelines
//!   and requests from many connections batch into the same log append).
//! - Back-pressure, not memory growth: a connection with [`RESP_IN_FLIGHT_MAX`] requests
//!   unanswered, `max_pipelined_bytes` of requests read and unanswered, or
//!   [`RESP_OUT_PAUSE_BYTES`] of replies unwritten, is not read (nor parsed) until it drops
//!   below; bytes left in the socket then push back on the client through TCP.
//! - Authentication and permissions: the [`Session`] refuses commands before AUTH; a read-only
//!   session's commands that the app's frontend routes as proposals answer `-NOPERM` and are
//!   never proposed. Failed AUTH attempts are counted and logged (rate-limited) with the
//!   client's address.
//! - Malformed or oversized input gets `-ERR Protocol error: ...` (after the replies to the
//!   requests before it), is counted in `bad_frames`, and the connection closes once that reply
//!   is flushed. QUIT likewise closes after `+OK`. Other connections are unaffected.

use std::collections::VecDeque;
use std::time::{SystemTime, UNIX_EPOCH};

use mio::Token;
use tracing::warn;

use super::{ClientProtocol, Conn, ConnKind, EventLoop};
use crate::net::frame::FrameDecoder;
use crate::net::{ClientReply, ClientRequest, ClientRole, ConnId, NetEvent};
use crate::resp::parser::{RequestParser, RespLimits};
use crate::resp::session::{self, Action, Session};
use crate::resp::{Frontend, RouteContext, Routed, Value};

/// Most requests of one connection read and not yet answered; reading pauses at this many.
pub const RESP_IN_FLIGHT_MAX: usize = 1024;
/// Bytes of replies queued and unwritten at which reading a connection pauses.
pub const RESP_OUT_PAUSE_BYTES: usize = 1 << 20;

/// What a request waits for, or its finished reply.
enum Slot {
    /// Answered here, at once (finished as soon as it is numbered).
    Local,
    /// A proposal's result, turned into the reply by the frontend.
    Proposal,
    /// A linearizable read's result, turned into the reply by the frontend.
    Read,
    /// The node's status, rendered as INFO.
    Info,
    /// The encoded reply; `close`: the connection closes once it is written.
    Done { reply: Vec<u8>, close: bool },
}

/// The state of one RESP connection.
pub(super) struct RespConn {
    parser: RequestParser,
    session: Session,
    /// The request id of `slots[0]` (the oldest request whose reply is not yet queued).
    first: u64,
    /// Every request whose reply is not yet queued, with its size on the wire.
    slots: VecDeque<(Slot, usize)>,
    /// The sum of the sizes in `slots`: request bytes read and not yet answered.
    unanswered_bytes: usize,
    /// Reading pauses at this many `unanswered_bytes`.
    max_pipelined_bytes: usize,
    /// No more requests are taken (QUIT or a protocol error was read).
    ended: bool,
    /// Reading stopped at a limit; resumed by [`EventLoop::resp_resume`].
    pub(super) paused: bool,
    /// Proposals sent to consensus and not yet answered.
    proposals_in_flight: usize,
    /// Requests not yet sent, in order: a read waits here until every earlier proposal of the
    /// connection is answered (so it sees them), and everything after a waiting request waits
    /// behind it (so a read never sees a later write).
    held: VecDeque<ClientRequest>,
    /// Some request went to consensus (so its close is announced with `ClientGone`).
    pub(super) sent_any: bool,
}

impl RespConn {
    pub(super) fn new(
        limits: RespLimits,
        session: Session,
        max_pipelined_bytes: usize,
    ) -> RespConn {
        assert!(
            max_pipelined_bytes >= limits.request_bytes_max,
            "max_pipelined_bytes {max_pipelined_bytes} below the request limit {}: a largest \
             request could never be answered",
            limits.request_bytes_max
        );
        RespConn {
            parser: RequestParser::new(limits),
            session,
            first: 1,
            slots: VecDeque::new(),
            unanswered_bytes: 0,
            max_pipelined_bytes,
            ended: false,
            paused: false,
            proposals_in_flight: 0,
            held: VecDeque::new(),
            sent_any: false,
        }
    }

    /// Sends `request` to `sent`, or holds it (see [`RespConn::held`]).
    fn submit(&mut self, request: ClientRequest, sent: &mut Vec<ClientRequest>) {
        if self.held.is_empty() && self.sendable(&request) {
            self.send(request, sent);
        } else {
            self.held.push_back(request);
        }
    }

    /// Sends the held requests that may go now.
    fn release(&mut self, sent: &mut Vec<ClientRequest>) {
        while self.held.front().is_some_and(|front| self.sendable(front)) {
            let request = self.held.pop_front().expect("front checked");
            self.send(request, sent);
        }
    }

    fn sendable(&self, request: &ClientRequest) -> bool {
        !matches!(request, ClientRequest::Read { .. }) || self.proposals_in_flight == 0
    }

    fn send(&mut self, request: ClientRequest, sent: &mut Vec<ClientRequest>) {
        if let ClientRequest::Propose { .. } = request {
            self.proposals_in_flight += 1;
        }
        self.sent_any = true;
        sent.push(request);
    }

    fn over_limits(&self, queued_bytes: usize) -> bool {
        self.slots.len() >= RESP_IN_FLIGHT_MAX
            || queued_bytes >= RESP_OUT_PAUSE_BYTES
            || self.over_pipelined()
    }

    fn over_pipelined(&self) -> bool {
        self.unanswered_bytes >= self.max_pipelined_bytes
    }

    /// Whether nothing read on the connection waits for its reply (for the idle timeout).
    pub(super) fn is_idle(&self) -> bool {
        self.slots.is_empty() && self.held.is_empty()
    }

    /// Numbers a request of `bytes` on the wire, waiting as `slot`.
    fn push_slot(&mut self, slot: Slot, bytes: usize) {
        self.unanswered_bytes += bytes;
        self.slots.push_back((slot, bytes));
    }

    /// Takes the oldest slot, its reply being queued now.
    fn pop_slot(&mut self) -> Slot {
        let (slot, bytes) = self.slots.pop_front().expect("an open request");
        assert!(
            self.unanswered_bytes >= bytes,
            "{} unanswered bytes, popping a request of {bytes}",
            self.unanswered_bytes
        );
        self.unanswered_bytes -= bytes;
        self.first += 1;
        slot
    }

    fn next_req(&self) -> u64 {
        self.first + self.slots.len() as u64
    }
}

/// Where the replies of one connection go while it is being handled.
struct Output<'a> {
    conn: &'a mut Conn,
    scratch: &'a mut Vec<u8>,
    replies_out: &'a mut u64,
}

impl Output<'_> {
    fn resp(&mut self) -> &mut RespConn {
        self.split().0
    }

    /// The connection's RESP state and its read buffer.
    fn split(&mut self) -> (&mut RespConn, &mut FrameDecoder) {
        let Conn { kind, decoder, .. } = &mut *self.conn;
        match kind {
            ConnKind::Client(ClientProtocol::Resp(resp)) => (resp, decoder),
            _ => unreachable!("a RESP output on another kind of connection"),
        }
    }

    /// Finishes request `req` with `value`; writes every reply now in order.
    fn finish(&mut self, req: u64, value: &Value, close: bool) {
        self.scratch.clear();
        value.encode(self.scratch);
        let resp = self.resp();
        let at = req.wrapping_sub(resp.first) as usize;
        assert!(
            at < resp.slots.len(),
            "finishing request {req} outside the open ones {}..{}",
            resp.first,
            resp.next_req()
        );
        if at == 0 {
            resp.pop_slot();
            self.write(close);
        } else {
            let reply = self.scratch.clone();
            self.resp().slots[at].0 = Slot::Done { reply, close };
        }
        while let Some((Slot::Done { .. }, _)) = self.resp().slots.front() {
            let Slot::Done { reply, close } = self.resp().pop_slot() else {
                unreachable!("front slot checked")
            };
            *self.scratch = reply;
            self.write(close);
        }
    }

    /// Queues the reply in `scratch`.
    fn write(&mut self, close: bool) {
        self.conn.out.push_raw(self.scratch);
        *self.replies_out += 1;
        if close {
            self.conn.closing = true;
        }
    }
}

/// What one request becomes.
enum Dispatch {
    /// Answered here: the reply, and whether the connection closes after it.
    Now(Value, bool),
    /// Sent to consensus; the slot says what its reply is turned into.
    Wait(Slot, ClientRequest),
}

/// Routes a command that is not connection-level to the app's frontend; a proposal from a
/// read-only session is refused instead.
fn route(
    frontend: Option<&dyn Frontend>,
    args: &[bytes::Bytes],
    context: &RouteContext,
    req: u64,
    role: ClientRole,
) -> Dispatch {
    let Some(frontend) = frontend else {
        return Dispatch::Now(
            Value::error("ERR", "this node's app has no RESP command set"),
            false,
        );
    };
    match frontend.route(args, context) {
        Routed::Reply(value) => Dispatch::Now(value, false),
        Routed::Propose(_) if role == ClientRole::ReadOnly => {
            Dispatch::Now(session::no_perm(role, &args[0]), false)
        }
        Routed::Propose(command) => {
            Dispatch::Wait(Slot::Proposal, ClientRequest::Propose { req, command })
        }
        Routed::Read(query) => Dispatch::Wait(
            Slot::Read,
            ClientRequest::Read {
                req,
                query,
                linearizable: true,
            },
        ),
    }
}

/// The RESP reply for the node's answer to a request that waited as `slot`.
fn reply_value(slot: &Slot, reply: &ClientReply, frontend: Option<&dyn Frontend>) -> Value {
    match (slot, reply, frontend) {
        (Slot::Proposal, ClientReply::Applied { result, .. }, Some(frontend))
        | (Slot::Read, ClientReply::ReadOk { result, .. }, Some(frontend)) => {
            frontend.reply(result)
        }
        (Slot::Info, ClientReply::Status { json, .. }, _) => session::info(json),
        (
            _,
            ClientReply::NotLeader {
                leader,
                leader_addr,
                ..
            },
            _,
        ) => session::not_leader(leader_addr.as_deref(), leader.map(|id| id.get())),
        (_, ClientReply::Error { message, .. }, _) => Value::error("ERR", message),
        (_, ClientReply::Ok { .. }, _) => Value::ok(),
        (_, other, _) => Value::error(
            "ERR",
            format!("internal error: reply {other:?} does not fit the request"),
        ),
    }
}

impl EventLoop {
    /// Parses and answers what is buffered on RESP connection `token` (up to its limits), and
    /// sends the requests for consensus in one event. Returns whether reading may go on.
    pub(super) fn handle_resp(&mut self, token: Token) -> bool {
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_millis() as u64);
        let context = RouteContext { now_ms };
        let frontend = self.config.frontend.clone();
        let conn = self.conns.get_mut(&token).expect("live connection");
        let mut out = Output {
            conn,
            scratch: &mut self.scratch,
            replies_out: &mut self.stats.frames_out,
        };
        let mut requests = Vec::new();
        let mut requests_in = 0;
        let mut bad_input = false;
        let mut over_size = false;
        let mut auth_failures = 0;
        let mut paused_pipelined = false;
        loop {
            let queued = out.conn.out.queued_bytes;
            let resp = out.resp();
            if resp.ended {
                break;
            }
            if resp.over_limits(queued) {
                resp.paused = true;
                paused_pipelined = resp.over_pipelined();
                break;
            }
            let mut skipped = 0;
            let (resp, decoder) = out.split();
            let parsed = resp.parser.next(decoder.peek(), &mut skipped);
            decoder.take_prefix(skipped);
            let resp = out.resp();
            let req = resp.next_req();
            let mut request_len = 0;
            let dispatch = match parsed {
                Ok(Some(request)) => {
                    request_len = request.len;
                    let bytes = out.conn.decoder.take_prefix(request.len);
                    requests_in += 1;
                    let resp = out.resp();
                    resp.parser.consumed();
                    let args = request.into_args(&bytes);
                    match resp.session.command(&args) {
                        Some(Action::Reply(value)) => Dispatch::Now(value, false),
                        Some(Action::Quit) => {
                            resp.ended = true;
                            Dispatch::Now(Value::ok(), true)
                        }
                        Some(Action::Info) => {
                            Dispatch::Wait(Slot::Info, ClientRequest::Status { req })
                        }
                        Some(Action::AuthFailed(value)) => {
                            auth_failures += 1;
                            self.auth_log
                                .warn(out.conn.addr, "client authentication failed (WRONGPASS)");
                            Dispatch::Now(value, false)
                        }
                        None => {
                            let role = resp.session.role().expect("an authenticated session");
                            route(frontend.as_deref(), &args, &context, req, role)
                        }
                    }
                }
                Ok(None) => break,
                Err(error) => {
                    bad_input = true;
                    over_size = error.is_over_limit();
                    warn!(client = %out.conn.addr, "closing RESP connection on bad input: {error}");
                    out.resp().ended = true;
                    Dispatch::Now(Value::error("ERR", error), true)
                }
            };
            match dispatch {
                Dispatch::Now(value, close) => {
                    // A placeholder, finished at once (after any earlier replies).
                    out.resp().push_slot(Slot::Local, request_len);
                    out.finish(req, &value, close);
                }
                Dispatch::Wait(slot, request) => {
                    let resp = out.resp();
                    resp.push_slot(slot, request_len);
                    resp.submit(request, &mut requests);
                }
            }
        }
        let reading = !out.conn.closing && {
            let resp = out.resp();
            !resp.paused && !resp.ended
        };
        self.stats.frames_in += requests_in;
        self.stats.bad_frames += u64::from(bad_input);
        self.stats.clients_closed_request_bytes += u64::from(over_size);
        self.stats.client_auth_failures += auth_failures;
        self.stats.client_reads_paused_pipelined += u64::from(paused_pipelined);
        if !requests.is_empty() {
            self.emit(NetEvent::Client {
                conn: ConnId(token.0 as u64),
                requests,
            });
        }
        self.mark_dirty(token);
        reading
    }

    /// Writes the node's reply to request `reply.req()` of RESP connection `token` (and every
    /// later reply it was holding back), then resumes reading if the connection was paused.
    pub(super) fn resp_reply(&mut self, token: Token, reply: &ClientReply) {
        let frontend = self.config.frontend.clone();
        let conn = self.conns.get_mut(&token).expect("live connection");
        let mut out = Output {
            conn,
            scratch: &mut self.scratch,
            replies_out: &mut self.stats.frames_out,
        };
        let req = reply.req();
        let resp = out.resp();
        let at = req.wrapping_sub(resp.first) as usize;
        let mut released = Vec::new();
        let value = match resp.slots.get(at) {
            Some((slot @ (Slot::Proposal | Slot::Read | Slot::Info), _)) => {
                reply_value(slot, reply, frontend.as_deref())
            }
            _ => {
                warn!(
                    client = %out.conn.addr,
                    "dropping a reply to request {req}, which does not wait for one"
                );
                return;
            }
        };
        if let Some((Slot::Proposal, _)) = resp.slots.get(at) {
            assert!(
                resp.proposals_in_flight > 0,
                "proposal {req} answered with none in flight"
            );
            resp.proposals_in_flight -= 1;
            resp.release(&mut released);
        }
        out.finish(req, &value, false);
        if !released.is_empty() {
            self.emit(NetEvent::Client {
                conn: ConnId(token.0 as u64),
                requests: released,
            });
        }
        self.mark_dirty(token);
        self.resp_resume(token);
    }

    /// Resumes a paused RESP connection that is back under its limits: parses what is
    /// buffered, then lists it for reading.
    pub(super) fn resp_resume(&mut self, token: Token) {
        let Some(conn) = self.conns.get_mut(&token) else {
            return;
        };
        let queued = conn.out.queued_bytes;
        let ConnKind::Client(ClientProtocol::Resp(resp)) = &mut conn.kind else {
            return;
        };
        if !resp.paused || resp.over_limits(queued) || conn.closing {
            return;
        }
        resp.paused = false;
        if self.handle_resp(token) {
            let conn = self.conns.get_mut(&token).expect("live connection");
            if !conn.in_read_ready {
                conn.in_read_ready = true;
                self.read_ready.push(token);
            }
        }
    }
}
