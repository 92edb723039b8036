//! Nothing a peer sends can panic a node: consensus message frames, valid or altered byte by
//! byte, go through the decoder and, when it accepts them, through the consensus core's `step`
//! (as the network stage hands them over: from the connection's peer, to this node), into a
//! follower, a candidate and a leader. Appends carry normal, no-op and membership batches (some
//! of them with a membership that does not decode); snapshots arrive in chunks.

use bytes::Bytes;
use lockstep::batch::{Batch, BatchBuilder, BatchKind};
use lockstep::net::{decode_message, encode_message};
use lockstep::raft::{
    Config, Membership, Message, MessageBody, Raft, Restored, Role, SnapshotMeta,
};
use lockstep::types::{LogIndex, NodeId, Term};
use proptest::prelude::*;

fn voters(ids: &[u64]) -> Membership {
    Membership::with_voters(ids.iter().map(|&id| NodeId(id)))
}

fn core(id: u64) -> Raft {
    let mut config = Config::new(NodeId(id));
    config.seed = 11;
    let restored = Restored {
        initial_membership: voters(&[1, 2, 3]),
        ..Restored::default()
    };
    Raft::new(config, restored).expect("valid config")
}

/// Takes everything `raft` has ready, makes its writes durable at once and applies what
/// commits, as the runtime does; returns the messages it sends.
fn drain(raft: &mut Raft) -> Vec<Message> {
    let mut sent = Vec::new();
    while raft.has_ready() {
        let ready = raft.ready();
        sent.extend(ready.messages);
        if let Some(write) = ready.write {
            sent.extend(write.after_durable);
            raft.on_durable(write.id);
        }
        if let Some(last) = ready.committed.last() {
            raft.on_applied(last.last_index());
        }
    }
    raft.invariants();
    sent
}

/// Node 1 as leader of {1, 2, 3} with a few entries proposed, elected by node 2's votes.
fn leader() -> Raft {
    let mut raft = core(1);
    let mut sent = Vec::new();
    for _ in 0..1000 {
        if sent.is_empty() {
            raft.tick();
            sent = drain(&mut raft);
        }
        let requests = std::mem::take(&mut sent);
        for request in requests.into_iter().filter(|m| m.to == NodeId(2)) {
            let body = match request.body {
                MessageBody::PreVote { .. } => MessageBody::PreVoteResponse { granted: true },
                MessageBody::Vote { .. } => MessageBody::VoteResponse { granted: true },
                _ => continue,
            };
            raft.step(Message {
                from: NodeId(2),
                to: NodeId(1),
                term: request.term,
                body,
            });
            sent.extend(drain(&mut raft));
        }
        if raft.status().role == Role::Leader {
            // Indexes 1 (the no-op) to 3, all of term 1 as in the log the peers agree with.
            for command in [&b"a"[..], b""] {
                raft.propose(command).expect("the leader takes proposals");
            }
            drain(&mut raft);
            return raft;
        }
    }
    panic!("node 1 was not elected")
}

/// Node 3 campaigning in term 1 (its pre-vote granted by node 1).
fn candidate() -> Raft {
    let mut raft = core(3);
    for _ in 0..1000 {
        raft.tick();
        let sent = drain(&mut raft);
        if let Some(pre_vote) = sent
            .iter()
            .find(|m| matches!(m.body, MessageBody::PreVote { .. }))
        {
            raft.step(Message {
                from: NodeId(1),
                to: NodeId(3),
                term: pre_vote.term,
                body: MessageBody::PreVoteResponse { granted: true },
            });
            drain(&mut raft);
        }
        if raft.status().role == Role::Candidate {
            return raft;
        }
    }
    panic!("node 3 never campaigned")
}

/// One batch of `kind` at `first` in `term`; `garbage` gives a membership batch whose entry is
/// not a membership (its checksum is still valid).
fn batch(term: u64, first: u64, kind: BatchKind, entries: usize, garbage: bool) -> Batch {
    let mut builder = BatchBuilder::default();
    match kind {
        BatchKind::Normal => (0..entries.max(1)).for_each(|i| builder.push(&[i as u8; 3])),
        BatchKind::Noop => builder.push(&[]),
        BatchKind::Membership if garbage => builder.push(&[2, 0xff, 0, 0, 0]),
        BatchKind::Membership => builder.push(&voters(&[1, 2, 3]).encode()),
    }
    builder.finish(Term(term), LogIndex(first), kind)
}

fn any_kind() -> impl Strategy<Value = BatchKind> {
    prop_oneof![
        Just(BatchKind::Normal),
        Just(BatchKind::Noop),
        Just(BatchKind::Membership)
    ]
}

/// The term of `index` in the one log every generated append agrees with (1, 1, 1, 2, 2, 2,
/// ...): peers that follow the protocol never send conflicting entries for a committed index.
fn true_term(index: u64) -> u64 {
    index.saturating_sub(1) / 3 + 1
}

fn any_batches(prev: u64) -> impl Strategy<Value = Vec<Batch>> {
    proptest::collection::vec((any_kind(), 1usize..4, any::<bool>()), 0..4).prop_map(
        move |shapes| {
            let mut next = prev + 1;
            shapes
                .into_iter()
                .map(|(kind, entries, garbage)| {
                    let term = true_term(next);
                    // A batch holds one term: it ends at the last index of `term`.
                    let room = (term * 3 + 1 - next) as usize;
                    let batch = batch(term, next, kind, entries.min(room), garbage);
                    next = batch.last_index().get() + 1;
                    batch
                })
                .collect()
        },
    )
}

fn any_body() -> impl Strategy<Value = MessageBody> {
    let index = || (0u64..8).prop_map(LogIndex);
    let term = || (0u64..4).prop_map(Term);
    prop_oneof![
        (index(), term()).prop_map(|(last_index, last_term)| MessageBody::PreVote {
            last_index,
            last_term
        }),
        any::<bool>().prop_map(|granted| MessageBody::PreVoteResponse { granted }),
        (index(), term(), any::<bool>()).prop_map(|(last_index, last_term, transfer)| {
            MessageBody::Vote {
                last_index,
                last_term,
                leadership_transfer: transfer,
            }
        }),
        any::<bool>().prop_map(|granted| MessageBody::VoteResponse { granted }),
        (0u64..6, index())
            .prop_flat_map(|(prev, commit)| (Just(prev), any_batches(prev), Just(commit)))
            .prop_map(|(prev, batches, commit)| MessageBody::Append {
                prev_index: LogIndex(prev),
                prev_term: Term(if prev == 0 { 0 } else { true_term(prev) }),
                batches,
                commit,
            }),
        (any::<bool>(), index(), index(), term()).prop_map(
            |(success, index, hint_index, hint_term)| MessageBody::AppendResponse {
                success,
                index,
                hint_index,
                hint_term,
            }
        ),
        (index(), 0u64..4)
            .prop_map(|(commit, read_round)| MessageBody::Heartbeat { commit, read_round }),
        (0u64..4).prop_map(|read_round| MessageBody::HeartbeatResponse { read_round }),
        (
            index(),
            term(),
            proptest::collection::btree_set(1u64..5, 0..4),
            0u64..8,
            proptest::collection::vec(any::<u8>(), 0..8),
            any::<bool>()
        )
            .prop_map(|(index, _, ids, offset, data, done)| {
                MessageBody::Snapshot {
                    meta: SnapshotMeta {
                        index,
                        term: Term(true_term(index.get())),
                        membership: voters(&ids.into_iter().collect::<Vec<_>>()),
                    },
                    offset,
                    data: Bytes::from(data),
                    done,
                }
            }),
        (index(), 0u64..8, any::<bool>()).prop_map(|(index, next_offset, done)| {
            MessageBody::SnapshotResponse {
                index,
                next_offset,
                done,
            }
        }),
        Just(MessageBody::TimeoutNow),
    ]
}

/// A frame body from peer `from` to `to`, with at most one byte after the addresses altered.
fn any_frame() -> impl Strategy<Value = (u64, Vec<u8>)> {
    (
        1u64..5,
        0u64..5,
        any_body(),
        proptest::option::of((any::<usize>(), 1u8..=255)),
    )
        .prop_map(|(from, term, body, flip)| {
            let message = Message {
                from: NodeId(from),
                to: NodeId(0),
                term: Term(term),
                body,
            };
            let mut out = Vec::new();
            encode_message(&message, &mut out);
            if let Some((at, mask)) = flip {
                // Bytes 0..16 are the addresses, which the connection checks.
                let at = 16 + at % (out.len() - 16);
                out[at] ^= mask;
            }
            (from, out)
        })
}

/// Steps the frames the decoder accepts into `raft` as the network stage would: addressed to
/// it, from the connection's peer. Leader messages may come from any peer, so a leader meets a
/// second leader of its own term and acknowledgements past its last index (a faulty peer's
/// messages, refused and counted). Returns how many were stepped.
fn feed(raft: &mut Raft, frames: &[(u64, Vec<u8>)]) -> usize {
    let id = raft.status().id;
    let mut stepped = 0;
    for (from, frame) in frames {
        if *from == id.get() {
            continue;
        }
        let mut body = frame.clone();
        body[8..16].copy_from_slice(&id.get().to_le_bytes());
        let Ok(message) = decode_message(&Bytes::from(body)) else {
            continue;
        };
        assert_eq!((message.from, message.to), (NodeId(*from), id));
        if let MessageBody::Append { batches, .. } = &message.body {
            for batch in batches.iter().filter(|b| b.kind() == BatchKind::Membership) {
                assert!(Membership::of_batch(batch).is_ok(), "accepted {batch:?}");
            }
        }
        raft.step(message);
        raft.tick();
        drain(raft);
        stepped += 1;
    }
    stepped
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn no_peer_frame_panics_a_follower_a_candidate_or_a_leader(
        frames in proptest::collection::vec(any_frame(), 1..12),
    ) {
        let mut follower = core(2);
        let mut candidate = candidate();
        let mut leader = leader();
        feed(&mut follower, &frames);
        feed(&mut candidate, &frames);
        feed(&mut leader, &frames);
    }
}

/// A second leader of the leader's own term, and acknowledgements past its last index, come
/// only from a faulty peer: the leader refuses them, counts them and keeps leading.
#[test]
fn a_leader_refuses_a_faulty_peers_leader_messages_and_overreaching_acks_and_keeps_leading() {
    let mut raft = leader();
    let status = raft.status();
    let (term, last) = (status.term, status.last_index);
    let from_peer = |body| Message {
        from: NodeId(3),
        to: NodeId(1),
        term,
        body,
    };
    raft.step(from_peer(MessageBody::Heartbeat {
        commit: LogIndex(0),
        read_round: 0,
    }));
    raft.step(from_peer(MessageBody::AppendResponse {
        success: true,
        index: last.next(),
        hint_index: LogIndex(0),
        hint_term: Term(0),
    }));
    raft.step(from_peer(MessageBody::SnapshotResponse {
        index: last.next(),
        next_offset: 0,
        done: true,
    }));
    drain(&mut raft);
    let status = raft.status();
    assert_eq!(status.role, Role::Leader, "{status:?}");
    assert_eq!(status.term, term);
    assert_eq!(status.stats.protocol_violations_refused, 3, "{status:?}");
}
