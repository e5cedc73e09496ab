//! The proxy's side of calls to other SIP domains (`crate::outbound`): a request from one of
//! our phones for `sip:carol@example.com` goes to the server RFC 3263 names for `example.com`,
//! from the overlay listener (the node's public face), with the double Record-Route every
//! request leaving our phone's side gets, so the dialog's later requests come through us.
//!
//! - A numeric host or `maddr` is settled at once; a domain name parks the request while the
//!   peer asks DNS ([`Proxy::poll_resolution`], [`Proxy::external_resolved`]).
//! - The targets are tried in order (RFC 3263 §4.3): a target that times out or answers 503
//!   before anything rang is left for the next.
//! - Only our phones' requests take this path. A request from another node for another
//!   domain is refused (no node relays for others), and in a dialog only a route behind our own
//!   Record-Route carrying its token is followed.
//! - The media of such calls is not anchored: the far end speaks plain SIP and SDP, so the
//!   phones' media go as their SDP says (`docs/proxy.md`).

use std::time::Instant;

use super::forward::Targets;
use super::{Context, Proxy, Rejection};
use crate::addr::next_hop_allowed;
use crate::outbound::{Resolution, ResolveError, Target};
use crate::sip::transaction::{ServerTxId, TransactionLayer};
use crate::sip::uri::{SipUri, Uri};
use crate::transport::{Endpoint, Listener};

/// A request for another domain, waiting for DNS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolveRequest {
    /// Its server transaction, answered through [`Proxy::external_resolved`].
    pub sid: ServerTxId,
    /// The URI to resolve (the Request-URI, or the Route that leads the way).
    pub uri: SipUri,
}

/// Marks a context parked for DNS rather than for a registration fetch.
const DNS_PARK: &str = "dns";

impl Proxy {
    /// Where a local phone's request for `uri`, a host outside the overlay, goes: at once for
    /// a numeric host, after DNS for a name. `request_uri` is the Request-URI the copy keeps.
    pub(super) fn external_targets(&mut self, uri: &SipUri, request_uri: &Uri) -> Result<Targets, Rejection> {
        let mut resolution = Resolution::new(uri, rand::Rng::random(&mut self.rng));
        if resolution.next_query().is_some() {
            return Ok(Targets::Resolve(uri.clone()));
        }
        let targets = resolution.result().map_err(|e| refusal(&e))?;
        let mut hops = self.external_hops(&targets).into_iter();
        let first = hops.next().ok_or_else(|| self.refuse_hop())?;
        Ok(Targets::External { uri: request_uri.clone(), to: first, alternates: hops.collect() })
    }

    /// The targets we may send to: not our own addresses, not loopback unless we are, never
    /// link-local (docs/security.md, M8).
    fn external_hops(&self, targets: &[Target]) -> Vec<Endpoint> {
        let own = self.listener_addr(Listener::Overlay).ip();
        let ours = |a| std::iter::once(&self.config.addr).chain(&self.config.other_addrs).any(|o| *o == a);
        targets
            .iter()
            .filter(|t| next_hop_allowed(t.addr.ip(), own) && !ours(t.addr))
            .map(|t| Endpoint { listener: Listener::Overlay, transport: t.transport, remote: t.addr, conn: None })
            .collect()
    }

    fn refuse_hop(&mut self) -> Rejection {
        self.status.next_hops_refused += 1;
        Rejection::new(403, "Forbidden (that domain's server is not an address this node sends to)")
    }

    /// Parks a request for DNS.
    pub(super) fn park_for_dns(&mut self, sid: ServerTxId, ctx: &mut Context, uri: SipUri) {
        ctx.parked = Some(DNS_PARK.to_owned());
        ctx.external = Some(Vec::new());
        self.resolutions.push_back(ResolveRequest { sid, uri });
    }

    /// The next request waiting for DNS, for the peer's driver.
    pub fn poll_resolution(&mut self) -> Option<ResolveRequest> {
        self.resolutions.pop_front()
    }

    /// What DNS said for a parked request: it goes to the first target, the others kept for
    /// failover; no target is an error response.
    pub fn external_resolved(
        &mut self,
        now: Instant,
        tl: &mut TransactionLayer<Endpoint>,
        sid: ServerTxId,
        result: Result<Vec<Target>, ResolveError>,
    ) {
        let Some(mut ctx) = self.contexts.remove(&sid) else { return };
        if ctx.final_sent || ctx.parked.as_deref() != Some(DNS_PARK) {
            // Cancelled while DNS answered (§16.10).
            self.contexts.insert(sid, ctx);
            return;
        }
        ctx.parked = None;
        let hops = match result {
            Ok(targets) => self.external_hops(&targets),
            Err(e) => {
                self.status.dns_failures += 1;
                let r = refusal(&e);
                self.contexts.insert(sid, ctx);
                self.answer_with(now, tl, sid, r.status, &r.reason);
                return;
            }
        };
        let mut hops = hops.into_iter();
        let Some(first) = hops.next() else {
            let r = self.refuse_hop();
            self.contexts.insert(sid, ctx);
            self.answer_with(now, tl, sid, r.status, &r.reason);
            return;
        };
        ctx.external = Some(hops.collect());
        let (req, _) = self.outgoing(&ctx.request);
        let uri = req.request_uri().cloned().unwrap_or_else(|| Uri::Sip(SipUri::new(first.remote.ip().into(), None)));
        self.send_branches(now, tl, sid, &mut ctx, &req, vec![(uri, first)]);
        self.status.external_requests += 1;
        self.contexts.insert(sid, ctx);
    }

    /// §4.3: every branch ended with a timeout or 503 before anything rang, and another
    /// target is left: the request goes there instead, and the phone sees only the outcome.
    pub(super) fn external_fallback(
        &mut self,
        now: Instant,
        tl: &mut TransactionLayer<Endpoint>,
        sid: ServerTxId,
        ctx: &mut Context,
        best: Option<u16>,
    ) -> bool {
        let Some(alternates) = ctx.external.as_mut() else { return false };
        if alternates.is_empty() || ctx.branches.iter().any(|b| b.rang) || !best.is_none_or(|s| matches!(s, 408 | 503))
        {
            return false;
        }
        let next = alternates.remove(0);
        for b in ctx.branches.drain(..) {
            self.timer_c.disarm(b.client);
            self.branches.remove(&b.client);
        }
        ctx.best = None;
        let (req, _) = self.outgoing(&ctx.request);
        let Some(uri) = req.request_uri().cloned() else { return false };
        self.status.external_failovers += 1;
        self.send_branches(now, tl, sid, ctx, &req, vec![(uri, next)]);
        true
    }
}

/// The response for a URI that has no target.
fn refusal(e: &ResolveError) -> Rejection {
    match e {
        ResolveError::NeedsTls => Rejection::new(416, "Unsupported URI Scheme (sips: needs TLS)"),
        ResolveError::Transport(_) => Rejection::new(400, format!("Bad Request ({e})")),
        ResolveError::NotFound(_) => Rejection::new(404, format!("Not Found ({e})")),
    }
}
