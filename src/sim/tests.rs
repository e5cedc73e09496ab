//! The simulator on small rings: the ring invariants hold for many seeds, runs replay from
//! their seed, and failures, churn and loss are survived.
#![allow(clippy::disallowed_methods)] // one real reading as the virtual clock's epoch

use std::time::{Duration, Instant};

use super::scenario::{self, SimParams};
use super::*;
use crate::netem::LinkConfig;
use crate::overlay::testnet::invariants;

fn params(nodes: usize, seed: u64) -> SimParams {
    SimParams { lookups: 2 * nodes, traffic_window: Duration::from_secs(10), ..SimParams::new(nodes, seed) }
}

/// Grows and converges a ring; every invariant then holds.
fn converged(nodes: usize, seed: u64) -> Sim {
    let mut sim = Sim::new(Instant::now(), SimConfig::new(seed));
    scenario::grow(&mut sim, nodes, Duration::from_millis(50));
    scenario::converge(&mut sim).unwrap_or_else(|e| panic!("{e}"));
    sim
}

#[test]
fn rings_of_100_converge_for_seeds_1_to_10() {
    for seed in 1..=10 {
        let mut sim = converged(100, seed);
        invariants::ring_correct(&sim).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(invariants::successor_entries_correct_fraction(&sim), 1.0, "seed {seed}");
        let stats = scenario::measure_lookups(&mut sim, 100);
        assert_eq!(stats.succeeded, 100, "seed {seed}: {stats:?}");
        assert!(stats.mean_hops <= 0.5 * 100f64.log2(), "seed {seed}: {stats:?}");
    }
}

#[test]
fn nodes_sharing_an_address_sit_side_by_side() {
    let sim = converged(30, 3);
    let shared: Vec<usize> = (0..sim.len()).filter(|ix| sim.addr(*ix).unwrap().port() != OVERLAY_PORT).collect();
    assert_eq!(shared.len(), 3);
    for ix in shared {
        let host = sim.peer(ix - 1).unwrap();
        // Same IP, next port: the IDs share all but the port bits, so nothing lies between.
        assert_eq!(host.chord().successor().id, sim.peer(ix).unwrap().node_id(), "node #{ix}");
    }
}

#[test]
fn a_run_replays_from_its_seed() {
    let p = params(30, 5);
    let a = scenario::run(Instant::now(), &p).unwrap();
    let b = scenario::run(Instant::now(), &p).unwrap();
    assert_eq!(a, b);
    let c = scenario::run(Instant::now(), &params(30, 6)).unwrap();
    assert_ne!(a.datagrams, c.datagrams);
}

#[test]
fn half_the_ring_killed_at_once_heals() {
    let p = SimParams { fail: Some(0.5), ..params(60, 7) };
    let r = scenario::run(Instant::now(), &p).unwrap();
    let fail = r.fail.unwrap();
    assert_eq!(fail.killed, 30);
    assert!(fail.heal_time_s.is_some(), "{fail:?}");
    assert_eq!(fail.settled.success, 1.0, "{fail:?}");
    assert_eq!(fail.immediate.failed, 0, "{fail:?}");
    // Every answer was confirmed by the node it names, alive at that moment: none names a
    // departed node, so there is nothing to retry.
    assert_eq!(fail.immediate.wrong_departed, 0, "{fail:?}");
    assert_eq!(fail.retried.lookups, 0, "{fail:?}");
    assert!(fail.immediate.success >= 0.95, "{fail:?}");
}

#[test]
fn churn_and_loss_leave_lookups_mostly_right() {
    let p = SimParams {
        churn_per_min: 12.0,
        churn_duration: Duration::from_secs(120),
        network: LinkConfig { loss_percent: 1.0, ..LinkConfig::default() },
        ..params(40, 8)
    };
    let r = scenario::run(Instant::now(), &p).unwrap();
    assert_eq!(r.lookups.success, 1.0, "{:?}", r.lookups);
    let churn = r.churn.unwrap();
    assert!(churn.departures > 10 && churn.joins > 10, "{churn:?}");
    assert!(churn.lookups.success >= 0.9, "{churn:?}");
    assert!(churn.converged_after_s.is_some(), "{churn:?}");
}

#[test]
fn graceful_leave_keeps_the_ring_correct() {
    let mut sim = converged(20, 9);
    sim.leave(4);
    sim.leave(11);
    sim.run_for(Duration::from_secs(5));
    assert!(!sim.is_alive(4) && !sim.is_alive(11), "state dropped once Left");
    // Neighbours are spliced at once; deeper successor-list entries follow by stabilizing.
    invariants::successors_match_sorted_ids(&sim).unwrap_or_else(|e| panic!("{e}"));
    invariants::predecessors_match(&sim).unwrap_or_else(|e| panic!("{e}"));
    // Deeper entries travel one node per stabilize round, and a quiet node's round may have
    // stretched to the longest period (adaptive stabilization): allow that for each entry.
    let chord = sim.config().chord.clone();
    let rounds = chord.successor_list_len as u32;
    sim.run_for(chord.stabilize_max_interval * 6 / 5 * rounds);
    invariants::ring_correct(&sim).unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn a_violation_names_the_invariant_and_the_seed() {
    let mut sim = converged(10, 11);
    sim.kill(3);
    let e = invariants::ring_correct(&sim).unwrap_err();
    assert_eq!(e.seed, 11);
    assert!(e.to_string().contains("seed 11"), "{e}");
}

#[test]
fn records_in_sybil_groups_keep_distinct_addresses_and_survive_a_failure() {
    // Groups of 8 nodes share an address: contiguous IDs, as one attacker's would be.
    let set = super::records::RecordSet::new(60).unwrap();
    let p = SimParams { same_address: 8, fail: Some(0.2), replicas: 3, ..params(80, 5) };
    let report = scenario::run_with_records(Instant::now(), &p, Some(&set)).unwrap_or_else(|e| panic!("{e}"));
    let rec = report.records.expect("records report");
    assert_eq!(rec.largest_address_group, 8);
    assert_eq!(rec.same_address_violations, 0);
    // Without moving places off an address already used, many records would have two places on
    // one address (ten addresses own nearly all the ring); the rule did the work.
    assert!(rec.same_address_without_moves > 0 && rec.places_moved > 0, "{rec:?}");
    // Ten addresses for four places: a few records run out of spare numbers on distinct
    // addresses and keep fewer copies rather than two on one address.
    assert!(rec.records_fully_placed >= 50, "{rec:?}");
    assert!(rec.places_stored >= rec.places - 20, "{rec:?}");
    let after = rec.after_fail.expect("reads after --fail");
    // Reads return every record that kept a live copy, and nothing else.
    assert_eq!(after.readable, after.with_a_live_copy, "{after:?}");
    assert!(after.readable >= 55, "{after:?}");
}

#[test]
fn copies_on_one_address_are_counted_and_only_places_break_the_invariant() {
    let set = super::records::RecordSet::new(1).unwrap();
    let storage = SimStorage { root: set.root.clone(), config: crate::peer::StorageConfig::default() };
    let mut sim = Sim::new(Instant::now(), SimConfig { storage: Some(storage), same_address: 2, ..SimConfig::new(1) });
    scenario::grow(&mut sim, 4, Duration::from_millis(50));
    scenario::converge(&mut sim).unwrap_or_else(|e| panic!("{e}"));
    super::records::replicas_on_distinct_addresses(&sim).unwrap_or_else(|e| panic!("{e}"));
    // Plant one record on both nodes of the first address behind the store path's back.
    for ix in [0, 1] {
        let peer = sim.peer_mut(ix).unwrap();
        peer.storage_for_tests().put(set.records[0].clone());
    }
    assert_eq!(super::records::copies_on_shared_addresses(&sim), 1);
    // The second node of an address sits one port after the first: its arc is one ID wide and
    // holds no place; the invariant speaks of places (what readers ask), so it holds until
    // the first node fails and the second takes its arc over with the planted copy.
    assert!(!sim.peer(1).unwrap().holds_place_of(&set.records[0]));
    super::records::replicas_on_distinct_addresses(&sim).unwrap_or_else(|e| panic!("{e}"));
    assert!(sim.peer(0).unwrap().holds_place_of(&set.records[0]));
}

/// Stabilize requests sent over the next `window`, per node per second.
fn stabilize_rate(sim: &mut Sim, window: Duration) -> f64 {
    let count = |s: &Sim| s.traffic_by_kind().get("stabilize").map_or(0, |k| k.requests.messages);
    let before = count(sim);
    sim.run_for(window);
    (count(sim) - before) as f64 / (sim.members().count() as f64 * window.as_secs_f64())
}

#[test]
fn a_quiet_neighbourhood_stretches_stabilize_only_after_the_hold() {
    let run = |hold: Duration| {
        let config = SimConfig {
            chord: ChordConfig { stabilize_quiet_hold: hold, ..ChordConfig::default() },
            ..SimConfig::new(4)
        };
        let mut sim = Sim::new(Instant::now(), config);
        scenario::grow(&mut sim, 20, Duration::from_millis(50));
        scenario::converge(&mut sim).unwrap_or_else(|e| panic!("{e}"));
        sim.run_for(Duration::from_secs(120));
        stabilize_rate(&mut sim, Duration::from_secs(120))
    };
    let min = ChordConfig::default().stabilize_interval.as_secs_f64();
    let max = ChordConfig::default().stabilize_max_interval.as_secs_f64();
    // A hold longer than the run: every round at the shortest period (±20% jitter).
    let held = run(Duration::from_secs(3600));
    assert!(held > 0.75 / min, "{held} per node per s with the period held at {min} s");
    // The default hold (a minute) has passed: rounds come at the longest period.
    let stretched = run(ChordConfig::default().stabilize_quiet_hold);
    assert!(stretched < 1.5 / max, "{stretched} per node per s, longest period {max} s");
}
