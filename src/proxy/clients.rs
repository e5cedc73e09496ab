//! The registrar's door for clients (RFC 6940 §3.2.1, RFC 5626): a node that cannot be a
//! peer REGISTERs its user with this node, its edge, over the overlay listener, from the flow
//! its NAT keeps open. The binding then routes requests for that user into the flow, as a
//! local phone's binding does for a phone.
//!
//! Who may bind: the REGISTER carries its node's signature (`Identity`, the same proof calls
//! carry, docs/security.md M5) for the AoR in From and To; anyone else could otherwise bind a
//! user's AoR here and receive their calls. How many: at most `max_clients` users, beyond
//! which a new client gets 503 with Retry-After and tries another peer.

use std::time::{Duration, Instant};

use super::Proxy;
use crate::sip::validate::Rejection;
use crate::sip::{Header, HeaderName, Message, Method, SipUri};
use crate::transport::{Endpoint, Listener};

/// How many keep-alive intervals (the `Flow-Timer` an edge asks for, RFC 5626 §10.2) a client
/// flow may stay silent, plus [`SILENCE_MARGIN`], before it counts as failed (§5.4): its
/// binding goes, so callers get 480 at once rather than a timeout, until the client binds
/// again.
pub const SILENT_INTERVALS: u32 = 3;
/// The margin on top of those intervals.
pub const SILENCE_MARGIN: Duration = Duration::from_secs(5);

/// How long a refused client waits before trying this edge again.
const FULL_RETRY_AFTER: Duration = Duration::from_secs(30);

impl Proxy {
    /// Whether `msg` is a client node's REGISTER (over the overlay listener, with an outbound
    /// Contact: `+sip.instance` and `reg-id`, RFC 5626 §4.2), rather than a ring RPC.
    pub fn is_client_register(listener: Listener, msg: &Message) -> bool {
        listener == Listener::Overlay
            && msg.method() == Some(&Method::Register)
            && msg.headers.get(&HeaderName::DhtPeerId).is_none()
            && msg.contacts().ok().is_some_and(|c| match c {
                crate::sip::message::Contacts::List(list) => {
                    list.iter().any(|c| c.param("+sip.instance").is_some() && c.param("reg-id").is_some())
                }
                crate::sip::message::Contacts::Star => false,
            })
    }

    /// The answer to a client's REGISTER, sent without a server transaction (as a phone's).
    /// `serving` says whether this node is a peer (a client is nobody's edge).
    pub fn register_client(&mut self, now: Instant, from: Endpoint, msg: &Message, serving: bool) -> Message {
        match self.bind_client(now, from, msg, serving) {
            Ok(resp) => resp,
            Err(r) => {
                self.status.clients_refused += 1;
                self.refusal(msg, r)
            }
        }
    }

    fn bind_client(
        &mut self,
        now: Instant,
        from: Endpoint,
        msg: &Message,
        serving: bool,
    ) -> Result<Message, Rejection> {
        if !serving {
            return Err(Rejection::new(403, "Forbidden (this node is not a peer; it serves no clients)"));
        }
        let aor = msg.to().ok().and_then(|t| t.uri.as_sip().map(SipUri::aor));
        let Some(aor) = aor else { return Err(Rejection::new(416, "Unsupported URI Scheme in To")) };
        let Some(callers) = self.callers.as_mut() else { return Err(super::identity::cannot_check()) };
        let proven = callers.check(now, msg)?;
        if proven.as_str() != aor {
            return Err(Rejection::new(403, "Forbidden (the signature is for another AoR)"));
        }
        let known = self.registrar.lookup(&aor, now).iter().any(|b| b.flow.listener == Listener::Overlay);
        if !known && self.client_count(now) >= self.config.max_clients {
            let retry = Header::new(HeaderName::other("Retry-After"), FULL_RETRY_AFTER.as_secs());
            return Err(
                Rejection::new(503, "Service Unavailable (this edge serves all the clients it may)").with_header(retry)
            );
        }
        let tag = self.tag();
        let mut resp = self.registrar.register(now, &aor, msg, from, &tag)?;
        // RFC 5626 §6: the registrar supports outbound; §10.2: the keep-alive interval.
        resp.headers.push(Header::new(HeaderName::Require, "outbound"));
        resp.headers.push(Header::new(HeaderName::other("Flow-Timer"), self.config.flow_timer.as_secs()));
        // The route to the client through us, with its flow's token (RFC 5626 §5.3's flow
        // token, RFC 3327's Path): it stands for the client in the Record-Routes of its dialogs,
        // so in-dialog requests come to us and go on into the flow.
        let edge = self.listener_addr(Listener::Overlay);
        let path = format!(
            "<sip:{}@{};lr;{};{}>",
            self.flow_token(from.remote),
            crate::sip::uri::host_port(&edge.ip().into(), Some(edge.port())),
            super::forward::FLOW_PARAM,
            super::forward::NODE_ROUTE_PARAM
        );
        resp.headers.push(Header::new(HeaderName::other("Path"), path));
        self.status.clients_registered += 1;
        self.client_seen.insert(from.remote, now);
        Ok(resp)
    }

    /// A keep-alive (a STUN Binding request) came from `remote`: if it is a client's flow,
    /// the flow lives on.
    pub fn client_keepalive(&mut self, now: Instant, remote: std::net::SocketAddr) {
        if let Some(seen) = self.client_seen.get_mut(&remote) {
            *seen = now;
        }
    }

    /// Unbinds the clients whose flows went silent.
    pub(super) fn unbind_silent_clients(&mut self, now: Instant) {
        let silent: Vec<std::net::SocketAddr> = self
            .client_seen
            .iter()
            .filter(|(_, seen)| now.saturating_duration_since(**seen) >= self.flow_silence())
            .map(|(remote, _)| *remote)
            .collect();
        for remote in silent {
            self.client_seen.remove(&remote);
            let gone: Vec<(String, crate::sip::Uri)> = self
                .registrar
                .aors()
                .flat_map(|(aor, bs)| bs.iter().map(move |b| (aor, b)))
                .filter(|(_, b)| b.flow.listener == Listener::Overlay && b.flow.remote == remote)
                .map(|(aor, b)| (aor.to_owned(), b.contact.uri.clone()))
                .collect();
            for (aor, contact) in gone {
                tracing::info!(%aor, %remote, "a client's flow went silent; unbound");
                self.registrar.remove(&aor, &contact);
                self.status.clients_lost += 1;
            }
        }
    }

    /// When the next silent flow is due to be unbound.
    pub(super) fn next_silence(&self) -> Option<Instant> {
        self.client_seen.values().min().map(|seen| *seen + self.flow_silence())
    }

    fn flow_silence(&self) -> Duration {
        self.config.flow_timer * SILENT_INTERVALS + SILENCE_MARGIN
    }

    /// The token naming a client's flow from `remote`: an HMAC, so only flows we bound can be
    /// named, and nothing is stored for it.
    pub(super) fn flow_token(&self, remote: std::net::SocketAddr) -> String {
        let tag = ring::hmac::sign(&self.route_key, format!("p2psip-flow {remote}").as_bytes());
        crate::encoding::hex(&tag.as_ref()[..8])
    }

    /// The live client flow `token` names, if any.
    pub(super) fn client_flow_by_token(&self, token: &str, now: Instant) -> Option<Endpoint> {
        self.registrar
            .aors()
            .flat_map(|(_, bindings)| bindings.iter())
            .filter(|b| b.flow.listener == Listener::Overlay && b.expires_at > now)
            .map(|b| b.flow)
            .find(|flow| self.flow_token(flow.remote) == token)
    }

    /// How many users are bound here by clients (over the overlay listener).
    pub fn client_count(&self, now: Instant) -> usize {
        self.registrar
            .aors()
            .filter(|(_, bindings)| bindings.iter().any(|b| b.flow.listener == Listener::Overlay && b.expires_at > now))
            .count()
    }
}
