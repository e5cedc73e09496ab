//! Signed records in the simulator (`p2psip sim --records M --replicas R`): M registrations,
//! each of its own enrolled owner, signed once up front and stored through the real SIP store
//! path at their R+1 places; then the named invariant `replicas_on_distinct_addresses` (no
//! two nodes sharing an address hold places of one record; backup copies go to other
//! addresses than their holder's), and, after a fraction of the
//! nodes fail at once, how many records are still readable through real fetches.
//!
//! Signing is the expensive part (ECDSA P-256 and one certificate per owner), so it happens
//! once, before the run; the storing nodes verify every copy they are offered as in the daemon.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::Duration;

use rand::Rng;
use ring::rand::SystemRandom;
use serde::Serialize;

use super::Sim;
use crate::enrollment::{build_csr, EnrollmentCa};
use crate::identity::{Aor, IdentityError, KeyPair, TrustAnchor};
use crate::overlay::testnet::invariants::InvariantViolation;
use crate::overlay::NodeId;
use crate::peer::{Peer, StorageEvent};
use crate::store::{replica_keys, Contact, Record, RecordKind, Registration, Unsigned};

/// The simulated wall clock at the start of a run (2026-01-02T00:00:00Z), in Unix seconds.
pub const SIM_UNIX_TIME: u64 = 1_767_312_000;
/// How long the simulated records live: longer than any run.
const RECORD_LIFETIME: u64 = 86_400;
/// How long a batch of stores or fetches may take before the rest count as failed.
const BATCH_LIMIT: Duration = Duration::from_secs(600);

/// The CA and the signed records of one run.
pub struct RecordSet {
    /// The CA's root.
    pub root: TrustAnchor,
    /// One signed registration per owner.
    pub records: Vec<Record>,
}

impl RecordSet {
    /// `count` owners `sip:user<i>@sim.test`, each enrolled and with one signed registration.
    /// Signed once, before the run, with the OS's randomness (ring signs with nothing else):
    /// the run only stores and reads the records, so the signatures' bytes do not steer it.
    #[allow(clippy::disallowed_methods)]
    pub fn new(count: usize) -> Result<RecordSet, IdentityError> {
        let rng = SystemRandom::new();
        let now = SIM_UNIX_TIME;
        let ca = EnrollmentCa::create("sim.test", KeyPair::generate(&rng)?, now - 86_400, now + 30 * 86_400, &rng)?;
        let mut names = BTreeMap::new();
        let mut records = Vec::with_capacity(count);
        for i in 0..count {
            let aor = Aor::parse(&format!("sip:user{i}@sim.test"))?;
            let key = KeyPair::generate(&rng)?;
            let csr = build_csr(&aor, &key, &rng)?;
            let cert = ca.issue(&mut names, &csr, &aor, now - 86_400, now + 30 * 86_400, &rng)?.certificate_der;
            let expires_at = now + RECORD_LIFETIME;
            let contact = Contact { uri: format!("sip:user{i}@10.200.0.1:5070"), expires_at };
            let record = Unsigned {
                kind: RecordKind::Registration,
                key: aor.to_string(),
                owner: aor,
                seq: 1,
                expires_at,
                payload: Registration { contacts: vec![contact] }.to_payload(),
            }
            .sign(&key, vec![cert], &rng)
            .map_err(|e| IdentityError::BadKey(e.to_string()))?;
            records.push(record);
        }
        Ok(RecordSet { root: ca.trust_anchor()?, records })
    }
}

/// What storing the records found.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct RecordsReport {
    /// Records stored.
    pub records: usize,
    /// R: each record has R+1 places.
    pub replicas: u8,
    /// Places that accepted their copy, of records × (R+1).
    pub places_stored: usize,
    /// Places, R + 1 per record.
    pub places: usize,
    /// Records held by R+1 distinct live nodes once stored.
    pub records_fully_placed: usize,
    /// The largest group of nodes sharing one address.
    pub largest_address_group: usize,
    /// Records two of whose copies sit on nodes sharing an address (the invariant wants 0).
    pub same_address_violations: usize,
    /// Places moved to a spare replica number (beyond R) because their node's address already
    /// held another place of the record.
    pub places_moved: usize,
    /// Records whose plain places H(K), H(K‖1) … H(K‖R) fall on fewer than R+1 addresses (one
    /// node, or nodes sharing an address, covering two places): what placement without the
    /// moves would give (the oracle, on the settled ring).
    pub same_address_without_moves: usize,
    /// After `--fail`: what could still be read.
    pub after_fail: Option<RecordsAfterFail>,
}

/// Reads after `--fail`.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct RecordsAfterFail {
    /// The share of nodes killed.
    pub fraction: f64,
    /// Records with at least one copy on a live node (the oracle).
    pub with_a_live_copy: usize,
    /// Records a fetch from a random live node returned valid.
    pub readable: usize,
    /// `readable / records`.
    pub readable_share: f64,
}

/// Stores every record from a random admitted node and waits for the outcomes.
pub fn store_all(sim: &mut Sim, set: &RecordSet, replicas: u8) -> RecordsReport {
    let admitted: Vec<usize> = sim.admitted().collect();
    let mut waiting = BTreeSet::new();
    for record in &set.records {
        let ix = admitted[sim.rng().random_range(0..admitted.len())];
        if let Some(op) = sim.put(ix, record.clone()) {
            waiting.insert((ix, op));
        }
    }
    let mut stored = 0;
    let mut places = 0;
    let mut moved = 0;
    wait_for(sim, &mut waiting, |event| {
        if let StorageEvent::Stored { places: p, .. } = event {
            places += p.len();
            stored += p.iter().filter(|p| p.valid).count();
            moved += p.iter().filter(|p| p.replica > replicas).count();
        }
    });
    let holders = holders(sim);
    let mut by_ip: BTreeMap<IpAddr, usize> = BTreeMap::new();
    for ix in sim.members() {
        if let Some(a) = sim.addr(ix) {
            *by_ip.entry(a.ip()).or_default() += 1;
        }
    }
    let want = usize::from(replicas) + 1;
    RecordsReport {
        records: set.records.len(),
        replicas,
        places_stored: stored,
        places,
        records_fully_placed: set
            .records
            .iter()
            .filter(|r| holders.get(&r.key).is_some_and(|h| h.len() >= want))
            .count(),
        largest_address_group: by_ip.values().copied().max().unwrap_or(0),
        same_address_violations: same_address_violations(sim),
        places_moved: moved,
        same_address_without_moves: {
            let by_id: BTreeMap<NodeId, IpAddr> =
                sim.members().filter_map(|ix| Some((sim.peer(ix)?.node_id(), sim.addr(ix)?.ip()))).collect();
            set.records.iter().filter(|r| plain_places_share_an_address(sim, &by_id, r, replicas)).count()
        },
        after_fail: None,
    }
}

/// Whether two of the places H(K), H(K‖1) … H(K‖R) fall on one address.
fn plain_places_share_an_address(sim: &Sim, by_id: &BTreeMap<NodeId, IpAddr>, record: &Record, replicas: u8) -> bool {
    let hash = sim.config().chord.id_hash;
    let ips: Vec<IpAddr> = replica_keys(record.key.as_bytes(), replicas, hash)
        .into_iter()
        .filter_map(|k| by_id.get(&sim.true_successor(k)?).copied())
        .collect();
    ips.iter().collect::<BTreeSet<_>>().len() < ips.len()
}

/// Runs until every `(node, op)` in `waiting` has reported (or [`BATCH_LIMIT`] passed),
/// handing each event to `f`.
fn wait_for(
    sim: &mut Sim,
    waiting: &mut BTreeSet<(usize, crate::peer::StorageOpId)>,
    mut f: impl FnMut(&StorageEvent),
) {
    let began = sim.now();
    while !waiting.is_empty() && sim.now() - began < BATCH_LIMIT {
        let step = sim.now() + Duration::from_millis(200);
        sim.run_until(step);
        for (ix, event) in sim.take_storage_events() {
            let op = match &event {
                StorageEvent::Stored { op, .. }
                | StorageEvent::Fetched { op, .. }
                | StorageEvent::Listed { op, .. } => *op,
            };
            if waiting.remove(&(ix, op)) {
                f(&event);
            }
        }
        // A node killed with operations in flight never reports them.
        waiting.retain(|(ix, _)| sim.is_alive(*ix));
    }
}

/// Resource name → the live nodes holding a copy.
fn holders(sim: &Sim) -> BTreeMap<String, Vec<usize>> {
    holders_where(sim, |_, _| true)
}

/// Resource name → the live nodes holding a copy that `keep` accepts.
fn holders_where(sim: &Sim, keep: impl Fn(&Peer, &Record) -> bool) -> BTreeMap<String, Vec<usize>> {
    let mut out: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for ix in sim.members() {
        let Some(peer) = sim.peer(ix) else { continue };
        for r in peer.held_records() {
            if keep(peer, &r) {
                out.entry(r.key).or_default().push(ix);
            }
        }
    }
    out
}

/// Records with places at two distinct live nodes that share an address. (Backup copies sit on
/// the successors of a place's holder on other addresses than the holder's; readers ask the
/// places.)
pub fn same_address_violations(sim: &Sim) -> usize {
    shared_addresses(sim, &holders_where(sim, Peer::holds_place_of))
}

/// Records with copies of any kind, places or backups, at two live nodes sharing an address.
pub fn copies_on_shared_addresses(sim: &Sim) -> usize {
    shared_addresses(sim, &holders(sim))
}

fn shared_addresses(sim: &Sim, holders: &BTreeMap<String, Vec<usize>>) -> usize {
    holders
        .values()
        .filter(|nodes| {
            let ips: Vec<IpAddr> = nodes.iter().filter_map(|ix| sim.addr(*ix)).map(|a| a.ip()).collect();
            let distinct: BTreeSet<&IpAddr> = ips.iter().collect();
            distinct.len() < ips.len()
        })
        .count()
}

/// The named invariant: no two nodes sharing an address hold places of one record.
pub fn replicas_on_distinct_addresses(sim: &Sim) -> Result<(), InvariantViolation> {
    let violations = same_address_violations(sim);
    if violations == 0 {
        return Ok(());
    }
    Err(InvariantViolation {
        invariant: "replicas_on_distinct_addresses",
        detail: format!("{violations} records have two places on nodes sharing an address"),
        elapsed: sim.elapsed(),
        seed: sim.seed(),
    })
}

/// Fetches every record from a random live admitted node; how many came back valid.
pub fn read_all(sim: &mut Sim, set: &RecordSet, fraction: f64) -> RecordsAfterFail {
    let holders = holders(sim);
    let with_a_live_copy = set.records.iter().filter(|r| holders.contains_key(&r.key)).count();
    let admitted: Vec<usize> = sim.admitted().collect();
    let mut waiting = BTreeSet::new();
    for record in &set.records {
        let ix = admitted[sim.rng().random_range(0..admitted.len())];
        if let Some(op) = sim.fetch(ix, &record.key) {
            waiting.insert((ix, op));
        }
    }
    let mut readable = 0;
    wait_for(sim, &mut waiting, |event| {
        if let StorageEvent::Fetched { newest: Some(_), .. } = event {
            readable += 1;
        }
    });
    let n = set.records.len().max(1) as f64;
    RecordsAfterFail { fraction, with_a_live_copy, readable, readable_share: readable as f64 / n }
}
