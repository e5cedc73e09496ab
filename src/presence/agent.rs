//! The presence agent of our user (RFC 3856 §3, RFC 3903 §6 as the event state compositor):
//! our phones' publications with their ETags, the state composed from them and the
//! registrar, and the watchers of our user with their subscription dialogs.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use tracing::debug;

use super::{pidf, Output};
use super::{secs_until, Presence, PresenceConfig, PresenceState, SendKey, Sender};
use crate::identity::Aor;
use crate::sip::dialog::{Dialog, DialogId};
use crate::sip::transaction::ServerTxId;
use crate::sip::{Header, HeaderName, Message};
use crate::transport::{Endpoint, Listener};

/// `SIP-ETag` and `SIP-If-Match` (RFC 3903 §11.3).
const ETAG: &str = "SIP-ETag";
const IF_MATCH: &str = "SIP-If-Match";

/// One phone's publication.
#[derive(Debug, Clone)]
struct Publication {
    state: PresenceState,
    expires_at: Instant,
    /// When it last changed: the newest one's activities win.
    updated: Instant,
}

/// One watcher of our user.
#[derive(Debug, Clone)]
struct Watcher {
    dialog: Dialog,
    watcher: Aor,
    /// Where its NOTIFYs go: where its SUBSCRIBE came from.
    to: Endpoint,
    expires_at: Instant,
    allowed: bool,
}

/// The agent's state (see the module documentation).
#[derive(Debug)]
pub(super) struct Agent {
    publications: BTreeMap<String, Publication>,
    next_etag: u64,
    online: bool,
    watchers: BTreeMap<DialogId, Watcher>,
    /// AoRs our phones watch: allowed to watch us back.
    buddies: BTreeSet<Aor>,
    allow: BTreeSet<Aor>,
    /// The state last sent to allowed watchers.
    last_sent: Option<PresenceState>,
}

impl Agent {
    pub(super) fn new(config: &PresenceConfig) -> Agent {
        Agent {
            publications: BTreeMap::new(),
            next_etag: 0,
            online: false,
            watchers: BTreeMap::new(),
            buddies: BTreeSet::new(),
            allow: config.allow.iter().cloned().collect(),
            last_sent: None,
        }
    }

    pub(super) fn has_dialog(&self, id: &DialogId) -> bool {
        self.watchers.contains_key(id)
    }

    /// Whether any phone of our user is registered; true when that changed.
    pub(super) fn set_online(&mut self, online: bool) -> bool {
        std::mem::replace(&mut self.online, online) != online
    }

    /// Our user's state as watchers see it: `closed` with no phone registered; else what the
    /// phones published last (the user's latest word wins: a phone set offline is offline even
    /// while an older publication of it, or of another phone, has not expired; saying nothing
    /// is open), or plain `open`.
    pub(super) fn state(&self) -> PresenceState {
        if !self.online {
            return PresenceState { open: Some(false), ..PresenceState::default() };
        }
        let newest = self.publications.values().max_by_key(|p| p.updated);
        PresenceState {
            open: Some(newest.is_none_or(|p| p.state.open != Some(false))),
            activities: newest.map(|p| p.state.activities.clone()).unwrap_or_default(),
            note: newest.and_then(|p| p.state.note.clone()),
        }
    }

    pub(super) fn counts(&self) -> (usize, usize) {
        let allowed = self.watchers.values().filter(|w| w.allowed).count();
        (allowed, self.watchers.len() - allowed)
    }

    pub(super) fn publication_count(&self) -> usize {
        self.publications.len()
    }

    pub(super) fn drop_watcher(&mut self, id: &DialogId) {
        self.watchers.remove(id);
    }

    #[cfg(test)]
    pub(super) fn buddies(&self) -> &BTreeSet<Aor> {
        &self.buddies
    }

    pub(super) fn next_deadline(&self) -> Option<Instant> {
        let publications = self.publications.values().map(|p| p.expires_at);
        let watchers = self.watchers.values().map(|w| w.expires_at);
        publications.chain(watchers).min()
    }
}

impl Presence {
    /// RFC 3903 §6: a PUBLISH from one of our phones for our user.
    pub(super) fn publish(&mut self, now: Instant, sid: ServerTxId, req: &Message, sender: Option<Sender>) {
        if sender != Some(Sender::OurPhone) || !self.names_me(req) {
            return self.refuse(sid, req, 403, "Forbidden (this node publishes only its own user's presence)");
        }
        let Some(expires) = self.event_and_expires(sid, req) else { return };
        let if_match = req.headers.get(&HeaderName::other(IF_MATCH)).and_then(|h| h.value_str()).map(str::trim);
        let state = match req.body.is_empty() {
            true => None,
            false => {
                if !pidf::is_pidf(req) {
                    let tag = self.tag();
                    let mut resp = req.make_response(415, "Unsupported Media Type", Some(&tag));
                    resp.headers.push(Header::new(HeaderName::Accept, "application/pidf+xml"));
                    return self.respond(sid, resp);
                }
                match PresenceState::parse(&req.body) {
                    Ok(s) => Some(s),
                    Err(e) => return self.refuse(sid, req, 400, &format!("Bad Request ({e})")),
                }
            }
        };
        let etag = match if_match {
            Some(etag) => {
                if !self.agent.publications.contains_key(etag) {
                    return self.refuse(sid, req, 412, "Conditional Request Failed");
                }
                etag.to_owned()
            }
            None => {
                if state.is_none() {
                    return self.refuse(sid, req, 400, "Bad Request (a new publication needs a body)");
                }
                self.agent.next_etag += 1;
                format!("{:x}.{}", self.rng_u64(), self.agent.next_etag)
            }
        };
        if expires == 0 {
            self.agent.publications.remove(&etag);
        } else {
            let entry = self.agent.publications.entry(etag.clone()).or_insert_with(|| Publication {
                state: PresenceState::default(),
                expires_at: now,
                updated: now,
            });
            entry.expires_at = now + Duration::from_secs(u64::from(expires));
            if let Some(state) = state {
                entry.state = state;
                entry.updated = now;
            }
        }
        let tag = self.tag();
        let mut resp = req.make_response(200, "OK", Some(&tag));
        resp.headers.push(Header::new(HeaderName::other(ETAG), &etag));
        resp.headers.push(Header::new(HeaderName::Expires, expires));
        self.respond(sid, resp);
        self.notify_watchers(now);
    }

    fn rng_u64(&mut self) -> u64 {
        rand::Rng::random(&mut self.rng)
    }

    /// RFC 6665 §4.2.1: a SUBSCRIBE for our user's presence, from another node's watcher or
    /// one of our own phones; a refresh or removal inside a subscription we hold.
    pub(super) fn watcher_subscribe(
        &mut self,
        now: Instant,
        sid: ServerTxId,
        from: Endpoint,
        req: &Message,
        sender: Option<Sender>,
    ) {
        let watcher = match &sender {
            Some(Sender::Node(aor)) => aor.clone(),
            Some(Sender::OurPhone) => self.me.clone(),
            None => return self.refuse(sid, req, 403, "Forbidden (watcher not proven)"),
        };
        let Some(expires) = self.event_and_expires(sid, req) else { return };
        let contact =
            if from.listener == Listener::Proxy { self.phone_contact.clone() } else { self.node_contact.clone() };
        if let Some(id) = DialogId::of_request(req) {
            let Some(w) = self.agent.watchers.get_mut(&id) else {
                return self.refuse(sid, req, 481, "Subscription Does Not Exist");
            };
            if w.watcher != watcher {
                return self.refuse(sid, req, 403, "Forbidden (not this subscription's watcher)");
            }
            if !w.dialog.accept_request(req) {
                return self.refuse(sid, req, 500, "Server Internal Error (CSeq out of order)");
            }
            w.expires_at = now + Duration::from_secs(u64::from(expires));
            let resp = subscribe_ok(req, None, expires, &contact);
            self.respond(sid, resp);
            return self.send_watcher_notify(now, &id, expires == 0);
        }
        if self.agent.watchers.len() >= self.config.max_watchers {
            return self.refuse(sid, req, 503, "Service Unavailable (too many watchers)");
        }
        let tag = self.tag();
        let Some(dialog) = Dialog::as_uas(req, &tag) else {
            return self.refuse(sid, req, 400, "Bad Request (a SUBSCRIBE needs a Contact)");
        };
        let allowed =
            watcher == self.me || self.agent.buddies.contains(&watcher) || self.agent.allow.contains(&watcher);
        debug!(%watcher, allowed, expires, "watcher subscribes to our presence");
        let id = dialog.id.clone();
        let entry =
            Watcher { dialog, watcher, to: from, expires_at: now + Duration::from_secs(u64::from(expires)), allowed };
        self.agent.watchers.insert(id.clone(), entry);
        let resp = subscribe_ok(req, Some(&tag), expires, &contact);
        self.respond(sid, resp);
        // RFC 6665 §4.2.1.2: a NOTIFY at once; a fetch (Expires: 0) gets its one and ends.
        self.send_watcher_notify(now, &id, expires == 0);
    }

    /// Every watcher's last NOTIFY: `terminated;reason=deactivated`.
    pub(super) fn agent_leave(&mut self, now: Instant) {
        let ids: Vec<DialogId> = self.agent.watchers.keys().cloned().collect();
        for id in ids {
            self.send_watcher_notify_with(now, &id, Some("terminated;reason=deactivated"));
        }
    }

    /// The NOTIFY of watcher `id`'s subscription as it stands; `ending` sends the last one.
    fn send_watcher_notify(&mut self, now: Instant, id: &DialogId, ending: bool) {
        self.send_watcher_notify_with(now, id, ending.then_some("terminated;reason=timeout"));
    }

    /// The NOTIFY of watcher `id`'s subscription; `end` is the Subscription-State of a last one.
    fn send_watcher_notify_with(&mut self, now: Instant, id: &DialogId, end: Option<&str>) {
        let ending = end.is_some();
        let state = self.agent.state();
        let me = self.me.clone();
        let Some(w) = self.agent.watchers.get_mut(id) else { return };
        let left = secs_until(now, w.expires_at);
        let contact = if w.to.listener == Listener::Proxy { &self.phone_contact } else { &self.node_contact };
        let (sub_state, body) = match (end, w.allowed) {
            (Some(end), _) => (end.to_owned(), None),
            (None, true) => (format!("active;expires={left}"), Some(&state)),
            (None, false) => (format!("pending;expires={left}"), None),
        };
        let request = Presence::notify_request(&mut w.dialog, contact, &sub_state, &me, body);
        let to = w.to;
        if ending {
            self.agent.watchers.remove(id);
        }
        self.notifies_sent += 1;
        self.out.push_back(Output::Send { key: SendKey::NotifyWatcher(id.clone()), to, request: Box::new(request) });
    }

    /// Tells every allowed watcher our state, if it changed since the last time.
    pub(super) fn notify_watchers(&mut self, now: Instant) {
        let state = self.agent.state();
        if self.agent.last_sent.as_ref() == Some(&state) {
            return;
        }
        self.agent.last_sent = Some(state);
        let ids: Vec<DialogId> =
            self.agent.watchers.iter().filter(|(_, w)| w.allowed).map(|(id, _)| id.clone()).collect();
        for id in ids {
            self.send_watcher_notify(now, &id, false);
        }
    }

    /// Our phones watch `buddy`: it may watch us back. Its pending subscriptions become active.
    pub(super) fn add_buddy(&mut self, now: Instant, buddy: &Aor) {
        if !self.agent.buddies.insert(buddy.clone()) {
            return;
        }
        let promoted: Vec<DialogId> = self
            .agent
            .watchers
            .iter_mut()
            .filter(|(_, w)| !w.allowed && w.watcher == *buddy)
            .map(|(id, w)| {
                w.allowed = true;
                id.clone()
            })
            .collect();
        for id in promoted {
            self.send_watcher_notify(now, &id, false);
        }
    }

    /// Expired publications (the state may change) and subscriptions (a last NOTIFY).
    pub(super) fn agent_timeout(&mut self, now: Instant) {
        let before = self.agent.publications.len();
        self.agent.publications.retain(|_, p| p.expires_at > now);
        if self.agent.publications.len() != before {
            self.notify_watchers(now);
        }
        let expired: Vec<DialogId> =
            self.agent.watchers.iter().filter(|(_, w)| w.expires_at <= now).map(|(id, _)| id.clone()).collect();
        for id in expired {
            self.send_watcher_notify(now, &id, true);
        }
    }
}

/// `200 OK` to a SUBSCRIBE: our tag (a new dialog), the granted Expires, our Contact.
pub(super) fn subscribe_ok(
    req: &Message,
    tag: Option<&str>,
    expires: u32,
    contact: &crate::sip::header::NameAddr,
) -> Message {
    let mut resp = req.make_response(200, "OK", tag);
    resp.headers.push(Header::new(HeaderName::Expires, expires));
    resp.headers.push(Header::new(HeaderName::Contact, contact.to_string()));
    resp
}
