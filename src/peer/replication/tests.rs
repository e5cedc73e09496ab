//! Storage between whole peers exchanging real SIP bytes in lock-step on a virtual clock:
//! placement at the replica keys' responsible nodes, reads with repair, hand-off on join and
//! leave, and every refusal of the SIP store path (each asserting nothing was kept).
#![allow(clippy::disallowed_methods)] // one real reading as the virtual clock's epoch

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::*;
use crate::identity::tests::{Fixture, DAY, T0};
use crate::identity::{Aor, KeyPair};
use crate::peer::replication::wire::StorageAnswer;
use crate::peer::{Peer, PeerConfig, PeerEvent};
use crate::sim::lockstep::LockStep;
use crate::store::{encode_chain, replica_keys_numbered, Registration, Unsigned};
use crate::store::{replica_keys, MemoryStore};

const NOW: u64 = T0 + DAY;

struct Net {
    /// The peers and their network.
    lock: LockStep,
    fx: Fixture,
    events: Vec<(SocketAddr, StorageEvent)>,
    policy: StorePolicy,
    /// Every node's replica numbers (secret placement), when not 1…R.
    numbers: Option<Vec<u64>>,
    /// Every node's b (`StorageConfig::backups`).
    backups: u8,
}

impl Net {
    fn new(n: usize, policy: StorePolicy) -> Net {
        Net::with_numbers(n, policy, None)
    }

    fn with_numbers(n: usize, policy: StorePolicy, numbers: Option<Vec<u64>>) -> Net {
        let mut net = Net {
            lock: LockStep::new(Instant::now()),
            fx: Fixture::new("example.com"),
            events: Vec::new(),
            policy,
            numbers,
            backups: DEFAULT_BACKUPS,
        };
        for i in 0..n {
            net.add(&format!("127.0.0.{}:5070", i + 1), None);
        }
        net
    }

    fn storage_config(&self) -> StorageConfig {
        StorageConfig {
            unix_at_start: NOW,
            policy: self.policy.clone(),
            replica_numbers: self.numbers.clone(),
            backups: self.backups,
            ..StorageConfig::default()
        }
    }

    /// A node at `addr`, enrolled as `aor` if given, joining through the first node.
    fn add(&mut self, addr: &str, aor: Option<&str>) -> SocketAddr {
        let overlay: SocketAddr = addr.parse().unwrap();
        let proxy = SocketAddr::new(overlay.ip(), 5060);
        let config = PeerConfig { seed: self.lock.peers().count() as u64, ..PeerConfig::new(overlay, proxy) };
        let mut peer = Peer::new(config, self.lock.now());
        let signer = aor.map(|aor| {
            let (key, cert) = self.fx.enroll(aor);
            let identity = LocalIdentity::new(key, vec![cert], self.fx.anchor(), NOW).unwrap();
            Signer { identity, rng: self.fx.shared_rng() }
        });
        let ids = VerifiedCache::new(self.fx.anchor(), 16);
        peer.enable_storage(self.lock.now(), self.storage_config(), Box::new(MemoryStore::new()), ids, signer);
        if let Some(boot) = self.lock.peers().map(|(a, _)| a).next() {
            peer.join(self.lock.now(), vec![boot]);
        }
        self.lock.insert(overlay, peer);
        overlay
    }

    /// Runs the network for `d` of virtual time, keeping every storage event.
    fn run_for(&mut self, d: Duration) {
        let events = &mut self.events;
        self.lock.run_for(d, |a, e| {
            if let PeerEvent::Storage(e) = e {
                events.push((a, e));
            }
        });
    }

    /// The node responsible for `key` among all peers (the oracle).
    fn responsible(&self, key: NodeId) -> SocketAddr {
        let mut ids: Vec<(NodeId, SocketAddr)> = self.lock.peers().map(|(a, p)| (p.node_id(), a)).collect();
        ids.sort();
        ids.iter().find(|(id, _)| *id >= key).or(ids.first()).map(|(_, a)| *a).unwrap()
    }

    fn holders(&self, kind: RecordKind, key: &str) -> Vec<SocketAddr> {
        self.lock
            .peers()
            .filter(|(_, p)| p.held_records().iter().any(|r| r.kind == kind && r.key == key))
            .map(|(a, _)| a)
            .collect()
    }

    fn peer(&mut self, addr: SocketAddr) -> &mut Peer {
        self.lock.peer(addr)
    }

    fn fetch(&mut self, from: SocketAddr, key: &str) -> (Option<Record>, Vec<Place>) {
        let now = self.lock.now();
        let op = self.peer(from).fetch(now, RecordKind::Registration, key).unwrap();
        self.run_for(Duration::from_secs(10));
        self.events
            .iter()
            .find_map(|(a, e)| match e {
                StorageEvent::Fetched { op: o, newest, places, .. } if *o == op && *a == from => {
                    Some((newest.clone(), places.clone()))
                }
                _ => None,
            })
            .expect("the fetch finished")
    }

    fn put(&mut self, from: SocketAddr, record: Record) -> Vec<Place> {
        let now = self.lock.now();
        let op = self.peer(from).put(now, record).unwrap();
        self.run_for(Duration::from_secs(10));
        self.events
            .iter()
            .find_map(|(a, e)| match e {
                StorageEvent::Stored { op: o, places, .. } if *o == op && *a == from => Some(places.clone()),
                _ => None,
            })
            .expect("the put finished")
    }

    fn registration(&self, key: &KeyPair, cert: &[u8], owner: &str, seq: u64) -> Record {
        let owner = Aor::parse(owner).unwrap();
        Unsigned {
            kind: RecordKind::Registration,
            key: owner.to_string(),
            owner,
            seq,
            expires_at: NOW + 3600,
            payload: Registration::default().to_payload(),
        }
        .sign(key, vec![cert.to_vec()], &self.fx.rng)
        .unwrap()
    }
}

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// A ring of `n` plain nodes plus alice's node, converged and published.
fn ring_with_alice(n: usize) -> (Net, SocketAddr) {
    ring_with(n, "sip:alice@example.com")
}

fn ring_with(n: usize, aor: &str) -> (Net, SocketAddr) {
    ring_with_backups(n, aor, DEFAULT_BACKUPS)
}

fn ring_with_backups(n: usize, aor: &str, backups: u8) -> (Net, SocketAddr) {
    let mut net = Net { backups, ..Net::new(0, StorePolicy::default()) };
    for i in 0..n {
        net.add(&format!("127.0.0.{}:5070", i + 1), None);
    }
    let alice = net.add("127.0.0.100:5070", Some(aor));
    net.run_for(Duration::from_secs(60));
    (net, alice)
}

#[test]
fn published_records_sit_at_every_replica_key_and_read_back_valid_and_current() {
    let (mut net, _alice) = ring_with_alice(7);
    let key = "sip:alice@example.com";
    let keys = replica_keys(key.as_bytes(), last_replica_number(DEFAULT_REPLICAS), crate::overlay::IdHash::Sha1);
    let (newest, places) = net.fetch(addr("127.0.0.3:5070"), key);
    let newest = newest.expect("a valid copy");
    assert_eq!(newest.owner.as_str(), key);
    let reg = Registration::from_payload(&newest.payload).unwrap();
    assert_eq!(reg.contacts[0].uri, "sip:alice@127.0.0.100:5070");
    assert_eq!(places.len(), usize::from(DEFAULT_REPLICAS) + 1);
    let mut addresses = std::collections::BTreeSet::new();
    for p in &places {
        // A place that landed on an address already used moved to a spare number beyond R.
        assert_eq!(p.replica_key, keys[usize::from(p.replica)]);
        assert!(p.valid && p.current, "{p:?}");
        let holder = net.responsible(p.replica_key);
        assert_eq!(p.node.as_ref().map(|n| n.addr), Some(holder));
        assert!(addresses.insert(holder.ip()), "two places on {holder}");
        for kind in [RecordKind::Registration, RecordKind::CertificateChain] {
            assert!(net.holders(kind, key).contains(&holder), "{kind:?} missing at {holder}");
        }
    }
}

#[test]
fn a_read_repairs_a_missing_copy_and_ignores_an_invalid_one() {
    let key = "sip:bob@example.com";
    let (mut net, _) = ring_with(15, key);
    let keys = replica_keys(key.as_bytes(), DEFAULT_REPLICAS, crate::overlay::IdHash::Sha1);
    // IDs derive from addresses, so this layout is fixed: the test needs three holders.
    let distinct: std::collections::BTreeSet<SocketAddr> = keys.iter().map(|k| net.responsible(*k)).collect();
    assert!(distinct.len() >= 3, "{distinct:?}");
    let lost = net.responsible(keys[1]);
    net.peer(lost).storage.as_mut().unwrap().store.remove(RecordKind::Registration, key);
    // Another holder's copy is tampered with: its signature no longer verifies.
    let tampered = keys.iter().map(|k| net.responsible(*k)).find(|a| *a != lost).unwrap();
    let tampered_place = keys.iter().position(|k| net.responsible(*k) == tampered).unwrap();
    let lost_place = keys.iter().position(|k| net.responsible(*k) == lost).unwrap();
    {
        let store = &mut net.peer(tampered).storage.as_mut().unwrap().store;
        let mut bad = store.get(RecordKind::Registration, key).unwrap().clone();
        bad.seq += 1_000_000_000_000;
        store.put(bad);
    }
    let (newest, places) = net.fetch(addr("127.0.0.2:5070"), key);
    let newest = newest.unwrap_or_else(|| panic!("no valid copy: {places:#?}"));
    assert!(newest.seq < 1_000_000_000_000_000, "the tampered copy was not taken");
    for (i, p) in places.iter().enumerate() {
        if net.responsible(keys[i]) == lost {
            assert!(!p.valid && p.error.as_deref() == Some("no record"), "{p:?}");
        } else if net.responsible(keys[i]) == tampered {
            assert!(!p.valid && p.error.as_deref().unwrap().contains("signature"), "{p:?}");
        } else {
            assert!(p.valid && p.current, "{p:?}");
        }
    }
    assert!(!places[lost_place].current && !places[tampered_place].current);
    // The repair wrote the newest copy back where it was missing (the tampered one is newer by
    // its claimed sequence number and stays until it expires or the owner refreshes).
    assert!(net.peer(lost).held_records().iter().any(|r| r.key == key && r.seq == newest.seq));
    assert!(net.lock.peers().map(|(_, p)| p).map(|p| p.storage_counters().unwrap().read_repairs).sum::<u64>() >= 1);
}

#[test]
fn a_joining_node_receives_the_records_it_is_now_responsible_for() {
    let (mut net, _) = ring_with_alice(5);
    let key = "sip:alice@example.com";
    let keys = replica_keys(key.as_bytes(), DEFAULT_REPLICAS, crate::overlay::IdHash::Sha1);
    // Add nodes until one of them takes over a replica key.
    let mut took_over = None;
    for i in 0..60 {
        let a = net.add(&format!("127.0.1.{}:5070", i + 1), None);
        net.run_for(Duration::from_secs(30));
        if keys.iter().any(|k| net.responsible(*k) == a) {
            took_over = Some(a);
            break;
        }
    }
    let newcomer = took_over.expect("some newcomer took over a replica key");
    net.run_for(Duration::from_secs(30));
    assert!(net.holders(RecordKind::Registration, key).contains(&newcomer), "no hand-off to the newcomer");
    for k in &keys {
        assert!(net.holders(RecordKind::Registration, key).contains(&net.responsible(*k)));
    }
}

#[test]
fn a_leaving_node_hands_its_records_to_its_successor() {
    let (mut net, alice) = ring_with_alice(7);
    let key = "sip:alice@example.com";
    let keys = replica_keys(key.as_bytes(), DEFAULT_REPLICAS, crate::overlay::IdHash::Sha1);
    let leaver = keys.iter().map(|k| net.responsible(*k)).find(|a| *a != alice).unwrap();
    let now = net.lock.now();
    net.peer(leaver).leave(now);
    net.run_for(Duration::from_secs(5));
    net.lock.remove_at(leaver);
    net.run_for(Duration::from_secs(30));
    for k in &keys {
        let holder = net.responsible(*k);
        assert!(net.holders(RecordKind::Registration, key).contains(&holder), "{holder} lacks the copy for {k}");
    }
}

/// Offers `record` from a plain node; asserts every place refused it with `reason`, that no node
/// kept it, and that every storing node counted its refusal.
fn assert_refused_everywhere(net: &mut Net, record: Record, reason: &str) {
    let (kind, key) = (record.kind, record.key.clone());
    let before: u64 = net.lock.peers().map(|(_, p)| p).map(|p| p.storage_counters().unwrap().stores_refused).sum();
    let places = net.put(addr("127.0.0.2:5070"), record);
    for p in &places {
        assert!(!p.valid, "a place accepted it: {p:?}");
        let error = p.error.as_deref().unwrap_or_default();
        assert!(error.contains(reason), "expected {reason:?}, got {error:?}");
    }
    assert!(net.holders(kind, &key).is_empty(), "a refused record was kept");
    let after: u64 = net.lock.peers().map(|(_, p)| p).map(|p| p.storage_counters().unwrap().stores_refused).sum();
    assert_eq!(after - before, places.len() as u64, "every refusal is counted");
}

#[test]
fn refused_stores_over_sip_keep_nothing() {
    // Records travel in UDP datagrams here: the size limit sits below the datagram limit.
    let mut net = Net::new(6, StorePolicy { max_record_bytes: 4096, ..StorePolicy::default() });
    net.run_for(Duration::from_secs(60));
    let (key, cert) = net.fx.enroll("sip:carol@example.com");
    let carol = "sip:carol@example.com";

    // Wrong key: signed by a key the certificate does not certify.
    let other_key = KeyPair::generate(&net.fx.rng).unwrap();
    let record = net.registration(&other_key, &cert, carol, 1);
    assert_refused_everywhere(&mut net, record, "403 Bad Record Signature");

    // A certificate from another CA.
    let mut other_ca = Fixture::new("example.com");
    let (k2, c2) = other_ca.enroll(carol);
    let record = net.registration(&k2, &c2, carol, 1);
    assert_refused_everywhere(&mut net, record, "403 Certificate Not Trusted");

    // An expired certificate (valid for one hour, a day ago).
    let k3 = KeyPair::generate(&net.fx.rng).unwrap();
    let c3 = net.fx.enroll_key("sip:dave@example.com", &k3, T0, T0 + 3600).unwrap().certificate_der;
    let record = net.registration(&k3, &c3, "sip:dave@example.com", 1);
    assert_refused_everywhere(&mut net, record, "403 Certificate Expired");

    // The record's owner is not the AoR the certificate binds.
    let record = net.registration(&key, &cert, "sip:erin@example.com", 1);
    assert_refused_everywhere(&mut net, record, "403 Owner Does Not Match Certificate");

    // Truncated and bit-flipped signatures.
    let mut record = net.registration(&key, &cert, carol, 1);
    record.signature.truncate(record.signature.len() - 5);
    assert_refused_everywhere(&mut net, record, "403 Bad Record Signature");
    let mut record = net.registration(&key, &cert, carol, 1);
    let mid = record.signature.len() / 2;
    record.signature[mid] ^= 0x01;
    assert_refused_everywhere(&mut net, record, "403 Bad Record Signature");

    // Oversized.
    let owner = Aor::parse(carol).unwrap();
    let big = Unsigned {
        kind: RecordKind::Registration,
        key: carol.into(),
        owner: owner.clone(),
        seq: 1,
        expires_at: NOW + 3600,
        payload: vec![b' '; 4096],
    }
    .sign(&key, vec![cert.clone()], &net.fx.rng)
    .unwrap();
    assert_refused_everywhere(&mut net, big, "413 Record Too Large");

    // A replay: seq 5 is stored, then seq 4 is offered.
    let places = net.put(addr("127.0.0.2:5070"), net.registration(&key, &cert, carol, 5));
    assert!(places.iter().all(|p| p.valid), "{places:?}");
    let before: u64 = net.lock.peers().map(|(_, p)| p).map(|p| p.storage_counters().unwrap().stores_refused).sum();
    let places = net.put(addr("127.0.0.3:5070"), net.registration(&key, &cert, carol, 4));
    assert!(places.iter().all(|p| !p.valid && p.error.as_deref().unwrap().contains("403 Stale Sequence Number")));
    let after: u64 = net.lock.peers().map(|(_, p)| p).map(|p| p.storage_counters().unwrap().stores_refused).sum();
    assert_eq!(after - before, places.len() as u64);
    assert!(net
        .lock
        .peers()
        .map(|(_, p)| p)
        .flat_map(|p| p.held_records())
        .filter(|r| r.key == carol)
        .all(|r| r.seq == 5));
}

#[test]
fn an_owner_over_quota_is_refused() {
    let policy = StorePolicy { max_records_per_owner: 1, ..StorePolicy::default() };
    let mut net = Net::new(6, policy);
    net.run_for(Duration::from_secs(60));
    let (key, cert) = net.fx.enroll("sip:carol@example.com");
    let places = net.put(addr("127.0.0.2:5070"), net.registration(&key, &cert, "sip:carol@example.com", 1));
    assert!(places.iter().all(|p| p.valid));
    let owner = Aor::parse("sip:carol@example.com").unwrap();
    let chain = Unsigned {
        kind: RecordKind::CertificateChain,
        key: owner.to_string(),
        owner,
        seq: 1,
        expires_at: NOW + 3600,
        payload: encode_chain(std::slice::from_ref(&cert)).unwrap(),
    }
    .sign(&key, vec![cert.clone()], &net.fx.rng)
    .unwrap();
    assert_refused_everywhere(&mut net, chain, "403 Owner Over Quota");
}

#[test]
fn a_node_not_responsible_redirects_and_the_store_follows() {
    let mut net = Net::new(6, StorePolicy::default());
    net.run_for(Duration::from_secs(60));
    let (key, cert) = net.fx.enroll("sip:carol@example.com");
    let record = net.registration(&key, &cert, "sip:carol@example.com", 1);
    let k0 = replica_keys(record.key.as_bytes(), DEFAULT_REPLICAS, crate::overlay::IdHash::Sha1)[0];
    let responsible = net.responsible(k0);
    // The node just before the responsible one: it redirects to its successor.
    let mut ids: Vec<(NodeId, SocketAddr)> = net.lock.peers().map(|(a, p)| (p.node_id(), a)).collect();
    ids.sort();
    let j = ids.iter().position(|(_, a)| *a == responsible).unwrap();
    let wrong = ids[(j + ids.len() - 1) % ids.len()].1;
    // The sender is neither the wrong node nor its predecessor (whose hand-offs it takes).
    let from = ids[(j + 1) % ids.len()].1;
    let wrong_node = Contact::new(net.lock.at(wrong).node_id(), wrong);
    // Send the primary's store straight to a node that is not responsible for it.
    let now = net.lock.now();
    let p = net.peer(from);
    let (kind, key) = (record.kind, record.key.clone());
    let ring = Ring { chord: &p.overlay.chord, info: &p.overlay.info };
    let op =
        p.storage.as_mut().unwrap().start_op(now, ring, Purpose::Put, kind, key, Some(record.clone()), Some(vec![0]));
    // The lookup starts, and is taken out of the op's hands before anything answers it.
    p.apply_storage_outputs(now);
    // Answer the lookup ourselves with the wrong node.
    let lookup = *p.storage.as_ref().unwrap().lookups.iter().find(|(_, (o, _))| *o == op).unwrap().0;
    p.storage.as_mut().unwrap().lookups.remove(&lookup);
    p.with_storage(now, |s, ring| s.send_to_place(now, ring, op, 0, wrong_node, false));
    net.run_for(Duration::from_secs(5));
    assert!(net.lock.at(wrong).storage_counters().unwrap().not_responsible >= 1);
    assert!(net.holders(RecordKind::Registration, &record.key).contains(&responsible));
}

/// In ring order: a holder `p` of `key` whose successor `d` is also a holder and whose
/// successor's successor `s` is not; none of them `except`.
fn adjacent_holders(net: &Net, key: &str, except: SocketAddr) -> Option<(SocketAddr, SocketAddr, SocketAddr)> {
    let mut ids: Vec<(NodeId, SocketAddr)> = net.lock.peers().map(|(a, p)| (p.node_id(), a)).collect();
    ids.sort();
    let holders = net.holders(RecordKind::Registration, key);
    let n = ids.len();
    (0..n).map(|i| (ids[i].1, ids[(i + 1) % n].1, ids[(i + 2) % n].1)).find(|(p, d, s)| {
        holders.contains(p) && holders.contains(d) && !holders.contains(s) && ![*p, *d, *s].contains(&except)
    })
}

#[test]
fn a_dead_holder_s_copy_is_re_put_by_its_surviving_neighbour() {
    // Without backup copies (`backup`), the re-put alone restores the place.
    let key = "sip:alice@example.com";
    let (mut net, alice) = ring_with_backups(9, key, 0);
    let (p, dead, s) = adjacent_holders(&net, key, alice).expect("the fixed layout has two adjacent holders");
    let newest = |net: &Net| {
        net.lock.peers().map(|(_, p)| p).flat_map(|p| p.held_records()).filter(|r| r.key == key).map(|r| r.seq).max()
    };
    let seq = newest(&net);
    let copies = |net: &Net| net.holders(RecordKind::Registration, key).len();
    // (Earlier hand-offs may have left a copy beyond the R+1 places.)
    let before = copies(&net);
    assert!(before > usize::from(DEFAULT_REPLICAS));
    // The holder dies silently: no leave, no hand-off.
    net.lock.remove_at(dead);
    net.run_for(Duration::from_secs(60));
    // Its successor took over its range, and the surviving neighbour's re-put reached it.
    assert!(net.holders(RecordKind::Registration, key).contains(&s), "no copy at the new place {s}");
    assert_eq!(copies(&net), before);
    assert!(net.lock.at(p).storage_counters().unwrap().re_puts >= 1);
    // No owner refresh (no newer sequence number) and no read.
    assert_eq!(newest(&net), seq);
    assert_eq!(net.lock.peers().map(|(_, p)| p).map(|p| p.storage_counters().unwrap().fetches_served).sum::<u64>(), 0);
}

#[test]
fn with_secret_replica_numbers_copies_sit_at_the_secret_places_and_members_read_them() {
    let secret = [42u8; 32];
    let placement = crate::enrollment::config_doc::ReplicaPlacement::secret(DEFAULT_REPLICAS, &secret);
    let numbers = placement.numbers(Some(&secret)).unwrap();
    let mut net = Net::with_numbers(9, StorePolicy::default(), Some(numbers.clone()));
    let alice = net.add("127.0.0.100:5070", Some("sip:alice@example.com"));
    net.run_for(Duration::from_secs(60));
    let key = "sip:alice@example.com";
    let spares = usize::from(last_replica_number(DEFAULT_REPLICAS) - DEFAULT_REPLICAS);
    let secret_keys =
        replica_keys_numbered(key.as_bytes(), &with_spares(&numbers, spares), crate::overlay::IdHash::Sha1);
    let public_keys = replica_keys(key.as_bytes(), last_replica_number(DEFAULT_REPLICAS), crate::overlay::IdHash::Sha1);
    let (newest, places) = net.fetch(addr("127.0.0.3:5070"), key);
    assert!(newest.is_some(), "{places:#?}");
    assert_eq!(places.len(), usize::from(DEFAULT_REPLICAS) + 1);
    for p in &places {
        assert!(p.valid && p.current, "{p:?}");
        assert_eq!(p.replica_key, secret_keys[usize::from(p.replica)]);
        if p.replica > 0 {
            assert!(!public_keys.contains(&p.replica_key), "a secret place is a public one: {p:?}");
        }
        let holder = net.responsible(p.replica_key);
        assert!(net.holders(RecordKind::Registration, key).contains(&holder), "no copy at {holder}");
    }
    let _ = alice;
}

#[test]
fn one_owner_re_storing_in_a_loop_is_refused_after_its_burst() {
    // docs/security.md, M2: 1,000 accepted stores from one owner within a second, seq + 1 each time;
    // the node keeps the first burst and refuses the rest, and another owner is not affected.
    let mut net = Net::new(3, StorePolicy::default());
    net.run_for(Duration::from_secs(30));
    let (key, cert) = net.fx.enroll("sip:carol@example.com");
    let (dkey, dcert) = net.fx.enroll("sip:dave@example.com");
    let now = net.lock.now();
    // Straight to the node responsible for the record's first replica key.
    let store = |net: &mut Net, record: Record| {
        let keys =
            replica_keys(record.key.as_bytes(), last_replica_number(DEFAULT_REPLICAS), crate::overlay::IdHash::Sha1);
        let holder = net.responsible(keys[0]);
        let sender = net.lock.peers().find(|(a, _)| *a != holder).map(|(_, p)| p.chord().me().clone()).unwrap();
        let request = StorageRequest::Store { replica: 0, replica_key: keys[0], record, backup: 0 };
        net.lock.peer(holder).with_storage(now, |s, ring| s.serve(now, ring, &sender, request)).unwrap()
    };
    let mut accepted = 0;
    for seq in 1..=1000 {
        let record = net.registration(&key, &cert, "sip:carol@example.com", seq);
        if store(&mut net, record) == StorageAnswer::Stored {
            accepted += 1;
        }
    }
    assert_eq!(accepted, STORES_PER_OWNER_BURST as usize, "the burst, then refusals");
    let record = net.registration(&dkey, &dcert, "sip:dave@example.com", 1);
    assert_eq!(store(&mut net, record), StorageAnswer::Stored, "another owner still stores");
}

#[test]
fn an_owner_whose_put_fell_short_publishes_again_soon_and_stops_once_every_place_took_it() {
    // Alice and one other node: two distinct addresses for four places.
    let (mut net, _alice) = ring_with_alice(1);
    let key = "sip:alice@example.com";
    let newest_seq = |net: &mut Net| net.fetch(addr("127.0.0.1:5070"), key).0.map(|r| r.seq);
    let first = newest_seq(&mut net).expect("alice's record");
    // Short: published again within seconds, not at the 20-minute refresh.
    net.run_for(Duration::from_secs(30));
    let again = newest_seq(&mut net).expect("alice's record");
    assert!(again > first, "republished while places are missing");
    // The ring grows until every place can be taken; then the republishing stops.
    for i in 0..6 {
        net.add(&format!("127.0.2.{}:5070", i + 1), None);
    }
    net.run_for(Duration::from_secs(300));
    let settled = newest_seq(&mut net).expect("alice's record");
    net.run_for(Duration::from_secs(600));
    let (newest, places) = net.fetch(addr("127.0.0.1:5070"), key);
    assert_eq!(newest.map(|r| r.seq), Some(settled), "no publication while every place holds it");
    assert!(places.iter().all(|p| p.valid), "{places:?}");
}

/// The nodes in ring order.
fn ring_order(net: &Net) -> Vec<SocketAddr> {
    let mut ids: Vec<(NodeId, SocketAddr)> = net.lock.peers().map(|(a, p)| (p.node_id(), a)).collect();
    ids.sort();
    ids.into_iter().map(|(_, a)| a).collect()
}

/// alice's R+1 places: (replica key, holder, the holder's next `DEFAULT_BACKUPS` successors).
fn places_and_keepers(net: &Net, key: &str) -> Vec<(NodeId, SocketAddr, Vec<SocketAddr>)> {
    let order = ring_order(net);
    replica_keys(key.as_bytes(), DEFAULT_REPLICAS, crate::overlay::IdHash::Sha1)
        .into_iter()
        .map(|k| {
            let holder = net.responsible(k);
            let at = order.iter().position(|a| *a == holder).unwrap();
            let next = (1..=usize::from(DEFAULT_BACKUPS)).map(|j| order[(at + j) % order.len()]).collect();
            (k, holder, next)
        })
        .collect()
}

#[test]
fn each_place_s_holder_and_its_next_successors_keep_the_record() {
    let key = "sip:alice@example.com";
    let (net, _) = ring_with_alice(15);
    let holders = net.holders(RecordKind::Registration, key);
    for (k, holder, next) in places_and_keepers(&net, key) {
        assert!(holders.contains(&holder), "place {k}: no copy at its holder {holder}");
        for s in next {
            assert!(holders.contains(&s), "place {k}: no backup copy at {s}, a successor of {holder}");
        }
    }
    let sent: u64 = net.lock.peers().map(|(_, p)| p).map(|p| p.storage_counters().unwrap().backups_sent).sum();
    assert!(sent >= u64::from(DEFAULT_REPLICAS + 1) * u64::from(DEFAULT_BACKUPS), "{sent}");
}

#[test]
fn a_dead_holder_s_successor_serves_its_copy_before_the_ring_notices() {
    let key = "sip:alice@example.com";
    let (mut net, alice) = ring_with_alice(15);
    let reader = addr("127.0.0.2:5070");
    let keepers = places_and_keepers(&net, key);
    let holders: Vec<SocketAddr> = keepers.iter().map(|(_, h, _)| *h).collect();
    let (_, dead, next) = keepers
        .into_iter()
        .find(|(_, h, next)| {
            ![alice, reader].contains(h)
                && !next.contains(&alice)
                && !next.contains(&reader)
                && !holders.contains(&next[0])
        })
        .expect("a place away from alice and the reader, whose stand-in holds no other place");
    let stand_in = next[0];
    let counters = |net: &Net| net.lock.at(stand_in).storage_counters().unwrap().clone();
    let before = counters(&net);
    // The holder dies silently, and the read starts at that instant: its successor still
    // names the dead node as its predecessor.
    net.lock.remove_at(dead);
    assert_eq!(net.lock.at(stand_in).overlay.chord.predecessor().map(|p| p.addr), Some(dead));
    let (newest, places) = net.fetch(reader, key);
    assert!(newest.is_some());
    // The read reports once a valid copy has been in hand for a short grace: a place whose
    // lookup still went round the dead node may not have answered by then.
    let answered: Vec<&Place> = places.iter().filter(|p| p.error.as_deref() != Some("no answer yet")).collect();
    assert!(!answered.is_empty() && answered.iter().all(|p| p.valid && p.current), "{places:#?}");
    // The dead holder's place was asked of its successor, which served its copy instead of
    // redirecting to its dead predecessor.
    let after = counters(&net);
    assert!(after.fetches_served > before.fetches_served, "{after:?}");
    assert_eq!(after.not_responsible, before.not_responsible, "{after:?}");
}

#[test]
fn without_a_copy_a_node_still_redirects_a_fetch_for_a_key_behind_it() {
    // docs/security.md, M1: serving a key outside our arc needs a copy we keep for it.
    let key = "sip:alice@example.com";
    let (mut net, alice) = ring_with_alice(15);
    let (k, holder, next) = places_and_keepers(&net, key).into_iter().find(|(_, h, _)| *h != alice).unwrap();
    let stand_in = next[0];
    net.peer(stand_in).storage_for_tests().remove(RecordKind::Registration, key);
    let now = net.lock.now();
    let me = net.lock.at(alice).overlay.chord.me().clone();
    let request = StorageRequest::Fetch { replica: 0, replica_key: k, kind: RecordKind::Registration, key: key.into() };
    let answer = net.peer(stand_in).with_storage(now, |s, ring| s.serve(now, ring, &me, request)).unwrap();
    assert!(matches!(&answer, StorageAnswer::NotResponsible { node } if node.addr == holder), "{answer:?}");
}

#[test]
fn a_backup_copy_skips_the_holder_s_own_address() {
    // Nodes sharing an address sit side by side on the ring (port-suffixed IDs) and fail
    // together: a place's backups go to the first successors on other addresses.
    let key = "sip:alice@example.com";
    let mut net = Net::new(0, StorePolicy::default());
    for i in 0..12 {
        net.add(&format!("127.0.0.{}:5070", i + 1), None);
    }
    for port in 5071..5075 {
        net.add(&format!("127.0.0.50:{port}"), None);
    }
    net.add("127.0.0.100:5070", Some(key));
    net.run_for(Duration::from_secs(60));
    let order = ring_order(&net);
    let holders = net.holders(RecordKind::Registration, key);
    let mut checked = 0;
    for k in replica_keys(key.as_bytes(), DEFAULT_REPLICAS, crate::overlay::IdHash::Sha1) {
        let holder = net.responsible(k);
        // Each keeper passes the copy to its first successor on another address.
        let mut keeper = holder;
        for _ in 0..DEFAULT_BACKUPS {
            let at = order.iter().position(|a| *a == keeper).unwrap();
            let next = (1..order.len()).map(|j| order[(at + j) % order.len()]).find(|a| a.ip() != keeper.ip());
            keeper = next.unwrap();
            assert!(holders.contains(&keeper), "place {k}: no backup copy at {keeper}, after {holder}");
        }
        checked += usize::from(holder.ip() == addr("127.0.0.50:1").ip());
    }
    // The rule is tested only if a place sits on the shared address (the fixed layout has one).
    assert!(checked > 0, "no place on the shared address in this layout");
}

#[test]
fn a_storage_request_to_a_dead_node_stops_at_the_storage_deadline() {
    // Over UDP its transaction would otherwise retransmit until Timer F, 32 s, long after the
    // storage gave the place up at the RPC deadline (2 s).
    let key = "sip:alice@example.com";
    let (mut net, _) = ring_with_alice(6);
    let ghost = addr("127.0.0.250:5070");
    let ghost_node = Contact::new(NodeId::from_addr(ghost.ip(), ghost.port(), crate::overlay::IdHash::Sha1), ghost);
    let reader = addr("127.0.0.2:5070");
    let now = net.lock.now();
    let request = StorageRequest::Fetch {
        replica: 0,
        replica_key: ghost_node.id,
        kind: RecordKind::Registration,
        key: key.into(),
    };
    net.peer(reader)
        .with_storage(now, |s, ring| s.send_request(now, ring, None, 0, ghost_node, request, false, Transport::Udp));
    net.run_for(Duration::from_secs(3));
    let sent = net.lock.undelivered(ghost);
    assert!(sent >= 2, "retransmitted before the deadline: {sent}");
    net.run_for(Duration::from_secs(40));
    assert_eq!(net.lock.undelivered(ghost), sent, "retransmitted after the deadline");
}

#[test]
fn a_node_whose_predecessor_died_hands_nothing_on() {
    // Its predecessor fails a check and is dropped; later a node further back becomes its
    // predecessor: its arc only grew. It used to compare the new predecessor with none at
    // all, as a node that never had one does, and hand every backup copy it keeps to the
    // record's places: after half of 256 daemons died, thousands of lookups into the broken
    // ring (docs/performance.md, B4).
    let key = "sip:alice@example.com";
    let (mut net, alice) = ring_with_alice(15);
    let (_, dead, next) = places_and_keepers(&net, key)
        .into_iter()
        .find(|(_, h, next)| *h != alice && !next.contains(&alice))
        .expect("a place away from alice");
    let keeper = next[0];
    let handed = |net: &Net| net.lock.at(keeper).storage_counters().unwrap().handed_off;
    let before = handed(&net);
    net.lock.remove_at(dead);
    let now = net.lock.now();
    net.peer(keeper).overlay.chord.drop_predecessor_for_tests(now);
    net.run_for(Duration::from_secs(60));
    let predecessor = net.lock.at(keeper).overlay.chord.predecessor().map(|p| p.addr);
    assert!(predecessor.is_some_and(|p| p != dead), "the keeper never took a new predecessor: {predecessor:?}");
    assert_eq!(handed(&net), before, "the keeper handed records on after its predecessor died");
    assert!(net.holders(RecordKind::Registration, key).contains(&keeper));
}

#[test]
fn a_read_asks_each_place_as_its_lookup_ends_and_does_not_wait_for_the_slowest() {
    // Every keeper of one place dies silently: that place's lookup goes round the dead nodes
    // (hedged after a soft deadline, confirmed, retried) while the other places answer at once
    // on this zero-latency network. The read is reported after the short grace that follows
    // its first valid copy, not after the slowest lookup (docs/performance.md, B4: reads held
    // 11-16 s right after half the ring died).
    let key = "sip:alice@example.com";
    let (mut net, alice) = ring_with_alice(15);
    let reader = addr("127.0.0.2:5070");
    let keepers = places_and_keepers(&net, key);
    let (_, holder, next) = keepers
        .iter()
        .find(|(_, h, next)| ![alice, reader].contains(h) && !next.contains(&alice) && !next.contains(&reader))
        .cloned()
        .expect("a place away from alice and the reader");
    for dead in std::iter::once(holder).chain(next) {
        net.lock.remove_at(dead);
    }
    let start = net.lock.now();
    let op = net.peer(reader).fetch(start, RecordKind::Registration, key).unwrap();
    let reported = |net: &Net| {
        net.events.iter().find_map(|(a, e)| match e {
            StorageEvent::Fetched { op: o, newest, places, .. } if *o == op && *a == reader => {
                Some((newest.clone(), places.clone()))
            }
            _ => None,
        })
    };
    while reported(&net).is_none() && net.lock.now() - start < Duration::from_secs(30) {
        net.run_for(Duration::from_millis(10));
    }
    let took = net.lock.now() - start;
    let (newest, places) = reported(&net).expect("the read was reported");
    assert!(newest.is_some(), "{places:#?}");
    assert!(took <= Duration::from_millis(100), "reported after {took:?}: {places:#?}");
    assert!(places.iter().any(|p| p.error.as_deref() == Some("no answer yet")), "{places:#?}");
}
