//! Sealing to a user's encryption key, for offline messages (issue 15): HPKE (RFC 9180) in Base
//! mode with one suite, fixed at compile time — DHKEM(X25519, HKDF-SHA256), HKDF-SHA256,
//! ChaCha20-Poly1305 (suite ids 0x0020, 0x0001, 0x0003) — through the `hpke` crate
//! (`docs/dependencies.md` says why).
//!
//! The encryption key is an X25519 key of its own, never the P-256 certificate key: our leaf
//! certificates allow `digitalSignature` only (RFC 5280 §4.2.1.3 asks for `keyAgreement`), and
//! no proof covers one key used for both ECDSA and HPKE (NIST SP 800-57 Pt 1 §5.2: one key,
//! one purpose). Its public half travels in a record signed with the certificate key.
//!
//! Sans-IO like the rest of `identity`: the randomness a key or a seal needs comes from the
//! caller as a 32-byte seed (the daemon draws it from the OS), expanded by ChaCha20.
//!
//! A sealed message is `enc (32 bytes) ‖ ciphertext ‖ tag (16 bytes)`: 48 bytes of overhead.

use hpke::aead::ChaCha20Poly1305;
use hpke::kdf::HkdfSha256;
use hpke::kem::X25519HkdfSha256;
use hpke::{Deserializable, Kem as _, OpModeR, OpModeS, Serializable};
use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;

type Kem = X25519HkdfSha256;

/// Bytes of the encapsulated key at the front of a sealed message.
pub const ENC_LEN: usize = 32;
/// Bytes a seal adds: the encapsulated key and the AEAD tag.
pub const OVERHEAD: usize = ENC_LEN + 16;
/// The suite's ids (RFC 9180 §7): KEM, KDF, AEAD.
pub const SUITE: (u16, u16, u16) = (0x0020, 0x0001, 0x0003);

/// Why a seal or an open failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HpkeError {
    /// A key's bytes are not an X25519 key.
    #[error("not an X25519 key")]
    BadKey,
    /// Shorter than an encapsulated key and a tag.
    #[error("sealed message too short")]
    TooShort,
    /// The tag does not verify: another key, another `info` or `aad`, or tampering.
    #[error("sealed message does not open")]
    Open,
    /// Sealing failed (a degenerate key).
    #[error("could not seal")]
    Seal,
}

/// ChaCha20 over the caller's seed, as the `rand_core` 0.10 generator `hpke` asks for.
struct SeededRng(ChaCha20Rng);

impl rand_core_010::TryRng for SeededRng {
    type Error = core::convert::Infallible;

    fn try_next_u32(&mut self) -> Result<u32, Self::Error> {
        Ok(self.0.next_u32())
    }

    fn try_next_u64(&mut self) -> Result<u64, Self::Error> {
        Ok(self.0.next_u64())
    }

    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Self::Error> {
        self.0.fill_bytes(dst);
        Ok(())
    }
}

impl rand_core_010::TryCryptoRng for SeededRng {}

/// A user's encryption key pair.
pub struct EncryptionKeyPair {
    private: <Kem as hpke::Kem>::PrivateKey,
    public: <Kem as hpke::Kem>::PublicKey,
}

impl std::fmt::Debug for EncryptionKeyPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the private key.
        write!(f, "EncryptionKeyPair({})", crate::encoding::hex(&self.public_bytes()[..6]))
    }
}

impl EncryptionKeyPair {
    /// A fresh key pair from 32 bytes of the caller's randomness.
    pub fn generate(seed: [u8; 32]) -> EncryptionKeyPair {
        let (private, public) = Kem::gen_keypair_with_rng(&mut SeededRng(ChaCha20Rng::from_seed(seed)));
        EncryptionKeyPair { private, public }
    }

    /// The key pair whose private half is `bytes` (what the 0600 key file holds).
    pub fn from_private_bytes(bytes: &[u8]) -> Result<EncryptionKeyPair, HpkeError> {
        let private = <Kem as hpke::Kem>::PrivateKey::from_bytes(bytes).map_err(|_| HpkeError::BadKey)?;
        let public = Kem::sk_to_pk(&private);
        Ok(EncryptionKeyPair { private, public })
    }

    /// The private half, for the key file.
    pub fn private_bytes(&self) -> Vec<u8> {
        self.private.to_bytes().to_vec()
    }

    /// The public half, for the signed record.
    pub fn public_bytes(&self) -> Vec<u8> {
        self.public.to_bytes().to_vec()
    }

    /// Opens what [`seal`] made for this key with the same `info` and `aad`.
    pub fn open(&self, info: &[u8], aad: &[u8], sealed: &[u8]) -> Result<Vec<u8>, HpkeError> {
        if sealed.len() < OVERHEAD {
            return Err(HpkeError::TooShort);
        }
        let (enc, ciphertext) = sealed.split_at(ENC_LEN);
        let enc = <Kem as hpke::Kem>::EncappedKey::from_bytes(enc).map_err(|_| HpkeError::Open)?;
        hpke::single_shot_open::<ChaCha20Poly1305, HkdfSha256, Kem>(
            &OpModeR::Base,
            &self.private,
            &enc,
            info,
            ciphertext,
            aad,
        )
        .map_err(|_| HpkeError::Open)
    }
}

/// Seals `plaintext` to the X25519 public key `recipient` (RFC 9180 §6.1, Base mode), bound to
/// `info` (what the message is for) and `aad` (what travels beside it in the clear); `seed` is
/// 32 bytes of the caller's randomness, never used twice.
pub fn seal(recipient: &[u8], info: &[u8], aad: &[u8], plaintext: &[u8], seed: [u8; 32]) -> Result<Vec<u8>, HpkeError> {
    let public = <Kem as hpke::Kem>::PublicKey::from_bytes(recipient).map_err(|_| HpkeError::BadKey)?;
    let mut rng = SeededRng(ChaCha20Rng::from_seed(seed));
    let (enc, ciphertext) = hpke::single_shot_seal_with_rng::<ChaCha20Poly1305, HkdfSha256, Kem>(
        &OpModeS::Base,
        &public,
        info,
        plaintext,
        aad,
        &mut rng,
    )
    .map_err(|_| HpkeError::Seal)?;
    let mut out = enc.to_bytes().to_vec();
    out.extend_from_slice(&ciphertext);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_opens_only_with_the_key_info_and_aad_it_was_sealed_for() {
        let bob = EncryptionKeyPair::generate([1; 32]);
        let mallory = EncryptionKeyPair::generate([2; 32]);
        let sealed =
            seal(&bob.public_bytes(), b"p2psip-mailbox-v1", b"sip:alice@p2p.test", b"hello bob", [3; 32]).unwrap();
        assert_eq!(sealed.len(), b"hello bob".len() + OVERHEAD);
        assert_eq!(bob.open(b"p2psip-mailbox-v1", b"sip:alice@p2p.test", &sealed).unwrap(), b"hello bob");
        assert_eq!(mallory.open(b"p2psip-mailbox-v1", b"sip:alice@p2p.test", &sealed), Err(HpkeError::Open));
        assert_eq!(bob.open(b"another purpose", b"sip:alice@p2p.test", &sealed), Err(HpkeError::Open));
        assert_eq!(bob.open(b"p2psip-mailbox-v1", b"sip:mallory@p2p.test", &sealed), Err(HpkeError::Open));
        let mut tampered = sealed.clone();
        tampered[40] ^= 1;
        assert_eq!(bob.open(b"p2psip-mailbox-v1", b"sip:alice@p2p.test", &tampered), Err(HpkeError::Open));
        assert_eq!(bob.open(b"p2psip-mailbox-v1", b"", &sealed[..20]), Err(HpkeError::TooShort));
        // Another seed, another encapsulation: the same text never seals to the same bytes.
        let again =
            seal(&bob.public_bytes(), b"p2psip-mailbox-v1", b"sip:alice@p2p.test", b"hello bob", [4; 32]).unwrap();
        assert_ne!(sealed, again);
    }

    #[test]
    fn the_private_key_reloads_from_its_bytes() {
        let k = EncryptionKeyPair::generate([9; 32]);
        let again = EncryptionKeyPair::from_private_bytes(&k.private_bytes()).unwrap();
        assert_eq!(again.public_bytes(), k.public_bytes());
        assert_eq!(k.public_bytes().len(), 32);
        assert!(EncryptionKeyPair::from_private_bytes(&[1, 2, 3]).is_err());
        assert_eq!(seal(&[0; 5], b"", b"", b"x", [0; 32]), Err(HpkeError::BadKey));
        assert!(!format!("{k:?}").contains(&crate::encoding::hex(&k.private_bytes())));
    }
}
