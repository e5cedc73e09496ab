//! The successor list (Chord ToN §IV-E.3, "Failure and Replication"; Zave, "Reasoning about
//! identifier spaces", 2012).
//!
//! A node keeps its first `r` successors, nearest first. When the first fails, the next takes
//! its place; `stabilize` rebuilds the list from the successor's own list shifted by one. The
//! list never contains its owner, and always runs strictly clockwise: in a ring smaller than
//! `r + 1` the successor's list wraps around past us, and is cut there.
//!
//! This module does not talk to anyone; [`super::chord`] decides when to reconcile.

use super::id::NodeId;
use super::rpc::Contact;

/// Up to `r` successors, nearest first, never including the owner.
#[derive(Debug, Clone)]
pub struct SuccessorList {
    me: NodeId,
    r: usize,
    list: Vec<Contact>,
}

impl SuccessorList {
    /// An empty list for node `me`, holding at most `r` (at least one) entries.
    pub fn new(me: NodeId, r: usize) -> SuccessorList {
        SuccessorList { me, r: r.max(1), list: Vec::new() }
    }

    /// The configured length `r`.
    pub fn capacity(&self) -> usize {
        self.r
    }

    /// The nearest live successor we know of, if any.
    pub fn first(&self) -> Option<&Contact> {
        self.list.first()
    }

    /// The list, nearest first.
    pub fn as_slice(&self) -> &[Contact] {
        &self.list
    }

    /// Whether the list is empty.
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// How many successors are known.
    pub fn len(&self) -> usize {
        self.list.len()
    }

    /// Whether the node `id` is on the list.
    pub fn contains(&self, id: NodeId) -> bool {
        self.list.iter().any(|c| c.id == id)
    }

    /// Drops `id`; returns whether it was there.
    pub fn remove(&mut self, id: NodeId) -> bool {
        let before = self.list.len();
        self.list.retain(|c| c.id != id);
        self.list.len() != before
    }

    /// Replaces the list with `candidates`, sanitised: kept in strictly increasing clockwise
    /// distance from us (so a wrapped list is cut where it comes back to us, and garbage order
    /// from a confused or hostile peer stops at the first step backwards), without entries
    /// `skip` rejects (recently failed nodes), at most `r` long.
    pub fn replace<'a>(&mut self, candidates: impl IntoIterator<Item = &'a Contact>, skip: impl Fn(&Contact) -> bool) {
        self.list.clear();
        let mut last = NodeId::ZERO; // distance from me of the previous entry
        for c in candidates {
            if self.list.len() == self.r {
                break;
            }
            let d = self.me.distance(c.id);
            if d <= last {
                // Zero distance is ourselves: the list has come round the ring.
                break;
            }
            if !c.is_plausible() || skip(c) {
                continue;
            }
            last = d;
            self.list.push(c.clone());
        }
    }

    /// `stabilize`'s reconciliation: our list becomes `successor` followed by the successor's
    /// own list (Chord ToN §IV-E.3: "copying its successor's list, removing its last entry,
    /// and prepending" the successor).
    pub fn reconcile(&mut self, successor: &Contact, their_list: &[Contact], skip: impl Fn(&Contact) -> bool) {
        self.replace(std::iter::once(successor).chain(their_list), |c| c.id != successor.id && skip(c));
    }

    /// Puts `node` in its place by ring order (replacing an entry with the same ID, e.g. a
    /// node restarted at a new address), keeping at most `r` entries.
    pub fn insert(&mut self, node: &Contact) {
        if node.id == self.me || !node.is_plausible() {
            return;
        }
        let mut merged: Vec<Contact> = self.list.iter().filter(|c| c.id != node.id).cloned().collect();
        let d = self.me.distance(node.id);
        let at = merged.partition_point(|c| self.me.distance(c.id) < d);
        merged.insert(at, node.clone());
        self.replace(&merged, |_| false);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, SocketAddr};

    fn c(v: u8) -> Contact {
        let mut b = [0u8; 20];
        b[0] = v;
        Contact::new(NodeId::from_bytes(b), SocketAddr::from((Ipv4Addr::new(10, 0, 0, v.max(1)), 5060)))
    }

    fn ids(l: &SuccessorList) -> Vec<u8> {
        l.as_slice().iter().map(|c| c.id.to_bytes()[0]).collect()
    }

    #[test]
    fn reconcile_shifts_and_truncates() {
        let mut l = SuccessorList::new(c(10).id, 3);
        l.reconcile(&c(20), &[c(30), c(40), c(50)], |_| false);
        assert_eq!(ids(&l), [20, 30, 40]);
    }

    #[test]
    fn a_wrapped_list_is_cut_at_ourselves() {
        // Ring {10, 20, 30}: 20's list is [30, 10]; ours must be [20, 30].
        let mut l = SuccessorList::new(c(10).id, 8);
        l.reconcile(&c(20), &[c(30), c(10), c(20)], |_| false);
        assert_eq!(ids(&l), [20, 30]);
    }

    #[test]
    fn out_of_order_entries_end_the_list_and_skipped_ones_vanish() {
        let mut l = SuccessorList::new(c(200).id, 8);
        l.reconcile(&c(250), &[c(5), c(3), c(9)], |_| false);
        assert_eq!(ids(&l), [250, 5]);
        l.reconcile(&c(250), &[c(5), c(9), c(12)], |x| x.id == c(9).id);
        assert_eq!(ids(&l), [250, 5, 12]);
    }

    #[test]
    fn insert_keeps_ring_order_and_backups() {
        let mut l = SuccessorList::new(c(10).id, 3);
        l.reconcile(&c(30), &[c(40), c(50)], |_| false);
        l.insert(&c(20));
        assert_eq!(ids(&l), [20, 30, 40]);
        l.insert(&c(35));
        assert_eq!(ids(&l), [20, 30, 35]);
        l.insert(&c(60)); // beyond the last of r entries: no room
        assert_eq!(ids(&l), [20, 30, 35]);
        // The same node again (a restart) is replaced, not duplicated.
        let moved = Contact::new(c(30).id, SocketAddr::from((Ipv4Addr::new(10, 9, 9, 9), 5070)));
        l.insert(&moved);
        assert_eq!(ids(&l), [20, 30, 35]);
        assert_eq!(l.as_slice()[1].addr, moved.addr);
        l.insert(&c(10)); // ourselves: never
        assert_eq!(ids(&l), [20, 30, 35]);
        assert!(l.remove(c(30).id));
        assert_eq!(ids(&l), [20, 35]);
    }
}
