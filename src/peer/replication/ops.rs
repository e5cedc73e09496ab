//! Operations: a put, a fetch, a hand-off or a re-put is one [`Op`] over a record's places.
//! Each place is found by a lookup the peer runs for us ([`Output::Lookup`]), places that
//! share an address move to spare replica numbers, and each place is sent its request
//! ([`Output::Request`]) or answered here when the place is this node.

use std::time::Instant;

use super::FIRST_PUBLISH_DELAY;
use super::{Op, Output, PendingRequest, Place, Purpose, Replication, Ring, StorageEvent, StorageOpId};
use crate::overlay::{Contact, LookupError, LookupId};
use crate::peer::overlay::wire as overlay_wire;
use crate::peer::replication::wire::{StorageAnswer, StorageRequest};
use crate::peer::Transport;
use crate::sip::transaction::ClientTxId;
use crate::store::mailbox::placement_key;
use crate::store::{replica_keys_numbered, Record, RecordKind};

impl Replication {
    /// Starts one operation: a lookup per place (or only `only`'s places).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn start_op(
        &mut self,
        now: Instant,
        ring: Ring<'_>,
        purpose: Purpose,
        kind: RecordKind,
        key: String,
        record: Option<Record>,
        only: Option<Vec<u8>>,
    ) -> StorageOpId {
        let hash = ring.chord.config().id_hash;
        let keys = replica_keys_numbered(placement_key(kind, &key).as_bytes(), &self.numbers, hash);
        let id = StorageOpId(self.next_op);
        self.next_op += 1;
        let replicas: Vec<u8> = only.unwrap_or_else(|| (0..=self.config.replicas).collect());
        let places: Vec<Place> = replicas
            .iter()
            .filter_map(|&i| {
                Some(Place {
                    replica: i,
                    replica_key: *keys.get(usize::from(i))?,
                    node: None,
                    path: Vec::new(),
                    confirmations: 0,
                    valid: false,
                    seq: None,
                    current: false,
                    error: None,
                })
            })
            .collect();
        let n = places.len();
        let next_spare = self.config.replicas.saturating_add(1);
        let op = Op {
            purpose,
            kind,
            key,
            record,
            places: places.clone(),
            copies: vec![None; n],
            sent: vec![false; n],
            remaining: n,
            resolving: n,
            next_spare,
            keys,
            started: now,
            report_at: None,
            reported: false,
            listed: Vec::new(),
        };
        self.ops.insert(id, op);
        for (ix, place) in places.iter().enumerate() {
            self.out.push_back(Output::Lookup { op: id, place: ix, key: place.replica_key });
        }
        id
    }

    /// The peer started the lookup asked for by [`Output::Lookup`].
    pub(in crate::peer) fn lookup_started(&mut self, lookup: LookupId, op: StorageOpId, place: usize) {
        self.lookups.insert(lookup, (op, place));
    }

    /// One of our lookups ended.
    pub(in crate::peer) fn lookup_done(
        &mut self,
        now: Instant,
        ring: Ring<'_>,
        lookup: LookupId,
        result: Result<Contact, LookupError>,
        path: Vec<Contact>,
        confirmations: u32,
    ) {
        let Some((op, place)) = self.lookups.remove(&lookup) else { return };
        match result {
            Ok(node) => {
                if let Some(p) = self.place_mut(op, place) {
                    p.node = Some(node);
                    p.path = path;
                    p.confirmations = confirmations;
                }
                self.ask_early(now, ring, op, place);
            }
            Err(e) => self.place_done(now, ring, op, place, Err(format!("lookup failed: {e}"))),
        }
        self.place_resolved(now, ring, op);
    }

    /// One of an op's lookups has finished. Once all have, places that landed on an address
    /// already holding another place move to the next spare replica number (so nodes sharing
    /// an address, whose IDs are contiguous, never hold two copies of one record); when no
    /// place needs to move, the requests go out.
    fn place_resolved(&mut self, now: Instant, ring: Ring<'_>, op: StorageOpId) {
        let Some(o) = self.ops.get_mut(&op) else { return };
        o.resolving = o.resolving.saturating_sub(1);
        if o.resolving > 0 {
            return;
        }
        let mut moves = Vec::new();
        let mut unplaceable = Vec::new();
        let mut recalled = Vec::new();
        if !matches!(o.purpose, Purpose::Handoff { .. }) {
            let mut used = std::collections::BTreeSet::new();
            for (ix, p) in o.places.iter_mut().enumerate() {
                let Some(node) = &p.node else { continue };
                if used.insert(node.addr.ip()) {
                    continue;
                }
                if o.sent[ix] {
                    // A read asked this place early, before a place with a lower number
                    // landed on the same address: the rule moves this one, so its answer
                    // no longer counts (a valid copy it brought was still a valid copy).
                    o.sent[ix] = false;
                    if p.valid || p.error.is_some() {
                        o.remaining += 1;
                    }
                    p.valid = false;
                    p.error = None;
                    p.seq = None;
                    o.copies[ix] = None;
                    recalled.push(ix);
                }
                let Some(&spare_key) = o.keys.get(usize::from(o.next_spare)) else {
                    // Out of spare numbers: no copy here rather than two on one address.
                    p.node = None;
                    unplaceable.push(ix);
                    continue;
                };
                p.replica = o.next_spare;
                p.replica_key = spare_key;
                p.node = None;
                p.path.clear();
                o.next_spare += 1;
                moves.push((ix, spare_key));
            }
        }
        if !recalled.is_empty() && !o.places.iter().any(|p| p.valid) {
            // The copy that started the read's grace no longer counts: wait for the next.
            o.report_at = None;
        }
        for ix in recalled {
            self.recall(op, ix);
        }
        let Some(o) = self.ops.get_mut(&op) else { return };
        if !moves.is_empty() {
            o.resolving = moves.len();
            for ix in unplaceable {
                self.place_done(now, ring, op, ix, Err("no spare replica number on a distinct address".into()));
            }
            for (ix, key) in moves {
                self.out.push_back(Output::Lookup { op, place: ix, key });
            }
            return;
        }
        let targets: Vec<(usize, Contact)> = o
            .places
            .iter()
            .enumerate()
            .filter(|(ix, _)| !o.sent[*ix])
            .filter_map(|(ix, p)| Some((ix, p.node.clone()?)))
            .collect();
        for (ix, node) in targets {
            self.send_to_place(now, ring, op, ix, node, false);
        }
        for ix in unplaceable {
            self.place_done(now, ring, op, ix, Err("no spare replica number on a distinct address".into()));
        }
    }

    /// A read's place whose lookup just ended is asked at once, unless another place already
    /// found lies on the same address (then the rule of `place_resolved` decides, once every
    /// lookup has ended). Waiting for all of them made a read as slow as its slowest lookup:
    /// right after half of 256 daemons were killed, one lookup of four going round until its
    /// retry held reads for 11-16 s (docs/performance.md, B4).
    fn ask_early(&mut self, now: Instant, ring: Ring<'_>, op: StorageOpId, place: usize) {
        let Some(o) = self.ops.get_mut(&op) else { return };
        if !matches!(o.purpose, Purpose::Fetch) || o.sent.get(place) != Some(&false) {
            return;
        }
        let Some(node) = o.places.get(place).and_then(|p| p.node.clone()) else { return };
        let shared = o
            .places
            .iter()
            .enumerate()
            .any(|(ix, p)| ix != place && p.node.as_ref().is_some_and(|n| n.addr.ip() == node.addr.ip()));
        if shared {
            return;
        }
        o.sent[place] = true;
        self.send_to_place(now, ring, op, place, node, false);
    }

    /// Forgets the request in flight for `place` of `op` (its transaction ends here).
    fn recall(&mut self, op: StorageOpId, place: usize) {
        let stale: Vec<ClientTxId> =
            self.pending.iter().filter(|(_, r)| r.op == Some(op) && r.place == place).map(|(id, _)| *id).collect();
        for id in stale {
            self.pending.remove(&id);
            self.out.push_back(Output::Abandon(id));
        }
    }

    fn place_mut(&mut self, op: StorageOpId, place: usize) -> Option<&mut Place> {
        self.ops.get_mut(&op)?.places.get_mut(place)
    }

    /// Sends the place's request to `node`, or answers it here when `node` is us.
    pub(super) fn send_to_place(
        &mut self,
        now: Instant,
        ring: Ring<'_>,
        op: StorageOpId,
        place: usize,
        node: Contact,
        redirected: bool,
    ) {
        let Some(o) = self.ops.get(&op) else { return };
        let Some(p) = o.places.get(place) else { return };
        let request = match &o.record {
            Some(record) => StorageRequest::Store {
                replica: p.replica,
                replica_key: p.replica_key,
                record: record.clone(),
                backup: 0,
            },
            None => StorageRequest::Fetch {
                replica: p.replica,
                replica_key: p.replica_key,
                kind: o.kind,
                key: o.key.clone(),
            },
        };
        self.send_request(now, ring, Some(op), place, node, request, redirected, Transport::Udp);
    }

    /// Sends `request` to `node` over `transport` (UDP first; TCP when a holder asks, M1), or
    /// answers it here when `node` is us.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn send_request(
        &mut self,
        now: Instant,
        ring: Ring<'_>,
        op: Option<StorageOpId>,
        place: usize,
        node: Contact,
        request: StorageRequest,
        redirected: bool,
        transport: Transport,
    ) {
        // Mailbox messages and listings go over TCP: a listing may be far larger than a
        // datagram, and a message record larger than RFC 3261 §18.1.1's 1300 bytes.
        let transport = match &request {
            StorageRequest::Store { record, .. } if record.kind == RecordKind::OfflineMessage => Transport::Tcp,
            StorageRequest::Fetch { kind: RecordKind::OfflineMessage, .. } => Transport::Tcp,
            _ => transport,
        };
        let me = ring.chord.me().clone();
        if node.id == me.id {
            let answer = self.serve(now, ring, &me, request.clone());
            self.answer(now, ring, op, place, request, answer, redirected);
            return;
        }
        let deadline = now + ring.chord.config().rpc_timeout;
        let pending = PendingRequest { op, place, request, redirected, deadline };
        self.out.push_back(Output::Request { to: node, transport, pending });
    }

    /// The peer sent the request of an [`Output::Request`] as client transaction `tx`.
    pub(in crate::peer) fn request_sent(&mut self, tx: ClientTxId, pending: PendingRequest) {
        self.pending.insert(tx, pending);
    }

    /// Whether a client transaction is one of ours.
    pub(in crate::peer) fn owns_request(&self, id: &ClientTxId) -> bool {
        self.pending.contains_key(id)
    }

    /// The answer to one of our requests, from its final response.
    pub(in crate::peer) fn handle_answer(
        &mut self,
        now: Instant,
        ring: Ring<'_>,
        id: ClientTxId,
        answer: StorageAnswer,
    ) {
        let Some(pending) = self.pending.remove(&id) else { return };
        self.answer(now, ring, pending.op, pending.place, pending.request, answer, pending.redirected);
    }

    /// The transaction behind one of our requests timed out, or its deadline passed.
    pub(in crate::peer) fn request_failed(&mut self, now: Instant, ring: Ring<'_>, id: ClientTxId) {
        let Some(pending) = self.pending.remove(&id) else { return };
        match pending.op {
            Some(op) => self.place_done(now, ring, op, pending.place, Err("no answer (timeout)".into())),
            None => self.backup_failed(&pending.request),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn answer(
        &mut self,
        now: Instant,
        ring: Ring<'_>,
        op: Option<StorageOpId>,
        place: usize,
        request: StorageRequest,
        answer: StorageAnswer,
        redirected: bool,
    ) {
        if let StorageAnswer::UseTcp { node } = &answer {
            // Its answer is too big for UDP to an address it has not seen answer
            // (docs/security.md, M1): the same request again over TCP, whose handshake
            // proves our address.
            let me = ring.chord.me().clone();
            let plausible = overlay_wire::link_verifies(node, ring.info.hash)
                && crate::addr::next_hop_allowed(node.addr.ip(), me.addr.ip());
            if plausible && !redirected && node.id != me.id {
                self.send_request(now, ring, op, place, node.clone(), request, true, Transport::Tcp);
                return;
            }
        }
        if let StorageAnswer::NotResponsible { node } = &answer {
            // docs/security.md, H1, M8: a redirect is followed only to a node whose ID is its
            // address's, and never to loopback (unless we are on it), link-local or ourselves.
            let me = ring.chord.me().clone();
            let plausible = overlay_wire::link_verifies(node, ring.info.hash)
                && crate::addr::next_hop_allowed(node.addr.ip(), me.addr.ip())
                && node.addr != me.addr;
            if !plausible {
                self.out.push_back(Output::ForgedLinks(1));
            }
            if plausible && !redirected && node.id != me.id {
                if let Some(p) = op.and_then(|op| self.place_mut(op, place)) {
                    p.node = Some(node.clone());
                }
                self.send_request(now, ring, op, place, node.clone(), request, true, Transport::Udp);
                return;
            }
        }
        let Some(op) = op else {
            let newer_held = matches!(&answer, StorageAnswer::Refused { status: 403, reason }
                if reason == crate::store::StoreRefusal::STALE_SEQUENCE);
            if !matches!(answer, StorageAnswer::Stored) && !newer_held {
                self.backup_failed(&request);
            }
            return;
        };
        let result = match answer {
            StorageAnswer::Listed(records) => {
                if let Some(o) = self.ops.get_mut(&op) {
                    o.listed.extend(records);
                }
                Ok(None)
            }
            StorageAnswer::Stored => Ok(None),
            StorageAnswer::Found(record) => Ok(Some(record)),
            StorageAnswer::NotFound => Err("no record".to_owned()),
            StorageAnswer::NotResponsible { node } => Err(format!("not responsible; redirected to {}", node.addr)),
            StorageAnswer::UseTcp { node } => Err(format!("{} asked for TCP twice", node.addr)),
            StorageAnswer::Refused { status, reason } => Err(format!("{status} {reason}")),
        };
        match result {
            Ok(copy) => {
                if let Some(slot) = self.ops.get_mut(&op).and_then(|o| o.copies.get_mut(place)) {
                    *slot = copy;
                }
                self.place_done(now, ring, op, place, Ok(()));
            }
            Err(e) => self.place_done(now, ring, op, place, Err(e)),
        }
    }

    /// One place has its answer; the op finishes when every place has.
    pub(super) fn place_done(
        &mut self,
        now: Instant,
        ring: Ring<'_>,
        op: StorageOpId,
        place: usize,
        result: Result<(), String>,
    ) {
        let Some(o) = self.ops.get_mut(&op) else { return };
        let Some(p) = o.places.get_mut(place) else { return };
        match result {
            Ok(()) => p.valid = true,
            Err(e) => p.error = Some(e),
        }
        o.remaining = o.remaining.saturating_sub(1);
        let remaining = o.remaining;
        if matches!(o.purpose, Purpose::Fetch) {
            self.copy_arrived(now, op, place);
        }
        if remaining == 0 {
            self.finish_op(now, ring, op);
        }
    }

    fn finish_op(&mut self, now: Instant, ring: Ring<'_>, op: StorageOpId) {
        let Some(o) = self.ops.remove(&op) else { return };
        match o.purpose {
            Purpose::Reput => {}
            Purpose::Put => {
                // If not every place took our own record (the ring was still forming, places
                // failed, or there are fewer than R+1 nodes), it is published again soon,
                // backing off (1 s, 2 s, 4 s … up to the refresh interval). In B4 a record
                // published while 128 nodes were joining reached one place of four and was
                // later found at none (docs/performance.md); the owner can put it right.
                if o.places.iter().all(|p| p.valid) {
                    self.incomplete_puts = 0;
                } else if self.identity.is_some() {
                    let wait = FIRST_PUBLISH_DELAY
                        .saturating_mul(1 << self.incomplete_puts.min(16))
                        .min(self.config.refresh_interval.max(FIRST_PUBLISH_DELAY));
                    self.incomplete_puts += 1;
                    let soon = now + wait;
                    self.refresh_at = Some(self.refresh_at.map_or(soon, |t| t.min(soon)));
                }
                let event = StorageEvent::Stored { op, kind: o.kind, key: o.key, places: o.places };
                self.out.push_back(Output::Event(event));
            }
            Purpose::Handoff { drop_after } => {
                if drop_after && o.places.iter().any(|p| p.valid) {
                    if let Some(record) = &o.record {
                        let still_ours = self.store.get(record.kind, &record.key).is_some_and(|r| r.seq == record.seq);
                        if still_ours {
                            self.store.remove(record.kind, &record.key);
                            self.recount();
                        }
                    }
                }
            }
            Purpose::Fetch => self.finish_read(now, ring, op, o),
            Purpose::List => self.finish_listing(now, op, o),
        }
    }
}
