//! Cluster membership: which nodes vote and which only replicate (learners), its byte encoding
//! inside a `BatchKind::Membership` batch, and the one-at-a-time changes a leader may propose.
//!
//! Guarantees: a decoded membership has no node id 0 and no node both voter and learner; a
//! change is applied to a membership only if it is valid for it ([`Membership::apply`]).
//!
//! # Encoding (little-endian)
//! `u8 version (1)`, `u32 voter count`, voter ids as `u64`, `u32 learner count`, learner ids as
//! `u64`, ids ascending. Voters {1, 2} and learner {3} encode to 1 + 4 + 16 + 4 + 8 = 33 bytes.

use std::collections::BTreeSet;
use std::fmt;

use bytes::{BufMut, Bytes, BytesMut};

use crate::types::NodeId;

const VERSION: u8 = 1;

/// The voters and learners of a cluster.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Membership {
    /// Nodes that vote and count for commit and quorum.
    pub voters: BTreeSet<NodeId>,
    /// Nodes that receive the log but neither vote nor count.
    pub learners: BTreeSet<NodeId>,
}

/// One membership change; a leader accepts one at a time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MembershipChange {
    /// Start replicating to a new non-voting node.
    AddLearner(NodeId),
    /// Make a caught-up learner a voter.
    Promote(NodeId),
    /// Remove a voter or a learner.
    Remove(NodeId),
}

/// Why bytes are not a membership, or why a change does not apply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MembershipError {
    /// The bytes end early.
    Truncated,
    /// Unknown encoding version.
    Version(u8),
    /// Bytes left over after the learners.
    TrailingBytes(usize),
    /// Node id 0 appears.
    ZeroNodeId,
    /// Ids are not strictly ascending.
    NotSorted,
    /// A node is both voter and learner.
    VoterAndLearner(NodeId),
    /// The change names a node that is already a member.
    AlreadyMember(NodeId),
    /// The change needs a learner and the node is not one.
    NotALearner(NodeId),
    /// The change names a node that is not a member.
    NotAMember(NodeId),
    /// The change would leave no voter.
    LastVoter(NodeId),
}

impl fmt::Display for MembershipError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MembershipError::Truncated => write!(f, "membership bytes end early"),
            MembershipError::Version(v) => write!(f, "unknown membership encoding version {v}"),
            MembershipError::TrailingBytes(n) => write!(f, "{n} bytes after the membership"),
            MembershipError::ZeroNodeId => write!(f, "node id 0 in a membership"),
            MembershipError::NotSorted => write!(f, "membership ids are not ascending"),
            MembershipError::VoterAndLearner(id) => write!(f, "{id} is both voter and learner"),
            MembershipError::AlreadyMember(id) => write!(f, "{id} is already a member"),
            MembershipError::NotALearner(id) => write!(f, "{id} is not a learner"),
            MembershipError::NotAMember(id) => write!(f, "{id} is not a member"),
            MembershipError::LastVoter(id) => write!(f, "removing {id} would leave no voter"),
        }
    }
}

impl std::error::Error for MembershipError {}

impl Membership {
    /// A membership of the given voters and no learners.
    pub fn with_voters(voters: impl IntoIterator<Item = NodeId>) -> Membership {
        Membership {
            voters: voters.into_iter().collect(),
            learners: BTreeSet::new(),
        }
    }

    /// Whether `id` votes.
    #[inline]
    pub fn is_voter(&self, id: NodeId) -> bool {
        self.voters.contains(&id)
    }

    /// Whether `id` is a voter or a learner.
    #[inline]
    pub fn contains(&self, id: NodeId) -> bool {
        self.voters.contains(&id) || self.learners.contains(&id)
    }

    /// Votes needed for a majority of the voters.
    #[inline]
    pub fn quorum(&self) -> usize {
        self.voters.len() / 2 + 1
    }

    /// Every member, voters first.
    pub fn members(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.voters.iter().chain(self.learners.iter()).copied()
    }

    /// The membership after `change`, or why it does not apply.
    pub fn apply(&self, change: MembershipChange) -> Result<Membership, MembershipError> {
        let mut next = self.clone();
        match change {
            MembershipChange::AddLearner(id) => {
                if id == NodeId::ZERO {
                    return Err(MembershipError::ZeroNodeId);
                }
                if self.contains(id) {
                    return Err(MembershipError::AlreadyMember(id));
                }
                next.learners.insert(id);
            }
            MembershipChange::Promote(id) => {
                if !next.learners.remove(&id) {
                    return Err(MembershipError::NotALearner(id));
                }
                next.voters.insert(id);
            }
            MembershipChange::Remove(id) => {
                if next.voters.remove(&id) {
                    if next.voters.is_empty() {
                        return Err(MembershipError::LastVoter(id));
                    }
                } else if !next.learners.remove(&id) {
                    return Err(MembershipError::NotAMember(id));
                }
            }
        }
        Ok(next)
    }

    /// The encoding described in the module docs.
    pub fn encode(&self) -> Bytes {
        let mut out =
            BytesMut::with_capacity(1 + 8 + 8 * (self.voters.len() + self.learners.len()));
        out.put_u8(VERSION);
        for set in [&self.voters, &self.learners] {
            out.put_u32_le(set.len() as u32);
            for id in set {
                out.put_u64_le(id.get());
            }
        }
        out.freeze()
    }

    /// Decodes and validates bytes made by [`Membership::encode`].
    pub fn decode(bytes: &[u8]) -> Result<Membership, MembershipError> {
        let mut rest = bytes;
        let version = *rest.first().ok_or(MembershipError::Truncated)?;
        if version != VERSION {
            return Err(MembershipError::Version(version));
        }
        rest = &rest[1..];
        let voters = decode_set(&mut rest)?;
        let learners = decode_set(&mut rest)?;
        if !rest.is_empty() {
            return Err(MembershipError::TrailingBytes(rest.len()));
        }
        if let Some(both) = voters.intersection(&learners).next() {
            return Err(MembershipError::VoterAndLearner(*both));
        }
        Ok(Membership { voters, learners })
    }
}

fn take<const N: usize>(rest: &mut &[u8]) -> Result<[u8; N], MembershipError> {
    if rest.len() < N {
        return Err(MembershipError::Truncated);
    }
    let (head, tail) = rest.split_at(N);
    *rest = tail;
    Ok(head.try_into().expect("split_at gives N bytes"))
}

fn decode_set(rest: &mut &[u8]) -> Result<BTreeSet<NodeId>, MembershipError> {
    let count = u32::from_le_bytes(take::<4>(rest)?) as usize;
    if rest.len() / 8 < count {
        return Err(MembershipError::Truncated);
    }
    let mut set = BTreeSet::new();
    let mut previous = 0u64;
    for _ in 0..count {
        let id = u64::from_le_bytes(take::<8>(rest)?);
        if id == 0 {
            return Err(MembershipError::ZeroNodeId);
        }
        if id <= previous {
            return Err(MembershipError::NotSorted);
        }
        previous = id;
        set.insert(NodeId(id));
    }
    Ok(set)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ids(list: &[u64]) -> BTreeSet<NodeId> {
        list.iter().map(|&i| NodeId(i)).collect()
    }

    #[test]
    fn encoding_is_as_documented() {
        let membership = Membership {
            voters: ids(&[1, 2]),
            learners: ids(&[3]),
        };
        let bytes = membership.encode();
        assert_eq!(bytes.len(), 33);
        assert_eq!(&bytes[..5], &[1, 2, 0, 0, 0]);
        assert_eq!(Membership::decode(&bytes), Ok(membership));
    }

    #[test]
    fn bad_bytes_are_refused() {
        assert_eq!(Membership::decode(&[]), Err(MembershipError::Truncated));
        assert_eq!(Membership::decode(&[9]), Err(MembershipError::Version(9)));
        let mut both = Membership::with_voters([NodeId(1)]).encode().to_vec();
        both.truncate(both.len() - 4);
        both.extend_from_slice(&1u32.to_le_bytes());
        both.extend_from_slice(&1u64.to_le_bytes());
        assert_eq!(
            Membership::decode(&both),
            Err(MembershipError::VoterAndLearner(NodeId(1)))
        );
        let mut extra = Membership::with_voters([NodeId(1)]).encode().to_vec();
        extra.push(0);
        assert_eq!(
            Membership::decode(&extra),
            Err(MembershipError::TrailingBytes(1))
        );
    }

    #[test]
    fn changes_apply_one_at_a_time() {
        let base = Membership::with_voters([NodeId(1), NodeId(2)]);
        let added = base.apply(MembershipChange::AddLearner(NodeId(3))).unwrap();
        assert_eq!(added.learners, ids(&[3]));
        assert_eq!(
            added.apply(MembershipChange::AddLearner(NodeId(2))),
            Err(MembershipError::AlreadyMember(NodeId(2)))
        );
        let promoted = added.apply(MembershipChange::Promote(NodeId(3))).unwrap();
        assert_eq!(promoted.voters, ids(&[1, 2, 3]));
        assert_eq!(promoted.quorum(), 2);
        assert_eq!(
            promoted.apply(MembershipChange::Promote(NodeId(3))),
            Err(MembershipError::NotALearner(NodeId(3)))
        );
        let removed = promoted.apply(MembershipChange::Remove(NodeId(1))).unwrap();
        assert_eq!(removed.voters, ids(&[2, 3]));
        let single = Membership::with_voters([NodeId(1)]);
        assert_eq!(
            single.apply(MembershipChange::Remove(NodeId(1))),
            Err(MembershipError::LastVoter(NodeId(1)))
        );
    }

    proptest! {
        #[test]
        fn encode_decode_roundtrip(voters in proptest::collection::btree_set(1u64..50, 0..8),
                                   learners in proptest::collection::btree_set(50u64..100, 0..8)) {
            let membership = Membership { voters: ids(&voters.into_iter().collect::<Vec<_>>()),
                                          learners: ids(&learners.into_iter().collect::<Vec<_>>()) };
            prop_assert_eq!(Membership::decode(&membership.encode()), Ok(membership.clone()));
        }

        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = Membership::decode(&bytes);
        }
    }
}
