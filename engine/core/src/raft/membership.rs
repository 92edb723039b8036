//! Cluster membership: which nodes vote and which only replicate (learners), its byte encoding
//! inside a `BatchKind::Membership` batch, and the one-at-a-time changes a leader may propose.
//!
//! Guarantees: a decoded membership has no node id 0 and no node both voter and learner; a
//! change is applied to a membership only if it is valid for it ([`Membership::apply`]).
//!
//! A membership may also carry members' addresses ([`MemberAddr`]: replication port and client
//! port), so that a node added at run time can be reached by everyone, and a restarted node
//! finds the current members in its own log rather than in its (possibly older) configuration.
//!
//! # Encoding (little-endian)
//! `u8 version`, `u32 voter count`, voter ids as `u64`, `u32 learner count`, learner ids as
//! `u64`, ids ascending. Voters {1, 2} and learner {3} encode to 1 + 4 + 16 + 4 + 8 = 33 bytes.
//! That is version 1, written when no address is known. Version 2 (written when at least one is)
//! continues with `u32 address count` and, per entry, in ascending id order, `u64 id` (a member),
//! the peer address and the client address. An address is `u8 family` (4 or 6; 0 for "none",
//! allowed only for the client address), then 4 or 16 IP bytes and a `u16` port.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use bytes::{BufMut, Bytes, BytesMut};

use crate::batch::{Batch, BatchKind};
use crate::types::NodeId;

/// Encoding version without addresses.
const VERSION_IDS: u8 = 1;
/// Encoding version with addresses.
const VERSION_ADDRS: u8 = 2;

/// Where a member listens.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct MemberAddr {
    /// The replication (peer) port.
    pub peer_addr: SocketAddr,
    /// The client port (for redirects), if the member serves clients.
    pub client_addr: Option<SocketAddr>,
}

/// The voters and learners of a cluster, and the addresses known for them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Membership {
    /// Nodes that vote and count for commit and quorum.
    pub voters: BTreeSet<NodeId>,
    /// Nodes that receive the log but neither vote nor count.
    pub learners: BTreeSet<NodeId>,
    /// Addresses of members (only members; possibly not all of them, e.g. in a membership
    /// written before addresses were recorded).
    pub addrs: BTreeMap<NodeId, MemberAddr>,
}

/// One membership change; a leader accepts one at a time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MembershipChange {
    /// Start replicating to a new non-voting node, reachable at the address (which every member
    /// learns when the change is appended; `None` leaves it to each node's configuration).
    AddLearner(NodeId, Option<MemberAddr>),
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
    /// An address names a node that is not a member.
    AddrOfNonMember(NodeId),
    /// An address's family byte is not 4 or 6 (or 0 where no address is allowed).
    AddrFamily(u8),
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
    /// A `Membership` batch holds this many entries instead of one.
    EntryCount(u32),
}

impl fmt::Display for MembershipError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MembershipError::Truncated => write!(f, "membership bytes end early"),
            MembershipError::Version(v) => write!(f, "unknown membership encoding version {v}"),
            MembershipError::TrailingBytes(n) => write!(f, "{n} bytes after the membership"),
            MembershipError::ZeroNodeId => write!(f, "node id 0 in a membership"),
            MembershipError::NotSorted => write!(f, "membership ids are not ascending"),
            MembershipError::AddrOfNonMember(id) => write!(f, "an address of non-member {id}"),
            MembershipError::AddrFamily(family) => {
                write!(f, "unknown address family {family} in a membership")
            }
            MembershipError::VoterAndLearner(id) => write!(f, "{id} is both voter and learner"),
            MembershipError::AlreadyMember(id) => write!(f, "{id} is already a member"),
            MembershipError::NotALearner(id) => write!(f, "{id} is not a learner"),
            MembershipError::NotAMember(id) => write!(f, "{id} is not a member"),
            MembershipError::LastVoter(id) => write!(f, "removing {id} would leave no voter"),
            MembershipError::EntryCount(count) => {
                write!(f, "a membership batch holds {count} entries instead of one")
            }
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
            addrs: BTreeMap::new(),
        }
    }

    /// A membership of the given voters and their addresses, and no learners.
    pub fn with_voter_addrs(voters: impl IntoIterator<Item = (NodeId, MemberAddr)>) -> Membership {
        let addrs: BTreeMap<NodeId, MemberAddr> = voters.into_iter().collect();
        Membership {
            voters: addrs.keys().copied().collect(),
            learners: BTreeSet::new(),
            addrs,
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
            MembershipChange::AddLearner(id, addr) => {
                if id == NodeId::ZERO {
                    return Err(MembershipError::ZeroNodeId);
                }
                if self.contains(id) {
                    return Err(MembershipError::AlreadyMember(id));
                }
                next.learners.insert(id);
                if let Some(addr) = addr {
                    next.addrs.insert(id, addr);
                }
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
                next.addrs.remove(&id);
            }
        }
        Ok(next)
    }

    /// The encoding described in the module docs.
    pub fn encode(&self) -> Bytes {
        debug_assert!(self.addrs.keys().all(|&id| self.contains(id)));
        let members = self.voters.len() + self.learners.len();
        let mut out = BytesMut::with_capacity(1 + 12 + 8 * members + 48 * self.addrs.len());
        out.put_u8(if self.addrs.is_empty() {
            VERSION_IDS
        } else {
            VERSION_ADDRS
        });
        for set in [&self.voters, &self.learners] {
            out.put_u32_le(set.len() as u32);
            for id in set {
                out.put_u64_le(id.get());
            }
        }
        if !self.addrs.is_empty() {
            out.put_u32_le(self.addrs.len() as u32);
            for (id, addr) in &self.addrs {
                out.put_u64_le(id.get());
                put_addr(&mut out, Some(addr.peer_addr));
                put_addr(&mut out, addr.client_addr);
            }
        }
        out.freeze()
    }

    /// The membership a `Membership` batch holds: its one entry, decoded and validated.
    pub fn of_batch(batch: &Batch) -> Result<Membership, MembershipError> {
        debug_assert_eq!(batch.kind(), BatchKind::Membership, "{batch:?}");
        let mut entries = batch.entries();
        match (entries.next(), entries.next()) {
            (Some(entry), None) => Membership::decode(entry),
            _ => Err(MembershipError::EntryCount(batch.entry_count())),
        }
    }

    /// Decodes and validates bytes made by [`Membership::encode`].
    pub fn decode(bytes: &[u8]) -> Result<Membership, MembershipError> {
        let mut rest = bytes;
        let version = *rest.first().ok_or(MembershipError::Truncated)?;
        if version != VERSION_IDS && version != VERSION_ADDRS {
            return Err(MembershipError::Version(version));
        }
        rest = &rest[1..];
        let voters = decode_set(&mut rest)?;
        let learners = decode_set(&mut rest)?;
        if let Some(both) = voters.intersection(&learners).next() {
            return Err(MembershipError::VoterAndLearner(*both));
        }
        let mut membership = Membership {
            voters,
            learners,
            addrs: BTreeMap::new(),
        };
        if version == VERSION_ADDRS {
            let count = u32::from_le_bytes(take::<4>(&mut rest)?) as usize;
            let mut previous = 0u64;
            for _ in 0..count {
                let id = u64::from_le_bytes(take::<8>(&mut rest)?);
                if id <= previous {
                    return Err(MembershipError::NotSorted);
                }
                previous = id;
                if !membership.contains(NodeId(id)) {
                    return Err(MembershipError::AddrOfNonMember(NodeId(id)));
                }
                let peer_addr = take_addr(&mut rest)?.ok_or(MembershipError::AddrFamily(0))?;
                let client_addr = take_addr(&mut rest)?;
                membership.addrs.insert(
                    NodeId(id),
                    MemberAddr {
                        peer_addr,
                        client_addr,
                    },
                );
            }
        }
        if !rest.is_empty() {
            return Err(MembershipError::TrailingBytes(rest.len()));
        }
        Ok(membership)
    }
}

/// Appends an address as the membership encoding writes it (`None` as family 0); the client
/// protocol's membership change uses the same layout.
pub fn put_addr(out: &mut impl BufMut, addr: Option<SocketAddr>) {
    match addr {
        None => out.put_u8(0),
        Some(SocketAddr::V4(v4)) => {
            out.put_u8(4);
            out.put_slice(&v4.ip().octets());
            out.put_u16_le(v4.port());
        }
        Some(SocketAddr::V6(v6)) => {
            out.put_u8(6);
            out.put_slice(&v6.ip().octets());
            out.put_u16_le(v6.port());
        }
    }
}

/// Reads an address written by [`put_addr`] from the front of `rest`.
pub fn take_addr(rest: &mut &[u8]) -> Result<Option<SocketAddr>, MembershipError> {
    let ip = match take::<1>(rest)?[0] {
        0 => return Ok(None),
        4 => IpAddr::V4(Ipv4Addr::from(take::<4>(rest)?)),
        6 => IpAddr::V6(Ipv6Addr::from(take::<16>(rest)?)),
        other => return Err(MembershipError::AddrFamily(other)),
    };
    let port = u16::from_le_bytes(take::<2>(rest)?);
    Ok(Some(SocketAddr::new(ip, port)))
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
        let mut membership = Membership {
            voters: ids(&[1, 2]),
            learners: ids(&[3]),
            addrs: BTreeMap::new(),
        };
        let bytes = membership.encode();
        assert_eq!(bytes.len(), 33);
        assert_eq!(&bytes[..5], &[1, 2, 0, 0, 0]);
        assert_eq!(Membership::decode(&bytes), Ok(membership.clone()));
        // With addresses: version 2; 4 + 8 + (1 + 4 + 2) + 1 for node 3 (IPv4, no client port).
        membership.addrs.insert(
            NodeId(3),
            MemberAddr {
                peer_addr: "10.0.0.3:7003".parse().unwrap(),
                client_addr: None,
            },
        );
        let bytes = membership.encode();
        assert_eq!(bytes[0], 2);
        assert_eq!(bytes.len(), 33 + 4 + 8 + 7 + 1);
        assert_eq!(&bytes[45..52], &[4, 10, 0, 0, 3, 0x5b, 0x1b]);
        assert_eq!(Membership::decode(&bytes), Ok(membership));
    }

    #[test]
    fn addresses_follow_the_changes_and_must_name_members() {
        let addr = |port: u16| MemberAddr {
            peer_addr: SocketAddr::from(([127, 0, 0, 1], port)),
            client_addr: Some(SocketAddr::from((Ipv6Addr::LOCALHOST, port + 1))),
        };
        let base = Membership::with_voter_addrs([(NodeId(1), addr(7001)), (NodeId(2), addr(7002))]);
        let added = base
            .apply(MembershipChange::AddLearner(NodeId(3), Some(addr(7003))))
            .unwrap();
        assert_eq!(added.addrs.get(&NodeId(3)), Some(&addr(7003)));
        assert_eq!(Membership::decode(&added.encode()), Ok(added.clone()));
        let removed = added.apply(MembershipChange::Remove(NodeId(1))).unwrap();
        assert!(!removed.addrs.contains_key(&NodeId(1)));
        // An address of a node that is not a member is refused: voter 2, no learner, an
        // address for node 1.
        let mut stray = vec![2];
        stray.extend_from_slice(&1u32.to_le_bytes());
        stray.extend_from_slice(&2u64.to_le_bytes());
        stray.extend_from_slice(&0u32.to_le_bytes());
        stray.extend_from_slice(&1u32.to_le_bytes());
        stray.extend_from_slice(&1u64.to_le_bytes());
        stray.extend_from_slice(&[4, 127, 0, 0, 1, 0x59, 0x1b, 0]);
        assert_eq!(
            Membership::decode(&stray),
            Err(MembershipError::AddrOfNonMember(NodeId(1)))
        );
        stray[21..29].copy_from_slice(&2u64.to_le_bytes());
        assert!(Membership::decode(&stray).is_ok());
        // An unknown family byte is refused (voter 2, learner 3, then node 2's peer address).
        let mut bytes = removed.encode().to_vec();
        bytes[1 + 4 + 8 + 4 + 8 + 4 + 8] = 5;
        assert_eq!(
            Membership::decode(&bytes),
            Err(MembershipError::AddrFamily(5))
        );
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
        let added = base
            .apply(MembershipChange::AddLearner(NodeId(3), None))
            .unwrap();
        assert_eq!(added.learners, ids(&[3]));
        assert_eq!(
            added.apply(MembershipChange::AddLearner(NodeId(2), None)),
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
                                   learners in proptest::collection::btree_set(50u64..100, 0..8),
                                   ports in proptest::collection::vec(any::<(u16, bool, bool)>(), 16)) {
            let voters = ids(&voters.into_iter().collect::<Vec<_>>());
            let learners = ids(&learners.into_iter().collect::<Vec<_>>());
            let addrs = voters.iter().chain(&learners).zip(&ports)
                .filter(|(_, (_, named, _))| *named)
                .map(|(&id, &(port, _, v6))| {
                    let ip: IpAddr = if v6 { Ipv6Addr::LOCALHOST.into() } else { Ipv4Addr::LOCALHOST.into() };
                    (id, MemberAddr { peer_addr: SocketAddr::new(ip, port),
                                      client_addr: v6.then(|| SocketAddr::new(ip, port ^ 1)) })
                })
                .collect();
            let membership = Membership { voters, learners, addrs };
            prop_assert_eq!(Membership::decode(&membership.encode()), Ok(membership.clone()));
        }

        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..128)) {
            let _ = Membership::decode(&bytes);
        }
    }
}
