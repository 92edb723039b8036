//! The peer protocol's messages: the handshake and the encoding of consensus messages (appends
//! carry each batch as its log record's wire head + payload, the bytes the leader's log holds).
//!
//! A consensus message body is `from u64, to u64, term u64, tag u8` and the tag's fields (layouts
//! in `docs/FORMATS.md`, "Wire protocol"). Guarantees of [`decode_message`]: it never panics and
//! never copies a payload; every batch it returns passed the record CRC check, holds exactly its
//! announced entries, and the batches of an append are consecutive from `prev_index + 1`.

use std::ops::Range;

use bytes::Bytes;

use super::auth::{Nonce, Proof, NONCE_BYTES, PROOF_BYTES};
use super::client_msg::BatchWireError;
use super::wire::{put_bool, put_bytes, put_u16, put_u32, put_u64, WireReader};
use super::CodecError;
use crate::batch::{Batch, BatchKind};
use crate::log::record::{
    batch_header, encode_wire_head, ChainFields, RECORD_MAGIC, RECORD_VERSION, WIRE_HEAD_BYTES,
};
use crate::raft::{Membership, Message, MessageBody, SnapshotMeta};
use crate::types::{LogIndex, NodeId, Term};

/// The peer protocol version this code speaks (sent in [`PeerHello`]). Version 2 added the
/// authentication flag and nonce to the hello, and the [`PeerProof`] frame.
pub const PEER_PROTOCOL_VERSION: u16 = 2;

/// Payloads up to this size are copied next to the message head; larger ones travel as their
/// own shared buffer (one more iovec, no copy).
const INLINE_PAYLOAD_BYTES_MAX: usize = 4096;

/// The first frame on a peer connection, sent by both ends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerHello {
    /// Peer protocol version.
    pub version: u16,
    /// The sender's cluster.
    pub cluster_id: u64,
    /// The sender.
    pub node_id: NodeId,
    /// The sender has a peer secret and will send a [`PeerProof`] (and requires one).
    pub authenticates: bool,
    /// Fresh random bytes the other end's proof must cover.
    pub nonce: Nonce,
}

impl PeerHello {
    /// A hello of this code's protocol version.
    pub fn new(cluster_id: u64, node_id: NodeId, authenticates: bool, nonce: Nonce) -> PeerHello {
        PeerHello {
            version: PEER_PROTOCOL_VERSION,
            cluster_id,
            node_id,
            authenticates,
            nonce,
        }
    }

    /// Appends the encoded hello (a frame body) to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        put_u16(out, self.version);
        put_u64(out, self.cluster_id);
        put_u64(out, self.node_id.get());
        put_bool(out, self.authenticates);
        out.extend_from_slice(&self.nonce);
    }

    /// The protocol version a hello body announces (its first two bytes), readable whatever the
    /// version's layout of the rest.
    pub fn version_of(body: &[u8]) -> Result<u16, CodecError> {
        let body = Bytes::copy_from_slice(body.get(..2).unwrap_or(body));
        WireReader::new(&body).u16("peer hello version")
    }

    /// Decodes a hello frame body of this code's layout.
    pub fn decode(body: &[u8]) -> Result<PeerHello, CodecError> {
        let body = Bytes::copy_from_slice(body);
        let mut reader = WireReader::new(&body);
        let hello = PeerHello {
            version: reader.u16("peer hello version")?,
            cluster_id: reader.u64("peer hello cluster id")?,
            node_id: NodeId(reader.u64("peer hello node id")?),
            authenticates: reader.bool("peer hello authenticates")?,
            nonce: reader
                .take(NONCE_BYTES, "peer hello nonce")?
                .try_into()
                .expect("took exactly a nonce"),
        };
        reader.finish("peer hello")?;
        Ok(hello)
    }
}

/// The second frame on an authenticated peer connection, sent by both ends once the other's
/// hello is accepted: the proof that the sender knows the secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerProof {
    /// HMAC-SHA256 over the handshake's transcript and the sender's role.
    pub proof: Proof,
}

impl PeerProof {
    /// Appends the encoded proof (a frame body) to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.proof);
    }

    /// Decodes a proof frame body.
    pub fn decode(body: &[u8]) -> Result<PeerProof, CodecError> {
        let body = Bytes::copy_from_slice(body);
        let mut reader = WireReader::new(&body);
        let proof = reader
            .take(PROOF_BYTES, "peer proof")?
            .try_into()
            .expect("took exactly a proof");
        reader.finish("peer proof")?;
        Ok(PeerProof { proof })
    }
}

const TAG_PRE_VOTE: u8 = 1;
const TAG_PRE_VOTE_RESPONSE: u8 = 2;
const TAG_VOTE: u8 = 3;
const TAG_VOTE_RESPONSE: u8 = 4;
const TAG_APPEND: u8 = 5;
const TAG_APPEND_RESPONSE: u8 = 6;
const TAG_HEARTBEAT: u8 = 7;
const TAG_HEARTBEAT_RESPONSE: u8 = 8;
const TAG_SNAPSHOT: u8 = 9;
const TAG_SNAPSHOT_RESPONSE: u8 = 10;
const TAG_TIMEOUT_NOW: u8 = 11;

/// One piece of an encoded message body, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum BodyPart {
    /// These bytes of the scratch buffer the message was encoded into.
    Inline(Range<usize>),
    /// A shared buffer (a batch payload or snapshot chunk), sent without copying.
    Shared(Bytes),
}

/// Appends parts to a scratch buffer and a part list, merging consecutive inline bytes.
struct PartsWriter<'a> {
    scratch: &'a mut Vec<u8>,
    parts: &'a mut Vec<BodyPart>,
    inline_start: usize,
}

impl PartsWriter<'_> {
    fn shared(&mut self, bytes: &Bytes) {
        if bytes.len() <= INLINE_PAYLOAD_BYTES_MAX {
            self.scratch.extend_from_slice(bytes);
            return;
        }
        self.close_inline();
        self.parts.push(BodyPart::Shared(bytes.clone()));
    }

    fn close_inline(&mut self) {
        if self.scratch.len() > self.inline_start {
            self.parts
                .push(BodyPart::Inline(self.inline_start..self.scratch.len()));
        }
        self.inline_start = self.scratch.len();
    }
}

/// Encodes `message` as a frame body: fixed fields are appended to `scratch`, and `parts` gets
/// the body in order as ranges of `scratch` and shared payloads (large payloads are not copied).
pub(crate) fn encode_message_parts(
    message: &Message,
    scratch: &mut Vec<u8>,
    parts: &mut Vec<BodyPart>,
) {
    let inline_start = scratch.len();
    let mut writer = PartsWriter {
        scratch,
        parts,
        inline_start,
    };
    let out = &mut *writer.scratch;
    put_u64(out, message.from.get());
    put_u64(out, message.to.get());
    put_u64(out, message.term.get());
    match &message.body {
        MessageBody::PreVote {
            last_index,
            last_term,
        } => {
            out.push(TAG_PRE_VOTE);
            put_u64(out, last_index.get());
            put_u64(out, last_term.get());
        }
        MessageBody::PreVoteResponse { granted } => {
            out.push(TAG_PRE_VOTE_RESPONSE);
            put_bool(out, *granted);
        }
        MessageBody::Vote {
            last_index,
            last_term,
            leadership_transfer,
        } => {
            out.push(TAG_VOTE);
            put_u64(out, last_index.get());
            put_u64(out, last_term.get());
            put_bool(out, *leadership_transfer);
        }
        MessageBody::VoteResponse { granted } => {
            out.push(TAG_VOTE_RESPONSE);
            put_bool(out, *granted);
        }
        MessageBody::Append {
            prev_index,
            prev_term,
            batches,
            commit,
        } => {
            out.push(TAG_APPEND);
            put_u64(out, prev_index.get());
            put_u64(out, prev_term.get());
            put_u64(out, commit.get());
            let count = u32::try_from(batches.len()).expect("batch count fits u32");
            put_u32(out, count);
            for batch in batches {
                let head = encode_wire_head(&batch_header(batch, ChainFields::default()));
                writer.scratch.extend_from_slice(&head);
                writer.shared(batch.payload());
            }
        }
        MessageBody::AppendResponse {
            success,
            index,
            hint_index,
            hint_term,
        } => {
            out.push(TAG_APPEND_RESPONSE);
            put_bool(out, *success);
            put_u64(out, index.get());
            put_u64(out, hint_index.get());
            put_u64(out, hint_term.get());
        }
        MessageBody::Heartbeat { commit, read_round } => {
            out.push(TAG_HEARTBEAT);
            put_u64(out, commit.get());
            put_u64(out, *read_round);
        }
        MessageBody::HeartbeatResponse { read_round } => {
            out.push(TAG_HEARTBEAT_RESPONSE);
            put_u64(out, *read_round);
        }
        MessageBody::Snapshot {
            meta,
            offset,
            data,
            done,
        } => {
            out.push(TAG_SNAPSHOT);
            put_u64(out, meta.index.get());
            put_u64(out, meta.term.get());
            put_bytes(out, &meta.membership.encode());
            put_u64(out, *offset);
            put_bool(out, *done);
            let len = u32::try_from(data.len()).expect("snapshot chunk fits u32");
            put_u32(out, len);
            writer.shared(data);
        }
        MessageBody::SnapshotResponse {
            index,
            next_offset,
            done,
        } => {
            out.push(TAG_SNAPSHOT_RESPONSE);
            put_u64(out, index.get());
            put_u64(out, *next_offset);
            put_bool(out, *done);
        }
        MessageBody::TimeoutNow => out.push(TAG_TIMEOUT_NOW),
    }
    writer.close_inline();
}

/// Appends `message`, fully encoded as a frame body, to `out` (payloads copied; for tools and
/// tests, the transport uses the zero-copy parts).
pub fn encode_message(message: &Message, out: &mut Vec<u8>) {
    let mut scratch = Vec::new();
    let mut parts = Vec::new();
    encode_message_parts(message, &mut scratch, &mut parts);
    for part in &parts {
        match part {
            BodyPart::Inline(range) => out.extend_from_slice(&scratch[range.clone()]),
            BodyPart::Shared(bytes) => out.extend_from_slice(bytes),
        }
    }
}

/// Decodes a consensus message frame body. Payloads and snapshot data are slices of `body`.
pub fn decode_message(body: &Bytes) -> Result<Message, CodecError> {
    let mut reader = WireReader::new(body);
    let from = NodeId(reader.u64("message from")?);
    let to = NodeId(reader.u64("message to")?);
    let term = Term(reader.u64("message term")?);
    let message_body = match reader.u8("message tag")? {
        TAG_PRE_VOTE => MessageBody::PreVote {
            last_index: LogIndex(reader.u64("pre-vote last index")?),
            last_term: Term(reader.u64("pre-vote last term")?),
        },
        TAG_PRE_VOTE_RESPONSE => MessageBody::PreVoteResponse {
            granted: reader.bool("pre-vote granted")?,
        },
        TAG_VOTE => MessageBody::Vote {
            last_index: LogIndex(reader.u64("vote last index")?),
            last_term: Term(reader.u64("vote last term")?),
            leadership_transfer: reader.bool("vote transfer flag")?,
        },
        TAG_VOTE_RESPONSE => MessageBody::VoteResponse {
            granted: reader.bool("vote granted")?,
        },
        TAG_APPEND => decode_append(&mut reader)?,
        TAG_APPEND_RESPONSE => MessageBody::AppendResponse {
            success: reader.bool("append response success")?,
            index: LogIndex(reader.u64("append response index")?),
            hint_index: LogIndex(reader.u64("append response hint index")?),
            hint_term: Term(reader.u64("append response hint term")?),
        },
        TAG_HEARTBEAT => MessageBody::Heartbeat {
            commit: LogIndex(reader.u64("heartbeat commit")?),
            read_round: reader.u64("heartbeat read round")?,
        },
        TAG_HEARTBEAT_RESPONSE => MessageBody::HeartbeatResponse {
            read_round: reader.u64("heartbeat response read round")?,
        },
        TAG_SNAPSHOT => {
            let index = LogIndex(reader.u64("snapshot index")?);
            let term = Term(reader.u64("snapshot term")?);
            let membership_bytes = reader.bytes("snapshot membership")?;
            let membership =
                Membership::decode(&membership_bytes).map_err(|error| CodecError::Membership {
                    what: "snapshot membership",
                    error,
                })?;
            MessageBody::Snapshot {
                meta: SnapshotMeta {
                    index,
                    term,
                    membership,
                },
                offset: reader.u64("snapshot offset")?,
                done: reader.bool("snapshot done flag")?,
                data: reader.bytes("snapshot data")?,
            }
        }
        TAG_SNAPSHOT_RESPONSE => MessageBody::SnapshotResponse {
            index: LogIndex(reader.u64("snapshot response index")?),
            next_offset: reader.u64("snapshot response next offset")?,
            done: reader.bool("snapshot response done flag")?,
        },
        TAG_TIMEOUT_NOW => MessageBody::TimeoutNow,
        tag => {
            return Err(CodecError::UnknownTag {
                what: "message tag",
                tag,
            })
        }
    };
    reader.finish("consensus message")?;
    Ok(Message {
        from,
        to,
        term,
        body: message_body,
    })
}

fn decode_append(reader: &mut WireReader<'_>) -> Result<MessageBody, CodecError> {
    let prev_index = LogIndex(reader.u64("append prev index")?);
    let prev_term = Term(reader.u64("append prev term")?);
    let commit = LogIndex(reader.u64("append commit")?);
    let count = reader.u32("append batch count")?;
    // Every batch takes at least a wire head plus one entry prefix, so a count that cannot fit
    // is refused before it sizes the vector.
    let mut batches = Vec::with_capacity((count as usize).min(1024));
    // `None` after a batch ending at index u64::MAX: no batch may follow it.
    let mut next_index = prev_index.get().checked_add(1);
    for n in 0..count {
        let batch = decode_batch(reader, n)?;
        let first_index = batch.first_index().get();
        if Some(first_index) != next_index {
            return Err(CodecError::AppendGap {
                n,
                first_index,
                expected: next_index.unwrap_or(0),
            });
        }
        next_index = batch.last_index().get().checked_add(1);
        batches.push(batch);
    }
    Ok(MessageBody::Append {
        prev_index,
        prev_term,
        batches,
        commit,
    })
}

/// Decodes and verifies one batch: a record's wire head (magic, version, kind, shape) followed
/// by its payload, whose record CRC must match; a `Membership` batch must also hold exactly
/// one entry that decodes as a membership (the consensus core relies on it).
fn decode_batch(reader: &mut WireReader<'_>, n: u32) -> Result<Batch, CodecError> {
    let head = reader.take(WIRE_HEAD_BYTES, "batch wire head")?;
    let u32_at = |at: usize| u32::from_le_bytes(head[at..at + 4].try_into().expect("4 bytes"));
    let u64_at = |at: usize| u64::from_le_bytes(head[at..at + 8].try_into().expect("8 bytes"));
    let bad = |error: BatchWireError| CodecError::Batch { n, error };
    if u32_at(0) != RECORD_MAGIC {
        return Err(bad(BatchWireError::Magic(u32_at(0))));
    }
    if head[4] != RECORD_VERSION {
        return Err(bad(BatchWireError::Version(head[4])));
    }
    let kind = BatchKind::from_u8(head[5]).ok_or(bad(BatchWireError::Kind(head[5])))?;
    if head[6] != 0 || head[7] != 0 {
        return Err(bad(BatchWireError::Reserved));
    }
    let term = Term(u64_at(8));
    let first_index = u64_at(16);
    let entry_count = u32_at(24);
    let payload_bytes = u32_at(28) as usize;
    let stored = u32_at(32);
    if first_index == 0 || first_index.checked_add(u64::from(entry_count)).is_none() {
        return Err(bad(BatchWireError::IndexRange {
            first_index,
            entry_count,
        }));
    }
    let payload = reader.take_shared(payload_bytes, "batch payload")?;
    let batch = Batch::new(term, LogIndex(first_index), kind, entry_count, payload)
        .map_err(|error| bad(BatchWireError::Payload(error)))?;
    let computed = batch_header(&batch, ChainFields::default()).crc;
    if computed != stored {
        return Err(bad(BatchWireError::Checksum { stored, computed }));
    }
    if kind == BatchKind::Membership {
        Membership::of_batch(&batch).map_err(|error| CodecError::Membership {
            what: "membership batch",
            error,
        })?;
    }
    Ok(batch)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::BatchBuilder;
    use proptest::prelude::*;

    fn batches_from(prev: u64, term: u64, sizes: &[(u8, usize)]) -> Vec<Batch> {
        let mut next = prev + 1;
        sizes
            .iter()
            .map(|&(fill, entries)| {
                let mut builder = BatchBuilder::with_capacity(entries * 20);
                for i in 0..entries {
                    builder.push(&vec![fill; i % 17]);
                }
                let batch = builder.finish(Term(term), LogIndex(next), BatchKind::Normal);
                next = batch.last_index().get() + 1;
                batch
            })
            .collect()
    }

    fn any_body() -> impl Strategy<Value = MessageBody> {
        prop_oneof![
            (any::<u64>(), any::<u64>()).prop_map(|(i, t)| MessageBody::PreVote {
                last_index: LogIndex(i),
                last_term: Term(t)
            }),
            any::<bool>().prop_map(|granted| MessageBody::PreVoteResponse { granted }),
            (any::<u64>(), any::<u64>(), any::<bool>()).prop_map(|(i, t, x)| MessageBody::Vote {
                last_index: LogIndex(i),
                last_term: Term(t),
                leadership_transfer: x
            }),
            any::<bool>().prop_map(|granted| MessageBody::VoteResponse { granted }),
            (
                0u64..1000,
                any::<u64>(),
                any::<u64>(),
                proptest::collection::vec((any::<u8>(), 1usize..300), 0..4)
            )
                .prop_map(|(prev, term, commit, sizes)| MessageBody::Append {
                    prev_index: LogIndex(prev),
                    prev_term: Term(term),
                    batches: batches_from(prev, term, &sizes),
                    commit: LogIndex(commit),
                }),
            (any::<bool>(), any::<u64>(), any::<u64>(), any::<u64>()).prop_map(
                |(success, index, hint_index, hint_term)| MessageBody::AppendResponse {
                    success,
                    index: LogIndex(index),
                    hint_index: LogIndex(hint_index),
                    hint_term: Term(hint_term),
                }
            ),
            (any::<u64>(), any::<u64>()).prop_map(|(c, r)| MessageBody::Heartbeat {
                commit: LogIndex(c),
                read_round: r
            }),
            any::<u64>().prop_map(|read_round| MessageBody::HeartbeatResponse { read_round }),
            (
                any::<u64>(),
                any::<u64>(),
                proptest::collection::btree_set(1u64..10, 1..4),
                any::<u64>(),
                proptest::collection::vec(any::<u8>(), 0..6000),
                any::<bool>()
            )
                .prop_map(|(index, term, voters, offset, data, done)| {
                    MessageBody::Snapshot {
                        meta: SnapshotMeta {
                            index: LogIndex(index),
                            term: Term(term),
                            membership: Membership::with_voters(voters.into_iter().map(NodeId)),
                        },
                        offset,
                        data: Bytes::from(data),
                        done,
                    }
                }),
            (any::<u64>(), any::<u64>(), any::<bool>()).prop_map(|(i, o, done)| {
                MessageBody::SnapshotResponse {
                    index: LogIndex(i),
                    next_offset: o,
                    done,
                }
            }),
            Just(MessageBody::TimeoutNow),
        ]
    }

    fn any_message() -> impl Strategy<Value = Message> {
        (any::<u64>(), any::<u64>(), any::<u64>(), any_body()).prop_map(|(from, to, term, body)| {
            Message {
                from: NodeId(from),
                to: NodeId(to),
                term: Term(term),
                body,
            }
        })
    }

    fn encoded(message: &Message) -> Bytes {
        let mut out = Vec::new();
        encode_message(message, &mut out);
        Bytes::from(out)
    }

    #[test]
    fn hello_layout() {
        let mut out = Vec::new();
        let hello = PeerHello::new(7, NodeId(3), true, [5; NONCE_BYTES]);
        hello.encode(&mut out);
        assert_eq!(out.len(), 51);
        assert_eq!(&out[..2], &[2, 0]);
        assert_eq!(out[18], 1);
        assert_eq!(&out[19..], &[5; NONCE_BYTES]);
        assert_eq!(PeerHello::decode(&out).unwrap(), hello);
        assert_eq!(PeerHello::version_of(&out).unwrap(), 2);
        assert!(PeerHello::decode(&out[..50]).is_err());
        // A version 1 hello (18 bytes) still shows its version, so it is refused by version.
        assert_eq!(PeerHello::version_of(&[1, 0, 7, 0]).unwrap(), 1);
        assert!(PeerHello::version_of(&[1]).is_err());
    }

    #[test]
    fn proof_layout() {
        let mut out = Vec::new();
        let proof = PeerProof {
            proof: [8; PROOF_BYTES],
        };
        proof.encode(&mut out);
        assert_eq!(out, vec![8; PROOF_BYTES]);
        assert_eq!(PeerProof::decode(&out).unwrap(), proof);
        assert!(PeerProof::decode(&out[..PROOF_BYTES - 1]).is_err());
        out.push(0);
        assert!(PeerProof::decode(&out).is_err());
    }

    #[test]
    fn large_payloads_are_shared_not_copied() {
        let batches = batches_from(9, 2, &[(1, 3), (2, 2000)]);
        let message = Message {
            from: NodeId(1),
            to: NodeId(2),
            term: Term(2),
            body: MessageBody::Append {
                prev_index: LogIndex(9),
                prev_term: Term(2),
                batches: batches.clone(),
                commit: LogIndex(5),
            },
        };
        let mut scratch = Vec::new();
        let mut parts = Vec::new();
        encode_message_parts(&message, &mut scratch, &mut parts);
        assert!(batches[1].payload().len() > INLINE_PAYLOAD_BYTES_MAX);
        assert_eq!(parts.len(), 2, "{parts:?}");
        assert_eq!(parts[1], BodyPart::Shared(batches[1].payload().clone()));

        // The decoded payload points into the frame body.
        let body = encoded(&message);
        let decoded = decode_message(&body).unwrap();
        let MessageBody::Append { batches: got, .. } = &decoded.body else {
            panic!("{decoded:?}")
        };
        let range = body.as_ptr_range();
        assert!(range.contains(&got[1].payload().as_ptr()));
        assert_eq!(decoded, message);
    }

    #[test]
    fn refuses_corrupt_payload_and_gaps() {
        let message = Message {
            from: NodeId(1),
            to: NodeId(2),
            term: Term(4),
            body: MessageBody::Append {
                prev_index: LogIndex(0),
                prev_term: Term(0),
                batches: batches_from(0, 4, &[(5, 10)]),
                commit: LogIndex(0),
            },
        };
        let body = encoded(&message);
        let mut corrupt = body.to_vec();
        *corrupt.last_mut().unwrap() ^= 0x40;
        let err = decode_message(&Bytes::from(corrupt)).unwrap_err();
        assert!(
            matches!(
                err,
                CodecError::Batch {
                    n: 0,
                    error: BatchWireError::Checksum { .. }
                }
            ),
            "{err}"
        );

        // prev_index 3 does not precede a batch starting at 1.
        let mut gap = body.to_vec();
        gap[25..33].copy_from_slice(&3u64.to_le_bytes());
        let err = decode_message(&Bytes::from(gap)).unwrap_err();
        assert_eq!(
            err,
            CodecError::AppendGap {
                n: 0,
                first_index: 1,
                expected: 4
            }
        );
    }

    /// An append from node 1 to node 2 in term 1 carrying `batch` after index 0, encoded.
    fn append_of(batch: Batch) -> Bytes {
        encoded(&Message {
            from: NodeId(1),
            to: NodeId(2),
            term: Term(1),
            body: MessageBody::Append {
                prev_index: LogIndex(0),
                prev_term: Term(0),
                batches: vec![batch],
                commit: LogIndex(0),
            },
        })
    }

    #[test]
    fn a_membership_batch_that_does_not_decode_is_refused_and_the_follower_keeps_serving() {
        let restored = crate::raft::Restored {
            initial_membership: Membership::with_voters([1, 2, 3].map(NodeId)),
            ..crate::raft::Restored::default()
        };
        let mut follower = crate::raft::Raft::new(crate::raft::Config::new(NodeId(2)), restored)
            .expect("valid config");
        let garbage = Batch::single(Term(1), LogIndex(1), BatchKind::Membership, &[9, 9, 9]);
        let mut two_entries = BatchBuilder::default();
        let valid = Membership::with_voters([1, 2].map(NodeId)).encode();
        two_entries.push(&valid);
        two_entries.push(&valid);
        let refused = [
            garbage,
            Batch::single(Term(1), LogIndex(1), BatchKind::Membership, &[]),
            two_entries.finish(Term(1), LogIndex(1), BatchKind::Membership),
        ];
        for batch in refused {
            // The checksum is valid: only the membership inside is not.
            let body = append_of(batch.clone());
            match decode_message(&body) {
                Err(CodecError::Membership {
                    what: "membership batch",
                    ..
                }) => {}
                Ok(message) => {
                    follower.step(message);
                    panic!("{batch:?} was accepted");
                }
                Err(other) => panic!("{batch:?} refused for another reason: {other}"),
            }
        }
        // The follower still takes a well-formed membership batch from its leader.
        let good = Batch::single(Term(1), LogIndex(1), BatchKind::Membership, &valid);
        follower.step(decode_message(&append_of(good)).expect("a valid append"));
        assert_eq!(
            follower.membership(),
            &Membership::with_voters([1, 2].map(NodeId))
        );
    }

    proptest! {
        #[test]
        fn messages_round_trip(message in any_message()) {
            let body = encoded(&message);
            prop_assert_eq!(decode_message(&body).unwrap(), message);
            prop_assert!(decode_message(&body.slice(..body.len() - 1)).is_err());
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = decode_message(&Bytes::from(bytes.clone()));
            let _ = PeerHello::decode(&bytes);
            let _ = PeerHello::version_of(&bytes);
            let _ = PeerProof::decode(&bytes);
        }

        #[test]
        fn flipped_bytes_never_panic(
            message in any_message(),
            at in any::<usize>(),
            bit in 0u8..8,
        ) {
            let mut raw = encoded(&message).to_vec();
            let at = at % raw.len();
            raw[at] ^= 1 << bit;
            let _ = decode_message(&Bytes::from(raw));
        }
    }
}
