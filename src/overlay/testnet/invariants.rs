//! The ring's correctness conditions, checked against the truth the test bench knows: the
//! sorted IDs of its members (live nodes that have not left).
//!
//! Chord's definitions (ToN §IV-E; Zave 2012): the ring is *correct* when every member's
//! successor is the next member clockwise and its predecessor the previous one; the successor
//! lists are correct when each holds the next `min(r, N - 1)` members in order. Fingers are
//! an optimisation, measured as a fraction rather than required.
//!
//! The checks read a ring through [`RingView`], so the abstract-RPC [`TestNet`] and the
//! simulator of whole SIP peers (`crate::sim`) are held to the same conditions.

use std::time::Duration;

use super::TestNet;
use crate::overlay::chord::{Chord, NodeState};
use crate::overlay::id::NodeId;

/// What the invariants need to know about a network of nodes: which are in the ring, each
/// one's Chord state, and how to name a failing run (its virtual time and seed).
pub trait RingView {
    /// Node indices that should be in the ring: alive and not gone (`Left`).
    fn member_indices(&self) -> Vec<usize>;
    /// Node `ix`'s Chord core, if the network still holds it.
    fn chord_of(&self, ix: usize) -> Option<&Chord>;
    /// Virtual time since the network started.
    fn elapsed_time(&self) -> Duration;
    /// The seed that replays the run.
    fn run_seed(&self) -> u64;
}

impl RingView for TestNet {
    fn member_indices(&self) -> Vec<usize> {
        self.members().collect()
    }

    fn chord_of(&self, ix: usize) -> Option<&Chord> {
        self.node(ix)
    }

    fn elapsed_time(&self) -> Duration {
        self.elapsed()
    }

    fn run_seed(&self) -> u64 {
        self.seed()
    }
}

/// An invariant that does not hold, with the evidence.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{invariant} violated after {elapsed:?} (seed {seed}): {detail}")]
pub struct InvariantViolation {
    /// The invariant's name.
    pub invariant: &'static str,
    /// What was wrong.
    pub detail: String,
    /// Virtual time into the run when it was found.
    pub elapsed: Duration,
    /// The run's seed: the failure replays from it.
    pub seed: u64,
}

fn violation<N: RingView + ?Sized>(net: &N, invariant: &'static str, detail: String) -> InvariantViolation {
    InvariantViolation { invariant, detail, elapsed: net.elapsed_time(), seed: net.run_seed() }
}

/// The members' IDs in ring order, each with its index.
pub fn sorted_members<N: RingView + ?Sized>(net: &N) -> Vec<(NodeId, usize)> {
    let mut members: Vec<(NodeId, usize)> =
        net.member_indices().into_iter().filter_map(|i| net.chord_of(i).map(|c| (c.me().id, i))).collect();
    members.sort();
    members
}

/// The admitted members' IDs in ring order, each with its index: who should answer lookups.
pub fn sorted_admitted<N: RingView + ?Sized>(net: &N) -> Vec<(NodeId, usize)> {
    let mut admitted: Vec<(NodeId, usize)> = net
        .member_indices()
        .into_iter()
        .filter_map(|i| net.chord_of(i).map(|c| (c, i)))
        .filter(|(c, _)| matches!(c.state(), NodeState::Joined | NodeState::Alone))
        .map(|(c, i)| (c.me().id, i))
        .collect();
    admitted.sort();
    admitted
}

/// The member responsible for `key` (`successor(key)`): the first at or after it, wrapping.
pub fn true_successor(sorted: &[(NodeId, usize)], key: NodeId) -> Option<NodeId> {
    let i = sorted.partition_point(|(id, _)| *id < key);
    sorted.get(i).or(sorted.first()).map(|(id, _)| *id)
}

/// Every member's successor is the next member in ID order (itself when alone).
pub fn successors_match_sorted_ids<N: RingView + ?Sized>(net: &N) -> Result<(), InvariantViolation> {
    let sorted = sorted_members(net);
    let n = sorted.len();
    for (k, (id, ix)) in sorted.iter().enumerate() {
        let expected = sorted[(k + 1) % n].0;
        let actual = net.chord_of(*ix).map(|c| c.successor().id);
        if actual != Some(expected) {
            return Err(violation(
                net,
                "successors_match_sorted_ids",
                format!("node {id:?} (#{ix}) has successor {actual:?}, expected {expected:?} ({n} members)"),
            ));
        }
    }
    Ok(())
}

/// Every member's predecessor is the previous member in ID order (none when alone).
pub fn predecessors_match<N: RingView + ?Sized>(net: &N) -> Result<(), InvariantViolation> {
    let sorted = sorted_members(net);
    let n = sorted.len();
    for (k, (id, ix)) in sorted.iter().enumerate() {
        let expected = if n == 1 { None } else { Some(sorted[(k + n - 1) % n].0) };
        let actual = net.chord_of(*ix).and_then(|c| c.predecessor().map(|p| p.id));
        if actual != expected {
            return Err(violation(
                net,
                "predecessors_match",
                format!("node {id:?} (#{ix}) has predecessor {actual:?}, expected {expected:?} ({n} members)"),
            ));
        }
    }
    Ok(())
}

/// Every member's successor list is exactly the next `min(r, N - 1)` members.
pub fn successor_lists_correct<N: RingView + ?Sized>(net: &N) -> Result<(), InvariantViolation> {
    let sorted = sorted_members(net);
    let n = sorted.len();
    for (k, (id, ix)) in sorted.iter().enumerate() {
        let Some(node) = net.chord_of(*ix) else { continue };
        let r = node.config().successor_list_len.max(1);
        let expected: Vec<NodeId> = (1..=r.min(n - 1)).map(|j| sorted[(k + j) % n].0).collect();
        let actual: Vec<NodeId> = node.successors().iter().map(|c| c.id).collect();
        if actual != expected {
            return Err(violation(
                net,
                "successor_lists_correct",
                format!("node {id:?} (#{ix}) has successor list {actual:?}, expected {expected:?}"),
            ));
        }
    }
    Ok(())
}

/// The ring is correct: successors, predecessors and successor lists all match the members.
pub fn ring_correct<N: RingView + ?Sized>(net: &N) -> Result<(), InvariantViolation> {
    successors_match_sorted_ids(net)?;
    predecessors_match(net)?;
    successor_lists_correct(net)
}

/// The fraction of all members' successor-list entries that hold the member they should (the
/// `j`-th entry the `j`-th next member), over `min(r, N - 1)` entries per member.
pub fn successor_entries_correct_fraction<N: RingView + ?Sized>(net: &N) -> f64 {
    let sorted = sorted_members(net);
    let n = sorted.len();
    let (mut right, mut total) = (0u64, 0u64);
    for (k, (_, ix)) in sorted.iter().enumerate() {
        let Some(node) = net.chord_of(*ix) else { continue };
        let r = node.config().successor_list_len.max(1).min(n - 1);
        let actual = node.successors();
        for j in 1..=r {
            total += 1;
            if actual.get(j - 1).map(|c| c.id) == Some(sorted[(k + j) % n].0) {
                right += 1;
            }
        }
    }
    if total == 0 {
        return 1.0;
    }
    right as f64 / total as f64
}

/// The fraction of all members' fingers (160 each) that hold the true successor of their
/// start. Fingers whose start precedes the successor are included; with `N` nodes about
/// `160 - log2 N` of each node's fingers are of that kind.
pub fn fingers_correct_fraction<N: RingView + ?Sized>(net: &N) -> f64 {
    let sorted = sorted_members(net);
    let (mut right, mut total) = (0u64, 0u64);
    for (_, ix) in &sorted {
        let Some(node) = net.chord_of(*ix) else { continue };
        for f in node.fingers() {
            total += 1;
            if f.node.map(|c| c.id) == true_successor(&sorted, f.start) {
                right += 1;
            }
        }
    }
    if total == 0 {
        return 1.0;
    }
    right as f64 / total as f64
}

/// The fraction of *distinct* fingers (each node's table entries after its successor) that are
/// correct: the ones that shorten paths, and the ones a lookup-based `fix_fingers` must find.
pub fn far_fingers_correct_fraction<N: RingView + ?Sized>(net: &N) -> f64 {
    let sorted = sorted_members(net);
    let (mut right, mut total) = (0u64, 0u64);
    for (id, ix) in &sorted {
        let Some(node) = net.chord_of(*ix) else { continue };
        let Some(succ) = true_successor(&sorted, id.add_pow2(0)) else { continue };
        for f in node.fingers() {
            if f.start.in_left_open(*id, succ) {
                continue;
            }
            total += 1;
            if f.node.map(|c| c.id) == true_successor(&sorted, f.start) {
                right += 1;
            }
        }
    }
    if total == 0 {
        return 1.0;
    }
    right as f64 / total as f64
}

/// Fails unless [`far_fingers_correct_fraction`] is at least `min`.
pub fn fingers_at_least<N: RingView + ?Sized>(net: &N, min: f64) -> Result<(), InvariantViolation> {
    let f = far_fingers_correct_fraction(net);
    if f < min {
        return Err(violation(net, "fingers_correct_fraction", format!("{f:.4} of far fingers correct, want {min}")));
    }
    Ok(())
}

/// One member whose successor or predecessor is not the one the sorted IDs say, for
/// diagnosing a ring that did not heal. IDs are shown shortened (`NodeId`'s `Debug`).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct WrongNode {
    /// The node, short ID.
    pub node: String,
    /// Its index in the network.
    pub index: usize,
    /// Its state (`joined`…).
    pub state: String,
    /// Its successor.
    pub successor: String,
    /// The successor it should have.
    pub expected_successor: String,
    /// Its predecessor.
    pub predecessor: Option<String>,
    /// The predecessor it should have.
    pub expected_predecessor: Option<String>,
    /// Its successor list, nearest first; entries that are not members are marked `†`.
    pub successors: Vec<String>,
}

/// The shape of a ring that is not correct: who is wrong, and what following successor
/// pointers from every member gives (Zave's terms: one cycle when the ring is merely
/// unfinished; several cycles, or one that winds round the identifier space more than once,
/// when it is "loopy"; members outside every cycle hang off it).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct RingDiagnosis {
    /// Nodes that should be in the ring.
    pub members: usize,
    /// Members whose successor is wrong.
    pub wrong_successors: usize,
    /// Members whose predecessor is wrong.
    pub wrong_predecessors: usize,
    /// Members whose successor list is wrong.
    pub wrong_successor_lists: usize,
    /// Members not `Joined` (or `Alone` in a ring of one): joining or rejoining.
    pub not_joined: usize,
    /// Distinct cycles reached by following successor pointers from every member.
    pub ring_cycles: usize,
    /// Their lengths, longest first (at most 10 shown).
    pub cycle_lengths: Vec<usize>,
    /// Times each of those cycles winds round the identifier space (1 for a proper ring).
    pub cycle_windings: Vec<usize>,
    /// Members whose successor pointer leads to a node that is not a member (dead or gone).
    pub dangling: usize,
    /// Up to the first few members with a wrong successor or predecessor.
    pub wrong_nodes: Vec<WrongNode>,
}

/// Describes what is wrong with the ring (empty lists and one cycle when it is correct);
/// `max_wrong` caps [`RingDiagnosis::wrong_nodes`].
pub fn diagnose<N: RingView + ?Sized>(net: &N, max_wrong: usize) -> RingDiagnosis {
    use std::collections::BTreeMap;
    let sorted = sorted_members(net);
    let n = sorted.len();
    let position: BTreeMap<NodeId, usize> = sorted.iter().enumerate().map(|(k, (id, _))| (*id, k)).collect();
    let mut d = RingDiagnosis { members: n, ..RingDiagnosis::default() };
    if n == 0 {
        return d;
    }
    let name = |id: NodeId| {
        if position.contains_key(&id) {
            format!("{id:?}")
        } else {
            format!("{id:?}†")
        }
    };
    // next[k]: the sorted position of member k's successor, if that is a member.
    let mut next: Vec<Option<usize>> = vec![None; n];
    for (k, (id, ix)) in sorted.iter().enumerate() {
        let Some(node) = net.chord_of(*ix) else { continue };
        let succ = node.successor().id;
        next[k] = position.get(&succ).copied();
        if next[k].is_none() {
            d.dangling += 1;
        }
        let expected_succ = sorted[(k + 1) % n].0;
        let expected_pred = if n == 1 { None } else { Some(sorted[(k + n - 1) % n].0) };
        let pred = node.predecessor().map(|p| p.id);
        let r = node.config().successor_list_len.max(1);
        let expected_list: Vec<NodeId> = (1..=r.min(n - 1)).map(|j| sorted[(k + j) % n].0).collect();
        let list: Vec<NodeId> = node.successors().iter().map(|c| c.id).collect();
        let in_ring = match node.state() {
            NodeState::Joined => true,
            NodeState::Alone => n == 1,
            _ => false,
        };
        d.not_joined += usize::from(!in_ring);
        let succ_wrong = succ != expected_succ;
        let pred_wrong = pred != expected_pred;
        d.wrong_successors += usize::from(succ_wrong);
        d.wrong_predecessors += usize::from(pred_wrong);
        d.wrong_successor_lists += usize::from(list != expected_list);
        if (succ_wrong || pred_wrong) && d.wrong_nodes.len() < max_wrong {
            d.wrong_nodes.push(WrongNode {
                node: format!("{id:?}"),
                index: *ix,
                state: format!("{:?}", node.state()),
                successor: name(succ),
                expected_successor: format!("{expected_succ:?}"),
                predecessor: pred.map(name),
                expected_predecessor: expected_pred.map(|p| format!("{p:?}")),
                successors: list.iter().map(|c| name(*c)).collect(),
            });
        }
    }
    // Cycles of the successor graph: walk from every unvisited member, marking the walk;
    // a walk that meets its own marks has found a new cycle.
    let mut seen: Vec<usize> = vec![usize::MAX; n]; // the walk that first visited each member
    let mut cycles: Vec<(usize, usize)> = Vec::new();
    for startk in 0..n {
        let mut k = startk;
        while seen[k] == usize::MAX {
            seen[k] = startk;
            match next[k] {
                Some(j) => k = j,
                None => break,
            }
        }
        if seen[k] == startk && next[k].is_some() {
            // k lies on a new cycle: measure it, and how far round the ring it goes.
            let (mut len, mut winding, mut j) = (0usize, 0usize, k);
            loop {
                let after = next[j].unwrap_or(j);
                len += 1;
                if after <= j {
                    winding += 1; // passed the top of the identifier space
                }
                j = after;
                if j == k {
                    break;
                }
            }
            cycles.push((len, winding.max(1)));
        }
    }
    cycles.sort_by(|a, b| b.cmp(a));
    d.ring_cycles = cycles.len();
    d.cycle_lengths = cycles.iter().take(10).map(|c| c.0).collect();
    d.cycle_windings = cycles.iter().take(10).map(|c| c.1).collect();
    d
}
