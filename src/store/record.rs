//! Signed records and their canonical encoding (version 1).
//!
//! A record is signed by its owner over the exact bytes of its *to-be-signed* part; a storing
//! node verifies those same bytes, so no re-serialisation can change what was signed. Layout
//! (all integers big-endian; strings UTF-8, the owner in canonical [`Aor`] spelling):
//!
//! ```text
//! to-be-signed:  "p2pR" | version u8 = 1 | kind u8 | key_len u16 | key
//!                | owner_len u16 | owner | seq u64 | expires_at u64 (Unix s)
//!                | payload_len u32 | payload
//! wire:          to-be-signed | sig_len u16 | signature (ECDSA P-256/SHA-256, ASN.1 DER)
//!                | chain_count u8 | (cert_len u32 | cert DER)*   leaf first
//! ```
//!
//! The signer's chain travels inline with the record (RFC 6940 §6.3.4 carries certificates in
//! the message the same way); referring to a stored `CertificateChain` record by hash is later
//! work. Decoding never panics and reports the byte offset of what it could not read.

use std::fmt;

use ring::rand::SecureRandom;

use crate::identity::{Aor, IdentityError, KeyPair};

const MAGIC: &[u8; 4] = b"p2pR";
/// The encoding version written and accepted.
pub const VERSION: u8 = 1;

/// What a record holds. The code byte is part of the signed bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RecordKind {
    /// The owner's certificate chain (payload: the chain, same framing as the wire's chain).
    CertificateChain,
    /// AoR → contacts ([`super::Registration`] as JSON).
    Registration,
    /// Reserved for presence (a later issue).
    Presence,
    /// One sealed message in a user's mailbox, or its deletion by that user (`super::mailbox`).
    OfflineMessage,
    /// The owner's X25519 public key that offline messages are sealed to
    /// ([`super::EncryptionKey`]).
    EncryptionKey,
}

impl RecordKind {
    /// Every kind, in code order.
    pub const ALL: [RecordKind; 5] = [
        RecordKind::CertificateChain,
        RecordKind::Registration,
        RecordKind::Presence,
        RecordKind::OfflineMessage,
        RecordKind::EncryptionKey,
    ];

    /// The kind's byte in the record encoding and in `DHT-Resource`.
    pub fn code(self) -> u8 {
        match self {
            RecordKind::CertificateChain => 1,
            RecordKind::Registration => 2,
            RecordKind::Presence => 3,
            RecordKind::OfflineMessage => 4,
            RecordKind::EncryptionKey => 5,
        }
    }

    /// The kind a code names, if any.
    pub fn from_code(code: u8) -> Option<RecordKind> {
        Some(match code {
            1 => RecordKind::CertificateChain,
            2 => RecordKind::Registration,
            3 => RecordKind::Presence,
            4 => RecordKind::OfflineMessage,
            5 => RecordKind::EncryptionKey,
            _ => return None,
        })
    }
}

/// A signed record as stored and sent.
#[derive(Clone, PartialEq, Eq)]
pub struct Record {
    /// What the record holds.
    pub kind: RecordKind,
    /// The resource name (for USER-MATCH kinds, the owner's AoR text).
    pub key: String,
    /// The AoR whose key signed it.
    pub owner: Aor,
    /// Strictly increasing per (kind, key); a store refuses anything not newer than it holds.
    pub seq: u64,
    /// Unix seconds after which the record is gone.
    pub expires_at: u64,
    /// The kind's content (JSON for registrations, DER for chains).
    pub payload: Vec<u8>,
    /// ECDSA P-256/SHA-256 over [`Record::to_be_signed`], by the owner's certified key.
    pub signature: Vec<u8>,
    /// The owner's certificate, then its intermediates (the root may be left out).
    pub signer_chain: Vec<Vec<u8>>,
}

/// Everything of a record except the signature and chain: what the owner signs.
#[derive(Debug, Clone)]
pub struct Unsigned {
    /// See [`Record::kind`].
    pub kind: RecordKind,
    /// See [`Record::key`].
    pub key: String,
    /// See [`Record::owner`].
    pub owner: Aor,
    /// See [`Record::seq`].
    pub seq: u64,
    /// See [`Record::expires_at`].
    pub expires_at: u64,
    /// See [`Record::payload`].
    pub payload: Vec<u8>,
}

impl Unsigned {
    /// Signs with the owner's key and attaches the chain.
    pub fn sign(self, key: &KeyPair, signer_chain: Vec<Vec<u8>>, rng: &dyn SecureRandom) -> Result<Record, SignError> {
        let mut record = Record {
            kind: self.kind,
            key: self.key,
            owner: self.owner,
            seq: self.seq,
            expires_at: self.expires_at,
            payload: self.payload,
            signature: Vec::new(),
            signer_chain,
        };
        let tbs = record.to_be_signed()?;
        record.signature = key.sign(&tbs, rng)?;
        Ok(record)
    }
}

/// Why a record could not be signed: a field does not fit the encoding, or the key failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignError {
    /// A field does not fit the encoding.
    #[error(transparent)]
    Encoding(#[from] DecodeError),
    /// The key could not sign.
    #[error(transparent)]
    Key(#[from] IdentityError),
}

/// A field too long for its length prefix, or bytes that are not a record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// A field longer than its length prefix can say.
    #[error("{what} is too long for its length field")]
    TooLong {
        /// The field.
        what: &'static str,
    },
    /// Bytes that are not a record.
    #[error("at byte {offset}: {what}")]
    Malformed {
        /// Where it went wrong.
        offset: usize,
        /// What was expected there.
        what: &'static str,
    },
}

impl Record {
    /// A mailbox owner's deletion of one message: an `OfflineMessage` record with no payload
    /// (`super::mailbox`).
    pub fn is_tombstone(&self) -> bool {
        self.kind == RecordKind::OfflineMessage && self.payload.is_empty()
    }

    /// The name the record's places derive from: its resource name, except that a mailbox
    /// message is placed at its recipient's AoR (`super::mailbox::placement_key`).
    pub fn placement_key(&self) -> &str {
        super::mailbox::placement_key(self.kind, &self.key)
    }

    /// The exact bytes the signature covers.
    pub fn to_be_signed(&self) -> Result<Vec<u8>, DecodeError> {
        let mut out = Vec::with_capacity(40 + self.key.len() + self.payload.len());
        out.extend_from_slice(MAGIC);
        out.push(VERSION);
        out.push(self.kind.code());
        put_u16_bytes(&mut out, self.key.as_bytes(), "key")?;
        put_u16_bytes(&mut out, self.owner.as_str().as_bytes(), "owner")?;
        out.extend_from_slice(&self.seq.to_be_bytes());
        out.extend_from_slice(&self.expires_at.to_be_bytes());
        let len = u32::try_from(self.payload.len()).map_err(|_| DecodeError::TooLong { what: "payload" })?;
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(&self.payload);
        Ok(out)
    }

    /// The wire encoding.
    pub fn encode(&self) -> Result<Vec<u8>, DecodeError> {
        let mut out = self.to_be_signed()?;
        put_u16_bytes(&mut out, &self.signature, "signature")?;
        out.extend_from_slice(&encode_chain(&self.signer_chain)?);
        Ok(out)
    }

    /// Size on the wire, what size limits and quotas count, computed without encoding (quota
    /// checks sum it over every record held). Unencodable records count as `usize::MAX` so that
    /// every limit refuses them.
    pub fn encoded_len(&self) -> usize {
        let fits = self.key.len() <= usize::from(u16::MAX)
            && self.owner.as_str().len() <= usize::from(u16::MAX)
            && u32::try_from(self.payload.len()).is_ok()
            && self.signature.len() <= usize::from(u16::MAX)
            && self.signer_chain.len() <= usize::from(u8::MAX)
            && self.signer_chain.iter().all(|c| u32::try_from(c.len()).is_ok());
        if !fits {
            return usize::MAX;
        }
        let to_be_signed = MAGIC.len() + 2 + 2 + self.key.len() + 2 + self.owner.as_str().len() + 8 + 8 + 4;
        let chain: usize = self.signer_chain.iter().map(|c| 4 + c.len()).sum();
        to_be_signed + self.payload.len() + 2 + self.signature.len() + 1 + chain
    }

    /// Reads a wire encoding; the whole input must be one record.
    pub fn decode(bytes: &[u8]) -> Result<Record, DecodeError> {
        let mut r = Reader { bytes, offset: 0 };
        if r.take(4, "magic")? != MAGIC {
            return Err(r.malformed_at(0, "not a p2psip record"));
        }
        let version_at = r.offset;
        if r.u8("version")? != VERSION {
            return Err(r.malformed_at(version_at, "unknown record version"));
        }
        let kind_at = r.offset;
        let kind = RecordKind::from_code(r.u8("kind")?).ok_or(r.malformed_at(kind_at, "unknown kind"))?;
        let key = r.string16("key")?;
        let owner_at = r.offset;
        let owner = Aor::parse(&r.string16("owner")?).map_err(|_| r.malformed_at(owner_at, "owner is not an AoR"))?;
        let seq = r.u64("seq")?;
        let expires_at = r.u64("expires_at")?;
        let payload_len = r.u32("payload length")? as usize;
        let payload = r.take(payload_len, "payload")?.to_vec();
        let sig_len = r.u16("signature length")? as usize;
        let signature = r.take(sig_len, "signature")?.to_vec();
        let signer_chain = decode_chain_from(&mut r)?;
        if r.offset != bytes.len() {
            return Err(r.malformed_at(r.offset, "trailing bytes"));
        }
        Ok(Record { kind, key, owner, seq, expires_at, payload, signature, signer_chain })
    }
}

impl fmt::Debug for Record {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Record")
            .field("kind", &self.kind)
            .field("key", &self.key)
            .field("owner", &self.owner)
            .field("seq", &self.seq)
            .field("expires_at", &self.expires_at)
            .field("payload_len", &self.payload.len())
            .field("signature_len", &self.signature.len())
            .field("chain_len", &self.signer_chain.len())
            .finish()
    }
}

/// `chain_count u8 | (cert_len u32 | cert)*`: the chain framing shared by the wire and by
/// `CertificateChain` payloads.
pub fn encode_chain(chain: &[Vec<u8>]) -> Result<Vec<u8>, DecodeError> {
    let count = u8::try_from(chain.len()).map_err(|_| DecodeError::TooLong { what: "chain" })?;
    let mut out = vec![count];
    for cert in chain {
        let len = u32::try_from(cert.len()).map_err(|_| DecodeError::TooLong { what: "certificate" })?;
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(cert);
    }
    Ok(out)
}

/// Reads [`encode_chain`]'s framing; the whole input must be the chain.
pub fn decode_chain(bytes: &[u8]) -> Result<Vec<Vec<u8>>, DecodeError> {
    let mut r = Reader { bytes, offset: 0 };
    let chain = decode_chain_from(&mut r)?;
    if r.offset != bytes.len() {
        return Err(r.malformed_at(r.offset, "trailing bytes"));
    }
    Ok(chain)
}

fn decode_chain_from(r: &mut Reader<'_>) -> Result<Vec<Vec<u8>>, DecodeError> {
    let count = r.u8("chain count")?;
    let mut chain = Vec::with_capacity(usize::from(count));
    for _ in 0..count {
        let len = r.u32("certificate length")? as usize;
        chain.push(r.take(len, "certificate")?.to_vec());
    }
    Ok(chain)
}

fn put_u16_bytes(out: &mut Vec<u8>, bytes: &[u8], what: &'static str) -> Result<(), DecodeError> {
    let len = u16::try_from(bytes.len()).map_err(|_| DecodeError::TooLong { what })?;
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(bytes);
    Ok(())
}

struct Reader<'a> {
    bytes: &'a [u8],
    offset: usize,
}

impl<'a> Reader<'a> {
    fn malformed_at(&self, offset: usize, what: &'static str) -> DecodeError {
        DecodeError::Malformed { offset, what }
    }

    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], DecodeError> {
        let end = self.offset.checked_add(n).filter(|&end| end <= self.bytes.len());
        match end {
            Some(end) => {
                let out = &self.bytes[self.offset..end];
                self.offset = end;
                Ok(out)
            }
            None => Err(self.malformed_at(self.offset, what)),
        }
    }

    fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], DecodeError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N, what)?);
        Ok(out)
    }

    fn u8(&mut self, what: &'static str) -> Result<u8, DecodeError> {
        Ok(self.array::<1>(what)?[0])
    }
    fn u16(&mut self, what: &'static str) -> Result<u16, DecodeError> {
        Ok(u16::from_be_bytes(self.array(what)?))
    }
    fn u32(&mut self, what: &'static str) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes(self.array(what)?))
    }
    fn u64(&mut self, what: &'static str) -> Result<u64, DecodeError> {
        Ok(u64::from_be_bytes(self.array(what)?))
    }
    fn string16(&mut self, what: &'static str) -> Result<String, DecodeError> {
        let at = self.offset;
        let len = self.u16(what)? as usize;
        let bytes = self.take(len, what)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| self.malformed_at(at, "not UTF-8"))
    }
}
