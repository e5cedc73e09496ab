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
