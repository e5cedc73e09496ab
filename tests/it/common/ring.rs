//! Ring checks on running nodes, read from their `/status`.

use std::time::{Duration, Instant};

use p2psip::overlay::NodeId;
use serde_json::Value;

use super::{wait_for, Node};

/// The Node ID a status answer names (`node_id`, or a node in `successors`, `predecessor`…).
pub(crate) fn id_of(v: &Value) -> Option<NodeId> {
    v["node_id"].as_str()?.parse().ok()
}

/// What is wrong with the ring formed by `nodes`, or `None` when every node's successor and
/// predecessor are its neighbours in ID order and every node is `joined`.
pub(crate) fn ring_errors(nodes: &[&Node]) -> Option<String> {
    let mut ids: Vec<NodeId> = nodes.iter().map(|n| n.id()).collect();
    ids.sort();
    let n = ids.len();
    let mut errors = Vec::new();
    for node in nodes {
        let Some(s) = node.status() else {
            errors.push(format!("{} silent", node.listen));
            continue;
        };
        let i = ids.binary_search(&node.id()).expect("own id");
        let (want_succ, want_pred) = (ids[(i + 1) % n], ids[(i + n - 1) % n]);
        let succ = s["successors"].get(0).and_then(id_of);
        let pred = id_of(&s["predecessor"]);
        if s["overlay"]["state"] != "joined" || succ != Some(want_succ) || pred != Some(want_pred) {
            errors.push(format!("{} {}: succ {succ:?} pred {pred:?}", node.listen, s["overlay"]["state"]));
        }
    }
    (!errors.is_empty()).then(|| errors.join("; "))
}

/// Polls until the ring of `nodes` is correct, for at most `patience`; returns when (the
/// poll's start) it first was.
pub(crate) fn wait_for_ring(nodes: &[&Node], what: &str, patience: Duration) -> Instant {
    let mut last = String::new();
    wait_for(patience, || {
        let at = Instant::now();
        match ring_errors(nodes) {
            None => Some(at),
            Some(e) => {
                last = e;
                None
            }
        }
    })
    .unwrap_or_else(|| panic!("{what}: ring not correct after {patience:?}: {last}"))
}

/// The node responsible for `key` among `ids`: the first at or after it, wrapping.
pub(crate) fn successor_of(key: NodeId, ids: &[NodeId]) -> NodeId {
    let mut sorted = ids.to_vec();
    sorted.sort();
    sorted.iter().copied().find(|id| *id >= key).unwrap_or(sorted[0])
}
