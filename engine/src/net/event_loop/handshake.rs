//! Handshakes: checking a peer's or a client's hello (refusals are logged naming the received
//! and expected values, and counted), telling a client's protocol from its first byte, and
//! closing connections whose hello does not come in time.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use mio::Token;
use tracing::{debug, warn};

use super::{ClientProtocol, CloseReason, Conn, ConnKind, EventLoop, PeerState, RespConn};
use crate::net::client_msg::CLIENT_PROTOCOL_VERSION;
use crate::net::frame::{FrameType, FRAME_MAGIC};
use crate::net::peer_msg::PEER_PROTOCOL_VERSION;
use crate::net::{is_auth_refusal, ClientHello, ClientReply, ClientRole, ClientUsers, PeerHello};
use crate::resp::parser::RespLimits;
use crate::resp::session::Session;
use crate::types::NodeId;

impl EventLoop {
    /// Closes connections still waiting for (or refusing) a hello past their deadline.
    pub(super) fn expire_handshakes(&mut self) {
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

    pub(super) fn on_peer_hello(
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

    pub(super) fn on_client_hello(
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
            // Logged (rate-limited) by the check itself: a guessing client floods.
            self.check_client_password(token, &hello).err()
        };
        let logged = refusal.as_deref().is_some_and(is_auth_refusal);
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
                if !logged {
                    warn!(client = %conn.addr, "refusing client handshake: {message}");
                }
                self.stats.handshakes_refused += 1;
                conn.closing = true;
            }
        }
        Ok(())
    }

    /// Checks a native hello's credentials; on success the connection takes the user's role.
    /// The refusal names the cause in Redis's words (`NOAUTH ...`, `WRONGPASS ...`).
    fn check_client_password(&mut self, token: Token, hello: &ClientHello) -> Result<(), String> {
        let users = &self.config.client_users;
        let role = match (users.anonymous(), hello.password.is_empty()) {
            (Some(role), _) => role,
            (None, true) => {
                return Err(
                    "NOAUTH Authentication required: this node needs a client password \
                            (lockstep::client::Credentials, or --password-file)"
                        .to_string(),
                )
            }
            (None, false) => match users.check(&hello.user, &hello.password) {
                Some(role) => role,
                None => {
                    self.stats.client_auth_failures += 1;
                    let addr = self.conns[&token].addr;
                    self.auth_log
                        .warn(addr, "native client authentication failed (WRONGPASS)");
                    return Err(
                        "WRONGPASS invalid username-password pair or user is disabled.".to_string(),
                    );
                }
            },
        };
        let conn = self.conns.get_mut(&token).expect("live connection");
        conn.read_only = role == ClientRole::ReadOnly;
        Ok(())
    }
}

/// Tells the client's protocol from its first byte: [`FRAME_MAGIC`] (not ASCII) starts the
/// native framed protocol; an ASCII byte starts RESP (an array `*`, or an inline command),
/// whose parser then judges the bytes; any other byte is refused. Nothing happens before the
/// first byte arrives.
pub(super) fn detect_client(
    conn: &mut Conn,
    token: Token,
    limits: RespLimits,
    users: &Arc<ClientUsers>,
    max_pipelined_bytes: usize,
) -> Result<(), String> {
    let Some(&first) = conn.decoder.peek().first() else {
        return Ok(());
    };
    conn.kind = if first == FRAME_MAGIC {
        ConnKind::Client(ClientProtocol::Native { greeted: false })
    } else if first.is_ascii() {
        let session = Session::new(token.0 as u64, conn.addr, Arc::clone(users));
        ConnKind::Client(ClientProtocol::Resp(Box::new(RespConn::new(
            limits,
            session,
            max_pipelined_bytes,
        ))))
    } else {
        return Err(format!(
            "unknown client protocol (first byte {first:#04x}: neither the frame magic \
             {FRAME_MAGIC:#04x} nor ASCII for RESP)"
        ));
    };
    Ok(())
}
