//! The delivery log: which message reached which of our user's phones, and when. It is what
//! suppresses duplicates (a listing that still shows a message whose tombstone did not reach
//! every place, a phone registering twice) and what `p2psip messages` shows after delivery.
//! The driver keeps it as JSON lines in the data directory ([`Delivered::to_line`],
//! [`read_lines`]); entries are dropped a day after their message would have expired, when
//! no copy of it can come back.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::store::mailbox::MessageId;

/// One message delivered to one phone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delivered {
    /// The message's ID (hex).
    pub id: String,
    /// The phone (its `+sip.instance`, else its contact URI).
    pub device: String,
    /// The sender's AoR, as its certificate proved.
    pub from: String,
    /// The original From's display name.
    pub display: String,
    /// The original Date.
    pub date: String,
    /// The body, as text.
    pub body: String,
    /// Unix seconds when the phone answered 2xx.
    pub delivered_at: u64,
    /// Unix seconds when the message would have expired in the overlay.
    pub expires_at: u64,
}

/// How long after a message's expiry its log entry is kept.
const KEEP_AFTER_EXPIRY: u64 = 86_400;

impl Delivered {
    /// The entry as one line of JSON (no newline).
    pub fn to_line(&self) -> String {
        // Plain strings and integers always serialise.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Whether the entry still matters at `unix_now`.
    pub fn current(&self, unix_now: u64) -> bool {
        self.expires_at.saturating_add(KEEP_AFTER_EXPIRY) > unix_now
    }
}

/// The entries of a log file: one JSON object per line; lines that do not read are skipped
/// (a line cut short by a crash).
pub fn read_lines(text: &str) -> Vec<Delivered> {
    text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
}

/// The log in memory, by message.
#[derive(Debug, Default)]
pub(super) struct DeliveryLog {
    by_message: BTreeMap<String, Vec<Delivered>>,
}

impl DeliveryLog {
    pub(super) fn new(entries: Vec<Delivered>) -> DeliveryLog {
        let mut log = DeliveryLog::default();
        for e in entries {
            log.add(e);
        }
        log
    }

    pub(super) fn add(&mut self, entry: Delivered) {
        let list = self.by_message.entry(entry.id.clone()).or_default();
        if !list.iter().any(|e| e.device == entry.device) {
            list.push(entry);
        }
    }

    /// Whether message `id` reached `device`.
    pub(super) fn reached(&self, id: &MessageId, device: &str) -> bool {
        self.by_message.get(&id.to_hex()).is_some_and(|l| l.iter().any(|e| e.device == device))
    }

    /// Whether message `id` reached any phone.
    pub(super) fn reached_any(&self, id: &MessageId) -> bool {
        self.by_message.contains_key(&id.to_hex())
    }

    /// How many messages were delivered.
    pub(super) fn messages(&self) -> usize {
        self.by_message.len()
    }

    /// Every entry, newest first.
    pub(super) fn entries(&self) -> Vec<Delivered> {
        let mut all: Vec<Delivered> = self.by_message.values().flatten().cloned().collect();
        all.sort_by(|a, b| b.delivered_at.cmp(&a.delivered_at).then_with(|| a.id.cmp(&b.id)));
        all
    }
}
