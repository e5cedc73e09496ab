//! Payloads of the record kinds that have one defined so far.
//!
//! A registration maps an AoR to the contacts where its user can be reached, each with its own
//! expiry (RFC 3261 §10.3 semantics, carried in the overlay instead of a registrar). Encoded as
//! JSON; the signature covers the record's payload bytes as sent, so the JSON need not be
//! canonical.

use serde::{Deserialize, Serialize};

/// One contact of a registration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Contact {
    /// A SIP URI where the AoR's user agent is reached (through its node).
    pub uri: String,
    /// Unix seconds.
    pub expires_at: u64,
}

/// The payload of a `Registration` record.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registration {
    /// Where the user can be reached.
    pub contacts: Vec<Contact>,
}

impl Registration {
    /// The JSON payload a record carries.
    pub fn to_payload(&self) -> Vec<u8> {
        // Serialising plain strings and integers cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Reads a registration back from a record's payload.
    pub fn from_payload(bytes: &[u8]) -> Result<Registration, serde_json::Error> {
        serde_json::from_slice(bytes)
    }

    /// The contacts still valid at `unix_now`.
    pub fn live_contacts(&self, unix_now: u64) -> impl Iterator<Item = &Contact> {
        self.contacts.iter().filter(move |c| c.expires_at > unix_now)
    }
}

/// The payload of an `EncryptionKey` record: the owner's X25519 public key and the HPKE suite
/// it is for (RFC 9180 §7's identifiers), so a later suite can sit beside this one.
///
/// ```text
/// "p2pK" | kem u16 | kdf u16 | aead u16 | key_len u16 | key      (big-endian)
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncryptionKey {
    /// (KEM, KDF, AEAD) identifiers.
    pub suite: (u16, u16, u16),
    /// The public key as the KEM serialises it.
    pub public: Vec<u8>,
}

const KEY_MAGIC: &[u8; 4] = b"p2pK";

impl EncryptionKey {
    /// The key of `public` in the one suite this version seals with
    /// ([`crate::identity::hpke::SUITE`]).
    pub fn x25519(public: Vec<u8>) -> EncryptionKey {
        EncryptionKey { suite: crate::identity::hpke::SUITE, public }
    }

    /// The payload bytes.
    pub fn to_payload(&self) -> Vec<u8> {
        let mut out = KEY_MAGIC.to_vec();
        for id in [self.suite.0, self.suite.1, self.suite.2] {
            out.extend_from_slice(&id.to_be_bytes());
        }
        out.extend_from_slice(&u16::try_from(self.public.len()).unwrap_or(0).to_be_bytes());
        out.extend_from_slice(&self.public);
        out
    }

    /// Reads a payload back; `None` unless it is exactly one key.
    pub fn from_payload(bytes: &[u8]) -> Option<EncryptionKey> {
        let rest = bytes.strip_prefix(KEY_MAGIC)?;
        let u16_at = |i: usize| Some(u16::from_be_bytes([*rest.get(i)?, *rest.get(i + 1)?]));
        let suite = (u16_at(0)?, u16_at(2)?, u16_at(4)?);
        let len = usize::from(u16_at(6)?);
        let public = rest.get(8..)?;
        (public.len() == len).then(|| EncryptionKey { suite, public: public.to_vec() })
    }
}
