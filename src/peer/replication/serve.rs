//! The storing node's side: answering stores and fetches for the replica keys it is
//! responsible for (`docs/storage-over-sip.md`, "What the storing node checks").

use std::time::Instant;

use tracing::debug;

use super::{Replication, Ring, STORES_PER_OWNER_BURST, STORES_PER_OWNER_PER_SEC};
use crate::addr::source_group;
use crate::identity::Aor;
use crate::overlay::{Contact, NodeId};
use crate::peer::replication::wire::{StorageAnswer, StorageRequest};
use crate::store::mailbox::{check_mailbox, mailbox, parse_message_key};
use crate::store::{put_checked, replica_keys_numbered, Record, RecordKind};

impl Replication {
    /// A storage request that could not be read.
    pub(in crate::peer) fn count_malformed(&mut self) {
        self.counters.malformed += 1;
    }

    /// An answer sent back as a redirect to TCP (too big for UDP to an unproven address).
    pub(in crate::peer) fn count_sent_to_tcp(&mut self) {
        self.counters.sent_to_tcp += 1;
    }

    /// What this node answers to a store or fetch from `sender` (possibly itself).
    pub(in crate::peer) fn serve(
        &mut self,
        now: Instant,
        ring: Ring<'_>,
        sender: &Contact,
        request: StorageRequest,
    ) -> StorageAnswer {
        let replica_key = request.replica_key();
        let place = PlaceView {
            responsible: Self::is_responsible(ring, replica_key),
            // A leaving predecessor hands us its share before we are formally responsible,
            // and a holder before us sends its backup copies (`backup`).
            from_predecessor: ring.chord.predecessor().is_some_and(|p| p.id == sender.id),
            // Backup copies skip the holder's own address, whose nodes sit right before us.
            from_behind: ring
                .chord
                .predecessor()
                .is_some_and(|p| source_group(p.addr.ip()) == source_group(sender.addr.ip())),
            sender: sender.addr,
            // Not in (us, successor]: a key we could be keeping a backup copy for.
            behind: !replica_key.in_left_open(ring.chord.me().id, ring.chord.successor().id),
            redirect_to: redirect_target(ring, replica_key),
        };
        match request {
            StorageRequest::Fetch { kind, key, .. } => self.serve_fetch(kind, &key, &place),
            StorageRequest::Store { replica_key, record, backup, .. } => {
                let name = (record.kind, record.key.clone());
                let answer = self.serve_store(now, ring, replica_key, record, backup, &place);
                if matches!(answer, StorageAnswer::Stored) {
                    // Our successor keeps its copy in turn (`backup`).
                    self.sync_backups(now, ring, Some(&name));
                }
                answer
            }
        }
    }

    fn serve_fetch(&mut self, kind: RecordKind, key: &str, place: &PlaceView) -> StorageAnswer {
        if kind == RecordKind::OfflineMessage && parse_message_key(key).is_none() {
            return self.serve_listing(key, place);
        }
        let held = self.store.get(kind, key);
        // Only for keys in our arc (docs/security.md, M1), or behind it when we keep a copy there
        // (`backup`): a lookup names us for a key behind us when the holder before us is gone,
        // before our predecessor pointer says so. A copy for a key ahead of us is no longer
        // ours to serve.
        let keeps_copy = place.behind && held.is_some();
        if !(place.responsible || keeps_copy) {
            self.counters.not_responsible += 1;
            return StorageAnswer::NotResponsible { node: place.redirect_to.clone() };
        }
        self.counters.fetches_served += 1;
        match held {
            Some(record) => StorageAnswer::Found(record.clone()),
            None => StorageAnswer::NotFound,
        }
    }

    /// A mailbox listing: every message and tombstone held for the AoR `key`. The places of a
    /// mailbox are the AoR's, so the same arc rule as a fetch applies.
    fn serve_listing(&mut self, key: &str, place: &PlaceView) -> StorageAnswer {
        let Ok(recipient) = Aor::parse(key) else {
            return StorageAnswer::Refused { status: 400, reason: "Mailbox Name Is Not An AoR".into() };
        };
        let held: Vec<Record> = mailbox(self.store.as_ref(), &recipient).into_iter().cloned().collect();
        if !(place.responsible || (place.behind && !held.is_empty())) {
            self.counters.not_responsible += 1;
            return StorageAnswer::NotResponsible { node: place.redirect_to.clone() };
        }
        self.counters.fetches_served += 1;
        StorageAnswer::Listed(held)
    }

    /// A store: the checks of `docs/storage-over-sip.md`, "What the storing node checks".
    fn serve_store(
        &mut self,
        now: Instant,
        ring: Ring<'_>,
        replica_key: NodeId,
        record: Record,
        backup: u8,
        place: &PlaceView,
    ) -> StorageAnswer {
        let unix_now = self.unix_now(now);
        let hash = ring.chord.config().id_hash;
        // Kinds this version has no use for yet are not stored for anyone (M2).
        if record.kind == RecordKind::Presence {
            self.counters.stores_refused += 1;
            return StorageAnswer::Refused { status: 403, reason: "Record Kind Not Supported".into() };
        }
        let keys = replica_keys_numbered(record.placement_key().as_bytes(), &self.numbers, hash);
        if !keys.contains(&replica_key) {
            self.counters.stores_refused += 1;
            return StorageAnswer::Refused { status: 403, reason: "Not A Replica Key Of The Record".into() };
        }
        // Beside our own arc: our predecessor's hand-off and backup copies, and a newer
        // version of a copy we keep for a key behind us (its owner's, while the holder is gone).
        let held = self.store.get(record.kind, &record.key);
        let keeps_copy = place.behind && held.is_some();
        let backup_from_behind = backup > 0 && place.from_behind;
        if !(place.responsible || place.from_predecessor || backup_from_behind || keeps_copy) {
            self.counters.not_responsible += 1;
            return StorageAnswer::NotResponsible { node: place.redirect_to.clone() };
        }
        if backup_from_behind {
            self.backups.note_position(&record, backup);
        }
        // The same copy again (a second replica key of ours, a hand-off, a repair, a backup).
        if held.is_some_and(|held| *held == record) {
            return StorageAnswer::Stored;
        }
        // A deletion of a message we do not hold leaves nothing to do (and nothing to keep:
        // tombstones stay bounded by the messages they delete).
        let deletes = record.is_tombstone() && held.is_some_and(|h| !h.is_tombstone());
        if record.is_tombstone() && !deletes {
            return StorageAnswer::Stored;
        }
        if record.kind == RecordKind::OfflineMessage && !record.is_tombstone() && held.is_none() {
            // The recipient's enrollment is known at the place itself; a hand-off or a backup
            // copy may arrive before the recipient's key record does.
            let direct = backup == 0 && !place.from_predecessor;
            if let Err(refusal) = check_mailbox(&record, self.store.as_ref(), &self.config.mailbox, unix_now, direct) {
                self.counters.stores_refused += 1;
                debug!(from = %place.sender, %refusal, "message refused");
                return StorageAnswer::Refused {
                    status: refusal.status_code(),
                    reason: refusal.reason_phrase().to_owned(),
                };
            }
        }
        // One owner re-storing in a loop (seq + 1 each time) must not make this node do
        // nothing else (M2): its accepted stores are rate-limited. Only accepted ones
        // spend the allowance, so nobody but the owner can use it up. Mail has an allowance
        // of its own: a user sending messages never starves their own records' refresh.
        let owner = (record.owner.clone(), record.kind == RecordKind::OfflineMessage);
        let allowance = self.owner_budget.get(&owner).map_or(STORES_PER_OWNER_BURST, |(tokens, at)| {
            let refill = now.saturating_duration_since(*at).as_secs_f64() * STORES_PER_OWNER_PER_SEC;
            (tokens + refill).min(STORES_PER_OWNER_BURST)
        });
        // A deletion spends nothing: it is bounded by the messages held.
        if allowance < 1.0 && !deletes {
            self.counters.stores_refused += 1;
            return StorageAnswer::Refused { status: 403, reason: "Owner Store Rate Exceeded".into() };
        }
        match put_checked(self.store.as_mut(), record, &self.config.policy, unix_now, &mut self.ids) {
            Ok(_) => {
                if self.owner_budget.len() > 10_000 {
                    // Forget owners whose allowance is full again.
                    let burst = STORES_PER_OWNER_BURST;
                    let rate = STORES_PER_OWNER_PER_SEC;
                    self.owner_budget
                        .retain(|_, (t, at)| *t + now.saturating_duration_since(*at).as_secs_f64() * rate < burst);
                }
                if !deletes {
                    self.owner_budget.insert(owner, (allowance - 1.0, now));
                }
                self.counters.stores_accepted += 1;
                self.recount();
                StorageAnswer::Stored
            }
            Err(refusal) => {
                self.counters.stores_refused += 1;
                debug!(from = %place.sender, %refusal, "store refused");
                StorageAnswer::Refused { status: refusal.status_code(), reason: refusal.reason_phrase().to_owned() }
            }
        }
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

/// Where to send a request for `key` that is not ours: our successor if the key lies
/// just after us, else our predecessor (the key is behind us).
fn redirect_target(ring: Ring<'_>, key: NodeId) -> Contact {
    let me = ring.chord.me();
    let successor = ring.chord.successor();
    if key.in_left_open(me.id, successor.id) {
        return successor.clone();
    }
    ring.chord.predecessor().cloned().unwrap_or_else(|| successor.clone())
}
