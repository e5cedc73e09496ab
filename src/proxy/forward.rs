//! The proxy core (RFC 3261 §16): registrar front door, target resolution, forking, response
//! selection, CANCEL, ACK for 2xx, and OPTIONS pings that unregister dead phones.
//!
//! Every forwarded request is a client transaction of the peer's [`TransactionLayer`]; every
//! request received is a server transaction. A *context* ties one server transaction to its
//! branches (§16.6) and lives until the server transaction ends, so the proxy's memory is
//! bounded by the transaction layer's (which the peer bounds, answering 503 beyond it).

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tracing::debug;

use super::accounts::Accounts;
use super::auth::{AuthFailure, Authenticator, Realm};
use super::digest::Algorithm;
use super::directory::{resolve, Resolution};
use super::registrar::{Registrar, RegistrarConfig};
use crate::addr::next_hop_allowed;
use crate::sip::header::new_branch;
use crate::sip::header::{NameAddr, Via};
use crate::sip::transaction::{ClientTxId, ServerTxId, TransactionLayer};
use crate::sip::validate::Rejection;
use crate::sip::{Header, HeaderName, Host, Message, Method, SipUri, StartLine, Uri};
use crate::transport::{ConnectionId, Endpoint, Listener, Transport};

/// The proxy's settings.
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    /// The overlay's SIP domain: the digest realm, and the only domain whose AoRs are served.
    pub domain: String,
    /// The proxy listener's address: our Via sent-by and Record-Route.
    pub addr: SocketAddr,
    /// Our other addresses (the overlay listener): a Route naming one of them is ours too.
    pub other_addrs: Vec<SocketAddr>,
    pub server: String,
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
}

/// Timer C's default: above the 3 minutes RFC 3261 §16.6 step 11 requires.
pub const DEFAULT_TIMER_C: Duration = Duration::from_secs(185);

/// After a CANCEL sent because Timer C fired, how long the branch may still take to end
/// with a final response before it counts as a 408: 64·T1, as a UAC waits for the final
/// response after its CANCEL (RFC 3261 §9.1).
const CANCEL_GRACE: Duration = Duration::from_secs(32);

impl ProxyConfig {
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
        }
    }
}

/// What `p2psip status` shows of the proxy.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct ProxyStatus {
    pub accounts: usize,
    /// Registered contacts, all AoRs.
    pub bindings: usize,
    /// Requests being forwarded now.
    pub forwarding: usize,
    /// REGISTERs accepted / refused (wrong credentials, no account) since start.
    pub registers_accepted: u64,
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
    /// Route or a Request-URI, and node Routes whose token did not verify (issue 11, M3, M8).
    pub next_hops_refused: u64,
    /// INVITEs and MESSAGEs from the overlay refused because their Identity did not prove the
    /// caller (issue 11 item 4).
    pub callers_refused: u64,
    /// INVITEs and MESSAGEs from the overlay whose caller was proven.
    pub callers_verified: u64,
}

/// One forwarded copy of a request (§16.6).
#[derive(Debug)]
struct Branch {
    client: ClientTxId,
    to: Endpoint,
    /// A provisional response arrived, so a CANCEL may be sent (§9.1).
    provisional: bool,
    final_code: Option<u16>,
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
    callers: Option<super::identity::Callers>,
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
    lookups: Vec<(ServerTxId, String)>,
    /// Timer C of each INVITE branch (RFC 3261 §16.6 step 11), and the same deadlines in
    /// order, so the next one is found without a scan.
    timer_c: Deadlines,
}

/// One deadline per client transaction, also kept in time order (Timer C).
#[derive(Debug, Default)]
struct Deadlines {
    by_id: BTreeMap<ClientTxId, Instant>,
    queue: BTreeSet<(Instant, ClientTxId)>,
}

impl Deadlines {
    /// Starts or restarts the timer of `id`.
    fn arm(&mut self, id: ClientTxId, at: Instant) {
        if let Some(old) = self.by_id.insert(id, at) {
            self.queue.remove(&(old, id));
        }
        self.queue.insert((at, id));
    }

    fn disarm(&mut self, id: ClientTxId) {
        if let Some(old) = self.by_id.remove(&id) {
            self.queue.remove(&(old, id));
        }
    }

    fn next(&self) -> Option<Instant> {
        self.queue.first().map(|(at, _)| *at)
    }

    /// Removes and returns the first timer due at `now`.
    fn pop_due(&mut self, now: Instant) -> Option<ClientTxId> {
        let &(at, id) = self.queue.first().filter(|(at, _)| *at <= now)?;
        self.queue.remove(&(at, id));
        self.by_id.remove(&id);
        Some(id)
    }
}

impl Proxy {
    pub fn new(config: ProxyConfig, accounts: Accounts, seed: u64, now: Instant) -> Proxy {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let key: [u8; 32] = rng.random();
        Proxy {
            auth: Authenticator::new(&key, config.nonce_lifetime, &config.domain, config.digest_algorithms.clone()),
            route_key: ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &rng.random::<[u8; 32]>()),
            callers: None,
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
            lookups: Vec::new(),
            timer_c: Deadlines::default(),
        }
    }

    pub fn set_accounts(&mut self, accounts: Accounts) {
        self.accounts = accounts;
    }

    /// The node's enrollment: calls into the overlay are signed, calls from it checked.
    pub fn set_callers(&mut self, callers: super::identity::Callers) {
        self.callers = Some(callers);
    }

    /// Whether a local account exists for `aor`.
    pub fn has_account(&self, aor: &str) -> bool {
        self.accounts.get(aor).is_some()
    }

    pub fn registrar(&self) -> &Registrar {
        &self.registrar
    }

    pub fn status(&self) -> ProxyStatus {
        ProxyStatus {
            accounts: self.accounts.len(),
            bindings: self.registrar.binding_count(),
            forwarding: self.contexts.len(),
            auth_backed_off: self.auth.backed_off,
            callers_refused: self.callers.as_ref().map_or(0, |c| c.refused),
            callers_verified: self.callers.as_ref().map_or(0, |c| c.verified),
            ..self.status.clone()
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

    /// Issue 11 (M3): the proxy listener forwards nothing for a stranger. An out-of-dialog
    /// request must come over the flow a phone registered from (RFC 5626 §5.3 in spirit: the
    /// flow was authenticated by its REGISTER) or carry `Proxy-Authorization` for a local
    /// account (RFC 3261 §16.3 step 6, §22.3); otherwise it gets 407. A request within a dialog
    /// must carry the Route of our Record-Route: every dialog through us was Record-Routed.
    fn admit_phone_request(&mut self, now: Instant, from: Endpoint, req: &Message) -> Result<(), Rejection> {
        if from.listener != Listener::Proxy {
            return Ok(());
        }
        let in_dialog = req.to().ok().is_some_and(|t| t.tag().is_some());
        if in_dialog {
            let ours = req
                .routes()
                .ok()
                .and_then(|r| r.into_iter().next())
                .is_some_and(|r| matches!(&r.uri, Uri::Sip(u) if self.is_own(&u.host, u.port)));
            if !ours {
                self.status.requests_unauthenticated += 1;
                return Err(Rejection::new(403, "Forbidden (not a dialog through this node)"));
            }
            return Ok(());
        }
        if self.registrar.by_flow(&from, now).is_some() {
            return Ok(());
        }
        let clock = self.clock(now);
        let names_us = self.names_us();
        match self.auth.authenticate(&self.accounts, req, Realm::Proxy, clock, from.remote, names_us) {
            Ok(_) => Ok(()),
            Err(failure) => {
                self.status.requests_unauthenticated += 1;
                Err(failure.into_rejection())
            }
        }
    }

    /// The answer to a phone's REGISTER, sent without a server transaction (RFC 3261 §8.2.7
    /// lets a UAS answer statelessly; Kamailio's registrar does the same): the 401 challenge,
    /// the 200 with the bindings, or the refusal. A REGISTER changes nothing but bindings, and
    /// a retransmission (same Call-ID and CSeq, its answer lost) is answered again with the
    /// bindings as the first copy left them ([`Registrar::register`]), so there is nothing
    /// for a transaction to absorb. Without this every REGISTER would hold a server
    /// transaction for Timer J (64·T1 = 32 s over UDP, §17.2.2): at 10,000 REGISTERs/s that
    /// is 320,000 transactions and most of the node's memory.
    pub fn register_stateless(&mut self, now: Instant, from: Endpoint, msg: &Message) -> Message {
        match self.register(now, from, msg) {
            Ok(resp) => resp,
            Err(r) => self.refusal(msg, r),
        }
    }

    /// RFC 3261 §10.3: steps 1–5 here (domain, authentication, authorisation), 6–8 in the
    /// [`Registrar`].
    fn register(&mut self, now: Instant, from: Endpoint, msg: &Message) -> Result<Message, Rejection> {
        // Step 1 (the Request-URI names this registrar's domain) is checked once the sender
        // has authenticated: a stranger learns nothing but the challenge (RFC 4475 §3.3.7).
        let Some(Uri::Sip(ruri)) = msg.request_uri() else { return Err(Rejection::new(416, "Unsupported URI Scheme")) };
        let our_domain = self.is_our_domain(ruri);
        let to_aor = msg.to().ok().and_then(|t| t.uri.as_sip().map(SipUri::aor));
        let clock = self.clock(now);
        let names_us = self.names_us();
        let account_aor =
            match self.auth.authenticate(&self.accounts, msg, Realm::Registrar, clock, from.remote, names_us) {
                Ok(aor) => aor,
                Err(AuthFailure::Challenge(r)) => return Err(r),
                Err(AuthFailure::Refused(r)) => {
                    self.status.registers_refused += 1;
                    return Err(r);
                }
            };
        if !our_domain {
            return Err(Rejection::new(404, "Not Found (not this registrar's domain)"));
        }
        let Some(aor) = to_aor else { return Err(Rejection::new(416, "Unsupported URI Scheme in To")) };
        // Step 4: these credentials may change only their own AoR's bindings.
        if account_aor != aor {
            self.status.registers_refused += 1;
            return Err(Rejection::new(403, "Forbidden (credentials are for another AoR)"));
        }
        let tag = self.tag();
        let resp = self.registrar.register(now, &aor, msg, from, &tag)?;
        self.status.registers_accepted += 1;
        Ok(resp)
    }

    /// §16.10: a CANCEL for an INVITE we are forwarding gets 200, the INVITE 487, and every
    /// branch still pending a CANCEL of its own.
    fn cancel(
        &mut self,
        now: Instant,
        tl: &mut TransactionLayer<Endpoint>,
        id: ServerTxId,
        req: &Message,
        invite: Option<ServerTxId>,
    ) {
        let Some(invite) = invite.filter(|i| self.contexts.contains_key(i)) else {
            // §16.10: nothing to cancel here.
            return self.reject(now, tl, id, req, Rejection::new(481, "Call/Transaction Does Not Exist"));
        };
        let tag = self.tag();
        self.respond(now, tl, id, req.make_response(200, "OK", Some(&tag)));
        let Some(ctx) = self.contexts.get_mut(&invite) else { return };
        if !ctx.final_sent {
            ctx.final_sent = true;
            let resp = ctx.request.make_response(487, "Request Terminated", Some(&tag));
            self.respond(now, tl, invite, resp);
        }
        self.cancel_branches(now, tl, invite, None);
    }

    /// Sends CANCEL on every pending branch of `sid` except `keep` (§16.7 step 10, §16.10).
    fn cancel_branches(
        &mut self,
        now: Instant,
        tl: &mut TransactionLayer<Endpoint>,
        sid: ServerTxId,
        keep: Option<ClientTxId>,
    ) {
        let Some(ctx) = self.contexts.get_mut(&sid) else { return };
        let mut to_send = Vec::new();
        for b in ctx.branches.iter_mut() {
            if Some(b.client) == keep || b.final_code.is_some() || b.cancelled {
                continue;
            }
            if b.provisional {
                b.cancelled = true;
                to_send.push((b.client, b.to));
            } else {
                b.cancel_pending = true;
            }
        }
        for (client, to) in to_send {
            self.send_cancel(now, tl, client, to);
        }
    }

    fn send_cancel(&mut self, now: Instant, tl: &mut TransactionLayer<Endpoint>, client: ClientTxId, to: Endpoint) {
        if let Ok(cancel) = tl.make_cancel(client) {
            let id = tl.send_request(now, cancel, to, to.transport.is_reliable());
            self.cancels.insert(id);
        }
    }

    /// §16.4: a top Route naming us is removed; with the double Record-Route of RFC 5658
    /// (§3.2) the next one may name our other listener, and goes too. Says what was popped.
    fn pop_own_route(&self, req: &mut Message) -> Popped {
        let mut popped = Popped::default();
        for _ in 0..2 {
            let Ok(routes) = req.routes() else { break };
            match routes.first().map(|r| &r.uri) {
                Some(Uri::Sip(u)) if self.is_own(&u.host, u.port) => {
                    popped.any = true;
                    if let Some(t) = u.param(ROUTE_TOKEN_PARAM).and_then(|p| p.value.clone()) {
                        popped.tokens.push(t);
                    }
                    req.headers.remove_first_element(&HeaderName::Route);
                }
                _ => break,
            }
        }
        popped
    }

    /// The token our Record-Routes carry when a dialog crosses from the phones to the node at
    /// `node` (or back): an HMAC of that node's overlay address, so a phone's in-dialog request
    /// is forwarded to a `p2psip-node` Route only if we put it on the dialog's path ourselves
    /// (issue 11, M3). Stateless, like the nonces: nothing is stored per dialog.
    fn route_token(&self, node: SocketAddr) -> String {
        let tag = ring::hmac::sign(&self.route_key, format!("p2psip-rr {node}").as_bytes());
        crate::overlay_config::hex(&tag.as_ref()[..8])
    }

    /// Another node's overlay listener named by a URI (a registration record's contact, a
    /// node's Record-Route), if it may be a next hop: not one of our own addresses, not
    /// link-local, not loopback unless we are (issue 11, M8).
    fn overlay_hop(&self, uri: &Uri) -> Option<Endpoint> {
        let to = overlay_endpoint(uri)?;
        let own = self.listener_addr(Listener::Overlay).ip();
        let ours = std::iter::once(&self.config.addr).chain(&self.config.other_addrs).any(|a| *a == to.remote);
        (!ours && next_hop_allowed(to.remote.ip(), own)).then_some(to)
    }

    /// §16.5–16.6: where the request goes, as (request copy's Request-URI, endpoint) pairs.
    fn targets(&mut self, now: Instant, from: Endpoint, req: &Message, popped: &Popped) -> Result<Targets, Rejection> {
        let ruri = req.request_uri().cloned().ok_or_else(|| Rejection::new(400, "No Request-URI"))?;
        let Uri::Sip(sip) = &ruri else { return Err(Rejection::new(416, "Unsupported URI Scheme")) };
        let from_overlay = from.listener == Listener::Overlay;
        // A remaining Route (after ours was popped) is the next hop, loose routing (§16.12).
        if let Some(route) = req.routes().ok().and_then(|r| r.into_iter().next()) {
            // A route into one of our registered phones, or (for a local phone's request only)
            // to another node's overlay listener: its Record-Route from the dialog's INVITE.
            // A request from the overlay is never relayed on to a third node.
            if let Some(to) = self.endpoint_for(&route.uri, now, true) {
                return Ok(Targets::Send(vec![(ruri.clone(), to)]));
            }
            let node_route = matches!(&route.uri, Uri::Sip(u) if u.param(NODE_ROUTE_PARAM).is_some());
            if !from_overlay && node_route {
                // Only a node we Record-Routed this dialog toward: our popped Route's token
                // names it.
                let hop = self.overlay_hop(&route.uri);
                if let Some(to) = hop.filter(|to| popped.tokens.contains(&self.route_token(to.remote))) {
                    return Ok(Targets::Send(vec![(ruri.clone(), to)]));
                }
            }
            self.status.next_hops_refused += 1;
            return Err(unreachable_route());
        }
        if sip.user.is_some() && self.is_our_domain(sip) {
            // The AoR in canonical form (§10.3 step 5); a Request-URI naming our address
            // rather than the domain means the same user.
            let user = sip.user_unescaped().and_then(|u| String::from_utf8(u).ok()).unwrap_or_default();
            let aor = format!("sip:{user}@{}", self.config.domain);
            return match resolve(&aor, &self.registrar, &self.accounts, now) {
                Resolution::Local(bindings) => {
                    Ok(Targets::Send(bindings.iter().map(|b| (b.contact.uri.clone(), b.flow)).collect()))
                }
                Resolution::Offline => Err(Rejection::new(480, "Temporarily Unavailable")),
                // A request from another node for a user we do not serve is refused, never
                // looked up again and relayed (issue 5: no relaying into someone's phone).
                Resolution::AskOverlay if from_overlay => Err(Rejection::new(404, "Not Found")),
                // §16.5: the target set comes from the overlay's registration record.
                Resolution::AskOverlay => Ok(Targets::AskOverlay(aor)),
            };
        }
        // A Request-URI that is an address (a phone's Contact: in-dialog requests once our
        // Routes are popped, or preloaded): only into a registered phone's flow, from either
        // side. Any other address would make the node an open relay (issue 11, M3).
        if sip.host.ip().is_some() && !self.is_own(&sip.host, sip.port) {
            if let Some(to) = self.endpoint_for(&ruri, now, true) {
                return Ok(Targets::Send(vec![(ruri.clone(), to)]));
            }
            self.status.next_hops_refused += 1;
            return Err(if from_overlay {
                Rejection::new(403, "Forbidden (not a phone this node serves)")
            } else {
                Rejection::new(404, "Not Found (no dialog with that address)")
            });
        }
        if sip.user.is_some() {
            return Err(Rejection::new(404, "Not Found (not an overlay domain)"));
        }
        Err(Rejection::new(404, "Not Found"))
    }

    /// The endpoint for a URI: a registered phone's flow when it is one of their contacts,
    /// else (unless `registered_only`) the URI's own IP address, port and transport.
    fn endpoint_for(&self, uri: &Uri, now: Instant, registered_only: bool) -> Option<Endpoint> {
        if let Some((_, b)) = self.registrar.by_contact(uri, now) {
            return Some(b.flow);
        }
        let at = match uri {
            Uri::Sip(s) => s.host.ip().map(|ip| SocketAddr::new(ip, s.port.unwrap_or(5060))),
            _ => None,
        };
        if let Some(b) = at.and_then(|a| self.registrar.by_address(a, now)) {
            return Some(b.flow);
        }
        if registered_only {
            return None;
        }
        let Uri::Sip(s) = uri else { return None };
        let ip = s.host.ip()?;
        let transport = if s.transport().as_deref() == Some("tcp") { Transport::Tcp } else { Transport::Udp };
        Some(Endpoint {
            listener: Listener::Proxy,
            transport,
            remote: SocketAddr::new(ip, s.port.unwrap_or(5060)),
            conn: None,
        })
    }

    /// §16.6 for each target: copy, Request-URI, Max-Forwards, Record-Route, Via; send. An AoR
    /// nobody here serves is parked until the peer has fetched its registration record.
    fn forward(
        &mut self,
        now: Instant,
        tl: &mut TransactionLayer<Endpoint>,
        id: ServerTxId,
        from: Endpoint,
        reply_to: Endpoint,
        request: &Message,
    ) -> Result<Forwarded, Rejection> {
        let mut req = request.clone();
        let popped = self.pop_own_route(&mut req);
        // §22.3: credentials for our realm were for us; they go no further.
        req.headers.remove_all(&HeaderName::ProxyAuthorization);
        let targets = self.targets(now, from, &req, &popped)?;
        let mut ctx = Context {
            request: request.clone(),
            reply_to,
            branches: Vec::new(),
            best: None,
            final_sent: false,
            parked: None,
            from_listener: from.listener,
        };
        let targets = match targets {
            Targets::Send(targets)
                if from.listener == Listener::Overlay && super::identity::needs_identity(request) =>
            {
                // Issue 11 item 4: another node's call for our phone must prove its caller.
                match self.callers.as_mut() {
                    Some(c) => c.check(now, request)?,
                    None => return Err(super::identity::cannot_check()),
                };
                targets
            }
            Targets::Send(targets) => targets,
            Targets::AskOverlay(aor) => {
                debug!(%aor, "target not served here; fetching its registration from the overlay");
                ctx.parked = Some(aor.clone());
                self.contexts.insert(id, ctx);
                self.lookups.push((id, aor));
                return Ok(Forwarded::Parked);
            }
        };
        self.send_branches(now, tl, id, &mut ctx, &req, targets);
        self.contexts.insert(id, ctx);
        Ok(Forwarded::Sent)
    }

    fn send_branches(
        &mut self,
        now: Instant,
        tl: &mut TransactionLayer<Endpoint>,
        id: ServerTxId,
        ctx: &mut Context,
        req: &Message,
        targets: Vec<(Uri, Endpoint)>,
    ) {
        let method = req.method().cloned().unwrap_or(Method::Options);
        for (uri, to) in targets {
            let copy = self.prepare(now, req, &method, uri, ctx.from_listener, to);
            let client = tl.send_request(now, copy, to, to.transport.is_reliable());
            self.branches.insert(client, id);
            if method == Method::Invite {
                // §16.6 step 11: every INVITE branch starts Timer C.
                self.timer_c.arm(client, now + self.config.timer_c);
            }
            ctx.branches.push(Branch {
                client,
                to,
                provisional: false,
                final_code: None,
                cancel_pending: false,
                cancelled: false,
            });
        }
    }

    /// The next parked request whose AoR the peer should look up in the overlay.
    pub fn poll_lookup(&mut self) -> Option<(ServerTxId, String)> {
        if self.lookups.is_empty() {
            None
        } else {
            Some(self.lookups.remove(0))
        }
    }

    /// The overlay lookup for a parked request ended: `contacts` are the live contacts of the
    /// AoR's verified registration record (other nodes' overlay addresses), `None` when no
    /// record exists. §16.5–16.6: the contacts are the target set; none at all is 404, a
    /// record without contacts (the user's phones are gone) 480.
    pub fn overlay_resolved(
        &mut self,
        now: Instant,
        tl: &mut TransactionLayer<Endpoint>,
        id: ServerTxId,
        contacts: Option<Vec<String>>,
    ) {
        let Some(mut ctx) = self.contexts.remove(&id) else { return };
        if ctx.final_sent || ctx.parked.take().is_none() {
            // Cancelled while we looked (§16.10), or not parked at all.
            self.contexts.insert(id, ctx);
            return;
        }
        let targets: Vec<(Uri, Endpoint)> = contacts
            .iter()
            .flatten()
            .filter_map(|c| Uri::parse(c))
            .filter_map(|u| self.overlay_hop(&u).map(|to| (u, to)))
            .collect();
        if targets.is_empty() {
            let (code, reason) = match contacts {
                None => (404, "Not Found"),
                Some(_) => (480, "Temporarily Unavailable"),
            };
            ctx.final_sent = true;
            let tag = self.tag();
            let mut resp = ctx.request.make_response(code, reason, Some(&tag));
            resp.headers.push(Header::new(HeaderName::Server, &self.config.server));
            self.contexts.insert(id, ctx);
            self.respond(now, tl, id, resp);
            return;
        }
        let mut req = ctx.request.clone();
        self.pop_own_route(&mut req);
        req.headers.remove_all(&HeaderName::ProxyAuthorization);
        self.send_branches(now, tl, id, &mut ctx, &req, targets);
        self.status.requests_forwarded += 1;
        self.contexts.insert(id, ctx);
    }

    /// The copy of `req` for one branch (§16.6 steps 1–8).
    fn prepare(
        &mut self,
        now: Instant,
        req: &Message,
        method: &Method,
        uri: Uri,
        from: Listener,
        to: Endpoint,
    ) -> Message {
        let mut copy = req.clone();
        // Step 2: the target becomes the Request-URI.
        if let StartLine::Request(line) = &mut copy.start {
            line.uri = uri;
        }
        // Step 3: Max-Forwards (checked non-zero by the peer, §16.3).
        let mf = req.max_forwards().ok().flatten().map_or(70, |m| m.saturating_sub(1));
        copy.headers.set(Header::new(HeaderName::MaxForwards, mf));
        // Step 4: stay on the path of dialogs this request may create.
        let out_of_dialog = req.to().ok().is_some_and(|t| t.tag().is_none());
        if out_of_dialog && matches!(method, Method::Invite | Method::Subscribe | Method::Refer) {
            // RFC 5658 §3.2: when the two legs use different listeners (phone side, overlay
            // side), two Record-Routes: the lower one names the listener the request came in
            // on, the upper one the listener it leaves from, so each side's in-dialog requests
            // reach us where they can and we pop both (§16.4).
            // Across the faces both carry the token naming the node on the overlay side: the
            // one we send to, or the one whose Record-Route tops the request we received.
            let token = if from == to.listener {
                None
            } else if to.listener == Listener::Overlay {
                Some(self.route_token(to.remote))
            } else {
                req.record_routes().ok().and_then(|rr| rr.into_iter().next()).and_then(|top| {
                    let is_node = matches!(&top.uri, Uri::Sip(u) if u.param(NODE_ROUTE_PARAM).is_some());
                    is_node.then(|| overlay_endpoint(&top.uri)).flatten().map(|e| self.route_token(e.remote))
                })
            };
            let token = token.as_deref();
            if from != to.listener {
                let rr = self.record_route(from, to.transport, token);
                copy.headers.push_front_of(Header::new(HeaderName::RecordRoute, rr));
            }
            let rr = self.record_route(to.listener, to.transport, token);
            copy.headers.push_front_of(Header::new(HeaderName::RecordRoute, rr));
        }
        // Who is calling: signed when our phone's call leaves for another node; the proof is
        // for nodes, never shown to a phone.
        if to.listener == Listener::Overlay && from == Listener::Proxy && super::identity::needs_identity(&copy) {
            if let Some(c) = &self.callers {
                c.sign(now, &mut copy);
            }
        }
        if to.listener == Listener::Proxy {
            super::identity::strip(&mut copy);
        }
        // Step 8: our Via on top, with a fresh branch (RFC 3581 rport so replies find us).
        let via = self.via_on(to.listener, to.transport);
        copy.headers.push_front_of(Header::new(HeaderName::Via, via));
        copy
    }

    fn via(&mut self, transport: Transport) -> Via {
        self.via_on(Listener::Proxy, transport)
    }

    /// The address of a listener: the proxy's, or the overlay's (the first other address).
    fn listener_addr(&self, listener: Listener) -> SocketAddr {
        match listener {
            Listener::Overlay => self.config.other_addrs.first().copied().unwrap_or(self.config.addr),
            Listener::Proxy => self.config.addr,
        }
    }

    fn via_on(&mut self, listener: Listener, transport: Transport) -> Via {
        let branch = new_branch(&mut self.rng);
        let a = self.listener_addr(listener);
        let mut via = Via::new(transport.via_name(), a.ip().into(), Some(a.port()), &branch);
        via.set_param("rport", None);
        via
    }

    fn record_route(&self, listener: Listener, transport: Transport, token: Option<&str>) -> NameAddr {
        let a = self.listener_addr(listener);
        let mut uri = SipUri::new(a.ip().into(), Some(a.port()));
        uri.params.push(crate::sip::syntax::Param { name: "lr".into(), value: None });
        if transport == Transport::Tcp {
            uri.params.push(crate::sip::syntax::Param { name: "transport".into(), value: Some("tcp".into()) });
        }
        if listener == Listener::Overlay {
            uri.params.push(crate::sip::syntax::Param { name: NODE_ROUTE_PARAM.into(), value: None });
        }
        if let Some(t) = token {
            uri.params.push(crate::sip::syntax::Param { name: ROUTE_TOKEN_PARAM.into(), value: Some(t.into()) });
        }
        NameAddr::new(Uri::Sip(uri))
    }

    /// An ACK matching no server transaction: the ACK for a 2xx, which travels end to end
    /// along the route set (§16.4, §16.12); forwarded without a transaction.
    pub fn handle_ack(&mut self, now: Instant, tl: &mut TransactionLayer<Endpoint>, from: Endpoint, ack: Message) {
        if ack.max_forwards().ok().flatten() == Some(0) {
            return;
        }
        let mut req = ack;
        let popped = self.pop_own_route(&mut req);
        if from.listener == Listener::Proxy && !popped.any {
            // An ACK for a 2xx is in a dialog; every dialog through us carries our Route.
            debug!("ACK from a phone without our Route; dropped");
            return;
        }
        match self.targets(now, from, &req, &popped) {
            Ok(Targets::Send(targets)) => {
                for (uri, to) in targets.into_iter().take(1) {
                    let copy = self.prepare(now, &req, &Method::Ack, uri, from.listener, to);
                    tl.send_stateless(to, &copy);
                }
            }
            Ok(Targets::AskOverlay(aor)) => debug!(%aor, "ACK for an AoR not served here; dropped"),
            Err(r) => debug!(status = r.status, "ACK not forwarded"),
        }
    }

    /// A response for one of [`owns_client`](Self::owns_client)'s transactions (§16.7).
    pub fn handle_response(
        &mut self,
        now: Instant,
        tl: &mut TransactionLayer<Endpoint>,
        client: ClientTxId,
        mut response: Message,
    ) {
        if self.cancels.contains(&client) {
            return;
        }
        if self.pings.remove(&client).is_some() {
            // Any response means the phone is alive.
            return;
        }
        let Some(&sid) = self.branches.get(&client) else { return };
        let code = response.status().unwrap_or(500);
        // Step 3: our Via goes.
        response.headers.remove_first_element(&HeaderName::Via);
        if response.headers.get(&HeaderName::Via).is_none() {
            return;
        }
        let Some(ctx) = self.contexts.get_mut(&sid) else { return };
        let Some(b) = ctx.branches.iter_mut().find(|b| b.client == client) else { return };
        let invite = ctx.request.method() == Some(&Method::Invite);
        match code {
            100 => b.provisional = true,
            101..=199 => {
                b.provisional = true;
                let cancel = b.cancel_pending && !b.cancelled;
                let to = b.to;
                if cancel {
                    b.cancelled = true;
                }
                // §16.7 step 2: a provisional response other than 100 restarts Timer C of an
                // INVITE branch (not one we have cancelled: that one waits for its 487).
                if invite && !b.cancelled {
                    self.timer_c.arm(client, now + self.config.timer_c);
                }
                // Step 5: provisional responses go upstream at once.
                if !ctx.final_sent {
                    self.respond(now, tl, sid, response);
                }
                if cancel {
                    self.send_cancel(now, tl, client, to);
                }
            }
            200..=299 => {
                b.final_code = Some(code);
                self.timer_c.disarm(client);
                let first = !ctx.final_sent;
                ctx.final_sent = true;
                let reply_to = ctx.reply_to;
                // Step 9: every 2xx goes upstream at once (several for a forked INVITE).
                if tl.respond(now, sid, response.clone()).is_err() {
                    tl.send_stateless(reply_to, &response);
                }
                if invite && first {
                    // Step 10: the call is answered; stop the other phones ringing.
                    self.cancel_branches(now, tl, sid, Some(client));
                }
            }
            _ => {
                b.final_code = Some(code);
                self.timer_c.disarm(client);
                // Step 6: keep the best so far.
                if better(&response, ctx.best.as_ref()) {
                    ctx.best = Some(response);
                }
                if invite && code >= 600 {
                    self.cancel_branches(now, tl, sid, Some(client));
                }
                self.maybe_send_best(now, tl, sid);
            }
        }
    }

    /// Step 7 once every branch has ended: the best response, or 480 when they all timed out.
    fn maybe_send_best(&mut self, now: Instant, tl: &mut TransactionLayer<Endpoint>, sid: ServerTxId) {
        let Some(ctx) = self.contexts.get_mut(&sid) else { return };
        if ctx.final_sent || ctx.branches.iter().any(|b| b.final_code.is_none()) {
            return;
        }
        ctx.final_sent = true;
        let tag = format!("{:016x}", self.rng.random::<u64>());
        let resp = match ctx.best.take() {
            // §16.7 step 6: a 503 from downstream becomes 500 (we are not the one overloaded).
            Some(r) if r.status() == Some(503) => {
                let mut r2 = ctx.request.make_response(500, "Server Internal Error", Some(&tag));
                r2.headers.push(Header::new(HeaderName::Server, &self.config.server));
                r2
            }
            // Every branch timed out: the user is registered but unreachable.
            Some(r) if r.status() == Some(408) && ctx.branches.iter().all(|b| b.final_code == Some(408)) => {
                ctx.request.make_response(480, "Temporarily Unavailable", Some(&tag))
            }
            Some(r) => r,
            None => ctx.request.make_response(480, "Temporarily Unavailable", Some(&tag)),
        };
        self.respond(now, tl, sid, resp);
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

    fn ping_failed(&mut self, ping: Ping) {
        if self.registrar.remove(&ping.aor, &ping.contact) {
            self.status.pings_failed += 1;
            debug!(aor = %ping.aor, contact = %ping.contact, "phone stopped answering OPTIONS; unregistered");
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
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        let pings = self.pings.values().map(|p| p.deadline).min();
        let sweep = (self.registrar.binding_count() > 0).then_some(self.next_ping_sweep);
        [self.registrar.poll_timeout(), pings, sweep, self.timer_c.next()].into_iter().flatten().min()
    }

    /// RFC 3261 §16.8: Timer C of an INVITE branch fired. After a provisional response the
    /// branch is cancelled (§9.1) and gets [`CANCEL_GRACE`] to end with its 487; without one
    /// (or when that grace runs out too) the branch ends as if it had received a 408, and the
    /// best response may go upstream (§16.7 step 6).
    fn timer_c_fired(&mut self, now: Instant, tl: &mut TransactionLayer<Endpoint>, client: ClientTxId) {
        let Some(&sid) = self.branches.get(&client) else { return };
        let Some(ctx) = self.contexts.get_mut(&sid) else { return };
        let Some(b) = ctx.branches.iter_mut().find(|b| b.client == client && b.final_code.is_none()) else {
            return;
        };
        if b.provisional && !b.cancelled {
            debug!(%client, "Timer C fired after a provisional response; cancelling the branch");
            self.status.timer_c_fired += 1;
            b.cancelled = true;
            let to = b.to;
            self.timer_c.arm(client, now + CANCEL_GRACE);
            self.send_cancel(now, tl, client, to);
            return;
        }
        if !b.cancelled {
            self.status.timer_c_fired += 1;
        }
        debug!(%client, "Timer C fired; the branch counts as 408");
        b.final_code = Some(408);
        let tag = format!("{:016x}", self.rng.random::<u64>());
        let timeout = ctx.request.make_response(408, "Request Timeout", Some(&tag));
        if better(&timeout, ctx.best.as_ref()) {
            ctx.best = Some(timeout);
        }
        // The client transaction is ours to end: nothing it could still receive matters.
        let _ = tl.terminate_client(client);
        self.maybe_send_best(now, tl, sid);
    }

    /// One OPTIONS to every registered phone that has no ping outstanding.
    fn send_pings(&mut self, now: Instant, tl: &mut TransactionLayer<Endpoint>) {
        let pending: BTreeSet<(String, String)> =
            self.pings.values().map(|p| (p.aor.clone(), p.contact.to_string())).collect();
        let targets: Vec<(String, Uri, Endpoint)> = self
            .registrar
            .aors()
            .flat_map(|(aor, bs)| bs.iter().map(move |b| (aor.to_owned(), b.contact.uri.clone(), b.flow)))
            .filter(|(aor, uri, _)| !pending.contains(&(aor.clone(), uri.to_string())))
            .collect();
        for (aor, uri, to) in targets {
            let mut req = Message::request(Method::Options, uri.clone());
            let via = self.via(to.transport);
            let tag = self.tag();
            let call_id = format!("{:016x}@{}", self.rng.random::<u64>(), self.config.addr.ip());
            req.headers.push(Header::new(HeaderName::Via, via));
            req.headers.push(Header::new(HeaderName::MaxForwards, 70));
            req.headers.push(Header::new(HeaderName::From, format!("<sip:{}>;tag={tag}", self.config.domain)));
            req.headers.push(Header::new(HeaderName::To, format!("<{uri}>")));
            req.headers.push(Header::new(HeaderName::CallId, call_id));
            req.headers.push(Header::new(HeaderName::CSeq, "1 OPTIONS"));
            req.headers.push(Header::new(HeaderName::UserAgent, &self.config.server));
            let id = tl.send_request(now, req, to, to.transport.is_reliable());
            self.pings.insert(id, Ping { aor, contact: uri, deadline: now + self.config.ping_timeout });
        }
    }
}

/// Marks the Record-Route a node puts on its overlay leg: a local phone's in-dialog request
/// whose next Route carries it goes to that node's overlay listener; any other Route to an
/// address that is not a registered phone stays refused.
const NODE_ROUTE_PARAM: &str = "p2psip-node";

/// The Record-Route parameter holding [`Proxy::route_token`].
const ROUTE_TOKEN_PARAM: &str = "p2psip-rt";

/// What [`Proxy::pop_own_route`] removed: whether any Route was ours, and their tokens.
#[derive(Debug, Default)]
struct Popped {
    any: bool,
    tokens: Vec<String>,
}

/// What [`Proxy::forward`] did with a request.
enum Forwarded {
    Sent,
    /// Waiting for the overlay lookup ([`Proxy::poll_lookup`], [`Proxy::overlay_resolved`]).
    Parked,
}

/// Where a request goes (§16.5).
enum Targets {
    Send(Vec<(Uri, Endpoint)>),
    /// An AoR of our domain that nobody here serves: its registration record decides.
    AskOverlay(String),
}

/// Another node's overlay listener named by a URI with an IP address (a registration
/// record's contact, or that node's Record-Route): reached from our overlay listener, over UDP
/// like the overlay's own requests (or TCP when the URI says so).
fn overlay_endpoint(uri: &Uri) -> Option<Endpoint> {
    let Uri::Sip(s) = uri else { return None };
    let ip = s.host.ip()?;
    let transport = if s.transport().as_deref() == Some("tcp") { Transport::Tcp } else { Transport::Udp };
    Some(Endpoint {
        listener: Listener::Overlay,
        transport,
        remote: SocketAddr::new(ip, s.port.unwrap_or(5060)),
        conn: None,
    })
}

fn unreachable_route() -> Rejection {
    Rejection::new(404, "Not Found (no route to that address)")
}

/// RFC 3261 §16.7 step 6: a 6xx wins; otherwise the lowest class, 4xx over 5xx... and among
/// equals the first. 408 (our own timeout) loses to any real answer.
fn better(candidate: &Message, best: Option<&Message>) -> bool {
    let Some(best) = best else { return true };
    let rank = |m: &Message| {
        let code = m.status().unwrap_or(500);
        match code {
            600..=699 => 0,
            408 => 5,
            300..=399 => 1,
            400..=499 => 2,
            500..=599 => 3,
            _ => 4,
        }
    };
    rank(candidate) < rank(best)
}
