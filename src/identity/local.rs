//! The node's own identity once enrolled, and where it lives in the data directory.
//!
//! Enrollment (`p2psip enroll`) writes the files once; the daemon reads them at start
//! (`daemon::files::layout` names them) and hands a [`LocalIdentity`] to the peer, which signs
//! its records with it. This module only holds the parsed values.

use super::{verify_chain, Aor, IdentityError, KeyPair, TrustAnchor, VerifiedIdentity};

/// The randomness ECDSA signing needs, handed in by the driver like the clock: ring signs only
/// with fresh randomness and its random trait is sealed, so no seeded generator can stand in
/// (`clippy.toml` keeps `SystemRandom::new` in the daemon).
pub type SharedRandom = std::sync::Arc<dyn ring::rand::SecureRandom + Send + Sync>;

/// What a node signs with: its enrolled identity, and the randomness the signatures need.
pub struct Signer {
    /// The enrolled user's key, chain and root.
    pub identity: LocalIdentity,
    /// Randomness for ECDSA signatures.
    pub rng: SharedRandom,
}

/// An enrolled user's key, certificate chain and the overlay's root.
#[derive(Debug)]
pub struct LocalIdentity {
    /// The AoR the leaf certificate binds, as verified.
    pub aor: Aor,
    /// The private key the certificate binds.
    pub key: KeyPair,
    /// DER certificates, leaf first; the root may be left out.
    pub chain: Vec<Vec<u8>>,
    /// The overlay's root, which every chain is checked against.
    pub root: TrustAnchor,
    /// The leaf's notAfter, Unix seconds.
    pub not_after: u64,
}

impl LocalIdentity {
    /// Checks that `chain` verifies up to `root` at `unix_now` and that its leaf certifies
    /// `key`'s public key, and returns the identity it vouches for.
    pub fn new(
        key: KeyPair,
        chain: Vec<Vec<u8>>,
        root: TrustAnchor,
        unix_now: u64,
    ) -> Result<LocalIdentity, IdentityError> {
        let (leaf, rest) =
            chain.split_first().ok_or_else(|| IdentityError::BadCertificate("the chain is empty".into()))?;
        let VerifiedIdentity { aor, public_key, not_after } = verify_chain(leaf, rest, &root, unix_now)?;
        if public_key != key.public_key() {
            return Err(IdentityError::BadKey("the certificate is for another key".into()));
        }
        Ok(LocalIdentity { aor, key, chain, root, not_after })
    }
}
