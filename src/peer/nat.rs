//! The peer's NAT face: STUN on the overlay and proxy ports, the node's own address check
//! ([`crate::nat::discovery`]), and the dial-back that decides whether it is a peer or a client
//! ([`crate::nat::reachability`]), from both sides:
//!
//! - **Asked** (a peer receives a Binding request with CHANGE-REQUEST on its overlay port):
//!   it asks another peer of the ring, preferably on another IP address, to send the answer
//!   (an `OPTIONS` with `DHT-DialBack: <address>;tid=<nonce>`); on a ring of one it sends the
//!   answer itself from a fresh socket ([`Listener::OneShot`]), which cannot tell an
//!   address-restricted NAT from an open host but does catch a port-restricted one.
//! - **Helper** (a peer receives that `OPTIONS` from a node whose ID verifies against the
//!   address it came from): sends the Binding success, with the nonce as transaction ID, to
//!   the address named, and answers nothing.
//!
//! Both are rate-limited together ([`DIAL_BACKS_PER_SECOND`]); every step is smaller than what
//! caused it, so a dial-back amplifies nothing, and it goes only to the IP address the ask came
//! from (docs/security.md, M1).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rand::Rng;
use tracing::{debug, info, warn};

use super::overlay_wire::{self, RequestIds};
use super::{new_branch, sent_by, Endpoint, Listener, Peer, PeerEvent, Transmit, Transport};
use crate::nat::discovery::{Discovery, NatStatus};
use crate::nat::reachability::{DialBack, Role, RoleChoice, Verdict};
use crate::nat::stun::{self, StunMessage, StunTransactionId};
use crate::overlay::rpc::OutgoingRpc;
use crate::overlay::{Chord, Contact, NodeId, NodeState, Request, RpcId, RpcTarget};
use crate::sip::{Header, HeaderName, Message};

/// Dial-backs asked of others plus dial-backs sent for others, per second, at most.
pub const DIAL_BACKS_PER_SECOND: u32 = 20;

/// The header that asks a helper for a dial-back.
const DIAL_BACK_HEADER: &str = "DHT-DialBack";

/// What the role decision reports to the driver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RoleEvent {
    /// The node took `role`; a peer's public address is `public`.
    Decided {
        /// The role.
        role: Role,
        /// The address the dial-back confirmed (a peer), or the mapped one (a client).
        public: Option<SocketAddr>,
    },
    /// `--role peer`, but the dial-back never arrived: the node cannot be a peer.
    PeerRefused {
        /// Where the asked peer saw us come from.
        mapped: SocketAddr,
        /// The peer asked.
        asked: SocketAddr,
    },
}

/// The role decision and the dial-back service.
#[derive(Debug)]
pub(super) struct Reach {
    pub choice: RoleChoice,
    pub role: Role,
    /// The probe under way.
    probe: Option<DialBack>,
    /// The last verdict, and when it came.
    verdict: Option<(Verdict, Instant)>,
    /// The bootstrap list the node joins through once it is a peer.
    bootstrap: Vec<SocketAddr>,
    /// When a probe that found nobody is tried again.
    retry_at: Option<Instant>,
    /// Dial-back work in the current one-second window.
    window: (Instant, u32),
    /// A peer's check of its own address: when it is next due, and the request in flight
    /// (its transaction ID and the peer asked).
    self_check_at: Option<Instant>,
    self_check: Option<(StunTransactionId, SocketAddr)>,
    /// The public address changed: leaving, then joining again from the new one.
    rejoin: Option<Vec<SocketAddr>>,
}

impl Reach {
    pub(super) fn new(choice: RoleChoice, now: Instant) -> Reach {
        Reach {
            choice,
            // A node on its own is a ring of one, so a peer, until a join decides otherwise.
            role: Role::Peer,
            probe: None,
            verdict: None,
            bootstrap: Vec::new(),
            retry_at: None,
            window: (now, 0),
            self_check_at: None,
            self_check: None,
            rejoin: None,
        }
    }

    pub(super) fn poll_timeout(&self) -> Option<Instant> {
        let probe = self.probe.as_ref().and_then(DialBack::poll_timeout).or(self.retry_at);
        [probe, self.self_check_at].into_iter().flatten().min()
    }

    /// One more dial-back step, if the window has room.
    fn admit(&mut self, now: Instant) -> bool {
        if now.saturating_duration_since(self.window.0) >= Duration::from_secs(1) {
            self.window = (now, 0);
        }
        self.window.1 += 1;
        self.window.1 <= DIAL_BACKS_PER_SECOND
    }
}

impl Peer {
    /// The role this node has now.
    pub fn role(&self) -> Role {
        self.reach.role
    }

    /// Starts the node's life on the overlay: a ring of its own without `bootstrap`; else a
    /// dial-back first when the config asks for one (the daemon's does), then a join as a
    /// peer, or no ring position as a client.
    pub(super) fn start_role(&mut self, now: Instant, bootstrap: Vec<SocketAddr>) {
        let me = self.config.node_addr();
        let bootstrap: Vec<SocketAddr> = bootstrap.into_iter().filter(|a| *a != me).collect();
        if bootstrap.is_empty() || (!self.config.dial_back && self.reach.choice != RoleChoice::Client) {
            // The first node of an overlay is a peer by definition: someone must be.
            self.decide(now, Role::Peer, None);
            self.overlay.chord.join(now, bootstrap);
            return;
        }
        self.reach.bootstrap = bootstrap;
        // Off the ring until the role is decided: no lookups or stores as a ring of one.
        self.overlay.chord.stand_by();
        if self.reach.choice == RoleChoice::Client {
            self.decide(now, Role::Client, None);
            return;
        }
        self.start_probe(now);
    }

    fn start_probe(&mut self, now: Instant) {
        self.reach.retry_at = None;
        self.reach.role = Role::Deciding;
        let rng = &mut self.rng;
        let probe = DialBack::new(self.reach.bootstrap.clone(), self.config.stun_servers.clone(), now, || rng.random());
        info!(via = ?self.reach.bootstrap.first(), "asking the overlay for a dial-back (are we reachable?)");
        self.reach.probe = Some(probe);
        self.probe_step(now);
    }

    /// Sends what the probe wants sent and acts on its verdict.
    fn probe_step(&mut self, now: Instant) {
        let Some(probe) = self.reach.probe.as_mut() else { return };
        while let Some((to, data)) = probe.poll_transmit() {
            let to = Endpoint { listener: Listener::Overlay, transport: Transport::Udp, remote: to, conn: None };
            self.outbox.push_back(Transmit { to, data: Bytes::from(data) });
        }
        let Some(verdict) = probe.verdict() else { return };
        self.reach.probe = None;
        self.reach.verdict = Some((verdict, now));
        match verdict {
            Verdict::Reachable { public, asked, dialled_from } => {
                info!(%public, %asked, %dialled_from, "the dial-back arrived: this node is reachable; joining as a peer");
                self.adopt_public_addr(now, public);
                self.decide(now, Role::Peer, Some(public));
                let bootstrap = self.reach.bootstrap.clone();
                self.overlay.chord.join(now, bootstrap);
                self.drain_overlay(now);
            }
            Verdict::Unreachable { mapped, asked } if self.reach.choice == RoleChoice::Peer => {
                warn!(%mapped, %asked, "no dial-back arrived: this node is not reachable and cannot be a peer");
                self.reach.role = Role::Client;
                self.events.push_back(PeerEvent::Role(RoleEvent::PeerRefused { mapped, asked }));
            }
            Verdict::Unreachable { mapped, asked } => {
                info!(%mapped, %asked, "no dial-back arrived: this node is behind a NAT or firewall; it is a client");
                self.decide(now, Role::Client, Some(mapped));
            }
            Verdict::NoAnswer => {
                let retry = self.overlay.chord.config().join_retry_interval;
                info!(?retry, "no bootstrap node answered the reachability probe; will retry");
                self.reach.retry_at = Some(now + retry);
            }
        }
    }

    fn decide(&mut self, now: Instant, role: Role, public: Option<SocketAddr>) {
        self.reach.role = role;
        // A peer asks a neighbour now and then which address it sees (laptops move between
        // networks): a new public address means a new Node ID.
        let watch = role == Role::Peer && self.config.dial_back;
        self.reach.self_check_at = watch.then(|| now + self.config.nat_recheck_interval);
        if role == Role::Client {
            self.become_client(now);
        }
        self.events.push_back(PeerEvent::Role(RoleEvent::Decided { role, public }));
    }

    /// Off the ring, through the bootstrap nodes: the first is the edge. Their IDs are their
    /// addresses' (port-suffixed Node IDs), so no answer is needed to name them.
    fn become_client(&mut self, now: Instant) {
        self.overlay.info.client = true;
        let hash = self.config.chord.id_hash;
        let peers =
            self.reach.bootstrap.iter().map(|a| Contact::new(NodeId::from_addr(a.ip(), a.port(), hash), *a)).collect();
        self.overlay.chord.become_client(now, peers);
        self.drain_overlay(now);
    }

    /// The dial-back confirmed `public`: the Node ID derives from it from now on (port-suffixed
    /// IDs: others verify our claimed ID against the address they observe). Only before the
    /// node joins anything.
    fn adopt_public_addr(&mut self, now: Instant, public: SocketAddr) {
        let old = self.config.node_addr();
        let chord = &self.overlay.chord;
        let on_a_ring = chord.state() == NodeState::Joined || !chord.successors().is_empty();
        if public == old || on_a_ring {
            return;
        }
        info!(%old, %public, "taking the confirmed public address as the node's address");
        self.config.advertised_addr = Some(public);
        let id = NodeId::from_addr(public.ip(), public.port(), self.config.chord.id_hash);
        let chord_config = self.overlay.chord.config().clone();
        self.overlay.chord = Chord::new(Contact::new(id, public), chord_config, now);
        self.proxy.set_other_addrs(vec![public, self.config.overlay_addr]);
        self.own_sent_by.push(sent_by(public));
        if let Some(storage) = self.storage.as_mut() {
            storage.readdress(old, public);
        }
    }

    /// The probe starts again after `after` (a client that lost every peer).
    pub(super) fn reach_retry_after(&mut self, now: Instant, after: Duration) {
        if self.reach.probe.is_none() {
            self.reach.retry_at = Some(now + after);
        }
    }

    /// The deadline work of the address check, the dial-back and a client's flow.
    pub(super) fn nat_timeout(&mut self, now: Instant) {
        self.client_timeout(now);
        self.self_check_timeout(now);
        if self.reach.retry_at.is_some_and(|at| now >= at) {
            self.start_probe(now);
        }
        if let Some(probe) = self.reach.probe.as_mut() {
            let rng = &mut self.rng;
            probe.handle_timeout(now, || rng.random());
            self.probe_step(now);
        }
        let Some(nat) = self.nat.as_mut() else { return };
        let rng = &mut self.rng;
        nat.handle_timeout(now, || rng.random());
        // The address check's requests leave from the overlay socket (the one whose mapping
        // counts), with transaction IDs from our seeded generator.
        while let Some((server, data)) = nat.poll_transmit() {
            let to = Endpoint { listener: Listener::Overlay, transport: Transport::Udp, remote: server, conn: None };
            self.outbox.push_back(Transmit { to, data: Bytes::from(data) });
        }
    }

    /// A peer asks its successor (or, cut off from the ring, a bootstrap node) which address
    /// it sees, every `nat_recheck_interval` and at once when it loses every successor (on a
    /// laptop, most often because the network changed under it).
    fn self_check_timeout(&mut self, now: Instant) {
        if self.reach.self_check_at.is_none_or(|at| now < at) {
            return;
        }
        self.reach.self_check_at = Some(now + self.config.nat_recheck_interval);
        let state = self.overlay.chord.state();
        if self.reach.role != Role::Peer || !matches!(state, NodeState::Joined | NodeState::Joining) {
            return;
        }
        let successor = self.overlay.chord.successors().first().map(|c| c.addr);
        let Some(asked) = successor.or_else(|| self.reach.bootstrap.first().copied()) else { return };
        let id: StunTransactionId = self.rng.random();
        self.reach.self_check = Some((id, asked));
        let to = Endpoint { listener: Listener::Overlay, transport: Transport::Udp, remote: asked, conn: None };
        self.outbox.push_back(Transmit { to, data: Bytes::from(stun::binding_request(id)) });
    }

    /// Our successor sees us at `mapped`: if that is not the address our Node ID derives from,
    /// the network moved under us. The node leaves (its neighbours are told, its records handed
    /// on) and joins again from the new address, with the ID it derives, rather than leave a
    /// stale entry on the ring that nobody can reach.
    fn self_check_answered(&mut self, now: Instant, mapped: SocketAddr) {
        let old = self.config.node_addr();
        if mapped == old || self.reach.rejoin.is_some() {
            return;
        }
        warn!(%old, new = %mapped, "our public address changed; leaving the ring to join again from the new one");
        let mut bootstrap: Vec<SocketAddr> = self.overlay.chord.successors().iter().map(|c| c.addr).collect();
        bootstrap.extend(self.overlay.chord.predecessor().map(|c| c.addr));
        bootstrap.extend(self.reach.bootstrap.iter().copied());
        bootstrap.dedup();
        self.reach.rejoin = Some(bootstrap);
        self.reach.self_check_at = None;
        self.leave(now);
    }

    /// Every successor is gone: check our address now rather than at the next interval.
    pub(super) fn isolated(&mut self, now: Instant) {
        if self.reach.self_check_at.is_some() {
            self.reach.self_check_at = Some(now);
        }
    }

    /// The chord core has left: if it left because the address changed, start again as a new
    /// node at our address (the dial-back confirms the public one and adopts it).
    pub(super) fn left(&mut self, now: Instant) {
        let Some(bootstrap) = self.reach.rejoin.take() else { return };
        let addr = self.config.overlay_addr;
        self.config.advertised_addr = None;
        let id = NodeId::from_addr(addr.ip(), addr.port(), self.config.chord.id_hash);
        let chord_config = self.overlay.chord.config().clone();
        self.overlay.chord = Chord::new(Contact::new(id, addr), chord_config, now);
        self.overlay.pending.clear();
        self.overlay.info.client = false;
        self.reach.role = Role::Deciding;
        info!(via = ?bootstrap.first(), "joining again from the new address");
        self.start_role(now, bootstrap);
        self.drain_overlay_only(now);
    }

    /// How the node's address looks from outside: what the STUN servers say, with what the
    /// dial-back found; `None` with neither STUN servers nor a dial-back.
    pub fn nat_status(&self) -> Option<NatStatus> {
        let mut status = self.nat.as_ref().map(Discovery::status).cloned();
        if let Some((verdict, at)) = self.reach.verdict {
            let s = status.get_or_insert(NatStatus {
                local: self.config.overlay_addr,
                mapped: None,
                mapping: "unknown",
                filtering: "unknown",
                reachable: None,
                checked_at: None,
            });
            let (reachable, mapped) = match verdict {
                Verdict::Reachable { public, .. } => (Some(true), Some(public)),
                Verdict::Unreachable { mapped, .. } => (Some(false), Some(mapped)),
                Verdict::NoAnswer => (None, None),
            };
            s.reachable = reachable;
            s.mapped = s.mapped.or(mapped);
            s.checked_at = s.checked_at.or(Some(at.saturating_duration_since(self.started).as_secs()));
        }
        status
    }

    /// A STUN message on either listener: a Binding request is answered with the address it
    /// came from (RFC 8489 §6.3.1, XOR-MAPPED-ADDRESS), whoever sent it: phones' and clients'
    /// keep-alives (RFC 5626 §4.4.2) and nodes learning their public address. The answer is
    /// less than twice the request, so it amplifies nothing (docs/security.md, M1).
    pub(super) fn stun(&mut self, now: Instant, from: Endpoint, data: &[u8]) {
        match stun::parse(data) {
            Some(StunMessage::BindingRequest { id, fingerprint, change: false }) => {
                self.counters.stun_answered += 1;
                if from.listener == Listener::Overlay {
                    // Perhaps a client's keep-alive (RFC 5626 §4.4.2): its flow lives on.
                    self.proxy.client_keepalive(now, from.remote);
                }
                let answer = stun::binding_success(id, from.remote, fingerprint);
                self.transmit(Transmit { to: from, data: Bytes::from(answer) });
            }
            // RFC 5780's CHANGE-REQUEST on the overlay port: a node asks for a dial-back.
            Some(StunMessage::BindingRequest { id, change: true, .. }) if from.listener == Listener::Overlay => {
                self.ask_for_dial_back(now, from.remote, id);
            }
            // The answer to our own address check, from the overlay socket it left.
            Some(StunMessage::BindingSuccess { id, mapped, other })
                if from.listener == Listener::Overlay && self.nat.as_ref().is_some_and(|n| n.owns(&id)) =>
            {
                if let Some(nat) = self.nat.as_mut() {
                    let rng = &mut self.rng;
                    nat.handle_answer(now, id, from.remote, (mapped, other), || rng.random());
                }
                self.nat_timeout(now);
            }
            // The edge answering a client's keep-alive (RFC 5626 §4.4.2).
            Some(StunMessage::BindingSuccess { id, mapped, .. })
                if from.listener == Listener::Overlay && self.client.flow.owns(&id) =>
            {
                self.client.flow.keepalive_answered(id, mapped);
                self.client_step(now);
            }
            // A neighbour telling a peer which address it sees.
            Some(StunMessage::BindingSuccess { id, mapped, .. })
                if from.listener == Listener::Overlay
                    && self.reach.self_check.is_some_and(|(s, a)| s == id && a == from.remote) =>
            {
                self.reach.self_check = None;
                self.self_check_answered(now, mapped);
            }
            // An answer to the reachability probe: the mapped address, or the dial-back.
            Some(StunMessage::BindingSuccess { id, mapped, .. })
                if from.listener == Listener::Overlay && self.reach.probe.as_ref().is_some_and(|p| p.owns(&id)) =>
            {
                if let Some(probe) = self.reach.probe.as_mut() {
                    let rng = &mut self.rng;
                    probe.handle_answer(now, id, from.remote, mapped, || rng.random());
                }
                self.probe_step(now);
            }
            _ => self.counters.stun_dropped += 1,
        }
    }

    /// A node at `asker` wants to know whether it is reachable: have the answer to its
    /// request `id` sent from an address it has not sent to.
    fn ask_for_dial_back(&mut self, now: Instant, asker: SocketAddr, id: StunTransactionId) {
        // Only a peer vouches for reachability; over the limit, the asker hears nothing and
        // concludes nothing worse than "unreachable" (it retries with its next join).
        if self.reach.role != Role::Peer || !self.reach.admit(now) {
            self.counters.stun_dropped += 1;
            return;
        }
        self.counters.dial_backs_asked += 1;
        let me = self.overlay.chord.me().clone();
        match dial_back_helper(&self.overlay.chord, asker) {
            Some(helper) => {
                debug!(%asker, helper = %helper.addr, "asking another peer for a dial-back");
                let msg = self.dial_back_request(&me, &helper, asker, id);
                let to = Endpoint {
                    listener: Listener::Overlay,
                    transport: Transport::Udp,
                    remote: helper.addr,
                    conn: None,
                };
                self.transmit(Transmit { to, data: msg.encode() });
            }
            None => {
                // A ring of one: a fresh socket of ours is the only other address we have.
                debug!(%asker, "dial-back from a fresh socket (no other peer to ask)");
                self.counters.dial_backs_sent += 1;
                let to = Endpoint { listener: Listener::OneShot, transport: Transport::Udp, remote: asker, conn: None };
                self.transmit(Transmit { to, data: Bytes::from(stun::binding_success(id, asker, false)) });
            }
        }
    }

    /// `OPTIONS` to `helper`, as an overlay ping, with `DHT-DialBack: <asker>;tid=<nonce>`.
    fn dial_back_request(
        &mut self,
        me: &Contact,
        helper: &Contact,
        asker: SocketAddr,
        id: StunTransactionId,
    ) -> Message {
        let rpc = OutgoingRpc { id: RpcId(u64::MAX), to: RpcTarget::Node(helper.clone()), request: Request::Ping };
        let call_id = format!("{:016x}", self.rng.random::<u64>());
        let from_tag = format!("{:08x}", self.rng.random::<u32>());
        let ids = RequestIds { call_id: &call_id, from_tag: &from_tag, cseq: 1 };
        let mut msg = overlay_wire::encode_request(&rpc, me, &self.overlay.info, ids);
        let branch = new_branch(&mut self.rng);
        let via = format!("SIP/2.0/UDP {};branch={branch};rport", sent_by(self.config.overlay_addr));
        msg.headers.push_front_of(overlay_wire::compact(HeaderName::Via, "v", via));
        let value = format!("{};tid={}", asker, crate::encoding::hex(&id));
        msg.headers.push(Header::new(HeaderName::other(DIAL_BACK_HEADER), value));
        msg
    }

    /// Whether `msg` asks this node to send a dial-back.
    pub(super) fn is_dial_back_request(from: &Endpoint, msg: &Message) -> bool {
        from.listener == Listener::Overlay
            && msg.headers.get(&HeaderName::other(DIAL_BACK_HEADER)).is_some()
            && overlay_wire::is_overlay_request(msg)
    }

    /// Another peer asks us to send a dial-back: sent if the asker is a node of this overlay
    /// whose ID is the one the address it came from derives, within the rate limit. Never
    /// answered: the asker has nothing to wait for.
    pub(super) fn serve_dial_back(&mut self, now: Instant, from: &Endpoint, msg: &Message) {
        let asker = overlay_wire::peer_id(msg, &self.overlay.info).ok().filter(|c| {
            c.addr == from.remote
                && overlay_wire::link_verifies(c, self.overlay.info.hash)
                && from.transport == Transport::Udp
        });
        let target =
            msg.headers.get(&HeaderName::other(DIAL_BACK_HEADER)).and_then(|h| parse_dial_back(h.value_str()?));
        let (Some(_), Some((target, id))) = (asker, target) else {
            self.counters.overlay_refused += 1;
            debug!(from = %from.remote, "dial-back request refused (unverified sender or bad header)");
            return;
        };
        if self.reach.role != Role::Peer || !self.reach.admit(now) {
            self.counters.stun_dropped += 1;
            return;
        }
        self.counters.dial_backs_sent += 1;
        let to = Endpoint { listener: Listener::Overlay, transport: Transport::Udp, remote: target, conn: None };
        self.transmit(Transmit { to, data: Bytes::from(stun::binding_success(id, target, false)) });
    }
}

/// Whom to ask for a dial-back to `asker`: a peer we know on another IP address than ours
/// (which tells an address-restricted NAT from an open host), else one on our IP address
/// (another port: still catches a port-restricted NAT), never the asker.
fn dial_back_helper(chord: &Chord, asker: SocketAddr) -> Option<Contact> {
    let me = chord.me();
    let known = chord
        .successors()
        .iter()
        .chain(chord.predecessor())
        .chain(chord.fingers().filter_map(|f| f.node))
        .filter(|c| c.addr != me.addr && c.addr != asker);
    let mut same_ip = None;
    for c in known {
        if c.addr.ip() != me.addr.ip() {
            return Some(c.clone());
        }
        same_ip.get_or_insert_with(|| c.clone());
    }
    same_ip
}

/// `<address>;tid=<24 hex digits>`.
fn parse_dial_back(value: &str) -> Option<(SocketAddr, StunTransactionId)> {
    let (addr, tid) = value.split_once(";tid=")?;
    let addr: SocketAddr = addr.trim().parse().ok()?;
    let bytes = crate::encoding::unhex(tid.trim())?;
    Some((addr, bytes.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dial_back_header_round_trip_and_garbage() {
        let a: SocketAddr = "203.0.113.11:40000".parse().unwrap();
        let value = format!("{a};tid={}", crate::encoding::hex(&[7u8; 12]));
        assert_eq!(parse_dial_back(&value), Some((a, [7; 12])));
        for bad in
            ["", "203.0.113.11:40000", "x;tid=070707070707070707070707", "203.0.113.11:1;tid=07", "1.2.3.4:5;tid=zz"]
        {
            assert_eq!(parse_dial_back(bad), None, "{bad}");
        }
    }
}
