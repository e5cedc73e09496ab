//! Watching buddies for our phones: each phone's presence SUBSCRIBE is answered here (RFC 6665
//! §4.2, this node as the notifier toward its phones), and for each buddy the node holds one
//! subscription of its own to the buddy's node across the overlay (§4.1, this node as the
//! subscriber). A buddy whose node does not answer, or whose registration has no contact,
//! shows `closed` to our phones, whose subscriptions stay up (baresip waits minutes to hours
//! before it tries a terminated one again); the node tries the buddy again, backing off.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use tracing::debug;

use super::agent::subscribe_ok;
use super::{pidf, secs_until, Output, Presence, PresenceState, SendKey, Sender};
use crate::identity::Aor;
use crate::sip::dialog::{Dialog, DialogId};
use crate::sip::header::NameAddr;
use crate::sip::transaction::ServerTxId;
use crate::sip::{Header, HeaderName, Message, Method, Uri};
use crate::transport::{Endpoint, Listener, Transport};

/// What our phones are told of a buddy.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Buddy {
    /// Nothing heard yet.
    Unknown,
    /// The buddy's node has not authorized us (RFC 3856 §6.6): nothing to show.
    Pending,
    /// The buddy's state, as its node signed it.
    Known(PresenceState),
    /// The buddy's node is gone, or the buddy has no registered phone: closed.
    Offline,
}

/// One phone's subscription to a buddy.
#[derive(Debug, Clone)]
struct PhoneSub {
    dialog: Dialog,
    buddy: Aor,
    /// Where its NOTIFYs go: where its SUBSCRIBE came from.
    to: Endpoint,
    expires_at: Instant,
}

/// Our subscription to one buddy's node.
#[derive(Debug, Clone)]
struct Remote {
    state: Buddy,
    /// Once the buddy's node answered or notified.
    dialog: Option<Dialog>,
    /// Our dialog-creating SUBSCRIBE, until the dialog exists.
    request: Option<Message>,
    /// A SUBSCRIBE is in flight, or a resolution.
    busy: bool,
    /// When our subscription needs refreshing.
    refresh_at: Option<Instant>,
    /// When to try the buddy again.
    retry_at: Option<Instant>,
    backoff: Duration,
}

/// The watcher side's state.
#[derive(Debug, Default)]
pub(super) struct Watching {
    phones: BTreeMap<DialogId, PhoneSub>,
    remotes: BTreeMap<Aor, Remote>,
}

impl Watching {
    pub(super) fn has_dialog(&self, id: &DialogId) -> bool {
        self.phones.contains_key(id) || self.remotes.values().any(|r| r.dialog.as_ref().is_some_and(|d| d.id == *id))
    }

    /// Whether `req` is a NOTIFY for a SUBSCRIBE of ours whose dialog is not set up yet.
    pub(super) fn awaits_notify(&self, req: &Message) -> bool {
        self.remote_for(req).is_some()
    }

    fn remote_for(&self, req: &Message) -> Option<Aor> {
        let call_id = req.call_id().ok()?;
        let to_tag = req.to().ok()?.tag()?.to_owned();
        self.remotes.iter().find_map(|(aor, r)| {
            let by_dialog = r.dialog.as_ref().is_some_and(|d| d.id.call_id == call_id && d.id.local_tag == to_tag);
            let by_request = r.request.as_ref().is_some_and(|q| {
                q.call_id().ok() == Some(call_id)
                    && q.from().ok().and_then(|f| f.tag().map(str::to_owned)) == Some(to_tag.clone())
            });
            (by_dialog || by_request).then(|| aor.clone())
        })
    }

    pub(super) fn is_watched(&self, aor: &Aor) -> bool {
        self.remotes.contains_key(aor)
    }

    pub(super) fn remote_count(&self) -> usize {
        self.remotes.len()
    }

    pub(super) fn phone_count(&self) -> usize {
        self.phones.len()
    }

    pub(super) fn buddy_states(&self) -> BTreeMap<String, &'static str> {
        self.remotes
            .iter()
            .map(|(aor, r)| {
                let shown = match &r.state {
                    Buddy::Unknown => "unknown",
                    Buddy::Pending => "pending",
                    Buddy::Offline => "closed",
                    Buddy::Known(s) if s.open == Some(false) => "closed",
                    Buddy::Known(_) => "open",
                };
                (aor.to_string(), shown)
            })
            .collect()
    }

    pub(super) fn next_deadline(&self) -> Option<Instant> {
        let phones = self.phones.values().map(|p| p.expires_at);
        let remotes = self.remotes.values().flat_map(|r| [r.refresh_at, r.retry_at]).flatten();
        phones.chain(remotes).min()
    }
}

/// The endpoint of a node named by a URI (its overlay listener, over UDP unless it says TCP).
fn node_endpoint(uri: &Uri) -> Option<Endpoint> {
    let Uri::Sip(sip) = uri else { return None };
    let ip = sip.host.ip()?;
    let transport = match sip.transport() {
        Some(t) if t.eq_ignore_ascii_case("tcp") => Transport::Tcp,
        _ => Transport::Udp,
    };
    let remote = std::net::SocketAddr::new(ip, sip.port.unwrap_or(5060));
    Some(Endpoint { listener: Listener::Overlay, transport, remote, conn: None })
}

impl Presence {
    /// A phone of ours subscribes to a buddy's presence (new), or refreshes or ends that.
    pub(super) fn phone_subscribe(
        &mut self,
        now: Instant,
        sid: ServerTxId,
        from: Endpoint,
        req: &Message,
        sender: Option<Sender>,
    ) {
        if sender != Some(Sender::OurPhone) {
            return self.refuse(sid, req, 403, "Forbidden (presence is watched for this node's user only)");
        }
        let Some(expires) = self.event_and_expires(sid, req) else { return };
        let contact = self.phone_contact.clone();
        if let Some(id) = DialogId::of_request(req) {
            let Some(sub) = self.watch.phones.get_mut(&id) else {
                return self.refuse(sid, req, 481, "Subscription Does Not Exist");
            };
            if !sub.dialog.accept_request(req) {
                return self.refuse(sid, req, 500, "Server Internal Error (CSeq out of order)");
            }
            sub.expires_at = now + Duration::from_secs(u64::from(expires));
            self.respond(sid, subscribe_ok(req, None, expires, &contact));
            self.notify_phone(now, &id, expires == 0);
            if expires == 0 {
                self.drop_phone_sub(now, &id);
            }
            return;
        }
        let Some(Uri::Sip(uri)) = req.request_uri() else {
            return self.refuse(sid, req, 416, "Unsupported URI Scheme");
        };
        let buddy = match Aor::parse(&uri.aor()) {
            Ok(aor) if aor.domain() == self.me.domain() => aor,
            _ => return self.refuse(sid, req, 404, "Not Found (not a user of this overlay)"),
        };
        let watched = self.watch.remotes.contains_key(&buddy);
        if !watched && self.watch.remotes.len() >= self.config.max_buddies {
            return self.refuse(sid, req, 503, "Service Unavailable (too many buddies watched)");
        }
        let tag = self.tag();
        let Some(dialog) = Dialog::as_uas(req, &tag) else {
            return self.refuse(sid, req, 400, "Bad Request (a SUBSCRIBE needs a Contact)");
        };
        // Our user watches this buddy: the buddy may watch our user back.
        self.add_buddy(now, &buddy);
        let id = dialog.id.clone();
        let sub = PhoneSub {
            dialog,
            buddy: buddy.clone(),
            to: from,
            expires_at: now + Duration::from_secs(u64::from(expires)),
        };
        self.watch.phones.insert(id.clone(), sub);
        self.respond(sid, subscribe_ok(req, Some(&tag), expires, &contact));
        self.notify_phone(now, &id, expires == 0);
        if expires == 0 {
            self.watch.phones.remove(&id);
            return;
        }
        if !watched {
            debug!(%buddy, "watching a buddy for our phones");
            let remote = Remote {
                state: Buddy::Unknown,
                dialog: None,
                request: None,
                busy: true,
                refresh_at: None,
                retry_at: None,
                backoff: self.config.retry_min,
            };
            self.watch.remotes.insert(buddy.clone(), remote);
            self.out.push_back(Output::Resolve { aor: buddy });
        }
    }

    /// Where `aor`'s node is: its registration's live contacts, `None` when it has no record.
    pub fn resolved(&mut self, now: Instant, aor: &Aor, contacts: Option<Vec<String>>) {
        let Some(remote) = self.watch.remotes.get_mut(aor) else { return };
        remote.busy = false;
        let target =
            contacts.iter().flatten().filter_map(|c| Uri::parse(c)).find_map(|u| Some((node_endpoint(&u)?, u)));
        let Some((to, uri)) = target else {
            // No phone of the buddy anywhere: closed, and a look again later.
            self.buddy_offline(now, aor);
            return;
        };
        let tag = self.tag();
        let call_id = format!("{}@p2psip-presence", self.tag());
        let mut req = Message::request(Method::Subscribe, uri);
        let mut from =
            NameAddr::new(Uri::parse(self.me.as_str()).unwrap_or_else(|| {
                Uri::Sip(crate::sip::SipUri::new(crate::sip::uri::Host::Domain(String::new()), None))
            }));
        from.set_param("tag", Some(tag));
        let to_uri = Uri::parse(aor.as_str()).unwrap_or_else(|| from.uri.clone());
        let h = &mut req.headers;
        h.push(Header::new(HeaderName::MaxForwards, 70));
        h.push(Header::new(HeaderName::From, from));
        h.push(Header::new(HeaderName::To, NameAddr::new(to_uri)));
        h.push(Header::new(HeaderName::CallId, call_id));
        h.push(Header::new(HeaderName::CSeq, "1 SUBSCRIBE"));
        h.push(Header::new(HeaderName::Contact, self.node_contact.to_string()));
        h.push(Header::new(HeaderName::Event, super::EVENT));
        h.push(Header::new(HeaderName::Accept, "application/pidf+xml"));
        h.push(Header::new(HeaderName::Expires, self.config.remote_expires));
        req.set_body(bytes::Bytes::new(), None);
        if let Some(remote) = self.watch.remotes.get_mut(aor) {
            remote.request = Some(req.clone());
            remote.dialog = None;
            remote.busy = true;
        }
        self.out.push_back(Output::Send { key: SendKey::Subscribe(aor.clone()), to, request: Box::new(req) });
    }

    /// The buddy's node answered our SUBSCRIBE.
    pub(super) fn subscribe_answered(&mut self, now: Instant, aor: &Aor, response: &Message) {
        let Some(remote) = self.watch.remotes.get_mut(aor) else { return };
        remote.busy = false;
        let status = response.status().unwrap_or(500);
        if (200..300).contains(&status) {
            if remote.dialog.is_none() {
                remote.dialog = remote.request.as_ref().and_then(|q| Dialog::as_uac(q, response));
            }
            let granted = response.expires().ok().flatten().unwrap_or(self.config.remote_expires);
            // Refreshed at 90% of what was granted (RFC 6665 §4.1.2.2 leaves the margin to us).
            let refresh = Duration::from_secs(u64::from(granted).max(10) * 9 / 10);
            remote.refresh_at = Some(now + refresh);
            remote.retry_at = None;
            remote.backoff = self.config.retry_min;
            // The buddy's node is alive where the cache says: buddy-first routing may go on.
            self.cache.touch(aor, self.unix_now, u64::from(granted));
            return;
        }
        debug!(%aor, status, "the buddy's node refused our subscription");
        self.buddy_offline(now, aor);
    }

    /// Our SUBSCRIBE got no answer: the buddy's node is gone.
    pub(super) fn subscribe_failed(&mut self, now: Instant, aor: &Aor) {
        debug!(%aor, "the buddy's node did not answer our subscription");
        self.buddy_offline(now, aor);
    }

    /// The buddy is unreachable or has no phone: closed for our phones, and another try after
    /// the back-off.
    fn buddy_offline(&mut self, now: Instant, aor: &Aor) {
        let (min, max) = (self.config.retry_min, self.config.retry_max);
        // Its node is gone or has no phone of the buddy: no call goes there on the cache.
        self.cache.forget(aor);
        let Some(remote) = self.watch.remotes.get_mut(aor) else { return };
        remote.dialog = None;
        remote.request = None;
        remote.busy = false;
        remote.refresh_at = None;
        remote.retry_at = Some(now + remote.backoff);
        remote.backoff = (remote.backoff * 2).clamp(min, max);
        self.set_buddy(now, aor, Buddy::Offline);
    }

    /// Changes what our phones are told of `aor`, and tells them if it changed.
    fn set_buddy(&mut self, now: Instant, aor: &Aor, state: Buddy) {
        let Some(remote) = self.watch.remotes.get_mut(aor) else { return };
        if remote.state == state {
            return;
        }
        remote.state = state;
        let ids: Vec<DialogId> =
            self.watch.phones.iter().filter(|(_, s)| s.buddy == *aor).map(|(id, _)| id.clone()).collect();
        for id in ids {
            self.notify_phone(now, &id, false);
        }
    }

    /// A NOTIFY from a buddy's node (RFC 6665 §4.1.3), proven (by the peer) to come from the
    /// buddy's node, or refused.
    pub(super) fn notify_in(&mut self, now: Instant, sid: ServerTxId, req: &Message, sender: Option<Sender>) {
        let Some(aor) = self.watch.remote_for(req) else {
            self.notifies_refused += 1;
            return self.refuse(sid, req, 481, "Subscription Does Not Exist");
        };
        if sender != Some(Sender::Node(aor.clone())) {
            self.notifies_refused += 1;
            return self.refuse(sid, req, 403, "Forbidden (NOTIFY not signed by the presentity's node)");
        }
        let state_header = req.headers.get(&HeaderName::SubscriptionState).and_then(|h| h.value_str()).unwrap_or("");
        let sub_state = state_header.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
        let document = if req.body.is_empty() {
            None
        } else {
            match pidf::is_pidf(req).then(|| PresenceState::parse(&req.body)) {
                Some(Ok(doc)) => Some(doc),
                _ => {
                    self.notifies_refused += 1;
                    return self.refuse(sid, req, 415, "Unsupported Media Type");
                }
            }
        };
        let Some(remote) = self.watch.remotes.get_mut(&aor) else { return };
        if remote.dialog.is_none() {
            remote.dialog = remote.request.as_ref().and_then(|q| Dialog::as_uac(q, req));
        } else if let Some(d) = remote.dialog.as_mut() {
            let seq = req.cseq().map(|c| c.seq).unwrap_or(0);
            if !d.accept_remote_seq(seq) {
                return self.refuse(sid, req, 500, "Server Internal Error (CSeq out of order)");
            }
        }
        let tag = self.tag();
        self.respond(sid, req.make_response(200, "OK", Some(&tag)));
        match (sub_state.as_str(), document) {
            ("terminated", _) => {
                debug!(%aor, reason = state_header, "the buddy's node ended our subscription");
                self.buddy_offline(now, &aor);
            }
            ("pending", _) => self.set_buddy(now, &aor, Buddy::Pending),
            (_, Some(doc)) => self.set_buddy(now, &aor, Buddy::Known(doc)),
            (_, None) => {}
        }
    }

    /// The NOTIFY to phone subscription `id`: the buddy's state as we know it (none: no body,
    /// which phones show as unknown); `ending` sends the last one.
    fn notify_phone(&mut self, now: Instant, id: &DialogId, ending: bool) {
        let contact = self.phone_contact.clone();
        let Some(sub) = self.watch.phones.get_mut(id) else { return };
        let buddy = sub.buddy.clone();
        let closed = PresenceState { open: Some(false), ..PresenceState::default() };
        let state = match self.watch.remotes.get(&buddy).map(|r| &r.state) {
            Some(Buddy::Known(s)) => Some(s.clone()),
            Some(Buddy::Offline) => Some(closed),
            _ => None,
        };
        let left = secs_until(now, sub.expires_at);
        let sub_state = if ending { "terminated;reason=timeout".to_owned() } else { format!("active;expires={left}") };
        let request = Presence::notify_request(&mut sub.dialog, &contact, &sub_state, &buddy, state.as_ref());
        let to = sub.to;
        self.notifies_sent += 1;
        self.out.push_back(Output::Send { key: SendKey::NotifyPhone(id.clone()), to, request: Box::new(request) });
    }

    /// A phone's subscription is over; with no phone left watching its buddy, so is ours.
    pub(super) fn drop_phone_sub(&mut self, _now: Instant, id: &DialogId) {
        let Some(sub) = self.watch.phones.remove(id) else { return };
        if self.watch.phones.values().any(|s| s.buddy == sub.buddy) {
            return;
        }
        self.cache.forget(&sub.buddy);
        let Some(mut remote) = self.watch.remotes.remove(&sub.buddy) else { return };
        if let Some(dialog) = remote.dialog.as_mut() {
            let mut req = dialog.request(Method::Subscribe, &self.node_contact);
            req.headers.push(Header::new(HeaderName::Event, super::EVENT));
            req.headers.push(Header::new(HeaderName::Expires, 0));
            req.set_body(bytes::Bytes::new(), None);
            if let Some(to) = node_endpoint(dialog.next_hop()) {
                let key = SendKey::Subscribe(sub.buddy.clone());
                self.out.push_back(Output::Send { key, to, request: Box::new(req) });
            }
        }
    }

    /// Phones' subscriptions that lapsed; our refreshes and retries that are due.
    pub(super) fn watch_timeout(&mut self, now: Instant) {
        let lapsed: Vec<DialogId> =
            self.watch.phones.iter().filter(|(_, s)| s.expires_at <= now).map(|(id, _)| id.clone()).collect();
        for id in lapsed {
            self.drop_phone_sub(now, &id);
        }
        let due: Vec<Aor> = self
            .watch
            .remotes
            .iter()
            .filter(|(_, r)| !r.busy && [r.refresh_at, r.retry_at].into_iter().flatten().any(|t| t <= now))
            .map(|(aor, _)| aor.clone())
            .collect();
        for aor in due {
            let remote_expires = self.config.remote_expires;
            let contact = self.node_contact.clone();
            let Some(remote) = self.watch.remotes.get_mut(&aor) else { continue };
            remote.busy = true;
            remote.refresh_at = None;
            match remote.dialog.as_mut() {
                Some(dialog) if remote.retry_at.is_none() => {
                    let mut req = dialog.request(Method::Subscribe, &contact);
                    req.headers.push(Header::new(HeaderName::Event, super::EVENT));
                    req.headers.push(Header::new(HeaderName::Accept, "application/pidf+xml"));
                    req.headers.push(Header::new(HeaderName::Expires, remote_expires));
                    req.set_body(bytes::Bytes::new(), None);
                    match node_endpoint(dialog.next_hop()) {
                        Some(to) => {
                            let key = SendKey::Subscribe(aor.clone());
                            self.out.push_back(Output::Send { key, to, request: Box::new(req) });
                        }
                        None => self.buddy_offline(now, &aor),
                    }
                }
                _ => {
                    remote.retry_at = None;
                    self.out.push_back(Output::Resolve { aor });
                }
            }
        }
    }
}
