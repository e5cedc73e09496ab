//! The experiments behind `p2psip sim`, in the order one run performs them: grow a ring,
//! wait until it is correct, measure steady-state maintenance traffic and lookup paths, then
//! optionally fail a fraction of the nodes at once, and optionally run continuous churn.
//!
//! Targets (`performance-targets.md`): B1 (mean hops ≤ ½·log2 N, p99 ≤ log2 N), B2 (lookups
//! after 20% / 50% fail at once), B3 (success under churn), B5 (maintenance bytes per node).
//! A lookup succeeds when it returns the key's true successor among the admitted nodes at the
//! instant it finishes; an error or any other node counts against it.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use rand::seq::SliceRandom;
use rand::Rng;
use serde::Serialize;

use super::records::{RecordSet, RecordsReport};
use super::tally::{self, KindTraffic};
use super::{LookupRecord, Sim, SimConfig, SimStorage};
use crate::netem::LinkConfig;
use crate::overlay::testnet::invariants::{self, InvariantViolation, RingDiagnosis};
use crate::overlay::testnet::scenarios::p99;

/// Members with a wrong neighbour listed in a diagnosis.
const DIAGNOSIS_WRONG_NODES: usize = 8;
use crate::overlay::{ChordConfig, LookupError, NodeId};
use crate::peer::StorageConfig;

/// What to simulate.
#[derive(Debug, Clone)]
pub struct SimParams {
    /// N.
    pub nodes: usize,
    /// The seed.
    pub seed: u64,
    /// Lookups per measurement (steady state, after failure, during churn).
    pub lookups: usize,
    /// Fraction of the nodes killed at once after convergence.
    pub fail: Option<f64>,
    /// Churn events per minute (each: one node vanishes silently, a fresh one joins).
    pub churn_per_min: f64,
    /// How long churn lasts.
    pub churn_duration: Duration,
    /// The link model.
    pub network: LinkConfig,
    /// Every node's Chord settings.
    pub chord: ChordConfig,
    /// Spacing of joins while the ring grows.
    pub join_interval: Duration,
    /// Quiet window (no lookups, no churn) over which maintenance traffic is measured.
    pub traffic_window: Duration,
    /// R for `--records` (each record has R+1 places).
    pub replicas: u8,
    /// Nodes per shared address (see [`SimConfig::same_address`]).
    pub same_address: usize,
}

impl SimParams {
    /// The defaults for `nodes` nodes and `seed`.
    pub fn new(nodes: usize, seed: u64) -> SimParams {
        SimParams {
            nodes,
            seed,
            lookups: 1000,
            fail: None,
            churn_per_min: 0.0,
            churn_duration: Duration::from_secs(600),
            network: LinkConfig::default(),
            chord: ChordConfig::default(),
            join_interval: Duration::from_millis(50),
            traffic_window: Duration::from_secs(60),
            replicas: crate::peer::DEFAULT_REPLICAS,
            same_address: 0,
        }
    }
}

/// Lookup outcomes of one measurement.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct LookupStats {
    /// Lookups started.
    pub lookups: usize,
    /// Returned the true successor.
    pub succeeded: usize,
    /// Ended in an error (or never finished).
    pub failed: usize,
    /// `failed` by cause: `no_route`, `hop_limit`, `not_joined` (the querier was rejoining),
    /// `cancelled`, `unfinished`.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub failed_by_reason: BTreeMap<&'static str, usize>,
    /// Returned another node.
    pub wrong: usize,
    /// Of `wrong`: answers naming a node no longer in the ring (its caller finds out on
    /// contact and looks up again); the rest named a live node that is not responsible.
    pub wrong_departed: usize,
    /// `succeeded / lookups`.
    pub success: f64,
    /// Mean routing hops.
    pub mean_hops: f64,
    /// Median routing hops.
    pub p50_hops: usize,
    /// 99th percentile.
    pub p99_hops: usize,
    /// The most.
    pub max_hops: usize,
    /// Mean nodes asked to confirm an answer (the node named responsible answering for
    /// itself, or its backups when it has failed), on top of the routing hops above.
    pub mean_confirmations: f64,
    /// Mean and p99 of everything asked: routing hops plus confirmations.
    pub mean_total_hops: f64,
    /// See `mean_total_hops`.
    pub p99_total_hops: usize,
    /// Virtual seconds from start to answer, of the lookups that returned one: p50, p99 and
    /// the longest (a lookup that found nobody at first and was retried includes the wait,
    /// `ChordConfig::lookup_retry_delay`).
    pub p50_latency_s: f64,
    /// See `p50_latency_s`.
    pub p99_latency_s: f64,
    /// See `p50_latency_s`.
    pub max_latency_s: f64,
}

impl LookupStats {
    /// The statistics of `records`, with `unfinished` lookups counted as failed.
    pub fn from_records(records: &[LookupRecord], unfinished: usize) -> LookupStats {
        let mut stats =
            LookupStats { lookups: records.len() + unfinished, failed: unfinished, ..LookupStats::default() };
        let mut hops = Vec::with_capacity(records.len());
        let mut totals = Vec::with_capacity(records.len());
        let mut latencies = Vec::with_capacity(records.len());
        if unfinished > 0 {
            stats.failed_by_reason.insert("unfinished", unfinished);
        }
        for r in records {
            match (&r.result, r.correct) {
                (Err(e), _) => {
                    stats.failed += 1;
                    let reason = match e {
                        LookupError::NoRoute => "no_route",
                        LookupError::HopLimit(_) => "hop_limit",
                        LookupError::NotJoined => "not_joined",
                        LookupError::Cancelled => "cancelled",
                    };
                    *stats.failed_by_reason.entry(reason).or_insert(0) += 1;
                }
                (Ok(_), true) => stats.succeeded += 1,
                (Ok(_), false) => stats.wrong += 1,
            }
            if r.named_departed && !r.correct {
                stats.wrong_departed += 1;
            }
            if r.result.is_ok() {
                hops.push(r.hops);
                totals.push(r.hops + r.confirmations);
                latencies.push((r.finished_at - r.started_at).as_secs_f64());
            }
        }
        latencies.sort_unstable_by(f64::total_cmp);
        if let Some(&max) = latencies.last() {
            stats.p50_latency_s = latencies[latencies.len() / 2];
            stats.p99_latency_s = p99(&latencies);
            stats.max_latency_s = max;
        }
        hops.sort_unstable();
        totals.sort_unstable();
        if !totals.is_empty() {
            let total: usize = totals.iter().sum();
            stats.mean_total_hops = total as f64 / totals.len() as f64;
            stats.mean_confirmations = stats.mean_total_hops - hops.iter().sum::<usize>() as f64 / hops.len() as f64;
            stats.p99_total_hops = p99(&totals);
        }
        if let Some(&max) = hops.last() {
            stats.mean_hops = hops.iter().sum::<usize>() as f64 / hops.len() as f64;
            stats.p50_hops = hops[hops.len() / 2];
            stats.p99_hops = p99(&hops);
            stats.max_hops = max;
        }
        stats.success = if stats.lookups == 0 { 1.0 } else { stats.succeeded as f64 / stats.lookups as f64 };
        stats
    }
}

/// SIP traffic per node, from the bytes the peers actually emitted (retransmissions included).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Traffic {
    /// Messages per live node per second.
    pub messages_per_node_per_s: f64,
    /// Bytes per live node per second.
    pub bytes_per_node_per_s: f64,
}

/// `--fail`: a fraction of the nodes killed at once.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct FailReport {
    /// The share of nodes killed.
    pub fraction: f64,
    /// How many.
    pub killed: usize,
    /// Lookups started at the instant of the failure.
    pub immediate: LookupStats,
    /// Each immediate answer that named a departed node, looked up again by its caller once
    /// its request to that node timed out (`rpc_timeout` after the answer).
    pub retried: LookupStats,
    /// Immediate lookups right at the first attempt or at that one retry.
    pub success_after_retry: f64,
    /// Virtual seconds until the ring was correct again (`None`: not within 10 minutes).
    pub heal_time_s: Option<f64>,
    /// Lookups started once the ring had healed (or after 10 minutes).
    pub settled: LookupStats,
    /// What was still wrong after 10 minutes, when the ring did not heal.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub diagnosis: Option<RingDiagnosis>,
}

/// `--churn`: continuous joins and silent departures.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ChurnReport {
    /// Churn events per minute.
    pub events_per_min: f64,
    /// How long churn lasted, virtual seconds.
    pub duration_s: f64,
    /// Nodes that joined.
    pub joins: usize,
    /// Nodes that vanished.
    pub departures: usize,
    /// Median session length this rate gives a population of `nodes` (ln 2 · N / rate).
    pub median_session_s: f64,
    /// Lookups spread over the churn period.
    pub lookups: LookupStats,
    /// All SIP traffic during churn, per live node (lookups included, a few percent of it).
    pub traffic: Traffic,
    /// The same by kind of RPC ([`super::tally`]).
    pub traffic_by_kind: BTreeMap<String, KindTraffic>,
    /// Virtual seconds from the end of churn until the ring was correct (`None`: not in 10 min).
    pub converged_after_s: Option<f64>,
    /// What was still wrong after 10 minutes, when the ring did not converge.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub diagnosis: Option<RingDiagnosis>,
}

/// Everything one run measured. Field names are stable (`--json`).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct SimReport {
    /// N.
    pub nodes: usize,
    /// The seed.
    pub seed: u64,
    /// One-way latency, ms.
    pub latency_ms: f64,
    /// ± jitter, ms.
    pub jitter_ms: f64,
    /// Loss per datagram, percent.
    pub loss_percent: f64,
    /// ½·log2 N and log2 N: target B1's bounds for the mean and the p99.
    pub half_log2_n: f64,
    /// log2 N.
    pub log2_n: f64,
    /// Virtual seconds from the last join until successors, predecessors and successor lists
    /// were all correct.
    pub convergence_time_s: f64,
    /// Virtual seconds after that until every far finger was correct (`None`: not in 10 min).
    pub fingers_converged_s: Option<f64>,
    /// After convergence: fraction of successor-list entries and of finger entries (all 160
    /// per node, and the far ones only) holding the right node.
    pub successor_entries_correct: f64,
    /// See `successor_entries_correct`.
    pub fingers_correct: f64,
    /// See `successor_entries_correct`.
    pub far_fingers_correct: f64,
    /// Steady-state maintenance traffic (no lookups, no churn).
    pub maintenance: Traffic,
    /// The same window by kind of RPC (`stabilize`, `fix_fingers`, …; [`super::tally`]).
    pub traffic_by_kind: BTreeMap<String, KindTraffic>,
    /// Lookups from random nodes for random keys on the converged ring.
    pub lookups: LookupStats,
    /// `--fail`'s measurements.
    pub fail: Option<FailReport>,
    /// `--churn`'s measurements.
    pub churn: Option<ChurnReport>,
    /// `--records`: placement, the distinct-address invariant, reads after `--fail`.
    pub records: Option<RecordsReport>,
    /// Wall-clock seconds spent signing the records up front (filled in by the caller).
    pub signing_s: Option<f64>,
    /// Virtual seconds simulated.
    pub virtual_time_s: f64,
    /// Datagrams sent by all nodes over the whole run.
    pub datagrams: u64,
    /// Filled in by the caller, which owns the real clock: wall-clock seconds and peak RSS.
    pub wall_time_s: f64,
    /// The process's peak resident memory, KiB (Linux).
    pub peak_rss_kib: Option<u64>,
}

/// How long the ring may take to become correct before the run fails with its seed.
const CONVERGE_LIMIT: Duration = Duration::from_secs(3600);
const SETTLE_LIMIT: Duration = Duration::from_secs(600);

/// One whole run; an invariant that never came to hold is the error, naming the seed.
pub fn run(start: Instant, params: &SimParams) -> Result<SimReport, InvariantViolation> {
    run_with_records(start, params, None)
}

/// [`run`], with signed records stored after the lookups are measured and read back after
/// `--fail` when `records` is given.
pub fn run_with_records(
    start: Instant,
    params: &SimParams,
    records: Option<&RecordSet>,
) -> Result<SimReport, InvariantViolation> {
    let storage = records.map(|set| SimStorage {
        root: set.root.clone(),
        config: StorageConfig {
            replicas: params.replicas,
            unix_at_start: super::records::SIM_UNIX_TIME,
            ..StorageConfig::default()
        },
    });
    let config = SimConfig {
        seed: params.seed,
        network: params.network.clone(),
        chord: params.chord.clone(),
        storage,
        same_address: params.same_address,
    };
    let mut sim = Sim::new(start, config);
    grow(&mut sim, params.nodes, params.join_interval);
    let convergence = converge(&mut sim)?;
    let fingers =
        sim.run_until_ok(SETTLE_LIMIT, Duration::from_secs(10), |s| invariants::fingers_at_least(s, 1.0)).ok();
    let n = params.nodes.max(1) as f64;
    let mut report = SimReport {
        nodes: params.nodes,
        seed: params.seed,
        latency_ms: params.network.latency.as_secs_f64() * 1e3,
        jitter_ms: params.network.jitter.as_secs_f64() * 1e3,
        loss_percent: params.network.loss_percent,
        half_log2_n: 0.5 * n.log2(),
        log2_n: n.log2(),
        convergence_time_s: convergence.as_secs_f64(),
        fingers_converged_s: fingers.map(|d| d.as_secs_f64()),
        successor_entries_correct: invariants::successor_entries_correct_fraction(&sim),
        fingers_correct: invariants::fingers_correct_fraction(&sim),
        far_fingers_correct: invariants::far_fingers_correct_fraction(&sim),
        ..SimReport::default()
    };
    let by_kind = sim.traffic_by_kind();
    let members = sim.members().count().max(1) as f64;
    report.maintenance = measure_traffic(&mut sim, params.traffic_window);
    let per = members * params.traffic_window.as_secs_f64().max(f64::MIN_POSITIVE);
    report.traffic_by_kind = tally::rates(&by_kind, &sim.traffic_by_kind(), per);
    report.lookups = measure_lookups(&mut sim, params.lookups);
    if let Some(set) = records {
        report.records = Some(super::records::store_all(&mut sim, set, params.replicas));
        super::records::replicas_on_distinct_addresses(&sim)?;
    }
    if let Some(fraction) = params.fail {
        report.fail = Some(fail_at_once(&mut sim, fraction, params.lookups));
        if let (Some(set), Some(r)) = (records, report.records.as_mut()) {
            r.after_fail = Some(super::records::read_all(&mut sim, set, fraction));
        }
    }
    if params.churn_per_min > 0.0 {
        report.churn = Some(churn(&mut sim, params));
    }
    report.virtual_time_s = sim.elapsed().as_secs_f64();
    report.datagrams = sim.network_stats().sent;
    Ok(report)
}

/// Spawns `n` nodes, one every `interval`; each joins through a random earlier node, then the
/// first one (which created the ring) if that one cannot admit it yet.
pub fn grow(sim: &mut Sim, n: usize, interval: Duration) -> Vec<usize> {
    let mut nodes = Vec::with_capacity(n);
    for k in 0..n {
        let ix = sim.spawn();
        if k > 0 {
            let via = nodes[sim.rng().random_range(0..nodes.len())];
            sim.join(ix, &[via, nodes[0]]);
            sim.run_for(interval);
        }
        nodes.push(ix);
    }
    nodes
}

/// Runs until the ring is correct; how long that took.
pub fn converge(sim: &mut Sim) -> Result<Duration, InvariantViolation> {
    sim.run_until_ok(CONVERGE_LIMIT, Duration::from_secs(5), invariants::ring_correct)
}

/// All SIP traffic over a quiet `window`, per member node.
pub fn measure_traffic(sim: &mut Sim, window: Duration) -> Traffic {
    let before = sim.network_stats();
    let members = sim.members().count().max(1) as f64;
    sim.run_for(window);
    let after = sim.network_stats();
    let per = members * window.as_secs_f64().max(f64::MIN_POSITIVE);
    Traffic {
        messages_per_node_per_s: (after.sent - before.sent) as f64 / per,
        bytes_per_node_per_s: (after.bytes_sent - before.bytes_sent) as f64 / per,
    }
}

/// Starts `count` lookups for random keys at random admitted nodes.
pub fn start_lookups(sim: &mut Sim, count: usize) {
    let admitted: Vec<usize> = sim.admitted().collect();
    if admitted.is_empty() {
        return;
    }
    for _ in 0..count {
        let ix = admitted[sim.rng().random_range(0..admitted.len())];
        let key = NodeId::random(sim.rng());
        sim.lookup(ix, key);
    }
}

/// Runs until every started lookup has finished (or the longest a lookup can take has passed)
/// and summarises them.
pub fn finish_lookups(sim: &mut Sim) -> LookupStats {
    wait_for_lookups(sim);
    let records = sim.take_finished_lookups();
    LookupStats::from_records(&records, sim.pending_lookups())
}

/// Runs until no lookup is pending, for at most the longest a lookup can take.
fn wait_for_lookups(sim: &mut Sim) {
    let chord = &sim.config().chord;
    let limit = chord.rpc_timeout * chord.max_hops;
    let _ = sim.run_until_ok(limit, Duration::from_millis(100), |s| {
        if s.pending_lookups() == 0 {
            Ok(())
        } else {
            Err(InvariantViolation {
                invariant: "lookups_finish",
                detail: String::new(),
                elapsed: s.elapsed(),
                seed: s.seed(),
            })
        }
    });
}

/// Starts `count` lookups of random keys from random members and runs until they end.
pub fn measure_lookups(sim: &mut Sim, count: usize) -> LookupStats {
    start_lookups(sim, count);
    finish_lookups(sim)
}

/// Kills `fraction` of the members at once; measures lookups at that instant and again once
/// the ring has healed.
pub fn fail_at_once(sim: &mut Sim, fraction: f64, lookups: usize) -> FailReport {
    let mut members: Vec<usize> = sim.members().collect();
    members.shuffle(sim.rng());
    let killed =
        ((members.len() as f64 * fraction.clamp(0.0, 1.0)).round() as usize).min(members.len().saturating_sub(1));
    for &ix in &members[..killed] {
        sim.kill(ix);
    }
    start_lookups(sim, lookups);
    // A caller handed a departed node finds out when its request there times out, and asks
    // again from where it is: one retry per such answer, `rpc_timeout` after it arrived.
    let timeout = sim.config().chord.rpc_timeout;
    let limit = timeout * sim.config().chord.max_hops * 2;
    let began = sim.now();
    let (mut first, mut second) = (Vec::new(), Vec::new());
    let mut due: Vec<(Instant, usize, NodeId)> = Vec::new();
    let mut retry_ids = BTreeSet::new();
    loop {
        for r in sim.take_finished_lookups() {
            if retry_ids.contains(&(r.node, r.id)) {
                second.push(r);
            } else {
                if r.named_departed && !r.correct {
                    due.push((r.finished_at + timeout, r.node, r.key));
                }
                first.push(r);
            }
        }
        due.sort();
        while due.first().is_some_and(|d| d.0 <= sim.now()) {
            let (_, node, key) = due.remove(0);
            if let Some(id) = sim.lookup(node, key) {
                retry_ids.insert((node, id));
            }
        }
        if (sim.pending_lookups() == 0 && due.is_empty()) || sim.now() - began > limit {
            break;
        }
        let step = sim.now() + Duration::from_millis(100);
        sim.run_until(due.first().map_or(step, |d| d.0.min(step)));
    }
    let immediate = LookupStats::from_records(&first, lookups.saturating_sub(first.len()));
    let retried = LookupStats::from_records(&second, retry_ids.len().saturating_sub(second.len()));
    let success_after_retry = if immediate.lookups == 0 {
        1.0
    } else {
        (immediate.succeeded + retried.succeeded) as f64 / immediate.lookups as f64
    };
    let heal = sim.run_until_ok(SETTLE_LIMIT, Duration::from_secs(5), invariants::ring_correct).ok();
    let diagnosis = heal.is_none().then(|| invariants::diagnose(sim, DIAGNOSIS_WRONG_NODES));
    let settled = measure_lookups(sim, lookups);
    FailReport {
        fraction,
        killed,
        immediate,
        retried,
        success_after_retry,
        heal_time_s: heal.map(|d| d.as_secs_f64()),
        settled,
        diagnosis,
    }
}

/// Poisson churn at `params.churn_per_min` for `params.churn_duration`: each event a random
/// member vanishes silently (the laptop-lid case, the hardest for maintenance) and a fresh
/// node joins through a random admitted one. `params.lookups` lookups arrive as a Poisson
/// stream over the same period.
pub fn churn(sim: &mut Sim, params: &SimParams) -> ChurnReport {
    let rate = params.churn_per_min / 60.0;
    let duration = params.churn_duration;
    let lookup_rate = params.lookups as f64 / duration.as_secs_f64().max(1.0);
    let began = sim.now();
    let end = began + duration;
    let before = sim.network_stats();
    let by_kind = sim.traffic_by_kind();
    let population = sim.members().count().max(1);
    let mut next_event = began + exp(sim, rate);
    let mut next_lookup = began + exp(sim, lookup_rate);
    let (mut joins, mut departures) = (0, 0);
    let mut records = Vec::new();
    loop {
        let next = next_event.min(next_lookup);
        if next >= end {
            break;
        }
        sim.run_until(next);
        if next == next_event {
            let members: Vec<usize> = sim.members().collect();
            if members.len() > 1 {
                let victim = members[sim.rng().random_range(0..members.len())];
                sim.kill(victim);
                departures += 1;
            }
            let admitted: Vec<usize> = sim.admitted().collect();
            let newcomer = sim.spawn();
            if !admitted.is_empty() {
                let a = admitted[sim.rng().random_range(0..admitted.len())];
                let b = admitted[sim.rng().random_range(0..admitted.len())];
                sim.join(newcomer, &[a, b]);
            }
            joins += 1;
            next_event = next + exp(sim, rate);
        } else {
            start_lookups(sim, 1);
            next_lookup = next + exp(sim, lookup_rate);
        }
        records.append(&mut sim.take_finished_lookups());
    }
    sim.run_until(end);
    let after = sim.network_stats();
    let per = population as f64 * duration.as_secs_f64();
    let traffic = Traffic {
        messages_per_node_per_s: (after.sent - before.sent) as f64 / per,
        bytes_per_node_per_s: (after.bytes_sent - before.bytes_sent) as f64 / per,
    };
    let traffic_by_kind = tally::rates(&by_kind, &sim.traffic_by_kind(), per);
    wait_for_lookups(sim);
    records.append(&mut sim.take_finished_lookups());
    let lookups = LookupStats::from_records(&records, sim.pending_lookups());
    let converged = sim.run_until_ok(SETTLE_LIMIT, Duration::from_secs(5), invariants::ring_correct).ok();
    let diagnosis = converged.is_none().then(|| invariants::diagnose(sim, DIAGNOSIS_WRONG_NODES));
    ChurnReport {
        events_per_min: params.churn_per_min,
        duration_s: duration.as_secs_f64(),
        joins,
        departures,
        median_session_s: std::f64::consts::LN_2 * population as f64 / rate.max(f64::MIN_POSITIVE),
        lookups,
        traffic,
        traffic_by_kind,
        converged_after_s: converged.map(|d| d.as_secs_f64()),
        diagnosis,
    }
}

/// An exponentially distributed wait at `rate` per second (a Poisson process's gaps).
fn exp(sim: &mut Sim, rate: f64) -> Duration {
    if rate <= 0.0 {
        return Duration::from_secs(u64::MAX / 4);
    }
    let u: f64 = sim.rng().random_range(f64::EPSILON..1.0);
    Duration::from_secs_f64(-u.ln() / rate)
}
