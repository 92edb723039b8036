//! Handshakes: checking a peer's hello and, when the cluster has a secret, its proof
//! (challenge-response, `crate::net::auth`); checking a client's hello; telling a client's
//! protocol from its first byte; closing connections whose handshake does not end in time.
//!
//! Guarantees: a peer connection becomes `Established` (and may carry consensus messages) only
//! once the other end's hello passed every check and, with a secret, its proof verified; any
//! other frame before that refuses the connection without being decoded. Refusals are logged
//! naming the received and expected values (rate-limited) and counted by reason.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use mio::Token;
use tracing::{debug, warn};

use super::{
    ClientProtocol, CloseReason, Conn, ConnKind, EventLoop, OutQueue, PeerState, RespConn,
};
use crate::net::auth::{fresh_nonce, Nonce, Refusal, Role, Transcript};
use crate::net::client_msg::CLIENT_PROTOCOL_VERSION;
use crate::net::frame::{FrameType, FRAME_MAGIC};
use crate::net::peer_msg::PEER_PROTOCOL_VERSION;
use crate::net::{ClientHello, ClientReply, ClientRole, ClientUsers, PeerHello, PeerProof};
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
                ConnKind::Peer(PeerState::Handshake(_))
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

    /// Queues this end's hello (the first frame of a peer connection, sent without waiting
    /// for the other end's).
    pub(super) fn queue_peer_hello(&mut self, token: Token) {
        let conn = self.conns.get(&token).expect("live connection");
        let ConnKind::Peer(PeerState::Handshake(handshake)) = &conn.kind else {
            panic!("a peer hello queued on {token:?}, which is not handshaking");
        };
        let hello = PeerHello::new(
            self.config.cluster_id,
            self.config.node_id,
            self.config.peer_secret.is_some(),
            handshake.nonce,
        );
        self.scratch.clear();
        hello.encode(&mut self.scratch);
        self.queue_scratch(token, FrameType::PeerHello);
    }

    /// Takes a frame of a handshaking peer connection: the other end's hello, then (with a
    /// secret) its proof. Consensus messages are never decoded here.
    pub(super) fn on_peer_handshake_frame(
        &mut self,
        token: Token,
        ty: FrameType,
        body: &Bytes,
    ) -> Result<(), CloseReason> {
        let conn = self.conns.get_mut(&token).expect("live connection");
        let ConnKind::Peer(PeerState::Handshake(handshake)) = &mut conn.kind else {
            panic!("a handshake frame on {token:?}, which is not handshaking");
        };
        let (expected, nonce) = (handshake.expected, handshake.nonce);
        match handshake.awaiting_proof.take() {
            None => self.on_peer_hello(token, expected, nonce, ty, body),
            Some((id, transcript)) => self.on_peer_proof(token, id, &transcript, ty, body),
        }
    }

    fn on_peer_hello(
        &mut self,
        token: Token,
        expected: Option<NodeId>,
        nonce: Nonce,
        ty: FrameType,
        body: &Bytes,
    ) -> Result<(), CloseReason> {
        if ty != FrameType::PeerHello {
            return Err(CloseReason::Refused(
                Refusal::BadHello,
                format!("{ty:?} frame where a peer hello was expected"),
            ));
        }
        let bad_hello = |err| CloseReason::Refused(Refusal::BadHello, format!("peer hello: {err}"));
        let version = PeerHello::version_of(body).map_err(bad_hello)?;
        if version != PEER_PROTOCOL_VERSION {
            return Err(CloseReason::Refused(
                Refusal::WrongVersion,
                format!("peer protocol version {version} (expected {PEER_PROTOCOL_VERSION})"),
            ));
        }
        let hello = PeerHello::decode(body).map_err(bad_hello)?;
        let me = self.config.node_id;
        if hello.cluster_id != self.config.cluster_id {
            return Err(CloseReason::Refused(
                Refusal::WrongCluster,
                format!(
                    "cluster id {} (expected {})",
                    hello.cluster_id, self.config.cluster_id
                ),
            ));
        }
        let id = hello.node_id;
        // Any other node may dial in, listed or not (an unlisted one can be answered over the
        // connection: a leader added while this node was down, `EventLoop::establish_peer`).
        if id == me || id == NodeId(0) {
            return Err(CloseReason::Refused(
                Refusal::UnknownNode,
                format!("node id {id} (this node is {me}; 0 is reserved)"),
            ));
        }
        if let Some(expected) = expected.filter(|&expected| expected != id) {
            return Err(CloseReason::Refused(
                Refusal::WrongNode,
                format!("node id {id} (expected {expected}, the node dialed)"),
            ));
        }
        let secret = match (&self.config.peer_secret, hello.authenticates) {
            (None, false) => {
                self.establish_peer(token, id);
                return Ok(());
            }
            (Some(_), false) => {
                return Err(CloseReason::Refused(
                    Refusal::NoProof,
                    format!(
                        "node {id} has no peer secret, and this node requires one \
                         (security.peer_secret_file is set here)"
                    ),
                ));
            }
            (None, true) => {
                return Err(CloseReason::Refused(
                    Refusal::NoSecret,
                    format!(
                        "node {id} authenticates with a peer secret, and this node has none \
                         (set security.peer_secret_file / --peer-secret-file)"
                    ),
                ));
            }
            (Some(secret), true) => secret,
        };
        if hello.nonce == nonce {
            // Only an end that echoes ours sends our nonce back: never a fresh one.
            return Err(CloseReason::Refused(
                Refusal::BadHello,
                format!("node {id}'s hello carries this end's own nonce"),
            ));
        }
        let role = if expected.is_some() {
            Role::Dialer
        } else {
            Role::Acceptor
        };
        let (dialer, acceptor, dialer_nonce, acceptor_nonce) = match role {
            Role::Dialer => (me, id, nonce, hello.nonce),
            Role::Acceptor => (id, me, hello.nonce, nonce),
        };
        let transcript = Transcript {
            version: PEER_PROTOCOL_VERSION,
            cluster_id: self.config.cluster_id,
            dialer,
            acceptor,
            dialer_nonce,
            acceptor_nonce,
        };
        let proof = PeerProof {
            proof: transcript.proof(secret, role),
        };
        self.scratch.clear();
        proof.encode(&mut self.scratch);
        self.queue_scratch(token, FrameType::PeerProof);
        let conn = self.conns.get_mut(&token).expect("live connection");
        let ConnKind::Peer(PeerState::Handshake(handshake)) = &mut conn.kind else {
            unreachable!("checked by on_peer_handshake_frame");
        };
        handshake.awaiting_proof = Some((id, transcript));
        Ok(())
    }

    fn on_peer_proof(
        &mut self,
        token: Token,
        id: NodeId,
        transcript: &Transcript,
        ty: FrameType,
        body: &Bytes,
    ) -> Result<(), CloseReason> {
        if ty != FrameType::PeerProof {
            return Err(CloseReason::Refused(
                Refusal::NoProof,
                format!("{ty:?} frame from node {id} where its proof was expected"),
            ));
        }
        let proof = PeerProof::decode(body).map_err(|err| {
            CloseReason::Refused(Refusal::BadHello, format!("peer proof of node {id}: {err}"))
        })?;
        let secret = self
            .config
            .peer_secret
            .as_ref()
            .expect("a proof is awaited only with a secret");
        let role = if transcript.dialer == self.config.node_id {
            Role::Dialer
        } else {
            Role::Acceptor
        };
        if !transcript.verify(secret, role.other(), &proof.proof) {
            return Err(CloseReason::Refused(
                Refusal::BadProof,
                format!(
                    "the proof of node {id} does not verify (another secret, or a replayed \
                     handshake)"
                ),
            ));
        }
        self.establish_peer(token, id);
        Ok(())
    }

    /// Makes `token` the connection to `id` (its hello, and proof if any, accepted); an
    /// unlisted `id` gets a slot without an address. When the pair already has a connection,
    /// one of the two stays, chosen alike at both ends: the one the smaller id dialed, or,
    /// when the same end dialed both, the newer (the dialer lost the old one, e.g. restarted).
    /// Consensus messages queued on the connection that goes and not yet begun move to the one
    /// that stays.
    fn establish_peer(&mut self, token: Token, id: NodeId) {
        if !self.peers.contains_key(&id) {
            let slot = self.new_slot(None);
            self.peers.insert(id, slot);
            self.lanes.add(id);
        }
        let old = self.peers[&id].conn;
        if let Some(old) = old {
            let smaller_dialed = |dialed: bool| dialed == (self.config.node_id < id);
            let (new_dialed, old_dialed) = (self.conns[&token].dialed, self.conns[&old].dialed);
            if new_dialed != old_dialed && smaller_dialed(old_dialed) {
                self.close(
                    token,
                    CloseReason::Gone(format!("a duplicate of the connection with node {id}")),
                );
                return;
            }
        }
        let slot = self.peers.get_mut(&id).expect("known peer");
        slot.conn = Some(token);
        if slot.dialing == Some(token) {
            slot.dialing = None;
        }
        slot.redial_at = None;
        let conn = self.conns.get_mut(&token).expect("live connection");
        conn.kind = ConnKind::Peer(PeerState::Established(id));
        self.stats.peer_connects += 1;
        debug!(peer = %conn.addr, "connected to node {id}");
        let lane = self.lanes.get(id).expect("a lane per peer");
        if let Some(old) = old {
            // No direct write goes to the old connection from here on (senders queue until
            // the new one is attached below).
            lane.lock().detach(old);
            let queued = std::mem::replace(
                &mut self.conns.get_mut(&old).expect("live connection").out,
                OutQueue::new(),
            );
            let conn = self.conns.get_mut(&token).expect("live connection");
            if conn.out.append_whole_frames(queued) > 0 {
                self.mark_dirty(token);
            }
            self.close(
                old,
                CloseReason::Gone(format!("replaced by another connection with node {id}")),
            );
        }
        // Direct sends (plain TCP only: TLS state belongs to this thread).
        let conn = self.conns.get(&token).expect("live connection");
        if let Some(tcp) = conn.stream.plain_tcp() {
            lane.lock().attach(token, tcp, !conn.out.is_empty());
        }
    }

    /// Counts and logs (rate-limited: a flood of bad dials must not flood the log) a refused
    /// peer handshake with `addr`; `peer` is the node dialed, if this end dialed (the reason
    /// names the node a hello claimed).
    pub(super) fn refused_peer(
        &mut self,
        addr: SocketAddr,
        peer: Option<NodeId>,
        refusal: Refusal,
        why: &str,
    ) {
        self.stats.handshakes_refused += 1;
        self.stats.peer_refusals.count(refusal);
        let Some(suppressed) = self.peer_refusal_log.admit() else {
            return;
        };
        if suppressed > 0 {
            warn!("{suppressed} more refused peer handshakes were not logged (rate limit)");
        }
        let dialed = peer.map_or(String::new(), |id| format!(" to {id}"));
        warn!(
            addr = %addr,
            reason = refusal.name(),
            "refusing peer handshake{dialed}: {why}"
        );
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
            Some(HelloRefusal::Version(hello.version))
        } else if hello.cluster_id != self.config.cluster_id {
            Some(HelloRefusal::ClusterId {
                found: hello.cluster_id,
                expected: self.config.cluster_id,
            })
        } else {
            // Logged (rate-limited) by the check itself: a guessing client floods.
            self.check_client_password(token, &hello).err()
        };
        let logged = refusal.as_ref().is_some_and(HelloRefusal::is_auth);
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
                // Direct replies (plain TCP only: TLS state belongs to this thread).
                if let Some(tcp) = conn.stream.plain_tcp() {
                    self.lanes.attach_client(token, tcp, !conn.out.is_empty());
                }
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
    fn check_client_password(
        &mut self,
        token: Token,
        hello: &ClientHello,
    ) -> Result<(), HelloRefusal> {
        let users = &self.config.client_users;
        let role = match (users.anonymous(), hello.password.is_empty()) {
            (Some(role), _) => role,
            (None, true) => return Err(HelloRefusal::NoAuth),
            (None, false) => match users.check(&hello.user, &hello.password) {
                Some(role) => role,
                None => {
                    self.stats.client_auth_failures += 1;
                    let addr = self.conns[&token].addr;
                    self.auth_log
                        .warn(addr, "native client authentication failed (WRONGPASS)");
                    return Err(HelloRefusal::WrongPass);
                }
            },
        };
        let conn = self.conns.get_mut(&token).expect("live connection");
        conn.read_only = role == ClientRole::ReadOnly;
        Ok(())
    }
}

/// Why a native client's hello is refused (the reply says it after `refused: `).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum HelloRefusal {
    /// Another client protocol version.
    Version(u16),
    /// Another cluster.
    ClusterId { found: u64, expected: u64 },
    /// No password where one is required.
    NoAuth,
    /// A wrong user or password.
    WrongPass,
}

impl HelloRefusal {
    /// About the credentials (worded with Redis's codes, which clients look for).
    fn is_auth(&self) -> bool {
        matches!(self, HelloRefusal::NoAuth | HelloRefusal::WrongPass)
    }
}

impl fmt::Display for HelloRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HelloRefusal::Version(version) => write!(
                f,
                "client protocol version {version} (expected {CLIENT_PROTOCOL_VERSION})"
            ),
            HelloRefusal::ClusterId { found, expected } => {
                write!(f, "cluster id {found} (expected {expected})")
            }
            HelloRefusal::NoAuth => f.write_str(
                "NOAUTH Authentication required: this node needs a client password \
                 (lockstep::client::Credentials, or --password-file)",
            ),
            HelloRefusal::WrongPass => {
                f.write_str("WRONGPASS invalid username-password pair or user is disabled.")
            }
        }
    }
}

/// A first byte that starts no client protocol this port speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct UnknownProtocol(u8);

impl fmt::Display for UnknownProtocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "unknown client protocol (first byte {:#04x}: neither the frame magic \
             {FRAME_MAGIC:#04x} nor ASCII for RESP)",
            self.0
        )
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
) -> Result<(), UnknownProtocol> {
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
        return Err(UnknownProtocol(first));
    };
    Ok(())
}

/// Where a peer connection's handshake stands.
pub(super) struct PeerHandshake {
    /// The node dialed; `None` on an accepted connection.
    expected: Option<NodeId>,
    /// The nonce of this end's hello (fresh for every connection).
    nonce: Nonce,
    /// Set once the other end's hello is accepted and its proof is due: the node it claims to
    /// be and the transcript its proof must cover.
    awaiting_proof: Option<(NodeId, Transcript)>,
}

impl PeerHandshake {
    /// The start of a handshake on a connection to the node dialed (`None`: accepted).
    pub(super) fn new(expected: Option<NodeId>) -> Box<PeerHandshake> {
        Box::new(PeerHandshake {
            expected,
            nonce: fresh_nonce(),
            awaiting_proof: None,
        })
    }

    /// The node dialed (`None` on an accepted connection, whatever its hello claimed: a claim
    /// is not trusted before the handshake ends).
    pub(super) fn dialed(&self) -> Option<NodeId> {
        self.expected
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::is_auth_refusal;

    #[test]
    fn a_handshake_names_only_the_node_dialed() {
        let dialed = PeerHandshake::new(Some(NodeId(3)));
        assert_eq!(dialed.dialed(), Some(NodeId(3)));
        let mut accepted = PeerHandshake::new(None);
        assert_ne!(accepted.nonce, dialed.nonce);
        let transcript = Transcript {
            version: PEER_PROTOCOL_VERSION,
            cluster_id: 1,
            dialer: NodeId(2),
            acceptor: NodeId(5),
            dialer_nonce: [0; 32],
            acceptor_nonce: accepted.nonce,
        };
        accepted.awaiting_proof = Some((NodeId(2), transcript));
        assert_eq!(accepted.dialed(), None);
    }
    /// Clients tell a refusal about credentials by its words (`NOAUTH `, `WRONGPASS `): the
    /// refusals the node classes as such must say them, and no other may.
    #[test]
    fn refusals_about_credentials_say_so_in_redis_words() {
        let refusals = [
            HelloRefusal::Version(2),
            HelloRefusal::ClusterId {
                found: 1,
                expected: 2,
            },
            HelloRefusal::NoAuth,
            HelloRefusal::WrongPass,
        ];
        for refusal in refusals {
            let message = refusal.to_string();
            assert_eq!(refusal.is_auth(), is_auth_refusal(&message), "{message}");
        }
        assert_eq!(
            HelloRefusal::ClusterId {
                found: 1,
                expected: 2
            }
            .to_string(),
            "cluster id 1 (expected 2)"
        );
        assert_eq!(
            UnknownProtocol(0xff).to_string(),
            format!(
                "unknown client protocol (first byte 0xff: neither the frame magic \
                 {FRAME_MAGIC:#04x} nor ASCII for RESP)"
            )
        );
    }
}
