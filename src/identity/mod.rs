//! Identity: who a node's user is and how other nodes can tell. Follows the SOSIMPLE design
//! and RELOAD's certificate model (RFC 6940 §§7.3, 11.2.2): a central enrollment CA used only
//! at first join binds an address of record to a key; afterwards every node verifies
//! certificate chains up to the overlay's configured root by itself.
//!
//! # Layout
//! - [`aor`]: [`Aor`], the canonical `sip:user@domain` a certificate binds.
//! - [`key`]: P-256 ECDSA [`KeyPair`] (PKCS#8) and [`PublicKey`], randomness passed in.
//! - [`verify`]: [`verify_chain`] at an explicit Unix time, [`VerifiedCache`].
//! - [`local`]: [`LocalIdentity`], an enrolled node's own key and chain, and the data-dir layout.
//! - [`pem`]: certificates as PEM, SHA-256 fingerprints.
//! - [`hpke`]: sealing to a user's X25519 encryption key (RFC 9180), for offline messages.
//!
//! # Sans-IO
//! No clock, no files, no OS randomness: Unix times and a `ring::rand::SecureRandom` are
//! arguments. The CA's pure functions are `crate::enrollment`'s. The HTTPS CA server, the enrollment client and the key files are the daemon's
//! (`daemon::ca::server`, `daemon::client::enroll`, `daemon::files::identity`).

pub mod aor;
pub mod caller;
pub mod hpke;
pub mod key;
pub mod local;
pub mod pem;
pub mod verify;

pub use aor::Aor;
pub use key::{KeyPair, PublicKey};
pub use local::{LocalIdentity, SharedRandom, Signer};
pub use verify::{verify_chain, CertificateSummary, TrustAnchor, VerifiedCache, VerifiedIdentity};

/// Why an identity operation failed. Variants up to `NameTaken` describe what a peer or an
/// enrolling user sent; the rest are the caller's or the environment's problem.
// Each variant's `#[error]` message says what it means.
#[allow(missing_docs)]
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    #[error("`{aor}` is not an address of record: {why}")]
    BadAor { aor: String, why: &'static str },
    #[error("certificate does not parse: {0}")]
    BadCertificate(String),
    #[error("certificate request refused: {0}")]
    BadRequest(String),
    #[error("only ECDSA P-256 keys are accepted")]
    UnsupportedKey,
    #[error("certificate at depth {depth} is not valid at {unix_now} (valid {not_before}..={not_after})")]
    NotValidAt { depth: usize, unix_now: u64, not_before: i64, not_after: i64 },
    #[error("certificate at depth {depth} was not issued by the configured root or a CA under it")]
    UntrustedIssuer { depth: usize },
    #[error("certificate signature at depth {depth} does not verify")]
    BadSignature { depth: usize },
    #[error("the certificate names no single sip: AoR in its subjectAltName")]
    NoAor,
    #[error("{aor} is outside this CA's domain {domain}")]
    WrongDomain { aor: Aor, domain: String },
    #[error("the request asks for {requested}, not {aor}")]
    RequestNamesOther { requested: Aor, aor: Aor },
    #[error("{0} is already enrolled with another key; only its holder may renew it")]
    NameTaken(Aor),
    #[error("validity [{not_before}, {not_after}] is empty or out of range")]
    BadValidity { not_before: u64, not_after: u64 },
    #[error("key rejected: {0}")]
    BadKey(String),
    #[error("key generation failed")]
    KeyGeneration,
    #[error("signing failed")]
    Signing,
    #[error("certificate generation failed: {0}")]
    Certificate(String),
}

#[cfg(test)]
pub(crate) mod tests;
