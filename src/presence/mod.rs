//! Presence between buddies (RFC 3856 over RFC 6665 and RFC 3903, PIDF RFC 3863), sans-IO.
//!
//! Two roles meet in [`Presence`], one per node:
//!
//! - **Presence agent of our user** (`agent`): the phones of our enrolled user PUBLISH their
//!   state here (ETags, expiry, `412` for an unknown ETag); the node composes it with what the
//!   registrar knows (no phone registered: `closed`) and answers presence SUBSCRIBEs for our
//!   user itself, from other nodes (their watchers) and from our own phones. A watcher is
//!   allowed when our user's phones watch it back (the buddy list their SUBSCRIBEs teach) or
//!   when the configuration lists it; others stay `pending` and get NOTIFYs with no body.
//! - **Watcher for our phones** (`watch`): a phone's SUBSCRIBE to a buddy is answered here, and
//!   the node keeps one subscription of its own per buddy across the overlay, to the buddy's
//!   node, whose NOTIFYs (signed by that node, checked by the peer before they reach us) are
//!   handed to every phone watching. A buddy whose node is gone turns `closed` for our phones,
//!   whose subscriptions stay up; the node tries the buddy again later.
//!
//! Requests across the overlay carry the sending node's `Identity` (the caller proof of
//! `crate::identity::caller`), added and checked by the peer. Everything here takes `now` and
//! hands back what to send ([`Output`]); the peer sends it and reports the answers.

pub mod agent;
pub mod buddies;
pub mod fuzzing;
pub mod pidf;
pub mod watch;

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use crate::identity::Aor;
use crate::sip::dialog::{Dialog, DialogId};
use crate::sip::header::{MediaType, NameAddr};
use crate::sip::transaction::{ClientTxId, ServerTxId};
use crate::sip::{Header, HeaderName, Message, Method, Uri};
use crate::transport::{Endpoint, Listener};

pub use pidf::Presence as PresenceState;

/// The event package (RFC 3856 §3).
pub const EVENT: &str = "presence";

/// How presence behaves.
#[derive(Debug, Clone)]
pub struct PresenceConfig {
    /// Watchers allowed whatever the buddy list says (`[presence] allow`).
    pub allow: Vec<Aor>,
    /// Shortest subscription or publication accepted (`423` below it, RFC 3903 §6).
    pub min_expires: u32,
    /// Longest granted (RFC 3856 §6.4's default is 3600).
    pub max_expires: u32,
    /// How long our own subscriptions across the overlay last: a buddy's node that died
    /// without a word is noticed when the refresh fails, so this bounds how long a dead
    /// buddy shows its last state.
    pub remote_expires: u32,
    /// First wait before trying a buddy again whose node did not answer or had no contact;
    /// doubled each time up to `retry_max`.
    pub retry_min: Duration,
    /// Longest wait between tries.
    pub retry_max: Duration,
    /// Watchers of our user held at once; more get `503`.
    pub max_watchers: usize,
    /// Buddies watched at once for our phones; more get `503`.
    pub max_buddies: usize,
}

impl Default for PresenceConfig {
    fn default() -> PresenceConfig {
        PresenceConfig {
            allow: Vec::new(),
            min_expires: 60,
            max_expires: 3600,
            remote_expires: 600,
            retry_min: Duration::from_secs(30),
            retry_max: Duration::from_secs(300),
            max_watchers: 256,
            max_buddies: 256,
        }
    }
}

/// What presence asks of the peer.
#[derive(Debug)]
pub enum Output {
    /// Answer server transaction `sid` with `response`.
    Respond {
        /// The transaction.
        sid: ServerTxId,
        /// The answer (To tag included).
        response: Box<Message>,
    },
    /// Send `request` (no Via yet) to `to` as a client transaction, and tell
    /// [`Presence::sent`] its ID with `key`. A request to a node (`to.listener` is the overlay)
    /// is signed as our user.
    Send {
        /// What the request is for.
        key: SendKey,
        /// Where it goes.
        to: Endpoint,
        /// The request.
        request: Box<Message>,
    },
    /// Find where `aor`'s node is (its registration record's contacts); answer with
    /// [`Presence::resolved`].
    Resolve {
        /// The buddy.
        aor: Aor,
    },
}

/// What one of our requests is for, so its answer finds its way back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendKey {
    /// A NOTIFY to one of our user's watchers.
    NotifyWatcher(DialogId),
    /// A NOTIFY to one of our phones watching a buddy.
    NotifyPhone(DialogId),
    /// Our SUBSCRIBE (initial, refresh or removal) to a buddy's node.
    Subscribe(Aor),
}

/// Who sent a request the peer hands over, as far as it could tell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sender {
    /// One of our phones, authenticated as our user.
    OurPhone,
    /// Another node, whose `Identity` proved this user.
    Node(Aor),
}

/// `"presence"` in `/status`. Field names are a contract with scripts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PresenceStatus {
    /// Buddies our node watches for its phones across the overlay.
    pub subscriptions: u64,
    /// Watchers of our user allowed to see its state.
    pub watchers: u64,
    /// Watchers of our user waiting for authorization (they see nothing).
    pub pending: u64,
    /// Our phones' subscriptions to buddies.
    pub phone_subscriptions: u64,
    /// Publications of our user's phones now.
    pub publications: u64,
    /// Our user's state as watchers see it: `open` or `closed`.
    pub state: &'static str,
    /// Buddies by AoR and what our phones are told of each: `open`, `closed`, `pending`
    /// (their node has not authorized us) or `unknown`.
    pub buddies: BTreeMap<String, &'static str>,
    /// NOTIFYs sent to watchers and phones.
    pub notifies_sent: u64,
    /// NOTIFYs from other nodes refused (no proof of the presentity, no such subscription).
    pub notifies_refused: u64,
    /// Calls and MESSAGEs to buddies sent on cached contacts (`buddies`): lookups saved, and
    /// fallbacks when the cached contacts failed.
    #[serde(flatten)]
    pub cache: buddies::CacheCounters,
    /// Buddies whose contacts are cached now.
    pub cached: u64,
}

/// Presence for one node (see the module documentation).
pub struct Presence {
    me: Aor,
    config: PresenceConfig,
    /// Our Contact on the proxy listener (toward phones) and on the overlay (toward nodes).
    phone_contact: NameAddr,
    node_contact: NameAddr,
    rng: ChaCha8Rng,
    agent: agent::Agent,
    watch: watch::Watching,
    /// Our client transactions and what each is for.
    pending: BTreeMap<ClientTxId, SendKey>,
    notifies_sent: u64,
    notifies_refused: u64,
    /// Our buddies' contacts, for buddy-first routing (`buddies`).
    cache: buddies::BuddyCache,
    /// Unix seconds as the peer last said ([`Presence::set_unix_now`]).
    unix_now: u64,
    out: VecDeque<Output>,
}

impl Presence {
    /// Presence for our user `me`, whose phones reach us at `proxy` and other nodes at
    /// `overlay`; `seed` draws tags and Call-IDs.
    pub fn new(
        me: Aor,
        config: PresenceConfig,
        proxy: std::net::SocketAddr,
        overlay: std::net::SocketAddr,
        seed: u64,
    ) -> Presence {
        let contact = |a: std::net::SocketAddr| {
            NameAddr::new(Uri::Sip(crate::sip::SipUri::new(crate::sip::uri::Host::from(a.ip()), Some(a.port()))))
        };
        Presence {
            agent: agent::Agent::new(&config),
            me,
            config,
            phone_contact: contact(proxy),
            node_contact: contact(overlay),
            rng: ChaCha8Rng::seed_from_u64(seed),
            watch: watch::Watching::default(),
            pending: BTreeMap::new(),
            notifies_sent: 0,
            notifies_refused: 0,
            cache: buddies::BuddyCache::default(),
            unix_now: 0,
            out: VecDeque::new(),
        }
    }

    /// Our user.
    pub fn me(&self) -> &Aor {
        &self.me
    }

    /// The next thing presence asks of the peer.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    /// Whether a request is presence's to handle: a PUBLISH or a new presence SUBSCRIBE from a
    /// phone (on the proxy listener), a new presence SUBSCRIBE for our user from a node, or a
    /// SUBSCRIBE or NOTIFY inside one of our subscriptions.
    pub fn wants(&self, listener: Listener, req: &Message) -> bool {
        let Some(method) = req.method() else { return false };
        if !matches!(method, Method::Subscribe | Method::Notify | Method::Publish) {
            return false;
        }
        if let Some(id) = DialogId::of_request(req) {
            return self.agent.has_dialog(&id) || self.watch.has_dialog(&id) || self.watch.awaits_notify(req);
        }
        if method == &Method::Notify {
            // A NOTIFY may come before the answer to our SUBSCRIBE (RFC 6665 §4.1.2.4).
            return listener == Listener::Overlay && self.watch.awaits_notify(req);
        }
        if !is_presence(req) {
            return false;
        }
        match listener {
            Listener::Proxy => true,
            _ => method == &Method::Subscribe && self.names_me(req),
        }
    }

    /// Whether the Request-URI names our user (at our domain or at our address).
    fn names_me(&self, req: &Message) -> bool {
        let Some(Uri::Sip(uri)) = req.request_uri() else { return false };
        let user = uri.user_unescaped().and_then(|u| String::from_utf8(u).ok());
        user.as_deref() == Some(self.me.user())
    }

    /// A request [`Presence::wants`], from `from`, as server transaction `sid`; `sender` is who
    /// the peer found it to be (`None`: a node's request without a valid proof).
    pub fn handle_request(
        &mut self,
        now: Instant,
        sid: ServerTxId,
        from: Endpoint,
        req: &Message,
        sender: Option<Sender>,
    ) {
        let Some(method) = req.method().cloned() else { return };
        let in_dialog = DialogId::of_request(req);
        match (method, from.listener) {
            (Method::Publish, Listener::Proxy) => self.publish(now, sid, req, sender),
            (Method::Publish, _) => self.refuse(sid, req, 403, "Forbidden (phones publish on the proxy port)"),
            (Method::Notify, _) => self.notify_in(now, sid, req, sender),
            (Method::Subscribe, Listener::Proxy) => match in_dialog {
                Some(id) if self.agent.has_dialog(&id) => self.watcher_subscribe(now, sid, from, req, sender),
                Some(_) => self.phone_subscribe(now, sid, from, req, sender),
                None if self.names_me(req) && is_our_domain_aor(req, &self.me) => {
                    self.watcher_subscribe(now, sid, from, req, sender)
                }
                None => self.phone_subscribe(now, sid, from, req, sender),
            },
            (Method::Subscribe, _) => self.watcher_subscribe(now, sid, from, req, sender),
            _ => {}
        }
    }

    /// The wall clock, as the peer reads it (the cache's entries expire in Unix time).
    pub fn set_unix_now(&mut self, unix_now: u64) {
        self.unix_now = unix_now;
    }

    /// Our user's phones: whether any is registered (none: `closed` for watchers).
    pub fn set_phones_online(&mut self, now: Instant, online: bool) {
        if self.agent.set_online(online) {
            self.notify_watchers(now);
        }
    }

    /// When presence next needs [`Presence::handle_timeout`].
    pub fn poll_timeout(&self) -> Option<Instant> {
        [self.agent.next_deadline(), self.watch.next_deadline()].into_iter().flatten().min()
    }

    /// Expired publications and subscriptions, refreshes and retries due.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.agent_timeout(now);
        self.watch_timeout(now);
    }

    /// The peer sent `key`'s request as client transaction `tx`.
    pub fn sent(&mut self, key: SendKey, tx: ClientTxId) {
        self.pending.insert(tx, key);
    }

    /// Whether a client transaction is presence's.
    pub fn owns(&self, tx: ClientTxId) -> bool {
        self.pending.contains_key(&tx)
    }

    /// A final answer to one of our requests.
    pub fn answered(&mut self, now: Instant, tx: ClientTxId, response: &Message) {
        let Some(status) = response.status().filter(|s| *s >= 200) else { return };
        let Some(key) = self.pending.remove(&tx) else { return };
        match key {
            SendKey::Subscribe(aor) => self.subscribe_answered(now, &aor, response),
            SendKey::NotifyWatcher(id) if status == 481 || status == 404 => {
                // The watcher's node forgot the subscription (RFC 6665 §4.1.3).
                self.agent.drop_watcher(&id);
            }
            SendKey::NotifyPhone(id) if status == 481 => self.drop_phone_sub(now, &id),
            _ => {}
        }
    }

    /// One of our requests got no final answer.
    pub fn failed(&mut self, now: Instant, tx: ClientTxId) {
        let Some(key) = self.pending.remove(&tx) else { return };
        match key {
            SendKey::Subscribe(aor) => self.subscribe_failed(now, &aor),
            // A watcher whose node is gone: its subscription lapses at its expiry.
            SendKey::NotifyWatcher(_) | SendKey::NotifyPhone(_) => {}
        }
    }

    /// A request we asked for could not be sent (a next hop we never use): as if it failed.
    pub fn failed_to_send(&mut self, now: Instant, key: SendKey) {
        if let SendKey::Subscribe(aor) = key {
            self.subscribe_failed(now, &aor);
        }
    }

    /// The node leaves the overlay: each watcher of our user is told its subscription ends
    /// here (RFC 6665 §4.2.2, `deactivated`: it may subscribe again), so buddies show our user
    /// `closed` at once.
    pub fn leave(&mut self, now: Instant) {
        self.agent_leave(now);
    }

    /// The contacts to send a call or MESSAGE to `aor` on without a lookup, when `aor` is a
    /// buddy our phones watch and its node is known alive (`buddies`).
    pub fn cached_contacts(&mut self, aor: &Aor, unix_now: u64) -> Option<Vec<String>> {
        if !self.watch.is_watched(aor) {
            return None;
        }
        self.cache.take(aor, unix_now)
    }

    /// A verified registration record of `aor` was read (for a call, or for presence): its
    /// contacts with their expiry. Kept when `aor` is one of our buddies.
    pub fn note_registration(&mut self, aor: &Aor, contacts: &[(String, u64)], unix_now: u64) {
        if self.watch.is_watched(aor) {
            self.cache.put(aor, contacts, unix_now);
        }
    }

    /// A request sent on `aor`'s cached contacts failed; it is being looked up.
    pub fn cache_failed(&mut self, aor: &Aor) {
        self.cache.fell_back(aor);
    }

    /// What `/status` shows.
    pub fn status(&self) -> PresenceStatus {
        let (watchers, pending) = self.agent.counts();
        PresenceStatus {
            subscriptions: self.watch.remote_count() as u64,
            watchers: watchers as u64,
            pending: pending as u64,
            phone_subscriptions: self.watch.phone_count() as u64,
            publications: self.agent.publication_count() as u64,
            state: if self.agent.state().open == Some(false) { "closed" } else { "open" },
            buddies: self.watch.buddy_states(),
            notifies_sent: self.notifies_sent,
            notifies_refused: self.notifies_refused,
            cache: self.cache.counters(),
            cached: self.cache.len() as u64,
        }
    }

    fn tag(&mut self) -> String {
        format!("{:016x}", self.rng.random::<u64>())
    }

    fn respond(&mut self, sid: ServerTxId, response: Message) {
        self.out.push_back(Output::Respond { sid, response: Box::new(response) });
    }

    /// The checks every SUBSCRIBE and PUBLISH passes: the event is `presence` (else `489` with
    /// `Allow-Events`, RFC 6665 §8.2.1) and the expiry is not too brief (else `423` with
    /// `Min-Expires`). The expiry granted, or `None` once refused.
    fn event_and_expires(&mut self, sid: ServerTxId, req: &Message) -> Option<u32> {
        if !is_presence(req) {
            let tag = self.tag();
            let mut resp = req.make_response(489, "Bad Event", Some(&tag));
            resp.headers.push(Header::new(HeaderName::AllowEvents, EVENT));
            self.respond(sid, resp);
            return None;
        }
        match granted_expires(req, &self.config, self.config.max_expires) {
            Ok(expires) => Some(expires),
            Err(min) => {
                let tag = self.tag();
                self.respond(sid, interval_too_brief(req, min, &tag));
                None
            }
        }
    }

    fn refuse(&mut self, sid: ServerTxId, req: &Message, code: u16, reason: &str) {
        let tag = self.tag();
        let response = req.make_response(code, reason, Some(&tag));
        self.respond(sid, response);
    }

    /// A NOTIFY in `dialog` (RFC 6665 §4.2.2) carrying `state` (`None`: no body), with the
    /// Subscription-State `sub_state`.
    fn notify_request(
        dialog: &mut Dialog,
        contact: &NameAddr,
        sub_state: &str,
        entity: &Aor,
        state: Option<&PresenceState>,
    ) -> Message {
        let mut msg = dialog.request(Method::Notify, contact);
        msg.headers.push(Header::new(HeaderName::Event, EVENT));
        msg.headers.push(Header::new(HeaderName::SubscriptionState, sub_state));
        match state {
            Some(s) => {
                let body = bytes::Bytes::from(s.to_pidf(entity.as_str()));
                msg.set_body(body, Some(&MediaType::new(pidf::CONTENT_TYPE.0, pidf::CONTENT_TYPE.1)));
            }
            None => msg.set_body(bytes::Bytes::new(), None),
        }
        msg
    }
}

/// Whether a request's Event is `presence` (RFC 6665 §8.2.1: the package name, parameters
/// after it).
pub fn is_presence(req: &Message) -> bool {
    let event = req.headers.get(&HeaderName::Event).and_then(|h| h.value_str()).unwrap_or("");
    event.split(';').next().is_some_and(|p| p.trim().eq_ignore_ascii_case(EVENT))
}

/// Whether the Request-URI's host is our AoR's domain (a phone's SUBSCRIBE to itself names
/// the domain; one naming our address is a node's).
fn is_our_domain_aor(req: &Message, me: &Aor) -> bool {
    let Some(Uri::Sip(uri)) = req.request_uri() else { return false };
    uri.aor() == me.as_str()
}

/// The expiry a subscription or publication asks for, within the limits: `Ok(0)` removes,
/// `Err(min)` is too short (`423`, RFC 3903 §6 and RFC 6665 §4.2.1.1).
fn granted_expires(req: &Message, config: &PresenceConfig, default: u32) -> Result<u32, u32> {
    let asked = req.expires().ok().flatten().unwrap_or(default);
    if asked == 0 {
        return Ok(0);
    }
    if asked < config.min_expires {
        return Err(config.min_expires);
    }
    Ok(asked.min(config.max_expires))
}

/// The answer to a SUBSCRIBE or PUBLISH whose Expires is too short.
fn interval_too_brief(req: &Message, min: u32, tag: &str) -> Message {
    let mut resp = req.make_response(423, "Interval Too Brief", Some(tag));
    resp.headers.push(Header::new(HeaderName::MinExpires, min));
    resp
}

/// Seconds from `now` until `at`, rounded down, at least 0.
fn secs_until(now: Instant, at: Instant) -> u64 {
    at.saturating_duration_since(now).as_secs()
}

#[cfg(test)]
impl Presence {
    /// The buddy list our phones taught, for tests.
    pub(crate) fn buddies(&self) -> std::collections::BTreeSet<Aor> {
        self.agent.buddies().clone()
    }
}

#[cfg(test)]
mod tests;
