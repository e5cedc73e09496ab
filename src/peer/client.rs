//! The peer as a client (RFC 6940 §3.2.1; `crate::nat::flow`): bound at an edge peer over an
//! outbound flow, so that requests for its user reach it through the edge, and its
//! registration record names the edge. The ring's client peers ([`crate::overlay::Chord`])
//! say which peer is the edge; [`Flow`] keeps the binding and the NAT mapping alive; this
//! file sends the REGISTER (RFC 5626 §4.2: `+sip.instance`, `reg-id`, signed by the node for
//! its user) and reads its answer.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rand::Rng;
use tracing::{debug, info, warn};

use super::{new_branch, sent_by, Endpoint, Listener, Peer, Transmit, Transport};
use crate::nat::flow::{Flow, FlowAction, REGISTER_EXPIRES};
use crate::overlay::NodeState;
use crate::sip::transaction::ClientTxId;
use crate::sip::{Header, HeaderName, Message, Method, Uri};

/// How long an edge whose flow broke, or that did not answer, is passed over.
const LOST_EDGE_PASSED_OVER: Duration = Duration::from_secs(30);

/// The client's side of its flow.
#[derive(Debug)]
pub(super) struct ClientSide {
    pub flow: Flow,
    /// The REGISTER in flight, and the edge it went to.
    register_tx: Option<(ClientTxId, SocketAddr)>,
    /// One Call-ID for every REGISTER of this flow (RFC 3261 §10.2.4), CSeq counting up.
    call_id: String,
    cseq: u32,
}

impl ClientSide {
    pub(super) fn new(keepalive: Duration, call_id: String, tcp: bool) -> ClientSide {
        let flow = if tcp { Flow::new(keepalive).over_tcp() } else { Flow::new(keepalive) };
        ClientSide { flow, register_tx: None, call_id, cseq: 0 }
    }

    /// The transport the flow runs over.
    fn transport(&self) -> Transport {
        if self.flow.is_tcp() {
            Transport::Tcp
        } else {
            Transport::Udp
        }
    }
}

impl Peer {
    /// The edge this client is bound at, if it is a client and bound.
    pub fn edge(&self) -> Option<SocketAddr> {
        self.client.flow.registered_edge()
    }

    /// The ring's client peers changed their first: follow it with the flow.
    pub(super) fn edge_changed(&mut self, now: Instant, edge: Option<SocketAddr>) {
        info!(edge = ?edge, "edge peer");
        self.client.flow.set_edge(now, edge);
        if edge.is_none() && self.overlay.chord.state() == NodeState::Joining {
            // Every peer we knew is gone: find the ring again, as a new node would.
            let retry = self.overlay.chord.config().join_retry_interval;
            self.reach_retry_after(now, retry);
        }
        self.client_step(now);
    }

    /// Does what the flow asks: REGISTERs, keep-alives, a new edge when one is lost.
    pub(super) fn client_step(&mut self, now: Instant) {
        while let Some(action) = self.client.flow.poll_action() {
            match action {
                FlowAction::Register { edge } => self.send_client_register(now, edge),
                FlowAction::KeepAlive { edge, data } => {
                    let transport = self.client.transport();
                    let to = Endpoint { listener: Listener::Overlay, transport, remote: edge, conn: None };
                    self.outbox.push_back(Transmit { to, data: Bytes::from(data) });
                }
                FlowAction::Lost { edge } => {
                    warn!(%edge, "the edge stopped answering keep-alives; moving to another peer");
                    self.overlay.chord.drop_edge(now, LOST_EDGE_PASSED_OVER);
                    self.drain_overlay_only(now);
                }
            }
        }
    }

    /// The flow's deadlines.
    pub(super) fn client_timeout(&mut self, now: Instant) {
        let rng = &mut self.rng;
        self.client.flow.handle_timeout(now, || rng.random());
        self.client_step(now);
    }

    fn send_client_register(&mut self, now: Instant, edge: SocketAddr) {
        let Some(aor) = self.aor().cloned() else {
            debug!("a client without an enrolled user has nothing to register at its edge");
            return;
        };
        let local = self.config.overlay_addr;
        let user = aor.user().to_owned();
        let mut msg = Message::request(Method::Register, Uri::parse(&format!("sip:{}", sent_by(edge))).expect("uri"));
        let branch = new_branch(&mut self.rng);
        let tag = format!("{:08x}", self.rng.random::<u32>());
        self.client.cseq += 1;
        let h = &mut msg.headers;
        let transport = self.client.transport();
        let via = format!("SIP/2.0/{} {};branch={branch};rport", transport.via_name(), sent_by(local));
        h.push(Header::new(HeaderName::Via, via));
        h.push(Header::new(HeaderName::MaxForwards, 70));
        h.push(Header::new(HeaderName::From, format!("<{aor}>;tag={tag}")));
        h.push(Header::new(HeaderName::To, format!("<{aor}>")));
        h.push(Header::new(HeaderName::CallId, &self.client.call_id));
        h.push(Header::new(HeaderName::CSeq, format!("{} REGISTER", self.client.cseq)));
        // RFC 5626 §4.2: the instance and the flow's number; `ob` asks the edge to keep
        // requests for us on this flow.
        let instance = self.instance_urn();
        h.push(Header::new(
            HeaderName::Contact,
            format!("<sip:{user}@{};ob>;+sip.instance=\"<{instance}>\";reg-id=1", sent_by(local)),
        ));
        h.push(Header::new(HeaderName::Expires, REGISTER_EXPIRES));
        h.push(Header::new(HeaderName::Supported, "outbound, path"));
        h.push(Header::new(HeaderName::ContentLength, 0));
        self.proxy.sign_as_node(now, &mut msg);
        let to = Endpoint { listener: Listener::Overlay, transport, remote: edge, conn: None };
        let tx = self.transactions.send_request(now, msg, to, transport.is_reliable());
        self.counters.client_transactions += 1;
        self.client.register_tx = Some((tx, edge));
    }

    /// A UUID URN for this node (RFC 5626 §4.1), stable across restarts of the same node: from
    /// its user and overlay address.
    fn instance_urn(&self) -> String {
        let seed = format!("{}\n{}", self.aor().map(ToString::to_string).unwrap_or_default(), self.config.overlay_addr);
        let d = ring::digest::digest(&ring::digest::SHA256, seed.as_bytes());
        let h = crate::encoding::hex(&d.as_ref()[..16]);
        format!("urn:uuid:{}-{}-4{}-8{}-{}", &h[0..8], &h[8..12], &h[13..16], &h[17..20], &h[20..32])
    }

    /// A CRLF pong on a stream we opened: our edge answering the flow's ping (RFC 5626 §4.4.1).
    pub(super) fn pong(&mut self, now: Instant, from: Endpoint) {
        if from.listener == Listener::Overlay && self.client.flow.registered_edge() == Some(from.remote) {
            self.client.flow.pong();
        }
        self.client_step(now);
    }

    /// A stream closed: if it was the flow to our edge, the flow has failed.
    pub(super) fn client_stream_closed(&mut self, now: Instant, from: Endpoint) {
        if from.listener == Listener::Overlay && from.transport == Transport::Tcp {
            self.client.flow.stream_closed(from.remote);
            self.client_step(now);
        }
    }

    /// Whether `id` is the client's REGISTER.
    pub(super) fn owns_client_register(&self, id: ClientTxId) -> bool {
        self.client.register_tx.is_some_and(|(tx, _)| tx == id)
    }

    /// The edge answered our REGISTER (a final response).
    pub(super) fn client_register_answered(&mut self, now: Instant, id: ClientTxId, response: &Message) {
        let Some(code) = response.status().filter(|c| *c >= 200) else { return };
        let Some((tx, edge)) = self.client.register_tx.take() else { return };
        debug_assert_eq!(tx, id);
        if (200..300).contains(&code) {
            let expires = granted_expires(response).unwrap_or(REGISTER_EXPIRES);
            let flow_timer = response
                .headers
                .get(&HeaderName::other("Flow-Timer"))
                .and_then(|h| h.value_str())
                .and_then(|v| v.trim().parse().ok());
            info!(%edge, expires, "bound at the edge peer; requests for our user reach us through it");
            self.client.flow.registered(now, edge, expires, flow_timer);
            // The edge's route with our flow's token stands for us in our dialogs' Record-Routes.
            let path = response
                .headers
                .get(&HeaderName::other("Path"))
                .and_then(|h| crate::sip::header::NameAddr::parse(h.value()));
            self.proxy.set_overlay_path(path);
            self.sync_registration(now);
            return;
        }
        let retry_after = response
            .headers
            .get(&HeaderName::other("Retry-After"))
            .and_then(|h| h.value_str())
            .and_then(|v| v.trim().split(|c: char| !c.is_ascii_digit()).next()?.parse().ok())
            .map(Duration::from_secs);
        warn!(%edge, code, "the edge peer refused us; trying another");
        self.client.flow.register_failed(now, edge, retry_after);
        self.overlay.chord.drop_edge(now, retry_after.unwrap_or(LOST_EDGE_PASSED_OVER));
        self.drain_overlay_only(now);
        self.client_step(now);
    }

    /// Our REGISTER went unanswered (Timer F): the edge is likely gone.
    pub(super) fn client_register_failed(&mut self, now: Instant, id: ClientTxId) {
        if !self.owns_client_register(id) {
            return;
        }
        let Some((_, edge)) = self.client.register_tx.take() else { return };
        warn!(%edge, "the edge peer did not answer our REGISTER; trying another");
        self.client.flow.register_failed(now, edge, None);
        self.overlay.chord.drop_edge(now, LOST_EDGE_PASSED_OVER);
        self.drain_overlay_only(now);
        self.client_step(now);
    }
}

/// The expiry the registrar granted our contact: its `expires` parameter, else `Expires`.
fn granted_expires(response: &Message) -> Option<u32> {
    if let Ok(crate::sip::message::Contacts::List(list)) = response.contacts() {
        if let Some(e) = list.iter().find_map(|c| c.param("expires").and_then(|p| p.value.as_deref()?.parse().ok())) {
            return Some(e);
        }
    }
    response.expires().ok().flatten()
}
