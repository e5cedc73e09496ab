//! One iterative lookup: the querier's side of `find_successor` (Chord ToN §IV-C, done
//! iteratively as in §V-A's "iterative style"; dSIP dhtchord §4.2's 302 redirects).
//!
//! The querier keeps every node it has heard of that precedes the key, ordered by how close it
//! is to the key, and always asks the closest one it has not asked yet. A [`Response::Closer`]
//! answer adds the nodes it names, but only those strictly between the answerer and the key,
//! so every step makes progress and a confused or hostile node cannot send the lookup round in
//! circles; a failed hop simply leaves the next-best candidate on top (the paper's "the lookup
//! proceeds with the next best finger"). When every candidate has failed (right after many
//! nodes died, live nodes still name dead fingers) the lookup falls back on what Chord's
//! correctness rests on, successor lists: it asks the live node closest to the key for its
//! successor list and carries on from there, or reads the answer off that list when the key
//! falls within it past entries that have all failed. The hop limit is
//! [`super::ChordConfig::max_hops`].
//!
//! This module holds the state only; [`super::chord`] sends the requests and reads the clock.
//!
//! [`Response::Closer`]: super::rpc::Response::Closer

use std::collections::{BTreeMap, BTreeSet};

use super::id::NodeId;
use super::rpc::Contact;

/// Identifies one lookup started with `Chord::lookup`; returned in `Event::LookupDone`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LookupId(pub u64);

/// Why a lookup found nobody.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LookupError {
    /// Every candidate failed or refused.
    #[error("no live node left to ask")]
    NoRoute,
    /// The path grew to the configured limit (Max-Forwards, in SIP's terms).
    #[error("hop limit of {0} reached")]
    HopLimit(u32),
    /// This node is not part of a ring (joining, rejoining, or left).
    #[error("not part of a ring")]
    NotJoined,
    /// The node left the ring while the lookup was under way.
    #[error("cancelled: the node left")]
    Cancelled,
}

/// The querier's state for one lookup.
#[derive(Debug, Clone)]
pub struct Lookup {
    key: NodeId,
    /// Nodes not yet asked, keyed by their distance to the key: the first is the closest.
    candidates: BTreeMap<NodeId, Contact>,
    asked: BTreeSet<NodeId>,
    /// Nodes that answered (so are alive), by distance to the key, whose successor list we
    /// have not asked for yet.
    answered: BTreeMap<NodeId, Contact>,
    /// Nodes that failed to answer during this lookup.
    failed: BTreeSet<NodeId>,
    /// Whether the querier's own successor list has been used as the last fallback.
    own_list_used: bool,
    path: Vec<Contact>,
}

impl Lookup {
    /// A lookup for `key` by node `me`, seeded with what `me` knows (fingers, successors).
    /// `first`, when given, is asked before anyone else whatever its position: `fix_fingers`
    /// checks a finger by asking it directly, which costs one request when it is still right.
    pub fn new<'a>(
        me: NodeId,
        key: NodeId,
        known: impl IntoIterator<Item = &'a Contact>,
        first: Option<Contact>,
    ) -> Lookup {
        let mut lookup = Lookup {
            key,
            candidates: BTreeMap::new(),
            asked: BTreeSet::new(),
            answered: BTreeMap::new(),
            failed: BTreeSet::new(),
            own_list_used: false,
            path: Vec::new(),
        };
        lookup.asked.insert(me);
        for c in known {
            if c.id.in_open(me, key) {
                lookup.insert(c.clone());
            }
        }
        if let Some(f) = first {
            if f.id != me {
                // Distance zero puts it first; it cannot collide with a real candidate, whose
                // distance to the key is never zero (candidates lie strictly before the key).
                lookup.candidates.insert(NodeId::ZERO, f);
            }
        }
        lookup
    }

    pub fn key(&self) -> NodeId {
        self.key
    }

    /// The nodes asked so far, in order.
    pub fn path(&self) -> &[Contact] {
        &self.path
    }

    pub fn into_path(self) -> Vec<Contact> {
        self.path
    }

    fn insert(&mut self, c: Contact) {
        if !self.asked.contains(&c.id) && c.is_plausible() {
            self.candidates.insert(c.id.distance(self.key), c);
        }
    }

    /// `answerer` redirected us to `nodes` (or listed its successors); keep those that are
    /// closer to the key than it.
    pub fn add_closer(&mut self, answerer: &Contact, nodes: &[Contact]) {
        for n in nodes {
            if n.id.in_open(answerer.id, self.key) {
                self.insert(n.clone());
            }
        }
    }

    /// A node asked during this lookup did not answer.
    pub fn failed(&mut self, id: NodeId) {
        self.failed.insert(id);
    }

    /// The fallback's answer: `answerer`'s successor list. Its entries before the key become
    /// candidates; if there are no new ones (they all failed already), the list itself names
    /// the node responsible for the key, if the key falls within it: the entry whose arc holds
    /// the key, or, if that one is known to have failed (here or by `skip`), the next entry
    /// after it, which has taken its arc over.
    pub fn add_successor_list(
        &mut self,
        answerer: &Contact,
        list: &[Contact],
        skip: impl Fn(NodeId) -> bool,
    ) -> Option<Contact> {
        let before = self.candidates.len();
        self.add_closer(answerer, list);
        if self.candidates.len() > before {
            return None;
        }
        let mut previous = answerer.id;
        let k = list.iter().position(|s| {
            let hit = self.key.in_left_open(previous, s.id);
            previous = s.id;
            hit
        })?;
        list[k..].iter().find(|s| s.is_plausible() && !self.failed.contains(&s.id) && !skip(s.id)).cloned()
    }

    /// Whether the querier's own successor list is still unused as a last resort; marks it
    /// used.
    pub fn take_own_list(&mut self) -> bool {
        !std::mem::replace(&mut self.own_list_used, true)
    }

    /// `answerer` answered a redirect: it is alive, and its successor list is a fallback.
    pub fn answered(&mut self, answerer: &Contact) {
        self.answered.insert(answerer.id.distance(self.key), answerer.clone());
    }

    /// What to do next (the node is recorded in the path), or `None` when there is nobody
    /// left to ask. Candidates closer to the key than every live node already asked come
    /// first; past that point, the successor list of the closest live answerer beats walking
    /// back to candidates farther from the key, which could only name the same nodes again.
    pub fn next_request(&mut self) -> Option<Next> {
        let candidate = self.candidates.first_key_value().map(|(d, _)| *d);
        let answerer = self.answered.first_key_value().map(|(d, _)| *d);
        let fallback = match (candidate, answerer) {
            (Some(c), Some(a)) => a < c,
            (None, Some(_)) => true,
            (_, None) => false,
        };
        if fallback {
            let (_, c) = self.answered.pop_first()?;
            self.path.push(c.clone());
            return Some(Next::AskSuccessors(c));
        }
        while let Some((_, c)) = self.candidates.pop_first() {
            if self.asked.insert(c.id) {
                self.path.push(c.clone());
                return Some(Next::Ask(c));
            }
        }
        None
    }
}

/// The next request of a lookup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    /// `FindSuccessor(key)` to this node.
    Ask(Contact),
    /// `GetNeighbours` to this live node, for its successor list.
    AskSuccessors(Contact),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ask(n: Option<Next>) -> Option<NodeId> {
        match n {
            Some(Next::Ask(c)) => Some(c.id),
            _ => None,
        }
    }
    use std::net::{Ipv4Addr, SocketAddr};

    fn c(top: u8) -> Contact {
        let mut b = [0u8; 20];
        b[0] = top;
        Contact::new(NodeId::from_bytes(b), SocketAddr::from((Ipv4Addr::new(10, 0, 0, top.max(1)), 5060)))
    }

    #[test]
    fn asks_the_closest_first_and_falls_back() {
        let key = c(0x80).id;
        let mut l = Lookup::new(c(0).id, key, [&c(0x10), &c(0x40), &c(0x90)], None);
        assert_eq!(ask(l.next_request()), Some(c(0x40).id));
        l.add_closer(&c(0x40), &[c(0x70), c(0x30), c(0x85)]);
        l.answered(&c(0x40));
        assert_eq!(ask(l.next_request()), Some(c(0x70).id));
        // 0x70 timed out. 0x10 is farther from the key than the live 0x40: ask 0x40 for its
        // successors instead of walking back (never the non-progress 0x30 or 0x85).
        assert_eq!(l.next_request(), Some(Next::AskSuccessors(c(0x40))));
        l.add_closer(&c(0x40), &[c(0x50), c(0x70)]);
        assert_eq!(ask(l.next_request()), Some(c(0x50).id));
        assert_eq!(ask(l.next_request()), Some(c(0x10).id));
        assert_eq!(l.next_request(), None);
        assert_eq!(l.path().len(), 5);
    }

    #[test]
    fn first_is_asked_first_and_only_once() {
        let key = c(0x80).id;
        let mut l = Lookup::new(c(0).id, key, [&c(0x40)], Some(c(0x90)));
        assert_eq!(ask(l.next_request()), Some(c(0x90).id));
        l.add_closer(&c(0x90), &[c(0x90), c(0x50)]);
        assert_eq!(ask(l.next_request()), Some(c(0x50).id));
        assert_eq!(ask(l.next_request()), Some(c(0x40).id));
        assert_eq!(l.next_request(), None);
    }

    #[test]
    fn the_fallback_list_answers_when_it_offers_nobody_new() {
        let key = c(0x80).id;
        let mut l = Lookup::new(c(0).id, key, [&c(0x70)], None);
        assert_eq!(ask(l.next_request()), Some(c(0x70).id));
        l.add_closer(&c(0x70), &[c(0x78)]);
        l.answered(&c(0x70));
        assert_eq!(ask(l.next_request()), Some(c(0x78).id)); // dead
        assert_eq!(l.next_request(), Some(Next::AskSuccessors(c(0x70))));
        // 0x70's successors: the dead 0x78, then 0x90, which follows the key.
        assert_eq!(l.add_successor_list(&c(0x70), &[c(0x78), c(0x90)], |_| false).map(|x| x.id), Some(c(0x90).id));
        // The key's owner by the list, 0x90, is known dead: its successor has taken over.
        assert_eq!(
            l.add_successor_list(&c(0x70), &[c(0x78), c(0x90), c(0xa0)], |id| id == c(0x90).id).map(|x| x.id),
            Some(c(0xa0).id)
        );
        assert!(l.take_own_list());
        assert!(!l.take_own_list());
    }
}
