//! The peer's overlay face: drives the [`Chord`] core, sends its RPCs as SIP client
//! transactions from the overlay listener, and answers overlay requests that arrive there.
//! Which SIP shape each RPC takes is [`crate::peer::overlay::wire`]'s business alone.

pub mod wire;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Instant;

use rand::Rng;
use tracing::{debug, info};

use super::overlay::wire::{self as overlay_wire, OverlayInfo, RequestIds};
use super::{new_branch, Answer, Endpoint, Listener, Peer, Transport};
use crate::overlay::{Chord, Event, LookupId, NodeId, Request, RpcFailure, RpcId, RpcTarget};
use crate::sip::transaction::ClientTxId;
use crate::sip::validate::Rejection;
use crate::sip::{Header, HeaderName, Message};

/// An overlay RPC in flight: which Chord RPC a client transaction carries.
#[derive(Debug)]
pub(super) struct PendingRpc {
    pub rpc: RpcId,
    pub request: Request,
    /// Whom it was sent to: the answer must come from that node.
    pub to: RpcTarget,
}

/// The Chord core as the peer drives it: its RPCs in flight as SIP client transactions, and
/// the overlay's name and ID hash every message carries.
pub(super) struct OverlayDriver {
    pub chord: Chord,
    pub info: OverlayInfo,
    pub pending: BTreeMap<ClientTxId, PendingRpc>,
    pub next_cseq: u32,
    /// `(Call-ID, kind)` of each overlay request sent, kept only once
    /// [`Peer::record_rpc_kinds`] asked for it (the simulator's traffic breakdown).
    pub rpc_kinds: Option<Vec<(String, &'static str)>>,
}

/// What happened in the overlay that the driver (daemon, simulator) may want to know.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerEvent {
    /// Something the Chord core reported.
    Overlay(Event),
    /// A storage operation finished ([`super::StorageEvent`]).
    Storage(super::StorageEvent),
    /// The node's role was decided ([`super::RoleEvent`]).
    Role(super::RoleEvent),
    /// An offline message reached one of our user's phones: the driver keeps the entry in the
    /// delivery log (`crate::mailbox::log`).
    Delivered(crate::mailbox::Delivered),
    /// A phone's request for another SIP domain waits for DNS: the driver resolves the URI
    /// (`crate::outbound::Resolution`) and hands the targets back as
    /// [`super::Input::Resolved`].
    Resolve(crate::proxy::outbound::ResolveRequest),
}

impl Peer {
    /// The node's position on the ring.
    pub fn node_id(&self) -> NodeId {
        self.overlay.chord.me().id
    }

    /// The Chord core, for status reports.
    pub fn chord(&self) -> &Chord {
        &self.overlay.chord
    }

    /// Joins the overlay through any of `bootstrap` (dSIP §6.3): at once as a peer, or after
    /// the dial-back that decides the role when [`super::PeerConfig::dial_back`] asks for one
    /// (`crate::nat::reachability`); a client takes no ring position.
    pub fn join(&mut self, now: Instant, bootstrap: Vec<SocketAddr>) {
        self.start_role(now, bootstrap);
        self.drain_overlay(now);
    }

    /// Leaves gracefully: neighbours are told and handed each other (dSIP §6.5).
    pub fn leave(&mut self, now: Instant) {
        self.presence_leave(now);
        self.storage_leave(now);
        self.overlay.chord.leave(now);
        self.drain_overlay(now);
    }

    /// Starts finding the node responsible for `key`; the answer comes as a
    /// `PeerEvent::Overlay(Event::LookupDone { .. })`.
    pub fn lookup(&mut self, now: Instant, key: NodeId) -> LookupId {
        let id = self.overlay.chord.lookup(now, key);
        self.drain_overlay(now);
        id
    }

    /// From now on, note the Call-ID and kind ([`Chord::rpc_kind`]) of every overlay request
    /// sent, for [`Peer::take_rpc_kinds`]. Off by default: a daemon has no use for it.
    pub fn record_rpc_kinds(&mut self) {
        self.overlay.rpc_kinds.get_or_insert_with(Vec::new);
    }

    /// The `(Call-ID, kind)` pairs noted since the last call.
    pub fn take_rpc_kinds(&mut self) -> Vec<(String, &'static str)> {
        self.overlay.rpc_kinds.as_mut().map(std::mem::take).unwrap_or_default()
    }

    pub(super) fn poll_event(&mut self) -> Option<PeerEvent> {
        if let Some(r) = self.proxy.poll_resolution() {
            return Some(PeerEvent::Resolve(r));
        }
        self.events.pop_front()
    }

    /// Answers an overlay request (`Require: dht`) that reached the overlay listener.
    pub(super) fn handle_overlay_request(&mut self, now: Instant, from: &Endpoint, msg: &Message) -> Answer {
        self.counters.overlay_requests += 1;
        let me = self.overlay.chord.me().clone();
        let decoded =
            overlay_wire::decode_request(msg, from.remote, from.transport.is_reliable(), &me.id, &self.overlay.info);
        let (sender, request) = match decoded {
            Ok((sender, request, forged)) => {
                self.overlay.chord.count_forged_links(forged);
                (sender, request)
            }
            Err(e) => {
                self.counters.overlay_refused += 1;
                debug!(from = %from.remote, error = %e, "overlay request refused");
                let (status, reason) = e.status();
                let mut rejection = Rejection::new(status, reason);
                if status == 420 {
                    rejection = rejection.with_header(Header::new(HeaderName::Unsupported, overlay_wire::OPTION_TAG));
                }
                return Answer::Reject(rejection);
            }
        };
        let mut response = if overlay_wire::is_client(msg) {
            self.overlay.chord.handle_client_request(now, &sender, request)
        } else {
            self.overlay.chord.handle_request(now, sender.clone(), request)
        };
        if matches!(response, crate::overlay::Response::Refused { .. }) {
            self.counters.overlay_refused += 1;
        }
        let tag = self.tag_for(msg);
        let mut answer = overlay_wire::encode_response(msg, &response, &me, &self.overlay.info, &tag);
        // docs/security.md, M1: over UDP, an address that has not answered us gets at most 3× what it
        // sent: the longest lists are cut (fingers first), which a real node makes up for by
        // asking again once we know it.
        if !from.transport.is_reliable() && !self.overlay.chord.has_answered(now, &sender) {
            while super::amplifies(msg, &answer) && trim(&mut response) {
                answer = overlay_wire::encode_response(msg, &response, &me, &self.overlay.info, &tag);
                self.counters.answers_trimmed += 1;
            }
        }
        self.drain_overlay(now);
        Answer::Respond(answer)
    }

    /// A final response to one of our overlay requests.
    pub(super) fn handle_overlay_response(&mut self, now: Instant, id: ClientTxId, response: &Message) {
        if response.status().is_none_or(|c| c < 200) {
            return;
        }
        let Some(pending) = self.overlay.pending.remove(&id) else { return };
        let result = if overlay_wire::is_busy(response) {
            Err(RpcFailure::Busy)
        } else {
            let (answer, forged) =
                overlay_wire::decode_response(&pending.request, &pending.to, response, self.overlay.info.hash);
            self.overlay.chord.count_forged_links(forged);
            answer.ok_or(RpcFailure::Malformed)
        };
        if result.is_err() {
            debug!(%id, status = ?response.status(), "malformed overlay answer");
        }
        self.overlay.chord.handle_response(now, pending.rpc, result);
        self.drain_overlay(now);
    }

    /// The transaction behind an overlay RPC timed out (Timer F) or ended unanswered.
    pub(super) fn overlay_transaction_failed(&mut self, now: Instant, id: ClientTxId) {
        if let Some(pending) = self.overlay.pending.remove(&id) {
            self.overlay.chord.handle_response(now, pending.rpc, Err(RpcFailure::Timeout));
            self.drain_overlay(now);
        }
    }

    /// Stops the SIP transactions of RPCs the Chord core no longer waits for (its deadline
    /// passed: the node counts as failed). Over UDP a non-INVITE client transaction would go on
    /// retransmitting until Timer F, 32 s (RFC 3261 §17.1.2.2), about ten copies to a node that
    /// is most likely dead; an answer that still comes is a stray response and dropped
    /// (§18.1.2), as Chord would ignore it anyway.
    fn abandon_overlay_transactions(&mut self) {
        let chord = &self.overlay.chord;
        let done: Vec<ClientTxId> =
            self.overlay.pending.iter().filter(|(_, p)| !chord.is_pending(p.rpc)).map(|(tx, _)| *tx).collect();
        for tx in done {
            self.overlay.pending.remove(&tx);
            let _ = self.transactions.terminate_client(tx);
        }
    }

    /// Sends what the Chord core asked for and passes on what it reported; storage then
    /// handles what it follows.
    pub(super) fn drain_overlay(&mut self, now: Instant) {
        self.drain_overlay_only(now);
        if !self.storage_work.is_empty() {
            self.run_storage(now);
        }
    }

    /// [`Peer::drain_overlay`] without running storage: the events it follows are queued.
    pub(super) fn drain_overlay_only(&mut self, now: Instant) {
        self.abandon_overlay_transactions();
        while let Some(rpc) = self.overlay.chord.poll_rpc() {
            let me = self.overlay.chord.me().clone();
            // 64 random bits make a Call-ID unique enough (RFC 3261 §8.1.1.4 asks for global
            // uniqueness, not a host part) and 32 a tag (§19.3); maintenance traffic is most of
            // what a node sends, so every byte saved counts many times over.
            let call_id = format!("{:016x}", self.rng.random::<u64>());
            let from_tag = format!("{:08x}", self.rng.random::<u32>());
            self.overlay.next_cseq = self.overlay.next_cseq.wrapping_add(1) % (1 << 31);
            if let Some(kinds) = self.overlay.rpc_kinds.as_mut() {
                kinds.push((call_id.clone(), self.overlay.chord.rpc_kind(rpc.id).unwrap_or("other")));
            }
            let ids = RequestIds { call_id: &call_id, from_tag: &from_tag, cseq: self.overlay.next_cseq };
            let mut msg = overlay_wire::encode_request(&rpc, &me, &self.overlay.info, ids);
            let branch = new_branch(&mut self.rng);
            let via = format!("SIP/2.0/UDP {};branch={branch};rport", super::sent_by(self.config.overlay_addr));
            msg.headers.push_front_of(overlay_wire::compact(HeaderName::Via, "v", via));
            let to =
                Endpoint { listener: Listener::Overlay, transport: Transport::Udp, remote: rpc.to.addr(), conn: None };
            debug!(rpc = rpc.request.name(), to = %overlay_wire::target_label(&rpc.to), "overlay request");
            let tx = self.transactions.send_request(now, msg, to, false);
            self.counters.client_transactions += 1;
            self.overlay.pending.insert(tx, PendingRpc { rpc: rpc.id, request: rpc.request, to: rpc.to });
        }
        let mut edge_changes = Vec::new();
        let mut left = false;
        let mut isolated = false;
        while let Some(event) = self.overlay.chord.poll_event() {
            match &event {
                Event::Joined { successor } => info!(successor = ?successor, "joined the overlay"),
                Event::SuccessorChanged { successor } => debug!(successor = ?successor, "successor changed"),
                Event::Isolated => {
                    info!("lost every successor; rejoining through the bootstrap list");
                    isolated = true;
                }
                Event::BootstrapFailed => info!("no bootstrap node answered; will retry"),
                Event::EdgeChanged { edge } => edge_changes.push(edge.as_ref().map(|c| c.addr)),
                Event::Left => left = true,
                _ => {}
            }
            if self.route_to_storage(&event) && matches!(event, Event::LookupDone { .. }) {
                continue;
            }
            self.events.push_back(PeerEvent::Overlay(event));
        }
        if let Some(edge) = edge_changes.pop() {
            self.edge_changed(now, edge);
        }
        if left {
            self.left(now);
        }
        if isolated {
            self.isolated(now);
        }
        self.drain_transactions_only();
    }
}

/// Drops the last entry of an answer's longest list (fingers, then successors, then redirect
/// candidates); false when there is nothing left to drop.
fn trim(response: &mut crate::overlay::Response) -> bool {
    use crate::overlay::Response;
    match response {
        Response::Joined { fingers, .. } if !fingers.is_empty() => fingers.pop().is_some(),
        Response::Joined { successors, .. } | Response::Neighbours { successors, .. } if successors.len() > 1 => {
            successors.pop().is_some()
        }
        Response::Successor { backups, .. } => backups.pop().is_some(),
        Response::Closer { nodes } if nodes.len() > 1 => nodes.pop().is_some(),
        _ => false,
    }
}
