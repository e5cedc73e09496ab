//! The client side: the commands (join, leave, lookup) and our own periodic work (Chord ToN
//! Fig. 6 and 7, §IV-E; Zave 2012; dSIP dhtchord §6.2–6.6). Lookups are in `lookups`, joining
//! and leaving in `join_leave`.
//!
//! - `stabilize`: ask the successor for its predecessor and successor list; if its predecessor
//!   lies between us, ask *that* node too and adopt it only once it has answered (Zave: never
//!   adopt a successor you have not heard from), repeating until the successor's predecessor is
//!   us or behind us; then `notify` it unless it already knows us. The successor list becomes
//!   the successor's list shifted by one. A successor that fails is dropped and the next one
//!   asked at once; when none is left the node is isolated and rejoins.
//! - `check_predecessor`: ping the predecessor unless it spoke to us within the period; clear
//!   it (or let a waiting notifier take its place) when it does not answer.
//! - `fix_fingers`: check a few distinct fingers per round, each by an iterative lookup that
//!   first asks the finger itself, so a finger that is still right costs one request.

use std::net::SocketAddr;
use std::time::Instant;

use rand::Rng;
use tracing::debug;

use super::{ActiveLookup, Chord, Event, LookupPurpose, NeighboursCache, NodeState, Purpose};
use crate::overlay::id::{NodeId, ID_BITS};
use crate::overlay::lookup::{Lookup, LookupError, LookupId};
use crate::overlay::rpc::{neighbours_digest, Contact, Request, Response, RpcFailure, RpcTarget};

impl Chord {
    // ---- commands ----

    /// Joins the ring that the nodes at `bootstrap` belong to. Addresses are tried in order,
    /// and again every [`crate::overlay::ChordConfig::join_retry_interval`] while all fail. With
    /// no usable address (an empty list, or only our own) the node stays a ring of one: that
    /// is how the first node of an overlay starts.
    pub fn join(&mut self, now: Instant, bootstrap: Vec<SocketAddr>) {
        if matches!(self.state, NodeState::Leaving | NodeState::Left) {
            return;
        }
        let me = self.me.addr;
        self.bootstrap = bootstrap.into_iter().filter(|a| *a != me).collect();
        self.start_join(now);
    }

    /// Keeps a node that has not joined anything off the ring without joining: it waits for
    /// the dial-back that decides its role, or it is a client (`crate::nat::reachability`).
    /// As while joining, it routes nothing, admits nobody, and its lookups fail `NotJoined`;
    /// [`Chord::join`] ends it.
    pub fn stand_by(&mut self) {
        if self.state == NodeState::Alone && self.successors.is_empty() && self.predecessor.is_none() {
            self.state = NodeState::Joining;
        }
    }

    /// Leaves gracefully: tells the predecessor and the successor, each of whom gets both our
    /// predecessor and our successor list, and stops all maintenance. [`Event::Left`] follows
    /// once both have answered or timed out.
    pub fn leave(&mut self, now: Instant) {
        if matches!(self.state, NodeState::Leaving | NodeState::Left) {
            return;
        }
        let was_joined = self.state == NodeState::Joined;
        self.state = NodeState::Leaving;
        self.join = None;
        self.join_retry_at = None;
        let ids: Vec<LookupId> = self.lookups.keys().copied().collect();
        for id in ids {
            self.finish_lookup(now, id, Err(LookupError::Cancelled));
        }
        for ((_, id), key) in std::mem::take(&mut self.lookup_retries) {
            let (path, confirmations) = self.retried_lookups.remove(&id).unwrap_or_default();
            let result = Err(LookupError::Cancelled);
            self.events.push_back(Event::LookupDone { id, key, result, path, confirmations });
        }
        if was_joined {
            let request = Request::Leave {
                predecessor: self.predecessor.clone(),
                successors: self.successors.as_slice().to_vec(),
            };
            let mut targets: Vec<Contact> = self.successors.first().cloned().into_iter().collect();
            if let Some(p) = &self.predecessor {
                if !targets.iter().any(|t| t.id == p.id) {
                    targets.push(p.clone());
                }
            }
            for t in targets {
                self.leaves_outstanding += 1;
                self.send(now, RpcTarget::Node(t), request.clone(), Purpose::Leave);
            }
        }
        if self.leaves_outstanding == 0 {
            self.finish_leave();
        }
    }

    /// Starts an iterative lookup of the node responsible for `key`; the answer comes as
    /// [`Event::LookupDone`] with the same id (at once, if this node already knows it).
    pub fn lookup(&mut self, now: Instant, key: NodeId) -> LookupId {
        let id = self.new_lookup_id();
        self.counters.lookups_started += 1;
        if !self.can_look_up() {
            self.counters.lookups_failed += 1;
            self.events.push_back(Event::LookupDone {
                id,
                key,
                result: Err(LookupError::NotJoined),
                path: Vec::new(),
                confirmations: 0,
            });
            return id;
        }
        self.user_lookups_started.insert(id, now);
        self.start_lookup(now, id, key, LookupPurpose::User(id), None);
        id
    }

    // ---- stabilize ----

    pub(super) fn stabilize(&mut self, now: Instant) {
        if !self.participating() || self.stabilize_steps.is_some() {
            return;
        }
        let target = match self.successors.first() {
            Some(s) => s.clone(),
            // A ring of one that has been notified: its predecessor is its only candidate.
            None => match &self.predecessor {
                Some(p) if !self.is_failed(now, p.id) => p.clone(),
                _ => return,
            },
        };
        self.stabilize_steps = Some(0);
        self.stabilize_started_at = Some(now);
        self.ask_neighbours(now, target);
    }

    /// `GetNeighbours` for stabilize, conditional on the last answer we had from `target`.
    pub(super) fn ask_neighbours(&mut self, now: Instant, target: Contact) {
        let digest = self
            .neighbours_cache
            .as_ref()
            .filter(|c| c.from == target)
            .map(|c| neighbours_digest(c.predecessor.as_ref(), &c.successors));
        let request = Request::GetNeighbours { digest, notify: true };
        self.send(now, RpcTarget::Node(target.clone()), request, Purpose::Stabilize { asked: target });
    }

    pub(super) fn on_stabilize_answer(&mut self, now: Instant, asked: Contact, result: Result<Response, RpcFailure>) {
        let steps = self.stabilize_steps.unwrap_or(0) + 1;
        self.stabilize_steps = None;
        if !self.participating() {
            return;
        }
        let me = self.me.id;
        let old_first = self.first_successor_id();
        let result = match result {
            Ok(Response::NeighboursUnchanged) => match self.neighbours_cache.as_ref().filter(|c| c.from == asked) {
                Some(c) => {
                    Ok(Response::Neighbours { predecessor: c.predecessor.clone(), successors: c.successors.clone() })
                }
                // We sent no digest for it: nonsense.
                None => Ok(Response::NeighboursUnchanged),
            },
            Ok(Response::Neighbours { predecessor, successors }) => {
                let cache = NeighboursCache { from: asked.clone(), predecessor, successors };
                let answer = Response::Neighbours {
                    predecessor: cache.predecessor.clone(),
                    successors: cache.successors.clone(),
                };
                self.neighbours_cache = Some(cache);
                Ok(answer)
            }
            other => other,
        };
        if result == Err(RpcFailure::Busy) {
            // Alive but overloaded: keep it, and ask again next round.
            return;
        }
        let Ok(Response::Neighbours { predecessor, successors }) = result else {
            if matches!(result, Ok(ref r) if !matches!(r, Response::Refused { .. })) {
                self.counters.unexpected_responses += 1;
            }
            self.stabilize_failed(now, asked, steps);
            return;
        };
        let is_successor = old_first == Some(asked.id);
        // A candidate is adopted only if it still lies between us and our successor (which
        // may have changed while we waited).
        let is_closer = asked.id.in_open(me, self.successor().id);
        let before: Vec<NodeId> = self.successors.as_slice().iter().map(|c| c.id).collect();
        if is_successor || is_closer {
            let failed = &self.recently_failed;
            self.successors.reconcile(&asked, &successors, |c| failed.get(&c.id).is_some_and(|t| *t > now));
            self.successors_touched(old_first);
        }
        let changed = steps > 1 || !self.successors.as_slice().iter().map(|c| c.id).eq(before.iter().copied());
        let successor = self.successor().clone();
        if successor.id == me {
            return;
        }
        if let Some(x) = predecessor.as_ref() {
            let follow = x.id.in_open(me, successor.id) && x.is_plausible() && !self.is_failed(now, x.id);
            if follow && steps < self.config.max_hops {
                // Our successor has a predecessor between us: a closer successor, unless it is
                // dead. Ask it before adopting it.
                self.stabilize_steps = Some(steps);
                self.ask_neighbours(now, x.clone());
                return;
            }
            if follow {
                // A round walks back at most `max_hops` predecessors; the next goes on from
                // here at once rather than a period later. A node that joined a young ring
                // and heard of none of the thirty nodes that joined after it between it and
                // its successor took two periods (10 s) to find its place (B4 bootstrap).
                self.stabilize_hinted = true;
            }
        }
        // Our question notified the successor; the answer names us unless its predecessor lies
        // between us but has failed (we did not follow it), which our notify made it check
        // (Zave's rectify). Either way the next round should come soon.
        let known = predecessor.as_ref().is_some_and(|p| p.id == me);
        if changed || !known {
            self.stabilize_changed(now);
        } else {
            self.stabilize_quiet(now);
        }
    }

    /// Adaptive stabilization (RFC 7363 §4.1 in spirit; Bamboo's periodic recovery): a round
    /// that changed nothing doubles the period, up to [`crate::overlay::ChordConfig::stabilize_max_interval`],
    /// but only once nothing has changed for [`crate::overlay::ChordConfig::stabilize_quiet_hold`]:
    /// the period follows the churn rate seen in the neighbourhood (under heavy churn a node sees
    /// a change every few seconds and keeps the shortest period; in a quiet ring it stretches).
    pub(super) fn stabilize_quiet(&mut self, now: Instant) {
        if now.saturating_duration_since(self.changed_at) < self.config.stabilize_quiet_hold {
            return;
        }
        let max = self.config.stabilize_max_interval.max(self.config.stabilize_interval);
        self.stabilize_period = (self.stabilize_period * 2).min(max);
    }

    /// Something changed or failed near us: back to the shortest period, and the next round
    /// no later than that.
    pub(super) fn stabilize_changed(&mut self, now: Instant) {
        self.changed_at = now;
        self.stabilize_period = self.config.stabilize_interval;
        let soon = now + self.jittered(self.stabilize_period);
        self.stabilize_at = self.stabilize_at.min(soon);
    }

    pub(super) fn stabilize_failed(&mut self, now: Instant, asked: Contact, steps: u32) {
        self.stabilize_changed(now);
        self.mark_failed(now, asked.id);
        if self.predecessor.as_ref().is_some_and(|p| p.id == asked.id) {
            self.set_predecessor(now, None);
        }
        let old_first = self.first_successor_id();
        if !self.successors.remove(asked.id) {
            // A candidate that died before we adopted it: our successor still stands, and
            // should hear from us.
            if old_first.is_some() {
                let successor = self.successor().clone();
                self.send(now, RpcTarget::Node(successor), Request::Notify, Purpose::Notify);
            }
            return;
        }
        if self.successors.is_empty() {
            // Every successor failed: r consecutive nodes died, which happens (about N·2^-r
            // runs when half the nodes die at once). Before rejoining through the bootstrap
            // list, whose entries may be gone too and whose admitting node would hand us the
            // same dead list, try the nearest live finger: it lies past the dead run, and
            // stabilize walks its predecessors back toward us until it finds the first live
            // node after us (Chord ToN §IV-E.3: a node that lost its successors uses its
            // fingers; the candidate is asked before it is trusted, as Zave requires).
            if let Some(finger) = self.nearest_live_finger(now) {
                self.successors.insert(&finger);
            }
        }
        self.successors_touched(old_first);
        if self.successors.is_empty() {
            self.isolated(now);
        } else if steps < self.config.max_hops {
            // Under churn one successor fails at a time and the next answers: only a second
            // failure in a row suggests a run of dead nodes, worth a ping to each of the rest.
            self.check_successors(now, steps == 2);
            // Ask the next successor straight away (Chord ToN §IV-E.3).
            self.stabilize_steps = Some(steps);
            let next = self.successor().clone();
            self.ask_neighbours(now, next);
        }
    }

    /// Our first successor failed: successors that failed other requests of ours lately are
    /// dropped with it. After a mass failure the list may hold a run of dead nodes, and asking
    /// them one at a time would cost an RPC deadline each (8 × 2 s), while the keys in the run
    /// have no live node that names their successor (docs/performance.md, B4). So, when
    /// `ping`, every successor after the next, which stabilize asks now, is pinged at once.
    /// The pings go out before stabilize's question, so that when they all time out together
    /// their failures are handled first and stabilize then skips past the whole run.
    pub(super) fn check_successors(&mut self, now: Instant, ping: bool) {
        let old_first = self.first_successor_id();
        let failed = &self.recently_failed;
        let dead: Vec<NodeId> = self.successors.as_slice()[1..]
            .iter()
            .filter(|c| failed.get(&c.id).is_some_and(|t| *t > now))
            .map(|c| c.id)
            .collect();
        for id in dead {
            self.successors.remove(id);
        }
        self.successors_touched(old_first);
        if !ping {
            return;
        }
        let rest: Vec<Contact> = self.successors.as_slice()[1..].to_vec();
        for asked in rest {
            self.send(now, RpcTarget::Node(asked.clone()), Request::Ping, Purpose::SuccessorCheck { asked });
        }
    }

    /// A successor pinged by [`Chord::check_successors`] answered, or failed to. One that
    /// failed is dropped, unless it has become our first successor, which stabilize asks.
    pub(super) fn on_successor_check(&mut self, now: Instant, asked: Contact, result: Result<Response, RpcFailure>) {
        if matches!(result, Ok(_) | Err(RpcFailure::Busy)) {
            return;
        }
        self.mark_failed(now, asked.id);
        if self.first_successor_id() != Some(asked.id) {
            self.successors.remove(asked.id);
        }
    }

    /// The finger nearest after us that has not failed lately.
    pub(super) fn nearest_live_finger(&self, now: Instant) -> Option<Contact> {
        // `distinct` is sorted by distance from us.
        self.fingers.distinct().into_iter().find(|c| !self.is_failed(now, c.id)).cloned()
    }

    pub(super) fn isolated(&mut self, now: Instant) {
        debug!(node = ?self.me.id, "isolated: every successor failed");
        self.counters.isolations += 1;
        self.events.push_back(Event::Isolated);
        self.start_join(now);
    }

    // ---- check_predecessor ----

    pub(super) fn check_predecessor(&mut self, now: Instant) {
        let Some(p) = self.predecessor.clone() else {
            self.check_own_place(now, None);
            return;
        };
        if self.checking_predecessor {
            return;
        }
        let interval = self.config.predecessor_silence();
        if let Some(heard) = self.predecessor_heard_at.filter(|t| now.saturating_duration_since(*t) < interval) {
            // It spoke to us recently: that proves it alive. Look again when a whole period of
            // silence would have passed, not a whole period from now.
            self.check_predecessor_at = self.check_predecessor_at.min(heard + interval);
            return;
        }
        self.checking_predecessor = true;
        self.send(
            now,
            RpcTarget::Node(p.clone()),
            Request::Ping,
            Purpose::CheckPredecessor { predecessor: p, candidate: None },
        );
        // A live predecessor stabilizes with us at least once per its longest period; one that
        // has gone quiet may have died, or may no longer count us as its successor.
        self.check_own_place(now, None);
    }

    /// Repairs a ring that stabilize alone cannot: when nodes adopt successors from stale
    /// lists under heavy churn or after a mass failure, the ring can split into several
    /// cycles (Zave's "loopy" and orphaned states), each consistent by itself, or two chains
    /// can interleave so that a node of one hears nothing from the nodes before it. Such a
    /// node (no predecessor, or a silent one), and every node once per
    /// [`crate::overlay::ChordConfig::own_place_interval`], looks up its own ID through the
    /// rest of the ring, the periodic check starting at a random far finger (`through`) so
    /// that the route leaves our own cycle whenever our fingers reach into another one. In a
    /// correct ring the answer is ourselves (we are responsible for our own ID); see
    /// `on_own_place` for what any other answer means.
    pub(super) fn check_own_place(&mut self, now: Instant, through: Option<Contact>) {
        if self.state != NodeState::Joined || self.checking_own_place || self.successors.is_empty() {
            return;
        }
        self.checking_own_place = true;
        let me = self.me.id;
        let id = self.new_lookup_id();
        let known = self.fingers.distinct().into_iter().chain(self.successors.as_slice());
        let failed = &self.recently_failed;
        let known = known.filter(|c| failed.get(&c.id).is_none_or(|t| *t <= now));
        // Not `start_lookup`: we would answer our own ID ourselves.
        let lookup = Lookup::new(me, me, known, through);
        self.lookups
            .insert(id, ActiveLookup { lookup, purpose: LookupPurpose::OwnPlace, waiting: None, stragglers: 0 });
        self.lookup_step(now, id);
    }

    /// A finger beyond our successor list (one that routes far from our neighbourhood),
    /// chosen at random, if we have one that has not failed lately.
    pub(super) fn random_far_finger(&mut self, now: Instant) -> Option<Contact> {
        let far: Vec<Contact> = self
            .fingers
            .distinct()
            .into_iter()
            .filter(|c| !self.successors.contains(c.id) && !self.is_failed(now, c.id))
            .cloned()
            .collect();
        if far.is_empty() {
            return None;
        }
        let k = self.rng.random_range(0..far.len());
        far.into_iter().nth(k)
    }

    /// The ring named `node` responsible for our own ID. Ourselves: all is well. A node
    /// between us and our successor: a closer successor, asked (and notified) as stabilize
    /// asks any candidate. Any other node: the nodes the lookup went through form a cycle
    /// that does not contain us, in which `node`'s predecessor takes us for part of `node`'s
    /// arc. We notify `node`: we lie between its predecessor and it, so it takes us as its
    /// predecessor (Chord's `notify`), and its predecessor's next stabilize finds us and walks
    /// our own cycle's predecessors back to its true successor, splicing the two cycles.
    pub(super) fn on_own_place(&mut self, now: Instant, result: Result<Contact, LookupError>) {
        let Ok(node) = result else { return };
        let me = self.me.id;
        if node.id == me || !node.is_plausible() || self.is_failed(now, node.id) {
            return;
        }
        if !node.id.in_open(me, self.successor().id) {
            if self.successors.contains(node.id) || self.predecessor.as_ref().is_some_and(|p| p.id == node.id) {
                // A neighbour we already know: a stale answer, not another cycle.
                return;
            }
            debug!(node = ?me, other = ?node, "the ring names another node for our place: notifying it");
            self.send(now, RpcTarget::Node(node), Request::Notify, Purpose::Notify);
            return;
        }
        if self.stabilize_steps.is_some() {
            return;
        }
        debug!(node = ?me, other = ?node, "the ring names another node for our place: asking it");
        self.stabilize_steps = Some(0);
        self.ask_neighbours(now, node);
    }

    pub(super) fn on_check_predecessor_answer(
        &mut self,
        now: Instant,
        predecessor: Contact,
        candidate: Option<Contact>,
        result: Result<Response, RpcFailure>,
    ) {
        self.checking_predecessor = false;
        let still_ours = self.predecessor.as_ref().is_some_and(|p| p.id == predecessor.id);
        // A busy predecessor answered: it is alive.
        if matches!(result, Ok(Response::Ok) | Err(RpcFailure::Busy)) {
            if still_ours {
                self.predecessor_heard_at = Some(now);
                if let Some(candidate) = candidate {
                    // The candidate took us for its successor, but our live predecessor lies
                    // between it and us: it is told, as a former predecessor is, so that it
                    // stabilizes now and walks back to that node instead of a period later.
                    // Nodes that joined a young ring at the same moment took 5-10 s to find
                    // their places without this (B4 bootstrap).
                    self.tell_former_predecessor(now, candidate);
                }
            }
            return;
        }
        self.mark_failed(now, predecessor.id);
        if still_ours && !matches!(self.state, NodeState::Leaving | NodeState::Left) {
            // The candidate whose notify set off the check takes over, once proven (docs/security.md, H5).
            self.set_predecessor(now, None);
            if let Some(next) = candidate.filter(|c| !self.is_failed(now, c.id)) {
                self.notify(now, next);
            }
        }
    }

    // ---- fix_fingers ----

    pub(super) fn fix_fingers(&mut self, now: Instant) {
        if !self.participating() || self.finger_budget.is_some() {
            return;
        }
        self.finger_budget = Some(self.config.fingers_per_round.max(1));
        self.fix_next_finger(now);
    }

    pub(super) fn fix_next_finger(&mut self, now: Instant) {
        let Some(budget) = self.finger_budget else { return };
        if budget == 0 || !self.participating() {
            self.finger_budget = None;
            return;
        }
        let me = self.me.id;
        let successor = self.successor().clone();
        // Fingers starting at or before our successor need no lookup.
        while self.next_finger < ID_BITS && self.fingers.start(self.next_finger).in_left_open(me, successor.id) {
            self.next_finger = self.fingers.set_successor_of(self.next_finger, &successor);
        }
        if self.next_finger >= ID_BITS {
            // The round ends when the table has been walked once; the next starts afresh.
            self.next_finger = 0;
            self.finger_budget = None;
            return;
        }
        self.finger_budget = Some(budget - 1);
        let index = self.next_finger;
        let start = self.fingers.start(index);
        let first = self.fingers.get(index).filter(|c| c.id != me && !self.is_failed(now, c.id)).cloned();
        let id = self.new_lookup_id();
        self.start_lookup(now, id, start, LookupPurpose::Finger(index), first);
    }
}
