//! The softphone-facing side of a node: a registrar (RFC 3261 §10.3) with digest
//! authentication, and a stateful proxy (§16) that forwards phones' requests to the phones
//! registered for the target AoR, forking in parallel. Sans-IO, like the rest: the [`Proxy`]
//! is driven by [`crate::peer::Peer`] with `now`, the messages it received, and the peer's
//! transaction layer, through which it sends.
//!
//! # Layout
//! - [`digest`]: digest credentials (MD5, SHA-256, `qop=auth`) and challenges.
//! - [`auth`]: who may use the registrar and the proxy: source-bound nonces, the replay
//!   window, the failure back-off, 401 and 407.
//! - [`accounts`]: who may register here, with HA1 values; the accounts file's text format.
//! - [`registrar`]: bindings, expiry, `Contact: *`, queries, CSeq ordering, flows.
//! - [`directory`]: where a target AoR is: local bindings, or the overlay.
//! - this file: the [`Proxy`] itself, its settings and status, and dispatch of what arrives.
//! - `register`: the registrar's front door (§10.3 steps 1–5), answered statelessly.
//! - `forward`: who may use the proxy listener, targets (§16.5), forking (§16.6), the
//!   Record-Route toward other nodes, best response (§16.7), ACK for 2xx.
//! - `cancel`: CANCEL (§16.10) and Timer C (§16.8).
//! - `ping`: OPTIONS pings that unregister phones that stopped answering.
//! - `media`: what crosses between a phone and the overlay is handed to the media anchor
//!   (`crate::media::anchor`); a call whose media path never formed ends with 503.
//!
//! # What it does not do (yet)
//! The proxy itself does not reach the overlay: a request for an AoR nobody here serves is
//! parked ([`Proxy::poll_lookup`]) while the peer fetches and verifies the AoR's registration
//! record, and resumed with its contacts ([`Proxy::overlay_resolved`]); `docs/proxy.md`, "The
//! overlay path". No DNS (RFC 3263): only IP-literal next hops are reached, and
//! a request for a domain other than the overlay's is refused with 404 "Not an overlay domain".
//! The proxy listener forwards nothing for a stranger (docs/security.md, M3): an out-of-dialog request
//! comes over a registered phone's flow or carries `Proxy-Authorization` (else 407), and an
//! in-dialog one carries our Route; node Routes and address Request-URIs are followed only
//! where we Record-Routed the dialog ourselves.

pub mod accounts;
pub mod auth;
mod cached;
mod cancel;
pub mod clients;
pub mod digest;
pub mod directory;
mod forward;
pub mod identity;
mod media;
pub mod offline;
pub mod outbound;
mod ping;
mod register;
pub mod registrar;

#[cfg(test)]
mod tests;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tracing::debug;

use self::accounts::Accounts;
use self::auth::Authenticator;
use self::cancel::Deadlines;
use self::digest::Algorithm;
use self::forward::{better, Forwarded};
use self::registrar::{Registrar, RegistrarConfig};
use crate::sip::transaction::{ClientTxId, ServerTxId, TransactionLayer};
use crate::sip::validate::Rejection;
use crate::sip::{Header, HeaderName, Host, Message, Method, SipUri, Uri};
use crate::transport::{ConnectionId, Endpoint, Listener};

/// The proxy's settings.
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    /// The overlay's SIP domain: the digest realm, and the only domain whose AoRs are served.
    pub domain: String,
    /// The proxy listener's address: our Via sent-by and Record-Route.
    pub addr: SocketAddr,
    /// Our other addresses (the overlay listener): a Route naming one of them is ours too.
    pub other_addrs: Vec<SocketAddr>,
    /// The Server and User-Agent header value.
    pub server: String,
    /// The registrar's settings (expiry bounds).
    pub registrar: RegistrarConfig,
    /// How often each registered phone gets an OPTIONS ping.
    pub ping_interval: Duration,
    /// A phone that has not answered a ping after this long is unregistered.
    pub ping_timeout: Duration,
    /// How long a nonce stays fresh.
    pub nonce_lifetime: Duration,
    /// The algorithms a challenge offers, in order (RFC 8760 §2.4); see
    /// [`Algorithm::DEFAULT_OFFER`].
    pub digest_algorithms: Vec<Algorithm>,
    /// Timer C (RFC 3261 §16.6 step 11): how long an INVITE branch may go without a
    /// provisional response before the proxy gives up on it (§16.8). The RFC asks for more
    /// than 3 minutes; [`DEFAULT_TIMER_C`].
    pub timer_c: Duration,
    /// How many users clients may bind here, as their edge (`clients`); beyond it, 503.
    pub max_clients: usize,
    /// The keep-alive interval asked of clients (`Flow-Timer`, RFC 5626 §10.2).
    pub flow_timer: Duration,
}

/// How many clients an edge serves by default.
pub const DEFAULT_MAX_CLIENTS: usize = 200;

/// Timer C's default: above the 3 minutes RFC 3261 §16.6 step 11 requires.
pub const DEFAULT_TIMER_C: Duration = Duration::from_secs(185);

impl ProxyConfig {
    /// The defaults for `domain`, with the proxy listener on `addr`.
    pub fn new(domain: &str, addr: SocketAddr) -> ProxyConfig {
        ProxyConfig {
            domain: domain.to_ascii_lowercase(),
            addr,
            other_addrs: Vec::new(),
            server: format!("p2psip/{}", env!("CARGO_PKG_VERSION")),
            registrar: RegistrarConfig::default(),
            ping_interval: Duration::from_secs(30),
            ping_timeout: Duration::from_secs(8),
            nonce_lifetime: Duration::from_secs(300),
            digest_algorithms: Algorithm::DEFAULT_OFFER.to_vec(),
            timer_c: DEFAULT_TIMER_C,
            max_clients: DEFAULT_MAX_CLIENTS,
            flow_timer: crate::nat::flow::DEFAULT_KEEPALIVE,
        }
    }
}

/// A phone registered on the proxy listener, as `/status` and the web page show it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PhoneStatus {
    /// The AoR it registered for.
    pub aor: String,
    /// The contact it registered.
    pub contact: String,
    /// `udp` or `tcp`: how it registered.
    pub transport: &'static str,
    /// Where its REGISTER came from (where requests for it go).
    pub source: std::net::SocketAddr,
    /// Seconds until the registration expires unless refreshed.
    pub expires_in_secs: u64,
}

/// What `p2psip status` shows of the proxy.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct ProxyStatus {
    /// Local accounts.
    pub accounts: usize,
    /// Registered contacts, all AoRs.
    pub bindings: usize,
    /// Requests being forwarded now.
    pub forwarding: usize,
    /// REGISTERs accepted / refused (wrong credentials, no account) since start.
    pub registers_accepted: u64,
    /// REGISTERs refused (wrong credentials, no account, another AoR).
    pub registers_refused: u64,
    /// Requests forwarded to a phone (one per request, not per branch).
    pub requests_forwarded: u64,
    /// Phones unregistered because they stopped answering OPTIONS pings.
    pub pings_failed: u64,
    /// INVITE branches given up by Timer C (RFC 3261 §16.8): cancelled, or ended as 408.
    pub timer_c_fired: u64,
    /// Bindings removed because the TCP connection they were registered over closed.
    pub unregistered_on_close: u64,
    /// Requests on the proxy listener refused for want of authentication (407 or 403).
    pub requests_unauthenticated: u64,
    /// Digest attempts refused because their source address was backed off after failures.
    pub auth_backed_off: u64,
    /// Next hops refused: loopback, link-local or our own addresses named by a record, a
    /// Route or a Request-URI, and node Routes whose token did not verify (docs/security.md, M3, M8).
    pub next_hops_refused: u64,
    /// INVITEs and MESSAGEs from the overlay refused because their Identity did not prove the
    /// caller (docs/security.md, M5).
    pub callers_refused: u64,
    /// INVITEs and MESSAGEs from the overlay whose caller was proven.
    pub callers_verified: u64,
    /// Users bound here by clients now (this node is their edge).
    pub clients: usize,
    /// Clients' REGISTERs accepted since start.
    pub clients_registered: u64,
    /// Clients' REGISTERs refused (unproven, full, or this node is not a peer).
    pub clients_refused: u64,
    /// Clients unbound because their flow went silent (no keep-alive, RFC 5626 §5.4).
    pub clients_lost: u64,
    /// MESSAGEs from our phones that found nobody and went to the recipient's mailbox.
    pub sent_to_mailbox: u64,
    /// Requests from our phones sent to other SIP domains (RFC 3263).
    pub external_requests: u64,
    /// Of those, sent on to the next target after one timed out or answered 503.
    pub external_failovers: u64,
    /// Requests for other domains DNS named no server for.
    pub dns_failures: u64,
    /// Requests sent on the buddy cache that failed and were looked up after all.
    pub cache_fallbacks: u64,
}

/// One forwarded copy of a request (§16.6).
#[derive(Debug)]
struct Branch {
    client: ClientTxId,
    to: Endpoint,
    /// A provisional response arrived, so a CANCEL may be sent (§9.1).
    provisional: bool,
    final_code: Option<u16>,
    /// A provisional response other than 100 arrived: something rang.
    rang: bool,
    /// CANCEL asked for before any provisional response: sent when one arrives.
    cancel_pending: bool,
    cancelled: bool,
}

/// One request being proxied: its server transaction and branches.
#[derive(Debug)]
struct Context {
    request: Message,
    /// Where responses go if the server transaction is gone (2xx retransmissions).
    reply_to: Endpoint,
    branches: Vec<Branch>,
    best: Option<Message>,
    final_sent: bool,
    /// Waiting for the overlay's registration record of this AoR (§16.5 target set still
    /// unknown); no branch yet.
    parked: Option<String>,
    /// The listener the request came in on (for the double Record-Route, RFC 5658).
    from_listener: Listener,
    /// Sent on the buddy cache's contacts for this AoR (`cached`), and by when the buddy's
    /// node must have answered something.
    cached: Option<(String, Instant)>,
    /// Sent to another SIP domain (`outbound`): the targets left to try.
    external: Option<Vec<Endpoint>>,
}

#[derive(Debug)]
struct Ping {
    aor: String,
    contact: Uri,
    deadline: Instant,
}

/// The registrar and stateful proxy for local phones.
pub struct Proxy {
    config: ProxyConfig,
    accounts: Accounts,
    registrar: Registrar,
    auth: Authenticator,
    /// Keys the tokens on our Record-Routes that name the node across the dialog.
    route_key: ring::hmac::Key,
    /// Signs our user's calls into the overlay and checks those arriving; `None` until the
    /// node's enrollment is known ([`Proxy::set_callers`]).
    callers: Option<identity::Callers>,
    /// A client's route through its edge (the `Path` its edge returned, RFC 5626 §5.3): its
    /// Record-Route toward the overlay, since its own address is private.
    overlay_path: Option<crate::sip::header::NameAddr>,
    /// When each client flow last showed it is alive (its REGISTER or a keep-alive), by the
    /// address it comes from (`clients`): a flow silent for a few keep-alive intervals is
    /// unbound.
    client_seen: BTreeMap<SocketAddr, Instant>,
    started: Instant,
    rng: ChaCha8Rng,
    contexts: BTreeMap<ServerTxId, Context>,
    branches: BTreeMap<ClientTxId, ServerTxId>,
    /// CANCELs we sent: their responses are ours to absorb.
    cancels: BTreeSet<ClientTxId>,
    pings: BTreeMap<ClientTxId, Ping>,
    next_ping_sweep: Instant,
    status: ProxyStatus,
    /// Parked requests whose AoR the peer must look up in the overlay.
    lookups: VecDeque<(ServerTxId, String)>,
    /// Timer C of each INVITE branch (RFC 3261 §16.6 step 11), and the same deadlines in
    /// order, so the next one is found without a scan.
    timer_c: Deadlines,
    /// The media anchor (`media`), when on.
    anchor: Option<crate::media::anchor::Anchor>,
    /// Store-and-forward is on (`offline`).
    offline_on: bool,
    /// MESSAGEs handed to the mailbox, for the peer.
    offline: VecDeque<offline::OfflineRequest>,
    /// Buddies whose cached contacts failed (`cached`), for the peer.
    cache_misses: VecDeque<String>,
    /// Requests for other domains waiting for DNS (`outbound`), for the peer's driver.
    resolutions: VecDeque<outbound::ResolveRequest>,
}

impl Proxy {
    /// A proxy with `accounts`; `seed` keys its nonces and route tokens, `now` starts its clock.
    pub fn new(config: ProxyConfig, accounts: Accounts, seed: u64, now: Instant) -> Proxy {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let key: [u8; 32] = rng.random();
        Proxy {
            auth: Authenticator::new(&key, config.nonce_lifetime, &config.domain, config.digest_algorithms.clone()),
            route_key: ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &rng.random::<[u8; 32]>()),
            callers: None,
            overlay_path: None,
            client_seen: BTreeMap::new(),
            registrar: Registrar::new(config.registrar.clone()),
            next_ping_sweep: now + config.ping_interval,
            config,
            accounts,
            started: now,
            rng,
            contexts: BTreeMap::new(),
            branches: BTreeMap::new(),
            cancels: BTreeSet::new(),
            pings: BTreeMap::new(),
            status: ProxyStatus::default(),
            lookups: VecDeque::new(),
            timer_c: Deadlines::default(),
            anchor: None,
            offline_on: false,
            offline: VecDeque::new(),
            cache_misses: VecDeque::new(),
            resolutions: VecDeque::new(),
        }
    }

    /// The node's other addresses, replaced (the dial-back confirmed a public one: it comes
    /// first, for the Via and Record-Route toward other nodes).
    pub fn set_other_addrs(&mut self, addrs: Vec<SocketAddr>) {
        self.config.other_addrs = addrs;
    }

    /// The local accounts phones may register with, replacing any before.
    pub fn set_accounts(&mut self, accounts: Accounts) {
        self.accounts = accounts;
    }

    /// The node's enrollment: calls into the overlay are signed, calls from it checked.
    pub fn set_callers(&mut self, callers: identity::Callers) {
        self.callers = Some(callers);
    }

    /// Whether a local account exists for `aor`.
    pub fn has_account(&self, aor: &str) -> bool {
        self.accounts.get(aor).is_some()
    }

    /// The location service: who is registered where.
    pub fn registrar(&self) -> &Registrar {
        &self.registrar
    }

    /// What `p2psip status` shows of the proxy.
    pub fn status(&self) -> ProxyStatus {
        ProxyStatus {
            clients: self.client_count_any(),
            accounts: self.accounts.len(),
            bindings: self.registrar.binding_count(),
            forwarding: self.contexts.len(),
            auth_backed_off: self.auth.backed_off,
            callers_refused: self.callers.as_ref().map_or(0, |c| c.refused),
            callers_verified: self.callers.as_ref().map_or(0, |c| c.verified),
            ..self.status.clone()
        }
    }

    /// The phones registered on the proxy listener now, by AoR (clients bound at this edge
    /// are not phones and are counted in `status().clients`).
    pub fn phones(&self, now: Instant) -> Vec<PhoneStatus> {
        self.registrar
            .aors()
            .flat_map(|(aor, bindings)| bindings.iter().map(move |b| (aor, b)))
            .filter(|(_, b)| b.flow.listener == Listener::Proxy && b.expires_at > now)
            .map(|(aor, b)| PhoneStatus {
                aor: aor.to_owned(),
                contact: b.uri().to_string(),
                transport: b.flow.transport.as_str(),
                source: b.flow.remote,
                expires_in_secs: b.expires_at.saturating_duration_since(now).as_secs(),
            })
            .collect()
    }

    /// Users bound by clients, whatever their expiry (for status; the registrar drops expired
    /// bindings on its timer).
    fn client_count_any(&self) -> usize {
        self.registrar.aors().filter(|(_, bs)| bs.iter().any(|b| b.flow.listener == Listener::Overlay)).count()
    }

    /// The route through our edge that stands for us on the overlay side of dialogs (a
    /// client's), or none (a peer's own address does).
    pub fn set_overlay_path(&mut self, path: Option<crate::sip::header::NameAddr>) {
        self.overlay_path = path;
    }

    /// Signs `msg` as this node's user (its `Identity`), when it is from that user and the
    /// node is enrolled: a client's REGISTER to its edge.
    pub fn sign_as_node(&self, now: Instant, msg: &mut Message) {
        if let Some(c) = &self.callers {
            c.sign(now, msg);
        }
    }

    /// True when `id` is one of the proxy's client transactions.
    pub fn owns_client(&self, id: ClientTxId) -> bool {
        self.branches.contains_key(&id) || self.pings.contains_key(&id) || self.cancels.contains(&id)
    }

    /// True when `id` is a request the proxy is forwarding (so a CANCEL for it is ours).
    pub fn owns_server(&self, id: ServerTxId) -> bool {
        self.contexts.contains_key(&id)
    }

    fn is_own(&self, host: &Host, port: Option<u16>) -> bool {
        let port = port.unwrap_or(5060);
        std::iter::once(&self.config.addr)
            .chain(&self.config.other_addrs)
            .any(|a| host.ip() == Some(a.ip()) && a.port() == port)
    }

    /// A request in a dialog (a To tag) that names one of our users as its Request-URI and
    /// carries no Route: no dialog through us looks like that, since we Record-Route every
    /// dialog we carry (§16.6 step 4), so its requests come with our Route and the far
    /// phone's Contact as the Request-URI. It is answered 481 (§12.2.2) without a
    /// transaction, never forwarded into the user's phones (sipp, for one, sends such a BYE
    /// for every call it aborts; Kamailio's default configuration answers them 404).
    pub fn names_no_dialog(&self, msg: &Message) -> bool {
        let Some(Uri::Sip(uri)) = msg.request_uri() else { return false };
        // An ACK for a non-2xx final answer looks like this too (§17.1.1.3): its transaction
        // takes it. A CANCEL matches its INVITE's transaction.
        !matches!(msg.method(), Some(Method::Ack | Method::Cancel) | None)
            && uri.user.is_some()
            && self.is_our_domain(uri)
            && msg.headers.get(&HeaderName::Route).is_none()
            && msg.to().ok().is_some_and(|t| t.tag().is_some())
    }

    fn is_our_domain(&self, uri: &SipUri) -> bool {
        matches!(&uri.host, Host::Domain(d) if d.eq_ignore_ascii_case(&self.config.domain))
            || self.is_own(&uri.host, uri.port)
    }

    /// Whether a request received on `listener` is the proxy's (rather than the node's UAS
    /// role): REGISTER on the proxy listener, anything aimed at a user, at another host's IP
    /// address (a phone's Contact, in a dialog), or carrying a Route. A user-less URI naming a
    /// domain is the node's to answer as a UAS.
    pub fn wants(&self, listener: Listener, msg: &Message) -> bool {
        let Some(Uri::Sip(uri)) = msg.request_uri() else { return false };
        if msg.method() == Some(&Method::Register) {
            return listener == Listener::Proxy;
        }
        uri.user.is_some()
            || (uri.host.ip().is_some() && !self.is_own(&uri.host, uri.port))
            || msg.headers.get(&HeaderName::Route).is_some()
    }

    fn tag(&mut self) -> String {
        format!("{:016x}", self.rng.random::<u64>())
    }

    fn respond(&mut self, now: Instant, tl: &mut TransactionLayer<Endpoint>, id: ServerTxId, resp: Message) {
        if let Err(e) = tl.respond(now, id, resp) {
            debug!(%id, error = %e, "could not answer");
        }
    }

    fn reject(
        &mut self,
        now: Instant,
        tl: &mut TransactionLayer<Endpoint>,
        id: ServerTxId,
        req: &Message,
        r: Rejection,
    ) {
        let resp = self.refusal(req, r);
        self.respond(now, tl, id, resp);
    }

    /// The response carrying refusal `r` of `req`: a fresh To tag and our Server header.
    fn refusal(&mut self, req: &Message, r: Rejection) -> Message {
        let tag = self.tag();
        let mut resp = r.to_response(req, Some(&tag));
        resp.headers.push(Header::new(HeaderName::Server, &self.config.server));
        resp
    }

    /// A new server transaction the proxy [`wants`](Self::wants). `reply_to` is where its
    /// responses go; `cancels` the INVITE a CANCEL matched (§9.2).
    #[allow(clippy::too_many_arguments)]
    pub fn handle_request(
        &mut self,
        now: Instant,
        tl: &mut TransactionLayer<Endpoint>,
        id: ServerTxId,
        from: Endpoint,
        reply_to: Endpoint,
        request: Message,
        cancels: Option<ServerTxId>,
    ) {
        let Some(method) = request.method().cloned() else { return };
        match method {
            Method::Register => {
                let answer = self.register(now, from, &request);
                match answer {
                    Ok(resp) => self.respond(now, tl, id, resp),
                    Err(r) => self.reject(now, tl, id, &request, r),
                }
            }
            Method::Cancel => self.cancel(now, tl, id, &request, cancels),
            _ => match self
                .admit_phone_request(now, from, &request)
                .and_then(|()| self.forward(now, tl, id, from, reply_to, &request))
            {
                Ok(Forwarded::Sent) => self.status.requests_forwarded += 1,
                Ok(Forwarded::Parked) => {}
                Err(r) => self.reject(now, tl, id, &request, r),
            },
        }
    }

    /// Whether a URI names this node: our domain or one of our addresses, with no user part.
    fn names_us(&self) -> impl Fn(&Uri) -> bool + 'static {
        let domain = self.config.domain.clone();
        let addrs: Vec<SocketAddr> = std::iter::once(self.config.addr).chain(self.config.other_addrs.clone()).collect();
        move |u: &Uri| {
            let Uri::Sip(s) = u else { return false };
            let port = s.port.unwrap_or(5060);
            s.user.is_none()
                && (matches!(&s.host, Host::Domain(d) if d.eq_ignore_ascii_case(&domain))
                    || addrs.iter().any(|a| s.host.ip() == Some(a.ip()) && a.port() == port))
        }
    }

    /// Seconds since the proxy started: the clock nonces are stamped with.
    fn clock(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.started).as_secs()
    }

    /// Timer B or F fired on a client transaction: a branch gives 408 (§16.7 step 2), a ping
    /// unregisters its phone.
    pub fn handle_client_timeout(&mut self, now: Instant, tl: &mut TransactionLayer<Endpoint>, client: ClientTxId) {
        if let Some(ping) = self.pings.remove(&client) {
            self.ping_failed(ping);
            return;
        }
        self.timer_c.disarm(client);
        let Some(&sid) = self.branches.get(&client) else { return };
        let Some(ctx) = self.contexts.get_mut(&sid) else { return };
        if let Some(b) = ctx.branches.iter_mut().find(|b| b.client == client && b.final_code.is_none()) {
            b.final_code = Some(408);
            let tag = format!("{:016x}", self.rng.random::<u64>());
            let timeout = ctx.request.make_response(408, "Request Timeout", Some(&tag));
            if better(&timeout, ctx.best.as_ref()) {
                ctx.best = Some(timeout);
            }
        }
        self.maybe_send_best(now, tl, sid);
    }

    /// A stream connection closed: the bindings registered over it go (see
    /// [`Registrar::remove_flow`]), and so do the OPTIONS pings waiting on them. The peer then
    /// updates the overlay's registration record as on any unregistration.
    pub fn connection_closed(&mut self, tl: &mut TransactionLayer<Endpoint>, conn: ConnectionId) {
        let gone = self.registrar.remove_flow(conn);
        if gone.is_empty() {
            return;
        }
        debug!(conn = conn.0, bindings = gone.len(), "phone's TCP connection closed; unregistered");
        self.status.unregistered_on_close += gone.len() as u64;
        let moot: Vec<ClientTxId> = self
            .pings
            .iter()
            .filter(|(_, p)| gone.iter().any(|(aor, contact)| *aor == p.aor && *contact == p.contact))
            .map(|(id, _)| *id)
            .collect();
        for id in moot {
            self.pings.remove(&id);
            let _ = tl.terminate_client(id);
        }
    }

    /// A client transaction ended.
    pub fn handle_client_terminated(&mut self, client: ClientTxId) {
        self.timer_c.disarm(client);
        self.branches.remove(&client);
        self.cancels.remove(&client);
        self.pings.remove(&client);
    }

    /// A server transaction ended: its context goes.
    pub fn handle_server_terminated(&mut self, sid: ServerTxId) {
        if let Some(ctx) = self.contexts.remove(&sid) {
            for b in ctx.branches {
                self.timer_c.disarm(b.client);
                self.branches.remove(&b.client);
            }
        }
    }

    /// Expired bindings, ping sweeps, ping deadlines.
    pub fn handle_timeout(&mut self, now: Instant, tl: &mut TransactionLayer<Endpoint>) {
        self.registrar.handle_timeout(now);
        self.unbind_silent_clients(now);
        while self.registrar.poll_event().is_some() {}
        let late: Vec<ClientTxId> = self.pings.iter().filter(|(_, p)| p.deadline <= now).map(|(id, _)| *id).collect();
        for id in late {
            if let Some(ping) = self.pings.remove(&id) {
                let _ = tl.terminate_client(id);
                self.ping_failed(ping);
            }
        }
        if now >= self.next_ping_sweep {
            self.next_ping_sweep = now + self.config.ping_interval;
            self.send_pings(now, tl);
        }
        while let Some(client) = self.timer_c.pop_due(now) {
            self.timer_c_fired(now, tl, client);
        }
        self.anchor_timeout(now, tl);
        self.cache_timeout(now, tl);
    }

    /// When the proxy next needs `handle_timeout` (binding expiry, pings, Timer C).
    pub fn poll_timeout(&self) -> Option<Instant> {
        let pings = self.pings.values().map(|p| p.deadline).min();
        let sweep = (self.registrar.binding_count() > 0).then_some(self.next_ping_sweep);
        let anchor = self.anchor.as_ref().and_then(crate::media::anchor::Anchor::poll_timeout);
        let cache = self.next_cache_deadline();
        [self.registrar.poll_timeout(), pings, sweep, self.timer_c.next(), self.next_silence(), anchor, cache]
            .into_iter()
            .flatten()
            .min()
    }
}
