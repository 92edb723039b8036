//! The client limits the event loop enforces itself: refusing connections past `max_clients`
//! (with an error a RESP client can read), refusing an oversized native request frame, refusing
//! a read-only native client's writes, and closing idle and slow clients in a periodic sweep.
//!
//! Guarantees: nothing here blocks or waits on one client. A refusal is one non-blocking write
//! of a short line (lost if the socket cannot take it), a close never waits for the peer, and a
//! sweep costs one pass over the connections every `ClientLimits::sweep_interval`. Every
//! refusal and close is counted in [`crate::net::NetStats`] by reason.

use std::io::Write;
use std::net::SocketAddr;
use std::time::Instant;

use mio::net::TcpStream;
use mio::Token;

use super::{ClientProtocol, CloseReason, ConnKind, EventLoop};
use crate::net::frame::FrameType;
use crate::net::{ClientReply, ClientRequest, ClientRole};
use crate::resp::{session, Value};

/// What a client past `max_clients` reads before the connection closes (Redis's words; a
/// native client reports it as the refusal's cause).
pub(super) const MAX_CLIENTS_REPLY: &[u8] = b"-ERR max number of clients reached\r\n";

impl EventLoop {
    /// Refuses a connection accepted past `max_clients`: one best-effort write of the error line,
    /// then the socket is dropped (closed).
    pub(super) fn refuse_client(&mut self, mut stream: TcpStream, addr: SocketAddr) {
        let _ = stream.write(MAX_CLIENTS_REPLY);
        self.stats.clients_refused_max += 1;
        let message = format!(
            "refusing client: {} connections already (max_clients)",
            self.clients
        );
        self.refusal_log.warn(addr, &message);
    }

    /// Answers a native client frame over the request limit with a protocol error (for request
    /// id 0: the request's own id is inside the frame, unread) and closes once it is written.
    pub(super) fn refuse_oversized_frame(&mut self, token: Token, len: u64, max: u32) {
        let message = format!(
            "Protocol error: request frame of {len} bytes exceeds the maximum of {max} bytes \
             (max_request_bytes)"
        );
        let conn = self.conns.get_mut(&token).expect("live connection");
        conn.closing = true;
        tracing::warn!(client = %conn.addr, "closing client connection: {message}");
        self.stats.bad_frames += 1;
        self.stats.clients_closed_request_bytes += 1;
        self.scratch.clear();
        ClientReply::Error { req: 0, message }.encode(&mut self.scratch);
        self.queue_scratch(token, FrameType::ClientReply);
    }

    /// Takes one request of an authenticated native client: a read-only client's writes are
    /// answered at once with `NOPERM`; everything else goes to `requests`.
    pub(super) fn native_request(
        &mut self,
        token: Token,
        request: ClientRequest,
        requests: &mut Vec<ClientRequest>,
    ) {
        let write = match &request {
            ClientRequest::Propose { .. } => Some("propose"),
            ClientRequest::ProposeBatch { .. } => Some("propose_batch"),
            ClientRequest::TransferLeader { .. } => Some("transfer_leader"),
            ClientRequest::ChangeMembership { .. } => Some("change_membership"),
            ClientRequest::Read { .. } | ClientRequest::Status { .. } => None,
        };
        let read_only = self.conns.get(&token).is_some_and(|conn| conn.read_only);
        match write {
            Some(name) if read_only => {
                let Value::Error(message) = session::no_perm(ClientRole::ReadOnly, name.as_bytes())
                else {
                    unreachable!("no_perm is an error")
                };
                self.scratch.clear();
                ClientReply::Error {
                    req: request.req(),
                    message,
                }
                .encode(&mut self.scratch);
                self.queue_scratch(token, FrameType::ClientReply);
            }
            _ => requests.push(request),
        }
    }

    /// Closes client connections past the idle or slow-client timeout, when a sweep is due.
    pub(super) fn sweep_clients(&mut self) {
        let now = Instant::now();
        if self.next_sweep.is_none_or(|due| due > now) {
            return;
        }
        let limits = self.config.client_limits;
        let interval = limits.sweep_interval().expect("a sweep is scheduled");
        self.next_sweep = Some(now + interval);
        let mut expired = Vec::new();
        for (&token, conn) in &mut self.conns {
            let ConnKind::Client(protocol) = &conn.kind else {
                continue;
            };
            let waiting = match protocol {
                ClientProtocol::Resp(resp) => !resp.is_idle(),
                ClientProtocol::Native { .. } => {
                    // Replies written directly (`net/lane.rs`) come off the count here.
                    if let Some(lane) = self.lanes.client(token) {
                        let answered = lane.take_answered() as usize;
                        conn.native_awaiting = conn.native_awaiting.saturating_sub(answered);
                    }
                    conn.native_awaiting > 0
                }
                // The handshake timeout covers a client that never spoke.
                ClientProtocol::Undetected => continue,
            };
            let silent = now.saturating_duration_since(conn.last_read);
            let stalled = conn
                .stalled_since
                .map(|since| now.saturating_duration_since(since));
            if let Some(slow) = limits.slow_client_timeout.filter(|t| stalled >= Some(*t)) {
                expired.push((
                    token,
                    true,
                    format!("replies unread for {slow:?} (slow client)"),
                ));
            } else if let Some(idle) = limits
                .idle_timeout
                .filter(|t| silent >= *t && !waiting && conn.out.is_empty())
            {
                expired.push((token, false, format!("idle for {idle:?}")));
            }
        }
        for (token, slow, why) in expired {
            if slow {
                self.stats.clients_closed_slow += 1;
                let addr = self.conns[&token].addr;
                tracing::warn!(client = %addr, "closing client connection: {why}");
            } else {
                self.stats.clients_closed_idle += 1;
            }
            self.close(token, CloseReason::Gone(why));
        }
    }
}
