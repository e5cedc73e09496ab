//! A client's use of the ring (RFC 6940 §3.2.1, libp2p's client mode): a node that others
//! cannot reach takes no ring position, but it looks up and stores like anyone, since a
//! request and its answer cross any NAT. It knows a few peers: its edge peer (first) and the
//! edge's successors, learned by asking the edge for its neighbours every stabilize interval
//! (`GetNeighbours` without notify, so nobody adds the client to anything). A lookup starts
//! from all of them. An edge that does not answer is dropped and the next peer becomes the
//! edge ([`Event::EdgeChanged`]); with none left, the node must find the ring again.
//!
//! The other side, a peer answering a client: only `FindSuccessor`, `GetNeighbours` without
//! notify, and `Ping`; a client is never heard from as a node (no finger, no proof, no
//! predecessor), since others could not reach it.

use std::time::Instant;

use super::{Chord, Event, NodeState, Purpose};
use crate::overlay::rpc::{Contact, RefuseReason, Request, Response, RpcFailure, RpcTarget};

/// How many peers a client keeps: its edge and the edge's successors.
const CLIENT_PEERS: usize = 8;

impl Chord {
    /// Becomes a client of the ring through `peers` (the first is the edge), from a node that
    /// has not joined. Lookups work from now on.
    pub fn become_client(&mut self, now: Instant, peers: Vec<Contact>) {
        if matches!(self.state, NodeState::Leaving | NodeState::Left | NodeState::Joined) {
            return;
        }
        self.state = NodeState::Client;
        self.join = None;
        self.join_retry_at = None;
        self.client_peers = peers;
        self.client_peers.truncate(CLIENT_PEERS);
        self.client_refresh_at = Some(now);
        self.events.push_back(Event::EdgeChanged { edge: self.client_peers.first().cloned() });
        self.after_input(now);
    }

    /// The peers a client knows, its edge first; empty for a peer.
    pub fn client_peers(&self) -> &[Contact] {
        &self.client_peers
    }

    /// A client's edge, if it has one.
    pub fn edge(&self) -> Option<&Contact> {
        self.client_peers.first().filter(|_| self.state == NodeState::Client)
    }

    /// The edge refused the client (full, RFC 5626 503): the next peer becomes the edge.
    pub fn drop_edge(&mut self, now: Instant) {
        if self.state != NodeState::Client || self.client_peers.is_empty() {
            return;
        }
        let gone = self.client_peers.remove(0);
        // Kept at the end: the edge may take clients again later.
        self.client_peers.push(gone);
        self.events.push_back(Event::EdgeChanged { edge: self.client_peers.first().cloned() });
        self.client_refresh_at = Some(now);
    }

    /// Asks the edge for its neighbours when it is time.
    pub(super) fn client_refresh(&mut self, now: Instant) {
        if self.state != NodeState::Client || self.client_refresh_at.is_none_or(|at| at > now) {
            return;
        }
        self.client_refresh_at = None;
        let Some(edge) = self.client_peers.first().cloned() else { return };
        let request = Request::GetNeighbours { digest: None, notify: false };
        self.send(now, RpcTarget::Node(edge.clone()), request, Purpose::ClientRefresh { asked: edge });
    }

    pub(super) fn on_client_refresh(&mut self, now: Instant, asked: Contact, result: Result<Response, RpcFailure>) {
        if self.state != NodeState::Client {
            return;
        }
        self.client_refresh_at = Some(now + self.config.stabilize_interval);
        match result {
            Ok(Response::Neighbours { successors, .. }) => {
                let mut peers = vec![asked.clone()];
                for s in successors {
                    if !peers.iter().any(|p| p.id == s.id) && peers.len() < CLIENT_PEERS {
                        peers.push(s);
                    }
                }
                // Peers known before and not in the edge's list stay as spares at the end.
                for p in std::mem::take(&mut self.client_peers) {
                    if !peers.iter().any(|q| q.id == p.id) && peers.len() < CLIENT_PEERS {
                        peers.push(p);
                    }
                }
                let edge_was = self.client_peers.first().map(|c| c.id);
                self.client_peers = peers;
                if edge_was != Some(asked.id) {
                    self.events.push_back(Event::EdgeChanged { edge: Some(asked) });
                }
            }
            Ok(Response::NeighboursUnchanged | Response::Ok) => {}
            Ok(_) | Err(_) => {
                // The edge is gone (or answers nonsense): the next peer takes over at once.
                self.client_peers.retain(|p| p.id != asked.id);
                self.mark_failed(now, asked.id);
                let next = self.client_peers.first().cloned();
                self.events.push_back(Event::EdgeChanged { edge: next.clone() });
                if next.is_some() {
                    self.client_refresh_at = Some(now);
                    self.client_refresh(now);
                } else {
                    // Cut off: the driver finds the ring again through its bootstrap list.
                    self.state = NodeState::Joining;
                    self.client_refresh_at = None;
                }
            }
        }
    }

    /// A request from a client (its `DHT-PeerID` says so): answered without learning
    /// anything about the sender.
    pub fn handle_client_request(&mut self, now: Instant, from: &Contact, request: Request) -> Response {
        self.counters.requests_handled += 1;
        let allowed = matches!(
            request,
            Request::FindSuccessor { .. } | Request::GetNeighbours { notify: false, .. } | Request::Ping
        );
        if !allowed {
            self.counters.requests_refused += 1;
            return Response::Refused { reason: RefuseReason::IdMismatch };
        }
        let response = self.answer_request_anonymously(now, from, request);
        self.after_input(now);
        response
    }
}
