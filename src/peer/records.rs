//! The peer's side of [`Replication`]: the commands (turn storage on, put, fetch, publish),
//! storage requests arriving at the overlay listener, and one private work loop that routes
//! between the services: the overlay events storage follows go in, and what storage asks for
//! (lookups, requests over SIP, ended transactions, reports) is done in the order asked. This
//! file holds no storage logic; `replication/` does.

use std::time::Instant;

use rand::Rng;
use tracing::debug;

use super::replication::wire::{self as storage_wire, StorageAnswer};
use super::replication::{Output, Replication, Ring};
use super::{Answer, Endpoint, Listener, Peer, PeerEvent, StorageConfig, StorageEvent, StorageOpId};
use crate::identity::{Signer, VerifiedCache};
use crate::overlay::Event;
use crate::sip::transaction::ClientTxId;
use crate::sip::validate::Rejection;
use crate::sip::{Header, HeaderName, Message};
use crate::store::{Record, RecordKind, Store};

impl Peer {
    /// Turns storage on: records are checked against `ids`' root; `signer` (the enrolled
    /// identity and the randomness its signatures need), when given, publishes this node's
    /// records once it has joined.
    pub fn enable_storage(
        &mut self,
        now: Instant,
        config: StorageConfig,
        store: Box<dyn Store + Send>,
        ids: VerifiedCache,
        signer: Option<Signer>,
    ) {
        // The same enrollment proves who calls (docs/security.md, M5).
        let callers = crate::proxy::identity::Callers::new(
            ids.root().clone(),
            signer.as_ref(),
            config.unix_at_start,
            self.started,
        );
        self.proxy.set_callers(callers);
        // ...and proves this node's user to the far node of a call (issue 14).
        if let Some(s) = signer.as_ref() {
            if let (Ok(key), Some(cert)) =
                (crate::identity::KeyPair::from_pkcs8(s.identity.key.pkcs8_der(), &*s.rng), s.identity.chain.first())
            {
                self.proxy.set_anchor_identity(crate::media::anchor::AnchorIdentity {
                    key,
                    cert: cert.clone(),
                    aor: s.identity.aor.clone(),
                    rng: s.rng.clone(),
                    ids: VerifiedCache::new(ids.root().clone(), 256),
                    unix_at_start: config.unix_at_start,
                    started: self.started,
                });
            }
        }
        let node_addr = self.config.node_addr();
        self.storage = Some(Replication::new(config, store, ids, signer, node_addr, self.started, now));
    }

    /// The node's store, for tests that plant or remove records behind the protocol's back.
    #[cfg(test)]
    pub(crate) fn storage_for_tests(&mut self) -> &mut dyn Store {
        self.storage.as_mut().map(Replication::store_mut).expect("storage is on")
    }

    /// The storage counters, when storage is on.
    pub fn storage_counters(&self) -> Option<&super::StorageCounters> {
        self.storage.as_ref().map(Replication::counters)
    }

    /// The replica count R, when storage is on.
    pub fn replicas(&self) -> Option<u8> {
        self.storage.as_ref().map(Replication::replicas)
    }

    /// The records this node holds for the overlay.
    pub fn held_records(&self) -> Vec<Record> {
        self.storage.as_ref().map(|s| s.held_records().cloned().collect()).unwrap_or_default()
    }

    /// Whether we hold `record` as one of its places (not as a backup copy).
    pub fn holds_place_of(&self, record: &Record) -> bool {
        let ring = Ring { chord: &self.overlay.chord, info: &self.overlay.info };
        self.storage.as_ref().is_some_and(|s| s.holds_place_of(ring, record))
    }

    /// Our AoR, when enrolled.
    pub fn aor(&self) -> Option<&crate::identity::Aor> {
        self.storage.as_ref()?.aor()
    }

    /// Unix seconds at `now`.
    pub fn unix_now(&self, now: Instant) -> u64 {
        match &self.storage {
            Some(s) => s.unix_now(now),
            None => now.saturating_duration_since(self.started).as_secs(),
        }
    }

    /// Stores `record` at its R+1 places; reported with [`StorageEvent::Stored`].
    pub fn put(&mut self, now: Instant, record: Record) -> Option<StorageOpId> {
        self.with_storage(now, |s, ring| s.put(now, ring, record))
    }

    /// Lists the mailbox of `aor` at its R+1 places; reported with [`StorageEvent::Listed`].
    pub fn list_mailbox(&mut self, now: Instant, aor: &str) -> Option<StorageOpId> {
        self.with_storage(now, |s, ring| s.list_mailbox(now, ring, aor))
    }

    /// Fetches `(kind, key)` from its R+1 places; reported with [`StorageEvent::Fetched`].
    pub fn fetch(&mut self, now: Instant, kind: RecordKind, key: &str) -> Option<StorageOpId> {
        self.with_storage(now, |s, ring| s.fetch(now, ring, kind, key))
    }

    /// Replaces our registration's contacts and publishes it (the node's own overlay contact is
    /// the default; the registration follows the phones registered here otherwise).
    pub fn publish_registration(&mut self, now: Instant, contacts: Vec<String>) -> Option<StorageOpId> {
        self.with_storage(now, |s, ring| s.publish_registration(now, ring, contacts)).flatten()
    }

    /// The proxy↔storage seam: our registration record follows the phones registered for our
    /// AoR (see `Replication::follow_phones`).
    pub(super) fn sync_registration(&mut self, now: Instant) {
        let Some(aor) = self.aor().map(ToString::to_string) else { return };
        let has_account = self.proxy.has_account(&aor);
        let phones = !self.proxy.registrar().lookup(&aor, now).is_empty();
        // A client is reached through its edge: its record names the edge, and only once the
        // edge has bound it.
        let (node_addr, ready) = match self.role() {
            crate::nat::reachability::Role::Client => match self.edge() {
                Some(edge) => (edge, true),
                None => (self.config.node_addr(), false),
            },
            _ => (self.config.node_addr(), true),
        };
        self.with_storage(now, |s, ring| {
            s.set_contact_ready(ready);
            if ready {
                s.follow_phones(now, ring, phones, has_account, node_addr);
            }
        });
    }

    /// A leaving node hands its records to its successor.
    pub(super) fn storage_leave(&mut self, now: Instant) {
        self.with_storage(now, |s, ring| s.leave(now, ring));
    }

    /// The storage timers.
    pub(super) fn storage_timeout(&mut self, now: Instant) {
        self.with_storage(now, |s, ring| s.handle_timeout(now, ring));
    }

    /// Whether a client transaction is one of storage's.
    pub(super) fn is_storage_transaction(&self, id: &ClientTxId) -> bool {
        self.storage.as_ref().is_some_and(|s| s.owns_request(id))
    }

    /// A final answer to one of storage's requests.
    pub(super) fn handle_storage_response(&mut self, now: Instant, id: ClientTxId, response: &Message) {
        if response.status().is_none_or(|c| c < 200) {
            return;
        }
        let answer = storage_wire::decode_response(response);
        self.with_storage(now, |s, ring| s.handle_answer(now, ring, id, answer));
    }

    /// The transaction behind one of storage's requests timed out.
    pub(super) fn storage_transaction_failed(&mut self, now: Instant, id: ClientTxId) {
        self.with_storage(now, |s, ring| s.request_failed(now, ring, id));
    }

    /// Fetches `aor`'s registration record for a request the proxy parked; false when storage
    /// is off. The answer comes back through `proxy_resolved`.
    pub(super) fn fetch_for_proxy(
        &mut self,
        now: Instant,
        sid: crate::sip::transaction::ServerTxId,
        aor: &str,
    ) -> bool {
        let Some(storage) = self.storage.as_mut() else { return false };
        let ring = Ring { chord: &self.overlay.chord, info: &self.overlay.info };
        let op = storage.fetch(now, ring, RecordKind::Registration, aor);
        self.proxy_fetches.insert(op, sid);
        self.run_storage(now);
        true
    }

    /// Whether storage follows an overlay event; if so it is queued for [`Peer::run_storage`].
    pub(super) fn route_to_storage(&mut self, event: &Event) -> bool {
        if !self.storage.as_ref().is_some_and(|s| s.wants(event)) {
            return false;
        }
        self.storage_work.push_back(event.clone());
        true
    }

    /// Answers a storage request that reached the overlay listener.
    pub(super) fn handle_storage_request(&mut self, now: Instant, from: &Endpoint, msg: &Message) -> Answer {
        let Some(storage) = self.storage.as_mut() else {
            return Answer::Reject(Rejection::new(501, "Storage Not Enabled"));
        };
        let decoded = storage_wire::decode_request(msg, from.remote, from.transport.is_reliable(), &self.overlay.info);
        let (sender, request) = match decoded {
            Ok(d) => d,
            Err(e) => {
                storage.count_malformed();
                debug!(from = %from.remote, error = %e, "storage request refused");
                let (status, reason) = e.status();
                return Answer::Reject(Rejection::new(status, reason));
            }
        };
        let ring = Ring { chord: &self.overlay.chord, info: &self.overlay.info };
        let answer = storage.serve(now, ring, &sender, request);
        let tag = self.new_tag();
        let mut resp = storage_wire::encode_response(msg, &answer, &tag);
        // docs/security.md, M1: over UDP, an answer more than 3× the request goes only to an address
        // that has answered us; anyone else is asked to come back over TCP.
        // (Cheapest first: the sizes are computed only for an unproven UDP source.)
        if !from.transport.is_reliable()
            && !self.overlay.chord.has_answered(now, &sender)
            && super::amplifies(msg, &resp)
        {
            if let Some(s) = self.storage.as_mut() {
                s.count_sent_to_tcp();
            }
            let me = self.overlay.chord.me().clone();
            resp = storage_wire::encode_response(msg, &StorageAnswer::UseTcp { node: me }, &tag);
        }
        self.run_storage(now);
        Answer::Respond(resp)
    }

    /// Calls `f` on storage (when it is on) with a view of the ring, then does what it asked.
    pub(super) fn with_storage<T>(
        &mut self,
        now: Instant,
        f: impl FnOnce(&mut Replication, Ring<'_>) -> T,
    ) -> Option<T> {
        let storage = self.storage.as_mut()?;
        let ring = Ring { chord: &self.overlay.chord, info: &self.overlay.info };
        let result = f(storage, ring);
        self.run_storage(now);
        Some(result)
    }

    /// The work loop between storage and the rest of the peer: does what storage asked, sends
    /// the overlay's requests (whose lookups may end at once, from our own tables), and hands
    /// storage the overlay events it follows, one at a time, until neither has more.
    pub(super) fn run_storage(&mut self, now: Instant) {
        if self.storage.is_none() {
            return;
        }
        loop {
            self.apply_storage_outputs(now);
            self.drain_overlay_only(now);
            let Some(event) = self.storage_work.pop_front() else { break };
            if let Some(storage) = self.storage.as_mut() {
                let ring = Ring { chord: &self.overlay.chord, info: &self.overlay.info };
                storage.handle_overlay_event(now, ring, event);
            }
        }
    }

    /// Does what storage asked, in the order asked.
    pub(super) fn apply_storage_outputs(&mut self, now: Instant) {
        while let Some(output) = self.storage.as_mut().and_then(Replication::poll_output) {
            match output {
                Output::Lookup { op, place, key } => {
                    let lookup = self.overlay.chord.lookup(now, key);
                    if let Some(s) = self.storage.as_mut() {
                        s.lookup_started(lookup, op, place);
                    }
                }
                Output::Request { to, transport, pending } => {
                    let me = self.overlay.chord.me().clone();
                    let call_id = format!("{:016x}@{}", self.rng.random::<u64>(), me.addr.ip());
                    let from_tag = self.new_tag();
                    let Some(storage) = self.storage.as_mut() else { return };
                    let cseq = storage.next_cseq();
                    let ids = storage_wire::RequestIds { call_id: &call_id, from_tag: &from_tag, cseq };
                    let mut msg = storage_wire::encode_request(&pending.request, to.addr, &me, &self.overlay.info, ids);
                    let via = self.overlay_via(transport);
                    msg.headers.push_front_of(Header::new(HeaderName::Via, via));
                    let endpoint = Endpoint { listener: Listener::Overlay, transport, remote: to.addr, conn: None };
                    let tx = self.transactions.send_request(now, msg, endpoint, transport.is_reliable());
                    self.counters.client_transactions += 1;
                    if let Some(s) = self.storage.as_mut() {
                        s.request_sent(tx, pending);
                    }
                    self.drain_transactions_only();
                }
                Output::Abandon(tx) => {
                    let _ = self.transactions.terminate_client(tx);
                }
                Output::ForgedLinks(n) => self.overlay.chord.count_forged_links(n),
                Output::Event(event) => self.storage_event(event),
            }
        }
    }

    /// A finished put or fetch: a registration fetch the proxy waits for goes to the proxy's
    /// queue (resumed in `proxy_overlay`), everything else to the driver.
    fn storage_event(&mut self, event: StorageEvent) {
        if self.mailbox_takes(&event) {
            return;
        }
        if let StorageEvent::Fetched { op, newest, .. } = &event {
            if self.presence_takes(*op, newest.as_ref()) {
                return;
            }
            if let Some(sid) = self.proxy_fetches.remove(op) {
                self.proxy_resolved.push_back((sid, newest.clone()));
                return;
            }
        }
        self.events.push_back(PeerEvent::Storage(event));
    }
}
