//! Lookups (Chord ToN §IV-C, iteratively; see [`crate::overlay::lookup`]): each step asks the
//! closest node known toward the key, follows `Closer` redirects, hedges a hop that has not
//! answered within a few measured round trips, and confirms an answer with the node it names
//! (or that node's backups) before reporting it.

use std::time::Instant;

use super::server::Step;
use super::{ActiveLookup, Chord, Event, LookupPurpose, Purpose};
use crate::overlay::id::NodeId;
use crate::overlay::lookup::{Lookup, LookupError, LookupId, Next, Resolution};
use crate::overlay::rpc::{Contact, Request, Response, RpcFailure, RpcId, RpcTarget};

impl Chord {
    pub(super) fn new_lookup_id(&mut self) -> LookupId {
        let id = LookupId(self.next_lookup);
        self.next_lookup += 1;
        id
    }

    pub(super) fn start_lookup(
        &mut self,
        now: Instant,
        id: LookupId,
        key: NodeId,
        purpose: LookupPurpose,
        first: Option<Contact>,
    ) {
        let me = self.me.id;
        if self.state == super::NodeState::Client {
            // A client is nowhere on the ring: every peer it knows is a candidate (the
            // lookup measures closeness from the key itself), and none is skipped as "past".
            let failed = &self.recently_failed;
            let known = self.client_peers.iter().filter(|c| failed.get(&c.id).is_none_or(|t| *t <= now));
            let lookup = Lookup::new(key, key, known, first);
            self.lookups.insert(id, ActiveLookup { lookup, purpose, waiting: None, stragglers: 0 });
            self.lookup_step(now, id);
            return;
        }
        let lookup = match self.find_successor_step(now, key) {
            Step::Done(node) => {
                self.lookups.insert(
                    id,
                    ActiveLookup { lookup: Lookup::new(me, key, [], None), purpose, waiting: None, stragglers: 0 },
                );
                let backups: Vec<Contact> = self.successors.as_slice().iter().skip(1).cloned().collect();
                let heard = node.id == me;
                self.answer_found(now, id, node, &backups, false, heard);
                return;
            }
            Step::Closer(_) => {
                let known = self.fingers.distinct().into_iter().chain(self.successors.as_slice());
                let failed = &self.recently_failed;
                let known = known.filter(|c| failed.get(&c.id).is_none_or(|t| *t <= now));
                Lookup::new(me, key, known, first)
            }
        };
        self.lookups.insert(id, ActiveLookup { lookup, purpose, waiting: None, stragglers: 0 });
        self.lookup_step(now, id);
    }

    /// Starts again the user lookups whose retry is due (see `finish_lookup`); a node that
    /// has left the ring in the meantime reports them failed.
    pub(super) fn retry_due_lookups(&mut self, now: Instant) {
        while let Some(entry) = self.lookup_retries.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let ((_, id), key) = entry.remove_entry();
            if self.can_look_up() {
                self.start_lookup(now, id, key, LookupPurpose::User(id), None);
            } else {
                let (path, confirmations) = self.retried_lookups.remove(&id).unwrap_or_default();
                let result = Err(LookupError::NotJoined);
                self.user_lookup_done(now, Event::LookupDone { id, key, result, path, confirmations });
            }
        }
    }

    pub(super) fn lookup_step(&mut self, now: Instant, id: LookupId) {
        let max_hops = self.config.max_hops;
        let Some(active) = self.lookups.get_mut(&id) else { return };
        // Right after many nodes die, half the fingers a lookup tries may be dead; those are
        // not hops (see `Lookup::answered_hops`). The whole path is still bounded, at twice
        // the limit, so a lookup through a dying ring ends in bounded time.
        let limit = max_hops as usize;
        if active.lookup.answered_hops() >= limit || active.lookup.path().len() >= 2 * limit {
            self.finish_lookup(now, id, Err(LookupError::HopLimit(max_hops)));
            return;
        }
        let key = active.lookup.key();
        // Routing steps are hedged after one soft deadline, confirmations after a few (`hedge`).
        let (asked, request, confirm) = match active.lookup.next_request() {
            Some(Next::Ask(asked)) => (asked, Request::FindSuccessor { key }, false),
            Some(Next::Confirm(asked)) if asked.id == self.me.id => {
                // We are named (a successor list that holds us): our own view answers, as it
                // would answer anyone else; a request to ourselves would be refused.
                let answer = match self.find_successor_step(now, key) {
                    Step::Done(node) => Response::Successor { node, backups: Vec::new() },
                    Step::Closer(nodes) => Response::Closer { nodes },
                };
                self.on_confirmation(now, id, asked, Ok(answer));
                return;
            }
            Some(Next::Confirm(asked)) => (asked, Request::FindSuccessor { key }, true),
            Some(Next::ListAnswer(node, backups, fell_back)) => {
                self.answer_found(now, id, node, &backups, fell_back, false);
                return;
            }
            Some(Next::AskSuccessors(asked)) => (asked, Request::GetNeighbours { digest: None, notify: false }, false),
            None if active.stragglers > 0 || active.lookup.confirming() => return,
            None if active.lookup.take_own_list() => {
                // Last resort: our own successor list, read as a live answerer's would be.
                let failed = &self.recently_failed;
                let skip = |id: NodeId| failed.get(&id).is_some_and(|t| *t > now);
                match active.lookup.successor_list_answer(&self.me, self.successors.as_slice(), skip) {
                    Some((node, backups, fell_back)) => self.answer_found(now, id, node, &backups, fell_back, false),
                    None => self.lookup_step(now, id),
                }
                return;
            }
            None => {
                self.finish_lookup(now, id, Err(LookupError::NoRoute));
                return;
            }
        };
        let rpc = self.send(now, RpcTarget::Node(asked.clone()), request, Purpose::Lookup { lookup: id, asked });
        if let Some(active) = self.lookups.get_mut(&id) {
            active.waiting = Some(rpc);
        }
        let soft = self.soft_deadline(now);
        if soft < now + self.config.rpc_timeout {
            self.soft_deadlines.insert((soft, rpc));
        }
        if confirm {
            let verdict = self.confirm_deadline(now);
            if verdict < now + self.config.rpc_timeout {
                self.verdicts.insert((verdict, rpc));
            }
        }
    }

    pub(super) fn on_lookup_answer(
        &mut self,
        now: Instant,
        rpc: RpcId,
        id: LookupId,
        asked: Contact,
        result: Result<Response, RpcFailure>,
    ) {
        let Some(active) = self.lookups.get_mut(&id) else { return };
        let current = active.waiting == Some(rpc);
        if current {
            active.waiting = None;
        } else {
            active.stragglers = active.stragglers.saturating_sub(1);
        }
        if active.lookup.awaits(asked.id) {
            self.on_confirmation(now, id, asked, result);
            return;
        }
        // An answer to a step given up on is only news while the lookup goes on (or
        // confirms an answer); it is the answer the lookup waits for when it had nobody left
        // to ask.
        if !current && (active.waiting.is_some() || active.lookup.confirming()) {
            self.on_superseded_answer(now, id, &asked, &result);
            return;
        }
        match result {
            Ok(Response::Successor { node, backups }) if node.is_plausible() => {
                // Alive, and right before the key: its successor list is the fallback should
                // the named node disagree.
                if let Some(active) = self.lookups.get_mut(&id) {
                    active.lookup.answered(&asked);
                }
                let heard = node.id == asked.id;
                self.answer_found(now, id, node, &backups, false, heard)
            }
            Ok(Response::Closer { nodes }) => {
                if let Some(active) = self.lookups.get_mut(&id) {
                    active.lookup.add_closer(&asked, &nodes);
                    active.lookup.answered(&asked);
                }
                self.lookup_step(now, id);
            }
            Ok(Response::Neighbours { successors, .. }) => {
                // The fallback: the successors of a live node, toward the key.
                let failed = &self.recently_failed;
                let skip = |id: NodeId| failed.get(&id).is_some_and(|t| *t > now);
                let answer =
                    self.lookups.get_mut(&id).and_then(|a| a.lookup.successor_list_answer(&asked, &successors, skip));
                match answer {
                    Some((node, backups, fell_back)) => self.answer_found(now, id, node, &backups, fell_back, false),
                    None => self.lookup_step(now, id),
                }
            }
            Ok(Response::Refused { .. }) => {
                if let Some(active) = self.lookups.get_mut(&id) {
                    active.lookup.failed(asked.id);
                }
                self.lookup_step(now, id)
            }
            Ok(_) => {
                self.counters.unexpected_responses += 1;
                self.lookup_step(now, id);
            }
            Err(e) => {
                // A busy node is skipped by this lookup only; it is not dead.
                if e != RpcFailure::Busy {
                    self.mark_failed(now, asked.id);
                }
                if let Some(active) = self.lookups.get_mut(&id) {
                    active.lookup.failed(asked.id);
                }
                self.lookup_step(now, id);
            }
        }
    }

    /// A lookup's answer is `node` (then `backups`). Done if `heard` from `node` itself, or for
    /// `fix_fingers`, which checks its fingers by using them anyway (a dead finger is dropped
    /// on its next use and found again by the next round); otherwise confirmed with `node`.
    pub(super) fn answer_found(
        &mut self,
        now: Instant,
        id: LookupId,
        node: Contact,
        backups: &[Contact],
        fell_back: bool,
        heard: bool,
    ) {
        let Some(active) = self.lookups.get_mut(&id) else { return };
        if heard || !matches!(active.purpose, LookupPurpose::User(_)) {
            self.finish_lookup(now, id, Ok(node));
            return;
        }
        let failed = &self.recently_failed;
        if active.lookup.confirm(node.clone(), backups, fell_back, |n| failed.get(&n).is_some_and(|t| *t > now)) {
            self.lookup_step(now, id);
        } else {
            self.finish_lookup(now, id, Ok(node));
        }
    }

    /// A node asked to confirm a lookup's answer replied, or failed to.
    pub(super) fn on_confirmation(
        &mut self,
        now: Instant,
        id: LookupId,
        asked: Contact,
        result: Result<Response, RpcFailure>,
    ) {
        let Some(active) = self.lookups.get_mut(&id) else { return };
        match &result {
            Ok(Response::Refused { .. }) => active.lookup.failed(asked.id),
            Ok(answer) => {
                let says_itself = matches!(answer, Response::Successor { node, .. } if node.id == asked.id);
                active.lookup.confirmed(asked.id, says_itself);
            }
            Err(e) => {
                active.lookup.failed(asked.id);
                // A busy node is skipped by this lookup only; it is not dead.
                if *e != RpcFailure::Busy {
                    self.mark_failed(now, asked.id);
                }
            }
        }
        let answer = result.ok().map(|a| (asked, a));
        self.resolve_confirmation(now, id, answer);
    }

    /// Acts on what a lookup's confirmations decide; `answer` is the one just received.
    pub(super) fn resolve_confirmation(&mut self, now: Instant, id: LookupId, answer: Option<(Contact, Response)>) {
        let Some(active) = self.lookups.get_mut(&id) else { return };
        match active.lookup.resolve() {
            Resolution::Done(node) => self.finish_lookup(now, id, Ok(node)),
            Resolution::Wait => {}
            Resolution::Failed => self.lookup_step(now, id),
            // The named node disagrees: it knows a node closer to the key (one that joined),
            // or says its own successor is responsible. Go on from what it says.
            Resolution::Disputed => match answer {
                Some((_, Response::Successor { node, backups })) if node.is_plausible() => {
                    self.answer_found(now, id, node, &backups, false, false)
                }
                Some((asked, Response::Closer { nodes })) => {
                    active.lookup.add_closer(&asked, &nodes);
                    active.lookup.answered(&asked);
                    self.lookup_step(now, id);
                }
                _ => {
                    self.counters.unexpected_responses += 1;
                    self.lookup_step(now, id);
                }
            },
        }
    }

    pub(super) fn finish_lookup(&mut self, now: Instant, id: LookupId, result: Result<Contact, LookupError>) {
        let Some(active) = self.lookups.remove(&id) else { return };
        match active.purpose {
            LookupPurpose::User(id) => {
                let key = active.lookup.key();
                let mut confirmations = active.lookup.confirmations();
                let mut path = active.lookup.into_path();
                let found_nobody = matches!(result, Err(LookupError::HopLimit(_) | LookupError::NoRoute));
                let first_attempt = !self.retried_lookups.contains_key(&id);
                if found_nobody && first_attempt && !self.config.lookup_retry_delay.is_zero() && self.can_look_up() {
                    // Once more from scratch, after the ring around the key has had time to
                    // repair itself (`ChordConfig::lookup_retry_delay`).
                    self.counters.lookups_retried += 1;
                    self.retried_lookups.insert(id, (path, confirmations));
                    self.lookup_retries.insert((now + self.config.lookup_retry_delay, id), key);
                    return;
                }
                if let Some((mut first, first_confirmations)) = self.retried_lookups.remove(&id) {
                    first.append(&mut path);
                    path = first;
                    confirmations += first_confirmations;
                }
                self.user_lookup_done(now, Event::LookupDone { id, key, result, path, confirmations });
            }
            LookupPurpose::OwnPlace => {
                self.checking_own_place = false;
                self.on_own_place(now, result);
            }
            LookupPurpose::Finger(index) => {
                self.next_finger = match &result {
                    Ok(node) if self.participating() => self.fingers.set_successor_of(index, node),
                    _ => index + 1,
                };
                self.fix_next_finger(now);
            }
        }
    }

    /// Reports a user lookup's end (`done` is its `LookupDone`): counted, and measured when it
    /// found its node.
    fn user_lookup_done(&mut self, now: Instant, done: Event) {
        if let Event::LookupDone { id, result, path, .. } = &done {
            let started = self.user_lookups_started.remove(id);
            match result {
                Ok(_) => {
                    self.measures.hops.observe(path.len() as f64);
                    if let Some(started) = started {
                        self.measures.seconds.observe(now.saturating_duration_since(started).as_secs_f64());
                    }
                }
                Err(_) => self.counters.lookups_failed += 1,
            }
        }
        self.events.push_back(done);
    }
}
