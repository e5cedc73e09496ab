//! Joining and leaving (dSIP dhtchord §6.3, §6.5; Chord ToN §IV-E.3): `Join` to each bootstrap
//! address in turn, following redirects, taking the admitting node's predecessor, successor
//! list and fingers at once; a leave hands our neighbours to our predecessor and successor.

use std::collections::VecDeque;
use std::time::Instant;

use tracing::debug;

use super::{Chord, Event, JoinAttempt, NodeState, Purpose};
use crate::overlay::rpc::{Contact, Request, Response, RpcFailure, RpcTarget};

impl Chord {
    /// (Re)joins through the bootstrap list, then any other node we still know.
    pub(super) fn start_join(&mut self, now: Instant) {
        let mut targets: VecDeque<RpcTarget> = self.bootstrap.iter().map(|a| RpcTarget::Address(*a)).collect();
        // After isolation the predecessor and fingers may still be alive (a fresh node knows
        // nobody, so this adds nothing for a first join).
        let known = self.predecessor.iter().chain(self.fingers.distinct());
        for c in known {
            if c.id != self.me.id && !self.is_failed(now, c.id) && !targets.iter().any(|t| t.addr() == c.addr) {
                targets.push_back(RpcTarget::Node(c.clone()));
            }
        }
        if targets.is_empty() {
            if self.successors.is_empty() {
                self.state = NodeState::Alone;
            }
            return;
        }
        self.state = NodeState::Joining;
        self.stabilize_steps = None;
        self.finger_budget = None;
        self.join = Some(JoinAttempt { targets, redirects: 0 });
        self.join_next(now);
    }

    pub(super) fn join_next(&mut self, now: Instant) {
        let Some(attempt) = self.join.as_mut() else { return };
        if attempt.redirects > self.config.max_hops {
            attempt.targets.clear();
        }
        match attempt.targets.pop_front() {
            Some(target) => {
                let joiner = self.me.clone();
                self.send(now, target, Request::Join { joiner }, Purpose::Join);
            }
            None => {
                debug!(node = ?self.me.id, "every bootstrap node failed");
                self.join = None;
                self.events.push_back(Event::BootstrapFailed);
                self.join_retry_at = Some(now + self.jittered(self.config.join_retry_interval));
            }
        }
    }

    pub(super) fn on_join_answer(&mut self, now: Instant, result: Result<Response, RpcFailure>) {
        if self.state != NodeState::Joining || self.join.is_none() {
            return;
        }
        match result {
            Ok(Response::Joined { predecessor, successors, fingers }) => {
                if !self.adopt_join(now, predecessor, &successors, &fingers) {
                    self.counters.unexpected_responses += 1;
                    self.join_next(now);
                }
            }
            Ok(Response::Closer { nodes }) => {
                let me = self.me.id;
                if let Some(attempt) = self.join.as_mut() {
                    attempt.redirects += 1;
                    for n in nodes.iter().rev().filter(|n| n.id != me && n.is_plausible()) {
                        attempt.targets.push_front(RpcTarget::Node(n.clone()));
                    }
                }
                self.join_next(now);
            }
            _ => self.join_next(now),
        }
    }

    /// Takes the admitting node's view at once (Zave: a joiner needs a full successor list
    /// before it counts as a member). Returns false if the answer is unusable.
    pub(super) fn adopt_join(
        &mut self,
        now: Instant,
        predecessor: Option<Contact>,
        successors: &[Contact],
        fingers: &[Contact],
    ) -> bool {
        let me = self.me.id;
        let predecessor = predecessor.filter(|p| p.id != me && p.is_plausible());
        let old_first = self.first_successor_id();
        let failed = &self.recently_failed;
        self.successors.replace(successors, |c| failed.get(&c.id).is_some_and(|t| *t > now));
        if self.successors.is_empty() {
            // The admitting node's list holds only nodes we saw fail (a rejoin after r
            // consecutive nodes died): the nearest of its fingers past us stands in, as after
            // losing every successor (see `stabilize_failed`).
            let me_id = self.me.id;
            let nearest = fingers
                .iter()
                .filter(|c| c.id != me_id && c.is_plausible() && !self.is_failed(now, c.id))
                .min_by_key(|c| me_id.distance(c.id));
            if let Some(f) = nearest {
                self.successors.insert(f);
            }
        }
        if self.successors.is_empty() {
            match &predecessor {
                // A two-node ring: our predecessor is our successor too.
                Some(p) => self.successors.replace([p], |_| false),
                None => return false,
            }
        }
        self.join = None;
        self.join_retry_at = None;
        self.state = NodeState::Joined;
        let known: Vec<Contact> =
            fingers.iter().chain(self.successors.as_slice()).chain(predecessor.iter()).cloned().collect();
        self.fingers.rebuild(&known);
        self.next_finger = 0;
        let successor = self.successor().clone();
        debug!(node = ?me, ?successor, "joined");
        self.events.push_back(Event::Joined { successor });
        self.successors_touched(old_first);
        self.set_predecessor(now, predecessor);
        // Notify the successor now; check the guessed fingers soon.
        self.stabilize_at = now;
        self.fix_fingers_at = now + self.jittered(self.config.stabilize_interval);
        true
    }

    // ---- leave ----

    pub(super) fn on_leave_answer(&mut self) {
        self.leaves_outstanding = self.leaves_outstanding.saturating_sub(1);
        if self.leaves_outstanding == 0 && self.state == NodeState::Leaving {
            self.finish_leave();
        }
    }

    pub(super) fn finish_leave(&mut self) {
        self.state = NodeState::Left;
        self.events.push_back(Event::Left);
    }
}
