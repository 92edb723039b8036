//! Who this node talks to: the members of the membership in effect, at the addresses the
//! membership records, else at the configured ones.
//!
//! The configured member list (`NodeConfig::members`) is where a cluster starts; the replicated
//! membership is where it is now. A membership records its members' addresses (a node added
//! at run time is named with its address), so every node learns of a new member when the
//! change is appended, and a restarted node finds the current members in its own log even when
//! its configuration still lists the original ones. Addresses the membership does not record
//! (a membership written before addresses were) come from the configuration.
//!
//! Rules, applied when the core's membership epoch moves (one integer compare per turn
//! otherwise):
//! - every member but this node is a peer of the transport, added (or its address updated) at
//!   once: a new learner must receive appends as soon as its change is appended;
//! - a peer that is no longer a member is forgotten only once the membership that removed it
//!   is committed: until then the removal may still be truncated away, and the leader that
//!   proposed it needs the acknowledgements of the remaining members over these connections;
//! - with a membership that does not include this node, the configured members stay peers too:
//!   such a membership is older than this node's addition (a node started to join an existing
//!   cluster: none yet, or one from a snapshot or log prefix the leader sent first, which may
//!   predate the leader itself) or follows its removal, so it cannot say who the peers are now,
//!   and the leader must stay a peer (an unlisted node is forgotten with its connection,
//!   `net/transport.rs`). (A joining node's configured members are the
//!   members when it joined; ids are not reused, so a membership that includes this node is at
//!   or after its addition.)

use std::collections::BTreeMap;
use std::net::SocketAddr;

use crate::net::NetSink;
use crate::node::LeaderHint;
use crate::raft::{Membership, Raft};
use crate::types::NodeId;

use super::{MemberStatus, PeerConfig};

/// The peers told to the transport and the members' client addresses.
pub(crate) struct PeerBook {
    me: NodeId,
    configured: BTreeMap<NodeId, PeerConfig>,
    /// Every known member's addresses (membership first, configuration for the rest),
    /// including this node and, until forgotten, removed members.
    known: BTreeMap<NodeId, PeerConfig>,
    /// The membership epoch `known` was last brought up to date with.
    epoch: u64,
    /// Some known peer is no longer a member: forget it once the membership is committed.
    removal_pending: bool,
}

impl PeerBook {
    /// The book for a node whose core starts with `membership` at `epoch`.
    pub(crate) fn new(
        me: NodeId,
        configured: &BTreeMap<NodeId, PeerConfig>,
        membership: &Membership,
        epoch: u64,
    ) -> PeerBook {
        let mut book = PeerBook {
            me,
            configured: configured.clone(),
            known: BTreeMap::new(),
            epoch,
            removal_pending: false,
        };
        book.known = book.members_of(membership);
        book
    }

    /// The members of `membership` with their addresses, and the configured members too when
    /// it does not include this node (see the module docs); this node is kept with its
    /// configured addresses.
    fn members_of(&self, membership: &Membership) -> BTreeMap<NodeId, PeerConfig> {
        let mut members: BTreeMap<NodeId, PeerConfig> = membership
            .members()
            .filter_map(|id| {
                let addr = membership.addrs.get(&id).or(self.configured.get(&id))?;
                Some((id, *addr))
            })
            .collect();
        if !membership.contains(self.me) {
            for (&id, addr) in &self.configured {
                members.entry(id).or_insert(*addr);
            }
        }
        if let Some(own) = self.configured.get(&self.me) {
            members.insert(self.me, *own);
        }
        members
    }

    /// The peers the transport starts with (every known member but this node).
    pub(crate) fn peers(&self) -> BTreeMap<NodeId, SocketAddr> {
        self.known
            .iter()
            .filter(|(&id, _)| id != self.me)
            .map(|(&id, addr)| (id, addr.peer_addr))
            .collect()
    }

    /// The members of `membership` as the status shows them, with the addresses in use.
    pub(crate) fn members(&self, membership: &Membership) -> Vec<MemberStatus> {
        membership
            .members()
            .map(|id| {
                let addr = self.known.get(&id);
                MemberStatus {
                    id: id.get(),
                    role: if membership.is_voter(id) {
                        "voter"
                    } else {
                        "learner"
                    }
                    .to_string(),
                    peer_addr: addr.map(|addr| addr.peer_addr),
                    client_addr: addr.and_then(|addr| addr.client_addr),
                }
            })
            .collect()
    }

    /// `id` as a leader hint, with the addresses known for it.
    pub(crate) fn hint(&self, id: NodeId) -> LeaderHint {
        let addr = self.known.get(&id);
        LeaderHint {
            id,
            peer_addr: addr.map(|addr| addr.peer_addr),
            client_addr: addr.and_then(|addr| addr.client_addr),
        }
    }

    /// Brings the transport's peers up to date with the core's membership (see the module
    /// docs). Cheap when nothing changed.
    pub(crate) fn sync(&mut self, raft: &Raft, net: &mut dyn NetSink) {
        let epoch = raft.membership_epoch();
        if epoch == self.epoch && !(self.removal_pending && raft.membership_committed()) {
            return;
        }
        self.epoch = epoch;
        let membership = raft.membership();
        let members = self.members_of(membership);
        for id in membership.members() {
            if !members.contains_key(&id) {
                tracing::warn!(node = %self.me, member = %id, "member without a known address: unreachable from here (name its address in the change that adds it, or in this node's members)");
            }
        }
        for (&id, addr) in &members {
            if id != self.me && self.known.get(&id) != Some(addr) {
                tracing::info!(node = %self.me, peer = %id, addr = %addr.peer_addr, "member added or moved: now a peer");
                net.add_peer(id, addr.peer_addr);
            }
            self.known.insert(id, *addr);
        }
        let gone: Vec<NodeId> = self
            .known
            .keys()
            .copied()
            .filter(|id| !members.contains_key(id))
            .collect();
        self.removal_pending = !gone.is_empty() && !raft.membership_committed();
        if self.removal_pending {
            return;
        }
        for id in gone {
            tracing::info!(node = %self.me, peer = %id, "member removed: no longer a peer");
            self.known.remove(&id);
            net.remove_peer(id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raft::MemberAddr;

    fn addr(port: u16) -> MemberAddr {
        MemberAddr {
            peer_addr: SocketAddr::from(([127, 0, 0, 1], port)),
            client_addr: Some(SocketAddr::from(([127, 0, 0, 1], port + 100))),
        }
    }

    #[test]
    fn the_membership_names_the_peers_and_the_configuration_fills_in_addresses() {
        let configured: BTreeMap<NodeId, PeerConfig> = [
            (NodeId(1), addr(1)),
            (NodeId(2), addr(2)),
            (NodeId(3), addr(3)),
        ]
        .into();
        // The log says 3 left and 4 joined, with 4's address but not 2's (an old encoding).
        let mut membership = Membership::with_voters([NodeId(1), NodeId(2), NodeId(4)]);
        membership.addrs.insert(NodeId(4), addr(4));
        let book = PeerBook::new(NodeId(1), &configured, &membership, 0);
        let peers: Vec<(u64, u16)> = book
            .peers()
            .into_iter()
            .map(|(id, at)| (id.get(), at.port()))
            .collect();
        assert_eq!(peers, vec![(2, 2), (4, 4)]);
        assert_eq!(book.hint(NodeId(4)).client_addr, addr(4).client_addr);
        assert_eq!(book.hint(NodeId(3)).client_addr, None);
        // A joining node (empty membership) keeps every configured member.
        let joining = PeerBook::new(NodeId(4), &configured, &Membership::default(), 0);
        assert_eq!(joining.peers().len(), 3);
    }

    #[test]
    fn a_joining_node_keeps_its_configured_members_until_a_membership_includes_it() {
        // Node 7 joins the members {4, 6} (6 leads); the first thing 6 sends is its snapshot,
        // older than 6's own addition: members {2, 4, 5}. 6 must stay a peer.
        let configured: BTreeMap<NodeId, PeerConfig> = [
            (NodeId(4), addr(4)),
            (NodeId(6), addr(6)),
            (NodeId(7), addr(7)),
        ]
        .into();
        let peer_ids =
            |book: &PeerBook| -> Vec<u64> { book.peers().keys().map(|id| id.get()).collect() };
        let mut old = Membership::with_voters([NodeId(2), NodeId(4), NodeId(5)]);
        for id in [2, 4, 5] {
            old.addrs.insert(NodeId(id), addr(id as u16));
        }
        let book = PeerBook::new(NodeId(7), &configured, &old, 0);
        assert_eq!(peer_ids(&book), vec![2, 4, 5, 6]);
        // Once a membership includes it, that membership alone names the peers.
        let mut current = Membership::with_voters([NodeId(4), NodeId(6)]);
        current.learners.insert(NodeId(7));
        let book = PeerBook::new(NodeId(7), &configured, &current, 0);
        assert_eq!(peer_ids(&book), vec![4, 6]);
    }
}
