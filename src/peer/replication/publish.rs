//! Our own records: an enrolled node publishes its certificate chain and its registration
//! (AoR → contacts) once it has joined, re-publishes them every `refresh_interval`, and
//! publishes the registration again whenever its contacts change.

use std::net::SocketAddr;
use std::time::Instant;

use tracing::{debug, info};

use super::{Purpose, Replication, Ring, StorageOpId, FIRST_PUBLISH_DELAY};
use crate::identity::LocalIdentity;
use crate::store::{encode_chain, EncryptionKey, Record, RecordKind, Registration, StorePolicy, Unsigned};

/// The lifetime of records that must outlast their owner's absence (the encryption key, a
/// mailbox message): the storing nodes' longest, less an hour for clocks that disagree.
pub(in crate::peer) fn long_lifetime(policy: &StorePolicy) -> u64 {
    policy.max_lifetime.saturating_sub(3600).max(policy.max_lifetime / 2)
}

impl Replication {
    /// The public half of our encryption key: published (signed) with our other records from
    /// now on, at once if we are on the ring.
    pub(in crate::peer) fn set_encryption_key(&mut self, now: Instant, ring: Ring<'_>, public: Vec<u8>) {
        self.encryption_key = Some(public);
        if self.may_publish(&ring) && self.last_seq != 0 {
            if let Some(record) = self.sign_own(now, RecordKind::EncryptionKey) {
                let _ = self.put(now, ring, record);
            }
        }
    }

    /// Replaces our registration's contacts and publishes it.
    pub(in crate::peer) fn publish_registration(
        &mut self,
        now: Instant,
        ring: Ring<'_>,
        contacts: Vec<String>,
    ) -> Option<StorageOpId> {
        self.contacts = contacts;
        let record = self.sign_own(now, RecordKind::Registration)?;
        Some(self.put(now, ring, record))
    }

    /// When this node has a local account for its own AoR, the registration record follows
    /// the phones registered for it: this node's overlay contact (`node_addr`) while at least
    /// one is (never a phone's own address), no contact once the last is gone (a record with
    /// no contacts: the user exists but is offline, so callers get 480). A node without such
    /// an account keeps publishing its overlay contact. Only our own AoR: the record must be
    /// signed by its key (USER-MATCH).
    pub(in crate::peer) fn follow_phones(
        &mut self,
        now: Instant,
        ring: Ring<'_>,
        phones: bool,
        has_account: bool,
        node_addr: SocketAddr,
    ) {
        let Some(identity) = self.identity.as_ref() else { return };
        let wanted = if phones || !has_account { vec![default_contact(identity, node_addr)] } else { Vec::new() };
        if wanted == self.contacts {
            return;
        }
        let aor = identity.aor.to_string();
        let joined = self.may_publish(&ring);
        let first_publish_pending = self.refresh_at.is_some() && self.last_seq == 0;
        info!(%aor, phones, "our registration record changes");
        if joined && !first_publish_pending {
            let _ = self.publish_registration(now, ring, wanted);
        } else {
            // Not on the ring yet: the first publication carries them.
            self.contacts = wanted;
        }
    }

    /// Signs and stores our certificate chain and registration, and schedules the next refresh.
    pub(super) fn publish_own(&mut self, now: Instant, ring: Ring<'_>) {
        if self.identity.is_none() {
            self.refresh_at = None;
            return;
        }
        self.refresh_at = Some(now + self.config.refresh_interval);
        let kinds = [RecordKind::CertificateChain, RecordKind::Registration, RecordKind::EncryptionKey];
        for kind in kinds {
            if let Some(record) = self.sign_own(now, kind) {
                info!(kind = ?kind, key = %record.key, seq = record.seq, "publishing our record");
                let _ = self.start_op(now, ring, Purpose::Put, record.kind, record.key.clone(), Some(record), None);
            }
        }
    }

    /// Publishes our records when the refresh is due, or shortly after we join when not
    /// joined yet.
    pub(super) fn refresh_timeout(&mut self, now: Instant, ring: Ring<'_>) {
        let refresh_due = self.refresh_at.is_some_and(|at| now >= at);
        let joined = self.may_publish(&ring);
        if refresh_due && !joined {
            // Publishing waits for the ring; try again shortly.
            self.refresh_at = Some(now + FIRST_PUBLISH_DELAY);
        } else if refresh_due {
            self.publish_own(now, ring);
        }
    }

    /// One of our records, freshly signed with the next sequence number.
    fn sign_own(&mut self, now: Instant, kind: RecordKind) -> Option<Record> {
        let unix_now = self.unix_now(now);
        let identity = self.identity.as_ref()?;
        let rng = self.rng.as_ref()?;
        let lifetime = match kind {
            // Offline messages are sealed to it for as long as they wait (issue 15).
            RecordKind::EncryptionKey => long_lifetime(&self.config.policy),
            _ => self.config.record_lifetime.as_secs(),
        };
        let expires_at = (unix_now + lifetime).min(identity.not_after);
        let payload = match kind {
            RecordKind::CertificateChain => encode_chain(&identity.chain).ok()?,
            RecordKind::Registration => Registration {
                contacts: self
                    .contacts
                    .iter()
                    .map(|uri| crate::store::Contact { uri: uri.clone(), expires_at })
                    .collect(),
            }
            .to_payload(),
            RecordKind::EncryptionKey => EncryptionKey::x25519(self.encryption_key.clone()?).to_payload(),
            RecordKind::Presence | RecordKind::OfflineMessage => return None,
        };
        // Sequence numbers grow with the wall clock (milliseconds' worth of room per second),
        // so a restarted node does not replay numbers it used before.
        let seq = self.last_seq.saturating_add(1).max(unix_now.saturating_mul(1000));
        self.last_seq = seq;
        let unsigned =
            Unsigned { kind, key: identity.aor.to_string(), owner: identity.aor.clone(), seq, expires_at, payload };
        match unsigned.sign(&identity.key, identity.chain.clone(), &**rng) {
            Ok(record) => Some(record),
            Err(e) => {
                debug!(error = %e, "could not sign our record");
                None
            }
        }
    }
}

/// `sip:user@ip:port`: the user's contact at this node's overlay address.
pub(super) fn default_contact(identity: &LocalIdentity, addr: SocketAddr) -> String {
    format!("sip:{}@{}", identity.aor.user(), crate::sip::uri::host_port(&addr.ip().into(), Some(addr.port())))
}
