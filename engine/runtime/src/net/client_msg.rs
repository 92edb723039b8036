//! The client protocol's messages and their encoding (frame bodies; the frame itself is the
//! transport's). Pure functions over bytes; layouts in `docs/FORMATS.md` ("Wire protocol").
//!
//! Every body starts with a one-byte tag (except the hello), integers are little-endian, byte
//! and string fields are a `u32` length then the bytes. Decoding never panics: short, unknown or
//! trailing bytes are a [`CodecError`].

use std::fmt;
use std::net::SocketAddr;

use bytes::Bytes;

use super::wire::{put_bool, put_bytes, put_u16, put_u32, put_u64, WireReader};
use crate::batch::BatchError;
use crate::raft::membership::{put_addr, take_addr};
use crate::raft::{MemberAddr, MembershipChange, MembershipError};
use crate::types::{LogIndex, NodeId};

/// The client protocol version this code speaks (sent in [`ClientHello`]). Version 2 added
/// [`ClientRequest::ProposeBatch`] and [`ClientReply::AppliedBatch`]; version 3 the hello's
/// user name and password.
///
/// [`ClientRequest::ChangeMembership`] came later without a version change: it is a new tag,
/// not a change to an existing layout, so no node misreads it. A node that predates it treats
/// the tag as bad input and closes the connection (a client sees the connection close without
/// a reply); every other request keeps working between old and new nodes and clients.
pub const CLIENT_PROTOCOL_VERSION: u16 = 3;

/// Why a frame body could not be decoded. `what` names the field or the message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CodecError {
    /// A field runs past the end of the body.
    Truncated {
        /// The field.
        what: &'static str,
        /// Bytes it needs.
        needed: usize,
        /// Where it starts in the body.
        offset: usize,
        /// Bytes left from there.
        left: usize,
    },
    /// A bool field holds a byte other than 0 or 1.
    NotBool {
        /// The field.
        what: &'static str,
        /// The byte.
        byte: u8,
    },
    /// A text field is not UTF-8.
    NotUtf8 {
        /// The field.
        what: &'static str,
    },
    /// Bytes are left after the last field.
    LeftOver {
        /// The message.
        what: &'static str,
        /// How many.
        bytes: usize,
    },
    /// A tag or kind byte names nothing this code knows.
    UnknownTag {
        /// The field.
        what: &'static str,
        /// The byte.
        tag: u8,
    },
    /// A membership change adds a learner without its peer address.
    MissingPeerAddress,
    /// A membership (or a member address) does not decode: a snapshot's, or the one a
    /// `Membership` batch holds.
    Membership {
        /// The field.
        what: &'static str,
        /// What is wrong with it.
        error: MembershipError,
    },
    /// Batch `n` of an append is not a valid record.
    Batch {
        /// Its position in the append.
        n: u32,
        /// What is wrong with it.
        error: BatchWireError,
    },
    /// Batch `n` of an append does not start right after what precedes it.
    AppendGap {
        /// Its position in the append.
        n: u32,
        /// Where it starts.
        first_index: u64,
        /// Where it should start (`prev_index + 1` for the first batch).
        expected: u64,
    },
}

/// Why a batch on the wire is not a valid record (see `docs/FORMATS.md`, "Wire protocol").
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BatchWireError {
    /// The record magic is wrong.
    Magic(u32),
    /// The record version is unknown.
    Version(u8),
    /// The kind byte names no batch kind.
    Kind(u8),
    /// Reserved bytes 6..8 are not zero.
    Reserved,
    /// The first index is 0, or the entries run past the largest index.
    IndexRange {
        /// The first index.
        first_index: u64,
        /// The entry count.
        entry_count: u32,
    },
    /// The payload does not hold the announced entries.
    Payload(BatchError),
    /// The record CRC does not match.
    Checksum {
        /// The CRC sent.
        stored: u32,
        /// The CRC of what arrived.
        computed: u32,
    },
}

impl fmt::Display for CodecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CodecError::Truncated {
                what,
                needed,
                offset,
                left,
            } => write!(
                f,
                "{what}: needs {needed} bytes at offset {offset}, only {left} left"
            ),
            CodecError::NotBool { what, byte } => write!(f, "{what}: {byte} is not a bool"),
            CodecError::NotUtf8 { what } => write!(f, "{what}: not UTF-8"),
            CodecError::LeftOver { what, bytes } => write!(f, "{what}: {bytes} bytes left over"),
            CodecError::UnknownTag { what, tag } => write!(f, "unknown {what} {tag}"),
            CodecError::MissingPeerAddress => {
                write!(f, "add learner: the peer address is required")
            }
            CodecError::Membership { what, error } => write!(f, "{what}: {error}"),
            CodecError::Batch { n, error } => write!(f, "append batch {n}: {error}"),
            CodecError::AppendGap {
                n,
                first_index,
                expected,
            } => write!(
                f,
                "append batch {n} starts at {first_index} instead of {expected}"
            ),
        }
    }
}

impl fmt::Display for BatchWireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BatchWireError::Magic(magic) => write!(f, "bad record magic {magic:#010x}"),
            BatchWireError::Version(version) => write!(f, "unknown record version {version}"),
            BatchWireError::Kind(kind) => write!(f, "kind {kind:#04x} is not a batch"),
            BatchWireError::Reserved => write!(f, "reserved bytes 6..8 are not zero"),
            BatchWireError::IndexRange {
                first_index,
                entry_count,
            } => write!(
                f,
                "first index {first_index} with {entry_count} entries is out of range"
            ),
            BatchWireError::Payload(error) => write!(f, "{error}"),
            BatchWireError::Checksum { stored, computed } => write!(
                f,
                "record checksum mismatch (stored {stored:#010x}, computed {computed:#010x})"
            ),
        }
    }
}

impl std::error::Error for CodecError {}

/// The first frame a client sends. Its `Debug` output hides the password.
#[derive(Clone, PartialEq, Eq)]
pub struct ClientHello {
    /// Client protocol version.
    pub version: u16,
    /// The cluster the client expects.
    pub cluster_id: u64,
    /// The user to authenticate as (empty: the default user). Version 3 on.
    pub user: Bytes,
    /// The user's password (empty: none given). Version 3 on.
    pub password: Bytes,
}

impl fmt::Debug for ClientHello {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientHello")
            .field("version", &self.version)
            .field("cluster_id", &self.cluster_id)
            .field("user", &String::from_utf8_lossy(&self.user))
            .field(
                "password",
                &if self.password.is_empty() {
                    ""
                } else {
                    "<hidden>"
                },
            )
            .finish()
    }
}

/// Whether a hello's refusal message is about its credentials: it starts with `NOAUTH ` or
/// `WRONGPASS ` (Redis's codes).
pub(crate) fn is_auth_refusal(message: &str) -> bool {
    message.starts_with("NOAUTH ") || message.starts_with("WRONGPASS ")
}

/// A client's request. `req` is chosen by the client and echoed in the reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientRequest {
    /// Append a command; replied to once committed and applied.
    Propose {
        /// Request id.
        req: u64,
        /// The command for the state machine.
        command: Bytes,
    },
    /// Append several commands as consecutive log entries (one request, one reply, one batch
    /// in the leader); replied to once all of them are committed and applied.
    ProposeBatch {
        /// Request id.
        req: u64,
        /// The commands, in order.
        commands: Vec<Bytes>,
    },
    /// Run a read-only query.
    Read {
        /// Request id.
        req: u64,
        /// The query for the state machine.
        query: Bytes,
        /// Linearizable (through the leader, read-index) or local (this node's applied state,
        /// possibly stale, served by any node).
        linearizable: bool,
    },
    /// Ask for the node's status (answered as JSON).
    Status {
        /// Request id.
        req: u64,
    },
    /// Ask the leader to hand leadership to `to`.
    TransferLeader {
        /// Request id.
        req: u64,
        /// The node to take over.
        to: NodeId,
    },
    /// Ask the leader to propose a membership change; replied to with `Applied` (empty result)
    /// once the change is committed and applied at the leader. An [`MembershipChange::AddLearner`]
    /// must name the new node's address: one without is encoded with no peer address, which
    /// every decoder refuses (see [`ClientRequest::encode`]).
    ChangeMembership {
        /// Request id.
        req: u64,
        /// The change.
        change: MembershipChange,
    },
}

/// The node's answer to one request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientReply {
    /// The command committed at `index` and the state machine answered `result`.
    Applied {
        /// Request id.
        req: u64,
        /// Log index of the command.
        index: LogIndex,
        /// The state machine's reply.
        result: Bytes,
    },
    /// The commands of a [`ClientRequest::ProposeBatch`] committed at `first`, `first + 1`,
    /// ... and the state machine answered `results` (one per command, in order).
    AppliedBatch {
        /// Request id.
        req: u64,
        /// Log index of the first command.
        first: LogIndex,
        /// The state machine's replies.
        results: Vec<Bytes>,
    },
    /// The query's answer, reflecting everything applied up to `index`.
    ReadOk {
        /// Request id.
        req: u64,
        /// Applied index the answer reflects.
        index: LogIndex,
        /// The state machine's answer.
        result: Bytes,
    },
    /// This node is not the leader; retry at the leader if one is known.
    NotLeader {
        /// Request id.
        req: u64,
        /// The leader, if known.
        leader: Option<NodeId>,
        /// The leader's client address, if known.
        leader_addr: Option<String>,
    },
    /// The node's status as JSON.
    Status {
        /// Request id.
        req: u64,
        /// JSON text.
        json: String,
    },
    /// Done (for requests with nothing to return).
    Ok {
        /// Request id.
        req: u64,
    },
    /// The request failed; `message` says why. For a proposal the outcome may be unknown (it may
    /// still commit): the message says so.
    Error {
        /// Request id.
        req: u64,
        /// What went wrong.
        message: String,
    },
}

impl ClientHello {
    /// A hello of this code's protocol version for `cluster_id`, without credentials.
    pub fn new(cluster_id: u64) -> ClientHello {
        ClientHello {
            version: CLIENT_PROTOCOL_VERSION,
            cluster_id,
            user: Bytes::new(),
            password: Bytes::new(),
        }
    }

    /// Appends the encoded hello to `out`. Versions before 3 have no credentials.
    pub fn encode(&self, out: &mut Vec<u8>) {
        put_u16(out, self.version);
        put_u64(out, self.cluster_id);
        if self.version >= 3 {
            put_bytes(out, &self.user);
            put_bytes(out, &self.password);
        }
    }

    /// Decodes a hello frame body of any version (a hello of another version is decoded so its
    /// version can be refused by name).
    pub fn decode(body: &[u8]) -> Result<ClientHello, CodecError> {
        let body = Bytes::copy_from_slice(body);
        let mut reader = WireReader::new(&body);
        let mut hello = ClientHello::new(0);
        hello.version = reader.u16("client hello version")?;
        hello.cluster_id = reader.u64("client hello cluster id")?;
        if hello.version >= 3 {
            hello.user = reader.bytes("client hello user")?;
            hello.password = reader.bytes("client hello password")?;
        }
        reader.finish("client hello")?;
        Ok(hello)
    }
}

const REQ_PROPOSE: u8 = 1;
const REQ_READ: u8 = 2;
const REQ_STATUS: u8 = 3;
const REQ_TRANSFER_LEADER: u8 = 4;
const REQ_PROPOSE_BATCH: u8 = 5;
const REQ_CHANGE_MEMBERSHIP: u8 = 6;

/// Kinds of [`MembershipChange`] on the wire.
const CHANGE_ADD_LEARNER: u8 = 1;
const CHANGE_PROMOTE: u8 = 2;
const CHANGE_REMOVE: u8 = 3;

/// Reads an address written by [`put_addr`] (the membership encoding's layout).
fn read_addr(
    reader: &mut WireReader<'_>,
    what: &'static str,
) -> Result<Option<SocketAddr>, CodecError> {
    reader
        .decode_with(take_addr)
        .map_err(|error| CodecError::Membership { what, error })
}

/// Appends a membership change: `u8 kind` (1 add learner, 2 promote, 3 remove), `u64 node id`,
/// and for an add the peer address and the client address ([`put_addr`]; an add without an
/// address gets family 0 for both, which [`read_change`] refuses).
fn put_change(out: &mut Vec<u8>, change: &MembershipChange) {
    match change {
        MembershipChange::AddLearner(id, addr) => {
            out.push(CHANGE_ADD_LEARNER);
            put_u64(out, id.get());
            put_addr(out, addr.map(|addr| addr.peer_addr));
            put_addr(out, addr.and_then(|addr| addr.client_addr));
        }
        MembershipChange::Promote(id) => {
            out.push(CHANGE_PROMOTE);
            put_u64(out, id.get());
        }
        MembershipChange::Remove(id) => {
            out.push(CHANGE_REMOVE);
            put_u64(out, id.get());
        }
    }
}

/// Reads a change written by [`put_change`]. An add must carry a peer address.
fn read_change(reader: &mut WireReader<'_>) -> Result<MembershipChange, CodecError> {
    let kind = reader.u8("membership change kind")?;
    let id = NodeId(reader.u64("membership change node id")?);
    match kind {
        CHANGE_ADD_LEARNER => {
            let peer_addr = read_addr(reader, "add learner peer address")?
                .ok_or(CodecError::MissingPeerAddress)?;
            let client_addr = read_addr(reader, "add learner client address")?;
            Ok(MembershipChange::AddLearner(
                id,
                Some(MemberAddr {
                    peer_addr,
                    client_addr,
                }),
            ))
        }
        CHANGE_PROMOTE => Ok(MembershipChange::Promote(id)),
        CHANGE_REMOVE => Ok(MembershipChange::Remove(id)),
        tag => Err(CodecError::UnknownTag {
            what: "membership change kind",
            tag,
        }),
    }
}

/// Appends a count and then each item as a bytes field.
fn put_bytes_list(out: &mut Vec<u8>, items: &[Bytes]) {
    let count = u32::try_from(items.len()).expect("fewer than 2^32 items in one message");
    put_u32(out, count);
    for item in items {
        put_bytes(out, item);
    }
}

/// Reads a count and then that many bytes fields (slices of `body`, no copy).
fn read_bytes_list(
    reader: &mut WireReader<'_>,
    body: &Bytes,
    what: &'static str,
) -> Result<Vec<Bytes>, CodecError> {
    let count = reader.u32(what)? as usize;
    // Each item takes at least its 4-byte length: never reserve more than the body can hold.
    let mut items = Vec::with_capacity(count.min(body.len() / 4));
    for _ in 0..count {
        items.push(reader.bytes(what)?);
    }
    Ok(items)
}

impl ClientRequest {
    /// The request id.
    pub fn req(&self) -> u64 {
        match self {
            ClientRequest::Propose { req, .. }
            | ClientRequest::ProposeBatch { req, .. }
            | ClientRequest::Read { req, .. }
            | ClientRequest::Status { req }
            | ClientRequest::TransferLeader { req, .. }
            | ClientRequest::ChangeMembership { req, .. } => *req,
        }
    }

    /// Appends the encoded request (a frame body) to `out`. A
    /// [`ClientRequest::ChangeMembership`] adding a learner without an address is written with
    /// no peer address, so a node refuses it as bad input: the Rust client refuses to send one.
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            ClientRequest::Propose { req, command } => {
                out.push(REQ_PROPOSE);
                put_u64(out, *req);
                put_bytes(out, command);
            }
            ClientRequest::ProposeBatch { req, commands } => {
                out.push(REQ_PROPOSE_BATCH);
                put_u64(out, *req);
                put_bytes_list(out, commands);
            }
            ClientRequest::Read {
                req,
                query,
                linearizable,
            } => {
                out.push(REQ_READ);
                put_u64(out, *req);
                put_bool(out, *linearizable);
                put_bytes(out, query);
            }
            ClientRequest::Status { req } => {
                out.push(REQ_STATUS);
                put_u64(out, *req);
            }
            ClientRequest::TransferLeader { req, to } => {
                out.push(REQ_TRANSFER_LEADER);
                put_u64(out, *req);
                put_u64(out, to.get());
            }
            ClientRequest::ChangeMembership { req, change } => {
                out.push(REQ_CHANGE_MEMBERSHIP);
                put_u64(out, *req);
                put_change(out, change);
            }
        }
    }

    /// Decodes a request frame body.
    pub fn decode(body: &[u8]) -> Result<ClientRequest, CodecError> {
        ClientRequest::decode_shared(&Bytes::copy_from_slice(body))
    }

    /// Decodes a request frame body; the command or query is a slice of `body` (no copy).
    pub fn decode_shared(body: &Bytes) -> Result<ClientRequest, CodecError> {
        let mut reader = WireReader::new(body);
        let tag = reader.u8("client request tag")?;
        let req = reader.u64("client request id")?;
        let request = match tag {
            REQ_PROPOSE => ClientRequest::Propose {
                req,
                command: reader.bytes("propose command")?,
            },
            REQ_PROPOSE_BATCH => ClientRequest::ProposeBatch {
                req,
                commands: read_bytes_list(&mut reader, body, "propose batch commands")?,
            },
            REQ_READ => {
                let linearizable = reader.bool("read linearizable flag")?;
                ClientRequest::Read {
                    req,
                    query: reader.bytes("read query")?,
                    linearizable,
                }
            }
            REQ_STATUS => ClientRequest::Status { req },
            REQ_TRANSFER_LEADER => ClientRequest::TransferLeader {
                req,
                to: NodeId(reader.u64("transfer target")?),
            },
            REQ_CHANGE_MEMBERSHIP => ClientRequest::ChangeMembership {
                req,
                change: read_change(&mut reader)?,
            },
            tag => {
                return Err(CodecError::UnknownTag {
                    what: "client request tag",
                    tag,
                })
            }
        };
        reader.finish("client request")?;
        Ok(request)
    }
}

const REPLY_APPLIED: u8 = 1;
const REPLY_READ_OK: u8 = 2;
const REPLY_NOT_LEADER: u8 = 3;
const REPLY_STATUS: u8 = 4;
const REPLY_OK: u8 = 5;
const REPLY_ERROR: u8 = 6;
const REPLY_APPLIED_BATCH: u8 = 7;

impl ClientReply {
    /// The request id being answered.
    pub fn req(&self) -> u64 {
        match self {
            ClientReply::Applied { req, .. }
            | ClientReply::AppliedBatch { req, .. }
            | ClientReply::ReadOk { req, .. }
            | ClientReply::NotLeader { req, .. }
            | ClientReply::Status { req, .. }
            | ClientReply::Ok { req }
            | ClientReply::Error { req, .. } => *req,
        }
    }

    /// Appends the encoded reply (a frame body) to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            ClientReply::Applied { req, index, result } => {
                out.push(REPLY_APPLIED);
                put_u64(out, *req);
                put_u64(out, index.get());
                put_bytes(out, result);
            }
            ClientReply::AppliedBatch {
                req,
                first,
                results,
            } => {
                out.push(REPLY_APPLIED_BATCH);
                put_u64(out, *req);
                put_u64(out, first.get());
                put_bytes_list(out, results);
            }
            ClientReply::ReadOk { req, index, result } => {
                out.push(REPLY_READ_OK);
                put_u64(out, *req);
                put_u64(out, index.get());
                put_bytes(out, result);
            }
            ClientReply::NotLeader {
                req,
                leader,
                leader_addr,
            } => {
                out.push(REPLY_NOT_LEADER);
                put_u64(out, *req);
                put_u64(out, leader.map_or(0, NodeId::get));
                put_bool(out, leader_addr.is_some());
                if let Some(addr) = leader_addr {
                    put_bytes(out, addr.as_bytes());
                }
            }
            ClientReply::Status { req, json } => {
                out.push(REPLY_STATUS);
                put_u64(out, *req);
                put_bytes(out, json.as_bytes());
            }
            ClientReply::Ok { req } => {
                out.push(REPLY_OK);
                put_u64(out, *req);
            }
            ClientReply::Error { req, message } => {
                out.push(REPLY_ERROR);
                put_u64(out, *req);
                put_bytes(out, message.as_bytes());
            }
        }
    }

    /// Decodes a reply frame body.
    pub fn decode(body: &[u8]) -> Result<ClientReply, CodecError> {
        ClientReply::decode_shared(&Bytes::copy_from_slice(body))
    }

    /// Decodes a reply frame body; the result bytes are a slice of `body` (no copy).
    pub fn decode_shared(body: &Bytes) -> Result<ClientReply, CodecError> {
        let mut reader = WireReader::new(body);
        let tag = reader.u8("client reply tag")?;
        let req = reader.u64("client reply id")?;
        let reply = match tag {
            REPLY_APPLIED => ClientReply::Applied {
                req,
                index: LogIndex(reader.u64("applied index")?),
                result: reader.bytes("applied result")?,
            },
            REPLY_APPLIED_BATCH => ClientReply::AppliedBatch {
                req,
                first: LogIndex(reader.u64("applied batch first index")?),
                results: read_bytes_list(&mut reader, body, "applied batch results")?,
            },
            REPLY_READ_OK => ClientReply::ReadOk {
                req,
                index: LogIndex(reader.u64("read index")?),
                result: reader.bytes("read result")?,
            },
            REPLY_NOT_LEADER => {
                let leader = reader.u64("leader id")?;
                let leader_addr = if reader.bool("leader address flag")? {
                    Some(reader.string("leader address")?)
                } else {
                    None
                };
                ClientReply::NotLeader {
                    req,
                    leader: (leader != 0).then_some(NodeId(leader)),
                    leader_addr,
                }
            }
            REPLY_STATUS => ClientReply::Status {
                req,
                json: reader.string("status json")?,
            },
            REPLY_OK => ClientReply::Ok { req },
            REPLY_ERROR => ClientReply::Error {
                req,
                message: reader.string("error message")?,
            },
            tag => {
                return Err(CodecError::UnknownTag {
                    what: "client reply tag",
                    tag,
                })
            }
        };
        reader.finish("client reply")?;
        Ok(reply)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn any_bytes() -> impl Strategy<Value = Bytes> {
        proptest::collection::vec(any::<u8>(), 0..40).prop_map(Bytes::from)
    }

    fn any_addr() -> impl Strategy<Value = SocketAddr> {
        prop_oneof![
            (any::<[u8; 4]>(), any::<u16>())
                .prop_map(|(ip, port)| SocketAddr::new(std::net::Ipv4Addr::from(ip).into(), port)),
            (any::<[u8; 16]>(), any::<u16>())
                .prop_map(|(ip, port)| SocketAddr::new(std::net::Ipv6Addr::from(ip).into(), port)),
        ]
    }

    /// Changes as they can cross the wire (an add always names an address).
    fn any_change() -> impl Strategy<Value = MembershipChange> {
        prop_oneof![
            (any::<u64>(), any_addr(), proptest::option::of(any_addr())).prop_map(
                |(id, peer, client)| MembershipChange::AddLearner(
                    NodeId(id),
                    Some(MemberAddr {
                        peer_addr: peer,
                        client_addr: client
                    })
                )
            ),
            any::<u64>().prop_map(|id| MembershipChange::Promote(NodeId(id))),
            any::<u64>().prop_map(|id| MembershipChange::Remove(NodeId(id))),
        ]
    }

    fn any_request() -> impl Strategy<Value = ClientRequest> {
        prop_oneof![
            (any::<u64>(), any_change())
                .prop_map(|(req, change)| ClientRequest::ChangeMembership { req, change }),
            (any::<u64>(), any_bytes())
                .prop_map(|(req, command)| ClientRequest::Propose { req, command }),
            (any::<u64>(), proptest::collection::vec(any_bytes(), 0..5))
                .prop_map(|(req, commands)| ClientRequest::ProposeBatch { req, commands }),
            (any::<u64>(), any_bytes(), any::<bool>()).prop_map(|(req, query, linearizable)| {
                ClientRequest::Read {
                    req,
                    query,
                    linearizable,
                }
            }),
            any::<u64>().prop_map(|req| ClientRequest::Status { req }),
            (any::<u64>(), any::<u64>()).prop_map(|(req, to)| ClientRequest::TransferLeader {
                req,
                to: NodeId(to)
            }),
        ]
    }

    fn any_reply() -> impl Strategy<Value = ClientReply> {
        prop_oneof![
            (any::<u64>(), any::<u64>(), any_bytes()).prop_map(|(req, index, result)| {
                ClientReply::Applied {
                    req,
                    index: LogIndex(index),
                    result,
                }
            }),
            (
                any::<u64>(),
                any::<u64>(),
                proptest::collection::vec(any_bytes(), 0..5)
            )
                .prop_map(|(req, first, results)| ClientReply::AppliedBatch {
                    req,
                    first: LogIndex(first),
                    results,
                }),
            (any::<u64>(), any::<u64>(), any_bytes()).prop_map(|(req, index, result)| {
                ClientReply::ReadOk {
                    req,
                    index: LogIndex(index),
                    result,
                }
            }),
            (
                any::<u64>(),
                proptest::option::of(1u64..),
                proptest::option::of(".{0,20}")
            )
                .prop_map(|(req, leader, leader_addr)| ClientReply::NotLeader {
                    req,
                    leader: leader.map(NodeId),
                    leader_addr,
                }),
            (any::<u64>(), ".{0,30}").prop_map(|(req, json)| ClientReply::Status { req, json }),
            any::<u64>().prop_map(|req| ClientReply::Ok { req }),
            (any::<u64>(), ".{0,30}")
                .prop_map(|(req, message)| ClientReply::Error { req, message }),
        ]
    }

    #[test]
    fn hello_layout() {
        let mut out = Vec::new();
        ClientHello::new(0x0102).encode(&mut out);
        assert_eq!(out, [3, 0, 2, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(ClientHello::decode(&out).unwrap(), ClientHello::new(0x0102));
        assert!(ClientHello::decode(&out[..17]).is_err());
        let hello = ClientHello {
            user: Bytes::from_static(b"ro"),
            password: Bytes::from_static(b"pw"),
            ..ClientHello::new(1)
        };
        out.clear();
        hello.encode(&mut out);
        assert_eq!(&out[10..], [2, 0, 0, 0, b'r', b'o', 2, 0, 0, 0, b'p', b'w']);
        assert_eq!(ClientHello::decode(&out).unwrap(), hello);
        assert!(!format!("{hello:?}").contains("pw"), "{hello:?}");
        // A version-2 hello (no credentials) still decodes, so its version can be refused.
        let old = ClientHello::decode(&[2, 0, 2, 1, 0, 0, 0, 0, 0, 0]).unwrap();
        assert_eq!((old.version, old.cluster_id), (2, 0x0102));
    }

    #[test]
    fn propose_batch_layout() {
        let mut out = Vec::new();
        ClientRequest::ProposeBatch {
            req: 9,
            commands: vec![Bytes::from_static(b"ab"), Bytes::new()],
        }
        .encode(&mut out);
        assert_eq!(
            out,
            [5, 9, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 2, 0, 0, 0, b'a', b'b', 0, 0, 0, 0]
        );
        // A count larger than the items present is refused, without reserving for it.
        let mut lying = out[..9].to_vec();
        lying.extend_from_slice(&u32::MAX.to_le_bytes());
        let error = ClientRequest::decode(&lying).unwrap_err();
        assert!(
            error.to_string().contains("propose batch commands"),
            "{error}"
        );
    }

    #[test]
    fn change_membership_layout() {
        let encode = |change| {
            let mut out = Vec::new();
            ClientRequest::ChangeMembership { req: 7, change }.encode(&mut out);
            out
        };
        let head = [6, 7, 0, 0, 0, 0, 0, 0, 0];
        let add = MembershipChange::AddLearner(
            NodeId(4),
            Some(MemberAddr {
                peer_addr: "10.0.0.4:7004".parse().unwrap(),
                client_addr: Some("[::1]:6384".parse().unwrap()),
            }),
        );
        let out = encode(add);
        assert_eq!(&out[..9], head);
        assert_eq!(&out[9..18], [1, 4, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(&out[18..25], [4, 10, 0, 0, 4, 0x5c, 0x1b]);
        let mut loopback6 = [0u8; 16];
        loopback6[15] = 1;
        assert_eq!(out[25], 6);
        assert_eq!(&out[26..42], loopback6);
        assert_eq!(&out[42..], [0xf0, 0x18]);
        assert_eq!(
            ClientRequest::decode(&out).unwrap(),
            ClientRequest::ChangeMembership {
                req: 7,
                change: add
            }
        );
        // Without a client port: family 0, nothing after it.
        let no_client = MembershipChange::AddLearner(
            NodeId(4),
            Some(MemberAddr {
                peer_addr: "10.0.0.4:7004".parse().unwrap(),
                client_addr: None,
            }),
        );
        let out = encode(no_client);
        assert_eq!(&out[18..], [4, 10, 0, 0, 4, 0x5c, 0x1b, 0]);
        assert_eq!(
            encode(MembershipChange::Promote(NodeId(4)))[9..],
            [2, 4, 0, 0, 0, 0, 0, 0, 0]
        );
        assert_eq!(
            encode(MembershipChange::Remove(NodeId(1)))[9..],
            [3, 1, 0, 0, 0, 0, 0, 0, 0]
        );
    }

    #[test]
    fn bad_membership_changes_are_refused() {
        let refused = |bytes: &[u8], expected: &str| {
            let error = ClientRequest::decode(bytes).unwrap_err();
            assert!(
                error.to_string().contains(expected),
                "{error} lacks {expected:?}"
            );
        };
        let mut good = Vec::new();
        ClientRequest::ChangeMembership {
            req: 1,
            change: MembershipChange::AddLearner(
                NodeId(2),
                Some(MemberAddr {
                    peer_addr: "127.0.0.1:7002".parse().unwrap(),
                    client_addr: None,
                }),
            ),
        }
        .encode(&mut good);
        let mut kind = good.clone();
        kind[9] = 9;
        refused(&kind, "unknown membership change kind 9");
        let mut family = good.clone();
        family[18] = 5;
        refused(&family, "unknown address family 5");
        let mut client_family = good.clone();
        *client_family.last_mut().unwrap() = 7;
        refused(&client_family, "unknown address family 7");
        let mut trailing = good.clone();
        trailing.push(0);
        refused(&trailing, "1 bytes left over");
        // An add without an address encodes with peer family 0, which is refused.
        let mut bare = Vec::new();
        ClientRequest::ChangeMembership {
            req: 1,
            change: MembershipChange::AddLearner(NodeId(2), None),
        }
        .encode(&mut bare);
        assert_eq!(&bare[18..], [0, 0]);
        refused(&bare, "the peer address is required");
        // A promote carries nothing after the id.
        let mut promote = Vec::new();
        ClientRequest::ChangeMembership {
            req: 1,
            change: MembershipChange::Promote(NodeId(2)),
        }
        .encode(&mut promote);
        promote.push(4);
        refused(&promote, "left over");
        refused(&promote[..12], "membership change node id");
    }

    proptest! {
        #[test]
        fn requests_round_trip(request in any_request()) {
            let mut out = Vec::new();
            request.encode(&mut out);
            prop_assert_eq!(ClientRequest::decode(&out).unwrap(), request.clone());
            // Any strict prefix is refused.
            if !out.is_empty() {
                prop_assert!(ClientRequest::decode(&out[..out.len() - 1]).is_err());
            }
            out.push(0);
            prop_assert!(ClientRequest::decode(&out).is_err());
        }

        #[test]
        fn replies_round_trip(reply in any_reply()) {
            let mut out = Vec::new();
            reply.encode(&mut out);
            prop_assert_eq!(ClientReply::decode(&out).unwrap(), reply.clone());
            prop_assert!(ClientReply::decode(&out[..out.len() - 1]).is_err());
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = ClientHello::decode(&bytes);
            let _ = ClientRequest::decode(&bytes);
            let _ = ClientReply::decode(&bytes);
        }
    }
}
