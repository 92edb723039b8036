//! One connection to one node: the handshake, buffered pipelined requests, and blocking helpers.
//!
//! Efficiency contract (the benchmark drives load through this type): [`Client::send`] encodes
//! into reused buffers and writes only when [`Client::flush`] is called or 64 KiB are queued;
//! [`Client::recv`] reads through a 64 KiB buffer, so many replies cost one syscall. Beyond the
//! reply itself nothing is allocated per request.
//!
//! With [`ClientTls`] ([`Client::connect_with`]) the connection speaks TLS, verifying the node's
//! certificate against a CA file with the IP address dialed as the server name.
//!
//! [`Client::connect`] completes the handshake: the node answers the hello with `Ok` for request
//! id 0, or refuses it with an `Error` for request id 0 (reported as [`ClientError::Refused`])
//! and closes. Request ids handed out by [`Client::next_req`] therefore start at 1. After any I/O
//! or protocol error the connection is unusable: later calls fail at once.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use bytes::Bytes;

use crate::net::frame::{encode_frame, read_frame, FrameType};
use crate::net::{is_auth_refusal, ClientHello, ClientReply, ClientRequest, ClientTls};
use crate::node::{Applied, AppliedBatch};
use crate::raft::MembershipChange;
use crate::types::{LogIndex, NodeId};

use super::{ClientError, Credentials};

/// Queued request bytes that trigger a write without waiting for [`Client::flush`].
const WRITE_BUFFER_BYTES: usize = 64 << 10;

/// Read buffer size.
const READ_BUFFER_BYTES: usize = 64 << 10;

/// The largest reply frame accepted (the node's default frame limit).
const REPLY_FRAME_BYTES_MAX: u32 = 64 << 20;

/// The request id a node uses to answer a refused handshake.
const HANDSHAKE_REQ: u64 = 0;

/// The byte stream under a [`Client`]: plain TCP or TLS (with the `tls` feature).
enum Stream {
    Plain(TcpStream),
    #[cfg(feature = "tls")]
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(tcp) => tcp.read(buf),
            #[cfg(feature = "tls")]
            Stream::Tls(tls) => tls.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(tcp) => tcp.write(buf),
            #[cfg(feature = "tls")]
            Stream::Tls(tls) => tls.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Plain(tcp) => tcp.flush(),
            #[cfg(feature = "tls")]
            Stream::Tls(tls) => tls.flush(),
        }
    }
}

/// One connection to one node.
pub struct Client {
    addr: SocketAddr,
    /// Reads through the buffer; writes go to the stream inside it (`get_mut`).
    stream: BufReader<Stream>,
    /// Encoded frames not yet written.
    out: Vec<u8>,
    /// Scratch for encoding one request body.
    scratch: Vec<u8>,
    /// The body of the last reply read.
    body: Vec<u8>,
    /// The last request id handed out by [`Client::next_req`] (ids start at 1).
    last_req: u64,
    /// Requests sent whose reply has not been received.
    pending: usize,
    /// Set by an I/O or protocol error; the stream's position is then unknown.
    broken: bool,
}

impl Client {
    /// Connects to `addr` and performs the handshake for `cluster_id` (one round trip), without
    /// credentials. `timeout` bounds the connect and every later read and write.
    pub fn connect(
        addr: SocketAddr,
        cluster_id: u64,
        timeout: Duration,
    ) -> Result<Client, ClientError> {
        Client::connect_with(addr, cluster_id, timeout, None, None)
    }

    /// [`Client::connect`], authenticating with `credentials` if given (a node that requires a
    /// password refuses a hello without one with [`ClientError::Auth`]), over TLS when `tls` is
    /// given (the TLS handshake runs with the node's hello exchange; a certificate the CA does
    /// not vouch for fails it with an I/O error of kind `InvalidData`).
    pub fn connect_with(
        addr: SocketAddr,
        cluster_id: u64,
        timeout: Duration,
        credentials: Option<&Credentials>,
        tls: Option<&ClientTls>,
    ) -> Result<Client, ClientError> {
        let tcp = TcpStream::connect_timeout(&addr, timeout)?;
        tcp.set_nodelay(true)?;
        tcp.set_read_timeout(Some(timeout))?;
        tcp.set_write_timeout(Some(timeout))?;
        let stream = match tls {
            None => Stream::Plain(tcp),
            #[cfg(feature = "tls")]
            Some(tls) => Stream::Tls(Box::new(tls.wrap(tcp, addr)?)),
            // Without the feature no `ClientTls` exists.
            #[cfg(not(feature = "tls"))]
            Some(tls) => match *tls {},
        };
        let mut client = Client {
            addr,
            stream: BufReader::with_capacity(READ_BUFFER_BYTES, stream),
            out: Vec::with_capacity(WRITE_BUFFER_BYTES),
            scratch: Vec::new(),
            body: Vec::new(),
            last_req: 0,
            pending: 0,
            broken: false,
        };
        let mut hello = ClientHello::new(cluster_id);
        if let Some(credentials) = credentials {
            hello.user = Bytes::copy_from_slice(credentials.user.as_bytes());
            hello.password = credentials.password.clone();
        }
        hello.encode(&mut client.scratch);
        encode_frame(FrameType::ClientHello, &client.scratch, &mut client.out);
        client.flush()?;
        // A node with no room for another client answers a RESP error line and closes.
        if client.stream.fill_buf()?.first() == Some(&b'-') {
            let mut line = String::new();
            client.stream.read_line(&mut line)?;
            return Err(ClientError::Refused(line[1..].trim_end().to_string()));
        }
        match client.read_reply()? {
            ClientReply::Ok { req: HANDSHAKE_REQ } => Ok(client),
            other => Err(ClientError::Protocol(format!(
                "expected the handshake's Ok reply, got {other:?}"
            ))),
        }
    }

    /// The node's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// A fresh request id for a pipelined [`Client::send`] (never 0, never repeated on this
    /// connection).
    pub fn next_req(&mut self) -> u64 {
        self.last_req += 1;
        self.last_req
    }

    /// Requests sent whose reply has not been received yet.
    pub fn pending(&self) -> usize {
        self.pending
    }

    fn check_usable(&self) -> Result<(), ClientError> {
        if self.broken {
            return Err(ClientError::Io(io::Error::new(
                io::ErrorKind::NotConnected,
                format!("connection to {} was broken by an earlier error", self.addr),
            )));
        }
        Ok(())
    }

    /// Marks the connection broken when `result` is an I/O or protocol error.
    fn track<T>(&mut self, result: Result<T, ClientError>) -> Result<T, ClientError> {
        if matches!(
            result,
            Err(ClientError::Io(_)
                | ClientError::Protocol(_)
                | ClientError::Refused(_)
                | ClientError::Auth(_))
        ) {
            self.broken = true;
        }
        result
    }

    /// Queues `request` (written on [`Client::flush`] or when the buffer fills).
    pub fn send(&mut self, request: &ClientRequest) -> Result<(), ClientError> {
        self.check_usable()?;
        self.scratch.clear();
        request.encode(&mut self.scratch);
        encode_frame(FrameType::ClientRequest, &self.scratch, &mut self.out);
        self.pending += 1;
        if self.out.len() >= WRITE_BUFFER_BYTES {
            self.flush()?;
        }
        Ok(())
    }

    /// Writes everything queued.
    pub fn flush(&mut self) -> Result<(), ClientError> {
        self.check_usable()?;
        if self.out.is_empty() {
            return Ok(());
        }
        let stream = self.stream.get_mut();
        let result = stream
            .write_all(&self.out)
            .and_then(|()| stream.flush())
            .map_err(ClientError::Io);
        self.out.clear();
        self.track(result)
    }

    /// Blocks for the next reply, flushing queued requests first. Replies to one connection come
    /// in the order the node completes them, which need not be the request order: match them by
    /// `req`.
    pub fn recv(&mut self) -> Result<ClientReply, ClientError> {
        self.flush()?;
        let result = self.read_reply();
        let reply = self.track(result)?;
        self.pending = self.pending.saturating_sub(1);
        Ok(reply)
    }

    fn read_reply(&mut self) -> Result<ClientReply, ClientError> {
        let ty = read_frame(&mut self.stream, REPLY_FRAME_BYTES_MAX, &mut self.body)?;
        if ty != FrameType::ClientReply {
            return Err(ClientError::Protocol(format!(
                "expected a client reply frame, got {ty:?}"
            )));
        }
        let reply = ClientReply::decode(&self.body)
            .map_err(|e| ClientError::Protocol(format!("bad reply: {e}")))?;
        if let ClientReply::Error {
            req: HANDSHAKE_REQ,
            message,
        } = &reply
        {
            let cause = message.strip_prefix("refused: ").unwrap_or(message);
            if is_auth_refusal(cause) {
                return Err(ClientError::Auth(cause.to_string()));
            }
            return Err(ClientError::Refused(message.clone()));
        }
        Ok(reply)
    }

    /// Sends one request and waits for its reply. Only for a connection with nothing pipelined.
    fn call(&mut self, request: &ClientRequest) -> Result<ClientReply, ClientError> {
        assert_eq!(
            self.pending, 0,
            "blocking call on a connection with {} pipelined replies pending",
            self.pending
        );
        self.send(request)?;
        let reply = self.recv()?;
        if reply.req() != request.req() {
            let err = ClientError::Protocol(format!(
                "reply for request {} while waiting for {}",
                reply.req(),
                request.req()
            ));
            return self.track(Err(err));
        }
        Ok(reply)
    }

    /// Proposes one command and waits for its outcome.
    pub fn propose(&mut self, command: &[u8]) -> Result<Applied, ClientError> {
        let req = self.next_req();
        let command = Bytes::copy_from_slice(command);
        let reply = self.call(&ClientRequest::Propose { req, command })?;
        outcome(reply)
    }

    /// Proposes several commands in one request and waits for their outcome: they commit at
    /// consecutive indexes, all or none (see [`crate::node::Node::propose_batch`]).
    pub fn propose_batch(&mut self, commands: &[Bytes]) -> Result<AppliedBatch, ClientError> {
        let req = self.next_req();
        let reply = self.call(&ClientRequest::ProposeBatch {
            req,
            commands: commands.to_vec(),
        })?;
        match reply {
            ClientReply::AppliedBatch { first, results, .. } if results.len() == commands.len() => {
                Ok(AppliedBatch { first, results })
            }
            ClientReply::AppliedBatch { results, .. } => Err(ClientError::Protocol(format!(
                "{} results for a batch of {} commands",
                results.len(),
                commands.len()
            ))),
            other => unexpected(other),
        }
    }

    /// Runs one query and waits for the answer.
    pub fn read(&mut self, query: &[u8], linearizable: bool) -> Result<Applied, ClientError> {
        let req = self.next_req();
        let query = Bytes::copy_from_slice(query);
        let reply = self.call(&ClientRequest::Read {
            req,
            query,
            linearizable,
        })?;
        outcome(reply)
    }

    /// The node's status as JSON text.
    pub fn status(&mut self) -> Result<String, ClientError> {
        let req = self.next_req();
        match self.call(&ClientRequest::Status { req })? {
            ClientReply::Status { json, .. } => Ok(json),
            other => unexpected(other),
        }
    }

    /// Asks the node (the leader) to hand leadership to `to`.
    pub fn transfer_leader(&mut self, to: NodeId) -> Result<(), ClientError> {
        let req = self.next_req();
        match self.call(&ClientRequest::TransferLeader { req, to })? {
            ClientReply::Ok { .. } => Ok(()),
            other => outcome(other).map(|_| ()),
        }
    }

    /// Asks the node (the leader) to change the cluster's membership and waits until the change
    /// is committed and applied there; returns its log index. The leader takes one change at a
    /// time and refuses a promotion of a learner that is not caught up (both answered
    /// [`ClientError::Server`] with the reason, `refused: ...`). An
    /// [`MembershipChange::AddLearner`] must name the new node's address: one without is
    /// refused here, before anything is sent, with [`ClientError::Invalid`].
    pub fn change_membership(&mut self, change: MembershipChange) -> Result<LogIndex, ClientError> {
        if let MembershipChange::AddLearner(id, None) = change {
            return Err(ClientError::Invalid(format!(
                "adding node {id} needs its peer address"
            )));
        }
        let req = self.next_req();
        let reply = self.call(&ClientRequest::ChangeMembership { req, change })?;
        outcome(reply).map(|applied| applied.index)
    }
}

/// Maps a reply to a proposal or read onto its outcome.
pub(super) fn outcome(reply: ClientReply) -> Result<Applied, ClientError> {
    match reply {
        ClientReply::Applied { index, result, .. } | ClientReply::ReadOk { index, result, .. } => {
            Ok(Applied { index, result })
        }
        other => unexpected(other),
    }
}

/// The error for any reply but the one expected: redirects and errors keep their meaning.
fn unexpected<T>(reply: ClientReply) -> Result<T, ClientError> {
    match reply {
        ClientReply::NotLeader {
            leader,
            leader_addr,
            ..
        } => Err(ClientError::NotLeader {
            leader,
            leader_addr,
        }),
        ClientReply::Error { message, .. } => Err(ClientError::Server(message)),
        other => Err(ClientError::Protocol(format!("unexpected reply {other:?}"))),
    }
}
