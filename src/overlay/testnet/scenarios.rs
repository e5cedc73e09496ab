//! Ready-made experiments on a [`TestNet`]: growing a ring, measuring lookup paths. The tests
//! run them at a few hundred nodes, and [`lookup_hops_experiment`] at 1,000 and 10,000 for
//! target B1 (mean hops ≤ ½·log2 N, p99 ≤ log2 N) on abstract RPCs; `crate::sim::scenario`
//! measures the same for whole peers speaking SIP.

use std::time::{Duration, Instant};

use rand::Rng;

use super::invariants::{self, InvariantViolation};
use super::{NetConfig, TestNet};
use crate::overlay::chord::NodeState;
use crate::overlay::id::NodeId;
use crate::overlay::lookup::LookupId;

/// How long a single join may take before [`grow_sequentially`] gives up.
const JOIN_LIMIT: Duration = Duration::from_secs(60);

/// Spawns `n` nodes at default addresses. The first stays alone (it creates the ring); each
/// next one joins through a random earlier node once the previous one has been admitted.
pub fn grow_sequentially(net: &mut TestNet, n: usize) -> Result<Vec<usize>, InvariantViolation> {
    let mut nodes = Vec::with_capacity(n);
    for k in 0..n {
        let ix = net.spawn(TestNet::default_addr(net.len()));
        if k > 0 {
            let bootstrap = nodes[net.rng().random_range(0..nodes.len())];
            net.join(ix, &[bootstrap]);
            let joined = |net: &TestNet| match net.node(ix).map(|c| c.state()) {
                Some(NodeState::Joined) => Ok(()),
                other => Err(InvariantViolation {
                    invariant: "join_completes",
                    detail: format!("node #{ix} still {other:?} after {JOIN_LIMIT:?}"),
                    elapsed: net.elapsed(),
                    seed: net.seed(),
                }),
            };
            net.run_until_ok(JOIN_LIMIT, Duration::from_millis(20), joined)?;
        }
        nodes.push(ix);
    }
    Ok(nodes)
}

/// Spawns `n` nodes and has all but the first join through the first at the same instant.
pub fn grow_concurrently(net: &mut TestNet, n: usize) -> Vec<usize> {
    let nodes: Vec<usize> = (0..n).map(|_| net.spawn(TestNet::default_addr(net.len()))).collect();
    if let Some((&first, rest)) = nodes.split_first() {
        for &ix in rest {
            net.join(ix, &[first]);
        }
    }
    nodes
}

/// What [`measure_lookups`] saw.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HopReport {
    /// Ring size.
    pub nodes: usize,
    /// Lookups measured.
    pub lookups: usize,
    /// Lookups that ended in an error.
    pub failed: usize,
    /// Lookups that returned a node other than the key's true successor.
    pub wrong: usize,
    /// Nodes asked per lookup (zero when the querier knew the answer itself).
    pub mean_hops: f64,
    /// Median hops.
    pub p50_hops: usize,
    /// 99th percentile of hops.
    pub p99_hops: usize,
    /// The most hops.
    pub max_hops: usize,
    /// Virtual time from the last join until [`invariants::ring_correct`] held.
    pub ring_converged_after: Duration,
    /// Virtual time from the ring being correct until every far finger was.
    pub fingers_converged_after: Duration,
    /// Share of finger entries holding the right node.
    pub fingers_correct: f64,
}

impl HopReport {
    /// Chord's expected mean path, ½·log2 N.
    pub fn chord_bound(&self) -> f64 {
        0.5 * (self.nodes.max(1) as f64).log2()
    }
}

/// Starts `per_node` lookups for random keys at every admitted node, runs until they finish,
/// and checks each answer against the true successor.
pub fn measure_lookups(net: &mut TestNet, per_node: usize) -> HopReport {
    let started = start_lookups(net, per_node);
    finish_lookups(net, &started)
}

/// Starts `per_node` lookups for random keys at every admitted node, without running the
/// network.
pub fn start_lookups(net: &mut TestNet, per_node: usize) -> Vec<(usize, LookupId)> {
    let members: Vec<usize> = net.admitted().collect();
    let mut started = Vec::new();
    for ix in members {
        for _ in 0..per_node {
            let key = NodeId::random(net.rng());
            if let Some(id) = net.lookup(ix, key) {
                started.push((ix, id));
            }
        }
    }
    started
}

/// Runs until the lookups in `started` have finished (or could no longer), then checks each
/// answer against the true successor among the nodes admitted *now*.
pub fn finish_lookups(net: &mut TestNet, started: &[(usize, LookupId)]) -> HopReport {
    let limit = net.config().chord.rpc_timeout * net.config().chord.max_hops;
    let _ = net.run_until_ok(limit, Duration::from_millis(100), |net| {
        if started.iter().all(|(ix, id)| net.lookup_outcome(*ix, *id).is_some()) {
            Ok(())
        } else {
            Err(())
        }
    });
    let sorted = invariants::sorted_admitted(net);
    let mut hops = Vec::with_capacity(started.len());
    let mut report = HopReport { nodes: sorted.len(), lookups: started.len(), ..HopReport::default() };
    for (ix, id) in started {
        let Some(outcome) = net.lookup_outcome(*ix, *id) else {
            report.failed += 1;
            continue;
        };
        match &outcome.result {
            Ok(node) => {
                if Some(node.id) != invariants::true_successor(&sorted, outcome.key) {
                    report.wrong += 1;
                }
                hops.push(outcome.path.len());
            }
            Err(_) => report.failed += 1,
        }
    }
    hops.sort_unstable();
    if !hops.is_empty() {
        report.mean_hops = hops.iter().sum::<usize>() as f64 / hops.len() as f64;
        report.p50_hops = hops[hops.len() / 2];
        report.p99_hops = p99(&hops);
        report.max_hops = hops[hops.len() - 1];
    }
    report
}

/// The 99th percentile of a sorted, non-empty slice (the nearest-rank element at 99%).
pub fn p99<T: Copy>(sorted: &[T]) -> T {
    sorted[(sorted.len() * 99 / 100).min(sorted.len() - 1)]
}

/// Grows an `n`-node ring one node after another, waits until the ring and then every far
/// finger is correct, and measures `per_node` lookups from every node. Target B1's experiment.
pub fn lookup_hops_experiment(
    start: Instant,
    n: usize,
    seed: u64,
    per_node: usize,
) -> Result<HopReport, InvariantViolation> {
    let mut config = NetConfig::new(seed);
    config.record_events = false;
    let mut net = TestNet::new(start, config);
    grow_sequentially(&mut net, n)?;
    let ring = net.run_until_ok(Duration::from_secs(3600), Duration::from_secs(5), invariants::ring_correct)?;
    let fingers =
        net.run_until_ok(Duration::from_secs(3600), Duration::from_secs(10), |n| invariants::fingers_at_least(n, 1.0))?;
    let mut report = measure_lookups(&mut net, per_node);
    report.ring_converged_after = ring;
    report.fingers_converged_after = fingers;
    report.fingers_correct = invariants::fingers_correct_fraction(&net);
    Ok(report)
}
