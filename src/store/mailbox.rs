//! A user's mailbox in the overlay: the offline messages others sealed to the user's
//! encryption key (issue 15; `docs/storage-over-sip.md`, "Mailboxes").
//!
//! Each message is one `OfflineMessage` record, signed by its **sender**, whose resource name
//! is the recipient's AoR with the message's ID as a URI parameter,
//! `sip:bob@example.org;msg=<32 hex digits>`, and which is placed at the recipient's AoR
//! ([`placement_key`]): every message of a mailbox lives at the same R+1 places as the
//! recipient's own records, so the nodes that hold a mailbox also hold the recipient's
//! encryption-key record, which is how they know the recipient is enrolled.
//!
//! Only the recipient deletes: a **tombstone** is an `OfflineMessage` record under the same
//! name with no payload, signed by the recipient. It replaces the message whatever its sequence
//! number, nothing replaces it, and it lives as long as the message would have, so no copy of
//! the message handed on or repaired later brings it back.
//!
//! What a storing node enforces beyond [`super::check_store`] is [`check_mailbox`]'s: the
//! recipient enrolled, per-mailbox and per-sender quotas, a size limit and a node-wide total,
//! each refusal with its own reason ([`MailboxRefusal`]). The figures and why are in
//! [`MailboxLimits`].

use super::{Record, RecordKind, Store};
use crate::identity::Aor;

/// The URI parameter of a message's resource name that carries its ID.
pub const MESSAGE_PARAM: &str = "msg";

/// A message's ID: 16 random bytes chosen by the sender's node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MessageId(pub [u8; 16]);

impl MessageId {
    /// The 32 lower-case hex digits the resource name carries.
    pub fn to_hex(&self) -> String {
        crate::encoding::hex(&self.0)
    }

    /// Reads [`MessageId::to_hex`]'s form (lower case only, so one ID has one spelling).
    pub fn from_hex(text: &str) -> Option<MessageId> {
        if text.len() != 32 || !text.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
            return None;
        }
        let mut out = [0u8; 16];
        for (i, byte) in out.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok()?;
        }
        Some(MessageId(out))
    }
}

impl std::fmt::Display for MessageId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// The resource name of message `id` in `recipient`'s mailbox.
pub fn message_key(recipient: &Aor, id: &MessageId) -> String {
    format!("{recipient};{MESSAGE_PARAM}={}", id.to_hex())
}

/// The prefix every message key of `recipient`'s mailbox starts with (`recipient` an AoR's
/// text).
pub fn mailbox_prefix(recipient: &str) -> String {
    format!("{recipient};{MESSAGE_PARAM}=")
}

/// The recipient and ID a message key names; `None` for anything else (the AoR must be in its
/// canonical spelling, the ID in lower-case hex, nothing after it).
pub fn parse_message_key(key: &str) -> Option<(Aor, MessageId)> {
    let (aor, id) = key.rsplit_once(&format!(";{MESSAGE_PARAM}="))?;
    let recipient = Aor::parse(aor).ok()?;
    (recipient.as_str() == aor).then_some(())?;
    Some((recipient, MessageId::from_hex(id)?))
}

/// The name a record of `kind` named `key` is placed by: the recipient's AoR for a mailbox
/// message, the name itself for every other kind (and for a mailbox listing, whose name is
/// the recipient's AoR already).
pub fn placement_key(kind: RecordKind, key: &str) -> &str {
    if kind != RecordKind::OfflineMessage {
        return key;
    }
    match key.rsplit_once(&format!(";{MESSAGE_PARAM}=")) {
        Some((aor, _)) => aor,
        None => key,
    }
}

/// What one storing node keeps for mailboxes. The defaults follow what deployed systems chose
/// (`docs/storage-over-sip.md`, "Mailboxes"; the research in the issue): an XMPP server's
/// offline queue is typically capped at 100 messages per user, SMS centres keep an undelivered
/// message for up to a week, and a text message is short.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MailboxLimits {
    /// Messages one mailbox holds at most.
    pub max_messages: usize,
    /// Encoded bytes one mailbox holds at most.
    pub max_bytes: usize,
    /// Messages one sender may have waiting in one mailbox.
    pub max_per_sender: usize,
    /// Largest message record (its sender's chain included).
    pub max_record_bytes: usize,
    /// Encoded bytes of every mailbox this node holds together: mail never crowds out the
    /// registrations and keys the overlay needs to work.
    pub max_node_bytes: usize,
}

/// The body a sender's node seals at most: a MESSAGE body larger than this gets `413`.
pub const MAX_BODY_BYTES: usize = 4096;

impl Default for MailboxLimits {
    fn default() -> MailboxLimits {
        MailboxLimits {
            max_messages: 100,
            max_bytes: 256 * 1024,
            max_per_sender: 20,
            // A 4 KiB body sealed (+ 48 bytes), its headers, the record's fields and a
            // two-certificate chain fit in 8 KiB.
            max_record_bytes: 8 * 1024,
            max_node_bytes: 16 * 1024 * 1024,
        }
    }
}

/// Why a storing node refused a message. Each has its SIP status and a fixed reason phrase;
/// the sender's node reads the phrase back ([`MailboxRefusal::from_reason`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MailboxRefusal {
    /// This node holds no encryption-key record for the recipient.
    #[error("the recipient is not enrolled (no encryption key held)")]
    NotEnrolled,
    /// The mailbox holds as many messages or bytes as it may.
    #[error("the mailbox is full")]
    MailboxFull,
    /// The sender has as many messages waiting in this mailbox as it may.
    #[error("the sender has too many messages waiting in this mailbox")]
    SenderQuota,
    /// The message record is larger than [`MailboxLimits::max_record_bytes`].
    #[error("the message is too large")]
    TooLarge,
    /// This node holds as much mail as it will for everyone together.
    #[error("this node holds as much mail as it will")]
    NodeFull,
}

impl MailboxRefusal {
    /// Every refusal, for reading reasons back.
    const ALL: [MailboxRefusal; 5] = [
        MailboxRefusal::NotEnrolled,
        MailboxRefusal::MailboxFull,
        MailboxRefusal::SenderQuota,
        MailboxRefusal::TooLarge,
        MailboxRefusal::NodeFull,
    ];

    /// The SIP status the store request is answered with.
    pub fn status_code(&self) -> u16 {
        match self {
            MailboxRefusal::NotEnrolled => 404,
            MailboxRefusal::TooLarge => 413,
            MailboxRefusal::NodeFull => 507,
            MailboxRefusal::MailboxFull | MailboxRefusal::SenderQuota => 403,
        }
    }

    /// The reason phrase: fixed, no peer-controlled text.
    pub fn reason_phrase(&self) -> &'static str {
        match self {
            MailboxRefusal::NotEnrolled => "Recipient Not Enrolled",
            MailboxRefusal::MailboxFull => "Mailbox Full",
            MailboxRefusal::SenderQuota => "Sender Quota Exceeded",
            MailboxRefusal::TooLarge => "Message Too Large",
            MailboxRefusal::NodeFull => "Mail Storage Full",
        }
    }

    /// The refusal a reason phrase names, if any.
    pub fn from_reason(reason: &str) -> Option<MailboxRefusal> {
        MailboxRefusal::ALL.into_iter().find(|r| r.reason_phrase().eq_ignore_ascii_case(reason))
    }
}

/// Every record (messages and tombstones) of `recipient`'s mailbox that `store` holds.
pub fn mailbox<'a>(store: &'a dyn Store, recipient: &Aor) -> Vec<&'a Record> {
    let prefix = mailbox_prefix(recipient.as_str());
    store.with_prefix(RecordKind::OfflineMessage, &prefix).collect()
}

/// The mailbox checks for a new message `record` (one whose name `store` does not hold yet;
/// not a tombstone) at `unix_now`. `store` is what the storing node holds; `direct` is false
/// for a copy handed on by another keeper, which skips the enrollment check (the recipient's
/// key record may not have reached this node yet).
pub fn check_mailbox(
    record: &Record,
    store: &dyn Store,
    limits: &MailboxLimits,
    unix_now: u64,
    direct: bool,
) -> Result<(), MailboxRefusal> {
    let Some((recipient, _)) = parse_message_key(&record.key) else { return Ok(()) };
    let size = record.encoded_len();
    if size > limits.max_record_bytes {
        return Err(MailboxRefusal::TooLarge);
    }
    let enrolled = store
        .get(RecordKind::EncryptionKey, recipient.as_str())
        .is_some_and(|k| k.owner == recipient && k.expires_at > unix_now);
    if direct && !enrolled {
        return Err(MailboxRefusal::NotEnrolled);
    }
    let (mut messages, mut bytes, mut from_sender) = (0usize, 0usize, 0usize);
    for held in mailbox(store, &recipient).into_iter().filter(|r| !r.is_tombstone()) {
        messages += 1;
        bytes = bytes.saturating_add(held.encoded_len());
        from_sender += usize::from(held.owner == record.owner);
    }
    if messages >= limits.max_messages || bytes.saturating_add(size) > limits.max_bytes {
        return Err(MailboxRefusal::MailboxFull);
    }
    if from_sender >= limits.max_per_sender {
        return Err(MailboxRefusal::SenderQuota);
    }
    let node_bytes: usize = store
        .with_prefix(RecordKind::OfflineMessage, "")
        .filter(|r| !r.is_tombstone())
        .map(Record::encoded_len)
        .fold(0, usize::saturating_add);
    if node_bytes.saturating_add(size) > limits.max_node_bytes {
        return Err(MailboxRefusal::NodeFull);
    }
    Ok(())
}

#[cfg(test)]
mod tests;
