//! What a storing node checks before keeping a record (RFC 6940 §§6.3.4, 7.3 USER-MATCH; the
//! SOSIMPLE paper's signed storage). In order, cheapest and unauthenticated first, state last
//! so that nothing about what is held is revealed to an unauthenticated writer:
//!
//! 1. size against [`StorePolicy::max_record_bytes`];
//! 2. the signer's chain up to the configured root, valid at `unix_now`;
//! 3. the record's owner is the AoR the certificate binds;
//! 4. USER-MATCH: the resource name is the owner's AoR (a mailbox message: any enrolled
//!    sender may write it, and only the mailbox's owner may delete it, `super::mailbox`);
//! 5. the signature over the record's to-be-signed bytes, by the certified key;
//! 6. expiry: not already expired, not further ahead than [`StorePolicy::max_lifetime`];
//! 7. the resource is not held by another owner, and `seq` is newer than what is held (a
//!    mailbox owner's tombstone replaces a message whatever its number; nothing replaces a
//!    tombstone);
//! 8. the owner's quota (records and bytes), counting a replacement as freeing the old copy
//!    (tombstones do not count: they are bounded by the messages they delete).
//!
//! Each refusal is its own [`StoreRefusal`] variant with a SIP status and reason phrase.

use crate::identity::{verify_chain, Aor, IdentityError, TrustAnchor, VerifiedCache, VerifiedIdentity};

use super::mailbox::parse_message_key;
use super::{Record, RecordKind};

/// Limits a storing node applies (from the overlay configuration document).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StorePolicy {
    /// Largest encoded record accepted.
    pub max_record_bytes: usize,
    /// Most records one owner may have stored on this node.
    pub max_records_per_owner: usize,
    /// Most encoded bytes one owner may have stored on this node.
    pub max_bytes_per_owner: usize,
    /// Furthest ahead of `unix_now` a record's `expires_at` may be, in seconds.
    pub max_lifetime: u64,
    /// Most records this node stores for everyone together (docs/security.md, M2).
    pub max_total_records: usize,
    /// Most encoded bytes this node stores for everyone together.
    pub max_total_bytes: usize,
}

/// Longest signer chain a record may carry, leaf included: the CA issues leaf and root, one
/// intermediate is room to spare. Longer chains are refused before any signature is checked
/// (docs/security.md, M2: a forged 45-certificate chain cost 45 verifications).
pub const MAX_CHAIN: usize = 3;

impl Default for StorePolicy {
    fn default() -> StorePolicy {
        StorePolicy {
            max_record_bytes: 16 * 1024,
            max_records_per_owner: 64,
            max_bytes_per_owner: 256 * 1024,
            max_lifetime: 7 * 86_400,
            max_total_records: 100_000,
            max_total_bytes: 64 * 1024 * 1024,
        }
    }
}

/// What one owner has stored on a node.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OwnerUsage {
    /// Records the owner stores here.
    pub records: usize,
    /// Their encoded bytes.
    pub bytes: usize,
}

/// Where chain verification comes from: the bare root, or a cache in front of it.
pub trait IdentitySource {
    /// Verifies `leaf` (with its intermediates `chain`) up to the root at `unix_now`.
    fn verify(&mut self, leaf: &[u8], chain: &[Vec<u8>], unix_now: u64) -> Result<VerifiedIdentity, IdentityError>;
}

impl IdentitySource for TrustAnchor {
    fn verify(&mut self, leaf: &[u8], chain: &[Vec<u8>], unix_now: u64) -> Result<VerifiedIdentity, IdentityError> {
        verify_chain(leaf, chain, self, unix_now)
    }
}

impl IdentitySource for VerifiedCache {
    fn verify(&mut self, leaf: &[u8], chain: &[Vec<u8>], unix_now: u64) -> Result<VerifiedIdentity, IdentityError> {
        VerifiedCache::verify(self, leaf, chain, unix_now)
    }
}

/// Why a store was refused. The peer misbehaved (or replayed) in every case; the node answers
/// with [`StoreRefusal::status_code`] and [`StoreRefusal::reason_phrase`] and counts it.
// Each variant's `#[error]` message says what it means, naming its fields.
#[allow(missing_docs)]
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreRefusal {
    #[error("record of {size} bytes exceeds the limit of {limit}")]
    TooLarge { size: usize, limit: usize },
    #[error("record carries no certificate")]
    NoCertificate,
    #[error("signer certificate is not valid at {unix_now}: {source}")]
    CertificateExpired { unix_now: u64, source: IdentityError },
    #[error("signer certificate does not chain to the configured root: {0}")]
    UntrustedCertificate(IdentityError),
    #[error("record owner {owner} is not the certificate's {certified}")]
    OwnerMismatch { owner: Aor, certified: Aor },
    #[error("resource name {key:?} is not the owner's AoR {owner} (USER-MATCH)")]
    NotUserMatch { key: String, owner: Aor },
    #[error("record signature does not verify with the certified key")]
    BadSignature,
    #[error("record expired at {expires_at} (now {unix_now})")]
    RecordExpired { expires_at: u64, unix_now: u64 },
    #[error("record expires at {expires_at}, more than {max_lifetime}s after {unix_now}")]
    LifetimeTooLong { expires_at: u64, unix_now: u64, max_lifetime: u64 },
    #[error("resource is held by {holder}")]
    HeldByOther { holder: Aor },
    #[error("sequence number {offered} is not newer than the held {held}")]
    StaleSequence { held: u64, offered: u64 },
    #[error("owner would hold {records} records / {bytes} bytes, over the quota of {max_records} / {max_bytes}")]
    OverQuota { records: usize, bytes: usize, max_records: usize, max_bytes: usize },
    #[error("signer chain of {len} certificates is longer than {MAX_CHAIN}")]
    ChainTooLong { len: usize },
    #[error("this node stores as much as it will for all owners together")]
    NodeFull,
    #[error("only {recipient} may delete messages from their mailbox")]
    NotMailboxOwner { recipient: Aor },
    #[error("the message was deleted by its recipient")]
    MessageDeleted,
}

impl StoreRefusal {
    /// The SIP status to answer the store request with (RFC 3261 §21).
    pub fn status_code(&self) -> u16 {
        match self {
            StoreRefusal::TooLarge { .. } => 413,
            // RFC 4918's 507 Insufficient Storage; a SIP client reads it as 500 (§21.5).
            StoreRefusal::NodeFull => 507,
            StoreRefusal::RecordExpired { .. } | StoreRefusal::LifetimeTooLong { .. } => 400,
            _ => 403,
        }
    }

    /// The reason phrase of [`StoreRefusal::StaleSequence`]: the holder has a newer copy.
    pub const STALE_SEQUENCE: &'static str = "Stale Sequence Number";

    /// The reason phrase of [`StoreRefusal::MessageDeleted`]: the place holds the recipient's
    /// tombstone, which is as good as the deletion the recipient asked for.
    pub const MESSAGE_DELETED: &'static str = "Message Deleted";

    /// The reason phrase for that answer: short, fixed, no peer-controlled text.
    pub fn reason_phrase(&self) -> &'static str {
        match self {
            StoreRefusal::TooLarge { .. } => "Record Too Large",
            StoreRefusal::NoCertificate => "No Certificate",
            StoreRefusal::CertificateExpired { .. } => "Certificate Expired",
            StoreRefusal::UntrustedCertificate(_) => "Certificate Not Trusted",
            StoreRefusal::OwnerMismatch { .. } => "Owner Does Not Match Certificate",
            StoreRefusal::NotUserMatch { .. } => "Resource Name Does Not Match Owner",
            StoreRefusal::BadSignature => "Bad Record Signature",
            StoreRefusal::RecordExpired { .. } => "Record Expired",
            StoreRefusal::LifetimeTooLong { .. } => "Record Lifetime Too Long",
            StoreRefusal::HeldByOther { .. } => "Resource Held By Another Owner",
            StoreRefusal::StaleSequence { .. } => StoreRefusal::STALE_SEQUENCE,
            StoreRefusal::OverQuota { .. } => "Owner Over Quota",
            StoreRefusal::ChainTooLong { .. } => "Certificate Chain Too Long",
            StoreRefusal::NodeFull => "Insufficient Storage",
            StoreRefusal::NotMailboxOwner { .. } => "Not The Mailbox Owner",
            StoreRefusal::MessageDeleted => StoreRefusal::MESSAGE_DELETED,
        }
    }
}

/// Decides whether `record` may replace `existing` (what is held under the same kind and key),
/// given what its owner already stores (`usage`, including `existing` if the owner holds it).
/// Returns the verified identity of the signer.
pub fn check_store(
    record: &Record,
    existing: Option<&Record>,
    usage: OwnerUsage,
    policy: &StorePolicy,
    unix_now: u64,
    ids: &mut dyn IdentitySource,
) -> Result<VerifiedIdentity, StoreRefusal> {
    let size = record.encoded_len();
    if size > policy.max_record_bytes {
        return Err(StoreRefusal::TooLarge { size, limit: policy.max_record_bytes });
    }

    if record.signer_chain.len() > MAX_CHAIN {
        return Err(StoreRefusal::ChainTooLong { len: record.signer_chain.len() });
    }
    let (leaf, intermediates) = record.signer_chain.split_first().ok_or(StoreRefusal::NoCertificate)?;
    let identity = ids.verify(leaf, intermediates, unix_now).map_err(|e| match e {
        IdentityError::NotValidAt { .. } => StoreRefusal::CertificateExpired { unix_now, source: e },
        other => StoreRefusal::UntrustedCertificate(other),
    })?;
    if record.owner != identity.aor {
        return Err(StoreRefusal::OwnerMismatch { owner: record.owner.clone(), certified: identity.aor });
    }
    // RFC 6940 §7.3: every kind is stored under its owner's user name, except a mailbox
    // message, stored under its recipient's by any enrolled sender (an access rule of its own,
    // as RELOAD lets each kind choose one), and deleted only by the recipient.
    if record.kind == RecordKind::OfflineMessage {
        let Some((recipient, _)) = parse_message_key(&record.key) else {
            return Err(StoreRefusal::NotUserMatch { key: record.key.clone(), owner: record.owner.clone() });
        };
        if record.is_tombstone() && record.owner != recipient {
            return Err(StoreRefusal::NotMailboxOwner { recipient });
        }
    } else if record.key != record.owner.as_str() {
        return Err(StoreRefusal::NotUserMatch { key: record.key.clone(), owner: record.owner.clone() });
    }
    let signed = record.to_be_signed().map_err(|_| StoreRefusal::BadSignature)?;
    if !identity.public_key.verify(&signed, &record.signature) {
        return Err(StoreRefusal::BadSignature);
    }

    if record.expires_at <= unix_now {
        return Err(StoreRefusal::RecordExpired { expires_at: record.expires_at, unix_now });
    }
    if record.expires_at - unix_now > policy.max_lifetime {
        return Err(StoreRefusal::LifetimeTooLong {
            expires_at: record.expires_at,
            unix_now,
            max_lifetime: policy.max_lifetime,
        });
    }

    if record.is_tombstone() {
        // Step 7 for a deletion: it replaces a message whatever its number, and it is never
        // itself replaced. Step 8 does not apply.
        if existing.is_some_and(Record::is_tombstone) {
            return Err(StoreRefusal::MessageDeleted);
        }
        return Ok(identity);
    }
    let mut records = usage.records.saturating_add(1);
    let mut bytes = usage.bytes.saturating_add(size);
    if let Some(held) = existing {
        if held.is_tombstone() {
            return Err(StoreRefusal::MessageDeleted);
        }
        if held.owner != record.owner {
            return Err(StoreRefusal::HeldByOther { holder: held.owner.clone() });
        }
        if record.seq <= held.seq {
            return Err(StoreRefusal::StaleSequence { held: held.seq, offered: record.seq });
        }
        // A replacement frees the copy it replaces.
        records = records.saturating_sub(1);
        bytes = bytes.saturating_sub(held.encoded_len());
    }
    if records > policy.max_records_per_owner || bytes > policy.max_bytes_per_owner {
        return Err(StoreRefusal::OverQuota {
            records,
            bytes,
            max_records: policy.max_records_per_owner,
            max_bytes: policy.max_bytes_per_owner,
        });
    }
    Ok(identity)
}
