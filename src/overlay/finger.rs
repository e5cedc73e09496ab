//! The finger table (Chord §4.3 / ToN §IV-D, Table I; dSIP dhtchord §4.1).
//!
//! Entry `i` (counting from zero) should hold `successor(me + 2^i)`: the first node at or after
//! the finger's *start*. With `N` nodes only about `log2 N` entries are distinct; the entries
//! whose start falls before our successor all hold the successor. Entries start out as
//! ourselves (a ring of one) and are improved by [`FingerTable::set_successor_of`] when a
//! `fix_fingers` lookup returns, by [`FingerTable::offer`] when a live node shows itself, and
//! seeded by [`FingerTable::rebuild`] from what an admitting node tells a joiner.
//!
//! The table does not route: `closest_preceding_node` is in [`super::chord`], over fingers and
//! the successor list together.

use super::id::{NodeId, ID_BITS};
use super::rpc::Contact;

/// One row of the table, as [`FingerTable::iter`] shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Finger<'a> {
    /// `i`, from 0 to 159.
    pub index: u32,
    /// `me + 2^i`.
    pub start: NodeId,
    /// Our best knowledge of `successor(start)`; `None` after the node there failed.
    pub node: Option<&'a Contact>,
}

/// `ID_BITS` fingers for one node.
#[derive(Debug, Clone)]
pub struct FingerTable {
    me: Contact,
    entries: Vec<Option<Contact>>,
}

impl FingerTable {
    /// A table for a ring of one: every finger is `me`.
    pub fn new(me: Contact) -> FingerTable {
        let entries = vec![Some(me.clone()); ID_BITS as usize];
        FingerTable { me, entries }
    }

    /// Finger `i`'s start, `me + 2^i`.
    pub fn start(&self, i: u32) -> NodeId {
        self.me.id.add_pow2(i)
    }

    /// The node entry `i` names, if any.
    pub fn get(&self, i: u32) -> Option<&Contact> {
        self.entries.get(i as usize).and_then(Option::as_ref)
    }

    /// Every entry, in finger order.
    pub fn iter(&self) -> impl Iterator<Item = Finger<'_>> + '_ {
        self.entries.iter().enumerate().map(|(i, node)| {
            let index = i as u32;
            Finger { index, start: self.start(index), node: node.as_ref() }
        })
    }

    /// The distinct nodes in the table other than ourselves, nearest first.
    pub fn distinct(&self) -> Vec<&Contact> {
        let mut out: Vec<&Contact> = Vec::new();
        for c in self.entries.iter().flatten() {
            if c.id != self.me.id && !out.iter().any(|o| o.id == c.id) {
                out.push(c);
            }
        }
        out.sort_by_key(|c| self.me.id.distance(c.id));
        out
    }

    /// Records that `node` is `successor(start(i))`. Every later finger whose start also lies
    /// in `[start(i), node]` has the same successor and is set too. Returns the first index
    /// not covered (160 when the table is done).
    pub fn set_successor_of(&mut self, i: u32, node: &Contact) -> u32 {
        let first = self.start(i);
        let reach = first.distance(node.id);
        let mut j = i;
        while j < ID_BITS && first.distance(self.start(j)) <= reach {
            self.entries[j as usize] = Some(node.clone());
            j += 1;
        }
        j.max(i + 1)
    }

    /// Forgets a node that failed; its entries become unknown until fixed.
    pub fn remove(&mut self, id: NodeId) -> bool {
        let mut removed = false;
        for e in &mut self.entries {
            if e.as_ref().is_some_and(|c| c.id == id) {
                *e = None;
                removed = true;
            }
        }
        removed
    }

    /// Whether [`offer`](Self::offer)ing `c` would change an entry.
    pub fn would_improve(&self, c: &Contact) -> bool {
        if c.id == self.me.id {
            return false;
        }
        let top = self.me.id.distance(c.id).bit_length();
        (0..top).rev().any(|i| match &self.entries[i as usize] {
            None => true,
            Some(e) if e.id == c.id => e.addr != c.addr,
            Some(e) => self.start(i).distance(c.id) < self.start(i).distance(e.id),
        })
    }

    /// A live node `c` showed itself: use it wherever it is a closer successor of a finger's
    /// start than what we hold. Never makes an entry worse.
    pub fn offer(&mut self, c: &Contact) {
        if c.id == self.me.id {
            return;
        }
        // Finger i's start is at distance 2^i; c can only serve fingers whose start it reaches.
        let top = self.me.id.distance(c.id).bit_length();
        for i in (0..top).rev() {
            let start = self.start(i);
            let gain = match &self.entries[i as usize] {
                None => true,
                Some(e) if e.id == c.id => {
                    if e.addr != c.addr {
                        // Same node, new address (a restart elsewhere): take the fresh one.
                        self.entries[i as usize] = Some(c.clone());
                    }
                    continue;
                }
                Some(e) => start.distance(c.id) < start.distance(e.id),
            };
            if !gain {
                // Lower fingers start earlier still; if c is no gain here it rarely is there.
                break;
            }
            self.entries[i as usize] = Some(c.clone());
        }
    }

    /// Seeds every finger with the best successor of its start found among `known` (plus
    /// ourselves): what a joiner does with its admitting node's fingers and neighbours
    /// (dSIP's `DHT-Link` F, P and S entries). `fix_fingers` corrects the guesses later.
    pub fn rebuild<'a>(&mut self, known: impl IntoIterator<Item = &'a Contact>) {
        let me = self.me.id;
        let mut sorted: Vec<&Contact> = known.into_iter().filter(|c| c.id != me && c.is_plausible()).collect();
        sorted.sort_by_key(|c| me.distance(c.id));
        sorted.dedup_by_key(|c| c.id);
        let mut k = 0;
        for i in 0..ID_BITS {
            let d = NodeId::pow2(i);
            while k < sorted.len() && me.distance(sorted[k].id) < d {
                k += 1;
            }
            self.entries[i as usize] = Some(sorted.get(k).copied().unwrap_or(&self.me).clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, SocketAddr};

    fn c(top: u8) -> Contact {
        let mut b = [0u8; 20];
        b[0] = top;
        Contact::new(NodeId::from_bytes(b), SocketAddr::from((Ipv4Addr::new(10, 0, 0, top.max(1)), 5060)))
    }

    #[test]
    fn rebuild_picks_the_successor_of_each_start() {
        // me = 0x00…, others at 0x10…, 0x80…: finger 159 starts at 0x80…, fingers 156..=158 at
        // 0x10…–0x40…, finger 155 at 0x08….
        let mut t = FingerTable::new(c(0));
        t.rebuild([&c(0x10), &c(0x80)]);
        assert_eq!(t.get(159).map(|x| x.id), Some(c(0x80).id));
        assert_eq!(t.get(158).map(|x| x.id), Some(c(0x80).id));
        assert_eq!(t.get(156).map(|x| x.id), Some(c(0x10).id));
        assert_eq!(t.get(155).map(|x| x.id), Some(c(0x10).id));
        assert_eq!(t.get(0).map(|x| x.id), Some(c(0x10).id));
        assert_eq!(t.distinct().len(), 2);
    }

    #[test]
    fn a_lone_node_points_at_itself_and_rebuild_wraps_to_it() {
        let mut t = FingerTable::new(c(0x40));
        assert!(t.iter().all(|f| f.node.map(|n| n.id) == Some(c(0x40).id)));
        t.rebuild([&c(0x50)]);
        // Finger 159 starts at 0xc0…: going clockwise from there we meet ourselves first.
        assert_eq!(t.get(159).map(|x| x.id), Some(c(0x40).id));
        // Finger 155 starts at 0x48…: 0x50 is its successor.
        assert_eq!(t.get(155).map(|x| x.id), Some(c(0x50).id));
    }

    #[test]
    fn set_successor_of_fills_the_covered_fingers() {
        let mut t = FingerTable::new(c(0));
        let next = t.set_successor_of(150, &c(0x30));
        // starts 2^150 … 2^157 (0x20…) are ≤ 0x30…; 2^158 = 0x40… is not.
        assert_eq!(next, 158);
        assert_eq!(t.get(157).map(|x| x.id), Some(c(0x30).id));
        assert_eq!(t.get(158).map(|x| x.id), Some(c(0).id));
    }

    #[test]
    fn offer_only_improves() {
        let mut t = FingerTable::new(c(0));
        t.rebuild([&c(0x10), &c(0x80)]);
        t.offer(&c(0x90)); // worse than 0x80 for finger 159
        assert_eq!(t.get(159).map(|x| x.id), Some(c(0x80).id));
        t.offer(&c(0x50)); // better for 158 (start 0x40) only
        assert_eq!(t.get(158).map(|x| x.id), Some(c(0x50).id));
        assert_eq!(t.get(159).map(|x| x.id), Some(c(0x80).id));
        assert_eq!(t.get(157).map(|x| x.id), Some(c(0x50).id)); // start 0x20: 0x50 beats 0x80
        assert_eq!(t.get(156).map(|x| x.id), Some(c(0x10).id)); // start 0x10: already exact
        assert!(t.remove(c(0x50).id));
        assert!(t.get(158).is_none());
        t.offer(&c(0x60));
        assert_eq!(t.get(158).map(|x| x.id), Some(c(0x60).id));
    }
}
