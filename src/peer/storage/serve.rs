//! The storing node's side: answering stores and fetches for the replica keys it is
//! responsible for (`docs/storage-over-sip.md`, "What the storing node checks").

use std::time::Instant;

use tracing::debug;

use crate::addr::source_group;
use crate::overlay::{Contact, NodeId};
use crate::peer::store_sip::{self, StorageAnswer, StorageRequest};
use crate::peer::{Answer, Endpoint, Peer};
use crate::sip::validate::Rejection;
use crate::sip::Message;
use crate::store::{put_checked, replica_keys_numbered, Record, RecordKind};

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
        let replica_key = request.replica_key();
        let place = PlaceView {
            responsible: self.is_responsible(replica_key),
            // A leaving predecessor hands us its share before we are formally responsible,
            // and a holder before us sends its backup copies (`backup`).
            from_predecessor: self.overlay.chord.predecessor().is_some_and(|p| p.id == sender.id),
            // Backup copies skip the holder's own address, whose nodes sit right before us.
            from_behind: self
                .overlay
                .chord
                .predecessor()
                .is_some_and(|p| source_group(p.addr.ip()) == source_group(sender.addr.ip())),
            sender: sender.addr,
            // Not in (us, successor]: a key we could be keeping a backup copy for.
            behind: !replica_key.in_left_open(self.node_id(), self.overlay.chord.successor().id),
            redirect_to: self.redirect_target(replica_key),
        };
        match request {
            StorageRequest::Fetch { kind, key, .. } => self.serve_fetch(kind, &key, &place),
            StorageRequest::Store { replica_key, record, backup, .. } => {
                let name = (record.kind, record.key.clone());
                let answer = self.serve_store(now, replica_key, record, backup, &place);
                if matches!(answer, StorageAnswer::Stored) {
                    // Our successor keeps its copy in turn (`backup`).
                    self.sync_backups(now, Some(&name));
                }
                answer
            }
        }
    }

    fn serve_fetch(&mut self, kind: RecordKind, key: &str, place: &PlaceView) -> StorageAnswer {
        let Some(storage) = self.storage.as_mut() else {
            return StorageAnswer::Refused { status: 501, reason: "Storage Not Enabled".into() };
        };
        let held = storage.store.get(kind, key);
        // Only for keys in our arc (issue 11, M1), or behind it when we keep a copy there
        // (`backup`): a lookup names us for a key behind us when the holder before us is gone,
        // before our predecessor pointer says so. A copy for a key ahead of us is no longer
        // ours to serve.
        let keeps_copy = place.behind && held.is_some();
        if !(place.responsible || keeps_copy) {
            storage.counters.not_responsible += 1;
            return StorageAnswer::NotResponsible { node: place.redirect_to.clone() };
        }
        storage.counters.fetches_served += 1;
        match held {
            Some(record) => StorageAnswer::Found(record.clone()),
            None => StorageAnswer::NotFound,
        }
    }

    /// A store: the checks of `docs/storage-over-sip.md`, "What the storing node checks".
    fn serve_store(
        &mut self,
        now: Instant,
        replica_key: NodeId,
        record: Record,
        backup: u8,
        place: &PlaceView,
    ) -> StorageAnswer {
        let unix_now = self.unix_now(now);
        let hash = self.overlay.chord.config().id_hash;
        let Some(storage) = self.storage.as_mut() else {
            return StorageAnswer::Refused { status: 501, reason: "Storage Not Enabled".into() };
        };
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
        // Beside our own arc: our predecessor's hand-off and backup copies, and a newer
        // version of a copy we keep for a key behind us (its owner's, while the holder is gone).
        let held = storage.store.get(record.kind, &record.key);
        let keeps_copy = place.behind && held.is_some();
        let backup_from_behind = backup > 0 && place.from_behind;
        if !(place.responsible || place.from_predecessor || backup_from_behind || keeps_copy) {
            storage.counters.not_responsible += 1;
            return StorageAnswer::NotResponsible { node: place.redirect_to.clone() };
        }
        if backup_from_behind {
            storage.backups.note_position(&record, backup);
        }
        // The same copy again (a second replica key of ours, a hand-off, a repair, a backup).
        if held.is_some_and(|held| *held == record) {
            return StorageAnswer::Stored;
        }
        // One owner re-storing in a loop (seq + 1 each time) must not make this node do
        // nothing else (M2): its accepted stores are rate-limited. Only accepted ones
        // spend the allowance, so nobody but the owner can use it up.
        let owner = record.owner.clone();
        let allowance = storage.owner_budget.get(&owner).map_or(super::STORES_PER_OWNER_BURST, |(tokens, at)| {
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
                    storage
                        .owner_budget
                        .retain(|_, (t, at)| *t + now.saturating_duration_since(*at).as_secs_f64() * rate < burst);
                }
                storage.owner_budget.insert(owner, (allowance - 1.0, now));
                storage.counters.stores_accepted += 1;
                storage.recount();
                StorageAnswer::Stored
            }
            Err(refusal) => {
                storage.counters.stores_refused += 1;
                debug!(from = %place.sender, %refusal, "store refused");
                StorageAnswer::Refused { status: refusal.status_code(), reason: refusal.reason_phrase().to_owned() }
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

/// Where a storage request's replica key stands from this node.
struct PlaceView {
    /// The key is in (predecessor, us].
    responsible: bool,
    /// The request comes from our predecessor.
    from_predecessor: bool,
    /// ... or from a node sharing our predecessor's address (itself included).
    from_behind: bool,
    /// Who sent it.
    sender: std::net::SocketAddr,
    /// The key is not in (us, successor].
    behind: bool,
    /// Where a request we do not take goes instead.
    redirect_to: Contact,
}
