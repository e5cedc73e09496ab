//! The overlay configuration document: what every node of one overlay must agree on, signed by
//! the overlay's root key. In the spirit of RELOAD's (RFC 6940 §11.1): the enrollment CA writes
//! it once (`p2psip ca init`), serves it at enrollment, and nodes keep it in their data
//! directory; a node refuses a document whose signature does not check against the root.
//!
//! # Encoding
//! The document is a JSON object ([`ConfigDoc`]). Its exact UTF-8 bytes are what the root key
//! signs (ECDSA P-256 / SHA-256, ASN.1 DER signature, the same as certificates). The file that
//! travels and is stored is an envelope holding those bytes *as a JSON string*, so they are never
//! re-serialised between signing and verifying, and stay readable:
//!
//! ```json
//! { "document": "{\"format\":1,\"overlay\":\"example.com\",…}",
//!   "signature_algorithm": "ecdsa-p256-sha256",
//!   "signature": "3045…" }
//! ```
//!
//! `jq -r .document overlay-config.json | jq` shows the document. The signature is lower-case
//! hex of the DER signature over exactly the bytes of `document`.
//!
//! # Replica numbers
//! A record with key K is kept at H(K) and at H(K ‖ 0x00 ‖ n) for each replica number n
//! (`store::replica`). In `public` mode the document lists the numbers (by default 1…R). In
//! `secret` mode the document holds only the SHA-256 of a 32-byte secret salt that the CA hands
//! to enrolled members alone; the numbers are derived from it ([`ReplicaPlacement::numbers`]),
//! so outsiders (who can read the public document) cannot compute where the R extra copies of
//! a record live. It is the "primitive access control" of the SOSIMPLE paper, not encryption:
//! any enrolled member can share the salt, and the primary copy at H(K) is always findable.
//!
//! Sans-IO: times are Unix seconds passed in, randomness is the caller's. Not here: fetching
//! or storing the document (`daemon::ca::files`, `daemon::files::data_dir`). A node takes the document
//! from the CA when it enrolls (`daemon::client::enroll`); it does not yet take a newer-sequence
//! one from other nodes.

use std::net::SocketAddr;
use std::time::Duration;

use ring::rand::SecureRandom;
use serde::{Deserialize, Serialize};

use crate::encoding::{hex, unhex};
use crate::identity::pem::{certificates_from_pem, certificates_to_pem};
use crate::identity::{IdentityError, KeyPair, TrustAnchor};
use crate::overlay::{ChordConfig, IdHash};
use crate::store::StorePolicy;

/// The only document format this code reads and writes.
pub const FORMAT: u32 = 1;
/// The one signature algorithm the envelope names.
pub const SIGNATURE_ALGORITHM: &str = "ecdsa-p256-sha256";
/// Most replicas (besides the primary) a document may ask for.
pub const MAX_REPLICAS: u8 = 16;
/// Length of the secret-mode salt, bytes.
pub const SECRET_LEN: usize = 32;

/// Why a configuration document was refused. All but `Signing` describe the document.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigDocError {
    /// Not the document's JSON (the parser's message).
    #[error("the configuration document is malformed: {0}")]
    Malformed(String),
    /// A format version this build does not read.
    #[error("unsupported configuration document format {0} (this build reads {FORMAT})")]
    UnsupportedFormat(u32),
    /// A signature algorithm other than ECDSA P-256/SHA-256.
    #[error("unsupported signature algorithm {0:?}")]
    UnsupportedAlgorithm(String),
    /// The signature does not verify with the root key.
    #[error("the configuration document's signature does not verify with the overlay's root key")]
    BadSignature,
    /// The document names another root than the one pinned.
    #[error("the configuration document names another root certificate")]
    OtherRoot,
    /// Outside its validity.
    #[error("the configuration document is not valid at {unix_now} (valid {not_before}..={not_after})")]
    NotValidAt {
        /// The time checked, Unix seconds.
        unix_now: u64,
        /// The start of its validity.
        not_before: u64,
        /// Its end.
        not_after: u64,
    },
    /// A setting out of range (the reason given).
    #[error("invalid configuration document: {0}")]
    Invalid(String),
    /// The replica secret given does not hash to the document's commitment.
    #[error("the replica secret does not match the document's commitment")]
    WrongSecret,
    /// Secret replica numbers, and no secret to derive them from.
    #[error("this overlay keeps its replica numbers secret; the replica secret from enrollment is missing")]
    MissingSecret,
    /// A key or certificate could not be read or used.
    #[error(transparent)]
    Identity(#[from] IdentityError),
}

/// The overlay configuration document (format 1). Field names are the JSON keys.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigDoc {
    /// Always [`FORMAT`].
    pub format: u32,
    /// The overlay's name, carried in every DHT-PeerID (`--overlay`).
    pub overlay: String,
    /// The SIP domain users are enrolled in.
    pub domain: String,
    /// Increases with every re-issue; a node keeps the highest it has seen (RFC 6940 §11.1
    /// `sequence`).
    pub sequence: u64,
    /// Validity, Unix seconds, inclusive.
    pub not_before: u64,
    /// The end of its validity.
    pub not_after: u64,
    /// The overlay's root certificate, PEM: every chain and this document check against it.
    pub root_certificate: String,
    /// How Node IDs and resource IDs are hashed: `sha1` (default) or `sha256` (truncated to
    /// 160 bits).
    pub id_hash: IdHashName,
    /// R and how the replica numbers are chosen.
    pub replicas: ReplicaPlacement,
    /// The Chord timers every node runs with.
    pub chord: ChordTimers,
    /// Overlay addresses of nodes to join through.
    pub bootstrap: Vec<SocketAddr>,
    /// Record sizes, quotas and lifetimes every storing node applies.
    pub store: StoreLimits,
    /// STUN servers every node may learn its public address from (`stun:HOST[:PORT]`); a
    /// node's own `--stun` or `[nat] stun` takes precedence. Left out of the JSON when empty,
    /// so documents made before it verify and read as before.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stun_servers: Vec<String>,
    /// TURN servers for calls' media (`turn:HOST[:PORT][?transport=…]`), without credentials:
    /// the document is public, so each node brings its own. Left out of the JSON when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub turn_servers: Vec<String>,
}

/// `id_hash` in the document.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IdHashName {
    /// SHA-1, as Chord and dSIP.
    #[default]
    Sha1,
    /// SHA-256 truncated to 160 bits.
    Sha256,
}

impl IdHashName {
    /// The hash it names.
    pub fn id_hash(self) -> IdHash {
        match self {
            IdHashName::Sha1 => IdHash::Sha1,
            IdHashName::Sha256 => IdHash::Sha256Truncated,
        }
    }
}

/// Where a record's copies go besides H(K).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "lowercase", deny_unknown_fields)]
pub enum ReplicaPlacement {
    /// The replica numbers, in the open.
    Public {
        /// R.
        count: u8,
        /// The R replica numbers.
        numbers: Vec<u64>,
    },
    /// Numbers derived from a secret only enrolled members receive; the document holds its
    /// SHA-256 (lower-case hex) so a member can check the secret it was given.
    Secret {
        /// R.
        count: u8,
        /// SHA-256 of the secret, lower-case hex.
        secret_sha256: String,
    },
}

impl ReplicaPlacement {
    /// Public numbers 1…`count`, the default (`store::replica_keys`'s numbering).
    pub fn public(count: u8) -> ReplicaPlacement {
        ReplicaPlacement::Public { count, numbers: (1..=u64::from(count)).collect() }
    }

    /// Secret mode committing to `secret`.
    pub fn secret(count: u8, secret: &[u8]) -> ReplicaPlacement {
        ReplicaPlacement::Secret {
            count,
            secret_sha256: hex(ring::digest::digest(&ring::digest::SHA256, secret).as_ref()),
        }
    }

    /// R, the number of copies besides the primary.
    pub fn count(&self) -> u8 {
        match self {
            ReplicaPlacement::Public { count, .. } | ReplicaPlacement::Secret { count, .. } => *count,
        }
    }

    /// The R replica numbers. Secret mode needs the secret from enrollment: number i (1…R) is
    /// the first 8 bytes, big-endian, of HMAC-SHA256(secret, "p2psip replica " ‖ ascii(i)).
    pub fn numbers(&self, secret: Option<&[u8]>) -> Result<Vec<u64>, ConfigDocError> {
        match self {
            ReplicaPlacement::Public { numbers, .. } => Ok(numbers.clone()),
            ReplicaPlacement::Secret { count, secret_sha256 } => {
                let secret = secret.ok_or(ConfigDocError::MissingSecret)?;
                if hex(ring::digest::digest(&ring::digest::SHA256, secret).as_ref()) != *secret_sha256 {
                    return Err(ConfigDocError::WrongSecret);
                }
                let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret);
                Ok((1..=*count)
                    .map(|i| {
                        let tag = ring::hmac::sign(&key, format!("p2psip replica {i}").as_bytes());
                        let mut n = [0u8; 8];
                        n.copy_from_slice(&tag.as_ref()[..8]);
                        u64::from_be_bytes(n)
                    })
                    .collect())
            }
        }
    }

    fn validate(&self) -> Result<(), ConfigDocError> {
        let count = self.count();
        if count > MAX_REPLICAS {
            return Err(ConfigDocError::Invalid(format!("{count} replicas is more than {MAX_REPLICAS}")));
        }
        match self {
            ReplicaPlacement::Public { numbers, .. } => {
                let distinct: std::collections::BTreeSet<_> = numbers.iter().collect();
                if numbers.len() != usize::from(count) || distinct.len() != numbers.len() || distinct.contains(&0) {
                    return Err(ConfigDocError::Invalid(format!(
                        "replica numbers must be {count} distinct numbers other than 0"
                    )));
                }
            }
            ReplicaPlacement::Secret { secret_sha256, .. } => {
                if secret_sha256.len() != 64 || !secret_sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Err(ConfigDocError::Invalid("secret_sha256 is not 64 hex digits".into()));
                }
            }
        }
        Ok(())
    }
}

/// The Chord timers every node runs with, milliseconds (`ChordConfig`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChordTimers {
    /// `ChordConfig::stabilize_interval`.
    pub stabilize_interval_ms: u64,
    /// `ChordConfig::check_predecessor_interval`.
    pub check_predecessor_interval_ms: u64,
    /// `ChordConfig::fix_fingers_interval`.
    pub fix_fingers_interval_ms: u64,
    /// `ChordConfig::rpc_timeout`.
    pub rpc_timeout_ms: u64,
    /// `ChordConfig::join_retry_interval`.
    pub join_retry_interval_ms: u64,
    /// r, the successor list's length.
    pub successor_list_len: usize,
}

impl Default for ChordTimers {
    fn default() -> ChordTimers {
        let d = ChordConfig::default();
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        ChordTimers {
            stabilize_interval_ms: ms(d.stabilize_interval),
            check_predecessor_interval_ms: ms(d.check_predecessor_interval),
            fix_fingers_interval_ms: ms(d.fix_fingers_interval),
            rpc_timeout_ms: ms(d.rpc_timeout),
            join_retry_interval_ms: ms(d.join_retry_interval),
            successor_list_len: d.successor_list_len,
        }
    }
}

impl ChordTimers {
    fn validate(&self) -> Result<(), ConfigDocError> {
        for (name, v) in [
            ("stabilize_interval_ms", self.stabilize_interval_ms),
            ("check_predecessor_interval_ms", self.check_predecessor_interval_ms),
            ("fix_fingers_interval_ms", self.fix_fingers_interval_ms),
            ("rpc_timeout_ms", self.rpc_timeout_ms),
            ("join_retry_interval_ms", self.join_retry_interval_ms),
        ] {
            if !(10..=3_600_000).contains(&v) {
                return Err(ConfigDocError::Invalid(format!("chord.{name} {v} is not between 10 and 3600000")));
            }
        }
        if !(1..=64).contains(&self.successor_list_len) {
            return Err(ConfigDocError::Invalid("chord.successor_list_len is not between 1 and 64".into()));
        }
        Ok(())
    }
}

/// Record size limits and per-owner quotas (`StorePolicy`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreLimits {
    /// `StorePolicy::max_record_bytes`.
    pub max_record_bytes: usize,
    /// `StorePolicy::max_records_per_owner`.
    pub max_records_per_owner: usize,
    /// `StorePolicy::max_bytes_per_owner`.
    pub max_bytes_per_owner: usize,
    /// `StorePolicy::max_lifetime`, seconds.
    pub max_lifetime_secs: u64,
}

impl Default for StoreLimits {
    fn default() -> StoreLimits {
        StoreLimits::from(&StorePolicy::default())
    }
}

impl From<&StorePolicy> for StoreLimits {
    fn from(p: &StorePolicy) -> StoreLimits {
        StoreLimits {
            max_record_bytes: p.max_record_bytes,
            max_records_per_owner: p.max_records_per_owner,
            max_bytes_per_owner: p.max_bytes_per_owner,
            max_lifetime_secs: p.max_lifetime,
        }
    }
}

impl StoreLimits {
    /// The policy these limits make.
    pub fn store_policy(&self) -> StorePolicy {
        StorePolicy {
            max_record_bytes: self.max_record_bytes,
            max_records_per_owner: self.max_records_per_owner,
            max_bytes_per_owner: self.max_bytes_per_owner,
            max_lifetime: self.max_lifetime_secs,
            // The node-wide totals are each node's own (its disk and memory), not the overlay's.
            ..StorePolicy::default()
        }
    }
}

/// The envelope, as stored and served.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Envelope {
    document: String,
    signature_algorithm: String,
    signature: String,
}

impl ConfigDoc {
    /// A format-1 document for `domain` under `root_der`, with every other field at its
    /// default: overlay named after the domain, SHA-1, 3 public replicas, `ChordConfig`'s
    /// timers, no bootstrap peers, `StorePolicy`'s limits, sequence 1.
    pub fn new(domain: &str, root_der: &[u8], not_before: u64, not_after: u64) -> ConfigDoc {
        ConfigDoc {
            format: FORMAT,
            overlay: domain.to_owned(),
            domain: domain.to_owned(),
            sequence: 1,
            not_before,
            not_after,
            root_certificate: certificates_to_pem(&[root_der.to_vec()]),
            id_hash: IdHashName::Sha1,
            replicas: ReplicaPlacement::public(3),
            chord: ChordTimers::default(),
            bootstrap: Vec::new(),
            store: StoreLimits::default(),
            stun_servers: Vec::new(),
            turn_servers: Vec::new(),
        }
    }

    /// Checks what the types alone do not.
    pub fn validate(&self) -> Result<(), ConfigDocError> {
        if self.format != FORMAT {
            return Err(ConfigDocError::UnsupportedFormat(self.format));
        }
        if self.overlay.is_empty() || self.overlay.contains(|c: char| c.is_whitespace() || matches!(c, ';' | '"' | ','))
        {
            return Err(ConfigDocError::Invalid(format!("{:?} is not an overlay name", self.overlay)));
        }
        if self.domain.is_empty() || self.domain.contains(|c: char| c.is_whitespace() || c == '@') {
            return Err(ConfigDocError::Invalid(format!("{:?} is not a domain name", self.domain)));
        }
        if self.not_before > self.not_after {
            return Err(ConfigDocError::Invalid("not_before is after not_after".into()));
        }
        if self.store.max_record_bytes == 0 || self.store.max_records_per_owner == 0 {
            return Err(ConfigDocError::Invalid("store limits must not be zero".into()));
        }
        self.replicas.validate()?;
        self.chord.validate()?;
        for uri in &self.stun_servers {
            crate::nat::stun::parse_uri(uri).map_err(ConfigDocError::Invalid)?;
        }
        for uri in &self.turn_servers {
            crate::nat::turn::parse_uri(uri).map_err(ConfigDocError::Invalid)?;
        }
        self.root_der().map(drop)
    }

    /// The root certificate the document names, DER.
    pub fn root_der(&self) -> Result<Vec<u8>, ConfigDocError> {
        let mut certs = certificates_from_pem(self.root_certificate.as_bytes())?;
        match (certs.pop(), certs.is_empty()) {
            (Some(root), true) => Ok(root),
            _ => Err(ConfigDocError::Invalid("root_certificate must hold exactly one certificate".into())),
        }
    }

    /// The Chord configuration these timers and this ID hash give, over `ChordConfig`'s other
    /// defaults.
    pub fn chord_config(&self) -> ChordConfig {
        let ms = Duration::from_millis;
        ChordConfig {
            stabilize_interval: ms(self.chord.stabilize_interval_ms),
            check_predecessor_interval: ms(self.chord.check_predecessor_interval_ms),
            fix_fingers_interval: ms(self.chord.fix_fingers_interval_ms),
            rpc_timeout: ms(self.chord.rpc_timeout_ms),
            join_retry_interval: ms(self.chord.join_retry_interval_ms),
            successor_list_len: self.chord.successor_list_len,
            id_hash: self.id_hash.id_hash(),
            ..ChordConfig::default()
        }
    }

    /// Validates the document and signs its JSON bytes with the root `key`; returns the
    /// envelope's bytes (the file `overlay-config.json`).
    pub fn sign(&self, key: &KeyPair, rng: &dyn SecureRandom) -> Result<Vec<u8>, ConfigDocError> {
        self.validate()?;
        let root = TrustAnchor::new(self.root_der()?)?;
        if root.public_key()? != key.public_key() {
            return Err(ConfigDocError::OtherRoot);
        }
        let document = serde_json::to_string(self).map_err(|e| ConfigDocError::Malformed(e.to_string()))?;
        let signature = key.sign(document.as_bytes(), rng)?;
        let envelope =
            Envelope { document, signature_algorithm: SIGNATURE_ALGORITHM.into(), signature: hex(&signature) };
        let mut out = serde_json::to_vec_pretty(&envelope).map_err(|e| ConfigDocError::Malformed(e.to_string()))?;
        out.push(b'\n');
        Ok(out)
    }

    /// Parses an envelope, checks its signature with `root`'s key, that the document names
    /// `root` itself, is valid at `unix_now`, and is a sound format-1 document.
    pub fn verify(envelope: &[u8], root: &TrustAnchor, unix_now: u64) -> Result<ConfigDoc, ConfigDocError> {
        let envelope: Envelope =
            serde_json::from_slice(envelope).map_err(|e| ConfigDocError::Malformed(e.to_string()))?;
        if envelope.signature_algorithm != SIGNATURE_ALGORITHM {
            return Err(ConfigDocError::UnsupportedAlgorithm(envelope.signature_algorithm));
        }
        let signature = unhex(&envelope.signature).ok_or(ConfigDocError::BadSignature)?;
        // The signature first: nothing of an unauthenticated document is interpreted.
        if !root.public_key()?.verify(envelope.document.as_bytes(), &signature) {
            return Err(ConfigDocError::BadSignature);
        }
        let doc: ConfigDoc =
            serde_json::from_str(&envelope.document).map_err(|e| ConfigDocError::Malformed(e.to_string()))?;
        doc.validate()?;
        if doc.root_der()? != root.der() {
            return Err(ConfigDocError::OtherRoot);
        }
        if unix_now < doc.not_before || unix_now > doc.not_after {
            return Err(ConfigDocError::NotValidAt { unix_now, not_before: doc.not_before, not_after: doc.not_after });
        }
        Ok(doc)
    }
}

#[cfg(test)]
// Tests sign with the OS's randomness: nothing they check depends on its bytes.
#[allow(clippy::disallowed_methods)]
mod tests {
    use ring::rand::SystemRandom;

    use super::*;
    use crate::enrollment::EnrollmentCa;

    const NOW: u64 = 1_800_000_000;

    fn ca(rng: &SystemRandom) -> EnrollmentCa {
        let key = KeyPair::generate(rng).unwrap();
        EnrollmentCa::create("example.com", key, NOW - 10, NOW + 86_400, rng).unwrap()
    }

    fn signed(rng: &SystemRandom) -> (EnrollmentCa, ConfigDoc, Vec<u8>) {
        let ca = ca(rng);
        let mut doc = ConfigDoc::new("example.com", ca.root_der(), NOW - 10, NOW + 3600);
        doc.bootstrap = vec!["127.0.0.1:5070".parse().unwrap()];
        let bytes = doc.sign(ca.key(), rng).unwrap();
        (ca, doc, bytes)
    }

    #[test]
    fn signs_and_verifies_round_trip() {
        let rng = SystemRandom::new();
        let (ca, doc, bytes) = signed(&rng);
        let root = ca.trust_anchor().unwrap();
        assert_eq!(ConfigDoc::verify(&bytes, &root, NOW).unwrap(), doc);
        assert_eq!(doc.chord_config(), ChordConfig::default());
        assert_eq!(doc.store.store_policy(), StorePolicy::default());
        assert_eq!(doc.replicas.numbers(None).unwrap(), vec![1, 2, 3]);
        // The envelope is readable JSON whose document is itself JSON.
        let envelope: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        let inner: serde_json::Value = serde_json::from_str(envelope["document"].as_str().unwrap()).unwrap();
        assert_eq!(inner["domain"], "example.com");
    }

    #[test]
    fn refuses_a_flipped_bit_anywhere_in_document_or_signature() {
        let rng = SystemRandom::new();
        let (ca, _, bytes) = signed(&rng);
        let root = ca.trust_anchor().unwrap();
        let envelope: Envelope = serde_json::from_slice(&bytes).unwrap();
        for i in (0..envelope.document.len()).step_by(7) {
            let mut doc = envelope.document.clone().into_bytes();
            doc[i] ^= 0x01;
            let Ok(document) = String::from_utf8(doc) else { continue };
            let tampered = Envelope { document, ..envelope.clone() };
            let out = serde_json::to_vec(&tampered).unwrap();
            assert_eq!(ConfigDoc::verify(&out, &root, NOW), Err(ConfigDocError::BadSignature), "byte {i}");
        }
        let mut sig = unhex(&envelope.signature).unwrap();
        let last = sig.len() - 1;
        sig[last] ^= 0x80;
        let tampered = Envelope { signature: hex(&sig), ..envelope };
        let out = serde_json::to_vec(&tampered).unwrap();
        assert_eq!(ConfigDoc::verify(&out, &root, NOW), Err(ConfigDocError::BadSignature));
    }

    #[test]
    fn refuses_another_root_and_truncation() {
        let rng = SystemRandom::new();
        let (_, _, bytes) = signed(&rng);
        let other = ca(&rng).trust_anchor().unwrap();
        assert_eq!(ConfigDoc::verify(&bytes, &other, NOW), Err(ConfigDocError::BadSignature));
        let (ca, _, _) = signed(&rng);
        let root = ca.trust_anchor().unwrap();
        for len in [0, 1, bytes.len() / 2, bytes.len() - 3] {
            assert!(ConfigDoc::verify(&bytes[..len], &root, NOW).is_err(), "truncated to {len}");
        }
        // Signed by the right key but naming another root: refused too.
        let mut doc = ConfigDoc::new("example.com", other.der(), NOW - 10, NOW + 3600);
        doc.sequence = 2;
        assert_eq!(doc.sign(ca.key(), &rng), Err(ConfigDocError::OtherRoot));
    }

    #[test]
    fn refuses_outside_validity_and_unsound_documents() {
        let rng = SystemRandom::new();
        let (ca, mut doc, bytes) = signed(&rng);
        let root = ca.trust_anchor().unwrap();
        assert!(matches!(ConfigDoc::verify(&bytes, &root, NOW + 3601), Err(ConfigDocError::NotValidAt { .. })));
        assert!(matches!(ConfigDoc::verify(&bytes, &root, NOW - 11), Err(ConfigDocError::NotValidAt { .. })));
        doc.replicas = ReplicaPlacement::Public { count: 2, numbers: vec![1, 1] };
        assert!(matches!(doc.sign(ca.key(), &rng), Err(ConfigDocError::Invalid(_))));
        doc.replicas = ReplicaPlacement::public(3);
        doc.chord.stabilize_interval_ms = 0;
        assert!(matches!(doc.sign(ca.key(), &rng), Err(ConfigDocError::Invalid(_))));
    }

    #[test]
    fn secret_replica_numbers_need_the_right_secret() {
        let secret = [7u8; SECRET_LEN];
        let placement = ReplicaPlacement::secret(4, &secret);
        let numbers = placement.numbers(Some(&secret)).unwrap();
        assert_eq!(numbers.len(), 4);
        assert_eq!(numbers.iter().collect::<std::collections::BTreeSet<_>>().len(), 4);
        assert_eq!(placement.numbers(None), Err(ConfigDocError::MissingSecret));
        assert_eq!(placement.numbers(Some(&[8u8; SECRET_LEN])), Err(ConfigDocError::WrongSecret));
        assert_eq!(ReplicaPlacement::secret(4, &[9u8; SECRET_LEN]).numbers(Some(&[9u8; SECRET_LEN])).unwrap().len(), 4);
        assert_ne!(ReplicaPlacement::secret(4, &[9u8; SECRET_LEN]).numbers(Some(&[9u8; SECRET_LEN])).unwrap(), numbers);
    }
}
