//! Forwarding (RFC 3261 §16.3–16.7): who may use the proxy listener, where a request goes
//! (§16.5 targets, including the overlay), forking into branches (§16.6), the Record-Route
//! that keeps the dialog on the node, best-response selection (§16.7), and ACK for 2xx.

use std::net::SocketAddr;
use std::time::Instant;

use rand::Rng;
use tracing::debug;

use super::auth::Realm;
use super::directory::{resolve, Resolution};
use super::{Branch, Context, Proxy};
use crate::addr::next_hop_allowed;
use crate::sip::header::new_branch;
use crate::sip::header::{NameAddr, Via};
use crate::sip::transaction::{ClientTxId, ServerTxId, TransactionLayer};
use crate::sip::validate::Rejection;
use crate::sip::{Header, HeaderName, Message, Method, SipUri, StartLine, Uri};
use crate::transport::{Endpoint, Listener, Transport};

impl Proxy {
    /// docs/security.md, M3: the proxy listener forwards nothing for a stranger. An out-of-dialog
    /// request must come over the flow a phone registered from (RFC 5626 §5.3 in spirit: the
    /// flow was authenticated by its REGISTER) or carry `Proxy-Authorization` for a local
    /// account (RFC 3261 §16.3 step 6, §22.3); otherwise it gets 407. A request within a dialog
    /// must carry the Route of our Record-Route: every dialog through us was Record-Routed.
    pub(super) fn admit_phone_request(&mut self, now: Instant, from: Endpoint, req: &Message) -> Result<(), Rejection> {
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

    /// §16.4: a top Route naming us is removed; with the double Record-Route of RFC 5658
    /// (§3.2) the next one may name our other listener, and goes too; and a third may be our
    /// own route into a client's flow, when we are both the callee's node and the caller's
    /// edge (the caller's node Record-Routed through us). Says what was popped.
    pub(super) fn pop_own_route(&self, req: &mut Message) -> Popped {
        let mut popped = Popped::default();
        for _ in 0..3 {
            let Ok(routes) = req.routes() else { break };
            match routes.first().map(|r| &r.uri) {
                Some(Uri::Sip(u)) if self.is_own(&u.host, u.port) || self.is_our_path(u) => {
                    popped.any = true;
                    if let Some(t) = u.param(ROUTE_TOKEN_PARAM).and_then(|p| p.value.clone()) {
                        popped.tokens.push(t);
                    }
                    // An edge's own route naming one of its clients' flows (`clients`).
                    if self.is_own(&u.host, u.port) && u.param(FLOW_PARAM).is_some() {
                        popped.flow = u.user.clone();
                    }
                    req.headers.remove_first_element(&HeaderName::Route);
                }
                _ => break,
            }
        }
        popped
    }

    /// Whether `u` is the route through our edge that stands for us (a client's `Path`).
    fn is_our_path(&self, u: &SipUri) -> bool {
        let Some(Uri::Sip(path)) = self.overlay_path.as_ref().map(|p| &p.uri) else { return false };
        path.user == u.user && path.host == u.host && path.port == u.port
    }

    /// The token our Record-Routes carry when a dialog crosses from the phones to the node at
    /// `node` (or back): an HMAC of that node's overlay address, so a phone's in-dialog request
    /// is forwarded to a `p2psip-node` Route only if we put it on the dialog's path ourselves
    /// (docs/security.md, M3). Stateless, like the nonces: nothing is stored per dialog.
    pub(super) fn route_token(&self, node: SocketAddr) -> String {
        let tag = ring::hmac::sign(&self.route_key, format!("p2psip-rr {node}").as_bytes());
        crate::encoding::hex(&tag.as_ref()[..8])
    }

    /// Another node's overlay listener named by a URI (a registration record's contact, a
    /// node's Record-Route), if it may be a next hop: not one of our own addresses, not
    /// link-local, not loopback unless we are (docs/security.md, M8).
    pub(super) fn overlay_hop(&self, uri: &Uri) -> Option<Endpoint> {
        let to = overlay_endpoint(uri)?;
        let own = self.listener_addr(Listener::Overlay).ip();
        let ours = std::iter::once(&self.config.addr).chain(&self.config.other_addrs).any(|a| *a == to.remote);
        (!ours && next_hop_allowed(to.remote.ip(), own)).then_some(to)
    }

    /// §16.5–16.6: where the request goes, as (request copy's Request-URI, endpoint) pairs.
    pub(super) fn targets(
        &mut self,
        now: Instant,
        from: Endpoint,
        req: &Message,
        popped: &Popped,
    ) -> Result<Targets, Rejection> {
        let ruri = req.request_uri().cloned().ok_or_else(|| Rejection::new(400, "No Request-URI"))?;
        let Uri::Sip(sip) = &ruri else { return Err(Rejection::new(416, "Unsupported URI Scheme")) };
        let from_overlay = from.listener == Listener::Overlay;
        // Our own route naming a client's flow: into that flow, as it stands (the client pops
        // its own routes).
        if let Some(token) = &popped.flow {
            return match self.client_flow_by_token(token, now) {
                Some(to) => Ok(Targets::Send(vec![(ruri.clone(), to)])),
                None => {
                    self.status.next_hops_refused += 1;
                    Err(Rejection::new(480, "Temporarily Unavailable (that client is no longer bound here)"))
                }
            };
        }
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
            // A local phone's request in a dialog we Record-Routed toward another domain
            // (`outbound`): the far side's route leads.
            if !from_overlay && !node_route && !popped.tokens.is_empty() {
                if let Uri::Sip(next) = &route.uri {
                    return self.external_targets(next, &ruri);
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
                // looked up again and relayed (no relaying into someone's phone).
                Resolution::AskOverlay if from_overlay => Err(Rejection::new(404, "Not Found")),
                // §16.5: the target set comes from the overlay's registration record.
                Resolution::AskOverlay => Ok(Targets::AskOverlay(aor)),
            };
        }
        // A Request-URI that is an address (a phone's Contact: in-dialog requests once our
        // Routes are popped, or preloaded): only into a registered phone's flow, from either
        // side. Any other address would make the node an open relay (docs/security.md, M3).
        if sip.host.ip().is_some() && !self.is_own(&sip.host, sip.port) {
            if let Some(to) = self.endpoint_for(&ruri, now, true) {
                return Ok(Targets::Send(vec![(ruri.clone(), to)]));
            }
            // In a dialog we Record-Routed toward another domain whose far end put no route
            // of its own: its Contact is the next hop (`outbound`).
            if !from_overlay && !popped.tokens.is_empty() {
                return self.external_targets(sip, &ruri);
            }
            self.status.next_hops_refused += 1;
            return Err(if from_overlay {
                Rejection::new(403, "Forbidden (not a phone this node serves)")
            } else {
                Rejection::new(404, "Not Found (no dialog with that address)")
            });
        }
        if sip.user.is_some() {
            // Another SIP domain: our phones reach it through DNS (RFC 3263, `outbound`); no
            // node relays there for others.
            if !from_overlay {
                return self.external_targets(sip, &ruri);
            }
            return Err(Rejection::new(404, "Not Found (not an overlay domain)"));
        }
        Err(Rejection::new(404, "Not Found"))
    }

    /// The endpoint for a URI: a registered phone's flow when it is one of their contacts,
    /// else (unless `registered_only`) the URI's own IP address, port and transport.
    pub(super) fn endpoint_for(&self, uri: &Uri, now: Instant, registered_only: bool) -> Option<Endpoint> {
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
    pub(super) fn forward(
        &mut self,
        now: Instant,
        tl: &mut TransactionLayer<Endpoint>,
        id: ServerTxId,
        from: Endpoint,
        reply_to: Endpoint,
        request: &Message,
    ) -> Result<Forwarded, Rejection> {
        let (mut req, popped) = self.outgoing(request);
        let targets = self.targets(now, from, &req, &popped)?;
        let mut ctx = Context {
            request: request.clone(),
            reply_to,
            branches: Vec::new(),
            best: None,
            final_sent: false,
            parked: None,
            from_listener: from.listener,
            cached: None,
            external: None,
        };
        let targets = match targets {
            Targets::Send(targets)
                if from.listener == Listener::Overlay && super::identity::needs_identity(request) =>
            {
                // docs/security.md, M5: another node's call for our phone must prove its caller.
                match self.callers.as_mut() {
                    Some(c) => c.check(now, request)?,
                    None => return Err(super::identity::cannot_check()),
                };
                targets
            }
            Targets::Send(targets) => targets,
            Targets::External { uri, to, alternates } => {
                ctx.external = Some(alternates);
                self.status.external_requests += 1;
                vec![(uri, to)]
            }
            Targets::Resolve(uri) => {
                debug!(host = %uri.host, "another domain; asking DNS (RFC 3263)");
                self.park_for_dns(id, &mut ctx, uri);
                self.contexts.insert(id, ctx);
                return Ok(Forwarded::Parked);
            }
            Targets::AskOverlay(aor) => {
                debug!(%aor, "target not served here; fetching its registration from the overlay");
                ctx.parked = Some(aor.clone());
                self.contexts.insert(id, ctx);
                self.lookups.push_back((id, aor));
                return Ok(Forwarded::Parked);
            }
        };
        // The media anchor: another node's call for our phones loses its ICE part and has its
        // SDP pointed at our relay ports, once for every branch; a call it cannot anchor is
        // refused here, before any phone rings.
        if let Some(to) = targets.iter().map(|(_, e)| e.listener).find(|l| *l == Listener::Proxy) {
            self.anchor_toward_phone(now, from.listener, to, &mut req)?;
        }
        self.send_branches(now, tl, id, &mut ctx, &req, targets);
        self.contexts.insert(id, ctx);
        Ok(Forwarded::Sent)
    }

    pub(super) fn send_branches(
        &mut self,
        now: Instant,
        tl: &mut TransactionLayer<Endpoint>,
        id: ServerTxId,
        ctx: &mut Context,
        req: &Message,
        targets: Vec<(Uri, Endpoint)>,
    ) {
        let method = req.method().cloned().unwrap_or(Method::Options);
        let external = ctx.external.is_some();
        for (uri, to) in targets {
            let copy = self.prepare(now, req, &method, uri, ctx.from_listener, to, external);
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
                rang: false,
                cancel_pending: false,
                cancelled: false,
            });
        }
    }

    /// The next parked request whose AoR the peer should look up in the overlay.
    pub fn poll_lookup(&mut self) -> Option<(ServerTxId, String)> {
        self.lookups.pop_front()
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
            if self.divert_to_mailbox(id, &mut ctx) {
                self.contexts.insert(id, ctx);
                return;
            }
            let (code, reason) = match contacts {
                None => (404, "Not Found"),
                Some(_) => (480, "Temporarily Unavailable"),
            };
            self.contexts.insert(id, ctx);
            self.answer_with(now, tl, id, code, reason);
            return;
        }
        let (req, _) = self.outgoing(&ctx.request);
        self.send_branches(now, tl, id, &mut ctx, &req, targets);
        self.status.requests_forwarded += 1;
        self.contexts.insert(id, ctx);
    }

    /// The copy of `request` that goes on: our own Routes popped (§16.4) and our realm's
    /// credentials removed (§22.3: they were for us; they go no further), with what was popped.
    pub(super) fn outgoing(&mut self, request: &Message) -> (Message, Popped) {
        let mut req = request.clone();
        let popped = self.pop_own_route(&mut req);
        req.headers.remove_all(&HeaderName::ProxyAuthorization);
        (req, popped)
    }

    /// Ends request `sid` with a final response of our own (§16.7 step 6 aside: nothing was
    /// forwarded, or what was is given up), carrying our `Server`.
    pub(super) fn answer_with(
        &mut self,
        now: Instant,
        tl: &mut TransactionLayer<Endpoint>,
        sid: ServerTxId,
        status: u16,
        reason: &str,
    ) {
        let tag = self.tag();
        let Some(ctx) = self.contexts.get_mut(&sid) else { return };
        ctx.final_sent = true;
        let mut resp = ctx.request.make_response(status, reason, Some(&tag));
        resp.headers.push(Header::new(HeaderName::Server, &self.config.server));
        self.respond(now, tl, sid, resp);
    }

    /// The copy of `req` for one branch (§16.6 steps 1–8). `external`: it leaves for another
    /// SIP domain (`outbound`), which gets neither the media anchor's part nor our signature.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn prepare(
        &mut self,
        now: Instant,
        req: &Message,
        method: &Method,
        uri: Uri,
        from: Listener,
        to: Endpoint,
        external: bool,
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
            // From the overlay into a client's flow, an edge stays off the path: the client's
            // own Record-Route names the edge with the flow's token.
            if !(from == Listener::Overlay && to.listener == Listener::Overlay) {
                let rr = self.record_route(to.listener, to.transport, token);
                copy.headers.push_front_of(Header::new(HeaderName::RecordRoute, rr));
            }
        }
        // The media anchor's ICE part goes in before the caller's signature, which covers the
        // body.
        if !external {
            self.anchor_toward_overlay(now, from, to.listener, &mut copy);
        }
        // Who is calling: signed when our phone's call leaves for another node; the proof is
        // for nodes, never shown to a phone.
        if !external
            && to.listener == Listener::Overlay
            && from == Listener::Proxy
            && super::identity::needs_identity(&copy)
        {
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

    pub(super) fn via(&mut self, transport: Transport) -> Via {
        self.via_on(Listener::Proxy, transport)
    }

    /// The address of a listener: the proxy's, or the overlay's (the first other address).
    pub(super) fn listener_addr(&self, listener: Listener) -> SocketAddr {
        match listener {
            Listener::Overlay | Listener::OneShot => {
                self.config.other_addrs.first().copied().unwrap_or(self.config.addr)
            }
            Listener::Proxy => self.config.addr,
        }
    }

    pub(super) fn via_on(&mut self, listener: Listener, transport: Transport) -> Via {
        let branch = new_branch(&mut self.rng);
        let a = self.listener_addr(listener);
        let mut via = Via::new(transport.via_name(), a.ip().into(), Some(a.port()), &branch);
        via.set_param("rport", None);
        via
    }

    pub(super) fn record_route(&self, listener: Listener, transport: Transport, token: Option<&str>) -> NameAddr {
        // A client is reached on the overlay only through its edge: its route stands for it.
        if let (Listener::Overlay, Some(path)) = (listener, &self.overlay_path) {
            let mut path = path.clone();
            if let (Uri::Sip(u), Some(t)) = (&mut path.uri, token) {
                u.params.push(crate::sip::syntax::Param { name: ROUTE_TOKEN_PARAM.into(), value: Some(t.into()) });
            }
            return path;
        }
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
                    // A late offer's answer rides on the ACK: the anchor sees it too.
                    if let Err(r) = self.anchor_toward_phone(now, from.listener, to.listener, &mut req) {
                        debug!(status = r.status, "ACK's body refused by the media anchor");
                    }
                    let copy = self.prepare(now, &req, &Method::Ack, uri, from.listener, to, false);
                    tl.send_stateless(to, &copy);
                }
            }
            Ok(Targets::External { uri, to, .. }) => {
                let copy = self.prepare(now, &req, &Method::Ack, uri, from.listener, to, true);
                tl.send_stateless(to, &copy);
            }
            Ok(Targets::Resolve(uri)) => debug!(host = %uri.host, "ACK for a host DNS must name; dropped"),
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
        // The media anchor: a response crossing between our phone's side and the overlay.
        let faces = self
            .contexts
            .get(&sid)
            .and_then(|c| c.branches.iter().find(|b| b.client == client).map(|b| (b.to.listener, c.from_listener)));
        if let Some((came_from, goes_to)) = faces {
            self.anchor_toward_overlay(now, came_from, goes_to, &mut response);
            if let Err(r) = self.anchor_toward_phone(now, came_from, goes_to, &mut response) {
                debug!(status = r.status, "response's body refused by the media anchor");
            }
        }
        let Some(ctx) = self.contexts.get_mut(&sid) else { return };
        let Some(b) = ctx.branches.iter_mut().find(|b| b.client == client) else { return };
        let invite = ctx.request.method() == Some(&Method::Invite);
        match code {
            100 => b.provisional = true,
            101..=199 => {
                b.provisional = true;
                b.rang = true;
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
    pub(super) fn maybe_send_best(&mut self, now: Instant, tl: &mut TransactionLayer<Endpoint>, sid: ServerTxId) {
        let Some(mut ctx) = self.contexts.remove(&sid) else { return };
        if ctx.final_sent || ctx.parked.is_some() || ctx.branches.iter().any(|b| b.final_code.is_none()) {
            self.contexts.insert(sid, ctx);
            return;
        }
        // Sent on the buddy cache and not taken there: looked up after all (`cached`).
        let best = ctx.best.as_ref().and_then(Message::status);
        if self.cache_fallback(sid, &mut ctx, best) || self.external_fallback(now, tl, sid, &mut ctx, best) {
            self.contexts.insert(sid, ctx);
            return;
        }
        // A MESSAGE that reached nobody (every branch timed out, or the far node has no phone
        // for the user) waits in the user's mailbox instead (`offline`).
        let nobody = best.is_none_or(|s| matches!(s, 404 | 408 | 480 | 503));
        if nobody && self.divert_to_mailbox(sid, &mut ctx) {
            self.contexts.insert(sid, ctx);
            return;
        }
        self.contexts.insert(sid, ctx);
        let Some(ctx) = self.contexts.get_mut(&sid) else { return };
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
}

/// Marks the Record-Route a node puts on its overlay leg: a local phone's in-dialog request
/// whose next Route carries it goes to that node's overlay listener; any other Route to an
/// address that is not a registered phone stays refused.
pub(super) const NODE_ROUTE_PARAM: &str = "p2psip-node";

/// The Record-Route parameter holding [`Proxy::route_token`].
const ROUTE_TOKEN_PARAM: &str = "p2psip-rt";
/// Marks an edge's route whose user part is the token of a client's flow (`clients`).
pub(super) const FLOW_PARAM: &str = "ob";

/// What [`Proxy::pop_own_route`] removed: whether any Route was ours, and their tokens.
#[derive(Debug, Default)]
pub(super) struct Popped {
    any: bool,
    tokens: Vec<String>,
    /// The flow token of our own route naming a client's flow (`clients`).
    flow: Option<String>,
}

/// What [`Proxy::forward`] did with a request.
pub(super) enum Forwarded {
    Sent,
    /// Waiting for the overlay lookup ([`Proxy::poll_lookup`], [`Proxy::overlay_resolved`]).
    Parked,
}

/// Where a request goes (§16.5).
pub(super) enum Targets {
    Send(Vec<(Uri, Endpoint)>),
    /// Another SIP domain's server (`outbound`): the first target, and the ones to try after it
    /// (RFC 3263 §4.3).
    External {
        uri: Uri,
        to: Endpoint,
        alternates: Vec<Endpoint>,
    },
    /// Another SIP domain whose server DNS must name first.
    Resolve(crate::sip::uri::SipUri),
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
pub(super) fn better(candidate: &Message, best: Option<&Message>) -> bool {
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
