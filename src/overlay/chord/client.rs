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

use std::time::{Duration, Instant};

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
        self.note_edge(now);
        self.after_input(now);
    }

    /// The peers a client knows, its edge first among those that take it; empty for a peer.
    pub fn client_peers(&self) -> &[Contact] {
        &self.client_peers
    }

    /// A client's edge: the first of its peers that has not refused it lately.
    pub fn edge(&self) -> Option<&Contact> {
        self.client_edge.as_ref().filter(|_| self.state == NodeState::Client)
    }

    /// The edge refused the client (full: RFC 5626's 503 with Retry-After) or its flow broke:
    /// it is passed over for `for_how_long`, and the next peer becomes the edge.
    pub fn drop_edge(&mut self, now: Instant, for_how_long: Duration) {
        let Some(edge) = self.client_edge.clone() else { return };
        if self.state != NodeState::Client {
            return;
        }
        self.client_refused.insert(edge.id, now + for_how_long);
        self.note_edge(now);
    }

    /// The first peer that has not refused us lately; reported when it changes.
    fn note_edge(&mut self, now: Instant) {
        self.client_refused.retain(|_, until| *until > now);
        let refused = &self.client_refused;
        let edge = self.client_peers.iter().find(|p| !refused.contains_key(&p.id)).cloned();
        if edge.as_ref().map(|c| c.id) != self.client_edge.as_ref().map(|c| c.id) {
            self.client_edge = edge.clone();
            self.events.push_back(Event::EdgeChanged { edge });
        }
    }

    /// Asks the edge (or, with none taking us, the first peer) for its neighbours when it is
    /// time; passed-over peers come back when their time is up.
    pub(super) fn client_refresh(&mut self, now: Instant) {
        if self.state != NodeState::Client || self.client_refresh_at.is_none_or(|at| at > now) {
            return;
        }
        self.client_refresh_at = None;
        self.note_edge(now);
        let Some(asked) = self.client_edge.clone().or_else(|| self.client_peers.first().cloned()) else { return };
        let request = Request::GetNeighbours { digest: None, notify: false };
        self.send(now, RpcTarget::Node(asked.clone()), request, Purpose::ClientRefresh { asked });
    }

    pub(super) fn on_client_refresh(&mut self, now: Instant, asked: Contact, result: Result<Response, RpcFailure>) {
        if self.state != NodeState::Client {
            return;
        }
        // Twice per stabilize interval: how fast a client notices that its edge died (it has
        // no neighbour to notice for it), for one small request.
        self.client_refresh_at = Some(now + self.config.stabilize_interval / 2);
        match result {
            Ok(Response::Neighbours { successors, .. }) => {
                // The peers we know keep their order (the edge stays the edge); the asked
                // peer's successors fill the list up.
                for s in successors {
                    if !self.client_peers.iter().any(|p| p.id == s.id) && self.client_peers.len() < CLIENT_PEERS {
                        self.client_peers.push(s);
                    }
                }
                self.note_edge(now);
            }
            Ok(Response::NeighboursUnchanged | Response::Ok) => {}
            Ok(_) | Err(_) => {
                // The peer is gone (or answers nonsense): the next one takes over at once.
                self.client_peers.retain(|p| p.id != asked.id);
                self.mark_failed(now, asked.id);
                self.note_edge(now);
                if self.client_peers.is_empty() {
                    // Cut off: the driver finds the ring again through its bootstrap list.
                    self.state = NodeState::Joining;
                    self.client_refresh_at = None;
                } else {
                    self.client_refresh_at = Some(now);
                    self.client_refresh(now);
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
