//! The server side: how a node answers each [`Request`] (Chord ToN Fig. 5 and 7; dSIP
//! dhtchord §6.3 admission, §6.4 query processing, §6.5 leaving).
//!
//! Answers are synchronous and never fail: anything unusable is answered with
//! [`Response::Refused`] and counted. The only requests we may send as a consequence are a
//! `Ping` to our predecessor when a `notify` contradicts it (Zave's rectify) and an early
//! `stabilize` when a neighbour's departure changed our successor.

use std::time::Instant;

use tracing::debug;

use super::{Chord, NodeState, Purpose};
use crate::overlay::id::NodeId;
use crate::overlay::rpc::{neighbours_digest, Contact, RefuseReason, Request, Response, RpcTarget};

/// One step of `find_successor` as seen from this node.
pub(super) enum Step {
    /// This node knows who is responsible.
    Done(Contact),
    /// Ask one of these, best first (`closest_preceding_node` and runners-up).
    Closer(Vec<Contact>),
}

impl Chord {
    /// Answers a request from `from`. The caller has already checked, with
    /// [`NodeId::verify_claim`], that `from.id` belongs to the address the request came from.
    pub fn handle_request(&mut self, now: Instant, from: Contact, request: Request) -> Response {
        let response = self.answer_request(now, from, request);
        self.after_input(now);
        response
    }

    fn answer_request(&mut self, now: Instant, from: Contact, request: Request) -> Response {
        self.counters.requests_handled += 1;
        if !from.is_plausible() {
            self.counters.malformed_contacts += 1;
            return self.refuse(&from, &request, RefuseReason::Malformed);
        }
        if self.config.verify_claims
            && !NodeId::verify_claim(from.id, from.addr.ip(), from.addr.port(), self.config.id_hash)
        {
            if matches!(request, Request::Join { .. }) {
                self.counters.joins_refused += 1;
            }
            return self.refuse(&from, &request, RefuseReason::IdMismatch);
        }
        if from.id == self.me.id {
            if matches!(request, Request::Join { .. }) {
                self.counters.joins_refused += 1;
            }
            return self.refuse(&from, &request, RefuseReason::IdInUse);
        }
        if matches!(self.state, NodeState::Leaving | NodeState::Left) {
            return self.refuse(&from, &request, RefuseReason::Leaving);
        }
        self.heard_from(now, &from);
        match request {
            Request::FindSuccessor { .. } | Request::Ping => self.answer_request_anonymously(now, &from, request),
            Request::GetNeighbours { digest, notify } => {
                // Stabilize's notify, done before answering so the answer already names the
                // asker (or, if our predecessor lies between us, the check of it has started).
                self.note_answered(&from);
                if notify {
                    self.notify(now, from);
                }
                self.neighbours_answer(digest)
            }
            Request::Notify => {
                self.notify(now, from);
                Response::Ok
            }
            Request::Changed { digest } => {
                self.on_changed(now, &from, digest);
                Response::Ok
            }
            Request::Join { ref joiner } => {
                if *joiner != from {
                    self.counters.joins_refused += 1;
                    return self.refuse(&from, &request, RefuseReason::IdMismatch);
                }
                if !self.participating() {
                    return self.refuse(&from, &request, RefuseReason::NotJoined);
                }
                self.admit(now, from)
            }
            Request::Leave { predecessor, successors } => {
                self.on_leave(now, from, predecessor, &successors);
                Response::Ok
            }
        }
    }

    /// The answers that teach us nothing about the asker: `find_successor`, our neighbours
    /// (without notify), a ping. What a client may ask (`client`).
    pub(super) fn answer_request_anonymously(&mut self, now: Instant, from: &Contact, request: Request) -> Response {
        match request {
            Request::FindSuccessor { key } => {
                if !self.participating() {
                    return self.refuse(from, &request, RefuseReason::NotJoined);
                }
                match self.find_successor_step(now, key) {
                    Step::Done(node) => {
                        // Naming our successor, we add the rest of our list: should `node` have
                        // failed unnoticed, the querier goes on with the next live one.
                        let backups = if node.id == self.me.id {
                            Vec::new()
                        } else {
                            self.successors.as_slice().iter().skip(1).cloned().collect()
                        };
                        Response::Successor { node, backups }
                    }
                    Step::Closer(nodes) => Response::Closer { nodes },
                }
            }
            Request::GetNeighbours { digest, .. } => self.neighbours_answer(digest),
            Request::Ping => Response::Ok,
            _ => self.refuse(from, &request, RefuseReason::IdMismatch),
        }
    }

    /// Our predecessor and successor list, or that they are unchanged since `digest`.
    fn neighbours_answer(&self, digest: Option<u64>) -> Response {
        let predecessor = self.predecessor.clone();
        let successors = self.successors.as_slice();
        if digest.is_some_and(|d| d == neighbours_digest(predecessor.as_ref(), successors)) {
            return Response::NeighboursUnchanged;
        }
        Response::Neighbours { predecessor, successors: successors.to_vec() }
    }

    fn refuse(&mut self, from: &Contact, request: &Request, reason: RefuseReason) -> Response {
        self.counters.requests_refused += 1;
        debug!(node = ?self.me.id, ?from, request = request.name(), %reason, "refused");
        Response::Refused { reason }
    }

    /// A request from `from` proves it alive right now.
    fn heard_from(&mut self, now: Instant, from: &Contact) {
        self.recently_failed.remove(&from.id);
        if let Some(p) = &mut self.predecessor {
            if p.id == from.id {
                p.addr = from.addr;
                self.predecessor_heard_at = Some(now);
            }
        }
        // Only a node that has answered us may become a finger (docs/security.md, H5); one that would
        // be a better finger is asked first.
        if self.participating() && self.fingers.would_improve(from) {
            if self.is_proven(now, from) {
                self.fingers.offer(from);
            } else {
                self.prove(now, from.clone(), super::proof::Then::Finger);
            }
        }
    }

    /// `find_successor(key)` at this node: responsible itself (`key ∈ (predecessor, me]`),
    /// its successor responsible (`key ∈ (me, successor]`), or redirect to the closest
    /// preceding nodes it knows among fingers and successors.
    pub(super) fn find_successor_step(&self, now: Instant, key: NodeId) -> Step {
        let me = self.me.id;
        if let Some(p) = &self.predecessor {
            if key.in_left_open(p.id, me) {
                return Step::Done(self.me.clone());
            }
        }
        // Only the first successor answers for its arc. Answering from deeper entries of the
        // list would save about one hop, but those entries lag: a node that joined between
        // s[k-1] and s[k] reaches our list only k stabilize rounds later, and meanwhile we would
        // name the wrong node (measured: 95.7% against 97.7% consistent lookups under churn).
        // Deeper entries still serve as redirect candidates, where s[k-1] answers afresh.
        let successor = self.successor();
        if key.in_left_open(me, successor.id) {
            // With no successor this is (me, me]: a ring of one owns everything.
            return Step::Done(successor.clone());
        }
        let nodes = self.closest_preceding_nodes(now, key, self.config.redirect_width.max(1));
        if nodes.is_empty() {
            // Nobody we know lies in (me, key); only possible with an empty table.
            return Step::Done(successor.clone());
        }
        Step::Closer(nodes)
    }

    /// `closest_preceding_node(key)` over fingers and the successor list (Chord ToN §IV-E.3
    /// routes with both), extended to the `k` best: nodes in `(me, key)`, closest to the key
    /// first, skipping nodes that recently failed.
    pub(super) fn closest_preceding_nodes(&self, now: Instant, key: NodeId, k: usize) -> Vec<Contact> {
        let me = self.me.id;
        let mut nodes: Vec<&Contact> = self
            .fingers
            .distinct()
            .into_iter()
            .chain(self.successors.as_slice())
            .filter(|c| c.id.in_open(me, key) && !self.is_failed(now, c.id))
            .collect();
        nodes.sort_by_key(|c| c.id.distance(key));
        nodes.dedup_by_key(|c| c.id);
        nodes.into_iter().take(k).cloned().collect()
    }

    /// Chord's `notify(n')`: `candidate` thinks it might be our predecessor. It becomes it
    /// only once it has answered us at its address (`proof`).
    pub(super) fn notify(&mut self, now: Instant, candidate: Contact) {
        let adopt = match &self.predecessor {
            None => true,
            Some(p) => p.id != candidate.id && candidate.id.in_open(p.id, self.me.id),
        };
        if adopt && !self.is_proven(now, &candidate) {
            self.prove(now, candidate, super::proof::Then::Notify);
            return;
        }
        match &self.predecessor {
            None => self.set_predecessor(now, Some(candidate)),
            Some(p) if p.id == candidate.id => {}
            Some(p) if candidate.id.in_open(p.id, self.me.id) => {
                let former = p.clone();
                self.set_predecessor(now, Some(candidate));
                self.tell_former_predecessor(now, former);
            }
            Some(p) => {
                // The candidate believes it precedes us, so it does not know `p`. Either its
                // view is stale, or `p` has died: check `p` now rather than at the next
                // check_predecessor, and let the candidate take over if `p` is gone (Zave's
                // `rectify`).
                if !self.checking_predecessor {
                    let predecessor = p.clone();
                    self.checking_predecessor = true;
                    self.send(
                        now,
                        RpcTarget::Node(predecessor.clone()),
                        Request::Ping,
                        Purpose::CheckPredecessor { predecessor, candidate: Some(candidate) },
                    );
                }
            }
        }
        if self.state == NodeState::Alone && self.successors.is_empty() {
            // A ring of one that was just notified has its first neighbour: stabilize now so
            // it becomes our successor too, instead of waiting for the timer.
            self.stabilize_at = now;
        }
    }

    /// Admits `joiner` if it falls between us and a neighbour, else redirects it closer.
    fn admit(&mut self, now: Instant, joiner: Contact) -> Response {
        let me = self.me.id;
        let r = self.successors.capacity();
        let fingers: Vec<Contact> = self.fingers.distinct().into_iter().cloned().collect();
        if joiner.id.in_left_open(me, self.successor().id) {
            // We are its predecessor; our successor list is its successor list. A list
            // shorter than `r` went round the whole ring, so it continues with us. A node
            // restarting in its old place, or rejoining after it lost every successor, may
            // still be in our list: it is left out, or the joiner would read its own ID first
            // and cut the list there, to nothing.
            let wrapped = self.successors.len() < r;
            let mut successors: Vec<Contact> =
                self.successors.as_slice().iter().filter(|c| c.id != joiner.id).cloned().collect();
            if wrapped {
                successors.push(self.me.clone());
            }
            // And it is our new successor: adopting it now rather than at our next stabilize
            // means lookups find it from the moment it is admitted (dSIP §6.3: the admitting
            // peer updates its links). A join over UDP may come from anyone (docs/security.md, H5), so
            // unless it has answered us before, a ping follows, and no answer undoes this.
            let proven = self.is_proven(now, &joiner);
            self.adopt_joiner(joiner.clone());
            if !proven {
                self.prove(now, joiner, super::proof::Then::Successor);
            }
            return Response::Joined { predecessor: Some(self.me.clone()), successors, fingers };
        }
        if let Some(p) = self.predecessor.clone() {
            if joiner.id.in_open(p.id, me) {
                // We are its successor: its list is us followed by ours.
                let successors = std::iter::once(self.me.clone())
                    .chain(self.successors.as_slice().iter().cloned())
                    .take(r)
                    .collect();
                self.note_answered(&joiner);
                self.notify(now, joiner);
                return Response::Joined { predecessor: Some(p), successors, fingers };
            }
        }
        // Not ours: send it to the node that will be its predecessor, or closer to it. (Not
        // `find_successor_step`: knowing the joiner's successor from our list is not enough,
        // the admitting node must be one of its neighbours.)
        let mut nodes = self.closest_preceding_nodes(now, joiner.id, self.config.redirect_width.max(1));
        // Our fingers may all have died since we last used them, and a joiner whose redirects
        // all fail would fall back on its bootstrap list alone, which churn may have emptied
        // too (a fresh node knows nobody else). Our successor, which stabilize keeps live,
        // lies between us and the joiner here: the last resort is to walk on from it.
        let successor = self.successor().clone();
        if successor.id != me && !nodes.is_empty() && !nodes.iter().any(|n| n.id == successor.id) {
            nodes.push(successor);
        }
        if nodes.is_empty() {
            // Nobody we know precedes it, so nobody lies between us: we are its predecessor.
            return Response::Joined {
                predecessor: Some(self.me.clone()),
                successors: vec![self.successor().clone()],
                fingers,
            };
        }
        Response::Closer { nodes }
    }

    /// A joiner we admitted as our successor, now proven: adopted if it still lies between us
    /// and our first successor.
    pub(super) fn adopt_joiner(&mut self, joiner: Contact) {
        let fits = self.successors.is_empty() || joiner.id.in_left_open(self.me.id, self.successor().id);
        if fits && joiner.id != self.me.id {
            let old_first = self.first_successor_id();
            self.successors.insert(&joiner);
            self.successors_touched(old_first);
        }
    }

    /// `from` says it leaves (dSIP §6.5). Anyone can say that for it over UDP, so it is asked
    /// first (`proof`): the hand-off is used once it answers that it is leaving, or not at all.
    fn on_leave(&mut self, now: Instant, from: Contact, predecessor: Option<Contact>, successors: &[Contact]) {
        let neighbour = self.predecessor.as_ref().is_some_and(|p| p.id == from.id) || self.successors.contains(from.id);
        if !neighbour {
            // Not one of ours: nothing would change but a finger, which its next use checks.
            self.fingers.remove(from.id);
            return;
        }
        let then = super::proof::Then::Leave { predecessor, successors: successors.to_vec() };
        self.prove(now, from, then);
    }

    /// `from` has left (it said so and now refuses or does not answer): its hand-off.
    pub(super) fn on_leave_confirmed(
        &mut self,
        now: Instant,
        from: Contact,
        predecessor: Option<Contact>,
        successors: &[Contact],
    ) {
        let me = self.me.id;
        self.mark_failed(now, from.id);
        if self.predecessor.as_ref().is_some_and(|p| p.id == from.id) {
            let next = predecessor.filter(|p| p.id != me && p.id != from.id && p.is_plausible());
            self.set_predecessor(now, next);
        }
        if !self.successors.contains(from.id) {
            return;
        }
        let old_first = self.first_successor_id();
        if old_first == Some(from.id) {
            // Our successor leaves: its list is our new list.
            let backup: Vec<Contact> = self.successors.as_slice().to_vec();
            let failed = &self.recently_failed;
            self.successors.replace(successors, |c| c.id == from.id || failed.get(&c.id).is_some_and(|t| *t > now));
            if self.successors.is_empty() {
                self.successors.replace(&backup, |c| c.id == from.id);
            }
        } else {
            self.successors.remove(from.id);
        }
        self.successors_touched(old_first);
        if self.successors.is_empty() {
            // Everyone else left politely: a ring of one, not an isolated node.
            self.state = NodeState::Alone;
        }
        // Tell the new successor about us without waiting a whole period.
        self.stabilize_at = now;
    }
}
