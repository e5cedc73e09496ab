//! Key pairs and signatures: ECDSA P-256 with SHA-256 through `ring`, keys kept as PKCS#8.
//!
//! Signatures are ASN.1 DER (`ECDSA_P256_SHA256_ASN1`), the form X.509 uses, so one key signs
//! both certificate requests and stored records. Randomness (key generation and ECDSA nonces)
//! comes from a `ring::rand::SecureRandom` the caller passes in: this module never reaches for
//! the operating system's generator itself (the daemon owns it; tests pass their own).
//!
//! Ed25519 is not offered yet: the chain verification and record checks would accept it with
//! one more match arm, but nothing generates it.

use std::fmt;

use ring::rand::SecureRandom;
use ring::signature::{self, EcdsaKeyPair, KeyPair as _};

use super::IdentityError;

const SIGNING: &signature::EcdsaSigningAlgorithm = &signature::ECDSA_P256_SHA256_ASN1_SIGNING;

/// A P-256 signing key and its PKCS#8 encoding (what goes to the 0600 key file).
pub struct KeyPair {
    pkcs8: Vec<u8>,
    inner: EcdsaKeyPair,
}

impl KeyPair {
    /// A fresh key from the caller's random source.
    pub fn generate(rng: &dyn SecureRandom) -> Result<KeyPair, IdentityError> {
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(SIGNING, rng).map_err(|_| IdentityError::KeyGeneration)?;
        KeyPair::from_pkcs8(pkcs8.as_ref(), rng)
    }

    /// Loads a PKCS#8 (RFC 5958) P-256 key.
    pub fn from_pkcs8(pkcs8: &[u8], rng: &dyn SecureRandom) -> Result<KeyPair, IdentityError> {
        let inner = EcdsaKeyPair::from_pkcs8(SIGNING, pkcs8, rng).map_err(|e| IdentityError::BadKey(e.to_string()))?;
        Ok(KeyPair { pkcs8: pkcs8.to_vec(), inner })
    }

    /// The PKCS#8 DER encoding.
    pub fn pkcs8_der(&self) -> &[u8] {
        &self.pkcs8
    }

    /// The public half.
    pub fn public_key(&self) -> PublicKey {
        PublicKey(self.inner.public_key().as_ref().to_vec())
    }

    /// Signs `message` (ASN.1 DER ECDSA signature).
    pub fn sign(&self, message: &[u8], rng: &dyn SecureRandom) -> Result<Vec<u8>, IdentityError> {
        self.inner.sign(rng, message).map(|s| s.as_ref().to_vec()).map_err(|_| IdentityError::Signing)
    }

    pub(crate) fn ring_key(&self) -> &EcdsaKeyPair {
        &self.inner
    }
}

impl fmt::Debug for KeyPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print the private key.
        write!(f, "KeyPair({:?})", self.public_key())
    }
}

/// A P-256 public key: the uncompressed point (65 bytes, SEC 1 §2.3.3), as it sits in a
/// certificate's subjectPublicKeyInfo bit string.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PublicKey(Vec<u8>);

impl PublicKey {
    /// Wraps the raw point bytes; they are checked when a signature is verified.
    pub fn from_bytes(bytes: &[u8]) -> PublicKey {
        PublicKey(bytes.to_vec())
    }

    /// The raw point bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// Checks an ASN.1 DER ECDSA P-256/SHA-256 signature over exactly `message`.
    pub fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        signature::UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_ASN1, &self.0)
            .verify(message, signature)
            .is_ok()
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Short hex of the SHA-256 of the point, for logs.
        let digest = ring::digest::digest(&ring::digest::SHA256, &self.0);
        write!(f, "PublicKey(")?;
        for b in &digest.as_ref()[..6] {
            write!(f, "{b:02x}")?;
        }
        write!(f, ")")
    }
}

/// Adapts a [`KeyPair`] and the caller's RNG to rcgen's signer trait, so certificates and
/// requests are signed without rcgen reaching for its own random source.
pub(crate) struct RcgenSigner<'a> {
    pub(crate) key: &'a KeyPair,
    pub(crate) rng: &'a dyn SecureRandom,
}

impl rcgen::PublicKeyData for RcgenSigner<'_> {
    fn der_bytes(&self) -> &[u8] {
        self.key.ring_key().public_key().as_ref()
    }

    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        &rcgen::PKCS_ECDSA_P256_SHA256
    }
}

impl rcgen::SigningKey for RcgenSigner<'_> {
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
        self.key.sign(msg, self.rng).map_err(|_| rcgen::Error::RingUnspecified)
    }
}

/// The raw point of a P-256 subjectPublicKeyInfo; other algorithms are refused.
pub(crate) fn p256_key(spki: &x509_parser::x509::SubjectPublicKeyInfo<'_>) -> Result<PublicKey, IdentityError> {
    use x509_parser::oid_registry::{OID_EC_P256, OID_KEY_TYPE_EC_PUBLIC_KEY};
    let curve = spki.algorithm.parameters.as_ref().and_then(|p| p.as_oid().ok());
    if spki.algorithm.algorithm != OID_KEY_TYPE_EC_PUBLIC_KEY || curve != Some(OID_EC_P256) {
        return Err(IdentityError::UnsupportedKey);
    }
    Ok(PublicKey::from_bytes(&spki.subject_public_key.data))
}

#[cfg(test)]
// Tests sign with the OS's randomness: nothing they check depends on its bytes.
#[allow(clippy::disallowed_methods)]
mod tests {
    use super::*;
    use ring::rand::SystemRandom;

    #[test]
    fn sign_verify_round_trip_and_pkcs8_reload() {
        let rng = SystemRandom::new();
        let key = KeyPair::generate(&rng).unwrap();
        let sig = key.sign(b"hello", &rng).unwrap();
        assert!(key.public_key().verify(b"hello", &sig));
        assert!(!key.public_key().verify(b"hellO", &sig));
        let again = KeyPair::from_pkcs8(key.pkcs8_der(), &rng).unwrap();
        assert_eq!(again.public_key(), key.public_key());
        assert!(KeyPair::from_pkcs8(b"not a key", &rng).is_err());
    }
}
