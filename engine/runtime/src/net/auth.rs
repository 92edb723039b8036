//! Peer authentication: the cluster's shared secret, the nonces each end of a peer connection
//! sends in its hello, and the proof (HMAC-SHA256) by which each end shows it knows the secret.
//!
//! Guarantees:
//! - The secret never leaves [`PeerSecret`]: it is not printed (`Debug` shows only its length),
//!   never sent, and only ever used as an HMAC key.
//! - A proof is bound to everything that identifies one handshake ([`Transcript`]: protocol
//!   version, cluster id, dialer and acceptor ids, both nonces) and to the role of the end that
//!   made it, so a proof can be neither replayed on another connection (the other end's nonce
//!   is fresh) nor reflected back to the end that made it (the role differs).
//! - [`Transcript::verify`] compares in constant time (`hmac`'s `verify_slice`).
//!
//! The byte layout of the transcript is documented in `docs/FORMATS.md` ("Peer authentication").

use std::fmt;
use std::sync::Arc;

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::types::NodeId;

/// Bytes of the nonce each end sends in its hello.
pub const NONCE_BYTES: usize = 32;
/// Bytes of a proof (an HMAC-SHA256 tag).
pub const PROOF_BYTES: usize = 32;
/// The shortest secret accepted, in bytes.
pub const PEER_SECRET_BYTES_MIN: usize = 32;

/// Starts every MAC input, so a proof can never be mistaken for an HMAC of anything else made
/// with the same key.
const PROOF_LABEL: &[u8] = b"lockstep peer proof";

/// A nonce: fresh random bytes from the operating system, one per hello.
pub type Nonce = [u8; NONCE_BYTES];

/// A proof that the sender knows the secret (an HMAC-SHA256 tag over a [`Transcript`]).
pub type Proof = [u8; PROOF_BYTES];

/// The secret every member of a cluster shares (at least [`PEER_SECRET_BYTES_MIN`] bytes).
#[derive(Clone)]
pub struct PeerSecret(Arc<[u8]>);

impl PeerSecret {
    /// The secret `bytes`; refused (with a reason naming the lengths) if shorter than
    /// [`PEER_SECRET_BYTES_MIN`].
    pub fn new(bytes: Vec<u8>) -> Result<PeerSecret, SecretTooShort> {
        if bytes.len() < PEER_SECRET_BYTES_MIN {
            return Err(SecretTooShort { len: bytes.len() });
        }
        Ok(PeerSecret(bytes.into()))
    }

    /// Length of the secret, in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Always false: a secret holds at least [`PEER_SECRET_BYTES_MIN`] bytes.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// A peer secret shorter than [`PEER_SECRET_BYTES_MIN`] (the error never holds its bytes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SecretTooShort {
    /// The secret's length, in bytes.
    pub len: usize,
}

impl fmt::Display for SecretTooShort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the secret is {} bytes; at least {PEER_SECRET_BYTES_MIN} are required",
            self.len
        )
    }
}

impl std::error::Error for SecretTooShort {}

impl fmt::Debug for PeerSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PeerSecret(<{} bytes, not shown>)", self.0.len())
    }
}

/// A fresh nonce from the operating system's random source (getrandom(2)).
///
/// # Panics
/// If the kernel's random source fails, which Linux does not do once booted: there is no
/// sound way to authenticate without it.
pub fn fresh_nonce() -> Nonce {
    let mut nonce = [0u8; NONCE_BYTES];
    getrandom::fill(&mut nonce)
        .unwrap_or_else(|err| panic!("the operating system's random source failed: {err}"));
    nonce
}

/// Which end of a peer connection made a proof.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// The end that opened the connection (the smaller node id).
    Dialer,
    /// The end that accepted it.
    Acceptor,
}

impl Role {
    /// The other end's role.
    pub fn other(self) -> Role {
        match self {
            Role::Dialer => Role::Acceptor,
            Role::Acceptor => Role::Dialer,
        }
    }

    fn byte(self) -> u8 {
        match self {
            Role::Dialer => 1,
            Role::Acceptor => 2,
        }
    }
}

/// What identifies one peer handshake; both ends build the same transcript from the two hellos.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transcript {
    /// The peer protocol version both hellos carry.
    pub version: u16,
    /// The cluster id both hellos carry.
    pub cluster_id: u64,
    /// The node that dialed.
    pub dialer: NodeId,
    /// The node that accepted.
    pub acceptor: NodeId,
    /// The nonce of the dialer's hello.
    pub dialer_nonce: Nonce,
    /// The nonce of the acceptor's hello.
    pub acceptor_nonce: Nonce,
}

impl Transcript {
    /// The proof the end in `role` sends: HMAC-SHA256 keyed by the secret over the label, the
    /// role and the transcript's fields (fixed-size, little-endian; `docs/FORMATS.md`).
    pub fn proof(&self, secret: &PeerSecret, role: Role) -> Proof {
        self.mac(secret, role).finalize().into_bytes().into()
    }

    /// Whether `proof` is the proof of the end in `role` (compared in constant time; a proof of
    /// the wrong length is false).
    pub fn verify(&self, secret: &PeerSecret, role: Role, proof: &[u8]) -> bool {
        self.mac(secret, role).verify_slice(proof).is_ok()
    }

    fn mac(&self, secret: &PeerSecret, role: Role) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&secret.0)
            .expect("HMAC-SHA256 takes a key of any length");
        mac.update(PROOF_LABEL);
        mac.update(&[role.byte()]);
        mac.update(&self.version.to_le_bytes());
        mac.update(&self.cluster_id.to_le_bytes());
        mac.update(&self.dialer.get().to_le_bytes());
        mac.update(&self.acceptor.get().to_le_bytes());
        mac.update(&self.dialer_nonce);
        mac.update(&self.acceptor_nonce);
        mac
    }
}

/// Why a peer handshake was refused: one counter per reason in [`PeerRefusals`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Another peer protocol version.
    WrongVersion,
    /// Another cluster id.
    WrongCluster,
    /// A hello claiming this node's own id, or the reserved id 0.
    UnknownNode,
    /// On a dialed connection, a node id other than the node dialed.
    WrongNode,
    /// This node has a secret and the peer has none, or sent something else where its proof
    /// belonged.
    NoProof,
    /// The peer authenticates but this node has no secret configured.
    NoSecret,
    /// The peer's proof does not verify (another secret, or a replayed handshake).
    BadProof,
    /// A frame that is not valid at this point of the handshake.
    BadHello,
    /// The TLS handshake failed (a plaintext peer on a TLS port, a certificate the CA does not
    /// vouch for, no client certificate).
    Tls,
}

impl Refusal {
    /// The reason's name, as counters and logs spell it.
    pub fn name(self) -> &'static str {
        match self {
            Refusal::WrongVersion => "wrong_version",
            Refusal::WrongCluster => "wrong_cluster",
            Refusal::UnknownNode => "unknown_node",
            Refusal::WrongNode => "wrong_node",
            Refusal::NoProof => "no_proof",
            Refusal::NoSecret => "no_secret",
            Refusal::BadProof => "bad_proof",
            Refusal::BadHello => "bad_hello",
            Refusal::Tls => "tls",
        }
    }
}

/// Refused peer handshakes by reason (monotonic since start); see [`Refusal`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct PeerRefusals {
    /// Another peer protocol version.
    pub wrong_version: u64,
    /// Another cluster id.
    pub wrong_cluster: u64,
    /// This node's own id, or id 0.
    pub unknown_node: u64,
    /// Not the node dialed.
    pub wrong_node: u64,
    /// No proof from a peer while this node requires one.
    pub no_proof: u64,
    /// A peer that authenticates while this node has no secret.
    pub no_secret: u64,
    /// A proof that does not verify.
    pub bad_proof: u64,
    /// A malformed or out-of-place handshake frame.
    pub bad_hello: u64,
    /// A failed TLS handshake.
    pub tls: u64,
}

impl PeerRefusals {
    /// Counts one refusal.
    pub fn count(&mut self, refusal: Refusal) {
        *self.counter(refusal) += 1;
    }

    /// Every reason with its count, in a fixed order (for metrics).
    pub fn by_reason(&self) -> [(&'static str, u64); 9] {
        [
            Refusal::WrongVersion,
            Refusal::WrongCluster,
            Refusal::UnknownNode,
            Refusal::WrongNode,
            Refusal::NoProof,
            Refusal::NoSecret,
            Refusal::BadProof,
            Refusal::BadHello,
            Refusal::Tls,
        ]
        .map(|refusal| {
            let mut copy = *self;
            (refusal.name(), *copy.counter(refusal))
        })
    }

    fn counter(&mut self, refusal: Refusal) -> &mut u64 {
        match refusal {
            Refusal::WrongVersion => &mut self.wrong_version,
            Refusal::WrongCluster => &mut self.wrong_cluster,
            Refusal::UnknownNode => &mut self.unknown_node,
            Refusal::WrongNode => &mut self.wrong_node,
            Refusal::NoProof => &mut self.no_proof,
            Refusal::NoSecret => &mut self.no_secret,
            Refusal::BadProof => &mut self.bad_proof,
            Refusal::BadHello => &mut self.bad_hello,
            Refusal::Tls => &mut self.tls,
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn secret(byte: u8) -> PeerSecret {
        PeerSecret::new(vec![byte; PEER_SECRET_BYTES_MIN]).unwrap()
    }

    fn transcript() -> Transcript {
        Transcript {
            version: 2,
            cluster_id: 7,
            dialer: NodeId(1),
            acceptor: NodeId(2),
            dialer_nonce: [3; NONCE_BYTES],
            acceptor_nonce: [4; NONCE_BYTES],
        }
    }

    #[test]
    fn a_proof_verifies_for_its_role_only() {
        let secret = secret(9);
        let transcript = transcript();
        let dialer = transcript.proof(&secret, Role::Dialer);
        assert!(transcript.verify(&secret, Role::Dialer, &dialer));
        // Reflection: the acceptor cannot be handed its own kind of proof back, nor vice versa.
        assert!(!transcript.verify(&secret, Role::Acceptor, &dialer));
        assert_ne!(dialer, transcript.proof(&secret, Role::Acceptor));
        assert!(!transcript.verify(&secret, Role::Dialer, &dialer[..PROOF_BYTES - 1]));
        assert!(!transcript.verify(&secret, Role::Dialer, &[]));
    }

    #[test]
    fn short_secrets_are_refused_and_never_printed() {
        let err = PeerSecret::new(vec![1; PEER_SECRET_BYTES_MIN - 1]).unwrap_err();
        assert_eq!(err, SecretTooShort { len: 31 });
        let err = err.to_string();
        assert!(err.contains("31 bytes") && err.contains("32"), "{err}");
        let shown = format!(
            "{:?}",
            PeerSecret::new(b"s3cr3t-s3cr3t-s3cr3t-s3cr3t-s3cr3t".to_vec()).unwrap()
        );
        assert!(!shown.contains("s3cr3t"), "{shown}");
        assert!(shown.contains("34 bytes"), "{shown}");
    }

    #[test]
    fn fresh_nonces_differ() {
        assert_ne!(fresh_nonce(), fresh_nonce());
    }

    #[test]
    fn refusals_are_counted_by_reason() {
        let mut refusals = PeerRefusals::default();
        refusals.count(Refusal::BadProof);
        refusals.count(Refusal::BadProof);
        refusals.count(Refusal::NoProof);
        assert_eq!(refusals.bad_proof, 2);
        assert_eq!(refusals.no_proof, 1);
        let named = refusals.by_reason();
        assert!(named.contains(&("bad_proof", 2)), "{named:?}");
        assert!(named.contains(&("wrong_cluster", 0)), "{named:?}");
    }

    proptest! {
        /// Any change to any field of the transcript, to the role or to the secret makes the
        /// proof fail; so does flipping any bit of the proof.
        #[test]
        fn any_change_fails_verification(
            field in 0usize..9,
            byte in 0usize..NONCE_BYTES,
            flip in 1u8..=255,
            value in any::<u64>(),
        ) {
            let secret = secret(9);
            let original = transcript();
            let proof = original.proof(&secret, Role::Dialer);
            let mut changed = original.clone();
            let mut role = Role::Dialer;
            let mut key = secret.clone();
            let mut sent = proof;
            match field {
                0 => changed.version ^= u16::from(flip),
                1 => changed.cluster_id ^= value | 1,
                2 => changed.dialer = NodeId(changed.dialer.get() ^ (value | 1)),
                3 => changed.acceptor = NodeId(changed.acceptor.get() ^ (value | 1)),
                4 => changed.dialer_nonce[byte] ^= flip,
                5 => changed.acceptor_nonce[byte] ^= flip,
                6 => role = Role::Acceptor,
                7 => {
                    let mut bytes = vec![9; PEER_SECRET_BYTES_MIN];
                    bytes[byte] ^= flip;
                    key = PeerSecret::new(bytes).unwrap();
                }
                _ => sent[byte] ^= flip,
            }
            prop_assert!(!changed.verify(&key, role, &sent), "field {field} changed, proof still verifies");
            prop_assert!(original.verify(&secret, Role::Dialer, &proof));
        }
    }
}
