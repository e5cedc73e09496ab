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
//! An answer is only final when the node it names has said so itself (dSIP's rule that the
//! peer responsible answers for itself; Chord ToN §V-D's observation that right after failures
//! the answer otherwise names the key's dead old successor). A [`Next::Confirm`] asks the named
//! node the same question; if it does not answer, the backups the answer carried (the
//! answerer's successor list after it) are asked in turn, and the first live one takes the
//! key over. The asking is hedged: a backup may be asked while the nodes before it are still
//! awaited, and several may be in flight (the chain), but the answer is decided in the
//! chain's order ([`Lookup::resolve`]), so a backup is taken only once every node before it
//! has failed, unless it names itself. Confirmations are counted apart from routing hops.
//!
//! This module holds the state only; [`super::chord`] sends the requests and reads the clock.
//!
//! [`Response::Closer`]: super::rpc::Response::Closer

use std::collections::{BTreeMap, BTreeSet, VecDeque};

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
    /// The named answer and its backups, not yet asked to confirm, in order.
    confirm: VecDeque<Contact>,
    /// The nodes asked to confirm the current answer, in order, and what each has said.
    chain: Vec<(Contact, Link)>,
    /// Whether the chain's first node stands in for one known to have failed, so that any
    /// answer from it will do.
    fell_back: bool,
    /// Nodes that were asked to confirm and disagreed (their view of their own arc lags, e.g.
    /// their predecessor died unnoticed). Alive, and named again by a live node's successor
    /// list, they are taken: asking again would only repeat the disagreement.
    disputed: BTreeSet<NodeId>,
    /// What a live node's successor list said about the key when it also offered new, closer
    /// candidates: `(its distance to the key, answer, backups, stand-in)`. Used once those
    /// candidates are exhausted, instead of walking back to nodes farther from the key.
    list_answer: Option<(NodeId, Contact, Vec<Contact>, bool)>,
    confirmations: u32,
    path: Vec<Contact>,
}

/// Where one node asked to confirm an answer stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Link {
    Waiting,
    Failed,
    /// It answered; `itself` when it named itself responsible.
    Said {
        itself: bool,
    },
}

/// What the confirmations of an answer add up to ([`Lookup::resolve`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolution {
    /// This node is responsible: the lookup is done.
    Done(Contact),
    /// A node before the first that answered is still awaited.
    Wait,
    /// The node named responsible answered, disagreeing: carry on from what it said.
    Disputed,
    /// Every node asked has failed: ask the next backup, or carry on routing.
    Failed,
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
            confirm: VecDeque::new(),
            chain: Vec::new(),
            fell_back: false,
            disputed: BTreeSet::new(),
            list_answer: None,
            confirmations: 0,
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

    /// The key looked up.
    pub fn key(&self) -> NodeId {
        self.key
    }

    /// The nodes asked so far, in order.
    pub fn path(&self) -> &[Contact] {
        &self.path
    }

    /// The nodes asked, in order.
    pub fn into_path(self) -> Vec<Contact> {
        self.path
    }

    /// Nodes on the path that answered (neither failed nor refused): the hops that count
    /// against the hop limit, as only an element that forwards decrements SIP's Max-Forwards
    /// (RFC 3261 §16.6 step 3). A dead node asked costs the querier one RPC deadline but
    /// routes nothing.
    pub fn answered_hops(&self) -> usize {
        self.path.len().saturating_sub(self.failed.len())
    }

    /// How many of the nodes on the path were asked to confirm an answer (not routing hops).
    pub fn confirmations(&self) -> u32 {
        self.confirmations
    }

    /// An answer named `node` responsible, with `backups` to take over if it has failed: ask
    /// them, in order, before anything else. `fell_back` says `node` is itself a stand-in for
    /// a node known to have failed, so any answer from it will do. Nodes already known to have
    /// failed (here or by `skip`) are left out.
    /// Returns false when `node` needs no asking: it already answered this lookup, disagreeing.
    pub fn confirm(
        &mut self,
        node: Contact,
        backups: &[Contact],
        fell_back: bool,
        skip: impl Fn(NodeId) -> bool,
    ) -> bool {
        if self.disputed.contains(&node.id) {
            return false;
        }
        self.confirm.clear();
        self.chain.clear();
        self.fell_back = fell_back;
        let mut first = true;
        for c in std::iter::once(&node).chain(backups) {
            let usable = c.is_plausible() && !self.failed.contains(&c.id) && !skip(c.id);
            if usable && !self.confirm.iter().any(|x| x.id == c.id) {
                self.confirm.push_back(c.clone());
            } else if first {
                self.fell_back = true;
            }
            first = false;
        }
        true
    }

    /// Whether `asked` was asked to confirm the current answer.
    pub fn is_confirming(&self, asked: NodeId) -> bool {
        self.chain.iter().any(|(c, _)| c.id == asked)
    }

    /// Whether the current answer is being confirmed: routing waits meanwhile.
    pub fn confirming(&self) -> bool {
        !self.chain.is_empty()
    }

    /// Whether `asked` was asked to confirm the current answer and has not yet answered.
    pub fn awaits(&self, asked: NodeId) -> bool {
        self.chain.iter().any(|(c, l)| c.id == asked && *l == Link::Waiting)
    }

    /// Whether a backup waits to be asked.
    pub fn has_backup(&self) -> bool {
        !self.confirm.is_empty()
    }

    /// `asked`, asked to confirm, answered; `says_itself` when it named itself responsible.
    pub fn confirmed(&mut self, asked: NodeId, says_itself: bool) {
        self.set_link(asked, Link::Said { itself: says_itself });
    }

    /// Records what `asked`, awaited in the chain, came to; later news of it changes nothing.
    fn set_link(&mut self, asked: NodeId, to: Link) {
        if let Some((_, link)) = self.chain.iter_mut().find(|(c, l)| c.id == asked && *l == Link::Waiting) {
            *link = to;
        }
    }

    /// What the confirmations so far decide, read in the chain's order: the first node that
    /// names itself is taken; otherwise the first that answered at all, once every node
    /// before it has failed (the nodes before it in the list failed, so it holds their arc
    /// now, or will at its next `check_predecessor`), except that the named node itself
    /// answering otherwise disputes the answer.
    pub fn resolve(&mut self) -> Resolution {
        if let Some((c, _)) = self.chain.iter().find(|(_, l)| *l == Link::Said { itself: true }) {
            return Resolution::Done(c.clone());
        }
        for (i, (c, link)) in self.chain.iter().enumerate() {
            match link {
                Link::Failed => continue,
                Link::Waiting => return Resolution::Wait,
                Link::Said { .. } if i == 0 && !self.fell_back => {
                    let named = c.id;
                    self.disputed.insert(named);
                    self.confirm.clear();
                    self.chain.clear();
                    return Resolution::Disputed;
                }
                Link::Said { .. } => return Resolution::Done(c.clone()),
            }
        }
        if self.confirm.is_empty() {
            // Every node of the answer failed: routing goes on.
            self.chain.clear();
        }
        Resolution::Failed
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
        self.set_link(id, Link::Failed);
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
        self.successor_list_answer(answerer, list, skip).map(|(c, _, _)| c)
    }

    /// As [`Lookup::add_successor_list`], with the entries after the answer (its backups) and
    /// whether the answer stands in for a failed entry before it.
    pub fn successor_list_answer(
        &mut self,
        answerer: &Contact,
        list: &[Contact],
        skip: impl Fn(NodeId) -> bool,
    ) -> Option<(Contact, Vec<Contact>, bool)> {
        let before = self.candidates.len();
        self.add_closer(answerer, list);
        let mut previous = answerer.id;
        let k = list.iter().position(|s| {
            let hit = self.key.in_left_open(previous, s.id);
            previous = s.id;
            hit
        })?;
        let at = list[k..].iter().position(|s| s.is_plausible() && !self.failed.contains(&s.id) && !skip(s.id))?;
        let answer = (list[k + at].clone(), list[k + at + 1..].to_vec(), at > 0);
        if self.candidates.len() > before {
            let distance = answerer.id.distance(self.key);
            if self.list_answer.as_ref().is_none_or(|(d, ..)| distance < *d) {
                self.list_answer = Some((distance, answer.0, answer.1, answer.2));
            }
            return None;
        }
        Some(answer)
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
        if let Some(c) = self.confirm.pop_front() {
            self.chain.push((c.clone(), Link::Waiting));
            self.confirmations += 1;
            self.path.push(c.clone());
            return Some(Next::Confirm(c));
        }
        if self.confirming() {
            // The last backup is asked; what the chain says decides.
            return None;
        }
        let candidate = self.candidates.first_key_value().map(|(d, _)| *d);
        if let Some((d, ..)) = &self.list_answer {
            if candidate.is_none_or(|c| c > *d) {
                let (_, node, backups, fell_back) = self.list_answer.take()?;
                return Some(Next::ListAnswer(node, backups, fell_back));
            }
        }
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
    /// `FindSuccessor(key)` to the node an answer named, to hear it from the node itself.
    Confirm(Contact),
    /// No request: a live node's successor list names this node responsible (then backups,
    /// and whether it stands in for a failed entry); confirm it.
    ListAnswer(Contact, Vec<Contact>, bool),
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
