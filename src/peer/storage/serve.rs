//! The storing node's side: answering stores and fetches for the replica keys it is
//! responsible for (`docs/storage-over-sip.md`, "What the storing node checks").

use std::time::Instant;

use tracing::debug;

use crate::overlay::{Contact, NodeId};
use crate::peer::store_sip::{self, StorageAnswer, StorageRequest};
use crate::peer::{Answer, Endpoint, Peer};
use crate::sip::validate::Rejection;
use crate::sip::Message;
use crate::store::{put_checked, replica_keys_numbered, RecordKind};

impl Peer {
    /// Answers a storage request that reached the overlay listener.
    pub(in crate::peer) fn handle_storage_request(&mut self, now: Instant, from: &Endpoint, msg: &Message) -> Answer {
        let Some(storage) = self.storage.as_mut() else {
            return Answer::Reject(Rejection::new(501, "Storage Not Enabled"));
        };
        let decoded = store_sip::decode_request(msg, from.remote, from.transport.is_reliable(), &self.overlay.info);
        let (sender, request) = match decoded {
            Ok(d) => d,
            Err(e) => {
                storage.counters.malformed += 1;
                debug!(from = %from.remote, error = %e, "storage request refused");
                let (status, reason) = e.status();
                return Answer::Reject(Rejection::new(status, reason));
            }
        };
        let answer = self.serve_storage(now, &sender, request);
        let tag = self.new_tag();
        let mut resp = store_sip::encode_response(msg, &answer, &tag);
        // Issue 11, M1: over UDP, an answer more than 3× the request goes only to an address
        // that has answered us; anyone else is asked to come back over TCP.
        // (Cheapest first: the sizes are computed only for an unproven UDP source.)
        if !from.transport.is_reliable()
            && !self.overlay.chord.has_answered(now, &sender)
            && super::super::amplifies(msg, &resp)
        {
            if let Some(s) = self.storage.as_mut() {
                s.counters.sent_to_tcp += 1;
            }
            let me = self.overlay.chord.me().clone();
            resp = store_sip::encode_response(msg, &StorageAnswer::UseTcp { node: me }, &tag);
        }
        self.run_storage(now);
        Answer::Respond(resp)
    }

    /// What this node answers to a store or fetch from `sender` (possibly itself).
    pub(in crate::peer) fn serve_storage(
        &mut self,
        now: Instant,
        sender: &Contact,
        request: StorageRequest,
    ) -> StorageAnswer {
        let unix_now = self.unix_now(now);
        let replica_key = request.replica_key();
        // A leaving predecessor hands us its share before we are formally responsible.
        let from_predecessor = self.overlay.chord.predecessor().is_some_and(|p| p.id == sender.id);
        let responsible = self.is_responsible(replica_key);
        let redirect_to = self.redirect_target(replica_key);
        let hash = self.overlay.chord.config().id_hash;
        let Some(storage) = self.storage.as_mut() else {
            return StorageAnswer::Refused { status: 501, reason: "Storage Not Enabled".into() };
        };
        match request {
            StorageRequest::Fetch { kind, key, .. } => {
                // Only for keys in our arc (issue 11, M1): a copy we still hold for a key
                // that is no longer ours is not ours to serve.
                if !responsible {
                    storage.counters.not_responsible += 1;
                    return StorageAnswer::NotResponsible { node: redirect_to };
                }
                if let Some(record) = storage.store.get(kind, &key) {
                    storage.counters.fetches_served += 1;
                    return StorageAnswer::Found(record.clone());
                }
                storage.counters.fetches_served += 1;
                StorageAnswer::NotFound
            }
            StorageRequest::Store { replica_key, record, .. } => {
                // Kinds this version has no use for yet are not stored for anyone (M2).
                if matches!(record.kind, RecordKind::Presence | RecordKind::OfflineMessage) {
                    storage.counters.stores_refused += 1;
                    return StorageAnswer::Refused { status: 403, reason: "Record Kind Not Supported".into() };
                }
                let keys = replica_keys_numbered(record.key.as_bytes(), &storage.numbers, hash);
                if !keys.contains(&replica_key) {
                    storage.counters.stores_refused += 1;
                    return StorageAnswer::Refused { status: 403, reason: "Not A Replica Key Of The Record".into() };
                }
                if !responsible && !from_predecessor {
                    storage.counters.not_responsible += 1;
                    return StorageAnswer::NotResponsible { node: redirect_to };
                }
                // The same copy again (a second replica key of ours, a hand-off, a repair).
                if storage.store.get(record.kind, &record.key).is_some_and(|held| *held == record) {
                    return StorageAnswer::Stored;
                }
                // One owner re-storing in a loop (seq + 1 each time) must not make this node do
                // nothing else (M2): its accepted stores are rate-limited. Only accepted ones
                // spend the allowance, so nobody but the owner can use it up.
                let owner = record.owner.clone();
                let allowance =
                    storage.owner_budget.get(&owner).map_or(super::STORES_PER_OWNER_BURST, |(tokens, at)| {
                        let refill = now.saturating_duration_since(*at).as_secs_f64() * super::STORES_PER_OWNER_PER_SEC;
                        (tokens + refill).min(super::STORES_PER_OWNER_BURST)
                    });
                if allowance < 1.0 {
                    storage.counters.stores_refused += 1;
                    return StorageAnswer::Refused { status: 403, reason: "Owner Store Rate Exceeded".into() };
                }
                match put_checked(storage.store.as_mut(), record, &storage.config.policy, unix_now, &mut storage.ids) {
                    Ok(_) => {
                        if storage.owner_budget.len() > 10_000 {
                            // Forget owners whose allowance is full again.
                            let burst = super::STORES_PER_OWNER_BURST;
                            let rate = super::STORES_PER_OWNER_PER_SEC;
                            storage.owner_budget.retain(|_, (t, at)| {
                                *t + now.saturating_duration_since(*at).as_secs_f64() * rate < burst
                            });
                        }
                        storage.owner_budget.insert(owner, (allowance - 1.0, now));
                        storage.counters.stores_accepted += 1;
                        storage.counters.records_held = storage.store.iter().count() as u64;
                        StorageAnswer::Stored
                    }
                    Err(refusal) => {
                        storage.counters.stores_refused += 1;
                        debug!(from = %sender.addr, %refusal, "store refused");
                        StorageAnswer::Refused {
                            status: refusal.status_code(),
                            reason: refusal.reason_phrase().to_owned(),
                        }
                    }
                }
            }
        }
    }

    /// Where to send a request for `key` that is not ours: our successor if the key lies
    /// just after us, else our predecessor (the key is behind us).
    pub(in crate::peer) fn redirect_target(&self, key: NodeId) -> Contact {
        let me = self.overlay.chord.me();
        let successor = self.overlay.chord.successor();
        if key.in_left_open(me.id, successor.id) {
            return successor.clone();
        }
        self.overlay.chord.predecessor().cloned().unwrap_or_else(|| successor.clone())
    }
}
