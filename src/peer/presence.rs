//! The peer's side of presence (`crate::presence`): which requests go there and who sent
//! them (our phone, authenticated as the proxy does; another node, by its `Identity`), our
//! user's phones online or not, registration fetches for the buddies watched, and the
//! requests presence sends (signed as our user when they cross the overlay). No presence
//! logic lives here.

use std::time::Instant;

use super::replication::Ring;
use super::{Peer, StorageOpId};
use crate::presence::{Output, Presence, PresenceConfig, Sender};
use crate::sip::transaction::{ClientTxId, ServerTxId};
use crate::sip::{Header, HeaderName, Message};
use crate::store::RecordKind;
use crate::transport::{Endpoint, Listener};

/// A registration record's live contacts with their expiry.
fn live_contacts(record: &crate::store::Record, unix_now: u64) -> Vec<(String, u64)> {
    crate::store::Registration::from_payload(&record.payload)
        .map(|r| r.live_contacts(unix_now).map(|c| (c.uri.clone(), c.expires_at)).collect())
        .unwrap_or_default()
}

impl Peer {
    /// Turns presence on for our enrolled user (storage must be on to find buddies).
    pub fn enable_presence(&mut self, config: PresenceConfig) {
        let Some(me) = self.aor().cloned() else { return };
        let seed = self.config.seed ^ 0x7072_6573_656e_6365;
        let presence = Presence::new(me, config, self.config.proxy.addr, self.config.node_addr(), seed);
        self.presence = Some(presence);
    }

    /// `"presence"` in `/status`, when on.
    pub fn presence_status(&self) -> Option<crate::presence::PresenceStatus> {
        self.presence.as_ref().map(Presence::status)
    }

    /// Whether a request is presence's.
    pub(super) fn presence_wants(&self, from: &Endpoint, req: &Message) -> bool {
        self.presence.as_ref().is_some_and(|p| p.wants(from.listener, req))
    }

    /// A request for presence, as server transaction `sid`: who sent it is settled here.
    pub(super) fn presence_request(&mut self, now: Instant, sid: ServerTxId, from: Endpoint, req: &Message) {
        let Some(me) = self.presence.as_ref().map(|p| p.me().clone()) else { return };
        let sender = match from.listener {
            Listener::Proxy => {
                let in_dialog = req.to().ok().is_some_and(|t| t.tag().is_some());
                if !in_dialog {
                    if let Err(rejection) = self.proxy.admit_phone(now, from, req) {
                        let resp = self.rejection_response(req, &rejection);
                        let _ = self.transactions.respond(now, sid, resp);
                        self.drain_transactions(now);
                        return;
                    }
                }
                let from_aor = req.from().ok().and_then(|f| f.uri.as_sip().map(crate::sip::SipUri::aor));
                (from_aor.as_deref() == Some(me.as_str())).then_some(Sender::OurPhone)
            }
            _ => self.proxy.check_caller(now, req).ok().map(Sender::Node),
        };
        if let Some(p) = self.presence.as_mut() {
            p.handle_request(now, sid, from, req, sender);
        }
        self.run_presence(now);
    }

    /// Whether a client transaction is presence's.
    pub(super) fn is_presence_transaction(&self, tx: ClientTxId) -> bool {
        self.presence.as_ref().is_some_and(|p| p.owns(tx))
    }

    /// A final answer to one of presence's requests.
    pub(super) fn presence_answered(&mut self, now: Instant, tx: ClientTxId, response: &Message) {
        if let Some(p) = self.presence.as_mut() {
            p.answered(now, tx, response);
        }
        self.run_presence(now);
    }

    /// One of presence's requests got no final answer.
    pub(super) fn presence_failed(&mut self, now: Instant, tx: ClientTxId) {
        if let Some(p) = self.presence.as_mut() {
            p.failed(now, tx);
        }
        self.run_presence(now);
    }

    /// Presence's timers.
    pub(super) fn presence_timeout(&mut self, now: Instant) {
        if let Some(p) = self.presence.as_mut() {
            p.handle_timeout(now);
        }
        self.run_presence(now);
    }

    /// The node leaves: every watcher of our user hears that the subscription ends here.
    pub(super) fn presence_leave(&mut self, now: Instant) {
        if let Some(p) = self.presence.as_mut() {
            p.leave(now);
        }
        self.run_presence(now);
    }

    /// Whether a storage op is a buddy's registration fetch; if so its answer goes to presence.
    pub(super) fn presence_takes(&mut self, op: StorageOpId, newest: Option<&crate::store::Record>) -> bool {
        let Some(aor) = self.presence_fetches.remove(&op) else { return false };
        self.presence_resolved.push_back((aor, newest.cloned()));
        true
    }

    /// Does what presence asks, and hands it our phones' state and the buddies resolved,
    /// until it has nothing more.
    pub(super) fn run_presence(&mut self, now: Instant) {
        if self.presence.is_none() {
            return;
        }
        let unix_now = self.unix_now(now);
        if let Some(p) = self.presence.as_mut() {
            p.set_unix_now(unix_now);
        }
        loop {
            if let Some((aor, newest)) = self.presence_resolved.pop_front() {
                let contacts = newest.as_ref().map(|r| live_contacts(r, unix_now));
                if let Some(p) = self.presence.as_mut() {
                    if let Some(c) = &contacts {
                        p.note_registration(&aor, c, unix_now);
                    }
                    p.resolved(now, &aor, contacts.map(|c| c.into_iter().map(|(uri, _)| uri).collect()));
                }
                continue;
            }
            let Some(output) = self.presence.as_mut().and_then(Presence::poll_output) else { break };
            match output {
                Output::Respond { sid, response } => {
                    let mut response = *response;
                    response.headers.push(Header::new(HeaderName::Server, &self.config.proxy.server));
                    let _ = self.transactions.respond(now, sid, response);
                }
                Output::Send { key, to, request } => self.presence_send(now, key, to, *request),
                Output::Resolve { aor } => {
                    let op = self.storage.as_mut().map(|s| {
                        let ring = Ring { chord: &self.overlay.chord, info: &self.overlay.info };
                        s.fetch(now, ring, RecordKind::Registration, aor.as_str())
                    });
                    match op {
                        Some(op) => {
                            self.presence_fetches.insert(op, aor);
                            self.run_storage(now);
                        }
                        None => self.presence_resolved.push_back((aor, None)),
                    }
                }
            }
        }
        self.drain_transactions_only();
    }

    /// Buddy-first routing: a parked request for `aor` that the buddy cache can send at once;
    /// true when it did (no lookup then).
    pub(super) fn route_by_cache(&mut self, now: Instant, sid: ServerTxId, aor: &str) -> bool {
        let unix_now = self.unix_now(now);
        let Ok(aor) = crate::identity::Aor::parse(aor) else { return false };
        let Some(contacts) = self.presence.as_mut().and_then(|p| p.cached_contacts(&aor, unix_now)) else {
            return false;
        };
        self.proxy.overlay_resolved_cached(now, &mut self.transactions, sid, aor.as_str(), contacts);
        true
    }

    /// A registration record the proxy fetched for a call: kept when it is a buddy's.
    pub(super) fn note_fetched_registration(&mut self, now: Instant, record: &crate::store::Record) {
        let unix_now = self.unix_now(now);
        let contacts = live_contacts(record, unix_now);
        if let Some(p) = self.presence.as_mut() {
            p.note_registration(&record.owner, &contacts, unix_now);
        }
    }

    /// Buddies whose cached contacts failed: out of the cache.
    pub(super) fn cache_misses(&mut self) {
        while let Some(aor) = self.proxy.poll_cache_miss() {
            if let (Some(p), Ok(aor)) = (self.presence.as_mut(), crate::identity::Aor::parse(&aor)) {
                p.cache_failed(&aor);
            }
        }
    }

    fn presence_send(&mut self, now: Instant, key: crate::presence::SendKey, to: Endpoint, mut request: Message) {
        let via = match to.listener {
            Listener::Overlay => {
                // docs/security.md, M8: never toward loopback (unless we are on it),
                // link-local or ourselves.
                let own = self.config.node_addr();
                if !crate::addr::next_hop_allowed(to.remote.ip(), own.ip()) || to.remote == own {
                    if let Some(p) = self.presence.as_mut() {
                        p.failed_to_send(now, key);
                    }
                    return;
                }
                self.proxy.sign_as_node(now, &mut request);
                self.overlay_via(to.transport)
            }
            _ => self.proxy.phone_via(to.transport).to_string(),
        };
        request.headers.push_front_of(Header::new(HeaderName::Via, via));
        let tx = self.transactions.send_request(now, request, to, to.transport.is_reliable());
        self.counters.client_transactions += 1;
        if let Some(p) = self.presence.as_mut() {
            p.sent(key, tx);
        }
    }
}
